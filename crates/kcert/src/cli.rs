//! Flags and help text. Commands live in [`crate::commands`].

use clap::{Args, Parser, Subcommand, ValueEnum};
use kcert_pki::KeyType;
use std::path::PathBuf;

/// kcert: client certificates for Kubernetes, from key to kubeconfig.
///
/// Exit codes: 0 success, 1 error (bad input, refused, I/O), 2 bad command line.
/// kcert never prompts; private keys are written with mode 0600 and never over an existing
/// file without --force.
#[derive(Debug, Parser)]
#[command(name = "kcert", version, max_term_width = 100)]
pub struct Cli {
    /// Output format: human-readable text, or JSON on stdout for pipelines.
    #[arg(long, short = 'O', global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// One JSON document on stdout.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a private key (like `openssl genpkey`), written as PKCS#8 PEM with mode 0600.
    Key(KeyArgs),
    /// Create a certificate signing request for a user and groups (like `openssl req -new -subj "/CN=jane/O=dev"`).
    Csr(CsrArgs),
    /// Manage a certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Sign a CSR with a CA, offline (like `openssl x509 -req -CA -CAkey`).
    Sign(SignArgs),
    /// Show what a CSR, certificate, key or kubeconfig says: subject, groups, validity, usages, key, fingerprint.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Key type: ecdsa-p256, ecdsa-p384, ed25519, rsa:2048, rsa:3072 or rsa:4096.
    #[arg(long = "type", short = 't', default_value_t = KeyType::EcdsaP256, value_parser = parse_key_type)]
    pub key_type: KeyType,
    /// Where to write the key.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CsrArgs {
    /// The user name: the certificate's CN, which Kubernetes takes as the username.
    #[arg(long, short = 'u')]
    pub user: String,
    /// A group: one O each, which Kubernetes takes as group memberships. Repeat for several.
    #[arg(long = "group", short = 'g')]
    pub groups: Vec<String>,
    /// The private key to sign the request with (PKCS#8, PKCS#1 or SEC1 PEM).
    #[arg(long, short = 'k')]
    pub key: PathBuf,
    /// A DNS subject alternative name (server certificates only; client certificates carry none).
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// An IP subject alternative name (server certificates only).
    #[arg(long = "ip")]
    pub ips: Vec<std::net::IpAddr>,
    /// Where to write the CSR (PEM).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a self-signed CA: DIR/ca.crt (0644) and DIR/ca.key (0600).
    Init(CaInitArgs),
}

#[derive(Debug, Args)]
pub struct CaInitArgs {
    /// Directory to write ca.crt and ca.key into (created if missing).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// CA key type (kubeadm uses rsa:2048; ecdsa-p256 signs much faster).
    #[arg(long = "type", short = 't', default_value_t = KeyType::Rsa2048, value_parser = parse_key_type)]
    pub key_type: KeyType,
    /// Lifetime in days.
    #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
    /// The CA's common name.
    #[arg(long, default_value = "kcert-ca")]
    pub name: String,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The CA certificate (PEM; a bundle is fine, the one matching --ca-key is used).
    #[arg(long)]
    pub ca: PathBuf,
    /// The CA private key.
    #[arg(long = "ca-key")]
    pub ca_key: PathBuf,
    /// The CSR to sign (PEM). Its signature is checked (proof of possession).
    #[arg(long)]
    pub csr: PathBuf,
    /// Lifetime in days [default: 30, as openssl].
    #[arg(long, conflicts_with = "duration", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: Option<u32>,
    /// Lifetime as a duration: 30m, 1h, 12h, 7d (10 minutes at least, as Kubernetes).
    #[arg(long, value_parser = kcert_policy::duration::parse)]
    pub duration: Option<std::time::Duration>,
    /// A usage to grant, in Kubernetes' names; repeat for several
    /// [default: digital signature, key encipherment, client auth].
    #[arg(long = "usage")]
    pub usages: Vec<String>,
    /// Copy subject alternative names from the CSR (for server certificates). Without it a CSR
    /// with SANs is refused.
    #[arg(long)]
    pub allow_sans: bool,
    /// Where to write the certificate (PEM).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A PEM file (CSR, certificate or bundle, private or public key) or a kubeconfig.
    pub file: PathBuf,
}

fn parse_key_type(s: &str) -> Result<KeyType, String> {
    s.parse()
}
