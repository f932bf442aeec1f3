//! What kcert's authorization webhook costs the requests it sits in front of: an X.509 user's
//! GETs through the API server with the webhook in the chain (deploy/authorization-config.yaml,
//! kcert-controller serving it, a ledger of `records` with one in ten revoked) against a test
//! bed with the API server's default authorizers, measured in the same run, interleaved.

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kcert_testbed::TestCluster;
use kube::Api;
use kube::api::PostParams;
use std::time::{Duration, Instant};

/// GETs per second, one entry per round: (webhook on, off).
pub struct Gets {
    pub on: Vec<f64>,
    pub off: Vec<f64>,
    pub workers: usize,
    pub seconds: u32,
}

struct Bed {
    cluster: TestCluster,
    _controller: Option<kcert_tests::RunningController>,
    ns: String,
}

async fn bed(webhook: Option<&kcert_testbed::webhook::WebhookFiles>) -> Result<Bed> {
    let mut builder = TestCluster::builder();
    if let Some(files) = webhook {
        builder = builder.authorization_config(files.authorization_config.clone());
    }
    let cluster = builder.start().await?;
    kcert_tests::install_crds(&cluster).await;
    let admin = cluster.admin_client().await?;
    let controller = match webhook {
        Some(files) => {
            // A ledger like a cluster's after a while: 10,000 records, one in ten revoked.
            let api: Api<kcert_kube::crd::LedgerPage> = Api::all(admin.clone());
            for p in 0..50 {
                let mut page = kcert_kube::ledger::new_page(1_764_547_200_000 + p, p as u32);
                for i in p as usize * 200..(p as usize + 1) * 200 {
                    page.spec
                        .push(&crate::ledger_scale::record(i, i.is_multiple_of(10)));
                }
                api.create(&PostParams::default(), &page).await?;
            }
            Some(crate::revocation::webhook_controller(
                &cluster,
                admin.clone(),
                files,
                kcert_controller::PolicySource::Static(Default::default()),
            ))
        }
        None => None,
    };
    let ns = cluster.namespace("gets").await?;
    let apply = |doc: serde_json::Value| {
        let admin = admin.clone();
        let ns = ns.clone();
        async move {
            match doc["kind"].as_str() {
                Some("Role") => {
                    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin, &ns)
                        .create(&PostParams::default(), &serde_json::from_value(doc)?)
                        .await?;
                }
                Some("RoleBinding") => {
                    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin, &ns)
                        .create(&PostParams::default(), &serde_json::from_value(doc)?)
                        .await?;
                }
                _ => {
                    Api::<ConfigMap>::namespaced(admin, &ns)
                        .create(&PostParams::default(), &serde_json::from_value(doc)?)
                        .await?;
                }
            }
            anyhow::Ok(())
        }
    };
    apply(
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "cm-reader", "namespace": ns},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}),
    )
    .await?;
    apply(serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "readers", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
        "subjects": [{"kind": "Group", "name": "readers", "apiGroup": "rbac.authorization.k8s.io"}]}))
    .await?;
    apply(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": ns}, "data": {"greeting": "hello"}}))
    .await?;
    Ok(Bed {
        cluster,
        _controller: controller,
        ns,
    })
}

/// `workers` clients of one X.509 user GET one ConfigMap as fast as they can for `seconds`.
async fn round(bed: &Bed, workers: usize, seconds: u32) -> Result<f64> {
    let client = bed.cluster.user_client("getter", &["readers"]).await?;
    let api: Api<ConfigMap> = Api::namespaced(client, &bed.ns);
    // Allowed first (with the webhook: once its ledger is read).
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get("settings").await.is_err() {
        ensure!(
            Instant::now() < deadline,
            "the user's GET was never allowed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let until = Instant::now() + Duration::from_secs(u64::from(seconds));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    api.get("settings").await?;
                    n += 1;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// `rounds` of each, interleaved, on two test beds up at the same time.
pub async fn run(rounds: usize, workers: usize, seconds: u32) -> Result<Gets> {
    let dir = std::env::temp_dir().join(format!("kcert-bench-gets-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let files =
        kcert_testbed::webhook::WebhookFiles::create(&dir, kcert_testbed::webhook::free_port()?)?;
    let with = bed(Some(&files)).await?;
    let without = bed(None).await?;
    let mut out = Gets {
        on: Vec::new(),
        off: Vec::new(),
        workers,
        seconds,
    };
    for r in 0..rounds {
        let on = round(&with, workers, seconds).await?;
        let off = round(&without, workers, seconds).await?;
        eprintln!("round {r}: webhook on {on:.0} GET/s, off {off:.0} GET/s");
        out.on.push(on);
        out.off.push(off);
    }
    with.cluster.stop();
    without.cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
