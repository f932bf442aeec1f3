//! `kcert-bench all [--csrs N] [--runs R]`: signer throughput of kcert and of
//! kube-controller-manager's csrsigning (default client limits and lifted) on the same API
//! server build and CA, the API server's ceiling for /status writes, and controller memory.
//! Prints a table and writes docs/benchmarks.md. Not part of the test suite.
//!
//! Build the controller binary first for the memory figure:
//! `cargo build --release -p kcert-controller && cargo run --release -p kcert-bench -- all`

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_pki::{CsrSubject, KeyType, PrivateKey, SubjectAltNames, build_csr};
use kcert_testbed::TestCluster;
use kube::Api;
use kube::api::{ListParams, PostParams};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

struct Args {
    csrs: usize,
    runs: usize,
    memory_csrs: usize,
    write_docs: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        csrs: 2000,
        runs: 3,
        memory_csrs: 10_000,
        write_docs: true,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) != Some("all") {
        bail!("usage: kcert-bench all [--csrs N] [--runs R] [--memory-csrs N] [--no-docs]");
    }
    let mut it = argv.iter().skip(1);
    while let Some(f) = it.next() {
        let mut num = |name: &str| -> Result<usize> {
            it.next()
                .with_context(|| format!("{name} needs a number"))?
                .parse()
                .context(name.to_string())
        };
        match f.as_str() {
            "--csrs" => a.csrs = num("--csrs")?,
            "--runs" => a.runs = num("--runs")?,
            "--memory-csrs" => a.memory_csrs = num("--memory-csrs")?,
            "--no-docs" => a.write_docs = false,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// One request body reused for every CSR: the API server validates each anyway, and signing
/// cost does not depend on which key is certified.
fn request_pem() -> Vec<u8> {
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    build_csr(
        &key,
        &CsrSubject::new("bench-user", ["bench"]).unwrap(),
        &SubjectAltNames::default(),
    )
    .unwrap()
    .into_bytes()
}

async fn create_batch(
    api: &Api<CertificateSigningRequest>,
    prefix: &str,
    n: usize,
    signer: &str,
    approve: bool,
) -> Result<Vec<String>> {
    let request = request_pem();
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    futures::stream::iter(names.clone())
        .map(|name| {
            let api = api.clone();
            let request = request.clone();
            let prefix = prefix.to_string();
            async move {
                let mut csr = kcert_tests::csr_from_pem(&name, signer, request, None);
                csr.metadata.labels = Some([("kcert-bench/batch".to_string(), prefix)].into());
                let mut created = api.create(&PostParams::default(), &csr).await?;
                if approve {
                    created
                        .status
                        .get_or_insert_with(Default::default)
                        .conditions = Some(vec![kcert_controller::conditions::condition(
                        "Approved",
                        "Bench",
                        "pre-approved",
                    )]);
                    api.replace_subresource("approval", &name, &PostParams::default(), &created)
                        .await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(names)
}

async fn wait_issued(
    api: &Api<CertificateSigningRequest>,
    prefix: &str,
    n: usize,
    limit: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    // Only this batch, and not too often: listing thousands of CSRs every few milliseconds
    // would load the API server the signers share and skew the comparison with the ceiling.
    let lp = ListParams::default().labels(&format!("kcert-bench/batch={prefix}"));
    loop {
        let list = api.list(&lp).await?;
        let done = list
            .items
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.certificate.as_ref())
                    .is_some()
            })
            .count();
        if done >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("only {done} of {n} issued after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn kcm(cluster: &TestCluster, qps: Option<(u32, u32)>) -> Result<std::process::Child> {
    let bin = cluster
        .binaries()
        .kube_controller_manager
        .clone()
        .context("kube-controller-manager was not built (KUBEBUILDER_ASSETS lacks it?)")?;
    let mut cmd = Command::new(bin);
    cmd.arg(format!(
        "--kubeconfig={}",
        cluster.admin_kubeconfig_path().display()
    ))
    .args([
        "--controllers=csrsigning",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
    ])
    .arg(format!(
        "--cluster-signing-cert-file={}",
        cluster.ca_cert_path().display()
    ))
    .arg(format!(
        "--cluster-signing-key-file={}",
        cluster.ca_key_path().display()
    ))
    .arg("--cluster-signing-duration=24h");
    if let Some((q, b)) = qps {
        cmd.arg(format!("--kube-api-qps={q}"))
            .arg(format!("--kube-api-burst={b}"));
    }
    Ok(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?)
}

fn kcert_settings(cluster: &TestCluster) -> Settings {
    Settings {
        signer_names: vec![CLIENT_SIGNER.into()],
        approver: false,
        signer: true,
        policy: PolicySource::Static(Default::default()),
        ca: Some(CaSource::Files {
            cert: cluster.ca_cert_path(),
            key: cluster.ca_key_path(),
        }),
        concurrency: 16,
        ..Settings::default()
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn median(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let cluster = TestCluster::start().await?;
    let api: Api<CertificateSigningRequest> = Api::all(cluster.admin_client().await?);
    let n = args.csrs;
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let limit = Duration::from_secs(1800);

    // 1. Signer throughput: kcert, kcm with its defaults, kcm with client limits lifted.
    for run in 0..args.runs {
        for engine in ["kcert", "kcm-default", "kcm-lifted"] {
            let prefix = format!("{engine}-{run}");
            create_batch(&api, &prefix, n, CLIENT_SIGNER, true).await?;
            let elapsed = match engine {
                "kcert" => {
                    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                    let client = cluster.admin_client().await?;
                    let settings = kcert_settings(&cluster);
                    let task = tokio::spawn(async move {
                        let _ = kcert_controller::run(client, settings, async {
                            let _ = rx.await;
                        })
                        .await;
                    });
                    let t = wait_issued(&api, &prefix, n, limit).await?;
                    let _ = tx.send(());
                    task.abort();
                    t
                }
                _ => {
                    let mut child =
                        kcm(&cluster, (engine == "kcm-lifted").then_some((1000, 2000)))?;
                    let t = wait_issued(&api, &prefix, n, limit).await;
                    let _ = child.kill();
                    let _ = child.wait();
                    t?
                }
            };
            let rate = n as f64 / elapsed.as_secs_f64();
            eprintln!(
                "run {run}: {engine}: {n} CSRs in {:.2}s = {rate:.0}/s",
                elapsed.as_secs_f64()
            );
            match rows.iter_mut().find(|(k, _)| k == engine) {
                Some((_, v)) => v.push(rate),
                None => rows.push((engine.to_string(), vec![rate])),
            }
        }
        // 2. Ceiling: the same number of /status writes of a pre-made certificate.
        let prefix = format!("null-{run}");
        let names = create_batch(&api, &prefix, n, "bench.kcert.dev/null", true).await?;
        let ca = cluster.ca();
        let key = PrivateKey::generate(KeyType::EcdsaP256)?;
        let pem = build_csr(
            &key,
            &CsrSubject::new("null", ["bench"])?,
            &Default::default(),
        )?;
        let cert = ca
            .sign(
                &kcert_pki::CertificateRequest::from_pem(pem.as_bytes())?,
                &kcert_pki::SigningProfile::client(Duration::from_secs(3600)),
                std::time::SystemTime::now(),
                &kcert_pki::SystemRandom,
            )?
            .to_pem();
        let started = Instant::now();
        futures::stream::iter(names)
            .map(|name| {
                let api = api.clone();
                let cert = cert.clone();
                async move {
                    let mut csr = api.get(&name).await?;
                    csr.status.get_or_insert_with(Default::default).certificate =
                        Some(ByteString(cert.into_bytes()));
                    api.replace_status(&name, &PostParams::default(), &csr)
                        .await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let rate = n as f64 / started.elapsed().as_secs_f64();
        eprintln!("run {run}: null signer (get + PUT /status): {rate:.0}/s");
        match rows.iter_mut().find(|(k, _)| k == "null") {
            Some((_, v)) => v.push(rate),
            None => rows.push(("null".into(), vec![rate])),
        }
    }

    // 3. Memory with many CSRs in the watch cache (pending, for the signer both watch).
    let mut memory: Vec<(String, Option<u64>)> = Vec::new();
    if args.memory_csrs > 0 {
        create_batch(&api, "mem", args.memory_csrs, CLIENT_SIGNER, false).await?;
        let exe = std::env::current_exe()?.with_file_name("kcert-controller");
        if exe.is_file() {
            let mut child = Command::new(&exe)
                .arg(format!(
                    "--kubeconfig={}",
                    cluster.admin_kubeconfig_path().display()
                ))
                .args([
                    "--controllers=signer",
                    "--signer-name",
                    CLIENT_SIGNER,
                    "--metrics-addr=off",
                    "--ledger=false",
                    "--cleaner=false",
                ])
                .arg(format!("--ca-cert={}", cluster.ca_cert_path().display()))
                .arg(format!("--ca-key={}", cluster.ca_key_path().display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            tokio::time::sleep(Duration::from_secs(8)).await;
            memory.push(("kcert-controller".into(), rss_kib(child.id())));
            let _ = child.kill();
            let _ = child.wait();
        } else {
            eprintln!(
                "no {} (cargo build --release -p kcert-controller): skipping its memory",
                exe.display()
            );
            memory.push(("kcert-controller".into(), None));
        }
        let mut child = kcm(&cluster, Some((1000, 2000)))?;
        tokio::time::sleep(Duration::from_secs(8)).await;
        memory.push((
            "kube-controller-manager (csrsigning)".into(),
            rss_kib(child.id()),
        ));
        let _ = child.kill();
        let _ = child.wait();
    }

    let stat = |k: &str| {
        rows.iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| median(&mut v.clone()))
            .unwrap_or((0.0, 0.0, 0.0))
    };
    let (kcert, kcert_lo, kcert_hi) = stat("kcert");
    let (kd, kd_lo, kd_hi) = stat("kcm-default");
    let (kl, kl_lo, kl_hi) = stat("kcm-lifted");
    let (null, null_lo, null_hi) = stat("null");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|k| k / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let fmt_mem = |v: &Option<u64>| {
        v.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    };
    let mem_ratio = match (
        memory.first().and_then(|m| m.1),
        memory.get(1).and_then(|m| m.1),
    ) {
        (Some(a), Some(b)) => format!("{:.2}", a as f64 / b as f64),
        _ => "n/a".into(),
    };
    let table = format!(
        "| measurement | result (median of {runs}; min–max) | ratio |\n|---|---|---|\n\
| kcert signer, {n} pre-approved CSRs | {kcert:.0} CSRs/s ({kcert_lo:.0}–{kcert_hi:.0}) | |\n\
| kube-controller-manager csrsigning, default client limits (qps 20, burst 30) | {kd:.0} CSRs/s ({kd_lo:.0}–{kd_hi:.0}) | kcert {:.1}× |\n\
| kube-controller-manager csrsigning, qps 1000, burst 2000 | {kl:.0} CSRs/s ({kl_lo:.0}–{kl_hi:.0}) | kcert {:.2}× (goal ≥ 1.2×) |\n\
| ceiling: null signer (get + PUT /status, 16 in flight) | {null:.0} writes/s ({null_lo:.0}–{null_hi:.0}) | kcert at {:.2} of it (goal ≥ 0.8) |\n\
| RSS with {} CSRs cached: kcert-controller | {} | |\n\
| RSS with the same CSRs: kube-controller-manager (csrsigning only) | {} | kcert {mem_ratio}× (goal ≤ 0.5×) |\n",
        kcert / kd,
        kcert / kl,
        kcert / null,
        args.memory_csrs,
        fmt_mem(&memory.first().and_then(|m| m.1)),
        fmt_mem(&memory.get(1).and_then(|m| m.1)),
        runs = args.runs,
    );
    println!("{table}");
    if args.write_docs {
        let doc = format!(
            "# Benchmarks\n\nGenerated by `cargo build --release -p kcert-controller && cargo run --release -p kcert-bench -- all --csrs {n} --runs {}`.\n\
Machine: {cpu}, {cores} cores, {mem_gib:.0} GiB; one kube-apiserver {} + etcd {} from the test bed (loopback, etcd without fsync).\n\
Everything in one run on the same API server and CA (RSA 2048); figures are ratios within that run, since these machines are noisy.\n\n\
{table}\n\
How each is measured:\n\n\
- **Signer throughput:** {n} CSRs for `{CLIENT_SIGNER}` are created and approved first; then the signer starts and the clock runs until every one has a certificate (the batch polled by label every 250 ms). kcert runs in-process with 16 concurrent reconciles; kube-controller-manager runs as `--controllers=csrsigning` with the same CA files, first with its default client limits, then with `--kube-api-qps=1000 --kube-api-burst=2000`, so the last row compares engine with engine.\n\
- **Ceiling:** the same number of `/status` writes of one pre-made certificate (GET then PUT, 16 in flight): what the API server allows any signer.\n\
- **Memory:** {} pending CSRs of that signer in the cache of each controller, VmRSS 8 s after start.\n\n\
Not measured yet (issue 9 remains open for them): create-to-issued latency at 50 CSR/s with its plot, onboarding time of `kcert request` against the seeds' manual flow, and a profile of the controller under load.\n",
            args.runs,
            kcert_testbed::KUBERNETES_VERSION,
            kcert_testbed::ETCD_VERSION,
            args.memory_csrs,
        );
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md");
        std::fs::write(&path, doc)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
