//! Every rule, every reason string, and the worked example of docs/policy.md.

use crate::*;

const EXAMPLE: &str = r#"
whenNoRuleMatches: Ignore
rules:
  - id: developers-self
    signerNames: [kcert.dev/client]
    requesters:
      groups: [developers]
    commonName: {self: true}
    groups:
      allowed: [dev]
    maxDuration: 24h
  - id: admins-onboard
    signerNames: [kcert.dev/client]
    requesters:
      groups: [admins]
    commonName: {regex: "[a-z][a-z0-9.-]*"}
    groups:
      byRequesterGroup:
        admins: [dev, ops]
    maxDuration: 720h
"#;

fn policy(yaml: &str) -> Policy {
    let spec: PolicySpec = serde_yaml::from_str(yaml).unwrap();
    Policy::compile("onboarding", &spec).unwrap()
}

fn facts(requester: &str, requester_groups: &[&str], cn: &str, groups: &[&str]) -> CsrFacts {
    CsrFacts {
        signer_name: "kcert.dev/client".into(),
        requester: Requester {
            username: requester.into(),
            uid: "uid-1".into(),
            groups: requester_groups
                .iter()
                .map(|s| s.to_string())
                .chain(["system:authenticated".into()])
                .collect(),
            extra: Default::default(),
        },
        common_names: vec![cn.into()],
        organizations: groups.iter().map(|s| s.to_string()).collect(),
        sans: SanFacts::default(),
        usages: DEFAULT_USAGES.iter().map(|s| s.to_string()).collect(),
        expiration_seconds: None,
        key: KeyKind::EcdsaP256,
        ..Default::default()
    }
}

fn assert_decision(d: &Decision, outcome: Outcome, reason: Reason, needle: &str) {
    assert_eq!((d.outcome, d.reason), (outcome, reason), "{d:#?}");
    assert!(
        d.message.contains(needle),
        "{needle:?} not in {:?}",
        d.message
    );
}

#[test]
fn worked_example_developers_self_and_admins_onboard() {
    let p = policy(EXAMPLE);
    let d = decide(&facts("jane", &["developers"], "jane", &["dev"]), &p);
    assert_decision(
        &d,
        Outcome::Approve,
        Reason::AutoApproved,
        "rule 'developers-self' of policy 'onboarding'",
    );
    assert_eq!(d.rule.as_deref(), Some("developers-self"));
    assert_eq!(d.max_duration_seconds, Some(86_400));

    let d = decide(&facts("jane", &["developers"], "bob", &["dev"]), &p);
    assert_decision(
        &d,
        Outcome::Deny,
        Reason::CommonNameNotAllowed,
        "must equal the requester's user name \"jane\"",
    );

    let d = decide(&facts("jane", &["developers"], "jane", &["ops"]), &p);
    assert_decision(&d, Outcome::Deny, Reason::GroupNotAllowed, "\"ops\"");

    let d = decide(&facts("alice", &["admins"], "bob", &["dev", "ops"]), &p);
    assert_decision(&d, Outcome::Approve, Reason::AutoApproved, "admins-onboard");
    assert_eq!(d.max_duration_seconds, Some(720 * 3600));

    // An admin who is also a developer gets the first rule that fully holds.
    let d = decide(
        &facts("alice", &["developers", "admins"], "bob", &["ops"]),
        &p,
    );
    assert_decision(&d, Outcome::Approve, Reason::AutoApproved, "admins-onboard");
    assert!(
        d.trace
            .iter()
            .any(|t| t.contains("developers-self") && t.contains("must equal")),
        "{:?}",
        d.trace
    );

    let d = decide(&facts("mallory", &["contractors"], "mallory", &["dev"]), &p);
    assert_decision(
        &d,
        Outcome::Ignore,
        Reason::NoMatchingRule,
        "no rule applies to requester \"mallory\"",
    );
}

#[test]
fn protected_groups_and_users_beat_every_rule() {
    let p = policy(
        r#"
rules:
  - id: anything-goes
    requesters: {groups: [system:authenticated]}
    commonName: {glob: "*"}
    groups: {allowed: ["*"]}
"#,
    );
    for g in [
        "system:masters",
        "System:Masters",
        "system:masters ",
        " SYSTEM:MASTERS",
        "system:nodes",
        "system:serviceaccounts",
        "system:serviceaccounts:kube-system",
        "system:authenticated",
        "system:unauthenticated",
        "system:kube-proxy",
        "system:bootstrappers:kubeadm:default-node-token",
    ] {
        let d = decide(&facts("jane", &[], "jane", &["dev", g]), &p);
        assert_decision(&d, Outcome::Deny, Reason::ProtectedGroup, "is protected");
    }
    for cn in [
        "system:admin",
        "System:kube-controller-manager",
        "system:node:worker-1",
    ] {
        let d = decide(&facts("jane", &[], cn, &["dev"]), &p);
        assert_decision(&d, Outcome::Deny, Reason::ProtectedUser, "reserved");
    }
    // Not protected: an ordinary group that merely mentions system.
    let d = decide(&facts("jane", &[], "jane", &["my-system:masters-fans"]), &p);
    assert_eq!(d.outcome, Outcome::Approve);
    // Configured protection adds to the built-in list.
    let extra = policy(
        r#"
protectedGroups: ["breakglass-*"]
rules:
  - id: r
    requesters: {groups: [system:authenticated]}
    groups: {allowed: ["*"]}
"#,
    );
    let d = decide(&facts("jane", &[], "jane", &["Breakglass-Admins"]), &extra);
    assert_decision(
        &d,
        Outcome::Deny,
        Reason::ProtectedGroup,
        "Breakglass-Admins",
    );
}

#[test]
fn subject_shape_is_checked_before_rules() {
    let p = policy(EXAMPLE);
    let mut f = facts("jane", &["developers"], "jane", &["dev"]);
    f.common_names = vec![];
    assert_decision(
        &decide(&f, &p),
        Outcome::Deny,
        Reason::MissingCommonName,
        "no CN",
    );
    f.common_names = vec!["jane".into(), "admin".into()];
    assert_decision(
        &decide(&f, &p),
        Outcome::Deny,
        Reason::AmbiguousCommonName,
        "2 CNs",
    );
}

#[test]
fn usages_keys_sans_and_lifetime_constraints() {
    let p = policy(
        r#"
rules:
  - id: strict
    requesters: {users: [jane]}
    keys: {types: [ecdsa-p256, rsa], minRsaBits: 3072}
    maxDuration: 1h
  - id: web
    requesters: {users: [web-bot]}
    commonName: {exact: web}
    usages: [digital signature, server auth]
    subjectAltNames: {dns: ["*.svc.example"], ips: ["10.0.0.1"]}
"#,
    );
    // The signer's table comes before any rule: the CLI and the controller agree.
    let mut f = facts("jane", &[], "jane", &[]);
    f.usages.push("server auth".into());
    assert_decision(
        &decide(&f, &p),
        Outcome::Deny,
        Reason::UsageNotAllowed,
        "invalid usage for client certificate: server auth",
    );
    f.usages.clear();
    assert_decision(
        &decide(&f, &p),
        Outcome::Deny,
        Reason::UsageNotAllowed,
        "missing required usage for client certificate: client auth",
    );
    // A rule narrower than the table still decides.
    let narrow = policy("rules: [{id: n, requesters: {users: [jane]}, usages: [client auth]}]");
    let f = facts("jane", &[], "jane", &[]);
    assert_decision(
        &decide(&f, &narrow),
        Outcome::Deny,
        Reason::UsageNotAllowed,
        "\"digital signature\" is not allowed",
    );

    let mut f = facts("jane", &[], "jane", &[]);
    f.key = KeyKind::Ed25519;
    assert_decision(
        &decide(&f, &p),
        Outcome::Deny,
        Reason::KeyNotAllowed,
        "ed25519",
    );
    f.key = KeyKind::Rsa(2048);
    assert_decision(
        &decide(&f, &p),
        Outcome::Deny,
        Reason::KeyNotAllowed,
        "2048 bits is below keys.minRsaBits 3072",
    );
    f.key = KeyKind::Rsa(4096);
    assert_eq!(decide(&f, &p).outcome, Outcome::Approve);

    let mut f = facts("jane", &[], "jane", &[]);
    f.sans.dns.push("jane.example".into());
    assert_decision(
        &decide(&f, &p),
        Outcome::Deny,
        Reason::SansNotAllowed,
        "issues no subject alternative names",
    );

    let mut f = facts("jane", &[], "jane", &[]);
    f.expiration_seconds = Some(7200);
    let d = decide(&f, &p);
    assert_decision(
        &d,
        Outcome::Approve,
        Reason::AutoApproved,
        "capped at 3600s",
    );
    assert_eq!(d.max_duration_seconds, Some(3600));

    // SANs: the client signers issue none, whatever a rule allows ...
    let mut web = facts("web-bot", &[], "web", &[]);
    web.sans.dns = vec!["api.svc.example".into()];
    assert_decision(
        &decide(&web, &p),
        Outcome::Deny,
        Reason::SansNotAllowed,
        "issues no subject alternative names",
    );
    // ... and the rule's own SAN constraints (for signers that will) are checked on their own.
    let rule = &p.rules()[1];
    web.usages = vec!["digital signature".into(), "server auth".into()];
    web.sans.ips = vec!["10.0.0.1".into()];
    assert!(crate::decision::check_constraints(rule, &web).is_ok());
    web.sans.dns.push("evil.example".into());
    let (reason, why) = crate::decision::check_constraints(rule, &web).unwrap_err();
    assert_eq!(reason, Reason::SansNotAllowed);
    assert!(why.contains("\"evil.example\""), "{why}");
    web.sans.dns.pop();
    web.sans.uris.push("spiffe://x".into());
    let (reason, why) = crate::decision::check_constraints(rule, &web).unwrap_err();
    assert_eq!(reason, Reason::SansNotAllowed);
    assert!(why.contains("URI"), "{why}");
    web.sans = SanFacts::default();
    web.usages = DEFAULT_USAGES.iter().map(|s| s.to_string()).collect();
    web.common_names = vec!["webx".into()];
    assert_decision(
        &decide(&web, &p),
        Outcome::Deny,
        Reason::CommonNameNotAllowed,
        "exact 'web'",
    );
}

#[test]
fn signer_names_and_service_accounts_scope_rules() {
    let p = policy(
        r#"
whenNoRuleMatches: Deny
rules:
  - id: ci
    signerNames: ["kcert.dev/*"]
    requesters: {serviceAccounts: ["ci/*", "ops/deployer"]}
    commonName: {glob: "ci-*"}
"#,
    );
    let mut f = facts(
        "system:serviceaccount:ci:runner",
        &["system:serviceaccounts"],
        "ci-build",
        &[],
    );
    assert_eq!(decide(&f, &p).outcome, Outcome::Approve);
    f.requester.username = "system:serviceaccount:ops:deployer".into();
    assert_eq!(decide(&f, &p).outcome, Outcome::Approve);
    f.requester.username = "system:serviceaccount:ops:other".into();
    assert_decision(
        &decide(&f, &p),
        Outcome::Deny,
        Reason::NoMatchingRule,
        "no rule applies",
    );
    f.requester.username = "system:serviceaccount:ci:runner".into();
    f.signer_name = "kubernetes.io/kube-apiserver-client".into();
    let d = decide(&f, &p);
    assert_decision(
        &d,
        Outcome::Deny,
        Reason::NoMatchingRule,
        "kubernetes.io/kube-apiserver-client",
    );
    assert!(
        d.trace.iter().any(|t| t.contains("not applicable: signer")),
        "{:?}",
        d.trace
    );
}

#[test]
fn renewals_may_keep_exactly_the_requesters_groups() {
    let p = policy(
        r#"
rules:
  - id: self-renew
    requesters: {groups: [system:authenticated]}
    groups: {fromRequester: true}
"#,
    );
    assert_eq!(
        decide(&facts("jane", &["dev", "ops"], "jane", &["dev", "ops"]), &p).outcome,
        Outcome::Approve
    );
    let d = decide(&facts("jane", &["dev"], "jane", &["dev", "admins"]), &p);
    assert_decision(&d, Outcome::Deny, Reason::GroupNotAllowed, "\"admins\"");
    // Being in a protected group as a requester does not make it requestable.
    let d = decide(
        &facts("jane", &["system:masters"], "jane", &["system:masters"]),
        &p,
    );
    assert_decision(&d, Outcome::Deny, Reason::ProtectedGroup, "system:masters");
}

#[test]
fn invalid_request_decision_names_the_problem() {
    let d = Decision::invalid_request("the CSR's signature does not verify");
    assert_decision(
        &d,
        Outcome::Deny,
        Reason::InvalidRequest,
        "signature does not verify",
    );
}

#[test]
fn every_reason_string_is_pascal_case_and_unique() {
    let mut seen = std::collections::BTreeSet::new();
    for r in Reason::ALL {
        let s = r.as_str();
        assert!(
            s.chars().next().unwrap().is_ascii_uppercase()
                && s.chars().all(|c| c.is_ascii_alphanumeric()),
            "{s}"
        );
        assert!(seen.insert(s), "{s} twice");
    }
}

#[test]
fn bad_policies_are_refused_with_the_rule_and_field() {
    let cases = [
        (
            "rules: [{id: a, requesters: {}}]",
            "requesters names nobody",
        ),
        (
            "rules: [{id: a, requesters: {users: [x]}}, {id: a, requesters: {users: [y]}}]",
            "appears twice",
        ),
        ("rules: [{id: '', requesters: {users: [x]}}]", "id is empty"),
        (
            "rules: [{id: a, requesters: {users: [x]}, commonName: {regex: '('}}]",
            "commonName.regex is invalid",
        ),
        (
            "rules: [{id: a, requesters: {users: [x]}, commonName: {self: true, exact: x}}]",
            "exactly one",
        ),
        (
            "rules: [{id: a, requesters: {users: [x]}, usages: [client]}]",
            "unknown usage",
        ),
        (
            "rules: [{id: a, requesters: {users: [x]}, usages: [cert sign]}]",
            "would make a CA",
        ),
        (
            "rules: [{id: a, requesters: {users: [x]}, keys: {minRsaBits: 1024}}]",
            "below 2048",
        ),
        (
            "rules: [{id: a, requesters: {users: [x]}, keys: {types: [dsa]}}]",
            "unknown key type",
        ),
        (
            "rules: [{id: a, requesters: {users: [x]}, maxDuration: soon}]",
            "maxDuration",
        ),
        (
            "rules: [{id: a, requesters: {serviceAccounts: [ci]}}]",
            "NAMESPACE/NAME",
        ),
        (
            "rules: [{id: a, requesters: {users: [' x']}}]",
            "surrounding spaces",
        ),
    ];
    for (yaml, needle) in cases {
        let spec: PolicySpec = serde_yaml::from_str(yaml).unwrap();
        let err = Policy::compile("p", &spec).unwrap_err().to_string();
        assert!(err.contains(needle), "{yaml}: {err}");
        assert!(err.starts_with("policy 'p'"), "{err}");
    }
    let unknown_field = serde_yaml::from_str::<PolicySpec>(
        "rules: [{id: a, requesters: {users: [x]}, comonName: {self: true}}]",
    );
    assert!(unknown_field.unwrap_err().to_string().contains("comonName"));
}

#[test]
fn merged_policies_keep_order_and_deny_wins() {
    let a = policy("rules: [{id: a, requesters: {users: [jane]}}]");
    let b = Policy::compile(
        "b",
        &serde_yaml::from_str("whenNoRuleMatches: Deny\nprotectedGroups: [secret]\nrules: [{id: b, requesters: {users: [bob]}}]").unwrap(),
    )
    .unwrap();
    let merged = Policy::merge([a, b]);
    assert_eq!(
        merged
            .rules()
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(merged.no_match_action(), NoMatchAction::Deny);
    assert!(merged.is_protected_group("secret"));
    assert_eq!(
        decide(&facts("bob", &[], "bob", &[]), &merged).outcome,
        Outcome::Approve
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn group() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{1,8}",
            Just("system:masters".to_string()),
            Just("dev".to_string()),
            "system:[a-z:-]{1,12}",
        ]
    }

    fn any_policy() -> impl Strategy<Value = PolicySpec> {
        let rule = (
            "[a-z]{1,6}",
            prop::collection::vec("[a-z*]{1,6}", 0..3),
            prop::collection::vec(
                prop_oneof!["[a-z*]{1,6}".prop_map(String::from), Just("*".to_string())],
                0..4,
            ),
            prop::option::of(1u64..100_000),
            any::<bool>(),
        )
            .prop_map(|(id, users, allowed, max, any_cn)| RuleSpec {
                id,
                requesters: RequesterSpec {
                    users: if users.is_empty() {
                        vec!["*".into()]
                    } else {
                        users
                    },
                    ..Default::default()
                },
                common_name: any_cn.then(|| CommonNameSpec {
                    glob: Some("*".into()),
                    ..Default::default()
                }),
                groups: Some(GroupsSpec {
                    allowed,
                    ..Default::default()
                }),
                max_duration: max.map(|s| format!("{s}s")),
                ..Default::default()
            });
        prop::collection::vec(rule, 0..5).prop_map(|mut rules| {
            let mut seen = std::collections::BTreeSet::new();
            rules.retain(|r| seen.insert(r.id.clone()));
            PolicySpec {
                rules,
                ..Default::default()
            }
        })
    }

    fn any_facts() -> impl Strategy<Value = CsrFacts> {
        (
            "[a-z]{1,6}",
            "[a-z:]{1,8}",
            prop::collection::vec(group(), 0..5),
            prop::option::of(600i64..1_000_000),
        )
            .prop_map(|(user, cn, groups, exp)| {
                let mut f = facts(&user, &[], &cn, &[]);
                f.organizations = groups;
                f.expiration_seconds = exp;
                f
            })
    }

    proptest! {
        #[test]
        fn protected_groups_are_never_approved(spec in any_policy(), f in any_facts()) {
            let p = Policy::compile("random", &spec).unwrap();
            let d = decide(&f, &p);
            if f.organizations.iter().any(|g| p.is_protected_group(g)) {
                prop_assert_ne!(d.outcome, Outcome::Approve);
                prop_assert_eq!(d.reason, Reason::ProtectedGroup);
            }
            // Deterministic.
            prop_assert_eq!(&d, &decide(&f, &p));
        }

        #[test]
        fn an_approval_means_the_deciding_rule_holds(spec in any_policy(), f in any_facts()) {
            let p = Policy::compile("random", &spec).unwrap();
            let d = decide(&f, &p);
            if d.outcome == Outcome::Approve {
                let rule = p.rules().iter().find(|r| Some(&r.id) == d.rule.as_ref()).unwrap();
                let spec_rule = spec.rules.iter().find(|r| r.id == rule.id).unwrap();
                prop_assert!(spec_rule.requesters.users.iter().any(|u| glob_matches(u, &f.requester.username)));
                let allowed = &spec_rule.groups.as_ref().unwrap().allowed;
                for g in &f.organizations {
                    prop_assert!(allowed.iter().any(|p| glob_matches(p, g)));
                    prop_assert!(!p.is_protected_group(g));
                }
                if spec_rule.common_name.is_none() {
                    prop_assert_eq!(f.common_name(), Some(f.requester.username.as_str()));
                }
                prop_assert_eq!(d.max_duration_seconds, spec_rule.max_duration.as_ref().map(|s| s.trim_end_matches('s').parse::<u64>().unwrap()));
            }
        }
    }
}

/// Issue 13's classes, each with its reason: what a hostile requester tries under a rule that
/// allows any CN and any group.
#[test]
fn identity_integrity_checks_come_before_any_permissive_rule() {
    let p = policy(
        r#"
rules:
  - id: anything
    requesters: {users: [mallory]}
    commonName: {glob: "*"}
    groups: {allowed: ["*"]}
"#,
    );
    let f = |cn: &str, groups: &[&str]| facts("mallory", &[], cn, groups);
    let cases: Vec<(CsrFacts, Reason, &str)> = vec![
        (f("", &[]), Reason::EmptyName, "user (CN) is empty"),
        (
            f("ok", &["dev", ""]),
            Reason::EmptyName,
            "group (O) is empty",
        ),
        (f("mal\0lory", &[]), Reason::UnprintableName, "U+0000"),
        (f("mal\nlory", &[]), Reason::UnprintableName, "U+000A"),
        (
            f("mal\u{1b}[2Klory", &[]),
            Reason::UnprintableName,
            "U+001B",
        ),
        (f("yrollam\u{202e}", &[]), Reason::UnprintableName, "U+202E"),
        (f("ok", &["dev\u{200b}"]), Reason::UnprintableName, "U+200B"),
        (f("mallory ", &[]), Reason::UntrimmedName, "whitespace"),
        (f("\u{a0}mallory", &[]), Reason::UntrimmedName, "whitespace"),
        (
            f(&"m".repeat(254), &[]),
            Reason::NameTooLong,
            "maxCommonNameBytes",
        ),
        (
            f("ok", &[&"g".repeat(70_000)]),
            Reason::NameTooLong,
            "maxGroupBytes",
        ),
        (
            f("ok", &["kubeadm:cluster-admins"]),
            Reason::ProtectedGroup,
            "protected",
        ),
        (
            f("ok", &["system:monitoring"]),
            Reason::ProtectedGroup,
            "protected",
        ),
        (
            f("ok", &["System:Anything "]),
            Reason::ProtectedGroup,
            "protected",
        ),
    ];
    for (facts, reason, needle) in cases {
        assert_decision(&decide(&facts, &p), Outcome::Deny, reason, needle);
    }
    let groups: Vec<String> = (0..3000).map(|i| format!("g{i}")).collect();
    let mut many = f("ok", &[]);
    many.organizations = groups;
    assert_decision(
        &decide(&many, &p),
        Outcome::Deny,
        Reason::TooManyGroups,
        "3000 groups",
    );
    let mut big = f("ok", &[]);
    big.request_bytes = 730_000;
    assert_decision(
        &decide(&big, &p),
        Outcome::Deny,
        Reason::RequestTooLarge,
        "730000 bytes",
    );
    let mut ou = f("ok", &[]);
    ou.other_attributes = vec!["OU=ops".into()];
    assert_decision(
        &decide(&ou, &p),
        Outcome::Deny,
        Reason::SubjectNotAllowed,
        "OU=ops",
    );
    let mut uid = f("ok", &[]);
    uid.uids = vec!["uid-of-jane".into()];
    assert_decision(
        &decide(&uid, &p),
        Outcome::Deny,
        Reason::UidNotAllowed,
        "allows no UID",
    );
    uid.uids.push("second".into());
    assert_decision(
        &decide(&uid, &p),
        Outcome::Deny,
        Reason::UidNotAllowed,
        "2 UIDs",
    );
    uid.uids = vec![String::new()];
    assert_decision(
        &decide(&uid, &p),
        Outcome::Deny,
        Reason::UidNotAllowed,
        "empty UID",
    );

    // What is approved is the checked identity: each group once, no UID.
    let d = decide(&f("ok", &["dev", "dev", "ops"]), &p);
    assert_eq!(d.outcome, Outcome::Approve);
    let s = d.subject.unwrap();
    assert_eq!(
        (s.common_name.as_str(), s.groups.as_slice(), s.uid),
        ("ok", &["dev".to_string(), "ops".to_string()][..], None)
    );

    // Limits are configurable; merging takes the smallest set.
    let roomy = policy(
        "subjectLimits: {maxGroups: 5000, maxRequestBytes: 1000000}\nrules: [{id: a, requesters: {users: [mallory]}, commonName: {glob: '*'}, groups: {allowed: ['*']}}]",
    );
    big.request_bytes = 200_000;
    assert_eq!(decide(&many, &roomy).outcome, Outcome::Approve);
    let strict = policy("subjectLimits: {maxGroups: 2}\nrules: []");
    let merged = Policy::merge([roomy.clone(), strict]);
    assert_eq!(merged.limits().max_groups, 2);
    assert_eq!(merged.limits().max_request_bytes, 1_000_000);
    assert_eq!(merged.limits().max_common_name_bytes, 253);
}

#[test]
fn uids_are_certified_only_where_a_rule_constrains_them() {
    let p = policy(
        r#"
rules:
  - id: renew
    requesters: {groups: [developers]}
    groups: {fromRequester: true}
    uid: {self: true}
  - id: fixed
    requesters: {users: [robot]}
    uid: {exact: robot-uid}
"#,
    );
    let mut f = facts("jane", &["developers"], "jane", &[]);
    f.uids = vec!["uid-1".into()];
    let d = decide(&f, &p);
    assert_eq!(d.outcome, Outcome::Approve, "{d:#?}");
    assert_eq!(d.subject.unwrap().uid.as_deref(), Some("uid-1"));
    f.uids = vec!["uid-of-someone-else".into()];
    assert_decision(
        &decide(&f, &p),
        Outcome::Deny,
        Reason::UidNotAllowed,
        "uid: self",
    );
    // A requester without a UID can't claim one.
    f.requester.uid = String::new();
    f.uids = vec![String::new() + "x"];
    assert_decision(
        &decide(&f, &p),
        Outcome::Deny,
        Reason::UidNotAllowed,
        "uid: self",
    );
    let mut r = facts("robot", &[], "robot", &[]);
    r.uids = vec!["robot-uid".into()];
    assert_eq!(decide(&r, &p).outcome, Outcome::Approve);
    r.uids = vec!["other".into()];
    assert_decision(
        &decide(&r, &p),
        Outcome::Deny,
        Reason::UidNotAllowed,
        "uid.exact",
    );
    for bad in ["uid: {}", "uid: {self: true, exact: x}", "uid: {exact: ''}"] {
        let spec: PolicySpec = serde_yaml::from_str(&format!(
            "rules: [{{id: a, requesters: {{users: [x]}}, {bad}}}]"
        ))
        .unwrap();
        assert!(
            Policy::compile("p", &spec)
                .unwrap_err()
                .to_string()
                .contains("uid needs exactly one"),
            "{bad}"
        );
    }
}

#[test]
fn regexes_cannot_escape_their_anchors() {
    for re in ["nobody)|(.*", "a)|(?:.*", "x)(.*"] {
        let spec: PolicySpec = serde_yaml::from_str(&format!(
            "rules: [{{id: r, requesters: {{users: ['*']}}, commonName: {{regex: '{re}'}}}}]"
        ))
        .unwrap();
        let err = Policy::compile("p", &spec).unwrap_err().to_string();
        assert!(err.contains("commonName.regex is invalid"), "{re}: {err}");
    }
    let p =
        policy("rules: [{id: r, requesters: {users: ['*']}, commonName: {regex: 'nobody|x.*'}}]");
    assert_eq!(
        decide(&facts("root", &[], "root", &[]), &p).reason,
        Reason::CommonNameNotAllowed
    );
    assert_eq!(
        decide(&facts("xy", &[], "xy", &[]), &p).outcome,
        Outcome::Approve
    );
    assert_eq!(
        decide(&facts("anobody", &[], "anobody", &[]), &p).reason,
        Reason::CommonNameNotAllowed
    );
}

#[test]
fn rbac_privileged_subjects_are_protected_unless_exempt_by_exact_name() {
    let p = policy(
        "exemptGroups: [breakglass]\nrules: [{id: a, requesters: {users: ['*']}, commonName: {glob: '*'}, groups: {allowed: ['*']}}]",
    );
    let binding = |name: &str, group: &str, user: &str| BindingFacts {
        name: name.into(),
        role_kind: "ClusterRole".into(),
        role_name: "cluster-admin".into(),
        groups: vec![group.into()],
        users: vec![user.into()],
        ..Default::default()
    };
    let privileged = PrivilegedSubjects::from_rbac(
        &[],
        &[
            binding("ops", "ops-admins", "root"),
            binding("bg", "breakglass", "nobody-special"),
        ],
    );
    let d = evaluate(&facts("x", &[], "x", &["ops-admins"]), &p, &privileged);
    assert_decision(
        &d,
        Outcome::Deny,
        Reason::ProtectedGroup,
        "ClusterRoleBinding ops",
    );
    let d = evaluate(&facts("x", &[], "root", &[]), &p, &privileged);
    assert_decision(
        &d,
        Outcome::Deny,
        Reason::ProtectedUser,
        "ClusterRoleBinding ops",
    );
    assert_eq!(
        evaluate(&facts("x", &[], "x", &["breakglass"]), &p, &privileged).outcome,
        Outcome::Approve
    );
    // Exemptions never reach the built-in list, and patterns are refused.
    let ex = policy(
        "exemptGroups: [kubeadm:cluster-admins]\nrules: [{id: a, requesters: {users: ['*']}, commonName: {glob: '*'}, groups: {allowed: ['*']}}]",
    );
    assert_eq!(
        decide(&facts("x", &[], "x", &["kubeadm:cluster-admins"]), &ex).reason,
        Reason::ProtectedGroup
    );
    let spec: PolicySpec = serde_yaml::from_str("exemptGroups: ['ops-*']").unwrap();
    assert!(
        Policy::compile("p", &spec)
            .unwrap_err()
            .to_string()
            .contains("exact group name")
    ); // Users are exempted the same way, by exact name; system: users never.
    let ex = policy(
        "exemptUsers: [root]\nrules: [{id: a, requesters: {users: ['*']}, commonName: {glob: '*'}, groups: {allowed: ['*']}}]",
    );
    assert_eq!(
        evaluate(&facts("x", &[], "root", &[]), &ex, &privileged).outcome,
        Outcome::Approve
    );
    for (bad, needle) in [
        ("exemptUsers: ['ro*']", "exact user name"),
        ("exemptUsers: ['system:admin']", "system: user"),
    ] {
        let spec: PolicySpec = serde_yaml::from_str(bad).unwrap();
        let err = Policy::compile("p", &spec).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn a_policy_whose_rules_fail_keeps_its_protection_and_deny() {
    let spec: PolicySpec = serde_yaml::from_str(
        "whenNoRuleMatches: Deny\nprotectedGroups: [ops-admins]\nrules: [{id: bad, requesters: {users: [x]}, commonName: {regex: '('}}]",
    )
    .unwrap();
    assert!(Policy::compile("p", &spec).is_err());
    let fallback = Policy::fallback("p", &spec).unwrap();
    assert!(fallback.rules().is_empty());
    assert!(fallback.is_protected_group("ops-admins"));
    let other = policy(
        "rules: [{id: a, requesters: {users: ['*']}, commonName: {glob: '*'}, groups: {allowed: ['*']}}]",
    );
    let merged = Policy::merge([other, fallback]);
    assert_eq!(
        decide(&facts("x", &[], "x", &["ops-admins"]), &merged).reason,
        Reason::ProtectedGroup
    );
    assert_eq!(merged.no_match_action(), NoMatchAction::Deny);
    let broken: PolicySpec = serde_yaml::from_str("protectedGroups: ['']").unwrap();
    assert!(Policy::fallback("p", &broken).is_err());
}

#[test]
fn renewals_are_bound_to_the_ledger_and_chains_end() {
    let p = policy(
        r#"
rules:
  - id: self-renew
    requesters: {groups: [system:authenticated]}
    groups: {fromRequester: true}
    renewal: {maxChainAge: 90d}
"#,
    );
    assert!(p.needs_ledger());
    let day = 86_400;
    let now = 1_000 * day;
    let current = CredentialFacts {
        known: true,
        serial: "0a".into(),
        user: "jane".into(),
        groups: vec!["dev".into(), "ops".into()],
        revoked: None,
        not_after_unix: now + day,
        chain_started_unix: now - 10 * day,
    };
    let mut f = facts("jane", &["dev", "ops"], "jane", &["dev"]);
    f.now_unix = now;
    f.credential = Some(current.clone());
    let d = decide(&f, &p);
    assert_eq!(d.outcome, Outcome::Approve, "{d:#?}");
    assert_eq!(
        d.chain_started_unix,
        Some(now - 10 * day),
        "the chain goes on"
    );
    let cases: Vec<(Option<CredentialFacts>, Reason, &str)> = vec![
        (None, Reason::CredentialUnknown, "did not authenticate"),
        (
            Some(CredentialFacts {
                known: false,
                ..current.clone()
            }),
            Reason::CredentialUnknown,
            "not in the ledger",
        ),
        (
            Some(CredentialFacts {
                revoked: Some("stolen".into()),
                ..current.clone()
            }),
            Reason::CredentialRevoked,
            "stolen",
        ),
        (
            Some(CredentialFacts {
                not_after_unix: now - 1,
                ..current.clone()
            }),
            Reason::CredentialUnknown,
            "expired",
        ),
        (
            Some(CredentialFacts {
                chain_started_unix: now - 91 * day,
                ..current.clone()
            }),
            Reason::RenewalChainTooOld,
            "maxChainAge",
        ),
        (
            Some(CredentialFacts {
                user: "bob".into(),
                ..current.clone()
            }),
            Reason::CommonNameNotAllowed,
            "same user",
        ),
        (
            Some(CredentialFacts {
                groups: vec!["ops".into()],
                ..current.clone()
            }),
            Reason::GroupNotAllowed,
            "same or fewer groups",
        ),
    ];
    for (credential, reason, needle) in cases {
        let mut f = f.clone();
        f.credential = credential;
        assert_decision(&decide(&f, &p), Outcome::Deny, reason, needle);
    }
    let spec: PolicySpec = serde_yaml::from_str(
        "rules: [{id: r, requesters: {users: [x]}, renewal: {maxChainAge: forever}}]",
    )
    .unwrap();
    assert!(
        Policy::compile("p", &spec)
            .unwrap_err()
            .to_string()
            .contains("renewal.maxChainAge")
    );
}

#[test]
fn cel_conditions_constrain_rules_and_name_what_failed() {
    let p = policy(
        r#"
rules:
  - id: teams
    requesters: {groups: [developers]}
    groups: {allowed: ["team-*"]}
    conditions:
      - "size(request.groups) <= 3"
      - "request.groups.all(g, g.startsWith('team-'))"
      - "request.groups.all(g, g in requester.groups)"
"#,
    );
    let ok = facts(
        "jane",
        &["developers", "team-a", "team-b"],
        "jane",
        &["team-a", "team-b"],
    );
    let d = decide(&ok, &p);
    assert_eq!(d.outcome, Outcome::Approve, "{d:#?}");
    assert!(d.message.contains("conditions"), "{}", d.message);
    let not_member = facts(
        "jane",
        &["developers", "team-a"],
        "jane",
        &["team-a", "team-b"],
    );
    assert_decision(
        &decide(&not_member, &p),
        Outcome::Deny,
        Reason::ConditionNotMet,
        "conditions[2]",
    );
    let too_many = facts(
        "jane",
        &["developers", "team-a", "team-b", "team-c", "team-d"],
        "jane",
        &["team-a", "team-b", "team-c", "team-d"],
    );
    assert_decision(
        &decide(&too_many, &p),
        Outcome::Deny,
        Reason::ConditionNotMet,
        "conditions[0]",
    );
    // A condition that errors (a missing field) fails closed.
    let broken =
        policy("rules: [{id: b, requesters: {users: [jane]}, conditions: ['request.nope == 1']}]");
    assert_decision(
        &decide(&facts("jane", &[], "jane", &[]), &broken),
        Outcome::Deny,
        Reason::ConditionNotMet,
        "did not evaluate to true",
    );
    // Non-boolean: not true.
    let number = policy("rules: [{id: n, requesters: {users: [jane]}, conditions: ['1 + 1']}]");
    assert_decision(
        &decide(&facts("jane", &[], "jane", &[]), &number),
        Outcome::Deny,
        Reason::ConditionNotMet,
        "not a boolean",
    );
    // The requester's ServiceAccount, signer name and key are there too.
    let sa = policy(
        "rules: [{id: s, requesters: {serviceAccounts: [ci/*]}, commonName: {glob: '*'}, conditions: [\"requester.serviceAccount.namespace == 'ci' && signerName == 'kcert.dev/client' && request.key.type == 'ecdsa-p256'\"]}]",
    );
    assert_eq!(
        decide(
            &facts("system:serviceaccount:ci:runner", &[], "runner", &[]),
            &sa
        )
        .outcome,
        Outcome::Approve
    );
    // Compile errors are the policy's, naming the rule and the condition.
    for (bad, needle) in [
        ("conditions: ['size(']", "conditions[0]"),
        (
            "conditions: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q']",
            "at most 16",
        ),
    ] {
        let spec: PolicySpec = serde_yaml::from_str(&format!(
            "rules: [{{id: r, requesters: {{users: [x]}}, {bad}}}]"
        ))
        .unwrap();
        let err = Policy::compile("p", &spec).unwrap_err().to_string();
        assert!(err.contains("rule 'r'") && err.contains(needle), "{err}");
    }
}

#[test]
fn conditions_that_could_hang_or_fill_memory_are_refused_with_the_rule_named() {
    let nested = crate::cel_budget::tests::nested_all(7);
    assert!(nested.len() < 400, "{} bytes", nested.len());
    let bombs = [
        nested.as_str(),
        "request.groups.map(a, request.groups.map(b, request.groups.map(c, request.groups.map(d, a + b + c + d)))).size() > 0",
        "request.commonName.matches(requester.groups[0])",
    ];
    for bomb in bombs {
        let spec: PolicySpec = serde_yaml::from_str(&format!(
            "rules: [{{id: costly, requesters: {{users: [jane]}}, conditions: [{bomb:?}]}}]"
        ))
        .unwrap();
        let err = Policy::compile("p", &spec).unwrap_err().to_string();
        assert!(
            err.contains("rule 'costly'") && err.contains("conditions[0]"),
            "{bomb}: {err}"
        );
    }
    // Sixteen conditions each within the budget, in many rules, are refused together.
    let heavy = "request.groups.all(g, requester.groups.exists(h, h == g))";
    let rules: Vec<String> = (0..64)
        .map(|i| {
            format!(
                "{{id: r{i}, requesters: {{users: [jane]}}, conditions: [{}]}}",
                vec![format!("{heavy:?}"); 4].join(", ")
            )
        })
        .collect();
    let spec: PolicySpec = serde_yaml::from_str(&format!("rules: [{}]", rules.join(", "))).unwrap();
    let err = Policy::compile("p", &spec).unwrap_err().to_string();
    assert!(err.contains("together"), "{err}");
}
