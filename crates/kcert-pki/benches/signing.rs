//! Signing and key-generation speed, next to `openssl speed` on the same machine.
//! Run: `cargo bench -p kcert-pki --bench signing` (prints a table; not a test).

use kcert_pki::{
    CertificateAuthority, CertificateRequest, CsrSubject, KeyType, PrivateKey, SigningProfile,
    SystemRandom, build_csr,
};
use std::process::Command;
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

/// sign/s from `openssl speed` for `alg` (rsa2048 or ecdsap256), single process.
fn openssl_sign_per_second(alg: &str) -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3", alg])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| {
        l.trim_start().starts_with(if alg == "rsa2048" {
            "rsa"
        } else {
            "256 bits ecdsa"
        })
    })?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // "rsa 2048 bits 0.000804s 0.000026s 1243.3 37809.4": the times end in 's' and do not
    // parse, so the numbers are [bits, sign/s, verify/s]; the ECDSA line has the same shape.
    nums.get(1).copied()
}

fn main() {
    let now = SystemTime::now();
    let user_key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let subject = CsrSubject::new("jane", ["dev", "ops"]).unwrap();
    let csr_pem = build_csr(&user_key, &subject, &Default::default()).unwrap();
    let csr = CertificateRequest::from_pem(csr_pem.as_bytes()).unwrap();
    let profile = SigningProfile::client(Duration::from_secs(86_400));

    println!(
        "kcert-pki signing benchmark ({} s per figure, one thread)",
        RUN.as_secs()
    );
    println!(
        "{:<44} {:>12} {:>14} {:>8}",
        "what", "kcert /s", "openssl /s", "ratio"
    );
    for (label, key_type, openssl_alg) in [
        ("certificate, RSA-2048 CA", KeyType::Rsa2048, "rsa2048"),
        (
            "certificate, ECDSA P-256 CA",
            KeyType::EcdsaP256,
            "ecdsap256",
        ),
    ] {
        let ca = CertificateAuthority::create(
            PrivateKey::generate(key_type).unwrap(),
            "bench-ca",
            Duration::from_secs(86_400 * 30),
            now,
            &SystemRandom,
        )
        .unwrap();
        let sign_only = per_second(|| {
            ca.sign(&csr, &profile, now, &SystemRandom).unwrap();
        });
        let full = per_second(|| {
            let parsed = CertificateRequest::from_pem(csr_pem.as_bytes()).unwrap();
            ca.sign(&parsed, &profile, now, &SystemRandom).unwrap();
        });
        let raw = per_second(|| {
            ca.key()
                .sign(b"a message the size of a small TBS certificate, give or take")
                .unwrap();
        });
        let openssl = openssl_sign_per_second(openssl_alg);
        let ratio = |x: f64| {
            openssl
                .map(|o| format!("{:.2}", x / o))
                .unwrap_or_else(|| "-".into())
        };
        let o = openssl
            .map(|o| format!("{o:.0}"))
            .unwrap_or_else(|| "n/a".into());
        println!(
            "{:<44} {:>12.0} {:>14} {:>8}",
            format!("{label}: sign"),
            sign_only,
            o,
            ratio(sign_only)
        );
        println!(
            "{:<44} {:>12.0} {:>14} {:>8}",
            format!("{label}: parse+verify CSR+sign"),
            full,
            o,
            ratio(full)
        );
        println!(
            "{:<44} {:>12.0} {:>14} {:>8}",
            format!("{label}: raw signature"),
            raw,
            o,
            ratio(raw)
        );
    }
    println!();
    println!("{:<44} {:>12}", "key generation", "ms per key");
    for key_type in KeyType::ALL {
        let n = match key_type {
            KeyType::Rsa2048 => 20,
            KeyType::Rsa3072 => 6,
            KeyType::Rsa4096 => 3,
            _ => 2000,
        };
        let start = Instant::now();
        for _ in 0..n {
            PrivateKey::generate(key_type).unwrap();
        }
        let ms = start.elapsed().as_secs_f64() * 1000.0 / n as f64;
        println!("{:<44} {:>12.3}", key_type.as_str(), ms);
    }
}
