use super::report;
use crate::cli::{CaInitArgs, OutputFormat};
use crate::files::{Mode, write_all};
use anyhow::{Context, Result};
use kcert_pki::{CertificateAuthority, PrivateKey, SystemRandom};
use std::time::{Duration, SystemTime};

pub fn init(args: &CaInitArgs, out: OutputFormat) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create directory", args.out.display()))?;
    let key = PrivateKey::generate(args.key_type)?;
    let lifetime = Duration::from_secs(u64::from(args.days) * 86_400);
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
    let info = ca.info();
    report(
        out,
        serde_json::json!({
            "key": written[0],
            "certificate": written[1],
            "subject": info.subject.to_string(),
            "keyAlgorithm": info.key_algorithm.to_string(),
            "notAfter": info.not_after,
            "fingerprintSha256": info.fingerprint_sha256,
        }),
        || {
            format!(
                "wrote {} and {} ({}, {}, valid until {})",
                written[1].display(),
                written[0].display(),
                info.subject,
                info.key_algorithm,
                info.not_after
            )
        },
    );
    Ok(())
}
