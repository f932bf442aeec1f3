//! What kcert-pki signs, the real API server accepts: every key type authenticates, with every group.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kcert_pki::{
    CertificateRequest, CsrSubject, KeyType, PrivateKey, SigningProfile, SystemRandom, build_csr,
};
use kcert_testbed::kubeconfig::{Credentials, render};
use kcert_testbed::{TestCluster, client_from_kubeconfig};
use kube::Api;
use kube::api::PostParams;
use std::time::{Duration, SystemTime};

#[tokio::test]
async fn certificates_for_every_key_type_authenticate_with_all_groups() {
    let cluster = TestCluster::shared().await;
    every_key_type_authenticates(cluster, cluster.ca()).await;
}

/// The same, signed by CAs whose keys are in a SoftHSM2 token (RSA and ECDSA), which the API
/// server trusts beside the test bed's CA (added to its client-CA file, re-read without a
/// restart): where the CA key lives changes nothing the API server reads.
#[tokio::test]
async fn certificates_signed_in_a_token_authenticate_with_all_groups() {
    let cluster = TestCluster::shared().await;
    for (label, key_type) in [
        ("pki-ca-ec", KeyType::EcdsaP256),
        ("pki-ca-rsa", KeyType::Rsa2048),
    ] {
        let turn = kcert_testbed::softhsm::writing();
        let key = std::sync::Arc::new(
            kcert_pkcs11::TokenKey::generate(
                kcert_pkcs11::TokenConfig {
                    module: kcert_testbed::softhsm::module(),
                    token: kcert_pkcs11::TokenSelector::Label(
                        kcert_testbed::softhsm::process_token().unwrap(),
                    ),
                    key: kcert_pkcs11::KeySelector::Label(label.into()),
                    pin: kcert_testbed::softhsm::PIN.to_string().into(),
                },
                key_type,
            )
            .unwrap(),
        );
        drop(turn);
        let ca = kcert_pki::CertificateAuthority::create_with_key(
            key,
            label,
            Duration::from_secs(86_400),
            SystemTime::now(),
            &SystemRandom,
        )
        .unwrap();
        assert!(ca.private_key().is_none());
        trust(cluster, &ca);
        every_key_type_authenticates(cluster, &ca).await;
    }
}

/// Add `ca` to the shared API server's client-CA file (written whole and renamed: other tests
/// read the file meanwhile).
fn trust(cluster: &TestCluster, ca: &kcert_pki::CertificateAuthority) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = cluster.ca_cert_path();
    let mut bundle = std::fs::read_to_string(&path).unwrap();
    bundle.push_str(&ca.certificate_pem());
    let staged = path.with_extension("crt.new");
    std::fs::write(&staged, bundle).unwrap();
    std::fs::rename(&staged, &path).unwrap();
}

async fn every_key_type_authenticates(cluster: &TestCluster, ca: &kcert_pki::CertificateAuthority) {
    for key_type in KeyType::ALL {
        let user = cluster.unique_name(&format!("user-{}", key_type.as_str().replace(':', "")));
        let key = PrivateKey::generate(key_type).unwrap();
        let groups = ["dev", "ops", "team:a b"];
        let csr = build_csr(
            &key,
            &CsrSubject::new(user.as_str(), groups).unwrap(),
            &Default::default(),
        )
        .unwrap();
        let cert = ca
            .sign(
                &CertificateRequest::from_pem(csr.as_bytes()).unwrap(),
                &SigningProfile::client(Duration::from_secs(3600)),
                SystemTime::now(),
                &SystemRandom,
            )
            .unwrap();
        let key_pem = key.to_pkcs8_pem().unwrap();
        let yaml = render(
            cluster.server(),
            cluster.ca_pem(),
            &user,
            &Credentials::ClientCertificate {
                cert_pem: &cert.to_pem(),
                key_pem: &key_pem,
            },
        );
        let client = client_from_kubeconfig(&yaml).await.unwrap();
        // A CA just added to the client-CA file is trusted once the API server has re-read it.
        let review = kcert_tests::eventually(
            &format!("{key_type} from {} authenticates", ca.info().subject),
            Duration::from_secs(90),
            || {
                let client = client.clone();
                async move {
                    Api::<SelfSubjectReview>::all(client)
                        .create(&PostParams::default(), &SelfSubjectReview::default())
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        )
        .await;
        let info = review.status.and_then(|s| s.user_info).unwrap();
        assert_eq!(info.username.as_deref(), Some(user.as_str()), "{key_type}");
        let got = info.groups.unwrap_or_default();
        for g in groups {
            assert!(
                got.contains(&g.to_string()),
                "{key_type}: {g} missing from {got:?}"
            );
        }
    }
}
