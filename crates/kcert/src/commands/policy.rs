//! `kcert policy test`: the controller's decision, explained, without writing anything.

use super::report;
use crate::cli::{OutputFormat, PolicyTestArgs};
use crate::target::Target;
use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use kcert_kube::crd::ApprovalPolicy;
use kcert_kube::facts::verdict;
use kcert_pki::CertificateRequest;
use kcert_policy::nodes::{NodeAddress, NodeIndex, is_kubelet_signer};
use kcert_policy::{DEFAULT_USAGES, Policy, PrivilegedSubjects};
use kube::{Api, Client, ResourceExt};
use std::path::Path;

/// The policy from `file`, or the cluster's accepted ApprovalPolicies (None if the CRD is absent).
pub async fn load_policy(file: Option<&Path>, client: Option<&Client>) -> Result<Option<Policy>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        return kcert_kube::policies::parse_policy_file(&text, &path.display().to_string())
            .map(Some)
            .map_err(|e| anyhow!(e));
    }
    let Some(client) = client else {
        bail!("no policy: pass --policy-file, or a CSR name to use the cluster's ApprovalPolicies");
    };
    let api: Api<ApprovalPolicy> = Api::all(client.clone());
    let objects = match api.list(&Default::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        Err(e) => return Err(e).context("listing ApprovalPolicy objects"),
    };
    // The controller's own merge, failing closed, without its memory of earlier generations:
    // a refused generation counts for its protection only here.
    let merged = kcert_kube::policies::merge_approval_policies(&objects, &mut Default::default());
    for (name, c) in &merged.contributions {
        if !c.status.accepted {
            eprintln!(
                "warning: ApprovalPolicy {}: {}",
                crate::text::safe(name),
                crate::text::safe(&c.status.message)
            );
        }
    }
    if let Some(why) = merged.blocked {
        bail!("the controller decides nothing until this is fixed: {why}");
    }
    Ok(Some(merged.policy))
}

/// The ledger, for renewal rules (with a warning, none, when it cannot be read: renewal rules
/// then deny CredentialUnknown here, while the controller would wait for it).
pub async fn ledger(client: &Client) -> Option<kcert_kube::ledger::LedgerIndex> {
    match kcert_kube::ledger::read_index(client).await {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!(
                "warning: cannot read the ledger ({}); renewal rules are evaluated without it",
                super::request::api_message(&e)
            );
            None
        }
    }
}

/// The groups and users the cluster's RBAC makes privileged, as the controller sees them; none
/// (with a warning) when there is no cluster or the bindings cannot be listed.
pub async fn privileged(client: Option<&Client>) -> PrivilegedSubjects {
    let Some(client) = client else {
        return PrivilegedSubjects::none();
    };
    match kcert_kube::rbac::list_privileged(client).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "warning: cannot list RBAC roles and bindings ({}); groups they make privileged are not considered here, but the controller denies them",
                super::request::api_message(&e)
            );
            PrivilegedSubjects::none()
        }
    }
}

/// The cluster's Nodes, as the controller's watch holds them.
pub async fn node_index(client: &Client) -> Result<NodeIndex> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .map_err(|e| anyhow!("listing Nodes: {}", super::request::api_message(&e)))?;
    let mut index = NodeIndex::default();
    for n in &nodes.items {
        let addresses = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .map(|a| NodeAddress {
                kind: a.type_.clone(),
                address: a.address.clone(),
            })
            .collect();
        index.upsert(&n.name_any(), addresses);
    }
    for n in &nodes.items {
        index.set_control_plane(&n.name_any(), kcert_kube::nodes::is_control_plane(n));
    }
    let (ranges, api_server) = kcert_kube::nodes::cluster_reserved(client)
        .await
        .map_err(|e| {
            anyhow!(
                "reading the Service CIDRs and the API server's addresses (kcert policy test needs list on servicecidrs and get on the kubernetes Service and EndpointSlice in default): {}",
                super::request::api_message(&e)
            )
        })?;
    index.set_cluster_reserved(ranges, api_server);
    let names = kcert_kube::nodes::cluster_names(client).await.map_err(|e| {
        anyhow!("{e} (kcert policy test reads these as kcert-controller does, which decides no serving CSR until they can be read)")
    })?;
    index.set_cluster_names(names);
    Ok(index)
}

/// The ledger as the node rules read it (which nodes are revoked). kcert-controller decides no
/// kubelet CSR without it, so neither does this: an error when it cannot be read. A ledger that
/// holds a record naming nothing kcert can find is said on stderr (the controller waits).
pub async fn node_ledger(client: &Client) -> Result<kcert_kube::ledger::LedgerIndex> {
    let index = kcert_kube::ledger::read_index(client).await.map_err(|e| {
        anyhow!(
            "reading the ledger, which says which nodes are revoked (kcert-controller decides no kubelet CSR without it): {}",
            super::request::api_message(&e)
        )
    })?;
    if let Some(why) = index.unidentifiable() {
        eprintln!(
            "warning: {}; kcert-controller leaves kubelet CSRs pending until then",
            crate::text::safe(&why)
        );
    }
    Ok(index)
}

/// A kubelet CSR judged as the node approver judges it: the node rules, the Nodes, the node
/// revocations on the ledger ([`node_ledger`]), and the SubjectAccessReviews
/// kube-controller-manager's approver would make.
pub async fn node_verdict(
    client: &Client,
    csr: &CertificateSigningRequest,
    rules: &kcert_policy::nodes::NodeRules,
    nodes: &NodeIndex,
    ledger: &kcert_kube::ledger::LedgerIndex,
) -> Result<kcert_policy::Decision> {
    if let Some(d) = kcert_kube::nodes::oversized(csr) {
        return Ok(kcert_policy::nodes::in_mode(d, rules));
    }
    let request = kcert_kube::facts::parse_request(csr);
    let access = match &request {
        Ok(r) => kcert_kube::nodes::review_all(client, csr, r)
            .await
            .map_err(|e| anyhow!("SubjectAccessReview: {}", super::request::api_message(&e)))?,
        Err(_) => Default::default(),
    };
    Ok(kcert_kube::nodes::verdict_of(
        csr, &request, rules, nodes, &access, ledger,
    ))
}

pub async fn test(args: &PolicyTestArgs, out: OutputFormat, target: &Target) -> Result<()> {
    let path = Path::new(&args.csr);
    let decision = if path.is_file() && is_kubelet_signer(&args.signer_name) {
        let request = CertificateRequest::from_pem(&std::fs::read(path)?)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let (client, _) = target.connect().await?;
        let mut csr = CertificateSigningRequest::default();
        csr.spec.signer_name = args.signer_name.clone();
        csr.spec.username = args
            .requester
            .clone()
            .or_else(|| request.subject().common_name.clone());
        csr.spec.groups = Some(
            args.requester_groups
                .iter()
                .cloned()
                .chain(["system:authenticated".to_string()])
                .collect(),
        );
        let usages: &[&str] = if args.signer_name == kcert_policy::nodes::KUBELET_SERVING_SIGNER {
            kcert_policy::nodes::SERVING_USAGE_SETS[0]
        } else {
            kcert_policy::nodes::CLIENT_USAGE_SETS[0]
        };
        csr.spec.usages = Some(usages.iter().map(|s| s.to_string()).collect());
        csr.spec.request = k8s_openapi::ByteString(request.to_pem().into_bytes());
        csr.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let nodes = node_index(&client).await?;
        let ledger = node_ledger(&client).await?;
        node_verdict(&client, &csr, &args.nodes.rules()?, &nodes, &ledger).await?
    } else if path.is_file() {
        let request = CertificateRequest::from_pem(&std::fs::read(path)?)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let client = if args.policy_file.is_none() {
            Some(target.connect().await?.0)
        } else {
            None
        };
        let policy = load_policy(args.policy_file.as_deref(), client.as_ref())
            .await?
            .ok_or_else(|| anyhow!("the cluster has no ApprovalPolicy CRD; pass --policy-file"))?;
        let requester = args
            .requester
            .clone()
            .or_else(|| request.subject().common_name.clone())
            .unwrap_or_default();
        let mut csr = CertificateSigningRequest::default();
        csr.spec.signer_name = args.signer_name.clone();
        csr.spec.username = Some(requester);
        csr.spec.groups = Some(
            args.requester_groups
                .iter()
                .cloned()
                .chain(["system:authenticated".to_string()])
                .collect(),
        );
        csr.spec.usages = Some(DEFAULT_USAGES.iter().map(|s| s.to_string()).collect());
        csr.spec.expiration_seconds = args.duration.map(|d| d.as_secs() as i32);
        csr.spec.request = k8s_openapi::ByteString(request.to_pem().into_bytes());
        let privileged = privileged(client.as_ref()).await;
        // A CSR file carries no credential: renewal rules see none.
        verdict(&csr, &policy, &privileged, None)
    } else {
        let (client, _) = target.connect().await?;
        let csr = Api::<CertificateSigningRequest>::all(client.clone())
            .get(&args.csr)
            .await
            .map_err(|e| {
                anyhow!(
                    "{} is neither a file nor a CSR in the cluster: {}",
                    args.csr,
                    super::request::api_message(&e)
                )
            })?;
        if is_kubelet_signer(&csr.spec.signer_name) {
            let nodes = node_index(&client).await?;
            let ledger = node_ledger(&client).await?;
            let decision =
                node_verdict(&client, &csr, &args.nodes.rules()?, &nodes, &ledger).await?;
            return print_decision(out, &decision);
        }
        let policy = load_policy(args.policy_file.as_deref(), Some(&client))
            .await?
            .ok_or_else(|| anyhow!("the cluster has no ApprovalPolicy CRD; pass --policy-file"))?;
        let privileged = privileged(Some(&client)).await;
        let ledger = if policy.needs_ledger() {
            ledger(&client).await
        } else {
            None
        };
        verdict(&csr, &policy, &privileged, ledger.as_ref())
    };
    print_decision(out, &decision)
}

fn print_decision(out: OutputFormat, decision: &kcert_policy::Decision) -> Result<()> {
    report(out, decision_json(decision), || {
        let mut s = format!(
            "{:?} ({}): {}",
            decision.outcome,
            decision.reason,
            crate::text::safe(&decision.message)
        );
        for t in &decision.trace {
            s.push_str(&format!("\n  - {}", crate::text::safe(t)));
        }
        s
    });
    Ok(())
}

/// What `kcert policy test -o json` prints for a decision.
pub fn decision_json(decision: &kcert_policy::Decision) -> serde_json::Value {
    serde_json::json!({
        "outcome": format!("{:?}", decision.outcome),
        "reason": decision.reason.as_str(),
        "message": decision.message,
        "rule": decision.rule,
        "policy": decision.policy,
        "maxDurationSeconds": decision.max_duration_seconds,
        "trace": decision.trace,
    })
}
