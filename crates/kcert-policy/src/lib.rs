//! kcert-policy: who may get which certificate, decided by a pure function.
//!
//! ```text
//!  PolicySpec (YAML / ApprovalPolicy CRD) ──Policy::compile──► Policy ─┐
//!                                                                      ├─► decide ─► Decision
//!  CertificateSigningRequest + parsed request ──► CsrFacts ────────────┘   {outcome, reason,
//!                                                                           message, rule, trace}
//! ```
//!
//! Order of evaluation, always the same ([`evaluate`]):
//! 1. [`check_request`], which no rule can override: the signer's usage table
//!    (`UsageNotAllowed`); request size (`RequestTooLarge`); protected groups — every `system:`
//!    group, `kubeadm:cluster-admins`, configured ones, and groups RBAC binds to privileged roles
//!    ([`PrivilegedSubjects`]) — `ProtectedGroup`; no CN / several CNs (`MissingCommonName`,
//!    `AmbiguousCommonName`); a `system:` or RBAC-privileged CN (`ProtectedUser`); name hygiene
//!    and limits (`EmptyName`, `NameTooLong`, `UnprintableName`, `UntrimmedName`,
//!    `TooManyGroups`); attributes other than CN/O/UID (`SubjectNotAllowed`); several or empty
//!    UIDs (`UidNotAllowed`).
//! 2. rules in order: a rule applies when the signer name and the requester match; the first
//!    applicable rule whose every constraint holds approves (`AutoApproved`).
//! 3. if some rule applied but none approved, Deny with the first applicable rule's failure.
//! 4. if no rule applied: `NoMatchingRule`, Ignore (default) or Deny.

pub mod cel_budget;
pub mod decision;
pub mod duration;
pub mod facts;
mod glob;
pub mod nodes;
pub mod policy;
pub mod privilege;
pub mod signers;
pub mod spec;

pub use decision::{
    ApprovedSubject, Decision, Outcome, Reason, cel_variables, check_request, decide, evaluate,
    evaluate_cel,
};
pub use facts::{CredentialFacts, CsrFacts, KeyKind, Requester, SanFacts};
pub use glob::matches as glob_matches;
pub use policy::{
    BUILTIN_PROTECTED_GROUPS, DEFAULT_USAGES, Policy, PolicyError, Rule, SubjectLimits,
};
pub use privilege::{BindingFacts, PrivilegedSubjects, RbacRule, RoleFacts};
pub use spec::{
    CommonNameSpec, GroupsSpec, KeysSpec, NoMatchAction, PolicySpec, RenewalSpec, RequesterSpec,
    RuleSpec, SansSpec, SubjectLimitsSpec, UidSpec,
};

/// Characters a name must never hold (kcert-pki's list, which refuses them when building a
/// subject): controls, format characters, line/paragraph separators.
pub use kcert_pki::is_unprintable;

/// A user-supplied value quoted for a message, every unprintable character as `\u{..}`, cut
/// to 200 characters: decisions are shown in terminals, Events and logs.
pub fn escape_for_message(value: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in value.chars().enumerate() {
        if i == 200 {
            out.push_str("...");
            break;
        }
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if is_unprintable(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
#[cfg(test)]
mod tests;
