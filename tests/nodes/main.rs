//! kcert deciding kubelet certificates on a real control plane with real node identities: the
//! Node authorizer, NodeRestriction and bootstrap tokens on the API server; CSRs from the
//! kubelet's own code (kubemark's hollow node bootstrapping, the kubelet's certificate managers
//! renewing and asking for a serving certificate); kube-controller-manager running only its
//! signer. One cluster for this binary (its own: kube-controller-manager signs every
//! kubernetes.io signer here, which the other tests' clusters must not have).

mod hollow;
mod hostile;
mod revocation;
mod revoked_node;
mod signing;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};
use kcert_controller::{PolicySource, Settings};
use kcert_testbed::TestCluster;
use kcert_tests::RunningController;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::OnceCell;

/// The cluster of this binary, with the node RBAC of a kubeadm cluster, kcert's deploy RBAC
/// (deploy/rbac.yaml + deploy/nodes/rbac.yaml) applied with kubectl, and kube-controller-manager's
/// signer running.
pub struct Bed {
    pub cluster: &'static TestCluster,
    _signer: kcert_testbed::nodes::Process,
}

pub async fn bed() -> &'static Bed {
    static BED: OnceCell<Bed> = OnceCell::const_new();
    BED.get_or_init(|| async {
        let cluster = TestCluster::shared().await;
        kcert_tests::install_crds(cluster).await;
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let out = cluster
            .kubectl()
            .args(["apply", "-f"])
            .arg(format!("{root}/deploy/namespace.yaml"))
            .args(["-f"])
            .arg(format!("{root}/deploy/rbac.yaml"))
            .args(["-f"])
            .arg(format!("{root}/deploy/nodes/rbac.yaml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.bind_kubeadm_node_roles().await.unwrap();
        let signer = cluster.controller_manager_signer().unwrap();
        Bed {
            cluster,
            _signer: signer,
        }
    })
    .await
}

/// The settings of the kcert-controller these tests run: the node approver for both kubelet
/// signers, no signer (kube-controller-manager signs), no user policy in play.
pub fn node_settings() -> Settings {
    Settings {
        signer_names: vec!["kcert.dev/node-tests-unused".into()],
        approver: true,
        signer: false,
        policy: PolicySource::Static(Default::default()),
        // The certificates kube-controller-manager issues for what kcert approved go on
        // kcert's ledger.
        ledger: true,
        nodes: kcert_policy::nodes::NodeRules {
            serving: true,
            client: true,
            node_wait_seconds: 30,
            ..Default::default()
        },
        // The names the cluster states, read again every 2 s (not 30): the tests that create
        // them wait for the next read.
        reserved_refresh: std::time::Duration::from_secs(2),
        ..Settings::default()
    }
}

/// One kcert-controller for the binary, as the ServiceAccount the deploy RBAC binds, on a
/// runtime of its own (each test has its own runtime, which ends with the test).
pub async fn controller() {
    static STARTED: OnceCell<()> = OnceCell::const_new();
    let b = bed().await;
    STARTED
        .get_or_init(|| async {
            let token = b
                .cluster
                .service_account_token("kcert-system", "kcert-controller")
                .await
                .unwrap();
            let kubeconfig = b.cluster.token_kubeconfig(&token);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async move {
                    let client = kcert_testbed::client_from_kubeconfig(&kubeconfig)
                        .await
                        .unwrap();
                    let running = RunningController::start_with(client, node_settings());
                    // Runs for the whole binary.
                    std::future::pending::<()>().await;
                    drop(running);
                });
            });
        })
        .await;
}

/// The hollow node's Node, once it has registered it (with the certificate its bootstrap got);
/// fails early if kubemark exits.
pub async fn registered(node: &mut kcert_testbed::nodes::HollowNode, admin: Client) -> Node {
    let nodes: Api<Node> = Api::all(admin);
    let name = node.name.clone();
    kcert_tests::eventually(
        &format!("hollow node {name} registers its Node"),
        std::time::Duration::from_secs(90),
        || {
            let nodes = nodes.clone();
            let name = name.clone();
            let exited = node.process.exited();
            async move {
                if let Some(status) = exited {
                    return Err(format!("kubemark exited: {status}"));
                }
                nodes
                    .get_opt(&name)
                    .await
                    .unwrap()
                    .ok_or("no Node yet".to_string())
            }
        },
    )
    .await
}

pub async fn admin() -> Client {
    bed().await.cluster.admin_client().await.unwrap()
}

/// Create (as admin) Node `name` with these (type, address) pairs in its status.
pub async fn make_node(name: &str, addresses: &[(&str, &str)]) {
    let nodes: Api<Node> = Api::all(admin().await);
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        status: Some(status_with(addresses)),
        ..Default::default()
    };
    nodes.create(&PostParams::default(), &node).await.unwrap();
    set_addresses(name, addresses).await;
}

/// Replace Node `name`'s status.addresses.
pub async fn set_addresses(name: &str, addresses: &[(&str, &str)]) {
    let nodes: Api<Node> = Api::all(admin().await);
    let status = status_with(addresses);
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .unwrap();
}

fn status_with(addresses: &[(&str, &str)]) -> NodeStatus {
    NodeStatus {
        addresses: Some(
            addresses
                .iter()
                .map(|(t, a)| NodeAddress {
                    type_: t.to_string(),
                    address: a.to_string(),
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// The reason of the CSR's Approved or Denied condition, once it has one.
pub async fn decision_of(name: &str) -> (String, String, String) {
    let api: Api<CertificateSigningRequest> = Api::all(admin().await);
    let csr = kcert_tests::wait_for(
        &api,
        name,
        std::time::Duration::from_secs(30),
        "decided",
        kcert_tests::decided,
    )
    .await;
    kcert_tests::conditions(&csr).remove(0)
}
