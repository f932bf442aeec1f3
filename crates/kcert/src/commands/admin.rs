//! `kcert list`, `show`, `approve`, `deny`: the admin's view of CertificateSigningRequests.

use super::report;
use super::request::api_message;
use crate::cli::{DecideArgs, LedgerArgs, ListArgs, OutputFormat, RevokeArgs};
use crate::target::Target;
use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_kube::conditions;
use kcert_kube::facts::parse_request;
use kcert_pki::CertificateInfo;
use kcert_policy::Policy;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};

fn state(csr: &CertificateSigningRequest) -> &'static str {
    kcert_kube::CsrState::of(csr).as_str()
}

fn age(csr: &CertificateSigningRequest) -> String {
    let Some(created) = csr.metadata.creation_timestamp.as_ref() else {
        return "-".into();
    };
    let secs = (k8s_openapi::jiff::Timestamp::now().as_second() - created.0.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The POLICY column of `kcert list`: what the controller would decide for a pending CSR
/// (`Approve:AutoApproved`, `Deny:ProtectedGroup`, `Ignore:NoMatchingRule`).
pub fn policy_column(
    csr: &CertificateSigningRequest,
    policy: &Policy,
    privileged: &kcert_policy::PrivilegedSubjects,
    ledger: Option<&kcert_kube::ledger::LedgerIndex>,
) -> Option<String> {
    (kcert_kube::CsrState::of(csr) == kcert_kube::CsrState::Pending).then(|| {
        let d = kcert_kube::facts::verdict(csr, policy, privileged, ledger);
        format!("{:?}:{}", d.outcome, d.reason)
    })
}

fn row(
    csr: &CertificateSigningRequest,
    policy: Option<&Policy>,
    privileged: &kcert_policy::PrivilegedSubjects,
    ledger: Option<&kcert_kube::ledger::LedgerIndex>,
) -> serde_json::Value {
    let parsed = parse_request(csr);
    let (cn, groups) = match &parsed {
        Ok(r) => (
            r.subject().common_name.clone().unwrap_or_default(),
            r.subject().organizations.clone(),
        ),
        Err(_) => ("(unreadable)".into(), Vec::new()),
    };
    let would = policy.and_then(|p| policy_column(csr, p, privileged, ledger));
    serde_json::json!({
        "name": csr.name_any(),
        "age": age(csr),
        "requester": csr.spec.username,
        "user": cn,
        "groups": groups,
        "signer": csr.spec.signer_name,
        "state": state(csr),
        "policy": would,
        "key": parsed.as_ref().ok().map(|r| r.public_key().algorithm().to_string()),
        "usages": csr.spec.usages,
        "expirationSeconds": csr.spec.expiration_seconds,
    })
}

pub async fn list(args: &ListArgs, out: OutputFormat, target: &Target) -> Result<()> {
    let (client, _) = target.connect().await?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let lp = match &args.signer_name {
        Some(s) => ListParams::default().fields(&format!("spec.signerName={s}")),
        None => ListParams::default(),
    };
    let mut items = api
        .list(&lp)
        .await
        .map_err(|e| anyhow!("listing CSRs: {}", api_message(&e)))?
        .items;
    items.sort_by_key(|c| c.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let policy = super::policy::load_policy(args.policy_file.as_deref(), Some(&client))
        .await
        .unwrap_or(None);
    let privileged = match &policy {
        Some(_) => super::policy::privileged(Some(&client)).await,
        None => kcert_policy::PrivilegedSubjects::none(),
    };
    let ledger = match &policy {
        Some(p) if p.needs_ledger() => super::policy::ledger(&client).await,
        _ => None,
    };
    // Kubelet CSRs are judged by the node rules (the controller's defaults here), the Nodes and
    // SubjectAccessReviews, not by the policy.
    let pending_kubelet: Vec<&CertificateSigningRequest> = items
        .iter()
        .filter(|c| {
            kcert_policy::nodes::is_kubelet_signer(&c.spec.signer_name)
                && kcert_kube::CsrState::of(c) == kcert_kube::CsrState::Pending
        })
        .collect();
    let mut node_column = std::collections::BTreeMap::new();
    if !pending_kubelet.is_empty() {
        let read = async {
            Ok::<_, anyhow::Error>((
                super::policy::node_index(&client).await?,
                super::policy::node_ledger(&client).await?,
            ))
        };
        match read.await {
            Ok((nodes, node_ledger)) => {
                let rules = kcert_policy::nodes::NodeRules {
                    serving: true,
                    client: true,
                    ..Default::default()
                };
                // A client CSR costs a SubjectAccessReview: eight at a time, not one by one.
                use futures::StreamExt;
                let (client, rules, nodes, node_ledger) = (&client, &rules, &nodes, &node_ledger);
                node_column = futures::stream::iter(pending_kubelet)
                    .map(|c| async move {
                        let column =
                            match super::policy::node_verdict(client, c, rules, nodes, node_ledger)
                                .await
                            {
                                Ok(d) => format!("{:?}:{}", d.outcome, d.reason),
                                Err(e) => format!("unknown ({e})"),
                            };
                        (c.name_any(), column)
                    })
                    .buffer_unordered(8)
                    .collect()
                    .await;
            }
            Err(e) => {
                eprintln!("warning: {e}; kubelet CSRs are shown without the node rules' verdict")
            }
        }
    }
    let rows: Vec<serde_json::Value> = items
        .iter()
        .map(|c| {
            let mut r = row(c, policy.as_ref(), &privileged, ledger.as_ref());
            if kcert_policy::nodes::is_kubelet_signer(&c.spec.signer_name) {
                r["policy"] = serde_json::json!(node_column.get(&c.name_any()));
            }
            r
        })
        .collect();
    report(out, serde_json::json!(rows), || {
        let mut lines = vec![format!(
            "{:<32} {:>5} {:<24} {:<16} {:<16} {:<32} {:<9} {}",
            "NAME", "AGE", "REQUESTER", "USER", "GROUPS", "SIGNER", "STATE", "POLICY"
        )];
        for r in &rows {
            let s = |k: &str| crate::text::safe(r[k].as_str().unwrap_or("-"));
            let groups: Vec<String> = r["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str())
                .map(crate::text::safe)
                .collect();
            lines.push(format!(
                "{:<32} {:>5} {:<24} {:<16} {:<16} {:<32} {:<9} {}",
                s("name"),
                s("age"),
                s("requester"),
                s("user"),
                if groups.is_empty() {
                    "-".into()
                } else {
                    groups.join(",")
                },
                s("signer"),
                s("state"),
                s("policy")
            ));
            if out == OutputFormat::Wide {
                let usages: Vec<&str> = r["usages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|u| u.as_str())
                    .collect();
                let line = lines.last_mut().expect("just pushed");
                line.push_str(&format!(
                    "  {:<18} {:<10} {}",
                    s("key"),
                    r["expirationSeconds"]
                        .as_i64()
                        .map_or("-".to_string(), |e| format!("{e}s")),
                    usages.join(",")
                ));
            }
        }
        if out == OutputFormat::Wide {
            lines[0].push_str(&format!(
                "  {:<18} {:<10} {}",
                "KEY", "EXPIRATION", "USAGES"
            ));
        }
        lines.join("\n")
    });
    Ok(())
}

pub async fn show(name: &str, out: OutputFormat, target: &Target) -> Result<()> {
    let (client, _) = target.connect().await?;
    let csr = Api::<CertificateSigningRequest>::all(client.clone())
        .get(name)
        .await
        .map_err(|e| anyhow!("CSR {name}: {}", api_message(&e)))?;
    let request = parse_request(&csr);
    let conds: Vec<serde_json::Value> = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| serde_json::json!({"type": c.type_, "reason": c.reason, "message": c.message}))
        .collect();
    let cert = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .and_then(|c| CertificateInfo::from_pem_chain(&c.0).ok());
    // The ledger's revocation of the certificate, if any (no ledger: none).
    let revocation = match &cert {
        Some(c) => kcert_kube::ledger::read_index(&client)
            .await
            .ok()
            .and_then(|i| {
                i.by_hash(&c.fingerprint_sha256)?
                    .revocation
                    .as_deref()
                    .cloned()
            }),
        None => None,
    };
    // Only a record kcert provably wrote for this object; a requester-set one is not shown.
    let provenance = kcert_kube::provenance::Provenance::read(&csr)
        .map(|p| serde_json::to_value(p).expect("provenance serializes"));
    let json = serde_json::json!({
        "name": name,
        "state": state(&csr),
        "signer": csr.spec.signer_name,
        "requester": {"username": csr.spec.username, "groups": csr.spec.groups},
        "subject": request.as_ref().map(|r| r.subject().to_string()).unwrap_or_else(|e| format!("unreadable: {e}")),
        "user": request.as_ref().ok().and_then(|r| r.subject().common_name.clone()),
        "groups": request.as_ref().map(|r| r.subject().organizations.clone()).unwrap_or_default(),
        "key": request.as_ref().ok().map(|r| r.public_key().algorithm().to_string()),
        "sans": request.as_ref().ok().map(|r| r.sans().to_string()).filter(|s| !s.is_empty()),
        "usages": csr.spec.usages,
        "expirationSeconds": csr.spec.expiration_seconds,
        "conditions": conds,
        "decision": provenance,
        "certificate": cert.as_ref().map(|c| serde_json::json!({"serial": c.serial, "notBefore": c.not_before, "notAfter": c.not_after, "issuer": c.issuer})),
        "revocation": revocation,
    });
    report(out, json.clone(), || {
        let mut s = format!(
            "{name}: {}\n  signer      {}\n  requester   {} (groups: {})\n  subject     {}\n  key         {}\n  usages      {}",
            json["state"].as_str().unwrap_or("-"),
            csr.spec.signer_name,
            crate::text::safe(csr.spec.username.as_deref().unwrap_or("-")),
            crate::text::safe(&csr.spec.groups.clone().unwrap_or_default().join(", ")),
            crate::text::safe(json["subject"].as_str().unwrap_or("-")),
            json["key"].as_str().unwrap_or("-"),
            csr.spec.usages.clone().unwrap_or_default().join(", "),
        );
        if let Some(sans) = json["sans"].as_str() {
            s.push_str(&format!("\n  names       {}", crate::text::safe(sans)));
        }
        for c in &conds {
            s.push_str(&format!(
                "\n  condition   {}: {}: {}",
                crate::text::safe(c["type"].as_str().unwrap_or("-")),
                crate::text::safe(c["reason"].as_str().unwrap_or("-")),
                crate::text::safe(c["message"].as_str().unwrap_or("-"))
            ));
        }
        if let Some(p) = &provenance {
            s.push_str(&format!(
                "\n  decided by  {} (rule {}, policy {})",
                p["by"], p["rule"], p["policyVersion"]
            ));
        }
        if let Some(c) = &cert {
            s.push_str(&format!(
                "\n  certificate serial {}, valid {} to {}",
                c.serial, c.not_before, c.not_after
            ));
        }
        if let Some(r) = &revocation {
            s.push_str(&format!(
                "\n  REVOKED     at {} by {}: {}",
                r.revoked_at,
                crate::text::safe(&r.revoked_by),
                crate::text::safe(&r.reason)
            ));
        }
        s
    });
    Ok(())
}

pub async fn decide(
    args: &DecideArgs,
    approve: bool,
    out: OutputFormat,
    target: &Target,
) -> Result<()> {
    let (client, _) = target.connect().await?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let (type_, default_reason, default_message) = if approve {
        (
            conditions::APPROVED,
            "KcertApprove",
            "This CSR was approved by kcert approve.",
        )
    } else {
        (
            conditions::DENIED,
            "KcertDeny",
            "This CSR was denied by kcert deny.",
        )
    };
    let reason = args
        .reason
        .clone()
        .unwrap_or_else(|| default_reason.to_string());
    let message = args
        .message
        .clone()
        .unwrap_or_else(|| default_message.to_string());
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for name in &args.names {
        match decide_one(&api, name, type_, &reason, &message).await {
            Ok(what) => results.push(serde_json::json!({"name": name, "result": what})),
            Err(e) => {
                eprintln!("kcert: {name}: {e:#}");
                failed.push(name.clone());
            }
        }
    }
    report(
        out,
        serde_json::json!({"results": results, "failed": failed}),
        || {
            results
                .iter()
                .map(|r| {
                    format!(
                        "{}: {}",
                        r["name"].as_str().unwrap_or("-"),
                        r["result"].as_str().unwrap_or("-")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    if !failed.is_empty() {
        bail!(
            "{} of {} not {}: {}",
            failed.len(),
            args.names.len(),
            type_.to_lowercase(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// Write one condition through the shared write helper (for the object as read here: a CSR
/// re-created under the same name meanwhile is not decided); a decision already made is never
/// reversed.
async fn decide_one(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    type_: &str,
    reason: &str,
    message: &str,
) -> Result<&'static str> {
    use kcert_kube::replace::{Subresource, Written, replace_with_retry};
    let csr = api
        .get(name)
        .await
        .map_err(|e| anyhow!("{}", api_message(&e)))?;
    let mut refusal: Option<&'static str> = None;
    let mut already = false;
    let written = replace_with_retry(api, &csr, Subresource::Approval, |current| {
        if conditions::has(current, type_) {
            already = true;
            return false;
        }
        if conditions::has(current, conditions::DENIED) {
            refusal = Some("it is Denied; denial is final (create a new CSR)");
            return false;
        }
        if conditions::has(current, conditions::APPROVED) {
            refusal = Some("it is already Approved; an approval cannot be withdrawn");
            return false;
        }
        conditions::add(current, type_, reason, message);
        true
    })
    .await
    .map_err(|e| match e {
        kcert_kube::WriteError::Kube(e) => anyhow!("{}", api_message(&e)),
        other => anyhow!("{other}"),
    })?;
    if let Some(why) = refusal {
        bail!("{why}");
    }
    let approve = type_ == conditions::APPROVED;
    Ok(match written {
        Written::Done(_) if approve => "approved",
        Written::Done(_) => "denied",
        Written::NothingToDo if already && approve => "already approved",
        Written::NothingToDo if already => "already denied",
        Written::NothingToDo => "unchanged",
        Written::Gone => bail!(
            "it was deleted or re-created under the same name while being decided; look at it again (kcert show {name})"
        ),
    })
}

pub async fn revoke(args: &RevokeArgs, out: OutputFormat, target: &Target) -> Result<()> {
    use kcert_kube::revocation::Selector;
    if args.reason.trim().is_empty() || args.reason.len() > 256 {
        bail!(
            "--reason must say why in 1 to 256 bytes (it is {} bytes): it is copied onto every record revoked and shown in every refusal",
            args.reason.len()
        );
    }
    if let Some(node) = &args.node {
        return revoke_node(node, args, out, target).await;
    }
    let selector = match (&args.serial, &args.fingerprint, &args.csr, &args.user) {
        (Some(s), ..) => Selector::Serial(s.clone()),
        (_, Some(f), ..) => Selector::Fingerprint(f.clone()),
        (_, _, Some(c), _) => Selector::Csr(c.clone()),
        (.., Some(u)) => Selector::User(u.clone()),
        _ => bail!("say which certificates: --serial, --fingerprint, --csr, --user or --node"),
    };
    let (client, _) = target.connect().await?;
    let by = caller(&client).await;
    // A Revocation object first: what the role kcert-revoker may create, immutable, in force in
    // every kcert-controller at once. (A cluster without its CRD, or a caller who may only edit
    // the pages, revokes on the pages alone, as before.)
    let object = match Api::<kcert_kube::crd::RevocationObject>::all(client.clone())
        .create(
            &PostParams::default(),
            &kcert_kube::revocation::revocation_object(&selector, &by, &args.reason),
        )
        .await
    {
        Ok(o) => Some(o),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 403 => None,
        Err(e) => bail!("creating the Revocation: {}", api_message(&e)),
    };
    let revocation = match &object {
        Some(o) => kcert_kube::revocation::revocation_of(o),
        None => kcert_kube::crd::Revocation {
            revoked_at: k8s_openapi::jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
            revoked_by: by.clone(),
            reason: args.reason.clone(),
        },
    };
    let done = match (&object, may_edit_ledger(&client).await) {
        (Some(o), false) => confirmed(&client, o).await?,
        _ => revoke_certificates(&client, &selector, &revocation, false).await?,
    };
    if done.is_empty() {
        bail!("no certificate in the ledger matches {selector:?}; `kcert ledger` lists them");
    }
    report(out, serde_json::json!({"results": done}), || {
        revoked_lines(&done)
    });
    Ok(())
}

/// Whether the caller may replace ledger pages (an admin), as the API server says.
async fn may_edit_ledger(client: &kube::Client) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some("kcert.dev".into()),
                resource: Some("ledgerpages".into()),
                verb: Some("update".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    kube::Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .is_some_and(|s| s.allowed)
}

/// What kcert-controller's leader reports it revoked for Revocation object `o` (its status,
/// written once the ledger pages hold the revocations), waited for up to 10 s.
async fn confirmed(
    client: &kube::Client,
    o: &kcert_kube::crd::RevocationObject,
) -> Result<Vec<kcert_kube::revocation::Revoked>> {
    let name = o.metadata.name.clone().unwrap_or_default();
    let api = Api::<kcert_kube::crd::RevocationObject>::all(client.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = api
            .get(&name)
            .await
            .map_err(|e| anyhow!("reading Revocation {name}: {}", api_message(&e)))?;
        if let Some(status) = now.status {
            return Ok(status
                .results
                .into_iter()
                .map(|r| kcert_kube::revocation::Revoked {
                    page: r.page,
                    serial: r.serial,
                    user: r.user,
                    result: if r.result == "revoked" {
                        "revoked"
                    } else {
                        "already revoked"
                    },
                    revocation: r.revocation,
                })
                .collect());
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "Revocation {name} is recorded and kcert-controller applies it to every matching certificate issued until now, but no kcert-controller leader has confirmed it yet; is kcert-controller running? (`kubectl get revocation {name}` shows its status)"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Who revokes, as the API server authenticates them.
pub(crate) async fn caller(client: &kube::Client) -> String {
    kube::Api::<k8s_openapi::api::authentication::v1::SelfSubjectReview>::all(client.clone())
        .create(&kube::api::PostParams::default(), &Default::default())
        .await
        .ok()
        .and_then(|r| r.status?.user_info?.username)
        .unwrap_or_else(|| "unknown".into())
}

fn ledger_error(e: kube::Error, doing: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 404 => {
            anyhow!("the cluster has no ledger (LedgerPage CRD); apply deploy/crd.yaml")
        }
        _ => anyhow!("{doing}: {}", api_message(&e)),
    }
}

/// Revoke every certificate `selector` picks on the ledger. The controller records a
/// certificate moments after issuing it (its CSR holds it until then): revoke what the ledger
/// holds, and while a matching certificate is still only in a CSR, wait for its record and
/// revoke again — a certificate missed here would stay valid. With `none_is_enough`, finding no
/// certificate at all is an answer (the caller revoked something else); otherwise the wait goes
/// on until one is found or the deadline.
async fn revoke_certificates(
    client: &kube::Client,
    selector: &kcert_kube::revocation::Selector,
    revocation: &kcert_kube::crd::Revocation,
    none_is_enough: bool,
) -> Result<Vec<kcert_kube::revocation::Revoked>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (done, unrecorded) = loop {
        let done = kcert_kube::revocation::revoke_as(client, selector, revocation)
            .await
            .map_err(|e| ledger_error(e, "revoking"))?;
        let unrecorded = unrecorded_matches(client, selector).await?;
        if ((none_is_enough || !done.is_empty()) && unrecorded.is_empty())
            || std::time::Instant::now() >= deadline
        {
            break (done, unrecorded);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    if !unrecorded.is_empty() {
        bail!(
            "{} matching certificate(s) are issued but not yet on the ledger, so not revoked: {} (CSR names); is kcert-controller running? Run `kcert revoke` again once `kcert ledger` lists them",
            unrecorded.len(),
            unrecorded
                .iter()
                .map(|n| crate::text::safe(n))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(done)
}

fn revoked_lines(done: &[kcert_kube::revocation::Revoked]) -> String {
    done.iter()
        .map(|r| {
            format!(
                "{} ({}): {} at {} by {}: {}",
                r.serial,
                crate::text::safe(&r.user),
                r.result,
                r.revocation.revoked_at,
                crate::text::safe(&r.revocation.revoked_by),
                crate::text::safe(&r.revocation.reason)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `kcert revoke --node N`: the node's revocation on the ledger (kubelet CSRs for it refused
/// until cleared), then every certificate of `system:node:N`; with `--clear`, the node's
/// revocation cleared (recorded), its certificates left revoked.
async fn revoke_node(
    given: &str,
    args: &RevokeArgs,
    out: OutputFormat,
    target: &Target,
) -> Result<()> {
    let prefix = kcert_policy::nodes::NODE_USER_PREFIX;
    let node = given.strip_prefix(prefix).unwrap_or(given);
    if !kcert_policy::nodes::is_host_name(node) || node.bytes().any(|b| b.is_ascii_uppercase()) {
        bail!(
            "--node {}: not a node name (a lower-case DNS subdomain, or system:node:<name>)",
            crate::text::safe(given)
        );
    }
    let (client, _) = target.connect().await?;
    let by = caller(&client).await;
    if args.clear {
        let cleared = kcert_kube::revocation::clear_node(&client, node, &by, &args.reason)
            .await
            .map_err(|e| ledger_error(e, "clearing the node's revocation"))?;
        // What is in force now: a revocation record kcert cannot read is not cleared.
        let index = kcert_kube::ledger::read_index(&client)
            .await
            .map_err(|e| ledger_error(e, "reading the ledger"))?;
        if let Some(e) = index.revoked_node(node) {
            bail!(
                "node {node} is still revoked (ledger page {}): {}",
                crate::text::safe(&e.page),
                crate::text::safe(&e.revocation.reason)
            );
        }
        if cleared.is_empty() {
            bail!("node {node} is not revoked; `kcert ledger` lists node revocations");
        }
        report(out, serde_json::json!({"cleared": cleared}), || {
            cleared
                .iter()
                .map(|c| {
                    format!(
                        "node {node}: the revocation of {} by {} ({}) cleared at {} by {}: {}; kubelet CSRs for {prefix}{node} are decided again (its certificates stay revoked)",
                        c.revocation.revoked_at,
                        crate::text::safe(&c.revocation.revoked_by),
                        crate::text::safe(&c.revocation.reason),
                        c.cleared.cleared_at,
                        crate::text::safe(&c.cleared.cleared_by),
                        crate::text::safe(&c.cleared.reason)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        return Ok(());
    }
    // The node first: from here no new certificate is approved or signed for it.
    let revoked = kcert_kube::revocation::revoke_node(&client, node, &by, &args.reason)
        .await
        .map_err(|e| ledger_error(e, "revoking the node"))?;
    let selector = kcert_kube::revocation::Selector::User(format!("{prefix}{node}"));
    let revocation = kcert_kube::crd::Revocation {
        revoked_at: k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
        revoked_by: by.clone(),
        reason: args.reason.clone(),
    };
    let done = revoke_certificates(&client, &selector, &revocation, true).await?;
    report(
        out,
        serde_json::json!({"node": revoked, "results": done}),
        || {
            let r = &revoked.revocation;
            let mut s = format!(
                "node {node}: {} at {} by {}: {} (kubelet CSRs for {prefix}{node} are refused until `kcert revoke --node {node} --clear`)",
                revoked.result,
                r.revoked_at,
                crate::text::safe(&r.revoked_by),
                crate::text::safe(&r.reason)
            );
            if !done.is_empty() {
                s.push('\n');
                s.push_str(&revoked_lines(&done));
            }
            s
        },
    );
    Ok(())
}

/// Names of CSRs holding a certificate `selector` picks that the ledger does not hold yet.
async fn unrecorded_matches(
    client: &kube::Client,
    selector: &kcert_kube::revocation::Selector,
) -> Result<Vec<String>> {
    let pages = kcert_kube::ledger::list_pages(client)
        .await
        .map_err(|e| anyhow!("reading the ledger: {}", api_message(&e)))?;
    // Only signers kcert has recorded certificates for: another signer's certificates (for
    // kube-controller-manager's, say) never reach this ledger.
    let signers: std::collections::HashSet<String> = kcert_kube::ledger::records(&pages)
        .into_iter()
        .map(|(_, r)| r.signer_name)
        .collect();
    let csrs = Api::<CertificateSigningRequest>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow!("listing CSRs: {}", api_message(&e)))?;
    let mut candidates = Vec::new();
    for csr in csrs
        .items
        .iter()
        .filter(|c| signers.contains(&c.spec.signer_name))
    {
        let Some(cert) = csr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .and_then(|c| CertificateInfo::from_pem_chain(&c.0).ok())
        else {
            continue;
        };
        let as_record = kcert_kube::crd::IssuedCertificate {
            serial: cert.serial.clone(),
            user: cert.subject.common_name.clone().unwrap_or_default(),
            fingerprint_sha256: cert.fingerprint_sha256.clone(),
            csr_name: csr.metadata.name.clone().unwrap_or_default(),
            ..Default::default()
        };
        if selector.matches(&as_record) {
            candidates.push((as_record.csr_name.clone(), cert.fingerprint_sha256.clone()));
        }
    }
    let index = kcert_kube::ledger::LedgerIndex::from_pages(&pages);
    Ok(candidates
        .into_iter()
        .filter(|(_, fp)| !index.holds(fp))
        .map(|(name, _)| name)
        .collect())
}

pub async fn ledger(args: &LedgerArgs, out: OutputFormat, target: &Target) -> Result<()> {
    let (client, _) = target.connect().await?;
    let pages = match kcert_kube::ledger::list_pages(&client).await {
        Ok(p) => p,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            bail!("the cluster has no ledger (LedgerPage CRD); apply deploy/crd.yaml")
        }
        Err(e) => bail!("listing the ledger: {}", api_message(&e)),
    };
    for (page, i, why) in kcert_kube::ledger::unreadable(&pages) {
        eprintln!(
            "warning: ledger page {} record {i} cannot be read ({}); kcert's webhook refuses its certificate (or, if no fingerprint can be found in it, every X.509 request) until it is fixed",
            crate::text::safe(page),
            crate::text::safe(&why)
        );
    }
    // A certificate recorded twice (a write retried) is shown once, revoked if either copy is.
    let mut by_hash: std::collections::HashMap<String, kcert_kube::crd::IssuedCertificate> =
        Default::default();
    for (_, r) in kcert_kube::ledger::records(&pages) {
        let seen = by_hash
            .entry(r.credential_hash())
            .or_insert_with(|| r.clone());
        if seen.revocation.is_none() && r.revocation.is_some() {
            *seen = r.clone();
        }
    }
    // Tamper evidence: revocations someone removed and kcert-controller wrote back.
    for (page, r) in kcert_kube::ledger::records(&pages) {
        if let Some(at) = &r.revocation_restored_at {
            eprintln!(
                "warning: the revocation of certificate serial {} (user {}) was removed from ledger page {} and written back by kcert-controller at {at}: the ledger was tampered with",
                r.serial,
                crate::text::safe(&r.user),
                crate::text::safe(page)
            );
        }
    }
    let now = k8s_openapi::jiff::Timestamp::now();
    let horizon = args.expiring.map(|d| {
        now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
            d.as_secs() as i64
        ))
        .unwrap_or(now)
    });
    let issuer = match args.issuer.as_deref() {
        None => None,
        Some(role @ ("old" | "new")) => {
            let key_id = super::rotate::ca_of_role(&client, &args.rotation, role).await?;
            Some((key_id, role == "old"))
        }
        Some(key_id) => Some((kcert_kube::crd::normalize_fingerprint(key_id), false)),
    };
    let mut rows: Vec<_> = by_hash
        .into_values()
        .filter(|s| match (&issuer, &s.issuer_key_id) {
            (None, _) => true,
            (Some((want, _)), Some(got)) => kcert_kube::crd::normalize_fingerprint(got) == *want,
            // A record from before issuers were recorded: it may be the old CA's.
            (Some((_, unknown_too)), None) => *unknown_too,
        })
        .filter(|s| args.user.as_ref().is_none_or(|u| &s.user == u))
        .filter(|s| {
            args.signer_name
                .as_ref()
                .is_none_or(|n| &s.signer_name == n)
        })
        .filter(|s| match horizon {
            None => true,
            Some(h) => s
                .not_after
                .parse::<k8s_openapi::jiff::Timestamp>()
                .is_ok_and(|t| t > now && t <= h),
        })
        .collect();
    rows.sort_by(|a, b| a.not_after.cmp(&b.not_after));
    // Node revocations (`kcert revoke --node`), in force and cleared: records of their own, no
    // certificate's (none expires; their signerName is kcert.dev/node-revocation).
    let node_rows: Vec<(&str, kcert_kube::crd::RevokedNodeRecord)> =
        if args.expiring.is_some() || args.issuer.is_some() {
            Vec::new()
        } else {
            kcert_kube::ledger::node_revocations(&pages)
                .into_iter()
                .filter(|(_, r)| args.user.as_ref().is_none_or(|u| &r.record.user == u))
                .filter(|(_, r)| {
                    args.signer_name
                        .as_ref()
                        .is_none_or(|n| &r.record.signer_name == n)
                })
                .collect()
        };
    for (node, e) in kcert_kube::ledger::LedgerIndex::from_pages(&pages).revoked_nodes() {
        if !e.readable {
            eprintln!(
                "warning: node {} stands revoked: {}",
                crate::text::safe(node),
                crate::text::safe(&e.revocation.reason)
            );
        }
    }
    let mut json = serde_json::to_value(&rows)?;
    if let Some(all) = json.as_array_mut() {
        for (_, r) in &node_rows {
            all.push(serde_json::to_value(r)?);
        }
    }
    report(out, json, || {
        let mut lines = vec![format!(
            "{:<34} {:<20} {:<20} {:<21} {:<40} {:<21} {}",
            "SERIAL", "USER", "GROUPS", "NOT-AFTER", "APPROVED-BY", "REVOKED", "REQUESTER"
        )];
        for r in &rows {
            lines.push(format!(
                "{:<34} {:<20} {:<20} {:<21} {:<40} {:<21} {}",
                r.serial,
                crate::text::safe(&r.user),
                if r.groups.is_empty() {
                    "-".into()
                } else {
                    crate::text::safe(&r.groups.join(","))
                },
                r.not_after,
                crate::text::safe(&r.approved_by),
                match (&r.revocation, &r.revocation_restored_at) {
                    (None, _) => "-".to_string(),
                    (Some(v), None) => v.revoked_at.clone(),
                    (Some(v), Some(_)) => format!("{} TAMPERED", v.revoked_at),
                },
                crate::text::safe(&r.requester)
            ));
        }
        if !node_rows.is_empty() {
            lines.push(String::new());
            lines.push(format!(
                "{:<32} {:<21} {:<24} {:<32} {}",
                "REVOKED-NODE", "REVOKED-AT", "REVOKED-BY", "REASON", "CLEARED"
            ));
            for (_, r) in &node_rows {
                let revocation = r.record.revocation.clone().unwrap_or_default();
                lines.push(format!(
                    "{:<32} {:<21} {:<24} {:<32} {}",
                    crate::text::safe(&r.revoked_node.node),
                    revocation.revoked_at,
                    crate::text::safe(&revocation.revoked_by),
                    crate::text::safe(&revocation.reason),
                    r.revoked_node.cleared.as_ref().map_or_else(
                        || "- (in force)".to_string(),
                        |c| format!(
                            "at {} by {}: {}",
                            c.cleared_at,
                            crate::text::safe(&c.cleared_by),
                            crate::text::safe(&c.reason)
                        )
                    )
                ));
            }
        }
        lines.join("\n")
    });
    Ok(())
}
