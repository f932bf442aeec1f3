//! The provenance record: which kcert rule decided a CSR, written in the `kcert.dev/decision`
//! annotation in the same `/approval` write as the condition. Typed, and trusted only when it
//! is provably kcert's: it names the CSR's uid (which a requester cannot know before the API
//! server assigns it) and the condition it was written with is present with the same reason and
//! the very message (by hash): another approver's condition with the same reason — kube-
//! controller-manager's csrapproving also writes `AutoApproved` — does not make a record someone
//! else wrote into kcert's.
//! A requester who sets the annotation at create time gets it ignored, never shown as a rule.

use crate::DECISION_ANNOTATION;
use crate::conditions;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

/// What the approver records with its decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// `Approved` or `Denied`.
    pub outcome: String,
    /// The decision's reason (the condition's reason).
    pub reason: String,
    /// The deciding rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// The policy the rule came from.
    #[serde(default)]
    pub policy: Option<String>,
    /// Which version of the policy set was in force.
    #[serde(default)]
    pub policy_version: String,
    /// The rule's lifetime cap, if it set one.
    #[serde(default)]
    pub max_duration_seconds: Option<u64>,
    /// The UID the rule approved, if the request carried one and the rule allowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_uid: Option<String>,
    /// For a renewal: when the chain of renewals began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_started_at: Option<String>,
    /// The CSR this record was written for.
    #[serde(default)]
    pub csr_uid: String,
    /// The controller (and replica) that decided.
    #[serde(default)]
    pub by: String,
    /// SHA-256 (hex) of the condition's message written with this record.
    #[serde(default)]
    pub message_sha256: String,
}

impl Provenance {
    /// The record as the annotation's value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("provenance serializes")
    }

    /// The CSR's record, if kcert wrote it for this very object and its condition stands.
    pub fn read(csr: &CertificateSigningRequest) -> Option<Provenance> {
        let p: Provenance =
            serde_json::from_str(csr.annotations().get(DECISION_ANNOTATION)?).ok()?;
        let uid = csr.metadata.uid.as_deref()?;
        if p.csr_uid != uid {
            return None;
        }
        let condition = csr
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == p.outcome && c.status == "True")?;
        let message = condition.message.as_deref().unwrap_or_default();
        (condition.reason.as_deref() == Some(p.reason.as_str())
            && p.message_sha256 == kcert_pki::sha256_hex(message.as_bytes())
            && (p.outcome == conditions::APPROVED || p.outcome == conditions::DENIED))
            .then_some(p)
    }

    /// Whether a kcert rule approved the CSR.
    pub fn approved_by_rule(&self) -> bool {
        self.outcome == conditions::APPROVED && self.rule.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus;

    fn csr(uid: &str, annotation: &str, reason: &str) -> CertificateSigningRequest {
        let mut c = CertificateSigningRequest::default();
        c.metadata.uid = Some(uid.into());
        c.annotations_mut()
            .insert(DECISION_ANNOTATION.into(), annotation.into());
        c.status = Some(CertificateSigningRequestStatus {
            conditions: Some(vec![conditions::condition(
                conditions::APPROVED,
                reason,
                "m",
            )]),
            ..Default::default()
        });
        c
    }

    #[test]
    fn only_a_record_written_for_this_object_with_its_condition_is_trusted() {
        let p = Provenance {
            outcome: "Approved".into(),
            reason: "AutoApproved".into(),
            rule: Some("self-dev".into()),
            policy: Some("onboarding".into()),
            policy_version: "crd:onboarding@1".into(),
            max_duration_seconds: Some(3600),
            approved_uid: None,
            chain_started_at: None,
            csr_uid: "u-1".into(),
            by: "kcert-controller".into(),
            message_sha256: kcert_pki::sha256_hex(b"m"),
        };
        let text = p.to_annotation();
        assert_eq!(
            Provenance::read(&csr("u-1", &text, "AutoApproved")),
            Some(p.clone())
        );
        // Set by the requester before the object existed: the uid cannot match.
        let forged = Provenance {
            csr_uid: String::new(),
            ..p.clone()
        }
        .to_annotation();
        assert_eq!(Provenance::read(&csr("u-1", &forged, "AutoApproved")), None);
        // Re-created under the same name: another uid.
        assert_eq!(Provenance::read(&csr("u-2", &text, "AutoApproved")), None);
        // A human approved it (kubectl's reason): the record is not what approved it.
        assert_eq!(Provenance::read(&csr("u-1", &text, "KubectlApprove")), None);
        // The same reason with another message (another approver's AutoApproved): not kcert's.
        let other_message = Provenance {
            message_sha256: kcert_pki::sha256_hex(
                b"Auto approving kubelet client certificate after SubjectAccessReview.",
            ),
            ..p.clone()
        }
        .to_annotation();
        assert_eq!(
            Provenance::read(&csr("u-1", &other_message, "AutoApproved")),
            None
        );
        // Untyped junk.
        assert_eq!(
            Provenance::read(&csr("u-1", "{\"rule\": 1}", "AutoApproved")),
            None
        );
    }
}
