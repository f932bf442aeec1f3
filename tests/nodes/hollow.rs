//! A real kubelet (kubemark's hollow node) with no credentials but a bootstrap token:
//! bootstraps, registers its Node and renews, approved by kcert alone (kube-controller-manager
//! runs only its signer); then the kubelet's serving-certificate manager gets a serving
//! certificate for the Node's own addresses, and openssl verifies TLS to that address with it.

use crate::{admin, bed, controller};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_tests::{conditions, issued};
use kube::Api;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The CSRs of `signer` requested by `user`.
async fn csrs_of(signer: &str, user: &str) -> Vec<CertificateSigningRequest> {
    let api: Api<CertificateSigningRequest> = Api::all(admin().await);
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.spec.signer_name == signer && c.spec.username.as_deref() == Some(user))
        .collect()
}

fn provenance_rule(csr: &CertificateSigningRequest) -> Option<String> {
    let p = kcert_kube::Provenance::read(csr)?;
    p.rule
}

/// Run `kubeletcerts` and return its first JSON line (and the process, still running for
/// `serving --listen`).
fn kubeletcerts(
    args: &[String],
) -> (
    serde_json::Value,
    std::process::Child,
    BufReader<std::process::ChildStdout>,
) {
    let bin = kcert_testbed::kubeletcerts().unwrap();
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        !line.is_empty(),
        "kubeletcerts {args:?} printed nothing (see stderr)"
    );
    (serde_json::from_str(&line).unwrap(), child, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hollow_node_bootstraps_registers_renews_and_serves_approved_by_kcert() {
    let b = bed().await;
    controller().await;
    let cluster = b.cluster;
    let name = cluster.unique_name("hollow");
    let token = cluster.bootstrap_token().await.unwrap();
    let started = Instant::now();
    let mut node = cluster
        .hollow_node(&name, &cluster.token_kubeconfig(&token.token()))
        .unwrap();
    let user = format!("system:node:{name}");

    // Bootstrap: the kubelet's CSR (requester: the token's user) approved by kcert, signed by
    // kube-controller-manager; the kubelet then registers its Node with that certificate.
    let registered = crate::registered(&mut node, admin().await).await;
    let to_node = started.elapsed();
    let boot = csrs_of(kcert_policy::nodes::KUBELET_CLIENT_SIGNER, &token.user()).await;
    assert_eq!(
        boot.len(),
        1,
        "one bootstrap CSR: {boot:#?}\n{}",
        node.process.log()
    );
    assert_auto_approved(&boot[0], "nodeclient");
    assert_eq!(provenance_rule(&boot[0]).as_deref(), Some("kubelet-client"));
    assert!(issued(&boot[0]));
    let cert = kcert_tests::certificate(&boot[0]);
    assert_eq!(cert.subject.common_names, std::slice::from_ref(&user));
    assert_eq!(cert.subject.organizations, ["system:nodes"]);
    let addresses = registered
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default();
    eprintln!(
        "hollow node {name}: Node registered {to_node:?} after start; addresses {addresses:?}"
    );

    // Renewal with the kubelet's own client rotation: the node itself asks (selfnodeclient).
    let (renewed, mut child, _) = kubeletcerts(&[
        "renew-client".into(),
        format!("--kubeconfig={}", node.kubeconfig().display()),
        format!("--node={name}"),
        format!("--cert-dir={}", node.cert_dir().display()),
    ]);
    let _ = child.wait();
    let renewals = csrs_of(kcert_policy::nodes::KUBELET_CLIENT_SIGNER, &user).await;
    assert_eq!(renewals.len(), 1, "{renewals:#?}");
    assert_auto_approved(&renewals[0], "selfnodeclient");
    assert_ne!(
        renewed["serial"].as_str().unwrap(),
        normalize_serial(&cert.serial),
        "a new certificate"
    );
    assert!(
        renewed["subject"].as_str().unwrap().contains(&user),
        "{renewed}"
    );

    // Serving: the kubelet's serving-certificate manager asks for the Node's own addresses.
    let internal_ip = addresses
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .expect("the hollow node reports an InternalIP");
    let serving_dir = node.cert_dir().join("serving");
    std::fs::create_dir_all(&serving_dir).unwrap();
    let port = kcert_testbed::nodes::kubelet_port().unwrap();
    let listen = format!("{}:{port}", bracket(&internal_ip));
    let (serving, mut server, mut out) = kubeletcerts(&[
        "serving".into(),
        format!("--kubeconfig={}", node.kubeconfig().display()),
        format!("--node={name}"),
        format!("--cert-dir={}", serving_dir.display()),
        format!("--listen={listen}"),
    ]);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "{line}");
    let served = csrs_of(kcert_policy::nodes::KUBELET_SERVING_SIGNER, &user).await;
    assert_eq!(served.len(), 1);
    assert_auto_approved(&served[0], "kubelet-serving");
    assert_eq!(
        provenance_rule(&served[0]).as_deref(),
        Some("kubelet-serving")
    );
    assert!(
        serving["ips"].as_str().unwrap().contains(&internal_ip),
        "{serving}"
    );
    assert!(
        serving["dns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == name.as_str()),
        "{serving}"
    );
    // openssl, the independent judge: the certificate chains to the cluster CA and is valid
    // for the Node's address, over a real TLS handshake to that address.
    let ca = cluster.ca_cert_path();
    let verify = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &listen,
            "-verify_return_error",
            "-verify_ip",
        ])
        .arg(&internal_ip)
        .arg("-CAfile")
        .arg(&ca)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && text.contains("Verify return code: 0 (ok)"),
        "{text}\n{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // ... and not for another address.
    let wrong = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &listen,
            "-verify_return_error",
            "-verify_ip",
            "192.0.2.254",
        ])
        .arg("-CAfile")
        .arg(&ca)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "verified for a foreign address");
    let _ = server.kill();
    let _ = server.wait();
    // All three certificates (issued by kube-controller-manager for CSRs kcert approved) are
    // on kcert's ledger, as the node's, approved by kcert.
    let admin_client = admin().await;
    for csr in [&boot[0], &renewals[0], &served[0]] {
        let fresh: Api<CertificateSigningRequest> = Api::all(admin_client.clone());
        let csr = fresh
            .get(&csr.metadata.name.clone().unwrap())
            .await
            .unwrap();
        let fp = kcert_tests::certificate(&csr).fingerprint_sha256;
        let entry = kcert_tests::eventually(
            "the node's certificate on the ledger",
            std::time::Duration::from_secs(20),
            || async {
                let index = kcert_kube::ledger::read_index(&admin_client).await.unwrap();
                index.by_hash(&fp).cloned().ok_or("not yet")
            },
        )
        .await;
        assert_eq!(&*entry.user, user.as_str());
        assert_eq!(
            entry
                .groups
                .iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>(),
            ["system:nodes"]
        );
    }
    eprintln!(
        "hollow node {name}: bootstrap → Node {to_node:?}; renewed {}; serving for {}",
        renewed["serial"], serving["ips"]
    );
    assert!(
        node.process.exited().is_none(),
        "the kubelet is still running"
    );
}

/// The CSR's first condition is kcert's approval, its message naming `needle`.
fn assert_auto_approved(csr: &CertificateSigningRequest, needle: &str) {
    let (kind, reason, message) = conditions(csr).remove(0);
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Approved", "AutoApproved"),
        "{message}"
    );
    assert!(message.contains(needle), "{message}");
}

fn normalize_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex.trim_start_matches('0').to_string()
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}
