//! The node approver: decides pending kubelet CSRs (`kubernetes.io/kubelet-serving`,
//! `kubernetes.io/kube-apiserver-client-kubelet`) by the fixed node rules
//! ([`kcert_policy::nodes`]), never by policy rules: a separate controller, like
//! kube-controller-manager's csrapproving, sharing the approver's decision writer, Events and
//! metrics.
//!
//! Nothing is decided before the Nodes are listed, nor before the ledger is read (it says which
//! nodes are revoked: `NodeRevoked`, whoever asks); a SubjectAccessReview that fails decides
//! nothing (requeued); a serving CSR whose Node does not exist waits (an Event says so) and is
//! decided as soon as the Node appears, or denied `NodeNotFound` after `node_wait_seconds`.

use crate::Context;
use crate::Error;
use crate::conditions;
use crate::events::EventClass;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_kube::facts::parse_request;
use kcert_policy::{Outcome, Reason};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::sync::Arc;
use std::time::Duration;

/// The version string recorded in provenance for node decisions: the rules are flags.
pub const NODE_RULES_VERSION: &str = "controller-flags";

/// Decide one kubelet CSR. Idempotent: decided CSRs and other signers' CSRs are left alone.
#[tracing::instrument(skip_all, fields(csr = %csr.name_any(), signer = %csr.spec.signer_name))]
pub async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let rules = &ctx.settings.nodes;
    if !rules.decides(&csr.spec.signer_name) {
        return Ok(Action::await_change());
    }
    if conditions::has_certificate(&csr) {
        return Ok(record_if_ours(&csr, &ctx));
    }
    if conditions::is_decided(&csr) {
        return Ok(Action::await_change());
    }
    ctx.mark_evaluated(&csr);
    let serving = csr.spec.signer_name == kcert_policy::nodes::KUBELET_SERVING_SIGNER;
    if serving && !ctx.nodes.is_read() {
        tracing::info!(
            "Nodes not listed yet (or their watch is failing); leaving the serving CSR pending"
        );
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    if let Some(why) = revocations_unknown(&ctx) {
        tracing::info!(%why, "leaving the kubelet CSR pending");
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let (decision, request) = match kcert_kube::nodes::oversized(&csr) {
        Some(d) => (kcert_policy::nodes::in_mode(d, rules), None),
        None => {
            let request = parse_request(&csr);
            let access = match &request {
                Ok(r) => kcert_kube::nodes::review_all(&ctx.client, &csr, r).await?,
                Err(_) => Default::default(),
            };
            // The ledger read once for the decision (no await while it is held).
            let d = {
                let ledger = ctx.ledger_index.read();
                let Some(ledger) = ledger.as_ref() else {
                    // Dropped meanwhile (it could not be refreshed): fail closed.
                    return Ok(Action::requeue(Duration::from_secs(2)));
                };
                let judge = |nodes: &kcert_policy::nodes::NodeIndex| {
                    kcert_kube::nodes::verdict_of(&csr, &request, rules, nodes, &access, ledger)
                };
                // Client rules read no Node: they are decided without the Node watch.
                match ctx.nodes.with(judge) {
                    Some(d) => d,
                    None if !serving => judge(&Default::default()),
                    None => return Ok(Action::requeue(Duration::from_secs(2))),
                }
            };
            (d, request.ok())
        }
    };
    crate::approver::observe(&decision, &csr, &ctx);
    if decision.outcome == Outcome::Ignore {
        ctx.events.emit(
            &csr,
            EventClass::Problem,
            EventType::Normal,
            decision.reason.as_str(),
            "Ignore",
            &format!("left pending: {}", decision.message),
        );
        let left = rules.node_wait_seconds - kcert_kube::nodes::age_seconds(&csr);
        if decision.reason == Reason::NodeNotFound && left > 0 {
            // Decided as soon as the Node appears (its watch triggers this CSR); this requeue is
            // the bound on the wait.
            return Ok(Action::requeue(Duration::from_secs(
                left.clamp(1, 60) as u64
            )));
        }
        // Left for a human (approve-only): looked at again now and then, as what decided it (a
        // Node, another Node's addresses) may change without an event for this CSR.
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    crate::approver::write_and_announce(&csr, &decision, NODE_RULES_VERSION, request, &ctx).await
}

/// Why kubelet CSRs can be neither decided nor signed now, if so: which nodes are revoked is on
/// the ledger, and it has not been read (or could not be refreshed), or it holds a record that
/// names nothing kcert can find (which might be a node's revocation). Fail closed.
pub(crate) fn revocations_unknown(ctx: &Context) -> Option<String> {
    match ctx.ledger_index.read().as_ref() {
        None => Some(LEDGER_NOT_READ.into()),
        Some(index) => index.unidentifiable(),
    }
}

const LEDGER_NOT_READ: &str =
    "the ledger, which says which nodes are revoked, has not been read (or could not be refreshed)";

/// The revocation in force of `node` on the ledger (`kcert revoke --node`), or why that cannot
/// be told ([`revocations_unknown`]).
pub(crate) fn node_revocation(
    ctx: &Context,
    node: &str,
) -> Result<Option<kcert_policy::nodes::NodeRevocation>, String> {
    match ctx.ledger_index.read().as_ref() {
        None => Err(LEDGER_NOT_READ.into()),
        Some(index) => match index.unidentifiable() {
            Some(why) => Err(why),
            None => Ok(index.revoked_node(node).map(|e| e.for_rules())),
        },
    }
}

/// A kubelet certificate another signer (kube-controller-manager) issued for a CSR kcert
/// approved goes on the ledger too, so `kcert ledger` lists a node's certificates and
/// `kcert revoke` reaches them. What kcert signs itself the signer records; CSRs approved by
/// someone else are not kcert's to record.
fn record_if_ours(csr: &CertificateSigningRequest, ctx: &Context) -> Action {
    use crate::ledger::OnRecord;
    let approved_by_kcert = conditions::has(csr, conditions::APPROVED)
        && kcert_kube::Provenance::read(csr).is_some_and(|p| p.approved_by_rule());
    match ctx.ledger.as_ref() {
        Some(ledger) if approved_by_kcert && !ctx.serves(&csr.spec.signer_name) => {
            match ledger.ensure_observed(csr, || crate::signer::matches_kubelet_request(csr)) {
                OnRecord::Recorded => Action::await_change(),
                OnRecord::Queued => Action::requeue(Duration::from_secs(30)),
                OnRecord::NotRead => Action::requeue(Duration::from_secs(2)),
                OnRecord::NotOurs(why) => crate::signer::not_ours(csr, ctx, &why),
            }
        }
        _ => Action::await_change(),
    }
}
