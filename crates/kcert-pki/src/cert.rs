//! Certificates: the DER we sign (the subject built by kcert from approved values, the key copied
//! from the CSR), and inspection of any certificate.

use crate::csr::SubjectAltNames;
use crate::error::{corrupt, encode};
use crate::key::{KeyAlgorithm, PublicKey, colon_hex, to_der};
use crate::name::SubjectInfo;
use crate::profile::Usage;
use crate::time_fmt::rfc3339;
use crate::{Result, oid, pem};
use der::asn1::{AnyRef, BitString, BitStringRef, OctetString, UintRef};
use der::{Decode, Encode, Sequence};
use spki::AlgorithmIdentifierOwned;
use std::time::SystemTime;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, SubjectKeyIdentifier,
};
use x509_cert::time::Time;

#[derive(Sequence)]
struct ValidityOut {
    not_before: Time,
    not_after: Time,
}

/// TBSCertificate with the names and key as DER already encoded (the subject by
/// [`crate::CsrSubject::to_der`], the issuer from the CA certificate).
#[derive(Sequence)]
struct TbsOut<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: u8,
    serial: UintRef<'a>,
    signature: AlgorithmIdentifierOwned,
    issuer: AnyRef<'a>,
    validity: ValidityOut,
    subject: AnyRef<'a>,
    subject_public_key_info: AnyRef<'a>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT")]
    extensions: Vec<Extension>,
}

#[derive(Sequence)]
struct CertificateOut<'a> {
    tbs: AnyRef<'a>,
    algorithm: AlgorithmIdentifierOwned,
    signature: BitStringRef<'a>,
}

/// Everything that goes into one certificate.
pub(crate) struct CertificateTemplate<'a> {
    pub serial: [u8; 16],
    pub issuer_der: &'a [u8],
    pub subject_der: &'a [u8],
    pub public_key: &'a PublicKey,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
    pub key_usage_bits: u16,
    pub extended_key_usages: Vec<der::oid::ObjectIdentifier>,
    pub authority_key_id: Option<&'a [u8]>,
    pub san_extension: Option<&'a Extension>,
}

fn extension<T: Encode>(
    id: der::oid::ObjectIdentifier,
    critical: bool,
    value: &T,
) -> Result<Extension> {
    Ok(Extension {
        extn_id: id,
        critical,
        extn_value: OctetString::new(to_der(value, "extension")?).map_err(encode("extension"))?,
    })
}

/// keyUsage as a DER named-bit BIT STRING (trailing zero bits removed).
fn key_usage_bit_string(bits: u16) -> Result<BitString> {
    let highest = 15 - bits.leading_zeros() as usize;
    let mut bytes = vec![0u8; highest / 8 + 1];
    for bit in 0..=highest {
        if bits & (1 << bit) != 0 {
            bytes[bit / 8] |= 0x80 >> (bit % 8);
        }
    }
    BitString::new((7 - highest % 8) as u8, bytes).map_err(encode("keyUsage"))
}

/// Sign `template` with `signer`, returning the certificate DER.
pub(crate) fn sign_certificate(
    template: &CertificateTemplate<'_>,
    signer: &dyn crate::CaKey,
) -> Result<Vec<u8>> {
    let mut extensions = Vec::new();
    if template.key_usage_bits != 0 {
        extensions.push(extension(
            oid::KEY_USAGE,
            true,
            &key_usage_bit_string(template.key_usage_bits)?,
        )?);
    }
    if !template.extended_key_usages.is_empty() {
        extensions.push(extension(
            oid::EXT_KEY_USAGE,
            false,
            &ExtendedKeyUsage(template.extended_key_usages.clone()),
        )?);
    }
    extensions.push(extension(
        oid::BASIC_CONSTRAINTS,
        true,
        &BasicConstraints {
            ca: template.is_ca,
            path_len_constraint: None,
        },
    )?);
    let ski = template.public_key.key_identifier();
    extensions.push(extension(
        oid::SUBJECT_KEY_IDENTIFIER,
        false,
        &SubjectKeyIdentifier(OctetString::new(ski).map_err(encode("key identifier"))?),
    )?);
    if let Some(aki) = template.authority_key_id {
        extensions.push(extension(
            oid::AUTHORITY_KEY_IDENTIFIER,
            false,
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(aki).map_err(encode("key identifier"))?),
                ..Default::default()
            },
        )?);
    }
    if let Some(san) = template.san_extension {
        extensions.push(san.clone());
    }

    let tbs = TbsOut {
        version: 2,
        serial: UintRef::new(&template.serial).map_err(encode("serial"))?,
        signature: signer.signature_algorithm(),
        issuer: AnyRef::from_der(template.issuer_der).map_err(corrupt("issuer name"))?,
        validity: ValidityOut {
            not_before: crate::time_fmt::x509_time(template.not_before)?,
            not_after: crate::time_fmt::x509_time(template.not_after)?,
        },
        subject: AnyRef::from_der(template.subject_der).map_err(corrupt("subject name"))?,
        subject_public_key_info: AnyRef::from_der(template.public_key.spki_der())
            .map_err(corrupt("public key"))?,
        extensions,
    };
    let tbs_der = tbs.to_der().map_err(encode("certificate"))?;
    let signature = crate::ca_key::sign_checked(signer, &tbs_der)?;
    let cert = CertificateOut {
        tbs: AnyRef::from_der(&tbs_der).map_err(encode("certificate"))?,
        algorithm: signer.signature_algorithm(),
        signature: BitStringRef::from_bytes(&signature).map_err(encode("signature"))?,
    };
    cert.to_der().map_err(encode("certificate"))
}

/// What a certificate says, for `kcert inspect` and for checks.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    /// The subject (CN = user, O = groups for client certificates).
    pub subject: SubjectInfo,
    /// The issuer, formatted.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// basicConstraints CA.
    pub is_ca: bool,
    /// Usages in Kubernetes' names (keyUsage bits, then extendedKeyUsage).
    pub usages: Vec<String>,
    /// Subject alternative names.
    pub sans: SubjectAltNames,
    /// The certified key's algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// SHA-256 of the certified key's SubjectPublicKeyInfo.
    pub public_key_sha256: String,
    /// SHA-256 of the certificate DER (what `openssl x509 -fingerprint -sha256` shows).
    pub fingerprint_sha256: String,
    /// subjectKeyIdentifier, hex.
    pub subject_key_id: Option<String>,
    /// authorityKeyIdentifier's keyIdentifier, hex.
    pub authority_key_id: Option<String>,
    /// The signature algorithm.
    pub signature_algorithm: String,
    #[serde(skip)]
    pub(crate) not_before_time: SystemTime,
    #[serde(skip)]
    pub(crate) not_after_time: SystemTime,
    #[serde(skip)]
    pub(crate) public_key: PublicKey,
    #[serde(skip)]
    pub(crate) subject_der: Vec<u8>,
}

impl CertificateInfo {
    /// Read one PEM `CERTIFICATE`.
    pub fn from_pem(input: &[u8]) -> Result<Self> {
        Self::from_der(&pem::single_block(input, "CERTIFICATE")?.der)
    }

    /// The subject name as it is encoded (DER).
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// The leaf of a chain: the first of one or more `CERTIFICATE` blocks (a CSR's
    /// `status.certificate` and a kubeconfig's `client-certificate-data` hold the leaf, then an
    /// intermediate CA's chain). Anything but certificates is refused.
    pub fn from_pem_chain(input: &[u8]) -> Result<Self> {
        let blocks = pem::parse_blocks(input)?;
        if let Some(other) = blocks.iter().find(|b| b.label != "CERTIFICATE") {
            return Err(crate::PkiError::WrongPemType {
                found: other.label.clone(),
                expected: "CERTIFICATE",
            });
        }
        let first = blocks.first().ok_or(crate::PkiError::NotPem {
            expected: "CERTIFICATE",
        })?;
        Self::from_der(&first.der)
    }

    /// Read DER.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let cert = x509_cert::Certificate::from_der(der).map_err(corrupt("certificate"))?;
        let tbs = cert.tbs_certificate();
        let subject_der = to_der(tbs.subject(), "subject")?;
        let subject = SubjectInfo::from_der(&subject_der)?;
        let issuer = SubjectInfo::from_der(&to_der(tbs.issuer(), "issuer")?)?.to_string();
        let public_key =
            PublicKey::from_spki_der(&to_der(tbs.subject_public_key_info(), "public key")?)?;
        let mut info = CertificateInfo {
            subject,
            issuer,
            serial: serial_hex(tbs.serial_number().as_bytes()),
            not_before: rfc3339(tbs.validity().not_before.to_system_time()),
            not_after: rfc3339(tbs.validity().not_after.to_system_time()),
            is_ca: false,
            usages: Vec::new(),
            sans: SubjectAltNames::default(),
            key_algorithm: public_key.algorithm(),
            public_key_sha256: public_key.fingerprint_sha256(),
            fingerprint_sha256: colon_hex(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref(),
            ),
            subject_key_id: None,
            authority_key_id: None,
            signature_algorithm: oid::name(&cert.signature_algorithm().oid),
            not_before_time: tbs.validity().not_before.to_system_time(),
            not_after_time: tbs.validity().not_after.to_system_time(),
            public_key,
            subject_der,
        };
        for ext in tbs.extensions().into_iter().flatten() {
            let value = ext.extn_value.as_bytes();
            match ext.extn_id {
                oid::BASIC_CONSTRAINTS => {
                    info.is_ca = BasicConstraints::from_der(value)
                        .map_err(corrupt("basicConstraints"))?
                        .ca;
                }
                oid::KEY_USAGE => {
                    let bits = BitStringRef::from_der(value).map_err(corrupt("keyUsage"))?;
                    for (i, byte) in bits.raw_bytes().iter().enumerate() {
                        for j in 0..8u8 {
                            if byte & (0x80 >> j) != 0
                                && let Some(u) = Usage::from_key_usage_bit(i as u8 * 8 + j)
                            {
                                info.usages.push(u.as_str().to_string());
                            }
                        }
                    }
                }
                oid::EXT_KEY_USAGE => {
                    let eku =
                        ExtendedKeyUsage::from_der(value).map_err(corrupt("extendedKeyUsage"))?;
                    for o in &eku.0 {
                        info.usages.push(
                            Usage::from_eku(o)
                                .map(|u| u.as_str().to_string())
                                .unwrap_or_else(|| o.to_string()),
                        );
                    }
                }
                oid::SUBJECT_ALT_NAME => {
                    info.sans = SubjectAltNames::from_extension(ext)?;
                }
                oid::SUBJECT_KEY_IDENTIFIER => {
                    let ski = SubjectKeyIdentifier::from_der(value)
                        .map_err(corrupt("subjectKeyIdentifier"))?;
                    info.subject_key_id = Some(hex::encode(ski.0.as_bytes()));
                }
                oid::AUTHORITY_KEY_IDENTIFIER => {
                    let aki = AuthorityKeyIdentifier::from_der(value)
                        .map_err(corrupt("authorityKeyIdentifier"))?;
                    info.authority_key_id = aki.key_identifier.map(|k| hex::encode(k.as_bytes()));
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// Start of validity.
    pub fn not_before_time(&self) -> SystemTime {
        self.not_before_time
    }

    /// End of validity.
    pub fn not_after_time(&self) -> SystemTime {
        self.not_after_time
    }

    /// The certified key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }
}

/// A serial number as openssl prints it: the magnitude in hex, without DER's sign byte.
pub(crate) fn serial_hex(bytes: &[u8]) -> String {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    hex::encode(&bytes[first..])
}

/// A certificate just signed.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// The DER.
    pub der: Vec<u8>,
    /// Serial, hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The issuing CA's chain above it (an intermediate's issuer and up), PEM; empty when a
    /// root issued it.
    pub chain_pem: String,
}

impl IssuedCertificate {
    /// The certificate alone, PEM `CERTIFICATE`.
    pub fn to_pem(&self) -> String {
        pem::encode("CERTIFICATE", &self.der)
    }

    /// The certificate and the chain to the CA the relying party trusts (what `status.certificate`
    /// holds, and kubeconfigs: a client presents them all, the API server verifies up to its
    /// `--client-ca-file`).
    pub fn to_pem_with_chain(&self) -> String {
        format!("{}{}", self.to_pem(), self.chain_pem)
    }
}
