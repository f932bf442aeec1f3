//! Flags and help text. Commands live in [`crate::commands`].

use clap::{Args, Parser, Subcommand, ValueEnum};
use kcert_pki::KeyType;
use std::path::PathBuf;

/// kcert: client certificates for Kubernetes, from key to kubeconfig.
///
/// Exit codes: 0 success, 1 error (bad input, refused, I/O; `can-i`: no), 2 bad command line,
/// 3 request denied or failed, 4 timed out waiting. kcert never prompts; private keys are
/// written with mode 0600 and never over an existing file without --force.
#[derive(Debug, Parser)]
#[command(name = "kcert", version, max_term_width = 100)]
pub struct Cli {
    /// Output format, as kubectl spells it: text (the default), json or yaml on stdout for
    /// pipelines, wide for tables with more columns. (`-O` is a deprecated alias of `-o`.)
    #[arg(long, short = 'o', short_alias = 'O', global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Kubeconfig for commands that talk to a cluster [default: $KUBECONFIG, then ~/.kube/config].
    #[arg(long, global = true, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context [default: the current context].
    #[arg(long, global = true)]
    pub context: Option<String>,

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
    /// The same document as YAML.
    Yaml,
    /// Text, with more columns where a table has them (`kcert list`).
    Wide,
}

impl OutputFormat {
    /// Text or wide: for people, not pipelines.
    pub fn is_text(self) -> bool {
        matches!(self, OutputFormat::Text | OutputFormat::Wide)
    }
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
    /// Get a certificate from the cluster through a CertificateSigningRequest and write a kubeconfig.
    Request(RequestArgs),
    /// List CertificateSigningRequests with what the policy would decide for pending ones.
    List(ListArgs),
    /// Show one CertificateSigningRequest: identity, requester, conditions, provenance, certificate.
    Show(NameArgs),
    /// Approve CertificateSigningRequests (as kubectl certificate approve; a Denied one stays denied).
    Approve(DecideArgs),
    /// Deny CertificateSigningRequests.
    Deny(DecideArgs),
    /// Work with approval policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// List issued certificates from the ledger (IssuedCertificate records outlive CSRs).
    Ledger(LedgerArgs),
    /// Revoke certificates: kcert's authorization webhook refuses them from then on
    /// (docs/revocation.md); or a node (--node): no kubelet certificate for it until --clear
    /// (docs/nodes.md). Idempotent; exit 1 if nothing in the ledger matches.
    Revoke(RevokeArgs),
    /// Bind a Role or ClusterRole to a user or group (RoleBinding, or ClusterRoleBinding without --namespace).
    Grant(GrantArgs),
    /// Show who the cluster says you are (SelfSubjectReview).
    Whoami,
    /// Ask the cluster whether you may do something (SelfSubjectAccessReview); exit 0 yes, 1 no.
    CanI(CanIArgs),
    /// Write a kubeconfig for a ServiceAccount with a short-lived TokenRequest token.
    Kubeconfig(KubeconfigArgs),
    /// A local, real control plane with kcert-controller, for trying kcert (`up`, `demo`; runs
    /// the separate `kcert-sandbox` binary).
    Sandbox(SandboxArgs),
    /// client-go exec credential plugin: serve the cached certificate, renewing it when due.
    Credential(CredentialArgs),
    /// Print shell completions.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// The cached certificate (replaced on renewal).
    #[arg(long)]
    pub cert_file: PathBuf,
    /// The cached key (replaced on renewal, mode 0600).
    #[arg(long)]
    pub key_file: PathBuf,
    /// Renew when less than this much lifetime is left.
    #[arg(long, default_value = "1h", value_parser = kcert_policy::duration::parse)]
    pub renew_before: std::time::Duration,
    /// The signer to ask for renewals.
    #[arg(long, default_value = "kcert.dev/client")]
    pub signer_name: String,
    /// Lifetime to ask for on renewal.
    #[arg(long, value_parser = kcert_policy::duration::parse)]
    pub duration: Option<std::time::Duration>,
    /// How long to wait for a renewal before serving the still-valid certificate.
    #[arg(long, default_value = "30s", value_parser = kcert_policy::duration::parse)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The user name (CN). Required unless --from-file.
    #[arg(long, short = 'u', required_unless_present = "from_file")]
    pub user: Option<String>,
    /// A group (O); repeat for several.
    #[arg(long = "group", short = 'g')]
    pub groups: Vec<String>,
    /// Onboard several users: YAML list of {user, groups, duration}.
    #[arg(long, conflicts_with_all = ["user", "key", "name"])]
    pub from_file: Option<PathBuf>,
    /// Type of the key to generate.
    #[arg(long, default_value_t = KeyType::EcdsaP256, value_parser = parse_key_type, conflicts_with = "key")]
    pub key_type: KeyType,
    /// Use this existing key instead of generating one (it is not copied).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The signer to ask.
    #[arg(long, default_value = "kcert.dev/client")]
    pub signer_name: String,
    /// Certificate lifetime to ask for (expirationSeconds; at least 10m).
    #[arg(long, value_parser = kcert_policy::duration::parse)]
    pub duration: Option<std::time::Duration>,
    /// How long to wait for approval and the certificate.
    #[arg(long, default_value = "5m", value_parser = kcert_policy::duration::parse)]
    pub timeout: std::time::Duration,
    /// CSR name [default: kcert-USER-<key fingerprint>, so a re-run with --key finds it].
    #[arg(long)]
    pub name: Option<String>,
    /// Directory for USER.key, USER.crt and USER.kubeconfig.
    #[arg(long, short = 'd', default_value = ".")]
    pub out_dir: PathBuf,
    /// Also add the user, cluster and context to this kubeconfig (created if missing).
    #[arg(long)]
    pub merge: Option<PathBuf>,
    /// Namespace for the context written.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
    /// Write a kubeconfig that runs `kcert credential` to renew the certificate before it expires.
    #[arg(long)]
    pub exec_plugin: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only CSRs for this signer.
    #[arg(long)]
    pub signer_name: Option<String>,
    /// Judge pending CSRs with this policy file instead of the cluster's ApprovalPolicies.
    #[arg(long)]
    pub policy_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// Only certificates that expire within this time (and have not expired yet), e.g. 7d.
    #[arg(long, value_parser = kcert_policy::duration::parse)]
    pub expiring: Option<std::time::Duration>,
    /// Only certificates for this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only certificates from this signer.
    #[arg(long)]
    pub signer_name: Option<String>,
    /// Only certificates issued by this CA: `old` or `new` (of the CA rotation in progress),
    /// or a CA's subject key identifier (hex). With `old`, records that predate issuer
    /// tracking are listed too (they may be the old CA's).
    #[arg(long)]
    pub issuer: Option<String>,
    /// The CA rotation `--issuer old|new` refers to.
    #[arg(long, default_value = kcert_kube::rotation::DEFAULT_ROTATION)]
    pub rotation: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["serial", "fingerprint", "csr", "user", "node"])))]
pub struct RevokeArgs {
    /// The certificate with this serial number (hex, as `kcert ledger` shows it).
    #[arg(long)]
    pub serial: Option<String>,
    /// The certificate with this SHA-256 fingerprint (`AB:CD:…`, hex or `X509SHA256=…`).
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// The certificate issued for this CSR.
    #[arg(long)]
    pub csr: Option<String>,
    /// Every certificate issued to this user.
    #[arg(long)]
    pub user: Option<String>,
    /// The node itself (its name, or system:node:NAME): every certificate of system:node:NAME,
    /// and a node revocation on the ledger, so that kcert-controller refuses kubelet CSRs for it
    /// (NodeRevoked), by bootstrap token or renewal, until an admin clears it with --clear.
    #[arg(long)]
    pub node: Option<String>,
    /// With --node: clear the node's revocation (recorded on the ledger with who, when and
    /// --reason), so that it may bootstrap again; its certificates stay revoked.
    #[arg(long, requires = "node")]
    pub clear: bool,
    /// Why, in 1 to 256 bytes (recorded in the ledger and shown in the 403 the revoked
    /// credential gets).
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// CSR name.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// CSR names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Reason written in the condition (PascalCase) [default: KcertApprove / KcertDeny].
    #[arg(long)]
    pub reason: Option<String>,
    /// Message written in the condition.
    #[arg(long)]
    pub message: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Explain what the policy decides for a CSR file or a CSR in the cluster. Writes nothing.
    Test(PolicyTestArgs),
}

#[derive(Debug, Args)]
pub struct PolicyTestArgs {
    /// A CSR PEM file, or the name of a CertificateSigningRequest in the cluster.
    pub csr: String,
    /// Policy file [default: the cluster's ApprovalPolicy objects].
    #[arg(long)]
    pub policy_file: Option<PathBuf>,
    /// For a CSR file: who would request it [default: its CN].
    #[arg(long)]
    pub requester: Option<String>,
    /// For a CSR file: the requester's groups (repeat).
    #[arg(long = "requester-group")]
    pub requester_groups: Vec<String>,
    /// For a CSR file: the signer name.
    #[arg(long, default_value = "kcert.dev/client")]
    pub signer_name: String,
    /// For a CSR file: expirationSeconds to assume.
    #[arg(long, value_parser = kcert_policy::duration::parse)]
    pub duration: Option<std::time::Duration>,
    #[command(flatten)]
    pub nodes: NodeRuleArgs,
}

/// For kubelet CSRs (kubernetes.io/kubelet-serving, kubernetes.io/kube-apiserver-client-kubelet):
/// the node rules as kcert-controller runs them (pass the same flags it has). Kubelet CSRs are
/// judged by these and the cluster's Nodes and SubjectAccessReviews, never by policy rules.
#[derive(Debug, Args, Clone, Default)]
pub struct NodeRuleArgs {
    /// An extra DNS suffix the controller allows in serving certificates (repeat).
    #[arg(long = "kubelet-serving-dns-suffix")]
    pub kubelet_serving_dns_suffixes: Vec<String>,
    /// An extra IP range the controller allows in serving certificates (repeat).
    #[arg(long = "kubelet-serving-cidr", value_parser = kcert_policy::nodes::Cidr::parse)]
    pub kubelet_serving_cidrs: Vec<kcert_policy::nodes::Cidr>,
    /// A reserved range the controller is given (repeat).
    #[arg(long = "kubelet-serving-reserved-cidr", value_parser = kcert_policy::nodes::Cidr::parse)]
    pub kubelet_serving_reserved_cidrs: Vec<kcert_policy::nodes::Cidr>,
    /// A reserved host name the controller is given (repeat; `*.example.com` for every name
    /// under it).
    #[arg(long = "kubelet-serving-reserved-name")]
    pub kubelet_serving_reserved_names: Vec<String>,
    /// The controller runs with --kubelet-serving-allow-shared-addresses.
    #[arg(long)]
    pub kubelet_serving_allow_shared_addresses: bool,
    /// The controller runs with --kubelet-approve-only.
    #[arg(long)]
    pub kubelet_approve_only: bool,
    /// The controller's --kubelet-min-rsa-bits.
    #[arg(long, default_value_t = 2048)]
    pub kubelet_min_rsa_bits: u32,
}

impl NodeRuleArgs {
    /// The rules these flags describe (both kubelet signers decided); refused as the
    /// controller refuses them.
    pub fn rules(&self) -> anyhow::Result<kcert_policy::nodes::NodeRules> {
        let rules = self.rules_unchecked();
        rules.check().map_err(anyhow::Error::msg)?;
        Ok(rules)
    }

    fn rules_unchecked(&self) -> kcert_policy::nodes::NodeRules {
        kcert_policy::nodes::NodeRules {
            serving: true,
            client: true,
            approve_only: self.kubelet_approve_only,
            extra_dns_suffixes: self
                .kubelet_serving_dns_suffixes
                .iter()
                .map(|s| s.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
            extra_cidrs: self.kubelet_serving_cidrs.clone(),
            reserved_cidrs: self.kubelet_serving_reserved_cidrs.clone(),
            reserved_names: self
                .kubelet_serving_reserved_names
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            refuse_shared_addresses: !self.kubelet_serving_allow_shared_addresses,
            min_rsa_bits: self.kubelet_min_rsa_bits,
            ..Default::default()
        }
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["user", "group"])))]
#[command(group(clap::ArgGroup::new("role_kind").required(true).args(["role", "clusterrole"])))]
pub struct GrantArgs {
    /// The user to grant to.
    #[arg(long)]
    pub user: Option<String>,
    /// The group to grant to.
    #[arg(long)]
    pub group: Option<String>,
    /// A Role in --namespace.
    #[arg(long, requires = "namespace")]
    pub role: Option<String>,
    /// A ClusterRole (bound in --namespace, or cluster-wide without it).
    #[arg(long)]
    pub clusterrole: Option<String>,
    /// Namespace of the RoleBinding.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct CanIArgs {
    /// Verb, e.g. get, list, create, delete.
    pub verb: String,
    /// Resource, e.g. pods, deployments.apps, pods/log.
    pub resource: String,
    /// Namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// The ServiceAccount.
    #[arg(long)]
    pub service_account: String,
    /// Its namespace.
    #[arg(long, short = 'n')]
    pub namespace: String,
    /// Token lifetime.
    #[arg(long, default_value = "1h", value_parser = kcert_policy::duration::parse)]
    pub duration: std::time::Duration,
    /// Create the ServiceAccount if it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Where to write the kubeconfig (mode 0600).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `kcert sandbox …`: forwarded to the `kcert-sandbox` binary.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// `up [-d DIR]` or `demo` (see `kcert-sandbox --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Key type: ecdsa-p256, ecdsa-p384, ed25519, rsa:2048, rsa:3072 or rsa:4096.
    #[arg(long = "type", short = 't', default_value_t = KeyType::EcdsaP256, value_parser = parse_key_type)]
    pub key_type: KeyType,
    /// Where to write the key.
    #[arg(long)]
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
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a self-signed CA: DIR/ca.crt (0644) and DIR/ca.key (0600).
    Init(CaInitArgs),
    /// Rotate the CA kcert-controller signs with, in phases that can be run, paused and resumed
    /// (the state is a CaRotation object, so a second admin or a restarted controller sees it):
    /// prepare, switch, complete. See docs/operations.md, "CA rotation".
    #[command(subcommand)]
    Rotate(RotateCommand),
    /// Print the trust bundle kcert publishes (every CA whose certificates are valid now, PEM):
    /// what kube-apiserver's --client-ca-file and other relying parties need.
    Bundle(BundleArgs),
    /// The CAs kcert-controller has in force: which signs, where its key lives (a file or
    /// Secret in memory, a PKCS#11 token), until when, whether it is within its expiry warning
    /// window, and the rotation under way. Exit 0; 1 if the bundle cannot be read.
    Status(CaStatusArgs),
}

#[derive(Debug, Args)]
pub struct CaStatusArgs {
    /// kcert-controller's namespace.
    #[arg(long, short = 'n', default_value = "kcert-system")]
    pub namespace: String,
    /// The CA rotation to report on.
    #[arg(long, default_value = kcert_kube::rotation::DEFAULT_ROTATION)]
    pub rotation: String,
    /// When a CA counts as expiring: a fraction of its lifetime left (1/3, 25%) or a duration
    /// (90d), as kcert-controller's --ca-expiry-warning.
    #[arg(long, default_value = "1/3", value_parser = kcert_kube::rotation::ExpiryWindow::parse)]
    pub warn_within: kcert_kube::rotation::ExpiryWindow,
}

#[derive(Debug, Subcommand)]
pub enum RotateCommand {
    /// Phase 1: a new CA (generated into a Secret, an existing Secret, or a key in the
    /// controller's token), published in the bundle beside the old one. The old CA keeps
    /// signing. Then add the bundle to the API server's --client-ca-file.
    Prepare(RotatePrepareArgs),
    /// Phase 2: sign with the new CA, once the API server is seen to trust it (the controller
    /// probes with a short-lived certificate of the new CA). Refused, and undone, until it does.
    Switch(RotateArgs),
    /// Phase 4 (after re-issuing: `kcert ledger --issuer old` lists who still holds live
    /// certificates of the old CA): drop the old CA from the bundle. Refused while such
    /// certificates are live, unless --force (naming who is cut off).
    Complete(RotateCompleteArgs),
    /// Where the rotation is: phase asked and reached, the CAs, the last probe, what waits.
    Status(RotateArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The CaRotation object (kcert-controller --ca-rotation).
    #[arg(long, default_value = kcert_kube::rotation::DEFAULT_ROTATION)]
    pub rotation: String,
    /// kcert-controller's namespace (the bundle ConfigMap, the new CA's Secret).
    #[arg(long, short = 'n', default_value = "kcert-system")]
    pub namespace: String,
    /// How long to wait for the controller to reach the phase (0: do not wait).
    #[arg(long, default_value = "60s", value_parser = kcert_policy::duration::parse)]
    pub wait: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct RotatePrepareArgs {
    #[command(flatten)]
    pub common: RotateArgs,
    /// The new CA's Secret (kubernetes.io/tls, in --namespace): generated unless --existing.
    #[arg(
        long,
        default_value = "kcert-ca-next",
        conflicts_with = "token_key_label"
    )]
    pub secret: String,
    /// Use the Secret as it is (a CA made by your PKI) instead of generating one into it.
    #[arg(long)]
    pub existing: bool,
    /// The new CA's key is in kcert-controller's PKCS#11 token under this label (made by
    /// `kcert ca init --pkcs11-module … --pkcs11-key-label LABEL`); with --certificate.
    #[arg(long, requires = "certificate")]
    pub token_key_label: Option<String>,
    /// The new CA's certificate (PEM), for --token-key-label.
    #[arg(long)]
    pub certificate: Option<PathBuf>,
    /// Generated CA: key type.
    #[arg(long = "type", short = 't', default_value_t = KeyType::EcdsaP256, value_parser = parse_key_type)]
    pub key_type: KeyType,
    /// Generated CA: lifetime in days.
    #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
    /// Generated CA: its common name [default: kcert-ca-YYYYMMDD-HHMMSS, distinct from the old].
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct RotateCompleteArgs {
    #[command(flatten)]
    pub common: RotateArgs,
    /// Complete though certificates of the old CA are live: they stop working once the API
    /// server drops the old CA. They are named, and your name is recorded on the rotation.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// kcert-controller's namespace.
    #[arg(long, short = 'n', default_value = "kcert-system")]
    pub namespace: String,
}

#[derive(Debug, Args)]
pub struct CaInitArgs {
    /// Directory to write ca.crt and ca.key into (created if missing).
    #[arg(long)]
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
    /// Generate the CA key in a PKCS#11 token (this module, e.g.
    /// /usr/lib/softhsm/libsofthsm2.so) instead of a file: sensitive, non-extractable, never
    /// written anywhere; only ca.crt is written. The PIN from --pkcs11-pin-file or
    /// KCERT_CA_PKCS11_PIN. kcert-controller then signs with `--ca-cert DIR/ca.crt
    /// --ca-pkcs11-module … --ca-pkcs11-token …` (the same key label).
    #[arg(long, requires = "pkcs11_token")]
    pub pkcs11_module: Option<PathBuf>,
    /// The token's label (with --pkcs11-module).
    #[arg(long)]
    pub pkcs11_token: Option<String>,
    /// The key's label in the token (it must not exist yet).
    #[arg(long, default_value = "kcert-ca")]
    pub pkcs11_key_label: String,
    /// A file holding the token's user PIN (first line); else KCERT_CA_PKCS11_PIN.
    #[arg(long)]
    pub pkcs11_pin_file: Option<PathBuf>,
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
    #[arg(long)]
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
