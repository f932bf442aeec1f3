//! kcert-kube: the Kubernetes vocabulary kcert's controller and CLI share, so that both read a
//! CertificateSigningRequest, a policy and RBAC the same way.
//!
//! ```text
//!  CertificateSigningRequest ──facts::csr_facts──► CsrFacts ─┐
//!  ApprovalPolicy objects ──policies::contribution──► Policy ─┼─► kcert_policy::evaluate
//!  Roles + bindings ──rbac::privileged_subjects──► Privileged ┘        │
//!                                                                      ▼
//!  conditions / CsrState ◄── replace::replace_with_retry (same uid) ◄── Decision + Provenance
//! ```
//!
//! Nothing here watches or runs: the controller (kcert-controller) and the CLI (kcert) do the
//! I/O around these types.

pub mod conditions;
pub mod crd;
pub mod facts;
pub mod ledger;
pub mod nodes;
pub mod policies;
pub mod provenance;
pub mod rbac;
pub mod replace;
pub mod revocation;
pub mod rotation;

pub use conditions::CsrState;
pub use provenance::Provenance;
pub use replace::{Subresource, Written, replace_with_retry};

/// The annotation holding the approver's provenance record ([`Provenance`]).
pub const DECISION_ANNOTATION: &str = "kcert.dev/decision";

/// The signer name kcert owns by default.
pub const DEFAULT_SIGNER_NAME: &str = "kcert.dev/client";

/// Why an approval or status write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The API server refused or failed a request (transient as far as we know).
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// Gave up after repeated write conflicts.
    #[error("CSR {0}: kept conflicting with other writers; will retry")]
    Conflict(String),
    /// The API server refuses the write for good (invalid, too large): retrying cannot help.
    #[error("CSR {0}: the API server refused the write: {1}")]
    Permanent(String, String),
}
