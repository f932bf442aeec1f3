//! Running it in production: leader election across two replicas, and /metrics, /healthz, /readyz.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use kcert_controller::leader::LeaderElection;
use kcert_controller::{CaSource, DECISION_ANNOTATION, PolicySource, Settings};
use kcert_testbed::TestCluster;
use kcert_tests::{RunningController, conditions, csr_object, eventually, issued};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use std::io::{Read, Write};
use std::time::Duration;

fn settings(cluster: &TestCluster, signer: &str) -> Settings {
    Settings {
        signer_names: vec![signer.to_string()],
        policy: PolicySource::Static(
            serde_yaml::from_str(&format!(
                "rules: [{{id: ha, signerNames: ['{signer}'], requesters: {{users: [kcert-testbed-admin]}}, commonName: {{glob: '*'}}, groups: {{allowed: [ha]}}}}]"
            ))
            .unwrap(),
        ),
        ca: Some(CaSource::Files {
            cert: cluster.ca_cert_path(),
            key: cluster.ca_key_path(),
        }),
        ..Settings::default()
    }
}

async fn lease_holder(api: &Api<Lease>, name: &str) -> Option<String> {
    api.get_opt(name).await.unwrap()?.spec?.holder_identity
}

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_dies_and_no_csr_is_lost() {
    let cluster = TestCluster::shared().await;
    let ns = cluster.namespace("ha").await.unwrap();
    let client = cluster.admin_client().await.unwrap();
    let signer = format!("kcert.dev/{}", cluster.unique_name("ha"));
    let replica = |id: &str| {
        let mut s = settings(cluster, &signer);
        s.instance = Some(id.to_string());
        s.leader_election = Some(LeaderElection {
            lease_duration: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
            ..LeaderElection::new(&ns, "kcert-controller", id)
        });
        RunningController::start_with(client.clone(), s)
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let a = replica("replica-a");
    eventually("replica-a leads", Duration::from_secs(20), || async {
        match lease_holder(&leases, "kcert-controller").await {
            Some(h) if h == "replica-a" => Ok(()),
            other => Err(other),
        }
    })
    .await;
    let _b = replica("replica-b");

    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let prefix = cluster.unique_name("ha");
    let create = |i: usize| {
        let csrs = csrs.clone();
        let name = format!("{prefix}-{i}");
        let csr = csr_object(&name, &signer, &format!("user-{i}"), &["ha"], None);
        async move { csrs.create(&PostParams::default(), &csr).await.unwrap() }
    };
    for i in 0..20 {
        create(i).await;
    }
    let lp = ListParams::default().fields(&format!("spec.signerName={signer}"));
    eventually("the leader issues 10", Duration::from_secs(20), || async {
        let n = csrs
            .list(&lp)
            .await
            .unwrap()
            .items
            .iter()
            .filter(|c| issued(c))
            .count();
        if n >= 10 { Ok(()) } else { Err(n) }
    })
    .await;
    // The leader dies without releasing the lease; CSRs keep arriving during the hand-over.
    a.kill();
    for i in 20..40 {
        create(i).await;
    }
    let all = eventually("all 40 issued", Duration::from_secs(30), || async {
        let all = csrs.list(&lp).await.unwrap().items;
        if all.len() == 40 && all.iter().all(issued) {
            Ok(all)
        } else {
            Err(all.iter().filter(|c| issued(c)).count())
        }
    })
    .await;
    assert_eq!(
        lease_holder(&leases, "kcert-controller").await.as_deref(),
        Some("replica-b")
    );
    let mut by_b = 0;
    for csr in &all {
        let conds = conditions(csr);
        assert_eq!(conds.len(), 1, "{}: {conds:?}", csr.name_any());
        let by: serde_json::Value =
            serde_json::from_str(&csr.annotations()[DECISION_ANNOTATION]).unwrap();
        let by = by["by"].as_str().unwrap().to_string();
        assert!(
            by.ends_with("/replica-a") || by.ends_with("/replica-b"),
            "{by}"
        );
        by_b += usize::from(by.ends_with("/replica-b"));
    }
    assert!(
        by_b >= 20,
        "the standby decided the CSRs created after the hand-over ({by_b})"
    );
}

fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        code,
        text.split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_are_served() {
    let cluster = TestCluster::shared().await;
    let client = cluster.admin_client().await.unwrap();
    let signer = format!("kcert.dev/{}", cluster.unique_name("metrics"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = settings(cluster, &signer);
    s.metrics_addr = Some(([127, 0, 0, 1], port).into());
    let _c = RunningController::start_with(client.clone(), s);
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let ok = cluster.unique_name("m-ok");
    let bad = cluster.unique_name("m-bad");
    csrs.create(
        &PostParams::default(),
        &csr_object(&ok, &signer, "metrics-user", &["ha"], None),
    )
    .await
    .unwrap();
    csrs.create(
        &PostParams::default(),
        &csr_object(&bad, &signer, "metrics-user", &["system:masters"], None),
    )
    .await
    .unwrap();
    let approve = format!(
        "kcert_decisions_total{{outcome=\"approve\",reason=\"AutoApproved\",rule=\"ha\",signer=\"{signer}\"}} 1"
    );
    let deny = format!(
        "kcert_decisions_total{{outcome=\"deny\",reason=\"ProtectedGroup\",rule=\"\",signer=\"{signer}\"}} 1"
    );
    let issued = format!("kcert_issued_total{{signer=\"{signer}\"}} 1");
    let body = eventually(
        "the metrics show the decisions",
        Duration::from_secs(20),
        || async {
            let (code, body) = tokio::task::block_in_place(|| get(port, "/metrics"));
            assert_eq!(code, 200);
            if body.contains(&approve) && body.contains(&deny) && body.contains(&issued) {
                Ok(body)
            } else {
                Err(body)
            }
        },
    )
    .await;
    assert!(
        body.contains("kcert_signing_duration_seconds_bucket"),
        "{body}"
    );
    assert!(body.contains("# TYPE kcert_pending_csrs gauge"), "{body}");
    assert_eq!(tokio::task::block_in_place(|| get(port, "/healthz")).0, 200);
    assert_eq!(tokio::task::block_in_place(|| get(port, "/readyz")).0, 200);
    assert_eq!(tokio::task::block_in_place(|| get(port, "/nope")).0, 404);
}
