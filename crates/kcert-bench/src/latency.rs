//! Create → issued latency through the whole pipeline (kcert approves and signs) at a steady
//! offered rate, next to the bare create → watch-event round trip on the same API server.

use crate::batch;
use crate::engines;
use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_testbed::TestCluster;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latencies of one open-loop run, in milliseconds, and how many never arrived.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    pub millis: Vec<f64>,
    pub missing: usize,
    /// Creates per second actually sent.
    pub offered: f64,
    /// CPU seconds kcert-controller used over the run (the pipeline only).
    pub controller_cpu: Option<f64>,
}

impl Samples {
    /// kcert-controller's CPU per certificate issued in the run, in ms (NaN without one).
    pub fn cpu_ms_per_certificate(&self) -> f64 {
        match self.controller_cpu {
            Some(s) if !self.millis.is_empty() => s * 1000.0 / self.millis.len() as f64,
            _ => f64::NAN,
        }
    }
}

/// Every `1/rate` s for `seconds` (on schedule, whatever the responses do) do `send` with a
/// new CSR, and time each from just before to the first watch event where `arrived` holds.
async fn open_loop<F, Fut>(
    api: &Api<CertificateSigningRequest>,
    batch_name: &str,
    signer: &str,
    rate: u32,
    seconds: u32,
    arrived: fn(&CertificateSigningRequest) -> bool,
    send: F,
) -> Result<Samples>
where
    F: Fn(Api<CertificateSigningRequest>, CertificateSigningRequest) -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>> + Send + 'static,
{
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let observer = {
        let (api, seen) = (api.clone(), seen.clone());
        let config = watcher::Config::default().labels(&format!("{}={batch_name}", batch::LABEL));
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(api, config));
            let mut ready_tx = Some(ready_tx);
            while let Some(event) = events.next().await {
                let now = Instant::now();
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(csr) | watcher::Event::InitApply(csr))
                        if arrived(&csr) =>
                    {
                        let name = csr.metadata.name.unwrap_or_default();
                        seen.lock().unwrap().entry(name).or_insert(now);
                    }
                    _ => {}
                }
            }
        })
    };
    ready_rx.await?;
    let total = (rate * seconds) as usize;
    let request = batch::request_pem("bench-user", "bench");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = HashMap::new();
    let mut creates = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let name = format!("{batch_name}-{i}");
        let csr = batch::object(&name, batch_name, signer, &request);
        sent.insert(name, Instant::now());
        creates.spawn(send(api.clone(), csr));
    }
    let offered = total as f64 / started.elapsed().as_secs_f64();
    while let Some(r) = creates.join_next().await {
        r??;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    observer.abort();
    let seen = seen.lock().unwrap();
    let mut samples = Samples {
        offered,
        ..Samples::default()
    };
    let mut timeline = String::from("sent_ms,latency_ms\n");
    for (name, t0) in &sent {
        match seen.get(name) {
            Some(t) => {
                let ms = t.duration_since(*t0).as_secs_f64() * 1000.0;
                samples.millis.push(ms);
                let at = t0.duration_since(started).as_secs_f64() * 1000.0;
                timeline.push_str(&format!("{at:.1},{ms:.2}\n"));
            }
            None => samples.missing += 1,
        }
    }
    // For finding where a tail comes from: each CSR's send time and latency.
    if let Some(dir) = std::env::var_os("KCERT_BENCH_TIMELINE_DIR") {
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{batch_name}.csv")),
            timeline,
        )?;
    }
    Ok(samples)
}

/// Just create the CSR.
async fn create(
    api: Api<CertificateSigningRequest>,
    csr: CertificateSigningRequest,
) -> Result<(), kube::Error> {
    api.create(&PostParams::default(), &csr).await.map(|_| ())
}

/// The floor of any approve-and-sign pipeline on this server: the creating client itself
/// writes the approval and then a pre-made certificate, back to back (three writes, no watch
/// hop, no policy, no signing); timed until the watch shows the certificate.
pub async fn floor(
    cluster: &TestCluster,
    api: &Api<CertificateSigningRequest>,
    batch_name: &str,
    rate: u32,
    seconds: u32,
) -> Result<Samples> {
    let request = batch::request_pem("bench-user", "bench");
    let cert = cluster
        .ca()
        .sign(
            &kcert_pki::CertificateRequest::from_pem(&request)?,
            &kcert_pki::SigningProfile::client(Duration::from_secs(3600)),
            std::time::SystemTime::now(),
            &kcert_pki::SystemRandom,
        )?
        .to_pem()
        .into_bytes();
    let s = open_loop(
        api,
        batch_name,
        "bench.kcert.dev/floor",
        rate,
        seconds,
        batch::has_certificate,
        move |api, csr| {
            let cert = cert.clone();
            async move {
                let name = csr.metadata.name.clone().unwrap_or_default();
                let mut created = api.create(&PostParams::default(), &csr).await?;
                created
                    .status
                    .get_or_insert_with(Default::default)
                    .conditions = Some(vec![kcert_controller::conditions::condition(
                    "Approved", "Bench", "floor",
                )]);
                let mut approved = api
                    .replace_subresource("approval", &name, &PostParams::default(), &created)
                    .await?;
                approved
                    .status
                    .get_or_insert_with(Default::default)
                    .certificate = Some(k8s_openapi::ByteString(cert));
                api.replace_status(&name, &PostParams::default(), &approved)
                    .await?;
                Ok(())
            }
        },
    )
    .await?;
    batch::delete(api, batch_name).await?;
    Ok(s)
}

/// The bare round trip: CSRs for a signer nobody serves, timed until the watch shows them.
pub async fn round_trip(
    api: &Api<CertificateSigningRequest>,
    batch_name: &str,
    rate: u32,
    seconds: u32,
) -> Result<Samples> {
    let s = open_loop(
        api,
        batch_name,
        "bench.kcert.dev/nobody",
        rate,
        seconds,
        |_| true,
        create,
    )
    .await?;
    batch::delete(api, batch_name).await?;
    Ok(s)
}

/// The pipeline: kcert-controller (approver and signer, production defaults but for the
/// cleaner and metrics server: ledger on, approval Events) approves by policy and signs;
/// timed until the watch shows the certificate.
pub async fn pipeline(
    cluster: &TestCluster,
    api: &Api<CertificateSigningRequest>,
    batch_name: &str,
    rate: u32,
    seconds: u32,
    extra_flags: &[String],
) -> Result<Samples> {
    let signer = format!("bench.kcert.dev/{batch_name}");
    let policy = cluster.dir().join(format!("{batch_name}-policy.yaml"));
    std::fs::write(
        &policy,
        format!(
            "rules:\n  - id: bench\n    signerNames: [\"{signer}\"]\n    requesters: {{groups: [\"system:masters\"]}}\n    commonName: {{exact: bench-user}}\n    groups: {{allowed: [bench]}}\n"
        ),
    )?;
    let mut flags = vec![
        "--signer-name".to_string(),
        signer.clone(),
        format!("--policy-file={}", policy.display()),
    ];
    flags.extend(extra_flags.iter().cloned());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _controller = engines::kcert(cluster, &flags)?;
    // Warm up the whole path, ledger included (the API server sets up a resource's storage on
    // first use): the figure is the steady state at the offered rate, not the first second.
    let warm = format!("{batch_name}-warmup");
    batch::create(api, &warm, 1, &signer, false).await?;
    batch::wait_issued(api, &warm, 1, Duration::from_secs(60)).await?;
    if !extra_flags.iter().any(|f| f == "--ledger=false") {
        wait_recorded(cluster, api, &format!("{warm}-0")).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let meter = crate::process::CpuMeter::start(&[("kcert-controller", _controller.pid())]);
    let mut s = open_loop(
        api,
        batch_name,
        &signer,
        rate,
        seconds,
        batch::has_certificate,
        create,
    )
    .await?;
    s.controller_cpu = meter.stop().first().map(|(_, cpu)| *cpu);
    if let Some(dir) = std::env::var_os("KCERT_BENCH_TIMELINE_DIR") {
        std::fs::copy(
            cluster.dir().join("kcert-controller.log"),
            std::path::Path::new(&dir).join(format!("{batch_name}-controller.log")),
        )?;
    }
    if s.millis.is_empty() {
        bail!("no certificate was issued in the latency run {batch_name}");
    }
    batch::delete(api, batch_name).await?;
    batch::delete(api, &warm).await?;
    Ok(s)
}

/// Wait until the ledger holds the certificate of CSR `name`.
async fn wait_recorded(
    cluster: &TestCluster,
    api: &Api<CertificateSigningRequest>,
    name: &str,
) -> Result<()> {
    let csr = api.get(name).await?;
    let pem = csr
        .status
        .and_then(|s| s.certificate)
        .map(|c| c.0)
        .unwrap_or_default();
    let serial = kcert_pki::CertificateInfo::from_pem_chain(&pem)?.serial;
    let client = cluster.admin_client().await?;
    for _ in 0..600 {
        if kcert_kube::ledger::find_serial(&client, &serial)
            .await?
            .is_some()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the warm-up certificate of {name} never reached the ledger")
}
