//! kcert-pkcs11: the CA key in a PKCS#11 token (an HSM, a cloud KMS's PKCS#11 library,
//! SoftHSM2 in tests). The private key is generated in the token, sensitive and
//! non-extractable, and is never read back: kcert asks the token for signatures, and
//! kcert-pki checks each one with the CA's public key before a certificate is built from it
//! ([`kcert_pki::CaKey::checks_signatures`]).
//!
//! ```text
//!  TokenConfig (module, token label/serial, key label/id, PIN) ──► TokenKey::open / generate
//!        └─► CertificateAuthority::with_key / create_with_key ──► sign (C_Sign, verified)
//! ```
//!
//! Sessions are pooled (one per signature in flight, kept for the next); a session that fails
//! is dropped and the token found again by its label or serial (a removed and re-inserted token
//! gets a new slot), so one retry follows a token that went away and came back.
#![warn(missing_docs)]

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use der::asn1::{BitString, UintRef};
use der::{Decode, Encode, Sequence};
use kcert_pki::{CaKey, KeyAlgorithm, KeyType, PkiError, PublicKey};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use zeroize::Zeroizing;

/// Which token: by its label or its serial number (both as the token reports them, trailing
/// blanks removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSelector {
    /// CKA_LABEL of the token (`softhsm2-util --show-slots` shows it).
    Label(String),
    /// The token's serial number.
    Serial(String),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "label {l:?}"),
            TokenSelector::Serial(s) => write!(f, "serial {s:?}"),
        }
    }
}

/// Which private key in the token: by CKA_LABEL or CKA_ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySelector {
    /// CKA_LABEL.
    Label(String),
    /// CKA_ID, as bytes.
    Id(Vec<u8>),
}

impl fmt::Display for KeySelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySelector::Label(l) => write!(f, "label {l:?}"),
            KeySelector::Id(id) => {
                f.write_str("id ")?;
                for b in id {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// Where the CA key is: the module, the token, the key and the user PIN.
#[derive(Clone)]
pub struct TokenConfig {
    /// The PKCS#11 module (a shared library), e.g. /usr/lib/softhsm/libsofthsm2.so.
    pub module: PathBuf,
    /// The token.
    pub token: TokenSelector,
    /// The private key.
    pub key: KeySelector,
    /// The user PIN (read from a file or the environment, never a flag value). Wiped on drop.
    pub pin: Zeroizing<String>,
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("key", &self.key)
            .field("pin", &"(hidden)")
            .finish()
    }
}

impl TokenConfig {
    fn describe(&self) -> String {
        format!(
            "PKCS#11 token {} in {}, key {}",
            self.token,
            self.module.display(),
            self.key
        )
    }
}

/// What went wrong with a token, said so that an operator knows what to change.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The module could not be loaded or initialised.
    #[error("{module}: cannot load the PKCS#11 module ({reason}); check --ca-pkcs11-module")]
    Module {
        /// The module's path.
        module: String,
        /// Why.
        reason: String,
    },
    /// No token with that label or serial.
    #[error(
        "no token with {token} in {module} (tokens present: {present}); check the token's label or serial"
    )]
    NoToken {
        /// The selector.
        token: TokenSelector,
        /// The module's path.
        module: String,
        /// The tokens that are there.
        present: String,
    },
    /// The PIN was refused or is locked.
    #[error(
        "token {token}: the user PIN was refused ({why}); check the PIN file or KCERT_CA_PKCS11_PIN"
    )]
    Pin {
        /// The selector.
        token: TokenSelector,
        /// The token's answer.
        why: String,
    },
    /// No private key matches.
    #[error(
        "token {token}: no private key with {key}; create one with `kcert ca init --pkcs11-module …`"
    )]
    NoKey {
        /// The token.
        token: TokenSelector,
        /// The key selector.
        key: KeySelector,
    },
    /// More than one private key matches.
    #[error("token {token}: {count} private keys have {key}; name one by its id")]
    AmbiguousKey {
        /// The token.
        token: TokenSelector,
        /// The key selector.
        key: KeySelector,
        /// How many matched.
        count: usize,
    },
    /// A key with that label exists already (generate refuses to shadow it).
    #[error(
        "token {token}: a key with {key} exists already; pick another label, or use it as it is"
    )]
    KeyExists {
        /// The token.
        token: TokenSelector,
        /// The key selector.
        key: KeySelector,
    },
    /// The key could leave the token: kcert refuses to sign with it.
    #[error(
        "token {token}: key {key} is extractable or not sensitive; kcert signs only with a key that cannot leave its token (generate one with `kcert ca init --pkcs11-module …`)"
    )]
    Extractable {
        /// The token.
        token: TokenSelector,
        /// The key selector.
        key: KeySelector,
    },
    /// A key type kcert does not keep in a token.
    #[error(
        "a {0} key is not supported in a token; use rsa:2048, rsa:3072, rsa:4096, ecdsa:p256 or ecdsa:p384"
    )]
    UnsupportedKeyType(String),
    /// Any other PKCS#11 failure.
    #[error("{location}: {what}: {source}")]
    Pkcs11 {
        /// Where.
        location: String,
        /// The step that failed.
        what: &'static str,
        /// The token's answer.
        source: CkError,
    },
    /// What the token returned is not a key kcert can use.
    #[error("{location}: {0}", location = .1)]
    BadKey(PkiError, String),
}

type Result<T> = std::result::Result<T, TokenError>;

/// One PKCS#11 context per module per process: a module is initialised once
/// (C_Initialize twice is an error) and finalised never (keys may be opened again).
fn context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(c) = contexts.get(module) {
        return Ok(c.clone());
    }
    let failed = |reason: String| TokenError::Module {
        module: module.display().to_string(),
        reason,
    };
    let ctx = Pkcs11::new(module).map_err(|e| failed(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::OsThreads) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed(e.to_string())),
    }
    contexts.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// The slot holding the token `selector` names.
fn find_slot(ctx: &Pkcs11, config: &TokenConfig) -> Result<Slot> {
    let location = config.describe();
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|source| TokenError::Pkcs11 {
            location: location.clone(),
            what: "listing slots",
            source,
        })?;
    let mut present = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let (label, serial) = (info.label().trim_end(), info.serial_number().trim_end());
        let hit = match &config.token {
            TokenSelector::Label(l) => l == label,
            TokenSelector::Serial(s) => s == serial,
        };
        if hit {
            return Ok(slot);
        }
        present.push(format!("{label:?} (serial {serial})"));
    }
    Err(TokenError::NoToken {
        token: config.token.clone(),
        module: config.module.display().to_string(),
        present: if present.is_empty() {
            "none".into()
        } else {
            present.join(", ")
        },
    })
}

/// A session on the token, logged in as the user.
fn open_session(ctx: &Pkcs11, config: &TokenConfig) -> Result<Session> {
    let slot = find_slot(ctx, config)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|source| TokenError::Pkcs11 {
            location: config.describe(),
            what: "opening a session",
            source,
        })?;
    let pin = AuthPin::new(config.pin.as_str().into());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(
            rv @ (RvError::PinIncorrect
            | RvError::PinLocked
            | RvError::PinExpired
            | RvError::PinInvalid
            | RvError::PinLenRange),
            _,
        )) => Err(TokenError::Pin {
            token: config.token.clone(),
            why: format!("{rv:?}"),
        }),
        Err(source) => Err(TokenError::Pkcs11 {
            location: config.describe(),
            what: "logging in",
            source,
        }),
    }
}

fn key_template(class: ObjectClass, key: &KeySelector) -> Vec<Attribute> {
    let mut t = vec![Attribute::Class(class)];
    match key {
        KeySelector::Label(l) => t.push(Attribute::Label(l.as_bytes().to_vec())),
        KeySelector::Id(id) => t.push(Attribute::Id(id.clone())),
    }
    t
}

/// The one object of `class` the selector names.
fn find_one(session: &Session, config: &TokenConfig, class: ObjectClass) -> Result<ObjectHandle> {
    let found = session
        .find_objects(&key_template(class, &config.key))
        .map_err(|source| TokenError::Pkcs11 {
            location: config.describe(),
            what: "finding the key",
            source,
        })?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(TokenError::NoKey {
            token: config.token.clone(),
            key: config.key.clone(),
        }),
        many => Err(TokenError::AmbiguousKey {
            token: config.token.clone(),
            key: config.key.clone(),
            count: many.len(),
        }),
    }
}

/// The attributes of `object` that came back, by type (a sensitive one does not).
fn attributes(
    session: &Session,
    config: &TokenConfig,
    object: ObjectHandle,
    types: &[AttributeType],
) -> Result<Vec<Attribute>> {
    session
        .get_attributes(object, types)
        .map_err(|source| TokenError::Pkcs11 {
            location: config.describe(),
            what: "reading the key's attributes",
            source,
        })
}

#[derive(Sequence)]
struct RsaPublicKeyOut<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

#[derive(Sequence)]
struct EcdsaSignatureOut<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

const RSA_ENCRYPTION: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// The private key's public half, from the public attributes the token shows of it (the
/// modulus and exponent, or the curve and point), as a SubjectPublicKeyInfo kcert-pki reads.
fn public_key_of(
    session: &Session,
    config: &TokenConfig,
    private: ObjectHandle,
) -> Result<PublicKey> {
    let location = config.describe();
    let bad =
        |what: &str| TokenError::BadKey(PkiError::UnsupportedKey(what.into()), location.clone());
    let kind = attributes(session, config, private, &[AttributeType::KeyType])?;
    let spki = match kind.first() {
        Some(Attribute::KeyType(t)) if *t == CkKeyType::RSA => {
            // The private key object carries the modulus and public exponent; the public key
            // object may not exist (an imported key).
            let a = attributes(
                session,
                config,
                private,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            let (mut n, mut e) = (None, None);
            for x in &a {
                match x {
                    Attribute::Modulus(v) => n = Some(v.clone()),
                    Attribute::PublicExponent(v) => e = Some(v.clone()),
                    _ => {}
                }
            }
            let (n, e) = n
                .zip(e)
                .ok_or_else(|| bad("an RSA key without its modulus"))?;
            let key = RsaPublicKeyOut {
                modulus: UintRef::new(&n).map_err(|_| bad("an RSA modulus"))?,
                public_exponent: UintRef::new(&e).map_err(|_| bad("an RSA exponent"))?,
            }
            .to_der()
            .map_err(|_| bad("an RSA public key"))?;
            SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: RSA_ENCRYPTION,
                    parameters: Some(der::Any::null()),
                },
                subject_public_key: BitString::from_bytes(&key)
                    .map_err(|_| bad("an RSA public key"))?,
            }
        }
        Some(Attribute::KeyType(t)) if *t == CkKeyType::EC => {
            // The point lives on the public key object (same label or id).
            let public = find_one(session, config, ObjectClass::PUBLIC_KEY)?;
            let a = attributes(
                session,
                config,
                public,
                &[AttributeType::EcParams, AttributeType::EcPoint],
            )?;
            let (mut params, mut point) = (None, None);
            for x in &a {
                match x {
                    Attribute::EcParams(v) => params = Some(v.clone()),
                    Attribute::EcPoint(v) => point = Some(v.clone()),
                    _ => {}
                }
            }
            let (params, point) = params
                .zip(point)
                .ok_or_else(|| bad("an EC key without its point"))?;
            let curve: const_oid::ObjectIdentifier = const_oid::ObjectIdentifier::from_der(&params)
                .map_err(|_| bad("EC parameters that are not a named curve"))?;
            // CKA_EC_POINT is a DER OCTET STRING holding the point (some tokens give it bare).
            let point = der::asn1::OctetString::from_der(&point)
                .map(|o| o.as_bytes().to_vec())
                .unwrap_or(point);
            SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: EC_PUBLIC_KEY,
                    parameters: Some(der::Any::from(&curve)),
                },
                subject_public_key: BitString::from_bytes(&point)
                    .map_err(|_| bad("an EC point"))?,
            }
        }
        _ => return Err(bad("a key that is neither RSA nor EC")),
    };
    let der = spki.to_der().map_err(|_| bad("a public key"))?;
    PublicKey::from_spki_der(&der).map_err(|e| TokenError::BadKey(e, location))
}

/// A CA key kept in a PKCS#11 token.
pub struct TokenKey {
    ctx: Pkcs11,
    config: TokenConfig,
    public: PublicKey,
    /// Idle sessions, each with the key's handle in it.
    sessions: Mutex<Vec<(Session, ObjectHandle)>>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("config", &self.config)
            .field("public", &self.public.algorithm())
            .finish()
    }
}

impl TokenKey {
    /// The key `config` names, checked to be a private key that can sign and cannot leave the
    /// token (CKA_SENSITIVE true, CKA_EXTRACTABLE false).
    pub fn open(config: TokenConfig) -> Result<Self> {
        let ctx = context(&config.module)?;
        let session = open_session(&ctx, &config)?;
        let private = find_one(&session, &config, ObjectClass::PRIVATE_KEY)?;
        let flags = attributes(
            &session,
            &config,
            private,
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )?;
        let sensitive = flags
            .iter()
            .any(|a| matches!(a, Attribute::Sensitive(true)));
        let extractable = flags
            .iter()
            .any(|a| matches!(a, Attribute::Extractable(true)));
        if !sensitive || extractable {
            return Err(TokenError::Extractable {
                token: config.token.clone(),
                key: config.key.clone(),
            });
        }
        let public = public_key_of(&session, &config, private)?;
        public
            .check_strength()
            .map_err(|e| TokenError::BadKey(e, config.describe()))?;
        Ok(TokenKey {
            ctx,
            config,
            public,
            sessions: Mutex::new(vec![(session, private)]),
        })
    }

    /// Generate a key of `key_type` in the token under `config.key` (a label, and an id from
    /// it), sensitive and non-extractable, and open it. Refuses if a key is there already.
    pub fn generate(config: TokenConfig, key_type: KeyType) -> Result<Self> {
        let ctx = context(&config.module)?;
        let session = open_session(&ctx, &config)?;
        match find_one(&session, &config, ObjectClass::PRIVATE_KEY) {
            Err(TokenError::NoKey { .. }) => {}
            Ok(_) | Err(TokenError::AmbiguousKey { .. }) => {
                return Err(TokenError::KeyExists {
                    token: config.token.clone(),
                    key: config.key.clone(),
                });
            }
            Err(e) => return Err(e),
        }
        let (label, id) = match &config.key {
            KeySelector::Label(l) => (l.as_bytes().to_vec(), l.as_bytes().to_vec()),
            KeySelector::Id(id) => (Vec::new(), id.clone()),
        };
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::Id(id.clone()),
        ];
        let mut private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Id(id),
        ];
        if !label.is_empty() {
            public.push(Attribute::Label(label.clone()));
            private.push(Attribute::Label(label));
        }
        let mechanism = match key_type {
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
                let bits: u64 = match key_type {
                    KeyType::Rsa2048 => 2048,
                    KeyType::Rsa3072 => 3072,
                    _ => 4096,
                };
                public.push(Attribute::ModulusBits(bits.into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
            KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
                let curve = if key_type == KeyType::EcdsaP256 {
                    SECP256R1
                } else {
                    SECP384R1
                };
                public.push(Attribute::EcParams(curve.to_der().expect("an OID encodes")));
                Mechanism::EccKeyPairGen
            }
            other => return Err(TokenError::UnsupportedKeyType(other.to_string())),
        };
        session
            .generate_key_pair(&mechanism, &public, &private)
            .map_err(|source| TokenError::Pkcs11 {
                location: config.describe(),
                what: "generating the key pair",
                source,
            })?;
        drop(session);
        TokenKey::open(config)
    }

    /// Where the key is.
    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    /// Keep the CA certificate `der` in the token beside the key (a CKO_CERTIFICATE object with
    /// the key's label and id), replacing any certificate there under the same selector: the
    /// controller then needs no certificate file (`kcert ca init --pkcs11-module` stores it).
    pub fn store_certificate(&self, der: &[u8]) -> Result<()> {
        let info = kcert_pki::CertificateInfo::from_der(der)
            .map_err(|e| TokenError::BadKey(e, self.config.describe()))?;
        let subject_der = info.subject_der();
        let (session, key) = self.session()?;
        let pkcs11 = |what: &'static str| {
            let location = self.config.describe();
            move |source| TokenError::Pkcs11 {
                location,
                what,
                source,
            }
        };
        for old in session
            .find_objects(&key_template(ObjectClass::CERTIFICATE, &self.config.key))
            .map_err(pkcs11("finding the certificate"))?
        {
            session
                .destroy_object(old)
                .map_err(pkcs11("replacing the certificate"))?;
        }
        let (label, id) = match &self.config.key {
            KeySelector::Label(l) => (l.as_bytes().to_vec(), l.as_bytes().to_vec()),
            KeySelector::Id(id) => (Vec::new(), id.clone()),
        };
        let mut template = vec![
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(cryptoki::object::CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Id(id),
            Attribute::Subject(subject_der.to_vec()),
            Attribute::Value(der.to_vec()),
        ];
        if !label.is_empty() {
            template.push(Attribute::Label(label));
        }
        session
            .create_object(&template)
            .map_err(pkcs11("storing the certificate"))?;
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((session, key));
        Ok(())
    }

    /// The CA certificate kept in the token under the key's selector (DER), if there is one.
    pub fn certificate(&self) -> Result<Option<Vec<u8>>> {
        let (session, key) = self.session()?;
        let location = self.config.describe();
        let found = session
            .find_objects(&key_template(ObjectClass::CERTIFICATE, &self.config.key))
            .map_err(|source| TokenError::Pkcs11 {
                location: location.clone(),
                what: "finding the certificate",
                source,
            })?;
        let der = match found.as_slice() {
            [] => None,
            [one] => session
                .get_attributes(*one, &[AttributeType::Value])
                .map_err(|source| TokenError::Pkcs11 {
                    location: location.clone(),
                    what: "reading the certificate",
                    source,
                })?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Value(v) => Some(v),
                    _ => None,
                }),
            many => {
                return Err(TokenError::AmbiguousKey {
                    token: self.config.token.clone(),
                    key: self.config.key.clone(),
                    count: many.len(),
                });
            }
        };
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((session, key));
        Ok(der)
    }

    fn session(&self) -> Result<(Session, ObjectHandle)> {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
        {
            return Ok(s);
        }
        let session = open_session(&self.ctx, &self.config)?;
        let key = find_one(&session, &self.config, ObjectClass::PRIVATE_KEY)?;
        Ok((session, key))
    }

    fn sign_once(&self, message: &[u8]) -> Result<Vec<u8>> {
        let (session, key) = self.session()?;
        let fail = |source| TokenError::Pkcs11 {
            location: self.config.describe(),
            what: "signing",
            source,
        };
        let signature = match self.public.algorithm() {
            KeyAlgorithm::Rsa { .. } => session
                .sign(&Mechanism::Sha256RsaPkcs, key, message)
                .map_err(fail)?,
            alg @ (KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384) => {
                // CKM_ECDSA over the digest (every token has it; the hash-and-sign mechanisms
                // are optional), then the raw r‖s as the DER X.509 wants.
                let (digest_alg, half) = if alg == KeyAlgorithm::EcdsaP256 {
                    (&aws_lc_rs::digest::SHA256, 32)
                } else {
                    (&aws_lc_rs::digest::SHA384, 48)
                };
                let digest = aws_lc_rs::digest::digest(digest_alg, message);
                let raw = session
                    .sign(&Mechanism::Ecdsa, key, digest.as_ref())
                    .map_err(fail)?;
                if raw.len() != 2 * half {
                    return Err(TokenError::BadKey(
                        PkiError::BadCaSignature(self.config.describe()),
                        self.config.describe(),
                    ));
                }
                let (r, s) = raw.split_at(half);
                let bad = |_| {
                    TokenError::BadKey(
                        PkiError::BadCaSignature(self.config.describe()),
                        self.config.describe(),
                    )
                };
                EcdsaSignatureOut {
                    r: UintRef::new(r).map_err(bad)?,
                    s: UintRef::new(s).map_err(bad)?,
                }
                .to_der()
                .map_err(bad)?
            }
            other => return Err(TokenError::UnsupportedKeyType(other.to_string())),
        };
        // Only a session that worked goes back to the pool.
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((session, key));
        Ok(signature)
    }
}

impl CaKey for TokenKey {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> kcert_pki::Result<Vec<u8>> {
        // A failed session is dropped by `sign_once`; one retry finds the token again (a module
        // reloaded, a token re-inserted into another slot).
        let unavailable = |e: TokenError| PkiError::CaKeyUnavailable {
            location: self.config.describe(),
            reason: e.to_string(),
        };
        match self.sign_once(message) {
            Ok(s) => Ok(s),
            Err(e @ (TokenError::Pin { .. } | TokenError::BadKey(..))) => Err(unavailable(e)),
            Err(_) => self.sign_once(message).map_err(unavailable),
        }
    }

    fn location(&self) -> String {
        self.config.describe()
    }
}

/// A logged-in session on the token `config` names, through the process's one context for
/// its module: for tests and diagnostics that must look at the token's objects directly (a
/// second context of the same module would finalise the first when dropped).
#[doc(hidden)]
pub fn session(config: &TokenConfig) -> Result<Session> {
    open_session(&context(&config.module)?, config)
}

/// The user PIN from `file` (its first line; a Secret mounted as a file), else from the
/// environment variable `env` (never from a flag, which `ps` would show).
pub fn read_pin(file: Option<&Path>, env: &str) -> std::result::Result<Zeroizing<String>, String> {
    let raw =
        match file {
            Some(path) => Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                format!("{}: cannot read the PKCS#11 PIN file: {e}", path.display())
            })?),
            None => Zeroizing::new(std::env::var(env).map_err(|_| {
                format!("the PKCS#11 user PIN is missing: pass a PIN file or set {env}")
            })?),
        };
    let pin = raw
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    if pin.is_empty() {
        return Err("the PKCS#11 user PIN is empty".into());
    }
    Ok(Zeroizing::new(pin.to_string()))
}

/// A key id given in hex (`--ca-pkcs11-key-id 0a1b…`).
pub fn parse_key_id(hex: &str) -> std::result::Result<Vec<u8>, String> {
    let hex = hex.trim();
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(format!(
            "{hex:?} is not a key id in hex (an even number of 0-9a-f)"
        ));
    }
    Ok((0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_the_files_first_line_and_never_empty() {
        let dir = std::env::temp_dir().join(format!("kcert-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pin");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(
            read_pin(Some(&f), "KCERT_TEST_NO_SUCH_VAR")
                .unwrap()
                .as_str(),
            "s3cret"
        );
        std::fs::write(&f, "\n").unwrap();
        assert!(read_pin(Some(&f), "X").unwrap_err().contains("empty"));
        let err = read_pin(None, "KCERT_TEST_NO_SUCH_VAR").unwrap_err();
        assert!(err.contains("KCERT_TEST_NO_SUCH_VAR"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn key_ids_are_even_hex() {
        assert_eq!(parse_key_id("0a1B").unwrap(), vec![0x0a, 0x1b]);
        for bad in ["", "abc", "zz", "0x01"] {
            assert!(parse_key_id(bad).is_err(), "{bad}");
        }
    }
}
