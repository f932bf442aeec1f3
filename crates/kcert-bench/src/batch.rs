//! Batches of CSRs: create (optionally pre-approved), wait until issued, delete.

use anyhow::{Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_pki::{CsrSubject, KeyType, PrivateKey, SubjectAltNames, build_csr};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::HashSet;
use std::time::{Duration, Instant};

pub const LABEL: &str = "kcert-bench/batch";

/// One request body reused for every CSR of a batch: the API server validates each anyway,
/// and signing cost does not depend on which key is certified.
pub fn request_pem(user: &str, group: &str) -> Vec<u8> {
    let key = PrivateKey::generate(KeyType::EcdsaP256).expect("P-256 key");
    build_csr(
        &key,
        &CsrSubject::new(user, [group]).expect("subject"),
        &SubjectAltNames::default(),
    )
    .expect("CSR")
    .into_bytes()
}

/// A CSR object of batch `batch`.
pub fn object(name: &str, batch: &str, signer: &str, request: &[u8]) -> CertificateSigningRequest {
    let mut csr = kcert_tests::csr_from_pem(name, signer, request.to_vec(), None);
    csr.metadata.labels = Some([(LABEL.to_string(), batch.to_string())].into());
    csr
}

/// Create `n` CSRs named `{batch}-{i}` (32 in flight), approving each if `approve`.
pub async fn create(
    api: &Api<CertificateSigningRequest>,
    batch: &str,
    n: usize,
    signer: &str,
    approve: bool,
) -> Result<Vec<String>> {
    let request = request_pem("bench-user", "bench");
    let names: Vec<String> = (0..n).map(|i| format!("{batch}-{i}")).collect();
    futures::stream::iter(names.clone())
        .map(|name| {
            let csr = object(&name, batch, signer, &request);
            async move {
                let mut created = api.create(&PostParams::default(), &csr).await?;
                if approve {
                    created
                        .status
                        .get_or_insert_with(Default::default)
                        .conditions = Some(vec![kcert_controller::conditions::condition(
                        "Approved",
                        "Bench",
                        "pre-approved",
                    )]);
                    api.replace_subresource("approval", &name, &PostParams::default(), &created)
                        .await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(names)
}

pub fn has_certificate(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

/// Wait until all `n` CSRs of `batch` have a certificate, watching the batch (a watch costs the
/// API server far less than listing thousands of CSRs over and over).
pub async fn wait_issued(
    api: &Api<CertificateSigningRequest>,
    batch: &str,
    n: usize,
    limit: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let config = watcher::Config::default().labels(&format!("{LABEL}={batch}"));
    let mut objects = std::pin::pin!(watcher(api.clone(), config).applied_objects());
    let mut issued = HashSet::new();
    while issued.len() < n {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, objects.next()).await {
            Err(_) => bail!("only {} of {n} issued after {limit:?}", issued.len()),
            Ok(None) => bail!("the watch of batch {batch} ended"),
            Ok(Some(Err(e))) => eprintln!("watch error (retrying): {e}"),
            Ok(Some(Ok(csr))) => {
                if has_certificate(&csr) {
                    issued.insert(csr.metadata.name.unwrap_or_default());
                }
            }
        }
    }
    Ok(started.elapsed())
}

/// Delete the batch, so later measurements start from the same amount of state.
pub async fn delete(api: &Api<CertificateSigningRequest>, batch: &str) -> Result<()> {
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&format!("{LABEL}={batch}")),
    )
    .await?;
    Ok(())
}
