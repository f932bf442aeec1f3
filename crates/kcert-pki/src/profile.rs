//! What a signature may grant: usages and lifetime, decided before any bytes are signed.

use crate::{PkiError, Result, oid};
use der::oid::ObjectIdentifier;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// A Kubernetes key usage (`spec.usages` of a CertificateSigningRequest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Usage {
    Signing,
    DigitalSignature,
    ContentCommitment,
    KeyEncipherment,
    KeyAgreement,
    DataEncipherment,
    CertSign,
    CrlSign,
    EncipherOnly,
    DecipherOnly,
    Any,
    ServerAuth,
    ClientAuth,
    CodeSigning,
    EmailProtection,
    SMime,
    IpsecEndSystem,
    IpsecTunnel,
    IpsecUser,
    Timestamping,
    OcspSigning,
    MicrosoftSgc,
    NetscapeSgc,
}

/// Where a usage lands in the certificate.
enum Placement {
    /// Bit number in the keyUsage BIT STRING.
    KeyUsageBit(u8),
    /// OID in extendedKeyUsage.
    ExtendedKeyUsage(ObjectIdentifier),
}

impl Usage {
    /// Every usage, in the order Kubernetes' API documents them.
    pub const ALL: [Usage; 23] = [
        Usage::Signing,
        Usage::DigitalSignature,
        Usage::ContentCommitment,
        Usage::KeyEncipherment,
        Usage::KeyAgreement,
        Usage::DataEncipherment,
        Usage::CertSign,
        Usage::CrlSign,
        Usage::EncipherOnly,
        Usage::DecipherOnly,
        Usage::Any,
        Usage::ServerAuth,
        Usage::ClientAuth,
        Usage::CodeSigning,
        Usage::EmailProtection,
        Usage::SMime,
        Usage::IpsecEndSystem,
        Usage::IpsecTunnel,
        Usage::IpsecUser,
        Usage::Timestamping,
        Usage::OcspSigning,
        Usage::MicrosoftSgc,
        Usage::NetscapeSgc,
    ];

    /// The spelling in the Kubernetes API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Usage::Signing => "signing",
            Usage::DigitalSignature => "digital signature",
            Usage::ContentCommitment => "content commitment",
            Usage::KeyEncipherment => "key encipherment",
            Usage::KeyAgreement => "key agreement",
            Usage::DataEncipherment => "data encipherment",
            Usage::CertSign => "cert sign",
            Usage::CrlSign => "crl sign",
            Usage::EncipherOnly => "encipher only",
            Usage::DecipherOnly => "decipher only",
            Usage::Any => "any",
            Usage::ServerAuth => "server auth",
            Usage::ClientAuth => "client auth",
            Usage::CodeSigning => "code signing",
            Usage::EmailProtection => "email protection",
            Usage::SMime => "s/mime",
            Usage::IpsecEndSystem => "ipsec end system",
            Usage::IpsecTunnel => "ipsec tunnel",
            Usage::IpsecUser => "ipsec user",
            Usage::Timestamping => "timestamping",
            Usage::OcspSigning => "ocsp signing",
            Usage::MicrosoftSgc => "microsoft sgc",
            Usage::NetscapeSgc => "netscape sgc",
        }
    }

    /// Mapping as kube-controller-manager's `keyUsagesFromStrings`.
    fn placement(self) -> Placement {
        use Placement::*;
        match self {
            Usage::Signing | Usage::DigitalSignature => KeyUsageBit(0),
            Usage::ContentCommitment => KeyUsageBit(1),
            Usage::KeyEncipherment => KeyUsageBit(2),
            Usage::DataEncipherment => KeyUsageBit(3),
            Usage::KeyAgreement => KeyUsageBit(4),
            Usage::CertSign => KeyUsageBit(5),
            Usage::CrlSign => KeyUsageBit(6),
            Usage::EncipherOnly => KeyUsageBit(7),
            Usage::DecipherOnly => KeyUsageBit(8),
            Usage::Any => ExtendedKeyUsage(oid::KP_ANY),
            Usage::ServerAuth => ExtendedKeyUsage(oid::KP_SERVER_AUTH),
            Usage::ClientAuth => ExtendedKeyUsage(oid::KP_CLIENT_AUTH),
            Usage::CodeSigning => ExtendedKeyUsage(oid::KP_CODE_SIGNING),
            Usage::EmailProtection | Usage::SMime => ExtendedKeyUsage(oid::KP_EMAIL_PROTECTION),
            Usage::IpsecEndSystem => ExtendedKeyUsage(oid::KP_IPSEC_END_SYSTEM),
            Usage::IpsecTunnel => ExtendedKeyUsage(oid::KP_IPSEC_TUNNEL),
            Usage::IpsecUser => ExtendedKeyUsage(oid::KP_IPSEC_USER),
            Usage::Timestamping => ExtendedKeyUsage(oid::KP_TIMESTAMPING),
            Usage::OcspSigning => ExtendedKeyUsage(oid::KP_OCSP_SIGNING),
            Usage::MicrosoftSgc => ExtendedKeyUsage(oid::KP_MICROSOFT_SGC),
            Usage::NetscapeSgc => ExtendedKeyUsage(oid::KP_NETSCAPE_SGC),
        }
    }

    /// The usage name for a keyUsage bit (for inspection).
    pub(crate) fn from_key_usage_bit(bit: u8) -> Option<Usage> {
        Usage::ALL
            .into_iter()
            .filter(|u| *u != Usage::Signing)
            .find(|u| matches!(u.placement(), Placement::KeyUsageBit(b) if b == bit))
    }

    /// The usage name for an extendedKeyUsage OID (for inspection).
    pub(crate) fn from_eku(eku: &ObjectIdentifier) -> Option<Usage> {
        Usage::ALL
            .into_iter()
            .filter(|u| *u != Usage::SMime)
            .find(|u| matches!(u.placement(), Placement::ExtendedKeyUsage(o) if o == *eku))
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Usage {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self> {
        Usage::ALL
            .into_iter()
            .find(|u| u.as_str() == s)
            .ok_or_else(|| PkiError::UnknownUsage(s.to_string()))
    }
}

/// The keyUsage bits and extendedKeyUsage OIDs for `usages`; CA usages are refused.
pub(crate) fn leaf_extensions_for(usages: &[Usage]) -> Result<(u16, Vec<ObjectIdentifier>)> {
    if usages.is_empty() {
        return Err(PkiError::NoUsages);
    }
    let mut bits = 0u16;
    let mut ekus: Vec<ObjectIdentifier> = Vec::new();
    for usage in usages {
        if matches!(usage, Usage::CertSign | Usage::CrlSign) {
            return Err(PkiError::CaUsageNotAllowed(usage.as_str().to_string()));
        }
        match usage.placement() {
            Placement::KeyUsageBit(b) => bits |= 1 << b,
            Placement::ExtendedKeyUsage(o) if !ekus.contains(&o) => ekus.push(o),
            Placement::ExtendedKeyUsage(_) => {}
        }
    }
    Ok((bits, ekus))
}

/// Kubernetes' default client usages (`kubectl` and the seeds use these).
pub const CLIENT_USAGES: [Usage; 3] = [
    Usage::DigitalSignature,
    Usage::KeyEncipherment,
    Usage::ClientAuth,
];

/// How kube-controller-manager backdates certificates (clock skew allowance).
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// The shortest lifetime granted, whatever was asked.
pub const MIN_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Lifetimes from this long on lose the backdate at their end too.
const SHORT_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// What a signer grants a request: the input of [`crate::CertificateAuthority::sign`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningProfile {
    /// Usages to put in the certificate (`spec.usages`, already checked by policy).
    pub usages: Vec<Usage>,
    /// The signer's cap on lifetime (kube-controller-manager's `--cluster-signing-duration`).
    pub max_lifetime: Duration,
    /// The lifetime asked for (`spec.expirationSeconds`); `None` means the cap.
    pub requested_lifetime: Option<Duration>,
    /// Whether SANs in the CSR are copied; when false, a CSR with SANs is refused.
    pub allow_sans: bool,
}

impl SigningProfile {
    /// A client-certificate profile with Kubernetes' default usages and a lifetime cap.
    pub fn client(max_lifetime: Duration) -> Self {
        SigningProfile {
            usages: CLIENT_USAGES.to_vec(),
            max_lifetime,
            requested_lifetime: None,
            allow_sans: false,
        }
    }

    /// The lifetime this profile grants: the request clamped to `[MIN_LIFETIME, max_lifetime]`.
    pub fn granted_lifetime(&self) -> Duration {
        match self.requested_lifetime {
            None => self.max_lifetime,
            Some(asked) if asked > self.max_lifetime => self.max_lifetime,
            Some(asked) if asked < MIN_LIFETIME => MIN_LIFETIME,
            Some(asked) => asked,
        }
    }

    /// NotBefore and NotAfter as kube-controller-manager computes them: backdated 5 minutes,
    /// the backdate also taken off the end for lifetimes of 8 hours or more, never past the CA.
    pub fn validity(
        &self,
        now: SystemTime,
        ca_not_after: SystemTime,
    ) -> Result<(SystemTime, SystemTime)> {
        if self.max_lifetime.is_zero() {
            return Err(PkiError::InvalidLifetime(
                "the signer's maximum lifetime is zero".into(),
            ));
        }
        let ttl = self.granted_lifetime();
        let now = truncate_to_seconds(now);
        let not_before = now - BACKDATE;
        let mut not_after = if ttl < SHORT_LIFETIME {
            now + ttl
        } else {
            now + ttl - BACKDATE
        };
        if not_after >= ca_not_after {
            not_after = ca_not_after;
        }
        if now >= ca_not_after || not_before >= ca_not_after {
            return Err(PkiError::SignerExpired(crate::time_fmt::rfc3339(
                ca_not_after,
            )));
        }
        Ok((not_before, not_after))
    }
}

/// Certificates carry whole seconds; truncating first keeps computed and encoded times equal.
pub(crate) fn truncate_to_seconds(t: SystemTime) -> SystemTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    fn profile(max: u64, asked: Option<u64>) -> SigningProfile {
        SigningProfile {
            usages: CLIENT_USAGES.to_vec(),
            max_lifetime: Duration::from_secs(max),
            requested_lifetime: asked.map(Duration::from_secs),
            allow_sans: false,
        }
    }

    #[test]
    fn lifetime_matches_kube_controller_manager() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let far = now + Duration::from_secs(10 * 365 * 24 * H);
        let secs = |t: SystemTime| {
            t.duration_since(now)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_else(|e| -(e.duration().as_secs() as i64))
        };
        // Long lifetime: backdate taken off both ends.
        let (nb, na) = profile(24 * H, None).validity(now, far).unwrap();
        assert_eq!((secs(nb), secs(na)), (-300, (24 * H - 300) as i64));
        // Short request: full length after now.
        let (_, na) = profile(24 * H, Some(H)).validity(now, far).unwrap();
        assert_eq!(secs(na), H as i64);
        // Below the floor: raised to 10 minutes.
        let (_, na) = profile(24 * H, Some(60)).validity(now, far).unwrap();
        assert_eq!(secs(na), 600);
        // Above the cap: clamped.
        let (_, na) = profile(2 * H, Some(100 * H)).validity(now, far).unwrap();
        assert_eq!(secs(na), (2 * H) as i64);
        // Never past the CA.
        let ca_end = now + Duration::from_secs(H);
        let (_, na) = profile(24 * H, None).validity(now, ca_end).unwrap();
        assert_eq!(na, ca_end);
        // An expired CA signs nothing.
        assert!(matches!(
            profile(24 * H, None).validity(now, now - Duration::from_secs(1)),
            Err(PkiError::SignerExpired(_))
        ));
    }

    #[test]
    fn usages_map_like_kubernetes_and_refuse_ca_bits() {
        let (bits, ekus) = leaf_extensions_for(&CLIENT_USAGES).unwrap();
        assert_eq!(bits, 0b101);
        assert_eq!(ekus, vec![oid::KP_CLIENT_AUTH]);
        assert!(matches!(
            leaf_extensions_for(&[Usage::ClientAuth, Usage::CertSign]),
            Err(PkiError::CaUsageNotAllowed(_))
        ));
        assert!(matches!(leaf_extensions_for(&[]), Err(PkiError::NoUsages)));
        for u in Usage::ALL {
            assert_eq!(u.as_str().parse::<Usage>().unwrap(), u);
        }
        assert!(matches!(
            "client".parse::<Usage>(),
            Err(PkiError::UnknownUsage(_))
        ));
    }
}
