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

/// A new True condition stamped now.
pub fn condition(type_: &str, reason: &str, message: &str) -> CertificateSigningRequestCondition {
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    CertificateSigningRequestCondition {
        type_: type_.to_string(),
        status: "True".to_string(),
        reason: Some(reason.to_string()),
        message: Some(truncate(message, 1000)),
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
