//! Onboarding one user: `kcert request` against a script of the seeds' manual flow (openssl
//! genrsa/req, a CSR manifest, kubectl apply, kubectl certificate approve, kubectl get until the
//! certificate is there, kubectl config set-cluster/set-credentials/set-context/use-context).
//! Both ask kcert's signer on the same cluster, with kcert-controller approving by the same
//! policy, so the approval path is the same; the script also runs `kubectl certificate approve`
//! as the seeds do (a no-op when the controller was first).

use crate::engines;
use anyhow::{Context, Result, ensure};
use kcert_testbed::TestCluster;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub const SIGNER: &str = "kcert.dev/client";

/// The seeds' flow, as an admin would script it (its comments say how it polls).
const MANUAL_FLOW: &str = include_str!("manual-flow.sh");

/// Wall times in seconds of each way, one per repetition.
#[derive(Debug, Default, Clone)]
pub struct Onboarding {
    pub manual: Vec<f64>,
    pub kcert: Vec<f64>,
    pub kcert_rsa: Vec<f64>,
}

fn timed(cmd: &mut Command) -> Result<f64> {
    let started = Instant::now();
    let out = cmd.output().context("running an onboarding command")?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(secs)
}

/// The kubeconfig written works: kubectl authenticates as `user` with it.
fn check(cluster: &TestCluster, kubeconfig: &Path, user: &str) -> Result<()> {
    let who = cluster.kubectl_whoami(kubeconfig, None)?;
    ensure!(
        who == user,
        "kubectl with {} is {who:?}, not {user}",
        kubeconfig.display()
    );
    Ok(())
}

/// `reps` onboardings each way, interleaved, with kcert-controller approving and signing.
pub async fn run(cluster: &TestCluster, tag: &str, reps: usize) -> Result<Onboarding> {
    let dir = cluster.dir().join(format!("onboarding-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "rules:\n  - id: onboarding\n    signerNames: [\"{SIGNER}\"]\n    requesters: {{groups: [\"system:masters\"]}}\n    commonName: {{regex: \"onboard-.*\"}}\n    groups: {{allowed: [dev]}}\n"
        ),
    )?;
    let _controller = engines::kcert(
        cluster,
        &[
            "--signer-name",
            SIGNER,
            &format!("--policy-file={}", policy.display()),
        ],
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let script = dir.join("manual-flow.sh");
    std::fs::write(&script, MANUAL_FLOW)?;
    let kubectl = cluster
        .binaries()
        .kubectl
        .clone()
        .context("kubectl was not built")?;
    let kcert = crate::process::sibling("kcert")?;
    let admin = cluster.admin_kubeconfig_path();
    let mut result = Onboarding::default();
    for i in 0..reps {
        let rep = dir.join(format!("{i}"));
        std::fs::create_dir_all(&rep)?;
        let user = format!("onboard-{tag}-m{i}");
        let secs = timed(
            Command::new("bash")
                .arg(&script)
                .args([&user, &rep.display().to_string(), SIGNER])
                .env("KUBECONFIG", admin)
                .env("KUBECTL", &kubectl)
                .env("KUBECACHEDIR", dir.join("kube-cache"))
                .env("SERVER", cluster.server())
                .env("CA", cluster.ca_cert_path()),
        )?;
        if i == 0 {
            check(cluster, &rep.join(format!("{user}.kubeconfig")), &user)?;
        }
        result.manual.push(secs);
        for (key_type, times) in [
            ("ecdsa-p256", &mut result.kcert),
            ("rsa:2048", &mut result.kcert_rsa),
        ] {
            let user = format!("onboard-{tag}-{}{i}", &key_type[..1]);
            let secs = timed(
                Command::new(&kcert)
                    .args([
                        "request",
                        "--user",
                        &user,
                        "--group",
                        "dev",
                        "--output=json",
                    ])
                    .arg(format!("--key-type={key_type}"))
                    .arg(format!("--kubeconfig={}", admin.display()))
                    .arg(format!("--out-dir={}", rep.display())),
            )?;
            if i == 0 {
                check(cluster, &rep.join(format!("{user}.kubeconfig")), &user)?;
            }
            times.push(secs);
        }
    }
    Ok(result)
}
