//! Helpers shared by kcert's cluster tests: CSR objects, an in-process controller, waiting.

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_pki::{CsrSubject, KeyType, PrivateKey, SubjectAltNames, build_csr};
use kcert_testbed::TestCluster;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::time::{Duration, Instant};

/// A CertificateSigningRequest for `user` in `groups` with a fresh ECDSA key.
pub fn csr_object(
    name: &str,
    signer: &str,
    user: &str,
    groups: &[&str],
    expiration_seconds: Option<i32>,
) -> CertificateSigningRequest {
    csr_with_key(name, signer, user, groups, expiration_seconds).0
}

/// Like [`csr_object`], also returning the key's PEM.
pub fn csr_with_key(
    name: &str,
    signer: &str,
    user: &str,
    groups: &[&str],
    expiration_seconds: Option<i32>,
) -> (CertificateSigningRequest, String) {
    let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key generation");
    let subject = CsrSubject::new(user, groups.iter().copied()).expect("valid subject");
    let pem = build_csr(&key, &subject, &SubjectAltNames::default()).expect("CSR");
    (
        csr_from_pem(name, signer, pem.into_bytes(), expiration_seconds),
        key.to_pkcs8_pem().unwrap().to_string(),
    )
}

/// A CertificateSigningRequest around any request bytes, with client usages.
pub fn csr_from_pem(
    name: &str,
    signer: &str,
    request: Vec<u8>,
    expiration_seconds: Option<i32>,
) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request),
            signer_name: signer.to_string(),
            usages: Some(vec![
                "digital signature".into(),
                "key encipherment".into(),
                "client auth".into(),
            ]),
            expiration_seconds,
            ..Default::default()
        },
        status: None,
    }
}

/// Let every authenticated user create and read CSRs (once per cluster), as a cluster that
/// offers self-service certificates does.
pub async fn allow_everyone_to_request(cluster: &TestCluster) {
    let admin = cluster.admin_client().await.unwrap();
    let name = "kcert-tests-csr-requester";
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["certificates.k8s.io".into()]),
            resources: Some(vec!["certificatesigningrequests".into()]),
            verbs: vec!["create".into(), "get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: name.into(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            name: "system:authenticated".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    for r in [
        Api::<ClusterRole>::all(admin.clone())
            .create(&PostParams::default(), &role)
            .await
            .map(|_| ()),
        Api::<ClusterRoleBinding>::all(admin)
            .create(&PostParams::default(), &binding)
            .await
            .map(|_| ()),
    ] {
        match r {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("RBAC setup: {e}"),
        }
    }
}

/// A kcert-controller running in this test's runtime, for one signer name of its own.
pub struct RunningController {
    /// The signer name it serves.
    pub signer: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningController {
    /// Start approver and signer for `signer` with `policy` and the cluster's CA.
    pub fn start(
        cluster: &TestCluster,
        client: Client,
        signer: &str,
        policy: PolicySource,
        max_duration: Duration,
    ) -> Self {
        let settings = Settings {
            signer_names: vec![signer.to_string()],
            policy,
            ca: Some(CaSource::Files {
                cert: cluster.ca_cert_path(),
                key: cluster.ca_key_path(),
            }),
            max_duration,
            ..Settings::default()
        };
        Self::start_with(client, settings)
    }

    /// Start with explicit settings.
    pub fn start_with(client: Client, settings: Settings) -> Self {
        // Controller logs show with RUST_LOG=kcert_controller=debug (captured per test otherwise).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let signer = settings.signer_names.first().cloned().unwrap_or_default();
        let task = tokio::spawn(async move {
            kcert_controller::run(client, settings, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        RunningController {
            signer,
            stop: Some(tx),
            task,
        }
    }

    /// Kill it abruptly, as a crash would (no graceful shutdown).
    pub fn kill(mut self) {
        self.stop.take();
        self.task.abort();
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

/// The one way tests wait: call `probe` every 100 ms until it returns `Ok(value)`, and return
/// that; after `limit`, panic saying `what` did not happen and what `probe` last reported
/// (`Err(note)`).
pub async fn eventually<T, N: std::fmt::Debug, Fut>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Fut,
) -> T
where
    Fut: std::future::Future<Output = Result<T, N>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(note) if Instant::now() >= deadline => {
                panic!("{what}: not after {limit:?}; last: {note:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Wait (up to `limit`) for an Event with `reason` regarding the object named `name`; it.
pub async fn wait_for_event(
    client: &kube::Client,
    name: &str,
    reason: &str,
    limit: Duration,
) -> k8s_openapi::api::events::v1::Event {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    eventually(&format!("a {reason} Event on {name}"), limit, || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|ev| {
                ev.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && ev.reason.as_deref() == Some(reason)
            })
            .ok_or("none yet")
    })
    .await
}

/// Poll `name` until `done` holds (or panic after `limit`), returning the object.
pub async fn wait_for(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&CertificateSigningRequest) -> bool,
) -> CertificateSigningRequest {
    eventually(&format!("{name} {what}"), limit, || async {
        let csr = api.get(name).await.unwrap();
        if done(&csr) { Ok(csr) } else { Err(csr.status) }
    })
    .await
}

/// The (type, reason, message) of every condition.
pub fn conditions(csr: &CertificateSigningRequest) -> Vec<(String, String, String)> {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            (
                c.type_,
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default(),
            )
        })
        .collect()
}

/// The CSR's issued certificate, read (panics if there is none: call after [`issued`]).
pub fn certificate(csr: &CertificateSigningRequest) -> kcert_pki::CertificateInfo {
    let pem = &csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .expect("an issued CSR")
        .0;
    kcert_pki::CertificateInfo::from_pem_chain(pem).expect("a certificate kcert can read")
}

/// Whether the CSR has a certificate.
pub fn issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some()
}

/// Whether any of Approved, Denied or Failed is set.
pub fn decided(csr: &CertificateSigningRequest) -> bool {
    !conditions(csr).is_empty()
}

/// Apply every CRD in deploy/crd.yaml (server-side) and wait until each is established.
pub async fn install_crds(cluster: &TestCluster) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    use serde::Deserialize;
    let client = cluster.admin_client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crd.yaml"))
        .unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd = CustomResourceDefinition::deserialize(doc).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("kcert-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        eventually(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || async {
                let status = crds.get(&name).await.unwrap().status;
                let established = status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                if established { Ok(()) } else { Err(status) }
            },
        )
        .await;
    }
}
