//! The Pods kcert ships, judged by Pod Security admission on the real API server: deploy/ and
//! deploy/webhook/ applied with kubectl (their namespaces created for real, with their labels),
//! the chart installed with `helm install` (webhook enabled) onto a cluster of its own, and every
//! Pod template of the kustomize base, the webhook's kustomization and the chart (default values
//! and the webhook enabled) submitted as a Pod with server-side dryRun in its namespace: each is
//! admitted. The host-network webhook Pod in the restricted namespace (the set-up kcert used to
//! ship) is refused, and without its host network it meets `restricted`.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kcert_testbed::TestCluster;
use kube::api::PostParams;
use kube::{Api, Client};
use serde::Deserialize;
use std::process::Command;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
const WEBHOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/webhook");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/chart/kcert");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn kubectl() -> std::path::PathBuf {
    kcert_testbed::Binaries::locate()
        .unwrap()
        .kubectl
        .unwrap_or_else(|| "kubectl".into())
}

fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| serde_json::Value::deserialize(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// Every workload's Pod template: (kind/namespace/name, namespace, template).
fn pod_templates(yaml: &str) -> Vec<(String, String, serde_json::Value)> {
    documents(yaml)
        .into_iter()
        .filter(|v| v["spec"]["template"]["spec"].is_object())
        .map(|v| {
            let ns = v["metadata"]["namespace"].as_str().unwrap().to_string();
            let key = format!(
                "{}/{ns}/{}",
                v["kind"].as_str().unwrap(),
                v["metadata"]["name"].as_str().unwrap()
            );
            (key, ns, v["spec"]["template"].clone())
        })
        .collect()
}

/// The template as a Pod, created with dryRun in `namespace`: admission runs, nothing is stored.
async fn submit(
    client: &Client,
    namespace: &str,
    name: &str,
    template: &serde_json::Value,
) -> Result<(), String> {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }))
    .unwrap();
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&params, &pod)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(format!("{} {}", s.code, s.message)),
        Err(e) => panic!("{name}: {e}"),
    }
}

/// Submit every template of `yaml`; all must be admitted. Returns how many used the host network.
async fn all_admitted(client: &Client, source: &str, yaml: &str) -> usize {
    let templates = pod_templates(yaml);
    assert!(!templates.is_empty(), "{source}: no Pod templates");
    let mut host_network = 0;
    for (i, (key, ns, template)) in templates.iter().enumerate() {
        if let Err(e) = submit(client, ns, &format!("psa-check-{i}"), template).await {
            panic!("{source}: {key} is not admitted in namespace {ns}: {e}");
        }
        if template["spec"]["hostNetwork"] == true {
            host_network += 1;
        }
        eprintln!("{source}: {key} admitted in {ns}");
    }
    host_network
}

/// The Pod Security level a namespace enforces, as the API server holds it.
async fn enforced(client: &Client, ns: &str) -> String {
    let ns = Api::<Namespace>::all(client.clone()).get(ns).await.unwrap();
    ns.metadata
        .labels
        .unwrap_or_default()
        .get("pod-security.kubernetes.io/enforce")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_pod_passes_pod_security_admission_in_its_namespace() {
    let (kustomize_bed, helm_bed) = tokio::join!(TestCluster::start(), TestCluster::start());
    let (kustomize_bed, helm_bed) = (kustomize_bed.unwrap(), helm_bed.unwrap());
    let helm = tokio::task::spawn_blocking(kcert_testbed::helm)
        .await
        .unwrap()
        .unwrap();

    // deploy/ and deploy/webhook/, applied for real.
    for dir in [DEPLOY, WEBHOOK] {
        run(kustomize_bed.kubectl().args(["apply", "-k", dir]));
    }
    let client = kustomize_bed.admin_client().await.unwrap();
    assert_eq!(enforced(&client, "kcert-system").await, "restricted");
    assert_eq!(enforced(&client, "kcert-webhook").await, "privileged");
    let base = run(Command::new(kubectl()).args(["kustomize", DEPLOY]));
    let webhook = run(Command::new(kubectl()).args(["kustomize", WEBHOOK]));
    assert_eq!(all_admitted(&client, "deploy/", &base).await, 0);
    assert_eq!(all_admitted(&client, "deploy/webhook/", &webhook).await, 1);

    // The set-up kcert used to ship: the webhook's host-network Pod in the restricted namespace.
    // Refused, for the host network (and the host ports it implies) only: without it the same
    // Pod meets `restricted`.
    let (_, _, daemon) = pod_templates(&webhook)
        .into_iter()
        .find(|(key, _, _)| key.starts_with("DaemonSet/"))
        .unwrap();
    let refused = submit(&client, "kcert-system", "psa-old-setup", &daemon)
        .await
        .expect_err("a host-network Pod admitted in the restricted namespace");
    assert!(
        refused.contains("403")
            && refused.contains("violates PodSecurity \"restricted:latest\"")
            && refused.contains("hostNetwork=true"),
        "{refused}"
    );
    for tight in [
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "seccompProfile",
        "capabilities",
        "volumes",
    ] {
        assert!(!refused.contains(tight), "{tight}: {refused}");
    }
    let mut off_host = daemon.clone();
    off_host["spec"]["hostNetwork"] = false.into();
    off_host["spec"]["dnsPolicy"] = "ClusterFirst".into();
    if let Err(e) = submit(&client, "kcert-system", "psa-off-host", &off_host).await {
        panic!("the webhook Pod without the host network does not meet restricted: {e}");
    }
    let mut old = pod_templates(&base).remove(0).2;
    old["spec"]["hostNetwork"] = true.into();
    let refused = submit(&client, "kcert-system", "psa-old-patch", &old)
        .await
        .expect_err("the old deployment-patch.yaml admitted in kcert-system");
    assert!(refused.contains("hostNetwork=true"), "{refused}");

    // The chart: its namespace labelled as deploy/namespace.yaml says, then `helm install` with
    // the webhook (which renders the webhook's namespace itself).
    run(helm_bed
        .kubectl()
        .args(["apply", "-f"])
        .arg(format!("{DEPLOY}/namespace.yaml")));
    let chart = |extra: &[&str]| {
        let mut cmd = Command::new(&helm);
        cmd.args(["template", "kcert", CHART, "--namespace", "kcert-system"])
            .args(extra);
        run(&mut cmd)
    };
    run(Command::new(&helm)
        .arg("--kubeconfig")
        .arg(helm_bed.admin_kubeconfig_path())
        .args([
            "install",
            "kcert",
            CHART,
            "--namespace",
            "kcert-system",
            "--set",
            "webhook.enabled=true",
        ]));
    let client = helm_bed.admin_client().await.unwrap();
    assert_eq!(enforced(&client, "kcert-system").await, "restricted");
    assert_eq!(
        all_admitted(&client, "the chart", &chart(&[])).await,
        0,
        "default values"
    );
    assert_eq!(
        all_admitted(
            &client,
            "the chart with the webhook",
            &chart(&["--set", "webhook.enabled=true"])
        )
        .await,
        1
    );
    assert_eq!(enforced(&client, "kcert-webhook").await, "privileged");
}

/// The DaemonSet's Pod template in a rendered stream.
fn webhook_daemonset(yaml: &str) -> serde_json::Value {
    pod_templates(yaml)
        .into_iter()
        .find(|(key, _, _)| key.starts_with("DaemonSet/"))
        .unwrap()
        .2
}

fn args_of(container: &serde_json::Value) -> Vec<String> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The webhook's Pods run the webhook alone (`--controllers=webhook`): none of the CA, leader
/// election, signer, policy or kubelet flags, in deploy/webhook/ and in the chart whatever the
/// values (the Deployment's flags do not leak in); same image, resources and security as the
/// Deployment.
#[test]
fn the_webhook_daemonset_runs_only_the_webhook() {
    let base = run(Command::new(kubectl()).args(["kustomize", DEPLOY]));
    let webhook = run(Command::new(kubectl()).args(["kustomize", WEBHOOK]));
    let helm = kcert_testbed::helm().unwrap();
    let chart = |extra: &[&str]| {
        run(Command::new(&helm)
            .args(["template", "kcert", CHART, "--namespace", "kcert-system"])
            .args(["--set", "webhook.enabled=true"])
            .args(extra))
    };
    let deployment = pod_templates(&base).remove(0).2;
    let controller = args_of(&deployment["spec"]["containers"][0]);
    assert!(
        controller.contains(&"--leader-elect".to_string())
            && controller.iter().any(|a| a.starts_with("--ca-secret=")),
        "the Deployment is the one that leads and signs: {controller:?}"
    );
    let fixed = [
        "--controllers=webhook",
        "--log-format=json",
        "--metrics-addr=0.0.0.0:8444",
        "--webhook-addr=127.0.0.1:8443",
        "--webhook-cert=/etc/kcert/webhook/tls.crt",
        "--webhook-key=/etc/kcert/webhook/tls.key",
    ]
    .map(String::from)
    .to_vec();
    let mut strict = fixed.clone();
    strict.extend(
        [
            "--webhook-strict-user=admin-*",
            "--webhook-strict-group=ops",
        ]
        .map(String::from),
    );
    let every_value = [
        "--set",
        "kubelet.serving=true",
        "--set",
        "kubelet.client=true",
        "--set",
        "kubelet.sign=true",
        "--set",
        "kubelet.servingCidrs={10.0.0.0/8}",
        "--set",
        "policy=rules: []",
        "--set",
        "webhook.strictUsers={admin-*}",
        "--set",
        "webhook.strictGroups={ops}",
    ];
    let cases = [
        ("deploy/webhook/", webhook, fixed.clone()),
        ("the chart", chart(&[]), fixed.clone()),
        ("the chart, every value", chart(&every_value), strict),
        (
            "the chart without leader election",
            chart(&["--set", "leaderElection.enabled=false"]),
            fixed,
        ),
    ];
    let forbidden = [
        "--ca-",
        "--leader-",
        "--signer-name",
        "--max-duration",
        "--policy-file",
        "--kubelet-",
        "--ledger",
        "--cleaner",
        "--events",
        "--rbac-protection",
    ];
    for (source, yaml, expected) in cases {
        let daemon = webhook_daemonset(&yaml);
        let w = &daemon["spec"]["containers"][0];
        let args = args_of(w);
        assert_eq!(args, expected, "{source}");
        for f in forbidden {
            assert!(
                !args.iter().any(|a| a.starts_with(f)),
                "{source}: {f} in {args:?}"
            );
        }
        // Nothing mounted but the serving certificate (no policy, no CA).
        assert_eq!(
            daemon["spec"]["volumes"],
            serde_json::json!([{"name": "webhook-tls", "secret": {"secretName": "kcert-webhook-tls"}}]),
            "{source}"
        );
        assert_eq!(daemon["spec"]["hostNetwork"], true, "{source}");
        for field in ["image", "resources", "securityContext"] {
            assert_eq!(
                w[field], deployment["spec"]["containers"][0][field],
                "{source}: {field}"
            );
        }
        assert_eq!(
            daemon["spec"]["securityContext"], deployment["spec"]["securityContext"],
            "{source}"
        );
    }
}
