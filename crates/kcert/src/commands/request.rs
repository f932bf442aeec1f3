//! `kcert request`: key → CSR → CertificateSigningRequest → wait → key, certificate, kubeconfig.

use super::{Exit, report};
use crate::cli::{OutputFormat, RequestArgs};
use crate::files::{Mode, read, write_all};
use crate::kubeconfig::{self, ClusterInfo, Credentials};
use crate::target::Target;
use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kcert_pki::{
    CertificateInfo, CertificateRequest, CsrSubject, KeyType, PrivateKey, SubjectAltNames,
    build_csr,
};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One user to onboard.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// User name (CN).
    pub user: String,
    /// Groups (O).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Lifetime to ask for, e.g. 24h.
    #[serde(default)]
    pub duration: Option<String>,
}

/// What one request produced.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Issued {
    user: String,
    groups: Vec<String>,
    csr: String,
    key: PathBuf,
    certificate: PathBuf,
    kubeconfig: PathBuf,
    context: String,
    merged_into: Option<PathBuf>,
    serial: String,
    not_after: String,
    reused: bool,
}

pub async fn run(args: &RequestArgs, out: OutputFormat, target: &Target) -> Result<()> {
    let (client, cluster) = target.connect().await?;
    let users: Vec<UserSpec> = match &args.from_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            serde_yaml::from_str(&text).map_err(|e| {
                anyhow!(
                    "{}: expected a list of {{user, groups, duration}}: {e}",
                    path.display()
                )
            })?
        }
        None => vec![UserSpec {
            user: args
                .user
                .clone()
                .expect("clap requires --user without --from-file"),
            groups: args.groups.clone(),
            duration: None,
        }],
    };
    let mut results = Vec::new();
    let mut failures: Vec<anyhow::Error> = Vec::new();
    for spec in &users {
        let duration = match &spec.duration {
            Some(d) => Some(
                kcert_policy::duration::parse(d).map_err(|e| anyhow!("user {}: {e}", spec.user))?,
            ),
            None => args.duration,
        };
        match request_one(&client, &cluster, spec, duration, args, out).await {
            Ok(r) => results.push(r),
            Err(e) if users.len() > 1 => {
                eprintln!("kcert: user {}: {e:#}", spec.user);
                failures.push(e);
            }
            Err(e) => return Err(e),
        }
    }
    let json = if args.from_file.is_some() {
        serde_json::json!({ "issued": results, "failed": failures.len() })
    } else {
        serde_json::to_value(&results[0])?
    };
    report(out, json, || {
        results
            .iter()
            .map(|r| {
                format!(
                    "{} {} (groups: {}), serial {}, valid until {}\n  key {}\n  certificate {}\n  kubeconfig {} (context {}){}\n  try: kubectl --kubeconfig {} auth whoami",
                    if r.reused { "reused" } else { "issued" },
                    r.user,
                    if r.groups.is_empty() { "none".into() } else { r.groups.join(", ") },
                    r.serial,
                    r.not_after,
                    r.key.display(),
                    r.certificate.display(),
                    r.kubeconfig.display(),
                    r.context,
                    r.merged_into.as_ref().map(|m| format!("\n  merged into {}", m.display())).unwrap_or_default(),
                    r.kubeconfig.display(),
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    if let Some(first) = failures.into_iter().next() {
        return Err(first.context("some users were not onboarded"));
    }
    Ok(())
}

/// A DNS-1123 name for the CSR: `kcert-USER-FINGERPRINT8`.
pub fn default_csr_name(user: &str, key_fingerprint: &str) -> String {
    let mut safe: String = user
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    safe = safe
        .trim_matches(|c: char| c == '-' || c == '.')
        .to_string();
    safe.truncate(200);
    let fp: String = key_fingerprint
        .chars()
        .filter(|c| *c != ':')
        .take(8)
        .collect::<String>()
        .to_lowercase();
    if safe.is_empty() {
        format!("kcert-{fp}")
    } else {
        format!("kcert-{safe}-{fp}")
    }
}

async fn request_one(
    client: &Client,
    cluster: &ClusterInfo,
    spec: &UserSpec,
    duration: Option<Duration>,
    args: &RequestArgs,
    out: OutputFormat,
) -> Result<Issued> {
    let subject = CsrSubject::new(spec.user.as_str(), spec.groups.iter().map(String::as_str))?;
    let file_stem = spec.user.replace(['/', '\\'], "_");
    let key_path = args
        .key
        .clone()
        .unwrap_or_else(|| args.out_dir.join(format!("{file_stem}.key")));
    let cert_path = args.out_dir.join(format!("{file_stem}.crt"));
    let kubeconfig_path = args.out_dir.join(format!("{file_stem}.kubeconfig"));
    // Refuse to clobber before asking the cluster for anything.
    let mut planned = vec![&cert_path, &kubeconfig_path];
    if args.key.is_none() {
        planned.push(&key_path);
    }
    if !args.force {
        for p in planned {
            if p.exists() {
                bail!(
                    "{}: already exists; pass --force to replace it, or --out-dir",
                    p.display()
                );
            }
        }
    }
    let key = match &args.key {
        Some(path) => {
            PrivateKey::from_pem(&read(path)?).map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        None => PrivateKey::generate(args.key_type_or_default())?,
    };
    let csr_pem = build_csr(&key, &subject, &SubjectAltNames::default())?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_csr_name(&spec.user, &key.public_key().fingerprint_sha256()));
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());

    let existing = api.get_opt(&name).await.context("looking up the CSR")?;
    let reused = existing.is_some();
    if let Some(existing) = &existing {
        let theirs = CertificateRequest::from_pem(&existing.spec.request.0).map_err(|e| {
            anyhow!("CSR {name} already exists and cannot be read ({e}); delete it or pass --name")
        })?;
        if theirs.public_key() != key.public_key() {
            bail!(
                "CSR {name} already exists for another key (requested by {}); pass --key with that key to reuse it, another --name, or delete it: kubectl delete csr {name}",
                existing.spec.username.as_deref().unwrap_or("?")
            );
        }
    } else {
        let object = new_csr(&name, &args.signer_name, csr_pem.into_bytes(), duration);
        api.create(&PostParams::default(), &object)
            .await
            .map_err(|e| anyhow!("creating CSR {name}: {}", api_message(&e)))?;
    }
    let cert_pem = wait_for_certificate(&api, &name, args.timeout, out).await?;
    let info = CertificateInfo::from_pem_chain(cert_pem.as_bytes())
        .map_err(|e| anyhow!("CSR {name}: the issued certificate: {e}"))?;
    if info.public_key() != key.public_key() {
        bail!("CSR {name}: the issued certificate is for another key; refusing to use it");
    }
    let key_pem = key.to_pkcs8_pem()?;
    let exec_args = exec_plugin_args(&cert_path, &key_path, args)?;
    let exe = std::env::current_exe()?.display().to_string();
    let credentials = match &exec_args {
        Some(a) => Credentials::Exec {
            command: &exe,
            args: a,
        },
        None => Credentials::ClientCertificate {
            cert_pem: &cert_pem,
            key_pem: &key_pem,
        },
    };
    let config = kubeconfig::render(cluster, &spec.user, &credentials, args.namespace.as_deref());
    let mut files = vec![
        (
            cert_path.clone(),
            cert_pem.clone().into_bytes(),
            Mode::Public,
        ),
        (
            kubeconfig_path.clone(),
            config.clone().into_bytes(),
            Mode::Private,
        ),
    ];
    if args.key.is_none() {
        files.insert(
            0,
            (key_path.clone(), key_pem.as_bytes().to_vec(), Mode::Private),
        );
    }
    write_all(files, args.force)?;
    if let Some(target) = &args.merge {
        let existing = if target.exists() {
            std::fs::read_to_string(target)?
        } else {
            String::new()
        };
        let merged = kubeconfig::merge(&existing, &config, false)?;
        write_all(
            vec![(target.clone(), merged.into_bytes(), Mode::Private)],
            true,
        )?;
    }
    Ok(Issued {
        user: spec.user.clone(),
        groups: spec.groups.clone(),
        csr: name,
        key: key_path,
        certificate: cert_path,
        kubeconfig: kubeconfig_path,
        context: kubeconfig::context_name(&spec.user, &cluster.name),
        merged_into: args.merge.clone(),
        serial: info.serial,
        not_after: info.not_after,
        reused,
    })
}

/// `kcert credential …` arguments for an exec-plugin kubeconfig (absolute paths: kubectl may
/// run from anywhere).
fn exec_plugin_args(
    cert: &std::path::Path,
    key: &std::path::Path,
    args: &RequestArgs,
) -> Result<Option<Vec<String>>> {
    if !args.exec_plugin {
        return Ok(None);
    }
    let abs = |p: &std::path::Path| -> Result<String> {
        Ok(if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()?.join(p)
        }
        .display()
        .to_string())
    };
    let mut v = vec![
        "credential".to_string(),
        "--cert-file".into(),
        abs(cert)?,
        "--key-file".into(),
        abs(key)?,
        "--signer-name".into(),
        args.signer_name.clone(),
    ];
    if let Some(d) = args.duration {
        v.extend(["--duration".into(), format!("{}s", d.as_secs())]);
    }
    Ok(Some(v))
}

impl RequestArgs {
    fn key_type_or_default(&self) -> KeyType {
        self.key_type
    }
}

/// Metadata of objects kcert creates: the name and `app.kubernetes.io/managed-by: kcert`.
pub(crate) fn managed(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(
            [(
                "app.kubernetes.io/managed-by".to_string(),
                "kcert".to_string(),
            )]
            .into(),
        ),
        ..Default::default()
    }
}

/// A client-certificate CertificateSigningRequest for `request` (PEM).
pub(crate) fn new_csr(
    name: &str,
    signer: &str,
    request: Vec<u8>,
    duration: Option<Duration>,
) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: managed(name),
        spec: CertificateSigningRequestSpec {
            request: ByteString(request),
            signer_name: signer.to_string(),
            usages: Some(
                kcert_pki::CLIENT_USAGES
                    .iter()
                    .map(|u| u.as_str().to_string())
                    .collect(),
            ),
            expiration_seconds: duration.map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX)),
            ..Default::default()
        },
        status: None,
    }
}

/// The API server's message, without the Rust debug wrapping.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// Wait until the CSR has a certificate; Denied/Failed and the timeout end it with their codes.
///
/// Watches the one CSR, so the certificate is picked up the moment it is written; a requester
/// allowed only to `get` CSRs (no `watch`) falls back to reading it every 250 ms.
pub(crate) async fn wait_for_certificate(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    timeout: Duration,
    out: OutputFormat,
) -> Result<String> {
    let mut progress = Progress {
        name,
        timeout,
        out,
        started: Instant::now(),
        tty: std::io::stderr().is_terminal() && out.is_text(),
        said_waiting: false,
        said_approved: false,
        tick: 0,
    };
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = std::pin::pin!(watcher(api.clone(), config).applied_objects());
    let mut watching = true;
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            change = changes.next(), if watching => match change {
                Some(Ok(csr)) => {
                    if let Some(cert) = progress.observe(&csr)? {
                        return Ok(cert);
                    }
                }
                // Typically 403 (no list/watch on CSRs): reading the CSR still works.
                Some(Err(_)) => watching = false,
                None => watching = false,
            },
            _ = ticks.tick() => {
                if !watching {
                    let csr = api
                        .get(name)
                        .await
                        .map_err(|e| anyhow!("reading CSR {name}: {}", api_message(&e)))?;
                    if let Some(cert) = progress.observe(&csr)? {
                        return Ok(cert);
                    }
                }
                progress.tick()?;
            }
        }
    }
}

/// What the wait has told the user so far.
struct Progress<'a> {
    name: &'a str,
    timeout: Duration,
    out: OutputFormat,
    started: Instant,
    tty: bool,
    said_waiting: bool,
    said_approved: bool,
    tick: usize,
}

impl Progress<'_> {
    fn clear_line(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }

    /// The certificate once issued; an error with its exit code if denied or failed.
    fn observe(&mut self, csr: &CertificateSigningRequest) -> Result<Option<String>> {
        let name = self.name;
        let status = csr.status.clone().unwrap_or_default();
        let conditions = status.conditions.unwrap_or_default();
        if let Some(c) = conditions
            .iter()
            .find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
        {
            self.clear_line();
            return Err(Exit {
                code: crate::exit::DENIED,
                message: format!(
                    "CSR {name} was {}: {}: {}",
                    c.type_.to_lowercase(),
                    c.reason.as_deref().unwrap_or("-"),
                    c.message.as_deref().unwrap_or("-")
                ),
                condition: Some(format!(
                    "{}:{}",
                    c.type_,
                    c.reason.as_deref().unwrap_or_default()
                )),
            }
            .into());
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            self.clear_line();
            return String::from_utf8(cert.0)
                .map(Some)
                .map_err(|_| anyhow!("CSR {name}: the certificate is not PEM text"));
        }
        let approved = conditions
            .iter()
            .find(|c| c.type_ == "Approved" && c.status == "True");
        if let (Some(c), false) = (approved, self.said_approved) {
            self.said_approved = true;
            if !self.tty && self.out.is_text() {
                eprintln!(
                    "kcert: CSR {name} approved ({}); waiting for the certificate",
                    c.reason.as_deref().unwrap_or("-")
                );
            }
        }
        Ok(None)
    }

    /// Every 250 ms: the spinner or a first line, and the timeout.
    fn tick(&mut self) -> Result<()> {
        let name = self.name;
        let waiting_for = if self.said_approved {
            "the certificate"
        } else {
            "approval"
        };
        if self.started.elapsed() > self.timeout {
            self.clear_line();
            return Err(Exit {
                code: crate::exit::TIMED_OUT,
                message: format!(
                    "CSR {name}: no {} after {}s; it stays in the cluster: ask an admin (kcert approve {name}) and run the same command again",
                    if self.said_approved { "certificate" } else { "approval" },
                    self.timeout.as_secs()
                ),
                condition: None,
            }
            .into());
        }
        if self.tty {
            let spinner = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            eprint!(
                "\r{} waiting for {waiting_for} of CSR {name} ({}s)",
                spinner[self.tick % spinner.len()],
                self.started.elapsed().as_secs()
            );
            let _ = std::io::stderr().flush();
            self.tick += 1;
        } else if !self.said_waiting && self.out.is_text() {
            eprintln!(
                "kcert: CSR {name} created; waiting for {waiting_for} (timeout {}s)",
                self.timeout.as_secs()
            );
            self.said_waiting = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::default_csr_name;

    #[test]
    fn csr_names_are_valid_dns_names_and_tied_to_the_key() {
        assert_eq!(
            default_csr_name("jane", "AB:CD:EF:01:23:45:67:89:AA"),
            "kcert-jane-abcdef01"
        );
        assert_eq!(
            default_csr_name("Jane Doe@Corp", "00:11:22:33:44"),
            "kcert-jane-doe-corp-00112233"
        );
        assert_eq!(default_csr_name("@@", "00:11:22:33"), "kcert-00112233");
    }
}
