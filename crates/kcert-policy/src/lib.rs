//! kcert-policy: who may get which certificate, decided by a pure function.
//!
//! ```text
//!  PolicySpec (YAML / ApprovalPolicy CRD) ──Policy::compile──► Policy ─┐
//!                                                                      ├─► decide ─► Decision
//!  CertificateSigningRequest + parsed request ──► CsrFacts ────────────┘   {outcome, reason,
//!                                                                           message, rule, trace}
//! ```
//!
//! Order of evaluation, always the same:
//! 1. protected groups (built-in and configured) → Deny `ProtectedGroup`; no CN →
//!    `MissingCommonName`; several CNs → `AmbiguousCommonName`; a CN starting with `system:` →
//!    `ProtectedUser`. No rule can override these.
//! 2. rules in order: a rule applies when the signer name and the requester match; the first
//!    applicable rule whose every constraint holds approves (`AutoApproved`).
//! 3. if some rule applied but none approved, Deny with the first applicable rule's failure.
//! 4. if no rule applied: `NoMatchingRule`, Ignore (default) or Deny.

pub mod decision;
pub mod duration;
pub mod facts;
mod glob;
pub mod policy;
pub mod spec;

pub use decision::{Decision, Outcome, Reason, decide};
pub use facts::{CsrFacts, KeyKind, Requester, SanFacts};
pub use glob::matches as glob_matches;
pub use policy::{BUILTIN_PROTECTED_GROUPS, DEFAULT_USAGES, Policy, PolicyError, Rule};
pub use spec::{
    CommonNameSpec, GroupsSpec, KeysSpec, NoMatchAction, PolicySpec, RequesterSpec, RuleSpec,
    SansSpec,
};
#[cfg(test)]
mod tests;
