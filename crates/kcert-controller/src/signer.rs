//! The signer: issues certificates for Approved CSRs of our signer names, or marks them Failed.
//! Each signer name is checked against a table of rules, as kube-controller-manager does.

use crate::conditions::{self, APPROVED, FAILED};
use crate::events::EventClass;
use crate::facts::parse_request;
use crate::{Context, DECISION_ANNOTATION, Error};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_pki::{SigningProfile, SystemRandom, Usage};
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The reason kube-controller-manager writes for requests it will not sign.
pub const SIGNER_VALIDATION_FAILURE: &str = "SignerValidationFailure";

/// Usages a client-certificate signer accepts, and the one it requires.
const CLIENT_ALLOWED: [Usage; 3] = [
    Usage::DigitalSignature,
    Usage::KeyEncipherment,
    Usage::ClientAuth,
];

/// Check `usages` against the client-certificate rules every signer kcert serves applies
/// (`kubernetes.io/kube-apiserver-client`'s rules); messages as Kubernetes words them.
pub fn client_usages(usages: &[String]) -> Result<Vec<Usage>, String> {
    let mut out = Vec::new();
    for u in usages {
        let usage: Usage = u
            .parse()
            .map_err(|_| format!("invalid usage for client certificate: {u}"))?;
        if !CLIENT_ALLOWED.contains(&usage) {
            return Err(format!("invalid usage for client certificate: {u}"));
        }
        out.push(usage);
    }
    if !out.contains(&Usage::ClientAuth) {
        return Err("missing required usage for client certificate: client auth".into());
    }
    Ok(out)
}

/// The lifetime cap: the signer's, lowered by the approving rule's `maxDuration` if it set one.
pub fn lifetime_cap(signer_max: Duration, csr: &CertificateSigningRequest) -> Duration {
    let rule_max = csr
        .annotations()
        .get(DECISION_ANNOTATION)
        .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
        .and_then(|v| v["maxDurationSeconds"].as_u64())
        .map(Duration::from_secs);
    // The annotation can only shorten a lifetime, so a requester who sets it gains nothing.
    rule_max.map_or(signer_max, |r| r.min(signer_max))
}

/// Sign one CSR if it is ours, Approved, not Failed and not yet issued.
#[tracing::instrument(skip_all, fields(csr = %csr.name_any(), signer = %csr.spec.signer_name))]
pub async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if !ctx.serves(&csr.spec.signer_name) {
        return Ok(Action::await_change());
    }
    if conditions::has_certificate(&csr) {
        // Issued (by us, before a restart, or by another replica): make sure it is on record.
        if let Some(ledger) = &ctx.ledger {
            ledger.ensure(&csr).await?;
        }
        return Ok(Action::await_change());
    }
    sign(&csr, &ctx).await
}

/// Issue the certificate of an Approved CSR (or mark it Failed). Called by the signer's
/// reconcile and, right after approving, by the approver in the same process; a CSR being
/// signed by one is left to it by the other.
pub(crate) async fn sign(csr: &CertificateSigningRequest, ctx: &Context) -> Result<Action, Error> {
    if !conditions::has(csr, APPROVED) || conditions::has(csr, FAILED) {
        return Ok(Action::await_change());
    }
    let Some(_claim) = ctx.claim(csr) else {
        // The other path is signing it now; look again once it has written.
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let Some(ca) = ctx.ca.get() else {
        tracing::warn!("no CA loaded yet; will retry");
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    let request = match parse_request(csr) {
        Ok(r) => r,
        Err(e) => return fail(csr, ctx, &format!("invalid request: {e}")).await,
    };
    let usages = match client_usages(csr.spec.usages.as_deref().unwrap_or_default()) {
        Ok(u) => u,
        Err(e) => return fail(csr, ctx, &e).await,
    };
    let profile = SigningProfile {
        usages,
        max_lifetime: lifetime_cap(ctx.settings.max_duration, csr),
        requested_lifetime: csr
            .spec
            .expiration_seconds
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
        allow_sans: false,
    };
    let started = std::time::Instant::now();
    let issued = match ca.sign(&request, &profile, SystemTime::now(), &SystemRandom) {
        Ok(c) => c,
        Err(e) => return fail(csr, ctx, &e.to_string()).await,
    };
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let name = csr.name_any();
    let mut current = csr.clone();
    for _ in 0..5 {
        if conditions::has_certificate(&current) || conditions::has(&current, FAILED) {
            return Ok(Action::await_change());
        }
        current
            .status
            .get_or_insert_with(Default::default)
            .certificate = Some(ByteString(issued.to_pem().into_bytes()));
        match api
            .replace_status(&name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => {
                if let Some(ledger) = &ctx.ledger {
                    ledger.issued_here(csr);
                }
                ctx.metrics.issued(&csr.spec.signer_name, started.elapsed());
                tracing::info!(serial = %issued.serial, not_after = %kcert_pki::time_fmt::rfc3339(issued.not_after), elapsed_ms = started.elapsed().as_millis() as u64, "issued");
                let note = format!(
                    "issued serial {} for {}, valid until {}",
                    issued.serial,
                    request.subject(),
                    kcert_pki::time_fmt::rfc3339(issued.not_after)
                );
                ctx.events.emit(
                    csr,
                    EventClass::Issuance,
                    EventType::Normal,
                    "Issued",
                    "Sign",
                    &note,
                );
                return Ok(Action::await_change());
            }
            Err(kube::Error::Api(s)) if s.code == 409 => current = api.get(&name).await?,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict(name))
}

/// Mark the CSR Failed with SignerValidationFailure; it is not retried.
async fn fail(
    csr: &CertificateSigningRequest,
    ctx: &Context,
    message: &str,
) -> Result<Action, Error> {
    tracing::warn!(message, "refusing to sign");
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let name = csr.name_any();
    let mut current = csr.clone();
    for _ in 0..5 {
        if conditions::has(&current, FAILED) || conditions::has_certificate(&current) {
            return Ok(Action::await_change());
        }
        current
            .status
            .get_or_insert_with(Default::default)
            .conditions
            .get_or_insert_with(Vec::new)
            .push(conditions::condition(
                FAILED,
                SIGNER_VALIDATION_FAILURE,
                message,
            ));
        match api
            .replace_status(&name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => {
                ctx.events.emit(
                    csr,
                    EventClass::Problem,
                    EventType::Warning,
                    SIGNER_VALIDATION_FAILURE,
                    "Sign",
                    message,
                );
                return Ok(Action::await_change());
            }
            Err(kube::Error::Api(s)) if s.code == 409 => current = api.get(&name).await?,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_signer_usage_rules_match_kubernetes() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(
            client_usages(&s(&[
                "digital signature",
                "key encipherment",
                "client auth"
            ]))
            .is_ok()
        );
        assert!(client_usages(&s(&["client auth"])).is_ok());
        assert_eq!(
            client_usages(&s(&["client auth", "server auth"])).unwrap_err(),
            "invalid usage for client certificate: server auth"
        );
        assert_eq!(
            client_usages(&s(&["digital signature"])).unwrap_err(),
            "missing required usage for client certificate: client auth"
        );
        assert_eq!(
            client_usages(&s(&["bogus"])).unwrap_err(),
            "invalid usage for client certificate: bogus"
        );
    }

    #[test]
    fn the_rule_annotation_can_only_shorten_lifetimes() {
        let mut csr = CertificateSigningRequest::default();
        let day = Duration::from_secs(86_400);
        assert_eq!(lifetime_cap(day, &csr), day);
        csr.annotations_mut().insert(
            DECISION_ANNOTATION.into(),
            r#"{"maxDurationSeconds": 3600}"#.into(),
        );
        assert_eq!(lifetime_cap(day, &csr), Duration::from_secs(3600));
        csr.annotations_mut().insert(
            DECISION_ANNOTATION.into(),
            r#"{"maxDurationSeconds": 999999999}"#.into(),
        );
        assert_eq!(lifetime_cap(day, &csr), day);
    }
}
