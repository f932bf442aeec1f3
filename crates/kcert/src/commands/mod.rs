//! One module per command. Each takes its parsed arguments and the output format.

pub mod access;
pub mod admin;
mod ca;
mod credential;
mod csr;
mod inspect;
mod key;
pub mod policy;
pub mod request;
pub mod rotate;
mod sign;

use crate::cli::{CaCommand, Cli, Command, OutputFormat, PolicyCommand};
use anyhow::Result;

/// An error that ends the program with a specific exit code (see `kcert --help`).
#[derive(Debug, Default)]
pub struct Exit {
    /// The exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
    /// The CSR condition that ended it, as `Denied:Reason` or `Failed:Reason`, when one did:
    /// what callers decide on (never the message, which quotes what requesters wrote).
    pub condition: Option<String>,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Run the parsed command line.
pub fn run(cli: &Cli) -> Result<()> {
    let out = cli.output;
    match &cli.command {
        Command::Key(args) => key::run(args, out),
        Command::Csr(args) => csr::run(args, out),
        Command::Ca(CaCommand::Init(args)) => ca::init(args, out),
        Command::Sign(args) => sign::run(args, out),
        Command::Inspect(args) => inspect::run(args, out),
        Command::Sandbox(args) => forward_to_sandbox(&args.args, out),
        Command::Completions(args) => {
            use clap::CommandFactory;
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "kcert",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        cluster_command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let target =
                    crate::target::Target::new(cli.kubeconfig.clone(), cli.context.clone());
                match cluster_command {
                    Command::Request(args) => request::run(args, out, &target).await,
                    Command::List(args) => admin::list(args, out, &target).await,
                    Command::Show(args) => admin::show(&args.name, out, &target).await,
                    Command::Ledger(args) => admin::ledger(args, out, &target).await,
                    Command::Revoke(args) => admin::revoke(args, out, &target).await,
                    Command::Approve(args) => admin::decide(args, true, out, &target).await,
                    Command::Deny(args) => admin::decide(args, false, out, &target).await,
                    Command::Policy(PolicyCommand::Test(args)) => {
                        policy::test(args, out, &target).await
                    }
                    Command::Grant(args) => access::grant(args, out, &target).await,
                    Command::Whoami => access::whoami(out, &target).await,
                    Command::CanI(args) => access::can_i(args, out, &target).await,
                    Command::Kubeconfig(args) => access::kubeconfig(args, out, &target).await,
                    Command::Credential(args) => credential::run(args).await,
                    Command::Ca(CaCommand::Rotate(c)) => rotate::run(c, out, &target).await,
                    Command::Ca(CaCommand::Bundle(args)) => rotate::bundle(args, &target).await,
                    Command::Ca(CaCommand::Status(args)) => {
                        rotate::status(args, out, &target).await
                    }
                    _ => unreachable!("offline commands are handled above"),
                }
            })
        }
    }
}

/// Print `json` on stdout for `--output json`, or the text lines otherwise.
/// `kcert sandbox ARGS`: run `kcert-sandbox ARGS` (`$KCERT_SANDBOX_BIN`, else next to this
/// binary, else on PATH). The sandbox is its own binary so that `kcert` carries no test-bed code.
fn forward_to_sandbox(args: &[std::ffi::OsString], out: OutputFormat) -> Result<()> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("kcert-sandbox")))
        .filter(|p| p.is_file());
    let program: std::path::PathBuf = std::env::var_os("KCERT_SANDBOX_BIN")
        .map(Into::into)
        .or(beside)
        .unwrap_or_else(|| "kcert-sandbox".into());
    let mut command = std::process::Command::new(&program);
    if !out.is_text() || out == OutputFormat::Wide {
        let name = format!("{out:?}").to_lowercase();
        command.args(["-o", name.as_str()]);
    }
    let status = command.args(args).status().map_err(|e| {
        anyhow::anyhow!(
            "cannot run {} ({e}): the sandbox is a separate binary; build it with `cargo build -p kcert-sandbox`, or run `cargo run -p kcert-sandbox -- demo`",
            program.display()
        )
    })?;
    match status.code() {
        Some(0) => Ok(()),
        code => Err(Exit {
            code: code.map_or(crate::exit::ERROR, |c| c as u8),
            message: format!("kcert-sandbox exited with {status}"),
            condition: None,
        }
        .into()),
    }
}

pub fn report(out: OutputFormat, json: serde_json::Value, text: impl FnOnce() -> String) {
    match out {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values print")
        ),
        OutputFormat::Yaml => print!(
            "{}",
            serde_yaml::to_string(&json).expect("JSON values print as YAML")
        ),
        OutputFormat::Text | OutputFormat::Wide => {
            println!("{}", crate::text::safe_lines(&text()))
        }
    }
}

/// `path: message` for errors about one input file.
fn in_file(path: &std::path::Path) -> impl Fn(kcert_pki::PkiError) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{}: {e}", path.display())
}
