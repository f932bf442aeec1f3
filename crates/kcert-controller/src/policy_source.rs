//! Where the policy comes from, kept current: a fixed spec, a YAML file (re-read when it
//! changes), or every `ApprovalPolicy` in the cluster (watched; each gets a status).

use crate::crd::{ApprovalPolicy, ApprovalPolicyStatus};
use futures::StreamExt;
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

/// Parse a policy file: a bare spec, or `ApprovalPolicy` documents (merged in order).
pub fn parse_policy_file(text: &str, origin: &str) -> Result<Policy, String> {
    let mut policies = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| format!("{origin}: document {}: {e}", i + 1))?;
        if value.is_null() {
            continue;
        }
        if value.get("kind").and_then(|k| k.as_str()) == Some("ApprovalPolicy") {
            let obj: ApprovalPolicy = serde_yaml::from_value(value)
                .map_err(|e| format!("{origin}: document {}: {e}", i + 1))?;
            let name = obj.name_any();
            policies.push(
                Policy::compile(&name, &PolicySpec::from(&obj.spec))
                    .map_err(|e| format!("{origin}: {e}"))?,
            );
        } else {
            let spec: PolicySpec = serde_yaml::from_value(value)
                .map_err(|e| format!("{origin}: document {}: {e}", i + 1))?;
            policies.push(Policy::compile(origin, &spec).map_err(|e| e.to_string())?);
        }
    }
    if policies.is_empty() {
        return Err(format!("{origin}: no policy in the file"));
    }
    Ok(Policy::merge(policies))
}

use serde::Deserialize as _;

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
    let mut last: Option<(SystemTime, u64)> = None;
    loop {
        let stamp = std::fs::metadata(&path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp != last {
            last = stamp;
            let origin = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => match parse_policy_file(&text, &origin) {
                    Ok(policy) => {
                        let secs = stamp
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
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// What one ApprovalPolicy contributes, and the status that says so.
#[derive(Debug)]
pub struct Contribution {
    /// The policy in force for this object (None: it blocks every decision).
    pub policy: Option<Policy>,
    /// Its label in the policy version (`name@generation`).
    pub version: String,
    /// The status to write.
    pub status: ApprovalPolicyStatus,
}

/// What an ApprovalPolicy contributes, failing closed (pure; `last` is the generation accepted
/// before, if any):
/// - it compiles: it is in force;
/// - it does not, but an earlier generation did: that generation stays in force;
/// - it never did: its protectedGroups and whenNoRuleMatches stand (no rules) if those are
///   valid; otherwise no CSR may be decided until it is fixed.
pub fn contribution(
    name: &str,
    generation: Option<i64>,
    spec: &PolicySpec,
    last: Option<&(Option<i64>, Policy)>,
) -> Contribution {
    let gen_label = |g: Option<i64>| g.map(|g| g.to_string()).unwrap_or_else(|| "?".into());
    match Policy::compile(name, spec) {
        Ok(p) => Contribution {
            version: format!("{name}@{}", generation.unwrap_or_default()),
            status: ApprovalPolicyStatus {
                observed_generation: generation,
                accepted: true,
                message: format!("{} rule(s) in force", p.rules().len()),
                rules: p.rules().len() as u32,
                in_force_generation: generation,
            },
            policy: Some(p),
        },
        Err(e) => match last {
            Some((last_gen, p)) => Contribution {
                version: format!("{name}@{}", last_gen.unwrap_or_default()),
                status: ApprovalPolicyStatus {
                    observed_generation: generation,
                    accepted: false,
                    message: format!(
                        "generation {} refused: {e}; generation {} stays in force",
                        gen_label(generation),
                        gen_label(*last_gen)
                    ),
                    rules: p.rules().len() as u32,
                    in_force_generation: *last_gen,
                },
                policy: Some(p.clone()),
            },
            None => match Policy::fallback(name, spec) {
                Ok(p) => Contribution {
                    version: format!("{name}@{}:protection-only", generation.unwrap_or_default()),
                    status: ApprovalPolicyStatus {
                        observed_generation: generation,
                        accepted: false,
                        message: format!(
                            "refused: {e}; only its protectedGroups and whenNoRuleMatches are in force"
                        ),
                        rules: 0,
                        in_force_generation: None,
                    },
                    policy: Some(p),
                },
                Err(fallback_error) => Contribution {
                    version: format!("{name}@{}:blocked", generation.unwrap_or_default()),
                    status: ApprovalPolicyStatus {
                        observed_generation: generation,
                        accepted: false,
                        message: format!(
                            "refused: {e}; its protection cannot be read either ({fallback_error}), so no CSR is decided until it is fixed"
                        ),
                        rules: 0,
                        in_force_generation: None,
                    },
                    policy: None,
                },
            },
        },
    }
}

async fn watch_crd(client: Client, store: PolicyStore) {
    let api: Api<ApprovalPolicy> = Api::all(client);
    let (reader, writer) = kube::runtime::reflector::store::<ApprovalPolicy>();
    let stream = kube::runtime::reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .default_backoff();
    futures::pin_mut!(stream);
    // The last generation of each object that compiled (kept while the process lives).
    let mut last_accepted: std::collections::BTreeMap<String, (Option<i64>, Policy)> =
        Default::default();
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
        let mut objects = reader.state();
        objects.sort_by_key(|o| o.name_any());
        last_accepted.retain(|name, _| objects.iter().any(|o| &o.name_any() == name));
        let mut in_force = Vec::new();
        let mut version = Vec::new();
        let mut blocked = Vec::new();
        for obj in &objects {
            let name = obj.name_any();
            let generation = obj.metadata.generation;
            let c = contribution(
                &name,
                generation,
                &PolicySpec::from(&obj.spec),
                last_accepted.get(&name),
            );
            if c.status.accepted
                && let Some(p) = &c.policy
            {
                last_accepted.insert(name.clone(), (generation, p.clone()));
            }
            if obj.status.as_ref() != Some(&c.status) {
                let patch = serde_json::json!({ "status": c.status });
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::warn!(policy = %name, error = %e, "cannot write ApprovalPolicy status");
                }
            }
            if !c.status.accepted {
                tracing::error!(policy = %name, message = %c.status.message, "policy refused");
            }
            version.push(c.version);
            match c.policy {
                Some(p) => in_force.push(p),
                None => blocked.push(format!("ApprovalPolicy {name}: {}", c.status.message)),
            }
        }
        let version = format!("crd:{}", version.join(","));
        // Status writes come back as events; only a new generation set changes the policy.
        if store.get().is_some_and(|s| s.version == version) {
            continue;
        }
        store.set(PolicySnapshot {
            policy: Arc::new(Policy::merge(in_force)),
            version,
            blocked: (!blocked.is_empty()).then(|| blocked.join("; ")),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PolicySpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_refused_generation_never_widens_what_is_approved() {
        let good = spec(
            "protectedGroups: [ops-admins]\nrules: [{id: a, requesters: {users: ['*']}, commonName: {glob: '*'}, groups: {allowed: ['*']}}]",
        );
        let bad = spec(
            "protectedGroups: [ops-admins]\nrules: [{id: a, requesters: {users: ['*']}, commonName: {regex: '('}}]",
        );
        let first = contribution("ops", Some(1), &good, None);
        assert!(first.status.accepted);
        let last = (Some(1), first.policy.unwrap());
        // Edited into something that does not compile: generation 1 stays.
        let c = contribution("ops", Some(2), &bad, Some(&last));
        assert!(!c.status.accepted);
        assert_eq!(c.status.in_force_generation, Some(1));
        assert!(
            c.status.message.contains("generation 2 refused"),
            "{}",
            c.status.message
        );
        assert!(c.policy.unwrap().is_protected_group("ops-admins"));
        // Never compiled (e.g. after a restart): its protection alone.
        let c = contribution("ops", Some(2), &bad, None);
        let p = c.policy.unwrap();
        assert!(p.rules().is_empty() && p.is_protected_group("ops-admins"));
        assert!(c.version.ends_with("protection-only"));
        // Not even its protection reads: everything waits.
        let worse = spec(
            "protectedGroups: ['']\nrules: [{id: a, requesters: {users: ['*']}, commonName: {regex: '('}}]",
        );
        let c = contribution("ops", Some(3), &worse, None);
        assert!(c.policy.is_none());
        assert!(
            c.status.message.contains("no CSR is decided"),
            "{}",
            c.status.message
        );
    }
}
