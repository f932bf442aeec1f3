//! Hostile node requests through the real API server (node identities authenticated by
//! certificates from the cluster CA, the Node authorizer and NodeRestriction in force): each
//! case's outcome and reason asserted, none approved wrongly. The Nodes are created by the
//! admin with chosen addresses.

use crate::{admin, bed, controller, decision_of, make_node, set_addresses};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_pki::oids as oid;
use kcert_pki::{
    CsrSubject, KeyType, PrivateKey, SubjectAltNames, build_csr, build_csr_raw, raw_name_der,
};
use kcert_policy::nodes::{KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER};
use kcert_tests::{allow_everyone_to_request, conditions, csr_from_pem};
use kube::api::PostParams;
use kube::{Api, Client};
use std::net::IpAddr;
use std::time::Duration;

const SERVING: &[&str] = &["digital signature", "key encipherment", "server auth"];
const CLIENT: &[&str] = &["digital signature", "key encipherment", "client auth"];

fn request(cn: &str, groups: &[&str], dns: &[&str], ips: &[&str], emails: &[&str]) -> Vec<u8> {
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let sans = SubjectAltNames {
        dns: dns.iter().map(|s| s.to_string()).collect(),
        ips: ips.iter().map(|s| s.parse::<IpAddr>().unwrap()).collect(),
        emails: emails.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    build_csr(
        &key,
        &CsrSubject::new(cn, groups.iter().copied()).unwrap(),
        &sans,
    )
    .unwrap()
    .into_bytes()
}

/// Create the CSR as `who`; its name.
async fn create(who: &Client, name: &str, signer: &str, usages: &[&str], req: Vec<u8>) -> String {
    try_create(who, name, signer, usages, req)
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"))
}

async fn try_create(
    who: &Client,
    name: &str,
    signer: &str,
    usages: &[&str],
    req: Vec<u8>,
) -> Result<String, kube::Error> {
    let mut csr = csr_from_pem(name, signer, req, None);
    csr.spec.usages = Some(usages.iter().map(|s| s.to_string()).collect());
    let api: Api<CertificateSigningRequest> = Api::all(who.clone());
    api.create(&PostParams::default(), &csr).await?;
    Ok(name.to_string())
}

/// (case, who asks, signer, usages, request, outcome, reason).
type Case<'a> = (
    &'a str,
    &'a Client,
    &'a str,
    &'a [&'a str],
    Vec<u8>,
    &'a str,
    &'a str,
);

fn assert_reason(case: &str, got: &(String, String, String), kind: &str, reason: &str) {
    assert_eq!(
        (got.0.as_str(), got.1.as_str()),
        (kind, reason),
        "case {case}: {}",
        got.2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_node_requests_are_denied_with_their_reasons() {
    let b = bed().await;
    controller().await;
    let cluster = b.cluster;
    allow_everyone_to_request(cluster).await;
    let u = cluster.unique_name("h");
    let (a, bn, c) = (format!("{u}-a"), format!("{u}-b"), format!("{u}-c"));
    // Node r was revoked (`kcert revoke --node r`): its bootstrap token is still valid.
    let r = format!("{u}-r");
    // Node a also reports addresses that are no node's to have (a node writes its own status).
    make_node(
        &a,
        &[
            ("InternalIP", "10.96.1.1"),
            ("Hostname", &a),
            ("InternalIP", "169.254.169.254"),
            ("InternalIP", "127.0.0.1"),
            ("InternalDNS", "kubernetes.default.svc"),
            // The kubernetes Service's ClusterIP and another Service address (the test bed's
            // Service CIDR is 10.254.254.0/24), and node b's name.
            ("InternalIP", "10.254.254.1"),
            ("InternalIP", "10.254.254.77"),
            ("ExternalDNS", &format!("{u}-b")),
        ],
    )
    .await;
    make_node(
        &bn,
        &[
            ("InternalIP", "10.96.1.2"),
            ("Hostname", &bn),
            ("ExternalDNS", "b.example.test"),
        ],
    )
    .await;
    // Node c copies b's address into its own status (a node writes its own status).
    make_node(
        &c,
        &[("InternalIP", "10.96.1.3"), ("InternalIP", "10.96.1.2")],
    )
    .await;
    make_node(&r, &[("InternalIP", "10.96.1.9"), ("Hostname", &r)]).await;
    let node_a = cluster
        .user_client(&format!("system:node:{a}"), &["system:nodes"])
        .await
        .unwrap();
    let node_r = cluster
        .user_client(&format!("system:node:{r}"), &["system:nodes"])
        .await
        .unwrap();
    let admin_client = admin().await;
    kcert_kube::revocation::revoke_node(&admin_client, &r, "kcert-tests", "decommissioned")
        .await
        .unwrap();
    // What the controller's ledger watch delivers within milliseconds: wait for it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cn_r = format!("system:node:{r}");
    let node_c = cluster
        .user_client(&format!("system:node:{c}"), &["system:nodes"])
        .await
        .unwrap();
    let jane = cluster.user_client("jane-nodes", &["dev"]).await.unwrap();
    let token = cluster.bootstrap_token().await.unwrap();
    let bootstrap =
        kcert_testbed::client_from_kubeconfig(&cluster.token_kubeconfig(&token.token()))
            .await
            .unwrap();
    let cn_a = format!("system:node:{a}");
    let nodes = &["system:nodes"][..];
    let ambiguous = {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let subject = raw_name_der(&[
            (
                oid::COMMON_NAME,
                der::Tag::Utf8String,
                format!("system:node:{bn}").as_bytes(),
            ),
            (oid::ORGANIZATION, der::Tag::Utf8String, b"system:nodes"),
            (oid::COMMON_NAME, der::Tag::Utf8String, cn_a.as_bytes()),
        ])
        .unwrap();
        build_csr_raw(&key, &subject, Vec::new())
            .unwrap()
            .into_bytes()
    };
    let many: Vec<String> = (0..400)
        .map(|i| format!("{i:03}-{}.example.test", "x".repeat(40)))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();

    // (case, who, signer, usages, request, outcome, reason)
    let cases: Vec<Case<'_>> = vec![
        (
            "own-addresses",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &[&a], &["10.96.1.1", "::ffff:10.96.1.1"], &[]),
            "Approved",
            "AutoApproved",
        ),
        // The API server itself (v1.36) refuses a node's CSR for another node's CN at create;
        // kcert's NodeMismatch (unit-tested) guards clusters without that check.
        (
            "other-nodes-name",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(
                &format!("system:node:{bn}"),
                nodes,
                &[],
                &["10.96.1.2"],
                &[],
            ),
            "RejectedAtCreate",
            "Forbidden",
        ),
        (
            "other-nodes-ip",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &[], &["10.96.1.1", "10.96.1.2"], &[]),
            "Denied",
            "SanNotANodeAddress",
        ),
        (
            "ipv4-mapped-foreign-ip",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &[], &["::ffff:10.96.1.2"], &[]),
            "Denied",
            "SanNotANodeAddress",
        ),
        (
            "zero-padded-ip-as-dns",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &["010.096.001.002"], &[], &[]),
            "Denied",
            "SanNotANodeAddress",
        ),
        (
            "own-ip-as-dns",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &["10.96.1.1"], &[], &[]),
            "Denied",
            "SanNotANodeAddress",
        ),
        (
            "dns-not-in-node",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &["b.example.test"], &[], &[]),
            "Denied",
            "SanNotANodeAddress",
        ),
        (
            "reserved-metadata-ip",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &[], &["169.254.169.254"], &[]),
            "Denied",
            "SanReserved",
        ),
        (
            "reserved-loopback-mapped",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &[], &["::ffff:127.0.0.1"], &[]),
            "Denied",
            "SanReserved",
        ),
        (
            "kubernetes-service-ip-in-own-status",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &[], &["10.254.254.1"], &[]),
            "Denied",
            "SanReserved",
        ),
        (
            "service-cidr-ip-in-own-status",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &[], &["::ffff:10.254.254.77"], &[]),
            "Denied",
            "SanReserved",
        ),
        (
            "other-nodes-name-in-own-status",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &[&bn], &[], &[]),
            "Denied",
            "SanOfAnotherNode",
        ),
        (
            "reserved-api-server-name",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &["kubernetes.default.svc"], &[], &[]),
            "Denied",
            "SanReserved",
        ),
        (
            "wildcard-dns",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &["*.example.test"], &[], &[]),
            "Denied",
            "SanNotANodeAddress",
        ),
        (
            "copied-address",
            &node_c,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&format!("system:node:{c}"), nodes, &[], &["10.96.1.2"], &[]),
            "Denied",
            "SanOfAnotherNode",
        ),
        (
            "client-usages-on-serving",
            &node_a,
            KUBELET_SERVING_SIGNER,
            CLIENT,
            request(&cn_a, nodes, &[], &["10.96.1.1"], &[]),
            "Denied",
            "UsageNotAllowed",
        ),
        (
            "serving-usages-on-client",
            &node_a,
            KUBELET_CLIENT_SIGNER,
            SERVING,
            request(&cn_a, nodes, &[], &[], &[]),
            "Denied",
            "UsageNotAllowed",
        ),
        (
            "non-node-requester",
            &jane,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &[], &["10.96.1.1"], &[]),
            "Denied",
            "NotANode",
        ),
        (
            "bootstrap-token-asks-serving",
            &bootstrap,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &[], &["10.96.1.1"], &[]),
            "Denied",
            "NotANode",
        ),
        (
            "extra-o",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(
                &cn_a,
                &["system:nodes", "system:masters"],
                &[],
                &["10.96.1.1"],
                &[],
            ),
            "Denied",
            "GroupNotAllowed",
        ),
        (
            "extra-o-client",
            &node_a,
            KUBELET_CLIENT_SIGNER,
            CLIENT,
            request(&cn_a, &["system:nodes", "system:masters"], &[], &[], &[]),
            "Denied",
            "GroupNotAllowed",
        ),
        (
            "email-san",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &[], &["10.96.1.1"], &["root@example.test"]),
            "Denied",
            "SansNotAllowed",
        ),
        (
            "sans-on-client",
            &node_a,
            KUBELET_CLIENT_SIGNER,
            CLIENT,
            request(&cn_a, nodes, &[], &["10.96.1.1"], &[]),
            "Denied",
            "SansNotAllowed",
        ),
        (
            "renew-as-other-node",
            &node_a,
            KUBELET_CLIENT_SIGNER,
            CLIENT,
            request(&format!("system:node:{bn}"), nodes, &[], &[], &[]),
            "RejectedAtCreate",
            "Forbidden",
        ),
        (
            "non-node-client",
            &jane,
            KUBELET_CLIENT_SIGNER,
            CLIENT,
            request(&cn_a, nodes, &[], &[], &[]),
            "Denied",
            "NotANode",
        ),
        (
            "two-cns",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            ambiguous,
            "Denied",
            "AmbiguousCommonName",
        ),
        (
            "oversized",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_a, nodes, &many, &[], &[]),
            "Denied",
            "RequestTooLarge",
        ),
        (
            "renewal-by-itself",
            &node_a,
            KUBELET_CLIENT_SIGNER,
            CLIENT,
            request(&cn_a, nodes, &[], &[], &[]),
            "Approved",
            "AutoApproved",
        ),
        // A revoked node gets nothing: not through a bootstrap token still valid (which the
        // nodeclient review allows), not by renewing, not a serving certificate.
        (
            "bootstrap-as-revoked-node",
            &bootstrap,
            KUBELET_CLIENT_SIGNER,
            CLIENT,
            request(&cn_r, nodes, &[], &[], &[]),
            "Denied",
            "NodeRevoked",
        ),
        (
            "revoked-node-renews",
            &node_r,
            KUBELET_CLIENT_SIGNER,
            CLIENT,
            request(&cn_r, nodes, &[], &[], &[]),
            "Denied",
            "NodeRevoked",
        ),
        (
            "revoked-node-serving",
            &node_r,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn_r, nodes, &[&r], &["10.96.1.9"], &[]),
            "Denied",
            "NodeRevoked",
        ),
    ];
    let mut created = Vec::new();
    for (case, who, signer, usages, req, kind, reason) in cases {
        let name = format!("{u}-{case}");
        match try_create(who, &name, signer, usages, req).await {
            Ok(name) => {
                assert_ne!(
                    kind, "RejectedAtCreate",
                    "case {case}: the API server accepted it"
                );
                created.push((case, name, kind, reason));
            }
            Err(kube::Error::Api(s)) if kind == "RejectedAtCreate" => {
                assert_eq!(s.reason, reason, "case {case}: {}", s.message);
            }
            Err(e) => panic!("case {case}: creating {name}: {e}"),
        }
    }
    // A kubelet's CSR name squatted: someone else creates a CSR under the name pattern the
    // kubelet's bootstrap uses, claiming node a. Decided on who asked, not on the name.
    let squat = create(
        &jane,
        &format!("node-csr-{u}"),
        KUBELET_CLIENT_SIGNER,
        CLIENT,
        request(&cn_a, nodes, &[], &[], &[]),
    )
    .await;
    created.push(("squatted-name", squat, "Denied", "NotANode"));
    let api: Api<CertificateSigningRequest> = Api::all(admin_client.clone());
    let index = kcert::commands::policy::node_index(&admin_client)
        .await
        .unwrap();
    let ledger = kcert::commands::policy::node_ledger(&admin_client)
        .await
        .unwrap();
    let rules = crate::node_settings().nodes;
    for (case, name, kind, reason) in &created {
        let got = decision_of(name).await;
        assert_reason(case, &got, kind, reason);
        // `kcert policy test NAME` explains it with the same evaluation and reason.
        let csr = api.get(name).await.unwrap();
        let explained =
            kcert::commands::policy::node_verdict(&admin_client, &csr, &rules, &index, &ledger)
                .await
                .unwrap();
        assert_eq!(
            explained.reason.as_str(),
            *reason,
            "case {case}: kcert policy test says {}",
            explained.message
        );
    }
    eprintln!("{} hostile node cases decided as expected", created.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_csr_waits_for_its_node_and_is_judged_by_its_current_addresses() {
    let b = bed().await;
    controller().await;
    let cluster = b.cluster;
    let u = cluster.unique_name("w");
    let (d, e, f) = (format!("{u}-d"), format!("{u}-e"), format!("{u}-f"));
    let mut clients = Vec::new();
    for n in [&d, &e, &f] {
        let user = format!("system:node:{n}");
        clients.push(cluster.user_client(&user, &["system:nodes"]).await.unwrap());
    }
    let (node_d, node_e, node_f) = (&clients[0], &clients[1], &clients[2]);
    let nodes = &["system:nodes"][..];
    // No Node yet: both wait (no condition), with an Event saying why.
    let csr_d = create(
        node_d,
        &format!("{u}-d"),
        KUBELET_SERVING_SIGNER,
        SERVING,
        request(&format!("system:node:{d}"), nodes, &[], &["10.96.2.4"], &[]),
    )
    .await;
    let csr_e = create(
        node_e,
        &format!("{u}-e"),
        KUBELET_SERVING_SIGNER,
        SERVING,
        request(
            &format!("system:node:{e}"),
            nodes,
            &[&e],
            &["10.96.2.5"],
            &[],
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api: Api<CertificateSigningRequest> = Api::all(admin().await);
    for name in [&csr_d, &csr_e] {
        assert!(
            conditions(&api.get(name).await.unwrap()).is_empty(),
            "{name} decided without its Node"
        );
    }
    kcert_tests::wait_for_event(
        &admin().await,
        &csr_d,
        "NodeNotFound",
        Duration::from_secs(20),
    )
    .await;
    // The Nodes appear: d with other addresses than asked (denied), e with the ones asked
    // (approved) — decided when the Node appears, well before the periodic requeue.
    make_node(&d, &[("InternalIP", "10.96.2.40")]).await;
    make_node(&e, &[("InternalIP", "10.96.2.5"), ("Hostname", &e)]).await;
    assert_reason(
        "node-appears-with-other-addresses",
        &decision_of(&csr_d).await,
        "Denied",
        "SanNotANodeAddress",
    );
    assert_reason(
        "node-appears",
        &decision_of(&csr_e).await,
        "Approved",
        "AutoApproved",
    );
    // A Node whose address changes: the old address is no longer the node's.
    make_node(&f, &[("InternalIP", "10.96.2.6")]).await;
    set_addresses(&f, &[("InternalIP", "10.96.2.60")]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let csr_f = create(
        node_f,
        &format!("{u}-f"),
        KUBELET_SERVING_SIGNER,
        SERVING,
        request(&format!("system:node:{f}"), nodes, &[], &["10.96.2.6"], &[]),
    )
    .await;
    assert_reason(
        "address-changed",
        &decision_of(&csr_f).await,
        "Denied",
        "SanNotANodeAddress",
    );
}

/// `kcert policy test NAME` for each (case, CSR name, _, reason): the same reason, from the same
/// facts read afresh; how many.
async fn explain_all(admin: &Client, created: &[(String, String, &str, &str)]) -> usize {
    let api: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let index = kcert::commands::policy::node_index(admin).await.unwrap();
    let ledger = kcert::commands::policy::node_ledger(admin).await.unwrap();
    let rules = crate::node_settings().nodes;
    for (case, name, _, reason) in created {
        let csr = api.get(name).await.unwrap();
        let explained = kcert::commands::policy::node_verdict(admin, &csr, &rules, &index, &ledger)
            .await
            .unwrap();
        assert_eq!(
            explained.reason.as_str(),
            *reason,
            "case {case}: kcert policy test says {}",
            explained.message
        );
    }
    created.len()
}

/// Create (as admin) or replace ConfigMap `namespace/name` holding `key: value`.
async fn put_config_map(admin: &Client, namespace: &str, name: &str, key: &str, value: &str) {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams};
    Api::<ConfigMap>::namespaced(admin.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("kcert-tests").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": {key: value},
            })),
        )
        .await
        .unwrap_or_else(|e| panic!("ConfigMap {namespace}/{name}: {e}"));
}

/// The names the cluster states (kubeadm's ConfigMaps, the Namespaces), read by the controller
/// every 30 s as the ServiceAccount the deploy RBAC binds: a worker is not certified for the
/// API server's external name or address, nor for a Service's short name `<svc>.<ns>`, though
/// it reports them; a control-plane Node reporting the endpoint address is; a two-label node
/// name whose second label is no Namespace keeps its own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_servers_stated_names_and_service_short_names_are_reserved() {
    use k8s_openapi::api::core::v1::{Namespace, Node};
    use kube::api::{Patch, PatchParams};
    let b = bed().await;
    controller().await;
    let cluster = b.cluster;
    let admin_client = admin().await;
    let u = cluster.unique_name("s");
    let api_name = format!("api-{u}.kcert.example");
    let endpoint_ip = "10.96.4.250";
    let ns = format!("{u}-ns");
    let short = format!("web.{ns}");
    // What kubeadm writes: cluster-info's kubeconfig (readable by anyone) names the API server
    // by its external name; ClusterConfiguration's controlPlaneEndpoint by an address.
    put_config_map(
        &admin_client,
        "kube-public",
        "cluster-info",
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    certificate-authority-data: LS0tLS1CRUdJTg==\n    server: https://{api_name}:6443\ncontexts: null\ncurrent-context: \"\"\nusers: null\n"
        ),
    )
    .await;
    put_config_map(
        &admin_client,
        "kube-system",
        "kubeadm-config",
        "ClusterConfiguration",
        &format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: kubernetes\ncontrolPlaneEndpoint: {endpoint_ip}:6443\nnetworking:\n  dnsDomain: cluster.local\n"
        ),
    )
    .await;
    Api::<Namespace>::all(admin_client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let (a, p) = (format!("{u}-a"), format!("{u}-p"));
    // Node names of two labels: the second no Namespace (w1), a Namespace (w2).
    let (w1, w2) = (format!("{u}-w1.{u}-corp"), format!("{u}-w2.{ns}"));
    // Worker a reports the API server's external name, its endpoint address and a Service's
    // short name (a node writes its own status).
    make_node(
        &a,
        &[
            ("InternalIP", "10.96.4.1"),
            ("Hostname", &a),
            ("ExternalDNS", &api_name),
            ("InternalDNS", &short),
            ("InternalIP", endpoint_ip),
        ],
    )
    .await;
    make_node(&p, &[("InternalIP", "10.96.4.2"), ("Hostname", &p)]).await;
    // The control-plane role label: only an admin sets it (NodeRestriction).
    Api::<Node>::all(admin_client.clone())
        .patch(
            &p,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}
            })),
        )
        .await
        .unwrap();
    make_node(&w1, &[("InternalIP", "10.96.4.3"), ("Hostname", &w1)]).await;
    make_node(&w2, &[("InternalIP", "10.96.4.4"), ("Hostname", &w2)]).await;
    let as_node = |n: &str| {
        let n = n.to_string();
        async move {
            cluster
                .user_client(&format!("system:node:{n}"), &["system:nodes"])
                .await
                .unwrap()
        }
    };
    let (node_a, node_p, node_w1, node_w2) = (
        as_node(&a).await,
        as_node(&p).await,
        as_node(&w1).await,
        as_node(&w2).await,
    );
    let nodes = &["system:nodes"][..];
    let cn = |n: &str| format!("system:node:{n}");

    // The controller reads these facts every 30 s: until it has, the control-plane Node p
    // (which reports none of them) is refused them as not its addresses; once read, as
    // reserved. (Its refusal for the endpoint address is itself a case: a control-plane Node
    // gets it only if it reports it.)
    let probes: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        ("name", vec![api_name.as_str()], vec![]),
        ("address", vec![], vec![endpoint_ip]),
        ("short-name", vec![short.as_str()], vec![]),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(75);
    let mut round = 0;
    let mut read = vec![false; probes.len()];
    let mut created = Vec::new();
    while read.iter().any(|r| !r) {
        for (i, (what, dns, ips)) in probes.iter().enumerate() {
            if read[i] {
                continue;
            }
            let name = create(
                &node_p,
                &format!("{u}-probe-{what}-{round}"),
                KUBELET_SERVING_SIGNER,
                SERVING,
                request(&cn(&p), nodes, dns, ips, &[]),
            )
            .await;
            let got = decision_of(&name).await;
            assert_eq!(got.0, "Denied", "probe {what}: {}", got.2);
            if got.1 == "SanReserved" {
                read[i] = true;
                created.push((
                    format!("control-plane-not-reporting-{what}"),
                    name,
                    "Denied",
                    "SanReserved",
                ));
            } else {
                assert_eq!(got.1, "SanNotANodeAddress", "probe {what}: {}", got.2);
                assert!(
                    std::time::Instant::now() < deadline,
                    "the controller did not reserve the {what} the cluster states: {}",
                    got.2
                );
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let cases: Vec<Case<'_>> = vec![
        (
            "worker-api-server-external-name",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn(&a), nodes, &[&api_name], &[], &[]),
            "Denied",
            "SanReserved",
        ),
        (
            "worker-control-plane-endpoint-address",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn(&a), nodes, &[], &[endpoint_ip], &[]),
            "Denied",
            "SanReserved",
        ),
        (
            "worker-service-short-name",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn(&a), nodes, &[&short], &["10.96.4.1"], &[]),
            "Denied",
            "SanReserved",
        ),
        (
            "node-name-that-is-a-short-name",
            &node_w2,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn(&w2), nodes, &[&w2], &["10.96.4.4"], &[]),
            "Denied",
            "SanReserved",
        ),
        (
            "two-label-node-name-of-no-namespace",
            &node_w1,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn(&w1), nodes, &[&w1], &["10.96.4.3"], &[]),
            "Approved",
            "AutoApproved",
        ),
        (
            "worker-own-addresses",
            &node_a,
            KUBELET_SERVING_SIGNER,
            SERVING,
            request(&cn(&a), nodes, &[&a], &["10.96.4.1"], &[]),
            "Approved",
            "AutoApproved",
        ),
    ];
    for (case, who, signer, usages, req, kind, reason) in cases {
        let name = create(who, &format!("{u}-{case}"), signer, usages, req).await;
        created.push((case.to_string(), name, kind, reason));
    }
    for (case, name, kind, reason) in &created {
        assert_reason(case, &decision_of(name).await, kind, reason);
    }
    let got = decision_of(&format!("{u}-worker-service-short-name")).await;
    assert!(
        got.2.contains(&format!("Namespace {ns} exists")),
        "{}",
        got.2
    );
    let got = decision_of(&format!("{u}-worker-api-server-external-name")).await;
    assert!(
        got.2.contains("ConfigMap kube-public/cluster-info"),
        "{}",
        got.2
    );
    // `kcert policy test NAME` reads the same facts and gives the same reasons.
    let mut decided = explain_all(&admin_client, &created).await;
    // The control-plane Node reporting the endpoint address itself (the API server listens on
    // its address, as kubeadm's advertise address) gets it, once the worker no longer reports
    // it too.
    set_addresses(
        &a,
        &[
            ("InternalIP", "10.96.4.1"),
            ("Hostname", &a),
            ("ExternalDNS", &api_name),
        ],
    )
    .await;
    set_addresses(
        &p,
        &[
            ("InternalIP", "10.96.4.2"),
            ("InternalIP", endpoint_ip),
            ("Hostname", &p),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let case = "control-plane-reporting-address";
    let name = create(
        &node_p,
        &format!("{u}-{case}"),
        KUBELET_SERVING_SIGNER,
        SERVING,
        request(&cn(&p), nodes, &[&p], &[endpoint_ip, "10.96.4.2"], &[]),
    )
    .await;
    assert_reason(case, &decision_of(&name).await, "Approved", "AutoApproved");
    decided += explain_all(
        &admin_client,
        &[(case.into(), name, "Approved", "AutoApproved")],
    )
    .await;
    eprintln!("{decided} cases of the names the cluster states decided as expected");
}
