//! `kcert credential`: a client-go exec credential plugin (client.authentication.k8s.io/v1).
//! It serves the cached certificate, and inside the renewal window asks for a new one with the
//! same user and groups, authenticated by the still-valid certificate.

use super::request::{api_message, default_csr_name, wait_for_certificate};
use crate::cli::{CredentialArgs, OutputFormat};
use crate::files::{Mode, read, write_all};
use crate::kubeconfig::{self, ClusterInfo, Credentials};
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_pki::{
    CertificateInfo, CsrSubject, KeyAlgorithm, KeyType, PrivateKey, SubjectAltNames, build_csr,
};
use kube::Api;
use kube::api::PostParams;
use std::time::{Duration, SystemTime};

pub async fn run(args: &CredentialArgs) -> Result<()> {
    // One kcert credential at a time per certificate: kubectl processes started together would
    // otherwise renew twice and could leave one's key beside the other's certificate. The
    // second waits, then reads the pair the first wrote (and finds no renewal due).
    let _lock = lock_beside(&args.cert_file)?;
    let mut cert_pem =
        String::from_utf8(read(&args.cert_file)?).context("the certificate is not text")?;
    let mut key_pem = String::from_utf8(read(&args.key_file)?).context("the key is not text")?;
    let info = CertificateInfo::from_pem_chain(cert_pem.as_bytes())
        .map_err(|e| anyhow!("{}: {e}", args.cert_file.display()))?;
    let now = SystemTime::now();
    let left = info
        .not_after_time()
        .duration_since(now)
        .unwrap_or_default();
    if left.is_zero() {
        bail!(
            "{}: the certificate expired at {}; get a new one with kcert request",
            args.cert_file.display(),
            info.not_after
        );
    }
    let mut not_after = info.not_after_time();
    let marker = denied_marker(&args.cert_file);
    let denied_before =
        read_no_follow(&marker).filter(|m| m.lines().next() == Some(info.serial.as_str()));
    if let Some(m) = &denied_before {
        // A permanent denial for this very certificate: asking again cannot succeed.
        eprintln!(
            "kcert credential: not renewing: {}; serving the current certificate until {}; get a new one with kcert request",
            crate::text::safe(m.lines().nth(1).unwrap_or("renewal denied")),
            info.not_after
        );
    } else if left < args.renew_before {
        match renew(args, &cert_pem, &key_pem, &info).await {
            Ok((c, k, na)) => {
                cert_pem = c;
                key_pem = k;
                not_after = na;
            }
            Err(e) if is_final_denial(&e) => {
                // Staged and renamed: a symlink planted at the marker's name is replaced, never
                // followed.
                let _ = crate::files::Staged::new(
                    &marker,
                    format!("{}\n{e:#}\n", info.serial).as_bytes(),
                    Mode::Private,
                    true,
                )
                .and_then(|f| f.commit());
                eprintln!(
                    "kcert credential: renewal denied for good: {e:#}; not asking again with this certificate (serving it until {}); get a new one with kcert request",
                    info.not_after
                );
            }
            // Still valid: serve it, and try again next time.
            Err(e) => eprintln!(
                "kcert credential: renewal failed, serving the current certificate: {e:#}"
            ),
        }
    }
    // client-go calls us again once this passes: at the start of the next renewal window.
    let next = not_after
        .checked_sub(args.renew_before)
        .filter(|t| *t > now)
        .unwrap_or_else(|| {
            now + Duration::from_secs(60).min(not_after.duration_since(now).unwrap_or_default())
        });
    let credential = serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {
            "clientCertificateData": cert_pem,
            "clientKeyData": key_pem,
            "expirationTimestamp": kcert_pki::time_fmt::rfc3339(next),
        }
    });
    println!("{credential}");
    Ok(())
}

/// Open (creating, 0600) `<cert>.lock` without following a symlink, and hold an exclusive
/// lock on it until the returned file is dropped.
fn lock_beside(cert_file: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = cert_file.as_os_str().to_owned();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| {
            format!(
                "{}: cannot open the lock file (a symlink is refused)",
                path.display()
            )
        })?;
    file.lock()
        .with_context(|| format!("{}: cannot lock", path.display()))?;
    Ok(file)
}

/// A small file's text, or `None` when it is missing, unreadable or a symlink.
fn read_no_follow(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Where a final renewal denial is remembered: beside the certificate, naming its serial.
fn denied_marker(cert_file: &std::path::Path) -> std::path::PathBuf {
    let mut name = cert_file.as_os_str().to_owned();
    name.push(".renewal-denied");
    name.into()
}

/// Denials that no retry with the same certificate can turn around: the certificate itself is
/// revoked, unknown or at the end of its chain. Decided on the condition's reason alone, never
/// on its message (which quotes what was requested). Not final: a Failed condition (the
/// signer's trouble), and ProtectedUser / ProtectedGroup, which RBAC bindings decide and a
/// changed binding lifts.
fn is_final_denial(e: &anyhow::Error) -> bool {
    const FINAL: [&str; 3] = [
        "Denied:CredentialRevoked",
        "Denied:RenewalChainTooOld",
        "Denied:CredentialUnknown",
    ];
    e.downcast_ref::<super::Exit>().is_some_and(|x| {
        x.code == crate::exit::DENIED && x.condition.as_deref().is_some_and(|c| FINAL.contains(&c))
    })
}

/// The cluster client-go tells us about (`provideClusterInfo: true`).
fn cluster_from_exec_info() -> Result<ClusterInfo> {
    let raw = std::env::var("KUBERNETES_EXEC_INFO")
        .map_err(|_| anyhow!("KUBERNETES_EXEC_INFO is not set: run kcert credential from a kubeconfig exec entry with provideClusterInfo: true"))?;
    let info: serde_json::Value =
        serde_json::from_str(&raw).context("KUBERNETES_EXEC_INFO is not JSON")?;
    let cluster = &info["spec"]["cluster"];
    let server = cluster["server"].as_str().ok_or_else(|| {
        anyhow!("KUBERNETES_EXEC_INFO has no cluster server (provideClusterInfo: true?)")
    })?;
    let ca = cluster["certificate-authority-data"]
        .as_str()
        .ok_or_else(|| anyhow!("KUBERNETES_EXEC_INFO has no certificate-authority-data"))?;
    // client-go sends the CA as base64 of the PEM in JSON bytes form.
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .context("certificate-authority-data")?;
    Ok(ClusterInfo {
        name: "exec".into(),
        server: server.to_string(),
        ca_pem,
    })
}

async fn renew(
    args: &CredentialArgs,
    cert_pem: &str,
    key_pem: &str,
    info: &CertificateInfo,
) -> Result<(String, String, SystemTime)> {
    let cluster = cluster_from_exec_info()?;
    let user = info
        .subject
        .common_name
        .clone()
        .ok_or_else(|| anyhow!("the certificate has no CN"))?;
    let yaml = kubeconfig::render(
        &cluster,
        &user,
        &Credentials::ClientCertificate { cert_pem, key_pem },
        None,
    );
    let kc = kube::config::Kubeconfig::from_yaml(&yaml)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let key_type = match info.key_algorithm {
        KeyAlgorithm::Rsa { bits } if bits >= 4096 => KeyType::Rsa4096,
        KeyAlgorithm::Rsa { bits } if bits >= 3072 => KeyType::Rsa3072,
        KeyAlgorithm::Rsa { .. } => KeyType::Rsa2048,
        KeyAlgorithm::EcdsaP384 => KeyType::EcdsaP384,
        KeyAlgorithm::Ed25519 => KeyType::Ed25519,
        _ => KeyType::EcdsaP256,
    };
    let key = PrivateKey::generate(key_type)?;
    let subject = CsrSubject::new(
        user.as_str(),
        info.subject.organizations.iter().map(String::as_str),
    )?;
    let request = build_csr(&key, &subject, &SubjectAltNames::default())?;
    let name = default_csr_name(&user, &key.public_key().fingerprint_sha256());
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let object = super::request::new_csr(
        &name,
        &args.signer_name,
        request.into_bytes(),
        args.duration,
    );
    api.create(&PostParams::default(), &object)
        .await
        .map_err(|e| anyhow!("creating renewal CSR {name}: {}", api_message(&e)))?;
    let new_cert = wait_for_certificate(&api, &name, args.timeout, OutputFormat::Json).await?;
    let new_info = CertificateInfo::from_pem_chain(new_cert.as_bytes())?;
    if new_info.public_key() != key.public_key() {
        bail!("the renewed certificate is for another key");
    }
    let new_key = key.to_pkcs8_pem()?.to_string();
    write_all(
        vec![
            (
                args.key_file.clone(),
                new_key.clone().into_bytes(),
                Mode::Private,
            ),
            (
                args.cert_file.clone(),
                new_cert.clone().into_bytes(),
                Mode::Public,
            ),
        ],
        true,
    )?;
    Ok((new_cert, new_key, new_info.not_after_time()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_and_the_marker_never_follow_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("jane.crt");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("jane.crt.lock")).unwrap();
        assert!(
            lock_beside(&cert).is_err(),
            "a symlinked lock file was followed"
        );
        std::os::unix::fs::symlink(&victim, dir.path().join("jane.crt.renewal-denied")).unwrap();
        assert_eq!(read_no_follow(&denied_marker(&cert)), None);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    }

    #[test]
    fn a_second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("jane.crt");
        let first = lock_beside(&cert).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = cert.clone();
        let second = std::thread::spawn(move || {
            let _held = lock_beside(&path).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the second process did not wait for the lock"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        second.join().unwrap();
    }

    fn denied(condition: &str, message: &str) -> anyhow::Error {
        super::super::Exit {
            code: crate::exit::DENIED,
            message: message.into(),
            condition: Some(condition.into()),
        }
        .into()
    }

    #[test]
    fn only_the_reasons_that_end_a_certificate_are_final() {
        assert!(is_final_denial(&denied(
            "Denied:CredentialRevoked",
            "revoked"
        )));
        assert!(is_final_denial(&denied("Denied:RenewalChainTooOld", "old")));
        // A message that quotes a reason is not that reason.
        assert!(!is_final_denial(&denied(
            "Denied:GroupNotAllowed",
            "group (O) \"CredentialRevoked\" is not allowed"
        )));
        // RBAC made the user privileged: a binding removed later lifts it.
        assert!(!is_final_denial(&denied(
            "Denied:ProtectedUser",
            "user (CN) jane is privileged: RoleBinding kube-system/x binds it …"
        )));
        assert!(!is_final_denial(&denied("Failed:CredentialRevoked", "x")));
    }
}
