//! The Helm chart (deploy/chart/kcert), judged by Helm itself (built from its Go module by the
//! test bed): it lints clean, with default values it renders exactly the objects of the
//! kustomize base (but the Namespace), with the webhook those plus deploy/webhook/'s (whatever
//! the controller's values), and installed with `helm install` onto a real API server
//! it gives the controller what it needs, proven by running the controller as its
//! ServiceAccount.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_testbed::TestCluster;
use kcert_tests::{RunningController, conditions, csr_object, issued, wait_for};
use kube::Api;
use kube::api::PostParams;
use serde::Deserialize;
use std::process::Command;
use std::time::Duration;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/chart/kcert");
const BASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
const WEBHOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/webhook");

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

/// Numbers as numbers: `0` and `0.0` are one value whichever tool printed them.
fn normalized(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Number(n), Value::Number),
        Value::Array(a) => Value::Array(a.into_iter().map(normalized).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalized(v))).collect()),
        other => other,
    }
}

/// Every object of a multi-document YAML stream, keyed by kind/namespace/name, Namespaces left
/// out.
fn objects(yaml: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| serde_json::Value::deserialize(doc).ok())
        .map(normalized)
        .filter(|v| v.is_object() && v["kind"] != "Namespace")
        .map(|v| {
            let key = format!(
                "{}/{}/{}",
                v["kind"].as_str().unwrap_or_default(),
                v["metadata"]["namespace"].as_str().unwrap_or_default(),
                v["metadata"]["name"].as_str().unwrap_or_default()
            );
            (key, v)
        })
        .collect()
}

/// The Namespace named `name` in a multi-document YAML stream.
fn namespace(yaml: &str, name: &str) -> Option<serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| serde_json::Value::deserialize(doc).ok())
        .find(|v| v["kind"] == "Namespace" && v["metadata"]["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helm_chart_lints_renders_the_kustomize_base_and_installs() {
    let helm = tokio::task::spawn_blocking(kcert_testbed::helm)
        .await
        .unwrap()
        .unwrap();
    let kubectl = kcert_testbed::Binaries::locate()
        .unwrap()
        .kubectl
        .unwrap_or_else(|| "kubectl".into());
    // helm lint: clean.
    let lint = run(Command::new(&helm).args(["lint", "--strict", CHART]));
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let lint =
        run(Command::new(&helm).args(["lint", "--strict", CHART, "--set", "webhook.enabled=true"]));
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    // Default values: the kustomize base, object for object.
    let rendered = run(Command::new(&helm).args([
        "template",
        "kcert",
        CHART,
        "--namespace",
        "kcert-system",
        "--include-crds",
    ]));
    let base = run(Command::new(&kubectl).args(["kustomize", BASE]));
    let (chart, kustomize) = (objects(&rendered), objects(&base));
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        kustomize.keys().collect::<Vec<_>>(),
        "the chart and deploy/ hold different objects"
    );
    for (key, object) in &kustomize {
        assert_eq!(
            &chart[key], object,
            "{key} differs between the chart and deploy/"
        );
    }
    // The webhook switch renders, object for object, the base plus deploy/webhook/ (the
    // webhook's namespace included: its Pod Security level is the point).
    let template = |extra: &[&str]| {
        run(Command::new(&helm)
            .args(["template", "kcert", CHART, "--namespace", "kcert-system"])
            .args(extra))
    };
    let with_webhook = template(&["--set", "webhook.enabled=true"]);
    let webhook_dir = run(Command::new(&kubectl).args(["kustomize", WEBHOOK]));
    let mut expected = objects(&base);
    expected.remove("CustomResourceDefinition//approvalpolicies.kcert.dev");
    expected.remove("CustomResourceDefinition//ledgerpages.kcert.dev");
    expected.remove("CustomResourceDefinition//revocations.kcert.dev");
    expected.remove("CustomResourceDefinition//carotations.kcert.dev");
    expected.extend(objects(&webhook_dir));
    let chart_webhook = objects(&with_webhook);
    assert_eq!(
        chart_webhook.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the chart with the webhook and deploy/ + deploy/webhook/ hold different objects"
    );
    for (key, object) in &expected {
        assert_eq!(
            &chart_webhook[key], object,
            "{key} differs between the chart with the webhook and deploy/webhook/"
        );
    }
    assert_eq!(
        namespace(&with_webhook, "kcert-webhook"),
        namespace(&webhook_dir, "kcert-webhook")
    );
    assert!(namespace(&with_webhook, "kcert-webhook").is_some());
    let strict = template(&[
        "--set",
        "webhook.enabled=true",
        "--set",
        "webhook.strictUsers={admin-*}",
    ]);
    for needle in [
        "hostNetwork: true",
        "--webhook-addr=127.0.0.1:8443",
        "--webhook-strict-user=admin-*",
        "secretName: kcert-webhook-tls",
    ] {
        assert!(strict.contains(needle), "{needle} not rendered");
    }
    // The Deployment's values change the Deployment only: the webhook's side stays
    // deploy/webhook/, object for object (no policy ConfigMap, no kubelet RBAC, no controller
    // flags for the DaemonSet), and it needs no leader election (it takes no Lease).
    let webhook_objects = objects(&webhook_dir);
    for extra in [
        &[
            "--set",
            "kubelet.serving=true",
            "--set",
            "kubelet.client=true",
            "--set",
            "kubelet.servingCidrs={10.0.0.0/8}",
            "--set",
            "policy=rules: []",
        ][..],
        &["--set", "leaderElection.enabled=false"][..],
    ] {
        let mut args = vec!["--set", "webhook.enabled=true"];
        args.extend_from_slice(extra);
        let webhook_side: std::collections::BTreeMap<_, _> = objects(&template(&args))
            .into_iter()
            .filter(|(_, v)| {
                v["metadata"]["namespace"] == "kcert-webhook"
                    || v["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("kcert-webhook"))
            })
            .collect();
        assert_eq!(
            webhook_side.keys().collect::<Vec<_>>(),
            webhook_objects.keys().collect::<Vec<_>>(),
            "{extra:?}"
        );
        for (key, object) in &webhook_objects {
            assert_eq!(&webhook_side[key], object, "{key} with {extra:?}");
        }
    }

    // The kubelet switches render the flags and, object for object, deploy/nodes/rbac.yaml.
    let with_nodes = run(Command::new(&helm).args([
        "template",
        "kcert",
        CHART,
        "--namespace",
        "kcert-system",
        "--set",
        "kubelet.serving=true",
        "--set",
        "kubelet.client=true",
        "--set",
        "kubelet.servingCidrs={10.0.0.0/8}",
    ]));
    for needle in [
        "--kubelet-serving",
        "--kubelet-client",
        "--kubelet-serving-cidr=10.0.0.0/8",
    ] {
        assert!(with_nodes.contains(needle), "{needle} not rendered");
    }
    let chart_nodes = objects(&with_nodes);
    let nodes_rbac = objects(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/nodes/rbac.yaml"
        ))
        .unwrap(),
    );
    assert_eq!(nodes_rbac.len(), 6);
    for (key, object) in &nodes_rbac {
        assert_eq!(
            chart_nodes.get(key),
            Some(object),
            "{key} differs from deploy/nodes/rbac.yaml"
        );
    }
    assert!(
        !rendered.contains("kcert-controller-nodes"),
        "off by default"
    );

    // The CA key in a token: the token's flags instead of --ca-secret, the certificate and the
    // PIN mounted read-only (the PIN a file, never an argument); ClusterTrustBundles add their
    // flag and RBAC. Both lint clean.
    let token_args = [
        "--set",
        "pkcs11.enabled=true",
        "--set",
        "pkcs11.env[0].name=SOFTHSM2_CONF",
        "--set",
        "pkcs11.env[0].value=/etc/softhsm/softhsm2.conf",
        "--set",
        "clusterTrustBundles=true",
    ];
    let lint = run(Command::new(&helm)
        .args(["lint", "--strict", CHART])
        .args(token_args));
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let with_token = run(Command::new(&helm)
        .args(["template", "kcert", CHART, "--namespace", "kcert-system"])
        .args(token_args));
    let deployment = objects(&with_token)["Deployment/kcert-system/kcert-controller"].clone();
    let pod = &deployment["spec"]["template"]["spec"];
    let args: Vec<String> = serde_json::from_value(pod["containers"][0]["args"].clone()).unwrap();
    for needle in [
        "--ca-cert=/etc/kcert/ca/ca.crt",
        "--ca-pkcs11-module=/usr/lib/softhsm/libsofthsm2.so",
        "--ca-pkcs11-token=kcert",
        "--ca-pkcs11-key-label=kcert-ca",
        "--ca-pkcs11-pin-file=/etc/kcert/pin/pin",
        "--cluster-trust-bundles",
    ] {
        assert!(args.iter().any(|a| a == needle), "{needle} not in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--ca-secret")),
        "{args:?}"
    );
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "kcert-ca-cert");
    assert_eq!(pod["volumes"][1]["secret"]["secretName"], "kcert-ca-pin");
    assert_eq!(pod["containers"][0]["volumeMounts"][1]["readOnly"], true);
    assert_eq!(pod["containers"][0]["env"][2]["name"], "SOFTHSM2_CONF");
    assert!(with_token.contains("verbs: [attest]") && with_token.contains("[clustertrustbundles]"));
    for needle in [
        "verbs: [attest]",
        "[clustertrustbundles]",
        "--ca-pkcs11-module=",
    ] {
        assert!(!rendered.contains(needle), "{needle}: off by default");
    }

    // helm install onto a real API server, then the controller as the chart's ServiceAccount.
    let cluster = TestCluster::start().await.unwrap();
    run(Command::new(&helm)
        .arg("--kubeconfig")
        .arg(cluster.admin_kubeconfig_path())
        .args([
            "install",
            "kcert",
            CHART,
            "--namespace",
            "kcert-system",
            "--create-namespace",
        ]));
    let admin = cluster.admin_client().await.unwrap();
    let ca: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kcert-ca"},
        "type": "kubernetes.io/tls",
        "stringData": {
            "tls.crt": std::fs::read_to_string(cluster.ca_cert_path()).unwrap(),
            "tls.key": std::fs::read_to_string(cluster.ca_key_path()).unwrap(),
        }
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), "kcert-system")
        .create(&PostParams::default(), &ca)
        .await
        .unwrap();
    let identity = cluster
        .service_account_client("kcert-system", "kcert-controller")
        .await
        .unwrap();
    let policy = serde_yaml::from_str(
        "rules: [{id: helm, requesters: {users: [kcert-testbed-admin]}, commonName: {glob: 'helm-*'}, groups: {allowed: [dev]}}]",
    )
    .unwrap();
    let settings = Settings {
        policy: PolicySource::Static(policy),
        ca: Some(CaSource::Secret {
            namespace: "kcert-system".into(),
            name: "kcert-ca".into(),
        }),
        ledger: true,
        ..Settings::default()
    };
    let _controller = RunningController::start_with(identity, settings);
    let csrs: Api<CertificateSigningRequest> = Api::all(admin);
    let name = cluster.unique_name("helm");
    csrs.create(
        &PostParams::default(),
        &csr_object(
            &name,
            "kcert.dev/client",
            &format!("helm-{name}"),
            &["dev"],
            None,
        ),
    )
    .await
    .unwrap();
    let done = wait_for(&csrs, &name, Duration::from_secs(30), "issued", issued).await;
    assert_eq!(conditions(&done)[0].1, "AutoApproved");
}
