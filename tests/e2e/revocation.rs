//! Revocation that takes effect, on the real API server: kcert-controller serves the
//! authorization webhook (AuthorizationConfiguration: kcert's webhook for X.509 requests only,
//! failurePolicy Deny, then Node and RBAC). jane lists pods; her certificate is revoked in the
//! ledger; her next request is 403 naming the revocation, within a few seconds; bob, a
//! ServiceAccount token and a new certificate for jane are unaffected; with the webhook down,
//! X.509 requests are refused and tokens are not; revocations survive a controller restart.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kcert_controller::authz_webhook::WebhookSettings;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_kube::revocation::{Selector, revoke};
use kcert_testbed::kubeconfig::{Credentials, render};
use kcert_testbed::{TestCluster, client_from_kubeconfig};
use kcert_tests::*;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use std::path::Path;
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

/// The webhook's files (its CA, serving certificate, the API server's AuthorizationConfiguration
/// from deploy/) and its settings, strict mode for admins.
fn webhook_files(dir: &Path, port: u16) -> (WebhookSettings, std::path::PathBuf) {
    let files = kcert_testbed::webhook::WebhookFiles::create(dir, port).unwrap();
    let settings = WebhookSettings {
        addr: files.addr,
        cert: files.cert,
        key: files.key,
        // Strict mode for admins: only kcert-issued certificates.
        strict: kcert_kube::revocation::Strict {
            users: vec!["admin-*".into()],
            groups: vec![],
        },
    };
    (settings, files.authorization_config)
}

/// A certificate for `user` in `groups` issued by kcert-controller, as a client.
async fn issue(
    cluster: &TestCluster,
    admin: &Api<CertificateSigningRequest>,
    signer: &str,
    user: &str,
    groups: &[&str],
) -> (Client, String) {
    let name = cluster.unique_name(&format!("rev-{user}"));
    let (csr, key_pem) = csr_with_key(&name, signer, user, groups, Some(3600));
    admin.create(&PostParams::default(), &csr).await.unwrap();
    let done = wait_for(admin, &name, 20 * SECOND, "issued", issued).await;
    let cert_pem = String::from_utf8(done.status.unwrap().certificate.unwrap().0).unwrap();
    let yaml = render(
        cluster.server(),
        cluster.ca_pem(),
        user,
        &Credentials::ClientCertificate {
            cert_pem: &cert_pem,
            key_pem: &key_pem,
        },
    );
    (client_from_kubeconfig(&yaml).await.unwrap(), name)
}

async fn list_pods(client: &Client, ns: &str) -> Result<usize, kube::Error> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items.len())
}

fn forbidden_message(r: Result<usize, kube::Error>) -> Option<String> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => Some(s.message),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_within_seconds_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let port = kcert_testbed::webhook::free_port().unwrap();
    let (webhook, authorization_config) = webhook_files(dir.path(), port);
    let cluster = TestCluster::builder()
        .authorization_config(authorization_config)
        .start()
        .await
        .unwrap();
    install_crds(&cluster).await;
    let admin_client = cluster.admin_client().await.unwrap();
    let signer = "kcert.dev/client";
    let policy = serde_yaml::from_str(
        "rules: [{id: onboard, requesters: {users: [kcert-testbed-admin]}, commonName: {glob: '*'}, groups: {allowed: [readers]}}]",
    )
    .unwrap();
    let settings = || Settings {
        signer_names: vec![signer.to_string()],
        policy: PolicySource::Static(policy_clone(&policy)),
        ca: Some(CaSource::Files {
            cert: cluster.ca_cert_path(),
            key: cluster.ca_key_path(),
        }),
        ledger: true,
        webhook: Some(webhook.clone()),
        ..Settings::default()
    };
    let controller = RunningController::start_with(admin_client.clone(), settings());
    let ns = cluster.namespace("revocation").await.unwrap();
    // Group readers may list pods in the namespace.
    let rbac: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: pod-reader, namespace: {ns}}}\nrules: [{{apiGroups: [''], resources: [pods], verbs: [list]}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: readers, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}}\nsubjects: [{{kind: Group, name: readers, apiGroup: rbac.authorization.k8s.io}}, {{kind: ServiceAccount, name: robot, namespace: {ns}}}]\n"
    ))
    .map(|d| serde::Deserialize::deserialize(d).unwrap())
    .collect();
    let role: k8s_openapi::api::rbac::v1::Role = serde_yaml::from_value(rbac[0].clone()).unwrap();
    let binding: k8s_openapi::api::rbac::v1::RoleBinding =
        serde_yaml::from_value(rbac[1].clone()).unwrap();
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin_client.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin_client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    Api::<ServiceAccount>::namespaced(admin_client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "robot"}})).unwrap(),
        )
        .await
        .unwrap();
    let robot = cluster.service_account_client(&ns, "robot").await.unwrap();

    let csrs: Api<CertificateSigningRequest> = Api::all(admin_client.clone());
    let (jane, jane_csr) = issue(&cluster, &csrs, signer, "jane", &["readers"]).await;
    let (bob, _) = issue(&cluster, &csrs, signer, "bob", &["readers"]).await;
    // Before: jane lists pods (the webhook has no opinion, RBAC allows).
    eventually("jane lists pods", 20 * SECOND, || async {
        list_pods(&jane, &ns).await.map_err(|e| e.to_string())
    })
    .await;

    // Revoke every certificate of jane's (once the ledger has recorded it); her next request is
    // refused, naming the revocation.
    eventually("jane's certificate in the ledger", 20 * SECOND, || async {
        let pages = kcert_kube::ledger::list_pages(&admin_client).await.unwrap();
        let n = kcert_kube::ledger::records(&pages)
            .iter()
            .filter(|(_, r)| r.user == "jane")
            .count();
        if n == 1 { Ok(()) } else { Err(n) }
    })
    .await;
    let started = Instant::now();
    let done = revoke(
        &admin_client,
        &Selector::User("jane".into()),
        "kcert-testbed-admin",
        "laptop stolen",
    )
    .await
    .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result, "revoked");
    let message = eventually("jane's requests are refused", 20 * SECOND, || async {
        forbidden_message(list_pods(&jane, &ns).await).ok_or("still allowed")
    })
    .await;
    let took = started.elapsed();
    assert!(
        message.contains("revoked") && message.contains("laptop stolen"),
        "{message}"
    );
    eprintln!(
        "revocation: first 403 {:.2}s after kcert revoke",
        took.as_secs_f64()
    );
    assert!(took < 10 * SECOND, "revocation took {took:?}");
    // Idempotent.
    let again = revoke(
        &admin_client,
        &Selector::Csr(jane_csr.clone()),
        "someone-else",
        "again",
    )
    .await
    .unwrap();
    assert_eq!(
        (again[0].result, again[0].revocation.reason.as_str()),
        ("already revoked", "laptop stolen")
    );
    // bob, the ServiceAccount and a new certificate for jane are unaffected.
    assert_eq!(list_pods(&bob, &ns).await.unwrap(), 0);
    assert_eq!(list_pods(&robot, &ns).await.unwrap(), 0);
    let (jane_again, _) = issue(&cluster, &csrs, signer, "jane", &["readers"]).await;
    eventually("jane's new certificate works", 20 * SECOND, || async {
        list_pods(&jane_again, &ns).await.map_err(|e| e.to_string())
    })
    .await;

    // Strict mode: a certificate minted by hand with the CA key (not in the ledger) is refused
    // for the users named; for others it works as before.
    let minted = cluster
        .user_client("admin-mallory", &["readers"])
        .await
        .unwrap();
    let refused = forbidden_message(list_pods(&minted, &ns).await)
        .expect("a hand-minted admin certificate worked");
    assert!(refused.contains("not issued by kcert"), "{refused}");
    let carol = cluster.user_client("carol", &["readers"]).await.unwrap();
    assert_eq!(list_pods(&carol, &ns).await.unwrap(), 0);

    // The webhook down: X.509 requests are refused (failurePolicy Deny), tokens are not.
    controller.kill();
    let down = eventually(
        "X.509 refused with the webhook down",
        30 * SECOND,
        || async {
            // The API server refuses with 500 naming the unreachable webhook (failurePolicy Deny).
            match list_pods(&bob, &ns).await {
                Err(kube::Error::Api(s))
                    if (s.code == 403 || s.code == 500) && s.message.contains("/authorize") =>
                {
                    Ok(s.message)
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    eprintln!("webhook down: {down}");
    assert_eq!(list_pods(&robot, &ns).await.unwrap(), 0);
    // Back up (a new process, the ledger re-read): served again, the revocation still holds.
    let _controller = RunningController::start_with(admin_client.clone(), settings());
    eventually("bob served again", 30 * SECOND, || async {
        list_pods(&bob, &ns).await.map_err(|e| e.to_string())
    })
    .await;
    let still = forbidden_message(list_pods(&jane, &ns).await)
        .expect("jane's revoked certificate works again");
    assert!(still.contains("laptop stolen"), "{still}");
}

fn policy_clone(p: &kcert_policy::PolicySpec) -> kcert_policy::PolicySpec {
    p.clone()
}

/// The shipped AuthorizationConfiguration with its webhook down (nothing listens at its
/// address): the control plane's own X.509 identities are not sent to the webhook and keep
/// working — kube-controller-manager, kube-scheduler, kube-proxy, a kubelet, kubeadm's
/// admin.conf (kubernetes-admin in kubeadm:cluster-admins, bound to cluster-admin as kubeadm
/// does) — while a user of the kind kcert issues, whom RBAC allows, is refused (fail closed);
/// until the break-glass path takes the webhook out of the configuration file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_webhook_down_the_control_plane_keeps_working_and_kcert_users_are_refused() {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    use k8s_openapi::api::core::v1::{Node, Secret, Service};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let dir = tempfile::tempdir().unwrap();
    // deploy/authorization-config.yaml, the webhook's port free: nobody answers there.
    let files = kcert_testbed::webhook::WebhookFiles::create(
        dir.path(),
        kcert_testbed::webhook::free_port().unwrap(),
    )
    .unwrap();
    let shipped = std::fs::read_to_string(&files.authorization_config).unwrap();
    assert!(shipped.contains("failurePolicy: Deny"), "{shipped}");
    let cluster = TestCluster::builder()
        .authorization_config(files.authorization_config.clone())
        .start()
        .await
        .unwrap();
    let admin = cluster.admin_client().await.unwrap();
    let yaml = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: 'kubeadm:cluster-admins'}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\nsubjects: [{kind: Group, name: 'kubeadm:cluster-admins', apiGroup: rbac.authorization.k8s.io}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: pod-lister}\nrules: [{apiGroups: [''], resources: [pods], verbs: [list]}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: dev-pod-lister}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pod-lister}\nsubjects: [{kind: Group, name: dev, apiGroup: rbac.authorization.k8s.io}]\n";
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    for i in [0, 2] {
        bindings
            .create(
                &PostParams::default(),
                &serde_yaml::from_value(docs[i].clone()).unwrap(),
            )
            .await
            .unwrap();
    }
    Api::<ClusterRole>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_yaml::from_value(docs[1].clone()).unwrap(),
        )
        .await
        .unwrap();

    // The control plane's certificates (signed by the cluster CA, as kubeadm's are).
    let kcm = cluster
        .user_client("system:kube-controller-manager", &[])
        .await
        .unwrap();
    let n = Api::<Pod>::all(kcm)
        .list(&ListParams::default())
        .await
        .expect("kube-controller-manager lists pods with the webhook down");
    eprintln!("kube-controller-manager: {} pods", n.items.len());
    let scheduler = cluster
        .user_client("system:kube-scheduler", &[])
        .await
        .unwrap();
    Api::<Node>::all(scheduler)
        .list(&ListParams::default())
        .await
        .expect("kube-scheduler lists nodes with the webhook down");
    let proxy = cluster.user_client("system:kube-proxy", &[]).await.unwrap();
    Api::<Service>::all(proxy)
        .list(&ListParams::default())
        .await
        .expect("kube-proxy lists services with the webhook down");
    // A kubelet registers its Node (Node authorizer, NodeRestriction) and reads it back.
    let node_name = cluster.unique_name("cp-node");
    let kubelet = cluster
        .user_client(&format!("system:node:{node_name}"), &["system:nodes"])
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(kubelet);
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": node_name}})).unwrap(),
        )
        .await
        .expect("a kubelet registers its Node with the webhook down");
    nodes
        .get(&node_name)
        .await
        .expect("a kubelet reads its Node with the webhook down");
    // kubeadm's admin.conf.
    let kubeadm_admin = cluster
        .user_client("kubernetes-admin", &["kubeadm:cluster-admins"])
        .await
        .unwrap();
    Api::<Secret>::namespaced(kubeadm_admin, "kube-system")
        .list(&ListParams::default())
        .await
        .expect("kubeadm's admin.conf works with the webhook down (break-glass)");

    // jane in dev, as kcert issues her: RBAC would let her list pods (asked without a
    // credential id, so the webhook is not consulted), yet her certificate is refused because
    // nobody answers for kcert (failurePolicy Deny: the API server answers 500 naming the
    // webhook).
    let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
        "spec": {
            "user": "jane",
            "groups": ["dev", "system:authenticated"],
            "resourceAttributes": {"namespace": "default", "verb": "list", "resource": "pods"}
        }
    }))
    .unwrap();
    let allowed = Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(allowed.allowed, "RBAC does not grant jane: {allowed:?}");
    let jane = cluster.user_client("jane", &["dev"]).await.unwrap();
    match list_pods(&jane, "default").await {
        Err(kube::Error::Api(s))
            if (s.code == 403 || s.code == 500) && s.message.contains("/authorize") =>
        {
            eprintln!("kcert user with the webhook down: {} {}", s.code, s.message)
        }
        other => panic!("jane's certificate with the webhook down: {other:?}"),
    }

    // Break-glass (docs/revocation.md): the Webhook entry deleted from the API server's
    // --authorization-config file; the API server reloads it and RBAC alone decides.
    let mut config: serde_yaml::Value = serde_yaml::from_str(&shipped).unwrap();
    config["authorizers"]
        .as_sequence_mut()
        .unwrap()
        .retain(|a| a["type"] != "Webhook");
    std::fs::write(
        &files.authorization_config,
        serde_yaml::to_string(&config).unwrap(),
    )
    .unwrap();
    let took = Instant::now();
    eventually(
        "jane served once the webhook is out of the configuration",
        90 * SECOND,
        || async { list_pods(&jane, "default").await.map_err(|e| e.to_string()) },
    )
    .await;
    eprintln!(
        "break-glass: the configuration reloaded in {:.1}s",
        took.elapsed().as_secs_f64()
    );
}
