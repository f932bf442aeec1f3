//! From `kcert revoke` to the revoked certificate's first 403, on a test-bed API server
//! started with kcert's AuthorizationConfiguration (deploy/authorization-config.yaml) and
//! kcert-controller serving the webhook. Each sample: a new user's certificate, a client that
//! lists pods every 20 ms from before the revocation (so the API server's cache of the
//! webhook's "no opinion" is as old as it would be for an active user), the revocation at a
//! spread-out moment, and the time to the first 403.

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Pod;
use kcert_controller::authz_webhook::WebhookSettings;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_kube::revocation::{Selector, Strict, revoke};
use kcert_testbed::TestCluster;
use kcert_testbed::kubeconfig::{Credentials, render};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use std::time::{Duration, Instant};

const SIGNER: &str = "kcert.dev/client";

/// Seconds from each of `samples` revocations to the revoked certificate's first 403.
pub async fn run(samples: usize) -> Result<Vec<f64>> {
    let dir = std::env::temp_dir().join(format!("kcert-bench-revoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = kcert_testbed::webhook::free_port()?;
    let files = kcert_testbed::webhook::WebhookFiles::create(&dir, port)?;
    let cluster = TestCluster::builder()
        .authorization_config(files.authorization_config.clone())
        .start()
        .await?;
    kcert_tests::install_crds(&cluster).await;
    let admin = cluster.admin_client().await?;
    let policy = serde_json::from_value(serde_json::json!({"rules": [{
        "id": "bench", "requesters": {"users": ["kcert-testbed-admin"]},
        "commonName": {"glob": "*"}, "groups": {"allowed": ["readers"]}
    }]}))?;
    let controller = webhook_controller(
        &cluster,
        admin.clone(),
        &files,
        PolicySource::Static(policy),
    );
    let ns = cluster.namespace("revoke-bench").await?;
    for doc in [
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "pod-reader", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "readers", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "Group", "name": "readers", "apiGroup": "rbac.authorization.k8s.io"}]}),
    ] {
        if doc["kind"] == "Role" {
            Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), &ns)
                .create(&PostParams::default(), &serde_json::from_value(doc)?)
                .await?;
        } else {
            Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), &ns)
                .create(&PostParams::default(), &serde_json::from_value(doc)?)
                .await?;
        }
    }
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let mut seconds = Vec::with_capacity(samples);
    for i in 0..samples {
        let user = format!("revokee-{i}");
        let client = issue(&cluster, &csrs, &user).await?;
        // Allowed first (RBAC; the webhook has no opinion), and recorded in the ledger.
        wait_until(Duration::from_secs(20), || async {
            list_pods(&client, &ns).await.is_ok()
        })
        .await
        .context("the new certificate never listed pods")?;
        wait_until(Duration::from_secs(20), || async {
            kcert_kube::ledger::list_pages(&admin).await.is_ok_and(|p| {
                kcert_kube::ledger::records(&p)
                    .iter()
                    .any(|(_, r)| r.user == user)
            })
        })
        .await
        .context("the certificate never reached the ledger")?;
        // An active user: requests every 20 ms until the first 403.
        let (active, ns2) = (client.clone(), ns.clone());
        let refused = tokio::spawn(async move {
            loop {
                match list_pods(&active, &ns2).await {
                    Err(kube::Error::Api(s)) if s.code == 403 => return Instant::now(),
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
        // Revoke at a moment spread over the 2 s unauthorizedTTL (a fixed stride, so runs
        // are comparable).
        tokio::time::sleep(Duration::from_millis(((i * 737) % 2000) as u64)).await;
        let revoked_at = Instant::now();
        let done = revoke(&admin, &Selector::User(user.clone()), "bench", "benchmark").await?;
        if done.len() != 1 {
            bail!("revoking {user} matched {} records", done.len());
        }
        let first_403 = tokio::time::timeout(Duration::from_secs(30), refused)
            .await
            .context("the revoked certificate was still allowed after 30 s")??;
        let s = first_403.duration_since(revoked_at).as_secs_f64();
        eprintln!("sample {i}: first 403 {s:.3} s after revoke");
        seconds.push(s);
    }
    controller.kill();
    cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(seconds)
}

/// kcert-controller in this process, approver + signer for kcert's client signer with the
/// cluster's CA and the ledger, serving the authorization webhook of `files`.
pub fn webhook_controller(
    cluster: &TestCluster,
    admin: Client,
    files: &kcert_testbed::webhook::WebhookFiles,
    policy: PolicySource,
) -> kcert_tests::RunningController {
    kcert_tests::RunningController::start_with(
        admin,
        Settings {
            signer_names: vec![SIGNER.into()],
            policy,
            ca: Some(CaSource::Files {
                cert: cluster.ca_cert_path(),
                key: cluster.ca_key_path(),
            }),
            ledger: true,
            webhook: Some(WebhookSettings {
                addr: files.addr,
                cert: files.cert.clone(),
                key: files.key.clone(),
                strict: Strict::default(),
            }),
            ..Settings::default()
        },
    )
}

async fn issue(
    cluster: &TestCluster,
    csrs: &Api<CertificateSigningRequest>,
    user: &str,
) -> Result<Client> {
    let name = cluster.unique_name(user);
    let (csr, key_pem) = kcert_tests::csr_with_key(&name, SIGNER, user, &["readers"], Some(3600));
    csrs.create(&PostParams::default(), &csr).await?;
    let done = kcert_tests::wait_for(
        csrs,
        &name,
        Duration::from_secs(20),
        "issued",
        kcert_tests::issued,
    )
    .await;
    let cert_pem = String::from_utf8(
        done.status
            .and_then(|s| s.certificate)
            .context("no certificate")?
            .0,
    )?;
    let yaml = render(
        cluster.server(),
        cluster.ca_pem(),
        user,
        &Credentials::ClientCertificate {
            cert_pem: &cert_pem,
            key_pem: &key_pem,
        },
    );
    Ok(kcert_testbed::client_from_kubeconfig(&yaml).await?)
}

async fn list_pods(client: &Client, ns: &str) -> Result<usize, kube::Error> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items.len())
}

async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out after {limit:?}")
}
