//! CA rotation on the real API server, with no restart anywhere: a user of the old CA keeps
//! working through prepare, switch and re-issue (a client looping through the rotation counts
//! every failed request), `switch` is refused until the API server trusts the new CA, `complete`
//! is refused while certificates of the old CA are live, and once the API server drops the old CA
//! its certificates get 401 while renewed users work. Once with the CAs in Secrets, once with
//! their keys in a PKCS#11 token (SoftHSM2). Its own test bed per case: each rewrites its API
//! server's client-CA file (re-read without a restart), as an operator syncing the bundle would.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kcert_controller::rotation::RotationSettings;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_kube::rotation::{AskedPhase, CaRotationObject, ReachedPhase};
use kcert_pkcs11::{KeySelector, TokenConfig, TokenKey, TokenSelector};
use kcert_pki::{CertificateAuthority, KeyType, PrivateKey, SystemRandom};
use kcert_testbed::kubeconfig::{Credentials, render};
use kcert_testbed::{TestCluster, client_from_kubeconfig};
use kcert_tests::*;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

const NS: &str = "kcert-system";
const SIGNER: &str = "kcert.dev/rotating";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Secret,
    Token,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_with_the_cas_in_secrets_loses_no_request() {
    rotation_loses_no_request(Backend::Secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_with_the_ca_keys_in_a_token_loses_no_request() {
    rotation_loses_no_request(Backend::Token).await;
}

/// `kcert ARGS` in-process with `kubeconfig`: its exit code as a number.
async fn kcert_cli(kubeconfig: &Path, args: &[&str]) -> u8 {
    let mut all: Vec<std::ffi::OsString> = vec![
        "kcert".into(),
        "--kubeconfig".into(),
        kubeconfig.as_os_str().to_owned(),
    ];
    all.extend(args.iter().map(|a| a.into()));
    let code = tokio::task::spawn_blocking(move || kcert::main(all))
        .await
        .unwrap();
    // ExitCode has no accessor; its Debug shows the number.
    let shown = format!("{code:?}");
    shown
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("exit code {shown}"))
}

async fn client_for(cluster: &TestCluster, user: &str, cert_pem: &str, key_pem: &str) -> Client {
    let yaml = render(
        cluster.server(),
        cluster.ca_pem(),
        user,
        &Credentials::ClientCertificate { cert_pem, key_pem },
    );
    client_from_kubeconfig(&yaml).await.unwrap()
}

async fn who(client: &Client) -> Result<String, String> {
    Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| e.to_string())
        .map(|r| r.status.unwrap().user_info.unwrap().username.unwrap())
}

/// A CSR for `user` created by `requester`, issued; its certificate and key.
async fn issue(
    cluster: &TestCluster,
    admin: &Client,
    requester: &Client,
    user: &str,
) -> (String, String, kcert_pki::CertificateInfo) {
    let name = cluster.unique_name(user);
    let (csr, key_pem) = csr_with_key(&name, SIGNER, user, &["dev"], Some(3600));
    Api::<CertificateSigningRequest>::all(requester.clone())
        .create(&PostParams::default(), &csr)
        .await
        .unwrap();
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let done = wait_for(&csrs, &name, Duration::from_secs(60), "issued", issued).await;
    let info = certificate(&done);
    let pem = String::from_utf8(done.status.unwrap().certificate.unwrap().0).unwrap();
    (pem, key_pem, info)
}

/// The operator's step: kube-apiserver's --client-ca-file becomes the test bed's CA plus the
/// bundle kcert publishes.
async fn sync_client_ca(cluster: &TestCluster, admin: &Client) -> usize {
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), NS)
        .get(kcert_kube::rotation::BUNDLE_CONFIGMAP)
        .await
        .unwrap();
    let bundle = cm.data.unwrap()[kcert_kube::rotation::BUNDLE_KEY].clone();
    let n = kcert_pki::pem::parse_blocks(bundle.as_bytes())
        .unwrap()
        .len();
    set_client_ca(cluster, &bundle);
    n
}

/// kube-apiserver's --client-ca-file: the test bed's CA, then `pem`.
fn set_client_ca(cluster: &TestCluster, pem: &str) {
    std::fs::write(cluster.ca_cert_path(), format!("{}{pem}", cluster.ca_pem())).unwrap();
}

/// Jane and bob (groups developers, or dev once they hold a certificate) get themselves in dev.
fn self_service() -> kcert_policy::PolicySpec {
    serde_yaml::from_str(&format!(
        "rules: [{{id: developers-self, signerNames: [\"{SIGNER}\"], requesters: {{groups: [developers, dev]}}, commonName: {{self: true}}, groups: {{allowed: [dev]}}}}]"
    ))
    .unwrap()
}

/// The API server as the admin reaches it (the controller's probe connects from it).
async fn admin_config(cluster: &TestCluster) -> kube::Config {
    kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cluster.admin_kubeconfig_path()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap()
}

async fn rotation(admin: &Client) -> CaRotationObject {
    Api::<CaRotationObject>::all(admin.clone())
        .get(kcert_kube::rotation::DEFAULT_ROTATION)
        .await
        .unwrap()
}

fn key_id_of(r: &CaRotationObject, role: &str) -> String {
    r.status
        .clone()
        .unwrap()
        .trusted
        .into_iter()
        .find(|t| t.role == role)
        .unwrap_or_else(|| panic!("no {role} CA in {:?}", r.status))
        .key_id
}

/// Requests through the rotation: every 100 ms a SelfSubjectReview with the current client,
/// counting answers that are not the expected user.
struct Looping {
    client: Arc<tokio::sync::RwLock<Client>>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Looping {
    fn start(client: Client, user: &'static str) -> Looping {
        let client = Arc::new(tokio::sync::RwLock::new(client));
        let (ok, failed, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let task = tokio::spawn({
            let (client, ok, failed, stop) =
                (client.clone(), ok.clone(), failed.clone(), stop.clone());
            async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let c = client.read().await.clone();
                    match who(&c).await {
                        Ok(u) if u == user => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures.push(format!("{other:?}"));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                failures
            }
        });
        Looping {
            client,
            ok,
            failed,
            stop,
            task,
        }
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.task.await.unwrap();
        assert_eq!(self.failed.load(Ordering::Relaxed), failures.len() as u64);
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

async fn rotation_loses_no_request(backend: Backend) {
    // ClusterTrustBundles are beta and off by default in v1.36: the gate and the API.
    let cluster = TestCluster::builder()
        .apiserver_arg("--feature-gates=ClusterTrustBundle=true")
        .apiserver_arg("--runtime-config=certificates.k8s.io/v1beta1/clustertrustbundles=true")
        .start()
        .await
        .unwrap();
    install_crds(&cluster).await;
    allow_everyone_to_request(&cluster).await;
    let admin = cluster.admin_client().await.unwrap();
    create_namespace(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    let lifetime = Duration::from_secs(30 * 86_400);

    // CA1, where the controller's flags say.
    let token = (backend == Backend::Token).then(|| TokenConfig {
        module: kcert_testbed::softhsm::module(),
        token: TokenSelector::Label(kcert_testbed::softhsm::process_token().unwrap()),
        key: KeySelector::Label("ca1".into()),
        pin: kcert_testbed::softhsm::PIN.to_string().into(),
    });
    let (ca1, source) = match &token {
        None => {
            let ca = CertificateAuthority::create(
                PrivateKey::generate(KeyType::EcdsaP256).unwrap(),
                "kcert rotation CA1",
                lifetime,
                SystemTime::now(),
                &SystemRandom,
            )
            .unwrap();
            let key = ca.private_key().unwrap().to_pkcs8_pem().unwrap();
            ca_secret(&admin, "kcert-ca", &ca, &key).await;
            let source = CaSource::Secret {
                namespace: NS.into(),
                name: "kcert-ca".into(),
            };
            (ca, source)
        }
        Some(config) => {
            let key = Arc::new(TokenKey::generate(config.clone(), KeyType::EcdsaP256).unwrap());
            let ca = CertificateAuthority::create_with_key(
                key,
                "kcert rotation CA1 (token)",
                lifetime,
                SystemTime::now(),
                &SystemRandom,
            )
            .unwrap();
            let cert = dir.path().join("ca1.crt");
            std::fs::write(&cert, ca.certificate_pem()).unwrap();
            (
                ca,
                CaSource::Pkcs11 {
                    cert: Some(cert),
                    token: config.clone(),
                },
            )
        }
    };
    set_client_ca(&cluster, &ca1.certificate_pem());

    let policy = self_service();
    let api = admin_config(&cluster).await;
    let settings = Settings {
        signer_names: vec![SIGNER.into()],
        policy: PolicySource::Static(policy),
        ca: Some(source),
        max_duration: Duration::from_secs(3600),
        ledger: true,
        rotation: Some(RotationSettings {
            name: kcert_kube::rotation::DEFAULT_ROTATION.into(),
            namespace: NS.into(),
            api,
            token: token.clone(),
            every: Duration::from_millis(500),
            trust_bundle_signers: vec![SIGNER.into()],
        }),
        ..Settings::default()
    };
    let controller = RunningController::start_with(admin.clone(), settings.clone());
    let kubeconfig = cluster.admin_kubeconfig_path().to_path_buf();

    // Jane, from CA1, works; a client keeps asking through the whole rotation.
    let requester = cluster.user_client("jane", &["developers"]).await.unwrap();
    let (jane1_pem, jane1_key, jane1) = issue(&cluster, &admin, &requester, "jane").await;
    let jane1_client = client_for(&cluster, "jane", &jane1_pem, &jane1_key).await;
    eventually(
        "jane's CA1 certificate authenticates",
        Duration::from_secs(90),
        || {
            let c = jane1_client.clone();
            async move { who(&c).await }
        },
    )
    .await;
    let looping = Looping::start(jane1_client.clone(), "jane");

    // Before any rotation, the bundle holds the controller's CA alone.
    eventually("the bundle published", Duration::from_secs(30), || {
        let admin = admin.clone();
        async move {
            match Api::<ConfigMap>::namespaced(admin.clone(), NS)
                .get_opt(kcert_kube::rotation::BUNDLE_CONFIGMAP)
                .await
            {
                Ok(Some(_)) => Ok(bundle_len(&admin).await),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(bundle_len(&admin).await, 1);
    same_trust_bundle(&admin, 1).await;

    // 1. prepare: both CAs published; CA1 still signs.
    let ca2_cert = dir.path().join("ca2.crt");
    let prepared = match &token {
        None => kcert_cli(&kubeconfig, &["ca", "rotate", "prepare", "-n", NS]).await,
        Some(config) => {
            let key = Arc::new(
                TokenKey::generate(
                    TokenConfig {
                        key: KeySelector::Label("ca2".into()),
                        ..config.clone()
                    },
                    KeyType::EcdsaP256,
                )
                .unwrap(),
            );
            let ca2 = CertificateAuthority::create_with_key(
                key,
                "kcert rotation CA2 (token)",
                lifetime,
                SystemTime::now(),
                &SystemRandom,
            )
            .unwrap();
            std::fs::write(&ca2_cert, ca2.certificate_pem()).unwrap();
            kcert_cli(
                &kubeconfig,
                &[
                    "ca",
                    "rotate",
                    "prepare",
                    "-n",
                    NS,
                    "--token-key-label",
                    "ca2",
                    "--certificate",
                    ca2_cert.to_str().unwrap(),
                ],
            )
            .await
        }
    };
    assert_eq!(prepared, 0, "prepare");
    let r = rotation(&admin).await;
    assert_eq!(
        r.status.as_ref().unwrap().phase,
        Some(ReachedPhase::Prepared)
    );
    let (old_id, new_id) = (key_id_of(&r, "old"), key_id_of(&r, "new"));
    assert_eq!(Some(old_id.clone()), ca1.info().subject_key_id);
    assert_ne!(old_id, new_id);
    hostile_edits(&cluster, &admin, &kubeconfig, backend).await;
    let bob = cluster.user_client("bob", &["developers"]).await.unwrap();
    let (_, _, bob1) = issue(&cluster, &admin, &bob, "bob").await;
    assert_eq!(
        bob1.authority_key_id.as_deref(),
        Some(old_id.as_str()),
        "prepared: CA1 signs"
    );

    same_trust_bundle(&admin, 2).await;

    // 2. switch before the API server trusts CA2: refused, and set back to Prepare.
    let refused = kcert_cli(&kubeconfig, &["ca", "rotate", "switch", "--wait", "4s"]).await;
    assert_eq!(refused, 1, "switch before the API server trusts the new CA");
    let r = rotation(&admin).await;
    assert_eq!(r.spec.phase, AskedPhase::Prepare);
    let probe = r.status.clone().unwrap().probe.expect("a probe was made");
    assert!(!probe.authenticated);
    assert!(probe.message.contains("401"), "{probe:?}");
    let (_, _, bob2) = issue(&cluster, &admin, &bob, "bob").await;
    assert_eq!(
        bob2.authority_key_id.as_deref(),
        Some(old_id.as_str()),
        "refused: CA1 signs"
    );

    // The operator adds the bundle; switch succeeds once the API server has re-read it.
    assert_eq!(sync_client_ca(&cluster, &admin).await, 2);
    let switched = kcert_cli(&kubeconfig, &["ca", "rotate", "switch", "--wait", "120s"]).await;
    assert_eq!(switched, 0, "switch once the API server trusts the new CA");
    // A controller killed and restarted mid-rotation, its flags still naming CA1: it picks up
    // where the rotation's status says and signs with CA2 from its first CSR.
    controller.kill();
    let _controller = RunningController::start_with(admin.clone(), settings.clone());
    // The bundle says which CA signs and where its key is; `kcert ca status` reads it.
    let signing_fp = rotation(&admin).await.status.unwrap().signing.unwrap();
    eventually(
        "the bundle names the new CA as signing",
        Duration::from_secs(10),
        || {
            let (admin, signing_fp) = (admin.clone(), signing_fp.clone());
            async move {
                let a = Api::<ConfigMap>::namespaced(admin, NS)
                    .get(kcert_kube::rotation::BUNDLE_CONFIGMAP)
                    .await
                    .unwrap()
                    .metadata
                    .annotations
                    .unwrap_or_default();
                let fp = a.get(kcert_kube::rotation::SIGNING_ANNOTATION);
                let key = a
                    .get(kcert_kube::rotation::SIGNING_KEY_ANNOTATION)
                    .cloned()
                    .unwrap_or_default();
                let in_token = key.contains("PKCS#11") || key.contains("token");
                if fp == Some(&signing_fp) && in_token == (backend == Backend::Token) {
                    Ok(())
                } else {
                    Err(format!("{a:?}"))
                }
            }
        },
    )
    .await;
    assert_eq!(kcert_cli(&kubeconfig, &["ca", "status", "-n", NS]).await, 0);
    let (bob3_pem, bob3_key, bob3) = issue(&cluster, &admin, &bob, "bob").await;
    assert_eq!(
        bob3.authority_key_id.as_deref(),
        Some(new_id.as_str()),
        "switched: CA2 signs"
    );
    assert_eq!(
        who(&client_for(&cluster, "bob", &bob3_pem, &bob3_key).await).await,
        Ok("bob".to_string())
    );

    // 3. re-issue: jane renews with her CA1 certificate onto CA2; the loop moves to it.
    let (jane2_pem, jane2_key, jane2) = issue(&cluster, &admin, &jane1_client, "jane").await;
    assert_eq!(jane2.authority_key_id.as_deref(), Some(new_id.as_str()));
    let jane2_client = client_for(&cluster, "jane", &jane2_pem, &jane2_key).await;
    *looping.client.write().await = jane2_client.clone();
    // Who still holds live CA1 certificates: jane's first, bob's two.
    let index = kcert_kube::ledger::read_index(&admin).await.unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let mut live: Vec<String> = index
        .live_from(&old_id, now)
        .iter()
        .map(|e| e.serial.to_string())
        .collect();
    live.sort();
    let mut expected = vec![
        jane1.serial.clone(),
        bob1.serial.clone(),
        bob2.serial.clone(),
    ];
    expected.sort();
    assert_eq!(live, expected);
    // Jane's renewal is on the ledger as the new CA's (records are written in batches, within
    // the flush interval of the certificate).
    eventually(
        "jane's renewal on the ledger as CA2's",
        Duration::from_secs(10),
        || {
            let (admin, new_id, serial) = (admin.clone(), new_id.clone(), jane2.serial.clone());
            async move {
                let index = kcert_kube::ledger::read_index(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                let now = k8s_openapi::jiff::Timestamp::now().as_second();
                let from_new: Vec<String> = index
                    .live_from(&new_id, now)
                    .iter()
                    .map(|e| e.serial.to_string())
                    .collect();
                if from_new.contains(&serial) {
                    Ok(())
                } else {
                    Err(from_new.join(","))
                }
            }
        },
    )
    .await;

    // 4. complete: refused while CA1 certificates are live; forced, it names and cuts them off.
    let refused = kcert_cli(&kubeconfig, &["ca", "rotate", "complete"]).await;
    assert_eq!(refused, 1, "complete with live certificates of the old CA");
    assert_eq!(
        rotation(&admin).await.status.unwrap().phase,
        Some(ReachedPhase::Switched)
    );
    let (ok, failures) = looping.finish().await;
    assert!(
        failures.is_empty(),
        "requests failed during the rotation: {failures:?}"
    );
    assert!(ok >= 20, "only {ok} requests were made");
    let completed = kcert_cli(
        &kubeconfig,
        &["ca", "rotate", "complete", "--force", "--wait", "90s"],
    )
    .await;
    assert_eq!(completed, 0, "complete --force");
    let r = rotation(&admin).await;
    assert!(r.spec.forced_by.is_some());
    assert_eq!(r.status.clone().unwrap().trusted.len(), 1);
    assert_eq!(sync_client_ca(&cluster, &admin).await, 1);
    same_trust_bundle(&admin, 1).await;
    eventually(
        "the old CA's certificate is refused",
        Duration::from_secs(120),
        || {
            let c = jane1_client.clone();
            async move {
                match who(&c).await {
                    Err(e) if e.contains("401") => Ok(()),
                    other => Err(other),
                }
            }
        },
    )
    .await;
    assert_eq!(
        who(&jane2_client).await,
        Ok("jane".to_string()),
        "renewed jane works"
    );
    let (_, _, bob4) = issue(&cluster, &admin, &bob, "bob").await;
    assert_eq!(
        bob4.authority_key_id.as_deref(),
        Some(new_id.as_str()),
        "completed: CA2 signs"
    );

    // The completed rotation deleted while the controller's flags still name CA1: CA1 was
    // retired on the bundle, and never signs again.
    let ca1_fp = kcert_kube::crd::normalize_fingerprint(&ca1.info().fingerprint_sha256);
    let retired = Api::<ConfigMap>::namespaced(admin.clone(), NS)
        .get(kcert_kube::rotation::BUNDLE_CONFIGMAP)
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default()
        .get(kcert_kube::rotation::RETIRED_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    assert!(retired.contains(&ca1_fp), "{retired}");
    Api::<CaRotationObject>::all(admin.clone())
        .delete(kcert_kube::rotation::DEFAULT_ROTATION, &Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let name = cluster.unique_name("bob");
    let (csr, _) = csr_with_key(&name, SIGNER, "bob", &["dev"], Some(3600));
    Api::<CertificateSigningRequest>::all(bob.clone())
        .create(&PostParams::default(), &csr)
        .await
        .unwrap();
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    wait_for(&csrs, &name, Duration::from_secs(30), "approved", |c| {
        conditions(c).iter().any(|x| x.0 == "Approved")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        !issued(&csrs.get(&name).await.unwrap()),
        "a retired CA signed after its rotation was deleted"
    );
}

/// Attacks on a prepared rotation, each with its exact outcome (docs/security.md, "Hostile CA
/// rotation"); the rotation is as prepared afterwards.
async fn hostile_edits(cluster: &TestCluster, admin: &Client, kubeconfig: &Path, backend: Backend) {
    use kube::api::{Patch, PatchParams};
    let rotations: Api<CaRotationObject> = Api::all(admin.clone());
    let name = kcert_kube::rotation::DEFAULT_ROTATION;
    // Its CAs cannot be edited, not even by an admin: a new rotation is a new object.
    for patch in [
        serde_json::json!({"spec": {"next": {"fingerprint": "cd".repeat(32)}}}),
        serde_json::json!({"spec": {"from": "cd".repeat(32)}}),
        serde_json::json!({"spec": {"next": {"secret": "another"}}}),
    ] {
        let refused = rotations
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err("an edit of the rotation's CAs");
        assert!(
            refused.to_string().contains("never change"),
            "{patch}: {refused}"
        );
    }
    // A second prepare while one is under way is refused.
    assert_eq!(
        kcert_cli(kubeconfig, &["ca", "rotate", "prepare", "-n", NS]).await,
        1
    );
    // A requester (who may create and update CSRs) can neither start nor move a rotation, nor
    // write its status.
    let jane = cluster.user_client("jane", &["developers"]).await.unwrap();
    let as_jane: Api<CaRotationObject> = Api::all(jane);
    let patch = serde_json::json!({"spec": {"phase": "Switch"}});
    for result in [
        as_jane
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop),
        as_jane
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({"status": {"phase": "Switched"}})),
            )
            .await
            .map(drop),
        as_jane
            .create(
                &PostParams::default(),
                &CaRotationObject::new("janes-own", rotation(admin).await.spec),
            )
            .await
            .map(drop),
    ] {
        match result {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
            other => panic!("a requester moved the rotation: {other:?}"),
        }
    }
    if backend != Backend::Secret {
        return;
    }
    // The new CA's Secret replaced by another CA after prepare: not followed (only the CA that
    // was prepared may ever be trusted or sign); put back, the rotation goes on.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let prepared = secrets.get("kcert-ca-next").await.unwrap();
    let intruder = CertificateAuthority::create(
        PrivateKey::generate(KeyType::EcdsaP256).unwrap(),
        "intruder",
        Duration::from_secs(86_400),
        SystemTime::now(),
        &SystemRandom,
    )
    .unwrap();
    let mut swapped = prepared.clone();
    swapped.data = Some(
        [
            (
                "tls.crt".to_string(),
                k8s_openapi::ByteString(intruder.certificate_pem().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                k8s_openapi::ByteString(
                    intruder
                        .private_key()
                        .unwrap()
                        .to_pkcs8_pem()
                        .unwrap()
                        .as_bytes()
                        .to_vec(),
                ),
            ),
        ]
        .into(),
    );
    let swapped = secrets
        .replace("kcert-ca-next", &PostParams::default(), &swapped)
        .await
        .unwrap();
    let status = eventually("the swapped CA refused", Duration::from_secs(20), || {
        let rotations = rotations.clone();
        async move {
            let s = rotations.get(name).await.unwrap().status.unwrap();
            if s.message.contains("not the CA") {
                Ok(s)
            } else {
                Err(s)
            }
        }
    })
    .await;
    assert_eq!(
        status.trusted.len(),
        1,
        "only the old CA trusted: {status:?}"
    );
    assert_eq!(
        bundle_len(admin).await,
        1,
        "the intruder is never published"
    );
    let mut restored = prepared;
    restored.metadata.resource_version = swapped.metadata.resource_version;
    secrets
        .replace("kcert-ca-next", &PostParams::default(), &restored)
        .await
        .unwrap();
    eventually(
        "the prepared CA back in the bundle",
        Duration::from_secs(20),
        || {
            let rotations = rotations.clone();
            async move {
                let s = rotations.get(name).await.unwrap().status.unwrap();
                if s.trusted.len() == 2 && s.message.is_empty() {
                    Ok(())
                } else {
                    Err(s)
                }
            }
        },
    )
    .await;
    assert_eq!(bundle_len(admin).await, 2);
}

/// How many CAs the published bundle holds.
async fn bundle_len(admin: &Client) -> usize {
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), NS)
        .get(kcert_kube::rotation::BUNDLE_CONFIGMAP)
        .await
        .unwrap();
    let bundle = cm.data.unwrap()[kcert_kube::rotation::BUNDLE_KEY].clone();
    kcert_pki::pem::parse_blocks(bundle.as_bytes())
        .unwrap()
        .len()
}

/// The ClusterTrustBundle linked to kcert's signer holds exactly the published bundle, of `n`
/// CAs (the same bytes `kcert ca bundle` prints).
async fn same_trust_bundle(admin: &Client, n: usize) {
    use k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle;
    let name = kcert_controller::rotation::trust_bundle_name(SIGNER);
    assert_eq!(name, "kcert.dev:rotating:kcert");
    eventually(
        "the ClusterTrustBundle matches the bundle",
        Duration::from_secs(20),
        || {
            let (admin, name) = (admin.clone(), name.clone());
            async move {
                let cm = Api::<ConfigMap>::namespaced(admin.clone(), NS)
                    .get(kcert_kube::rotation::BUNDLE_CONFIGMAP)
                    .await
                    .unwrap();
                let pem = cm.data.unwrap()[kcert_kube::rotation::BUNDLE_KEY].clone();
                let ctb = Api::<ClusterTrustBundle>::all(admin)
                    .get_opt(&name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no ClusterTrustBundle yet")?;
                let blocks = kcert_pki::pem::parse_blocks(pem.as_bytes()).unwrap().len();
                if ctb.spec.trust_bundle == pem
                    && blocks == n
                    && ctb.spec.signer_name.as_deref() == Some(SIGNER)
                {
                    Ok(())
                } else {
                    Err(format!("{blocks} in the bundle; CTB {:?}", ctb.spec))
                }
            }
        },
    )
    .await;
}

async fn create_namespace(admin: &Client) {
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(NS.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

/// A Secret `kcert-system/NAME` holding `ca`'s certificate with its chain and `key`.
async fn ca_secret(admin: &Client, name: &str, ca: &CertificateAuthority, key_pem: &str) {
    Api::<Secret>::namespaced(admin.clone(), NS)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(
                    [
                        (
                            "tls.crt".to_string(),
                            k8s_openapi::ByteString(ca.certificate_chain_pem().into_bytes()),
                        ),
                        (
                            "tls.key".to_string(),
                            k8s_openapi::ByteString(key_pem.as_bytes().to_vec()),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

/// An intermediate CA whose root stays offline: the API server trusts the root alone, kcert
/// writes leaf + intermediate into CSR status (and so into kubeconfigs), and the certificate
/// authenticates. Rotating to another intermediate under the same root changes no bundle: the
/// switch probe passes with nothing synced, and the old intermediate's certificates keep
/// working after complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intermediate_ca_issues_its_chain_and_rotates_under_its_root_without_a_bundle_change() {
    let cluster = TestCluster::start().await.unwrap();
    install_crds(&cluster).await;
    allow_everyone_to_request(&cluster).await;
    let admin = cluster.admin_client().await.unwrap();
    create_namespace(&admin).await;
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The root: only its certificate leaves this function's memory.
    let root = CertificateAuthority::create(
        PrivateKey::generate(KeyType::EcdsaP256).unwrap(),
        "kcert offline root",
        365 * day,
        now,
        &SystemRandom,
    )
    .unwrap();
    let intermediate = |name: &str| {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let key_pem = key.to_pkcs8_pem().unwrap().to_string();
        let ca = root
            .create_intermediate(Arc::new(key), name, 30 * day, now, &SystemRandom)
            .unwrap();
        (ca, key_pem)
    };
    let (i1, k1) = intermediate("kcert intermediate 1");
    let (i2, k2) = intermediate("kcert intermediate 2");
    assert_eq!(i1.chain_pem(), root.certificate_pem());
    ca_secret(&admin, "kcert-ca", &i1, &k1).await;
    set_client_ca(&cluster, &root.certificate_pem());
    let policy = self_service();
    let api = admin_config(&cluster).await;
    let _controller = RunningController::start_with(
        admin.clone(),
        Settings {
            signer_names: vec![SIGNER.into()],
            policy: PolicySource::Static(policy),
            ca: Some(CaSource::Secret {
                namespace: NS.into(),
                name: "kcert-ca".into(),
            }),
            max_duration: Duration::from_secs(3600),
            ledger: true,
            rotation: Some(RotationSettings {
                name: kcert_kube::rotation::DEFAULT_ROTATION.into(),
                namespace: NS.into(),
                api,
                token: None,
                every: Duration::from_millis(500),
                trust_bundle_signers: vec![],
            }),
            // The intermediates live 30 days: with a 90-day window they are expiring.
            ca_expiry_window: kcert_kube::rotation::ExpiryWindow::Before(90 * day),
            metrics_addr: Some(([127, 0, 0, 1], port).into()),
            ..Settings::default()
        },
    );
    let kubeconfig = cluster.admin_kubeconfig_path().to_path_buf();
    // Expiry said, not discovered: the metric, /readyz still 200 with a warning, and an Event on
    // the bundle ConfigMap.
    let (metrics, ready) = eventually(
        "the CA's expiry reported",
        Duration::from_secs(30),
        || async {
            let ready = http_get(port, "/readyz");
            let metrics = http_get(port, "/metrics");
            match (&ready, &metrics) {
                ((200, r), (200, m))
                    if r.contains("warning: CA CN=kcert intermediate 1")
                        && m.contains("kcert_ca_not_after_seconds{") =>
                {
                    Ok((m.clone(), r.clone()))
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(ready.starts_with("ok\n"), "{ready}");
    let not_after = i1
        .not_after()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(metrics.contains(&format!("}} {not_after}")), "{metrics}");
    eventually(
        "a CaExpiring Event on the bundle",
        Duration::from_secs(20),
        || async {
            let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), NS)
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            events
                .items
                .iter()
                .find(|e| {
                    e.reason.as_deref() == Some(kcert_controller::ca_expiry::CA_EXPIRING)
                        && e.type_.as_deref() == Some("Warning")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some(kcert_kube::rotation::BUNDLE_CONFIGMAP)
                })
                .map(drop)
                .ok_or_else(|| format!("{} Events, none CaExpiring", events.items.len()))
        },
    )
    .await;
    let bundle = || {
        let admin = admin.clone();
        async move {
            Api::<ConfigMap>::namespaced(admin, NS)
                .get_opt(kcert_kube::rotation::BUNDLE_CONFIGMAP)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|cm| cm.data?.get(kcert_kube::rotation::BUNDLE_KEY).cloned())
                .ok_or_else(|| "no bundle yet".to_string())
        }
    };
    // The bundle holds the root, not the intermediate that signs.
    let published = eventually("the bundle published", Duration::from_secs(30), bundle).await;
    assert_eq!(published, root.certificate_pem());

    let requester = cluster.user_client("jane", &["developers"]).await.unwrap();
    let name = cluster.unique_name("jane");
    let (csr, key_pem) = csr_with_key(&name, SIGNER, "jane", &["dev"], Some(3600));
    Api::<CertificateSigningRequest>::all(requester)
        .create(&PostParams::default(), &csr)
        .await
        .unwrap();
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let done = wait_for(&csrs, &name, Duration::from_secs(60), "issued", issued).await;
    let chain = String::from_utf8(done.status.unwrap().certificate.unwrap().0).unwrap();
    let blocks = kcert_pki::pem::parse_blocks(chain.as_bytes()).unwrap();
    assert_eq!(blocks.len(), 2, "leaf + intermediate");
    assert_eq!(
        kcert_pki::pem::encode("CERTIFICATE", &blocks[1].der),
        i1.certificate_pem()
    );
    i1.verify_issued(&blocks[0].der).unwrap();
    let jane = client_for(&cluster, "jane", &chain, &key_pem).await;
    eventually(
        "the intermediate's certificate authenticates",
        Duration::from_secs(90),
        || {
            let c = jane.clone();
            async move { who(&c).await }
        },
    )
    .await;
    // The ledger reads the leaf of the chain.
    eventually(
        "jane's certificate on the ledger",
        Duration::from_secs(10),
        || {
            let (admin, id) = (admin.clone(), i1.info().subject_key_id.clone().unwrap());
            async move {
                let index = kcert_kube::ledger::read_index(&admin)
                    .await
                    .map_err(|e| e.to_string())?;
                let now = k8s_openapi::jiff::Timestamp::now().as_second();
                match index.live_from(&id, now).len() {
                    1 => Ok(()),
                    n => Err(format!("{n} live")),
                }
            }
        },
    )
    .await;

    // Rotate to the second intermediate: nothing to sync, the probe passes at once.
    ca_secret(&admin, "kcert-ca-next", &i2, &k2).await;
    assert_eq!(
        kcert_cli(
            &kubeconfig,
            &["ca", "rotate", "prepare", "-n", NS, "--existing"]
        )
        .await,
        0
    );
    assert_eq!(
        bundle().await.unwrap(),
        root.certificate_pem(),
        "no bundle change"
    );
    assert_eq!(
        kcert_cli(&kubeconfig, &["ca", "rotate", "switch", "--wait", "30s"]).await,
        0,
        "the root is trusted already"
    );
    let bob = cluster.user_client("bob", &["developers"]).await.unwrap();
    let (bob_chain, bob_key, bob_info) = issue(&cluster, &admin, &bob, "bob").await;
    assert_eq!(bob_info.authority_key_id, i2.info().subject_key_id);
    assert_eq!(
        who(&client_for(&cluster, "bob", &bob_chain, &bob_key).await).await,
        Ok("bob".to_string())
    );
    assert_eq!(
        kcert_cli(
            &kubeconfig,
            &["ca", "rotate", "complete", "--force", "--wait", "90s"]
        )
        .await,
        0
    );
    assert_eq!(
        bundle().await.unwrap(),
        root.certificate_pem(),
        "no bundle change"
    );
    assert_eq!(
        who(&jane).await,
        Ok("jane".to_string()),
        "the same root still vouches"
    );
}

/// `GET path` on 127.0.0.1:`port`: status code and body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        text.split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string(),
    )
}
