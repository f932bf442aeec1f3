//! `kcert-sandbox`: a real control plane on this machine (the test bed's kube-apiserver and
//! etcd, built from Kubernetes' Go modules) with kcert-controller and an onboarding policy.
//! Its own binary, so that the shipped `kcert` and `kcert-controller` carry no test-bed code;
//! `kcert sandbox …` forwards here when both are installed side by side.

mod sandbox;

use clap::{Args, Parser, Subcommand};
use kcert::cli::OutputFormat;
use std::path::PathBuf;
use std::process::ExitCode;

/// kcert's sandbox: etcd, kube-apiserver and kcert-controller on loopback.
#[derive(Debug, Parser)]
#[command(name = "kcert-sandbox", version)]
struct Cli {
    /// Output format: text, json, yaml or wide (`-O` is a deprecated alias of `-o`).
    #[arg(long, short = 'o', short_alias = 'O', global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    #[command(subcommand)]
    command: SandboxCommand,
}

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// Start etcd, kube-apiserver and kcert-controller locally; run until Ctrl-C or SIGTERM.
    Up(SandboxUpArgs),
    /// Run the whole onboarding flow on a throw-away sandbox and tear it down.
    Demo,
}

/// Where `up` writes what a client needs.
#[derive(Debug, Args)]
pub struct SandboxUpArgs {
    /// Directory for admin.kubeconfig, ca.crt and ca.key.
    #[arg(long, short = 'd', default_value = "kcert-sandbox")]
    pub dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kcert-sandbox: error: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            SandboxCommand::Up(args) => sandbox::up(args, cli.output).await,
            SandboxCommand::Demo => sandbox::demo(cli.output).await,
        }
    });
    match result {
        Ok(()) => ExitCode::from(0),
        Err(e) => {
            eprintln!("kcert-sandbox: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
