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
    Ok(wait_issued_timed(api, batch, n, limit, || ()).await?.all)
}

/// When a batch's first and last certificates were seen, from the call.
#[derive(Debug, Clone, Copy)]
pub struct Issued {
    pub first: Duration,
    pub all: Duration,
}

/// [`wait_issued`], calling `on_first` the moment the first certificate is seen: what comes
/// before it is the engine's start-up, what comes after its issuing.
pub async fn wait_issued_timed(
    api: &Api<CertificateSigningRequest>,
    batch: &str,
    n: usize,
    limit: Duration,
    on_first: impl FnOnce(),
) -> Result<Issued> {
    let started = Instant::now();
    let config = watcher::Config::default().labels(&format!("{LABEL}={batch}"));
    let mut objects = std::pin::pin!(watcher(api.clone(), config).applied_objects());
    let mut issued = HashSet::new();
    let mut on_first = Some(on_first);
    let mut first = None;
    while issued.len() < n {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, objects.next()).await {
            Err(_) => bail!("only {} of {n} issued after {limit:?}", issued.len()),
            Ok(None) => bail!("the watch of batch {batch} ended"),
            Ok(Some(Err(e))) => eprintln!("watch error (retrying): {e}"),
            Ok(Some(Ok(csr))) => {
                if has_certificate(&csr) {
                    issued.insert(csr.metadata.name.unwrap_or_default());
                    if let Some(f) = on_first.take() {
                        first = Some(started.elapsed());
                        f();
                    }
                }
            }
        }
    }
    let all = started.elapsed();
    Ok(Issued {
        first: first.unwrap_or(all),
        all,
    })
}

/// kcert-controller's metrics (at `addr`) as (name → value), for the unlabelled ones.
pub async fn metrics(addr: std::net::SocketAddr) -> std::collections::HashMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut text = String::new();
    if let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await
        && tcp
            .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .is_ok()
    {
        let _ = tcp.read_to_string(&mut text).await;
    }
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Wait until kcert-controller's metrics (at `addr`) count `n` ledger records written: the API
/// server has acknowledged them, so they are on record. Polled every 20 ms over plain HTTP,
/// which costs the API server nothing (watching the pages would cost it, and this machine, a
/// measurable share of the run).
pub async fn wait_recorded(
    addr: std::net::SocketAddr,
    n: usize,
    limit: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let written = metrics(addr)
            .await
            .get("kcert_ledger_records_written_total")
            .copied()
            .unwrap_or(0.0) as usize;
        if written >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("only {written} of {n} recorded after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
