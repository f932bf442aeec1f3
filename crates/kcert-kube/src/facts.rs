//! Turning a CertificateSigningRequest object and its parsed request into policy facts.

use crate::ledger::LedgerIndex;
use crate::revocation::CREDENTIAL_ID;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_pki::{CertificateRequest, KeyAlgorithm};
use kcert_policy::{
    CredentialFacts, CsrFacts, Decision, KeyKind, Policy, PrivilegedSubjects, Requester, SanFacts,
};

/// Parse `spec.request` (PEM) and verify its signature.
pub fn parse_request(
    csr: &CertificateSigningRequest,
) -> Result<CertificateRequest, kcert_pki::PkiError> {
    CertificateRequest::from_pem(&csr.spec.request.0)
}

/// The facts `decide` needs, from the object and the parsed request.
pub fn csr_facts(csr: &CertificateSigningRequest, request: &CertificateRequest) -> CsrFacts {
    let spec = &csr.spec;
    let sans = request.sans();
    CsrFacts {
        signer_name: spec.signer_name.clone(),
        requester: Requester {
            username: spec.username.clone().unwrap_or_default(),
            uid: spec.uid.clone().unwrap_or_default(),
            groups: spec.groups.clone().unwrap_or_default(),
            extra: spec.extra.clone().unwrap_or_default().into_iter().collect(),
        },
        common_names: request.subject().common_names.clone(),
        organizations: request.subject().organizations.clone(),
        uids: request.subject().uids.clone(),
        other_attributes: request
            .subject()
            .unexpected_attributes()
            .map(|a| format!("{}={}", a.name, a.value))
            .collect(),
        request_bytes: spec.request.0.len(),
        // Filled in by verdict_of (the ledger and the clock are not the request's).
        credential: None,
        now_unix: 0,
        sans: SanFacts {
            dns: sans.dns.clone(),
            ips: sans.ips.iter().map(|ip| ip.to_string()).collect(),
            emails: sans.emails.clone(),
            uris: sans.uris.clone(),
            other: sans.other,
        },
        usages: spec.usages.clone().unwrap_or_default(),
        expiration_seconds: spec.expiration_seconds.map(i64::from),
        key: match request.public_key().algorithm() {
            KeyAlgorithm::Rsa { bits } => KeyKind::Rsa(bits as u32),
            KeyAlgorithm::EcdsaP256 => KeyKind::EcdsaP256,
            KeyAlgorithm::EcdsaP384 => KeyKind::EcdsaP384,
            KeyAlgorithm::EcdsaP521 => KeyKind::EcdsaP521,
            KeyAlgorithm::Ed25519 => KeyKind::Ed25519,
        },
    }
}

/// The one evaluation of a CSR object: its request parsed and verified, then
/// [`kcert_policy::evaluate`]; an unreadable request is denied `InvalidRequest`. What the
/// approver writes, what `kcert policy test` and `kcert list` show.
pub fn verdict(
    csr: &CertificateSigningRequest,
    policy: &Policy,
    privileged: &PrivilegedSubjects,
    ledger: Option<&LedgerIndex>,
) -> Decision {
    if let Some(d) = oversized(csr, policy) {
        return d;
    }
    verdict_of(csr, &parse_request(csr), policy, privileged, ledger)
}

/// A request larger than the policy accepts is denied before it is parsed: parsing a
/// multi-megabyte request of many thousand attributes is the one costly step.
pub fn oversized(csr: &CertificateSigningRequest, policy: &Policy) -> Option<Decision> {
    let size = csr.spec.request.0.len();
    let max = policy.limits().max_request_bytes;
    (size > max).then(|| {
        Decision::deny(
            kcert_policy::Reason::RequestTooLarge,
            format!(
                "the request is {size} bytes; at most {max} are accepted (subjectLimits.maxRequestBytes)"
            ),
        )
    })
}

/// The requester's certificate (the `credential-id` the API server recorded in `spec.extra`)
/// as the ledger knows it; `None` when they used no certificate or there is no ledger.
pub fn credential_facts(
    csr: &CertificateSigningRequest,
    ledger: Option<&LedgerIndex>,
) -> Option<CredentialFacts> {
    let ledger = ledger?;
    let id = csr
        .spec
        .extra
        .as_ref()?
        .get(CREDENTIAL_ID)?
        .iter()
        .find(|id| id.starts_with("X509SHA256="))?;
    Some(match ledger.record(id) {
        None => CredentialFacts::default(),
        Some(r) => CredentialFacts {
            known: true,
            serial: r.serial.to_string(),
            user: r.user.to_string(),
            groups: r.groups.iter().map(|g| g.to_string()).collect(),
            // Revoked itself, or requested with a certificate that is (a renewal of a renewal
            // of a revoked certificate is refused too).
            revoked: ledger.revoked_lineage(id).map(|l| {
                let v = l.revocation;
                let via = l
                    .through
                    .map(|s| format!(" (through certificate serial {s} it was renewed from)"))
                    .unwrap_or_default();
                format!("at {} by {}: {}{via}", v.revoked_at, v.revoked_by, v.reason)
            }),
            not_after_unix: r.not_after,
            chain_started_unix: r.chain_started,
        },
    })
}

/// [`verdict`] for a request already parsed (the approver parses once per CSR version and hands
/// the parsed request on to the signer).
pub fn verdict_of(
    csr: &CertificateSigningRequest,
    request: &Result<CertificateRequest, kcert_pki::PkiError>,
    policy: &Policy,
    privileged: &PrivilegedSubjects,
    ledger: Option<&LedgerIndex>,
) -> Decision {
    match request {
        Ok(request) => kcert_policy::evaluate(&facts_of(csr, request, ledger), policy, privileged),
        Err(e) => Decision::invalid_request(&e.to_string()),
    }
}

/// Everything the evaluation looks at, the requester's certificate and the clock included: the
/// one read of the ledger, so that a caller can let go of it before evaluating.
pub fn facts_of(
    csr: &CertificateSigningRequest,
    request: &CertificateRequest,
    ledger: Option<&LedgerIndex>,
) -> CsrFacts {
    let mut facts = csr_facts(csr, request);
    facts.credential = credential_facts(csr, ledger);
    facts.now_unix = k8s_openapi::jiff::Timestamp::now().as_second();
    facts
}
