//! `decide`: the whole approval logic, as a pure function with an explanation.

use crate::facts::{CsrFacts, KeyKind};
use crate::glob;
use crate::policy::{CommonName, Policy, Rule, UidRule};
use crate::privilege::PrivilegedSubjects;
use crate::spec::NoMatchAction;

/// What to do with a CSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Write an Approved condition.
    Approve,
    /// Write a Denied condition.
    Deny,
    /// Leave it pending for a human.
    Ignore,
}

/// Why: the stable, PascalCase reason written in the condition, the Event and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A rule's every constraint held.
    AutoApproved,
    /// An O is a protected group: built in (every `system:` group, `kubeadm:cluster-admins`), configured, or bound by RBAC to a privileged role.
    ProtectedGroup,
    /// The CN names a Kubernetes component (`system:` prefix) or a user RBAC binds to a privileged role.
    ProtectedUser,
    /// The subject has no CN.
    MissingCommonName,
    /// The subject has several CNs (only the last counts for Kubernetes: confusing by design).
    AmbiguousCommonName,
    /// A CN or O value is empty (an empty CN is not even authenticated).
    EmptyName,
    /// A CN or O holds control, format or line/paragraph separator characters.
    UnprintableName,
    /// A CN or O starts or ends with whitespace.
    UntrimmedName,
    /// A CN or O is longer than the subject limits allow.
    NameTooLong,
    /// More O values than the subject limits allow.
    TooManyGroups,
    /// `spec.request` is larger than the subject limits allow.
    RequestTooLarge,
    /// The subject holds an attribute other than CN, O and UID (OU, emailAddress, an unknown OID, ...).
    SubjectNotAllowed,
    /// The subject holds a user UID that no rule allows (or several, or an empty one).
    UidNotAllowed,
    /// A rule was for the requester, but the CN is not one it allows.
    CommonNameNotAllowed,
    /// A rule was for the requester, but a requested group is not allowed.
    GroupNotAllowed,
    /// The signer's table or the rule refuses a usage.
    UsageNotAllowed,
    /// A rule was for the requester, but the key type or size is not allowed.
    KeyNotAllowed,
    /// A rule was for the requester, but SANs are not allowed.
    SansNotAllowed,
    /// A renewal rule applied, but the requester's certificate is not one kcert issued (or
    /// they did not use a certificate, or it expired).
    CredentialUnknown,
    /// A renewal rule applied, but the requester's certificate was revoked.
    CredentialRevoked,
    /// A renewal rule applied, but the chain of renewals is older than `maxChainAge`.
    RenewalChainTooOld,
    /// A rule was for the requester, but one of its CEL conditions is false (or fails).
    ConditionNotMet,
    /// No rule is for this requester and signer.
    NoMatchingRule,
    /// The request could not be read or its signature does not verify.
    InvalidRequest,
    /// The requester of a kubelet certificate is not a node (nor, for a client certificate, a bootstrap token).
    NotANode,
    /// A kubelet certificate's CN is not `system:node:<name>`, or names another node than the requester.
    NodeMismatch,
    /// A kubelet serving CSR's Node does not exist (pending while it may still appear, then denied).
    NodeNotFound,
    /// A kubelet serving certificate's DNS or IP SAN is not among its Node's addresses (nor in an allowed suffix or range).
    SanNotANodeAddress,
    /// A kubelet serving certificate's SAN is an address another Node reports.
    SanOfAnotherNode,
    /// A kubelet serving certificate's SAN is reserved (loopback, link-local, the kubernetes Service, a configured range).
    SanReserved,
    /// The SubjectAccessReview for a kubelet client certificate (`nodeclient` / `selfnodeclient`) did not allow the requester.
    NodeClientNotAuthorized,
    /// The node a kubelet certificate names was revoked (`kcert revoke --node`) and no admin has cleared it.
    NodeRevoked,
}

impl Reason {
    /// Every reason, for documentation and tests.
    pub const ALL: [Reason; 32] = [
        Reason::AutoApproved,
        Reason::ProtectedGroup,
        Reason::ProtectedUser,
        Reason::MissingCommonName,
        Reason::AmbiguousCommonName,
        Reason::EmptyName,
        Reason::UnprintableName,
        Reason::UntrimmedName,
        Reason::NameTooLong,
        Reason::TooManyGroups,
        Reason::RequestTooLarge,
        Reason::SubjectNotAllowed,
        Reason::UidNotAllowed,
        Reason::CommonNameNotAllowed,
        Reason::GroupNotAllowed,
        Reason::UsageNotAllowed,
        Reason::KeyNotAllowed,
        Reason::SansNotAllowed,
        Reason::CredentialUnknown,
        Reason::CredentialRevoked,
        Reason::RenewalChainTooOld,
        Reason::ConditionNotMet,
        Reason::NoMatchingRule,
        Reason::InvalidRequest,
        Reason::NotANode,
        Reason::NodeMismatch,
        Reason::NodeNotFound,
        Reason::SanNotANodeAddress,
        Reason::SanOfAnotherNode,
        Reason::SanReserved,
        Reason::NodeClientNotAuthorized,
        Reason::NodeRevoked,
    ];

    /// The reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AutoApproved => "AutoApproved",
            Reason::ProtectedGroup => "ProtectedGroup",
            Reason::ProtectedUser => "ProtectedUser",
            Reason::MissingCommonName => "MissingCommonName",
            Reason::AmbiguousCommonName => "AmbiguousCommonName",
            Reason::EmptyName => "EmptyName",
            Reason::UnprintableName => "UnprintableName",
            Reason::UntrimmedName => "UntrimmedName",
            Reason::NameTooLong => "NameTooLong",
            Reason::TooManyGroups => "TooManyGroups",
            Reason::RequestTooLarge => "RequestTooLarge",
            Reason::SubjectNotAllowed => "SubjectNotAllowed",
            Reason::UidNotAllowed => "UidNotAllowed",
            Reason::CommonNameNotAllowed => "CommonNameNotAllowed",
            Reason::GroupNotAllowed => "GroupNotAllowed",
            Reason::UsageNotAllowed => "UsageNotAllowed",
            Reason::KeyNotAllowed => "KeyNotAllowed",
            Reason::SansNotAllowed => "SansNotAllowed",
            Reason::CredentialUnknown => "CredentialUnknown",
            Reason::CredentialRevoked => "CredentialRevoked",
            Reason::RenewalChainTooOld => "RenewalChainTooOld",
            Reason::ConditionNotMet => "ConditionNotMet",
            Reason::NoMatchingRule => "NoMatchingRule",
            Reason::InvalidRequest => "InvalidRequest",
            Reason::NotANode => "NotANode",
            Reason::NodeMismatch => "NodeMismatch",
            Reason::NodeNotFound => "NodeNotFound",
            Reason::SanNotANodeAddress => "SanNotANodeAddress",
            Reason::SanOfAnotherNode => "SanOfAnotherNode",
            Reason::SanReserved => "SanReserved",
            Reason::NodeClientNotAuthorized => "NodeClientNotAuthorized",
            Reason::NodeRevoked => "NodeRevoked",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision with its explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Approve, deny or leave.
    pub outcome: Outcome,
    /// The stable reason.
    pub reason: Reason,
    /// A sentence naming the rule and the field that decided.
    pub message: String,
    /// The id of the rule that decided, if one did.
    pub rule: Option<String>,
    /// The policy the deciding rule came from.
    pub policy: Option<String>,
    /// The longest lifetime to sign for, when the deciding rule caps it.
    pub max_duration_seconds: Option<u64>,
    /// What an approval certifies (CN, groups, UID), built from the checked values: the signer
    /// encodes this, never the request's own subject.
    pub subject: Option<ApprovedSubject>,
    /// For a renewal: when the chain of renewals began (the ledger records it on the new
    /// certificate), seconds since the epoch.
    pub chain_started_unix: Option<i64>,
    /// For a kubelet serving certificate: the SANs checked against the Node (the signer
    /// encodes these, never the request's own extension).
    pub names: Option<crate::nodes::ApprovedNames>,
    /// One line per check and rule considered, in order.
    pub trace: Vec<String>,
}

/// The identity an approval certifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovedSubject {
    /// The user (CN).
    pub common_name: String,
    /// The groups (O), in request order, each once.
    pub groups: Vec<String>,
    /// The user UID, only when the approving rule allowed the one requested.
    pub uid: Option<String>,
}

impl Decision {
    fn new(outcome: Outcome, reason: Reason, message: String, trace: Vec<String>) -> Self {
        Decision {
            outcome,
            reason,
            message,
            rule: None,
            policy: None,
            max_duration_seconds: None,
            subject: None,
            chain_started_unix: None,
            names: None,
            trace,
        }
    }

    /// A denial decided outside the rules (e.g. by the signer's own table of usages).
    pub fn deny(reason: Reason, message: String) -> Self {
        Decision::new(Outcome::Deny, reason, message.clone(), vec![message])
    }

    /// The decision for a request that could not be parsed or verified.
    pub fn invalid_request(problem: &str) -> Self {
        let message = format!("the request is invalid: {problem}");
        Decision::new(
            Outcome::Deny,
            Reason::InvalidRequest,
            message.clone(),
            vec![message],
        )
    }
}

/// Decide what to do with `facts` under `policy`, with no RBAC-derived protection (offline
/// evaluation, tests). [`evaluate`] is the same evaluation with the cluster's bindings.
pub fn decide(facts: &CsrFacts, policy: &Policy) -> Decision {
    evaluate(facts, policy, &PrivilegedSubjects::none())
}

/// The one evaluation of a CSR, shared by the approver, `kcert policy test`, `kcert list` and
/// the tests. Deterministic: the same facts, policy and bindings give the same decision, and
/// every check and rule considered is explained in `trace`. In order:
/// 1. [`check_request`]: the signer's table and everything about the subject no rule can
///    override (size, protected groups and users, CN count, hygiene, other attributes);
/// 2. the rules, first full match approves;
/// 3. the first applicable rule's failure, else `NoMatchingRule`.
pub fn evaluate(facts: &CsrFacts, policy: &Policy, privileged: &PrivilegedSubjects) -> Decision {
    let mut trace = Vec::new();
    if let Err((reason, message)) = check_request(facts, policy, privileged) {
        trace.push(message.clone());
        return Decision::new(Outcome::Deny, reason, message, trace);
    }
    let cn = facts.common_name().unwrap_or_default();
    trace.push(format!(
        "signer table, subject limits and hygiene hold; no protected group or user in CN {cn:?} O {:?}",
        facts.organizations
    ));
    let mut first_failure: Option<Decision> = None;
    // The CEL variables, converted once for every rule's conditions (the conversion is the
    // costly part of evaluating a condition over large inputs).
    let cel = CelInputs::default();
    for rule in policy.rules() {
        if let Some(why) = not_for(rule, facts) {
            trace.push(format!("{}: not applicable: {why}", rule.label()));
            continue;
        }
        match check_constraints_with(rule, facts, &cel) {
            Ok(summary) => {
                let capped = match (rule.max_duration_seconds, facts.expiration_seconds) {
                    (Some(max), Some(asked)) if asked > max as i64 => {
                        format!("; lifetime capped at {max}s (asked {asked}s)")
                    }
                    (Some(max), None) => format!("; lifetime at most {max}s"),
                    _ => String::new(),
                };
                let message = format!("{}: {summary}{capped}", rule.label());
                trace.push(format!("{}: approves", rule.label()));
                let mut d = Decision::new(Outcome::Approve, Reason::AutoApproved, message, trace);
                d.rule = Some(rule.id.clone());
                d.policy = Some(rule.policy.clone());
                d.max_duration_seconds = rule.max_duration_seconds;
                d.subject = Some(approved_subject(facts));
                if rule.is_renewal() {
                    d.chain_started_unix = facts.credential.as_ref().map(|c| c.chain_started_unix);
                }
                return d;
            }
            Err((reason, why)) => {
                let message = format!("{}: {why}", rule.label());
                trace.push(message.clone());
                if first_failure.is_none() {
                    let mut d = Decision::new(Outcome::Deny, reason, message, Vec::new());
                    d.rule = Some(rule.id.clone());
                    d.policy = Some(rule.policy.clone());
                    first_failure = Some(d);
                }
            }
        }
    }
    if let Some(mut d) = first_failure {
        d.trace = trace;
        return d;
    }
    let message = format!(
        "no rule applies to requester {:?} with signer {:?}",
        facts.requester.username, facts.signer_name
    );
    trace.push(message.clone());
    let outcome = match policy.no_match_action() {
        NoMatchAction::Ignore => Outcome::Ignore,
        NoMatchAction::Deny => Outcome::Deny,
    };
    Decision::new(outcome, Reason::NoMatchingRule, message, trace)
}

/// The identity to certify: the one CN, each O once, the one UID (already allowed by the rule).
fn approved_subject(facts: &CsrFacts) -> ApprovedSubject {
    let mut groups: Vec<String> = Vec::new();
    for g in &facts.organizations {
        if !groups.contains(g) {
            groups.push(g.clone());
        }
    }
    ApprovedSubject {
        common_name: facts.common_name().unwrap_or_default().to_string(),
        groups,
        uid: facts.uids.first().cloned(),
    }
}

/// What no rule can override, in a fixed order: the signer's usage table, the request size,
/// protected groups (built-in, configured, RBAC-privileged), the CN count, protected users,
/// name hygiene and limits, attributes other than CN/O/UID, and UID multiplicity. The approver
/// runs it inside [`evaluate`]; the signer runs it again on its own before signing whatever
/// approved the CSR.
pub fn check_request(
    facts: &CsrFacts,
    policy: &Policy,
    privileged: &PrivilegedSubjects,
) -> Result<(), (Reason, String)> {
    let limits = policy.limits();
    crate::signers::check_usages(&facts.signer_name, &facts.usages)
        .map_err(|m| (Reason::UsageNotAllowed, m))?;
    if !facts.sans.is_empty() {
        return Err((
            Reason::SansNotAllowed,
            format!(
                "the signer {:?} issues no subject alternative names (client certificates carry none): request none",
                facts.signer_name
            ),
        ));
    }
    if facts.request_bytes > limits.max_request_bytes {
        return Err((
            Reason::RequestTooLarge,
            format!(
                "the request is {} bytes; at most {} are accepted (subjectLimits.maxRequestBytes)",
                facts.request_bytes, limits.max_request_bytes
            ),
        ));
    }
    for group in &facts.organizations {
        if policy.is_protected_group(group) {
            return Err((
                Reason::ProtectedGroup,
                format!(
                    "group (O) {} is protected and is never approved",
                    crate::escape_for_message(group)
                ),
            ));
        }
        if let Some(binding) = privileged.group(group)
            && !policy.is_exempt_group(group)
        {
            return Err((
                Reason::ProtectedGroup,
                format!(
                    "group (O) {} is privileged: {binding}; it is never approved (exempt it by exact name in exemptGroups if that is intended)",
                    crate::escape_for_message(group)
                ),
            ));
        }
    }
    let cn = match facts.common_names.as_slice() {
        [] => {
            return Err((
                Reason::MissingCommonName,
                "the subject has no CN (user name)".into(),
            ));
        }
        [one] => one.as_str(),
        many => {
            return Err((
                Reason::AmbiguousCommonName,
                format!(
                    "the subject has {} CNs ({}); Kubernetes would use only the last: request one",
                    many.len(),
                    many.iter()
                        .map(|c| format!("{c:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    };
    if cn.trim().to_lowercase().starts_with("system:") {
        return Err((
            Reason::ProtectedUser,
            format!(
                "user (CN) {} is reserved: names starting with system: belong to Kubernetes itself",
                crate::escape_for_message(cn)
            ),
        ));
    }
    if let Some(binding) = privileged.user(cn)
        && !policy.is_exempt_user(cn)
    {
        return Err((
            Reason::ProtectedUser,
            format!(
                "user (CN) {} is privileged: {binding}; it is never approved (exempt it by exact name in exemptUsers if that is intended)",
                crate::escape_for_message(cn)
            ),
        ));
    }
    check_name(
        "user (CN)",
        cn,
        limits.max_common_name_bytes,
        "maxCommonNameBytes",
    )?;
    if facts.organizations.len() > limits.max_groups {
        return Err((
            Reason::TooManyGroups,
            format!(
                "the subject has {} groups (O); at most {} are accepted (subjectLimits.maxGroups)",
                facts.organizations.len(),
                limits.max_groups
            ),
        ));
    }
    for group in &facts.organizations {
        check_name("group (O)", group, limits.max_group_bytes, "maxGroupBytes")?;
    }
    if let Some(other) = facts.other_attributes.first() {
        return Err((
            Reason::SubjectNotAllowed,
            format!(
                "the subject holds {}; kcert certifies only CN (user), O (groups) and a UID a rule allows: remove it from the request",
                crate::escape_for_message(other)
            ),
        ));
    }
    match facts.uids.as_slice() {
        [] => {}
        [uid] if uid.is_empty() => {
            return Err((
                Reason::UidNotAllowed,
                "the subject holds an empty UID, which the API server refuses".into(),
            ));
        }
        [uid] => check_name(
            "UID",
            uid,
            limits.max_common_name_bytes,
            "maxCommonNameBytes",
        )
        .map_err(|(_, m)| (Reason::UidNotAllowed, m))?,
        many => {
            return Err((
                Reason::UidNotAllowed,
                format!(
                    "the subject holds {} UIDs; the API server refuses certificates with more than one",
                    many.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Hygiene of one name: non-empty, printable, trimmed, bounded.
fn check_name(what: &str, value: &str, max: usize, limit: &str) -> Result<(), (Reason, String)> {
    if value.is_empty() {
        return Err((Reason::EmptyName, format!("{what} is empty")));
    }
    if value.len() > max {
        return Err((
            Reason::NameTooLong,
            format!(
                "{what} is {} bytes; at most {max} are accepted (subjectLimits.{limit})",
                value.len()
            ),
        ));
    }
    if let Some(c) = value.chars().find(|c| crate::is_unprintable(*c)) {
        return Err((
            Reason::UnprintableName,
            format!(
                "{what} {} holds the unprintable character U+{:04X} (control, format or line/paragraph separator)",
                crate::escape_for_message(value),
                c as u32
            ),
        ));
    }
    if value.trim() != value {
        return Err((
            Reason::UntrimmedName,
            format!("{what} {value:?} starts or ends with whitespace; request it trimmed"),
        ));
    }
    Ok(())
}

/// A renewal: the requester's current certificate is kcert's, unrevoked, unexpired, the same
/// user, at least the groups asked for, and its chain began less than `max_chain` seconds ago.
fn check_renewal(facts: &CsrFacts, cn: &str, max_chain: u64) -> Result<(), Failure> {
    let Some(c) = &facts.credential else {
        return Err((
            Reason::CredentialUnknown,
            "a renewal needs the current certificate: the requester did not authenticate with a kcert-issued certificate (or the ledger cannot be read)".into(),
        ));
    };
    if !c.known {
        return Err((
            Reason::CredentialUnknown,
            "the requester's certificate is not in the ledger: kcert did not issue it, so it cannot be renewed".into(),
        ));
    }
    if let Some(why) = &c.revoked {
        return Err((
            Reason::CredentialRevoked,
            format!(
                "the requester's certificate (serial {}) was revoked: {why}",
                c.serial
            ),
        ));
    }
    if c.not_after_unix <= facts.now_unix {
        return Err((
            Reason::CredentialUnknown,
            format!(
                "the requester's certificate (serial {}) has expired",
                c.serial
            ),
        ));
    }
    if c.user != cn || facts.requester.username != c.user {
        return Err((
            Reason::CommonNameNotAllowed,
            format!(
                "a renewal is for the same user: the current certificate is for {:?}, the request for CN {cn:?}",
                c.user
            ),
        ));
    }
    if let Some(extra) = facts.organizations.iter().find(|g| !c.groups.contains(g)) {
        return Err((
            Reason::GroupNotAllowed,
            format!(
                "a renewal keeps the same or fewer groups: {extra:?} is not in the current certificate's {:?}",
                c.groups
            ),
        ));
    }
    let age = facts.now_unix.saturating_sub(c.chain_started_unix);
    if age > max_chain as i64 {
        return Err((
            Reason::RenewalChainTooOld,
            format!(
                "the chain of renewals began {age}s ago, more than renewal.maxChainAge {max_chain}s: onboard again"
            ),
        ));
    }
    Ok(())
}

/// The variables CEL conditions see.
pub fn cel_variables(facts: &CsrFacts) -> serde_json::Value {
    let r = &facts.requester;
    let (key_type, bits) = match facts.key {
        KeyKind::Rsa(bits) => ("rsa", i64::from(bits)),
        other => (other.type_name(), 0),
    };
    let mut vars = serde_json::json!({
        "request": {
            "commonName": facts.common_name().unwrap_or_default(),
            "groups": facts.organizations,
            "uid": facts.uids.first().cloned().unwrap_or_default(),
            "usages": facts.usages,
            "sans": {"dns": facts.sans.dns, "ips": facts.sans.ips, "emails": facts.sans.emails, "uris": facts.sans.uris},
            "key": {"type": key_type, "bits": bits},
            "lifetimeSeconds": facts.expiration_seconds.unwrap_or(0),
        },
        "requester": {
            "user": r.username,
            "uid": r.uid,
            "groups": r.groups,
            "extra": r.extra,
            "serviceAccount": r.service_account().map(|(ns, name)| serde_json::json!({"namespace": ns, "name": name})),
        },
        "signerName": facts.signer_name,
    });
    // Absent, not null, when the requester is no ServiceAccount: `has(requester.serviceAccount)`
    // reads the same here as in the API server's CEL.
    if r.service_account().is_none()
        && let Some(requester) = vars["requester"].as_object_mut()
    {
        requester.remove("serviceAccount");
    }
    vars
}

/// Evaluate one CEL expression over `vars` (`cel_variables`): `Ok(true|false)`, or why it
/// produced no boolean.
pub fn evaluate_cel(program: &cel::Program, vars: &serde_json::Value) -> Result<bool, String> {
    execute_cel(program, &cel_context(vars)?)
}

/// The CEL context holding `vars` ([`cel_variables`]).
fn cel_context(vars: &serde_json::Value) -> Result<cel::Context<'static, 'static>, String> {
    let mut context = cel::Context::default();
    for name in ["request", "requester", "signerName"] {
        context
            .add_variable(name, vars[name].clone())
            .map_err(|e| e.to_string())?;
    }
    Ok(context)
}

fn execute_cel(program: &cel::Program, context: &cel::Context<'_, '_>) -> Result<bool, String> {
    match program.execute(context) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("it is {other:?}, not a boolean")),
        Err(e) => Err(e.to_string()),
    }
}

/// Every CEL condition of the rule, in order; the first false (or failing) one is the answer.
fn check_conditions(rule: &Rule, facts: &CsrFacts, cel: &CelInputs) -> Result<String, Failure> {
    if rule.conditions.is_empty() {
        return Ok(String::new());
    }
    // Costs were bounded for inputs within these sizes only: beyond them, nothing is evaluated.
    if let Some(why) = crate::cel_budget::within_bounds(facts) {
        return Err((
            Reason::ConditionNotMet,
            format!("conditions are evaluated only over requests within their bounds: {why}"),
        ));
    }
    let context = match cel
        .context
        .get_or_init(|| cel_context(&cel_variables(facts)))
    {
        Ok(c) => c,
        Err(why) => {
            return Err((
                Reason::ConditionNotMet,
                format!("the conditions' variables could not be built: {why}"),
            ));
        }
    };
    for (i, c) in rule.conditions.iter().enumerate() {
        match execute_cel(&c.program, context) {
            Ok(true) => {}
            Ok(false) => {
                return Err((
                    Reason::ConditionNotMet,
                    format!("conditions[{i}] {:?} is false", c.source),
                ));
            }
            Err(why) => {
                return Err((
                    Reason::ConditionNotMet,
                    format!(
                        "conditions[{i}] {:?} did not evaluate to true: {why}",
                        c.source
                    ),
                ));
            }
        }
    }
    Ok(format!(
        "; conditions {} true",
        rule.conditions
            .iter()
            .map(|c| format!("{:?}", c.source))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Why `rule` is not for this CSR (signer or requester), or `None` when it is.
fn not_for(rule: &Rule, facts: &CsrFacts) -> Option<String> {
    if !rule.signer_names.is_empty()
        && !rule
            .signer_names
            .iter()
            .any(|p| glob::matches(p, &facts.signer_name))
    {
        return Some(format!(
            "signer {:?} not in {:?}",
            facts.signer_name, rule.signer_names
        ));
    }
    let r = &facts.requester;
    let by_user = rule.users.iter().any(|p| glob::matches(p, &r.username));
    let by_group = rule
        .groups
        .iter()
        .any(|p| r.groups.iter().any(|g| glob::matches(p, g)));
    let by_sa = r.service_account().is_some_and(|(ns, name)| {
        rule.service_accounts
            .iter()
            .any(|(pns, pname)| pns == ns && (pname == "*" || pname == name))
    });
    if by_user || by_group || by_sa {
        None
    } else {
        Some(format!(
            "requester {:?} (groups {:?}) is not among its requesters",
            r.username, r.groups
        ))
    }
}

type Failure = (Reason, String);

/// Every constraint in a fixed order; the first that fails is the answer.
#[cfg(test)]
pub(crate) fn check_constraints(rule: &Rule, facts: &CsrFacts) -> Result<String, Failure> {
    check_constraints_with(rule, facts, &CelInputs::default())
}

/// The CEL context of one evaluation, built on first use.
#[derive(Default)]
struct CelInputs {
    context: std::cell::OnceCell<Result<cel::Context<'static, 'static>, String>>,
}

fn check_constraints_with(
    rule: &Rule,
    facts: &CsrFacts,
    cel: &CelInputs,
) -> Result<String, Failure> {
    let cn = facts.common_name().unwrap_or_default();
    let requester = &facts.requester.username;
    let cn_ok = match &rule.common_name {
        CommonName::SelfName => cn == requester,
        CommonName::Exact(e) => cn == e,
        CommonName::Glob(g) => glob::matches(g, cn),
        CommonName::Regex(re) => re.is_match(cn),
    };
    if !cn_ok {
        let detail = match &rule.common_name {
            CommonName::SelfName => format!(
                "CN {cn:?} must equal the requester's user name {requester:?} (commonName: self)"
            ),
            other => format!("CN {cn:?} does not match commonName {}", other.describe()),
        };
        return Err((Reason::CommonNameNotAllowed, detail));
    }
    if let Some(uid) = facts.uids.first() {
        let ok = match &rule.uid {
            UidRule::Refuse => false,
            UidRule::SelfUid => !facts.requester.uid.is_empty() && *uid == facts.requester.uid,
            UidRule::Exact(e) => uid == e,
        };
        if !ok {
            let why = match &rule.uid {
                UidRule::Refuse => {
                    "the rule allows no UID (set uid: {self: true} to certify the requester's own)"
                        .to_string()
                }
                UidRule::SelfUid => format!(
                    "it must equal the requester's UID {:?} (uid: self)",
                    facts.requester.uid
                ),
                UidRule::Exact(e) => format!("it must be {e:?} (uid.exact)"),
            };
            return Err((
                Reason::UidNotAllowed,
                format!(
                    "UID {} is not allowed: {why}",
                    crate::escape_for_message(uid)
                ),
            ));
        }
    }
    for group in &facts.organizations {
        let allowed = rule.allowed_groups.iter().any(|p| glob::matches(p, group))
            || (rule.groups_from_requester && facts.requester.groups.iter().any(|g| g == group))
            || facts.requester.groups.iter().any(|rg| {
                rule.groups_by_requester_group
                    .get(rg)
                    .is_some_and(|list| list.iter().any(|p| glob::matches(p, group)))
            });
        if !allowed {
            return Err((
                Reason::GroupNotAllowed,
                format!(
                    "group (O) {group:?} is not in groups.allowed, not granted by groups.byRequesterGroup, nor (with groups.fromRequester) one the requester is in"
                ),
            ));
        }
    }
    if let Some(max) = rule.renewal_max_chain_seconds {
        check_renewal(facts, cn, max)?;
    }
    if facts.usages.is_empty() {
        return Err((Reason::UsageNotAllowed, "no usages requested".into()));
    }
    for u in &facts.usages {
        if !rule.usages.contains(u) {
            return Err((
                Reason::UsageNotAllowed,
                format!(
                    "usage {u:?} is not allowed (usages: {:?})",
                    rule.usages.iter().collect::<Vec<_>>()
                ),
            ));
        }
    }
    if !rule.key_types.iter().any(|t| t == facts.key.type_name()) {
        return Err((
            Reason::KeyNotAllowed,
            format!(
                "key type {} is not allowed (keys.types: {:?})",
                facts.key, rule.key_types
            ),
        ));
    }
    if let KeyKind::Rsa(bits) = facts.key
        && bits < rule.min_rsa_bits
    {
        return Err((
            Reason::KeyNotAllowed,
            format!(
                "RSA key of {bits} bits is below keys.minRsaBits {}",
                rule.min_rsa_bits
            ),
        ));
    }
    if !facts.sans.is_empty() {
        let Some(dns) = &rule.san_dns else {
            return Err((
                Reason::SansNotAllowed,
                "subject alternative names are not allowed by this rule (no subjectAltNames section)".into(),
            ));
        };
        let bad = facts
            .sans
            .dns
            .iter()
            .find(|d| !dns.iter().any(|p| glob::matches(p, d)))
            .map(|d| format!("DNS name {d:?}"))
            .or_else(|| {
                facts
                    .sans
                    .ips
                    .iter()
                    .find(|ip| !rule.san_ips.contains(ip))
                    .map(|ip| format!("IP {ip}"))
            })
            .or_else(|| {
                facts
                    .sans
                    .emails
                    .iter()
                    .find(|e| !rule.san_emails.iter().any(|p| glob::matches(p, e)))
                    .map(|e| format!("email {e:?}"))
            })
            .or_else(|| {
                facts
                    .sans
                    .uris
                    .iter()
                    .find(|u| !rule.san_uris.iter().any(|p| glob::matches(p, u)))
                    .map(|u| format!("URI {u:?}"))
            })
            .or_else(|| {
                (facts.sans.other > 0)
                    .then(|| format!("{} SAN(s) of other kinds", facts.sans.other))
            });
        if let Some(bad) = bad {
            return Err((
                Reason::SansNotAllowed,
                format!("{bad} is not allowed by subjectAltNames"),
            ));
        }
    }
    let conditions = check_conditions(rule, facts, cel)?;
    Ok(format!(
        "CN {cn:?} ({}), groups {:?}, usages, key {} and SANs allowed{conditions}",
        rule.common_name.describe(),
        facts.organizations,
        facts.key
    ))
}
