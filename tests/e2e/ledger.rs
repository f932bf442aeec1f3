//! The issuance ledger outlives CSRs, and the cleaner deletes finished CSRs only once their
//! certificate is on record.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_controller::cleaner::CleanerSettings;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_kube::ledger::find_serial;
use kcert_testbed::TestCluster;
use kcert_tests::{
    RunningController, certificate, csr_object, eventually, install_crds, issued, wait_for,
};
use kube::Api;
use kube::api::PostParams;
use std::time::Duration;

#[tokio::test]
async fn issued_certificates_are_recorded_and_finished_csrs_cleaned_after() {
    let cluster = TestCluster::shared().await;
    install_crds(cluster).await;
    let client = cluster.admin_client().await.unwrap();
    let signer = format!("kcert.dev/{}", cluster.unique_name("ledger"));
    let settings = Settings {
        signer_names: vec![signer.clone()],
        policy: PolicySource::Static(
            serde_yaml::from_str(&format!(
                "rules: [{{id: ledger, signerNames: ['{signer}'], requesters: {{users: [kcert-testbed-admin]}}, commonName: {{glob: 'led-*'}}, groups: {{allowed: [dev]}}}}]"
            ))
            .unwrap(),
        ),
        ca: Some(CaSource::Files {
            cert: cluster.ca_cert_path(),
            key: cluster.ca_key_path(),
        }),
        ledger: true,
        cleaner: Some(CleanerSettings {
            interval: Duration::from_millis(500),
            // Long enough that the test sees the issued CSR before it is cleaned (the signer
            // waits for the ledger's first read before signing for a requester with a
            // certificate).
            approved: Duration::from_secs(5),
            denied: Duration::from_secs(2),
            failed: Duration::from_secs(2),
            pending: Duration::from_secs(3600),
        }),
        ..Settings::default()
    };
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let (good, bad, pending) = (
        cluster.unique_name("led-good"),
        cluster.unique_name("led-bad"),
        cluster.unique_name("led-pending"),
    );
    csrs.create(
        &PostParams::default(),
        &csr_object(&good, &signer, &format!("led-{good}"), &["dev"], None),
    )
    .await
    .unwrap();
    csrs.create(
        &PostParams::default(),
        &csr_object(&bad, &signer, "led-bad", &["ops"], None),
    )
    .await
    .unwrap();
    // No rule is for this requester: it stays pending.
    kcert_tests::allow_everyone_to_request(cluster).await;
    let stranger: Api<CertificateSigningRequest> =
        Api::all(cluster.user_client("stranger", &[]).await.unwrap());
    stranger
        .create(
            &PostParams::default(),
            &csr_object(&pending, &signer, "stranger", &[], None),
        )
        .await
        .unwrap();
    let _controller = RunningController::start_with(client.clone(), settings);
    let done = wait_for(&csrs, &good, Duration::from_secs(20), "issued", issued).await;
    let cert = certificate(&done);
    let record = eventually("a ledger record", Duration::from_secs(20), || async {
        find_serial(&client, &cert.serial)
            .await
            .unwrap()
            .ok_or(&cert.serial)
    })
    .await;
    assert_eq!(record.user, format!("led-{good}"));
    assert_eq!(record.groups, ["dev"]);
    assert_eq!(record.requester, "kcert-testbed-admin");
    assert_eq!(record.approved_by, "rule ledger of policy static");
    assert_eq!(record.csr_uid, done.metadata.uid.clone().unwrap());
    assert_eq!(record.not_after, cert.not_after);

    // The issued and the denied CSR go; the pending one (24 h rule, here 1 h) stays.
    eventually(
        "the issued and the denied CSR cleaned",
        Duration::from_secs(30),
        || async {
            let gone_good = csrs.get_opt(&good).await.unwrap().is_none();
            let gone_bad = csrs.get_opt(&bad).await.unwrap().is_none();
            if gone_good && gone_bad {
                Ok(())
            } else {
                Err((gone_good, gone_bad))
            }
        },
    )
    .await;
    assert!(
        csrs.get_opt(&pending).await.unwrap().is_some(),
        "a recent pending CSR must stay"
    );
    assert!(
        find_serial(&client, &cert.serial).await.unwrap().is_some(),
        "the record outlives the CSR"
    );
}

/// Create a CSR of `signer` for `late-user` in `dev`, approve it by hand and write onto it a
/// certificate made with the CA key for `subject` (what someone holding the key and `sign`
/// could do); the certificate.
async fn approved_and_signed_by_hand(
    cluster: &TestCluster,
    csrs: &Api<CertificateSigningRequest>,
    name: &str,
    signer: &str,
    subject: &kcert_pki::CsrSubject,
) -> kcert_pki::IssuedCertificate {
    let (csr, _key) = kcert_tests::csr_with_key(name, signer, "late-user", &["dev"], None);
    let mut created = csrs.create(&PostParams::default(), &csr).await.unwrap();
    created
        .status
        .get_or_insert_with(Default::default)
        .conditions = Some(vec![kcert_controller::conditions::condition(
        "Approved",
        "Manual",
        "approved by hand",
    )]);
    let approved = csrs
        .replace_subresource("approval", name, &PostParams::default(), &created)
        .await
        .unwrap();
    let request = kcert_pki::CertificateRequest::from_pem(&approved.spec.request.0).unwrap();
    let cert = cluster
        .ca()
        .sign_as(
            &request,
            subject,
            &kcert_pki::SigningProfile::client(Duration::from_secs(3600)),
            std::time::SystemTime::now(),
            &kcert_pki::SystemRandom,
        )
        .unwrap();
    let mut approved = approved;
    approved.status.as_mut().unwrap().certificate =
        Some(k8s_openapi::ByteString(cert.to_pem().into_bytes()));
    csrs.replace_status(name, &PostParams::default(), &approved)
        .await
        .unwrap();
    cert
}

/// A CSR issued while no kcert ran (by another signer process, or before a restart) is put on
/// record when the controller finds it: the path that reads the ledger before writing. Only a
/// certificate kcert would have issued for the CSR is: one minted with the CA key for more than
/// the request asked (here an added group) is not recorded as kcert's, and says so in an Event.
#[tokio::test]
async fn certificates_issued_while_kcert_was_down_are_recorded_when_it_starts() {
    let cluster = TestCluster::shared().await;
    install_crds(cluster).await;
    let client = cluster.admin_client().await.unwrap();
    let signer = format!("kcert.dev/{}", cluster.unique_name("ledger-late"));
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let name = cluster.unique_name("late");
    let forged = cluster.unique_name("late-forged");
    let asked = kcert_pki::CsrSubject::new("late-user", ["dev".to_string()]).unwrap();
    let more =
        kcert_pki::CsrSubject::new("late-user", ["dev".to_string(), "ops-admins".to_string()])
            .unwrap();
    let forged_cert = approved_and_signed_by_hand(cluster, &csrs, &forged, &signer, &more).await;
    let cert = approved_and_signed_by_hand(cluster, &csrs, &name, &signer, &asked).await;

    let settings = Settings {
        signer_names: vec![signer.clone()],
        approver: false,
        ca: Some(CaSource::Files {
            cert: cluster.ca_cert_path(),
            key: cluster.ca_key_path(),
        }),
        ledger: true,
        ..Settings::default()
    };
    let _controller = RunningController::start_with(client.clone(), settings);
    let record = eventually("a ledger record", Duration::from_secs(20), || async {
        find_serial(&client, &cert.serial)
            .await
            .unwrap()
            .ok_or(&cert.serial)
    })
    .await;
    assert_eq!(record.user, "late-user");
    assert_eq!(record.approved_by, "Manual");
    assert_eq!(record.csr_name, name);
    let event = kcert_tests::wait_for_event(
        &client,
        &forged,
        "NotIssuedByKcert",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("subject"),
        "the Event says what differs: {:?}",
        event.note
    );
    // Created first, so looked at before the genuine one was recorded: never on record.
    assert!(
        find_serial(&client, &forged_cert.serial)
            .await
            .unwrap()
            .is_none(),
        "the hand-minted certificate was recorded as kcert's"
    );
}
