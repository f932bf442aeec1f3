//! The signing CA, loaded from files or a `kubernetes.io/tls` Secret and reloaded on change.

use k8s_openapi::api::core::v1::Secret;
use kcert_pki::CertificateAuthority;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Where the CA lives.
#[derive(Clone, Debug)]
pub enum CaSource {
    /// `ca.crt` and `ca.key` files (e.g. /etc/kubernetes/pki).
    Files {
        /// The certificate.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
    },
    /// The key in a PKCS#11 token (never read out of it); the certificate from a file or, when
    /// none is given, the one kept in the token beside the key.
    Pkcs11 {
        /// The CA certificate (re-read when it changes); `None`: the token's.
        cert: Option<PathBuf>,
        /// The token and key.
        token: kcert_pkcs11::TokenConfig,
    },
    /// A Secret with `tls.crt` and `tls.key` (or `ca.crt` + `ca.key`).
    Secret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// The CA in force: the controller's own (from its flags, kept current by [`keep_current`]),
/// and during a CA rotation the new one beside it, with which of them signs and which are
/// trusted ([`crate::rotation`] decides).
#[derive(Clone)]
pub struct CaStore {
    state: Arc<RwLock<InForce>>,
    /// Bumped whenever the own CA is (re)loaded: the rotation follower looks again at once.
    loads: Arc<tokio::sync::watch::Sender<u64>>,
    /// When the key last could not sign (a token away), in milliseconds since [`epoch`] plus
    /// one; 0 once it has signed since (a relaxed load per signature on the hot path).
    away_since: Arc<std::sync::atomic::AtomicU64>,
}

/// The process's clock origin for [`CaStore`]'s key-away mark.
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

/// How long after the key last could not sign readiness stays false (when nothing has been
/// signed since: with CSRs waiting, each retry every 5 s says again whether it is back).
pub const KEY_AWAY_UNREADY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct InForce {
    own: Option<Arc<CertificateAuthority>>,
    /// While a rotation is followed: its new CA and plan. `None` with `rotation_known` false
    /// and a rotation followed: nothing signs until the rotation has been read once (a new
    /// leader must never sign with an old CA a completed rotation dropped).
    rotation: Option<RotationInForce>,
    follows_rotation: bool,
}

struct RotationInForce {
    next: Option<Arc<CertificateAuthority>>,
    signing: Option<kcert_kube::rotation::Which>,
    trusted: Vec<kcert_kube::rotation::Which>,
}

impl Default for CaStore {
    fn default() -> Self {
        CaStore {
            state: Arc::default(),
            loads: Arc::new(tokio::sync::watch::channel(0).0),
            away_since: Arc::default(),
        }
    }
}

impl CaStore {
    /// The key could not sign (its token is away): readiness is false for a while.
    pub(crate) fn key_away(&self) {
        let now = epoch().elapsed().as_millis() as u64 + 1;
        self.away_since
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// The key signed.
    pub(crate) fn key_back(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.away_since.load(Relaxed) != 0 {
            self.away_since.store(0, Relaxed);
        }
    }

    /// Whether the key could not sign within [`KEY_AWAY_UNREADY`] and has not signed since.
    pub fn key_is_away(&self) -> bool {
        match self.away_since.load(std::sync::atomic::Ordering::Relaxed) {
            0 => false,
            at => {
                let now = epoch().elapsed().as_millis() as u64 + 1;
                now.saturating_sub(at) < KEY_AWAY_UNREADY.as_millis() as u64
            }
        }
    }

    /// A receiver that sees each (re)load of the own CA.
    pub fn loads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.loads.subscribe()
    }

    /// A store whose CA signs only once a rotation follower ([`crate::rotation`]) has set its
    /// plan at least once.
    pub fn following_rotation() -> Self {
        let store = CaStore::default();
        store.state.write().expect("CA lock").follows_rotation = true;
        store
    }

    /// The CA that signs now, if one may.
    pub fn get(&self) -> Option<Arc<CertificateAuthority>> {
        use kcert_kube::rotation::Which;
        let s = self.state.read().expect("CA lock");
        match &s.rotation {
            None if s.follows_rotation => None,
            None => s.own.clone(),
            Some(r) => match r.signing {
                Some(Which::Own) => s.own.clone(),
                Some(Which::Next) => r.next.clone(),
                None => None,
            },
        }
    }

    /// The controller's own CA (its flags), whether or not it signs.
    pub fn own(&self) -> Option<Arc<CertificateAuthority>> {
        self.state.read().expect("CA lock").own.clone()
    }

    /// Every CA whose certificates are trusted now (the published bundle): a certificate on a
    /// CSR is kcert's only if one of them issued it.
    pub fn trusted(&self) -> Vec<Arc<CertificateAuthority>> {
        use kcert_kube::rotation::Which;
        let s = self.state.read().expect("CA lock");
        match &s.rotation {
            None if s.follows_rotation => vec![],
            None => s.own.iter().cloned().collect(),
            Some(r) => r
                .trusted
                .iter()
                .filter_map(|w| match w {
                    Which::Own => s.own.clone(),
                    Which::Next => r.next.clone(),
                })
                .collect(),
        }
    }

    pub(crate) fn set(&self, ca: CertificateAuthority) {
        tracing::info!(ca = %ca.describe(), "CA loaded");
        self.state.write().expect("CA lock").own = Some(Arc::new(ca));
        self.loads.send_modify(|n| *n += 1);
    }

    /// Put a rotation's plan in force (`next`: its new CA, when loaded).
    pub(crate) fn set_rotation(
        &self,
        next: Option<Arc<CertificateAuthority>>,
        signing: Option<kcert_kube::rotation::Which>,
        trusted: Vec<kcert_kube::rotation::Which>,
    ) {
        self.state.write().expect("CA lock").rotation = Some(RotationInForce {
            next,
            signing,
            trusted,
        });
    }
}

/// Load the CA now and keep it current.
pub async fn keep_current(source: CaSource, store: CaStore, client: Client) {
    match source {
        CaSource::Files { cert, key } => {
            let paths = vec![cert.clone(), key.clone()];
            crate::file_watch::watch_files(paths, Duration::from_secs(5), move |_| {
                match (std::fs::read(&cert), std::fs::read(&key)) {
                    (Ok(c), Ok(k)) => match CertificateAuthority::load(&c, &k, SystemTime::now()) {
                        Ok(ca) => store.set(ca),
                        Err(e) => {
                            tracing::error!(cert = %cert.display(), key = %key.display(), error = %e, "CA refused; keeping the previous one")
                        }
                    },
                    (c, k) => tracing::error!(
                        cert_error = ?c.err().map(|e| e.to_string()),
                        key_error = ?k.err().map(|e| e.to_string()),
                        "cannot read the CA files"
                    ),
                }
            })
            .await
        }
        CaSource::Pkcs11 { cert, token } => keep_token_ca(cert, token, store).await,
        CaSource::Secret { namespace, name } => {
            use futures::StreamExt;
            let api: Api<Secret> = Api::namespaced(client, &namespace);
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let stream = watcher(api, config).default_backoff().touched_objects();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let secret = match event {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the CA Secret failed; retrying");
                        continue;
                    }
                };
                let data = secret.data.unwrap_or_default();
                let pick = |a: &str, b: &str| -> Option<Vec<u8>> {
                    data.get(a).or_else(|| data.get(b)).map(|v| v.0.clone())
                };
                match (pick("tls.crt", "ca.crt"), pick("tls.key", "ca.key")) {
                    (Some(c), Some(k)) => {
                        match CertificateAuthority::load(&c, &k, SystemTime::now()) {
                            Ok(ca) => store.set(ca),
                            Err(e) => {
                                tracing::error!(secret = %format!("{namespace}/{name}"), error = %e, "CA refused; keeping the previous one")
                            }
                        }
                    }
                    _ => {
                        tracing::error!(secret = %format!("{namespace}/{name}"), "the CA Secret needs tls.crt and tls.key")
                    }
                }
            }
        }
    }
}

/// Open the token's key (retrying with backoff while the token is away or refuses: the CA
/// stays unloaded, so readiness stays false and nothing is signed), then pair it with the
/// certificate file, again whenever that changes.
async fn keep_token_ca(cert: Option<PathBuf>, token: kcert_pkcs11::TokenConfig, store: CaStore) {
    let mut backoff = Duration::from_secs(1);
    let key = loop {
        let config = token.clone();
        match tokio::task::spawn_blocking(move || kcert_pkcs11::TokenKey::open(config)).await {
            Ok(Ok(key)) => break Arc::new(key),
            Ok(Err(e)) => {
                tracing::error!(error = %e, retry_in = ?backoff, "cannot open the CA key in its token")
            }
            Err(e) => tracing::error!(error = %e, "opening the CA key's token panicked"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    };
    tracing::info!(key = %kcert_pki::CaKey::location(key.as_ref()), "CA key opened in its token");
    let Some(cert) = cert else {
        // The certificate kept in the token: read now and every 30 s (a new one stored there,
        // e.g. a re-issued CA certificate for the same key, is picked up).
        let mut last: Option<Vec<u8>> = None;
        loop {
            let k = key.clone();
            match tokio::task::spawn_blocking(move || k.certificate()).await {
                Ok(Ok(Some(der))) if last.as_ref() != Some(&der) => {
                    let pem = kcert_pki::pem::encode("CERTIFICATE", &der);
                    match CertificateAuthority::with_key(
                        pem.as_bytes(),
                        key.clone(),
                        SystemTime::now(),
                    ) {
                        Ok(ca) => {
                            store.set(ca);
                            last = Some(der);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the CA certificate in the token is refused; keeping the previous one")
                        }
                    }
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => tracing::error!(
                    key = %kcert_pki::CaKey::location(key.as_ref()),
                    "no CA certificate in the token beside the key and no --ca-cert: store one (`kcert ca init --pkcs11-module`) or pass --ca-cert"
                ),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read the CA certificate from the token; retrying")
                }
                Err(e) => tracing::error!(error = %e, "reading the token panicked"),
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    };
    crate::file_watch::watch_files(vec![cert.clone()], Duration::from_secs(5), move |_| {
        match std::fs::read(&cert) {
            Ok(c) => match CertificateAuthority::with_key(&c, key.clone(), SystemTime::now()) {
                Ok(ca) => store.set(ca),
                Err(e) => {
                    tracing::error!(cert = %cert.display(), error = %e, "CA refused; keeping the previous one")
                }
            },
            Err(e) => tracing::error!(cert = %cert.display(), error = %e, "cannot read the CA certificate"),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcert_kube::rotation::Which;

    fn ca(name: &str) -> CertificateAuthority {
        CertificateAuthority::create(
            kcert_pki::PrivateKey::generate(kcert_pki::KeyType::EcdsaP256).unwrap(),
            name,
            Duration::from_secs(86_400),
            SystemTime::now(),
            &kcert_pki::SystemRandom,
        )
        .unwrap()
    }

    fn subject(ca: &Arc<CertificateAuthority>) -> String {
        ca.info().subject.to_string()
    }

    #[test]
    fn a_store_following_a_rotation_signs_nothing_until_the_rotation_is_read() {
        let store = CaStore::following_rotation();
        store.set(ca("old"));
        assert!(
            store.get().is_none(),
            "a new leader must not sign before reading the rotation"
        );
        assert!(store.trusted().is_empty());
        store.set_rotation(None, Some(Which::Own), vec![Which::Own]);
        assert_eq!(subject(&store.get().unwrap()), "CN=old");
    }

    #[test]
    fn a_key_that_could_not_sign_is_away_until_it_signs_again() {
        let store = CaStore::default();
        assert!(!store.key_is_away());
        store.key_away();
        assert!(store.key_is_away());
        store.clone().key_back();
        assert!(!store.key_is_away(), "clones share the mark");
    }

    #[test]
    fn the_plan_decides_which_ca_signs_and_which_are_trusted() {
        let store = CaStore::following_rotation();
        store.set(ca("old"));
        let next = Arc::new(ca("new"));
        store.set_rotation(
            Some(next.clone()),
            Some(Which::Own),
            vec![Which::Own, Which::Next],
        );
        assert_eq!(subject(&store.get().unwrap()), "CN=old");
        let trusted: Vec<String> = store.trusted().iter().map(subject).collect();
        assert_eq!(trusted, ["CN=old", "CN=new"]);
        store.set_rotation(Some(next.clone()), Some(Which::Next), vec![Which::Next]);
        assert_eq!(subject(&store.get().unwrap()), "CN=new");
        // The old CA reloaded from its flags changes nothing once the new one signs.
        store.set(ca("old again"));
        assert_eq!(subject(&store.get().unwrap()), "CN=new");
        let trusted: Vec<String> = store.trusted().iter().map(subject).collect();
        assert_eq!(trusted, ["CN=new"]);
        // A plan that lets none sign (the new CA lost after completion).
        store.set_rotation(None, None, vec![]);
        assert!(store.get().is_none());
        // Without a rotation followed, the flags' CA signs at once.
        let plain = CaStore::default();
        plain.set(ca("plain"));
        assert_eq!(subject(&plain.get().unwrap()), "CN=plain");
    }
}
