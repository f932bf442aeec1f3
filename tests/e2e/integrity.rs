//! Identity integrity on the real API server, beyond the corpus: the signer refuses what it
//! must whoever approved it, forged provenance is worthless, a decision never lands on a
//! re-created object, and an ApprovalPolicy edited into an invalid one keeps protecting.

use der::Tag;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_controller::crd::{ApprovalPolicy, ApprovalPolicySpec};
use kcert_controller::provenance::Provenance;
use kcert_controller::{CaSource, DECISION_ANNOTATION, PolicySource, Settings};
use kcert_pki::oids as oid;
use kcert_pki::{KeyType, PrivateKey, build_csr_raw, raw_name_der};
use kcert_testbed::TestCluster;
use kcert_tests::*;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

fn raw_csr(attrs: &[(der::oid::ObjectIdentifier, Tag, &[u8])]) -> Vec<u8> {
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    build_csr_raw(&key, &raw_name_der(attrs).unwrap(), vec![])
        .unwrap()
        .into_bytes()
}

/// Approve as a human with kubectl would (reason KubectlApprove), through `/approval`.
async fn approve_by_hand(api: &Api<CertificateSigningRequest>, name: &str) {
    let mut csr = api.get(name).await.unwrap();
    csr.status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(kcert_controller::conditions::condition(
            "Approved",
            "KubectlApprove",
            "This CSR was approved by kubectl certificate approve.",
        ));
    api.replace_subresource("approval", name, &PostParams::default(), &csr)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_signer_refuses_what_a_human_approved_wrongly_and_ignores_forged_provenance() {
    let cluster = TestCluster::shared().await;
    let admin_client = cluster.admin_client().await.unwrap();
    let signer = format!("kcert.dev/{}", cluster.unique_name("human"));
    // Signer only: nothing but a human approves here.
    let settings = Settings {
        signer_names: vec![signer.clone()],
        approver: false,
        ca: Some(CaSource::Files {
            cert: cluster.ca_cert_path(),
            key: cluster.ca_key_path(),
        }),
        ..Settings::default()
    };
    let _controller = RunningController::start_with(admin_client.clone(), settings);
    let api: Api<CertificateSigningRequest> = Api::all(admin_client);
    let cn = (oid::COMMON_NAME, Tag::Utf8String, &b"jane"[..]);
    let forged = serde_json::json!({
        "outcome": "Approved", "reason": "KubectlApprove", "rule": "forged-rule",
        "policy": "forged-policy", "policyVersion": "crd:forged@1",
        "maxDurationSeconds": 999_999_999u64, "approvedUid": "uid-of-root", "csrUid": "", "by": "kcert-controller"
    })
    .to_string();
    // (name, request, forged annotation?, expected: Ok(()) issued / Err(reason in message))
    type HumanCase = (&'static str, Vec<u8>, bool, Result<(), &'static str>);
    let cases: Vec<HumanCase> = vec![
        (
            "masters",
            raw_csr(&[cn, (oid::ORGANIZATION, Tag::Utf8String, b"system:masters")]),
            false,
            Err("ProtectedGroup"),
        ),
        (
            "masters-bmp",
            raw_csr(&[
                cn,
                (
                    oid::ORGANIZATION,
                    Tag::BmpString,
                    &"system:masters"
                        .encode_utf16()
                        .flat_map(|u| u.to_be_bytes())
                        .collect::<Vec<u8>>(),
                ),
            ]),
            false,
            Err("ProtectedGroup"),
        ),
        (
            "kubeadm-admins",
            raw_csr(&[
                cn,
                (
                    oid::ORGANIZATION,
                    Tag::Utf8String,
                    b"kubeadm:cluster-admins",
                ),
            ]),
            false,
            Err("ProtectedGroup"),
        ),
        (
            "system-user",
            raw_csr(&[(oid::COMMON_NAME, Tag::Utf8String, b"system:kube-scheduler")]),
            false,
            Err("ProtectedUser"),
        ),
        (
            "uid",
            raw_csr(&[cn, (oid::USER_UID, Tag::Utf8String, b"uid-of-root")]),
            false,
            Err("UidNotAllowed"),
        ),
        (
            "uid-forged-record",
            raw_csr(&[cn, (oid::USER_UID, Tag::Utf8String, b"uid-of-root")]),
            true,
            Err("UidNotAllowed"),
        ),
        (
            "ou",
            raw_csr(&[
                cn,
                (
                    der::oid::ObjectIdentifier::new_unwrap("2.5.4.11"),
                    Tag::Utf8String,
                    b"admins",
                ),
            ]),
            false,
            Err("SubjectNotAllowed"),
        ),
        (
            "escape",
            raw_csr(&[(
                oid::COMMON_NAME,
                Tag::Utf8String,
                "jane\u{1b}]0;root\u{7}".as_bytes(),
            )]),
            false,
            Err("UnprintableName"),
        ),
        (
            "forged-record",
            raw_csr(&[cn, (oid::ORGANIZATION, Tag::Utf8String, b"dev")]),
            true,
            Ok(()),
        ),
        (
            "re-encoded",
            raw_csr(&[
                (oid::COMMON_NAME, Tag::PrintableString, b"jane"),
                (
                    oid::ORGANIZATION,
                    Tag::BmpString,
                    &[0, b'd', 0, b'e', 0, b'v'],
                ),
                (oid::ORGANIZATION, Tag::Utf8String, b"dev"),
            ]),
            false,
            Ok(()),
        ),
    ];
    let mut names = Vec::new();
    for (label, request, forge, expect) in &cases {
        let name = cluster.unique_name(&format!("human-{label}"));
        let mut obj = csr_from_pem(&name, &signer, request.clone(), Some(3600));
        if *forge {
            obj.annotations_mut()
                .insert(DECISION_ANNOTATION.into(), forged.clone());
        }
        api.create(&PostParams::default(), &obj).await.unwrap();
        approve_by_hand(&api, &name).await;
        names.push((name, *label, *forge, *expect));
    }
    for (name, label, forge, expect) in names {
        let done = wait_for(&api, &name, 20 * SECOND, "issued or failed", |c| {
            issued(c) || conditions(c).iter().any(|x| x.0 == "Failed")
        })
        .await;
        assert!(
            Provenance::read(&done).is_none(),
            "{label}: a forged record was trusted"
        );
        match expect {
            Err(reason) => {
                assert!(!issued(&done), "{label}: signed");
                let failed = conditions(&done)
                    .into_iter()
                    .find(|x| x.0 == "Failed")
                    .unwrap();
                assert_eq!(failed.1, "SignerValidationFailure", "{label}");
                assert!(failed.2.starts_with(reason), "{label}: {}", failed.2);
                assert!(
                    !failed.2.contains('\u{1b}'),
                    "{label}: raw escape in the message"
                );
            }
            Ok(()) => {
                let cert = certificate(&done);
                assert_eq!(cert.subject.to_string(), "CN=jane, O=dev", "{label}");
                let life = cert
                    .not_after_time()
                    .duration_since(cert.not_before_time())
                    .unwrap();
                assert!(life <= Duration::from_secs(3600 + 300), "{label}: {life:?}");
                if forge {
                    let by = kcert_controller::ledger::approved_by(&done);
                    assert!(!by.contains("forged"), "{label}: ledger says {by}");
                    assert_eq!(by, "KubectlApprove");
                }
            }
        }
    }
}

#[tokio::test]
async fn a_decision_never_lands_on_a_csr_recreated_under_the_same_name() {
    let cluster = TestCluster::shared().await;
    allow_everyone_to_request(cluster).await;
    let admin_client = cluster.admin_client().await.unwrap();
    let signer = format!("kcert.dev/{}", cluster.unique_name("recreate"));
    let policy = serde_yaml::from_str(&format!(
        "rules: [{{id: self-dev, signerNames: ['{signer}'], requesters: {{groups: [developers]}}, groups: {{allowed: [dev]}}}}]"
    ))
    .unwrap();
    let _controller = RunningController::start(
        cluster,
        admin_client.clone(),
        &signer,
        PolicySource::Static(policy),
        Duration::from_secs(3600),
    );
    let mallory: Api<CertificateSigningRequest> = Api::all(
        cluster
            .user_client("mallory", &["developers"])
            .await
            .unwrap(),
    );
    let admin: Api<CertificateSigningRequest> = Api::all(admin_client);
    let masters_bmp: Vec<u8> = "system:masters"
        .encode_utf16()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    let good = raw_csr(&[
        (oid::COMMON_NAME, Tag::Utf8String, b"mallory"),
        (oid::ORGANIZATION, Tag::Utf8String, b"dev"),
    ]);
    let evil = raw_csr(&[
        (oid::COMMON_NAME, Tag::Utf8String, b"mallory"),
        (oid::ORGANIZATION, Tag::BmpString, &masters_bmp),
    ]);
    let mut recreated = Vec::new();
    for i in 0..40 {
        let name = cluster.unique_name(&format!("recreate-{i}"));
        mallory
            .create(
                &PostParams::default(),
                &csr_from_pem(&name, &signer, good.clone(), None),
            )
            .await
            .unwrap();
        // Delete and re-create under the same name while the controller is deciding the first.
        tokio::time::sleep(Duration::from_millis((i % 8) as u64 * 2)).await;
        let _ = admin.delete(&name, &DeleteParams::default()).await;
        let deadline = Instant::now() + 10 * SECOND;
        loop {
            match mallory
                .create(
                    &PostParams::default(),
                    &csr_from_pem(&name, &signer, evil.clone(), None),
                )
                .await
            {
                Ok(_) => break,
                // Still terminating: try again.
                Err(kube::Error::Api(s)) if s.code == 409 && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("{name}: {e}"),
            }
        }
        recreated.push(name);
    }
    for name in recreated {
        let done = wait_for(&admin, &name, 20 * SECOND, "decided", decided).await;
        let conds = conditions(&done);
        assert!(
            !conds.iter().any(|c| c.0 == "Approved"),
            "{name}: the re-created O=system:masters request was approved: {conds:?}"
        );
        assert_eq!(
            (conds[0].0.as_str(), conds[0].1.as_str()),
            ("Denied", "ProtectedGroup"),
            "{name}"
        );
        assert!(!issued(&done), "{name}: signed");
    }
}

#[tokio::test]
async fn an_approval_policy_edited_into_an_invalid_one_keeps_protecting() {
    let cluster = TestCluster::shared().await;
    allow_everyone_to_request(cluster).await;
    install_crds(cluster).await;
    let admin_client = cluster.admin_client().await.unwrap();
    let signer = format!("kcert.dev/{}", cluster.unique_name("failclosed"));
    let policies: Api<ApprovalPolicy> = Api::all(admin_client.clone());
    let name = cluster.unique_name("ops-guard");
    let protected = cluster.unique_name("ops-admins");
    let spec = |extra_rule: &str| {
        serde_yaml::from_str::<ApprovalPolicySpec>(&format!(
            "whenNoRuleMatches: Deny\nprotectedGroups: ['{protected}']\nrules: [{{id: anything, signerNames: ['{signer}'], requesters: {{groups: [developers]}}, groups: {{allowed: ['*']}}}}{extra_rule}]"
        ))
        .unwrap()
    };
    policies
        .create(
            &PostParams::default(),
            &ApprovalPolicy::new(&name, spec("")),
        )
        .await
        .unwrap();
    let start = || {
        RunningController::start(
            cluster,
            admin_client.clone(),
            &signer,
            PolicySource::Crd,
            Duration::from_secs(3600),
        )
    };
    let controller = start();
    let jane: Api<CertificateSigningRequest> =
        Api::all(cluster.user_client("jane", &["developers"]).await.unwrap());
    let admin: Api<CertificateSigningRequest> = Api::all(admin_client.clone());
    let request = |group: String| {
        let jane = jane.clone();
        let admin = admin.clone();
        let signer = signer.clone();
        async move {
            let csr_name = cluster.unique_name("failclosed-csr");
            jane.create(
                &PostParams::default(),
                &csr_object(&csr_name, &signer, "jane", &[&group], None),
            )
            .await
            .unwrap();
            let done = wait_for(&admin, &csr_name, 20 * SECOND, "decided", decided).await;
            conditions(&done)[0].clone()
        }
    };
    assert_eq!(request(protected.clone()).await.1, "ProtectedGroup");
    assert_eq!(request("dev".into()).await.0, "Approved");

    // Edited so that a rule no longer compiles: generation 1 stays in force.
    let patch = serde_json::json!({"spec": spec(", {id: broken, requesters: {users: [x]}, commonName: {regex: '('}}")});
    policies
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let status = eventually("a status for generation 2", 20 * SECOND, || async {
        let s = policies
            .get(&name)
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if s.observed_generation == Some(2) {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert!(!status.accepted);
    assert_eq!(status.in_force_generation, Some(1), "{status:?}");
    assert!(
        status.message.contains("generation 1 stays in force"),
        "{}",
        status.message
    );
    assert_eq!(request(protected.clone()).await.1, "ProtectedGroup");
    assert_eq!(request("dev".into()).await.0, "Approved");

    // After a restart no generation of it ever compiled here: its protection and its Deny stand.
    drop(controller);
    let _controller = start();
    assert_eq!(request(protected.clone()).await.1, "ProtectedGroup");
    let (kind, reason, _) = request("dev".into()).await;
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Denied", "NoMatchingRule")
    );
    let _ = policies.delete(&name, &Default::default()).await;
}
