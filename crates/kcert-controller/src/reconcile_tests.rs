//! The fast tier: reconcile paths against a mocked API (exact requests asserted), for what a
//! real API server cannot be made to do on demand. Behaviour is proven on the real server in
//! tests/e2e; these pin the edge cases in seconds, without Go.

use crate::fake_api::{Exchange, FakeApi};
use crate::policy_source::PolicySnapshot;
use crate::replace::{Subresource, Written, replace_with_retry};
use crate::{CaStore, Context, PolicyStore, Settings, conditions, events, metrics, rbac};
use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestStatus,
};
use kcert_pki::{CertificateAuthority, CsrSubject, KeyType, PrivateKey, SystemRandom, build_csr};
use kube::Api;
use kube::runtime::events::{Recorder, Reporter};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const SIGNER: &str = "kcert.dev/client";

fn csr(name: &str, uid: &str, groups: &[&str]) -> CertificateSigningRequest {
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let pem = build_csr(
        &key,
        &CsrSubject::new("mallory", groups.iter().copied()).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let mut c = CertificateSigningRequest::default();
    c.metadata.name = Some(name.into());
    c.metadata.uid = Some(uid.into());
    c.metadata.resource_version = Some("1".into());
    c.spec.request = ByteString(pem.into_bytes());
    c.spec.signer_name = SIGNER.into();
    c.spec.username = Some("mallory".into());
    c.spec.groups = Some(vec!["developers".into(), "system:authenticated".into()]);
    c.spec.usages = Some(vec![
        "digital signature".into(),
        "key encipherment".into(),
        "client auth".into(),
    ]);
    c
}

fn approved(c: CertificateSigningRequest) -> CertificateSigningRequest {
    decided(c, conditions::APPROVED, "KubectlApprove", "by hand")
}

/// `c` with one decision condition (as `kubectl certificate approve|deny` writes it).
fn decided(
    mut c: CertificateSigningRequest,
    kind: &str,
    reason: &str,
    message: &str,
) -> CertificateSigningRequest {
    c.status = Some(CertificateSigningRequestStatus {
        conditions: Some(vec![conditions::condition(kind, reason, message)]),
        ..Default::default()
    });
    c
}

fn json(c: &CertificateSigningRequest) -> serde_json::Value {
    serde_json::to_value(c).unwrap()
}

const PATH: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests/x";

fn context(api: &FakeApi, signer: bool) -> Arc<Context> {
    context_with(api, signer, rbac::RbacIndex::disabled())
}

fn context_with(api: &FakeApi, signer: bool, rbac_index: rbac::RbacIndex) -> Arc<Context> {
    context_serving(api, signer, rbac_index, &[SIGNER])
}

fn context_serving(
    api: &FakeApi,
    signer: bool,
    rbac_index: rbac::RbacIndex,
    signer_names: &[&str],
) -> Arc<Context> {
    let client = api.client();
    let metrics = Arc::new(metrics::Metrics::default());
    let (sink, _publisher) = events::EventSink::new(
        Recorder::new(
            client.clone(),
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        ),
        events::EventLevel::default(),
        metrics.clone(),
    );
    let policy = PolicyStore::default();
    let spec = serde_yaml::from_str(
        "rules: [{id: self-dev, requesters: {groups: [developers]}, groups: {allowed: [dev]}}]",
    )
    .unwrap();
    policy.set(PolicySnapshot {
        policy: Arc::new(kcert_policy::Policy::merge([
            kcert_policy::Policy::compile("test", &spec).unwrap(),
        ])),
        version: "static".into(),
        blocked: None,
    });
    let ca = CaStore::default();
    ca.set(
        CertificateAuthority::create(
            PrivateKey::generate(KeyType::EcdsaP256).unwrap(),
            "test-ca",
            // Longer than the signer's cap, so a certificate can outlive what kcert grants.
            Duration::from_secs(400 * 86_400),
            SystemTime::now(),
            &SystemRandom,
        )
        .unwrap(),
    );
    Arc::new(Context {
        client,
        settings: Settings {
            signer,
            signer_names: signer_names.iter().map(|s| s.to_string()).collect(),
            ..Settings::default()
        },
        policy,
        ca,
        events: sink,
        metrics,
        ledger: None,
        rbac: rbac_index,
        ledger_index: crate::ledger::LedgerView::default(),
        nodes: crate::node_view::NodeView::default(),
        signing: Mutex::new(HashSet::new()),
        evaluated: Mutex::new(HashSet::new()),
    })
}

fn mark_pending(_: &mut CertificateSigningRequest) -> bool {
    true
}

#[tokio::test]
async fn a_conflict_then_another_objects_uid_writes_nothing() {
    let old = csr("x", "uid-1", &["dev"]);
    let new = csr("x", "uid-2", &["system:masters"]);
    let api = FakeApi::new(vec![
        Exchange::conflict(&format!("{PATH}/approval")),
        Exchange::new(Method::GET, PATH, 200, json(&new)),
    ]);
    let csrs: Api<CertificateSigningRequest> = Api::all(api.client());
    let w = replace_with_retry(&csrs, &old, Subresource::Approval, mark_pending)
        .await
        .unwrap();
    assert!(matches!(w, Written::Gone), "{w:?}");
    api.assert_done();
}

#[tokio::test]
async fn a_conflict_on_the_same_object_is_retried_on_its_latest_version() {
    let old = csr("x", "uid-1", &["dev"]);
    let mut newer = old.clone();
    newer.metadata.resource_version = Some("2".into());
    let api = FakeApi::new(vec![
        Exchange::conflict(&format!("{PATH}/status")),
        Exchange::new(Method::GET, PATH, 200, json(&newer)),
        Exchange::new(Method::PUT, &format!("{PATH}/status"), 200, json(&newer)).checking(|sent| {
            assert_eq!(sent["metadata"]["resourceVersion"], "2");
            assert_eq!(sent["metadata"]["uid"], "uid-1");
        }),
    ]);
    let csrs: Api<CertificateSigningRequest> = Api::all(api.client());
    let w = replace_with_retry(&csrs, &old, Subresource::Status, mark_pending)
        .await
        .unwrap();
    assert!(matches!(w, Written::Done(_)), "{w:?}");
    api.assert_done();
}

#[tokio::test]
async fn gone_mid_write_and_refused_for_good_are_told_apart() {
    let c = csr("x", "uid-1", &["dev"]);
    // 404 on the write.
    let api = FakeApi::new(vec![Exchange::refuse(
        &format!("{PATH}/approval"),
        404,
        "NotFound",
        "gone",
    )]);
    let csrs: Api<CertificateSigningRequest> = Api::all(api.client());
    assert!(matches!(
        replace_with_retry(&csrs, &c, Subresource::Approval, mark_pending)
            .await
            .unwrap(),
        Written::Gone
    ));
    api.assert_done();
    // 409, then 404 on the re-read.
    let api = FakeApi::new(vec![
        Exchange::conflict(&format!("{PATH}/approval")),
        Exchange::not_found(PATH),
    ]);
    let csrs: Api<CertificateSigningRequest> = Api::all(api.client());
    assert!(matches!(
        replace_with_retry(&csrs, &c, Subresource::Approval, mark_pending)
            .await
            .unwrap(),
        Written::Gone
    ));
    api.assert_done();
    // 422: permanent, not retried.
    let api = FakeApi::new(vec![Exchange::refuse(
        &format!("{PATH}/status"),
        422,
        "Invalid",
        "status.certificate: Invalid value",
    )]);
    let csrs: Api<CertificateSigningRequest> = Api::all(api.client());
    let e = replace_with_retry(&csrs, &c, Subresource::Status, mark_pending)
        .await
        .unwrap_err();
    assert!(matches!(e, kcert_kube::WriteError::Permanent(..)), "{e}");
    api.assert_done();
    // Nothing to do: no request at all.
    let api = FakeApi::new(vec![]);
    let csrs: Api<CertificateSigningRequest> = Api::all(api.client());
    assert!(matches!(
        replace_with_retry(&csrs, &c, Subresource::Status, |_| false)
            .await
            .unwrap(),
        Written::NothingToDo
    ));
    api.assert_done();
}

#[tokio::test]
async fn the_approver_never_hands_its_decision_to_a_recreated_csr() {
    let old = csr("x", "uid-1", &["dev"]);
    let new = csr("x", "uid-2", &["system:masters"]);
    let api = FakeApi::new(vec![
        Exchange::conflict(&format!("{PATH}/approval")).checking(|sent| {
            assert_eq!(sent["status"]["conditions"][0]["type"], "Approved");
            let p: serde_json::Value = serde_json::from_str(
                sent["metadata"]["annotations"]["kcert.dev/decision"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(p["csrUid"], "uid-1");
        }),
        Exchange::new(Method::GET, PATH, 200, json(&new)),
    ]);
    let ctx = context(&api, true);
    let action = crate::approver::reconcile(Arc::new(old), ctx)
        .await
        .unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    api.assert_done();
}

#[tokio::test]
async fn nothing_is_decided_or_signed_before_the_rbac_bindings_are_read() {
    let api = FakeApi::new(vec![]);
    // Not read yet: the index is empty, not "nobody is privileged".
    let ctx = context_with(&api, true, rbac::RbacIndex::default());
    let action = crate::approver::reconcile(Arc::new(csr("x", "uid-1", &["dev"])), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(2))
    );
    let action = crate::signer::reconcile(Arc::new(approved(csr("x", "uid-1", &["dev"]))), ctx)
        .await
        .unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(2))
    );
    api.assert_done();
}

#[tokio::test]
async fn a_certificate_the_api_server_refuses_for_good_fails_the_csr_once() {
    let c = approved(csr("x", "uid-1", &["dev"]));
    let api = FakeApi::new(vec![
        Exchange::refuse(
            &format!("{PATH}/status"),
            422,
            "Invalid",
            "request entity too large",
        ),
        Exchange::new(Method::PUT, &format!("{PATH}/status"), 200, json(&c)).checking(|sent| {
            let conds = sent["status"]["conditions"].as_array().unwrap();
            let failed = conds.iter().find(|c| c["type"] == "Failed").unwrap();
            assert_eq!(failed["reason"], "SignerValidationFailure");
            assert!(
                failed["message"]
                    .as_str()
                    .unwrap()
                    .contains("refused the certificate")
            );
            assert!(sent["status"]["certificate"].is_null());
        }),
    ]);
    let ctx = context(&api, true);
    let action = crate::signer::reconcile(Arc::new(c.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    api.assert_done();

    // If even the Failed condition is refused for good: logged and left, not retried forever.
    let api = FakeApi::new(vec![
        Exchange::refuse(&format!("{PATH}/status"), 422, "Invalid", "too large"),
        Exchange::refuse(&format!("{PATH}/status"), 422, "Invalid", "still"),
    ]);
    let ctx = context(&api, true);
    let action = crate::signer::reconcile(Arc::new(c), ctx).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    api.assert_done();
}

#[tokio::test]
async fn the_signer_fails_a_human_approved_protected_group_without_signing() {
    let c = approved(csr("x", "uid-1", &["kubeadm:cluster-admins"]));
    let api = FakeApi::new(vec![
        Exchange::new(Method::PUT, &format!("{PATH}/status"), 200, json(&c)).checking(|sent| {
            assert!(sent["status"]["certificate"].is_null());
            let failed = &sent["status"]["conditions"][1];
            assert_eq!(failed["type"], "Failed");
            assert!(
                failed["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("ProtectedGroup: "),
                "{failed}"
            );
        }),
    ]);
    let ctx = context(&api, true);
    crate::signer::reconcile(Arc::new(c), ctx).await.unwrap();
    api.assert_done();
}

/// For any CSR and policy, what the CLI says (`kcert policy test`'s JSON, `kcert list`'s POLICY
/// column) is what the approver writes: the same outcome, reason and message — observed here as
/// the condition the approver PUTs to the (mocked) API, or the absence of any write for Ignore.
mod cli_agrees_with_the_controller {
    use super::*;
    use kcert_pki::{build_csr_raw, raw_name_der};
    use kcert_policy::{Outcome, PolicySpec};
    use proptest::prelude::*;

    fn any_policy() -> impl Strategy<Value = PolicySpec> {
        let rule = (
            "[a-z]{1,5}",
            prop::sample::select(vec![
                "requesters: {users: ['*']}",
                "requesters: {groups: [developers]}",
                "requesters: {users: [mallory]}",
            ]),
            prop::sample::select(vec![
                "",
                ", commonName: {glob: '*'}",
                ", commonName: {regex: 'm[a-z]*'}",
                ", commonName: {exact: bob}",
            ]),
            prop::sample::select(vec![
                "",
                ", groups: {allowed: [dev]}",
                ", groups: {allowed: ['*']}",
                ", groups: {fromRequester: true}",
            ]),
            prop::sample::select(vec![
                "",
                ", usages: [client auth]",
                ", usages: [digital signature, client auth, server auth]",
            ]),
            prop::sample::select(vec!["", ", uid: {self: true}", ", maxDuration: 1h"]),
            prop::sample::select(vec![
                "",
                ", signerNames: [kcert.dev/client]",
                ", signerNames: [other.dev/x]",
            ]),
        )
            .prop_map(|(id, who, cn, groups, usages, extra, signers)| {
                format!("{{id: {id}, {who}{cn}{groups}{usages}{extra}{signers}}}")
            });
        (
            prop::collection::vec(rule, 0..4),
            prop::sample::select(vec!["Ignore", "Deny"]),
            prop::sample::select(vec![
                "",
                "protectedGroups: [ops]\n",
                "subjectLimits: {maxGroups: 2}\n",
            ]),
        )
            .prop_filter_map("unique rule ids", |(rules, no_match, extra)| {
                let yaml = format!(
                    "whenNoRuleMatches: {no_match}\n{extra}rules: [{}]",
                    rules.join(", ")
                );
                let spec: PolicySpec = serde_yaml::from_str(&yaml).ok()?;
                kcert_policy::Policy::compile("p", &spec).ok()?;
                Some(spec)
            })
    }

    fn any_csr() -> impl Strategy<Value = CertificateSigningRequest> {
        let attribute = prop::sample::select(vec![
            (kcert_pki::oids::COMMON_NAME, "mallory"),
            (kcert_pki::oids::COMMON_NAME, "bob"),
            (kcert_pki::oids::COMMON_NAME, "system:admin"),
            (kcert_pki::oids::COMMON_NAME, "mal\u{1b}lory"),
            (kcert_pki::oids::ORGANIZATION, "dev"),
            (kcert_pki::oids::ORGANIZATION, "ops"),
            (kcert_pki::oids::ORGANIZATION, "system:masters"),
            (kcert_pki::oids::ORGANIZATION, "developers"),
            (kcert_pki::oids::USER_UID, "uid-1"),
            (der::oid::ObjectIdentifier::new_unwrap("2.5.4.11"), "ou"),
        ]);
        (
            prop::collection::vec(attribute, 0..5),
            prop::sample::subsequence(
                vec![
                    "digital signature",
                    "key encipherment",
                    "client auth",
                    "server auth",
                    "code signing",
                ],
                0..4,
            ),
            prop::sample::select(vec!["kcert.dev/client", "other.dev/x"]),
            prop::sample::select(vec!["mallory", "bob"]),
            any::<bool>(),
        )
            .prop_map(|(attrs, usages, signer, requester, in_developers)| {
                let raw: Vec<(der::oid::ObjectIdentifier, der::Tag, &[u8])> = attrs
                    .iter()
                    .map(|(o, v)| (*o, der::Tag::Utf8String, v.as_bytes()))
                    .collect();
                let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
                let pem = build_csr_raw(&key, &raw_name_der(&raw).unwrap(), vec![]).unwrap();
                let mut c = csr("x", "uid-1", &[]);
                c.spec.request = ByteString(pem.into_bytes());
                c.spec.signer_name = signer.into();
                c.spec.username = Some(requester.into());
                c.spec.uid = Some("uid-1".into());
                c.spec.groups = Some(
                    in_developers
                        .then(|| "developers".to_string())
                        .into_iter()
                        .chain(["system:authenticated".to_string()])
                        .collect(),
                );
                c.spec.usages = Some(usages.iter().map(|u| u.to_string()).collect());
                c
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn for_any_csr_and_policy(spec in any_policy(), c in any_csr()) {
            let policy = kcert_policy::Policy::merge([kcert_policy::Policy::compile("p", &spec).unwrap()]);
            let privileged = kcert_policy::PrivilegedSubjects::none();
            // What the CLI shows.
            let cli = kcert::commands::policy::decision_json(&crate::facts::verdict(&c, &policy, &privileged, None));
            let column = kcert::commands::admin::policy_column(&c, &policy, &privileged, None).unwrap();
            prop_assert_eq!(&column, &format!("{}:{}", cli["outcome"].as_str().unwrap(), cli["reason"].as_str().unwrap()));
            // What the approver writes.
            let written = Arc::new(Mutex::new(None::<serde_json::Value>));
            let script = if cli["outcome"] == "Ignore" {
                vec![]
            } else {
                let w = written.clone();
                vec![Exchange::new(Method::PUT, &format!("{PATH}/approval"), 200, json(&c))
                    .checking(move |sent| *w.lock().unwrap() = Some(sent.clone()))]
            };
            let api = FakeApi::new(script);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                // A controller serving both signer names the CSRs use (the CLI does not know which
                // names a controller serves; it explains the policy for any).
                let ctx = context_serving(&api, false, rbac::RbacIndex::disabled(), &[SIGNER, "other.dev/x"]);
                ctx.policy.set(PolicySnapshot { policy: Arc::new(policy.clone()), version: "static".into(), blocked: None });
                crate::approver::reconcile(Arc::new(c.clone()), ctx).await.unwrap();
            });
            api.assert_done();
            if let Some(sent) = written.lock().unwrap().clone() {
                let cond = &sent["status"]["conditions"][0];
                let outcome = match cli["outcome"].as_str().unwrap() {
                    "Approve" => "Approved",
                    _ => "Denied",
                };
                prop_assert_eq!(cond["type"].as_str(), Some(outcome));
                prop_assert_eq!(&cond["reason"], &cli["reason"]);
                prop_assert_eq!(&cond["message"], &cli["message"]);
            } else {
                let ignore = format!("{:?}", Outcome::Ignore);
                prop_assert_eq!(cli["outcome"].as_str(), Some(ignore.as_str()));
            }
        }
    }
}

/// An issued CSR and its certificate's hash, signed by `ctx`'s CA.
fn issued_csr(ctx: &Context, uid: &str) -> (CertificateSigningRequest, String) {
    let c = approved(csr("x", uid, &["dev"]));
    let request = crate::facts::parse_request(&c).unwrap();
    let cert = ctx
        .ca
        .get()
        .unwrap()
        .sign(
            &request,
            &kcert_pki::SigningProfile::client(Duration::from_secs(3600)),
            SystemTime::now(),
            &SystemRandom,
        )
        .unwrap();
    let c = with_certificate(c, &cert);
    let info = kcert_pki::CertificateInfo::from_der(&cert.der).unwrap();
    (
        c,
        kcert_kube::crd::normalize_fingerprint(&info.fingerprint_sha256),
    )
}

const PAGES: &str = "/apis/kcert.dev/v1alpha1/ledgerpages";

/// A ledger page as the API server returns it.
fn page_json(name: &str, version: &str, records: &[serde_json::Value]) -> serde_json::Value {
    let records: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    serde_json::json!({"apiVersion": "kcert.dev/v1alpha1", "kind": "LedgerPage",
        "metadata": {"name": name, "resourceVersion": version}, "spec": {"records": records}})
}

/// The records a page write sent, read back.
fn sent_records(sent: &serde_json::Value) -> Vec<serde_json::Value> {
    sent["spec"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| serde_json::from_str(s.as_str().unwrap()).unwrap())
        .collect()
}

fn record_value(serial: &str, fp: &str) -> serde_json::Value {
    serde_json::to_value(kcert_kube::crd::IssuedCertificate {
        serial: serial.into(),
        fingerprint_sha256: fp.into(),
        user: format!("u-{serial}"),
        ..Default::default()
    })
    .unwrap()
}

fn record(serial: &str, fp: &str) -> kcert_kube::crd::IssuedCertificate {
    serde_json::from_value(record_value(serial, fp)).unwrap()
}

/// `ctx` with a ledger reading `view`; the writer's queue is returned.
fn with_ledger(
    ctx: &mut Arc<Context>,
    view: &crate::ledger::LedgerView,
) -> tokio::sync::mpsc::UnboundedReceiver<kcert_kube::crd::IssuedCertificate> {
    let c = Arc::get_mut(ctx).unwrap();
    let (ledger, queue) = crate::ledger::Ledger::new(view.clone(), c.metrics.clone());
    c.ledger = Some(ledger);
    c.ledger_index = view.clone();
    queue
}

#[tokio::test]
async fn an_issued_csr_not_on_record_is_queued_once_then_written_on_a_page() {
    let api = FakeApi::new(vec![]);
    let view = crate::ledger::LedgerView::default();
    let mut ctx = context(&api, true);
    let (c, hash) = issued_csr(&ctx, "uid-1");
    let mut queue = with_ledger(&mut ctx, &view);
    let c = Arc::new(c);
    // The ledger not read yet (a start-up): nothing queued, look again soon.
    let action = crate::signer::reconcile(c.clone(), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(2))
    );
    assert!(queue.try_recv().is_err());
    // Read, and the certificate is not on it (a crash between signing and recording): queued,
    // once, however often the CSR is seen.
    view.set(Default::default());
    for _ in 0..3 {
        let action = crate::signer::reconcile(c.clone(), ctx.clone())
            .await
            .unwrap();
        assert_eq!(
            action,
            kube::runtime::controller::Action::requeue(Duration::from_secs(30))
        );
    }
    let queued = queue.try_recv().unwrap();
    assert!(queue.try_recv().is_err(), "queued twice");
    assert_eq!(queued.user, "mallory");
    assert_eq!(queued.groups, ["dev"]);
    assert_eq!(queued.approved_by, "KubectlApprove");
    assert_eq!(queued.csr_uid, "uid-1");
    assert_eq!(queued.credential_hash(), hash);

    // The writer puts it on a new page.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(queued).unwrap();
    drop(tx);
    let api = FakeApi::new(vec![
        Exchange::new(Method::POST, PAGES, 201, page_json("p1", "1", &[])).checking(|sent| {
            let records = sent_records(sent);
            assert_eq!(records.len(), 1);
            assert_eq!(records[0]["user"], "mallory");
            assert_eq!(records[0]["csrUid"], "uid-1");
            assert_eq!(
                sent["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "kcert"
            );
        }),
    ]);
    crate::ledger::write_pages(
        api.client(),
        ctx.ledger.clone().unwrap(),
        rx,
        crate::ledger::WriterSettings {
            flush_after: Duration::from_millis(1),
            idle_after: Duration::from_millis(1),
        },
    )
    .await;
    api.assert_done();
    // Written: on record from now on, though the view has not caught up.
    let action = crate::signer::reconcile(c, ctx).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
}

/// `c` holding a certificate `ca` signed for `request` under `profile` (anything a holder of a
/// CA key could write onto the CSR).
fn holding(
    c: CertificateSigningRequest,
    ca: &kcert_pki::CertificateAuthority,
    request: &kcert_pki::CertificateRequest,
    subject: &kcert_pki::CsrSubject,
    profile: &kcert_pki::SigningProfile,
) -> CertificateSigningRequest {
    holding_signed_at(c, ca, request, subject, profile, SystemTime::now())
}

/// [`holding`] with the certificate signed as if at `at`.
fn holding_signed_at(
    c: CertificateSigningRequest,
    ca: &kcert_pki::CertificateAuthority,
    request: &kcert_pki::CertificateRequest,
    subject: &kcert_pki::CsrSubject,
    profile: &kcert_pki::SigningProfile,
    at: SystemTime,
) -> CertificateSigningRequest {
    let cert = ca
        .sign_as(request, subject, profile, at, &SystemRandom)
        .unwrap();
    with_certificate(c, &cert)
}

/// `c` holding `cert` in its status.
fn with_certificate(
    mut c: CertificateSigningRequest,
    cert: &kcert_pki::IssuedCertificate,
) -> CertificateSigningRequest {
    c.status.as_mut().unwrap().certificate = Some(ByteString(cert.to_pem().into_bytes()));
    c
}

#[tokio::test]
async fn a_certificate_kcert_did_not_issue_for_its_csr_is_never_recorded_as_kcerts() {
    let api = FakeApi::new(vec![]);
    let view = crate::ledger::LedgerView::default();
    view.set(Default::default());
    let mut ctx = context(&api, true);
    let mut queue = with_ledger(&mut ctx, &view);
    let ca = ctx.ca.get().unwrap();
    let base = approved(csr("x", "uid-f", &["dev"]));
    let request = crate::facts::parse_request(&base).unwrap();
    let own = kcert_pki::CsrSubject::new("mallory", ["dev".to_string()]).unwrap();
    let hour = kcert_pki::SigningProfile::client(Duration::from_secs(3600));
    let other_ca = CertificateAuthority::create(
        PrivateKey::generate(KeyType::EcdsaP256).unwrap(),
        "test-ca",
        Duration::from_secs(86_400),
        SystemTime::now(),
        &SystemRandom,
    )
    .unwrap();
    let other_key = {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let pem = kcert_pki::build_csr(&key, &own, &Default::default()).unwrap();
        kcert_pki::CertificateRequest::from_pem(pem.as_bytes()).unwrap()
    };
    let masters =
        kcert_pki::CsrSubject::new("mallory", ["dev".to_string(), "system:masters".to_string()])
            .unwrap();
    let admin = kcert_pki::CsrSubject::new("admin", ["dev".to_string()]).unwrap();
    let mut server = kcert_pki::SigningProfile::client(Duration::from_secs(3600));
    server.usages = vec![
        kcert_pki::Usage::DigitalSignature,
        kcert_pki::Usage::ServerAuth,
    ];
    let forever = kcert_pki::SigningProfile::client(Duration::from_secs(10 * 365 * 86_400));
    // Within the lifetime, but for a year from now: a credential that outlives what kcert
    // would issue today.
    let next_year = holding_signed_at(
        base.clone(),
        &ca,
        &request,
        &own,
        &hour,
        SystemTime::now() + Duration::from_secs(365 * 86_400),
    );
    // The CSR was created now; a certificate for its key from a day before cannot be the one
    // kcert issued for it (an old certificate replayed onto a new CSR).
    let created_now = |mut c: CertificateSigningRequest| {
        c.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        c
    };
    let replayed = holding_signed_at(
        created_now(base.clone()),
        &ca,
        &request,
        &own,
        &hour,
        SystemTime::now() - Duration::from_secs(86_400),
    );
    // Fewer usages than the request's (Go reads a missing EKU as any).
    let mut signing_only = kcert_pki::SigningProfile::client(Duration::from_secs(3600));
    signing_only.usages = vec![kcert_pki::Usage::DigitalSignature];
    let no_eku = holding(base.clone(), &ca, &request, &own, &signing_only);
    let cases = [
        (
            "a namesake CA's",
            holding(base.clone(), &other_ca, &request, &own, &hour),
            "signature",
        ),
        (
            "another key",
            holding(base.clone(), &ca, &other_key, &own, &hour),
            "another key",
        ),
        (
            "an added group",
            holding(base.clone(), &ca, &request, &masters, &hour),
            "subject",
        ),
        (
            "another user",
            holding(base.clone(), &ca, &request, &admin, &hour),
            "subject",
        ),
        (
            "server usages",
            holding(base.clone(), &ca, &request, &own, &server),
            "usage",
        ),
        (
            "ten years",
            holding(base.clone(), &ca, &request, &own, &forever),
            "longer",
        ),
        ("next year's", next_year, "validity starts"),
        ("yesterday's, replayed", replayed, "validity starts"),
        ("no client auth", no_eku, "usages"),
    ];
    let privileged = ctx.rbac.get().unwrap();
    for (case, c, why) in cases {
        let refused = crate::signer::vouch(&c, &ctx, std::slice::from_ref(&ca), &privileged)
            .err()
            .unwrap_or_else(|| panic!("{case}: vouched for"));
        assert!(refused.contains(why), "{case}: {refused}");
        let action = crate::signer::reconcile(Arc::new(c), ctx.clone())
            .await
            .unwrap();
        assert_eq!(
            action,
            kube::runtime::controller::Action::await_change(),
            "{case}"
        );
        assert!(queue.try_recv().is_err(), "{case}: recorded");
    }
    assert!(
        ctx.metrics
            .render()
            .contains("kcert_ledger_refused_foreign_total 9"),
        "{}",
        ctx.metrics.render()
    );
    assert!(
        !ctx.metrics
            .render()
            .contains("kcert_ledger_repaired_total 1")
    );
    // The certificate kcert itself would issue for this CSR, signed as soon as it was created,
    // is recorded (the control).
    let ours = holding(created_now(base.clone()), &ca, &request, &own, &hour);
    crate::signer::vouch(&ours, &ctx, std::slice::from_ref(&ca), &privileged).unwrap();
    crate::signer::reconcile(Arc::new(ours), ctx.clone())
        .await
        .unwrap();
    assert_eq!(queue.try_recv().unwrap().user, "mallory");
    api.assert_done();
}

#[tokio::test]
async fn a_certificate_the_ledger_shows_is_not_queued_and_costs_no_request() {
    let api = FakeApi::new(vec![]);
    let mut ctx = context(&api, true);
    let (c, hash) = issued_csr(&ctx, "uid-2");
    let view = crate::ledger::LedgerView::default();
    view.set(kcert_kube::ledger::LedgerIndex::from_records(&[record(
        "01", &hash,
    )]));
    let mut queue = with_ledger(&mut ctx, &view);
    let action = crate::signer::reconcile(Arc::new(c), ctx).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert!(queue.try_recv().is_err());
    api.assert_done();
}

#[tokio::test]
async fn the_writer_appends_to_its_page_rereads_it_after_a_conflict_and_keeps_a_revocation() {
    let view = crate::ledger::LedgerView::default();
    view.set(Default::default());
    let api = FakeApi::new(vec![]);
    let ctx = context(&api, true);
    let (ledger, _) = crate::ledger::Ledger::new(view, ctx.metrics.clone());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut revoked = record_value("01", "aa01");
    revoked["revocation"] = serde_json::json!({"revokedAt": "2026-12-01T00:00:00Z", "revokedBy": "admin", "reason": "r"});
    let api = FakeApi::new(vec![
        // First batch: a new page.
        Exchange::new(
            Method::POST,
            PAGES,
            201,
            page_json("p1", "1", &[record_value("01", "aa01")]),
        ),
        // Second: appended to it, conditioned on version 1 ...
        Exchange::new(
            Method::PUT,
            &format!("{PAGES}/p1"),
            409,
            crate::fake_api::status(409, "Conflict", "modified"),
        )
        .checking(|sent| {
            assert_eq!(sent["metadata"]["resourceVersion"], "1");
            assert_eq!(sent_records(sent).len(), 2);
        }),
        // ... which `kcert revoke` changed meanwhile: read again, append to that.
        Exchange::new(
            Method::GET,
            &format!("{PAGES}/p1"),
            200,
            page_json("p1", "2", &[revoked.clone()]),
        ),
        Exchange::new(
            Method::PUT,
            &format!("{PAGES}/p1"),
            200,
            page_json("p1", "3", &[revoked, record_value("02", "aa02")]),
        )
        .checking(|sent| {
            assert_eq!(sent["metadata"]["resourceVersion"], "2");
            let records = sent_records(sent);
            assert_eq!(records.len(), 2);
            assert_eq!(
                records[0]["revocation"]["revokedBy"], "admin",
                "the revocation is kept"
            );
            assert_eq!(records[1]["serial"], "02");
        }),
    ]);
    let writer = tokio::spawn(crate::ledger::write_pages(
        api.client(),
        ledger,
        rx,
        crate::ledger::WriterSettings {
            flush_after: Duration::from_millis(1),
            idle_after: Duration::from_millis(1),
        },
    ));
    tx.send(record("01", "aa01")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.send(record("02", "aa02")).unwrap();
    drop(tx);
    writer.await.unwrap();
    api.assert_done();
}

#[tokio::test]
async fn a_record_the_api_server_refuses_does_not_hold_up_the_others() {
    let view = crate::ledger::LedgerView::default();
    view.set(Default::default());
    let api = FakeApi::new(vec![]);
    let ctx = context(&api, true);
    let (ledger, _) = crate::ledger::Ledger::new(view, ctx.metrics.clone());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let invalid = || crate::fake_api::status(422, "Invalid", "spec.records[1]: invalid");
    let api = FakeApi::new(vec![
        Exchange::new(Method::POST, PAGES, 422, invalid()),
        // One by one: the good one lands, the bad one is refused alone.
        Exchange::new(Method::POST, PAGES, 201, page_json("p1", "1", &[])).checking(|sent| {
            assert_eq!(sent_records(sent)[0]["serial"], "01");
        }),
        Exchange::new(Method::POST, PAGES, 422, invalid()),
    ]);
    tx.send(record("01", "aa01")).unwrap();
    tx.send(record("02", "aa02")).unwrap();
    drop(tx);
    crate::ledger::write_pages(
        api.client(),
        ledger,
        rx,
        crate::ledger::WriterSettings {
            flush_after: Duration::from_millis(1),
            idle_after: Duration::from_millis(1),
        },
    )
    .await;
    api.assert_done();
    assert!(
        ctx.metrics
            .render()
            .contains("kcert_ledger_write_failures_total 1")
    );
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kcert-system/leases/kcert-controller";

fn lease(holder: &str, renewed_secs_ago: i64) -> serde_json::Value {
    let renewed = k8s_openapi::jiff::Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(
            renewed_secs_ago,
        ))
        .unwrap();
    serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "kcert-controller", "namespace": "kcert-system", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}
    })
}

#[tokio::test]
async fn leadership_is_lost_when_another_replica_takes_the_lease() {
    let api = FakeApi::new(vec![
        // No lease yet: create it.
        Exchange::new(
            Method::GET,
            LEASE,
            404,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        ),
        Exchange::new(
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/kcert-system/leases",
            201,
            lease("me", 0),
        ),
        // First renewal: still ours.
        Exchange::new(Method::GET, LEASE, 200, lease("me", 0)),
        Exchange::new(Method::PUT, LEASE, 200, lease("me", 0)),
        // Then someone else holds it, freshly renewed: lost.
        Exchange::new(Method::GET, LEASE, 200, lease("other", 0)),
    ]);
    let mut le = crate::leader::LeaderElection::new("kcert-system", "kcert-controller", "me");
    le.retry_period = Duration::from_millis(20);
    let held = crate::leader::Leadership::acquire(api.client(), le).await;
    assert!(!held.is_lost());
    tokio::time::timeout(Duration::from_secs(5), held.lost())
        .await
        .expect("lost in time");
    assert!(held.is_lost());
    api.assert_done();
}

#[tokio::test]
async fn leadership_is_given_up_before_an_unrenewable_lease_expires() {
    let mut script = vec![
        Exchange::new(Method::GET, LEASE, 200, lease("me", 1)),
        Exchange::new(Method::PUT, LEASE, 200, lease("me", 0)),
    ];
    // Every renewal fails (the API server is unreachable): give up before the 1 s lease ends.
    for _ in 0..9 {
        script.push(Exchange::new(Method::GET, LEASE, 503, serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "ServiceUnavailable", "code": 503, "message": "unavailable"})));
    }
    let api = FakeApi::new(script);
    let mut le = crate::leader::LeaderElection::new("kcert-system", "kcert-controller", "me");
    le.retry_period = Duration::from_millis(200);
    le.lease_duration = Duration::from_secs(1);
    let held = crate::leader::Leadership::acquire(api.client(), le).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), held.lost())
        .await
        .expect("given up");
    // Renewed at t=0; gives up while last renewal + retry period < lease duration still.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(held.is_lost());
}

#[tokio::test]
async fn an_oversized_request_is_denied_before_it_is_parsed() {
    let mut c = csr("x", "uid-1", &["dev"]);
    // Not even a CSR: parsing would say InvalidRequest; the size decides first.
    c.spec.request = ByteString(vec![b'A'; 70_000]);
    let api = FakeApi::new(vec![
        Exchange::new(Method::PUT, &format!("{PATH}/approval"), 200, json(&c)).checking(|sent| {
            let cond = &sent["status"]["conditions"][0];
            assert_eq!(cond["type"], "Denied");
            assert_eq!(cond["reason"], "RequestTooLarge", "{cond}");
        }),
    ]);
    let ctx = context(&api, false);
    crate::approver::reconcile(Arc::new(c), ctx).await.unwrap();
    api.assert_done();
}

// The node approver: kubelet CSRs decided by the fixed node rules.

const SAR_PATH: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

fn kubelet_client_csr(requester: &str, groups: &[&str], node: &str) -> CertificateSigningRequest {
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let pem = build_csr(
        &key,
        &CsrSubject::new(format!("system:node:{node}"), ["system:nodes"]).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let mut c = CertificateSigningRequest::default();
    c.metadata.name = Some("x".into());
    c.metadata.uid = Some("uid-1".into());
    c.metadata.resource_version = Some("1".into());
    c.spec.request = ByteString(pem.into_bytes());
    c.spec.signer_name = kcert_policy::nodes::KUBELET_CLIENT_SIGNER.into();
    c.spec.username = Some(requester.into());
    c.spec.groups = Some(groups.iter().map(|g| g.to_string()).collect());
    c.spec.usages = Some(vec!["digital signature".into(), "client auth".into()]);
    c
}

fn node_context(api: &FakeApi, listed: bool) -> Arc<Context> {
    let mut ctx = Arc::try_unwrap(context(api, false))
        .ok()
        .expect("a fresh context");
    ctx.settings.nodes = kcert_policy::nodes::NodeRules {
        serving: true,
        client: true,
        ..Default::default()
    };
    if listed {
        let mut n = k8s_openapi::api::core::v1::Node::default();
        n.metadata.name = Some("other".into());
        ctx.nodes.set_cluster_reserved((Vec::new(), Vec::new()));
        ctx.nodes.replace(vec![n]);
    }
    // The ledger read, no node revoked.
    ctx.ledger_index
        .set(kcert_kube::ledger::LedgerIndex::default());
    Arc::new(ctx)
}

/// A ledger page holding node `node`'s revocation, cleared or not.
fn node_revocation_page(node: &str, cleared: bool) -> kcert_kube::crd::LedgerPage {
    let mut r = kcert_kube::crd::RevokedNodeRecord::new(
        node,
        kcert_kube::crd::Revocation {
            revoked_at: "2026-12-01T00:00:00Z".into(),
            revoked_by: "admin".into(),
            reason: "decommissioned".into(),
        },
        "nonce",
    );
    if cleared {
        r.revoked_node.cleared = Some(kcert_kube::crd::Clearance {
            cleared_at: "2026-12-02T00:00:00Z".into(),
            cleared_by: "admin".into(),
            reason: "re-provisioned".into(),
        });
    }
    let mut page = kcert_kube::ledger::new_page(0, 0);
    page.metadata.name = Some("revoked-nodes".into());
    page.spec.push_node_revocation(&r);
    page
}

/// An approval PUT whose condition is `type_` with `reason`, its message containing `needle`.
fn decided_as(type_: &'static str, reason: &'static str, needle: &'static str) -> Exchange {
    Exchange::new(
        Method::PUT,
        &format!("{PATH}/approval"),
        200,
        serde_json::json!({}),
    )
    .checking(move |sent| {
        let c = &sent["status"]["conditions"][0];
        assert_eq!(
            (c["type"].as_str(), c["reason"].as_str()),
            (Some(type_), Some(reason)),
            "{c}"
        );
        assert!(c["message"].as_str().unwrap().contains(needle), "{c}");
    })
}

fn review(allowed: bool) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {}, "status": {"allowed": allowed}
    })
}

#[tokio::test]
async fn a_kubelet_serving_certificate_kcert_signed_is_vouched_for_after_a_restart() {
    // Signed in-process with the names the node rules approved (lower-cased, canonical IPs);
    // vouched for later from the request alone (after a restart the approval's names are gone).
    let api = FakeApi::new(vec![]);
    let mut ctx = Arc::try_unwrap(node_context(&api, true))
        .ok()
        .expect("a fresh context");
    ctx.settings.signer = true;
    let ctx = Arc::new(ctx);
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let sans = kcert_pki::SubjectAltNames {
        dns: vec!["Node-A.Example.Test".into(), "node-a".into()],
        ips: vec![
            "::ffff:10.0.0.5".parse().unwrap(),
            "fd00::5".parse().unwrap(),
        ],
        ..Default::default()
    };
    let pem = build_csr(
        &key,
        &CsrSubject::new("system:node:node-a", ["system:nodes"]).unwrap(),
        &sans,
    )
    .unwrap();
    let mut c = approved(kubelet_client_csr(
        "system:node:node-a",
        &["system:nodes"],
        "node-a",
    ));
    c.spec.request = ByteString(pem.into_bytes());
    c.spec.signer_name = kcert_policy::nodes::KUBELET_SERVING_SIGNER.into();
    c.spec.usages = Some(vec!["digital signature".into(), "server auth".into()]);
    let approval = crate::signer::Approval {
        names: Some(kcert_policy::nodes::ApprovedNames {
            dns: vec!["node-a".into(), "node-a.example.test".into()],
            ips: vec!["fd00::5".parse().unwrap(), "10.0.0.5".parse().unwrap()],
        }),
        ..Default::default()
    };
    let ca = ctx.ca.get().unwrap();
    let privileged = ctx.rbac.get().unwrap();
    let plan = crate::signer::kubelet_plan(&c, Some(&approval), None, &ctx).unwrap();
    let signed_for = |names: &kcert_pki::SubjectAltNames| {
        let issued = ca
            .sign_with_names(
                &plan.request,
                &plan.subject,
                names,
                &plan.profile,
                SystemTime::now(),
                &SystemRandom,
            )
            .unwrap();
        with_certificate(c.clone(), &issued)
    };
    crate::signer::vouch(
        &signed_for(plan.names.as_ref().unwrap()),
        &ctx,
        std::slice::from_ref(&ca),
        &privileged,
    )
    .unwrap();
    // Fewer names than the request's is not what kcert signs for it.
    let mut fewer = plan.names.clone().unwrap();
    fewer.dns.pop();
    let why = crate::signer::vouch(
        &signed_for(&fewer),
        &ctx,
        std::slice::from_ref(&ca),
        &privileged,
    )
    .unwrap_err();
    assert!(why.contains("alternative names"), "{why}");
}

#[test]
fn a_certificate_another_signer_wrote_is_recorded_only_if_it_is_for_what_was_approved() {
    // kube-controller-manager's certificate for a kubelet client CSR kcert approved: whatever
    // CA made it, it must be for the request's key and exactly system:node:<n> in system:nodes.
    let ca = CertificateAuthority::create(
        PrivateKey::generate(KeyType::EcdsaP256).unwrap(),
        "cluster-ca",
        Duration::from_secs(86_400),
        SystemTime::now(),
        &SystemRandom,
    )
    .unwrap();
    let c = approved(kubelet_client_csr(
        "system:node:n1",
        &["system:nodes"],
        "n1",
    ));
    let request = crate::facts::parse_request(&c).unwrap();
    let node = CsrSubject::new("system:node:n1", ["system:nodes"]).unwrap();
    let masters = CsrSubject::new("system:node:n1", ["system:nodes", "system:masters"]).unwrap();
    let admin = CsrSubject::new("admin", ["system:nodes"]).unwrap();
    let other_key = {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let pem = build_csr(&key, &node, &Default::default()).unwrap();
        kcert_pki::CertificateRequest::from_pem(pem.as_bytes()).unwrap()
    };
    let hour = kcert_pki::SigningProfile::client(Duration::from_secs(3600));
    crate::signer::matches_kubelet_request(&holding(c.clone(), &ca, &request, &node, &hour))
        .unwrap();
    for (case, held, why) in [
        (
            "an added group",
            holding(c.clone(), &ca, &request, &masters, &hour),
            "subject",
        ),
        (
            "another user",
            holding(c.clone(), &ca, &request, &admin, &hour),
            "subject",
        ),
        (
            "another key",
            holding(c.clone(), &ca, &other_key, &node, &hour),
            "another key",
        ),
    ] {
        let refused = crate::signer::matches_kubelet_request(&held).unwrap_err();
        assert!(refused.contains(why), "{case}: {refused}");
    }
}

#[tokio::test]
async fn no_serving_csr_is_decided_before_the_nodes_are_listed_but_client_ones_are() {
    let api = FakeApi::new(vec![]);
    let ctx = node_context(&api, false);
    let mut c = kubelet_client_csr("system:node:n1", &["system:nodes"], "n1");
    c.spec.signer_name = kcert_policy::nodes::KUBELET_SERVING_SIGNER.into();
    let action = crate::node_approver::reconcile(Arc::new(c), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(2))
    );
    api.assert_done();
    // Client rules read no Node: decided (here: the review, then the approval) without them.
    let api = FakeApi::new(vec![
        Exchange::new(Method::POST, SAR_PATH, 201, review(true)),
        Exchange::new(
            Method::PUT,
            &format!("{PATH}/approval"),
            200,
            serde_json::json!({}),
        ),
    ]);
    let ctx = node_context(&api, false);
    let c = kubelet_client_csr("system:bootstrap:abcdef", &["system:bootstrappers"], "n1");
    crate::node_approver::reconcile(Arc::new(c), ctx)
        .await
        .unwrap();
    api.assert_done();
}

#[tokio::test]
async fn a_failed_access_review_decides_nothing() {
    let api = FakeApi::new(vec![Exchange::new(
        Method::POST,
        SAR_PATH,
        500,
        crate::fake_api::status(500, "InternalError", "etcd"),
    )]);
    let ctx = node_context(&api, true);
    let c = kubelet_client_csr("system:bootstrap:abcdef", &["system:bootstrappers"], "n1");
    assert!(
        crate::node_approver::reconcile(Arc::new(c), ctx)
            .await
            .is_err()
    );
    api.assert_done();
}

#[tokio::test]
async fn a_bootstrap_csr_is_approved_after_the_review_kube_controller_manager_makes() {
    let api = FakeApi::new(vec![
        Exchange::new(Method::POST, SAR_PATH, 201, review(true)).checking(|sent| {
            let spec = &sent["spec"];
            assert_eq!(spec["user"], "system:bootstrap:abcdef");
            assert_eq!(spec["groups"][0], "system:bootstrappers");
            let attrs = &spec["resourceAttributes"];
            assert_eq!(attrs["group"], "certificates.k8s.io");
            assert_eq!(attrs["resource"], "certificatesigningrequests");
            assert_eq!(attrs["verb"], "create");
            assert_eq!(attrs["subresource"], "nodeclient");
        }),
        Exchange::new(
            Method::PUT,
            &format!("{PATH}/approval"),
            200,
            serde_json::json!({}),
        )
        .checking(|sent| {
            let c = &sent["status"]["conditions"][0];
            assert_eq!(
                (c["type"].as_str(), c["reason"].as_str()),
                (Some("Approved"), Some("AutoApproved"))
            );
            let p: serde_json::Value = serde_json::from_str(
                sent["metadata"]["annotations"]["kcert.dev/decision"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(p["rule"], "kubelet-client");
        }),
    ]);
    let ctx = node_context(&api, true);
    let c = kubelet_client_csr("system:bootstrap:abcdef", &["system:bootstrappers"], "n1");
    crate::node_approver::reconcile(Arc::new(c), ctx)
        .await
        .unwrap();
    api.assert_done();
}

#[tokio::test]
async fn a_review_that_does_not_allow_is_a_denial_naming_the_subresource() {
    let api = FakeApi::new(vec![
        Exchange::new(Method::POST, SAR_PATH, 201, review(false)),
        Exchange::new(
            Method::PUT,
            &format!("{PATH}/approval"),
            200,
            serde_json::json!({}),
        )
        .checking(|sent| {
            let c = &sent["status"]["conditions"][0];
            assert_eq!(c["type"], "Denied");
            assert_eq!(c["reason"], "NodeClientNotAuthorized");
            assert!(c["message"].as_str().unwrap().contains("selfnodeclient"));
        }),
    ]);
    let ctx = node_context(&api, true);
    let c = kubelet_client_csr("system:node:n1", &["system:nodes"], "n1");
    crate::node_approver::reconcile(Arc::new(c), ctx)
        .await
        .unwrap();
    api.assert_done();
}

#[tokio::test]
async fn a_revoked_node_gets_no_client_certificate_by_bootstrap_or_renewal_until_cleared() {
    // Both SubjectAccessReviews allow: the revocation alone refuses.
    let api = FakeApi::new(vec![
        Exchange::new(Method::POST, SAR_PATH, 201, review(true)),
        decided_as("Denied", "NodeRevoked", "decommissioned"),
        Exchange::new(Method::POST, SAR_PATH, 201, review(true)),
        decided_as("Denied", "NodeRevoked", "kcert revoke --node n1 --clear"),
        // Another node is not touched by n1's revocation.
        Exchange::new(Method::POST, SAR_PATH, 201, review(true)),
        decided_as("Approved", "AutoApproved", "bootstrap for n2"),
        // Cleared: n1 bootstraps again.
        Exchange::new(Method::POST, SAR_PATH, 201, review(true)),
        decided_as("Approved", "AutoApproved", "bootstrap for n1"),
    ]);
    let ctx = node_context(&api, true);
    ctx.ledger_index
        .set(kcert_kube::ledger::LedgerIndex::from_pages([
            &node_revocation_page("n1", false),
        ]));
    let boot =
        |node: &str| kubelet_client_csr("system:bootstrap:abcdef", &["system:bootstrappers"], node);
    let renewal = kubelet_client_csr("system:node:n1", &["system:nodes"], "n1");
    for c in [boot("n1"), renewal, boot("n2")] {
        crate::node_approver::reconcile(Arc::new(c), ctx.clone())
            .await
            .unwrap();
    }
    ctx.ledger_index
        .set(kcert_kube::ledger::LedgerIndex::from_pages([
            &node_revocation_page("n1", true),
        ]));
    crate::node_approver::reconcile(Arc::new(boot("n1")), ctx)
        .await
        .unwrap();
    api.assert_done();
}

#[tokio::test]
async fn no_kubelet_csr_is_decided_or_signed_before_the_ledger_is_read() {
    let requeue = kube::runtime::controller::Action::requeue(Duration::from_secs(2));
    let api = FakeApi::new(vec![]);
    let mut ctx = Arc::try_unwrap(node_context(&api, true))
        .ok()
        .expect("a fresh context");
    ctx.settings.signer = true;
    ctx.settings.signer_names = vec![kcert_policy::nodes::KUBELET_CLIENT_SIGNER.into()];
    // Not read (or dropped, unrefreshable): no review, no decision, no signature.
    ctx.ledger_index = crate::ledger::LedgerView::default();
    let ctx = Arc::new(ctx);
    let boot = kubelet_client_csr("system:bootstrap:abcdef", &["system:bootstrappers"], "n1");
    let action = crate::node_approver::reconcile(Arc::new(boot.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, requeue);
    let action = crate::signer::reconcile(Arc::new(approved(boot.clone())), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, requeue);
    // Read, but holding a record that names nothing kcert can find (it might be a node's
    // revocation): the same.
    let mut page = kcert_kube::ledger::new_page(0, 0);
    page.metadata.name = Some("broken".into());
    page.spec.records.push("{not json".into());
    ctx.ledger_index
        .set(kcert_kube::ledger::LedgerIndex::from_pages([&page]));
    let action = crate::node_approver::reconcile(Arc::new(boot.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, requeue);
    let action = crate::signer::reconcile(Arc::new(approved(boot)), ctx)
        .await
        .unwrap();
    assert_eq!(action, requeue);
    api.assert_done();
}

#[tokio::test]
async fn the_kubelet_signer_refuses_a_revoked_node_whoever_approved() {
    // Approved by hand (`kubectl certificate approve`) for a revoked node: Failed, not signed.
    let c = approved(kubelet_client_csr(
        "system:bootstrap:abcdef",
        &["system:bootstrappers"],
        "n1",
    ));
    let api = FakeApi::new(vec![
        Exchange::new(Method::PUT, &format!("{PATH}/status"), 200, json(&c)).checking(|sent| {
            assert!(sent["status"]["certificate"].is_null());
            let failed = &sent["status"]["conditions"][1];
            assert_eq!(
                (failed["type"].as_str(), failed["reason"].as_str()),
                (Some("Failed"), Some("SignerValidationFailure"))
            );
            let message = failed["message"].as_str().unwrap();
            assert!(
                message.starts_with("NodeRevoked: node n1 was revoked")
                    && message.contains("decommissioned"),
                "{message}"
            );
        }),
    ]);
    let mut ctx = Arc::try_unwrap(node_context(&api, true))
        .ok()
        .expect("a fresh context");
    ctx.settings.signer = true;
    ctx.settings.signer_names = vec![kcert_policy::nodes::KUBELET_CLIENT_SIGNER.into()];
    ctx.ledger_index
        .set(kcert_kube::ledger::LedgerIndex::from_pages([
            &node_revocation_page("n1", false),
        ]));
    let ctx = Arc::new(ctx);
    let action = crate::signer::reconcile(Arc::new(c), ctx).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    api.assert_done();
}

#[tokio::test]
async fn the_signer_gives_nothing_to_a_requester_whose_certificate_descends_from_a_revoked_one() {
    // Approved (a renewal decided just before the revocation was seen), requested with C2,
    // which was renewed from C1; C1 is revoked: Failed, not signed.
    let (c1, c2) = ("aa".repeat(32), "bb".repeat(32));
    let mut c = approved(csr("x", "uid-1", &["dev"]));
    c.spec.extra = Some(
        [(
            kcert_kube::revocation::CREDENTIAL_ID.to_string(),
            vec![format!("X509SHA256={c2}")],
        )]
        .into(),
    );
    let api = FakeApi::new(vec![
        Exchange::new(Method::PUT, &format!("{PATH}/status"), 200, json(&c)).checking(|sent| {
            assert!(sent["status"]["certificate"].is_null());
            let failed = &sent["status"]["conditions"][1];
            assert_eq!(failed["type"], "Failed");
            let message = failed["message"].as_str().unwrap();
            assert!(
                message.starts_with("CredentialRevoked: ")
                    && message.contains("requested with certificate serial 01")
                    && message.contains("stolen"),
                "{message}"
            );
        }),
    ]);
    let mut ctx = context(&api, true);
    Arc::get_mut(&mut ctx).unwrap().settings.ledger = true;
    let mut first = record("01", &c1);
    first.revocation = Some(kcert_kube::crd::Revocation {
        revoked_at: "2026-12-03T10:00:00Z".into(),
        revoked_by: "admin".into(),
        reason: "stolen".into(),
    });
    let mut second = record("02", &c2);
    second.requested_with = Some(c1.clone());
    ctx.ledger_index
        .set(kcert_kube::ledger::LedgerIndex::from_records([
            &first, &second,
        ]));
    crate::signer::reconcile(Arc::new(c), ctx).await.unwrap();
    api.assert_done();
}

#[tokio::test]
async fn a_refused_signing_claim_leaves_the_holders_claim_in_place() {
    // The approver's inline signing and the signer's reconcile exclude each other by a claim;
    // a second claim that is refused must not release the first (it once did: the refused
    // claim was built, dropped, and its drop removed the holder's entry).
    let api = FakeApi::new(vec![]);
    let ctx = context(&api, true);
    let x = csr("x", "uid-1", &["dev"]);
    let held = ctx.claim(&x).expect("the first claim");
    assert!(ctx.claim(&x).is_none());
    assert!(
        ctx.is_signing(&x),
        "the refused claim released the holder's"
    );
    assert!(
        ctx.claim(&x).is_none(),
        "a third claim got in while the first is held"
    );
    drop(held);
    assert!(!ctx.is_signing(&x));
    assert!(ctx.claim(&x).is_some());
}

#[tokio::test]
async fn a_certificate_signed_beside_a_refused_approval_is_never_written() {
    // The approver signs while its approval is on the way; the API server refuses the approval
    // for good. What was signed must go nowhere: the CSR gets Failed, never a certificate.
    let c = csr("x", "uid-1", &["dev"]);
    let api = FakeApi::new(vec![
        Exchange::refuse(
            &format!("{PATH}/approval"),
            422,
            "Invalid",
            "metadata.annotations: Too long",
        )
        .checking(|sent| {
            assert_eq!(sent["status"]["conditions"][0]["type"], "Approved");
        }),
        Exchange::new(Method::PUT, &format!("{PATH}/status"), 200, json(&c)).checking(|sent| {
            assert!(sent["status"]["certificate"].is_null(), "{sent}");
            let conds = sent["status"]["conditions"].as_array().unwrap();
            assert!(conds.iter().all(|c| c["type"] != "Approved"), "{sent}");
            let failed = conds.iter().find(|c| c["type"] == "Failed").unwrap();
            assert!(
                failed["message"]
                    .as_str()
                    .unwrap()
                    .contains("cannot record the decision"),
                "{failed}"
            );
        }),
    ]);
    let ctx = context(&api, true);
    let action = crate::approver::reconcile(Arc::new(c.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    api.assert_done();
    assert!(
        !ctx.is_signing(&c),
        "the signing claim outlived the refusal"
    );
}

#[tokio::test]
async fn a_csr_denied_while_its_certificate_was_being_signed_gets_no_certificate() {
    // Someone denies the CSR (kubectl certificate deny) between our read and our approval: the
    // approval conflicts, the re-read shows Denied, and the certificate signed meanwhile is
    // dropped without a single further request.
    let c = csr("x", "uid-1", &["dev"]);
    let mut denied = decided(c.clone(), conditions::DENIED, "KubectlDeny", "not today");
    denied.metadata.resource_version = Some("2".into());
    let api = FakeApi::new(vec![
        Exchange::conflict(&format!("{PATH}/approval")),
        Exchange::new(Method::GET, PATH, 200, json(&denied)),
    ]);
    let ctx = context(&api, true);
    let action = crate::approver::reconcile(Arc::new(c.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    api.assert_done();
    assert!(!ctx.is_signing(&c), "the signing claim outlived the denial");
}

/// A CA key that is away (`unavailable`) or signs with another key than its certificate's:
/// a token gone, or a token that lies.
#[derive(Debug)]
struct TroubledKey {
    public: PrivateKey,
    signs_with: PrivateKey,
    unavailable: bool,
}

impl kcert_pki::CaKey for TroubledKey {
    fn public_key(&self) -> &kcert_pki::PublicKey {
        self.public.public_key()
    }
    fn sign(&self, message: &[u8]) -> kcert_pki::Result<Vec<u8>> {
        if self.unavailable {
            return Err(kcert_pki::PkiError::CaKeyUnavailable {
                location: "a test token".into(),
                reason: "the token was removed".into(),
            });
        }
        self.signs_with.sign(message)
    }
    fn location(&self) -> String {
        "a test token".into()
    }
}

fn troubled_ca(unavailable: bool) -> CertificateAuthority {
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    let ca = CertificateAuthority::create(
        key,
        "token-ca",
        Duration::from_secs(400 * 86_400),
        SystemTime::now(),
        &SystemRandom,
    )
    .unwrap();
    CertificateAuthority::with_key(
        ca.certificate_pem().as_bytes(),
        Arc::new(TroubledKey {
            public: PrivateKey::from_pem(pem.as_bytes()).unwrap(),
            signs_with: PrivateKey::generate(KeyType::EcdsaP256).unwrap(),
            unavailable,
        }),
        SystemTime::now(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_ca_key_that_is_away_decides_nothing_and_waits() {
    // No request at all: no Failed, no certificate; the CSR is looked at again in 5 s.
    let api = FakeApi::new(vec![]);
    let ctx = context(&api, true);
    ctx.ca.set(troubled_ca(true));
    assert!(!ctx.ca.key_is_away());
    let action =
        crate::signer::reconcile(Arc::new(approved(csr("x", "uid-1", &["dev"]))), ctx.clone())
            .await
            .unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(crate::signer::CA_KEY_RETRY)
    );
    api.assert_done();
    // Readiness says so until the key signs again.
    assert!(ctx.ca.key_is_away());
}

#[tokio::test]
async fn a_ca_key_that_signs_with_another_key_fails_the_csr_without_a_certificate() {
    let c = approved(csr("x", "uid-1", &["dev"]));
    let api = FakeApi::new(vec![
        Exchange::new(Method::PUT, &format!("{PATH}/status"), 200, json(&c)).checking(|sent| {
            assert!(sent["status"]["certificate"].is_null(), "{sent}");
            let conds = sent["status"]["conditions"].as_array().unwrap();
            let failed = conds.iter().find(|c| c["type"] == "Failed").unwrap();
            assert!(
                failed["message"]
                    .as_str()
                    .unwrap()
                    .contains("does not verify"),
                "{failed}"
            );
        }),
    ]);
    let ctx = context(&api, true);
    ctx.ca.set(troubled_ca(false));
    let action = crate::signer::reconcile(Arc::new(c), ctx).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    api.assert_done();
}
