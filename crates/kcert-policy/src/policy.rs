//! A policy checked and compiled: patterns parsed, regexes built, durations read. Only a
//! compiled [`Policy`] can be evaluated, so a bad policy fails when loaded, not per request.

use crate::spec::{NoMatchAction, PolicySpec, RuleSpec};
use crate::{cel_budget, duration, glob};
use kcert_pki::{CLIENT_USAGES, Usage};
use std::collections::{BTreeMap, BTreeSet};

/// Usages a rule grants when it names none: Kubernetes' client usages (kcert-pki's
/// [`kcert_pki::CLIENT_USAGES`], spelled as the API spells them).
pub const DEFAULT_USAGES: [&str; 3] = [
    CLIENT_USAGES[0].as_str(),
    CLIENT_USAGES[1].as_str(),
    CLIENT_USAGES[2].as_str(),
];

/// Groups never approved, whatever a policy says: every `system:` group (Kubernetes reserves
/// the prefix: masters, nodes, serviceaccounts, bootstrappers, monitoring, ...), and
/// `kubeadm:cluster-admins`, which kubeadm (1.29+) binds to cluster-admin.
pub const BUILTIN_PROTECTED_GROUPS: [&str; 2] = ["system:*", "kubeadm:cluster-admins"];

/// Most rules one policy (one ApprovalPolicy object) may hold; the CRD says the same, which
/// lets the API server bound the cost of its validation rules.
pub const MAX_RULES: usize = 256;

/// Bounds on a request, checked before any rule (each violation has its own reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubjectLimits {
    /// Longest CN in bytes.
    pub max_common_name_bytes: usize,
    /// Longest O in bytes.
    pub max_group_bytes: usize,
    /// Most O values.
    pub max_groups: usize,
    /// Largest `spec.request` in bytes.
    pub max_request_bytes: usize,
}

impl Default for SubjectLimits {
    /// Sizes no real user reaches: a DNS name's 253 bytes for CN and O, 64 groups, 64 KiB.
    fn default() -> Self {
        SubjectLimits {
            max_common_name_bytes: 253,
            max_group_bytes: 253,
            max_groups: 64,
            max_request_bytes: 65_536,
        }
    }
}

const KEY_TYPES: [&str; 5] = ["rsa", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519"];

/// Why a policy was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy '{policy}': {message}")]
pub struct PolicyError {
    /// The policy's name.
    pub policy: String,
    /// What is wrong, naming the rule and field.
    pub message: String,
}

/// One compiled CEL condition.
#[derive(Clone)]
pub(crate) struct Condition {
    pub(crate) source: String,
    pub(crate) program: std::sync::Arc<cel::Program>,
    /// Its worst-case cost over inputs within the CEL bounds ([`crate::cel_budget`]).
    pub(crate) cost: u64,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

/// Bounds on CEL conditions: count and size here, worst-case cost in [`crate::cel_budget`]
/// (a condition over [`crate::cel_budget::MAX_CONDITION_COST`] does not compile).
pub const MAX_CONDITIONS: usize = 16;
/// Longest CEL condition, in bytes.
pub const MAX_CONDITION_BYTES: usize = 1024;

#[derive(Clone, Debug)]
pub(crate) enum UidRule {
    /// A request carrying a UID is denied.
    Refuse,
    /// The UID must equal the requester's.
    SelfUid,
    /// The UID must be exactly this.
    Exact(String),
}

#[derive(Clone, Debug)]
pub(crate) enum CommonName {
    SelfName,
    Exact(String),
    Glob(String),
    Regex(regex::Regex),
}

impl CommonName {
    pub(crate) fn describe(&self) -> String {
        match self {
            CommonName::SelfName => "self".into(),
            CommonName::Exact(s) => format!("exact '{s}'"),
            CommonName::Glob(s) => format!("glob '{s}'"),
            CommonName::Regex(r) => format!("regex '{}'", r.as_str()),
        }
    }
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The rule's id.
    pub id: String,
    /// The policy it came from.
    pub policy: String,
    pub(crate) signer_names: Vec<String>,
    pub(crate) users: Vec<String>,
    pub(crate) groups: Vec<String>,
    pub(crate) service_accounts: Vec<(String, String)>,
    pub(crate) common_name: CommonName,
    pub(crate) allowed_groups: Vec<String>,
    pub(crate) groups_by_requester_group: BTreeMap<String, Vec<String>>,
    pub(crate) groups_from_requester: bool,
    pub(crate) usages: BTreeSet<String>,
    pub(crate) max_duration_seconds: Option<u64>,
    pub(crate) key_types: Vec<String>,
    pub(crate) min_rsa_bits: u32,
    pub(crate) san_dns: Option<Vec<String>>,
    pub(crate) san_ips: Vec<String>,
    pub(crate) san_emails: Vec<String>,
    pub(crate) san_uris: Vec<String>,
    pub(crate) uid: UidRule,
    /// A renewal rule: the longest chain of renewals, in seconds.
    pub(crate) renewal_max_chain_seconds: Option<u64>,
    pub(crate) conditions: Vec<Condition>,
}

impl Rule {
    /// Whether the rule is a renewal rule (needs the ledger to decide).
    pub fn is_renewal(&self) -> bool {
        self.renewal_max_chain_seconds.is_some()
    }
    /// `rule 'id' of policy 'name'`, as messages say it.
    pub fn label(&self) -> String {
        format!("rule '{}' of policy '{}'", self.id, self.policy)
    }
}

/// A checked policy, possibly merged from several `ApprovalPolicy` objects.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub(crate) no_match: NoMatchAction,
    pub(crate) protected_groups: Vec<String>,
    pub(crate) exempt_groups: BTreeSet<String>,
    pub(crate) exempt_users: BTreeSet<String>,
    pub(crate) limits: SubjectLimits,
    /// Limits a policy set explicitly (merging takes the smallest of these).
    pub(crate) limits_set: [Option<usize>; 4],
    pub(crate) rules: Vec<Rule>,
}

impl Policy {
    /// Check and compile `spec`, named `name` in messages.
    pub fn compile(name: &str, spec: &PolicySpec) -> Result<Self, PolicyError> {
        let err = |message: String| PolicyError {
            policy: name.to_string(),
            message,
        };
        if spec.rules.len() > MAX_RULES {
            return Err(err(format!(
                "{} rules; at most {MAX_RULES} fit in one policy: split it into several",
                spec.rules.len()
            )));
        }
        let mut seen = BTreeSet::new();
        let mut rules = Vec::new();
        let mut patterns = cel_budget::Patterns::default();
        let mut total: u64 = 0;
        for (i, rule) in spec.rules.iter().enumerate() {
            if rule.id.trim().is_empty() {
                return Err(err(format!(
                    "rules[{i}]: id is empty; give every rule a name"
                )));
            }
            if !seen.insert(rule.id.clone()) {
                return Err(err(format!(
                    "rule '{}' appears twice; rule ids must be unique",
                    rule.id
                )));
            }
            let compiled = compile_rule(name, rule, &mut patterns)
                .map_err(|m| err(format!("rule '{}': {m}", rule.id)))?;
            // Checked as rules compile, so that an over-budget policy stops being estimated
            // early. A rule with conditions also pays for converting the variables it reads
            // ([`cel_budget::CONTEXT_COST`]).
            if !compiled.conditions.is_empty() {
                total = total.saturating_add(cel_budget::CONTEXT_COST);
            }
            total = compiled
                .conditions
                .iter()
                .fold(total, |acc, c| acc.saturating_add(c.cost));
            if total > cel_budget::MAX_POLICY_CONDITION_COST {
                return Err(err(format!(
                    "its conditions may cost more than {} steps together, the most one policy may (reached at rule '{}'): simplify them or split the policy",
                    cel_budget::MAX_POLICY_CONDITION_COST,
                    rule.id
                )));
            }
            rules.push(compiled);
        }
        let mut policy = Self::fallback(name, spec)?;
        policy.rules = rules;
        Ok(policy)
    }

    /// What stands of `spec` without its rules: protected groups, exemptions, limits and the
    /// action for unmatched requests, checked. For an `ApprovalPolicy` whose rules do not compile:
    /// it still protects what it names and denies what it would deny (fail closed).
    pub fn fallback(name: &str, spec: &PolicySpec) -> Result<Self, PolicyError> {
        let err = |message: String| PolicyError {
            policy: name.to_string(),
            message,
        };
        for g in &spec.protected_groups {
            if g.trim().is_empty() {
                return Err(err("protectedGroups has an empty entry".into()));
            }
        }
        for g in &spec.exempt_groups {
            if g.trim() != g || g.is_empty() || g.contains(['*', '?']) {
                return Err(err(format!(
                    "exemptGroups entry {g:?} must be an exact group name (no patterns, no surrounding spaces)"
                )));
            }
        }
        for u in &spec.exempt_users {
            if u.trim() != u || u.is_empty() || u.contains(['*', '?']) {
                return Err(err(format!(
                    "exemptUsers entry {u:?} must be an exact user name (no patterns, no surrounding spaces)"
                )));
            }
            if u.to_lowercase().starts_with("system:") {
                return Err(err(format!(
                    "exemptUsers entry {u:?} is a system: user; those are never approved"
                )));
            }
        }
        let mut protected: Vec<String> = BUILTIN_PROTECTED_GROUPS
            .iter()
            .map(|s| s.to_string())
            .collect();
        protected.extend(
            spec.protected_groups
                .iter()
                .map(|g| g.trim().to_lowercase()),
        );
        let l = spec.subject_limits.clone().unwrap_or_default();
        let set = [
            l.max_common_name_bytes,
            l.max_group_bytes,
            l.max_groups,
            l.max_request_bytes,
        ]
        .map(|v| v.map(|n| n as usize));
        if set.contains(&Some(0)) {
            return Err(err(
                "subjectLimits: a limit of 0 would refuse every request; remove it or raise it"
                    .into(),
            ));
        }
        let mut policy = Policy {
            no_match: spec.when_no_rule_matches,
            protected_groups: protected,
            exempt_groups: spec.exempt_groups.iter().cloned().collect(),
            exempt_users: spec.exempt_users.iter().cloned().collect(),
            limits: SubjectLimits::default(),
            limits_set: set,
            rules: Vec::new(),
        };
        policy.apply_limits();
        Ok(policy)
    }

    fn apply_limits(&mut self) {
        let d = SubjectLimits::default();
        let [cn, o, n, req] = self.limits_set;
        self.limits = SubjectLimits {
            max_common_name_bytes: cn.unwrap_or(d.max_common_name_bytes),
            max_group_bytes: o.unwrap_or(d.max_group_bytes),
            max_groups: n.unwrap_or(d.max_groups),
            max_request_bytes: req.unwrap_or(d.max_request_bytes),
        };
    }

    /// The bounds checked before any rule.
    pub fn limits(&self) -> SubjectLimits {
        self.limits
    }

    /// Whether `user` is exempt from protection derived from RBAC bindings.
    pub fn is_exempt_user(&self, user: &str) -> bool {
        self.exempt_users.contains(user)
    }

    /// Whether `group` is exempt from protection derived from RBAC bindings.
    pub fn is_exempt_group(&self, group: &str) -> bool {
        self.exempt_groups.contains(group)
    }

    /// Merge several policies (e.g. every accepted `ApprovalPolicy`, in name order): rules are
    /// concatenated, protected groups united, and `Deny` wins for unmatched requests.
    pub fn merge(policies: impl IntoIterator<Item = Policy>) -> Policy {
        let mut merged = Policy {
            protected_groups: BUILTIN_PROTECTED_GROUPS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..Default::default()
        };
        for p in policies {
            if p.no_match == NoMatchAction::Deny {
                merged.no_match = NoMatchAction::Deny;
            }
            for g in p.protected_groups {
                if !merged.protected_groups.contains(&g) {
                    merged.protected_groups.push(g);
                }
            }
            merged.exempt_groups.extend(p.exempt_groups);
            merged.exempt_users.extend(p.exempt_users);
            for (m, v) in merged.limits_set.iter_mut().zip(p.limits_set) {
                *m = match (*m, v) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            merged.rules.extend(p.rules);
        }
        merged.apply_limits();
        merged
    }

    /// Whether any rule is a renewal rule (then the ledger must be read before deciding).
    pub fn needs_ledger(&self) -> bool {
        self.rules.iter().any(Rule::is_renewal)
    }

    /// Whether any rule has CEL conditions (an evaluation may then take milliseconds, within
    /// [`cel_budget::MAX_POLICY_CONDITION_COST`]; without, microseconds).
    pub fn has_conditions(&self) -> bool {
        self.rules.iter().any(|r| !r.conditions.is_empty())
    }

    /// The rules, in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What happens when no rule matches.
    pub fn no_match_action(&self) -> NoMatchAction {
        self.no_match
    }

    /// Whether `group` is protected (compared trimmed and lower-cased, so look-alikes such as
    /// `System:Masters ` are caught too).
    pub fn is_protected_group(&self, group: &str) -> bool {
        let normalized = group.trim().to_lowercase();
        self.protected_groups
            .iter()
            .any(|p| glob::matches(p, &normalized))
    }
}

fn check_patterns(field: &str, patterns: &[String]) -> Result<(), String> {
    for p in patterns {
        if p.trim().is_empty() || p.trim() != p {
            return Err(format!(
                "{field} has an empty entry or one with surrounding spaces: {p:?}"
            ));
        }
    }
    Ok(())
}

fn compile_rule(
    policy: &str,
    r: &RuleSpec,
    patterns: &mut cel_budget::Patterns,
) -> Result<Rule, String> {
    check_patterns("signerNames", &r.signer_names)?;
    check_patterns("requesters.users", &r.requesters.users)?;
    check_patterns("requesters.groups", &r.requesters.groups)?;
    if r.requesters.users.is_empty()
        && r.requesters.groups.is_empty()
        && r.requesters.service_accounts.is_empty()
    {
        return Err("requesters names nobody; list users, groups or serviceAccounts (groups: [system:authenticated] for everyone)".into());
    }
    let mut service_accounts = Vec::new();
    for sa in &r.requesters.service_accounts {
        match sa.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                service_accounts.push((ns.to_string(), name.to_string()))
            }
            _ => {
                return Err(format!(
                    "requesters.serviceAccounts entry {sa:?} is not NAMESPACE/NAME"
                ));
            }
        }
    }
    let common_name = match &r.common_name {
        None => CommonName::SelfName,
        Some(cn) => {
            let set = [
                cn.self_,
                cn.exact.is_some(),
                cn.glob.is_some(),
                cn.regex.is_some(),
            ];
            if set.iter().filter(|b| **b).count() != 1 {
                return Err("commonName needs exactly one of self, exact, glob, regex".into());
            }
            if cn.self_ {
                CommonName::SelfName
            } else if let Some(e) = &cn.exact {
                CommonName::Exact(e.clone())
            } else if let Some(g) = &cn.glob {
                CommonName::Glob(g.clone())
            } else {
                let re = cn.regex.as_deref().unwrap_or_default();
                // Compiled on its own first: only a complete expression may be anchored, so
                // `nobody)|(.*` is refused instead of becoming `^(?:nobody)|(.*)$`.
                regex::Regex::new(re).map_err(|e| format!("commonName.regex is invalid: {e}"))?;
                CommonName::Regex(
                    regex::Regex::new(&format!("^(?:{re})$"))
                        .map_err(|e| format!("commonName.regex is invalid: {e}"))?,
                )
            }
        }
    };
    let groups = r.groups.clone().unwrap_or_default();
    check_patterns("groups.allowed", &groups.allowed)?;
    let usages: BTreeSet<String> = match &r.usages {
        None => DEFAULT_USAGES.iter().map(|s| s.to_string()).collect(),
        Some(list) => {
            for u in list {
                match u.parse::<Usage>() {
                    Err(_) => return Err(format!("usages: unknown usage {u:?}")),
                    Ok(Usage::CertSign | Usage::CrlSign) => {
                        return Err(format!(
                            "usages: {u:?} would make a CA; kcert never grants it"
                        ));
                    }
                    Ok(_) => {}
                }
            }
            list.iter().cloned().collect()
        }
    };
    let max_duration_seconds = match &r.max_duration {
        None => None,
        Some(d) => Some(
            duration::parse(d)
                .map_err(|e| format!("maxDuration: {e}"))?
                .as_secs(),
        ),
    };
    let keys = r.keys.clone().unwrap_or_default();
    for t in &keys.types {
        if !KEY_TYPES.contains(&t.as_str()) {
            return Err(format!(
                "keys.types: unknown key type {t:?}; use {}",
                KEY_TYPES.join(", ")
            ));
        }
    }
    let min_rsa_bits = keys.min_rsa_bits.unwrap_or(2048);
    if min_rsa_bits < 2048 {
        return Err(format!(
            "keys.minRsaBits {min_rsa_bits} is below 2048; kcert never accepts weaker RSA keys"
        ));
    }
    let sans = r.subject_alt_names.clone();
    let uid = match &r.uid {
        None => UidRule::Refuse,
        Some(u) => match (u.self_, &u.exact) {
            (true, None) => UidRule::SelfUid,
            (false, Some(e)) if !e.is_empty() => UidRule::Exact(e.clone()),
            _ => return Err("uid needs exactly one of self: true or a non-empty exact".into()),
        },
    };
    let renewal_max_chain_seconds = match &r.renewal {
        None => None,
        Some(renewal) => Some(
            duration::parse(&renewal.max_chain_age)
                .map_err(|e| format!("renewal.maxChainAge: {e}"))?
                .as_secs(),
        ),
    };
    if r.conditions.len() > MAX_CONDITIONS {
        return Err(format!(
            "{} conditions; at most {MAX_CONDITIONS}",
            r.conditions.len()
        ));
    }
    let mut conditions = Vec::new();
    for (i, source) in r.conditions.iter().enumerate() {
        if source.len() > MAX_CONDITION_BYTES {
            return Err(format!(
                "conditions[{i}] is {} bytes; at most {MAX_CONDITION_BYTES}",
                source.len()
            ));
        }
        let program = cel::Program::compile(source)
            .map_err(|e| format!("conditions[{i}] {source:?} does not compile: {e}"))?;
        let cost = cel_budget::estimate_in(&program, patterns)
            .map_err(|e| format!("conditions[{i}] {source:?} is refused: {e}"))?;
        if cost > cel_budget::MAX_CONDITION_COST {
            return Err(format!(
                "conditions[{i}] {source:?} may cost up to {cost} steps over the largest requests, more than the {} a condition may: iterate over fewer or smaller lists, or nest fewer comprehensions",
                cel_budget::MAX_CONDITION_COST
            ));
        }
        conditions.push(Condition {
            source: source.clone(),
            program: std::sync::Arc::new(program),
            cost,
        });
    }
    Ok(Rule {
        uid,
        renewal_max_chain_seconds,
        conditions,
        id: r.id.clone(),
        policy: policy.to_string(),
        signer_names: r.signer_names.clone(),
        users: r.requesters.users.clone(),
        groups: r.requesters.groups.clone(),
        service_accounts,
        common_name,
        allowed_groups: groups.allowed,
        groups_by_requester_group: groups.by_requester_group,
        groups_from_requester: groups.from_requester,
        usages,
        max_duration_seconds,
        key_types: if keys.types.is_empty() {
            KEY_TYPES.iter().map(|s| s.to_string()).collect()
        } else {
            keys.types
        },
        min_rsa_bits,
        san_dns: sans.as_ref().map(|s| s.dns.clone()),
        san_ips: sans.as_ref().map(|s| s.ips.clone()).unwrap_or_default(),
        san_emails: sans.as_ref().map(|s| s.emails.clone()).unwrap_or_default(),
        san_uris: sans.map(|s| s.uris).unwrap_or_default(),
    })
}
