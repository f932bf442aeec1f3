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
        let cert = cluster
            .ca()
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
        let review = Api::<SelfSubjectReview>::all(client)
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .unwrap_or_else(|e| panic!("{key_type}: {e}"));
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
