//! The signers under test, each started as its own process against the test bed: kcert's
//! release build of kcert-controller and kube-controller-manager running only csrsigning.

use crate::process::{Running, sibling, spawn};
use anyhow::{Context, Result};
use kcert_testbed::TestCluster;

/// kcert-controller with the cluster's CA and admin kubeconfig, no metrics server, no cleaner,
/// plus `extra` flags.
pub fn kcert(cluster: &TestCluster, extra: &[&str]) -> Result<Running> {
    let mut args = vec![
        format!("--kubeconfig={}", cluster.admin_kubeconfig_path().display()),
        format!("--ca-cert={}", cluster.ca_cert_path().display()),
        format!("--ca-key={}", cluster.ca_key_path().display()),
        "--cleaner=false".into(),
    ];
    if !extra.iter().any(|a| a.starts_with("--metrics-addr")) {
        args.push("--metrics-addr=off".into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn(
        &sibling("kcert-controller")?,
        &args,
        &cluster.dir().join("kcert-controller.log"),
    )
}

/// kube-controller-manager `--controllers=csrsigning` with the same CA; `qps` lifts its client
/// limits (default 20 qps, burst 30).
pub fn kcm(cluster: &TestCluster, qps: Option<(u32, u32)>) -> Result<Running> {
    let bin = cluster
        .binaries()
        .kube_controller_manager
        .clone()
        .context("kube-controller-manager was not built (KUBEBUILDER_ASSETS lacks it?)")?;
    let mut args = vec![
        format!("--kubeconfig={}", cluster.admin_kubeconfig_path().display()),
        "--controllers=csrsigning".into(),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        "--secure-port=0".into(),
        format!(
            "--cluster-signing-cert-file={}",
            cluster.ca_cert_path().display()
        ),
        format!(
            "--cluster-signing-key-file={}",
            cluster.ca_key_path().display()
        ),
        "--cluster-signing-duration=24h".into(),
    ];
    if let Some((q, b)) = qps {
        args.push(format!("--kube-api-qps={q}"));
        args.push(format!("--kube-api-burst={b}"));
    }
    spawn(&bin, &args, &cluster.dir().join("kcm.log"))
}
