//! kcert-controller against the real API server: approval by rule, denial with reasons,
//! signing, lifetimes, other signers left alone, restarts, and live policy reloads.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Event;
use kcert_controller::events::EventLevel;
use kcert_controller::{CaSource, DECISION_ANNOTATION, PolicySource, Settings};
use kcert_pki::CertificateInfo;
use kcert_policy::PolicySpec;
use kcert_testbed::kubeconfig::{Credentials, render};
use kcert_testbed::{TestCluster, client_from_kubeconfig};
use kcert_tests::*;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use std::time::{Duration, SystemTime};

const SECOND: Duration = Duration::from_secs(1);

fn spec(yaml: &str) -> PolicySpec {
    serde_yaml::from_str(yaml).unwrap()
}

/// The worked example: developers get certificates for themselves in dev.
fn developers_policy(signer: &str) -> PolicySpec {
    spec(&format!(
        r#"
rules:
  - id: developers-self
    signerNames: ["{signer}"]
    requesters: {{groups: [developers]}}
    commonName: {{self: true}}
    groups: {{allowed: [dev]}}
    maxDuration: 2h
"#
    ))
}

struct Setup {
    cluster: &'static TestCluster,
    controller: RunningController,
    admin: Api<CertificateSigningRequest>,
}

async fn setup(prefix: &str, policy: impl FnOnce(&str) -> PolicySpec, max: Duration) -> Setup {
    setup_with(prefix, policy, max, EventLevel::default()).await
}

async fn setup_with(
    prefix: &str,
    policy: impl FnOnce(&str) -> PolicySpec,
    max: Duration,
    events: EventLevel,
) -> Setup {
    let cluster = TestCluster::shared().await;
    allow_everyone_to_request(cluster).await;
    let signer = format!("kcert.dev/{}", cluster.unique_name(prefix));
    let admin_client = cluster.admin_client().await.unwrap();
    let controller = RunningController::start_with(
        admin_client.clone(),
        Settings {
            signer_names: vec![signer.clone()],
            policy: PolicySource::Static(policy(&signer)),
            ca: Some(CaSource::Files {
                cert: cluster.ca_cert_path(),
                key: cluster.ca_key_path(),
            }),
            max_duration: max,
            events,
            ..Settings::default()
        },
    );
    Setup {
        cluster,
        controller,
        admin: Api::all(admin_client),
    }
}

impl Setup {
    fn signer(&self) -> &str {
        &self.controller.signer
    }

    /// Create `csr` as `requester` in `groups`.
    async fn create_as(
        &self,
        requester: &str,
        groups: &[&str],
        csr: &CertificateSigningRequest,
    ) -> String {
        let client = self.cluster.user_client(requester, groups).await.unwrap();
        Api::<CertificateSigningRequest>::all(client)
            .create(&PostParams::default(), csr)
            .await
            .unwrap()
            .name_any()
    }

    /// Events are published off the reconcile path: wait until `reasons` are all there.
    async fn events_with(&self, name: &str, reasons: &[&str]) -> Vec<(String, String)> {
        eventually(
            &format!("Events {reasons:?} on {name}"),
            10 * SECOND,
            || async {
                let events = self.events(name).await;
                let all = reasons.iter().all(|r| events.iter().any(|(e, _)| e == r));
                if all { Ok(events) } else { Err(events) }
            },
        )
        .await
    }

    async fn events(&self, name: &str) -> Vec<(String, String)> {
        let client = self.cluster.admin_client().await.unwrap();
        let events: Api<Event> = Api::namespaced(client, "default");
        let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
        events
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }
}

#[tokio::test]
async fn an_allowed_request_is_approved_signed_and_authenticates_as_jane_in_dev() {
    let s = setup_with(
        "approve",
        developers_policy,
        Duration::from_secs(86_400),
        EventLevel::All,
    )
    .await;
    let name = s.cluster.unique_name("jane");
    let (csr, key_pem) = csr_with_key(&name, s.signer(), "jane", &["dev"], None);
    s.create_as("jane", &["developers"], &csr).await;
    let done = wait_for(&s.admin, &name, 20 * SECOND, "issued", issued).await;
    let conds = conditions(&done);
    assert_eq!(conds.len(), 1, "{conds:?}");
    assert_eq!(
        (conds[0].0.as_str(), conds[0].1.as_str()),
        ("Approved", "AutoApproved")
    );
    assert!(
        conds[0].2.contains("rule 'developers-self'"),
        "{}",
        conds[0].2
    );
    let provenance: serde_json::Value =
        serde_json::from_str(done.annotations().get(DECISION_ANNOTATION).unwrap()).unwrap();
    assert_eq!(provenance["rule"], "developers-self");
    assert_eq!(provenance["policyVersion"], "static");

    let cert_pem = String::from_utf8(done.status.unwrap().certificate.unwrap().0).unwrap();
    let info = CertificateInfo::from_pem(cert_pem.as_bytes()).unwrap();
    assert_eq!(info.subject.organizations, ["dev"]);
    // The rule caps at 2 h; nothing was asked, so 2 h it is.
    let life = info
        .not_after_time()
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs();
    assert!((7100..=7200).contains(&life), "{life}");

    let yaml = render(
        s.cluster.server(),
        s.cluster.ca_pem(),
        "jane",
        &Credentials::ClientCertificate {
            cert_pem: &cert_pem,
            key_pem: &key_pem,
        },
    );
    let jane = client_from_kubeconfig(&yaml).await.unwrap();
    let review = Api::<SelfSubjectReview>::all(jane)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.unwrap().user_info.unwrap();
    assert_eq!(user.username.as_deref(), Some("jane"));
    assert!(user.groups.unwrap().contains(&"dev".to_string()));

    let events = s.events_with(&name, &["AutoApproved", "Issued"]).await;
    assert!(
        events.iter().any(|(r, _)| r == "AutoApproved"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Issued" && m.contains("serial")),
        "{events:?}"
    );
}

#[tokio::test]
async fn forbidden_requests_are_denied_with_specific_reasons() {
    let s = setup("deny", developers_policy, Duration::from_secs(86_400)).await;
    let mut cases = Vec::new();
    // system:masters: admission guards only kubernetes.io/kube-apiserver-client, so this CSR is
    // created, and the policy must deny it.
    let n = s.cluster.unique_name("masters");
    s.create_as(
        "jane",
        &["developers"],
        &csr_object(&n, s.signer(), "jane", &["dev", "system:masters"], None),
    )
    .await;
    cases.push((n, "ProtectedGroup", "system:masters"));
    let n = s.cluster.unique_name("not-self");
    s.create_as(
        "jane",
        &["developers"],
        &csr_object(&n, s.signer(), "bob", &["dev"], None),
    )
    .await;
    cases.push((
        n,
        "CommonNameNotAllowed",
        "must equal the requester's user name \"jane\"",
    ));
    let n = s.cluster.unique_name("ops");
    s.create_as(
        "jane",
        &["developers"],
        &csr_object(&n, s.signer(), "jane", &["ops"], None),
    )
    .await;
    cases.push((n, "GroupNotAllowed", "\"ops\""));
    let n = s.cluster.unique_name("server-auth");
    let mut csr = csr_object(&n, s.signer(), "jane", &["dev"], None);
    csr.spec.usages = Some(vec![
        "digital signature".into(),
        "client auth".into(),
        "server auth".into(),
    ]);
    s.create_as("jane", &["developers"], &csr).await;
    cases.push((
        n,
        "UsageNotAllowed",
        "invalid usage for client certificate: server auth",
    ));
    // A request whose signature does not match its key is refused by the API server itself.
    let n = s.cluster.unique_name("forged");
    let client = s
        .cluster
        .user_client("jane", &["developers"])
        .await
        .unwrap();
    let refused = Api::<CertificateSigningRequest>::all(client)
        .create(
            &PostParams::default(),
            &csr_from_pem(&n, s.signer(), forged_request(), None),
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("verification failure"),
        "{refused}"
    );
    // One the API server accepts but kcert must not: an RSA-1024 key, made by openssl.
    let n = s.cluster.unique_name("weak");
    s.create_as(
        "jane",
        &["developers"],
        &csr_from_pem(&n, s.signer(), openssl_rsa1024_request(), None),
    )
    .await;
    cases.push((n, "InvalidRequest", "RSA key of 1024 bits is too weak"));

    for (name, reason, needle) in cases {
        let done = wait_for(&s.admin, &name, 20 * SECOND, "decided", decided).await;
        let conds = conditions(&done);
        assert_eq!(conds.len(), 1, "{name}: {conds:?}");
        assert_eq!(
            (conds[0].0.as_str(), conds[0].1.as_str()),
            ("Denied", reason),
            "{name}"
        );
        assert!(
            conds[0].2.contains(needle),
            "{name}: {needle:?} not in {}",
            conds[0].2
        );
        assert!(!issued(&done), "{name} must not be signed");
    }
}

fn openssl_rsa1024_request() -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-subj",
            "/CN=jane/O=dev",
        ])
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A CSR for jane/dev whose public key was swapped for another: well-formed, signature broken.
fn forged_request() -> Vec<u8> {
    use kcert_pki::{CsrSubject, KeyType, PrivateKey, build_csr};
    let subject = CsrSubject::new("jane", ["dev"]).unwrap();
    let a = build_csr(
        &PrivateKey::generate(KeyType::EcdsaP256).unwrap(),
        &subject,
        &Default::default(),
    )
    .unwrap();
    let b = build_csr(
        &PrivateKey::generate(KeyType::EcdsaP256).unwrap(),
        &subject,
        &Default::default(),
    )
    .unwrap();
    let der = |p: &str| {
        kcert_pki::pem::single_block(p.as_bytes(), "CERTIFICATE REQUEST")
            .unwrap()
            .der
            .to_vec()
    };
    let (a, b) = (der(&a), der(&b));
    // Same subject and key type: the SPKI is the 91 bytes starting at the P-256 SPKI header.
    let header = [0x30, 0x59, 0x30, 0x13];
    let pa = a.windows(4).position(|w| w == header).unwrap();
    let pb = b.windows(4).position(|w| w == header).unwrap();
    let mut forged = a.clone();
    forged[pa..pa + 91].copy_from_slice(&b[pb..pb + 91]);
    kcert_pki::pem::encode("CERTIFICATE REQUEST", &forged).into_bytes()
}

#[tokio::test]
async fn no_matching_rule_leaves_the_csr_pending_with_an_event() {
    let s = setup("ignore", developers_policy, Duration::from_secs(86_400)).await;
    let name = s.cluster.unique_name("mallory");
    s.create_as(
        "mallory",
        &["contractors"],
        &csr_object(&name, s.signer(), "mallory", &["dev"], None),
    )
    .await;
    let msg = eventually("a NoMatchingRule Event", 20 * SECOND, || async {
        let events = s.events(&name).await;
        match events.iter().find(|(r, _)| r == "NoMatchingRule") {
            Some((_, msg)) => Ok(msg.clone()),
            None => Err(events),
        }
    })
    .await;
    assert!(
        msg.contains("left for a human") && msg.contains("mallory"),
        "{msg}"
    );
    let csr = s.admin.get(&name).await.unwrap();
    assert!(!decided(&csr) && !issued(&csr), "{:?}", csr.status);
}

#[tokio::test]
async fn lifetimes_follow_the_request_capped_by_rule_and_signer() {
    let s = setup(
        "lifetime",
        |signer| {
            spec(&format!(
                r#"
rules:
  - id: capped
    signerNames: ["{signer}"]
    requesters: {{groups: [developers]}}
    groups: {{allowed: [dev]}}
    maxDuration: 3h
  - id: uncapped
    signerNames: ["{signer}"]
    requesters: {{groups: [admins]}}
    commonName: {{glob: "*"}}
"#
            ))
        },
        Duration::from_secs(4 * 3600),
    )
    .await;
    // (requester, group, expirationSeconds, expected lifetime from now in seconds)
    let cases = [
        ("jane", "developers", Some(3600), 3600),
        // Below 8 h the 5-minute backdate is not taken off the end (as kube-controller-manager).
        ("jane", "developers", Some(86_400), 3 * 3600),
        ("root-ish", "admins", Some(86_400), 4 * 3600),
        ("root-ish", "admins", None, 4 * 3600),
        ("jane", "developers", Some(600), 600),
    ];
    let mut names = Vec::new();
    for (user, group, exp, _) in cases {
        let name = s.cluster.unique_name("life");
        let groups: &[&str] = if group == "developers" { &["dev"] } else { &[] };
        s.create_as(
            user,
            &[group],
            &csr_object(&name, s.signer(), user, groups, exp),
        )
        .await;
        names.push(name);
    }
    for (name, (_, _, exp, expected)) in names.iter().zip(cases) {
        let done = wait_for(&s.admin, name, 20 * SECOND, "issued", issued).await;
        let cert = CertificateInfo::from_pem(&done.status.unwrap().certificate.unwrap().0).unwrap();
        let life = cert
            .not_after_time()
            .duration_since(SystemTime::now())
            .unwrap()
            .as_secs() as i64;
        assert!(
            (expected - life).abs() <= 60,
            "asked {exp:?}: lifetime {life}s, expected about {expected}s"
        );
    }
}

#[tokio::test]
async fn other_signers_csrs_are_never_touched_and_bad_usages_fail_at_signing() {
    let s = setup("foreign", developers_policy, Duration::from_secs(86_400)).await;
    let foreign = s.cluster.unique_name("foreign");
    s.create_as(
        "jane",
        &["developers"],
        &csr_object(&foreign, "example.com/someone-else", "jane", &["dev"], None),
    )
    .await;
    // A human approves a server-auth request on a signer kcert signs for but does not approve
    // (so its approver cannot deny it first): the signer refuses it.
    let signer_only = format!("kcert.dev/{}", s.cluster.unique_name("signer-only"));
    let _signer = RunningController::start_with(
        s.cluster.admin_client().await.unwrap(),
        Settings {
            signer_names: vec![signer_only.clone()],
            approver: false,
            ca: Some(CaSource::Files {
                cert: s.cluster.ca_cert_path(),
                key: s.cluster.ca_key_path(),
            }),
            ..Settings::default()
        },
    );
    let manual = s.cluster.unique_name("manual");
    let mut csr = csr_object(&manual, &signer_only, "web", &[], None);
    csr.spec.usages = Some(vec!["digital signature".into(), "server auth".into()]);
    s.admin.create(&PostParams::default(), &csr).await.unwrap();
    let approve = serde_json::json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "KubectlApprove", "message": "approved by a human"
    }]}});
    s.admin
        .patch_approval(&manual, &PatchParams::default(), &Patch::Merge(&approve))
        .await
        .unwrap();
    let failed = wait_for(&s.admin, &manual, 20 * SECOND, "failed", |c| {
        conditions(c).iter().any(|x| x.0 == "Failed")
    })
    .await;
    let f = conditions(&failed)
        .into_iter()
        .find(|x| x.0 == "Failed")
        .unwrap();
    assert_eq!(f.1, "SignerValidationFailure");
    assert_eq!(f.2, "invalid usage for client certificate: server auth");
    assert!(!issued(&failed));
    // Our own traffic is done; the foreign CSR still has no condition, annotation or certificate.
    let own = s.cluster.unique_name("own");
    s.create_as(
        "jane",
        &["developers"],
        &csr_object(&own, s.signer(), "jane", &["dev"], None),
    )
    .await;
    wait_for(&s.admin, &own, 20 * SECOND, "issued", issued).await;
    let untouched = s.admin.get(&foreign).await.unwrap();
    assert!(conditions(&untouched).is_empty() && !issued(&untouched));
    assert!(!untouched.annotations().contains_key(DECISION_ANNOTATION));
    assert!(s.events(&foreign).await.is_empty());
}

#[tokio::test]
async fn a_controller_killed_half_way_through_200_csrs_decides_and_issues_each_once() {
    let cluster = TestCluster::shared().await;
    let admin_client = cluster.admin_client().await.unwrap();
    let signer = format!("kcert.dev/{}", cluster.unique_name("restart"));
    let policy = spec(&format!(
        r#"
rules:
  - id: load
    signerNames: ["{signer}"]
    requesters: {{users: [kcert-testbed-admin]}}
    commonName: {{glob: "load-*"}}
    groups: {{allowed: [load]}}
"#
    ));
    let admin: Api<CertificateSigningRequest> = Api::all(admin_client.clone());
    let prefix = cluster.unique_name("load");
    let names: Vec<String> = (0..200).map(|i| format!("{prefix}-{i}")).collect();
    let creates = names.iter().map(|n| {
        let admin = admin.clone();
        let csr = csr_object(n, &signer, &format!("load-{n}"), &["load"], None);
        async move { admin.create(&PostParams::default(), &csr).await.unwrap() }
    });
    futures::future::join_all(creates).await;

    let start = || {
        RunningController::start(
            cluster,
            admin_client.clone(),
            &signer,
            PolicySource::Static(policy.clone()),
            Duration::from_secs(3600),
        )
    };
    let first = start();
    let lp = ListParams::default().fields(&format!("spec.signerName={signer}"));
    eventually(
        "60 issued before the kill",
        Duration::from_secs(60),
        || async {
            let n = admin
                .list(&lp)
                .await
                .unwrap()
                .items
                .iter()
                .filter(|c| issued(c))
                .count();
            if n >= 60 { Ok(()) } else { Err(n) }
        },
    )
    .await;
    first.kill();
    let _second = start();
    let all = eventually("all 200 issued", Duration::from_secs(90), || async {
        let all = admin.list(&lp).await.unwrap().items;
        if all.len() == 200 && all.iter().all(issued) {
            Ok(all)
        } else {
            Err(all.iter().filter(|c| issued(c)).count())
        }
    })
    .await;
    for csr in &all {
        let conds = conditions(csr);
        assert_eq!(conds.len(), 1, "{}: {conds:?}", csr.name_any());
        assert_eq!(conds[0].0, "Approved");
        let cert = certificate(csr);
        assert_eq!(cert.subject.organizations, ["load"]);
    }
}

#[tokio::test]
async fn a_policy_file_is_reloaded_live_and_pending_csrs_are_re_evaluated() {
    let cluster = TestCluster::shared().await;
    allow_everyone_to_request(cluster).await;
    let signer = format!("kcert.dev/{}", cluster.unique_name("file"));
    let dir = tempfile_dir();
    let path = dir.join("policy.yaml");
    std::fs::write(&path, "rules: []\n").unwrap();
    let admin_client = cluster.admin_client().await.unwrap();
    let _controller = RunningController::start(
        cluster,
        admin_client.clone(),
        &signer,
        PolicySource::File(path.clone()),
        Duration::from_secs(3600),
    );
    let admin: Api<CertificateSigningRequest> = Api::all(admin_client);
    let name = cluster.unique_name("file-jane");
    let jane = cluster.user_client("jane", &["developers"]).await.unwrap();
    Api::<CertificateSigningRequest>::all(jane)
        .create(
            &PostParams::default(),
            &csr_object(&name, &signer, "jane", &["dev"], None),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !decided(&admin.get(&name).await.unwrap()),
        "no rule yet: must stay pending"
    );
    // A broken file is refused and the previous policy kept.
    std::fs::write(&path, "rules: [{id: x}]\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!decided(&admin.get(&name).await.unwrap()));
    let text = format!(
        "apiVersion: kcert.dev/v1alpha1\nkind: ApprovalPolicy\nmetadata: {{name: from-file}}\nspec:\n  rules:\n  - id: developers-self\n    signerNames: [\"{signer}\"]\n    requesters: {{groups: [developers]}}\n    groups: {{allowed: [dev]}}\n"
    );
    std::fs::write(&path, text).unwrap();
    let done = wait_for(&admin, &name, 20 * SECOND, "issued", issued).await;
    let provenance: serde_json::Value =
        serde_json::from_str(done.annotations().get(DECISION_ANNOTATION).unwrap()).unwrap();
    assert_eq!(provenance["policy"], "from-file");
    assert!(
        provenance["policyVersion"]
            .as_str()
            .unwrap()
            .starts_with("file:"),
        "{provenance}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kcert-e2e-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn approval_policy_objects_get_a_status_and_are_reloaded_live() {
    use kcert_controller::crd::{ApprovalPolicy, ApprovalPolicySpec};
    let cluster = TestCluster::shared().await;
    allow_everyone_to_request(cluster).await;
    install_crds(cluster).await;
    let admin_client = cluster.admin_client().await.unwrap();
    let signer = format!("kcert.dev/{}", cluster.unique_name("crd"));
    let policies: Api<ApprovalPolicy> = Api::all(admin_client.clone());
    let good_name = cluster.unique_name("onboarding");
    let bad_name = cluster.unique_name("broken");
    let rule = |groups: &str| {
        serde_yaml::from_str::<ApprovalPolicySpec>(&format!(
            "rules: [{{id: developers-self, signerNames: [\"{signer}\"], requesters: {{groups: [developers]}}, groups: {{allowed: [{groups}]}}}}]"
        ))
        .unwrap()
    };
    policies
        .create(
            &PostParams::default(),
            &ApprovalPolicy::new(&good_name, rule("dev")),
        )
        .await
        .unwrap();
    let broken =
        serde_yaml::from_str::<ApprovalPolicySpec>("rules: [{id: nobody, requesters: {}}]")
            .unwrap();
    policies
        .create(
            &PostParams::default(),
            &ApprovalPolicy::new(&bad_name, broken),
        )
        .await
        .unwrap();

    let _controller = RunningController::start(
        cluster,
        admin_client.clone(),
        &signer,
        PolicySource::Crd,
        Duration::from_secs(3600),
    );
    let status_of = |name: String| {
        let policies = policies.clone();
        async move {
            eventually(
                &format!("{name} gets a status"),
                Duration::from_secs(20),
                || async { policies.get(&name).await.unwrap().status.ok_or(()) },
            )
            .await
        }
    };
    let good = status_of(good_name.clone()).await;
    assert!(good.accepted, "{good:?}");
    assert_eq!((good.rules, good.observed_generation), (1, Some(1)));
    let bad = status_of(bad_name.clone()).await;
    assert!(!bad.accepted);
    assert!(
        bad.message.contains("requesters names nobody"),
        "{}",
        bad.message
    );

    let admin: Api<CertificateSigningRequest> = Api::all(admin_client);
    let jane = cluster.user_client("jane", &["developers"]).await.unwrap();
    let jane_csrs: Api<CertificateSigningRequest> = Api::all(jane);
    let first = cluster.unique_name("crd-dev");
    jane_csrs
        .create(
            &PostParams::default(),
            &csr_object(&first, &signer, "jane", &["dev"], None),
        )
        .await
        .unwrap();
    let done = wait_for(&admin, &first, 20 * SECOND, "issued", issued).await;
    let provenance: serde_json::Value =
        serde_json::from_str(done.annotations().get(DECISION_ANNOTATION).unwrap()).unwrap();
    assert_eq!(provenance["policy"], good_name.as_str());
    assert!(
        provenance["policyVersion"]
            .as_str()
            .unwrap()
            .contains(&format!("{good_name}@1")),
        "{provenance}"
    );

    // Change the rule live: ops instead of dev. A pending ops request is then approved.
    let second = cluster.unique_name("crd-ops");
    jane_csrs
        .create(
            &PostParams::default(),
            &csr_object(&second, &signer, "jane", &["ops"], None),
        )
        .await
        .unwrap();
    let denied = wait_for(&admin, &second, 20 * SECOND, "decided", decided).await;
    assert_eq!(conditions(&denied)[0].1, "GroupNotAllowed");
    let patch = serde_json::json!({"spec": rule("ops")});
    policies
        .patch(&good_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(
        "the status of generation 2",
        Duration::from_secs(20),
        || async {
            let status = status_of(good_name.clone()).await;
            if status.observed_generation == Some(2) {
                Ok(())
            } else {
                Err(status)
            }
        },
    )
    .await;
    let third = cluster.unique_name("crd-ops-again");
    jane_csrs
        .create(
            &PostParams::default(),
            &csr_object(&third, &signer, "jane", &["ops"], None),
        )
        .await
        .unwrap();
    let done = wait_for(&admin, &third, 20 * SECOND, "issued", issued).await;
    assert_eq!(conditions(&done)[0].0, "Approved");
    // Clean up cluster-scoped objects other tests would see.
    for n in [good_name, bad_name] {
        let _ = policies.delete(&n, &Default::default()).await;
    }
}

#[tokio::test]
async fn the_ca_can_come_from_a_secret_and_the_built_in_client_signer_can_be_served() {
    use k8s_openapi::api::core::v1::Secret;
    use kcert_controller::{CaSource, Settings};
    let cluster = TestCluster::shared().await;
    let ns = cluster.namespace("ca-secret").await.unwrap();
    let admin_client = cluster.admin_client().await.unwrap();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kcert-ca"},
        "type": "kubernetes.io/tls",
        "stringData": {
            "tls.crt": std::fs::read_to_string(cluster.ca_cert_path()).unwrap(),
            "tls.key": std::fs::read_to_string(cluster.ca_key_path()).unwrap(),
        }
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin_client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    // No kube-controller-manager runs here, so kcert may serve the built-in client signer.
    let signer = "kubernetes.io/kube-apiserver-client";
    let policy = spec(&format!(
        "rules: [{{id: onboard, signerNames: [\"{signer}\"], requesters: {{users: [kcert-testbed-admin]}}, commonName: {{glob: 'secret-ca-*'}}, groups: {{allowed: [dev]}}}}]"
    ));
    let settings = Settings {
        signer_names: vec![signer.to_string()],
        policy: PolicySource::Static(policy),
        ca: Some(CaSource::Secret {
            namespace: ns.clone(),
            name: "kcert-ca".into(),
        }),
        ..Settings::default()
    };
    let _controller = RunningController::start_with(admin_client.clone(), settings);
    let admin: Api<CertificateSigningRequest> = Api::all(admin_client);
    let name = cluster.unique_name("secret-ca");
    let (csr, _) = csr_with_key(
        &name,
        signer,
        &format!("secret-ca-{name}"),
        &["dev"],
        Some(3600),
    );
    admin.create(&PostParams::default(), &csr).await.unwrap();
    let done = wait_for(&admin, &name, 20 * SECOND, "issued", issued).await;
    let cert = CertificateInfo::from_pem(&done.status.unwrap().certificate.unwrap().0).unwrap();
    assert_eq!(cert.authority_key_id, cluster.ca().info().subject_key_id);
}
