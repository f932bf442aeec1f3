//! The approver: decides pending CSRs of our signer names by policy and records why.

use crate::conditions::{self, APPROVED, DENIED};
use crate::facts::{csr_facts, parse_request};
use crate::{Context, DECISION_ANNOTATION, Error};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_policy::{Decision, Outcome, decide};
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
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
        Outcome::Ignore => {
            ctx.event(
                &csr,
                EventType::Normal,
                decision.reason.as_str(),
                "Ignore",
                &format!("left for a human: {}", decision.message),
            )
            .await;
        }
        Outcome::Approve | Outcome::Deny => {
            if write_decision(&csr, &decision, &snapshot.version, &ctx).await? {
                let (kind, action) = match decision.outcome {
                    Outcome::Approve => (EventType::Normal, "Approve"),
                    _ => (EventType::Warning, "Deny"),
                };
                ctx.event(
                    &csr,
                    kind,
                    decision.reason.as_str(),
                    action,
                    &decision.message,
                )
                .await;
            }
        }
    }
    Ok(Action::await_change())
}

/// Write Approved or Denied through `/approval`, with the provenance annotation, under
/// optimistic concurrency. Returns false if someone else decided first.
async fn write_decision(
    csr: &CertificateSigningRequest,
    decision: &Decision,
    policy_version: &str,
    ctx: &Context,
) -> Result<bool, Error> {
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
            return Ok(false);
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
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!("conflict writing the decision; retrying on the latest version");
                current = api.get(&name).await?;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict(name))
}

impl Context {
    /// Publish an Event on the CSR; failures are logged, never fatal.
    pub(crate) async fn event(
        &self,
        csr: &CertificateSigningRequest,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(conditions::truncate(note, 1000)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &csr.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish an Event");
        }
    }
}
