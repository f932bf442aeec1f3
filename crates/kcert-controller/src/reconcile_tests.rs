//! The fast tier: reconcile paths against a mocked API (exact requests asserted), for what a
//! real API server cannot be made to do on demand. Behaviour is proven on the real server in
//! tests/e2e; these pin the edge cases in seconds, without Go.

use crate::fake_api::{Exchange, FakeApi};
use crate::policy_source::PolicySnapshot;
use crate::replace::{Subresource, Written, replace_with_retry};
use crate::{CaStore, Context, Error, PolicyStore, Settings, conditions, events, metrics, rbac};
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

fn approved(mut c: CertificateSigningRequest) -> CertificateSigningRequest {
    c.status = Some(CertificateSigningRequestStatus {
        conditions: Some(vec![conditions::condition(
            conditions::APPROVED,
            "KubectlApprove",
            "by hand",
        )]),
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
            Duration::from_secs(86_400),
            SystemTime::now(),
            &SystemRandom,
        )
        .unwrap(),
    );
    Arc::new(Context {
        client,
        settings: Settings {
            signer,
            ..Settings::default()
        },
        policy,
        ca,
        events: sink,
        metrics,
        ledger: None,
        rbac: rbac_index,
        signing: Mutex::new(HashSet::new()),
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
    assert!(matches!(Error::from(e), Error::Permanent(..)));
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
