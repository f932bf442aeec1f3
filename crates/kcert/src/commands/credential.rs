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
    let mut cert_pem =
        String::from_utf8(read(&args.cert_file)?).context("the certificate is not text")?;
    let mut key_pem = String::from_utf8(read(&args.key_file)?).context("the key is not text")?;
    let info = CertificateInfo::from_pem(cert_pem.as_bytes())
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
    let denied_before = std::fs::read_to_string(&marker)
        .ok()
        .filter(|m| m.lines().next() == Some(info.serial.as_str()));
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
                let _ = std::fs::write(&marker, format!("{}\n{e:#}\n", info.serial));
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

/// Where a final renewal denial is remembered: beside the certificate, naming its serial.
fn denied_marker(cert_file: &std::path::Path) -> std::path::PathBuf {
    let mut name = cert_file.as_os_str().to_owned();
    name.push(".renewal-denied");
    name.into()
}

/// Denials that no retry with the same certificate can turn around.
fn is_final_denial(e: &anyhow::Error) -> bool {
    e.downcast_ref::<super::Exit>().is_some_and(|x| {
        x.code == crate::exit::DENIED
            && [
                "CredentialRevoked",
                "RenewalChainTooOld",
                "CredentialUnknown",
            ]
            .iter()
            .any(|r| x.message.contains(r))
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
    let new_info = CertificateInfo::from_pem(new_cert.as_bytes())?;
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
