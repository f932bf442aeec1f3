//! Signer throughput: pre-approved CSRs issued by kcert, by kube-controller-manager (default
//! and lifted client limits) and by a null signer (the API server's ceiling), with the CPU each
//! process spent per 1,000 certificates.

use crate::batch;
use crate::engines;
use crate::process::{CpuMeter, Running};
use crate::stats::Spread;
use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_testbed::TestCluster;
use kube::Api;
use kube::api::{ListParams, PostParams};
use std::time::{Duration, Instant, SystemTime};

pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// One way of issuing the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// kcert-controller as deployed for this signer, minus the ledger (kube-controller-manager
    /// keeps none): signer only, 16 concurrent reconciles.
    Kcert,
    /// The same with the ledger on (its default), timed until every certificate is also on
    /// record in the ledger.
    KcertLedger,
    /// The same (no ledger) publishing an Event per issued certificate (`--events=all`).
    KcertAllEvents,
    KcmDefault,
    KcmLifted,
    /// List the batch once, then PUT /status with one pre-made certificate, 16 in flight.
    Null,
}

impl Engine {
    pub const ALL: [Engine; 6] = [
        Engine::Kcert,
        Engine::KcertLedger,
        Engine::KcertAllEvents,
        Engine::KcmDefault,
        Engine::KcmLifted,
        Engine::Null,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Engine::Kcert => "kcert",
            Engine::KcertLedger => "kcert-ledger",
            Engine::KcertAllEvents => "kcert-events",
            Engine::KcmDefault => "kcm-default",
            Engine::KcmLifted => "kcm-lifted",
            Engine::Null => "null",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Engine::Kcert => "kcert-controller signer (16 reconciles, no ledger)",
            Engine::KcertLedger => {
                "kcert-controller signer with the ledger (default; timed until all are on record)"
            }
            Engine::KcertAllEvents => "kcert-controller signer, `--events=all` (an Event each)",
            Engine::KcmDefault => {
                "kube-controller-manager csrsigning, default client limits (qps 20, burst 30)"
            }
            Engine::KcmLifted => "kube-controller-manager csrsigning, qps 1000, burst 2000",
            Engine::Null => "ceiling: null signer (one list, then PUT /status; 16 in flight)",
        }
    }
}

/// Repeated measurements of one engine.
#[derive(Debug, Default, Clone)]
pub struct Measured {
    /// CSRs per second, one per run.
    pub rates: Vec<f64>,
    /// CPU seconds per 1,000 CSRs per run: (API server, etcd, the engine's process).
    pub cpu: Vec<(f64, f64, f64)>,
}

impl Measured {
    pub fn rate(&self) -> Spread {
        Spread::of(&self.rates)
    }

    pub fn cpu_median(&self) -> (f64, f64, f64) {
        let pick = |f: fn(&(f64, f64, f64)) -> f64| {
            Spread::of(&self.cpu.iter().map(f).collect::<Vec<_>>()).median
        };
        (pick(|c| c.0), pick(|c| c.1), pick(|c| c.2))
    }
}

/// Issue one batch of `n` with `engine`; returns (CSRs/s, CPU per 1,000 CSRs).
pub async fn measure(
    cluster: &TestCluster,
    api: &Api<CertificateSigningRequest>,
    engine: Engine,
    batch_name: &str,
    n: usize,
) -> Result<(f64, (f64, f64, f64))> {
    let signer = if engine == Engine::Null {
        "bench.kcert.dev/null"
    } else {
        CLIENT_SIGNER
    };
    batch::create(api, batch_name, n, signer, true).await?;
    // Let the API server and etcd settle after the burst of creates.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (apiserver, etcd) = cluster.pids();
    let limit = Duration::from_secs(1800);
    let no_ledger = ["--controllers=signer", "--signer-name", CLIENT_SIGNER];
    let (elapsed, cpu) = match engine {
        Engine::Null => {
            let meter = CpuMeter::start(&[
                ("apiserver", apiserver),
                ("etcd", etcd),
                ("engine", std::process::id()),
            ]);
            // Timed like the engines: until the same watch of the batch has seen every
            // certificate, so the ceiling bears the observer's cost too.
            let (signed, seen) = tokio::join!(
                null_signer(cluster, api, batch_name),
                batch::wait_issued(api, batch_name, n, limit)
            );
            signed?;
            (seen?, meter.stop())
        }
        _ => {
            let metrics: std::net::SocketAddr =
                format!("127.0.0.1:{}", kcert_testbed::webhook::free_port()?).parse()?;
            let metrics_flag = format!("--metrics-addr={metrics}");
            let child: Running = match engine {
                Engine::Kcert => {
                    engines::kcert(cluster, &[&no_ledger[..], &["--ledger=false"]].concat())?
                }
                Engine::KcertLedger => engines::kcert(
                    cluster,
                    &[&no_ledger[..], &["--ledger=true", &metrics_flag]].concat(),
                )?,
                Engine::KcertAllEvents => engines::kcert(
                    cluster,
                    &[&no_ledger[..], &["--ledger=false", "--events=all"]].concat(),
                )?,
                Engine::KcmDefault => engines::kcm(cluster, None)?,
                Engine::KcmLifted => engines::kcm(cluster, Some((1000, 2000)))?,
                Engine::Null => unreachable!(),
            };
            let meter = CpuMeter::start(&[
                ("apiserver", apiserver),
                ("etcd", etcd),
                ("engine", child.pid()),
            ]);
            let elapsed = if engine == Engine::KcertLedger {
                // Issued and on record, whichever comes last.
                let (issued, recorded) = tokio::join!(
                    batch::wait_issued(api, batch_name, n, limit),
                    batch::wait_recorded(metrics, n, limit)
                );
                let (issued, recorded) = (issued?, recorded?);
                let m = batch::metrics(metrics).await;
                let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
                let writes = get("kcert_ledger_page_writes_total");
                eprintln!(
                    "  ledger: issued in {:.2} s, all on record {:.2} s after the start; {writes} page writes ({:.0} records each, {:.1} ms each)",
                    issued.as_secs_f64(),
                    recorded.as_secs_f64(),
                    get("kcert_ledger_records_written_total") / writes,
                    get("kcert_ledger_write_duration_seconds_sum") * 1000.0 / writes
                );
                issued.max(recorded)
            } else {
                batch::wait_issued(api, batch_name, n, limit).await?
            };
            let cpu = meter.stop();
            drop(child);
            (elapsed, cpu)
        }
    };
    batch::delete(api, batch_name).await?;
    let per_k = |i: usize| cpu[i].1 * 1000.0 / n as f64;
    Ok((
        n as f64 / elapsed.as_secs_f64(),
        (per_k(0), per_k(1), per_k(2)),
    ))
}

/// The least a signer must do: one `/status` write per CSR, from one list.
async fn null_signer(
    cluster: &TestCluster,
    api: &Api<CertificateSigningRequest>,
    batch_name: &str,
) -> Result<Duration> {
    let ca = cluster.ca();
    let request = batch::request_pem("null", "bench");
    let cert = ca
        .sign(
            &kcert_pki::CertificateRequest::from_pem(&request)?,
            &kcert_pki::SigningProfile::client(Duration::from_secs(3600)),
            SystemTime::now(),
            &kcert_pki::SystemRandom,
        )?
        .to_pem()
        .into_bytes();
    let started = Instant::now();
    let list = api
        .list(&ListParams::default().labels(&format!("{}={batch_name}", batch::LABEL)))
        .await?;
    futures::stream::iter(list.items)
        .map(|mut csr| {
            let cert = cert.clone();
            async move {
                let name = csr.metadata.name.clone().unwrap_or_default();
                csr.status.get_or_insert_with(Default::default).certificate =
                    Some(ByteString(cert));
                api.replace_status(&name, &PostParams::default(), &csr)
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(started.elapsed())
}
