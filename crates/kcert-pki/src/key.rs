//! Private keys (generate, read every PEM form openssl and kubeadm write, write PKCS#8) and
//! public keys (identify, fingerprint, verify signatures).

use crate::error::corrupt;
use crate::{PkiError, Result, oid, pem};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use der::asn1::{AnyRef, OctetStringRef, UintRef};
use der::{Decode, Encode, Reader, SliceReader, Tagged};
use spki::{AlgorithmIdentifierOwned, AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// The algorithm (and size) of a public key, as found in a SubjectPublicKeyInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// RSA with a modulus of `bits` bits.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// ECDSA on NIST P-521.
    EcdsaP521,
    /// Ed25519.
    Ed25519,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::Rsa { bits } => write!(f, "RSA {bits}"),
            KeyAlgorithm::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyAlgorithm::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyAlgorithm::EcdsaP521 => f.write_str("ECDSA P-521"),
            KeyAlgorithm::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

impl serde::Serialize for KeyAlgorithm {
    /// As its display form (`RSA 2048`, `ECDSA P-256`), the same string everywhere in JSON output.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A key type kcert can generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum KeyType {
    /// ECDSA P-256: the default for user keys (fast, small, accepted everywhere).
    #[default]
    EcdsaP256,
    /// ECDSA P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 (kubeadm's default for CAs).
    Rsa2048,
    /// RSA 3072.
    Rsa3072,
    /// RSA 4096.
    Rsa4096,
}

impl KeyType {
    /// Every key type, in the order `--help` lists them.
    pub const ALL: [KeyType; 6] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    /// The spelling used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa:2048",
            KeyType::Rsa3072 => "rsa:3072",
            KeyType::Rsa4096 => "rsa:4096",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.trim().to_ascii_lowercase();
        KeyType::ALL
            .into_iter()
            .find(|t| t.as_str() == wanted || (wanted == "rsa" && *t == KeyType::Rsa2048))
            .ok_or_else(|| {
                let all: Vec<_> = KeyType::ALL.iter().map(|t| t.as_str()).collect();
                format!("unknown key type '{s}': use one of {}", all.join(", "))
            })
    }
}

/// A public key as carried in a SubjectPublicKeyInfo.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: KeyAlgorithm,
    rsa_exponent: Option<Vec<u8>>,
    spki_der: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({}, {})",
            self.algorithm,
            self.fingerprint_sha256()
        )
    }
}

impl PublicKey {
    /// Identify the key in a DER SubjectPublicKeyInfo. Unsupported algorithms and curves are errors.
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(corrupt("public key"))?;
        let key_bits = spki.subject_public_key.as_bytes().ok_or_else(|| {
            PkiError::UnsupportedKey("public key bit string has unused bits".into())
        })?;
        let (algorithm, rsa_exponent) = match spki.algorithm.oid {
            oid::RSA_ENCRYPTION => {
                let (n, e) = rsa_public_numbers(key_bits)?;
                (KeyAlgorithm::Rsa { bits: bit_len(n) }, Some(e.to_vec()))
            }
            oid::EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters_oid()
                    .map_err(|_| PkiError::UnsupportedKey("EC key without a named curve".into()))?;
                let alg = match curve {
                    oid::SECP256R1 => KeyAlgorithm::EcdsaP256,
                    oid::SECP384R1 => KeyAlgorithm::EcdsaP384,
                    oid::SECP521R1 => KeyAlgorithm::EcdsaP521,
                    other => return Err(PkiError::UnsupportedKey(format!("EC curve {other}"))),
                };
                (alg, None)
            }
            oid::ED25519 => (KeyAlgorithm::Ed25519, None),
            other => return Err(PkiError::UnsupportedKey(format!("algorithm {other}"))),
        };
        Ok(PublicKey {
            algorithm,
            rsa_exponent,
            spki_der: der.to_vec(),
        })
    }

    /// The key's algorithm and size.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The RSA public exponent, big-endian, for RSA keys.
    pub fn rsa_exponent(&self) -> Option<&[u8]> {
        self.rsa_exponent.as_deref()
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The subjectPublicKey bits (what key identifiers hash and what verifiers take).
    pub fn key_bits(&self) -> &[u8] {
        SubjectPublicKeyInfoRef::from_der(&self.spki_der)
            .ok()
            .and_then(|s| s.subject_public_key.as_bytes())
            .expect("checked when parsed")
    }

    /// SHA-256 of the SubjectPublicKeyInfo, as colon-separated hex (what `kcert inspect` shows).
    pub fn fingerprint_sha256(&self) -> String {
        colon_hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.spki_der).as_ref())
    }

    /// RFC 5280 key identifier: SHA-1 of the subjectPublicKey bits (what Go and openssl use).
    pub fn key_identifier(&self) -> Vec<u8> {
        aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            self.key_bits(),
        )
        .as_ref()
        .to_vec()
    }

    /// Refuse keys that are too weak to certify: RSA below 2048 bits or with a small exponent.
    pub fn check_strength(&self) -> Result<()> {
        if let KeyAlgorithm::Rsa { bits } = self.algorithm {
            if bits < 2048 {
                return Err(PkiError::WeakRsaKey { bits });
            }
            if bits > 8192 {
                return Err(PkiError::UnsupportedKey(format!(
                    "RSA key of {bits} bits (at most 8192)"
                )));
            }
            let e = self.rsa_exponent.as_deref().unwrap_or_default();
            let small = e.len() < 3 || (e.len() == 3 && e < [0x01, 0x00, 0x01].as_slice());
            if small || e.last().is_none_or(|b| b & 1 == 0) {
                return Err(PkiError::UnsupportedKey(format!(
                    "RSA public exponent 0x{} is weak; use 65537",
                    hex::encode(e)
                )));
            }
        }
        Ok(())
    }

    /// Verify `signature` over `message` made with `algorithm` by this key.
    pub fn verify(
        &self,
        algorithm: &AlgorithmIdentifierRef<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<()> {
        self.check_strength()?;
        let unsupported = || PkiError::UnsupportedSignatureAlgorithm(oid::name(&algorithm.oid));
        let verifier: &'static dyn sig::VerificationAlgorithm =
            match (self.algorithm, algorithm.oid) {
                (KeyAlgorithm::Rsa { .. }, oid::SHA256_WITH_RSA) => {
                    &sig::RSA_PKCS1_2048_8192_SHA256
                }
                (KeyAlgorithm::Rsa { .. }, oid::SHA384_WITH_RSA) => {
                    &sig::RSA_PKCS1_2048_8192_SHA384
                }
                (KeyAlgorithm::Rsa { .. }, oid::SHA512_WITH_RSA) => {
                    &sig::RSA_PKCS1_2048_8192_SHA512
                }
                (KeyAlgorithm::EcdsaP256, oid::ECDSA_SHA256) => &sig::ECDSA_P256_SHA256_ASN1,
                (KeyAlgorithm::EcdsaP256, oid::ECDSA_SHA384) => &sig::ECDSA_P256_SHA384_ASN1,
                (KeyAlgorithm::EcdsaP256, oid::ECDSA_SHA512) => &sig::ECDSA_P256_SHA512_ASN1,
                (KeyAlgorithm::EcdsaP384, oid::ECDSA_SHA256) => &sig::ECDSA_P384_SHA256_ASN1,
                (KeyAlgorithm::EcdsaP384, oid::ECDSA_SHA384) => &sig::ECDSA_P384_SHA384_ASN1,
                (KeyAlgorithm::EcdsaP384, oid::ECDSA_SHA512) => &sig::ECDSA_P384_SHA512_ASN1,
                (KeyAlgorithm::EcdsaP521, oid::ECDSA_SHA256) => &sig::ECDSA_P521_SHA256_ASN1,
                (KeyAlgorithm::EcdsaP521, oid::ECDSA_SHA384) => &sig::ECDSA_P521_SHA384_ASN1,
                (KeyAlgorithm::EcdsaP521, oid::ECDSA_SHA512) => &sig::ECDSA_P521_SHA512_ASN1,
                (KeyAlgorithm::Ed25519, oid::ED25519) => &sig::ED25519,
                _ => return Err(unsupported()),
            };
        // Parameters must be absent (ECDSA, Ed25519) or NULL (RSA PKCS#1): anything else is a
        // malformed identifier that Go's parser would also refuse.
        if let Some(params) = algorithm.parameters
            && !(matches!(self.algorithm, KeyAlgorithm::Rsa { .. })
                && params.tag() == der::Tag::Null)
        {
            return Err(unsupported());
        }
        sig::UnparsedPublicKey::new(verifier, self.key_bits())
            .verify(message, signature)
            .map_err(|_| PkiError::BadSignature)
    }
}

fn rsa_public_numbers(key_bits: &[u8]) -> Result<(&[u8], &[u8])> {
    let mut reader = SliceReader::new(key_bits).map_err(corrupt("RSA public key"))?;
    let (n, e) = reader
        .sequence(|r| {
            let n = UintRef::decode(r)?;
            let e = UintRef::decode(r)?;
            Ok::<_, der::Error>((n.as_bytes(), e.as_bytes()))
        })
        .map_err(corrupt("RSA public key"))?;
    reader.finish().map_err(corrupt("RSA public key"))?;
    Ok((n, e))
}

fn bit_len(big_endian: &[u8]) -> usize {
    let trimmed: Vec<u8> = big_endian.iter().copied().skip_while(|b| *b == 0).collect();
    match trimmed.first() {
        None => 0,
        Some(first) => trimmed.len() * 8 - first.leading_zeros() as usize,
    }
}

pub(crate) fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

enum KeyPairInner {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ecdsa(sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
}

/// A private key. It never prints its secret: `Debug` shows the algorithm and fingerprint only.
pub struct PrivateKey {
    inner: KeyPairInner,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKey({}, public {})",
            self.public.algorithm,
            self.public.fingerprint_sha256()
        )
    }
}

const PEM_LABELS: &str = "PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY";

impl PrivateKey {
    /// Generate a new key of `key_type` from the system's CSPRNG.
    pub fn generate(key_type: KeyType) -> Result<Self> {
        let fail = |_| PkiError::Crypto("generating a key");
        let inner = match key_type {
            KeyType::EcdsaP256 => KeyPairInner::Ecdsa(
                sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_ASN1_SIGNING).map_err(fail)?,
            ),
            KeyType::EcdsaP384 => KeyPairInner::Ecdsa(
                sig::EcdsaKeyPair::generate(&sig::ECDSA_P384_SHA384_ASN1_SIGNING).map_err(fail)?,
            ),
            KeyType::Ed25519 => {
                KeyPairInner::Ed25519(sig::Ed25519KeyPair::generate().map_err(fail)?)
            }
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
                let size = match key_type {
                    KeyType::Rsa2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
                    KeyType::Rsa3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                    _ => aws_lc_rs::rsa::KeySize::Rsa4096,
                };
                KeyPairInner::Rsa(aws_lc_rs::rsa::KeyPair::generate(size).map_err(fail)?)
            }
        };
        Self::from_inner(inner)
    }

    /// Read a private key from PEM: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`, with or without the `EC PARAMETERS` block `openssl ecparam` adds).
    pub fn from_pem(input: &[u8]) -> Result<Self> {
        let blocks = pem::parse_blocks(input)?;
        let mut keys = blocks.iter().filter(|b| b.label != "EC PARAMETERS");
        let block = match (keys.next(), keys.next()) {
            (Some(b), None) => b,
            (None, _) => {
                return Err(match blocks.first() {
                    Some(b) => PkiError::WrongPemType {
                        found: b.label.clone(),
                        expected: PEM_LABELS,
                    },
                    None => PkiError::NotPem {
                        expected: "PRIVATE KEY",
                    },
                });
            }
            (Some(b), Some(_)) => {
                return Err(PkiError::SeveralPemBlocks {
                    label: b.label.clone(),
                    count: blocks.iter().filter(|b| b.label != "EC PARAMETERS").count(),
                });
            }
        };
        Self::from_block(block)
    }

    /// Read one PEM block already split out of a file (see [`pem::parse_blocks`]).
    pub fn from_block(block: &pem::PemBlock) -> Result<Self> {
        match block.label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&block.der),
            "RSA PRIVATE KEY" => Self::from_pkcs1_der(&block.der),
            "EC PRIVATE KEY" => Self::from_sec1_der(&block.der),
            "ENCRYPTED PRIVATE KEY" => Err(PkiError::EncryptedKey),
            other => Err(PkiError::WrongPemType {
                found: other.to_string(),
                expected: PEM_LABELS,
            }),
        }
    }

    /// Read an unencrypted PKCS#8 PrivateKeyInfo (v1 or v2).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        let (algorithm, private_key) = pkcs8_parts(der)?;
        let rejected =
            |what: &'static str| move |e: aws_lc_rs::error::KeyRejected| key_rejected(what, e);
        let inner = match algorithm.oid {
            oid::RSA_ENCRYPTION => {
                check_rsa_private_size(private_key)?;
                KeyPairInner::Rsa(
                    aws_lc_rs::rsa::KeyPair::from_pkcs8(der).map_err(rejected("RSA key"))?,
                )
            }
            oid::EC_PUBLIC_KEY => {
                let curve = algorithm
                    .parameters_oid()
                    .map_err(|_| PkiError::UnsupportedKey("EC key without a named curve".into()))?;
                KeyPairInner::Ecdsa(
                    sig::EcdsaKeyPair::from_pkcs8(signing_alg(curve)?, der)
                        .map_err(rejected("EC key"))?,
                )
            }
            oid::ED25519 => KeyPairInner::Ed25519(
                sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(rejected("Ed25519 key"))?,
            ),
            other => {
                return Err(PkiError::UnsupportedKey(format!(
                    "private key algorithm {other}"
                )));
            }
        };
        Self::from_inner(inner)
    }

    /// Read a PKCS#1 RSAPrivateKey (`openssl genrsa -traditional`, older kubeadm).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self> {
        check_rsa_private_size(der)?;
        let kp = aws_lc_rs::rsa::KeyPair::from_der(der).map_err(|e| key_rejected("RSA key", e))?;
        Self::from_inner(KeyPairInner::Rsa(kp))
    }

    /// Read a SEC1 ECPrivateKey (`openssl ecparam -genkey`, kubeadm's ECDSA keys).
    pub fn from_sec1_der(der: &[u8]) -> Result<Self> {
        let curve = sec1_curve(der)?;
        let kp = sig::EcdsaKeyPair::from_private_key_der(signing_alg(curve)?, der)
            .map_err(|e| key_rejected("EC key", e))?;
        Self::from_inner(KeyPairInner::Ecdsa(kp))
    }

    fn from_inner(inner: KeyPairInner) -> Result<Self> {
        let spki = match &inner {
            KeyPairInner::Rsa(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
            KeyPairInner::Ecdsa(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
            KeyPairInner::Ed25519(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| PkiError::Crypto("encoding a public key"))?;
        let public = PublicKey::from_spki_der(&spki)?;
        public.check_strength()?;
        Ok(PrivateKey { inner, public })
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key's algorithm and size.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.public.algorithm
    }

    /// The key as unencrypted PKCS#8 PEM (`PRIVATE KEY`), the form openssl, Go and kubectl read.
    /// The string is wiped when dropped.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        let fail = |_| PkiError::Crypto("encoding a private key");
        let der: Zeroizing<Vec<u8>> = Zeroizing::new(match &self.inner {
            KeyPairInner::Rsa(k) => AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(k)
                .map_err(fail)?
                .as_ref()
                .to_vec(),
            KeyPairInner::Ecdsa(k) => k.to_pkcs8v1().map_err(fail)?.as_ref().to_vec(),
            KeyPairInner::Ed25519(k) => k.to_pkcs8v1().map_err(fail)?.as_ref().to_vec(),
        });
        Ok(Zeroizing::new(pem::encode("PRIVATE KEY", &der)))
    }

    /// The signature algorithm this key signs certificates and CSRs with.
    pub fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        signature_algorithm_for(self.public.algorithm)
    }

    /// Sign `message` with the algorithm of [`Self::signature_algorithm`].
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let fail = |_| PkiError::Crypto("signing");
        match &self.inner {
            KeyPairInner::Rsa(k) => {
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &rng, message, &mut out)
                    .map_err(fail)?;
                Ok(out)
            }
            KeyPairInner::Ecdsa(k) => Ok(k.sign(&rng, message).map_err(fail)?.as_ref().to_vec()),
            KeyPairInner::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }
}

/// The signature algorithm a key of `algorithm` signs certificates and CSRs with.
pub(crate) fn signature_algorithm_for(algorithm: KeyAlgorithm) -> AlgorithmIdentifierOwned {
    match algorithm {
        KeyAlgorithm::Rsa { .. } => AlgorithmIdentifierOwned {
            oid: oid::SHA256_WITH_RSA,
            parameters: Some(der::Any::from(AnyRef::NULL)),
        },
        KeyAlgorithm::EcdsaP256 => AlgorithmIdentifierOwned {
            oid: oid::ECDSA_SHA256,
            parameters: None,
        },
        KeyAlgorithm::EcdsaP384 => AlgorithmIdentifierOwned {
            oid: oid::ECDSA_SHA384,
            parameters: None,
        },
        KeyAlgorithm::EcdsaP521 => AlgorithmIdentifierOwned {
            oid: oid::ECDSA_SHA512,
            parameters: None,
        },
        KeyAlgorithm::Ed25519 => AlgorithmIdentifierOwned {
            oid: oid::ED25519,
            parameters: None,
        },
    }
}

fn key_rejected(what: &'static str, e: aws_lc_rs::error::KeyRejected) -> PkiError {
    PkiError::UnsupportedKey(format!("{what} rejected ({e})"))
}

fn signing_alg(curve: der::oid::ObjectIdentifier) -> Result<&'static sig::EcdsaSigningAlgorithm> {
    match curve {
        oid::SECP256R1 => Ok(&sig::ECDSA_P256_SHA256_ASN1_SIGNING),
        oid::SECP384R1 => Ok(&sig::ECDSA_P384_SHA384_ASN1_SIGNING),
        oid::SECP521R1 => Ok(&sig::ECDSA_P521_SHA512_ASN1_SIGNING),
        other => Err(PkiError::UnsupportedKey(format!("EC curve {other}"))),
    }
}

/// The algorithm and the inner private key of a PKCS#8 PrivateKeyInfo.
fn pkcs8_parts(der: &[u8]) -> Result<(AlgorithmIdentifierRef<'_>, &[u8])> {
    let mut reader = SliceReader::new(der).map_err(corrupt("PKCS#8 private key"))?;
    let parts = reader
        .sequence(|r| {
            let _version = u8::decode(r)?;
            let algorithm = AlgorithmIdentifierRef::decode(r)?;
            let key = <&OctetStringRef>::decode(r)?;
            // Optional attributes [0] and public key [1] (PKCS#8 v2) follow; aws-lc checks them.
            let rest = r.remaining_len();
            r.read_slice(rest)?;
            Ok::<_, der::Error>((algorithm, key.as_bytes()))
        })
        .map_err(corrupt("PKCS#8 private key"))?;
    reader.finish().map_err(corrupt("PKCS#8 private key"))?;
    Ok(parts)
}

/// Refuse RSA private keys below 2048 bits with that reason, before the backend says "rejected".
fn check_rsa_private_size(pkcs1: &[u8]) -> Result<()> {
    let mut reader = SliceReader::new(pkcs1).map_err(corrupt("RSA private key"))?;
    let bits = reader
        .sequence(|r| {
            let _version = u8::decode(r)?;
            let n = UintRef::decode(r)?;
            let rest = r.remaining_len();
            r.read_slice(rest)?;
            Ok::<_, der::Error>(bit_len(n.as_bytes()))
        })
        .map_err(corrupt("RSA private key"))?;
    if bits < 2048 {
        return Err(PkiError::WeakRsaKey { bits });
    }
    Ok(())
}

/// The named curve of a SEC1 ECPrivateKey: its `[0]` parameters, or the private key's length.
fn sec1_curve(der: &[u8]) -> Result<der::oid::ObjectIdentifier> {
    let mut reader = SliceReader::new(der).map_err(corrupt("EC private key"))?;
    let (len, params) = reader
        .sequence(|r| {
            let _version = u8::decode(r)?;
            let key = <&OctetStringRef>::decode(r)?;
            let params = r.context_specific::<der::oid::ObjectIdentifier>(
                der::TagNumber(0),
                der::TagMode::Explicit,
            )?;
            let rest = r.remaining_len();
            r.read_slice(rest)?;
            Ok::<_, der::Error>((key.as_bytes().len(), params))
        })
        .map_err(corrupt("EC private key"))?;
    Ok(match (params, len) {
        (Some(curve), _) => curve,
        (None, 32) => oid::SECP256R1,
        (None, 48) => oid::SECP384R1,
        (None, 66) => oid::SECP521R1,
        (None, n) => {
            return Err(PkiError::UnsupportedKey(format!(
                "EC private key of {n} bytes without a curve"
            )));
        }
    })
}

/// DER-encode anything, mapping the error.
pub(crate) fn to_der<T: Encode>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    value.to_der().map_err(crate::error::encode(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_type_generates_round_trips_and_signs() {
        for key_type in KeyType::ALL {
            let key = PrivateKey::generate(key_type).unwrap();
            let pem = key.to_pkcs8_pem().unwrap();
            assert!(
                pem.starts_with(&format!("-----BEGIN {}-----", "PRIVATE KEY")),
                "PKCS#8 PEM expected"
            );
            let again = PrivateKey::from_pem(pem.as_bytes()).unwrap();
            assert_eq!(again.public_key(), key.public_key(), "{key_type}");
            let alg = key.signature_algorithm();
            let sig = key.sign(b"hello").unwrap();
            let alg_der = to_der(&alg, "alg").unwrap();
            let alg_ref = AlgorithmIdentifierRef::from_der(&alg_der).unwrap();
            key.public_key().verify(&alg_ref, b"hello", &sig).unwrap();
            assert!(matches!(
                key.public_key().verify(&alg_ref, b"hellO", &sig),
                Err(PkiError::BadSignature)
            ));
        }
    }

    #[test]
    fn key_type_parses_cli_spellings() {
        assert_eq!("rsa:4096".parse::<KeyType>().unwrap(), KeyType::Rsa4096);
        assert_eq!("ECDSA-P384".parse::<KeyType>().unwrap(), KeyType::EcdsaP384);
        let err = "dsa".parse::<KeyType>().unwrap_err();
        assert!(err.contains("ecdsa-p256"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let shown = format!("{key:?}");
        let pem = key.to_pkcs8_pem().unwrap();
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(shown.starts_with("PrivateKey(ECDSA P-256"), "{shown}");
        assert!(!shown.contains(&body));
    }

    #[test]
    fn encrypted_and_wrong_blocks_are_explained() {
        let enc = pem::encode("ENCRYPTED PRIVATE KEY", b"xx");
        assert!(matches!(
            PrivateKey::from_pem(enc.as_bytes()),
            Err(PkiError::EncryptedKey)
        ));
        let cert = pem::encode("CERTIFICATE", b"xx");
        assert!(matches!(
            PrivateKey::from_pem(cert.as_bytes()),
            Err(PkiError::WrongPemType { .. })
        ));
        let garbage = pem::encode("PRIVATE KEY", b"\x30\x03\x02\x01");
        assert!(matches!(
            PrivateKey::from_pem(garbage.as_bytes()),
            Err(PkiError::CorruptDer { .. })
        ));
    }
}
