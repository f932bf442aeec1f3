use super::report;
use crate::cli::{KeyArgs, OutputFormat};
use crate::files::{Mode, Staged};
use anyhow::Result;
use kcert_pki::PrivateKey;

pub fn run(args: &KeyArgs, out: OutputFormat) -> Result<()> {
    let key = PrivateKey::generate(args.key_type)?;
    let pem = key.to_pkcs8_pem()?;
    let path = Staged::new(&args.out, pem.as_bytes(), Mode::Private, args.force)?.commit()?;
    let fingerprint = key.public_key().fingerprint_sha256();
    report(
        out,
        serde_json::json!({
            "key": path,
            "type": args.key_type.as_str(),
            "algorithm": key.algorithm().to_string(),
            "publicKeySha256": fingerprint,
        }),
        || {
            format!(
                "wrote {} ({}, public key SHA-256 {fingerprint})",
                path.display(),
                key.algorithm()
            )
        },
    );
    Ok(())
}
