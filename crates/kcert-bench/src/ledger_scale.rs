//! The ledger at scale, on one test-bed API server: kcert-controller (release binary, signer +
//! approver + webhook, ledger on) started over an empty ledger and over one of `records`
//! certificates (one in ten revoked), with its RSS and the time from its start to the webhook
//! answering from the whole ledger; then the CLI's `kcert ledger --user` and `kcert revoke`
//! against that ledger, and the time from a revocation to the webhook denying the credential.

use crate::engines;
use crate::process::{Running, rss_kib, sibling};
use crate::webhook::{connector, fingerprint, review_body, review_once};
use anyhow::{Context as _, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use kcert_kube::crd::{IssuedCertificate, LedgerPage, Revocation};
use kcert_testbed::TestCluster;
use kube::Api;
use kube::api::PostParams;
use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Debug, Default, Clone)]
pub struct Scale {
    pub records: usize,
    pub pages: usize,
    /// Seconds to write the ledger's pages (the bench's own creates, 8 in flight).
    pub fill_s: f64,
    /// Start to the webhook answering from the whole ledger: empty ledger, full ledger.
    pub ready_empty_s: f64,
    pub ready_full_s: f64,
    /// RSS (MiB) once ready and 10 s later (settled): empty ledger, full ledger; and peak.
    pub rss_empty_mib: f64,
    pub rss_full_mib: f64,
    pub rss_full_peak_mib: f64,
    /// `kcert ledger --user` wall times (s).
    pub ledger_user_s: Vec<f64>,
    /// `kcert revoke --serial` wall time (s), and from its end to the webhook's first denial.
    pub revoke_s: f64,
    pub revoke_to_denied_s: f64,
}

/// A record as kcert writes one (sizes of a real user certificate's fields).
pub fn record(i: usize, revoked: bool) -> IssuedCertificate {
    IssuedCertificate {
        serial: format!("{:032x}", (i as u128).wrapping_mul(0x2545_f491_4f6c_dd1d)),
        subject: format!("CN=user-{i},O=dev"),
        user: format!("user-{i}"),
        groups: vec!["dev".into()],
        not_before: "2026-12-01T00:00:00Z".into(),
        not_after: "2026-12-31T00:00:00Z".into(),
        fingerprint_sha256: fingerprint(i),
        signer_name: "kcert.dev/client".into(),
        requester: "onboarding-pipeline".into(),
        requester_groups: vec![
            "system:serviceaccounts".into(),
            "system:authenticated".into(),
        ],
        approved_by: "rule onboard of policy team-dev".into(),
        csr_name: format!("user-{i}-x7k2p"),
        csr_uid: format!("{:08x}-0000-4000-8000-{:012x}", i, i),
        revocation: revoked.then(|| Revocation {
            revoked_at: "2026-12-01T12:00:00Z".into(),
            revoked_by: "admin".into(),
            reason: "benchmark".into(),
        }),
        chain_started_at: Some("2026-12-01T00:00:00Z".into()),
        // Every other record a renewal of the one before (the webhook walks its parent).
        requested_with: (i % 2 == 1).then(|| fingerprint(i - 1)),
        revocation_restored_at: None,
        issuer_key_id: None,
    }
}

/// Write `records` records on pages of [`kcert_kube::ledger::PAGE_MAX_RECORDS`].
async fn fill(client: &kube::Client, records: usize) -> Result<usize> {
    let api: Api<LedgerPage> = Api::all(client.clone());
    let per = kcert_kube::ledger::PAGE_MAX_RECORDS;
    let pages: Vec<LedgerPage> = (0..records.div_ceil(per))
        .map(|p| {
            let mut page = kcert_kube::ledger::new_page(1_764_547_200_000 + p as i64, p as u32);
            for i in p * per..((p + 1) * per).min(records) {
                page.spec.push(&record(i, i.is_multiple_of(10)));
            }
            page
        })
        .collect();
    let n = pages.len();
    futures::stream::iter(pages)
        .map(|page| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &page).await }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(n)
}

/// Start the controller and wait until its webhook answers 200 for `probe` (a review of
/// credential `probe`): the ledger has been read in full. Returns it and the seconds taken.
async fn start_until_ready(
    cluster: &TestCluster,
    files: &kcert_testbed::webhook::WebhookFiles,
    probe: usize,
) -> Result<(Running, f64)> {
    let connector = connector(&files.ca_cert)?;
    let started = Instant::now();
    let child = engines::kcert(
        cluster,
        &[
            "--ledger=true",
            &format!("--webhook-addr={}", files.addr),
            &format!("--webhook-cert={}", files.cert.display()),
            &format!("--webhook-key={}", files.key.display()),
        ],
    )?;
    let body = review_body(probe);
    while started.elapsed() < Duration::from_secs(300) {
        if let Ok((status, _)) = review_once(&connector, files.addr, &body).await
            && status.starts_with("HTTP/1.1 200")
        {
            return Ok((child, started.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the webhook was not serving after 300 s")
}

fn mib(pid: u32) -> f64 {
    rss_kib(pid).unwrap_or(0) as f64 / 1024.0
}

fn peak_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn kcert(cluster: &TestCluster, args: &[&str]) -> Result<(f64, String)> {
    let started = Instant::now();
    let out = std::process::Command::new(sibling("kcert")?)
        .arg(format!(
            "--kubeconfig={}",
            cluster.admin_kubeconfig_path().display()
        ))
        .args(args)
        .output()?;
    let took = started.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "kcert {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((took, String::from_utf8(out.stdout)?))
}

/// One run with a ledger of `records`.
pub async fn run(records: usize) -> Result<Scale> {
    let dir = std::env::temp_dir().join(format!("kcert-bench-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let files =
        kcert_testbed::webhook::WebhookFiles::create(&dir, kcert_testbed::webhook::free_port()?)?;
    let cluster = TestCluster::start().await?;
    kcert_tests::install_crds(&cluster).await;
    let client = cluster.admin_client().await?;
    let mut out = Scale {
        records,
        ..Default::default()
    };

    let (empty, s) = start_until_ready(&cluster, &files, 0).await?;
    out.ready_empty_s = s;
    tokio::time::sleep(Duration::from_secs(10)).await;
    out.rss_empty_mib = mib(empty.pid());
    drop(empty);

    let started = Instant::now();
    out.pages = fill(&client, records).await?;
    out.fill_s = started.elapsed().as_secs_f64();
    eprintln!(
        "ledger: {records} records on {} pages written in {:.1} s",
        out.pages, out.fill_s
    );

    // Probe with a revoked credential: a denial proves the index holds the ledger.
    let (full, s) = start_until_ready(&cluster, &files, 10 * (records / 20)).await?;
    out.ready_full_s = s;
    let connector = connector(&files.ca_cert)?;
    let (_, answer) =
        review_once(&connector, files.addr, &review_body(10 * (records / 20))).await?;
    ensure!(
        answer.contains("\"denied\":true"),
        "a revoked credential was not denied: {answer}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    out.rss_full_mib = mib(full.pid());
    out.rss_full_peak_mib = peak_mib(full.pid());

    for i in [7usize, records / 2 + 3, records - 1] {
        let (took, json) = kcert(
            &cluster,
            &["ledger", "--user", &format!("user-{i}"), "-o", "json"],
        )?;
        let rows: serde_json::Value =
            serde_json::from_str(&json).context("kcert ledger -o json")?;
        ensure!(
            rows.as_array().map(Vec::len) == Some(1),
            "kcert ledger --user user-{i} listed {rows}"
        );
        out.ledger_user_s.push(took);
    }

    // Revoke one not yet revoked; time until the webhook denies it.
    let target = records / 2 + 1;
    let (took, _) = kcert(
        &cluster,
        &[
            "revoke",
            "--serial",
            &record(target, false).serial,
            "--reason",
            "bench",
        ],
    )?;
    out.revoke_s = took;
    let revoked = Instant::now();
    loop {
        let (_, answer) = review_once(&connector, files.addr, &review_body(target)).await?;
        if answer.contains("\"denied\":true") {
            break;
        }
        ensure!(
            revoked.elapsed() < Duration::from_secs(30),
            "the revocation did not reach the webhook in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out.revoke_to_denied_s = revoked.elapsed().as_secs_f64();
    drop(full);
    cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

/// One line per figure.
pub fn summary(s: &Scale) -> String {
    let l = &s.ledger_user_s;
    format!(
        "ledger of {} records on {} pages (written in {:.1} s): controller start to webhook serving {:.2} s (empty ledger {:.2} s); RSS {:.1} MiB, peak {:.1} (empty ledger {:.1} MiB); `kcert ledger --user` {:.2}/{:.2}/{:.2} s; `kcert revoke --serial` {:.2} s, then {:.3} s to the webhook's first denial",
        s.records,
        s.pages,
        s.fill_s,
        s.ready_full_s,
        s.ready_empty_s,
        s.rss_full_mib,
        s.rss_full_peak_mib,
        s.rss_empty_mib,
        l.first().copied().unwrap_or(f64::NAN),
        l.get(1).copied().unwrap_or(f64::NAN),
        l.get(2).copied().unwrap_or(f64::NAN),
        s.revoke_s,
        s.revoke_to_denied_s
    )
}
