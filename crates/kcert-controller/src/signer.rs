//! The signer: issues certificates for Approved CSRs of our signer names, or marks them Failed.
//! Each signer name is checked against a table of rules, as kube-controller-manager does.

#[cfg(test)]
use crate::DECISION_ANNOTATION;
use crate::conditions::{self, APPROVED, FAILED};
use crate::events::EventClass;
use crate::facts::parse_request;
use crate::ledger::OnRecord;
use crate::provenance::Provenance;
use crate::replace::{Subresource, Written, replace_with_retry};
use crate::{Context, Error};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_kube::WriteError;
use kcert_pki::{CsrSubject, SigningProfile, SystemRandom, Usage};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The reason kube-controller-manager writes for requests it will not sign.
pub const SIGNER_VALIDATION_FAILURE: &str = "SignerValidationFailure";

/// Check `usages` against the signer's table ([`kcert_policy::signers`], the same table the
/// evaluation applies) and turn them into kcert-pki's usages.
pub fn client_usages(signer_name: &str, usages: &[String]) -> Result<Vec<Usage>, String> {
    kcert_policy::signers::check_usages(signer_name, usages)?;
    usages
        .iter()
        .map(|u| {
            u.parse()
                .map_err(|_| format!("invalid usage for client certificate: {u}"))
        })
        .collect()
}

/// What an approval grants beyond the request itself, as values: the UID the deciding rule
/// allowed and its lifetime cap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Approval {
    /// The UID a rule approved; `None` means a request carrying a UID is refused.
    pub uid: Option<String>,
    /// The rule's lifetime cap.
    pub max_duration: Option<Duration>,
    /// For a kubelet serving certificate: the SANs the node rules checked.
    pub names: Option<kcert_policy::nodes::ApprovedNames>,
}

impl Approval {
    /// From the decision just written (the approver's inline signing).
    pub fn from_decision(d: &kcert_policy::Decision) -> Self {
        Approval {
            uid: d.subject.as_ref().and_then(|s| s.uid.clone()),
            max_duration: d.max_duration_seconds.map(Duration::from_secs),
            names: d.names.clone(),
        }
    }

    /// From the CSR: kcert's provenance when it is provably kcert's (see [`Provenance::read`]);
    /// otherwise (a human approved it, or the record is forged) nothing beyond the request's
    /// own CN and O.
    pub fn from_csr(csr: &CertificateSigningRequest) -> Self {
        match Provenance::read(csr) {
            Some(p) if p.approved_by_rule() => Approval {
                uid: p.approved_uid,
                max_duration: p.max_duration_seconds.map(Duration::from_secs),
                names: None,
            },
            _ => Approval::default(),
        }
    }

    /// The lifetime cap: the signer's, lowered by the rule's.
    pub fn lifetime_cap(&self, signer_max: Duration) -> Duration {
        self.max_duration.map_or(signer_max, |r| r.min(signer_max))
    }
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
        let Some(ledger) = ctx.ledger.as_ref() else {
            return Ok(Action::await_change());
        };
        if ctx.is_signing(&csr) {
            // The watch brought back the certificate this process is writing: the signing path
            // records it as soon as the write returns. Looked at again then, not repaired now
            // (that would check it all again and count a repair that is none).
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        let serving = csr.spec.signer_name == kcert_policy::nodes::KUBELET_SERVING_SIGNER;
        let trusted = ctx.ca.trusted();
        let (false, Some(privileged), false) = (
            trusted.is_empty(),
            ctx.rbac.get(),
            serving && !ctx.nodes.is_read(),
        ) else {
            // Cannot vouch for a certificate yet; nothing is recorded unchecked.
            return Ok(Action::requeue(Duration::from_secs(2)));
        };
        return Ok(
            match ledger.ensure(&csr, || vouch(&csr, &ctx, &trusted, &privileged)) {
                OnRecord::Recorded => Action::await_change(),
                OnRecord::Queued => Action::requeue(Duration::from_secs(30)),
                OnRecord::NotRead => Action::requeue(Duration::from_secs(2)),
                OnRecord::NotOurs(why) => not_ours(&csr, &ctx, &why),
            },
        );
    }
    sign(&csr, None, None, &ctx).await
}

/// The Event reason for a certificate kcert will not record as its own.
pub const NOT_ISSUED_BY_KCERT: &str = "NotIssuedByKcert";

/// A certificate on a CSR that is not what was approved for it: not recorded; said in the log,
/// a Warning Event and a metric. Nothing to retry until the CSR changes.
pub(crate) fn not_ours(csr: &CertificateSigningRequest, ctx: &Context, why: &str) -> Action {
    ctx.metrics.ledger_refused_foreign();
    tracing::error!(why = %why, "a certificate on this CSR is not one issued for what was approved; not recording it on kcert's ledger");
    ctx.events.emit(
        csr,
        EventClass::Problem,
        EventType::Warning,
        NOT_ISSUED_BY_KCERT,
        "Record",
        &format!(
            "the certificate this CSR holds is not one issued for it ({why}); it is not recorded on kcert's ledger, so strict mode refuses it and `kcert revoke` names it as unrecorded"
        ),
    );
    Action::await_change()
}

/// The certificate `csr` holds: its DER and what it says.
fn held_certificate(
    csr: &CertificateSigningRequest,
) -> Result<(Vec<u8>, kcert_pki::CertificateInfo), String> {
    let pem = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .ok_or("no certificate")?;
    // The leaf first; after it, an intermediate CA's chain (which kcert writes itself).
    let blocks = kcert_pki::pem::parse_blocks(&pem.0).map_err(|e| e.to_string())?;
    let block = match blocks.first() {
        Some(b) if b.label == "CERTIFICATE" => b,
        _ => return Err("status.certificate does not start with a CERTIFICATE".into()),
    };
    let cert = kcert_pki::CertificateInfo::from_der(&block.der).map_err(|e| e.to_string())?;
    Ok((block.der.to_vec(), cert))
}

/// Whether `sans` are exactly the DNS names `dns` and addresses `ips` and nothing else,
/// compared as sets (host names lower-cased, IPv4-mapped IPv6 as IPv4).
fn names_are(sans: &kcert_pki::SubjectAltNames, dns: &[String], ips: &[std::net::IpAddr]) -> bool {
    let names = |v: &[String]| {
        v.iter()
            .map(|d| d.to_ascii_lowercase())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let addresses = |v: &[std::net::IpAddr]| {
        v.iter()
            .map(|ip| kcert_policy::nodes::canonical(*ip))
            .collect::<std::collections::BTreeSet<_>>()
    };
    names(&sans.dns) == names(dns)
        && addresses(&sans.ips) == addresses(ips)
        && sans.emails.is_empty()
        && sans.uris.is_empty()
        && sans.other == 0
}

/// Whether the certificate another signer (kube-controller-manager) wrote onto a kubelet CSR
/// kcert approved is for what was approved: the request's key, `CN=system:node:<n>,
/// O=system:nodes` and nothing else, exactly the request's SANs (kube-controller-manager copies
/// them), not a CA. The CA is not checked (kcert need not hold the cluster's).
pub(crate) fn matches_kubelet_request(csr: &CertificateSigningRequest) -> Result<(), String> {
    let (_, cert) = held_certificate(csr)?;
    let request = parse_request(csr).map_err(|e| format!("invalid request: {e}"))?;
    if cert.public_key() != request.public_key() {
        return Err("it certifies another key than the request's".into());
    }
    // Compared as what the API server reads (the order of CN and O is the other signer's).
    let cn = request.subject().common_name.clone().unwrap_or_default();
    let subject = &cert.subject;
    if subject.common_names != [cn.clone()]
        || subject.organizations != [kcert_policy::nodes::NODES_GROUP]
        || !subject.uids.is_empty()
        || subject.attributes.len() != 2
        || subject.multi_valued_rdn
    {
        return Err(format!(
            "its subject {} is not CN={}, O={} as approved",
            kcert_policy::escape_for_message(&subject.to_string()),
            kcert_policy::escape_for_message(&cn),
            kcert_policy::nodes::NODES_GROUP
        ));
    }
    let asked = request.sans();
    if !names_are(&cert.sans, &asked.dns, &asked.ips) {
        return Err("its subject alternative names are not the request's".into());
    }
    if cert.is_ca {
        return Err("it is a CA certificate".into());
    }
    Ok(())
}

/// Whether the certificate `csr` holds is one kcert would have issued for it: signed by kcert's
/// CA, for the request's own key, with exactly the subject (and, for kubelet serving, the names)
/// kcert's plan builds from the request today, with usages and a lifetime the plan allows.
/// Only such a certificate is recorded when the ledger lacks it: one written onto a CSR of
/// kcert's signer by someone holding the CA key and `sign` never becomes "issued by kcert",
/// which strict mode and audits trust. (A certificate issued under a policy since tightened,
/// or by a CA no longer trusted since a rotation completed, is refused too; that fails closed
/// and is logged.) `trusted`: the CAs in force (during a rotation, the old and the new).
pub(crate) fn vouch(
    csr: &CertificateSigningRequest,
    ctx: &Context,
    trusted: &[std::sync::Arc<kcert_pki::CertificateAuthority>],
    privileged: &kcert_policy::PrivilegedSubjects,
) -> Result<(), String> {
    let (der, cert) = held_certificate(csr)?;
    let mut verified = Err("no CA is in force".to_string());
    for ca in trusted {
        verified = ca.verify_issued(&der).map_err(|e| e.to_string());
        if verified.is_ok() {
            break;
        }
    }
    verified?;
    let plan = plan_for(csr, None, None, ctx, privileged)
        .map_err(|why| format!("kcert would not sign this request: {why}"))?;
    if cert.public_key() != plan.request.public_key() {
        return Err("it certifies another key than the request's".into());
    }
    let subject_der = plan.subject.to_der().map_err(|e| e.to_string())?;
    let subject = kcert_pki::SubjectInfo::from_der(&subject_der).map_err(|e| e.to_string())?;
    if cert.subject != subject {
        return Err(format!(
            "its subject {} is not the {} kcert certifies for this request",
            kcert_policy::escape_for_message(&cert.subject.to_string()),
            kcert_policy::escape_for_message(&subject.to_string())
        ));
    }
    let names = plan.names.unwrap_or_default();
    if !names_are(&cert.sans, &names.dns, &names.ips) {
        return Err("its subject alternative names are not the ones kcert certifies".into());
    }
    let granted: std::collections::BTreeSet<&str> =
        plan.profile.usages.iter().map(|u| u.as_str()).collect();
    let carried: std::collections::BTreeSet<&str> =
        cert.usages.iter().map(String::as_str).collect();
    if carried != granted {
        return Err(format!(
            "its usages {} are not the {} kcert grants for this request",
            kcert_policy::escape_for_message(&carried.into_iter().collect::<Vec<_>>().join(", ")),
            granted.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if cert.is_ca {
        return Err("it is a CA certificate".into());
    }
    let span = cert
        .not_after_time()
        .duration_since(cert.not_before_time())
        .unwrap_or_default();
    let granted = plan.profile.granted_lifetime();
    if span > granted + kcert_pki::BACKDATE {
        return Err(format!(
            "it is valid for {} s, longer than the {} s kcert grants",
            span.as_secs(),
            granted.as_secs()
        ));
    }
    // Issued for this CSR: not before it existed (kcert backdates by BACKDATE), not in the
    // future. A minute's slack for clocks.
    let slack = Duration::from_secs(60);
    let created = csr
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.0.as_second().max(0) as u64));
    let earliest = created.map(|c| c - kcert_pki::BACKDATE - slack);
    if earliest.is_some_and(|e| cert.not_before_time() < e)
        || cert.not_before_time() > SystemTime::now() + slack
    {
        return Err(format!(
            "its validity starts at {}, not when kcert could have issued it for this request",
            kcert_pki::time_fmt::rfc3339(cert.not_before_time())
        ));
    }
    Ok(())
}

/// The subject a certificate for `facts` carries (pure): its one CN and each O once, encoded by
/// kcert, and a UID only when `approval` approved the very one requested. The request's own
/// subject bytes are never used. Call after [`kcert_policy::check_request`] passed.
pub fn certified_subject(
    facts: &kcert_policy::CsrFacts,
    approval: &Approval,
) -> Result<CsrSubject, String> {
    let uid = match (facts.uids.as_slice(), &approval.uid) {
        ([], _) => None,
        ([asked], Some(approved)) if asked == approved => Some(approved.clone()),
        ([asked, ..], _) => {
            return Err(format!(
                "UidNotAllowed: the request carries UID {} and no kcert rule approved it; kcert certifies a UID only where a rule allows it",
                kcert_policy::escape_for_message(asked)
            ));
        }
    };
    let cn = match facts.common_names.as_slice() {
        [one] => one.clone(),
        _ => return Err("the request must hold exactly one CN".into()),
    };
    let mut groups: Vec<&String> = Vec::new();
    for g in &facts.organizations {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let subject = CsrSubject::new(cn, groups.into_iter().cloned()).map_err(|e| e.to_string())?;
    match uid {
        Some(u) => subject.with_uid(u).map_err(|e| e.to_string()),
        None => Ok(subject),
    }
}

/// Issue the certificate of an Approved CSR (or mark it Failed). Called by the signer's
/// reconcile (`approval` None: read from the CSR) and, right after approving, by the approver
/// in the same process; a CSR being signed by one is left to it by the other. Whoever
/// approved, the request is checked again here on its own ([`kcert_policy::check_request`]:
/// protected groups and users, hygiene, limits, no foreign attributes), and the certificate's
/// subject is built from the checked values.
pub(crate) async fn sign(
    csr: &CertificateSigningRequest,
    approval: Option<&Approval>,
    parsed: Option<kcert_pki::CertificateRequest>,
    ctx: &Context,
) -> Result<Action, Error> {
    if !conditions::has(csr, APPROVED) || conditions::has(csr, FAILED) {
        return Ok(Action::await_change());
    }
    let Some(_claim) = ctx.claim(csr) else {
        // The other path is signing it now; look again once it has written.
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let prepared = prepare(csr, approval, parsed, ctx);
    finish(csr, prepared, ctx).await
}

/// What signing a CSR comes to before anything is written: a certificate, a refusal to record
/// as `Failed`, or a wait.
pub(crate) enum Prepared {
    /// Look again later (a source not read yet); nothing is written.
    Wait(Action),
    /// Mark the CSR `Failed` with this message.
    Refuse(String),
    /// Write this certificate.
    Signed {
        issued: kcert_pki::IssuedCertificate,
        plan: Box<Plan>,
        started: std::time::Instant,
    },
}

/// Every check, then the signature, for `csr` as approved by `approval` (None: read from the
/// CSR); no writes, no await, so that the approver can run it while its approval is on its way
/// to the API server ([`finish`] writes what it comes to, only onto an approved CSR). The
/// caller holds the CSR's signing claim.
pub(crate) fn prepare(
    csr: &CertificateSigningRequest,
    approval: Option<&Approval>,
    parsed: Option<kcert_pki::CertificateRequest>,
    ctx: &Context,
) -> Prepared {
    let Some(ca) = ctx.ca.get() else {
        tracing::warn!("no CA loaded yet; will retry");
        return Prepared::Wait(Action::requeue(Duration::from_secs(5)));
    };
    let Some(privileged) = ctx.rbac.get() else {
        tracing::info!("RBAC bindings not read yet; will retry");
        return Prepared::Wait(Action::requeue(Duration::from_secs(2)));
    };
    if csr.spec.signer_name == kcert_policy::nodes::KUBELET_SERVING_SIGNER && !ctx.nodes.is_read() {
        tracing::info!("Nodes or the cluster's reserved ranges not read yet; will retry");
        return Prepared::Wait(Action::requeue(Duration::from_secs(2)));
    }
    let kubelet = kcert_policy::nodes::is_kubelet_signer(&csr.spec.signer_name);
    if kubelet && let Some(why) = crate::node_approver::revocations_unknown(ctx) {
        tracing::info!(%why, "will retry");
        return Prepared::Wait(Action::requeue(Duration::from_secs(2)));
    }
    let plan = match plan_for(csr, approval, parsed, ctx, &privileged) {
        Ok(p) => p,
        Err(message) => return Prepared::Refuse(message),
    };
    // A revoked node gets no certificate, whoever approved (a human's `kubectl certificate
    // approve` included), until an admin clears the revocation.
    if kubelet {
        let node = kcert_kube::nodes::node_of_request(&plan.request).unwrap_or_default();
        match crate::node_approver::node_revocation(ctx, node) {
            Ok(None) => {}
            Ok(Some(r)) => {
                return Prepared::Refuse(format!(
                    "{}: {}",
                    kcert_policy::Reason::NodeRevoked,
                    kcert_policy::nodes::revoked_message(node, &r)
                ));
            }
            Err(why) => {
                tracing::info!(%why, "will retry");
                return Prepared::Wait(Action::requeue(Duration::from_secs(2)));
            }
        }
    }
    // The requester's certificate, checked again just before signing: revoked (or renewed from
    // a revoked one) since the decision, or by a revocation the approver had not yet seen,
    // it gets nothing.
    match requester_revoked(csr, ctx) {
        Ok(None) => {}
        Ok(Some(why)) => return Prepared::Refuse(why),
        Err(why) => {
            // Only until the ledger is read (a fraction of a second after start, or after an
            // outage): the signer looks at every CSR again the moment it is (`ledger_installs`
            // in lib.rs); the requeue is the safety net.
            tracing::info!(%why, "will retry");
            return Prepared::Wait(Action::requeue(Duration::from_secs(1)));
        }
    }
    let started = std::time::Instant::now();
    let signed = match &plan.names {
        Some(names) => ca.sign_with_names(
            &plan.request,
            &plan.subject,
            names,
            &plan.profile,
            SystemTime::now(),
            &SystemRandom,
        ),
        None => ca.sign_as(
            &plan.request,
            &plan.subject,
            &plan.profile,
            SystemTime::now(),
            &SystemRandom,
        ),
    };
    match signed {
        Ok(issued) => {
            ctx.ca.key_back();
            Prepared::Signed {
                issued,
                plan: Box::new(plan),
                started,
            }
        }
        // The key's backend is away (a token removed, an HSM restarting): nothing is decided,
        // the CSR is looked at again in a while, not in a tight loop.
        Err(e @ kcert_pki::PkiError::CaKeyUnavailable { .. }) => {
            tracing::warn!(error = %e, "the CA key cannot sign now; will retry");
            ctx.ca.key_away();
            Prepared::Wait(Action::requeue(CA_KEY_RETRY))
        }
        Err(e) => Prepared::Refuse(e.to_string()),
    }
}

/// How long a CSR waits for a CA key that is unavailable (a token away) before it is tried
/// again.
pub(crate) const CA_KEY_RETRY: Duration = Duration::from_secs(5);

/// Write what [`prepare`] came to onto `csr` (Approved, not Failed: the caller checked), and
/// record an issued certificate on the ledger.
pub(crate) async fn finish(
    csr: &CertificateSigningRequest,
    prepared: Prepared,
    ctx: &Context,
) -> Result<Action, Error> {
    let (issued, plan, started) = match prepared {
        Prepared::Wait(action) => return Ok(action),
        Prepared::Refuse(message) => return fail(csr, ctx, &message).await,
        Prepared::Signed {
            issued,
            plan,
            started,
        } => (issued, plan, started),
    };
    match write_certificate(csr, ctx, &issued).await {
        Ok(Written::Done(_)) => {
            if let Some(ledger) = &ctx.ledger {
                ledger.record_issued(csr, &issued.der);
            }
            ctx.metrics.issued(&csr.spec.signer_name, started.elapsed());
            tracing::info!(serial = %issued.serial, not_after = %kcert_pki::time_fmt::rfc3339(issued.not_after), elapsed_ms = started.elapsed().as_millis() as u64, "issued");
            let note = format!(
                "issued serial {} for {}, valid until {}",
                issued.serial,
                plan.request.subject(),
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
            Ok(Action::await_change())
        }
        Ok(Written::NothingToDo | Written::Gone) => Ok(Action::await_change()),
        Err(Error::Write(WriteError::Permanent(_, message))) => {
            let why = format!("the API server refused the certificate: {message}");
            fail(csr, ctx, &why).await
        }
        Err(e) => Err(e),
    }
}

/// Why the certificate the CSR's requester authenticated with may no longer get anything signed
/// (revoked, or descending from a revoked certificate), `Ok(None)` if it may, `Err` while the
/// ledger cannot tell (fail closed: wait).
pub(crate) fn requester_revoked(
    csr: &CertificateSigningRequest,
    ctx: &Context,
) -> Result<Option<String>, String> {
    let Some(hash) = crate::ledger::requested_with(csr) else {
        return Ok(None);
    };
    if !ctx.settings.reads_ledger() {
        return Ok(None);
    }
    let view = ctx.ledger_index.read();
    let Some(index) = view.as_ref() else {
        return Err("the ledger is not read: cannot check the requester's certificate".into());
    };
    Ok(index
        .revoked_lineage(&format!("X509SHA256={hash}"))
        .map(|hit| {
            format!(
                "{}: the requester's certificate is revoked: {}",
                kcert_policy::Reason::CredentialRevoked,
                kcert_kube::revocation::refusal(&hit)
            )
        }))
}

/// What will be signed: the request, the subject built from checked values, the profile.
pub(crate) struct Plan {
    pub(crate) request: kcert_pki::CertificateRequest,
    pub(crate) subject: CsrSubject,
    pub(crate) profile: SigningProfile,
    /// The SANs to certify (kubelet serving certificates), encoded from checked values.
    pub(crate) names: Option<kcert_pki::SubjectAltNames>,
}

/// A kubelet certificate's plan, whoever approved: the signer's own table
/// ([`kcert_policy::nodes::check_signer_table`], Kubernetes' rules for the signer, stricter
/// where kcert's reading could differ from Go's), subject `CN=system:node:<n>, O=system:nodes`
/// built by kcert, and for serving the SANs the node rules approved (or, approved by someone
/// else, the request's names as values: host names lower-cased, IPs canonical).
pub(crate) fn kubelet_plan(
    csr: &CertificateSigningRequest,
    approval: Option<&Approval>,
    parsed: Option<kcert_pki::CertificateRequest>,
    ctx: &Context,
) -> Result<Plan, String> {
    if let Some(d) = kcert_kube::nodes::oversized(csr) {
        return Err(format!("{}: {}", d.reason, d.message));
    }
    let request = match parsed {
        Some(r) => r,
        None => parse_request(csr).map_err(|e| format!("invalid request: {e}"))?,
    };
    let facts = crate::facts::csr_facts(csr, &request);
    kcert_policy::nodes::check_signer_table(&facts)
        .and_then(|()| kcert_policy::nodes::check_key(facts.key, &ctx.settings.nodes))
        .map_err(|(reason, message)| format!("{reason}: {message}"))?;
    let usages = facts
        .usages
        .iter()
        .map(|u| u.parse().map_err(|_| format!("invalid usage: {u}")))
        .collect::<Result<Vec<kcert_pki::Usage>, String>>()?;
    let subject = CsrSubject::new(
        facts.common_names[0].clone(),
        [kcert_policy::nodes::NODES_GROUP.to_string()],
    )
    .map_err(|e| e.to_string())?;
    let names = if csr.spec.signer_name == kcert_policy::nodes::KUBELET_SERVING_SIGNER {
        let approved = approval.and_then(|a| a.names.clone());
        let (dns, ips) = match approved {
            Some(n) => (n.dns, n.ips),
            None => {
                // Approved by someone else (a human's kubectl certificate approve): the
                // request's names as values, each still a host name or address kcert would
                // ever certify for a node.
                let rules = &ctx.settings.nodes;
                let dns: Vec<String> = facts
                    .sans
                    .dns
                    .iter()
                    .map(|d| d.to_ascii_lowercase())
                    .collect();
                let node = facts.common_names[0]
                    .strip_prefix(kcert_policy::nodes::NODE_USER_PREFIX)
                    .unwrap_or_default();
                for d in &dns {
                    if !kcert_policy::nodes::is_host_name(d)
                        || kcert_policy::nodes::looks_like_address(d)
                    {
                        return Err(format!(
                            "SanNotANodeAddress: the DNS SAN {} is not a host name",
                            kcert_policy::escape_for_message(d)
                        ));
                    }
                    // The names the cluster states too (the API server's external name,
                    // `<svc>.<ns>`), whoever approved.
                    let by_cluster = ctx
                        .nodes
                        .with(|i| i.reserved_name_by_cluster(d, node))
                        .flatten();
                    if let Some(why) = kcert_policy::nodes::reserved_name(d, rules).or(by_cluster) {
                        return Err(format!("SanReserved: the DNS SAN {why}"));
                    }
                }
                let mut ips = Vec::new();
                for ip in &request.sans().ips {
                    let ip = kcert_policy::nodes::canonical(*ip);
                    // (sign() waits until the Nodes and the cluster's ranges are read.)
                    let by_cluster = ctx
                        .nodes
                        .with(|i| i.reserved_by_cluster(ip, node))
                        .flatten();
                    if let Some(why) = kcert_policy::nodes::reserved_ip(ip, rules).or(by_cluster) {
                        return Err(format!("SanReserved: the IP SAN {why}"));
                    }
                    ips.push(ip);
                }
                (dns, ips)
            }
        };
        Some(kcert_pki::SubjectAltNames {
            dns,
            ips,
            ..Default::default()
        })
    } else {
        Some(kcert_pki::SubjectAltNames::default())
    };
    let profile = SigningProfile {
        usages,
        max_lifetime: ctx.settings.max_duration,
        requested_lifetime: requested_lifetime(csr),
        allow_sans: false,
    };
    Ok(Plan {
        request,
        subject,
        profile,
        names,
    })
}

/// The plan for `csr`'s signer: the kubelet signers' table, or kcert's client signers'.
fn plan_for(
    csr: &CertificateSigningRequest,
    approval: Option<&Approval>,
    parsed: Option<kcert_pki::CertificateRequest>,
    ctx: &Context,
    privileged: &kcert_policy::PrivilegedSubjects,
) -> Result<Plan, String> {
    if kcert_policy::nodes::is_kubelet_signer(&csr.spec.signer_name) {
        kubelet_plan(csr, approval, parsed, ctx)
    } else {
        plan(csr, approval, parsed, ctx, privileged)
    }
}

/// Everything checked before a signature, whoever approved: the request parses and verifies,
/// the signer's usage table, [`kcert_policy::check_request`] (with the policy in force, or the
/// built-in protection alone), and the subject to certify. `Err` is the Failed message.
fn plan(
    csr: &CertificateSigningRequest,
    approval: Option<&Approval>,
    parsed: Option<kcert_pki::CertificateRequest>,
    ctx: &Context,
    privileged: &kcert_policy::PrivilegedSubjects,
) -> Result<Plan, String> {
    let policy = ctx
        .policy
        .get()
        .filter(|p| p.blocked.is_none())
        .map(|p| p.policy)
        .unwrap_or_else(|| Arc::new(kcert_policy::Policy::merge([])));
    if let Some(d) = crate::facts::oversized(csr, &policy) {
        return Err(format!("{}: {}", d.reason, d.message));
    }
    let request = match parsed {
        Some(r) => r,
        None => parse_request(csr).map_err(|e| format!("invalid request: {e}"))?,
    };
    let usages = client_usages(
        &csr.spec.signer_name,
        csr.spec.usages.as_deref().unwrap_or_default(),
    )?;
    let facts = crate::facts::csr_facts(csr, &request);
    kcert_policy::check_request(&facts, &policy, privileged)
        .map_err(|(reason, message)| format!("{reason}: {message}"))?;
    let approval = approval.cloned().unwrap_or_else(|| Approval::from_csr(csr));
    let subject = certified_subject(&facts, &approval)?;
    let profile = SigningProfile {
        usages,
        max_lifetime: approval.lifetime_cap(ctx.settings.max_duration),
        requested_lifetime: requested_lifetime(csr),
        allow_sans: false,
    };
    Ok(Plan {
        request,
        subject,
        profile,
        names: None,
    })
}

/// `spec.expirationSeconds` as a lifetime (the profile clamps it).
fn requested_lifetime(csr: &CertificateSigningRequest) -> Option<Duration> {
    csr.spec
        .expiration_seconds
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
}

/// PUT the certificate into `/status`, only onto the approved object it was signed for.
async fn write_certificate(
    csr: &CertificateSigningRequest,
    ctx: &Context,
    issued: &kcert_pki::IssuedCertificate,
) -> Result<Written, Error> {
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    // With the chain of an intermediate CA, so that kubeconfigs carry it.
    let pem = ByteString(issued.to_pem_with_chain().into_bytes());
    replace_with_retry(&api, csr, Subresource::Status, |current| {
        // The uid is checked by the helper; the state here.
        if conditions::has_certificate(current)
            || conditions::has(current, FAILED)
            || !conditions::has(current, APPROVED)
        {
            return false;
        }
        current
            .status
            .get_or_insert_with(Default::default)
            .certificate = Some(pem.clone());
        true
    })
    .await
    .map_err(Error::from)
}

/// Mark the CSR Failed with SignerValidationFailure, once; it is not retried. A permanent
/// refusal of that write too is logged and counted, not retried.
pub(crate) async fn fail(
    csr: &CertificateSigningRequest,
    ctx: &Context,
    message: &str,
) -> Result<Action, Error> {
    tracing::warn!(message, "refusing to sign");
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let written = replace_with_retry(&api, csr, Subresource::Status, |current| {
        if conditions::has(current, FAILED) || conditions::has_certificate(current) {
            return false;
        }
        conditions::add(current, FAILED, SIGNER_VALIDATION_FAILURE, message);
        true
    })
    .await
    .map_err(Error::from);
    match written {
        Ok(Written::Done(_)) => {
            ctx.events.emit(
                csr,
                EventClass::Problem,
                EventType::Warning,
                SIGNER_VALIDATION_FAILURE,
                "Sign",
                message,
            );
            Ok(Action::await_change())
        }
        Ok(_) => Ok(Action::await_change()),
        Err(Error::Write(WriteError::Permanent(name, e))) => {
            tracing::error!(csr = %name, error = %e, "the API server refuses even the Failed condition; giving up on this CSR");
            ctx.metrics.reconcile_error("signer-permanent");
            Ok(Action::await_change())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::Provenance;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus;

    #[test]
    fn the_signer_applies_the_evaluations_usage_table() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            client_usages("kcert.dev/client", &s(&["client auth"])).unwrap(),
            vec![Usage::ClientAuth]
        );
        assert_eq!(
            client_usages("kcert.dev/client", &s(&["client auth", "server auth"])).unwrap_err(),
            "invalid usage for client certificate: server auth"
        );
    }

    #[test]
    fn only_kcerts_own_record_grants_a_uid_or_a_cap_and_caps_only_shorten() {
        let day = Duration::from_secs(86_400);
        let mut csr = CertificateSigningRequest::default();
        csr.metadata.uid = Some("u-1".into());
        csr.status = Some(CertificateSigningRequestStatus {
            conditions: Some(vec![conditions::condition(APPROVED, "AutoApproved", "m")]),
            ..Default::default()
        });
        let record = |csr_uid: &str, secs: u64| {
            Provenance {
                outcome: APPROVED.into(),
                reason: "AutoApproved".into(),
                rule: Some("r".into()),
                policy: Some("p".into()),
                policy_version: "static".into(),
                max_duration_seconds: Some(secs),
                approved_uid: Some("uid-of-jane".into()),
                chain_started_at: None,
                csr_uid: csr_uid.into(),
                by: "kcert-controller".into(),
                message_sha256: kcert_pki::sha256_hex(b"m"),
            }
            .to_annotation()
        };
        assert_eq!(Approval::from_csr(&csr), Approval::default());
        csr.annotations_mut()
            .insert(DECISION_ANNOTATION.into(), record("u-1", 3600));
        let a = Approval::from_csr(&csr);
        assert_eq!(a.uid.as_deref(), Some("uid-of-jane"));
        assert_eq!(a.lifetime_cap(day), Duration::from_secs(3600));
        csr.annotations_mut()
            .insert(DECISION_ANNOTATION.into(), record("u-1", 999_999_999));
        assert_eq!(Approval::from_csr(&csr).lifetime_cap(day), day);
        // Forged at create time (no uid known): worthless.
        csr.annotations_mut()
            .insert(DECISION_ANNOTATION.into(), record("", 60));
        assert_eq!(Approval::from_csr(&csr), Approval::default());
    }
}
