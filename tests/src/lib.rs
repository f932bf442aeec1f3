//! Helpers shared by kcert's cluster tests: building CertificateSigningRequest objects.

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kcert_pki::{CsrSubject, KeyType, PrivateKey, SubjectAltNames, build_csr};
use kube::api::ObjectMeta;

/// A CertificateSigningRequest for `user` in `groups` with a fresh ECDSA key.
pub fn csr_object(
    name: &str,
    signer: &str,
    user: &str,
    groups: &[&str],
    expiration_seconds: Option<i32>,
) -> CertificateSigningRequest {
    let key = PrivateKey::generate(KeyType::EcdsaP256).expect("key generation");
    let subject = CsrSubject::new(user, groups.iter().copied()).expect("valid subject");
    let pem = build_csr(&key, &subject, &SubjectAltNames::default()).expect("CSR");
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.into_bytes()),
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
