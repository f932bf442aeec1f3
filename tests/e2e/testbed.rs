//! Proof that the test bed is a real API server: its own answers on authentication,
//! authorization, admission and validation.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kcert_testbed::{CaKeyType, TestCluster};
use kcert_tests::{csr_object, eventually};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::time::Duration;

async fn whoami(client: Client) -> (String, Vec<String>) {
    let review: SelfSubjectReview = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview");
    let info = review.status.and_then(|s| s.user_info).expect("user info");
    (
        info.username.unwrap_or_default(),
        info.groups.unwrap_or_default(),
    )
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn admin_lists_namespaces_and_server_is_the_pinned_release() {
    let cluster = TestCluster::shared().await;
    let client = cluster.admin_client().await.unwrap();
    let names: Vec<String> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");
    assert!(names.contains(&"kube-system".to_string()), "{names:?}");
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, kcert_testbed::KUBERNETES_VERSION);
    let (user, groups) = whoami(client).await;
    assert_eq!(user, "kcert-testbed-admin");
    assert!(groups.contains(&"system:masters".to_string()));
}

#[tokio::test]
async fn a_ca_signed_certificate_authenticates_as_its_cn_and_groups() {
    let cluster = TestCluster::shared().await;
    let user = cluster.unique_name("jane");
    let (name, groups) = whoami(cluster.user_client(&user, &["dev", "ops"]).await.unwrap()).await;
    assert_eq!(name, user);
    for g in ["dev", "ops", "system:authenticated"] {
        assert!(
            groups.contains(&g.to_string()),
            "{g} missing from {groups:?}"
        );
    }
}

#[tokio::test]
async fn a_user_is_forbidden_until_granted_a_role() {
    let cluster = TestCluster::shared().await;
    let ns = cluster.namespace("grant").await.unwrap();
    let user = cluster.unique_name("jane");
    let jane_pods: Api<Pod> =
        Api::namespaced(cluster.user_client(&user, &["dev"]).await.unwrap(), &ns);
    let denied = api_error(jane_pods.list(&ListParams::default()).await);
    assert_eq!(denied.code, 403, "{denied:?}");
    assert!(denied.message.contains(&user), "{}", denied.message);

    let admin = cluster.admin_client().await.unwrap();
    let role = Role {
        metadata: ObjectMeta {
            name: Some("pod-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("jane-reads-pods".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "pod-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.clone(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let lp = ListParams::default();
    let pods = eventually(
        "jane lists pods after the binding (RBAC is served from informers)",
        Duration::from_secs(15),
        || jane_pods.list(&lp),
    )
    .await;
    assert!(pods.items.is_empty());
}

#[tokio::test]
async fn admission_refuses_system_masters_for_the_client_signer() {
    let cluster = TestCluster::shared().await;
    let csrs: Api<CertificateSigningRequest> = Api::all(cluster.admin_client().await.unwrap());
    let name = cluster.unique_name("masters");
    let csr = csr_object(
        &name,
        "kubernetes.io/kube-apiserver-client",
        "mallory",
        &["dev", "system:masters"],
        None,
    );
    let refused = api_error(csrs.create(&PostParams::default(), &csr).await);
    assert_eq!(refused.code, 403, "{refused:?}");
    assert!(
        refused.message.contains("system:masters"),
        "{}",
        refused.message
    );
}

#[tokio::test]
async fn validation_refuses_expiration_below_600_seconds() {
    let cluster = TestCluster::shared().await;
    let csrs: Api<CertificateSigningRequest> = Api::all(cluster.admin_client().await.unwrap());
    let short = csr_object(
        &cluster.unique_name("short"),
        "kcert.dev/client",
        "jane",
        &["dev"],
        Some(599),
    );
    let refused = api_error(csrs.create(&PostParams::default(), &short).await);
    assert_eq!(refused.code, 422, "{refused:?}");
    assert!(
        refused.message.contains("expirationSeconds"),
        "{}",
        refused.message
    );
    let ok = csr_object(
        &cluster.unique_name("ten-min"),
        "kcert.dev/client",
        "jane",
        &["dev"],
        Some(600),
    );
    csrs.create(&PostParams::default(), &ok).await.unwrap();
}

#[tokio::test]
async fn approving_needs_the_approve_verb_on_the_signer() {
    let cluster = TestCluster::shared().await;
    let admin = cluster.admin_client().await.unwrap();
    let approver = cluster.unique_name("approver");
    let signer = format!("kcert.dev/{}", cluster.unique_name("signer"));
    // May update the approval subresource, but has no `approve` on any signer.
    let role_name = cluster.unique_name("csr-approval-only");
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["certificates.k8s.io".into()]),
            resources: Some(vec![
                "certificatesigningrequests".into(),
                "certificatesigningrequests/approval".into(),
            ]),
            verbs: vec!["get".into(), "list".into(), "update".into(), "patch".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role_name,
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: approver.clone(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let name = cluster.unique_name("needs-approval");
    let csrs: Api<CertificateSigningRequest> = Api::all(admin);
    csrs.create(
        &PostParams::default(),
        &csr_object(&name, &signer, "jane", &["dev"], None),
    )
    .await
    .unwrap();
    let as_approver: Api<CertificateSigningRequest> =
        Api::all(cluster.user_client(&approver, &[]).await.unwrap());
    eventually(
        "the approver can read CSRs",
        Duration::from_secs(15),
        || as_approver.get(&name),
    )
    .await;
    let approve = serde_json::json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "TestApprove", "message": "approved by a test"
    }]}});
    let refused = api_error(
        as_approver
            .patch_approval(&name, &PatchParams::default(), &Patch::Merge(&approve))
            .await,
    );
    assert_eq!(refused.code, 403, "{refused:?}");
    assert!(
        refused.message.contains(&format!(
            "user not permitted to approve requests with signerName \"{signer}\""
        )),
        "{}",
        refused.message
    );
    let still = csrs.get(&name).await.unwrap();
    assert!(
        still
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn kubectl_lists_namespaces_with_the_admin_kubeconfig() {
    let cluster = TestCluster::shared().await;
    let out = cluster
        .kubectl()
        .args(["get", "namespaces", "-o", "name"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "namespace/default"), "{text}");
}

#[tokio::test]
async fn an_ecdsa_ca_cluster_runs_beside_the_shared_one_and_cleans_up() {
    let shared = TestCluster::shared().await;
    let cluster = TestCluster::builder()
        .ca_key(CaKeyType::EcdsaP256)
        .start()
        .await
        .unwrap();
    assert_ne!(cluster.server(), shared.server());
    assert_eq!(cluster.ca().info().key_algorithm.to_string(), "ECDSA P-256");
    let (name, groups) = whoami(cluster.user_client("erin", &["ops"]).await.unwrap()).await;
    assert_eq!(
        (name.as_str(), groups.contains(&"ops".to_string())),
        ("erin", true)
    );
    // A certificate from the other cluster's CA is not trusted here.
    let foreign = shared.user_kubeconfig("erin", &["ops"]).unwrap();
    let foreign = foreign
        .replace(shared.server(), cluster.server())
        .replace(&base64_of(shared.ca_pem()), &base64_of(cluster.ca_pem()));
    let client = kcert_testbed::client_from_kubeconfig(&foreign)
        .await
        .unwrap();
    let refused = api_error(
        Api::<SelfSubjectReview>::all(client)
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await,
    );
    assert_eq!(refused.code, 401, "{refused:?}");
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(!dir.exists(), "{} should be removed", dir.display());
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
