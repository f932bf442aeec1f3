//! `kcert-testbed`: build the control plane, or run one cluster until interrupted.

use anyhow::{Context, Result, bail};
use kcert_testbed::{Binaries, CaKeyType, TestCluster};
use std::path::PathBuf;

const USAGE: &str = "usage:
  kcert-testbed build                 build (or find) etcd, kube-apiserver, kubectl, x509read, kubemark, kubeletcerts and helm; print their paths
  kcert-testbed up --dir DIR [--ca-key rsa|ecdsa]
                                      start a cluster; write DIR/admin.kubeconfig, DIR/ca.crt,
                                      DIR/ca.key, then DIR/ready; run until SIGINT or SIGTERM";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kcert-testbed: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build") => {
            let started = std::time::Instant::now();
            let bins = tokio::task::spawn_blocking(Binaries::locate).await??;
            println!("etcd: {}", bins.etcd.display());
            println!("kube-apiserver: {}", bins.kube_apiserver.display());
            if let Some(p) = &bins.kube_controller_manager {
                println!("kube-controller-manager: {}", p.display());
            }
            if let Some(p) = &bins.kubectl {
                println!("kubectl: {}", p.display());
            }
            // The Go tools the tests use beside the control plane.
            let x509read = tokio::task::spawn_blocking(kcert_testbed::x509read).await??;
            println!("x509read: {}", x509read.display());
            let kubemark = tokio::task::spawn_blocking(kcert_testbed::kubemark).await??;
            println!("kubemark: {}", kubemark.display());
            let kubeletcerts = tokio::task::spawn_blocking(kcert_testbed::kubeletcerts).await??;
            println!("kubeletcerts: {}", kubeletcerts.display());
            let helm = tokio::task::spawn_blocking(kcert_testbed::helm).await??;
            println!("helm: {}", helm.display());
            println!("ready in {:.1}s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Some("up") => up(&args[1..]).await,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

async fn up(args: &[String]) -> Result<()> {
    let mut dir: Option<PathBuf> = None;
    let mut ca_key = CaKeyType::Rsa2048;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dir" => dir = Some(it.next().context("--dir needs a value")?.into()),
            "--ca-key" => {
                ca_key = match it.next().map(String::as_str) {
                    Some("rsa") => CaKeyType::Rsa2048,
                    Some("ecdsa") => CaKeyType::EcdsaP256,
                    other => bail!("--ca-key takes rsa or ecdsa, not {other:?}"),
                }
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let dir = dir.context("--dir is required")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ready = dir.join("ready");
    let _ = std::fs::remove_file(&ready);
    let cluster = TestCluster::builder().ca_key(ca_key).start().await?;
    for (name, from) in [
        (
            "admin.kubeconfig",
            cluster.admin_kubeconfig_path().to_path_buf(),
        ),
        ("ca.crt", cluster.ca_cert_path()),
        ("ca.key", cluster.ca_key_path()),
    ] {
        copy_private(&from, &dir.join(name))?;
    }
    std::fs::write(&ready, cluster.server()).context("writing ready")?;
    eprintln!(
        "kcert-testbed: {} ready in {:.1}s; files in {}; Ctrl-C to stop",
        cluster.server(),
        cluster.started_in().as_secs_f64(),
        dir.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(cluster);
    let _ = std::fs::remove_file(&ready);
    Ok(())
}

fn copy_private(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let data = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let tmp = to.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(&data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, to).with_context(|| format!("writing {}", to.display()))?;
    Ok(())
}
