//! The CSR approver and signer controllers (filled in by the controller issue).
