//! The `kcert` command line. `main` parses flags (see [`cli`]) and dispatches to one module
//! per command under [`commands`]; files are written through [`files`] (atomic, 0600 keys).

pub mod cli;
pub mod commands;
pub mod files;
pub mod kubeconfig;
pub mod target;
pub mod text;

use clap::Parser;
use std::ffi::OsString;
use std::process::ExitCode;

/// Exit codes, stable for pipelines.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any failure: bad input, I/O, refused operation.
    pub const ERROR: u8 = 1;
    /// Bad command line (clap's code).
    pub const USAGE: u8 = 2;
    /// The request was denied (or failed at signing).
    pub const DENIED: u8 = 3;
    /// Gave up waiting.
    pub const TIMED_OUT: u8 = 4;
}

/// Run the CLI with `args` (including the program name) and return the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    if uses_deprecated_output_flag(&args) {
        eprintln!(
            "kcert: warning: -O is deprecated and will be removed in the next release; use -o/--output (as kubectl does)"
        );
    }
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    match commands::run(&cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            let code = e
                .downcast_ref::<commands::Exit>()
                .map_or(exit::ERROR, |x| x.code);
            eprintln!("kcert: error: {e:#}");
            // Pipelines asked for a document: they get one for errors too.
            let doc = serde_json::json!({"error": format!("{e:#}"), "exitCode": code});
            match cli.output {
                cli::OutputFormat::Json => println!("{doc}"),
                cli::OutputFormat::Yaml => {
                    print!("{}", serde_yaml::to_string(&doc).unwrap_or_default())
                }
                _ => {}
            }
            ExitCode::from(code)
        }
    }
}

/// Whether `-O` (the old spelling of `-o`) is on the command line, alone or with its value.
fn uses_deprecated_output_flag(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .filter_map(|a| a.to_str())
        .any(|a| a == "-O" || (a.starts_with("-O") && !a.starts_with("--")))
}
