//! Small helpers over a CSR's status, shared by the approver and the signer.

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};

/// Condition types the API server knows.
pub const APPROVED: &str = "Approved";
/// Denied.
pub const DENIED: &str = "Denied";
/// Failed.
pub const FAILED: &str = "Failed";

/// Where a CSR is in its life, as kcert, kubectl and the cleaner all classify it: Failed and
/// Denied first (final), then Issued (a certificate), Approved (waiting for the signer), Pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum CsrState {
    /// No decision yet.
    Pending,
    /// Approved, no certificate yet.
    Approved,
    /// Denied (final).
    Denied,
    /// The signer refused it (final).
    Failed,
    /// Approved and issued.
    Issued,
}

impl CsrState {
    /// The state of `csr`.
    pub fn of(csr: &CertificateSigningRequest) -> Self {
        if has(csr, FAILED) {
            CsrState::Failed
        } else if has(csr, DENIED) {
            CsrState::Denied
        } else if has_certificate(csr) {
            CsrState::Issued
        } else if has(csr, APPROVED) {
            CsrState::Approved
        } else {
            CsrState::Pending
        }
    }

    /// The name shown in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CsrState::Pending => "Pending",
            CsrState::Approved => "Approved",
            CsrState::Denied => "Denied",
            CsrState::Failed => "Failed",
            CsrState::Issued => "Issued",
        }
    }

    /// Denied, Failed or Issued: nothing will change any more.
    pub fn is_final(self) -> bool {
        matches!(self, CsrState::Denied | CsrState::Failed | CsrState::Issued)
    }
}

impl std::fmt::Display for CsrState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the CSR carries a condition of `type_` with status True.
pub fn has(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Approved, Denied or Failed: nothing left for an approver.
pub fn is_decided(csr: &CertificateSigningRequest) -> bool {
    has(csr, APPROVED) || has(csr, DENIED) || has(csr, FAILED)
}

/// Whether a certificate was issued.
pub fn has_certificate(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

/// Append a new True condition (stamped now) to `csr`'s status.
pub fn add(csr: &mut CertificateSigningRequest, type_: &str, reason: &str, message: &str) {
    csr.status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(condition(type_, reason, message));
}

/// The longest condition message kcert writes, in bytes (the API limits message sizes).
pub const MESSAGE_LIMIT: usize = 1000;

/// A new True condition stamped now.
pub fn condition(type_: &str, reason: &str, message: &str) -> CertificateSigningRequestCondition {
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    CertificateSigningRequestCondition {
        type_: type_.to_string(),
        status: "True".to_string(),
        reason: Some(reason.to_string()),
        message: Some(truncate(message, MESSAGE_LIMIT)),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Cut `s` to at most `max` bytes on a character boundary (the API limits message sizes).
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus;

    #[test]
    fn states_follow_conditions_and_the_certificate() {
        let with = |types: &[&str], cert: bool| {
            let c = CertificateSigningRequest {
                status: Some(CertificateSigningRequestStatus {
                    conditions: Some(types.iter().map(|t| condition(t, "R", "m")).collect()),
                    certificate: cert.then(|| k8s_openapi::ByteString(b"PEM".to_vec())),
                }),
                ..Default::default()
            };
            CsrState::of(&c)
        };
        assert_eq!(with(&[], false), CsrState::Pending);
        assert_eq!(with(&[APPROVED], false), CsrState::Approved);
        assert_eq!(with(&[APPROVED], true), CsrState::Issued);
        assert_eq!(with(&[DENIED], false), CsrState::Denied);
        assert_eq!(with(&[APPROVED, FAILED], false), CsrState::Failed);
        assert!(CsrState::Issued.is_final() && !CsrState::Approved.is_final());
        assert_eq!(truncate(&"é".repeat(600), 1000).len(), 1000 - 1);
    }
}
