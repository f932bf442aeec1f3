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
use serde::Deserialize;
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

/// The objects named `name` of deploy/`file`, as JSON.
fn deployed(file: &str, name: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(format!("{}/../deploy/{file}", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|d| d["metadata"]["name"] == name)
        .collect()
}

/// `kcert ARGS` (the CLI, in-process) with kubeconfig `kubeconfig`: its exit code.
async fn kcert_cli(kubeconfig: &Path, args: &[&str]) -> std::process::ExitCode {
    let mut all: Vec<std::ffi::OsString> = vec![
        "kcert".into(),
        "--kubeconfig".into(),
        kubeconfig.as_os_str().to_owned(),
    ];
    all.extend(args.iter().map(|a| a.into()));
    tokio::task::spawn_blocking(move || kcert::main(all))
        .await
        .unwrap()
}

fn code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoker_may_revoke_but_not_tamper_and_an_unrevoke_by_hand_does_not_stick() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kcert_kube::crd::{LedgerPage, RevocationObject};
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
    let settings = Settings {
        signer_names: vec![signer.to_string()],
        policy: PolicySource::Static(policy),
        ca: Some(CaSource::Files {
            cert: cluster.ca_cert_path(),
            key: cluster.ca_key_path(),
        }),
        ledger: true,
        webhook: Some(webhook.clone()),
        ..Settings::default()
    };
    let _controller = RunningController::start_with(admin_client.clone(), settings);
    let ns = cluster.namespace("revoker").await.unwrap();
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(admin_client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{ns}-pod-reader")},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin_client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{ns}-readers")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{ns}-pod-reader")},
                "subjects": [{"kind": "Group", "name": "readers", "apiGroup": "rbac.authorization.k8s.io"}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // deploy/'s kcert-revoker ClusterRole, bound to rita alone, and the admission policy that
    // makes revokedBy the creator.
    let role = deployed("rbac.yaml", "kcert-revoker");
    assert_eq!(role.len(), 1);
    assert_eq!(
        role[0]["rules"],
        serde_json::json!([{"apiGroups": ["kcert.dev"], "resources": ["revocations"], "verbs": ["create", "get", "list", "watch"]}])
    );
    Api::<ClusterRole>::all(admin_client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(role[0].clone()).unwrap(),
        )
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin_client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "rita-revokes"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kcert-revoker"},
                "subjects": [{"kind": "User", "name": "rita", "apiGroup": "rbac.authorization.k8s.io"}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    for doc in deployed("admission.yaml", "kcert-revocation-author") {
        match doc["kind"].as_str().unwrap() {
            "ValidatingAdmissionPolicy" => {
                Api::<ValidatingAdmissionPolicy>::all(admin_client.clone())
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(doc).unwrap(),
                    )
                    .await
                    .unwrap();
            }
            _ => {
                Api::<ValidatingAdmissionPolicyBinding>::all(admin_client.clone())
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(doc).unwrap(),
                    )
                    .await
                    .unwrap();
            }
        }
    }
    let rita_yaml = cluster.user_kubeconfig("rita", &[]).unwrap();
    let rita_kubeconfig = dir.path().join("rita.kubeconfig");
    std::fs::write(&rita_kubeconfig, &rita_yaml).unwrap();
    let rita = client_from_kubeconfig(&rita_yaml).await.unwrap();
    let revocations: Api<RevocationObject> = Api::all(rita.clone());
    // revokedBy must be rita: the API server refuses anything else (once the policy is in force).
    let forged = kcert_kube::revocation::revocation_object(
        &Selector::Serial("ffffffffffffffff".into()),
        "kcert-testbed-admin",
        "forged",
    );
    let refusal = eventually("a forged revokedBy refused", 20 * SECOND, || async {
        match revocations.create(&PostParams::default(), &forged).await {
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Ok(s.message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(refusal.contains("revokedBy"), "{refusal}");

    let csrs: Api<CertificateSigningRequest> = Api::all(admin_client.clone());
    let (jane, _) = issue(&cluster, &csrs, signer, "jane", &["readers"]).await;
    let (bob, _) = issue(&cluster, &csrs, signer, "bob", &["readers"]).await;
    eventually("jane and bob list pods", 20 * SECOND, || async {
        list_pods(&jane, &ns).await.map_err(|e| e.to_string())?;
        list_pods(&bob, &ns).await.map_err(|e| e.to_string())
    })
    .await;
    eventually("both certificates in the ledger", 20 * SECOND, || async {
        let pages = kcert_kube::ledger::list_pages(&admin_client).await.unwrap();
        let n = kcert_kube::ledger::records(&pages).len();
        if n == 2 { Ok(()) } else { Err(n) }
    })
    .await;

    // rita revokes jane's certificate with `kcert revoke`, holding kcert-revoker alone.
    let started = Instant::now();
    let exit = kcert_cli(
        &rita_kubeconfig,
        &["revoke", "--user", "jane", "--reason", "laptop stolen"],
    )
    .await;
    assert_eq!(
        exit,
        std::process::ExitCode::SUCCESS,
        "kcert revoke as rita"
    );
    let message = eventually("jane's requests are refused", 20 * SECOND, || async {
        forbidden_message(list_pods(&jane, &ns).await).ok_or("still allowed")
    })
    .await;
    assert!(
        message.contains("laptop stolen") && message.contains("by rita"),
        "{message}"
    );
    eprintln!(
        "revoker: first 403 {:.2}s after kcert revoke began",
        started.elapsed().as_secs_f64()
    );
    assert!(started.elapsed() < 20 * SECOND);
    assert_eq!(list_pods(&bob, &ns).await.unwrap(), 0);
    // The ledger is the record: the leader wrote it onto jane's page, and reported it.
    let mine = revocations
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(mine.len(), 1);
    let status = mine[0].status.clone().expect("the leader's report");
    assert_eq!(
        (status.revoked, status.results[0].result.as_str()),
        (1, "revoked")
    );
    let pages = kcert_kube::ledger::list_pages(&admin_client).await.unwrap();
    let jane_record = kcert_kube::ledger::records(&pages)
        .into_iter()
        .find(|(_, r)| r.user == "jane")
        .unwrap()
        .1;
    assert_eq!(
        jane_record.revocation.unwrap().revoked_by,
        "rita",
        "not written onto the ledger"
    );

    // What rita may not do, as the API server says: touch the pages, or change or delete a
    // Revocation.
    let page_name = pages[0].metadata.name.clone().unwrap();
    let rita_pages: Api<LedgerPage> = Api::all(rita.clone());
    assert_eq!(code(rita_pages.list(&ListParams::default()).await), 403);
    assert_eq!(code(rita_pages.get(&page_name).await), 403);
    assert_eq!(
        code(
            rita_pages
                .replace(&page_name, &PostParams::default(), &pages[0])
                .await
        ),
        403
    );
    assert_eq!(
        code(rita_pages.delete(&page_name, &Default::default()).await),
        403
    );
    let object = mine[0].metadata.name.clone().unwrap();
    assert_eq!(
        code(revocations.delete(&object, &Default::default()).await),
        403
    );
    let mut changed = mine[0].clone();
    changed.spec.reason = "never mind".into();
    assert_eq!(
        code(
            revocations
                .replace(&object, &PostParams::default(), &changed)
                .await
        ),
        403
    );
    // Not even an admin changes a Revocation (its spec is immutable).
    let admin_revocations: Api<RevocationObject> = Api::all(admin_client.clone());
    assert_eq!(
        code(
            admin_revocations
                .replace(&object, &PostParams::default(), &changed)
                .await
        ),
        422
    );

    // bob revoked by an admin on the pages alone (no Revocation object), then the revocation
    // removed from his record by hand: he stays refused, and the revocation comes back, marked.
    revoke(
        &admin_client,
        &Selector::User("bob".into()),
        "kcert-testbed-admin",
        "contractor left",
    )
    .await
    .unwrap();
    eventually("bob refused", 20 * SECOND, || async {
        forbidden_message(list_pods(&bob, &ns).await).ok_or("still allowed")
    })
    .await;
    let bob_page =
        kcert_kube::ledger::records(&kcert_kube::ledger::list_pages(&admin_client).await.unwrap())
            .into_iter()
            .find(|(_, r)| r.user == "bob")
            .unwrap()
            .0
            .to_string();
    // A hand edit: the revocations removed from the page's JSON.
    let admin_pages: Api<LedgerPage> = Api::all(admin_client.clone());
    let mut page = admin_pages.get(&bob_page).await.unwrap();
    for s in page.spec.records.iter_mut() {
        let mut v: serde_json::Value = serde_json::from_str(s).unwrap();
        v.as_object_mut().unwrap().remove("revocation");
        *s = v.to_string();
    }
    let edited_at = Instant::now();
    admin_pages
        .replace(&bob_page, &PostParams::default(), &page)
        .await
        .unwrap();
    // Never served in the meantime (sampled for 5 s, beyond the API server's 2 s cache).
    while edited_at.elapsed() < 5 * SECOND {
        for (who, client) in [("bob", &bob), ("jane", &jane)] {
            assert!(
                forbidden_message(list_pods(client, &ns).await).is_some(),
                "{who}'s certificate works again after the page was edited"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Written back by the leader, marked, and announced by a Warning Event on the page.
    let restored = eventually("the revocations written back", 20 * SECOND, || async {
        let page = admin_pages.get(&bob_page).await.unwrap();
        let records: Vec<kcert_kube::crd::IssuedCertificate> =
            page.spec.read().map(Result::unwrap).collect();
        if records
            .iter()
            .all(|r| r.revocation.is_some() && r.revocation_restored_at.is_some())
        {
            Ok(records)
        } else {
            Err(format!("{records:?}"))
        }
    })
    .await;
    let bob_record = restored.iter().find(|r| r.user == "bob").unwrap();
    assert_eq!(
        bob_record.revocation.as_ref().unwrap().reason,
        "contractor left"
    );
    let events = eventually("a Warning Event on the page", 20 * SECOND, || async {
        let list =
            Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin_client.clone(), "default")
                .list(&ListParams::default())
                .await
                .unwrap();
        let found: Vec<_> = list
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("RevocationRemoved")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                        == Some(bob_page.as_str())
            })
            .collect();
        if found.is_empty() {
            Err("none")
        } else {
            Ok(found)
        }
    })
    .await;
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
}
