//! A revoked node does not come back through bootstrap (issue 27, finding 4): a node
//! bootstraps with a token (approved by kcert, signed by kube-controller-manager, recorded on
//! kcert's ledger); the admin runs `kcert revoke --node`; the same token, still valid, asks for
//! the node's client certificate again and is denied `NodeRevoked` (the nodeclient
//! SubjectAccessReview alone would allow it), as `kcert policy test` says too; after the admin
//! clears the revocation (`kcert revoke --node … --clear`, recorded on the ledger) it is approved.

use crate::{admin, bed, controller, decision_of};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert::cli::{OutputFormat, RevokeArgs};
use kcert_pki::{CsrSubject, KeyType, PrivateKey, build_csr};
use kcert_policy::nodes::KUBELET_CLIENT_SIGNER;
use kube::api::PostParams;
use kube::{Api, Client};
use std::time::Duration;

/// What a kubelet's bootstrap asks for, as `who`: a client certificate for `user`.
async fn ask(who: &Client, name: &str, user: &str) -> CertificateSigningRequest {
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let pem = build_csr(
        &key,
        &CsrSubject::new(user, ["system:nodes"]).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let csr = kcert_tests::csr_from_pem(name, KUBELET_CLIENT_SIGNER, pem.into_bytes(), None);
    Api::<CertificateSigningRequest>::all(who.clone())
        .create(&PostParams::default(), &csr)
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"))
}

fn revoke_args(node: &str, clear: bool, reason: &str) -> RevokeArgs {
    RevokeArgs {
        serial: None,
        fingerprint: None,
        csr: None,
        user: None,
        node: Some(node.into()),
        clear,
        reason: reason.into(),
    }
}

/// The node revocation records of `node` on the ledger.
async fn node_records(admin: &Client, node: &str) -> Vec<kcert_kube::crd::RevokedNodeRecord> {
    let pages = kcert_kube::ledger::list_pages(admin).await.unwrap();
    kcert_kube::ledger::node_revocations(&pages)
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.revoked_node.node == node)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_cannot_bootstrap_again_until_an_admin_clears_it() {
    let b = bed().await;
    controller().await;
    let cluster = b.cluster;
    let admin = admin().await;
    let name = cluster.unique_name("gone");
    let user = format!("system:node:{name}");
    let token = cluster.bootstrap_token().await.unwrap();
    let bootstrap =
        kcert_testbed::client_from_kubeconfig(&cluster.token_kubeconfig(&token.token()))
            .await
            .unwrap();
    let decided = |csr: &CertificateSigningRequest| {
        let name = csr.metadata.name.clone().unwrap();
        async move {
            let (kind, reason, message) = decision_of(&name).await;
            (kind, reason, message, name)
        }
    };

    // The node bootstraps; its certificate goes on the ledger.
    let first = decided(&ask(&bootstrap, &format!("{name}-1"), &user).await).await;
    assert_eq!(
        (first.0.as_str(), first.1.as_str()),
        ("Approved", "AutoApproved"),
        "{}",
        first.2
    );
    kcert_tests::eventually(
        "the node's certificate on the ledger",
        Duration::from_secs(20),
        || async {
            let pages = kcert_kube::ledger::list_pages(&admin).await.unwrap();
            let n = kcert_kube::ledger::records(&pages)
                .iter()
                .filter(|(_, r)| r.user == user)
                .count();
            if n == 1 { Ok(()) } else { Err(n) }
        },
    )
    .await;

    // The admin revokes the node with the CLI: the ledger records the node, in force, and its
    // certificate is revoked.
    let target = kcert::target::Target::new(Some(cluster.admin_kubeconfig_path().into()), None);
    kcert::commands::admin::revoke(
        &revoke_args(&name, false, "decommissioned"),
        OutputFormat::Json,
        &target,
    )
    .await
    .unwrap();
    let records = node_records(&admin, &name).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].in_force());
    let revocation = records[0].record.revocation.clone().unwrap();
    assert_eq!(revocation.reason, "decommissioned");
    assert!(!revocation.revoked_by.is_empty() && revocation.revoked_by != "unknown");
    let pages = kcert_kube::ledger::list_pages(&admin).await.unwrap();
    assert!(
        kcert_kube::ledger::records(&pages)
            .iter()
            .filter(|(_, r)| r.user == user)
            .all(|(_, r)| r.revocation.is_some())
    );
    // kcert-controller's watch of the ledger delivers it within milliseconds.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The same bootstrap token, still valid, asks for the revoked node's client certificate.
    let again = decided(&ask(&bootstrap, &format!("{name}-2"), &user).await).await;
    assert_eq!(
        (again.0.as_str(), again.1.as_str()),
        ("Denied", "NodeRevoked"),
        "{}",
        again.2
    );
    assert!(
        again.2.contains("decommissioned")
            && again
                .2
                .contains(&format!("kcert revoke --node {name} --clear")),
        "{}",
        again.2
    );
    // `kcert policy test` gives the same reason.
    let csr = Api::<CertificateSigningRequest>::all(admin.clone())
        .get(&again.3)
        .await
        .unwrap();
    let explained = kcert::commands::policy::node_verdict(
        &admin,
        &csr,
        &crate::node_settings().nodes,
        &kcert::commands::policy::node_index(&admin).await.unwrap(),
        &kcert::commands::policy::node_ledger(&admin).await.unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        explained.reason.as_str(),
        "NodeRevoked",
        "{}",
        explained.message
    );
    // Revoking it again changes nothing: the first revocation stands, no second record.
    kcert::commands::admin::revoke(
        &revoke_args(&name, false, "once more"),
        OutputFormat::Json,
        &target,
    )
    .await
    .unwrap();
    assert_eq!(node_records(&admin, &name).await.len(), 1);

    // The admin clears it: recorded on the ledger (who, when, why), the record kept.
    kcert::commands::admin::revoke(
        &revoke_args(&name, true, "re-imaged"),
        OutputFormat::Json,
        &target,
    )
    .await
    .unwrap();
    let records = node_records(&admin, &name).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let cleared = records[0].revoked_node.cleared.clone().expect("cleared");
    assert_eq!(cleared.reason, "re-imaged");
    assert!(!cleared.cleared_by.is_empty() && !cleared.cleared_at.is_empty());
    // Clearing what is not revoked is an error, not a silent success.
    assert!(
        kcert::commands::admin::revoke(
            &revoke_args(&name, true, "again"),
            OutputFormat::Json,
            &target,
        )
        .await
        .is_err()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The node may bootstrap again.
    let third = decided(&ask(&bootstrap, &format!("{name}-3"), &user).await).await;
    assert_eq!(
        (third.0.as_str(), third.1.as_str()),
        ("Approved", "AutoApproved"),
        "{}",
        third.2
    );
}
