//! The policy as users write it: the `spec` of an `ApprovalPolicy` object, or a `--policy-file`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An approval policy: ordered rules, and what to do when none matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// What happens to a CSR no rule is for: `Ignore` leaves it pending for a human (the
    /// default), `Deny` denies it.
    #[serde(default)]
    pub when_no_rule_matches: NoMatchAction,
    /// Groups never approved, in addition to the built-in protected groups (exact names, or
    /// patterns with `*` and `?`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_groups: Vec<String>,
    /// Groups (exact names only) exempt from the protection kcert derives from RBAC bindings
    /// (groups bound to cluster-admin or to roles that can escalate). Built-in and
    /// `protectedGroups` entries cannot be exempted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[^*?\s]([^*?]*[^*?\s])?$")))]
    pub exempt_groups: Vec<String>,
    /// Users (exact names only) exempt from the protection kcert derives from RBAC bindings
    /// (users bound to cluster-admin or to roles that can escalate), as `exemptGroups` is for
    /// groups. `system:` users cannot be exempted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[^*?\s]([^*?]*[^*?\s])?$")))]
    pub exempt_users: Vec<String>,
    /// Bounds on what a request may carry, checked before any rule. Unset fields keep the
    /// defaults (253-byte CN and O, 64 groups, 64 KiB request); merged policies take the
    /// smallest value any of them sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_limits: Option<SubjectLimitsSpec>,
    /// The rules, tried in order; the first whose every constraint holds approves. At most
    /// [`crate::policy::MAX_RULES`] per policy.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub rules: Vec<RuleSpec>,
}

/// Bounds on a request's subject, checked before any rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectLimitsSpec {
    /// Longest CN (user name) in bytes. Default 253.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_common_name_bytes: Option<u32>,
    /// Longest O (group) in bytes. Default 253.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_group_bytes: Option<u32>,
    /// Most O values (groups). Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_groups: Option<u32>,
    /// Largest `spec.request` in bytes. Default 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u32>,
}

/// What to do when no rule is for a CSR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NoMatchAction {
    /// Leave it pending, for a human to decide.
    #[default]
    Ignore,
    /// Deny it.
    Deny,
}

/// One rule: who it is for, and what they may get.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// A name for the rule, unique within the policy; it appears in decisions and annotations.
    #[schemars(length(min = 1))]
    pub id: String,
    /// Signer names the rule applies to (patterns allowed). Empty means every signer name the
    /// controller serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signer_names: Vec<String>,
    /// Who may use the rule: a requester matching any entry.
    pub requesters: RequesterSpec,
    /// What the CN (user name) may be. Default: `self: true`, the requester's own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<CommonNameSpec>,
    /// Which O values (groups) may be requested. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<GroupsSpec>,
    /// Usages that may be requested. Default: `digital signature`, `key encipherment`, `client auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usages: Option<Vec<String>>,
    /// Longest lifetime granted, e.g. `24h`, `7d`; longer requests are capped to it. Default:
    /// the signer's own maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
    /// Key types and sizes accepted. Default: every supported type, RSA from 2048 bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeysSpec>,
    /// Subject alternative names accepted. Default: none (client certificates carry none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<SansSpec>,
    /// Whether a user UID (OID 1.3.6.1.4.1.57683.2, which the API server reads as the user's
    /// UID) may be certified, and which. Default: a request carrying a UID is denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<UidSpec>,
    /// Makes the rule a renewal rule bound to the ledger: it approves only when the requester
    /// authenticated with a kcert-issued, unrevoked, unexpired certificate of the same user,
    /// asks for the same or fewer groups, and the chain of renewals began less than
    /// `maxChainAge` ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal: Option<RenewalSpec>,
    /// CEL expressions that must all be true, e.g. `size(request.groups) <= 3`, over `request`
    /// (commonName, groups, uid, usages, sans, key, lifetimeSeconds), `requester` (user, uid,
    /// groups, extra, serviceAccount) and `signerName`. At most 16, each at most 1024 bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 1024)))]
    pub conditions: Vec<String>,
}

/// A renewal rule's bound.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenewalSpec {
    /// How long a chain of renewals may go on, counted from the first certificate's issuance
    /// (e.g. `90d`): past it, the user must be onboarded again.
    pub max_chain_age: String,
}

/// The constraint on a requested user UID: exactly one of the fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.self) && self.self ? 1 : 0) + (has(self.exact) && self.exact != '' ? 1 : 0) == 1",
    "message": "uid needs exactly one of self: true or a non-empty exact"
}]))]
pub struct UidSpec {
    /// The UID must equal the requester's own UID (`spec.uid`: renewals keep the identity).
    #[serde(default, rename = "self", skip_serializing_if = "std::ops::Not::not")]
    pub self_: bool,
    /// The UID must be exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
}

/// Requesters a rule is for: any user, group or ServiceAccount listed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequesterSpec {
    /// User names (patterns allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups the requester is in (patterns allowed). `system:authenticated` means everyone
    /// who can create a CSR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// ServiceAccounts as `NAMESPACE/NAME`; `NAMESPACE/*` for all in a namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
}

/// The constraint on the CN: exactly one of the fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.self) && self.self ? 1 : 0) + (has(self.exact) ? 1 : 0) + (has(self.glob) ? 1 : 0) + (has(self.regex) ? 1 : 0) == 1",
    "message": "commonName needs exactly one of self, exact, glob, regex"
}]))]
pub struct CommonNameSpec {
    /// The CN must equal the requester's user name (certificates for oneself, renewals).
    #[serde(default, rename = "self", skip_serializing_if = "std::ops::Not::not")]
    pub self_: bool,
    /// The CN must be exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The CN must match this pattern (`*`, `?`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// The CN must match this regular expression (anchored at both ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// The constraint on the O values (groups).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupsSpec {
    /// Groups anyone the rule is for may request (patterns allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    /// Groups that members of a requester group may request, e.g. `{admins: [dev, ops]}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_requester_group: BTreeMap<String, Vec<String>>,
    /// Requesters may request groups they are already in (renewals: same groups as now).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_requester: bool,
}

/// The constraint on the key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeysSpec {
    /// Key types: `rsa`, `ecdsa-p256`, `ecdsa-p384`, `ecdsa-p521`, `ed25519`. Empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Smallest RSA modulus accepted; 2048 when unset, and never below 2048.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rsa_bits: Option<u32>,
}

/// Subject alternative names a rule accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SansSpec {
    /// DNS names (patterns allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// IP addresses, exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Email addresses (patterns allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    /// URIs (patterns allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uris: Vec<String>,
}
