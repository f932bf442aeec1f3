//! `/metrics`, `/healthz`, `/readyz` on a small HTTP/1.1 listener (no framework needed for three
//! GET routes).

use crate::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether the controller is ready (policy and CA loaded as its roles need).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// Warnings `/readyz` shows while ready (an expiring CA): still 200.
pub type ReadyWarnings = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Serve until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Readiness,
    warnings: ReadyWarnings,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let (ready, warnings) = (ready.clone(), warnings.clone());
        tokio::spawn(async move {
            // Read the request head (up to 8 KiB, 5 s): clients may send it in pieces.
            let mut buf = Vec::with_capacity(1024);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                let mut chunk = [0u8; 1024];
                match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics.render(),
                ),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                "/readyz" if ready() => (
                    "200 OK",
                    "text/plain",
                    warnings().iter().fold("ok\n".to_string(), |body, w| {
                        format!("{body}warning: {w}\n")
                    }),
                ),
                "/readyz" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "policy or CA not loaded yet\n".to_string(),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// Bind `addr` for [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
