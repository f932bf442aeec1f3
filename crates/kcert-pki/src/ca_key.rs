//! What signs for a CA: one interface for the in-memory key (a PEM file or a Secret) and for
//! keys that never leave a token (PKCS#11, in the kcert-pkcs11 crate).

use crate::{PkiError, PrivateKey, PublicKey, Result};
use der::Encode;
use spki::{AlgorithmIdentifierOwned, AlgorithmIdentifierRef};
use std::fmt;

/// A CA's private key, wherever it lives. The signer, `kcert sign` and `kcert ca` sign only
/// through this.
pub trait CaKey: Send + Sync + fmt::Debug {
    /// The public half (what the CA certificate must hold).
    fn public_key(&self) -> &PublicKey;

    /// Sign `message` with [`CaKey::signature_algorithm`] (hashing included).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;

    /// The certificate signature algorithm, from the key's type.
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        crate::key::signature_algorithm_for(self.public_key().algorithm())
    }

    /// Where the key lives, for `kcert ca status` and the logs ("in memory", a token's label).
    fn location(&self) -> String;

    /// Whether each signature is checked with the public key before it is used. A token's
    /// must be: a failing or hostile token must give an error, never a bad certificate.
    fn checks_signatures(&self) -> bool {
        true
    }

    /// The key itself when it is in memory (to write it out, as `kcert ca init` does); `None`
    /// for a key that cannot leave its token.
    fn in_memory(&self) -> Option<&PrivateKey> {
        None
    }
}

impl CaKey for PrivateKey {
    fn public_key(&self) -> &PublicKey {
        PrivateKey::public_key(self)
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        PrivateKey::sign(self, message)
    }

    fn location(&self) -> String {
        "in memory (from a PEM file or a Secret)".into()
    }

    /// aws-lc's own signature over a key it holds: checking it again would only cost time
    /// (≈ 0.05 ms per certificate).
    fn checks_signatures(&self) -> bool {
        false
    }

    fn in_memory(&self) -> Option<&PrivateKey> {
        Some(self)
    }
}

/// Sign `message` with `key`, and, where the key asks for it, verify what came back with the
/// public key first.
pub(crate) fn sign_checked(key: &dyn CaKey, message: &[u8]) -> Result<Vec<u8>> {
    let signature = key.sign(message)?;
    if key.checks_signatures() {
        let algorithm = key.signature_algorithm();
        let der = algorithm
            .to_der()
            .map_err(|_| PkiError::Crypto("encoding a signature algorithm"))?;
        let algorithm = AlgorithmIdentifierRef::try_from(der.as_slice())
            .map_err(|_| PkiError::Crypto("encoding a signature algorithm"))?;
        key.public_key()
            .verify(&algorithm, message, &signature)
            .map_err(|_| PkiError::BadCaSignature(key.location()))?;
    }
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyType;

    /// A key that signs with another key: what a confused or hostile token would return.
    #[derive(Debug)]
    struct Swapped {
        claimed: PrivateKey,
        actual: PrivateKey,
    }

    impl CaKey for Swapped {
        fn public_key(&self) -> &PublicKey {
            self.claimed.public_key()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
            self.actual.sign(message)
        }
        fn location(&self) -> String {
            "a test token".into()
        }
    }

    #[test]
    fn a_signature_by_another_key_is_refused_before_use() {
        for t in [KeyType::EcdsaP256, KeyType::Rsa2048] {
            let key = Swapped {
                claimed: PrivateKey::generate(t).unwrap(),
                actual: PrivateKey::generate(t).unwrap(),
            };
            let err = sign_checked(&key, b"tbs").unwrap_err();
            assert!(
                matches!(err, PkiError::BadCaSignature(ref l) if l == "a test token"),
                "{err}"
            );
            // The honest case passes the same check.
            let copy = PrivateKey::from_pem(key.actual.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
            let honest = Swapped {
                claimed: copy,
                actual: key.actual,
            };
            sign_checked(&honest, b"tbs").unwrap();
        }
    }
}
