//! Faults on a control plane of its own: 1,000 CSRs while the controller is killed five times
//! and the API server restarted twice (etcd data kept), then etcd frozen for 10 s.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_controller::PolicySource;
use kcert_testbed::TestCluster;
use kcert_tests::{RunningController, conditions, csr_object, eventually, issued, wait_for};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use std::time::Duration;

const N: usize = 1000;

/// A small deterministic jitter source (no extra crate): xorshift seeded from the clock.
struct Jitter(u64);
impl Jitter {
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_restarts_lose_or_duplicate_nothing_and_a_frozen_etcd_is_survived() {
    let cluster = TestCluster::start().await.unwrap();
    let admin = cluster.admin_client().await.unwrap();
    let signer = "kcert.dev/faults".to_string();
    let policy: kcert_policy::PolicySpec = serde_yaml::from_str(
        "rules: [{id: load, requesters: {users: [kcert-testbed-admin]}, commonName: {glob: 'load-*'}, groups: {allowed: [load]}}]",
    )
    .unwrap();
    let start = |c: &TestCluster, client: kube::Client| {
        RunningController::start(
            c,
            client,
            &signer,
            PolicySource::Static(policy.clone()),
            Duration::from_secs(3600),
        )
    };
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());

    // Create N CSRs in the background, retrying through API server restarts.
    let creator = {
        let csrs = csrs.clone();
        let signer = signer.clone();
        tokio::spawn(async move {
            let mut retries = 0usize;
            for chunk in (0..N).collect::<Vec<_>>().chunks(20) {
                let futs = chunk.iter().map(|i| {
                    let csrs = csrs.clone();
                    let csr = csr_object(
                        &format!("fault-{i}"),
                        &signer,
                        &format!("load-{i}"),
                        &["load"],
                        None,
                    );
                    async move {
                        let mut tries = 0;
                        loop {
                            match csrs.create(&PostParams::default(), &csr).await {
                                Ok(_) => return tries,
                                Err(kube::Error::Api(s)) if s.code == 409 => return tries,
                                Err(_) if tries < 300 => {
                                    tries += 1;
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                Err(e) => panic!("cannot create {}: {e}", csr.name_any()),
                            }
                        }
                    }
                });
                retries += futures::future::join_all(futs)
                    .await
                    .into_iter()
                    .sum::<usize>();
            }
            retries
        })
    };

    let mut jitter = Jitter(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    let mut controller = start(&cluster, admin.clone());
    let faults = [
        "kill",
        "restart-apiserver",
        "kill",
        "kill",
        "restart-apiserver",
        "kill",
        "kill",
    ];
    for fault in faults {
        tokio::time::sleep(jitter.ms(300, 1500)).await;
        match fault {
            "kill" => {
                controller.kill();
                controller = start(&cluster, cluster.admin_client().await.unwrap());
            }
            _ => cluster.restart_apiserver().await.unwrap(),
        }
    }
    let retries = creator.await.unwrap();
    let lp = ListParams::default().fields(&format!("spec.signerName={signer}"));
    let all = eventually(
        "all issued after the faults",
        Duration::from_secs(180),
        || async {
            match csrs.list(&lp).await {
                Ok(list) if list.items.len() == N && list.items.iter().all(issued) => {
                    Ok(list.items)
                }
                Ok(list) => Err(format!(
                    "{} of {N} issued",
                    list.items.iter().filter(|c| issued(c)).count()
                )),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    for csr in &all {
        let conds = conditions(csr);
        assert_eq!(conds.len(), 1, "{}: {conds:?}", csr.name_any());
        assert_eq!(conds[0].0, "Approved", "{}", csr.name_any());
    }
    eprintln!(
        "faults: {N} CSRs issued once each through 5 controller kills and 2 API server restarts ({retries} create retries)"
    );

    // etcd frozen for 10 s: the controller keeps running and recovers by itself.
    cluster.pause_etcd(true).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster.pause_etcd(false).unwrap();
    let after = csr_object("fault-after-etcd", &signer, "load-after", &["load"], None);
    eventually(
        "the API server recovers",
        Duration::from_secs(60),
        || async {
            match csrs.create(&PostParams::default(), &after).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    wait_for(
        &csrs,
        "fault-after-etcd",
        Duration::from_secs(60),
        "issued after etcd came back",
        issued,
    )
    .await;
    drop(controller);
}
