//! `kcert-testbed up`: files appear, then `ready`; kubectl works; SIGTERM stops everything.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn up_writes_files_serves_kubectl_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcert-testbed"))
        .args(["up", "--dir"])
        .arg(dir.path())
        .args(["--ca-key", "ecdsa"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = dir.path().join("ready");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("kcert-testbed up exited ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "not ready in time");
        std::thread::sleep(Duration::from_millis(100));
    }
    let server = std::fs::read_to_string(&ready).unwrap();
    assert!(server.starts_with("https://127.0.0.1:"), "{server}");
    for f in ["admin.kubeconfig", "ca.crt", "ca.key"] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let kubectl = kcert_testbed::Binaries::locate()
        .unwrap()
        .kubectl
        .unwrap_or_else(|| "kubectl".into());
    let out = Command::new(&kubectl)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kcert-testbed-admin");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!ready.exists(), "ready is removed on shutdown");
    let port = server
        .rsplit(':')
        .next()
        .unwrap()
        .trim()
        .parse::<u16>()
        .unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the API server still listens after shutdown"
    );
}

fn build_with(env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kcert-testbed"));
    cmd.arg("build").env_remove("KUBEBUILDER_ASSETS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn kubebuilder_assets_are_used_as_given_and_checked() {
    let bins = kcert_testbed::Binaries::locate().unwrap();
    let bin_dir = bins
        .kube_apiserver
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let (ok, out) = build_with(&[("KUBEBUILDER_ASSETS", &bin_dir)]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("kube-apiserver: {bin_dir}/kube-apiserver")),
        "{out}"
    );

    let empty = tempfile::tempdir().unwrap();
    let (ok, out) = build_with(&[("KUBEBUILDER_ASSETS", empty.path().to_str().unwrap())]);
    assert!(!ok);
    assert!(
        out.contains("has no etcd") && out.contains("setup-envtest"),
        "{out}"
    );
}

#[test]
fn without_go_or_assets_the_error_says_what_to_install() {
    let empty_cache = tempfile::tempdir().unwrap();
    let (ok, out) = build_with(&[
        ("KCERT_TESTBED_CACHE", empty_cache.path().to_str().unwrap()),
        ("KCERT_TESTBED_GO", "/nonexistent/go"),
    ]);
    assert!(!ok);
    assert!(
        out.contains("Go is not installed") && out.contains("KUBEBUILDER_ASSETS"),
        "{out}"
    );
}
