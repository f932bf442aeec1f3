//! The CA key in a real PKCS#11 token: SoftHSM2 (Debian package `softhsm2`; .ci/run installs
//! it). One token per test binary, one key label per test.

use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass};
use kcert_pkcs11::{KeySelector, TokenConfig, TokenError, TokenKey, TokenSelector};
use kcert_pki::{
    CaKey, CertificateAuthority, CertificateRequest, CsrSubject, KeyType, PkiError, PrivateKey,
    SigningProfile, SubjectAltNames, SystemRandom, build_csr,
};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

const TOKEN: &str = "kcert-test";
const PIN: &str = "1234-user";
/// Set in a child process this binary starts to check what only a first login shows.
const CHILD: &str = "KCERT_PKCS11_TEST_CHILD";

fn module() -> PathBuf {
    let path = std::env::var_os("KCERT_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
    assert!(
        path.exists(),
        "{} is missing: install SoftHSM2 (`apt-get install softhsm2`, as .ci/run does) or set KCERT_PKCS11_MODULE",
        path.display()
    );
    path
}

/// The test binary's token: SoftHSM2's configuration at `SOFTHSM2_CONF` (the workspace's
/// .cargo/config.toml points it into the work tree), a fresh token directory beside it, and
/// one token initialised with `softhsm2-util` before the module is loaded in this process.
fn token() -> &'static PathBuf {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let conf = PathBuf::from(
            std::env::var_os("SOFTHSM2_CONF")
                .expect("SOFTHSM2_CONF is set by .cargo/config.toml; run the tests through cargo"),
        );
        if std::env::var_os(CHILD).is_some() {
            // A child of a test of this binary: the parent's token, as it is.
            return conf;
        }
        fresh_store(&conf, &conf.with_file_name("tokens"));
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                TOKEN,
                "--pin",
                PIN,
                "--so-pin",
                "5678-so",
            ])
            .output()
            .expect("softhsm2-util (package softhsm2) runs");
        assert!(
            out.status.success(),
            "softhsm2-util: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        conf
    })
}

/// One test at a time in this process: SoftHSM2's file store fails writes made at once from
/// several sessions (CKR_GENERAL_ERROR on key generation, seen about one run in three).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static STORE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    STORE.lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty SoftHSM2 store: `tokens` emptied, `conf` pointing at it.
fn fresh_store(conf: &std::path::Path, tokens: &std::path::Path) {
    let _ = std::fs::remove_dir_all(tokens);
    std::fs::create_dir_all(tokens).unwrap();
    std::fs::write(
        conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
}

fn config(key_label: &str) -> TokenConfig {
    token();
    TokenConfig {
        module: module(),
        token: TokenSelector::Label(TOKEN.into()),
        key: KeySelector::Label(key_label.into()),
        pin: PIN.to_string().into(),
    }
}

fn sign_client(ca: &CertificateAuthority) -> String {
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let subject = CsrSubject::new("jane", ["dev"]).unwrap();
    let csr = build_csr(&key, &subject, &SubjectAltNames::default()).unwrap();
    ca.sign(
        &CertificateRequest::from_pem(csr.as_bytes()).unwrap(),
        &SigningProfile::client(Duration::from_secs(3600)),
        SystemTime::now(),
        &SystemRandom,
    )
    .unwrap()
    .to_pem()
}

fn openssl_verifies(ca_pem: &str, leaf_pem: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca_pem).unwrap();
    std::fs::write(dir.path().join("leaf.crt"), leaf_pem).unwrap();
    let out = Command::new("openssl")
        .current_dir(dir.path())
        .args(["verify", "-CAfile", "ca.crt", "leaf.crt"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn a_ca_whose_key_is_in_the_token_issues_what_openssl_accepts() {
    let _serial = serial();
    for key_type in [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ] {
        let label = format!("ca-{key_type}");
        let key = Arc::new(TokenKey::generate(config(&label), key_type).unwrap());
        assert!(key.location().contains(TOKEN), "{}", key.location());
        let ca = CertificateAuthority::create_with_key(
            key,
            &format!("kcert test CA {key_type}"),
            Duration::from_secs(86_400),
            SystemTime::now(),
            &SystemRandom,
        )
        .unwrap();
        assert!(ca.private_key().is_none(), "a token's key is not in memory");
        let leaf = sign_client(&ca);
        openssl_verifies(&ca.certificate_pem(), &leaf)
            .unwrap_or_else(|e| panic!("{key_type}: openssl refused the leaf: {e}"));
        // Opened again (a restarted controller): the same CA certificate pairs with it.
        let again = Arc::new(TokenKey::open(config(&label)).unwrap());
        let loaded = CertificateAuthority::with_key(
            ca.certificate_pem().as_bytes(),
            again,
            SystemTime::now(),
        )
        .unwrap();
        openssl_verifies(&ca.certificate_pem(), &sign_client(&loaded)).unwrap();
    }
}

#[test]
fn the_private_key_cannot_be_read_out_of_the_token() {
    let _serial = serial();
    let cfg = config("ca-unreadable");
    TokenKey::generate(cfg.clone(), KeyType::Rsa2048).unwrap();
    let session = kcert_pkcs11::session(&cfg).unwrap();
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ca-unreadable".to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let secret = [
        AttributeType::Value,
        AttributeType::PrivateExponent,
        AttributeType::Prime1,
        AttributeType::Prime2,
    ];
    // Either the token refuses (CKR_ATTRIBUTE_SENSITIVE) or it returns none of them.
    if let Ok(got) = session.get_attributes(keys[0], &secret) {
        assert!(
            got.iter().all(|a| !matches!(
                a,
                Attribute::Value(_)
                    | Attribute::PrivateExponent(_)
                    | Attribute::Prime1(_)
                    | Attribute::Prime2(_)
            )),
            "the token gave out private key material"
        );
    }
    let flags = session
        .get_attributes(
            keys[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
            ],
        )
        .unwrap();
    assert!(flags.contains(&Attribute::Sensitive(true)), "{flags:?}");
    assert!(flags.contains(&Attribute::Extractable(false)), "{flags:?}");
    assert!(
        flags.contains(&Attribute::NeverExtractable(true)),
        "{flags:?}"
    );
}

#[test]
fn a_key_that_could_leave_the_token_is_refused() {
    let _serial = serial();
    let cfg = config("ca-loose");
    let session = kcert_pkcs11::session(&cfg).unwrap();
    let label = b"ca-loose".to_vec();
    session
        .generate_key_pair(
            &cryptoki::mechanism::Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Label(label.clone()),
                // P-256
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sign(true),
                Attribute::Label(label),
                Attribute::KeyType(CkKeyType::EC),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ],
        )
        .unwrap();
    let err = TokenKey::open(cfg).unwrap_err();
    assert!(matches!(err, TokenError::Extractable { .. }), "{err}");
    assert!(err.to_string().contains("cannot leave its token"), "{err}");
}

#[test]
fn an_unknown_token_or_a_missing_key_says_what_to_fix() {
    let _serial = serial();
    let good = config("ca-errors");
    TokenKey::generate(good.clone(), KeyType::EcdsaP256).unwrap();

    let mut no_token = good.clone();
    no_token.token = TokenSelector::Label("not-there".into());
    let err = TokenKey::open(no_token).unwrap_err();
    assert!(matches!(err, TokenError::NoToken { .. }), "{err}");
    assert!(
        err.to_string().contains(TOKEN),
        "names the tokens present: {err}"
    );

    let mut no_key = good.clone();
    no_key.key = KeySelector::Label("never-made".into());
    let err = TokenKey::open(no_key).unwrap_err();
    assert!(matches!(err, TokenError::NoKey { .. }), "{err}");

    let err = TokenKey::generate(good, KeyType::EcdsaP256).unwrap_err();
    assert!(
        matches!(err, TokenError::KeyExists { .. }),
        "generate must not shadow a key: {err}"
    );

    let err = TokenKey::generate(config("ca-ed"), KeyType::Ed25519).unwrap_err();
    assert!(matches!(err, TokenError::UnsupportedKeyType(_)), "{err}");
}

#[test]
fn a_ca_certificate_of_another_key_does_not_pair_with_the_tokens() {
    let _serial = serial();
    let a = Arc::new(TokenKey::generate(config("ca-pair-a"), KeyType::EcdsaP256).unwrap());
    let b = Arc::new(TokenKey::generate(config("ca-pair-b"), KeyType::EcdsaP256).unwrap());
    let ca_a = CertificateAuthority::create_with_key(
        a,
        "A",
        Duration::from_secs(86_400),
        SystemTime::now(),
        &SystemRandom,
    )
    .unwrap();
    let err =
        CertificateAuthority::with_key(ca_a.certificate_pem().as_bytes(), b, SystemTime::now())
            .unwrap_err();
    assert!(matches!(err, PkiError::CaKeyMismatch), "{err}");
}

#[test]
fn the_ca_certificate_is_kept_in_the_token_beside_its_key_and_replaced_not_doubled() {
    let _serial = serial();
    let key = Arc::new(TokenKey::generate(config("ca-with-cert"), KeyType::EcdsaP256).unwrap());
    assert_eq!(key.certificate().unwrap(), None);
    let make = |name: &str| {
        CertificateAuthority::create_with_key(
            key.clone(),
            name,
            Duration::from_secs(86_400),
            SystemTime::now(),
            &SystemRandom,
        )
        .unwrap()
    };
    let first = make("first");
    key.store_certificate(first.certificate_der()).unwrap();
    assert_eq!(
        key.certificate().unwrap().as_deref(),
        Some(first.certificate_der())
    );
    // Re-issued for the same key: the new one replaces it (one certificate under the label).
    let second = make("second");
    key.store_certificate(second.certificate_der()).unwrap();
    let stored = key.certificate().unwrap().unwrap();
    assert_eq!(stored, second.certificate_der());
    // What the controller does with it: pair it with the key, again from a fresh open.
    let reopened = Arc::new(TokenKey::open(config("ca-with-cert")).unwrap());
    let pem = kcert_pki::pem::encode("CERTIFICATE", &reopened.certificate().unwrap().unwrap());
    let ca = CertificateAuthority::with_key(pem.as_bytes(), reopened, SystemTime::now()).unwrap();
    assert_eq!(ca.info().subject.to_string(), "CN=second");
    sign_client(&ca);
    // Another key's label has no certificate.
    let other = TokenKey::generate(config("ca-without-cert"), KeyType::EcdsaP256).unwrap();
    assert_eq!(other.certificate().unwrap(), None);
}

#[test]
fn signatures_from_many_threads_share_the_session_pool() {
    let _serial = serial();
    let key = Arc::new(TokenKey::generate(config("ca-threads"), KeyType::EcdsaP256).unwrap());
    let ca = Arc::new(
        CertificateAuthority::create_with_key(
            key,
            "threads",
            Duration::from_secs(86_400),
            SystemTime::now(),
            &SystemRandom,
        )
        .unwrap(),
    );
    let leaves: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let ca = ca.clone();
                s.spawn(move || (0..5).map(|_| sign_client(&ca)).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(leaves.len(), 40);
    for leaf in &leaves {
        ca.verify_issued(&kcert_pki::pem::parse_blocks(leaf.as_bytes()).unwrap()[0].der)
            .unwrap();
    }
}

/// The token checks a PIN at a process's first login only (PKCS#11 logins are per application
/// and token), so the wrong PIN is tried in a process of its own: this binary again, running
/// just this test, on the parent's token.
#[test]
fn a_wrong_pin_is_refused_and_never_printed() {
    let _serial = serial();
    if std::env::var_os(CHILD).is_some() {
        let mut wrong_pin = config("ca-pin");
        wrong_pin.pin = "0000-wrong".to_string().into();
        let err = TokenKey::open(wrong_pin).unwrap_err();
        assert!(matches!(err, TokenError::Pin { .. }), "{err}");
        assert!(err.to_string().contains("PIN"), "{err}");
        assert!(
            !err.to_string().contains("0000-wrong"),
            "the PIN must not be printed: {err}"
        );
        // The right PIN in the same process works (nothing was locked by one failure).
        TokenKey::open(config("ca-pin")).unwrap();
        return;
    }
    TokenKey::generate(config("ca-pin"), KeyType::EcdsaP256).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "1")
        .args([
            "--exact",
            "a_wrong_pin_is_refused_and_never_printed",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "the child failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A token removed while kcert signs with it (here: deleted from SoftHSM2's store, in a child
/// process whose module has it loaded): the next signature is `CaKeyUnavailable`, which the
/// signer treats as the key being away (the CSR waits and is retried in 5 s; no certificate,
/// no Failed), never a panic or a certificate, and opening the key again names the token.
#[test]
fn a_token_removed_mid_run_is_an_error_never_a_certificate() {
    let _serial = serial();
    const REMOVABLE: &str = "kcert-removable";
    if std::env::var_os(CHILD).is_some() {
        let config = TokenConfig {
            token: TokenSelector::Label(REMOVABLE.into()),
            ..config("ca-removable")
        };
        let key = Arc::new(TokenKey::generate(config.clone(), KeyType::EcdsaP256).unwrap());
        let ca = CertificateAuthority::create_with_key(
            key,
            "removable",
            Duration::from_secs(3600),
            SystemTime::now(),
            &SystemRandom,
        )
        .unwrap();
        sign_client(&ca);
        let out = Command::new("softhsm2-util")
            .args(["--delete-token", "--token", REMOVABLE])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key_pem = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let subject = CsrSubject::new("jane", ["dev"]).unwrap();
        let csr = build_csr(&key_pem, &subject, &SubjectAltNames::default()).unwrap();
        let csr = CertificateRequest::from_pem(csr.as_bytes()).unwrap();
        let signed = ca.sign(
            &csr,
            &SigningProfile::client(Duration::from_secs(600)),
            SystemTime::now(),
            &SystemRandom,
        );
        match signed {
            Err(PkiError::CaKeyUnavailable { .. }) => {}
            Ok(_) => panic!("a removed token signed"),
            Err(e) => panic!("a removed token must read as the key being away, not: {e}"),
        }
        let err = TokenKey::open(config).unwrap_err();
        assert!(err.to_string().contains(REMOVABLE), "{err}");
        return;
    }
    // A store of its own, so that removing the token never disturbs this process's tests.
    let conf = token().with_file_name("softhsm2-removable.conf");
    fresh_store(&conf, &conf.with_file_name("tokens-removable"));
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            REMOVABLE,
            "--pin",
            PIN,
            "--so-pin",
            "5678-so",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "1")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--exact",
            "a_token_removed_mid_run_is_an_error_never_a_certificate",
            "--test-threads=1",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "the child failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
