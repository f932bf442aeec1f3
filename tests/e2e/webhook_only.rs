//! The webhook's Pods as shipped: `kcert-controller --controllers=webhook` as a ServiceAccount
//! bound to nothing but deploy/webhook/rbac.yaml's ClusterRole (get, list, watch ledgerpages),
//! against an API server authorizing through kcert's webhook. It becomes ready, it answers (a
//! certificate revoked with `kcert revoke`'s library call is refused within seconds, another
//! user's keeps working), and the API server's audit log shows that, as that ServiceAccount, it
//! read the ledger pages (list, watch, the probe's limit=1 list) and nothing else, and was never
//! refused anything. The identity holds no CA and no approval power. Certificates are issued by
//! an ordinary controller (approver and signer) as the admin.

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kcert_controller::authz_webhook::WebhookSettings;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_kube::revocation::{Selector, revoke};
use kcert_testbed::kubeconfig::{Credentials, render};
use kcert_testbed::{TestCluster, client_from_kubeconfig};
use kcert_tests::{RunningController, csr_with_key, eventually, install_crds, issued, wait_for};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde::Deserialize;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);
const RBAC: &str = include_str!("../../deploy/webhook/rbac.yaml");
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n";

/// `GET path` on 127.0.0.1:port: the status code.
fn http_status(port: u16, path: &str) -> Result<u16, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(text)
}

/// A certificate for `user` in `groups`, issued by the running controller; a client using it.
async fn issue(
    cluster: &TestCluster,
    csrs: &Api<CertificateSigningRequest>,
    user: &str,
    groups: &[&str],
) -> Client {
    let name = cluster.unique_name(&format!("wh-{user}"));
    let (csr, key_pem) = csr_with_key(&name, "kcert.dev/client", user, groups, Some(3600));
    csrs.create(&PostParams::default(), &csr).await.unwrap();
    let done = wait_for(csrs, &name, 20 * SECOND, "issued", issued).await;
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
    client_from_kubeconfig(&yaml).await.unwrap()
}

async fn list_pods(client: &Client, ns: &str) -> Result<usize, kube::Error> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items.len())
}

/// Whether `user` may `verb` `resource` (`resource/subresource`; in `group`, `namespace`, named
/// `name`), by the API server's own authorizers.
async fn may(
    admin: &Client,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "verb": verb, "group": group, "resource": resource, "subresource": subresource,
                "namespace": namespace, "name": name,
            }
        }
    }))
    .unwrap();
    Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_alone_works_with_only_its_narrow_role() {
    let dir = tempfile::tempdir().unwrap();
    let port = kcert_testbed::webhook::free_port().unwrap();
    let files = kcert_testbed::webhook::WebhookFiles::create(dir.path(), port).unwrap();
    let (audit_policy, audit_log) = (dir.path().join("audit.yaml"), dir.path().join("audit.log"));
    std::fs::write(&audit_policy, AUDIT_POLICY).unwrap();
    let cluster = TestCluster::builder()
        .authorization_config(files.authorization_config.clone())
        .apiserver_arg(format!("--audit-policy-file={}", audit_policy.display()))
        .apiserver_arg(format!("--audit-log-path={}", audit_log.display()))
        .start()
        .await
        .unwrap();
    install_crds(&cluster).await;
    let admin = cluster.admin_client().await.unwrap();
    let ns = cluster.namespace("webhook-only").await.unwrap();

    // deploy/webhook/rbac.yaml: a ServiceAccount, its ClusterRole (read ledgerpages, nothing
    // else) and the binding, and nothing more; applied for a ServiceAccount in this namespace.
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(RBAC)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"],
        "deploy/webhook/rbac.yaml"
    );
    assert_eq!(
        docs[1]["rules"],
        serde_json::json!([
            {"apiGroups": ["kcert.dev"], "resources": ["ledgerpages"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["kcert.dev"], "resources": ["revocations"], "verbs": ["get", "list", "watch"]}
        ]),
        "the webhook's ClusterRole"
    );
    let mut account = docs[0].clone();
    account["metadata"]["namespace"] = ns.clone().into();
    let role: ClusterRole = serde_json::from_value(docs[1].clone()).unwrap();
    let mut binding = docs[2].clone();
    assert_eq!(binding["roleRef"]["name"], "kcert-webhook");
    assert_eq!(binding["subjects"].as_array().unwrap().len(), 1);
    binding["subjects"][0]["namespace"] = ns.clone().into();
    let binding: ClusterRoleBinding = serde_json::from_value(binding).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(account).unwrap(),
        )
        .await
        .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let user = format!("system:serviceaccount:{ns}:kcert-webhook");

    // What that identity may not do: nothing of the controller's (no CSRs, no signers, no
    // Secrets, no Lease, no Events, no RBAC, no Nodes), and no writes to the ledger.
    let cert_api = "certificates.k8s.io";
    for (verb, group, resource, namespace, name) in [
        ("get", "kcert.dev", "ledgerpages", "", ""),
        ("list", "kcert.dev", "ledgerpages", "", ""),
        ("watch", "kcert.dev", "ledgerpages", "", ""),
    ] {
        assert!(
            may(&admin, &user, verb, group, resource, namespace, name).await,
            "{verb} {resource}"
        );
    }
    for (verb, group, resource, namespace, name) in [
        ("list", cert_api, "certificatesigningrequests", "", ""),
        (
            "update",
            cert_api,
            "certificatesigningrequests/approval",
            "",
            "",
        ),
        (
            "update",
            cert_api,
            "certificatesigningrequests/status",
            "",
            "",
        ),
        ("approve", cert_api, "signers", "", "kcert.dev/client"),
        ("sign", cert_api, "signers", "", "kcert.dev/client"),
        ("get", "", "secrets", "kcert-system", "kcert-ca"),
        ("list", "", "secrets", "", ""),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            "kcert-system",
            "kcert-controller",
        ),
        (
            "create",
            "coordination.k8s.io",
            "leases",
            "kcert-system",
            "",
        ),
        ("create", "events.k8s.io", "events", "default", ""),
        (
            "list",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "",
            "",
        ),
        ("list", "kcert.dev", "approvalpolicies", "", ""),
        ("list", "", "nodes", "", ""),
        ("create", "kcert.dev", "ledgerpages", "", ""),
        ("update", "kcert.dev", "ledgerpages", "", ""),
        ("delete", "kcert.dev", "ledgerpages", "", ""),
        ("create", "kcert.dev", "revocations", "", ""),
        ("update", "kcert.dev", "revocations", "", ""),
        ("delete", "kcert.dev", "revocations", "", ""),
    ] {
        assert!(
            !may(&admin, &user, verb, group, resource, namespace, name).await,
            "the webhook's identity may {verb} {resource} {namespace}/{name}"
        );
    }

    // The approver and signer that issue the certificates: an ordinary controller, as the admin.
    let policy = serde_yaml::from_str(
        "rules: [{id: webhook-only, requesters: {users: [kcert-testbed-admin]}, commonName: {glob: '*'}, groups: {allowed: [readers]}}]",
    )
    .unwrap();
    let _issuer = RunningController::start_with(
        admin.clone(),
        Settings {
            signer_names: vec!["kcert.dev/client".into()],
            policy: PolicySource::Static(policy),
            ca: Some(CaSource::Files {
                cert: cluster.ca_cert_path(),
                key: cluster.ca_key_path(),
            }),
            ledger: true,
            ..Settings::default()
        },
    );

    // The webhook alone (what `--controllers=webhook` runs), as that ServiceAccount.
    let metrics_port = kcert_testbed::webhook::free_port().unwrap();
    let identity = cluster
        .service_account_client(&ns, "kcert-webhook")
        .await
        .unwrap();
    let webhook_only = Settings {
        approver: false,
        signer: false,
        ledger: false,
        metrics_addr: Some(([127, 0, 0, 1], metrics_port).into()),
        webhook: Some(WebhookSettings {
            addr: files.addr,
            cert: files.cert.clone(),
            key: files.key.clone(),
            strict: Default::default(),
        }),
        ..Settings::default()
    };
    assert!(webhook_only.webhook_only());
    let started = Instant::now();
    let _webhook = RunningController::start_with(identity, webhook_only);
    eventually("the webhook ready", 30 * SECOND, || async {
        match tokio::task::block_in_place(|| http_status(metrics_port, "/readyz")) {
            Ok(200) => Ok(()),
            other => Err(other),
        }
    })
    .await;
    eprintln!(
        "webhook-only ready {:.2}s after start",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        tokio::task::block_in_place(|| http_status(metrics_port, "/healthz")),
        Ok(200)
    );

    // Group readers may list pods in the namespace; jane and bob get kcert certificates.
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pod-reader", "namespace": ns},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
    }))
    .unwrap();
    let readers: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "readers", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "Group", "name": "readers", "apiGroup": "rbac.authorization.k8s.io"}],
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &readers)
        .await
        .unwrap();
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let jane = issue(&cluster, &csrs, "jane", &["readers"]).await;
    let bob = issue(&cluster, &csrs, "bob", &["readers"]).await;
    // The webhook answers (no opinion: RBAC allows).
    for (who, client) in [("jane", &jane), ("bob", &bob)] {
        eventually(&format!("{who} lists pods"), 20 * SECOND, || async {
            list_pods(client, &ns).await.map_err(|e| e.to_string())
        })
        .await;
    }

    // jane's certificate revoked (once on record): refused within seconds, bob still served.
    eventually("jane's certificate in the ledger", 20 * SECOND, || async {
        let pages = kcert_kube::ledger::list_pages(&admin).await.unwrap();
        let n = kcert_kube::ledger::records(&pages)
            .iter()
            .filter(|(_, r)| r.user == "jane")
            .count();
        if n == 1 { Ok(()) } else { Err(n) }
    })
    .await;
    let started = Instant::now();
    let done = revoke(
        &admin,
        &Selector::User("jane".into()),
        "kcert-testbed-admin",
        "laptop stolen",
    )
    .await
    .unwrap();
    assert_eq!(done.len(), 1);
    let message = eventually("jane refused", 10 * SECOND, || async {
        match list_pods(&jane, &ns).await {
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(s.message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        message.contains("revoked") && message.contains("laptop stolen"),
        "{message}"
    );
    eprintln!(
        "revocation through the webhook-only process: {:.2}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(list_pods(&bob, &ns).await.unwrap(), 0);

    // The API server's audit log: as that ServiceAccount, the process listed and watched the
    // ledger pages (and probed them with limit=1), touched nothing else, and was refused
    // nothing.
    let events = eventually("the audit log", 10 * SECOND, || async {
        let text = std::fs::read_to_string(&audit_log).unwrap_or_default();
        let mine: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["user"]["username"] == user.as_str())
            .collect();
        let has = |verb: &str, uri: &str| {
            mine.iter().any(|e| {
                e["verb"] == verb && e["requestURI"].as_str().is_some_and(|u| u.contains(uri))
            })
        };
        if has("list", "limit=1") && has("list", "limit=20") && has("watch", "watch=true") {
            Ok(mine)
        } else {
            Err(mine.len())
        }
    })
    .await;
    for e in &events {
        let what = format!(
            "{} {} → {}",
            e["verb"], e["requestURI"], e["responseStatus"]["code"]
        );
        assert_eq!(e["objectRef"]["apiGroup"], "kcert.dev", "{what}");
        assert!(
            ["ledgerpages", "revocations"].contains(&e["objectRef"]["resource"].as_str().unwrap()),
            "{what}"
        );
        assert!(
            ["list", "watch", "get"].contains(&e["verb"].as_str().unwrap()),
            "{what}"
        );
        let code = e["responseStatus"]["code"].as_u64().unwrap();
        assert!(code < 400, "the webhook's identity was refused: {what}");
    }
    eprintln!(
        "the webhook's identity made {} audited requests, all on ledgerpages and revocations, none refused",
        events.len()
    );
}
