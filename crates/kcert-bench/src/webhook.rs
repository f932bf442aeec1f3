//! The authorization webhook under load: SubjectAccessReviews offered at a fixed rate over
//! kept-alive TLS connections (as the API server sends them), with a ledger of many records
//! in force. Latency is measured from each send and, beside it, from each request's scheduled
//! time, so a stall is counted against every request it delays (no coordinated omission).

use crate::stats::percentile;
use anyhow::{Context as _, Result, bail};
use kcert_controller::authz_webhook::{self, WebhookSettings};
use kcert_controller::ledger::LedgerView;
use kcert_kube::crd::{IssuedCertificate, Revocation};
use kcert_kube::ledger::LedgerIndex;
use kcert_kube::revocation::Strict;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What one run measured.
pub struct WebhookRun {
    pub records: usize,
    pub revoked: usize,
    /// Seconds to build the index from the records.
    pub index_build_s: f64,
    pub offered_per_s: f64,
    pub answered: usize,
    /// Answers that named a revocation, and how many of the requests should have.
    pub denied: usize,
    pub expected_denied: usize,
    /// From sending a review to its answer.
    pub millis: Vec<f64>,
    /// From when it was due (includes tokio's 1 ms timer granularity and any queueing).
    pub scheduled_millis: Vec<f64>,
}

pub fn fingerprint(i: usize) -> String {
    format!(
        "{:064x}",
        (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    )
}

/// `records` ledger records, every `revoke_every`-th revoked.
fn ledger(records: usize, revoke_every: usize) -> Vec<IssuedCertificate> {
    (0..records)
        .map(|i| IssuedCertificate {
            serial: format!("{i:x}"),
            user: format!("user-{i}"),
            groups: vec!["dev".into()],
            fingerprint_sha256: fingerprint(i),
            revocation: i.is_multiple_of(revoke_every).then(|| Revocation {
                revoked_at: "2026-12-01T00:00:00Z".into(),
                revoked_by: "admin".into(),
                reason: "benchmark".into(),
            }),
            ..Default::default()
        })
        .collect()
}

pub fn review_body(i: usize) -> String {
    serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": format!("user-{i}"),
            "groups": ["dev", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/credential-id": [format!("X509SHA256={}", fingerprint(i))]},
            "resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "dev", "version": "v1"}
        }
    })
    .to_string()
}

/// Run the webhook in this process and offer `rate` reviews per second for `seconds` over
/// `connections` connections; requests pick records round-robin, so one in `revoke_every`
/// names a revoked certificate.
pub async fn run(
    records: usize,
    revoke_every: usize,
    rate: u32,
    seconds: u32,
    connections: usize,
) -> Result<WebhookRun> {
    let dir = tempfile_dir()?;
    let port = kcert_testbed::webhook::free_port()?;
    let files = kcert_testbed::webhook::WebhookFiles::create(&dir, port)?;

    let ledger = ledger(records, revoke_every);
    let started = Instant::now();
    let revoked = LedgerIndex::from_records(&ledger);
    let index_build_s = started.elapsed().as_secs_f64();
    let revoked_count = revoked.revoked();
    drop(ledger);
    let index = LedgerView::default();
    index.set(revoked);
    let server = authz_webhook::serve(
        WebhookSettings {
            addr: files.addr,
            cert: files.cert.clone(),
            key: files.key.clone(),
            strict: Strict::default(),
        },
        index,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let server = tokio::spawn(server);

    let connector = connector(&files.ca_cert)?;

    let total = (rate as usize) * (seconds as usize);
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now() + Duration::from_millis(200);
    let mut workers = Vec::new();
    for c in 0..connections {
        let connector = connector.clone();
        let addr = files.addr;
        workers.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let mut tls = connector.connect(name, tcp).await?;
            let mut out: Vec<(f64, f64, bool)> = Vec::new();
            let mut buf = Vec::with_capacity(8192);
            for i in (c..total).step_by(connections) {
                let due = start + interval * i as u32;
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                let body = review_body(i % records);
                let request = format!(
                    "POST /authorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                tls.write_all(request.as_bytes()).await?;
                let (status, reply) = read_response(&mut tls, &mut buf).await?;
                if !status.starts_with("HTTP/1.1 200") {
                    bail!("webhook answered {status}");
                }
                out.push((
                    sent.elapsed().as_secs_f64() * 1000.0,
                    due.elapsed().as_secs_f64() * 1000.0,
                    reply.contains("\"denied\":true"),
                ));
            }
            anyhow::Ok(out)
        }));
    }
    let mut millis = Vec::with_capacity(total);
    let mut scheduled_millis = Vec::with_capacity(total);
    let mut denied = 0;
    for w in workers {
        for (m, s, d) in w.await?? {
            millis.push(m);
            scheduled_millis.push(s);
            denied += usize::from(d);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    let expected_denied = (0..total)
        .filter(|i| (i % records).is_multiple_of(revoke_every))
        .count();
    Ok(WebhookRun {
        records,
        revoked: revoked_count,
        index_build_s,
        offered_per_s: total as f64 / elapsed,
        answered: millis.len(),
        denied,
        expected_denied,
        millis,
        scheduled_millis,
    })
}

/// A TLS client trusting the webhook's CA.
pub fn connector(ca_cert: &std::path::Path) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(ca_cert)?;
    for block in kcert_pki::pem::parse_blocks(&ca_pem)? {
        roots.add(rustls::pki_types::CertificateDer::from(block.der.to_vec()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// One review on a connection of its own: (status line, body).
pub async fn review_once(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
    body: &str,
) -> Result<(String, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await?;
    let request = format!(
        "POST /authorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await?;
    read_response(&mut tls, &mut Vec::new()).await
}

/// One HTTP/1.1 response with a Content-Length body: (status line, body).
async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<(String, String)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .context("no Content-Length")?;
            let whole = end + 4 + length;
            if buf.len() >= whole {
                let body = String::from_utf8_lossy(&buf[end + 4..whole]).to_string();
                buf.drain(..whole);
                return Ok((head.lines().next().unwrap_or("").to_string(), body));
            }
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("webhook closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("kcert-bench-webhook-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The line the benchmark prints for a run.
pub fn summary(r: &WebhookRun) -> String {
    format!(
        "webhook: {} records ({} revoked, index built in {:.2} s); offered {:.0}/s, {} answered; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (from the schedule: p50 {:.2}, p99 {:.2}); {} of {} revoked requests denied",
        r.records,
        r.revoked,
        r.index_build_s,
        r.offered_per_s,
        r.answered,
        percentile(&r.millis, 50.0),
        percentile(&r.millis, 99.0),
        percentile(&r.millis, 100.0),
        percentile(&r.scheduled_millis, 50.0),
        percentile(&r.scheduled_millis, 99.0),
        r.denied,
        r.expected_denied
    )
}
