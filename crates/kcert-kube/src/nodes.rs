//! Kubelet CSRs in Kubernetes' vocabulary: the SubjectAccessReviews kube-controller-manager's
//! csrapproving makes, and the one evaluation of a kubelet CSR object
//! ([`kcert_policy::nodes::decide_with_revocations`], with the node revocations on the ledger)
//! shared by the controller and `kcert policy test`.

use crate::facts::{csr_facts, parse_request};
use crate::ledger::LedgerIndex;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_pki::CertificateRequest;
use kcert_policy::Decision;
use kcert_policy::nodes::{Cidr, ClientAccess, NodeFacts, NodeIndex, NodeRules};
use kube::api::PostParams;
use kube::{Api, Client};
use std::collections::BTreeMap;

/// The ranges the cluster itself gives other meanings, never certified for a node whatever its
/// Node reports: every ServiceCIDR's ranges (where Service ClusterIPs come from; clusters
/// before ServiceCIDRs have none, and the kubernetes Service still counts), the `kubernetes`
/// Service's ClusterIPs, and the API server's own addresses (EndpointSlice
/// `default/kubernetes`). Each with what it is, for the denial's message. The first list is
/// never a node's; the second (the API server's own addresses) only a control-plane Node's
/// ([`NodeIndex::set_cluster_reserved`]).
pub async fn cluster_reserved(client: &Client) -> Result<ClusterReserved, kube::Error> {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::networking::v1::ServiceCIDR;
    let host = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().ok()?;
        let ip = kcert_policy::nodes::canonical(ip);
        Cidr::parse(&format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 })).ok()
    };
    let mut out = Vec::new();
    let mut hosts = Vec::new();
    let not_found = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
    match Api::<ServiceCIDR>::all(client.clone())
        .list(&Default::default())
        .await
    {
        Ok(list) => {
            for s in list.items {
                let name = s.metadata.name.clone().unwrap_or_default();
                for c in s.spec.and_then(|s| s.cidrs).unwrap_or_default() {
                    if let Ok(cidr) = Cidr::parse(&c) {
                        out.push((cidr, format!("a Service address (ServiceCIDR {name})")));
                    }
                }
            }
        }
        Err(e) if not_found(&e) => {
            // Said once per process: the answer does not change between polls.
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "this cluster serves no ServiceCIDRs (networking.k8s.io/v1): only the kubernetes Service's ClusterIPs are reserved automatically; give --kubelet-serving-reserved-cidr the Service CIDR"
                )
            });
        }
        Err(e) => return Err(e),
    }
    let service = Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await?;
    for ip in service
        .spec
        .and_then(|s| s.cluster_ips.or(s.cluster_ip.map(|i| vec![i])))
        .unwrap_or_default()
    {
        if let Some(c) = host(&ip) {
            out.push((
                c,
                "the API server's Service address (default/kubernetes)".into(),
            ));
        }
    }
    match Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
    {
        Ok(slice) => {
            for ep in slice.endpoints.unwrap_or_default() {
                for ip in ep.addresses {
                    if let Some(c) = host(&ip) {
                        hosts.push((
                            c,
                            "an address of the API server (EndpointSlice default/kubernetes)"
                                .into(),
                        ));
                    }
                }
            }
        }
        Err(e) if not_found(&e) => {}
        Err(e) => return Err(e),
    }
    Ok((out, hosts))
}

/// What the cluster states about names ([`kcert_policy::nodes::ClusterNames`]): the API server's endpoints in
/// kubeadm's ConfigMaps `kube-public/cluster-info` and `kube-system/kubeadm-config` (each
/// missing on clusters kubeadm did not make: nothing stated; present but unreadable — refused,
/// or not as kubeadm writes it — an error, so that nothing is decided: what it states is not
/// known) and the Namespaces' names. kcert-controller's Node view and `kcert policy test` both
/// read them with this.
pub async fn cluster_names(client: &Client) -> Result<kcert_policy::nodes::ClusterNames, String> {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kcert_policy::nodes::{CLUSTER_INFO, ConfigMapKey, KUBEADM_CONFIG};
    let get = |cm: ConfigMapKey| async move {
        Api::<ConfigMap>::namespaced(client.clone(), cm.namespace)
            .get_opt(cm.name)
            .await
            .map(|found| found.map(|c| c.data.unwrap_or_default()))
            .map_err(|e| format!("reading {cm} (kcert needs get on it): {e}"))
    };
    let cluster_info = get(CLUSTER_INFO).await?;
    let kubeadm_config = get(KUBEADM_CONFIG).await?;
    let api_server = kcert_policy::nodes::stated_api_server(
        cluster_info.as_ref(),
        kubeadm_config.as_ref(),
        &|text| serde_yaml::from_str(text).map_err(|e| e.to_string()),
    )?;
    let namespaces = Api::<Namespace>::all(client.clone())
        .list_metadata(&Default::default())
        .await
        .map_err(|e| format!("listing Namespaces (kcert needs list on namespaces): {e}"))?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    Ok(kcert_policy::nodes::ClusterNames {
        api_server,
        namespaces,
    })
}

/// Ranges never a node's, and the API server's own addresses ([`cluster_reserved`]).
pub type ClusterReserved = (Vec<(Cidr, String)>, Vec<(Cidr, String)>);

/// Whether a Node carries the control-plane role label (which a kubelet cannot set on itself
/// under NodeRestriction).
pub fn is_control_plane(node: &k8s_openapi::api::core::v1::Node) -> bool {
    node.metadata.labels.as_ref().is_some_and(|l| {
        l.contains_key("node-role.kubernetes.io/control-plane")
            || l.contains_key("node-role.kubernetes.io/master")
    })
}

/// Ask the API server whether the CSR's requester (user, uid, groups and extra as the API server
/// recorded them in the CSR) may `create` `certificatesigningrequests/<subresource>`, exactly as
/// kube-controller-manager's approver asks.
pub async fn review_access(
    client: &Client,
    csr: &CertificateSigningRequest,
    check: ClientAccess,
) -> Result<bool, kube::Error> {
    let spec = &csr.spec;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: spec.username.clone(),
            uid: spec.uid.clone(),
            groups: spec.groups.clone(),
            extra: spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                verb: Some("create".into()),
                subresource: Some(check.subresource().into()),
                version: Some("*".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The reviews a kubelet CSR needs, all made (in order); the first error stops them (the caller
/// decides nothing then: fail closed).
pub async fn review_all(
    client: &Client,
    csr: &CertificateSigningRequest,
    request: &CertificateRequest,
) -> Result<BTreeMap<ClientAccess, bool>, kube::Error> {
    let facts = csr_facts(csr, request);
    let mut answers = BTreeMap::new();
    for check in kcert_policy::nodes::client_access_checks(&facts) {
        answers.insert(check, review_access(client, csr, check).await?);
    }
    Ok(answers)
}

/// The largest kubelet CSR read: a kubelet's request is well under 2 KiB; anything larger is
/// denied before it is parsed.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// A kubelet CSR larger than [`MAX_REQUEST_BYTES`], denied unparsed.
pub fn oversized(csr: &CertificateSigningRequest) -> Option<Decision> {
    let size = csr.spec.request.0.len();
    (size > MAX_REQUEST_BYTES).then(|| {
        let mut d = Decision::deny(
            kcert_policy::Reason::RequestTooLarge,
            format!(
                "the request is {size} bytes; a kubelet's request is at most {MAX_REQUEST_BYTES}"
            ),
        );
        d.rule = Some(kcert_policy::nodes::rule_of(&csr.spec.signer_name).into());
        d
    })
}

/// Seconds since the CSR was created (0 when unknown).
pub fn age_seconds(csr: &CertificateSigningRequest) -> i64 {
    csr.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| k8s_openapi::jiff::Timestamp::now().as_second() - t.0.as_second())
        .unwrap_or(0)
}

/// The one evaluation of a kubelet CSR object: its request parsed and verified, then
/// [`kcert_policy::nodes::decide_with_revocations`] with the Nodes, the access answers and the
/// node revocations `ledger` holds (the caller decides nothing before it has read the ledger).
pub fn verdict_of(
    csr: &CertificateSigningRequest,
    request: &Result<CertificateRequest, kcert_pki::PkiError>,
    rules: &NodeRules,
    nodes: &NodeIndex,
    access: &BTreeMap<ClientAccess, bool>,
    ledger: &LedgerIndex,
) -> Decision {
    match request {
        Ok(request) => {
            let facts = csr_facts(csr, request);
            kcert_policy::nodes::decide_with_revocations(
                &facts,
                rules,
                &NodeFacts {
                    nodes,
                    access,
                    age_seconds: age_seconds(csr),
                },
                &|node| ledger.revoked_node(node).map(|e| e.for_rules()),
            )
        }
        Err(e) => {
            let mut d = Decision::invalid_request(&e.to_string());
            d.rule = Some(kcert_policy::nodes::rule_of(&csr.spec.signer_name).into());
            kcert_policy::nodes::in_mode(d, rules)
        }
    }
}

/// [`verdict_of`] parsing the request itself.
pub fn verdict(
    csr: &CertificateSigningRequest,
    rules: &NodeRules,
    nodes: &NodeIndex,
    access: &BTreeMap<ClientAccess, bool>,
    ledger: &LedgerIndex,
) -> Decision {
    if let Some(d) = oversized(csr) {
        return kcert_policy::nodes::in_mode(d, rules);
    }
    verdict_of(csr, &parse_request(csr), rules, nodes, access, ledger)
}

/// The node a kubelet CSR's request names (`system:node:<n>`), if its one CN says so.
pub fn node_of_request(request: &CertificateRequest) -> Option<&str> {
    match request.subject().common_names.as_slice() {
        [cn] => cn.strip_prefix(kcert_policy::nodes::NODE_USER_PREFIX),
        _ => None,
    }
}
