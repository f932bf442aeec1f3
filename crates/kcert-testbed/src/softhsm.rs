//! SoftHSM2 tokens for tests whose CA key lives in a PKCS#11 token (package `softhsm2`, which
//! .ci/run installs).

use std::path::PathBuf;
use std::process::Command;

/// The PKCS#11 module: `$KCERT_PKCS11_MODULE`, else Debian's SoftHSM2.
pub fn module() -> PathBuf {
    std::env::var_os("KCERT_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
}

/// A fresh token labelled `label` with user PIN `pin` in SoftHSM2's store (`SOFTHSM2_CONF`,
/// set by the workspace's .cargo/config.toml; its configuration is written if no test has yet).
/// Label it per process and purpose: tokens are never removed by this.
pub fn init_token(label: &str, pin: &str) -> Result<(), String> {
    let conf = PathBuf::from(std::env::var_os("SOFTHSM2_CONF").ok_or(
        "SOFTHSM2_CONF is unset: it is set by .cargo/config.toml; run the tests through cargo",
    )?);
    let tokens = conf.with_file_name("tokens");
    std::fs::create_dir_all(&tokens).map_err(|e| format!("{}: {e}", tokens.display()))?;
    if !conf.exists() {
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .map_err(|e| format!("{}: {e}", conf.display()))?;
    }
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            "kcert-tests-so",
        ])
        .output()
        .map_err(|e| format!("softhsm2-util (package softhsm2; .ci/run installs it): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "softhsm2-util: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}
