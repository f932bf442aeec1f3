//! Everything kcert reads from untrusted bytes: PEM armour, CSRs (DER and PEM), certificates,
//! keys. None may panic; a CSR that parses must have a verified signature and a readable subject.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kcert_pki::pem::parse_blocks(data);
    if let Ok(csr) = kcert_pki::CertificateRequest::from_der(data) {
        let _ = csr.subject().to_string();
        let _ = csr.public_key().check_strength();
    }
    if let Ok(csr) = kcert_pki::CertificateRequest::from_pem(data) {
        assert!(csr.subject().common_names.len() <= csr.subject().attributes.len());
    }
    let _ = kcert_pki::CertificateInfo::from_der(data);
    let _ = kcert_pki::PrivateKey::from_pem(data);
    let _ = kcert_pki::SubjectInfo::from_der(data);
});
