//! Revoking a node: on a cluster whose API server consults kcert's authorization webhook first,
//! kubelets included (deploy/authorization-config-nodes.yaml, the opt-in variant: the webhook,
//! then Node, then RBAC; the default file leaves kubelets out), a hollow node
//! bootstraps (approved by kcert, signed by kube-controller-manager, recorded on kcert's
//! ledger); `revoke` of its user makes the kubelet's own credentials refused within seconds,
//! and the kubelet's client rotation cannot renew with the revoked certificate.

use kcert_controller::authz_webhook::WebhookSettings;
use kcert_kube::revocation::{Selector, revoke};
use kcert_testbed::TestCluster;
use kcert_tests::{RunningController, eventually, install_crds};
use kube::Api;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_refused_within_seconds_and_cannot_renew() {
    let dir = tempfile::tempdir().unwrap();
    let files = kcert_testbed::webhook::WebhookFiles::create_with(
        dir.path(),
        kcert_testbed::webhook::free_port().unwrap(),
        kcert_testbed::webhook::AUTHORIZATION_CONFIG_NODES,
    )
    .unwrap();
    let cluster = TestCluster::builder()
        .authorization_config(files.authorization_config.clone())
        .start()
        .await
        .unwrap();
    install_crds(&cluster).await;
    cluster.bind_kubeadm_node_roles().await.unwrap();
    let _signer = cluster.controller_manager_signer().unwrap();
    let admin = cluster.admin_client().await.unwrap();
    let mut settings = crate::node_settings();
    settings.webhook = Some(WebhookSettings {
        addr: files.addr,
        cert: files.cert.clone(),
        key: files.key.clone(),
        strict: Default::default(),
    });
    let _controller = RunningController::start_with(admin.clone(), settings);

    let name = cluster.unique_name("revoked");
    let user = format!("system:node:{name}");
    let token = cluster.bootstrap_token().await.unwrap();
    let mut node = cluster
        .hollow_node(&name, &cluster.token_kubeconfig(&token.token()))
        .unwrap();
    crate::registered(&mut node, admin.clone()).await;
    // The kubelet's own credentials (the kubeconfig its bootstrap wrote).
    let kubeconfig = std::fs::read_to_string(node.kubeconfig()).unwrap();
    let as_node = kcert_testbed::client_from_kubeconfig(&kubeconfig)
        .await
        .unwrap();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(as_node);
    nodes.get(&name).await.expect("the node reads its own Node");
    eventually(
        "the node's certificate on the ledger",
        Duration::from_secs(20),
        || async {
            let pages = kcert_kube::ledger::list_pages(&admin).await.unwrap();
            let n = kcert_kube::ledger::records(&pages)
                .iter()
                .filter(|(_, r)| r.user == user)
                .count();
            if n == 1 { Ok(()) } else { Err(n) }
        },
    )
    .await;

    let started = Instant::now();
    let done = revoke(
        &admin,
        &Selector::User(user.clone()),
        "kcert-testbed-admin",
        "node decommissioned",
    )
    .await
    .unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    let message = eventually(
        "the node's requests are refused",
        Duration::from_secs(20),
        || async {
            match nodes.get(&name).await {
                Err(kube::Error::Api(s)) if s.code == 403 => Ok(s.message),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let took = started.elapsed();
    assert!(
        message.contains("revoked") && message.contains("node decommissioned"),
        "{message}"
    );
    eprintln!(
        "node revocation: first 403 {:.2}s after revoke",
        took.as_secs_f64()
    );

    // The kubelet's rotation cannot get a new certificate with the revoked one: it may not even
    // create the CSR.
    let out = Command::new(kcert_testbed::kubeletcerts().unwrap())
        .args(["renew-client", "--timeout=15s"])
        .arg(format!("--kubeconfig={}", node.kubeconfig().display()))
        .arg(format!("--node={name}"))
        .arg(format!("--cert-dir={}", node.cert_dir().display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("forbidden") && said.contains("revoked"),
        "renewal with a revoked certificate: {}\n{said}",
        String::from_utf8_lossy(&out.stdout)
    );
    let csrs: Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> =
        Api::all(admin.clone());
    let renewals = csrs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.spec.username.as_deref() == Some(user.as_str()))
        .count();
    assert_eq!(renewals, 0, "the revoked node could create a CSR");
}
