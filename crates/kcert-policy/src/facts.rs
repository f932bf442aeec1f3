//! What the policy looks at: a CSR reduced to facts. Built by the controller from the API object
//! and the parsed request; built by hand in tests.

use std::collections::BTreeMap;

/// The key in the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA with this many bits.
    Rsa(u32),
    /// ECDSA P-256 (the default of builders and tests).
    #[default]
    EcdsaP256,
    /// ECDSA P-384.
    EcdsaP384,
    /// ECDSA P-521.
    EcdsaP521,
    /// Ed25519.
    Ed25519,
}

impl KeyKind {
    /// The policy's name for the key type (`rsa`, `ecdsa-p256`, …).
    pub fn type_name(self) -> &'static str {
        match self {
            KeyKind::Rsa(_) => "rsa",
            KeyKind::EcdsaP256 => "ecdsa-p256",
            KeyKind::EcdsaP384 => "ecdsa-p384",
            KeyKind::EcdsaP521 => "ecdsa-p521",
            KeyKind::Ed25519 => "ed25519",
        }
    }
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa(bits) => write!(f, "rsa ({bits} bits)"),
            other => f.write_str(other.type_name()),
        }
    }
}

/// Who created the CSR (`spec.username`, `spec.groups`, … as the API server recorded them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requester {
    /// `spec.username`.
    pub username: String,
    /// `spec.uid`.
    pub uid: String,
    /// `spec.groups`.
    pub groups: Vec<String>,
    /// `spec.extra`.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Requester {
    /// `(namespace, name)` when the requester is a ServiceAccount
    /// (`system:serviceaccount:NAMESPACE:NAME`).
    pub fn service_account(&self) -> Option<(&str, &str)> {
        let rest = self.username.strip_prefix("system:serviceaccount:")?;
        let (ns, name) = rest.split_once(':')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
    }
}

/// The certificate the requester authenticated with when creating the CSR (the `credential-id`
/// in `spec.extra`), looked up in the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialFacts {
    /// Whether the ledger holds it (kcert issued it).
    pub known: bool,
    /// Its serial.
    pub serial: String,
    /// Its user (CN).
    pub user: String,
    /// Its groups (O).
    pub groups: Vec<String>,
    /// Why it was revoked, if it was.
    pub revoked: Option<String>,
    /// Its NotAfter, seconds since the epoch.
    pub not_after_unix: i64,
    /// When its chain of renewals began (the first certificate's NotBefore), seconds since the
    /// epoch.
    pub chain_started_unix: i64,
}

/// Subject alternative names requested.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SanFacts {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses, as text.
    pub ips: Vec<String>,
    /// Email addresses.
    pub emails: Vec<String>,
    /// URIs.
    pub uris: Vec<String>,
    /// Names of other kinds.
    pub other: usize,
}

impl SanFacts {
    /// No SANs at all.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty()
            && self.ips.is_empty()
            && self.emails.is_empty()
            && self.uris.is_empty()
            && self.other == 0
    }
}

/// Everything the evaluation may look at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsrFacts {
    /// `spec.signerName`.
    pub signer_name: String,
    /// Who asked.
    pub requester: Requester,
    /// Every CN in the subject, in order; Kubernetes uses the last one.
    pub common_names: Vec<String>,
    /// Every O in the subject, in order: the groups.
    pub organizations: Vec<String>,
    /// Every user UID attribute (OID 1.3.6.1.4.1.57683.2) in the subject, in order.
    pub uids: Vec<String>,
    /// Every other subject attribute, as `NAME=value` (OU, emailAddress, unknown OIDs, ...).
    pub other_attributes: Vec<String>,
    /// Size of `spec.request` in bytes.
    pub request_bytes: usize,
    /// The certificate the requester used, if they authenticated with one kcert can look up
    /// (`None`: no X.509 credential, or no ledger to look in).
    pub credential: Option<CredentialFacts>,
    /// The time of the evaluation, seconds since the epoch (renewal chains, expiry).
    pub now_unix: i64,
    /// Subject alternative names.
    pub sans: SanFacts,
    /// `spec.usages`.
    pub usages: Vec<String>,
    /// `spec.expirationSeconds`.
    pub expiration_seconds: Option<i64>,
    /// The key's type and size.
    pub key: KeyKind,
}

impl CsrFacts {
    /// The user the certificate would name (the last CN).
    pub fn common_name(&self) -> Option<&str> {
        self.common_names.last().map(String::as_str)
    }
}
