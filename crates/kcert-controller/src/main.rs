//! `kcert-controller`: flags and environment in, `kcert_controller::run` out.

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use kcert_controller::{CaSource, PolicySource, Settings};
use std::path::PathBuf;

/// Approves CertificateSigningRequests by policy and signs them with the cluster CA.
///
/// Every flag can also be set through the environment variable shown.
#[derive(Debug, Parser)]
#[command(name = "kcert-controller", version, max_term_width = 100)]
struct Flags {
    #[command(subcommand)]
    command: Option<Command>,
    /// Kubeconfig to use; in-cluster config or $KUBECONFIG when unset.
    #[arg(long, env = "KCERT_KUBECONFIG", global = true)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long, env = "KCERT_CONTEXT")]
    context: Option<String>,
    /// A signer name to serve; repeat for several. CSRs of other signers are never touched.
    #[arg(long = "signer-name", env = "KCERT_SIGNER_NAMES", value_delimiter = ',', default_value = kcert_controller::DEFAULT_SIGNER_NAME)]
    signer_names: Vec<String>,
    /// Which controllers to run: approver, signer, or `webhook` alone (only the revocation
    /// webhook and its ledger watch: no CSR is read, no CA loaded, no Lease taken; for the
    /// webhook's host-network Pods, which then need nothing but list/watch on ledgerpages and
    /// revocations).
    #[arg(
        long,
        env = "KCERT_CONTROLLERS",
        value_delimiter = ',',
        default_value = "approver,signer"
    )]
    controllers: Vec<Role>,
    /// CA certificate file (with --ca-key, or with --ca-pkcs11-module for a key in a token),
    /// e.g. /etc/kubernetes/pki/ca.crt.
    #[arg(long, env = "KCERT_CA_CERT", conflicts_with = "ca_secret")]
    ca_cert: Option<PathBuf>,
    /// CA key file (with --ca-cert).
    #[arg(long, env = "KCERT_CA_KEY", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// The CA key in a PKCS#11 token: the module (shared library), e.g.
    /// /usr/lib/softhsm/libsofthsm2.so. The CA certificate from --ca-cert, or else the one kept
    /// in the token beside the key (`kcert ca init --pkcs11-module` stores it there). The PIN
    /// from --ca-pkcs11-pin-file or KCERT_CA_PKCS11_PIN. The key must be sensitive and
    /// non-extractable.
    #[arg(long, env = "KCERT_CA_PKCS11_MODULE", conflicts_with_all = ["ca_key", "ca_secret"])]
    ca_pkcs11_module: Option<PathBuf>,
    /// The token by its label.
    #[arg(
        long,
        env = "KCERT_CA_PKCS11_TOKEN",
        conflicts_with = "ca_pkcs11_token_serial"
    )]
    ca_pkcs11_token: Option<String>,
    /// The token by its serial number.
    #[arg(long, env = "KCERT_CA_PKCS11_TOKEN_SERIAL")]
    ca_pkcs11_token_serial: Option<String>,
    /// The key by its label.
    #[arg(long, env = "KCERT_CA_PKCS11_KEY_LABEL", default_value = "kcert-ca")]
    ca_pkcs11_key_label: String,
    /// The key by its id (hex), instead of its label.
    #[arg(long, env = "KCERT_CA_PKCS11_KEY_ID")]
    ca_pkcs11_key_id: Option<String>,
    /// A file holding the token's user PIN (first line), e.g. a mounted Secret. Without it the
    /// PIN comes from KCERT_CA_PKCS11_PIN.
    #[arg(long, env = "KCERT_CA_PKCS11_PIN_FILE")]
    ca_pkcs11_pin_file: Option<PathBuf>,
    /// CA from a Secret NAMESPACE/NAME holding tls.crt and tls.key; reloaded when it changes.
    #[arg(long, env = "KCERT_CA_SECRET")]
    ca_secret: Option<String>,
    /// The CaRotation object (cluster-scoped) to follow: `kcert ca rotate` writes it; the
    /// signer signs with the CA its phase puts in force and publishes the trust bundle in
    /// ConfigMap kcert-ca-bundle (in POD_NAMESPACE). "off": the CA from the flags alone.
    #[arg(long, env = "KCERT_CA_ROTATION", default_value = kcert_kube::rotation::DEFAULT_ROTATION)]
    ca_rotation: String,
    /// Also publish the trust bundle as a ClusterTrustBundle per signer name served
    /// (`<signer with "/" as ":">:kcert`, certificates.k8s.io/v1beta1: kube-apiserver needs the
    /// ClusterTrustBundle feature gate and that API enabled), kept current through rotations.
    /// Needs create/get/update on clustertrustbundles and `attest` on the signers.
    #[arg(long, env = "KCERT_CLUSTER_TRUST_BUNDLES")]
    cluster_trust_bundles: bool,
    /// When a CA in force counts as expiring: a fraction of its lifetime left (1/3, 25%) or a
    /// duration (90d). Within it: a warning in /readyz (still ready), the log and a Warning
    /// Event (CaExpiring) on the bundle ConfigMap; kcert_ca_not_after_seconds always.
    #[arg(long, env = "KCERT_CA_EXPIRY_WARNING", default_value = "1/3", value_parser = kcert_kube::rotation::ExpiryWindow::parse)]
    ca_expiry_warning: kcert_kube::rotation::ExpiryWindow,
    /// Policy from a YAML file (re-read when it changes) instead of ApprovalPolicy objects.
    #[arg(long, env = "KCERT_POLICY_FILE")]
    policy_file: Option<PathBuf>,
    /// Longest certificate lifetime the signer grants (requests and rules only shorten it).
    #[arg(long, env = "KCERT_MAX_DURATION", default_value = "720h", value_parser = kcert_policy::duration::parse)]
    max_duration: std::time::Duration,
    /// Parallel reconciles per controller.
    #[arg(long, env = "KCERT_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Log format.
    #[arg(long, env = "KCERT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve /metrics, /healthz and /readyz on this address ("off" to disable).
    #[arg(long, env = "KCERT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    /// Run the controllers only while holding a Lease, so several replicas can run (one active).
    #[arg(long, env = "KCERT_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kcert-system")]
    leader_election_namespace: String,
    /// Name of the Lease.
    #[arg(long, default_value = "kcert-controller")]
    leader_election_lease: String,
    /// Record every issued certificate in the ledger, on LedgerPage objects of up to 200 records
    /// each (needs deploy/crd.yaml).
    #[arg(long, env = "KCERT_LEDGER", default_value_t = true, action = clap::ArgAction::Set)]
    ledger: bool,
    /// How long a new ledger record waits at most for others to share its write (one page
    /// write per batch). Until it is written its CSR is kept; a crash in between is repaired
    /// at start-up.
    #[arg(long, default_value = "250ms", value_parser = parse_short_duration)]
    ledger_flush_interval: std::time::Duration,
    /// Write the ledger sooner once no new record has come for this long (a burst has ended),
    /// but not sooner than --ledger-flush-interval after the previous write unless the
    /// records came at a burst's rate (50 or more per interval).
    #[arg(long, default_value = "20ms", value_parser = parse_short_duration)]
    ledger_flush_idle: std::time::Duration,
    /// Delete finished CSRs of our signers (issued ones only once they are in the ledger).
    #[arg(long, env = "KCERT_CLEANER", default_value_t = true, action = clap::ArgAction::Set)]
    cleaner: bool,
    /// How often the cleaner looks.
    #[arg(long, default_value = "1h", value_parser = kcert_policy::duration::parse)]
    cleaner_interval: std::time::Duration,
    /// Delete approved (issued) CSRs this long after approval.
    #[arg(long, default_value = "1h", value_parser = kcert_policy::duration::parse)]
    gc_approved: std::time::Duration,
    /// Delete denied CSRs this long after denial.
    #[arg(long, default_value = "1h", value_parser = kcert_policy::duration::parse)]
    gc_denied: std::time::Duration,
    /// Delete failed CSRs this long after failing.
    #[arg(long, default_value = "1h", value_parser = kcert_policy::duration::parse)]
    gc_failed: std::time::Duration,
    /// Delete CSRs still pending this long after creation.
    #[arg(long, default_value = "24h", value_parser = kcert_policy::duration::parse)]
    gc_pending: std::time::Duration,
    /// Which Events to publish on CSRs: problems (denials, requests left for a human, signing
    /// failures), decisions (also approvals, naming the rule) or all (also one per issued
    /// certificate). Events are queued off the reconcile path; a full queue drops them and
    /// counts kcert_events_dropped_total.
    #[arg(long, env = "KCERT_EVENTS", default_value = "decisions", value_parser = parse_event_level)]
    events: kcert_controller::events::EventLevel,
    /// How long a leader's lease lasts without renewal.
    #[arg(long, default_value = "15s", value_parser = kcert_policy::duration::parse)]
    lease_duration: std::time::Duration,
    /// Treat every group and user that a (Cluster)RoleBinding ties to cluster-admin or to a role
    /// granting `*`, escalate, bind, impersonate, or approve/sign on signers as protected (denied
    /// by the approver, refused by the signer). Needs list/watch on roles, clusterroles,
    /// rolebindings and clusterrolebindings; nothing is decided until they are read. Turn off
    /// only where kcert cannot be given that read access.
    #[arg(long, env = "KCERT_RBAC_PROTECTION", default_value_t = true, action = clap::ArgAction::Set)]
    rbac_protection: bool,
    /// Approve kubelet serving certificates (kubernetes.io/kubelet-serving): only a node
    /// (system:node:<n>, group system:nodes) for itself, every DNS and IP SAN among Node <n>'s
    /// status.addresses (or an allowed suffix / range), no email or URI SANs, Kubernetes' usage
    /// sets. Needs list/watch on nodes. See docs/nodes.md.
    #[arg(long, env = "KCERT_KUBELET_SERVING")]
    kubelet_serving: bool,
    /// Approve kubelet client certificates (kubernetes.io/kube-apiserver-client-kubelet) as
    /// kube-controller-manager's csrapproving does: bootstrap tokens with create on
    /// certificatesigningrequests/nodeclient, nodes renewing their own with
    /// selfnodeclient (SubjectAccessReviews). Needs create on subjectaccessreviews.
    #[arg(long, env = "KCERT_KUBELET_CLIENT")]
    kubelet_client: bool,
    /// Never deny kubelet CSRs: what would be denied is left pending, with an Event giving the
    /// reason (for clusters moving from another approver, or where a human decides the rest).
    #[arg(long, env = "KCERT_KUBELET_APPROVE_ONLY")]
    kubelet_approve_only: bool,
    /// A DNS suffix S under which a kubelet serving certificate may hold the node's own name
    /// though its Node does not report it: node n1 may get "n1.S" (not "n2.S", not
    /// "x.n1.S"); repeat for several.
    #[arg(long = "kubelet-serving-dns-suffix", env = "KCERT_KUBELET_SERVING_DNS_SUFFIXES", value_delimiter = ',', value_parser = parse_dns_suffix)]
    kubelet_serving_dns_suffixes: Vec<String>,
    /// An IP range (CIDR) whose addresses a kubelet serving certificate may hold though its Node
    /// does not report them; repeat for several.
    #[arg(long = "kubelet-serving-cidr", env = "KCERT_KUBELET_SERVING_CIDRS", value_delimiter = ',', value_parser = kcert_policy::nodes::Cidr::parse)]
    kubelet_serving_cidrs: Vec<kcert_policy::nodes::Cidr>,
    /// An IP range (CIDR) never certified for a node whatever its Node reports: the Service
    /// CIDR, the API server's and load balancers' addresses (loopback, link-local, multicast,
    /// unspecified and broadcast addresses always are refused); repeat for several.
    #[arg(long = "kubelet-serving-reserved-cidr", env = "KCERT_KUBELET_SERVING_RESERVED_CIDRS", value_delimiter = ',', value_parser = kcert_policy::nodes::Cidr::parse)]
    kubelet_serving_reserved_cidrs: Vec<kcert_policy::nodes::Cidr>,
    /// A host name never certified for a node whatever its Node reports: the API server's and
    /// load balancers' external names (`*.example.com` reserves every name under example.com;
    /// localhost and its aliases, the kubernetes Service's names, anything under .svc or .pod
    /// always are refused); repeat for several.
    #[arg(long = "kubelet-serving-reserved-name", env = "KCERT_KUBELET_SERVING_RESERVED_NAMES", value_delimiter = ',', value_parser = parse_reserved_name)]
    kubelet_serving_reserved_names: Vec<String>,
    /// Allow a serving certificate for an address another Node also reports (by default
    /// refused: a node writes its own status and could copy another's addresses).
    #[arg(long, env = "KCERT_KUBELET_SERVING_ALLOW_SHARED_ADDRESSES")]
    kubelet_serving_allow_shared_addresses: bool,
    /// How long a serving CSR whose Node does not exist waits for it before it is denied
    /// NodeNotFound.
    #[arg(long, env = "KCERT_KUBELET_SERVING_NODE_WAIT", default_value = "5m", value_parser = kcert_policy::duration::parse)]
    kubelet_serving_node_wait: std::time::Duration,
    /// How often the cluster's reserved ranges and the names it states (ServiceCIDRs, the
    /// kubernetes Service and EndpointSlice, cluster-info, kubeadm-config, Namespaces) are read
    /// again for kubelet serving decisions.
    #[arg(long, env = "KCERT_KUBELET_SERVING_RESERVED_REFRESH", default_value = "30s", value_parser = kcert_policy::duration::parse)]
    kubelet_serving_reserved_refresh: std::time::Duration,
    /// The smallest RSA key accepted in a kubelet certificate (ECDSA P-256/P-384/P-521 and
    /// Ed25519 are always accepted).
    #[arg(long, env = "KCERT_KUBELET_MIN_RSA_BITS", default_value_t = 2048)]
    kubelet_min_rsa_bits: u32,
    /// Also sign the kubelet signers decided (--kubelet-serving, --kubelet-client) with the CA,
    /// for clusters where kube-controller-manager's csrsigning is off: subject rebuilt as
    /// CN=system:node:<n>, O=system:nodes, serving SANs encoded from the checked names, lifetime
    /// capped by --max-duration, recorded in the ledger like every certificate kcert issues.
    /// The CA must be the one the API server trusts for clients (--client-ca-file) and for
    /// kubelets (--kubelet-certificate-authority). Needs `sign` on those signers.
    #[arg(long, env = "KCERT_KUBELET_SIGN")]
    kubelet_sign: bool,
    /// Serve the authorization webhook that denies requests made with revoked certificates, on
    /// this HTTPS address (every replica serves it, leader or not). Needs --webhook-cert and
    /// --webhook-key, and the API server configured with deploy/authorization-config.yaml.
    #[arg(long, env = "KCERT_WEBHOOK_ADDR")]
    webhook_addr: Option<std::net::SocketAddr>,
    /// The webhook's serving certificate (PEM; its SANs must name the address the API server
    /// calls).
    #[arg(long, env = "KCERT_WEBHOOK_CERT", requires = "webhook_addr")]
    webhook_cert: Option<std::path::PathBuf>,
    /// The webhook's private key (PEM, PKCS#8).
    #[arg(long, env = "KCERT_WEBHOOK_KEY", requires = "webhook_addr")]
    webhook_key: Option<std::path::PathBuf>,
    /// Strict mode: X.509 requests of users matching this pattern (`*`, `?`; repeatable) are
    /// denied unless their certificate is in the ledger (kcert issued it, or — kubelet
    /// certificates — kcert approved it and kube-controller-manager issued it).
    #[arg(long = "webhook-strict-user", requires = "webhook_addr")]
    webhook_strict_users: Vec<String>,
    /// Strict mode for members of groups matching this pattern (repeatable).
    #[arg(long = "webhook-strict-group", requires = "webhook_addr")]
    webhook_strict_groups: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CRDs (what deploy/crd.yaml holds).
    Crd,
    /// Print the admission guard's regular expression (what deploy/admission.yaml matches).
    AdmissionRegex,
}

fn parse_event_level(s: &str) -> Result<kcert_controller::events::EventLevel, String> {
    s.parse()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    Approver,
    Signer,
    /// The revocation webhook only.
    Webhook,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    match flags.command {
        Some(Command::Crd) => {
            print!("{}", kcert_controller::crd::crd_yaml());
            return std::process::ExitCode::SUCCESS;
        }
        Some(Command::AdmissionRegex) => {
            println!("{}", kcert_controller::admission::system_names_regex());
            return std::process::ExitCode::SUCCESS;
        }
        None => {}
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match flags.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    match run(flags).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(flags: Flags) -> Result<()> {
    let ca = match (&flags.ca_cert, &flags.ca_key, &flags.ca_secret) {
        (cert, None, None) if flags.ca_pkcs11_module.is_some() || cert.is_some() => {
            let Some(module) = &flags.ca_pkcs11_module else {
                bail!("--ca-cert needs --ca-key, or --ca-pkcs11-module for a key in a token");
            };
            let token = match (&flags.ca_pkcs11_token, &flags.ca_pkcs11_token_serial) {
                (Some(l), _) => kcert_pkcs11::TokenSelector::Label(l.clone()),
                (None, Some(s)) => kcert_pkcs11::TokenSelector::Serial(s.clone()),
                (None, None) => bail!(
                    "--ca-pkcs11-module needs the token: --ca-pkcs11-token LABEL or --ca-pkcs11-token-serial SERIAL"
                ),
            };
            let key = match &flags.ca_pkcs11_key_id {
                Some(id) => kcert_pkcs11::KeySelector::Id(
                    kcert_pkcs11::parse_key_id(id)
                        .map_err(|e| anyhow::anyhow!("--ca-pkcs11-key-id: {e}"))?,
                ),
                None => kcert_pkcs11::KeySelector::Label(flags.ca_pkcs11_key_label.clone()),
            };
            let pin =
                kcert_pkcs11::read_pin(flags.ca_pkcs11_pin_file.as_deref(), "KCERT_CA_PKCS11_PIN")
                    .map_err(anyhow::Error::msg)?;
            Some(CaSource::Pkcs11 {
                cert: cert.clone(),
                token: kcert_pkcs11::TokenConfig {
                    module: module.clone(),
                    token,
                    key,
                    pin,
                },
            })
        }
        (Some(cert), Some(key), None) => Some(CaSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None, Some(secret)) => {
            let Some((namespace, name)) = secret.split_once('/') else {
                bail!("--ca-secret {secret:?} must be NAMESPACE/NAME");
            };
            Some(CaSource::Secret {
                namespace: namespace.into(),
                name: name.into(),
            })
        }
        _ => None,
    };
    let webhook_only = flags.controllers.contains(&Role::Webhook);
    if webhook_only {
        if flags.controllers.len() > 1 {
            bail!(
                "--controllers webhook runs the webhook alone: do not combine it with approver or signer"
            );
        }
        if flags.webhook_addr.is_none() {
            bail!("--controllers webhook needs --webhook-addr, --webhook-cert and --webhook-key");
        }
        if flags.leader_elect {
            bail!(
                "--controllers webhook takes no Lease (every webhook replica answers): drop --leader-elect"
            );
        }
    }
    let signer = flags.controllers.contains(&Role::Signer);
    if signer && ca.is_none() {
        bail!(
            "the signer needs a CA: pass --ca-cert and --ca-key, or --ca-secret NAMESPACE/NAME (or run --controllers approver)"
        );
    }
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let mut signer_names = flags.signer_names.clone();
    if flags.kubelet_sign {
        if !signer {
            bail!("--kubelet-sign needs the signer (--controllers approver,signer) and a CA");
        }
        if !flags.kubelet_serving && !flags.kubelet_client {
            bail!(
                "--kubelet-sign signs what --kubelet-serving / --kubelet-client decide: enable one"
            );
        }
        for (on, name) in [
            (
                flags.kubelet_serving,
                kcert_policy::nodes::KUBELET_SERVING_SIGNER,
            ),
            (
                flags.kubelet_client,
                kcert_policy::nodes::KUBELET_CLIENT_SIGNER,
            ),
        ] {
            if on && !signer_names.iter().any(|n| n == name) {
                signer_names.push(name.to_string());
            }
        }
    }
    let mut settings = Settings {
        signer_names,
        approver: flags.controllers.contains(&Role::Approver),
        signer,
        policy: match &flags.policy_file {
            Some(p) => PolicySource::File(p.clone()),
            None => PolicySource::Crd,
        },
        ca,
        max_duration: flags.max_duration,
        concurrency: flags.concurrency,
        controller_name: "kcert-controller".into(),
        instance: Some(identity.clone()),
        metrics_addr: match flags.metrics_addr.as_str() {
            "off" | "" => None,
            a => Some(
                a.parse()
                    .with_context(|| format!("--metrics-addr {a:?} is not HOST:PORT"))?,
            ),
        },
        ledger: flags.ledger,
        ledger_writer: kcert_controller::ledger::WriterSettings {
            flush_after: flags.ledger_flush_interval,
            idle_after: flags.ledger_flush_idle,
        },
        events: flags.events,
        rbac_protection: flags.rbac_protection,
        nodes: kcert_policy::nodes::NodeRules {
            serving: flags.kubelet_serving,
            client: flags.kubelet_client,
            approve_only: flags.kubelet_approve_only,
            extra_dns_suffixes: flags.kubelet_serving_dns_suffixes.clone(),
            extra_cidrs: flags.kubelet_serving_cidrs.clone(),
            reserved_cidrs: flags.kubelet_serving_reserved_cidrs.clone(),
            reserved_names: flags.kubelet_serving_reserved_names.clone(),
            refuse_shared_addresses: !flags.kubelet_serving_allow_shared_addresses,
            min_rsa_bits: flags.kubelet_min_rsa_bits,
            node_wait_seconds: flags.kubelet_serving_node_wait.as_secs() as i64,
        },
        reserved_refresh: flags.kubelet_serving_reserved_refresh,
        rotation: None,
        ca_expiry_window: flags.ca_expiry_warning,
        webhook: match (flags.webhook_addr, flags.webhook_cert, flags.webhook_key) {
            (Some(addr), Some(cert), Some(key)) => {
                Some(kcert_controller::authz_webhook::WebhookSettings {
                    addr,
                    cert,
                    key,
                    strict: kcert_kube::revocation::Strict {
                        users: flags.webhook_strict_users.clone(),
                        groups: flags.webhook_strict_groups.clone(),
                    },
                })
            }
            (Some(_), _, _) => anyhow::bail!(
                "--webhook-addr needs --webhook-cert and --webhook-key (the serving certificate the API server will verify)"
            ),
            _ => None,
        },
        cleaner: flags
            .cleaner
            .then_some(kcert_controller::cleaner::CleanerSettings {
                interval: flags.cleaner_interval,
                approved: flags.gc_approved,
                denied: flags.gc_denied,
                failed: flags.gc_failed,
                pending: flags.gc_pending,
            }),
        leader_election: flags
            .leader_elect
            .then(|| kcert_controller::leader::LeaderElection {
                lease_duration: flags.lease_duration,
                retry_period: (flags.lease_duration / 7).max(std::time::Duration::from_millis(500)),
                ..kcert_controller::leader::LeaderElection::new(
                    &flags.leader_election_namespace,
                    &flags.leader_election_lease,
                    &identity,
                )
            }),
    };
    settings.nodes.check().map_err(anyhow::Error::msg)?;
    let options = kube::config::KubeConfigOptions {
        context: flags.context.clone(),
        ..Default::default()
    };
    let config = match &flags.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await?
        }
        None if flags.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    if flags.cluster_trust_bundles && flags.ca_rotation == "off" {
        bail!(
            "--cluster-trust-bundles publishes what --ca-rotation follows: do not set --ca-rotation off"
        );
    }
    if flags.ca_rotation != "off" {
        settings.rotation = Some(kcert_controller::rotation::RotationSettings {
            name: flags.ca_rotation.clone(),
            namespace: flags.leader_election_namespace.clone(),
            api: config.clone(),
            token: match &settings.ca {
                Some(CaSource::Pkcs11 { token, .. }) => Some(token.clone()),
                _ => None,
            },
            every: std::time::Duration::from_secs(2),
            trust_bundle_signers: if flags.cluster_trust_bundles {
                settings.signer_names.clone()
            } else {
                Vec::new()
            },
        });
    }
    let client = kube::Client::try_from(config)?;
    tracing::info!(signers = ?settings.signer_names, approver = settings.approver, signer = settings.signer, kubelet_serving = settings.nodes.serving, kubelet_client = settings.nodes.client, "starting");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    kcert_controller::run(client, settings, shutdown).await?;
    Ok(())
}

/// A DNS suffix: a host name, lower-cased (no leading dot, no wildcard).
fn parse_dns_suffix(text: &str) -> Result<String, String> {
    let lower = text.trim_start_matches('.').to_ascii_lowercase();
    if kcert_policy::nodes::is_host_name(&lower) && !kcert_policy::nodes::looks_like_address(&lower)
    {
        Ok(lower)
    } else {
        Err(format!(
            "{text:?} is not a DNS suffix: write a host name such as nodes.example.com"
        ))
    }
}

/// A reserved host name, lower-cased: `api.example.com` or `*.example.com`.
fn parse_reserved_name(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let host = lower.strip_prefix("*.").unwrap_or(&lower);
    if kcert_policy::nodes::is_host_name(host) {
        Ok(lower)
    } else {
        Err(format!(
            "{text:?} is not a host name: write api.example.com, or *.example.com for every name under it"
        ))
    }
}

/// `250ms`, or any duration kcert's policies accept (`2s`, `1m`).
fn parse_short_duration(text: &str) -> Result<std::time::Duration, String> {
    match text.strip_suffix("ms").map(str::parse::<u64>) {
        Some(Ok(ms)) => Ok(std::time::Duration::from_millis(ms)),
        Some(Err(_)) => Err(format!("invalid duration '{text}': e.g. 100ms, 2s")),
        None => kcert_policy::duration::parse(text),
    }
}
