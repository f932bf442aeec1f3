//! Where the policy comes from, kept current: a fixed spec, a YAML file (re-read when it
//! changes), or every `ApprovalPolicy` in the cluster (watched; each gets a status).

use crate::crd::ApprovalPolicy;
use futures::StreamExt;
use kcert_kube::policies::{merge_approval_policies, parse_policy_file};
use kcert_policy::{Policy, PolicySpec};
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How the controller gets its policy.
#[derive(Clone, Debug)]
pub enum PolicySource {
    /// A fixed policy (tests, embedding).
    Static(PolicySpec),
    /// A YAML file: a bare spec, or one or more `ApprovalPolicy` documents.
    File(PathBuf),
    /// Every `ApprovalPolicy` object in the cluster.
    Crd,
}

/// The policy in force, and a label saying which version of it (for provenance).
#[derive(Clone, Debug)]
pub struct PolicySnapshot {
    /// The merged, compiled policy.
    pub policy: Arc<Policy>,
    /// e.g. `file:/etc/kcert/policy.yaml@1732634400` or `crd:onboarding@3,strict@1`.
    pub version: String,
    /// Why no CSR may be decided at all (an ApprovalPolicy that never compiled and whose
    /// protection cannot be read either): the approver leaves every CSR pending.
    pub blocked: Option<String>,
}

/// Shared, swappable policy; `changed` ticks whenever it is replaced.
#[derive(Clone)]
pub struct PolicyStore {
    current: Arc<RwLock<Option<PolicySnapshot>>>,
    changed: watch::Sender<u64>,
}

impl Default for PolicyStore {
    fn default() -> Self {
        PolicyStore {
            current: Arc::new(RwLock::new(None)),
            changed: watch::channel(0).0,
        }
    }
}

impl PolicyStore {
    /// The policy in force, if one was loaded.
    pub fn get(&self) -> Option<PolicySnapshot> {
        self.current.read().expect("policy lock").clone()
    }

    pub(crate) fn set(&self, snapshot: PolicySnapshot) {
        tracing::info!(version = %snapshot.version, rules = snapshot.policy.rules().len(), "policy loaded");
        *self.current.write().expect("policy lock") = Some(snapshot);
        self.changed.send_modify(|n| *n += 1);
    }

    /// A receiver that sees every replacement.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Load the policy once and keep it current until the task is dropped.
pub async fn keep_current(source: PolicySource, store: PolicyStore, client: Client) {
    match source {
        PolicySource::Static(spec) => match Policy::compile("static", &spec) {
            Ok(p) => store.set(PolicySnapshot {
                policy: Arc::new(Policy::merge([p])),
                version: "static".into(),
                blocked: None,
            }),
            Err(e) => {
                tracing::error!(error = %e, "the policy is invalid; nothing will be approved")
            }
        },
        PolicySource::File(path) => watch_file(path, store).await,
        PolicySource::Crd => watch_crd(client, store).await,
    }
}

async fn watch_file(path: PathBuf, store: PolicyStore) {
    let origin = path.display().to_string();
    let file = path.clone();
    crate::file_watch::watch_files(vec![path], Duration::from_secs(2), move |stamps| {
        match std::fs::read_to_string(&file) {
            Ok(text) => match parse_policy_file(&text, &origin) {
                Ok(policy) => {
                    let secs = stamps[0]
                        .and_then(|(t, _)| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs())
                        .unwrap_or_default();
                    store.set(PolicySnapshot {
                        policy: Arc::new(policy),
                        version: format!("file:{origin}@{secs}"),
                        blocked: None,
                    });
                }
                // Keep the last good policy: a typo must not stop or widen approvals.
                Err(e) => {
                    tracing::error!(error = %e, "policy file refused; keeping the previous policy")
                }
            },
            Err(e) => {
                tracing::error!(file = %origin, error = %e, "cannot read the policy file; keeping the previous policy")
            }
        }
    })
    .await
}

async fn watch_crd(client: Client, store: PolicyStore) {
    let api: Api<ApprovalPolicy> = Api::all(client);
    let (reader, writer) = kube::runtime::reflector::store::<ApprovalPolicy>();
    let stream = kube::runtime::reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .default_backoff();
    futures::pin_mut!(stream);
    // The last generation of each object that compiled (kept while the process lives).
    let mut last_accepted = kcert_kube::policies::LastAccepted::new();
    while let Some(event) = stream.next().await {
        match event {
            // Recompute once the initial list is complete, then on every change (deletes too).
            Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "watching ApprovalPolicy objects failed; retrying");
                continue;
            }
        }
        let objects = reader.state();
        let merged =
            merge_approval_policies(objects.iter().map(|o| o.as_ref()), &mut last_accepted);
        for (name, c) in &merged.contributions {
            let current = objects.iter().find(|o| &o.name_any() == name);
            if current.and_then(|o| o.status.as_ref()) != Some(&c.status) {
                let patch = serde_json::json!({ "status": c.status });
                if let Err(e) = api
                    .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::warn!(policy = %name, error = %e, "cannot write ApprovalPolicy status");
                }
            }
            if !c.status.accepted {
                tracing::error!(policy = %name, message = %c.status.message, "policy refused");
            }
        }
        // Status writes come back as events; only a new generation set changes the policy.
        if store.get().is_some_and(|s| s.version == merged.version) {
            continue;
        }
        store.set(PolicySnapshot {
            policy: Arc::new(merged.policy),
            version: merged.version,
            blocked: merged.blocked,
        });
    }
}
