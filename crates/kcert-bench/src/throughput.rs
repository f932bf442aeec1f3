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
use std::cell::OnceCell;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use tokio::process::Child;

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
    /// The same (no ledger) with the CA key in a SoftHSM2 token (PKCS#11), of the cluster CA's
    /// key type.
    KcertToken,
    KcmDefault,
    KcmLifted,
    /// List the batch once, then PUT /status with one pre-made certificate, 16 in flight.
    Null,
}

impl Engine {
    pub const ALL: [Engine; 7] = [
        Engine::Kcert,
        Engine::KcertLedger,
        Engine::KcertAllEvents,
        Engine::KcertToken,
        Engine::KcmDefault,
        Engine::KcmLifted,
        Engine::Null,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Engine::Kcert => "kcert",
            Engine::KcertLedger => "kcert-ledger",
            Engine::KcertAllEvents => "kcert-events",
            Engine::KcertToken => "kcert-token",
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
            Engine::KcertToken => {
                "kcert-controller signer, CA key in SoftHSM2 (PKCS#11; no ledger)"
            }
            Engine::KcmDefault => {
                "kube-controller-manager csrsigning, default client limits (qps 20, burst 30)"
            }
            Engine::KcmLifted => "kube-controller-manager csrsigning, qps 1000, burst 2000",
            Engine::Null => "ceiling: null signer (one list, then PUT /status; 16 in flight)",
        }
    }
}

/// CPU seconds by process: (API server, etcd, the engine's process).
pub type Cpu = (f64, f64, f64);

/// One batch issued by one engine.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// CSRs per second while issuing: from the first certificate seen to the last (and, with
    /// the ledger, to the last record), so the engine's start-up is not in it.
    pub rate: f64,
    /// CPU seconds per 1,000 CSRs over the same window.
    pub cpu: Cpu,
    /// CSRs per second from the engine's start, start-up included.
    pub overall_rate: f64,
    /// The engine's start to its first certificate: seconds, and the CPU seconds spent in it.
    pub startup: (f64, Cpu),
}

/// Repeated measurements of one engine.
#[derive(Debug, Default, Clone)]
pub struct Measured {
    /// CSRs per second while issuing, one per run.
    pub rates: Vec<f64>,
    /// CPU seconds per 1,000 CSRs while issuing, per run.
    pub cpu: Vec<Cpu>,
    /// CSRs per second from the engine's start, per run.
    pub overall_rates: Vec<f64>,
    /// Start-up per run: seconds to the first certificate, CPU seconds before it.
    pub startups: Vec<(f64, Cpu)>,
}

impl Measured {
    pub fn push(&mut self, run: Run) {
        self.rates.push(run.rate);
        self.cpu.push(run.cpu);
        self.overall_rates.push(run.overall_rate);
        self.startups.push(run.startup);
    }

    pub fn overall_rate(&self) -> Spread {
        Spread::of(&self.overall_rates)
    }

    /// Medians of the start-up: (seconds to the first certificate, API-server CPU seconds,
    /// the engine's CPU seconds).
    pub fn startup_median(&self) -> (f64, f64, f64) {
        let pick = |f: fn(&(f64, Cpu)) -> f64| {
            Spread::of(&self.startups.iter().map(f).collect::<Vec<_>>()).median
        };
        (pick(|s| s.0), pick(|s| s.1.0), pick(|s| s.1.2))
    }

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

/// Where and for how long kube-apiserver is profiled during a measurement.
#[derive(Debug, Clone)]
pub struct Profile {
    pub dir: PathBuf,
    pub seconds: u32,
}

impl Profile {
    pub fn path(&self, batch_name: &str) -> PathBuf {
        self.dir.join(format!("{batch_name}.pb.gz"))
    }

    /// Starts a CPU profile of the API server (the test bed's kubectl, admin credentials);
    /// the returned child writes it when the window ends.
    fn start(&self, cluster: &TestCluster, batch_name: &str) -> Result<Child> {
        let out = std::fs::File::create(self.path(batch_name))?;
        let mut cmd = cluster.kubectl();
        cmd.args([
            "get",
            "--raw",
            &format!("/debug/pprof/profile?seconds={}", self.seconds),
        ])
        .stdout(out);
        Ok(tokio::process::Command::from(cmd).spawn()?)
    }
}

/// Issue one batch of `n` with `engine`.
pub async fn measure(
    cluster: &TestCluster,
    api: &Api<CertificateSigningRequest>,
    engine: Engine,
    batch_name: &str,
    n: usize,
) -> Result<Run> {
    measure_with(cluster, api, engine, batch_name, n, None).await
}

/// [`measure`], with kube-apiserver profiled from the moment the engine starts.
pub async fn measure_profiled(
    cluster: &TestCluster,
    api: &Api<CertificateSigningRequest>,
    engine: Engine,
    batch_name: &str,
    n: usize,
    profile: &Profile,
) -> Result<Run> {
    measure_with(cluster, api, engine, batch_name, n, Some(profile)).await
}

async fn measure_with(
    cluster: &TestCluster,
    api: &Api<CertificateSigningRequest>,
    engine: Engine,
    batch_name: &str,
    n: usize,
    profile: Option<&Profile>,
) -> Result<Run> {
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
    let mut profiling = None;
    let (first, elapsed, at_first, cpu) = match engine {
        Engine::Null => {
            if let Some(p) = profile {
                profiling = Some(p.start(cluster, batch_name)?);
            }
            let meter = CpuMeter::start(&[
                ("apiserver", apiserver),
                ("etcd", etcd),
                ("engine", std::process::id()),
            ]);
            // Timed like the engines: until the same watch of the batch has seen every
            // certificate, so the ceiling bears the observer's cost too.
            let at_first = OnceCell::new();
            let (signed, seen) = tokio::join!(
                null_signer(cluster, api, batch_name),
                batch::wait_issued_timed(api, batch_name, n, limit, || {
                    let _ = at_first.set(meter.stop());
                })
            );
            signed?;
            let seen = seen?;
            (seen.first, seen.all, at_first.into_inner(), meter.stop())
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
                Engine::KcertToken => {
                    engines::kcert_token(cluster, &[&no_ledger[..], &["--ledger=false"]].concat())?
                }
                Engine::KcmDefault => engines::kcm(cluster, None)?,
                Engine::KcmLifted => engines::kcm(cluster, Some((1000, 2000)))?,
                Engine::Null => unreachable!(),
            };
            if let Some(p) = profile {
                profiling = Some(p.start(cluster, batch_name)?);
            }
            let meter = CpuMeter::start(&[
                ("apiserver", apiserver),
                ("etcd", etcd),
                ("engine", child.pid()),
            ]);
            let at_first = OnceCell::new();
            let on_first = || {
                let _ = at_first.set(meter.stop());
            };
            let (first, elapsed) = if engine == Engine::KcertLedger {
                // Issued and on record, whichever comes last.
                let (issued, recorded) = tokio::join!(
                    batch::wait_issued_timed(api, batch_name, n, limit, on_first),
                    batch::wait_recorded(metrics, n, limit)
                );
                let (issued, recorded) = (issued?, recorded?);
                let m = batch::metrics(metrics).await;
                let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
                let writes = get("kcert_ledger_page_writes_total");
                eprintln!(
                    "  ledger: issued in {:.2} s, all on record {:.2} s after the start; {writes} page writes ({:.0} records each, {:.1} ms each)",
                    issued.all.as_secs_f64(),
                    recorded.as_secs_f64(),
                    get("kcert_ledger_records_written_total") / writes,
                    get("kcert_ledger_write_duration_seconds_sum") * 1000.0 / writes
                );
                (issued.first, issued.all.max(recorded))
            } else {
                let issued = batch::wait_issued_timed(api, batch_name, n, limit, on_first).await?;
                (issued.first, issued.all)
            };
            let cpu = meter.stop();
            drop(child);
            (first, elapsed, at_first.into_inner(), cpu)
        }
    };
    if let Some(mut child) = profiling {
        let status = child.wait().await?;
        anyhow::ensure!(
            status.success(),
            "kubectl get --raw /debug/pprof/profile exited with {status} (is --profiling on?)"
        );
    }
    batch::delete(api, batch_name).await?;
    // The meter's readings are (apiserver, etcd, engine) in that order.
    let before = at_first.unwrap_or_else(|| cpu.clone());
    let startup_cpu = (before[0].1, before[1].1, before[2].1);
    // Certificates after the first, over the time after it.
    let issuing = (elapsed.saturating_sub(first)).as_secs_f64();
    let after = n.saturating_sub(1).max(1) as f64;
    let per_k = |i: usize| (cpu[i].1 - before[i].1) * 1000.0 / after;
    Ok(Run {
        rate: if issuing > 0.0 {
            after / issuing
        } else {
            f64::NAN
        },
        cpu: (per_k(0), per_k(1), per_k(2)),
        overall_rate: n as f64 / elapsed.as_secs_f64(),
        startup: (first.as_secs_f64(), startup_cpu),
    })
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
