//! The `ApprovalPolicy` custom resource (cluster-scoped, group `kcert.dev`).

use kcert_policy::{NoMatchAction, PolicySpec, RuleSpec, SubjectLimitsSpec};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An approval policy stored in the cluster. Its spec is kcert-policy's [`PolicySpec`].
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "kcert.dev",
    version = "v1alpha1",
    kind = "ApprovalPolicy",
    plural = "approvalpolicies",
    shortname = "approvalpolicy",
    status = "ApprovalPolicyStatus",
    printcolumn = r#"{"name":"Accepted","type":"boolean","jsonPath":".status.accepted"}"#,
    printcolumn = r#"{"name":"Rules","type":"integer","jsonPath":".status.rules"}"#,
    printcolumn = r#"{"name":"InForce","type":"integer","jsonPath":".status.inForceGeneration"}"#,
    printcolumn = r#"{"name":"NoMatch","type":"string","jsonPath":".spec.whenNoRuleMatches"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalPolicySpec {
    /// What happens to a CSR no rule is for: `Ignore` (leave for a human; default) or `Deny`.
    #[serde(default)]
    pub when_no_rule_matches: NoMatchAction,
    /// Groups never approved, in addition to the built-in protected groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_groups: Vec<String>,
    /// Groups (exact names) exempt from the protection derived from RBAC bindings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[^*?\s]([^*?]*[^*?\s])?$")))]
    pub exempt_groups: Vec<String>,
    /// Users (exact names, not `system:`) exempt from the protection derived from RBAC bindings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[^*?\s]([^*?]*[^*?\s])?$")))]
    pub exempt_users: Vec<String>,
    /// Bounds on a request's subject (defaults: 253-byte CN and O, 64 groups, 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_limits: Option<SubjectLimitsSpec>,
    /// Rules, tried in order (at most 256 per object).
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub rules: Vec<RuleSpec>,
}

impl From<&ApprovalPolicySpec> for PolicySpec {
    fn from(s: &ApprovalPolicySpec) -> Self {
        PolicySpec {
            when_no_rule_matches: s.when_no_rule_matches,
            protected_groups: s.protected_groups.clone(),
            exempt_groups: s.exempt_groups.clone(),
            exempt_users: s.exempt_users.clone(),
            subject_limits: s.subject_limits.clone(),
            rules: s.rules.clone(),
        }
    }
}

/// What the controller made of a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalPolicyStatus {
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,
    /// Whether the policy is valid and in force.
    pub accepted: bool,
    /// Why it was refused, or a summary when accepted.
    pub message: String,
    /// How many rules are in force.
    pub rules: u32,
    /// The generation whose rules are in force: this one when accepted, the last accepted one
    /// when this one is refused, none when no generation ever compiled (then only its
    /// protectedGroups and whenNoRuleMatches stand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_force_generation: Option<i64>,
}

/// A page of the issuance ledger: the records of up to [`crate::ledger::PAGE_MAX_RECORDS`]
/// issued certificates, kept after their CSRs are garbage-collected. The signer appends to one
/// page at a time, so recording costs one write per batch of certificates rather than one per
/// certificate. Named `<UTC time of its first record>-<random>`; read it with `kcert ledger`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "kcert.dev",
    version = "v1alpha1",
    kind = "LedgerPage",
    plural = "ledgerpages",
    shortname = "ledgerpage",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LedgerPageSpec {
    /// The records, oldest first: each an [`IssuedCertificate`] as one JSON string. (The API
    /// server validates a page of strings about 4.5 times faster than the same records as
    /// structured fields; kcert reads and writes them.)
    #[serde(default)]
    #[schemars(length(max = 1000), inner(length(max = 1048576)))]
    pub records: Vec<String>,
}

impl LedgerPageSpec {
    /// Each record read, or why it cannot be.
    pub fn read(&self) -> impl Iterator<Item = Result<IssuedCertificate, String>> + '_ {
        self.records
            .iter()
            .map(|s| serde_json::from_str(s).map_err(|e| e.to_string()))
    }

    /// Append `r`.
    pub fn push(&mut self, r: &IssuedCertificate) {
        self.records
            .push(serde_json::to_string(r).expect("a record serializes"));
    }

    /// Append node revocation `r`.
    pub fn push_node_revocation(&mut self, r: &RevokedNodeRecord) {
        self.records
            .push(serde_json::to_string(r).expect("a record serializes"));
    }
}

/// One issued certificate: who got which credential, from whom, until when (an entry of a
/// [`LedgerPage`]).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCertificate {
    /// Serial number, hex.
    pub serial: String,
    /// The subject, formatted.
    pub subject: String,
    /// The user (CN).
    pub user: String,
    /// The groups (O).
    pub groups: Vec<String>,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// SHA-256 of the certificate.
    pub fingerprint_sha256: String,
    /// The signer name.
    pub signer_name: String,
    /// Who created the CSR.
    pub requester: String,
    /// The requester's groups.
    pub requester_groups: Vec<String>,
    /// What approved it: `rule R of policy P` (kcert) or the Approved condition's reason (a human).
    pub approved_by: String,
    /// The CSR's name.
    pub csr_name: String,
    /// The CSR's uid.
    pub csr_uid: String,
    /// Set by `kcert revoke`: the certificate is refused by kcert's authorization webhook from
    /// then on (a revocation is never undone; issue a new certificate instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
    /// When the chain of renewals this certificate belongs to began (RFC 3339): its own
    /// NotBefore for a first certificate, carried over by renewals (`renewal.maxChainAge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_started_at: Option<String>,
    /// SHA-256 (hex) of the certificate the requester authenticated with when creating the CSR
    /// (its `credential-id`), when it was one: this certificate's parent. A certificate whose
    /// parent, or any ancestor, is revoked is refused as if revoked itself, whenever it was
    /// issued (a renewal that raced `kcert revoke` included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_with: Option<String>,
    /// Set by kcert-controller when this record's revocation had been removed (its page edited
    /// by hand) and it wrote the revocation back: when it did (RFC 3339). Tamper evidence:
    /// `kcert ledger` shows the record as restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_restored_at: Option<String>,
    /// The authority key identifier of the certificate (hex): which CA issued it (a CA
    /// rotation's `kcert ledger --issuer`). Unset on records written before kcert recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_key_id: Option<String>,
}

/// Who revoked a certificate, when and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    /// When, RFC 3339.
    pub revoked_at: String,
    /// Who (the revoking user as the API server authenticated them).
    pub revoked_by: String,
    /// Why.
    pub reason: String,
}

impl IssuedCertificate {
    /// The certificate's SHA-256 as the API server's `credential-id` spells it (lower-case hex,
    /// no colons, without the `X509SHA256=` prefix).
    pub fn credential_hash(&self) -> String {
        normalize_fingerprint(&self.fingerprint_sha256)
    }

    /// Whether this record is not a certificate's but a node's revocation
    /// ([`RevokedNodeRecord`]).
    pub fn is_node_revocation(&self) -> bool {
        self.signer_name == NODE_REVOCATION_SIGNER
    }
}

/// The `signerName` that marks a ledger record as a node's revocation ([`RevokedNodeRecord`]),
/// not a certificate's. No signer of that name exists.
pub const NODE_REVOCATION_SIGNER: &str = "kcert.dev/node-revocation";

/// A ledger record saying that node `revokedNode.node` is revoked (`kcert revoke --node`):
/// kubelet CSRs for `system:node:<node>` are refused (`NodeRevoked`), by bootstrap or renewal,
/// until an admin clears it (`kcert revoke --node <node> --clear`, recorded in
/// `revokedNode.cleared`). Kept on a [`LedgerPage`] like every record, so it lasts whatever
/// becomes of the node's certificates and CSRs, and is never deleted: a cleared revocation stays
/// on the ledger, and revoking the node again writes a new record.
///
/// It is also a well-formed [`IssuedCertificate`] (signer [`NODE_REVOCATION_SIGNER`], user
/// `system:node:<node>`, already revoked, a fingerprint no certificate has), so a kcert that
/// predates node revocations reads it as one more revoked certificate nobody presents instead of
/// a record naming nothing (which would make its webhook answer 503).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokedNodeRecord {
    /// The record as an [`IssuedCertificate`]: its `revocation` is the node's (who, when, why).
    #[serde(flatten)]
    pub record: IssuedCertificate,
    /// The node, and whether the revocation was cleared.
    pub revoked_node: RevokedNode,
}

/// What a node revocation record adds to the [`IssuedCertificate`] fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokedNode {
    /// The node's name (its user is `system:node:<node>`).
    pub node: String,
    /// Set when an admin cleared the revocation: the node may bootstrap again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared: Option<Clearance>,
}

/// Who cleared a node's revocation, when and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Clearance {
    /// When, RFC 3339.
    pub cleared_at: String,
    /// Who (as the API server authenticated them).
    pub cleared_by: String,
    /// Why.
    pub reason: String,
}

impl RevokedNodeRecord {
    /// The record of node `node` revoked now by `revocation`; `nonce` makes its fingerprint
    /// (which names no certificate) unique.
    pub fn new(node: &str, revocation: Revocation, nonce: &str) -> Self {
        let fingerprint = kcert_pki::sha256_hex(
            format!(
                "kcert node revocation\n{node}\n{}\n{nonce}",
                revocation.revoked_at
            )
            .as_bytes(),
        );
        RevokedNodeRecord {
            record: IssuedCertificate {
                subject: format!("node {node} revoked (not a certificate)"),
                user: format!("{}{node}", kcert_policy::nodes::NODE_USER_PREFIX),
                fingerprint_sha256: fingerprint,
                signer_name: NODE_REVOCATION_SIGNER.into(),
                approved_by: "kcert revoke --node".into(),
                revocation: Some(revocation),
                ..Default::default()
            },
            revoked_node: RevokedNode {
                node: node.into(),
                cleared: None,
            },
        }
    }

    /// Whether the revocation is in force (not cleared).
    pub fn in_force(&self) -> bool {
        self.revoked_node.cleared.is_none()
    }
}

/// A revocation asked for by someone who may revoke but not edit the ledger (ClusterRole
/// `kcert-revoker`: create, get, list and watch on `revocations`, nothing else). Immutable once
/// created (its spec cannot change; no role kcert ships may update or delete it), and its
/// `revokedBy` must be its creator's user name as the API server authenticated them (the
/// ValidatingAdmissionPolicy `kcert-revocation-author` in deploy/admission.yaml). Every
/// kcert-controller process, the webhook-only ones included, applies it at once to every
/// ledger record it selects that was issued before it was created; the leader writes it onto
/// the ledger pages (the record) and reports what it revoked in `status`. `kcert revoke`
/// creates one. Named by `kcert revoke` `revoke-<random>`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "kcert.dev",
    version = "v1alpha1",
    kind = "Revocation",
    root = "RevocationObject",
    plural = "revocations",
    shortname = "revocation",
    status = "RevocationStatus",
    printcolumn = r#"{"name":"Serial","type":"string","jsonPath":".spec.serial"}"#,
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".spec.user"}"#,
    printcolumn = r#"{"name":"CSR","type":"string","jsonPath":".spec.csr"}"#,
    printcolumn = r#"{"name":"By","type":"string","jsonPath":".spec.revokedBy"}"#,
    printcolumn = r#"{"name":"Revoked","type":"integer","jsonPath":".status.revoked"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".spec.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RevocationSpec {
    /// The certificate with this serial (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub serial: Option<String>,
    /// The certificate with this SHA-256 fingerprint (`AB:CD:…`, hex or `X509SHA256=…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub fingerprint: Option<String>,
    /// The certificate issued for this CSR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub csr: Option<String>,
    /// Every certificate of this user (CN) issued before this object was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub user: Option<String>,
    /// Why (shown in the 403 the revoked credential gets). At most 256 bytes: it is copied onto
    /// every record revoked, and a page must stay far below etcd's request limit.
    #[schemars(length(min = 1, max = 256))]
    pub reason: String,
    /// Who: the creator's user name, checked by the API server's admission
    /// (`kcert-revocation-author`), so that it cannot be forged.
    #[schemars(length(min = 1, max = 1024))]
    pub revoked_by: String,
}

/// What the leader did with a [`RevocationObject`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevocationStatus {
    /// How many certificates it selected on the ledger when the leader wrote it there.
    pub revoked: u32,
    /// The certificates, as `kcert revoke` reports them.
    #[serde(default)]
    pub results: Vec<RevocationResult>,
}

/// One certificate a [`RevocationObject`] revoked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevocationResult {
    /// The ledger page holding its record.
    pub page: String,
    /// Its serial.
    pub serial: String,
    /// Its user.
    pub user: String,
    /// `revoked`, or `already revoked` (an earlier revocation stands).
    pub result: String,
    /// The revocation in force.
    pub revocation: Revocation,
}

/// The CEL rules of the Revocation CRD's spec: exactly one selector, and immutable.
pub const REVOCATION_RULES: [(&str, &str); 2] = [
    (
        "(has(self.serial) ? 1 : 0) + (has(self.fingerprint) ? 1 : 0) + (has(self.csr) ? 1 : 0) + (has(self.user) ? 1 : 0) == 1",
        "name exactly one of serial, fingerprint, csr, user",
    ),
    (
        "self == oldSelf",
        "a revocation is never changed (create another one)",
    ),
];

/// The Revocation CRD, with [`REVOCATION_RULES`] on its spec.
pub fn revocation_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = RevocationObject::crd();
    for v in crd.spec.versions.iter_mut() {
        if let Some(spec) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
        {
            spec.x_kubernetes_validations = Some(
                REVOCATION_RULES
                    .iter()
                    .map(|(rule, message)| {
                        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule {
                            rule: rule.to_string(),
                            message: Some(message.to_string()),
                            ..Default::default()
                        }
                    })
                    .collect(),
            );
        }
    }
    crd
}

impl RevocationSpec {
    /// Its selector.
    pub fn selector(&self) -> Option<crate::revocation::Selector> {
        use crate::revocation::Selector;
        match (&self.serial, &self.fingerprint, &self.csr, &self.user) {
            (Some(s), None, None, None) => Some(Selector::Serial(s.clone())),
            (None, Some(f), None, None) => Some(Selector::Fingerprint(f.clone())),
            (None, None, Some(c), None) => Some(Selector::Csr(c.clone())),
            (None, None, None, Some(u)) => Some(Selector::User(u.clone())),
            _ => None,
        }
    }
}

/// A SHA-256 fingerprint in any common spelling (`AB:CD:…`, `abcd…`, `X509SHA256=abcd…`,
/// `sha256:…`) as lower-case hex without separators.
pub fn normalize_fingerprint(f: &str) -> String {
    let f = f.trim();
    let f = f
        .strip_prefix("X509SHA256=")
        .or_else(|| f.strip_prefix("sha256:"))
        .or_else(|| f.strip_prefix("SHA256:"))
        .unwrap_or(f);
    f.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Every CRD manifest as YAML (what `deploy/crd.yaml` holds).
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    format!(
        "# Generated by `kcert-controller crd`; do not edit (a test fails if it drifts).\n{}---\n{}---\n{}---\n{}",
        serde_yaml::to_string(&ApprovalPolicy::crd()).expect("CRDs serialize"),
        serde_yaml::to_string(&LedgerPage::crd()).expect("CRDs serialize"),
        serde_yaml::to_string(&revocation_crd()).expect("CRDs serialize"),
        serde_yaml::to_string(&crate::rotation::ca_rotation_crd()).expect("CRDs serialize")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_crd_matches_the_code() {
        for path in [
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/crd.yaml"),
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../deploy/chart/kcert/crds/crd.yaml"
            ),
        ] {
            let on_disk = std::fs::read_to_string(path).unwrap_or_default();
            assert!(
                on_disk == super::crd_yaml(),
                "{path} is out of date: run `cargo run -p kcert-controller -- crd | tee deploy/crd.yaml > deploy/chart/kcert/crds/crd.yaml`"
            );
        }
    }
}
