use super::report;
use crate::cli::{CaInitArgs, OutputFormat};
use crate::files::{Mode, write_all};
use anyhow::{Context, Result};
use kcert_pki::{CertificateAuthority, PrivateKey, SystemRandom};
use std::time::{Duration, SystemTime};

pub fn init(args: &CaInitArgs, out: OutputFormat) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create directory", args.out.display()))?;
    let lifetime = Duration::from_secs(u64::from(args.days) * 86_400);
    if let Some(module) = &args.pkcs11_module {
        return init_in_token(args, module, lifetime, out);
    }
    let key = PrivateKey::generate(args.key_type)?;
    let ca =
        CertificateAuthority::create(key, &args.name, lifetime, SystemTime::now(), &SystemRandom)?;
    let key_pem = ca
        .private_key()
        .expect("a CA created from a key in memory")
        .to_pkcs8_pem()?;
    let written = write_all(
        vec![
            (
                args.out.join("ca.key"),
                key_pem.as_bytes().to_vec(),
                Mode::Private,
            ),
            (
                args.out.join("ca.crt"),
                ca.certificate_pem().into_bytes(),
                Mode::Public,
            ),
        ],
        args.force,
    )?;
    report_ca(
        out,
        &ca,
        &written[1],
        serde_json::json!(written[0]),
        &format!("and {}", written[0].display()),
    );
    Ok(())
}

/// What `kcert ca init` made: the certificate written to `cert`, the key (`key` in JSON,
/// `key_text` after the certificate's path in the text).
fn report_ca(
    out: OutputFormat,
    ca: &CertificateAuthority,
    cert: &std::path::Path,
    key: serde_json::Value,
    key_text: &str,
) {
    let info = ca.info();
    report(
        out,
        serde_json::json!({
            "key": key,
            "certificate": cert,
            "subject": info.subject.to_string(),
            "keyAlgorithm": info.key_algorithm.to_string(),
            "notAfter": info.not_after,
            "fingerprintSha256": info.fingerprint_sha256,
        }),
        || {
            format!(
                "wrote {} {key_text} ({}, {}, valid until {})",
                cert.display(),
                info.subject,
                info.key_algorithm,
                info.not_after
            )
        },
    );
}

/// `kcert ca init --pkcs11-module`: the key generated in the token, the certificate signed
/// there, only ca.crt written.
fn init_in_token(
    args: &CaInitArgs,
    module: &std::path::Path,
    lifetime: Duration,
    out: OutputFormat,
) -> Result<()> {
    let config = kcert_pkcs11::TokenConfig {
        module: module.to_path_buf(),
        token: kcert_pkcs11::TokenSelector::Label(
            args.pkcs11_token
                .clone()
                .context("--pkcs11-module needs --pkcs11-token")?,
        ),
        key: kcert_pkcs11::KeySelector::Label(args.pkcs11_key_label.clone()),
        pin: kcert_pkcs11::read_pin(args.pkcs11_pin_file.as_deref(), "KCERT_CA_PKCS11_PIN")
            .map_err(anyhow::Error::msg)?,
    };
    let cert_path = args.out.join("ca.crt");
    if cert_path.exists() && !args.force {
        anyhow::bail!(
            "{} exists; pass --force to replace it (the token's keys are never replaced)",
            cert_path.display()
        );
    }
    let key = std::sync::Arc::new(kcert_pkcs11::TokenKey::generate(config, args.key_type)?);
    let location = kcert_pki::CaKey::location(key.as_ref());
    let ca = CertificateAuthority::create_with_key(
        key.clone(),
        &args.name,
        lifetime,
        SystemTime::now(),
        &SystemRandom,
    )?;
    // Kept in the token too, beside the key: kcert-controller then needs no --ca-cert.
    key.store_certificate(ca.certificate_der())?;
    let written = write_all(
        vec![(cert_path, ca.certificate_pem().into_bytes(), Mode::Public)],
        args.force,
    )?;
    report_ca(
        out,
        &ca,
        &written[0],
        serde_json::json!(location),
        &format!("(also kept in the token); the key is in the {location}"),
    );
    Ok(())
}
