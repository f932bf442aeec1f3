//! A CA whose key lives in a PKCS#11 token (SoftHSM2), end to end on the real API server:
//! the token signs, kcert-controller issues through it, and the API server authenticates what
//! it issued. Its own test bed, because it adds the token's CA to the API server's client-CA
//! file (which the API server re-reads without a restart).

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_pkcs11::{KeySelector, TokenConfig, TokenKey, TokenSelector};
use kcert_pki::CertificateAuthority;
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
    // `kcert ca init --pkcs11-module`: the key made in the token, the certificate signed there,
    // written to ca.crt and kept in the token beside the key.
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{}\n", kcert_testbed::softhsm::PIN)).unwrap();
    let TokenSelector::Label(token_label) = &config.token else {
        unreachable!("the process token is named by its label")
    };
    let module = config.module.display().to_string();
    let args: Vec<std::ffi::OsString> = [
        "kcert",
        "ca",
        "init",
        "--out",
        dir.path().to_str().unwrap(),
        "--type",
        "ecdsa-p256",
        "--name",
        "kcert token CA",
        "--pkcs11-module",
        &module,
        "--pkcs11-token",
        token_label,
        "--pkcs11-pin-file",
        pin_file.to_str().unwrap(),
    ]
    .iter()
    .map(Into::into)
    .collect();
    let code = tokio::task::spawn_blocking(move || kcert::main(args))
        .await
        .unwrap();
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );
    assert!(
        !dir.path().join("ca.key").exists(),
        "no key file for a token's key"
    );
    let key = Arc::new(TokenKey::open(config.clone()).unwrap());
    let stored = key
        .certificate()
        .unwrap()
        .expect("the certificate kept in the token");
    let ca = CertificateAuthority::with_key(
        &std::fs::read(dir.path().join("ca.crt")).unwrap(),
        key,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(stored, ca.certificate_der());
    assert!(ca.private_key().is_none());
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
    // The controller opens the key itself, as a restarted one would: by the token's label, and
    // reads the CA certificate from the token.
    let _controller = RunningController::start_with(
        admin.clone(),
        Settings {
            signer_names: vec![signer.into()],
            policy: PolicySource::Static(policy),
            ca: Some(CaSource::Pkcs11 {
                cert: None,
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
