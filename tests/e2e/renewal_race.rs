//! Renewals cannot outrun a revocation, on the real API server with kcert's webhook in the
//! authorization chain: jane renews in a loop (each renewal authenticated by the certificate
//! before it) while `kcert revoke --serial` revokes only her first certificate. Every
//! certificate of the line — those issued before the revocation, and any issued while it was
//! being written — is refused by the API server within seconds, and no renewal made after it is
//! issued.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Pod;
use kcert_controller::authz_webhook::WebhookSettings;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_kube::revocation::{Selector, revoke};
use kcert_testbed::kubeconfig::{Credentials, render};
use kcert_testbed::{TestCluster, client_from_kubeconfig};
use kcert_tests::*;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

async fn client_for(cluster: &TestCluster, cert_pem: &str, key_pem: &str) -> Client {
    let yaml = render(
        cluster.server(),
        cluster.ca_pem(),
        "jane",
        &Credentials::ClientCertificate { cert_pem, key_pem },
    );
    client_from_kubeconfig(&yaml).await.unwrap()
}

fn certificate_of(csr: &CertificateSigningRequest) -> Option<String> {
    let pem = csr.status.as_ref()?.certificate.as_ref()?;
    String::from_utf8(pem.0.clone()).ok()
}

/// One renewal authenticated by `client`: the new certificate and key, or why not.
async fn renew(
    cluster: &TestCluster,
    client: &Client,
    admin: &Api<CertificateSigningRequest>,
    signer: &str,
) -> Result<(String, String), String> {
    let name = cluster.unique_name("race-renew");
    let (csr, key) = csr_with_key(&name, signer, "jane", &["readers"], Some(3600));
    Api::<CertificateSigningRequest>::all(client.clone())
        .create(&PostParams::default(), &csr)
        .await
        .map_err(|e| format!("create refused: {e}"))?;
    let done = wait_for(admin, &name, 20 * SECOND, "decided", |c| {
        certificate_of(c).is_some()
            || conditions(c)
                .iter()
                .any(|x| x.0 == "Denied" || x.0 == "Failed")
    })
    .await;
    match certificate_of(&done) {
        Some(cert) => Ok((cert, key)),
        None => Err(format!("{:?}", conditions(&done))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_made_before_and_during_a_revocation_are_revoked_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = kcert_testbed::webhook::free_port().unwrap();
    let files = kcert_testbed::webhook::WebhookFiles::create(dir.path(), port).unwrap();
    let webhook = WebhookSettings {
        addr: files.addr,
        cert: files.cert.clone(),
        key: files.key.clone(),
        strict: Default::default(),
    };
    let cluster = TestCluster::builder()
        .authorization_config(files.authorization_config.clone())
        .start()
        .await
        .unwrap();
    install_crds(&cluster).await;
    allow_everyone_to_request(&cluster).await;
    let admin_client = cluster.admin_client().await.unwrap();
    let signer = "kcert.dev/client";
    let policy = serde_yaml::from_str(
        r#"
rules:
  - id: onboard
    requesters: {users: [kcert-testbed-admin]}
    commonName: {glob: "*"}
    groups: {allowed: [readers]}
  - id: renew
    requesters: {groups: [readers]}
    groups: {fromRequester: true}
    renewal: {maxChainAge: 90d}
"#,
    )
    .unwrap();
    let _controller = RunningController::start_with(
        admin_client.clone(),
        Settings {
            signer_names: vec![signer.to_string()],
            policy: PolicySource::Static(policy),
            ca: Some(CaSource::Files {
                cert: cluster.ca_cert_path(),
                key: cluster.ca_key_path(),
            }),
            ledger: true,
            webhook: Some(webhook),
            ..Settings::default()
        },
    );
    let ns = cluster.namespace("race").await.unwrap();
    grant_pod_list(&admin_client, &ns).await;
    let admin: Api<CertificateSigningRequest> = Api::all(admin_client.clone());

    // jane's first certificate, C1.
    let name = cluster.unique_name("race-first");
    let (csr, key) = csr_with_key(&name, signer, "jane", &["readers"], Some(3600));
    admin.create(&PostParams::default(), &csr).await.unwrap();
    let done = wait_for(&admin, &name, 20 * SECOND, "issued", issued).await;
    let first = certificate_of(&done).unwrap();
    let first_serial = kcert_pki::CertificateInfo::from_pem(first.as_bytes())
        .unwrap()
        .serial;
    let line: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(vec![(first, key)]));

    // Renewing in a loop, each with the newest certificate, until refused.
    let renewer = {
        let (line, admin) = (line.clone(), admin.clone());
        let cluster = &cluster;
        let admin_client = &admin_client;
        async move {
            let mut refusals = Vec::new();
            for _ in 0..40 {
                let (cert, key) = line.lock().unwrap().last().cloned().unwrap();
                // A renewal is made with a certificate on record (as a client renewing at the
                // start of its window would): wait until the ledger shows it.
                let fingerprint = kcert_pki::CertificateInfo::from_pem(cert.as_bytes())
                    .unwrap()
                    .fingerprint_sha256;
                eventually("the newest certificate on record", 20 * SECOND, || async {
                    let pages = kcert_kube::ledger::list_pages(admin_client).await.unwrap();
                    let index = kcert_kube::ledger::LedgerIndex::from_pages(&pages);
                    if index.holds(&fingerprint) {
                        Ok(())
                    } else {
                        Err(())
                    }
                })
                .await;
                let client = client_for(cluster, &cert, &key).await;
                match renew(cluster, &client, &admin, signer).await {
                    Ok(next) => line.lock().unwrap().push(next),
                    Err(why) => {
                        refusals.push(why);
                        if refusals.len() >= 3 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            refusals
        }
    };
    let revoker = async {
        // Once two renewals exist, revoke the first certificate alone, by serial: it must be on
        // record first.
        eventually("two renewals", 60 * SECOND, || async {
            let n = line.lock().unwrap().len();
            if n >= 3 { Ok(()) } else { Err(n) }
        })
        .await;
        eventually("the first certificate on record", 20 * SECOND, || async {
            let done = revoke(
                &admin_client,
                &Selector::Serial(first_serial.clone()),
                "kcert-testbed-admin",
                "laptop stolen",
            )
            .await
            .map_err(|e| e.to_string())?;
            if done.is_empty() {
                Err("not yet on record".to_string())
            } else {
                Ok(done)
            }
        })
        .await
    };
    let (refusals, revoked) = tokio::join!(renewer, revoker);
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    let line = line.lock().unwrap().clone();
    assert!(line.len() >= 3, "the line has {} certificates", line.len());
    assert!(
        !refusals.is_empty(),
        "the renewals went on after the revocation: {} certificates",
        line.len()
    );
    // Every certificate of the line is refused by the API server, naming the revocation.
    for (i, (cert, key)) in line.iter().enumerate() {
        let client = client_for(&cluster, cert, key).await;
        let message = eventually(
            &format!("certificate {i} of the line refused"),
            20 * SECOND,
            || async {
                match Api::<Pod>::namespaced(client.clone(), &ns)
                    .list(&ListParams::default())
                    .await
                {
                    Err(kube::Error::Api(s)) if s.code == 403 => Ok(s.message),
                    other => Err(format!("{:?}", other.map(|l| l.items.len()))),
                }
            },
        )
        .await;
        assert!(message.contains("laptop stolen"), "{i}: {message}");
        if i > 0 {
            assert!(
                message.contains(&format!("requested with certificate serial {first_serial}")),
                "{i}: {message}"
            );
        }
    }
    eprintln!(
        "renewal race: {} certificates in the line, all refused; refusals after the revocation: {refusals:?}",
        line.len()
    );
}

/// Group readers may list pods in `ns`.
async fn grant_pod_list(admin: &Client, ns: &str) {
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    let meta = |name: &str| kube::api::ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta("pod-reader"),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec!["".into()]),
                    resources: Some(vec!["pods".into()]),
                    verbs: vec!["list".into()],
                    ..Default::default()
                }]),
            },
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: meta("readers"),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: "pod-reader".into(),
                },
                subjects: Some(vec![Subject {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Group".into(),
                    name: "readers".into(),
                    namespace: None,
                }]),
            },
        )
        .await
        .unwrap();
}
