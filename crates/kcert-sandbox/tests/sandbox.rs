//! The `kcert-sandbox` binary: `demo` runs the whole onboarding flow on a throw-away control
//! plane; `up` serves one until SIGTERM.

use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_demo_runs_the_whole_flow() {
    let out = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_kcert-sandbox"))
            .args(["demo"])
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for needle in [
        "issued jane (groups: dev)",
        "user jane",
        "groups dev",
        "\nyes",
        "no (as expected)",
        "refused (as expected)",
        "revoked",
        "tear down",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn sandbox_up_writes_the_admin_kubeconfig_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sb = dir.path().join("sb");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcert-sandbox"))
        .args(["up", "-d"])
        .arg(&sb)
        .args(["-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // The JSON report is printed once the sandbox is ready.
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains('}') {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "sandbox up exited early: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let report: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(report["signerName"], "kcert.dev/client");
    let kubeconfig = sb.join("admin.kubeconfig");
    let kubectl = kcert_testbed::Binaries::locate()
        .unwrap()
        .kubectl
        .unwrap_or_else(|| "kubectl".into());
    let me = Command::new(&kubectl)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&me.stdout), "kcert-testbed-admin");
    // The sandbox's policy is installed and accepted by its controller.
    let mut accepted = false;
    for _ in 0..100 {
        let policies = Command::new(&kubectl)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "get",
                "approvalpolicies",
                "sandbox-onboarding",
                "-o",
                "jsonpath={.status.accepted}",
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&policies.stdout) == "true" {
            accepted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(accepted, "the sandbox policy was never accepted");
    // As in a real cluster, the aggregated ClusterRoles have their rules (kcert grant
    // --clusterrole view works).
    let mut aggregated = false;
    for _ in 0..100 {
        let view = Command::new(&kubectl)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "get",
                "clusterrole",
                "view",
                "-o",
                "jsonpath={.rules[*].resources}",
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&view.stdout).contains("pods") {
            aggregated = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(aggregated, "the view ClusterRole was never aggregated");
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let server = report["server"].as_str().unwrap();
    let port: u16 = server.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the sandbox still listens"
    );
}

/// What `kcert-sandbox up` prints, pasted into a shell as a user would: every step works, jane
/// lists pods after the `view` grant, and after the revocation her next request is refused.
#[test]
fn the_printed_steps_work_when_pasted() {
    let dir = tempfile::tempdir().unwrap();
    let sb = dir.path().join("sb");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcert-sandbox"))
        .args(["up", "-d"])
        .arg(&sb)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("Ctrl-C") {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "sandbox up exited early: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let steps: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("  ")).collect();
    assert!(steps.len() >= 5, "{text}");
    // `kcert` beside `kcert-sandbox` (cargo builds both), kubectl from the test bed.
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kcert-sandbox"))
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(
        bin.join("kcert").is_file(),
        "build kcert too (cargo test --workspace)"
    );
    let kubectl = kcert_testbed::Binaries::locate().unwrap().kubectl.unwrap();
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        kubectl.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // Every printed step, then jane's requests, which must be refused within the promised ~2 s
    // (the API server caches the webhook's "no opinion" that long).
    let script = format!(
        "set -e\n{}\nfor i in 1 2 3 4 5 6 7 8 9 10 11 12; do\n  if ! kubectl --kubeconfig jane.kubeconfig get pods --namespace default 2>revoked.err; then cat revoked.err; exit 0; fi\n  sleep 0.5\ndone\necho STILL-ALLOWED; exit 1\n",
        steps.join("\n")
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env("PATH", &path)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "pasting the steps failed:\n{script}\n{said}"
    );
    for needle in ["issued jane", "jane", "No resources found", "revoked"] {
        assert!(said.contains(needle), "{needle:?} missing:\n{said}");
    }
}
