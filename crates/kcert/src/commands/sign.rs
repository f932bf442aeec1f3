use super::{in_file, report};
use crate::cli::{OutputFormat, SignArgs};
use crate::files::{Mode, Staged, read};
use anyhow::{Context, Result};
use kcert_pki::{
    CLIENT_USAGES, CertificateAuthority, CertificateInfo, CertificateRequest, SigningProfile,
    SystemRandom, Usage,
};
use std::time::{Duration, SystemTime};

/// openssl x509 -req signs for 30 days unless told otherwise; so do we.
const DEFAULT_DAYS: u32 = 30;

pub fn run(args: &SignArgs, out: OutputFormat) -> Result<()> {
    let now = SystemTime::now();
    let ca_key = read(&args.ca_key)?;
    let ca = CertificateAuthority::load(&read(&args.ca)?, &ca_key, now)
        .map_err(|e| anyhow::anyhow!("{} / {}: {e}", args.ca.display(), args.ca_key.display()))?;
    let csr = CertificateRequest::from_pem(&read(&args.csr)?).map_err(in_file(&args.csr))?;
    let usages = if args.usages.is_empty() {
        CLIENT_USAGES.to_vec()
    } else {
        args.usages
            .iter()
            .map(|u| u.parse::<Usage>())
            .collect::<Result<Vec<_>, _>>()?
    };
    let lifetime = args.duration.unwrap_or_else(|| {
        Duration::from_secs(u64::from(args.days.unwrap_or(DEFAULT_DAYS)) * 86_400)
    });
    let profile = SigningProfile {
        usages,
        max_lifetime: lifetime,
        requested_lifetime: None,
        allow_sans: args.allow_sans,
    };
    let issued = ca
        .sign(&csr, &profile, now, &SystemRandom)
        .map_err(in_file(&args.csr))?;
    let pem = issued.to_pem_with_chain();
    let path = Staged::new(&args.out, pem.as_bytes(), Mode::Public, args.force)?
        .commit()
        .context("writing the certificate")?;
    let info = CertificateInfo::from_der(&issued.der)?;
    report(
        out,
        serde_json::json!({
            "certificate": path,
            "serial": issued.serial,
            "subject": info.subject.to_string(),
            "user": info.subject.common_name,
            "groups": info.subject.organizations,
            "notBefore": info.not_before,
            "notAfter": info.not_after,
            "usages": info.usages,
        }),
        || {
            format!(
                "wrote {} ({}, serial {}, valid until {})",
                path.display(),
                info.subject,
                issued.serial,
                info.not_after
            )
        },
    );
    Ok(())
}
