//! kcert signing the kubelet signers itself (`--kubelet-sign`), on a cluster of its own with no
//! kube-controller-manager: the hollow node's bootstrap certificate authenticates it to the API
//! server (it registers its Node with it), its serving certificate holds exactly the checked
//! names, and both are on the ledger.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_controller::{CaSource, Settings};
use kcert_policy::nodes::{KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER};
use kcert_testbed::TestCluster;
use kcert_tests::{RunningController, eventually, install_crds, issued};
use kube::Api;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcert_signs_kubelet_certificates_that_the_api_server_accepts() {
    let cluster = TestCluster::start().await.unwrap();
    install_crds(&cluster).await;
    let admin = cluster.admin_client().await.unwrap();
    cluster.bind_kubeadm_node_roles().await.unwrap();
    let mut settings = crate::node_settings();
    settings.signer = true;
    settings.signer_names = vec![KUBELET_SERVING_SIGNER.into(), KUBELET_CLIENT_SIGNER.into()];
    settings.ca = Some(CaSource::Files {
        cert: cluster.ca_cert_path(),
        key: cluster.ca_key_path(),
    });
    settings.ledger = true;
    settings.max_duration = Duration::from_secs(7 * 86_400);
    let _controller = RunningController::start_with(admin.clone(), Settings { ..settings });

    let name = cluster.unique_name("signed");
    let token = cluster.bootstrap_token().await.unwrap();
    let mut node = cluster
        .hollow_node(&name, &cluster.token_kubeconfig(&token.token()))
        .unwrap();
    // The Node is registered with the certificate kcert signed: the API server authenticated
    // system:node:<name> in system:nodes from it, and the Node authorizer let it create its Node.
    let registered = crate::registered(&mut node, admin.clone()).await;
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let boot: Vec<_> = csrs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.spec.username.as_deref() == Some(token.user().as_str()))
        .collect();
    assert_eq!(boot.len(), 1, "{}", node.process.log());
    let cert = kcert_tests::certificate(&boot[0]);
    assert_eq!(cert.subject.common_names, [format!("system:node:{name}")]);
    assert_eq!(cert.subject.organizations, ["system:nodes"]);
    assert!(cert.sans.is_empty());
    assert_eq!(
        cert.usages,
        ["digital signature", "client auth"],
        "the kubelet asks for these (ECDSA key)"
    );

    // Serving, signed by kcert: exactly the names checked against the Node.
    let ip = registered
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .unwrap()
        .address;
    let dir = node.cert_dir().join("serving");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(kcert_testbed::kubeletcerts().unwrap())
        .args(["serving", "--timeout=60s"])
        .arg(format!("--kubeconfig={}", node.kubeconfig().display()))
        .arg(format!("--node={name}"))
        .arg(format!("--cert-dir={}", dir.display()))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    let serving: Vec<_> = csrs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.spec.signer_name == KUBELET_SERVING_SIGNER && issued(c))
        .collect();
    assert_eq!(serving.len(), 1);
    let cert = kcert_tests::certificate(&serving[0]);
    assert_eq!(cert.sans.dns, std::slice::from_ref(&name));
    assert_eq!(cert.sans.ips, [ip.parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(cert.subject.common_names, [format!("system:node:{name}")]);
    assert!(
        cert.usages.contains(&"server auth".to_string())
            && !cert.usages.contains(&"client auth".to_string())
    );
    // openssl agrees it chains to the CA and is for the Node's address.
    let pem = dir.join("kubelet-server-current.pem");
    let verify = Command::new("openssl")
        .args([
            "verify",
            "-purpose",
            "sslserver",
            "-verify_ip",
            &ip,
            "-CAfile",
        ])
        .arg(cluster.ca_cert_path())
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // Both are on the ledger, as every certificate kcert issues.
    for c in [&boot[0], &serving[0]] {
        let fp = kcert_tests::certificate(c).fingerprint_sha256;
        eventually(
            "the certificate on the ledger",
            Duration::from_secs(20),
            || async {
                let index = kcert_kube::ledger::read_index(&admin).await.unwrap();
                index.by_hash(&fp).map(|_| ()).ok_or("not yet")
            },
        )
        .await;
    }
    assert!(node.process.exited().is_none());
}
