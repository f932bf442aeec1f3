//! What "privileged" means on a real API server: a role that impersonates ServiceAccounts and
//! reads Secrets, bound by a RoleBinding in a team's namespace, protects nobody (a namespace
//! admin cannot make anyone unapprovable); the same RoleBinding in `kube-system`, or the role
//! bound cluster-wide, does; `exemptUsers` lifts the RBAC-derived protection of a user.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject,
};
use kcert_controller::PolicySource;
use kcert_testbed::TestCluster;
use kcert_tests::{
    RunningController, allow_everyone_to_request, conditions, csr_object, decided, wait_for,
};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use std::time::Duration;

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(String::from),
        ..Default::default()
    }
}

fn user(name: &str) -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "User".into(),
        name: name.into(),
        namespace: None,
    }
}

fn role_ref(name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn a_namespace_admin_cannot_make_anyone_unapprovable() {
    let cluster = TestCluster::shared().await;
    allow_everyone_to_request(cluster).await;
    let admin_client = cluster.admin_client().await.unwrap();
    let unique = cluster.unique_name("priv");
    // What the built-in edit role grants that once counted as privileged: impersonating
    // ServiceAccounts and reading Secrets (its other rules change nothing here).
    let editor = format!("{unique}-editor");
    Api::<ClusterRole>::all(admin_client.clone())
        .create(
            &PostParams::default(),
            &ClusterRole {
                metadata: meta(&editor, None),
                rules: Some(vec![
                    PolicyRule {
                        api_groups: Some(vec!["".into()]),
                        resources: Some(vec!["serviceaccounts".into()]),
                        verbs: vec!["impersonate".into()],
                        ..Default::default()
                    },
                    PolicyRule {
                        api_groups: Some(vec!["".into()]),
                        resources: Some(vec!["secrets".into(), "pods".into()]),
                        verbs: vec!["get".into(), "list".into(), "create".into()],
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let team = format!("{unique}-team");
    Api::<Namespace>::all(admin_client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta(&team, None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (alice, bob, carol, dave) = (
        format!("{unique}-alice"),
        format!("{unique}-bob"),
        format!("{unique}-carol"),
        format!("{unique}-dave"),
    );
    let bind = |ns: &str, name: &str, who: &str| {
        let api: Api<RoleBinding> = Api::namespaced(admin_client.clone(), ns);
        let b = RoleBinding {
            metadata: meta(name, Some(ns)),
            role_ref: role_ref(&editor),
            subjects: Some(vec![user(who)]),
        };
        async move { api.create(&PostParams::default(), &b).await.unwrap() }
    };
    bind(&team, &format!("{unique}-alice"), &alice).await;
    bind("kube-system", &format!("{unique}-bob"), &bob).await;
    bind("kube-system", &format!("{unique}-dave"), &dave).await;
    Api::<ClusterRoleBinding>::all(admin_client.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: meta(&format!("{unique}-carol"), None),
                role_ref: role_ref(&editor),
                subjects: Some(vec![user(&carol)]),
            },
        )
        .await
        .unwrap();

    let signer = format!("kcert.dev/{unique}");
    let spec = serde_yaml::from_str(&format!(
        "exemptUsers: ['{dave}']\nrules: [{{id: self, signerNames: ['{signer}'], requesters: {{users: ['{unique}-*']}}}}]"
    ))
    .unwrap();
    let _controller = RunningController::start(
        cluster,
        admin_client.clone(),
        &signer,
        PolicySource::Static(spec),
        Duration::from_secs(3600),
    );
    let admin: Api<CertificateSigningRequest> = Api::all(admin_client);
    let decide = |who: String| {
        let admin = admin.clone();
        let signer = signer.clone();
        async move {
            let csrs: Api<CertificateSigningRequest> =
                Api::all(cluster.user_client(&who, &[]).await.unwrap());
            let name = cluster.unique_name("priv-csr");
            csrs.create(
                &PostParams::default(),
                &csr_object(&name, &signer, &who, &[], None),
            )
            .await
            .unwrap();
            let done = wait_for(&admin, &name, Duration::from_secs(20), "decided", decided).await;
            conditions(&done)[0].clone()
        }
    };
    let (kind, reason, message) = decide(alice.clone()).await;
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Approved", "AutoApproved"),
        "{alice}, an editor of {team} only: {message}"
    );
    let (kind, reason, message) = decide(bob.clone()).await;
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Denied", "ProtectedUser")
    );
    assert!(
        message.contains("kube-system") && message.contains("privileged namespace"),
        "{message}"
    );
    let (kind, reason, message) = decide(carol.clone()).await;
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Denied", "ProtectedUser")
    );
    assert!(message.contains("grants impersonate"), "{message}");
    let (kind, _, message) = decide(dave.clone()).await;
    assert_eq!(kind, "Approved", "{dave} is exempt: {message}");
}
