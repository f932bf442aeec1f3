//! kcert-pki: the X.509 core of kcert. Pure: no kube, no tokio, no clock and no randomness of
//! its own for anything a test wants to pin (time and serial randomness are passed in).
//!
//! ```text
//!  PrivateKey::generate ──► build_csr ──► PEM CSR ──► CertificateRequest::from_pem
//!                                                      (signature checked, subject read
//!                                                       as the API server reads it)
//!                                                             │
//!  CertificateAuthority::load / create ──► sign(csr, SigningProfile, now, rng) ──► certificate
//! ```
//!
//! The certificate's subject is built by kcert from the values approved (CN, every O, a UID only
//! when a rule approved one), never copied from the request: attributes the API server reads
//! but nobody checked (a UID, say) cannot ride along, and every O survives — unlike builders
//! that model a name as a map of one value per attribute type.
//! One crypto backend (aws-lc-rs, also kube's TLS backend) does key generation and signing.
#![warn(missing_docs)]

mod ca;
mod ca_key;
mod cert;
mod csr;
mod error;
mod key;
mod name;
mod oid;
pub mod pem;
mod profile;
mod random;
pub mod time_fmt;

pub use ca::CertificateAuthority;
pub use ca_key::CaKey;
pub use cert::{CertificateInfo, IssuedCertificate};
pub use csr::{CertificateRequest, RequestedExtension, SubjectAltNames, build_csr, build_csr_raw};
pub use error::{PkiError, Result};
pub use key::{KeyAlgorithm, KeyType, PrivateKey, PublicKey};
pub use name::{CsrSubject, NameAttribute, SubjectInfo, is_unprintable, raw_name_der};
pub use profile::{BACKDATE, CLIENT_USAGES, MIN_LIFETIME, SigningProfile, Usage};
pub use random::{RandomSource, SystemRandom};
/// Re-exported for hostile corpora that need raw extensions.
pub use x509_cert::ext::Extension;

/// SHA-256 of `bytes`, lower-case hex (no separators).
pub fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Object identifiers kcert names (for tests and hostile corpora).
pub mod oids {
    pub use crate::oid::*;
}

/// Everything kcert reads from untrusted bytes, in one call: the body of the `csr_parse` fuzz
/// target and of its stable corpus replay. Must never panic.
#[doc(hidden)]
pub fn fuzz_untrusted_bytes(data: &[u8]) {
    let _ = pem::parse_blocks(data);
    if let Ok(csr) = CertificateRequest::from_der(data) {
        let _ = csr.subject().to_string();
        let _ = csr.public_key().check_strength();
    }
    if let Ok(csr) = CertificateRequest::from_pem(data) {
        assert!(csr.subject().common_names.len() <= csr.subject().attributes.len());
    }
    let _ = CertificateInfo::from_der(data);
    let _ = PrivateKey::from_pem(data);
    let _ = SubjectInfo::from_der(data);
}
