//! A CA whose key lives in a PKCS#11 token (SoftHSM2), end to end on the real API server:
//! the token signs, kcert-controller issues through it, and the API server authenticates what
//! it issued. Its own test bed, because it adds the token's CA to the API server's client-CA
//! file (which the API server re-reads without a restart).

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_pkcs11::{KeySelector, TokenConfig, TokenKey, TokenSelector};
use kcert_pki::{CertificateAuthority, KeyType, SystemRandom};
use kcert_testbed::kubeconfig::{Credentials, render};
use kcert_testbed::{TestCluster, client_from_kubeconfig};
use kcert_tests::*;
use kube::Api;
use kube::api::PostParams;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A fresh token of this process in SoftHSM2's store.
fn token() -> TokenConfig {
    TokenConfig {
        module: kcert_testbed::softhsm::module(),
        token: TokenSelector::Label(kcert_testbed::softhsm::process_token().unwrap()),
        key: KeySelector::Label("kcert-ca".into()),
        pin: kcert_testbed::softhsm::PIN.to_string().into(),
    }
}

#[tokio::test]
async fn a_ca_key_in_a_token_issues_certificates_the_api_server_authenticates() {
    let cluster = TestCluster::start().await.unwrap();
    allow_everyone_to_request(&cluster).await;
    let config = token();
    let key = Arc::new(TokenKey::generate(config.clone(), KeyType::EcdsaP256).unwrap());
    let ca = CertificateAuthority::create_with_key(
        key,
        "kcert token CA",
        Duration::from_secs(30 * 86_400),
        SystemTime::now(),
        &SystemRandom,
    )
    .unwrap();
    assert!(ca.private_key().is_none());
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("ca.crt");
    std::fs::write(&cert, ca.certificate_pem()).unwrap();
    // The API server trusts the token's CA beside the test bed's (it re-reads the file).
    let mut bundle = std::fs::read_to_string(cluster.ca_cert_path()).unwrap();
    bundle.push_str(&ca.certificate_pem());
    std::fs::write(cluster.ca_cert_path(), bundle).unwrap();

    let signer = "kcert.dev/token";
    let policy: kcert_policy::PolicySpec = serde_yaml::from_str(&format!(
        "rules: [{{id: developers-self, signerNames: [\"{signer}\"], requesters: {{groups: [developers]}}, commonName: {{self: true}}, groups: {{allowed: [dev]}}}}]"
    ))
    .unwrap();
    let admin = cluster.admin_client().await.unwrap();
    // The controller opens the key itself, as a restarted one would: by the token's label.
    let _controller = RunningController::start_with(
        admin.clone(),
        Settings {
            signer_names: vec![signer.into()],
            policy: PolicySource::Static(policy),
            ca: Some(CaSource::Pkcs11 {
                cert: cert.clone(),
                token: config,
            }),
            max_duration: Duration::from_secs(3600),
            ..Settings::default()
        },
    );
    let name = cluster.unique_name("jane");
    let (csr, key_pem) = csr_with_key(&name, signer, "jane", &["dev"], None);
    Api::<CertificateSigningRequest>::all(
        cluster.user_client("jane", &["developers"]).await.unwrap(),
    )
    .create(&PostParams::default(), &csr)
    .await
    .unwrap();
    let csrs: Api<CertificateSigningRequest> = Api::all(admin);
    let done = wait_for(&csrs, &name, Duration::from_secs(30), "issued", issued).await;
    let cert_pem = String::from_utf8(done.status.unwrap().certificate.unwrap().0).unwrap();
    // Issued by the token's CA, and verified against it.
    ca.verify_issued(&kcert_pki::pem::parse_blocks(cert_pem.as_bytes()).unwrap()[0].der)
        .unwrap();

    let yaml = render(
        cluster.server(),
        cluster.ca_pem(),
        "jane",
        &Credentials::ClientCertificate {
            cert_pem: &cert_pem,
            key_pem: &key_pem,
        },
    );
    // Until the API server has re-read its client-CA file, the certificate is unknown to it.
    let user = eventually(
        "the API server authenticates the token CA's certificate",
        Duration::from_secs(90),
        || async {
            let jane = client_from_kubeconfig(&yaml)
                .await
                .map_err(|e| e.to_string())?;
            Api::<SelfSubjectReview>::all(jane)
                .create(&PostParams::default(), &SelfSubjectReview::default())
                .await
                .map_err(|e| e.to_string())
                .map(|r| r.status.unwrap().user_info.unwrap())
        },
    )
    .await;
    assert_eq!(user.username.as_deref(), Some("jane"));
    assert!(user.groups.unwrap().contains(&"dev".to_string()));
}
