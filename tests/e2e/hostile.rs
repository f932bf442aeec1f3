//! A hostile corpus through the real API server and kcert-controller: every CSR's expected
//! outcome asserted, zero wrongful approvals or signatures, and the controller still serving.

use der::asn1::OctetString;
use der::{Encode, Tag};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_controller::PolicySource;
use kcert_pki::oids as oid;
use kcert_pki::{Extension, KeyType, PrivateKey, build_csr_raw, raw_name_der};
use kcert_testbed::TestCluster;
use kcert_tests::{
    RunningController, allow_everyone_to_request, certificate, conditions, csr_from_pem, issued,
    wait_for,
};
use kube::Api;
use kube::api::PostParams;
use std::time::Duration;

/// What must happen to a request.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    Approved,
    Denied(&'static str),
    /// The API server refuses it at create (validation or admission).
    RejectedAtCreate,
    /// Refused at create, or denied as invalid: either way never signed.
    RejectedOrInvalid,
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    usages: Vec<&'static str>,
    expiration: Option<i32>,
    expect: Expect,
}

fn pem(der: &[u8]) -> Vec<u8> {
    kcert_pki::pem::encode("CERTIFICATE REQUEST", der).into_bytes()
}

fn der_of(pem_text: &str) -> Vec<u8> {
    kcert_pki::pem::single_block(pem_text.as_bytes(), "CERTIFICATE REQUEST")
        .unwrap()
        .der
        .to_vec()
}

fn key() -> PrivateKey {
    PrivateKey::generate(KeyType::EcdsaP256).unwrap()
}

/// A CSR with raw subject attributes (type, string tag, bytes), one RDN each.
fn raw(attrs: &[(der::oid::ObjectIdentifier, Tag, &[u8])], exts: Vec<Extension>) -> Vec<u8> {
    build_csr_raw(&key(), &raw_name_der(attrs).unwrap(), exts)
        .unwrap()
        .into_bytes()
}

fn utf8(cn: &str, os: &[&str]) -> Vec<u8> {
    let mut attrs: Vec<(der::oid::ObjectIdentifier, Tag, &[u8])> =
        vec![(oid::COMMON_NAME, Tag::Utf8String, cn.as_bytes())];
    for o in os {
        attrs.push((oid::ORGANIZATION, Tag::Utf8String, o.as_bytes()));
    }
    raw(&attrs, vec![])
}

fn ext(id: der::oid::ObjectIdentifier, critical: bool, value: &[u8]) -> Extension {
    Extension {
        extn_id: id,
        critical,
        extn_value: OctetString::new(value.to_vec()).unwrap(),
    }
}

fn bmp(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
}

/// A CSR made by openssl with a key made by openssl (`genkey` args, `KEY` replaced).
fn openssl_csr(genkey: &[&str], subj: &str) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!(
        "kcert-hostile-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("k.pem");
    let args: Vec<String> = genkey
        .iter()
        .map(|a| {
            if *a == "KEY" {
                key.display().to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    let out = std::process::Command::new("openssl")
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(&key)
        .args(["-subj", subj])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    out.stdout
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn corpus() -> Vec<Case> {
    use Expect::*;
    let me = "mallory";
    let client = vec!["digital signature", "key encipherment", "client auth"];
    let case = |name, request, expect| Case {
        name,
        request,
        usages: client.clone(),
        expiration: None,
        expect,
    };
    let mut v = vec![
        case(
            "masters",
            utf8(me, &["system:masters"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "masters-second",
            utf8(me, &["dev", "system:masters"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "masters-first",
            utf8(me, &["system:masters", "dev"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "masters-twice",
            utf8(me, &["system:masters", "system:masters"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "masters-trailing-space",
            utf8(me, &["system:masters "]),
            Denied("ProtectedGroup"),
        ),
        case(
            "masters-leading-space",
            utf8(me, &[" system:masters"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "masters-case",
            utf8(me, &["System:Masters"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "masters-upper",
            utf8(me, &["SYSTEM:MASTERS"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "nodes",
            utf8(me, &["system:nodes"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "serviceaccounts-sub",
            utf8(me, &["system:serviceaccounts:kube-system"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "kube-star",
            utf8(me, &["system:kube-proxy"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "authenticated",
            utf8(me, &["system:authenticated"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "bootstrappers",
            utf8(me, &["system:bootstrappers:kubeadm:default-node-token"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "cn-system-admin",
            utf8("system:admin", &["dev"]),
            Denied("ProtectedUser"),
        ),
        case(
            "cn-kcm-case",
            utf8("System:Kube-Controller-Manager", &[]),
            Denied("ProtectedUser"),
        ),
        case(
            "cn-nul",
            utf8("mallory\0", &["dev"]),
            Denied("UnprintableName"),
        ),
        case(
            "cn-escape",
            utf8("mal\u{1b}lory", &["dev"]),
            Denied("UnprintableName"),
        ),
        case(
            "cn-trailing-space",
            utf8("mallory ", &["dev"]),
            Denied("UntrimmedName"),
        ),
        case(
            "cn-other-user",
            utf8("bob", &["dev"]),
            Denied("CommonNameNotAllowed"),
        ),
        case(
            "cn-64k",
            utf8(&"m".repeat(65_536), &["dev"]),
            Denied("RequestTooLarge"),
        ),
        case(
            "two-cns",
            raw(
                &[
                    (oid::COMMON_NAME, Tag::Utf8String, b"mallory"),
                    (oid::COMMON_NAME, Tag::Utf8String, b"admin"),
                ],
                vec![],
            ),
            Denied("AmbiguousCommonName"),
        ),
        case(
            "no-cn",
            raw(&[(oid::ORGANIZATION, Tag::Utf8String, b"dev")], vec![]),
            Denied("MissingCommonName"),
        ),
        case(
            "bmp-masters",
            raw(
                &[
                    (oid::COMMON_NAME, Tag::Utf8String, b"mallory"),
                    (oid::ORGANIZATION, Tag::BmpString, &bmp("system:masters")),
                ],
                vec![],
            ),
            Denied("ProtectedGroup"),
        ),
        case(
            "t61-masters",
            raw(
                &[
                    (oid::COMMON_NAME, Tag::Utf8String, b"mallory"),
                    (oid::ORGANIZATION, Tag::TeletexString, b"system:masters"),
                ],
                vec![],
            ),
            Denied("ProtectedGroup"),
        ),
        case(
            "ia5-masters",
            raw(
                &[
                    (oid::COMMON_NAME, Tag::Utf8String, b"mallory"),
                    (oid::ORGANIZATION, Tag::Ia5String, b"system:masters"),
                ],
                vec![],
            ),
            Denied("ProtectedGroup"),
        ),
        case(
            "printable-dev",
            raw(
                &[
                    (oid::COMMON_NAME, Tag::PrintableString, b"mallory"),
                    (oid::ORGANIZATION, Tag::PrintableString, b"dev"),
                ],
                vec![],
            ),
            Approved,
        ),
        case(
            "bmp-dev",
            raw(
                &[
                    (oid::COMMON_NAME, Tag::BmpString, &bmp("mallory")),
                    (oid::ORGANIZATION, Tag::BmpString, &bmp("dev")),
                ],
                vec![],
            ),
            Approved,
        ),
        case(
            "group-not-mine",
            utf8(me, &["admins"]),
            Denied("GroupNotAllowed"),
        ),
        case("dev-twice", utf8(me, &["dev", "dev"]), Approved),
        case(
            "san-dns",
            raw(
                &[(oid::COMMON_NAME, Tag::Utf8String, b"mallory")],
                vec![ext(
                    oid::SUBJECT_ALT_NAME,
                    false,
                    &[
                        0x30, 0x0d, 0x82, 0x0b, b'e', b'v', b'i', b'l', b'.', b'e', b'x', b'a',
                        b'm', b'p', b'l',
                    ],
                )],
            ),
            Denied("SansNotAllowed"),
        ),
        case(
            "ca-true-requested",
            raw(
                &[(oid::COMMON_NAME, Tag::Utf8String, b"mallory")],
                vec![ext(
                    oid::BASIC_CONSTRAINTS,
                    true,
                    &[0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x03],
                )],
            ),
            Approved,
        ),
        case(
            "keycertsign-requested",
            raw(
                &[(oid::COMMON_NAME, Tag::Utf8String, b"mallory")],
                vec![ext(oid::KEY_USAGE, true, &[0x03, 0x02, 0x01, 0x06])],
            ),
            Approved,
        ),
        case(
            "unknown-critical",
            raw(
                &[(oid::COMMON_NAME, Tag::Utf8String, b"mallory")],
                vec![ext(
                    der::oid::ObjectIdentifier::new_unwrap("1.2.3.4.5.6"),
                    true,
                    &[0x05, 0x00],
                )],
            ),
            Approved,
        ),
        case(
            "rsa-1024",
            openssl_csr(&["genrsa", "-out", "KEY", "1024"], "/CN=mallory/O=dev"),
            Denied("InvalidRequest"),
        ),
        case(
            "rsa-exponent-3",
            openssl_csr(
                &["genrsa", "-3", "-out", "KEY", "2048"],
                "/CN=mallory/O=dev",
            ),
            Denied("InvalidRequest"),
        ),
        case(
            "secp256k1",
            openssl_csr(
                &[
                    "ecparam",
                    "-name",
                    "secp256k1",
                    "-genkey",
                    "-noout",
                    "-out",
                    "KEY",
                ],
                "/CN=mallory/O=dev",
            ),
            RejectedOrInvalid,
        ),
        case(
            "p521",
            openssl_csr(
                &[
                    "ecparam",
                    "-name",
                    "secp521r1",
                    "-genkey",
                    "-noout",
                    "-out",
                    "KEY",
                ],
                "/CN=mallory/O=dev",
            ),
            Approved,
        ),
        case(
            "ed25519",
            openssl_csr(
                &["genpkey", "-algorithm", "ed25519", "-out", "KEY"],
                "/CN=mallory/O=dev",
            ),
            Approved,
        ),
        case(
            "rsa-2048-openssl",
            openssl_csr(&["genrsa", "-out", "KEY", "2048"], "/CN=mallory/O=dev"),
            Approved,
        ),
    ];
    // Multi-valued RDN: CN=mallory+O=system:masters and CN=mallory+O=dev.
    for (name, o, expect) in [
        ("mv-masters", "system:masters", Denied("ProtectedGroup")),
        ("mv-dev", "dev", Approved),
    ] {
        let rdns = multi_valued_name(o);
        v.push(case(
            name,
            build_csr_raw(&key(), &rdns, vec![]).unwrap().into_bytes(),
            expect,
        ));
    }
    // Thousands of distinct O values.
    let many: Vec<String> = (0..2000).map(|i| format!("g{i}")).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    v.push(case(
        "2000-groups",
        utf8(me, &many_refs),
        Denied("TooManyGroups"),
    ));
    // Structure.
    let good = String::from_utf8(utf8(me, &["dev"])).unwrap();
    let d = der_of(&good);
    v.push(case(
        "truncated-der",
        pem(&d[..d.len() - 9]),
        RejectedAtCreate,
    ));
    let mut trailing = d.clone();
    trailing.extend_from_slice(b"garbage");
    v.push(case("trailing-garbage", pem(&trailing), RejectedAtCreate));
    let mut tampered = d.clone();
    let at = tampered.windows(3).position(|w| w == b"dev").unwrap();
    tampered[at] = b'D';
    v.push(case("bad-signature", pem(&tampered), RejectedAtCreate));
    let two_blocks = format!(
        "{good}{}",
        String::from_utf8(utf8(me, &["system:masters"])).unwrap()
    );
    v.push(case(
        "two-pem-blocks",
        two_blocks.into_bytes(),
        RejectedOrInvalid,
    ));
    v.push(case(
        "text-around-pem",
        format!("hello\n{good}bye\n").into_bytes(),
        Approved,
    ));
    // Spec fields.
    let mut c = case(
        "expiration-599",
        good.clone().into_bytes(),
        RejectedAtCreate,
    );
    c.expiration = Some(599);
    v.push(c);
    let mut c = case("expiration-600", good.clone().into_bytes(), Approved);
    c.expiration = Some(600);
    v.push(c);
    let mut c = case("expiration-max", good.clone().into_bytes(), Approved);
    c.expiration = Some(i32::MAX);
    v.push(c);
    let mut c = case(
        "usage-server-auth",
        good.clone().into_bytes(),
        Denied("UsageNotAllowed"),
    );
    c.usages = vec!["digital signature", "client auth", "server auth"];
    v.push(c);
    let mut c = case(
        "usage-cert-sign",
        good.clone().into_bytes(),
        Denied("UsageNotAllowed"),
    );
    c.usages = vec!["cert sign", "client auth"];
    v.push(c);
    let mut c = case(
        "usage-none-client",
        good.into_bytes(),
        Denied("UsageNotAllowed"),
    );
    c.usages = vec!["digital signature"];
    v.push(c);
    v.extend(identity_integrity_cases());
    v
}

/// Issue 13's classes: what the API server reads but nobody checked, encodings Go reads
/// differently, names that are not names, privileged groups outside `system:`.
fn identity_integrity_cases() -> Vec<Case> {
    use Expect::*;
    let client = vec!["digital signature", "key encipherment", "client auth"];
    let case = |name, request, expect| Case {
        name,
        request,
        usages: client.clone(),
        expiration: None,
        expect,
    };
    let cn = (oid::COMMON_NAME, Tag::Utf8String, &b"mallory"[..]);
    let dev = (oid::ORGANIZATION, Tag::Utf8String, &b"dev"[..]);
    let other = |o: &'static str| der::oid::ObjectIdentifier::new_unwrap(o);
    let mut v = vec![
        // A UID the API server would read as the user's UID.
        case(
            "uid-of-jane",
            raw(
                &[cn, dev, (oid::USER_UID, Tag::Utf8String, b"uid-of-jane")],
                vec![],
            ),
            Denied("UidNotAllowed"),
        ),
        case(
            "uid-printable",
            raw(
                &[cn, (oid::USER_UID, Tag::PrintableString, b"jane")],
                vec![],
            ),
            Denied("UidNotAllowed"),
        ),
        case(
            "uid-twice",
            raw(
                &[
                    cn,
                    (oid::USER_UID, Tag::Utf8String, b"a"),
                    (oid::USER_UID, Tag::Utf8String, b"b"),
                ],
                vec![],
            ),
            Denied("UidNotAllowed"),
        ),
        case(
            "uid-empty",
            raw(&[cn, (oid::USER_UID, Tag::Utf8String, b"")], vec![]),
            Denied("UidNotAllowed"),
        ),
        case(
            "uid-bmp",
            raw(
                &[cn, (oid::USER_UID, Tag::BmpString, &bmp("uid-of-jane"))],
                vec![],
            ),
            Denied("UidNotAllowed"),
        ),
        // Attributes nobody certifies.
        case(
            "ou",
            raw(
                &[cn, dev, (other("2.5.4.11"), Tag::Utf8String, b"ops")],
                vec![],
            ),
            Denied("SubjectNotAllowed"),
        ),
        case(
            "email",
            raw(
                &[
                    cn,
                    (
                        other("1.2.840.113549.1.9.1"),
                        Tag::Ia5String,
                        b"jane@example.com",
                    ),
                ],
                vec![],
            ),
            Denied("SubjectNotAllowed"),
        ),
        case(
            "serial-number",
            raw(
                &[cn, (other("2.5.4.5"), Tag::PrintableString, b"42")],
                vec![],
            ),
            Denied("SubjectNotAllowed"),
        ),
        case(
            "country",
            raw(
                &[(other("2.5.4.6"), Tag::PrintableString, b"US"), cn],
                vec![],
            ),
            Denied("SubjectNotAllowed"),
        ),
        case(
            "unknown-oid",
            raw(
                &[
                    cn,
                    (other("1.3.6.1.4.1.99999.7"), Tag::Utf8String, b"admin"),
                ],
                vec![],
            ),
            Denied("SubjectNotAllowed"),
        ),
        case(
            "near-cn-oid",
            raw(
                &[cn, (other("2.5.4.3.1"), Tag::Utf8String, b"admin")],
                vec![],
            ),
            Denied("SubjectNotAllowed"),
        ),
        // Encodings: T61 is Latin-1 for Go, so UTF-8 bytes in it name someone else.
        case(
            "t61-utf8-bytes",
            raw(
                &[
                    (
                        oid::COMMON_NAME,
                        Tag::TeletexString,
                        "mallory\u{e9}".as_bytes(),
                    ),
                    dev,
                ],
                vec![],
            ),
            Denied("CommonNameNotAllowed"),
        ),
        case(
            "t61-latin1-plain",
            raw(
                &[
                    (oid::COMMON_NAME, Tag::TeletexString, b"mallory"),
                    (oid::ORGANIZATION, Tag::TeletexString, b"dev"),
                ],
                vec![],
            ),
            Approved,
        ),
        case(
            "t61-latin1-masters",
            raw(
                &[
                    cn,
                    (oid::ORGANIZATION, Tag::TeletexString, b"SYSTEM:MASTERS\xa0"),
                ],
                vec![],
            ),
            Denied("ProtectedGroup"),
        ),
        case(
            "bmp-surrogate",
            raw(
                &[
                    (oid::COMMON_NAME, Tag::BmpString, &[0xD8, 0x3D, 0xDE, 0x00]),
                    dev,
                ],
                vec![],
            ),
            RejectedOrInvalid,
        ),
        case(
            "bmp-masters-terminated",
            raw(
                &[
                    cn,
                    (
                        oid::ORGANIZATION,
                        Tag::BmpString,
                        &[bmp("system:masters"), vec![0, 0]].concat(),
                    ),
                ],
                vec![],
            ),
            Denied("ProtectedGroup"),
        ),
        case(
            "cn-as-octets",
            raw(
                &[cn, (oid::COMMON_NAME, Tag::OctetString, b"admin")],
                vec![],
            ),
            RejectedOrInvalid,
        ),
        // Names that are not names.
        case(
            "cn-empty",
            raw(&[(oid::COMMON_NAME, Tag::Utf8String, b""), dev], vec![]),
            Denied("EmptyName"),
        ),
        case(
            "o-empty",
            raw(&[cn, (oid::ORGANIZATION, Tag::Utf8String, b"")], vec![]),
            Denied("EmptyName"),
        ),
        case(
            "cn-newline",
            utf8("mallory\nadmin", &["dev"]),
            Denied("UnprintableName"),
        ),
        case(
            "cn-rlo",
            utf8("mallory\u{202e}", &["dev"]),
            Denied("UnprintableName"),
        ),
        case(
            "cn-zero-width",
            utf8("mal\u{200b}lory", &["dev"]),
            Denied("UnprintableName"),
        ),
        case(
            "cn-csi",
            utf8("mallory\u{9b}2K", &["dev"]),
            Denied("UnprintableName"),
        ),
        case(
            "o-line-separator",
            utf8("mallory", &["dev\u{2028}"]),
            Denied("UnprintableName"),
        ),
        case(
            "cn-nbsp",
            utf8("\u{a0}mallory", &["dev"]),
            Denied("UntrimmedName"),
        ),
        case(
            "o-300-bytes",
            utf8("mallory", &[&"g".repeat(300)]),
            Denied("NameTooLong"),
        ),
        case(
            "o-70kB",
            utf8("mallory", &[&"g".repeat(70_000)]),
            Denied("RequestTooLarge"),
        ),
        // Privileged groups outside system: and reserved system: groups of any name.
        case(
            "kubeadm-cluster-admins",
            utf8("mallory", &["kubeadm:cluster-admins"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "system-monitoring",
            utf8("mallory", &["system:monitoring"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "system-anything",
            utf8("mallory", &["dev", "system:whatever-comes-next"]),
            Denied("ProtectedGroup"),
        ),
        case(
            "rbac-bound-group",
            utf8("mallory", &[RBAC_GROUP]),
            Denied("ProtectedGroup"),
        ),
        case(
            "rbac-bound-user",
            utf8(RBAC_USER, &["dev"]),
            Denied("ProtectedUser"),
        ),
        case(
            "rbac-escalate-group",
            utf8("mallory", &[RBAC_ESCALATE_GROUP]),
            Denied("ProtectedGroup"),
        ),
    ];
    let many: Vec<String> = (0..5000).map(|i| format!("g{i}")).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    v.push(case(
        "5000-groups",
        utf8("mallory", &many_refs),
        Denied("RequestTooLarge"),
    ));
    v.push(case(
        "730kB",
        utf8("mallory", &[&"d".repeat(730_000)]),
        Denied("RequestTooLarge"),
    ));
    v
}

/// A group and a user a ClusterRoleBinding ties to cluster-admin, and a group bound to a role
/// that can escalate, for this corpus only.
const RBAC_GROUP: &str = "hostile-ops-admins";
const RBAC_USER: &str = "hostile-root";
const RBAC_ESCALATE_GROUP: &str = "hostile-escalators";

async fn bind_privileged(cluster: &TestCluster) {
    use k8s_openapi::api::rbac::v1::{
        ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
    };
    let client = cluster.admin_client().await.unwrap();
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client);
    let escalate = ClusterRole {
        metadata: kube::api::ObjectMeta {
            name: Some("hostile-escalate".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["rbac.authorization.k8s.io".into()]),
            resources: Some(vec!["clusterroles".into()]),
            verbs: vec!["escalate".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let _ = roles.create(&PostParams::default(), &escalate).await;
    let subject = |kind: &str, name: &str| Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
        namespace: None,
    };
    for (name, role, subjects) in [
        (
            "hostile-ops-admins",
            "cluster-admin",
            vec![subject("Group", RBAC_GROUP), subject("User", RBAC_USER)],
        ),
        (
            "hostile-escalators",
            "hostile-escalate",
            vec![subject("Group", RBAC_ESCALATE_GROUP)],
        ),
    ] {
        let b = ClusterRoleBinding {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: role.into(),
            },
            subjects: Some(subjects),
        };
        let _ = bindings.create(&PostParams::default(), &b).await;
    }
}

/// SEQUENCE { SET { CN=mallory, O=o } } built by hand: one RDN with two attributes.
fn multi_valued_name(o: &str) -> Vec<u8> {
    use der::asn1::{SetOfVec, Utf8StringRef};
    use x509_cert_attr::*;
    let cn = AttributeTypeAndValue {
        oid: oid::COMMON_NAME,
        value: der::Any::encode_from(&Utf8StringRef::new("mallory").unwrap()).unwrap(),
    };
    let org = AttributeTypeAndValue {
        oid: oid::ORGANIZATION,
        value: der::Any::encode_from(&Utf8StringRef::new(o).unwrap()).unwrap(),
    };
    let mut set = SetOfVec::new();
    set.insert(cn).unwrap();
    set.insert(org).unwrap();
    let rdn = set.to_der().unwrap();
    let mut seq = vec![0x30];
    der::Length::try_from(rdn.len())
        .unwrap()
        .encode_to_vec(&mut seq)
        .unwrap();
    seq.extend_from_slice(&rdn);
    seq
}

mod x509_cert_attr {
    pub use x509_cert::attr::AttributeTypeAndValue;
}

/// Where the CA key of a hostile-corpus run lives.
#[derive(Clone, Copy, Debug)]
enum CaBackend {
    /// The test bed's CA, key in a file (in memory).
    Memory,
    /// A CA whose key is in a SoftHSM2 token (PKCS#11), never read out of it.
    Token,
}

#[tokio::test]
async fn a_hostile_corpus_gets_no_wrongful_approval_and_each_its_reason() {
    hostile_corpus(CaBackend::Memory).await;
}

/// The same corpus, the same expectations, with the CA key in a token: what is decided and what
/// is signed does not depend on where the key lives.
#[tokio::test]
async fn a_hostile_corpus_gets_the_same_answers_with_the_ca_key_in_a_token() {
    hostile_corpus(CaBackend::Token).await;
}

async fn hostile_corpus(backend: CaBackend) {
    let cluster = TestCluster::shared().await;
    allow_everyone_to_request(cluster).await;
    bind_privileged(cluster).await;
    let signer = format!("kcert.dev/{}", cluster.unique_name("hostile"));
    let policy = serde_yaml::from_str(&format!(
        "rules: [{{id: self-dev, signerNames: ['{signer}'], requesters: {{groups: [developers]}}, groups: {{allowed: [dev]}}, maxDuration: 1h}}]"
    ))
    .unwrap();
    let admin = cluster.admin_client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca, source) = match backend {
        CaBackend::Memory => {
            let ca = kcert_pki::CertificateAuthority::load(
                cluster.ca_pem().as_bytes(),
                &std::fs::read(cluster.ca_key_path()).unwrap(),
                std::time::SystemTime::now(),
            )
            .unwrap();
            let source = kcert_controller::CaSource::Files {
                cert: cluster.ca_cert_path(),
                key: cluster.ca_key_path(),
            };
            (ca, source)
        }
        CaBackend::Token => {
            let token = kcert_pkcs11::TokenConfig {
                module: kcert_testbed::softhsm::module(),
                token: kcert_pkcs11::TokenSelector::Label(
                    kcert_testbed::softhsm::process_token().unwrap(),
                ),
                key: kcert_pkcs11::KeySelector::Label("hostile-ca".into()),
                pin: kcert_testbed::softhsm::PIN.to_string().into(),
            };
            let turn = kcert_testbed::softhsm::writing();
            let key = std::sync::Arc::new(
                kcert_pkcs11::TokenKey::generate(token.clone(), kcert_pki::KeyType::EcdsaP256)
                    .unwrap(),
            );
            drop(turn);
            let ca = kcert_pki::CertificateAuthority::create_with_key(
                key,
                "kcert hostile token CA",
                Duration::from_secs(86_400),
                std::time::SystemTime::now(),
                &kcert_pki::SystemRandom,
            )
            .unwrap();
            let cert = dir.path().join("ca.crt");
            std::fs::write(&cert, ca.certificate_pem()).unwrap();
            (
                ca,
                kcert_controller::CaSource::Pkcs11 {
                    cert: Some(cert),
                    token,
                },
            )
        }
    };
    let _controller = RunningController::start_with(
        admin.clone(),
        kcert_controller::Settings {
            signer_names: vec![signer.clone()],
            policy: PolicySource::Static(policy),
            ca: Some(source),
            max_duration: Duration::from_secs(86_400),
            ..kcert_controller::Settings::default()
        },
    );
    let mallory: Api<CertificateSigningRequest> = Api::all(
        cluster
            .user_client("mallory", &["developers"])
            .await
            .unwrap(),
    );
    let all: Api<CertificateSigningRequest> = Api::all(admin);
    let cases = corpus();
    assert!(cases.len() >= 85, "{} cases", cases.len());
    let mut created = Vec::new();
    for c in &cases {
        let name = cluster.unique_name(&format!("h-{}", c.name));
        let mut obj = csr_from_pem(&name, &signer, c.request.clone(), c.expiration);
        obj.spec.usages = Some(c.usages.iter().map(|u| u.to_string()).collect());
        match mallory.create(&PostParams::default(), &obj).await {
            Ok(_) => {
                assert_ne!(
                    c.expect,
                    Expect::RejectedAtCreate,
                    "{}: the API server accepted it",
                    c.name
                );
                created.push((c, name));
            }
            Err(kube::Error::Api(s)) if (400..500).contains(&s.code) => {
                assert!(
                    matches!(
                        c.expect,
                        Expect::RejectedAtCreate | Expect::RejectedOrInvalid
                    ),
                    "{}: refused at create ({}), expected {:?}",
                    c.name,
                    s.message,
                    c.expect
                );
            }
            Err(e) => panic!("{}: {e}", c.name),
        }
    }
    for (c, name) in &created {
        let csr = wait_for(&all, name, Duration::from_secs(60), "settled", |csr| {
            conditions(csr)
                .iter()
                .any(|x| x.0 == "Denied" || x.0 == "Failed")
                || issued(csr)
        })
        .await;
        let conds = conditions(&csr);
        match &c.expect {
            Expect::Approved => {
                assert_eq!(conds[0].0, "Approved", "{}: {conds:?}", c.name);
                let cert = certificate(&csr);
                let pem = &csr.status.as_ref().unwrap().certificate.as_ref().unwrap().0;
                ca.verify_issued(&kcert_pki::pem::parse_blocks(pem).unwrap()[0].der)
                    .unwrap_or_else(|e| panic!("{} ({backend:?}): {e}", c.name));
                assert!(!cert.is_ca, "{}: a CA certificate was issued", c.name);
                assert!(!cert.usages.iter().any(|u| u == "cert sign"), "{}", c.name);
                assert!(cert.sans.is_empty(), "{}", c.name);
                let life = cert
                    .not_after_time()
                    .duration_since(cert.not_before_time())
                    .unwrap()
                    .as_secs();
                assert!(
                    life <= 3600 + 300,
                    "{}: lifetime {life}s beyond the rule's 1 h",
                    c.name
                );
                for g in &cert.subject.organizations {
                    assert!(
                        !g.to_lowercase().trim().starts_with("system:"),
                        "{}: issued with {g}",
                        c.name
                    );
                }
                // Built from what was approved: CN and each O once, nothing else, no UID.
                let names: Vec<&str> = cert
                    .subject
                    .attributes
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect();
                assert!(
                    names.iter().all(|n| *n == "CN" || *n == "O"),
                    "{}: certificate subject {}",
                    c.name,
                    cert.subject
                );
                assert_eq!(
                    cert.subject.common_name.as_deref(),
                    Some("mallory"),
                    "{}",
                    c.name
                );
                let mut deduped = cert.subject.organizations.clone();
                deduped.dedup();
                assert_eq!(deduped, cert.subject.organizations, "{}", c.name);
                assert!(cert.subject.uids.is_empty(), "{}", c.name);
            }
            Expect::Denied(reason) => {
                assert_eq!(
                    (conds[0].0.as_str(), conds[0].1.as_str()),
                    ("Denied", *reason),
                    "{}: {conds:?}",
                    c.name
                );
                assert!(!issued(&csr), "{}", c.name);
            }
            Expect::RejectedOrInvalid => {
                assert_eq!(
                    (conds[0].0.as_str(), conds[0].1.as_str()),
                    ("Denied", "InvalidRequest"),
                    "{}: {conds:?}",
                    c.name
                );
                assert!(!issued(&csr), "{}", c.name);
            }
            Expect::RejectedAtCreate => unreachable!(),
        }
    }
    // Still serving: an ordinary request goes through.
    let name = cluster.unique_name("h-after");
    mallory
        .create(
            &PostParams::default(),
            &csr_from_pem(&name, &signer, utf8("mallory", &["dev"]), None),
        )
        .await
        .unwrap();
    kcert_tests::wait_for(&all, &name, Duration::from_secs(20), "issued", issued).await;
}
