//! The approver: decides pending CSRs of our signer names by the one evaluation
//! ([`kcert_policy::evaluate`]) and records why.

use crate::conditions::{self, APPROVED, DENIED};
use crate::events::EventClass;
use crate::facts::parse_request;
use crate::provenance::Provenance;
use crate::replace::{Subresource, Written, replace_with_retry};
use crate::{Context, DECISION_ANNOTATION, Error};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_kube::WriteError;
use kcert_policy::{Decision, Outcome};
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
    // Kubelet signers are the node approver's (fixed rules), never the policy's.
    if !ctx.serves(&csr.spec.signer_name)
        || kcert_policy::nodes::is_kubelet_signer(&csr.spec.signer_name)
        || conditions::is_decided(&csr)
    {
        return Ok(Action::await_change());
    }
    // Seen: from here every path decides or requeues (the sweep looks for CSRs never seen).
    ctx.mark_evaluated(&csr);
    let Some(snapshot) = ctx.policy.get() else {
        tracing::warn!("no valid policy loaded yet; leaving the CSR pending");
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    if let Some(why) = &snapshot.blocked {
        // Fail closed: a policy that cannot be read at all may have protected something.
        tracing::warn!(%why, "the policy set is unusable; leaving every CSR pending until it is fixed");
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let Some(privileged) = ctx.rbac.get() else {
        // Fail closed: without the bindings we cannot tell which groups are privileged.
        tracing::info!("RBAC bindings not read yet; leaving the CSR pending");
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    if !ctx.ledger_index.is_read() && snapshot.policy.needs_ledger() {
        // Fail closed: renewal rules cannot be decided without the ledger.
        tracing::info!(
            "the ledger has not been read yet (renewal rules need it); leaving the CSR pending"
        );
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    // Parsed once for this version: the decision and, right after, the signature. Too large:
    // denied unparsed.
    let (decision, request) = match crate::facts::oversized(&csr, &snapshot.policy) {
        Some(d) => (d, None),
        None => match parse_request(&csr) {
            Err(e) => (Decision::invalid_request(&e.to_string()), None),
            Ok(request) => {
                // The ledger is read once, and let go of before the policy is evaluated: the
                // ledger watch and the webhook never wait on a policy.
                let facts = {
                    let ledger = ctx.ledger_index.read();
                    crate::facts::facts_of(&csr, &request, ledger.as_ref())
                };
                match evaluate(facts, &snapshot.policy, &privileged).await {
                    Some(d) => (d, Some(request)),
                    None => {
                        ctx.events.emit(
                            &csr,
                            EventClass::Problem,
                            EventType::Warning,
                            EVALUATION_TIMED_OUT,
                            "Evaluate",
                            &format!(
                                "the policy could not be evaluated within {}s (see the log); left pending, retried in 30s",
                                EVALUATION_DEADLINE.as_secs()
                            ),
                        );
                        return Ok(Action::requeue(Duration::from_secs(30)));
                    }
                }
            }
        },
    };
    observe(&decision, &csr, &ctx);
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
            return write_and_announce(&csr, &decision, &snapshot.version, request, &ctx).await;
        }
    }
    Ok(Action::await_change())
}

/// Longest an evaluation may take. Conditions are bounded when they compile
/// ([`kcert_policy::cel_budget`]: milliseconds at most); this is the backstop, so that nothing
/// the policy does can hold a reconcile, let alone the runtime.
pub const EVALUATION_DEADLINE: Duration = Duration::from_secs(2);
/// The Event reason of an evaluation that passed [`EVALUATION_DEADLINE`].
pub const EVALUATION_TIMED_OUT: &str = "EvaluationTimedOut";

/// The one evaluation, off the async runtime when the policy has CEL conditions (a blocking
/// thread, with [`EVALUATION_DEADLINE`]); `None` when it ran out of time (the CSR stays
/// pending: fail closed).
pub(crate) async fn evaluate(
    facts: kcert_policy::CsrFacts,
    policy: &Arc<kcert_policy::Policy>,
    privileged: &Arc<kcert_policy::PrivilegedSubjects>,
) -> Option<Decision> {
    if !policy.has_conditions() {
        // Globs, regexes and sets only: microseconds, no thread hop on the issuance path.
        return Some(kcert_policy::evaluate(&facts, policy, privileged));
    }
    let (policy, privileged) = (policy.clone(), privileged.clone());
    let task =
        tokio::task::spawn_blocking(move || kcert_policy::evaluate(&facts, &policy, &privileged));
    match tokio::time::timeout(EVALUATION_DEADLINE, task).await {
        Ok(Ok(decision)) => Some(decision),
        Ok(Err(panicked)) => {
            tracing::error!(%panicked, "the evaluation failed; leaving the CSR pending");
            None
        }
        Err(_) => {
            tracing::error!(
                deadline_seconds = EVALUATION_DEADLINE.as_secs(),
                "the evaluation ran out of time; leaving the CSR pending"
            );
            None
        }
    }
}

/// Write an Approve or Deny decision, announce it (Event), and sign at once when this process
/// signs the CSR's signer. Shared by the approver and the node approver.
pub(crate) async fn write_and_announce(
    csr: &CertificateSigningRequest,
    decision: &Decision,
    rules_version: &str,
    request: Option<kcert_pki::CertificateRequest>,
    ctx: &Arc<Context>,
) -> Result<Action, Error> {
    // Approved and ours to sign: the signer's checks and the signature run on a blocking
    // thread while the approval is on its way to the API server (the two took turns before:
    // the signature's milliseconds sat on every certificate's latency). Nothing signed is
    // written, or kept, unless the approval is: what `prepare` comes to is written by
    // `finish` only onto the approved object the API server returns. The signing claim is
    // taken first, so the signer's own reconcile of the approval waits for this path.
    let signs_here = decision.outcome == Outcome::Approve
        && ctx.settings.signer
        && ctx.serves(&csr.spec.signer_name);
    let claim = if signs_here { ctx.claim(csr) } else { None };
    let presigned = claim.as_ref().map(|_| {
        let (csr, ctx) = (csr.clone(), ctx.clone());
        let approval = crate::signer::Approval::from_decision(decision);
        tokio::task::spawn_blocking(move || {
            crate::signer::prepare(&csr, Some(&approval), request, &ctx)
        })
    });
    let written = match write_decision(csr, decision, rules_version, ctx).await {
        Ok(w) => w,
        Err(Error::Write(WriteError::Permanent(_, message)))
            if !ctx.serves(&csr.spec.signer_name) =>
        {
            // Another signer's CSR (a kubelet's): not ours to mark Failed. Most likely kcert
            // lacks `approve` on that signer; retried once the RBAC is fixed.
            tracing::warn!(%message, "cannot record the decision; retrying in 30s");
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        Err(Error::Write(WriteError::Permanent(_, message))) => {
            drop(claim);
            return crate::signer::fail(
                csr,
                ctx,
                &format!("cannot record the decision: {message}"),
            )
            .await;
        }
        Err(e) => return Err(e),
    };
    if let Written::Done(decided) = written {
        let (class, kind, action) = match decision.outcome {
            Outcome::Approve => (EventClass::Decision, EventType::Normal, "Approve"),
            _ => (EventClass::Problem, EventType::Warning, "Deny"),
        };
        ctx.events.emit(
            csr,
            class,
            kind,
            decision.reason.as_str(),
            action,
            &decision.message,
        );
        // The signer in this process signs at once from the object the API server just
        // returned, with the identity and cap the decision approved (values, not a round trip
        // through the annotation): one watch hop less.
        if signs_here {
            if !conditions::has(&decided, APPROVED) || conditions::has(&decided, conditions::FAILED)
            {
                return Ok(Action::await_change());
            }
            return match presigned {
                Some(task) => match task.await {
                    Ok(prepared) => crate::signer::finish(&decided, prepared, ctx).await,
                    Err(panicked) => {
                        tracing::error!(%panicked, "signing failed; the signer will retry");
                        Ok(Action::requeue(Duration::from_secs(5)))
                    }
                },
                // The signer's reconcile holds the claim: it signs.
                None => Ok(Action::requeue(Duration::from_secs(1))),
            };
        }
    }
    Ok(Action::await_change())
}

/// The decision in the log and the metrics, with the same reason string as the condition.
pub(crate) fn observe(decision: &Decision, csr: &CertificateSigningRequest, ctx: &Context) {
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
}

/// Write Approved or Denied through `/approval`, with the provenance annotation, for this very
/// object (uid) only.
async fn write_decision(
    csr: &CertificateSigningRequest,
    decision: &Decision,
    policy_version: &str,
    ctx: &Context,
) -> Result<Written, Error> {
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let condition_type = if decision.outcome == Outcome::Approve {
        APPROVED
    } else {
        DENIED
    };
    let provenance = Provenance {
        outcome: condition_type.to_string(),
        reason: decision.reason.as_str().to_string(),
        rule: decision.rule.clone(),
        policy: decision.policy.clone(),
        policy_version: policy_version.to_string(),
        max_duration_seconds: decision.max_duration_seconds,
        approved_uid: decision.subject.as_ref().and_then(|s| s.uid.clone()),
        chain_started_at: decision.chain_started_unix.and_then(|t| {
            k8s_openapi::jiff::Timestamp::from_second(t)
                .ok()
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        }),
        csr_uid: csr.metadata.uid.clone().unwrap_or_default(),
        by: match &ctx.settings.instance {
            Some(i) => format!("{}/{i}", ctx.settings.controller_name),
            None => ctx.settings.controller_name.clone(),
        },
        // Of the message as the condition will hold it (conditions are cut to 1,000 bytes).
        message_sha256: kcert_pki::sha256_hex(
            conditions::truncate(&decision.message, conditions::MESSAGE_LIMIT).as_bytes(),
        ),
    }
    .to_annotation();
    replace_with_retry(&api, csr, Subresource::Approval, |current| {
        if conditions::is_decided(current) {
            return false;
        }
        // Overwrites whatever a requester put there.
        current
            .annotations_mut()
            .insert(DECISION_ANNOTATION.to_string(), provenance.clone());
        conditions::add(
            current,
            condition_type,
            decision.reason.as_str(),
            &decision.message,
        );
        true
    })
    .await
    .map_err(Error::from)
}
