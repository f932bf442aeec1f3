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

/// The user PIN of [`process_token`].
pub const PIN: &str = "kcert-tests-pin";

/// This process's token (label `kcert-tests-<pid>`, PIN [`PIN`]), initialised once, on first
/// use: SoftHSM2 reads its store when the module is loaded, so a token made after that is
/// invisible to the process. Tests of one binary share it, each with key labels of its own.
pub fn process_token() -> Result<String, String> {
    static LABEL: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    LABEL
        .get_or_init(|| {
            let label = format!("kcert-tests-{}", std::process::id());
            init_token(&label, PIN).map(|()| label)
        })
        .clone()
}

/// Held while creating objects in a token (generating a key, storing a certificate): SoftHSM2's
/// file store fails writes made at once from several sessions of a process (CKR_GENERAL_ERROR),
/// so tests that share [`process_token`] take turns. Signing needs no turn.
pub fn writing() -> std::sync::MutexGuard<'static, ()> {
    static STORE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    STORE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A SoftHSM2 configuration at `conf` keeping its tokens in `tokens` (created).
pub fn write_conf(conf: &std::path::Path, tokens: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(tokens).map_err(|e| format!("{}: {e}", tokens.display()))?;
    std::fs::write(
        conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .map_err(|e| format!("{}: {e}", conf.display()))
}

/// A fresh token labelled `label` with user PIN `pin` in SoftHSM2's store (`SOFTHSM2_CONF`,
/// set by the workspace's .cargo/config.toml; its configuration is written if no test has yet).
/// Label it per process and purpose: tokens are never removed by this.
pub fn init_token(label: &str, pin: &str) -> Result<(), String> {
    let conf = PathBuf::from(std::env::var_os("SOFTHSM2_CONF").ok_or(
        "SOFTHSM2_CONF is unset: it is set by .cargo/config.toml; run the tests through cargo",
    )?);
    if !conf.exists() {
        write_conf(&conf, &conf.with_file_name("tokens"))?;
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
