//! The one error type of kcert-pki. Every message says what was wrong and what to do.

/// What went wrong while reading, building or signing X.509 material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The input holds no PEM block at all.
    #[error("not PEM: expected a '-----BEGIN {expected}-----' block")]
    NotPem {
        /// The PEM label that was expected.
        expected: &'static str,
    },
    /// A PEM block of another type than the one needed.
    #[error("wrong PEM type '{found}': expected '{expected}'")]
    WrongPemType {
        /// The label found.
        found: String,
        /// The label (or labels) expected.
        expected: &'static str,
    },
    /// More than one PEM block where exactly one is needed.
    #[error("{count} PEM blocks of type '{label}' found: the file must hold exactly one")]
    SeveralPemBlocks {
        /// The label repeated.
        label: String,
        /// How many blocks were found.
        count: usize,
    },
    /// The PEM armour is broken (bad base64, missing END line, …).
    #[error("malformed PEM: {0}; regenerate the file or check it was not truncated")]
    BadPem(String),
    /// The DER inside is not the structure it claims to be.
    #[error("corrupt {what}: {source}; the data is truncated or not a {what}")]
    CorruptDer {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        source: der::Error,
    },
    /// Encrypted private keys are not read: kcert never prompts for a passphrase.
    #[error(
        "the private key is encrypted; decrypt it first (openssl pkey -in KEY -out KEY.plain) or generate a new one with 'kcert key'"
    )]
    EncryptedKey,
    /// An RSA key below 2048 bits.
    #[error(
        "RSA key of {bits} bits is too weak; use at least 2048 bits (kcert key --type rsa:2048)"
    )]
    WeakRsaKey {
        /// The modulus size.
        bits: usize,
    },
    /// A key algorithm or curve kcert does not support.
    #[error("unsupported key: {0}; use ECDSA P-256/P-384, Ed25519 or RSA 2048-4096")]
    UnsupportedKey(String),
    /// A signature algorithm kcert does not verify.
    #[error(
        "unsupported signature algorithm {0}; sign with SHA-256 or stronger (RSA PKCS#1 v1.5, ECDSA or Ed25519)"
    )]
    UnsupportedSignatureAlgorithm(String),
    /// The CSR's signature does not verify with the CSR's own key (no proof of possession).
    #[error(
        "the CSR's signature does not verify against its own public key: it was altered or signed with another key; create it again with the matching key"
    )]
    BadSignature,
    /// A name attribute that the Kubernetes API server cannot read either.
    #[error(
        "subject attribute {oid} uses an unsupported string type (tag {tag}); use UTF8String or PrintableString"
    )]
    UnsupportedStringType {
        /// Attribute type.
        oid: String,
        /// ASN.1 tag found.
        tag: String,
    },
    /// A name attribute whose bytes are not valid for its string type.
    #[error("subject attribute {oid} is not a valid {kind}: {detail}")]
    InvalidString {
        /// Attribute type.
        oid: String,
        /// String type.
        kind: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A subject that cannot be put in a CSR.
    #[error("invalid subject: {0}")]
    InvalidSubject(String),
    /// The CA key is not the key of the CA certificate.
    #[error(
        "the CA key does not match the CA certificate's public key; pair ca.crt with the ca.key it was made with"
    )]
    CaKeyMismatch,
    /// The CA key's signature does not verify with its public key (a token that failed, or
    /// holds another key than the one found).
    #[error(
        "the CA key ({0}) returned a signature its public key does not verify; nothing was issued. Check that the token's key is the CA certificate's"
    )]
    BadCaSignature(String),
    /// The CA key's backend failed (a token gone, a PIN refused).
    #[error("the CA key ({location}) cannot sign: {reason}")]
    CaKeyUnavailable {
        /// Where the key lives.
        location: String,
        /// What failed, and what to do.
        reason: String,
    },
    /// The CA certificate is not a CA.
    #[error(
        "the certificate is not a CA (basicConstraints CA:TRUE is missing); pass the cluster CA certificate"
    )]
    NotACa,
    /// A certificate this CA did not sign: another issuer's name, or a signature its key does
    /// not verify.
    #[error("the certificate was not issued by this CA: {0}")]
    NotIssuedByCa(&'static str),
    /// The CA certificate is outside its validity window.
    #[error(
        "the CA certificate is not valid now (valid {not_before} to {not_after}); renew or replace the CA"
    )]
    CaNotValidNow {
        /// Start of validity, RFC 3339.
        not_before: String,
        /// End of validity, RFC 3339.
        not_after: String,
    },
    /// A usage string that is not one of Kubernetes' key usages.
    #[error(
        "unknown usage '{0}'; use Kubernetes usage names such as 'digital signature', 'key encipherment', 'client auth', 'server auth'"
    )]
    UnknownUsage(String),
    /// A usage no leaf certificate may have.
    #[error("usage '{0}' would make the certificate a CA; leaf certificates cannot have it")]
    CaUsageNotAllowed(String),
    /// The CSR asks for SANs and the profile forbids them.
    #[error(
        "the CSR requests subject alternative names ({0}) but this signing profile does not allow SANs (client certificates carry none)"
    )]
    SansNotAllowed(String),
    /// The CSR has no usages at all to sign with.
    #[error("no usages given: a certificate needs at least one usage such as 'client auth'")]
    NoUsages,
    /// A lifetime that is zero or negative.
    #[error("invalid lifetime: {0}")]
    InvalidLifetime(String),
    /// The CA expired or expires before the certificate could start.
    #[error("the signer has expired (CA NotAfter {0}); rotate the CA before signing")]
    SignerExpired(String),
    /// The crypto backend failed in a way that is not the input's fault.
    #[error("crypto backend failure while {0}")]
    Crypto(&'static str),
    /// A DER encoding step failed (a bug or an absurd input size).
    #[error("could not encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's complaint.
        source: der::Error,
    },
}

/// Result alias of kcert-pki.
pub type Result<T, E = PkiError> = std::result::Result<T, E>;

pub(crate) fn corrupt(what: &'static str) -> impl FnOnce(der::Error) -> PkiError {
    move |source| PkiError::CorruptDer { what, source }
}

pub(crate) fn encode(what: &'static str) -> impl FnOnce(der::Error) -> PkiError {
    move |source| PkiError::Encode { what, source }
}
