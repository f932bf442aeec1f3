//! The approver: decides pending CSRs of our signer names by policy and records why.

use crate::conditions::{self, APPROVED, DENIED};
use crate::events::EventClass;
use crate::facts::{csr_facts, parse_request};
use crate::{Context, DECISION_ANNOTATION, Error};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_policy::{Decision, Outcome, decide};
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Decide one CSR. Idempotent: decided CSRs and other signers' CSRs are left alone.
#[tracing::instrument(skip_all, fields(csr = %csr.name_any(), signer = %csr.spec.signer_name))]
pub async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if !ctx.serves(&csr.spec.signer_name) || conditions::is_decided(&csr) {
        return Ok(Action::await_change());
    }
    let Some(snapshot) = ctx.policy.get() else {
        tracing::warn!("no valid policy loaded yet; leaving the CSR pending");
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    // The signer's table comes first: approving what it would refuse to sign helps nobody.
    let usages = crate::signer::client_usages(csr.spec.usages.as_deref().unwrap_or_default());
    let decision = match (parse_request(&csr), usages) {
        (Err(e), _) => Decision::invalid_request(&e.to_string()),
        (Ok(_), Err(problem)) => Decision::deny(kcert_policy::Reason::UsageNotAllowed, problem),
        (Ok(request), Ok(_)) => decide(&csr_facts(&csr, &request), &snapshot.policy),
    };
    tracing::info!(
        outcome = ?decision.outcome,
        reason = decision.reason.as_str(),
        rule = decision.rule.as_deref().unwrap_or("-"),
        message = %decision.message,
        "decided"
    );
    let outcome = match decision.outcome {
        Outcome::Approve => "approve",
        Outcome::Deny => "deny",
        Outcome::Ignore => "ignore",
    };
    ctx.metrics.decision(
        outcome,
        decision.reason.as_str(),
        decision.rule.as_deref(),
        &csr.spec.signer_name,
    );
    match decision.outcome {
        Outcome::Ignore => ctx.events.emit(
            &csr,
            EventClass::Problem,
            EventType::Normal,
            decision.reason.as_str(),
            "Ignore",
            &format!("left for a human: {}", decision.message),
        ),
        Outcome::Approve | Outcome::Deny => {
            if let Some(decided) = write_decision(&csr, &decision, &snapshot.version, &ctx).await? {
                let (class, kind, action) = match decision.outcome {
                    Outcome::Approve => (EventClass::Decision, EventType::Normal, "Approve"),
                    _ => (EventClass::Problem, EventType::Warning, "Deny"),
                };
                ctx.events.emit(
                    &csr,
                    class,
                    kind,
                    decision.reason.as_str(),
                    action,
                    &decision.message,
                );
                // The signer in this process signs at once from the object the API server just
                // returned, instead of waiting for the watch to deliver the approval: one watch
                // hop less between request and certificate.
                if decision.outcome == Outcome::Approve && ctx.settings.signer {
                    return crate::signer::sign(&decided, &ctx).await;
                }
            }
        }
    }
    Ok(Action::await_change())
}

/// Write Approved or Denied through `/approval`, with the provenance annotation, under
/// optimistic concurrency. Returns the CSR as written, or None if someone else decided first.
async fn write_decision(
    csr: &CertificateSigningRequest,
    decision: &Decision,
    policy_version: &str,
    ctx: &Context,
) -> Result<Option<CertificateSigningRequest>, Error> {
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let name = csr.name_any();
    let condition_type = if decision.outcome == Outcome::Approve {
        APPROVED
    } else {
        DENIED
    };
    let provenance = serde_json::json!({
        "outcome": condition_type,
        "reason": decision.reason.as_str(),
        "rule": decision.rule,
        "policy": decision.policy,
        "policyVersion": policy_version,
        "maxDurationSeconds": decision.max_duration_seconds,
        "by": match &ctx.settings.instance {
            Some(i) => format!("{}/{i}", ctx.settings.controller_name),
            None => ctx.settings.controller_name.clone(),
        },
    })
    .to_string();
    let mut current = csr.clone();
    for _ in 0..5 {
        if conditions::is_decided(&current) {
            return Ok(None);
        }
        current
            .annotations_mut()
            .insert(DECISION_ANNOTATION.to_string(), provenance.clone());
        let status = current.status.get_or_insert_with(Default::default);
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(conditions::condition(
                condition_type,
                decision.reason.as_str(),
                &decision.message,
            ));
        match api
            .replace_subresource("approval", &name, &PostParams::default(), &current)
            .await
        {
            Ok(written) => return Ok(Some(written)),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!("conflict writing the decision; retrying on the latest version");
                current = api.get(&name).await?;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict(name))
}
