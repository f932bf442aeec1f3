//! deploy/ applied with kubectl, and the controller run as its own ServiceAccount: it approves
//! and signs for its signer, and is refused everything else.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kcert_controller::crd::ApprovalPolicy;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_testbed::TestCluster;
use kcert_tests::{RunningController, conditions, csr_object, eventually, issued, wait_for};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use std::time::Duration;

fn forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>) -> String {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("{what}: expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn the_controller_works_with_exactly_the_privileges_deploy_grants() {
    let cluster = TestCluster::shared().await;
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let out = cluster
        .kubectl()
        .args(["apply", "-k", deploy])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl apply -k: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = cluster.admin_client().await.unwrap();
    // The CA Secret the Deployment names, and one it must not read.
    for (name, crt, key) in [
        ("kcert-ca", cluster.ca_cert_path(), cluster.ca_key_path()),
        (
            "someone-elses",
            cluster.ca_cert_path(),
            cluster.ca_key_path(),
        ),
    ] {
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": std::fs::read_to_string(crt).unwrap(), "tls.key": std::fs::read_to_string(key).unwrap()}
        }))
        .unwrap();
        Api::<Secret>::namespaced(admin.clone(), "kcert-system")
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }
    let identity = cluster
        .service_account_client("kcert-system", "kcert-controller")
        .await
        .unwrap();

    // The controller as the ServiceAccount, with the Deployment's flags.
    let policy = serde_yaml::from_str(
        "rules: [{id: deploy-test, requesters: {users: [kcert-testbed-admin]}, commonName: {glob: 'deploy-*'}, groups: {allowed: [dev]}}]",
    )
    .unwrap();
    // Following CA rotations as the Deployment does (--ca-rotation kcert), its probe
    // connecting as the ServiceAccount's API server address and CA.
    let token = cluster
        .service_account_token("kcert-system", "kcert-controller")
        .await
        .unwrap();
    let yaml = kcert_testbed::kubeconfig::render(
        cluster.server(),
        cluster.ca_pem(),
        "kcert-controller",
        &kcert_testbed::kubeconfig::Credentials::Token(&token),
    );
    let api = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&yaml).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let settings = Settings {
        signer_names: vec!["kcert.dev/client".into()],
        policy: PolicySource::Static(policy),
        ca: Some(CaSource::Secret {
            namespace: "kcert-system".into(),
            name: "kcert-ca".into(),
        }),
        rotation: Some(kcert_controller::rotation::RotationSettings {
            name: kcert_kube::rotation::DEFAULT_ROTATION.into(),
            namespace: "kcert-system".into(),
            api,
            token: None,
            every: Duration::from_millis(500),
            trust_bundle_signers: vec![],
        }),
        ..Settings::default()
    };
    let _controller = RunningController::start_with(identity.clone(), settings);
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let name = cluster.unique_name("deploy");
    csrs.create(
        &PostParams::default(),
        &csr_object(
            &name,
            "kcert.dev/client",
            &format!("deploy-{name}"),
            &["dev"],
            None,
        ),
    )
    .await
    .unwrap();
    let done = wait_for(&csrs, &name, Duration::from_secs(30), "issued", issued).await;
    assert_eq!(conditions(&done)[0].1, "AutoApproved");

    // Everything else is refused to that identity.
    let other = cluster.unique_name("other-signer");
    csrs.create(
        &PostParams::default(),
        &csr_object(&other, "kcert.dev/other", "x", &[], None),
    )
    .await
    .unwrap();
    let as_sa: Api<CertificateSigningRequest> = Api::all(identity.clone());
    let mut csr = as_sa.get(&other).await.unwrap();
    csr.status.get_or_insert_with(Default::default).conditions =
        Some(vec![kcert_controller::conditions::condition(
            "Approved", "Test", "test",
        )]);
    let msg = forbidden(
        "approve another signer",
        as_sa
            .replace_subresource("approval", &other, &PostParams::default(), &csr)
            .await,
    );
    assert!(
        msg.contains("user not permitted to approve requests with signerName \"kcert.dev/other\""),
        "{msg}"
    );
    let secrets: Api<Secret> = Api::namespaced(identity.clone(), "kcert-system");
    forbidden("read another Secret", secrets.get("someone-elses").await);
    forbidden(
        "list all Secrets",
        secrets.list(&ListParams::default()).await,
    );
    forbidden(
        "read Secrets elsewhere",
        Api::<Secret>::namespaced(identity.clone(), "default")
            .get("anything")
            .await,
    );
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
    forbidden(
        "create a ConfigMap",
        Api::<ConfigMap>::namespaced(identity.clone(), "kcert-system")
            .create(&PostParams::default(), &cm)
            .await,
    );
    // The trust bundle it may write (deploy/bundle.yaml, get and update on that one alone):
    // the CA it signs with.
    let bundles: Api<ConfigMap> = Api::namespaced(admin.clone(), "kcert-system");
    eventually(
        "the trust bundle published",
        Duration::from_secs(30),
        || {
            let bundles = bundles.clone();
            async move {
                let data = bundles
                    .get(kcert_kube::rotation::BUNDLE_CONFIGMAP)
                    .await
                    .map_err(|e| e.to_string())?
                    .data
                    .unwrap_or_default();
                match data.get(kcert_kube::rotation::BUNDLE_KEY) {
                    Some(pem) if *pem == cluster.ca_pem() => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    // (Deleting CSRs is allowed: the cleaner needs it, as kube-controller-manager's does.)
    let policy: ApprovalPolicy =
        serde_yaml::from_str("metadata: {name: sneaky}\nspec: {rules: []}").unwrap();
    forbidden(
        "create an ApprovalPolicy",
        Api::<ApprovalPolicy>::all(identity.clone())
            .create(&PostParams::default(), &policy)
            .await,
    );
    forbidden(
        "patch a CSR's spec or metadata",
        as_sa
            .patch(
                &other,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": {"a": "b"}}})),
            )
            .await,
    );
    // The admission guard from deploy/: system: names on kcert.dev/client are refused at create,
    // for any letters after "system:" and in CN or O alike.
    for (cn, groups) in [
        ("evil", vec!["dev", "system:masters"]),
        ("system:kube-scheduler", vec![]),
        ("x", vec!["system:nodes"]),
    ] {
        let n = cluster.unique_name("guarded");
        // The policy is enforced once the API server has loaded it.
        let message = eventually(
            &format!("the admission guard refuses {cn} {groups:?}"),
            Duration::from_secs(20),
            || async {
                let obj = csr_object(&n, "kcert.dev/client", cn, &groups, None);
                match csrs.create(&PostParams::default(), &obj).await {
                    Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Ok(s.message),
                    Ok(_) => {
                        let _ = csrs.delete(&n, &Default::default()).await;
                        Err("admitted".to_string())
                    }
                    Err(e) => panic!("{e}"),
                }
            },
        )
        .await;
        assert!(
            message.contains("kcert never issues such certificates"),
            "{message}"
        );
    }
    // A look-alike the guard cannot see gets through admission, and the controller denies it.
    let n = cluster.unique_name("lookalike");
    csrs.create(
        &PostParams::default(),
        &csr_object(
            &n,
            "kcert.dev/client",
            "deploy-lookalike",
            &["SYSTEM:MASTERS"],
            None,
        ),
    )
    .await
    .unwrap();
    let denied = wait_for(&csrs, &n, Duration::from_secs(20), "denied", |c| {
        !conditions(c).is_empty()
    })
    .await;
    assert_eq!(conditions(&denied)[0].1, "ProtectedGroup");
    // Other signer names are not the guard's business.
    let other_ok = cluster.unique_name("other-system");
    csrs.create(
        &PostParams::default(),
        &csr_object(
            &other_ok,
            "example.com/other",
            "x",
            &["system:masters"],
            None,
        ),
    )
    .await
    .unwrap();
    // (Creating CSRs is not checked: other tests in this cluster let every authenticated user.)
}
