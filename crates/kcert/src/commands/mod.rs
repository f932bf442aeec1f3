//! One module per command. Each takes its parsed arguments and the output format.

mod ca;
mod csr;
mod inspect;
mod key;
mod sign;

use crate::cli::{CaCommand, Cli, Command, OutputFormat};
use anyhow::Result;

/// Run the parsed command line.
pub fn run(cli: &Cli) -> Result<()> {
    let out = cli.output;
    match &cli.command {
        Command::Key(args) => key::run(args, out),
        Command::Csr(args) => csr::run(args, out),
        Command::Ca(CaCommand::Init(args)) => ca::init(args, out),
        Command::Sign(args) => sign::run(args, out),
        Command::Inspect(args) => inspect::run(args, out),
    }
}

/// Print `json` on stdout for `--output json`, or the text lines otherwise.
fn report(out: OutputFormat, json: serde_json::Value, text: impl FnOnce() -> String) {
    match out {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values print")
        ),
        OutputFormat::Text => println!("{}", text()),
    }
}

/// `path: message` for errors about one input file.
fn in_file(path: &std::path::Path) -> impl Fn(kcert_pki::PkiError) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{}: {e}", path.display())
}
