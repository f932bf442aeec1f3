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
    /// The certificate from a file, the key in a PKCS#11 token (never read out of it).
    Pkcs11 {
        /// The CA certificate (re-read when it changes).
        cert: PathBuf,
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

/// The CA in force.
#[derive(Clone, Default)]
pub struct CaStore {
    current: Arc<RwLock<Option<Arc<CertificateAuthority>>>>,
}

impl CaStore {
    /// The CA, if one is loaded.
    pub fn get(&self) -> Option<Arc<CertificateAuthority>> {
        self.current.read().expect("CA lock").clone()
    }

    pub(crate) fn set(&self, ca: CertificateAuthority) {
        tracing::info!(ca = %ca.describe(), "CA loaded");
        *self.current.write().expect("CA lock") = Some(Arc::new(ca));
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
async fn keep_token_ca(cert: PathBuf, token: kcert_pkcs11::TokenConfig, store: CaStore) {
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
