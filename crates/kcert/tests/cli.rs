//! The offline CLI, judged by openssl: what kcert writes openssl accepts, and what openssl
//! writes kcert accepts. Bad input fails with one line naming the file, and writes nothing.

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    fn p(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).display().to_string()
    }
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.0.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn kcert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kcert"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kcert runs")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Exit 1 and a single stderr line containing every needle.
fn fails(out: Output, needles: &[&str]) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err}");
    }
    err
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn json(out: Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn ca(d: &Dir, key_type: &str) -> (String, String) {
    ok(kcert(&[
        "ca",
        "init",
        "--out",
        &d.s("ca"),
        "--type",
        key_type,
        "--days",
        "30",
    ]));
    (d.s("ca/ca.crt"), d.s("ca/ca.key"))
}

#[test]
fn every_key_type_makes_csrs_and_certificates_openssl_accepts() {
    let d = Dir::new();
    let (ca_crt, ca_key) = ca(&d, "rsa:2048");
    for t in [
        "ecdsa-p256",
        "ecdsa-p384",
        "ed25519",
        "rsa:2048",
        "rsa:3072",
    ] {
        let name = t.replace(':', "-");
        let key = d.s(&format!("{name}.key"));
        let csr = d.s(&format!("{name}.csr"));
        let crt = d.s(&format!("{name}.crt"));
        ok(kcert(&["key", "--type", t, "--out", &key]));
        assert_eq!(mode(Path::new(&key)), 0o600);
        openssl(&["pkey", "-in", &key, "-noout"]);
        ok(kcert(&[
            "csr", "--user", "jane", "--group", "dev", "--group", "ops", "--key", &key, "--out",
            &csr,
        ]));
        assert!(openssl(&["req", "-in", &csr, "-verify", "-noout"]).contains("verify OK"));
        ok(kcert(&[
            "sign", "--ca", &ca_crt, "--ca-key", &ca_key, "--csr", &csr, "--days", "7", "--out",
            &crt,
        ]));
        assert!(
            openssl(&["verify", "-CAfile", &ca_crt, &crt]).contains(": OK"),
            "{t}"
        );
        let subject = openssl(&[
            "x509", "-in", &crt, "-noout", "-subject", "-nameopt", "RFC2253",
        ]);
        assert_eq!(subject.trim(), "subject=O=ops,O=dev,CN=jane", "{t}");
        // The certificate certifies the key we made.
        let cert_pub = openssl(&["x509", "-in", &crt, "-noout", "-pubkey"]);
        let key_pub = openssl(&["pkey", "-in", &key, "-pubout"]);
        assert_eq!(cert_pub, key_pub, "{t}");
    }
}

#[test]
fn openssl_x509_text_shows_the_usages_validity_and_identifiers_we_intended() {
    let d = Dir::new();
    let (ca_crt, ca_key) = ca(&d, "ecdsa-p256");
    ok(kcert(&["key", "--out", &d.s("k")]));
    ok(kcert(&[
        "csr",
        "-u",
        "jane",
        "-g",
        "dev",
        "-k",
        &d.s("k"),
        "--out",
        &d.s("c"),
    ]));
    let before = std::time::SystemTime::now();
    let out = json(kcert(&[
        "sign",
        "--ca",
        &ca_crt,
        "--ca-key",
        &ca_key,
        "--csr",
        &d.s("c"),
        "--duration",
        "2h",
        "--out",
        &d.s("crt"),
        "--output",
        "json",
    ]));
    let text = openssl(&["x509", "-in", &d.s("crt"), "-noout", "-text"]);
    assert!(
        text.contains("Digital Signature, Key Encipherment"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    // 2 h is below 8 h: NotBefore is backdated 5 minutes, NotAfter is a full 2 h from now.
    let end = openssl(&[
        "x509",
        "-in",
        &d.s("crt"),
        "-noout",
        "-enddate",
        "-dateopt",
        "iso_8601",
    ]);
    let start = openssl(&[
        "x509",
        "-in",
        &d.s("crt"),
        "-noout",
        "-startdate",
        "-dateopt",
        "iso_8601",
    ]);
    let secs = |line: &str| -> i64 {
        let v = line.trim().split_once('=').unwrap().1;
        let out = Command::new("date")
            .args(["-u", "-d", v, "+%s"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let now = before
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((secs(&end) - now - 7200).abs() <= 10, "{end}");
    assert!((now - secs(&start) - 300).abs() <= 10, "{start}");
    assert_eq!(out["user"], "jane");
    assert_eq!(out["groups"], serde_json::json!(["dev"]));
    let serial = openssl(&["x509", "-in", &d.s("crt"), "-noout", "-serial"]);
    assert_eq!(
        serial.trim().trim_start_matches("serial=").to_lowercase(),
        out["serial"].as_str().unwrap()
    );
}

#[test]
fn keys_and_csrs_made_by_openssl_are_accepted() {
    let d = Dir::new();
    let (ca_crt, ca_key) = ca(&d, "rsa:2048");
    let keys: &[(&str, &[&str])] = &[
        ("genrsa-pkcs8", &["genrsa", "-out", "KEY", "2048"]),
        (
            "genrsa-pkcs1",
            &["genrsa", "-traditional", "-out", "KEY", "2048"],
        ),
        (
            "ecparam-p256",
            &["ecparam", "-name", "prime256v1", "-genkey", "-out", "KEY"],
        ),
        (
            "ecparam-p384",
            &[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                "KEY",
            ],
        ),
        (
            "genpkey-ed25519",
            &["genpkey", "-algorithm", "ed25519", "-out", "KEY"],
        ),
    ];
    for (name, args) in keys {
        let key = d.s(&format!("{name}.key"));
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "KEY" { key.as_str() } else { a })
            .collect();
        openssl(&args);
        let info = json(kcert(&["inspect", &key, "-o", "json"]));
        assert_eq!(info["objects"][0]["kind"], "private-key", "{name}");
        // Our CSR from their key.
        let ours = d.s(&format!("{name}.ours.csr"));
        ok(kcert(&[
            "csr", "-u", "jane", "-g", "dev", "-k", &key, "--out", &ours,
        ]));
        assert!(
            openssl(&["req", "-in", &ours, "-verify", "-noout"]).contains("verify OK"),
            "{name}"
        );
        // Their CSR, several O, from their key.
        let theirs = d.s(&format!("{name}.theirs.csr"));
        openssl(&[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            "/CN=jane/O=dev/O=ops/O=qa",
            "-out",
            &theirs,
        ]);
        let crt = d.s(&format!("{name}.crt"));
        ok(kcert(&[
            "sign", "--ca", &ca_crt, "--ca-key", &ca_key, "--csr", &theirs, "--out", &crt,
        ]));
        assert!(openssl(&["verify", "-CAfile", &ca_crt, &crt]).contains(": OK"));
        let info = json(kcert(&["inspect", &crt, "-o", "json"]));
        assert_eq!(
            info["objects"][0]["groups"],
            serde_json::json!(["dev", "ops", "qa"]),
            "{name}"
        );
    }
}

#[test]
fn a_ca_made_by_openssl_signs_and_chains() {
    let d = Dir::new();
    for (name, newkey) in [("rsa", "rsa:2048"), ("ec", "ec")] {
        let crt = d.s(&format!("{name}-ca.crt"));
        let key = d.s(&format!("{name}-ca.key"));
        let mut args = vec!["req", "-x509", "-newkey", newkey];
        if name == "ec" {
            args.extend(["-pkeyopt", "ec_paramgen_curve:prime256v1"]);
        }
        args.extend([
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            "/CN=openssl-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ]);
        openssl(&args);
        ok(kcert(&["key", "--out", &d.s(&format!("{name}.key"))]));
        ok(kcert(&[
            "csr",
            "-u",
            "jane",
            "-k",
            &d.s(&format!("{name}.key")),
            "--out",
            &d.s(&format!("{name}.csr")),
        ]));
        // 30 days asked of a CA that lives 2: the certificate stops with the CA.
        ok(kcert(&[
            "sign",
            "--ca",
            &crt,
            "--ca-key",
            &key,
            "--csr",
            &d.s(&format!("{name}.csr")),
            "--out",
            &d.s(&format!("{name}.crt")),
        ]));
        assert!(
            openssl(&["verify", "-CAfile", &crt, &d.s(&format!("{name}.crt"))]).contains(": OK")
        );
        let leaf_end = openssl(&[
            "x509",
            "-in",
            &d.s(&format!("{name}.crt")),
            "-noout",
            "-enddate",
        ]);
        let ca_end = openssl(&["x509", "-in", &crt, "-noout", "-enddate"]);
        assert_eq!(leaf_end, ca_end);
    }
}

#[test]
fn bad_input_fails_with_one_line_naming_the_file_and_writes_nothing() {
    let d = Dir::new();
    let (ca_crt, ca_key) = ca(&d, "ecdsa-p256");
    ok(kcert(&["key", "--out", &d.s("k")]));
    ok(kcert(&[
        "csr",
        "-u",
        "jane",
        "-g",
        "dev",
        "-k",
        &d.s("k"),
        "--out",
        &d.s("good.csr"),
    ]));
    std::fs::write(d.p("text.csr"), "hello, not PEM\n").unwrap();
    let good = std::fs::read_to_string(d.p("good.csr")).unwrap();
    let der = openssl(&[
        "req",
        "-in",
        &d.s("good.csr"),
        "-outform",
        "DER",
        "-out",
        &d.s("good.der"),
    ]);
    let _ = der;
    let der = std::fs::read(d.p("good.der")).unwrap();
    // Corrupt DER: cut the body short but keep valid base64 armour.
    let cut = kcert_pem("CERTIFICATE REQUEST", &der[..der.len() - 20]);
    std::fs::write(d.p("cut.csr"), cut).unwrap();
    // Tampered: "dev" becomes "Dev", so the signature no longer matches.
    let at = der.windows(3).position(|w| w == b"dev").unwrap();
    let mut tampered = der.clone();
    tampered[at] = b'D';
    std::fs::write(
        d.p("tampered.csr"),
        kcert_pem("CERTIFICATE REQUEST", &tampered),
    )
    .unwrap();
    // RSA 1024, made by openssl.
    openssl(&["genrsa", "-out", &d.s("weak.key"), "1024"]);
    openssl(&[
        "req",
        "-new",
        "-key",
        &d.s("weak.key"),
        "-subj",
        "/CN=weak",
        "-out",
        &d.s("weak.csr"),
    ]);
    // A CA key that is not the CA certificate's.
    ok(kcert(&["key", "--out", &d.s("other.key")]));
    let before = d.files();

    let sign = |csr: &str, key: &str| {
        kcert(&[
            "sign",
            "--ca",
            &ca_crt,
            "--ca-key",
            key,
            "--csr",
            &d.s(csr),
            "--out",
            &d.s("out.crt"),
        ])
    };
    fails(sign("text.csr", &ca_key), &["text.csr", "not PEM"]);
    fails(
        sign("cut.csr", &ca_key),
        &["cut.csr", "corrupt certificate request"],
    );
    fails(
        sign("tampered.csr", &ca_key),
        &["tampered.csr", "signature does not verify"],
    );
    fails(
        sign("weak.csr", &ca_key),
        &["weak.csr", "1024 bits", "at least 2048"],
    );
    fails(
        kcert(&[
            "sign",
            "--ca",
            &ca_crt,
            "--ca-key",
            &ca_crt,
            "--csr",
            &d.s("good.csr"),
            "--out",
            &d.s("out.crt"),
        ]),
        &["wrong PEM type 'CERTIFICATE'"],
    );
    fails(
        sign("good.csr", &d.s("other.key")),
        &["ca.crt", "does not match"],
    );
    fails(
        kcert(&[
            "sign",
            "--ca",
            &d.s("good.csr"),
            "--ca-key",
            &ca_key,
            "--csr",
            &d.s("good.csr"),
            "--out",
            &d.s("out.crt"),
        ]),
        &["good.csr", "wrong PEM type 'CERTIFICATE REQUEST'"],
    );
    fails(
        kcert(&[
            "csr",
            "-u",
            "w",
            "-k",
            &d.s("weak.key"),
            "--out",
            &d.s("w.csr"),
        ]),
        &["weak.key", "1024 bits"],
    );
    fails(
        kcert(&["inspect", &d.s("text.csr")]),
        &["text.csr", "not PEM and not a kubeconfig"],
    );
    fails(
        kcert(&[
            "csr",
            "-u",
            "jane",
            "-g",
            "system:masters ",
            "-k",
            &d.s("k"),
            "--out",
            &d.s("w.csr"),
        ]),
        &["whitespace"],
    );
    // A CSR asking for SANs is refused by the client profile.
    ok(kcert(&[
        "csr",
        "-u",
        "web",
        "--dns",
        "example.test",
        "-k",
        &d.s("k"),
        "--out",
        &d.s("san.csr"),
    ]));
    fails(
        sign("san.csr", &ca_key),
        &["subject alternative names", "DNS:example.test"],
    );
    fails(
        kcert(&[
            "sign",
            "--ca",
            &ca_crt,
            "--ca-key",
            &ca_key,
            "--csr",
            &d.s("good.csr"),
            "--usage",
            "cert sign",
            "--out",
            &d.s("out.crt"),
        ]),
        &["would make the certificate a CA"],
    );
    let mut after = d.files();
    after.retain(|f| f != "san.csr");
    assert_eq!(before, after, "nothing written by failed commands");
    assert_eq!(std::fs::read_to_string(d.p("good.csr")).unwrap(), good);
}

fn kcert_pem(label: &'static str, der: &[u8]) -> String {
    kcert_pki::pem::encode(label, der)
}

#[test]
fn existing_files_are_kept_unless_forced() {
    let d = Dir::new();
    ok(kcert(&["key", "--out", &d.s("k")]));
    let first = std::fs::read(d.p("k")).unwrap();
    fails(
        kcert(&["key", "--out", &d.s("k")]),
        &["already exists", "--force"],
    );
    assert_eq!(std::fs::read(d.p("k")).unwrap(), first);
    ok(kcert(&["key", "--out", &d.s("k"), "--force"]));
    assert_ne!(std::fs::read(d.p("k")).unwrap(), first);
    assert_eq!(mode(&d.p("k")), 0o600);
    // ca init writes both files or neither.
    std::fs::create_dir(d.p("ca")).unwrap();
    std::fs::write(d.p("ca/ca.crt"), "keep me").unwrap();
    fails(
        kcert(&["ca", "init", "--out", &d.s("ca")]),
        &["ca.crt", "already exists"],
    );
    assert!(!d.p("ca/ca.key").exists());
    assert_eq!(
        std::fs::read_to_string(d.p("ca/ca.crt")).unwrap(),
        "keep me"
    );
    assert_eq!(d.files(), vec!["ca", "k"]);
}

#[test]
fn inspect_reads_kubeconfigs_without_showing_secrets() {
    use base64::Engine as _;
    let d = Dir::new();
    let (ca_crt, ca_key) = ca(&d, "ecdsa-p256");
    ok(kcert(&["key", "--out", &d.s("k")]));
    ok(kcert(&[
        "csr",
        "-u",
        "jane",
        "-g",
        "dev",
        "-g",
        "ops",
        "-k",
        &d.s("k"),
        "--out",
        &d.s("c"),
    ]));
    ok(kcert(&[
        "sign",
        "--ca",
        &ca_crt,
        "--ca-key",
        &ca_key,
        "--csr",
        &d.s("c"),
        "--out",
        &d.s("crt"),
    ]));
    let b64 = |p: &str| base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap());
    let key_b64 = b64(&d.s("k"));
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {}\nusers:\n- name: jane\n  user:\n    client-certificate-data: {}\n    client-key-data: {key_b64}\n- name: bot\n  user:\n    token: s3cr3t-t0ken\ncontexts:\n- name: jane\n  context:\n    cluster: c\n    user: jane\n    namespace: dev\ncurrent-context: jane\n",
        b64(&ca_crt),
        b64(&d.s("crt"))
    );
    std::fs::write(d.p("kubeconfig"), &kubeconfig).unwrap();
    let text = ok(kcert(&["inspect", &d.s("kubeconfig")]));
    let out = json(kcert(&["inspect", &d.s("kubeconfig"), "--output", "json"]));
    let kc = &out["objects"][0];
    assert_eq!(kc["currentContext"], "jane");
    assert_eq!(kc["users"][0]["clientCertificate"]["user"], "jane");
    assert_eq!(
        kc["users"][0]["clientCertificate"]["groups"],
        serde_json::json!(["dev", "ops"])
    );
    assert_eq!(kc["users"][0]["clientKey"]["matchesCertificate"], true);
    assert_eq!(kc["clusters"][0]["certificateAuthority"]["isCa"], true);
    let key_pem = std::fs::read_to_string(d.p("k")).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap();
    for shown in [&text, &out.to_string()] {
        assert!(!shown.contains("s3cr3t-t0ken"));
        assert!(!shown.contains(key_line));
        assert!(!shown.contains(&key_b64[..40]));
    }
    assert!(text.contains("groups       dev, ops"), "{text}");
    assert!(text.contains("token: set (not shown)"), "{text}");
}

#[test]
fn help_documents_every_command_and_exit_codes() {
    let help = ok(kcert(&["--help"]));
    for cmd in ["key", "csr", "ca", "sign", "inspect", "Exit codes"] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
    let out = kcert(&["sign", "--days", "1", "--duration", "1h"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn requested_ca_powers_and_unknown_extensions_are_dropped_when_signing() {
    let d = Dir::new();
    let (ca_crt, ca_key) = ca(&d, "ecdsa-p256");
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &d.s("k"),
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        &d.s("k"),
        "-subj",
        "/CN=mallory/O=dev",
        "-out",
        &d.s("c"),
        "-addext",
        "basicConstraints=critical,CA:TRUE,pathlen:3",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-addext",
        "1.2.3.4.5=critical,DER:0500",
    ]);
    let info = json(kcert(&["inspect", &d.s("c"), "-o", "json"]));
    let names: Vec<&str> = info["objects"][0]["requestedExtensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["basicConstraints", "keyUsage", "1.2.3.4.5"]);
    ok(kcert(&[
        "sign",
        "--ca",
        &ca_crt,
        "--ca-key",
        &ca_key,
        "--csr",
        &d.s("c"),
        "--out",
        &d.s("crt"),
    ]));
    let text = openssl(&["x509", "-in", &d.s("crt"), "-noout", "-text"]);
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert!(!text.contains("1.2.3.4.5"), "{text}");
    assert!(!text.contains("pathlen"), "{text}");
    // And the result cannot act as a CA for openssl either.
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &d.s("k2"),
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        &d.s("k2"),
        "-subj",
        "/CN=victim",
        "-out",
        &d.s("c2"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &d.s("c2"),
        "-CA",
        &d.s("crt"),
        "-CAkey",
        &d.s("k"),
        "-CAcreateserial",
        "-out",
        &d.s("crt2"),
        "-days",
        "1",
    ]);
    std::fs::write(d.p("chain"), std::fs::read_to_string(d.p("crt")).unwrap()).unwrap();
    let out = Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            &ca_crt,
            "-untrusted",
            &d.s("chain"),
            &d.s("crt2"),
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a certificate we signed must not be usable as a CA"
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(kcert(&["completions", shell]));
        assert!(out.contains("kcert") && out.contains("request"), "{shell}");
    }
}

#[test]
fn a_kill_during_a_write_leaves_the_old_key_intact() {
    let d = Dir::new();
    let key = d.s("k");
    ok(kcert(&["key", "--out", &key]));
    // Spread the kills over a whole run (key generation, temp file, rename) as long as a run
    // takes on this machine now, and a little beyond so some runs complete.
    let mut times: Vec<u128> = (0..3)
        .map(|_| {
            let t = std::time::Instant::now();
            ok(kcert(&[
                "key", "--type", "rsa:2048", "--force", "--out", &key,
            ]));
            t.elapsed().as_millis()
        })
        .collect();
    times.sort();
    let run_ms = times[1].max(1) as u64;
    let mut replaced = 0;
    for i in 0..40u64 {
        let before = std::fs::read(d.p("k")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kcert"))
            .args(["key", "--type", "rsa:2048", "--force", "--out", &key])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(run_ms * 3 * i / 80));
        let _ = child.kill();
        let _ = child.wait();
        let after = std::fs::read(d.p("k")).unwrap();
        kcert_pki::PrivateKey::from_pem(&after)
            .unwrap_or_else(|e| panic!("iteration {i}: the key file is broken: {e}"));
        assert_eq!(mode(&d.p("k")), 0o600);
        replaced += usize::from(after != before);
    }
    assert!(
        replaced > 0,
        "no write ever completed: the kills were all too early to test anything"
    );
}

#[test]
fn kcert_sandbox_forwards_to_the_sandbox_binary_and_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("kcert-sandbox");
    let log = dir.path().join("args");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\nexit 7\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kcert"))
        .args(["sandbox", "up", "-d", "x", "-o", "json"])
        .env("KCERT_SANDBOX_BIN", &fake)
        .output()
        .unwrap();
    // Its exit code is passed on; the arguments as given.
    assert_eq!(out.status.code(), Some(7));
    let args = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        ["up", "-d", "x", "-o", "json"]
    );
    // kcert's own -O before the subcommand is passed on too.
    let out = Command::new(env!("CARGO_BIN_EXE_kcert"))
        .args(["-o", "json", "sandbox", "demo"])
        .env("KCERT_SANDBOX_BIN", &fake)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let args = std::fs::read_to_string(&log).unwrap();
    assert_eq!(args.lines().collect::<Vec<_>>(), ["-o", "json", "demo"]);
    let missing = Command::new(env!("CARGO_BIN_EXE_kcert"))
        .args(["sandbox", "demo"])
        .env("KCERT_SANDBOX_BIN", dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cargo run -p kcert-sandbox -- demo"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn output_flags_as_kubectl_spells_them() {
    let d = Dir::new();
    let key = d.s("k.pem");
    ok(kcert(&["key", "--out", &key]));
    // -o json and --output yaml carry the same document.
    let as_json = json(kcert(&["inspect", &key, "-o", "json"]));
    let yaml = ok(kcert(&["inspect", &key, "--output", "yaml"]));
    let as_yaml: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(as_json, as_yaml);
    // The old -O works for one release, with a note on stderr.
    let old = kcert(&["inspect", &key, "-O", "json"]);
    assert!(old.status.success());
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("-O is deprecated"),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&old.stdout).unwrap(),
        as_json
    );
    // In -o json mode an error is a JSON document on stdout too, with the exit code.
    let missing = kcert(&["inspect", &d.s("nope.pem"), "-o", "json"]);
    assert_eq!(missing.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(doc["exitCode"], 1);
    assert!(doc["error"].as_str().unwrap().contains("nope.pem"), "{doc}");
    // A file destination is --out now; -o takes a format.
    let wrong = kcert(&["key", "-o", &d.s("x.pem")]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("possible values"));
}
