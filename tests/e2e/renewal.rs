//! Renewals bound to the ledger, on the real API server: a renewal rule approves a CSR only
//! when the requester authenticated with a kcert-issued, unrevoked certificate of the same user
//! (the API server records its credential id in the CSR's spec.extra), for the same or fewer
//! groups, and while the chain of renewals is younger than maxChainAge.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_kube::revocation::{Selector, revoke};
use kcert_testbed::kubeconfig::{Credentials, render};
use kcert_testbed::{TestCluster, client_from_kubeconfig};
use kcert_tests::*;
use kube::api::PostParams;
use kube::{Api, Client};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

async fn client_for(cluster: &TestCluster, user: &str, cert_pem: &str, key_pem: &str) -> Client {
    let yaml = render(
        cluster.server(),
        cluster.ca_pem(),
        user,
        &Credentials::ClientCertificate { cert_pem, key_pem },
    );
    client_from_kubeconfig(&yaml).await.unwrap()
}

/// Ask for a certificate through `as_client`; the CSR once decided.
async fn request(
    cluster: &TestCluster,
    as_client: &Client,
    admin: &Api<CertificateSigningRequest>,
    signer: &str,
    user: &str,
    groups: &[&str],
) -> (CertificateSigningRequest, String) {
    let name = cluster.unique_name(&format!("renew-{user}"));
    let (csr, key) = csr_with_key(&name, signer, user, groups, Some(3600));
    Api::<CertificateSigningRequest>::all(as_client.clone())
        .create(&PostParams::default(), &csr)
        .await
        .unwrap();
    let done = wait_for(
        admin,
        &name,
        20 * SECOND,
        "decided and issued or denied",
        |c| {
            issued(c)
                || conditions(c)
                    .iter()
                    .any(|x| x.0 == "Denied" || x.0 == "Failed")
        },
    )
    .await;
    (done, key)
}

fn cert_of(csr: &CertificateSigningRequest) -> String {
    String::from_utf8(
        csr.status
            .as_ref()
            .unwrap()
            .certificate
            .as_ref()
            .unwrap()
            .0
            .clone(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_need_a_current_kcert_certificate_and_chains_end() {
    let cluster = TestCluster::shared().await;
    install_crds(cluster).await;
    allow_everyone_to_request(cluster).await;
    let admin_client = cluster.admin_client().await.unwrap();
    let signer = format!("kcert.dev/{}", cluster.unique_name("renewal"));
    let policy = serde_yaml::from_str(&format!(
        r#"
rules:
  - id: onboard
    signerNames: ["{signer}"]
    requesters: {{users: [kcert-testbed-admin]}}
    commonName: {{glob: "*"}}
    groups: {{allowed: [readers, short-lived]}}
  - id: renew-short
    signerNames: ["{signer}"]
    requesters: {{groups: [short-lived]}}
    groups: {{fromRequester: true}}
    renewal: {{maxChainAge: 1s}}
  - id: renew
    signerNames: ["{signer}"]
    requesters: {{groups: [readers]}}
    groups: {{fromRequester: true}}
    renewal: {{maxChainAge: 90d}}
"#
    ))
    .unwrap();
    let settings = Settings {
        signer_names: vec![signer.clone()],
        policy: PolicySource::Static(policy),
        ca: Some(CaSource::Files {
            cert: cluster.ca_cert_path(),
            key: cluster.ca_key_path(),
        }),
        ledger: true,
        ..Settings::default()
    };
    let _controller = RunningController::start_with(admin_client.clone(), settings);
    let admin: Api<CertificateSigningRequest> = Api::all(admin_client.clone());
    let user = cluster.unique_name("rena");
    let record_of = |csr: &CertificateSigningRequest| {
        let serial = kcert_pki::CertificateInfo::from_pem(cert_of(csr).as_bytes())
            .unwrap()
            .serial;
        let client = admin_client.clone();
        async move {
            eventually("the ledger record", 20 * SECOND, || async {
                kcert_kube::ledger::find_serial(&client, &serial)
                    .await
                    .unwrap()
                    .ok_or(())
            })
            .await
        }
    };

    // Onboarded by the admin; then rena renews with that certificate.
    let (first, key) = request(cluster, &admin_client, &admin, &signer, &user, &["readers"]).await;
    assert_eq!(conditions(&first)[0].1, "AutoApproved");
    let first_record = record_of(&first).await;
    let rena = client_for(cluster, &user, &cert_of(&first), &key).await;
    let (renewed, key2) = request(cluster, &rena, &admin, &signer, &user, &["readers"]).await;
    let conds = conditions(&renewed);
    assert_eq!(
        (conds[0].0.as_str(), conds[0].1.as_str()),
        ("Approved", "AutoApproved"),
        "{conds:?}"
    );
    assert!(conds[0].2.contains("rule 'renew'"), "{conds:?}");
    // The chain goes on: the new record carries the first certificate's start.
    let renewed_record = record_of(&renewed).await;
    assert_eq!(
        renewed_record.chain_started_at,
        first_record.chain_started_at
    );
    assert_eq!(
        first_record.chain_started_at.as_deref(),
        Some(first_record.not_before.as_str())
    );

    // More groups than the current certificate: refused.
    let rena2 = client_for(cluster, &user, &cert_of(&renewed), &key2).await;
    let (more, _) = request(
        cluster,
        &rena2,
        &admin,
        &signer,
        &user,
        &["readers", "short-lived"],
    )
    .await;
    assert_eq!(conditions(&more)[0].1, "GroupNotAllowed");

    // A revoked certificate renews nothing.
    let done = revoke(
        &admin_client,
        &Selector::Serial(renewed_record.serial.clone()),
        "kcert-testbed-admin",
        "left",
    )
    .await
    .unwrap();
    assert_eq!(done.len(), 1);
    let denied = eventually(
        "renewal with a revoked certificate denied",
        20 * SECOND,
        || async {
            let (csr, _) = request(cluster, &rena2, &admin, &signer, &user, &["readers"]).await;
            let c = conditions(&csr)[0].clone();
            if c.1 == "CredentialRevoked" {
                Ok(c)
            } else {
                Err(c)
            }
        },
    )
    .await;
    assert!(denied.2.contains("left"), "{denied:?}");

    // A certificate minted by hand with the CA key (not in the ledger): unknown.
    let minted = cluster.user_client(&user, &["readers"]).await.unwrap();
    let (unknown, _) = request(cluster, &minted, &admin, &signer, &user, &["readers"]).await;
    assert_eq!(conditions(&unknown)[0].1, "CredentialUnknown");

    // A chain older than its rule's maxChainAge (1 s) ends.
    let short = cluster.unique_name("shorty");
    let (first, key) = request(
        cluster,
        &admin_client,
        &admin,
        &signer,
        &short,
        &["short-lived"],
    )
    .await;
    record_of(&first).await;
    tokio::time::sleep(2 * SECOND).await;
    let shorty = client_for(cluster, &short, &cert_of(&first), &key).await;
    let (old, _) = request(cluster, &shorty, &admin, &signer, &short, &["short-lived"]).await;
    assert_eq!(
        conditions(&old)[0].1,
        "RenewalChainTooOld",
        "{:?}",
        conditions(&old)
    );
}
