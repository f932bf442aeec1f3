//! The certificate authority: load the cluster CA (checked) or create one, and sign.

use crate::CaKey;
use crate::cert::{CertificateInfo, CertificateTemplate, IssuedCertificate, sign_certificate};
use crate::csr::{CertificateRequest, SubjectAltNames};
use crate::name::CsrSubject;
use crate::profile::{SigningProfile, leaf_extensions_for, truncate_to_seconds};
use crate::random::{RandomSource, serial_number};
use crate::time_fmt::rfc3339;
use crate::{PkiError, PrivateKey, Result, pem};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use x509_cert::ext::Extension;

/// A CA certificate with its private key, checked to belong together.
#[derive(Debug)]
pub struct CertificateAuthority {
    cert_der: Vec<u8>,
    info: CertificateInfo,
    key: Arc<dyn CaKey>,
    key_id: Vec<u8>,
    /// For an intermediate CA: the certificates above it, its issuer first, each checked to
    /// have signed the one before (the root last, when the bundle holds it). Empty for a root.
    chain_der: Vec<Vec<u8>>,
    /// What a leaf it issues is followed by (PEM): for an intermediate, itself and the
    /// intermediates above it (never a self-signed root: the relying party has that one);
    /// empty for a root.
    presented_chain_pem: String,
}

impl CertificateAuthority {
    /// Load `ca.crt` and `ca.key` as a cluster keeps them. The certificate file may be a bundle:
    /// the certificate whose key is `key_pem` is used. Fails unless it is a CA valid at `now`.
    pub fn load(cert_pem: &[u8], key_pem: &[u8], now: SystemTime) -> Result<Self> {
        Self::with_key(cert_pem, Arc::new(PrivateKey::from_pem(key_pem)?), now)
    }

    /// The CA certificate in `cert_pem` (or the one of a bundle whose public key is `key`'s)
    /// with a key wherever it lives (in memory, in a token). Fails unless it is a CA valid at
    /// `now`.
    pub fn with_key(cert_pem: &[u8], key: Arc<dyn CaKey>, now: SystemTime) -> Result<Self> {
        let blocks = pem::parse_blocks(cert_pem)?;
        let certs: Vec<_> = blocks.iter().filter(|b| b.label == "CERTIFICATE").collect();
        if certs.is_empty() {
            return Err(match blocks.first() {
                Some(b) => PkiError::WrongPemType {
                    found: b.label.clone(),
                    expected: "CERTIFICATE",
                },
                None => PkiError::NotPem {
                    expected: "CERTIFICATE",
                },
            });
        }
        let mut matching = None;
        for block in &certs {
            let info = CertificateInfo::from_der(&block.der)?;
            if info.public_key() == key.public_key() {
                matching = Some((block.der.to_vec(), info));
                break;
            }
        }
        let (cert_der, info) = matching.ok_or(PkiError::CaKeyMismatch)?;
        let others: Vec<(Vec<u8>, CertificateInfo)> = certs
            .iter()
            .filter(|b| b.der.as_slice() != cert_der.as_slice())
            .map(|b| Ok((b.der.to_vec(), CertificateInfo::from_der(&b.der)?)))
            .collect::<Result<_>>()?;
        let chain_der = chain_above(&cert_der, &others, now)?;
        if !info.is_ca {
            return Err(PkiError::NotACa);
        }
        if now < info.not_before_time() || now >= info.not_after_time() {
            return Err(PkiError::CaNotValidNow {
                not_before: info.not_before.clone(),
                not_after: info.not_after.clone(),
            });
        }
        let key_id = info
            .subject_key_id
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .unwrap_or_else(|| key.public_key().key_identifier());
        let presented_chain_pem = presented_chain(&cert_der, &chain_der)?;
        Ok(CertificateAuthority {
            cert_der,
            info,
            key,
            key_id,
            chain_der,
            presented_chain_pem,
        })
    }

    /// Create a self-signed CA named `common_name` with `key`, valid from `now` (backdated by an
    /// hour for clock skew, as kubeadm does) for `lifetime`.
    pub fn create(
        key: PrivateKey,
        common_name: &str,
        lifetime: Duration,
        now: SystemTime,
        rng: &dyn RandomSource,
    ) -> Result<Self> {
        Self::create_with_key(Arc::new(key), common_name, lifetime, now, rng)
    }

    /// [`Self::create`] with a key wherever it lives (a token's key signs its own certificate
    /// there).
    pub fn create_with_key(
        key: Arc<dyn CaKey>,
        common_name: &str,
        lifetime: Duration,
        now: SystemTime,
        rng: &dyn RandomSource,
    ) -> Result<Self> {
        Self::new_ca(key, common_name, lifetime, now, rng, None)
    }

    /// An intermediate CA issued by this one: named `common_name`, for `key`, valid from `now`
    /// (backdated by an hour) for `lifetime`, never past this CA. Its chain is this CA and this
    /// CA's chain, so that what it issues carries the way to the root the API server trusts.
    pub fn create_intermediate(
        &self,
        key: Arc<dyn CaKey>,
        common_name: &str,
        lifetime: Duration,
        now: SystemTime,
        rng: &dyn RandomSource,
    ) -> Result<Self> {
        Self::new_ca(key, common_name, lifetime, now, rng, Some(self))
    }

    /// A new CA certificate for `key`, self-signed or issued by `parent`.
    fn new_ca(
        key: Arc<dyn CaKey>,
        common_name: &str,
        lifetime: Duration,
        now: SystemTime,
        rng: &dyn RandomSource,
        parent: Option<&CertificateAuthority>,
    ) -> Result<Self> {
        if lifetime.is_zero() {
            return Err(PkiError::InvalidLifetime(
                "a CA needs a lifetime above zero".into(),
            ));
        }
        let subject = CsrSubject::new(common_name, Vec::<String>::new())?.to_der()?;
        let now = truncate_to_seconds(now);
        let not_after = match parent {
            Some(p) => (now + lifetime).min(p.info.not_after_time()),
            None => now + lifetime,
        };
        let template = CertificateTemplate {
            serial: serial_number(rng)?,
            issuer_der: parent.map_or(&subject, |p| &p.info.subject_der),
            subject_der: &subject,
            public_key: key.public_key(),
            not_before: now
                - Duration::from_secs(3600).min(
                    now.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default(),
                ),
            not_after,
            is_ca: true,
            // digitalSignature, keyCertSign, cRLSign
            key_usage_bits: 0b110_0001,
            extended_key_usages: Vec::new(),
            authority_key_id: parent.map(|p| p.key_id.as_slice()),
            san_extension: None,
        };
        let signer: &dyn CaKey = match parent {
            Some(p) => p.key.as_ref(),
            None => key.as_ref(),
        };
        let der = sign_certificate(&template, signer)?;
        let info = CertificateInfo::from_der(&der)?;
        let key_id = key.public_key().key_identifier();
        let chain_der: Vec<Vec<u8>> = match parent {
            Some(p) => std::iter::once(p.cert_der.clone())
                .chain(p.chain_der.iter().cloned())
                .collect(),
            None => Vec::new(),
        };
        let presented_chain_pem = presented_chain(&der, &chain_der)?;
        Ok(CertificateAuthority {
            cert_der: der,
            info,
            key,
            key_id,
            chain_der,
            presented_chain_pem,
        })
    }

    /// The certificates above this CA (its issuer first, the root last when known), PEM; empty
    /// for a root. (A leaf it issues is followed by this CA and the intermediates above it:
    /// [`IssuedCertificate::to_pem_with_chain`].)
    pub fn chain_pem(&self) -> String {
        self.chain_der
            .iter()
            .map(|d| pem::encode("CERTIFICATE", d))
            .collect()
    }

    /// This CA's certificate followed by its chain, PEM (what a Secret's `tls.crt` holds).
    pub fn certificate_chain_pem(&self) -> String {
        format!("{}{}", self.certificate_pem(), self.chain_pem())
    }

    /// The certificate a relying party trusts for this CA: the top of its chain (the root,
    /// when the chain holds it), or the CA itself. What the trust bundle publishes: rotating an
    /// intermediate under the same root changes no bundle.
    pub fn anchor_pem(&self) -> String {
        pem::encode(
            "CERTIFICATE",
            self.chain_der.last().unwrap_or(&self.cert_der),
        )
    }

    /// Sign `csr` as `profile` allows, at `now`, for the subject built from the request's values
    /// ([`CsrSubject::from_request`]: its one CN and its O values, refused if the request's
    /// subject holds anything else). The request's subject bytes never reach the certificate.
    pub fn sign(
        &self,
        csr: &CertificateRequest,
        profile: &SigningProfile,
        now: SystemTime,
        rng: &dyn RandomSource,
    ) -> Result<IssuedCertificate> {
        let subject = CsrSubject::from_request(csr.subject())?;
        self.sign_as(csr, &subject, profile, now, rng)
    }

    /// Sign `csr`'s key for `subject` (what a policy approved, encoded by kcert) as `profile`
    /// allows, at `now`. SANs only when the profile allows them; every other requested
    /// extension is dropped.
    pub fn sign_as(
        &self,
        csr: &CertificateRequest,
        subject: &CsrSubject,
        profile: &SigningProfile,
        now: SystemTime,
        rng: &dyn RandomSource,
    ) -> Result<IssuedCertificate> {
        if !csr.sans().is_empty() && !profile.allow_sans {
            return Err(PkiError::SansNotAllowed(csr.sans().to_string()));
        }
        let san = if profile.allow_sans {
            csr.san_extension().cloned()
        } else {
            None
        };
        self.issue(csr, subject, san.as_ref(), profile, now, rng)
    }

    /// Sign `csr`'s key for `subject` with exactly the subject alternative names `sans` (values
    /// that were checked, encoded by kcert: the request's own extension is never copied), as
    /// `profile` allows, at `now`. Every requested extension is dropped.
    pub fn sign_with_names(
        &self,
        csr: &CertificateRequest,
        subject: &CsrSubject,
        sans: &SubjectAltNames,
        profile: &SigningProfile,
        now: SystemTime,
        rng: &dyn RandomSource,
    ) -> Result<IssuedCertificate> {
        let san = sans.to_extension()?;
        self.issue(csr, subject, san.as_ref(), profile, now, rng)
    }

    fn issue(
        &self,
        csr: &CertificateRequest,
        subject: &CsrSubject,
        san_extension: Option<&Extension>,
        profile: &SigningProfile,
        now: SystemTime,
        rng: &dyn RandomSource,
    ) -> Result<IssuedCertificate> {
        let subject_der = subject.to_der()?;
        csr.public_key().check_strength()?;
        let (key_usage_bits, extended_key_usages) = leaf_extensions_for(&profile.usages)?;
        let (not_before, not_after) = profile.validity(now, self.info.not_after_time())?;
        let serial = serial_number(rng)?;
        let template = CertificateTemplate {
            serial,
            issuer_der: &self.info.subject_der,
            subject_der: &subject_der,
            public_key: csr.public_key(),
            not_before,
            not_after,
            is_ca: false,
            key_usage_bits,
            extended_key_usages,
            authority_key_id: Some(&self.key_id),
            san_extension,
        };
        let der = sign_certificate(&template, self.key.as_ref())?;
        let serial = crate::cert::serial_hex(&serial);
        Ok(IssuedCertificate {
            der,
            serial,
            not_before,
            not_after,
            chain_pem: self.presented_chain_pem.clone(),
        })
    }

    /// Check that this CA signed `cert_der`: its issuer is this CA's subject and its signature
    /// verifies with this CA's key. Anyone holding the key passes too, so a caller deciding
    /// whether a certificate is one it issued also compares what the certificate says.
    pub fn verify_issued(&self, cert_der: &[u8]) -> Result<()> {
        if issuer_der_of(cert_der)? != self.info.subject_der {
            return Err(PkiError::NotIssuedByCa("its issuer is another name"));
        }
        verify_signed_by(cert_der, &self.info)
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        pem::encode("CERTIFICATE", &self.cert_der)
    }

    /// What the CA certificate says.
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// The CA's private key when it is in memory (to write it out after `create`); `None`
    /// for a key that cannot leave its token.
    pub fn private_key(&self) -> Option<&PrivateKey> {
        self.key.in_memory()
    }

    /// The key that signs for this CA.
    pub fn key(&self) -> &Arc<dyn CaKey> {
        &self.key
    }

    /// Where the CA's key lives (for `kcert ca status` and the logs).
    pub fn key_location(&self) -> String {
        self.key.location()
    }

    /// When the CA stops being able to sign.
    pub fn not_after(&self) -> SystemTime {
        self.info.not_after_time()
    }

    /// A one-line description for logs: subject, key, expiry. Never key material.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, until {})",
            self.info.subject,
            self.info.key_algorithm,
            rfc3339(self.info.not_after_time())
        )
    }
}

/// The certificates of `others` above `cert_der`, its issuer first: each the one whose subject is
/// the previous one's issuer and whose key verifies its signature, until a self-issued one (or
/// none is found: the chain ends there, as an intermediate whose root stays offline). Every
/// certificate of the chain must be a CA valid at `now`; certificates of `others` that are not
/// on the way (another CA of a bundle) are left out.
fn chain_above(
    cert_der: &[u8],
    others: &[(Vec<u8>, CertificateInfo)],
    now: SystemTime,
) -> Result<Vec<Vec<u8>>> {
    let mut chain: Vec<Vec<u8>> = Vec::new();
    let mut current = cert_der.to_vec();
    loop {
        let issuer = issuer_der_of(&current)?;
        if issuer == CertificateInfo::from_der(&current)?.subject_der {
            return Ok(chain);
        }
        let next = others.iter().find(|(der, info)| {
            info.subject_der == issuer
                && !chain.contains(der)
                && verify_signed_by(&current, info).is_ok()
        });
        let Some((der, info)) = next else {
            return Ok(chain);
        };
        if !info.is_ca {
            return Err(PkiError::NotACa);
        }
        if now < info.not_before_time() || now >= info.not_after_time() {
            return Err(PkiError::CaNotValidNow {
                not_before: info.not_before.clone(),
                not_after: info.not_after.clone(),
            });
        }
        chain.push(der.clone());
        current = der.clone();
        if chain.len() >= 8 {
            // Deeper than any PKI kcert serves; what is beyond is the relying party's to have.
            return Ok(chain);
        }
    }
}

/// What follows a leaf issued by the CA `cert_der` with `chain` above it: every certificate of
/// the CA and its chain that is not self-issued (a root is the relying party's own).
fn presented_chain(cert_der: &[u8], chain: &[Vec<u8>]) -> Result<String> {
    let mut out = String::new();
    for der in std::iter::once(cert_der).chain(chain.iter().map(|d| d.as_slice())) {
        if issuer_der_of(der)? != CertificateInfo::from_der(der)?.subject_der {
            out.push_str(&pem::encode("CERTIFICATE", der));
        }
    }
    Ok(out)
}

/// The issuer name of a certificate, DER.
fn issuer_der_of(cert_der: &[u8]) -> Result<Vec<u8>> {
    use der::{Decode, Encode};
    let cert =
        x509_cert::Certificate::from_der(cert_der).map_err(crate::error::corrupt("certificate"))?;
    cert.tbs_certificate()
        .issuer()
        .to_der()
        .map_err(crate::error::encode("issuer"))
}

/// Whether `issuer`'s key signed `cert_der` (the names are the caller's to compare).
fn verify_signed_by(cert_der: &[u8], issuer: &CertificateInfo) -> Result<()> {
    use der::{Decode, Encode};
    let cert =
        x509_cert::Certificate::from_der(cert_der).map_err(crate::error::corrupt("certificate"))?;
    let tbs_der = cert
        .tbs_certificate()
        .to_der()
        .map_err(crate::error::encode("certificate"))?;
    let alg_der = cert
        .signature_algorithm()
        .to_der()
        .map_err(crate::error::encode("signature algorithm"))?;
    let alg = spki::AlgorithmIdentifierRef::from_der(&alg_der)
        .map_err(crate::error::corrupt("signature algorithm"))?;
    let signature = cert
        .signature()
        .as_bytes()
        .ok_or(PkiError::NotIssuedByCa("its signature is not whole bytes"))?;
    issuer
        .public_key()
        .verify(&alg, &tbs_der, signature)
        .map_err(|_| PkiError::NotIssuedByCa("its signature does not verify with this CA's key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertificateInfo, KeyType, SubjectAltNames, SystemRandom, Usage, build_csr};
    use proptest::prelude::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn new_ca(key_type: KeyType, now: SystemTime) -> CertificateAuthority {
        CertificateAuthority::create(
            PrivateKey::generate(key_type).unwrap(),
            "test-ca",
            30 * DAY,
            now,
            &SystemRandom,
        )
        .unwrap()
    }

    fn csr_for(user: &str, groups: &[&str], sans: &SubjectAltNames) -> CertificateRequest {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let pem = build_csr(
            &key,
            &CsrSubject::new(user, groups.iter().copied()).unwrap(),
            sans,
        )
        .unwrap();
        CertificateRequest::from_pem(pem.as_bytes()).unwrap()
    }

    #[test]
    fn a_created_ca_loads_back_and_signs_with_matching_identifiers() {
        let now = SystemTime::now();
        for key_type in [
            KeyType::Rsa2048,
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Ed25519,
        ] {
            let ca = new_ca(key_type, now);
            let loaded = CertificateAuthority::load(
                ca.certificate_pem().as_bytes(),
                ca.private_key()
                    .expect("in memory")
                    .to_pkcs8_pem()
                    .unwrap()
                    .as_bytes(),
                now,
            )
            .unwrap();
            assert!(loaded.info().is_ca);
            let csr = csr_for("jane", &["dev", "ops"], &SubjectAltNames::default());
            let cert = loaded
                .sign(&csr, &SigningProfile::client(DAY), now, &SystemRandom)
                .unwrap();
            let info = CertificateInfo::from_der(&cert.der).unwrap();
            assert_eq!(info.subject.organizations, ["dev", "ops"]);
            assert!(!info.is_ca);
            assert_eq!(
                info.usages,
                ["digital signature", "key encipherment", "client auth"]
            );
            assert_eq!(
                info.authority_key_id,
                ca.info().subject_key_id,
                "{key_type}"
            );
            assert_eq!(info.issuer, "CN=test-ca");
            assert_eq!(info.public_key(), csr.public_key());
            assert_eq!(cert.not_before, info.not_before_time());
            assert_eq!(cert.not_after, info.not_after_time());
        }
    }

    #[test]
    fn only_what_this_ca_signed_is_verified_as_issued_by_it() {
        let now = SystemTime::now();
        for key_type in [KeyType::Rsa2048, KeyType::EcdsaP256, KeyType::Ed25519] {
            let ca = new_ca(key_type, now);
            // Same name, other key: the impostor an issuer-name check alone would accept.
            let namesake = new_ca(key_type, now);
            let other = CertificateAuthority::create(
                PrivateKey::generate(key_type).unwrap(),
                "other-ca",
                30 * DAY,
                now,
                &SystemRandom,
            )
            .unwrap();
            let csr = csr_for("jane", &["dev"], &SubjectAltNames::default());
            let sign = |by: &CertificateAuthority| {
                by.sign(&csr, &SigningProfile::client(DAY), now, &SystemRandom)
                    .unwrap()
                    .der
            };
            ca.verify_issued(&sign(&ca)).unwrap();
            let by_namesake = sign(&namesake);
            assert!(
                matches!(
                    ca.verify_issued(&by_namesake),
                    Err(PkiError::NotIssuedByCa(why)) if why.contains("signature")
                ),
                "{key_type}"
            );
            assert!(matches!(
                ca.verify_issued(&sign(&other)),
                Err(PkiError::NotIssuedByCa(why)) if why.contains("issuer")
            ));
            // One flipped bit in the signed part breaks the signature.
            let mut altered = sign(&ca);
            let at = altered.len() / 3;
            altered[at] ^= 0x01;
            assert!(ca.verify_issued(&altered).is_err(), "{key_type}");
            assert!(ca.verify_issued(b"not a certificate").is_err());
        }
    }

    #[test]
    fn loading_checks_pairing_ca_flag_and_validity() {
        let now = SystemTime::now();
        let ca = new_ca(KeyType::EcdsaP256, now);
        let other = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let cert = ca.certificate_pem();
        assert!(matches!(
            CertificateAuthority::load(
                cert.as_bytes(),
                other.to_pkcs8_pem().unwrap().as_bytes(),
                now
            ),
            Err(PkiError::CaKeyMismatch)
        ));
        let key = ca.private_key().expect("in memory").to_pkcs8_pem().unwrap();
        assert!(matches!(
            CertificateAuthority::load(cert.as_bytes(), key.as_bytes(), now + 31 * DAY),
            Err(PkiError::CaNotValidNow { .. })
        ));
        // A leaf presented as a CA.
        let leaf_key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let pem = build_csr(
            &leaf_key,
            &CsrSubject::new("leaf", ["x"]).unwrap(),
            &Default::default(),
        )
        .unwrap();
        let leaf = ca
            .sign(
                &CertificateRequest::from_pem(pem.as_bytes()).unwrap(),
                &SigningProfile::client(DAY),
                now,
                &SystemRandom,
            )
            .unwrap();
        assert!(matches!(
            CertificateAuthority::load(
                leaf.to_pem().as_bytes(),
                leaf_key.to_pkcs8_pem().unwrap().as_bytes(),
                now
            ),
            Err(PkiError::NotACa)
        ));
        // A bundle: the certificate matching the key is the one used.
        let bundle = format!(
            "{}{}",
            new_ca(KeyType::EcdsaP256, now).certificate_pem(),
            cert
        );
        let loaded = CertificateAuthority::load(bundle.as_bytes(), key.as_bytes(), now).unwrap();
        assert_eq!(loaded.certificate_der(), ca.certificate_der());
    }

    #[test]
    fn sans_only_where_allowed_and_serials_are_unique_and_positive() {
        let now = SystemTime::now();
        let ca = new_ca(KeyType::EcdsaP256, now);
        let sans = SubjectAltNames {
            dns: vec!["svc.example".into()],
            ..Default::default()
        };
        let csr = csr_for("web", &[], &sans);
        assert!(matches!(
            ca.sign(&csr, &SigningProfile::client(DAY), now, &SystemRandom),
            Err(PkiError::SansNotAllowed(_))
        ));
        let server = SigningProfile {
            usages: vec![Usage::DigitalSignature, Usage::ServerAuth],
            allow_sans: true,
            ..SigningProfile::client(DAY)
        };
        let cert = ca.sign(&csr, &server, now, &SystemRandom).unwrap();
        assert_eq!(CertificateInfo::from_der(&cert.der).unwrap().sans, sans);
        // Names given as values: exactly those, whatever the request asked for; none at all
        // when none are given.
        let checked = SubjectAltNames {
            dns: vec!["node-a".into()],
            ips: vec!["10.0.0.1".parse().unwrap()],
            ..Default::default()
        };
        let subject = CsrSubject::new("system:node:node-a", ["system:nodes"]).unwrap();
        let cert = ca
            .sign_with_names(&csr, &subject, &checked, &server, now, &SystemRandom)
            .unwrap();
        assert_eq!(CertificateInfo::from_der(&cert.der).unwrap().sans, checked);
        let client = SigningProfile::client(DAY);
        let none = ca
            .sign_with_names(
                &csr,
                &subject,
                &SubjectAltNames::default(),
                &client,
                now,
                &SystemRandom,
            )
            .unwrap();
        assert!(
            CertificateInfo::from_der(&none.der)
                .unwrap()
                .sans
                .is_empty()
        );

        let mut serials = std::collections::HashSet::new();
        let plain = csr_for("jane", &[], &SubjectAltNames::default());
        for _ in 0..200 {
            let cert = ca
                .sign(&plain, &SigningProfile::client(DAY), now, &SystemRandom)
                .unwrap();
            assert!(
                cert.serial.len() <= 32 && !cert.serial.starts_with("00"),
                "{}",
                cert.serial
            );
            assert!(serials.insert(cert.serial));
        }
    }

    /// Serial bytes from a fixed pattern, to show the serial really comes from the source given.
    struct Fixed(u8);
    impl RandomSource for Fixed {
        fn fill(&self, dest: &mut [u8]) -> Result<()> {
            dest.fill(self.0);
            Ok(())
        }
    }

    #[test]
    fn serial_comes_from_the_random_source_and_is_kept_positive() {
        let now = SystemTime::now();
        let ca = new_ca(KeyType::EcdsaP256, now);
        let csr = csr_for("jane", &[], &SubjectAltNames::default());
        let cert = ca
            .sign(&csr, &SigningProfile::client(DAY), now, &Fixed(0xff))
            .unwrap();
        assert_eq!(cert.serial, format!("7f{}", "ff".repeat(15)));
    }

    fn name_value() -> impl Strategy<Value = String> {
        // Printable Unicode without control characters, trimmed, non-empty.
        "[^\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}]{1,40}"
            .prop_map(|s| s.trim().to_string())
            .prop_filter("non-empty", |s| !s.is_empty())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn cn_and_every_o_round_trip_exactly_from_csr_to_certificate(
            cn in name_value(),
            groups in proptest::collection::btree_set(name_value(), 0..6),
        ) {
            use std::sync::OnceLock;
            static CA: OnceLock<CertificateAuthority> = OnceLock::new();
            let now = SystemTime::now();
            let ca = CA.get_or_init(|| new_ca(KeyType::EcdsaP256, now));
            let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
            let csr = csr_for(&cn, &groups, &SubjectAltNames::default());
            prop_assert_eq!(csr.subject().common_name.as_deref(), Some(cn.as_str()));
            let cert = ca.sign(&csr, &SigningProfile::client(DAY), now, &SystemRandom).unwrap();
            let info = CertificateInfo::from_der(&cert.der).unwrap();
            prop_assert_eq!(info.subject.common_name.as_deref(), Some(cn.as_str()));
            prop_assert_eq!(&info.subject.organizations, &groups);
        }
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;
    use crate::{KeyType, SystemRandom};

    fn root(name: &str) -> CertificateAuthority {
        CertificateAuthority::create(
            PrivateKey::generate(KeyType::EcdsaP256).unwrap(),
            name,
            Duration::from_secs(86_400),
            SystemTime::now(),
            &SystemRandom,
        )
        .unwrap()
    }

    #[test]
    fn an_intermediate_loads_with_the_chain_to_its_root_and_issues_with_it() {
        let now = SystemTime::now();
        let r = root("root");
        let other = root("someone else");
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let key_pem = key.to_pkcs8_pem().unwrap();
        let i = r
            .create_intermediate(
                Arc::new(key),
                "intermediate",
                Duration::from_secs(3600),
                now,
                &SystemRandom,
            )
            .unwrap();
        assert!(i.info().is_ca);
        r.verify_issued(i.certificate_der()).unwrap();
        assert_eq!(i.chain_pem(), r.certificate_pem());
        assert_eq!(i.anchor_pem(), r.certificate_pem());
        assert_eq!(r.anchor_pem(), r.certificate_pem());
        assert_eq!(r.chain_pem(), "");
        // A bundle with an unrelated CA in it: the chain follows issuers and signatures only.
        let bundle = format!(
            "{}{}{}",
            other.certificate_pem(),
            i.certificate_pem(),
            r.certificate_pem()
        );
        let loaded =
            CertificateAuthority::load(bundle.as_bytes(), key_pem.as_bytes(), now).unwrap();
        assert_eq!(loaded.chain_pem(), r.certificate_pem());
        // Without the root (it stays offline): the intermediate is its own anchor.
        let alone =
            CertificateAuthority::load(i.certificate_pem().as_bytes(), key_pem.as_bytes(), now)
                .unwrap();
        assert_eq!(alone.chain_pem(), "");
        assert_eq!(alone.anchor_pem(), i.certificate_pem());
        // A namesake of the root that did not sign the intermediate is not its issuer.
        let namesake = root("root");
        let fake = format!("{}{}", i.certificate_pem(), namesake.certificate_pem());
        let loaded = CertificateAuthority::load(fake.as_bytes(), key_pem.as_bytes(), now).unwrap();
        assert_eq!(loaded.chain_pem(), "");
        // What it issues carries the chain after the leaf.
        let leaf_key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let subject = CsrSubject::new("jane", ["dev"]).unwrap();
        let csr = crate::build_csr(&leaf_key, &subject, &SubjectAltNames::default()).unwrap();
        let csr = CertificateRequest::from_pem(csr.as_bytes()).unwrap();
        let issued = loaded
            .sign(
                &csr,
                &SigningProfile::client(Duration::from_secs(600)),
                now,
                &SystemRandom,
            )
            .unwrap();
        let blocks = pem::parse_blocks(issued.to_pem_with_chain().as_bytes()).unwrap();
        assert_eq!(
            blocks.len(),
            2,
            "the leaf and the intermediate; the namesake is not carried"
        );
        assert_eq!(
            pem::encode("CERTIFICATE", &blocks[1].der),
            i.certificate_pem()
        );
        let issued = i
            .sign(
                &csr,
                &SigningProfile::client(Duration::from_secs(600)),
                now,
                &SystemRandom,
            )
            .unwrap();
        let chain = issued.to_pem_with_chain();
        let blocks = pem::parse_blocks(chain.as_bytes()).unwrap();
        assert_eq!(
            blocks.len(),
            2,
            "the leaf and the intermediate, not the root"
        );
        i.verify_issued(&blocks[0].der).unwrap();
        assert_eq!(
            pem::encode("CERTIFICATE", &blocks[1].der),
            i.certificate_pem()
        );
        // A root's leaves go alone.
        let by_root = r
            .sign(
                &csr,
                &SigningProfile::client(Duration::from_secs(600)),
                now,
                &SystemRandom,
            )
            .unwrap();
        assert_eq!(by_root.to_pem_with_chain(), by_root.to_pem());
        let leaf = CertificateInfo::from_pem_chain(chain.as_bytes()).unwrap();
        assert_eq!(leaf.subject.common_name.as_deref(), Some("jane"));
        assert!(
            CertificateInfo::from_pem(chain.as_bytes()).is_err(),
            "one block expected there"
        );
    }
}
