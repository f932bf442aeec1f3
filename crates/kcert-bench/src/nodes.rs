//! Kubelet certificates at scale: `nodes` kubemark hollow nodes (real kubelets) started
//! together, each with its own bootstrap token, on a fresh test bed; the time from each
//! kubelet's bootstrap CSR (as the bench's watch first sees it) to its Approved condition and to
//! its certificate, with kcert-controller deciding (`--kubelet-client`, kube-controller-manager
//! running only csrsigning) and, on a second bed, kube-controller-manager's own csrapproving.
//! Also what one decision costs kcert-controller (CPU per decision, from /proc) and the pure
//! node rules alone (ns per evaluation).

use crate::process::{cpu_seconds, sibling, spawn};
use anyhow::{Result, ensure};
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_testbed::TestCluster;
use kube::Api;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Who approves kubelet client CSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approver {
    Kcert,
    /// kcert approves and signs (`--kubelet-sign`); kube-controller-manager not running.
    KcertSigning,
    KubeControllerManager,
}

impl Approver {
    pub fn label(self) -> &'static str {
        match self {
            Approver::Kcert => "kcert (--kubelet-client) + kube-controller-manager csrsigning",
            Approver::KcertSigning => "kcert (--kubelet-client --kubelet-sign) alone",
            Approver::KubeControllerManager => "kube-controller-manager csrapproving + csrsigning",
        }
    }
}

/// One run's samples, seconds.
pub struct NodeRun {
    pub to_decision: Vec<f64>,
    pub to_certificate: Vec<f64>,
    pub to_node: Vec<f64>,
    /// kcert-controller's CPU seconds over the run and the decisions it made.
    pub controller_cpu: Option<(f64, usize)>,
}

#[derive(Default)]
struct Seen {
    created: HashMap<String, Instant>,
    approved: HashMap<String, Instant>,
    issued: HashMap<String, Instant>,
}

pub async fn run(nodes: usize, approver: Approver) -> Result<NodeRun> {
    let cluster = TestCluster::start().await?;
    kcert_tests::install_crds(&cluster).await;
    cluster.bind_kubeadm_node_roles().await?;
    let controllers = match approver {
        Approver::Kcert => "csrsigning",
        Approver::KcertSigning => "",
        Approver::KubeControllerManager => "csrapproving,csrsigning",
    };
    let _kcm = match controllers {
        "" => None,
        some => Some(cluster.controller_manager(some)?),
    };
    let mut kcert_args = vec![
        format!("--kubeconfig={}", cluster.admin_kubeconfig_path().display()),
        "--signer-name=kcert.dev/bench-unused".into(),
        "--kubelet-client".into(),
        "--kubelet-serving".into(),
        "--metrics-addr=off".into(),
        "--cleaner=false".into(),
        "--events=problems".into(),
    ];
    match approver {
        Approver::Kcert => kcert_args.push("--controllers=approver".into()),
        Approver::KcertSigning => kcert_args.extend([
            "--controllers=approver,signer".to_string(),
            "--kubelet-sign".into(),
            format!("--ca-cert={}", cluster.ca_cert_path().display()),
            format!("--ca-key={}", cluster.ca_key_path().display()),
        ]),
        Approver::KubeControllerManager => {}
    }
    let controller = match approver {
        Approver::KubeControllerManager => None,
        _ => Some(spawn(
            &sibling("kcert-controller")?,
            &kcert_args,
            &cluster.dir().join("kcert-controller.log"),
        )?),
    };
    // The bench's own watch: when each CSR is first seen, approved, issued (local clock).
    let admin = cluster.admin_client().await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watch = {
        let seen = seen.clone();
        let api: Api<CertificateSigningRequest> = Api::all(admin.clone());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                let csr = match event {
                    Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
                    _ => continue,
                };
                let now = Instant::now();
                let name = csr.metadata.name.clone().unwrap_or_default();
                let mut s = seen.lock().unwrap();
                s.created.entry(name.clone()).or_insert(now);
                if kcert_tests::conditions(&csr)
                    .iter()
                    .any(|c| c.0 == "Approved")
                {
                    s.approved.entry(name.clone()).or_insert(now);
                }
                if kcert_tests::issued(&csr) {
                    s.issued.entry(name).or_insert(now);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut tokens = Vec::new();
    for _ in 0..nodes {
        tokens.push(cluster.bootstrap_token().await?);
    }
    let cpu_before = controller.as_ref().and_then(|c| cpu_seconds(c.pid()));
    let started = Instant::now();
    let mut hollow = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let name = format!("bench-node-{i:03}");
        hollow.push(cluster.hollow_node(&name, &cluster.token_kubeconfig(&token.token()))?);
    }
    // Every node registered (which needs its certificate).
    let nodes_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(admin.clone());
    let mut registered: HashMap<String, f64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while registered.len() < nodes {
        ensure!(
            Instant::now() < deadline,
            "only {} of {nodes} nodes registered in 10 min",
            registered.len()
        );
        for n in nodes_api.list(&Default::default()).await?.items {
            let name = n.metadata.name.unwrap_or_default();
            registered
                .entry(name)
                .or_insert_with(|| started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu_after = controller.as_ref().and_then(|c| cpu_seconds(c.pid()));
    watch.abort();
    let s = seen.lock().unwrap();
    let mut run = NodeRun {
        to_decision: Vec::new(),
        to_certificate: Vec::new(),
        to_node: registered.values().copied().collect(),
        controller_cpu: None,
    };
    for (name, created) in &s.created {
        if let Some(a) = s.approved.get(name) {
            run.to_decision.push((*a - *created).as_secs_f64());
        }
        if let Some(i) = s.issued.get(name) {
            run.to_certificate.push((*i - *created).as_secs_f64());
        }
    }
    ensure!(
        run.to_certificate.len() >= nodes,
        "{} of {nodes} certificates seen",
        run.to_certificate.len()
    );
    if let (Some(b), Some(a)) = (cpu_before, cpu_after) {
        run.controller_cpu = Some((a - b, run.to_decision.len()));
    }
    drop(hollow);
    drop(controller);
    Ok(run)
}

/// The node rules alone: ns per `decide` of a kubelet serving CSR against `nodes` Nodes (each
/// with an IP, a host name and an internal DNS name), `iterations` times.
pub fn pure_decision_ns(nodes: usize, iterations: usize) -> f64 {
    use kcert_policy::nodes::{
        KUBELET_SERVING_SIGNER, NodeAddress, NodeFacts, NodeIndex, NodeRules,
    };
    let mut index = NodeIndex::default();
    for i in 0..nodes {
        let (hi, lo) = (i / 250, i % 250);
        index.upsert(
            &format!("node-{i}"),
            vec![
                NodeAddress {
                    kind: "InternalIP".into(),
                    address: format!("10.{hi}.{lo}.1"),
                },
                NodeAddress {
                    kind: "Hostname".into(),
                    address: format!("node-{i}"),
                },
                NodeAddress {
                    kind: "InternalDNS".into(),
                    address: format!("node-{i}.cluster.internal"),
                },
            ],
        );
    }
    let facts = kcert_policy::CsrFacts {
        signer_name: KUBELET_SERVING_SIGNER.into(),
        requester: kcert_policy::Requester {
            username: "system:node:node-7".into(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
            ..Default::default()
        },
        common_names: vec!["system:node:node-7".into()],
        organizations: vec!["system:nodes".into()],
        sans: kcert_policy::SanFacts {
            dns: vec!["node-7".into(), "node-7.cluster.internal".into()],
            ips: vec!["10.0.7.1".into()],
            ..Default::default()
        },
        usages: vec!["digital signature".into(), "server auth".into()],
        key: kcert_policy::KeyKind::EcdsaP256,
        ..Default::default()
    };
    let rules = NodeRules {
        serving: true,
        ..Default::default()
    };
    let access = Default::default();
    let node = NodeFacts {
        nodes: &index,
        access: &access,
        age_seconds: 1,
    };
    assert_eq!(
        kcert_policy::nodes::decide(&facts, &rules, &node).outcome,
        kcert_policy::Outcome::Approve
    );
    let started = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(kcert_policy::nodes::decide(
            std::hint::black_box(&facts),
            &rules,
            &node,
        ));
    }
    started.elapsed().as_nanos() as f64 / iterations as f64
}
