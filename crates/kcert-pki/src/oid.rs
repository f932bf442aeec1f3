//! Object identifiers used by kcert, named as in the RFCs.
#![allow(missing_docs)] // The names are the RFCs' own; each constant is its OID.

use const_oid::ObjectIdentifier as Oid;

pub const COMMON_NAME: Oid = Oid::new_unwrap("2.5.4.3");
pub const ORGANIZATION: Oid = Oid::new_unwrap("2.5.4.10");
/// The user UID the API server's x509 authenticator reads (Kubernetes 1.33+,
/// `AllowParsingUserUIDFromCertAuth`).
pub const USER_UID: Oid = Oid::new_unwrap("1.3.6.1.4.1.57683.2");
pub const EXTENSION_REQUEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.14");

pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub const SHA1_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
pub const RSASSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
pub const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
pub const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
pub const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
pub const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
pub const ECDSA_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
pub const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
pub const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
pub const SECP521R1: Oid = Oid::new_unwrap("1.3.132.0.35");

pub const SUBJECT_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.14");
pub const KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
pub const SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
pub const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
pub const AUTHORITY_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.35");
pub const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");

pub const KP_ANY: Oid = Oid::new_unwrap("2.5.29.37.0");
pub const KP_SERVER_AUTH: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.1");
pub const KP_CLIENT_AUTH: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.2");
pub const KP_CODE_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.3");
pub const KP_EMAIL_PROTECTION: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.4");
pub const KP_IPSEC_END_SYSTEM: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.5");
pub const KP_IPSEC_TUNNEL: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.6");
pub const KP_IPSEC_USER: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.7");
pub const KP_TIMESTAMPING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.8");
pub const KP_OCSP_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.9");
pub const KP_MICROSOFT_SGC: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.10.3.3");
pub const KP_NETSCAPE_SGC: Oid = Oid::new_unwrap("2.16.840.1.113730.4.1");

/// A short human name for well-known OIDs, the dotted form otherwise.
pub fn name(oid: &Oid) -> String {
    let known: &[(Oid, &str)] = &[
        (COMMON_NAME, "CN"),
        (ORGANIZATION, "O"),
        (USER_UID, "UID"),
        (Oid::new_unwrap("2.5.4.5"), "serialNumber"),
        (Oid::new_unwrap("2.5.4.11"), "OU"),
        (Oid::new_unwrap("2.5.4.6"), "C"),
        (Oid::new_unwrap("2.5.4.7"), "L"),
        (Oid::new_unwrap("2.5.4.8"), "ST"),
        (Oid::new_unwrap("1.2.840.113549.1.9.1"), "emailAddress"),
        (SUBJECT_KEY_IDENTIFIER, "subjectKeyIdentifier"),
        (KEY_USAGE, "keyUsage"),
        (SUBJECT_ALT_NAME, "subjectAltName"),
        (BASIC_CONSTRAINTS, "basicConstraints"),
        (AUTHORITY_KEY_IDENTIFIER, "authorityKeyIdentifier"),
        (EXT_KEY_USAGE, "extendedKeyUsage"),
        (SHA1_WITH_RSA, "sha1WithRSAEncryption"),
        (RSASSA_PSS, "RSASSA-PSS"),
        (SHA256_WITH_RSA, "sha256WithRSAEncryption"),
        (SHA384_WITH_RSA, "sha384WithRSAEncryption"),
        (SHA512_WITH_RSA, "sha512WithRSAEncryption"),
        (ECDSA_SHA256, "ecdsa-with-SHA256"),
        (ECDSA_SHA384, "ecdsa-with-SHA384"),
        (ECDSA_SHA512, "ecdsa-with-SHA512"),
        (ED25519, "Ed25519"),
    ];
    known
        .iter()
        .find(|(o, _)| o == oid)
        .map(|(_, n)| (*n).to_string())
        .unwrap_or_else(|| oid.to_string())
}
