//! Pure approval decisions for CertificateSigningRequests (filled in by the controller issue).
