//! The signers under test, each started as its own process against the test bed: kcert's
//! release build of kcert-controller and kube-controller-manager running only csrsigning.

use crate::process::{Running, sibling, spawn, spawn_with_env};
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

/// kcert-controller whose CA key is in a SoftHSM2 token: a fresh token and CA of the cluster
/// CA's key type per call (in the cluster's directory, made with `kcert ca init
/// --pkcs11-module`), plus `extra` flags. Its certificates chain to that CA, not the cluster's:
/// for throughput, where nobody authenticates with them.
pub fn kcert_token(cluster: &TestCluster, extra: &[&str]) -> Result<Running> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    const PIN: &str = "kcert-bench-pin";
    let module = kcert_testbed::softhsm::module();
    let dir = cluster
        .dir()
        .join(format!("softhsm-{}", CALLS.fetch_add(1, Ordering::Relaxed)));
    let conf = dir.join("softhsm2.conf");
    kcert_testbed::softhsm::write_conf(&conf, &dir.join("tokens")).map_err(anyhow::Error::msg)?;
    let run = |program: &std::path::Path, args: &[&str]| -> Result<()> {
        let out = std::process::Command::new(program)
            .args(args)
            .env("SOFTHSM2_CONF", &conf)
            .env("KCERT_CA_PKCS11_PIN", PIN)
            .output()
            .with_context(|| format!("running {} (package softhsm2)", program.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} {}: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(
        std::path::Path::new("softhsm2-util"),
        &[
            "--init-token",
            "--free",
            "--label",
            "kcert-bench",
            "--pin",
            PIN,
            "--so-pin",
            "kcert-bench-so",
        ],
    )?;
    let key_type = match kcert_pki::CertificateInfo::from_pem(cluster.ca_pem().as_bytes())?
        .key_algorithm
        .to_string()
    {
        a if a.contains("RSA") => "rsa:2048",
        _ => "ecdsa-p256",
    };
    let (module_arg, out_arg) = (module.display().to_string(), dir.display().to_string());
    run(
        &sibling("kcert")?,
        &[
            "ca",
            "init",
            "--out",
            &out_arg,
            "--type",
            key_type,
            "--name",
            "kcert bench token CA",
            "--pkcs11-module",
            &module_arg,
            "--pkcs11-token",
            "kcert-bench",
        ],
    )?;
    let mut args = vec![
        format!("--kubeconfig={}", cluster.admin_kubeconfig_path().display()),
        format!("--ca-cert={}", dir.join("ca.crt").display()),
        format!("--ca-pkcs11-module={module_arg}"),
        "--ca-pkcs11-token=kcert-bench".into(),
        "--cleaner=false".into(),
        "--metrics-addr=off".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_with_env(
        &sibling("kcert-controller")?,
        &args,
        &[
            ("SOFTHSM2_CONF", conf.as_os_str()),
            ("KCERT_CA_PKCS11_PIN", std::ffi::OsStr::new(PIN)),
        ],
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
