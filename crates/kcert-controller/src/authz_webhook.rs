//! kcert's authorization webhook: the API server asks it (through an AuthorizationConfiguration
//! ahead of RBAC) about every request made with an X.509 client certificate; a certificate
//! revoked in the ledger is denied, naming the revocation; anything else gets no opinion.
//! Served by every replica, leader or not, from its own watch of the ledger.
//!
//! ```text
//!  kube-apiserver ──SubjectAccessReview (extra: credential-id X509SHA256=…)──► POST /authorize
//!      ▲                                                                            │
//!      └── denied + reason  |  no opinion (→ RBAC)  |  503 (→ failurePolicy: Deny) ◄┘
//!                            LedgerView ◄── watch LedgerPage
//! ```

use crate::ledger::LedgerView;
use kcert_kube::revocation::{Strict, review};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where and with which serving certificate the webhook listens.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Address to listen on (HTTPS).
    pub addr: SocketAddr,
    /// Serving certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Strict mode: users and groups that may only use kcert-issued certificates.
    pub strict: Strict,
}

fn tls_config(settings: &WebhookSettings) -> Result<rustls::ServerConfig, String> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let cert_pem = read(&settings.cert)?;
    let key_pem = read(&settings.key)?;
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        kcert_pki::pem::parse_blocks(&cert_pem)
            .map_err(|e| format!("{}: {e}", settings.cert.display()))?
            .into_iter()
            .filter(|b| b.label == "CERTIFICATE")
            .map(|b| rustls::pki_types::CertificateDer::from(b.der.to_vec()))
            .collect();
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE block", settings.cert.display()));
    }
    let key = kcert_pki::pem::single_block(&key_pem, "PRIVATE KEY")
        .map_err(|e| format!("{}: {e} (the key must be PKCS#8)", settings.key.display()))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.der.to_vec().into());
    rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("serving certificate and key: {e}"))
}

/// Most connections served at once (the API servers keep a few alive each; more wait).
pub const MAX_CONNECTIONS: usize = 512;
/// Largest request head, in bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body: a SubjectAccessReview is a few KiB.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Bind and serve until dropped. Errors only at start (bind, certificate).
pub async fn serve(
    settings: WebhookSettings,
    index: LedgerView,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, String> {
    let config = Arc::new(tls_config(&settings)?);
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.addr))?;
    tracing::info!(addr = %settings.addr, "authorization webhook listening");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let strict = Arc::new(settings.strict.clone());
    Ok(async move {
        // Connections live in this set: when the server stops (its task is dropped), so do they,
        // kept-alive ones included, and the API server sees the webhook gone.
        let mut connections = tokio::task::JoinSet::new();
        let mut backoff = Duration::from_millis(10);
        loop {
            while connections.try_join_next().is_some() {}
            if connections.len() >= MAX_CONNECTIONS {
                // At the cap, new connections wait in the listen backlog until one ends: a flood
                // of idle connections cannot exhaust memory or file descriptors.
                let _ = connections.join_next().await;
                continue;
            }
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => {
                    backoff = Duration::from_millis(10);
                    tcp
                }
                Err(e) => {
                    // Out of file descriptors and the like: retrying at once would spin.
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "the webhook could not accept a connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let (acceptor, index, strict) = (acceptor.clone(), index.clone(), strict.clone());
            connections.spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
                else {
                    return;
                };
                connection(tls, index, &strict).await;
            });
        }
    })
}

const TOO_LARGE: &str =
    "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// HTTP/1.1 with keep-alive: the API server reuses its connections.
async fn connection<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    index: LedgerView,
    strict: &Strict,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // The head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD_BYTES {
                let _ = stream.write_all(TOO_LARGE.as_bytes()).await;
                return;
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(90), stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if length > MAX_BODY_BYTES {
            let _ = stream.write_all(TOO_LARGE.as_bytes()).await;
            return;
        }
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        let body: Vec<u8> = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let method = head.split_whitespace().next().unwrap_or("");
        let (status, reply) = answer(method, &body, &index, strict);
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The status line and body for one request (pure but for the index read).
fn answer(
    method: &str,
    body: &[u8],
    index: &LedgerView,
    strict: &Strict,
) -> (&'static str, String) {
    if method != "POST" {
        return ("405 Method Not Allowed", "{}".into());
    }
    let view = index.read();
    let Some(revoked) = view.as_ref() else {
        // Fail closed: the API server's failurePolicy Deny applies to X.509 requests.
        return (
            "503 Service Unavailable",
            r#"{"error":"the ledger view is not current (not read yet, or unreadable for over 60s and being listed again)"}"#.into(),
        );
    };
    if let Some(why) = revoked.unidentifiable() {
        // Fail closed: an unreadable record might have been a revocation.
        return (
            "503 Service Unavailable",
            serde_json::json!({ "error": why }).to_string(),
        );
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(request) => ("200 OK", review(&request, revoked, strict).to_string()),
        Err(e) => (
            "400 Bad Request",
            serde_json::json!({"error": format!("not a SubjectAccessReview: {e}")}).to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_requests_get_413_and_the_connection_ends() {
        for request in [
            format!(
                "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY_BYTES + 1
            ),
            format!(
                "POST / HTTP/1.1\r\nX-Junk: {}",
                "a".repeat(MAX_HEAD_BYTES + 1)
            ),
        ] {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let index = LedgerView::default();
            index.set(Default::default());
            let served = tokio::spawn(async move {
                connection(server, index, &Strict::default()).await;
            });
            client.write_all(request.as_bytes()).await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            assert!(
                String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 413"),
                "{}",
                String::from_utf8_lossy(&reply)
            );
            served.await.unwrap();
        }
    }

    #[test]
    fn not_ready_is_503_and_junk_is_400() {
        let index = LedgerView::default();
        let strict = Strict::default();
        assert_eq!(
            answer("POST", b"{}", &index, &strict).0,
            "503 Service Unavailable"
        );
        index.set(Default::default());
        assert_eq!(
            answer("POST", b"not json", &index, &strict).0,
            "400 Bad Request"
        );
        assert_eq!(
            answer("GET", b"", &index, &strict).0,
            "405 Method Not Allowed"
        );
        let (status, body) = answer("POST", br#"{"spec":{"user":"jane"}}"#, &index, &strict);
        assert_eq!(status, "200 OK");
        assert!(
            body.contains(r#""allowed":false"#) && !body.contains("denied"),
            "{body}"
        );
    }
}
