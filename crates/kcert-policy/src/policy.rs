//! A policy checked and compiled: patterns parsed, regexes built, durations read. Only a
//! compiled [`Policy`] can be evaluated, so a bad policy fails when loaded, not per request.

use crate::spec::{NoMatchAction, PolicySpec, RuleSpec};
use crate::{duration, glob};
use std::collections::{BTreeMap, BTreeSet};

/// Usages a rule grants when it names none: Kubernetes' client usages.
pub const DEFAULT_USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];

/// Groups never approved, whatever a policy says.
pub const BUILTIN_PROTECTED_GROUPS: [&str; 9] = [
    "system:masters",
    "system:nodes",
    "system:serviceaccounts",
    "system:serviceaccounts:*",
    "system:authenticated",
    "system:unauthenticated",
    "system:kube-*",
    "system:bootstrappers",
    "system:bootstrappers:*",
];

/// Usages Kubernetes knows (spec.usages values).
const KNOWN_USAGES: [&str; 23] = [
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

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
}

impl Rule {
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
    pub(crate) rules: Vec<Rule>,
}

impl Policy {
    /// Check and compile `spec`, named `name` in messages.
    pub fn compile(name: &str, spec: &PolicySpec) -> Result<Self, PolicyError> {
        let err = |message: String| PolicyError {
            policy: name.to_string(),
            message,
        };
        let mut seen = BTreeSet::new();
        let mut rules = Vec::new();
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
            rules.push(
                compile_rule(name, rule).map_err(|m| err(format!("rule '{}': {m}", rule.id)))?,
            );
        }
        for g in &spec.protected_groups {
            if g.trim().is_empty() {
                return Err(err("protectedGroups has an empty entry".into()));
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
        Ok(Policy {
            no_match: spec.when_no_rule_matches,
            protected_groups: protected,
            rules,
        })
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
            merged.rules.extend(p.rules);
        }
        merged
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

fn compile_rule(policy: &str, r: &RuleSpec) -> Result<Rule, String> {
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
                if !KNOWN_USAGES.contains(&u.as_str()) {
                    return Err(format!("usages: unknown usage {u:?}"));
                }
                if u == "cert sign" || u == "crl sign" {
                    return Err(format!(
                        "usages: {u:?} would make a CA; kcert never grants it"
                    ));
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
    Ok(Rule {
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
