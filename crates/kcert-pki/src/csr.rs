//! PKCS#10 certificate signing requests: build them, and read them the way a signer must
//! (signature verified, subject read as the API server reads it, every extension listed).

use crate::error::{corrupt, encode};
use crate::key::{PublicKey, to_der};
use crate::name::{CsrSubject, SubjectInfo};
use crate::{PkiError, PrivateKey, Result, oid, pem};
use der::Decode;
use der::asn1::{BitString, Ia5String, OctetString, SetOfVec};
use std::net::IpAddr;
use x509_cert::attr::Attribute;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq, Version};

/// Subject alternative names, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SubjectAltNames {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
    /// Email addresses (rfc822Name).
    pub emails: Vec<String>,
    /// URIs.
    pub uris: Vec<String>,
    /// Names of other kinds (otherName, directoryName, …), counted.
    pub other: usize,
}

impl SubjectAltNames {
    /// No names at all.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty()
            && self.ips.is_empty()
            && self.emails.is_empty()
            && self.uris.is_empty()
            && self.other == 0
    }

    pub(crate) fn from_extension(ext: &Extension) -> Result<Self> {
        let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
            .map_err(corrupt("subjectAltName"))?;
        let mut out = SubjectAltNames::default();
        for name in san.0 {
            match name {
                GeneralName::DnsName(s) => out.dns.push(s.to_string()),
                GeneralName::Rfc822Name(s) => out.emails.push(s.to_string()),
                GeneralName::UniformResourceIdentifier(s) => out.uris.push(s.to_string()),
                GeneralName::IpAddress(octets) => match octets.as_bytes().len() {
                    4 => out.ips.push(IpAddr::from(
                        <[u8; 4]>::try_from(octets.as_bytes()).expect("4"),
                    )),
                    16 => out.ips.push(IpAddr::from(
                        <[u8; 16]>::try_from(octets.as_bytes()).expect("16"),
                    )),
                    _ => out.other += 1,
                },
                _ => out.other += 1,
            }
        }
        Ok(out)
    }

    pub(crate) fn to_extension(&self) -> Result<Option<Extension>> {
        if self.is_empty() {
            return Ok(None);
        }
        let ia5 = |s: &String| {
            Ia5String::new(s)
                .map_err(|_| PkiError::InvalidSubject(format!("SAN {s:?} is not ASCII")))
        };
        let mut names = Vec::new();
        for d in &self.dns {
            names.push(GeneralName::DnsName(ia5(d)?));
        }
        for ip in &self.ips {
            names.push(GeneralName::from(*ip));
        }
        for e in &self.emails {
            names.push(GeneralName::Rfc822Name(ia5(e)?));
        }
        for u in &self.uris {
            names.push(GeneralName::UniformResourceIdentifier(ia5(u)?));
        }
        let value = to_der(&SubjectAltName(names), "subjectAltName")?;
        Ok(Some(Extension {
            extn_id: oid::SUBJECT_ALT_NAME,
            critical: false,
            extn_value: OctetString::new(value).map_err(encode("subjectAltName"))?,
        }))
    }
}

impl std::fmt::Display for SubjectAltNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.dns.iter().map(|d| format!("DNS:{d}")));
        parts.extend(self.ips.iter().map(|i| format!("IP:{i}")));
        parts.extend(self.emails.iter().map(|e| format!("email:{e}")));
        parts.extend(self.uris.iter().map(|u| format!("URI:{u}")));
        if self.other > 0 {
            parts.push(format!("{} other", self.other));
        }
        f.write_str(&parts.join(", "))
    }
}

/// One extension a CSR asks for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RequestedExtension {
    /// Short name or dotted OID.
    pub name: String,
    /// Dotted OID.
    pub oid: String,
    /// The critical flag.
    pub critical: bool,
}

/// Build a CSR for `subject` with optional `sans`, signed by `key`; PEM `CERTIFICATE REQUEST`.
pub fn build_csr(key: &PrivateKey, subject: &CsrSubject, sans: &SubjectAltNames) -> Result<String> {
    let extensions = sans.to_extension()?.into_iter().collect();
    build_csr_raw(key, &subject.to_der()?, extensions)
}

/// Build a CSR from a raw DER subject and any extensions (for hostile corpora and tests: no
/// validation of what is asked for).
#[doc(hidden)]
pub fn build_csr_raw(
    key: &PrivateKey,
    subject_der: &[u8],
    extensions: Vec<Extension>,
) -> Result<String> {
    let subject = Name::from_der(subject_der).map_err(encode("subject"))?;
    let public_key = spki::SubjectPublicKeyInfoOwned::from_der(key.public_key().spki_der())
        .map_err(encode("public key"))?;
    let mut attributes = SetOfVec::new();
    if !extensions.is_empty() {
        let req = der::Any::encode_from(&ExtensionReq(extensions))
            .map_err(encode("extension request"))?;
        let mut values = SetOfVec::new();
        values.insert(req).map_err(encode("extension request"))?;
        attributes
            .insert(Attribute {
                oid: oid::EXTENSION_REQUEST,
                values,
            })
            .map_err(encode("extension request"))?;
    }
    let info = CertReqInfo {
        version: Version::V1,
        subject,
        public_key,
        attributes,
    };
    let info_der = to_der(&info, "CSR")?;
    let signature = key.sign(&info_der)?;
    let req = CertReq {
        info,
        algorithm: key.signature_algorithm(),
        signature: BitString::from_bytes(&signature).map_err(encode("CSR signature"))?,
    };
    Ok(pem::encode("CERTIFICATE REQUEST", &to_der(&req, "CSR")?))
}

/// A parsed CSR whose signature has been verified with its own key (proof of possession).
#[derive(Clone, Debug)]
pub struct CertificateRequest {
    der: Vec<u8>,
    subject: SubjectInfo,
    subject_der: Vec<u8>,
    public_key: PublicKey,
    sans: SubjectAltNames,
    san_extension: Option<Extension>,
    extensions: Vec<RequestedExtension>,
    signature_algorithm: String,
}

impl CertificateRequest {
    /// Parse one PEM `CERTIFICATE REQUEST` (the form `spec.request` holds, base64-decoded).
    pub fn from_pem(input: &[u8]) -> Result<Self> {
        let block = pem::single_block(input, "CERTIFICATE REQUEST")?;
        Self::from_der(&block.der)
    }

    /// Parse DER and verify the signature. Trailing bytes are an error.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let req = CertReq::from_der(der).map_err(corrupt("certificate request"))?;
        let public_key = PublicKey::from_spki_der(&to_der(&req.info.public_key, "public key")?)?;
        let info_der = to_der(&req.info, "CSR")?;
        let signature = req.signature.as_bytes().ok_or(PkiError::BadSignature)?;
        let alg_der = to_der(&req.algorithm, "signature algorithm")?;
        let alg = spki::AlgorithmIdentifierRef::from_der(&alg_der)
            .map_err(corrupt("signature algorithm"))?;
        public_key.verify(&alg, &info_der, signature)?;

        let subject_der = to_der(&req.info.subject, "subject")?;
        let subject = SubjectInfo::from_der(&subject_der)?;
        let mut extensions = Vec::new();
        let mut sans = SubjectAltNames::default();
        let mut san_extension = None;
        for attr in req.info.attributes.iter() {
            if attr.oid != oid::EXTENSION_REQUEST {
                continue;
            }
            for value in attr.values.iter() {
                let req: ExtensionReq = value.decode_as().map_err(corrupt("extension request"))?;
                for ext in req.0 {
                    if ext.extn_id == oid::SUBJECT_ALT_NAME {
                        if san_extension.is_some() {
                            return Err(PkiError::InvalidSubject(
                                "the CSR requests subjectAltName twice".into(),
                            ));
                        }
                        sans = SubjectAltNames::from_extension(&ext)?;
                        san_extension = Some(ext.clone());
                    }
                    extensions.push(RequestedExtension {
                        name: oid::name(&ext.extn_id),
                        oid: ext.extn_id.to_string(),
                        critical: ext.critical,
                    });
                }
            }
        }
        Ok(CertificateRequest {
            der: der.to_vec(),
            subject,
            subject_der,
            public_key,
            sans,
            san_extension,
            extensions,
            signature_algorithm: oid::name(&alg.oid),
        })
    }

    /// The subject, read as the API server will read it.
    pub fn subject(&self) -> &SubjectInfo {
        &self.subject
    }

    /// The subject as the request encodes it (for inspection; never copied into a certificate).
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// The requested key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The requested subject alternative names.
    pub fn sans(&self) -> &SubjectAltNames {
        &self.sans
    }

    pub(crate) fn san_extension(&self) -> Option<&Extension> {
        self.san_extension.as_ref()
    }

    /// Every extension requested, in order (all but SANs are dropped when signing).
    pub fn requested_extensions(&self) -> &[RequestedExtension] {
        &self.extensions
    }

    /// The algorithm the CSR was signed with.
    pub fn signature_algorithm(&self) -> &str {
        &self.signature_algorithm
    }

    /// The DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The CSR as PEM.
    pub fn to_pem(&self) -> String {
        pem::encode("CERTIFICATE REQUEST", &self.der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyType;
    use der::Encode;

    #[test]
    fn built_csr_parses_back_with_all_groups_and_sans() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let subject = CsrSubject::new("jane", ["dev", "ops"]).unwrap();
        let sans = SubjectAltNames {
            dns: vec!["localhost".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
            ..Default::default()
        };
        let pem = build_csr(&key, &subject, &sans).unwrap();
        let csr = CertificateRequest::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(csr.subject().common_name.as_deref(), Some("jane"));
        assert_eq!(csr.subject().organizations, ["dev", "ops"]);
        assert_eq!(csr.sans(), &sans);
        assert_eq!(csr.public_key(), key.public_key());
        assert_eq!(csr.requested_extensions().len(), 1);
        assert_eq!(csr.signature_algorithm(), "ecdsa-with-SHA256");
    }

    #[test]
    fn tampered_truncated_and_padded_csrs_are_refused() {
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let pem = build_csr(
            &key,
            &CsrSubject::new("jane", ["dev"]).unwrap(),
            &Default::default(),
        )
        .unwrap();
        let der = pem::single_block(pem.as_bytes(), "CERTIFICATE REQUEST")
            .unwrap()
            .der
            .to_vec();

        // Flip one byte of the subject's "dev": still well-formed, but the signature breaks.
        let at = der.windows(3).position(|w| w == b"dev").unwrap();
        let mut tampered = der.clone();
        tampered[at] = b'D';
        assert!(matches!(
            CertificateRequest::from_der(&tampered),
            Err(PkiError::BadSignature)
        ));

        assert!(matches!(
            CertificateRequest::from_der(&der[..der.len() - 5]),
            Err(PkiError::CorruptDer { .. })
        ));
        let mut padded = der.clone();
        padded.extend_from_slice(b"junk");
        assert!(matches!(
            CertificateRequest::from_der(&padded),
            Err(PkiError::CorruptDer { .. })
        ));
    }

    #[test]
    fn a_csr_signed_by_another_key_fails_proof_of_possession() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let other = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let subject = CsrSubject::new("jane", ["dev"]).unwrap();
        let honest = build_csr(&key, &subject, &Default::default()).unwrap();
        let forged = build_csr(&other, &subject, &Default::default()).unwrap();
        let honest = CertReq::from_der(
            &pem::single_block(honest.as_bytes(), "CERTIFICATE REQUEST")
                .unwrap()
                .der,
        )
        .unwrap();
        let mut forged = CertReq::from_der(
            &pem::single_block(forged.as_bytes(), "CERTIFICATE REQUEST")
                .unwrap()
                .der,
        )
        .unwrap();
        forged.info.public_key = honest.info.public_key.clone();
        let der = forged.to_der().unwrap();
        assert!(matches!(
            CertificateRequest::from_der(&der),
            Err(PkiError::BadSignature)
        ));
    }
}
