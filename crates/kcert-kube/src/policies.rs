//! Policies as the cluster and files hold them, merged the way the controller and the CLI both
//! merge them: files parse to one policy; each ApprovalPolicy contributes what it can, failing
//! closed (a refused generation never widens what is approved).

use crate::crd::{ApprovalPolicy, ApprovalPolicyStatus};
use kcert_policy::{Policy, PolicySpec};
use kube::ResourceExt;
use serde::Deserialize as _;

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

/// The last generation of each ApprovalPolicy that compiled, by name (the controller keeps it
/// while it runs; the CLI has none).
pub type LastAccepted = std::collections::BTreeMap<String, (Option<i64>, Policy)>;

/// Every ApprovalPolicy merged into the policy in force.
#[derive(Debug)]
pub struct MergedPolicies {
    /// The merged policy.
    pub policy: Policy,
    /// `crd:name@generation,...` (a refused object shows which generation stands for it).
    pub version: String,
    /// Why nothing may be decided (objects whose protection cannot be read), if so.
    pub blocked: Option<String>,
    /// Each object's name and contribution (with the status to write), in merge order.
    pub contributions: Vec<(String, Contribution)>,
}

/// Merge `objects` in name order, each failing closed ([`contribution`]); `last` is updated with
/// every generation accepted now.
pub fn merge_approval_policies<'a>(
    objects: impl IntoIterator<Item = &'a ApprovalPolicy>,
    last: &mut LastAccepted,
) -> MergedPolicies {
    let mut objects: Vec<&ApprovalPolicy> = objects.into_iter().collect();
    objects.sort_by_key(|o| o.name_any());
    last.retain(|name, _| objects.iter().any(|o| &o.name_any() == name));
    let mut in_force = Vec::new();
    let mut version = Vec::new();
    let mut blocked = Vec::new();
    let mut contributions = Vec::new();
    for obj in objects {
        let name = obj.name_any();
        let generation = obj.metadata.generation;
        let c = contribution(
            &name,
            generation,
            &PolicySpec::from(&obj.spec),
            last.get(&name),
        );
        if c.status.accepted
            && let Some(p) = &c.policy
        {
            last.insert(name.clone(), (generation, p.clone()));
        }
        version.push(c.version.clone());
        match &c.policy {
            Some(p) => in_force.push(p.clone()),
            None => blocked.push(format!("ApprovalPolicy {name}: {}", c.status.message)),
        }
        contributions.push((name, c));
    }
    MergedPolicies {
        policy: Policy::merge(in_force),
        version: format!("crd:{}", version.join(",")),
        blocked: (!blocked.is_empty()).then(|| blocked.join("; ")),
        contributions,
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

    #[test]
    fn merging_keeps_each_objects_last_accepted_generation() {
        let obj = |name: &str, generation: i64, spec: &PolicySpec| {
            let mut o = ApprovalPolicy::new(
                name,
                crate::crd::ApprovalPolicySpec {
                    when_no_rule_matches: spec.when_no_rule_matches,
                    protected_groups: spec.protected_groups.clone(),
                    exempt_groups: spec.exempt_groups.clone(),
                    exempt_users: spec.exempt_users.clone(),
                    subject_limits: spec.subject_limits.clone(),
                    rules: spec.rules.clone(),
                },
            );
            o.metadata.generation = Some(generation);
            o
        };
        let good =
            spec("protectedGroups: [ops-admins]\nrules: [{id: a, requesters: {users: ['*']}}]");
        let bad = spec("rules: [{id: a, requesters: {users: ['*']}, commonName: {regex: '('}}]");
        let mut last = LastAccepted::new();
        let m = merge_approval_policies([&obj("b", 1, &good), &obj("a", 1, &good)], &mut last);
        assert_eq!(m.version, "crd:a@1,b@1");
        assert_eq!(m.policy.rules().len(), 2);
        let m = merge_approval_policies([&obj("b", 2, &bad), &obj("a", 1, &good)], &mut last);
        assert_eq!(m.version, "crd:a@1,b@1", "b's generation 1 stands for it");
        assert!(m.blocked.is_none());
        assert!(!m.contributions[1].1.status.accepted);
        assert!(m.policy.is_protected_group("ops-admins"));
        // Deleted objects are forgotten.
        let m = merge_approval_policies([&obj("a", 1, &good)], &mut last);
        assert_eq!(last.len(), 1);
        assert_eq!(m.policy.rules().len(), 1);
    }
}
