//! Issuance with the CA key in SoftHSM2 against the same CA type with its key in memory,
//! measured in one run, as a ratio. Run: `cargo bench -p kcert-pkcs11 --bench token_signing`
//! (needs the softhsm2 package; prints a table; not a test).

use kcert_pkcs11::{KeySelector, TokenConfig, TokenKey, TokenSelector};
use kcert_pki::{
    CertificateAuthority, CertificateRequest, CsrSubject, KeyType, PrivateKey, SigningProfile,
    SystemRandom, build_csr,
};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const RUN: Duration = Duration::from_secs(3);

fn per_second(mut f: impl FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let conf = PathBuf::from(std::env::var_os("SOFTHSM2_CONF").expect("run through cargo"));
    let tokens = conf.with_file_name("bench-tokens");
    let _ = std::fs::remove_dir_all(&tokens);
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = conf.with_file_name("bench-softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let status = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--pin",
            "bench-pin",
            "--so-pin",
            "bench-so",
        ])
        .status()
        .expect("softhsm2-util runs");
    assert!(status.success());
    // The bench's own store: this process loads the module with it.
    // (SOFTHSM2_CONF cannot be changed in-process here; run the measured part in a child.)
    if std::env::var_os("KCERT_TOKEN_BENCH_CHILD").is_none() {
        let status = Command::new(std::env::current_exe().unwrap())
            .env("SOFTHSM2_CONF", &conf)
            .env("KCERT_TOKEN_BENCH_CHILD", "1")
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    measure();
}

fn measure() {
    let now = SystemTime::now();
    let user_key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let csr_pem = build_csr(
        &user_key,
        &CsrSubject::new("jane", ["dev"]).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let csr = CertificateRequest::from_pem(csr_pem.as_bytes()).unwrap();
    let profile = SigningProfile::client(Duration::from_secs(86_400));
    println!(
        "kcert-pkcs11 issuance benchmark: certificates/s, one thread, {} s per figure, SoftHSM2 against the key in memory",
        RUN.as_secs()
    );
    println!("| CA key | in memory | in SoftHSM2 | token / memory |\n|---|---|---|---|");
    for key_type in [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
    ] {
        let memory = CertificateAuthority::create(
            PrivateKey::generate(key_type).unwrap(),
            "memory",
            Duration::from_secs(86_400),
            now,
            &SystemRandom,
        )
        .unwrap();
        let token = TokenKey::generate(
            TokenConfig {
                module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
                token: TokenSelector::Label("bench".into()),
                key: KeySelector::Label(format!("bench-{key_type}")),
                pin: "bench-pin".to_string().into(),
            },
            key_type,
        )
        .unwrap();
        let in_token = CertificateAuthority::create_with_key(
            Arc::new(token),
            "token",
            Duration::from_secs(86_400),
            now,
            &SystemRandom,
        )
        .unwrap();
        let m = per_second(|| {
            memory.sign(&csr, &profile, now, &SystemRandom).unwrap();
        });
        let t = per_second(|| {
            in_token.sign(&csr, &profile, now, &SystemRandom).unwrap();
        });
        println!("| {key_type} | {m:.0} | {t:.0} | {:.2} |", t / m);
    }
}
