//! `kcert-bench`: kcert side by side with what users would otherwise run, on one test-bed
//! API server in one run — signer throughput against kube-controller-manager and the API
//! server's ceiling, create→issued latency against the bare watch round trip, controller
//! memory, and onboarding against the seeds' manual flow. Prints a table; `all` also rewrites
//! the generated part of docs/benchmarks.md and the latency plot. Not part of the test suite.
//!
//! `cargo build --release -p kcert-controller -p kcert && cargo run --release -p kcert-bench -- all`

mod batch;
mod engines;
mod gets;
mod latency;
mod ledger_encoding;
mod ledger_scale;
mod memory;
mod nodes;
mod onboarding;
mod plot;
mod process;
mod revocation;
mod scale;
mod stats;
mod throughput;
mod webhook;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_testbed::TestCluster;
use kube::Api;
use stats::{Spread, percentile};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use throughput::{Engine, Measured};

/// Benchmarks of kcert against kube-controller-manager, the API server's ceiling and the
/// seeds' manual onboarding flow, on a test-bed API server.
#[derive(Debug, Parser)]
#[command(name = "kcert-bench", max_term_width = 100)]
struct Args {
    /// What to measure.
    #[arg(value_enum, default_value_t = Part::All)]
    part: Part,
    /// Pre-approved CSRs per throughput measurement.
    #[arg(long, default_value_t = 2000)]
    csrs: usize,
    /// Repetitions of throughput, latency and memory (medians and spreads are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// CSRs per second offered in the latency runs.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Seconds each latency run lasts.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Pending CSRs in the cache for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    memory_csrs: usize,
    /// Seconds RSS is sampled (every 0.5 s) after each controller starts.
    #[arg(long, default_value_t = 30)]
    memory_seconds: u32,
    /// Onboardings of each kind.
    #[arg(long, default_value_t = 10)]
    onboardings: usize,
    /// Extra kcert-controller flag for the latency pipeline (repeat; for profiling variants).
    #[arg(long = "pipeline-flag", allow_hyphen_values = true)]
    pipeline_flags: Vec<String>,
    /// Ledger records in force for the webhook benchmark (one in 100 revoked).
    #[arg(long, default_value_t = 100_000)]
    webhook_records: usize,
    /// SubjectAccessReviews per second offered to the webhook.
    #[arg(long, default_value_t = 1000)]
    webhook_rate: u32,
    /// Seconds each webhook run lasts.
    #[arg(long, default_value_t = 20)]
    webhook_seconds: u32,
    /// Kept-alive connections the reviews are spread over.
    #[arg(long, default_value_t = 4)]
    webhook_connections: usize,
    /// Revocations measured by the `revocation` part.
    #[arg(long, default_value_t = 50)]
    revocations: usize,
    /// Concurrent clients in the `gets` part.
    #[arg(long, default_value_t = 16)]
    get_workers: usize,
    /// Seconds each `gets` round lasts.
    #[arg(long, default_value_t = 10)]
    get_seconds: u32,
    /// Ledger records for the `ledger` part's scale run (one in 10 revoked).
    #[arg(long, default_value_t = 100_000)]
    ledger_records: usize,
    /// Hollow nodes started together in the `nodes` part.
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Nodes in the cluster for the latency run at scale (with `--scale-bindings`; 0 and 0 skip
    /// it). kcert watches them there (`--kubelet-serving`).
    #[arg(long, default_value_t = 1000)]
    scale_nodes: usize,
    /// RBAC bindings in the cluster for the latency run at scale (nine in ten RoleBindings).
    #[arg(long, default_value_t = 1000)]
    scale_bindings: usize,
    /// Node status updates per second during the latency run at scale.
    #[arg(long, default_value_t = 10)]
    scale_node_updates: u32,
    /// Binding changes per second during the latency run at scale.
    #[arg(long, default_value_t = 1)]
    scale_binding_updates: u32,
    /// Where the `profile` part writes its profiles (one per engine and run).
    #[arg(long, default_value = "target/kcert-bench-profiles")]
    profile_dir: PathBuf,
    /// Seconds of each profile in the `profile` part, from the batch's first issue on; give
    /// `--csrs` enough for the batch to outlast it.
    #[arg(long, default_value_t = 3)]
    profile_seconds: u32,
    /// Do not rewrite docs/benchmarks.md and its plot (`all` rewrites them otherwise).
    #[arg(long)]
    no_docs: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    All,
    Throughput,
    Latency,
    Memory,
    Onboarding,
    /// The authorization webhook alone (no cluster): latency at a fixed rate with a large
    /// ledger in force. Not part of `all`.
    Webhook,
    /// `kcert revoke` to the revoked certificate's first 403 through the API server (its own
    /// test bed with kcert's AuthorizationConfiguration). Not part of `all`.
    Revocation,
    /// The ledger's cost: signer throughput with the ledger on against off (same run), then a
    /// ledger of `--ledger-records`: controller start-up and RSS, `kcert ledger --user`,
    /// `kcert revoke`. Not part of `all`.
    Ledger,
    /// An X.509 user's GET throughput through the API server with kcert's authorization
    /// webhook in the chain against without it, interleaved in one run. Not part of `all`.
    Gets,
    /// Kubelet client certificates for `--nodes` hollow nodes started together: CSR to
    /// decision and to certificate, kcert deciding against kube-controller-manager's
    /// csrapproving (each on its own bed), and kcert's cost per node decision. Not part of `all`.
    Nodes,
    /// kube-apiserver's CPU profile (pprof) while each engine of the ECDSA throughput
    /// measurement issues its batch, written to `--profile-dir` (`go tool pprof` reads them).
    /// Not part of `all`.
    Profile,
}

impl Part {
    fn includes(self, p: Part) -> bool {
        self == Part::All || self == p
    }
}

/// One latency run: (round trip, floor, pipeline).
type LatencyRun = (latency::Samples, latency::Samples, latency::Samples);

#[derive(Default)]
struct Report {
    throughput: Vec<(Engine, Measured)>,
    latency: Vec<LatencyRun>,
    /// Per run: (kcert-controller, kube-controller-manager).
    memory: Vec<(memory::Rss, memory::Rss)>,
    onboarding: Option<onboarding::Onboarding>,
    /// Throughput on a second cluster whose CA is ECDSA P-256 (signing costs ~1/30 of RSA).
    throughput_ecdsa: Vec<(Engine, Measured)>,
    /// Latency runs (floor, pipeline) in a cluster of `scale` Nodes and bindings.
    latency_scale: Vec<(latency::Samples, latency::Samples)>,
    scale: Option<scale::Population>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.part == Part::Webhook {
        for run in 0..args.runs {
            let r = webhook::run(
                args.webhook_records,
                10,
                args.webhook_rate,
                args.webhook_seconds,
                args.webhook_connections,
            )
            .await?;
            println!("run {run}: {}", webhook::summary(&r));
            anyhow::ensure!(
                r.denied == r.expected_denied,
                "the webhook denied {} requests naming revoked certificates, not {}",
                r.denied,
                r.expected_denied
            );
        }
        return Ok(());
    }
    if args.part == Part::Revocation {
        let seconds = revocation::run(args.revocations).await?;
        println!(
            "revocation: {} samples; first 403 after kcert revoke p50 {:.2} s, p99 {:.2} s, max {:.2} s (bound: unauthorizedTTL 2 s + the ledger watch)",
            seconds.len(),
            percentile(&seconds, 50.0),
            percentile(&seconds, 99.0),
            percentile(&seconds, 100.0)
        );
        return Ok(());
    }
    if args.part == Part::Ledger {
        return ledger_part(&args).await;
    }
    if args.part == Part::Profile {
        return profile_part(&args).await;
    }
    if args.part == Part::Nodes {
        return nodes_part(&args).await;
    }
    if args.part == Part::Gets {
        let g = gets::run(args.runs, args.get_workers, args.get_seconds).await?;
        let (on, off) = (Spread::of(&g.on), Spread::of(&g.off));
        let paired = paired_ratio(&g.on, &g.off);
        println!(
            "gets: {} rounds of {} s, {} clients of one X.509 user: webhook on {} GET/s, off {} GET/s; on/off: median of the rounds' ratios {} (ratio of medians {:.2}) {}",
            g.on.len(),
            g.seconds,
            g.workers,
            on.show(0),
            off.show(0),
            paired.show(2),
            ratio(on.median, off.median),
            met(paired.median >= 0.9, "≥ 0.9")
        );
        return Ok(());
    }
    let cluster = TestCluster::start().await?;
    kcert_tests::install_crds(&cluster).await;
    let api: Api<CertificateSigningRequest> = Api::all(cluster.admin_client().await?);
    let mut report = Report::default();

    if args.part.includes(Part::Throughput) {
        report.throughput = throughput_runs(&cluster, &api, &Engine::ALL, &args, "").await?;
    }
    if args.part.includes(Part::Latency) {
        for run in 0..args.runs {
            let base =
                latency::round_trip(&api, &format!("rt-{run}"), args.rate, args.seconds).await?;
            let floor = latency::floor(
                &cluster,
                &api,
                &format!("floor-{run}"),
                args.rate,
                args.seconds,
            )
            .await?;
            let pipe = latency::pipeline(
                &cluster,
                &api,
                &format!("lat-{run}"),
                args.rate,
                args.seconds,
                &args.pipeline_flags,
            )
            .await?;
            eprintln!(
                "run {run}: offered {:.1}/s and {:.1}/s; round trip p50 {:.1} ms p99 {:.1} ms; floor p50 {:.1} ms p99 {:.1} ms; pipeline p50 {:.1} ms p99 {:.1} ms ({} missing)",
                base.offered,
                pipe.offered,
                percentile(&base.millis, 50.0),
                percentile(&base.millis, 99.0),
                percentile(&floor.millis, 50.0),
                percentile(&floor.millis, 99.0),
                percentile(&pipe.millis, 50.0),
                percentile(&pipe.millis, 99.0),
                pipe.missing
            );
            report.latency.push((base, floor, pipe));
        }
    }
    if args.part.includes(Part::Memory) && args.memory_csrs > 0 {
        batch::create(
            &api,
            "mem",
            args.memory_csrs,
            throughput::CLIENT_SIGNER,
            false,
        )
        .await?;
        for run in 0..args.runs {
            let k = memory::kcert(&cluster, throughput::CLIENT_SIGNER, args.memory_seconds).await?;
            let m = memory::kcm(&cluster, args.memory_seconds).await?;
            eprintln!(
                "run {run}: RSS kcert peak {:.1} settled {:.1} MiB; kcm peak {:.1} settled {:.1} MiB",
                k.peak(),
                k.settled(),
                m.peak(),
                m.settled()
            );
            report.memory.push((k, m));
        }
        batch::delete(&api, "mem").await?;
    }
    if args.part.includes(Part::Onboarding) && args.onboardings > 0 {
        report.onboarding = Some(onboarding::run(&cluster, "b", args.onboardings).await?);
    }

    if args.part.includes(Part::Latency) && (args.scale_nodes > 0 || args.scale_bindings > 0) {
        // Last on this bed: the Nodes and bindings stay (nothing here runs a namespace
        // controller to delete them).
        let population = scale::Population {
            nodes: args.scale_nodes,
            bindings: args.scale_bindings,
            node_updates_per_s: args.scale_node_updates,
            binding_updates_per_s: args.scale_binding_updates,
        };
        let admin = cluster.admin_client().await?;
        let started = std::time::Instant::now();
        scale::populate(&admin, population).await?;
        eprintln!(
            "scale: {} in {:.1} s",
            population.describe(),
            started.elapsed().as_secs_f64()
        );
        let _churn = scale::churn(admin, population);
        let mut flags = vec!["--kubelet-serving".to_string()];
        flags.extend(args.pipeline_flags.iter().cloned());
        for run in 0..args.runs {
            let floor = latency::floor(
                &cluster,
                &api,
                &format!("sfloor-{run}"),
                args.rate,
                args.seconds,
            )
            .await?;
            let pipe = latency::pipeline(
                &cluster,
                &api,
                &format!("slat-{run}"),
                args.rate,
                args.seconds,
                &flags,
            )
            .await?;
            eprintln!(
                "run {run} at scale: floor p50 {:.1} ms p99 {:.1} ms; pipeline p50 {:.1} ms p99 {:.1} ms ({} missing); kcert-controller {:.2} ms CPU per certificate",
                percentile(&floor.millis, 50.0),
                percentile(&floor.millis, 99.0),
                percentile(&pipe.millis, 50.0),
                percentile(&pipe.millis, 99.0),
                pipe.missing,
                pipe.cpu_ms_per_certificate()
            );
            report.latency_scale.push((floor, pipe));
        }
        report.scale = Some(population);
    }

    if args.part.includes(Part::Throughput) {
        // The same engines where a signature is cheap: what is left is the engine itself.
        cluster.stop();
        let ecdsa = TestCluster::builder()
            .ca_key(kcert_testbed::CaKeyType::EcdsaP256)
            .start()
            .await?;
        // The ledger engine fails closed without its CRD, as it should.
        kcert_tests::install_crds(&ecdsa).await;
        let api: Api<CertificateSigningRequest> = Api::all(ecdsa.admin_client().await?);
        let engines = [
            Engine::Kcert,
            Engine::KcertLedger,
            Engine::KcertToken,
            Engine::KcmLifted,
            Engine::Null,
        ];
        report.throughput_ecdsa = throughput_runs(&ecdsa, &api, &engines, &args, "ec-").await?;
    }

    let table = table(&report, &args);
    println!("{table}");
    if args.part == Part::All && !args.no_docs {
        write_docs(&report, &args, &table)?;
    }
    Ok(())
}

/// The `profile` part: the ECDSA engines, each with kube-apiserver profiled while it issues.
async fn profile_part(args: &Args) -> Result<()> {
    std::fs::create_dir_all(&args.profile_dir)?;
    let cluster = TestCluster::builder()
        .ca_key(kcert_testbed::CaKeyType::EcdsaP256)
        .apiserver_arg("--profiling=true")
        .start()
        .await?;
    kcert_tests::install_crds(&cluster).await;
    let api: Api<CertificateSigningRequest> = Api::all(cluster.admin_client().await?);
    let profile = throughput::Profile {
        dir: args.profile_dir.clone(),
        seconds: args.profile_seconds,
    };
    for run in 0..args.runs {
        for engine in [
            Engine::Kcert,
            Engine::KcertLedger,
            Engine::KcmLifted,
            Engine::Null,
        ] {
            let batch = format!("prof-{}-{run}", engine.key());
            let r =
                throughput::measure_profiled(&cluster, &api, engine, &batch, args.csrs, &profile)
                    .await?;
            println!(
                "run {run}: {}: {}; profile {}",
                engine.key(),
                describe_run(&r),
                profile.path(&batch).display()
            );
        }
    }
    Ok(())
}

/// The `ledger` part.
async fn ledger_part(args: &Args) -> Result<()> {
    {
        let cluster = TestCluster::start().await?;
        kcert_tests::install_crds(&cluster).await;
        let api: Api<CertificateSigningRequest> = Api::all(cluster.admin_client().await?);
        let engines = [Engine::Kcert, Engine::KcertLedger];
        let results = throughput_runs(&cluster, &api, &engines, args, "").await?;
        let off = results[0].1.rate();
        let on = results[1].1.rate();
        let paired = paired_ratio(&results[1].1.rates, &results[0].1.rates);
        println!(
            "ledger throughput ({} CSRs, {} runs, interleaved): off {} CSRs/s, on (until on record) {} CSRs/s; on/off: median of the runs' ratios {} (ratio of medians {:.2}) {}",
            args.csrs,
            args.runs,
            off.show(0),
            on.show(0),
            paired.show(2),
            ratio(on.median, off.median),
            met(paired.median >= 0.9, "≥ 0.9")
        );
        cluster.stop();
    }
    for line in ledger_encoding::run().await? {
        println!("{line}");
    }
    if args.ledger_records > 0 {
        let scale = ledger_scale::run(args.ledger_records).await?;
        println!("{}", ledger_scale::summary(&scale));
    }
    Ok(())
}

/// `args.runs` throughput measurements of each engine, interleaved.
async fn throughput_runs(
    cluster: &TestCluster,
    api: &Api<CertificateSigningRequest>,
    engines: &[Engine],
    args: &Args,
    tag: &str,
) -> Result<Vec<(Engine, Measured)>> {
    let mut results: Vec<(Engine, Measured)> =
        engines.iter().map(|e| (*e, Measured::default())).collect();
    for run in 0..args.runs {
        for (engine, measured) in results.iter_mut() {
            let batch = format!("{tag}{}-{run}", engine.key());
            let r = throughput::measure(cluster, api, *engine, &batch, args.csrs).await?;
            eprintln!("run {run}: {tag}{}: {}", engine.key(), describe_run(&r));
            measured.push(r);
        }
    }
    Ok(results)
}

/// One throughput run on one line.
fn describe_run(r: &throughput::Run) -> String {
    format!(
        "{:.0} CSRs/s issuing ({:.0}/s from the start); CPU s per 1000 issuing: apiserver {:.2}, etcd {:.2}, engine {:.2}; start-up {:.2} s to the first certificate, CPU s apiserver {:.2}, engine {:.2}",
        r.rate,
        r.overall_rate,
        r.cpu.0,
        r.cpu.1,
        r.cpu.2,
        r.startup.0,
        r.startup.1.0,
        r.startup.1.2
    )
}

/// The ratios of measurements taken side by side (run i of one against run i of the other),
/// which the machine's drift between runs does not move the way it moves separate medians.
fn paired_ratio(a: &[f64], b: &[f64]) -> Spread {
    Spread::of(
        &a.iter()
            .zip(b)
            .map(|(a, b)| ratio(*a, *b))
            .collect::<Vec<_>>(),
    )
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// The results table (markdown).
fn table(r: &Report, args: &Args) -> String {
    let mut t = format!(
        "| measurement | result: median of {} (min–max) | ratio | goal |\n|---|---|---|---|\n",
        args.runs
    );
    let get = |e: Engine| r.throughput.iter().find(|(x, _)| *x == e).map(|(_, m)| m);
    if let Some(kcert) = get(Engine::Kcert) {
        let k = kcert.rate();
        // The goals are for the default, ledger on; the ledger-off rate is shown beside it.
        let kl = get(Engine::KcertLedger).map_or(k, |m| m.rate());
        for (engine, m) in &r.throughput {
            let s = m.rate();
            let (ratio_text, goal) = match engine {
                Engine::Kcert => (String::new(), String::new()),
                Engine::KcmDefault => (
                    format!("kcert {:.1}×", ratio(kl.median, s.median)),
                    String::new(),
                ),
                Engine::KcmLifted => {
                    let x = ratio(kl.median, s.median);
                    (
                        format!(
                            "kcert (ledger on) {x:.2}×; ledger off {:.2}×",
                            ratio(k.median, s.median)
                        ),
                        met(x >= 1.3, "≥ 1.3×"),
                    )
                }
                Engine::Null => {
                    let x = ratio(kl.median, s.median);
                    (
                        format!(
                            "kcert (ledger on) at {x:.2} of it; ledger off {:.2}",
                            ratio(k.median, s.median)
                        ),
                        met(x >= 0.8, "≥ 0.8"),
                    )
                }
                _ => (
                    format!(
                        "{:.2} of kcert without the ledger",
                        ratio(s.median, k.median)
                    ),
                    String::new(),
                ),
            };
            let unit = if *engine == Engine::Null {
                "writes/s"
            } else {
                "CSRs/s"
            };
            let _ = writeln!(
                t,
                "| {} ({} CSRs) | {} {unit}; {} from its start | {ratio_text} | {goal} |",
                engine.label(),
                args.csrs,
                s.show(0),
                m.overall_rate().show(0)
            );
        }
        let startups: Vec<String> = r
            .throughput
            .iter()
            .filter(|(e, _)| *e != Engine::KcmDefault)
            .map(|(e, m)| {
                let (secs, api, _) = m.startup_median();
                format!("{} {:.2} s ({:.2} s API-server CPU)", e.key(), secs, api)
            })
            .collect();
        let _ = writeln!(
            t,
            "| start-up: the engine's start to its first certificate (RSA CA; medians) | {} | | |",
            startups.join("; ")
        );
    }
    let ec = |e: Engine| {
        r.throughput_ecdsa
            .iter()
            .find(|(x, _)| *x == e)
            .map(|(_, m)| m)
    };
    if let (Some(k), Some(kl), Some(kcm), Some(null)) = (
        ec(Engine::Kcert),
        ec(Engine::KcertLedger),
        ec(Engine::KcmLifted),
        ec(Engine::Null),
    ) {
        let (k, kl_rate, kcm_rate, null) = (k.rate(), kl.rate(), kcm.rate(), null.rate());
        let x = ratio(kl_rate.median, kcm_rate.median);
        let _ = writeln!(
            t,
            "| ECDSA P-256 CA: kcert-controller with the ledger / without / kcm (qps 1000) / null signer | {} / {} / {} / {} per s | kcert (ledger on) {x:.2}× kcm, at {:.2} of the ceiling | {} |",
            kl_rate.show(0),
            k.show(0),
            kcm_rate.show(0),
            null.show(0),
            ratio(kl_rate.median, null.median),
            met(x >= 1.3, "≥ 1.3× kcm")
        );
        if let Some(token) = ec(Engine::KcertToken) {
            let tr = token.rate();
            let _ = writeln!(
                t,
                "| ECDSA P-256 CA: kcert-controller with the key in SoftHSM2 (PKCS#11) / in memory, no ledger | {} / {} per s | {:.2} of the in-memory key | |",
                tr.show(0),
                k.show(0),
                ratio(tr.median, k.median)
            );
        }
        // CPU per certificate, everything included (watches, decision, signature, writes, the
        // ledger): the engine's process over the whole measurement.
        let (api_k, _, engine_k) = kl.cpu_median();
        let (api_m, _, _) = kcm.cpu_median();
        let _ = writeln!(
            t,
            "| ECDSA P-256 CA, CPU per certificate: kcert-controller (ledger on); kube-apiserver with kcert / with kcm | {:.2} ms; {:.2} / {:.2} ms | API server {:.2}× with kcert | {}; {} |",
            engine_k,
            api_k,
            api_m,
            ratio(api_k, api_m),
            met(engine_k <= 0.5, "controller ≤ 0.5 ms"),
            met(api_k <= api_m, "API server ≤ kcm's")
        );
    }
    if let (Some(kl), Some(kcm)) = (get(Engine::KcertLedger), get(Engine::KcmLifted)) {
        let ((api_k, _, engine_k), (api_m, _, engine_m)) = (kl.cpu_median(), kcm.cpu_median());
        let _ = writeln!(
            t,
            "| RSA 2048 CA, CPU per certificate: kcert-controller (ledger on) / kcm; kube-apiserver with kcert / with kcm | {engine_k:.2} / {engine_m:.2} ms; {api_k:.2} / {api_m:.2} ms | API server {:.2}× with kcert | {} |",
            ratio(api_k, api_m),
            met(api_k <= api_m, "API server ≤ kcm's")
        );
    }
    if !r.latency.is_empty() {
        let per_run = |f: &dyn Fn(&LatencyRun) -> f64| {
            Spread::of(&r.latency.iter().map(f).collect::<Vec<_>>())
        };
        let b50 = per_run(&|(b, _, _)| percentile(&b.millis, 50.0));
        let b99 = per_run(&|(b, _, _)| percentile(&b.millis, 99.0));
        let f50 = per_run(&|(_, f, _)| percentile(&f.millis, 50.0));
        let f99 = per_run(&|(_, f, _)| percentile(&f.millis, 99.0));
        let p50 = per_run(&|(_, _, p)| percentile(&p.millis, 50.0));
        let p99 = per_run(&|(_, _, p)| percentile(&p.millis, 99.0));
        // Ratios within each run (the floor and the pipeline side by side), then their median.
        let x99 =
            per_run(&|(_, f, p)| ratio(percentile(&p.millis, 99.0), percentile(&f.millis, 99.0)));
        let d50 = per_run(&|(_, f, p)| percentile(&p.millis, 50.0) - percentile(&f.millis, 50.0));
        let missing: usize = r.latency.iter().map(|(_, _, p)| p.missing).sum();
        let _ = writeln!(
            t,
            "| latency: bare create → watch event, {}/s for {} s | p50 {} ms, p99 {} ms | | |",
            args.rate,
            args.seconds,
            b50.show(1),
            b99.show(1)
        );
        let _ = writeln!(
            t,
            "| latency floor: the client itself creates, approves, writes a certificate (3 writes, no watch hop) | p50 {} ms, p99 {} ms | p99 {:.2}× the round trip's | |",
            f50.show(1),
            f99.show(1),
            ratio(f99.median, b99.median)
        );
        let never = if missing > 0 {
            format!("; {missing} never issued")
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "| latency: create → issued through kcert (approve + sign, ledger on), {}/s for {} s | p50 {} ms, p99 {} ms{never} | p99 {} × the floor's; p50 the floor's + {} ms | {}; {} |",
            args.rate,
            args.seconds,
            p50.show(1),
            p99.show(1),
            x99.show(2),
            d50.show(1),
            met(x99.median <= 1.3 && missing == 0, "p99 ≤ 1.3× the floor's"),
            met(d50.median <= 3.0, "p50 ≤ floor + 3 ms")
        );
    }
    if let (false, Some(pop)) = (r.latency_scale.is_empty(), r.scale) {
        let per_run = |f: &dyn Fn(&(latency::Samples, latency::Samples)) -> f64| {
            Spread::of(&r.latency_scale.iter().map(f).collect::<Vec<_>>())
        };
        let f50 = per_run(&|(f, _)| percentile(&f.millis, 50.0));
        let f99 = per_run(&|(f, _)| percentile(&f.millis, 99.0));
        let p50 = per_run(&|(_, p)| percentile(&p.millis, 50.0));
        let p99 = per_run(&|(_, p)| percentile(&p.millis, 99.0));
        let x99 =
            per_run(&|(f, p)| ratio(percentile(&p.millis, 99.0), percentile(&f.millis, 99.0)));
        let cpu = per_run(&|(_, p)| p.cpu_ms_per_certificate());
        let missing: usize = r.latency_scale.iter().map(|(_, p)| p.missing).sum();
        let _ = writeln!(
            t,
            "| latency at scale, {}: floor | p50 {} ms, p99 {} ms | | |",
            pop.describe(),
            f50.show(1),
            f99.show(1)
        );
        let _ = writeln!(
            t,
            "| latency at scale: create → issued through kcert (`--kubelet-serving`: watching the Nodes, and the bindings) | p50 {} ms, p99 {} ms{}; kcert-controller {} ms CPU per certificate, watches included | p99 {} × the floor's | {} |",
            p50.show(1),
            p99.show(1),
            if missing > 0 {
                format!("; {missing} never issued")
            } else {
                String::new()
            },
            cpu.show(2),
            x99.show(2),
            met(x99.median <= 1.3 && missing == 0, "p99 ≤ 1.3× the floor's")
        );
    }
    if !r.memory.is_empty() {
        let settled_k = Spread::of(
            &r.memory
                .iter()
                .map(|(k, _)| k.settled())
                .collect::<Vec<_>>(),
        );
        let settled_m = Spread::of(
            &r.memory
                .iter()
                .map(|(_, m)| m.settled())
                .collect::<Vec<_>>(),
        );
        let peak_k = Spread::of(&r.memory.iter().map(|(k, _)| k.peak()).collect::<Vec<_>>());
        let peak_m = Spread::of(&r.memory.iter().map(|(_, m)| m.peak()).collect::<Vec<_>>());
        let x = ratio(settled_k.median, settled_m.median);
        let _ = writeln!(
            t,
            "| RSS with {} CSRs cached: kcert-controller signer | settled {} MiB, peak {} MiB | | |",
            args.memory_csrs,
            settled_k.show(1),
            peak_k.show(1)
        );
        let _ = writeln!(
            t,
            "| RSS, same CSRs: kube-controller-manager (csrsigning only) | settled {} MiB, peak {} MiB | kcert {x:.2}× (peak {:.2}×) | {} |",
            settled_m.show(1),
            peak_m.show(1),
            ratio(peak_k.median, peak_m.median),
            met(x <= 0.5, "≤ 0.5×")
        );
    }
    if let Some(o) = &r.onboarding {
        let m = Spread::of(&o.manual);
        let k = Spread::of(&o.kcert);
        let kr = Spread::of(&o.kcert_rsa);
        let n = o.manual.len();
        let _ = writeln!(
            t,
            "| onboarding: seeds' manual flow (openssl + 8 kubectl calls), {n} users | {} s | | |",
            m.show(2)
        );
        let x = ratio(k.median, m.median);
        let _ = writeln!(
            t,
            "| onboarding: `kcert request` (default ECDSA P-256 key), {n} users | {} s | {x:.2}× the script | {} |",
            k.show(2),
            met(x <= 0.2, "≤ 0.2×")
        );
        let xr = ratio(kr.median, m.median);
        let _ = writeln!(
            t,
            "| onboarding: `kcert request --key-type rsa:2048` (the script's key), {n} users | {} s | {xr:.2}× the script | {} |",
            kr.show(2),
            met(xr <= 0.2, "≤ 0.2×")
        );
    }
    t
}

fn met(ok: bool, goal: &str) -> String {
    if ok {
        format!("{goal}: met")
    } else {
        format!("{goal}: **not met**")
    }
}

/// CPU per 1,000 certificates by process, from the throughput runs.
fn cpu_table(r: &Report) -> String {
    let mut t = String::from(
        "| engine | kube-apiserver | etcd | the engine's process | total | start-up: s to the first certificate; CPU s API server / engine |\n|---|---|---|---|---|---|\n",
    );
    let rsa = r.throughput.iter().map(|(e, m)| (e.key().to_string(), m));
    let ec = r
        .throughput_ecdsa
        .iter()
        .map(|(e, m)| (format!("{} (ECDSA CA)", e.key()), m));
    for (name, m) in rsa.chain(ec) {
        let (a, e, s) = m.cpu_median();
        let (secs, sa, se) = m.startup_median();
        let _ = writeln!(
            t,
            "| {name} | {a:.2} | {e:.2} | {s:.2} | {:.2} | {secs:.2}; {sa:.2} / {se:.2} |",
            a + e + s
        );
    }
    t
}

fn machine() -> String {
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
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB")
}

const BEGIN: &str = "<!-- kcert-bench: generated from here -->";
const END: &str = "<!-- kcert-bench: generated up to here -->";

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Rewrite the generated part of docs/benchmarks.md (between the markers; the rest is
/// written by hand) and the latency plot.
fn write_docs(r: &Report, args: &Args, table: &str) -> Result<()> {
    let svg_name = "benchmarks-latency.svg";
    let pooled = |pick: fn(&LatencyRun) -> &latency::Samples| -> Vec<f64> {
        r.latency
            .iter()
            .flat_map(|run| pick(run).millis.clone())
            .collect()
    };
    let (base, floor, pipe) = (pooled(|r| &r.0), pooled(|r| &r.1), pooled(|r| &r.2));
    let svg = plot::cdf_svg(
        &format!(
            "create → event latency at {}/s for {} s, {} runs pooled",
            args.rate, args.seconds, args.runs
        ),
        &[
            plot::Series {
                label: "bare create → watch event",
                color: "#1f77b4",
                millis: &base,
            },
            plot::Series {
                label: "floor: client creates, approves, writes a certificate",
                color: "#7f7f7f",
                millis: &floor,
            },
            plot::Series {
                label: "create → issued through kcert (approve + sign)",
                color: "#d62728",
                millis: &pipe,
            },
        ],
    );
    write_atomically(&docs_dir().join(svg_name), svg.as_bytes())?;
    let generated = format!(
        "{BEGIN}\n\nGenerated by `cargo build --release -p kcert-controller -p kcert && cargo run --release -p kcert-bench -- all --csrs {} --runs {} --rate {} --seconds {} --memory-csrs {} --onboardings {}`.\n\
Machine: {}; one kube-apiserver {} + etcd {} from the test bed (loopback, etcd without fsync).\n\
Everything in one run on the same API server and CA (RSA 2048; the ECDSA rows on a second test bed whose CA is ECDSA P-256); ratios are within that run.\n\
Throughput and CPU per certificate are over the issuing: from the first certificate the bench's watch sees to the last (with the ledger, to the last record written); the rate from the engine's start is beside it, and each engine's start-up (its process start to that first certificate) is counted apart.\n\n\
{table}\n\
CPU seconds per 1,000 certificates in the throughput runs while issuing (medians), by process, and each engine's start-up:\n\n{}\n\
![Latency distributions: bare round trip and kcert's pipeline]({svg_name})\n\n{END}",
        args.csrs,
        args.runs,
        args.rate,
        args.seconds,
        args.memory_csrs,
        args.onboardings,
        machine(),
        kcert_testbed::KUBERNETES_VERSION,
        kcert_testbed::ETCD_VERSION,
        cpu_table(r),
    );
    let path = docs_dir().join("benchmarks.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let doc = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{generated}{}", &old[..b], &old[e + END.len()..])
        }
        _ => format!("# Benchmarks\n\n{generated}\n"),
    };
    write_atomically(&path, doc.as_bytes())?;
    eprintln!("wrote {} and {svg_name}", path.display());
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The `nodes` part: each approver on its own bed, `--runs` times, interleaved.
async fn nodes_part(args: &Args) -> Result<()> {
    let show = |label: &str, v: &[f64]| {
        format!(
            "{label} p50 {:.2} s, p99 {:.2} s, max {:.2} s",
            percentile(v, 50.0),
            percentile(v, 99.0),
            percentile(v, 100.0)
        )
    };
    let mut p50s: HashMap<&'static str, Vec<f64>> = HashMap::new();
    for run in 0..args.runs {
        for approver in [
            nodes::Approver::Kcert,
            nodes::Approver::KcertSigning,
            nodes::Approver::KubeControllerManager,
        ] {
            let r = nodes::run(args.nodes, approver).await?;
            println!(
                "run {run}, {} ({} hollow nodes started together): {}; {}; {}",
                approver.label(),
                args.nodes,
                show("CSR → Approved", &r.to_decision),
                show("CSR → certificate", &r.to_certificate),
                show("start → Node registered", &r.to_node),
            );
            if let Some((cpu, decisions)) = r.controller_cpu {
                println!(
                    "  kcert-controller: {cpu:.2} s CPU over the run for {decisions} decisions ({:.1} ms per decision, watches and start-up included); 1 SubjectAccessReview + 1 approval write per decision",
                    cpu * 1000.0 / decisions.max(1) as f64
                );
            }
            p50s.entry(approver.label())
                .or_default()
                .push(percentile(&r.to_certificate, 50.0));
        }
    }
    let pure = nodes::pure_decision_ns(5000, 200_000);
    println!("node rules alone: {pure:.0} ns per kubelet-serving decision against 5,000 Nodes");
    let k = Spread::of(&p50s[nodes::Approver::Kcert.label()]);
    let s = Spread::of(&p50s[nodes::Approver::KcertSigning.label()]);
    let m = Spread::of(&p50s[nodes::Approver::KubeControllerManager.label()]);
    println!(
        "CSR → certificate p50 over runs: kcert approving {} s, kcert approving and signing {} s, kube-controller-manager {} s",
        k.show(2),
        s.show(2),
        m.show(2)
    );
    Ok(())
}
