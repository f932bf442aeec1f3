use super::*;
use crate::facts::{Requester, SanFacts};

fn addr(kind: &str, address: &str) -> NodeAddress {
    NodeAddress {
        kind: kind.into(),
        address: address.into(),
    }
}

fn index() -> NodeIndex {
    let mut i = NodeIndex::default();
    i.upsert(
        "node-a",
        vec![
            addr("InternalIP", "10.0.0.1"),
            addr("InternalIP", "fd00::1"),
            addr("Hostname", "node-a"),
            addr("InternalDNS", "Node-A.cluster.internal"),
        ],
    );
    i.upsert(
        "node-b",
        vec![addr("InternalIP", "10.0.0.2"), addr("Hostname", "node-b")],
    );
    i
}

fn serving(requester: &str, cn: &str, dns: &[&str], ips: &[&str]) -> CsrFacts {
    CsrFacts {
        signer_name: KUBELET_SERVING_SIGNER.into(),
        requester: Requester {
            username: requester.into(),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
            ..Default::default()
        },
        common_names: vec![cn.into()],
        organizations: vec![NODES_GROUP.into()],
        sans: SanFacts {
            dns: dns.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        usages: vec!["digital signature".into(), "server auth".into()],
        key: KeyKind::EcdsaP256,
        ..Default::default()
    }
}

fn client(requester: &str, groups: &[&str], cn: &str) -> CsrFacts {
    let mut f = serving(requester, cn, &[], &[]);
    f.signer_name = KUBELET_CLIENT_SIGNER.into();
    f.requester.groups = groups.iter().map(|s| s.to_string()).collect();
    f.usages = vec![
        "digital signature".into(),
        "key encipherment".into(),
        "client auth".into(),
    ];
    f
}

fn rules() -> NodeRules {
    NodeRules {
        serving: true,
        client: true,
        ..Default::default()
    }
}

fn run(
    f: &CsrFacts,
    rules: &NodeRules,
    nodes: &NodeIndex,
    access: &[(ClientAccess, bool)],
) -> Decision {
    let access: BTreeMap<_, _> = access.iter().copied().collect();
    decide(
        f,
        rules,
        &NodeFacts {
            nodes,
            access: &access,
            age_seconds: 10,
        },
    )
}

fn check(d: &Decision, outcome: Outcome, reason: Reason, needle: &str) {
    assert_eq!((d.outcome, d.reason), (outcome, reason), "{d:#?}");
    assert!(
        d.message.contains(needle),
        "{needle:?} not in {:?}",
        d.message
    );
}

#[test]
fn a_node_gets_its_own_addresses() {
    let d = run(
        &serving(
            "system:node:node-a",
            "system:node:node-a",
            &["node-a", "NODE-A.cluster.internal"],
            &["10.0.0.1", "fd00::1", "::ffff:10.0.0.1"],
        ),
        &rules(),
        &index(),
        &[],
    );
    check(
        &d,
        Outcome::Approve,
        Reason::AutoApproved,
        "node node-a asked for its own",
    );
    let names = d.names.unwrap();
    assert_eq!(names.dns, ["node-a", "node-a.cluster.internal"]);
    assert_eq!(
        names.ips,
        [
            "10.0.0.1".parse::<IpAddr>().unwrap(),
            "fd00::1".parse().unwrap(),
            "10.0.0.1".parse().unwrap()
        ]
    );
    let subject = d.subject.unwrap();
    assert_eq!(subject.common_name, "system:node:node-a");
    assert_eq!(subject.groups, [NODES_GROUP]);
}

#[test]
fn foreign_and_disguised_addresses_are_refused() {
    let nodes = index();
    let r = rules();
    let a = |dns: &[&str], ips: &[&str]| {
        run(
            &serving("system:node:node-a", "system:node:node-a", dns, ips),
            &r,
            &nodes,
            &[],
        )
    };
    check(
        &a(&[], &["10.0.0.2"]),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "IP SAN 10.0.0.2",
    );
    check(
        &a(&[], &["::ffff:10.0.0.2"]),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "IP SAN ::ffff:10.0.0.2",
    );
    check(
        &a(&["node-b"], &[]),
        Outcome::Deny,
        Reason::SanOfAnotherNode,
        "the name of Node node-b",
    );
    check(
        &a(&["010.000.000.001"], &[]),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "not a host name",
    );
    check(
        &a(&["10.0.0.1"], &[]),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "not a host name",
    );
    check(
        &a(&["0x0a.0.0.1"], &[]),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "not a host name",
    );
    check(
        &a(&["*.cluster.internal"], &[]),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "not a host name",
    );
    check(
        &a(&["node-a."], &[]),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "not a host name",
    );
    check(
        &a(&["evilnode-a"], &[]),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "not among",
    );
    check(
        &a(&["node-a"], &["10.0.0.1", "8.8.8.8"]),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "8.8.8.8",
    );
}

#[test]
fn node_addresses_are_read_strictly() {
    let mut nodes = NodeIndex::default();
    nodes.upsert(
        "node-z",
        vec![
            addr("InternalIP", "010.0.0.9"),
            addr("InternalIP", "fd00::9%eth0"),
            addr("Hostname", "*.example.com"),
            addr("SomethingElse", "10.0.0.10"),
        ],
    );
    let r = rules();
    for (dns, ips) in [
        (vec![], vec!["10.0.0.9"]),
        (vec![], vec!["8.0.0.9"]),
        (vec![], vec!["fd00::9"]),
        (vec![], vec!["10.0.0.10"]),
        (vec!["x.example.com"], vec![]),
    ] {
        let d = run(
            &serving("system:node:node-z", "system:node:node-z", &dns, &ips),
            &r,
            &nodes,
            &[],
        );
        check(&d, Outcome::Deny, Reason::SanNotANodeAddress, "none usable");
    }
}

#[test]
fn extras_allow_suffixes_at_label_boundaries_and_ranges() {
    let mut r = rules();
    r.extra_dns_suffixes = vec!["example.com".into()];
    r.extra_cidrs = vec![Cidr::parse("192.168.0.0/16").unwrap()];
    let nodes = index();
    let a = |dns: &[&str], ips: &[&str]| {
        run(
            &serving("system:node:node-a", "system:node:node-a", dns, ips),
            &r,
            &nodes,
            &[],
        )
    };
    check(
        &a(&["node-a.example.com"], &["192.168.3.4"]),
        Outcome::Approve,
        Reason::AutoApproved,
        "allowed range 192.168.0.0/16",
    );
    // Only the node's own name under the suffix: not another node's, not deeper names.
    check(
        &a(&["node-b.example.com"], &[]),
        Outcome::Deny,
        Reason::SanOfAnotherNode,
        "Node node-b's name under the allowed suffix example.com",
    );
    for other in ["x.node-a.example.com", "a.example.com"] {
        check(
            &a(&[other], &[]),
            Outcome::Deny,
            Reason::SanNotANodeAddress,
            "certified only as node-a.example.com",
        );
    }
    check(
        &a(&["evilexample.com"], &[]),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "evilexample",
    );
    check(
        &a(&["example.com"], &[]),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "example.com",
    );
    check(
        &a(&[], &["192.169.0.1"]),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "192.169.0.1",
    );
    check(
        &a(&[], &["::ffff:192.168.1.1"]),
        Outcome::Approve,
        Reason::AutoApproved,
        "192.168.1.1",
    );
}

#[test]
fn an_address_another_node_reports_is_refused() {
    let mut nodes = index();
    // node-a copies node-b's address into its own status (a node writes its own status).
    nodes.upsert(
        "node-a",
        vec![
            addr("InternalIP", "10.0.0.1"),
            addr("InternalIP", "10.0.0.2"),
        ],
    );
    let f = serving(
        "system:node:node-a",
        "system:node:node-a",
        &[],
        &["10.0.0.2"],
    );
    check(
        &run(&f, &rules(), &nodes, &[]),
        Outcome::Deny,
        Reason::SanOfAnotherNode,
        "Node node-b",
    );
    let mut lax = rules();
    lax.refuse_shared_addresses = false;
    check(
        &run(&f, &lax, &nodes, &[]),
        Outcome::Approve,
        Reason::AutoApproved,
        "10.0.0.2",
    );
    // Once node-b is gone the address is node-a's alone.
    nodes.remove("node-b");
    check(
        &run(&f, &rules(), &nodes, &[]),
        Outcome::Approve,
        Reason::AutoApproved,
        "10.0.0.2",
    );
}

#[test]
fn serving_identity_rules() {
    let nodes = index();
    let r = rules();
    let ip = &["10.0.0.1"][..];
    check(
        &run(
            &serving("system:node:node-a", "system:node:node-b", &[], ip),
            &r,
            &nodes,
            &[],
        ),
        Outcome::Deny,
        Reason::NodeMismatch,
        "only for itself",
    );
    let mut f = serving("jane", "system:node:node-a", &[], ip);
    f.requester.groups = vec!["system:authenticated".into()];
    check(
        &run(&f, &r, &nodes, &[]),
        Outcome::Deny,
        Reason::NotANode,
        "\"jane\"",
    );
    let mut f = serving("system:bootstrap:abcdef", "system:node:node-a", &[], ip);
    f.requester.groups = vec![BOOTSTRAPPERS_GROUP.into()];
    check(
        &run(&f, &r, &nodes, &[]),
        Outcome::Deny,
        Reason::NotANode,
        "system:bootstrap:abcdef",
    );
    let mut f = serving("system:node:node-a", "system:node:node-a", &[], ip);
    f.organizations.push("system:masters".into());
    check(
        &run(&f, &r, &nodes, &[]),
        Outcome::Deny,
        Reason::GroupNotAllowed,
        "system:masters",
    );
    let mut f = serving("system:node:node-a", "system:node:node-a", &[], ip);
    f.common_names.insert(0, "system:node:node-b".into());
    check(
        &run(&f, &r, &nodes, &[]),
        Outcome::Deny,
        Reason::AmbiguousCommonName,
        "2 CNs",
    );
    let mut f = serving("system:node:node-a", "system:node:node-a", &[], ip);
    f.usages = vec!["digital signature".into(), "client auth".into()];
    check(
        &run(&f, &r, &nodes, &[]),
        Outcome::Deny,
        Reason::UsageNotAllowed,
        "usages did not match",
    );
    let mut f = serving("system:node:node-a", "system:node:node-a", &[], ip);
    f.sans.emails = vec!["a@b".into()];
    check(
        &run(&f, &r, &nodes, &[]),
        Outcome::Deny,
        Reason::SansNotAllowed,
        "Email",
    );
    let f = serving("system:node:node-a", "system:node:node-a", &[], &[]);
    check(
        &run(&f, &r, &nodes, &[]),
        Outcome::Deny,
        Reason::SansNotAllowed,
        "DNS or IP subjectAltName is required",
    );
    let mut f = serving("system:node:node-a", "system:node:node-a", &[], ip);
    f.key = KeyKind::Rsa(1024);
    check(
        &run(&f, &r, &nodes, &[]),
        Outcome::Deny,
        Reason::KeyNotAllowed,
        "1024",
    );
    let mut f = serving("system:node:node-a", "system:node:node-a", &[], ip);
    f.uids = vec!["x".into()];
    check(
        &run(&f, &r, &nodes, &[]),
        Outcome::Deny,
        Reason::SubjectNotAllowed,
        "only CN and O",
    );
    let f = serving("system:node:", "system:node:", &[], ip);
    check(
        &run(&f, &r, &nodes, &[]),
        Outcome::Deny,
        Reason::NodeMismatch,
        "does not name a node",
    );
}

#[test]
fn a_missing_node_waits_then_is_denied() {
    let nodes = index();
    let f = serving(
        "system:node:node-c",
        "system:node:node-c",
        &[],
        &["10.0.0.3"],
    );
    let d = run(&f, &rules(), &nodes, &[]);
    check(
        &d,
        Outcome::Ignore,
        Reason::NodeNotFound,
        "does not exist (yet)",
    );
    let access = BTreeMap::new();
    let late = decide(
        &f,
        &rules(),
        &NodeFacts {
            nodes: &nodes,
            access: &access,
            age_seconds: 300,
        },
    );
    check(
        &late,
        Outcome::Deny,
        Reason::NodeNotFound,
        "did not appear within 300s",
    );
}

#[test]
fn approve_only_never_denies() {
    let mut r = rules();
    r.approve_only = true;
    let nodes = index();
    let d = run(
        &serving(
            "system:node:node-a",
            "system:node:node-a",
            &[],
            &["10.0.0.2"],
        ),
        &r,
        &nodes,
        &[],
    );
    check(
        &d,
        Outcome::Ignore,
        Reason::SanNotANodeAddress,
        "approve-only mode",
    );
    let d = run(
        &serving(
            "system:node:node-a",
            "system:node:node-a",
            &[],
            &["10.0.0.1"],
        ),
        &r,
        &nodes,
        &[],
    );
    assert_eq!(d.outcome, Outcome::Approve);
}

#[test]
fn client_certificates_follow_kube_controller_manager() {
    let nodes = NodeIndex::default();
    let r = rules();
    let node = client(
        "system:node:n1",
        &[NODES_GROUP, "system:authenticated"],
        "system:node:n1",
    );
    assert_eq!(client_access_checks(&node), [ClientAccess::SelfNodeClient]);
    check(
        &run(&node, &r, &nodes, &[(ClientAccess::SelfNodeClient, true)]),
        Outcome::Approve,
        Reason::AutoApproved,
        "selfnodeclient",
    );
    check(
        &run(&node, &r, &nodes, &[(ClientAccess::SelfNodeClient, false)]),
        Outcome::Deny,
        Reason::NodeClientNotAuthorized,
        "selfnodeclient",
    );
    // No answer (the review failed) allows nothing.
    check(
        &run(&node, &r, &nodes, &[]),
        Outcome::Deny,
        Reason::NodeClientNotAuthorized,
        "selfnodeclient",
    );
    let boot = client(
        "system:bootstrap:abcdef",
        &[BOOTSTRAPPERS_GROUP, "system:authenticated"],
        "system:node:n2",
    );
    assert_eq!(client_access_checks(&boot), [ClientAccess::NodeClient]);
    check(
        &run(&boot, &r, &nodes, &[(ClientAccess::NodeClient, true)]),
        Outcome::Approve,
        Reason::AutoApproved,
        "bootstrap",
    );
    let other = client("system:node:n1", &[NODES_GROUP], "system:node:n2");
    check(
        &run(&other, &r, &nodes, &[(ClientAccess::NodeClient, true)]),
        Outcome::Deny,
        Reason::NodeMismatch,
        "only its own",
    );
    let jane = client("jane", &["dev"], "system:node:n2");
    check(
        &run(&jane, &r, &nodes, &[]),
        Outcome::Deny,
        Reason::NotANode,
        "bootstrap token",
    );
    let mut sans = node.clone();
    sans.sans.dns = vec!["n1".into()];
    check(
        &run(&sans, &r, &nodes, &[(ClientAccess::SelfNodeClient, true)]),
        Outcome::Deny,
        Reason::SansNotAllowed,
        "DNS subjectAltNames are not allowed",
    );
    let mut serve = node.clone();
    serve.usages = vec!["digital signature".into(), "server auth".into()];
    check(
        &run(&serve, &r, &nodes, &[(ClientAccess::SelfNodeClient, true)]),
        Outcome::Deny,
        Reason::UsageNotAllowed,
        "usages did not match",
    );
    let mut groups = node.clone();
    groups.organizations = vec![NODES_GROUP.into(), "dev".into()];
    check(
        &run(&groups, &r, &nodes, &[(ClientAccess::SelfNodeClient, true)]),
        Outcome::Deny,
        Reason::GroupNotAllowed,
        "exactly [system:nodes]",
    );
}

#[test]
fn cidrs_parse_strictly() {
    assert!(
        Cidr::parse("10.0.0.0/8")
            .unwrap()
            .contains("10.255.0.1".parse().unwrap())
    );
    assert!(
        !Cidr::parse("10.0.0.0/8")
            .unwrap()
            .contains("11.0.0.1".parse().unwrap())
    );
    assert!(
        Cidr::parse("fd00::/8")
            .unwrap()
            .contains("fdff::1".parse().unwrap())
    );
    assert!(
        !Cidr::parse("fd00::/8")
            .unwrap()
            .contains("10.0.0.1".parse().unwrap())
    );
    assert!(
        Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap())
    );
    assert!(Cidr::parse("10.0.0.1/8").unwrap_err().contains("host bits"));
    assert!(Cidr::parse("10.0.0.0/33").is_err());
    assert!(Cidr::parse("010.0.0.0/8").is_err());
    assert!(Cidr::parse("10.0.0.0").is_err());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// An IP SAN is approved exactly when it is, as an address, one of the Node's own.
        #[test]
        fn ip_sans_are_approved_only_for_the_nodes_own_addresses(
            own in proptest::collection::vec(any::<u32>(), 1..4),
            asked in any::<u32>(),
            mapped in any::<bool>(),
        ) {
            let mut nodes = NodeIndex::default();
            let own_ips: Vec<std::net::Ipv4Addr> = own.iter().map(|v| (*v).into()).collect();
            nodes.upsert("n", own_ips.iter().map(|ip| addr("InternalIP", &ip.to_string())).collect());
            let asked_ip: std::net::Ipv4Addr = asked.into();
            let san = if mapped { asked_ip.to_ipv6_mapped().to_string() } else { asked_ip.to_string() };
            let d = run(&serving("system:node:n", "system:node:n", &[], &[&san]), &rules(), &nodes, &[]);
            prop_assert_eq!(d.outcome == Outcome::Approve, own_ips.contains(&asked_ip), "{:?}", d);
        }

        /// Whatever the strings, a DNS SAN approved is a host name the Node reports or one under
        /// an allowed suffix, never an address in disguise.
        #[test]
        fn dns_sans_approved_are_host_names_of_the_node(
            san in "[a-z0-9.*-]{1,20}",
            hostname in "[a-z0-9.-]{1,12}",
        ) {
            let mut nodes = NodeIndex::default();
            nodes.upsert("n", vec![addr("Hostname", &hostname)]);
            let mut r = rules();
            r.extra_dns_suffixes = vec!["example.com".into()];
            let d = run(&serving("system:node:n", "system:node:n", &[&san], &[]), &r, &nodes, &[]);
            if d.outcome == Outcome::Approve {
                prop_assert!(is_host_name(&san) && !looks_like_address(&san));
                prop_assert!(san == hostname || san == "n.example.com");
            }
        }
    }
}

#[test]
fn docs_nodes_md_names_every_reason_a_node_decision_gives() {
    let doc = include_str!("../../../../docs/nodes.md");
    for r in [
        Reason::AutoApproved,
        Reason::NotANode,
        Reason::NodeMismatch,
        Reason::NodeNotFound,
        Reason::SanNotANodeAddress,
        Reason::SanOfAnotherNode,
        Reason::SanReserved,
        Reason::NodeClientNotAuthorized,
        Reason::GroupNotAllowed,
        Reason::MissingCommonName,
        Reason::AmbiguousCommonName,
        Reason::SubjectNotAllowed,
        Reason::SansNotAllowed,
        Reason::UsageNotAllowed,
        Reason::KeyNotAllowed,
        Reason::RequestTooLarge,
        Reason::InvalidRequest,
        Reason::NodeRevoked,
    ] {
        assert!(
            doc.contains(&format!("`{}`", r.as_str())),
            "docs/nodes.md lacks {r}"
        );
    }
}

#[test]
fn a_node_reporting_another_nodes_name_gets_neither_it_nor_the_suffix_name() {
    // node-a writes its own status: it adds node-b's name under the suffix, and node-b's own
    // name, which node-b itself does not report.
    let mut r = rules();
    r.extra_dns_suffixes = vec!["example.com".into()];
    let mut nodes = NodeIndex::default();
    nodes.upsert(
        "node-a",
        vec![
            addr("InternalIP", "10.0.0.1"),
            addr("ExternalDNS", "node-b.example.com"),
            addr("ExternalDNS", "node-b"),
            addr("ExternalDNS", "other.example.com"),
        ],
    );
    nodes.upsert("node-b", vec![addr("InternalIP", "10.0.0.2")]);
    let ask = |node: &str, dns: &str| {
        run(
            &serving(
                &format!("system:node:{node}"),
                &format!("system:node:{node}"),
                &[dns],
                &[],
            ),
            &r,
            &nodes,
            &[],
        )
    };
    check(
        &ask("node-a", "node-b.example.com"),
        Outcome::Deny,
        Reason::SanOfAnotherNode,
        "Node node-b's name",
    );
    check(
        &ask("node-a", "node-b"),
        Outcome::Deny,
        Reason::SanOfAnotherNode,
        "the name of Node node-b",
    );
    // Reported, but under the suffix: only node-a.example.com is node-a's there.
    check(
        &ask("node-a", "other.example.com"),
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "certified only as node-a.example.com",
    );
    // node-a's claim does not take node-b's own suffix name from it.
    check(
        &ask("node-b", "node-b.example.com"),
        Outcome::Approve,
        Reason::AutoApproved,
        "allowed suffix example.com",
    );
    check(
        &ask("node-a", "node-a.example.com"),
        Outcome::Approve,
        Reason::AutoApproved,
        "allowed suffix example.com",
    );
}

#[test]
fn the_api_servers_address_is_only_a_control_plane_nodes_that_reports_it() {
    // kubeadm: the API server listens on the control-plane Node's own address.
    let mut nodes = NodeIndex::default();
    nodes.upsert("cp", vec![addr("InternalIP", "192.0.2.10")]);
    nodes.set_control_plane("cp", true);
    nodes.upsert("worker", vec![addr("InternalIP", "192.0.2.20")]);
    // A worker reports the API server's address of a managed control plane (no Node has it).
    nodes.upsert("evil", vec![addr("InternalIP", "198.51.100.7")]);
    nodes.set_cluster_reserved(
        Vec::new(),
        ["192.0.2.10/32", "198.51.100.7/32"]
            .iter()
            .map(|c| {
                (
                    Cidr::parse(c).unwrap(),
                    "an address of the API server".to_string(),
                )
            })
            .collect(),
    );
    let ask = |nodes: &NodeIndex, node: &str, ip: &str| {
        let who = format!("system:node:{node}");
        run(&serving(&who, &who, &[], &[ip]), &rules(), nodes, &[])
    };
    check(
        &ask(&nodes, "cp", "192.0.2.10"),
        Outcome::Approve,
        Reason::AutoApproved,
        "192.0.2.10",
    );
    check(
        &ask(&nodes, "evil", "198.51.100.7"),
        Outcome::Deny,
        Reason::SanReserved,
        "only a control-plane Node",
    );
    // The same Node without the role label (which its kubelet cannot set): refused.
    nodes.set_control_plane("cp", false);
    check(
        &ask(&nodes, "cp", "192.0.2.10"),
        Outcome::Deny,
        Reason::SanReserved,
        "an address of the API server",
    );
    // A control-plane Node gets it only if it reports it itself.
    nodes.set_control_plane("evil", true);
    nodes.upsert("evil", vec![addr("InternalIP", "198.51.100.8")]);
    nodes.set_control_plane("evil", true);
    check(
        &ask(&nodes, "evil", "198.51.100.7"),
        Outcome::Deny,
        Reason::SanReserved,
        "only a control-plane Node",
    );
    // Forgetting a Node forgets its role.
    nodes.remove("evil");
    assert!(!nodes.is_control_plane("evil"));
}

#[test]
fn a_nodes_own_fqdn_name_and_names_that_are_other_nodes_are_told_apart() {
    let mut r = rules();
    r.extra_dns_suffixes = vec!["ec2.internal".into(), "example.com".into()];
    let mut nodes = NodeIndex::default();
    // A node whose own name ends in an allowed suffix (AWS-style), and a pair x / x.example.com.
    nodes.upsert(
        "ip-10-0-0-1.ec2.internal",
        vec![
            addr("InternalIP", "10.0.0.1"),
            addr("Hostname", "ip-10-0-0-1.ec2.internal"),
        ],
    );
    nodes.upsert("x", vec![addr("InternalIP", "10.0.0.2")]);
    nodes.upsert(
        "x.example.com",
        vec![
            addr("InternalIP", "10.0.0.3"),
            addr("Hostname", "x.example.com"),
        ],
    );
    // A node name with a `pod` label that is no Pod name.
    nodes.upsert(
        "w1.pod.dc1.corp",
        vec![
            addr("InternalIP", "10.0.0.4"),
            addr("Hostname", "w1.pod.dc1.corp"),
        ],
    );
    let ask = |node: &str, dns: &str| {
        let who = format!("system:node:{node}");
        run(&serving(&who, &who, &[dns], &[]), &r, &nodes, &[])
    };
    check(
        &ask("ip-10-0-0-1.ec2.internal", "ip-10-0-0-1.ec2.internal"),
        Outcome::Approve,
        Reason::AutoApproved,
        "an address of the Node",
    );
    check(
        &ask("x", "x.example.com"),
        Outcome::Deny,
        Reason::SanOfAnotherNode,
        "the name of Node x.example.com",
    );
    // Node x.example.com's own name is also node x's name under the suffix: ambiguous, x's,
    // so that no name is certified for two Nodes.
    check(
        &ask("x.example.com", "x.example.com"),
        Outcome::Deny,
        Reason::SanOfAnotherNode,
        "Node x's name under the allowed suffix example.com",
    );
    check(
        &ask("w1.pod.dc1.corp", "w1.pod.dc1.corp"),
        Outcome::Approve,
        Reason::AutoApproved,
        "w1.pod.dc1.corp",
    );
}

#[test]
fn nested_dns_suffixes_are_refused_as_ambiguous() {
    let mut r = rules();
    r.extra_dns_suffixes = vec!["nodes.example.com".into(), "example.com".into()];
    let e = r.check().unwrap_err();
    assert!(
        e.contains("\"nodes.example.com\" is under the suffix \"example.com\""),
        "{e}"
    );
    r.extra_dns_suffixes = vec!["nodes.example.com".into(), "other.example.com".into()];
    r.check().unwrap();
    // "evilexample.com" is not under "example.com".
    r.extra_dns_suffixes = vec!["evilexample.com".into(), "example.com".into()];
    r.check().unwrap();
}

#[test]
fn reserved_addresses_and_names_are_never_certified_whatever_the_node_reports() {
    let mut nodes = NodeIndex::default();
    // A hostile node reports addresses that mean something else to clients.
    nodes.upsert(
        "evil",
        [
            ("InternalIP", "127.0.0.1"),
            ("InternalIP", "::1"),
            ("InternalIP", "169.254.169.254"),
            ("InternalIP", "fe80::1"),
            ("InternalIP", "224.0.0.1"),
            ("InternalIP", "0.0.0.0"),
            ("InternalIP", "10.96.0.1"),
            ("Hostname", "localhost"),
            ("InternalDNS", "kubernetes.default.svc"),
            ("InternalDNS", "kubernetes"),
            ("InternalDNS", "api.kube-system.svc.cluster.local"),
            ("InternalDNS", "a.localhost"),
            ("Hostname", "localhost.localdomain"),
            ("InternalDNS", "ip6-localhost"),
            ("InternalDNS", "localhost6.localdomain6"),
            ("InternalDNS", "10-244-1-5.default.pod.cluster.local"),
            ("ExternalDNS", "api.corp.example"),
            ("ExternalDNS", "lb.ingress.corp.example"),
            ("InternalIP", "10.254.254.1"),
        ]
        .iter()
        .map(|(k, v)| addr(k, v))
        .collect(),
    );
    nodes.set_cluster_reserved(
        vec![(
            Cidr::parse("10.254.254.0/24").unwrap(),
            "a Service address (ServiceCIDR kubernetes)".into(),
        )],
        Vec::new(),
    );
    let d = run(
        &serving(
            "system:node:evil",
            "system:node:evil",
            &[],
            &["::ffff:10.254.254.1"],
        ),
        &rules(),
        &nodes,
        &[],
    );
    check(
        &d,
        Outcome::Deny,
        Reason::SanReserved,
        "10.254.254.1 is a Service address (ServiceCIDR kubernetes) (10.254.254.0/24)",
    );
    let mut r = rules();
    r.reserved_cidrs = vec![Cidr::parse("10.96.0.0/12").unwrap()];
    r.reserved_names = vec!["api.corp.example".into(), "*.ingress.corp.example".into()];
    for ip in [
        "127.0.0.1",
        "::1",
        "169.254.169.254",
        "fe80::1",
        "224.0.0.1",
        "0.0.0.0",
        "10.96.0.1",
        "::ffff:127.0.0.1",
    ] {
        let d = run(
            &serving("system:node:evil", "system:node:evil", &[], &[ip]),
            &r,
            &nodes,
            &[],
        );
        check(&d, Outcome::Deny, Reason::SanReserved, "never certified");
    }
    for dns in [
        "localhost",
        "kubernetes.default.svc",
        "kubernetes",
        "api.kube-system.svc.cluster.local",
        "a.localhost",
        "localhost.localdomain",
        "ip6-localhost",
        "localhost6.localdomain6",
        "10-244-1-5.default.pod.cluster.local",
        "api.corp.example",
        "lb.ingress.corp.example",
    ] {
        let d = run(
            &serving("system:node:evil", "system:node:evil", &[dns], &[]),
            &r,
            &nodes,
            &[],
        );
        check(&d, Outcome::Deny, Reason::SanReserved, "never certified");
    }
    // Names merely containing those words are fine when the Node reports them.
    nodes.upsert(
        "ok",
        vec![
            addr("Hostname", "kubernetes-worker-1"),
            addr("InternalIP", "10.0.9.1"),
        ],
    );
    let d = run(
        &serving(
            "system:node:ok",
            "system:node:ok",
            &["kubernetes-worker-1"],
            &["10.0.9.1"],
        ),
        &r,
        &nodes,
        &[],
    );
    assert_eq!(d.outcome, Outcome::Approve, "{d:?}");
}

#[test]
fn another_nodes_entries_are_read_generously_for_the_shared_check() {
    let mut nodes = NodeIndex::default();
    // Node b reports its names in forms kcert would not certify (trailing dot, zone, padded).
    nodes.upsert(
        "node-b",
        vec![
            addr("Hostname", "b.example.test."),
            addr("InternalIP", "fd00::2%eth0"),
            addr("ExternalIP", "010.000.000.002"),
            addr("Hostname", "10.0.0.3"),
        ],
    );
    // Node a copies them in strict form into its own status.
    nodes.upsert(
        "node-a",
        vec![
            addr("Hostname", "b.example.test"),
            addr("InternalIP", "fd00::2"),
            addr("InternalIP", "10.0.0.2"),
            addr("InternalIP", "10.0.0.3"),
        ],
    );
    for (dns, ip) in [
        (Some("b.example.test"), None),
        (None, Some("fd00::2")),
        (None, Some("10.0.0.2")),
        (None, Some("10.0.0.3")),
    ] {
        let dns: Vec<&str> = dns.into_iter().collect();
        let ips: Vec<&str> = ip.into_iter().collect();
        let d = run(
            &serving("system:node:node-a", "system:node:node-a", &dns, &ips),
            &rules(),
            &nodes,
            &[],
        );
        check(&d, Outcome::Deny, Reason::SanOfAnotherNode, "Node node-b");
    }
}

#[test]
fn approve_only_covers_every_denial_and_a_non_node_user_is_not_a_node() {
    let mut r = rules();
    r.approve_only = true;
    let d = in_mode(Decision::invalid_request("truncated"), &r);
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Ignore, Reason::InvalidRequest)
    );
    // A user named like a node but not in system:nodes asking for its own CN.
    let f = client("system:node:n1", &["dev"], "system:node:n1");
    check(
        &run(&f, &rules(), &NodeIndex::default(), &[]),
        Outcome::Deny,
        Reason::NotANode,
        "neither the node",
    );
}

#[test]
fn a_node_listing_thousands_of_addresses_gets_a_short_message() {
    let mut nodes = NodeIndex::default();
    let many: Vec<NodeAddress> = (0..5000)
        .map(|i| addr("InternalIP", &format!("10.{}.{}.1", i / 250, i % 250)))
        .collect();
    nodes.upsert("big", many);
    let d = run(
        &serving("system:node:big", "system:node:big", &[], &["192.168.0.1"]),
        &rules(),
        &nodes,
        &[],
    );
    check(
        &d,
        Outcome::Deny,
        Reason::SanNotANodeAddress,
        "and 4992 more",
    );
    assert!(d.message.len() < 600, "{}", d.message.len());
}

#[test]
fn a_revoked_node_gets_no_certificate_by_bootstrap_renewal_or_serving() {
    let nodes = index();
    let revocation = NodeRevocation {
        revoked_at: "2026-12-01T00:00:00Z".into(),
        revoked_by: "admin".into(),
        reason: "decommissioned".into(),
    };
    let revoked = |n: &str| (n == "node-a").then(|| revocation.clone());
    let judge = |f: &CsrFacts, r: &NodeRules, access: &[(ClientAccess, bool)]| {
        let access: BTreeMap<_, _> = access.iter().copied().collect();
        decide_with_revocations(
            f,
            r,
            &NodeFacts {
                nodes: &nodes,
                access: &access,
                age_seconds: 10,
            },
            &revoked,
        )
    };
    let boot = client(
        "system:bootstrap:abcdef",
        &[BOOTSTRAPPERS_GROUP, "system:authenticated"],
        "system:node:node-a",
    );
    let renew = client(
        "system:node:node-a",
        &[NODES_GROUP, "system:authenticated"],
        "system:node:node-a",
    );
    let serve = serving(
        "system:node:node-a",
        "system:node:node-a",
        &[],
        &["10.0.0.1"],
    );
    // Whatever the SubjectAccessReviews allow.
    for (f, access) in [
        (&boot, (ClientAccess::NodeClient, true)),
        (&renew, (ClientAccess::SelfNodeClient, true)),
        (&serve, (ClientAccess::NodeClient, true)),
    ] {
        let d = judge(f, &rules(), &[access]);
        check(&d, Outcome::Deny, Reason::NodeRevoked, "decommissioned");
        assert!(
            d.message.contains("kcert revoke --node node-a --clear")
                && d.message.contains("2026-12-01T00:00:00Z"),
            "{}",
            d.message
        );
        assert!(d.subject.is_none() && d.names.is_none());
    }
    // Without the revocation (cleared), the same requests are approved; another node is not
    // touched by node-a's revocation.
    assert_eq!(
        run(&boot, &rules(), &nodes, &[(ClientAccess::NodeClient, true)]).outcome,
        Outcome::Approve
    );
    let other = client(
        "system:bootstrap:abcdef",
        &[BOOTSTRAPPERS_GROUP, "system:authenticated"],
        "system:node:node-b",
    );
    assert_eq!(
        judge(&other, &rules(), &[(ClientAccess::NodeClient, true)]).outcome,
        Outcome::Approve
    );
    // The signer's table still comes first; approve-only leaves it pending with the reason.
    let mut bad = boot.clone();
    bad.organizations.push("system:masters".into());
    assert_eq!(judge(&bad, &rules(), &[]).reason, Reason::GroupNotAllowed);
    let mut r = rules();
    r.approve_only = true;
    check(
        &judge(&boot, &r, &[(ClientAccess::NodeClient, true)]),
        Outcome::Ignore,
        Reason::NodeRevoked,
        "approve-only mode",
    );
}

fn yaml(text: &str) -> Result<serde_json::Value, String> {
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}

fn data(key: &str, value: &str) -> BTreeMap<String, String> {
    [(key.to_string(), value.to_string())].into()
}

/// `kube-public/cluster-info` as kubeadm writes it.
fn cluster_info(server: &str) -> BTreeMap<String, String> {
    data(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: LS0tLS1CRUdJTg==\n    server: {server}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n"
        ),
    )
}

/// `kube-system/kubeadm-config` as kubeadm writes it.
fn kubeadm_config(endpoint: Option<&str>) -> BTreeMap<String, String> {
    let endpoint = endpoint
        .map(|e| format!("controlPlaneEndpoint: {e}\n"))
        .unwrap_or_default();
    data(
        "ClusterConfiguration",
        &format!(
            "apiServer: {{}}\napiVersion: kubeadm.k8s.io/v1beta4\ncertificatesDir: /etc/kubernetes/pki\nclusterName: kubernetes\n{endpoint}kind: ClusterConfiguration\nkubernetesVersion: v1.33.0\nnetworking:\n  dnsDomain: cluster.local\n  serviceSubnet: 10.96.0.0/12\n"
        ),
    )
}

#[test]
fn the_api_servers_endpoints_are_read_from_kubeadms_config_maps() {
    let dns = |s: &str| NodeName::Dns(s.into());
    let ip = |s: &str| NodeName::Ip(s.parse().unwrap());
    let hosts = |ci: Option<&BTreeMap<String, String>>, kc: Option<&BTreeMap<String, String>>| {
        stated_api_server(ci, kc, &yaml).map(|v| v.into_iter().map(|(h, _)| h).collect::<Vec<_>>())
    };
    // Not kubeadm: neither ConfigMap exists, nothing is stated, nothing fails.
    assert_eq!(hosts(None, None), Ok(vec![]));
    let stated = stated_api_server(
        Some(&cluster_info("https://API.Corp.Example.:6443")),
        Some(&kubeadm_config(Some("192.0.2.100:6443"))),
        &yaml,
    )
    .unwrap();
    assert_eq!(
        stated,
        vec![
            (
                dns("api.corp.example"),
                "the API server's name (the server of the kubeconfig in ConfigMap kube-public/cluster-info)".to_string()
            ),
            (
                ip("192.0.2.100"),
                "the API server's address (controlPlaneEndpoint in ConfigMap kube-system/kubeadm-config)".to_string()
            ),
        ]
    );
    // kubeadm without controlPlaneEndpoint: cluster-info names the advertise address.
    assert_eq!(
        hosts(
            Some(&cluster_info("https://[fd00::10]:6443")),
            Some(&kubeadm_config(None))
        ),
        Ok(vec![ip("fd00::10")])
    );
    assert_eq!(hosts(None, Some(&kubeadm_config(Some("\"\"")))), Ok(vec![]));
    // The same endpoint in both: stated once.
    assert_eq!(
        hosts(
            Some(&cluster_info("https://api.corp.example:6443")),
            Some(&kubeadm_config(Some("api.corp.example:6443")))
        ),
        Ok(vec![dns("api.corp.example")])
    );
    // A ConfigMap that exists but cannot be read as kubeadm writes it: an error (the caller
    // decides no serving CSR, as when the ServiceCIDRs cannot be read).
    for (ci, kc, needle) in [
        (
            Some(data("jws-kubeconfig-abcdef", "x")),
            None,
            "ConfigMap kube-public/cluster-info has no key kubeconfig",
        ),
        (
            Some(data("kubeconfig", "clusters: [")),
            None,
            "ConfigMap kube-public/cluster-info key kubeconfig: not YAML",
        ),
        (
            Some(data("kubeconfig", "kind: Config\n")),
            None,
            "a kubeconfig without clusters",
        ),
        (
            Some(data("kubeconfig", "clusters:\n- name: x\n  cluster: {}\n")),
            None,
            "a cluster without a server URL",
        ),
        (
            Some(cluster_info("https://:6443")),
            None,
            "names no host kcert can read",
        ),
        (
            None,
            Some(data("ClusterConfiguration", "- a list\n")),
            "not a ClusterConfiguration",
        ),
        (
            None,
            Some(kubeadm_config(Some("api_corp:6443"))),
            "ConfigMap kube-system/kubeadm-config key ClusterConfiguration: controlPlaneEndpoint",
        ),
        (None, Some(kubeadm_config(Some("[1"))), "not YAML"),
        (
            None,
            Some(BTreeMap::new()),
            "ConfigMap kube-system/kubeadm-config has no key ClusterConfiguration",
        ),
    ] {
        let e = stated_api_server(ci.as_ref(), kc.as_ref(), &yaml).unwrap_err();
        assert!(e.contains(needle), "{needle:?} not in {e:?}");
    }
    for (text, host) in [
        ("https://10.0.0.1:6443", ip("10.0.0.1")),
        ("https://[::ffff:10.0.0.1]:6443/", ip("10.0.0.1")),
        ("10.0.0.1:6443", ip("10.0.0.1")),
        ("10.0.0.1", ip("10.0.0.1")),
        ("fd00::1", ip("fd00::1")),
        ("[fd00::1]", ip("fd00::1")),
        ("api.corp.example", dns("api.corp.example")),
        (
            "https://user@lb.corp.example:443/k8s?x=1",
            dns("lb.corp.example"),
        ),
        ("http://single:8080", dns("single")),
    ] {
        assert_eq!(endpoint_host(text), Ok(host), "{text}");
    }
    for text in [
        "",
        "https://",
        "api.corp.example:port",
        "[fd00::1",
        "a b:6443",
        "*.corp:1",
    ] {
        assert!(endpoint_host(text).is_err(), "{text:?} read");
    }
}

#[test]
fn the_api_servers_stated_name_and_address_are_a_control_plane_nodes_only() {
    let mut nodes = NodeIndex::default();
    nodes.upsert(
        "cp",
        vec![
            addr("InternalIP", "192.0.2.10"),
            addr("Hostname", "cp"),
            addr("ExternalDNS", "cp.corp.example"),
        ],
    );
    nodes.set_control_plane("cp", true);
    // A worker reports the API server's external name and the endpoint address (a node writes
    // its own status).
    nodes.upsert(
        "worker",
        vec![
            addr("InternalIP", "192.0.2.20"),
            addr("InternalIP", "192.0.2.100"),
            addr("ExternalDNS", "api.corp.example"),
        ],
    );
    let stated = stated_api_server(
        Some(&cluster_info("https://api.corp.example:6443")),
        Some(&kubeadm_config(Some("192.0.2.100:6443"))),
        &yaml,
    )
    .unwrap();
    let ask = |nodes: &NodeIndex, node: &str, dns: &[&str], ips: &[&str]| {
        let who = format!("system:node:{node}");
        run(&serving(&who, &who, dns, ips), &rules(), nodes, &[])
    };
    // Before the names are read, the worker would get them: they are its reported addresses.
    check(
        &ask(&nodes, "worker", &["api.corp.example"], &["192.0.2.100"]),
        Outcome::Approve,
        Reason::AutoApproved,
        "api.corp.example",
    );
    nodes.set_cluster_names(ClusterNames {
        api_server: stated,
        namespaces: BTreeSet::new(),
    });
    check(
        &ask(&nodes, "worker", &["api.corp.example"], &[]),
        Outcome::Deny,
        Reason::SanReserved,
        "api.corp.example is the API server's name (the server of the kubeconfig in ConfigMap kube-public/cluster-info); only a control-plane Node",
    );
    check(
        &ask(&nodes, "worker", &[], &["::ffff:192.0.2.100"]),
        Outcome::Deny,
        Reason::SanReserved,
        "192.0.2.100 is the API server's address (controlPlaneEndpoint in ConfigMap kube-system/kubeadm-config); only a control-plane Node",
    );
    check(
        &ask(&nodes, "worker", &[], &["192.0.2.20"]),
        Outcome::Approve,
        Reason::AutoApproved,
        "192.0.2.20",
    );
    // A control-plane Node that does not report the endpoint does not get it.
    check(
        &ask(&nodes, "cp", &[], &["192.0.2.100"]),
        Outcome::Deny,
        Reason::SanReserved,
        "controlPlaneEndpoint",
    );
    // One that reports it itself does (the API server listens on its address, as with
    // kubeadm's advertise address), name and address alike.
    nodes.remove("worker");
    nodes.upsert(
        "cp",
        vec![
            addr("InternalIP", "192.0.2.100"),
            addr("Hostname", "api.corp.example"),
        ],
    );
    nodes.set_control_plane("cp", true);
    check(
        &ask(&nodes, "cp", &["api.corp.example"], &["192.0.2.100"]),
        Outcome::Approve,
        Reason::AutoApproved,
        "192.0.2.100",
    );
    nodes.set_control_plane("cp", false);
    check(
        &ask(&nodes, "cp", &["api.corp.example"], &[]),
        Outcome::Deny,
        Reason::SanReserved,
        "the API server's name",
    );
    check(
        &ask(&nodes, "cp", &[], &["192.0.2.100"]),
        Outcome::Deny,
        Reason::SanReserved,
        "the API server's address",
    );
}

#[test]
fn service_short_names_are_reserved_where_their_namespace_exists() {
    let mut nodes = NodeIndex::default();
    let reported = [
        "w1.corp",
        "web.team-a",
        "web.team-a.svc",
        "a.b.team-a",
        "team-a.corp",
    ];
    for (i, n) in ["w1.corp", "w2"].iter().enumerate() {
        let mut a = vec![addr("InternalIP", &format!("10.0.9.{}", i + 1))];
        if i == 0 {
            a.extend(reported.iter().map(|r| addr("InternalDNS", r)));
        }
        nodes.upsert(n, a);
    }
    let ask = |nodes: &NodeIndex, node: &str, dns: &str| {
        let who = format!("system:node:{node}");
        run(&serving(&who, &who, &[dns], &[]), &rules(), nodes, &[])
    };
    let namespaces = |names: &[&str]| ClusterNames {
        api_server: Vec::new(),
        namespaces: names.iter().map(|s| s.to_string()).collect(),
    };
    nodes.set_cluster_names(namespaces(&["default", "team-a"]));
    // `corp` is no Namespace: node w1.corp keeps its own name, and a reported three-label name
    // ending in a Namespace is no Service's short name.
    for own in ["w1.corp", "a.b.team-a", "team-a.corp"] {
        check(
            &ask(&nodes, "w1.corp", own),
            Outcome::Approve,
            Reason::AutoApproved,
            own,
        );
    }
    check(
        &ask(&nodes, "w1.corp", "web.team-a"),
        Outcome::Deny,
        Reason::SanReserved,
        "web.team-a is a Service's short name (<service>.<namespace>: Namespace team-a exists",
    );
    check(
        &ask(&nodes, "w1.corp", "WEB.Team-A"),
        Outcome::Deny,
        Reason::SanReserved,
        "Namespace team-a exists",
    );
    check(
        &ask(&nodes, "w1.corp", "web.team-a.svc"),
        Outcome::Deny,
        Reason::SanReserved,
        "under .svc",
    );
    // Once a Namespace corp exists, w1.corp is also Service w1's short name in it: refused,
    // saying why.
    nodes.set_cluster_names(namespaces(&["default", "team-a", "corp"]));
    check(
        &ask(&nodes, "w1.corp", "w1.corp"),
        Outcome::Deny,
        Reason::SanReserved,
        "w1.corp is a Service's short name (<service>.<namespace>: Namespace corp exists",
    );
    // A one-label node name is never a short name.
    nodes.upsert(
        "corp",
        vec![addr("InternalIP", "10.0.9.9"), addr("Hostname", "corp")],
    );
    check(
        &ask(&nodes, "corp", "corp"),
        Outcome::Approve,
        Reason::AutoApproved,
        "corp",
    );
}
