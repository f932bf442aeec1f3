//! The certificate authority: load the cluster CA (checked) or create one, and sign.

use crate::cert::{CertificateInfo, CertificateTemplate, IssuedCertificate, sign_certificate};
use crate::csr::CertificateRequest;
use crate::name::CsrSubject;
use crate::profile::{SigningProfile, leaf_extensions_for, truncate_to_seconds};
use crate::random::{RandomSource, serial_number};
use crate::time_fmt::rfc3339;
use crate::{PkiError, PrivateKey, Result, pem};
use std::time::{Duration, SystemTime};

/// A CA certificate with its private key, checked to belong together.
#[derive(Debug)]
pub struct CertificateAuthority {
    cert_der: Vec<u8>,
    info: CertificateInfo,
    key: PrivateKey,
    key_id: Vec<u8>,
}

impl CertificateAuthority {
    /// Load `ca.crt` and `ca.key` as a cluster keeps them. The certificate file may be a bundle:
    /// the certificate whose key is `key_pem` is used. Fails unless it is a CA valid at `now`.
    pub fn load(cert_pem: &[u8], key_pem: &[u8], now: SystemTime) -> Result<Self> {
        let key = PrivateKey::from_pem(key_pem)?;
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
        for block in certs {
            let info = CertificateInfo::from_der(&block.der)?;
            if info.public_key() == key.public_key() {
                matching = Some((block.der.to_vec(), info));
                break;
            }
        }
        let (cert_der, info) = matching.ok_or(PkiError::CaKeyMismatch)?;
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
        Ok(CertificateAuthority {
            cert_der,
            info,
            key,
            key_id,
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
        if lifetime.is_zero() {
            return Err(PkiError::InvalidLifetime(
                "a CA needs a lifetime above zero".into(),
            ));
        }
        let subject = CsrSubject::new(common_name, Vec::<String>::new())?.to_der()?;
        let now = truncate_to_seconds(now);
        let template = CertificateTemplate {
            serial: serial_number(rng)?,
            issuer_der: &subject,
            subject_der: &subject,
            public_key: key.public_key(),
            not_before: now
                - Duration::from_secs(3600).min(
                    now.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default(),
                ),
            not_after: now + lifetime,
            is_ca: true,
            // digitalSignature, keyCertSign, cRLSign
            key_usage_bits: 0b110_0001,
            extended_key_usages: Vec::new(),
            authority_key_id: None,
            san_extension: None,
        };
        let der = sign_certificate(&template, &key)?;
        let info = CertificateInfo::from_der(&der)?;
        let key_id = key.public_key().key_identifier();
        Ok(CertificateAuthority {
            cert_der: der,
            info,
            key,
            key_id,
        })
    }

    /// Sign `csr` as `profile` allows, at `now`. The subject and key are copied verbatim; SANs only
    /// when the profile allows them; every other requested extension is dropped.
    pub fn sign(
        &self,
        csr: &CertificateRequest,
        profile: &SigningProfile,
        now: SystemTime,
        rng: &dyn RandomSource,
    ) -> Result<IssuedCertificate> {
        csr.public_key().check_strength()?;
        if !csr.sans().is_empty() && !profile.allow_sans {
            return Err(PkiError::SansNotAllowed(csr.sans().to_string()));
        }
        let (key_usage_bits, extended_key_usages) = leaf_extensions_for(&profile.usages)?;
        let (not_before, not_after) = profile.validity(now, self.info.not_after_time())?;
        let serial = serial_number(rng)?;
        let template = CertificateTemplate {
            serial,
            issuer_der: &self.info.subject_der,
            subject_der: csr.subject_der(),
            public_key: csr.public_key(),
            not_before,
            not_after,
            is_ca: false,
            key_usage_bits,
            extended_key_usages,
            authority_key_id: Some(&self.key_id),
            san_extension: if profile.allow_sans {
                csr.san_extension()
            } else {
                None
            },
        };
        let der = sign_certificate(&template, &self.key)?;
        let serial = hex::encode(
            x509_cert::serial_number::SerialNumber::<x509_cert::certificate::Rfc5280>::new(&serial)
                .map_err(crate::error::encode("serial"))?
                .as_bytes(),
        );
        Ok(IssuedCertificate {
            der,
            serial,
            not_before,
            not_after,
        })
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

    /// The CA's private key (to write it out after `create`).
    pub fn key(&self) -> &PrivateKey {
        &self.key
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
