//! Kubelet certificates: fixed rules, not policy rules. A node gets a certificate only for
//! itself — its own name (`system:node:<n>`, group `system:nodes`) and, for serving, only the
//! addresses its Node object reports — checked here as pure functions over the CSR's facts, a
//! [`NodeIndex`] of the cluster's Nodes and the answers of the SubjectAccessReviews the caller
//! made ([`client_access_checks`]). The controller, `kcert policy test` and the tests share them.
//!
//! The signers' own rules are Kubernetes' (`pkg/apis/certificates/helpers.go`
//! `ValidateKubeletServingCSR` / `ValidateKubeletClientCSR`, messages worded as there); kcert adds
//! the identity checks Kubernetes leaves to approvers.

use crate::decision::{ApprovedSubject, Decision, Outcome, Reason};
use crate::facts::{CsrFacts, KeyKind};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The kubelet serving signer.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The kubelet client signer.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// A node's user name is this prefix and the Node's name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The one group a node certificate carries.
pub const NODES_GROUP: &str = "system:nodes";
/// The group of bootstrap-token users.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";

/// Usage sets Kubernetes allows for kubelet serving certificates.
pub const SERVING_USAGE_SETS: [&[&str]; 2] = [
    &["digital signature", "key encipherment", "server auth"],
    &["digital signature", "server auth"],
];
/// Usage sets Kubernetes allows for kubelet client certificates.
pub const CLIENT_USAGE_SETS: [&[&str]; 2] = [
    &["digital signature", "key encipherment", "client auth"],
    &["digital signature", "client auth"],
];

/// Whether `signer` is one of the kubelet signers.
pub fn is_kubelet_signer(signer: &str) -> bool {
    signer == KUBELET_SERVING_SIGNER || signer == KUBELET_CLIENT_SIGNER
}

/// What the operator configured for kubelet certificates (controller flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRules {
    /// Serving certificates are decided (`--kubelet-serving`).
    pub serving: bool,
    /// Client certificates are decided (`--kubelet-client`).
    pub client: bool,
    /// Never deny: what would be denied is left pending for a human (or another approver).
    pub approve_only: bool,
    /// DNS names under these suffixes may be in a serving certificate though the Node does not
    /// list them (`--kubelet-serving-dns-suffix`); matched at a label boundary.
    pub extra_dns_suffixes: Vec<String>,
    /// IP addresses in these ranges likewise (`--kubelet-serving-cidr`).
    pub extra_cidrs: Vec<Cidr>,
    /// IP ranges never certified for a node whatever it reports (`--kubelet-serving-reserved-cidr`:
    /// the Service CIDR, the API server's and load balancers' addresses), beside the built-in
    /// reserved addresses (loopback, unspecified, link-local, multicast, broadcast).
    pub reserved_cidrs: Vec<Cidr>,
    /// Host names never certified for a node whatever it reports
    /// (`--kubelet-serving-reserved-name`): the API server's and load balancers' external names;
    /// `*.example.com` reserves every name under `example.com`. Beside the built-in ones
    /// ([`reserved_name`]).
    pub reserved_names: Vec<String>,
    /// An address another Node reports is refused even when this Node reports it too (a node
    /// writes its own status, so it could copy another's addresses).
    pub refuse_shared_addresses: bool,
    /// The smallest RSA key accepted.
    pub min_rsa_bits: u32,
    /// How long a serving CSR whose Node does not exist waits before it is denied, seconds.
    pub node_wait_seconds: i64,
}

impl Default for NodeRules {
    fn default() -> Self {
        NodeRules {
            serving: false,
            client: false,
            approve_only: false,
            extra_dns_suffixes: Vec::new(),
            extra_cidrs: Vec::new(),
            reserved_cidrs: Vec::new(),
            reserved_names: Vec::new(),
            refuse_shared_addresses: true,
            min_rsa_bits: 2048,
            node_wait_seconds: 300,
        }
    }
}

impl NodeRules {
    /// Refuse settings whose meaning is ambiguous: a DNS suffix under another (with
    /// `example.com` and `com`, node `foo.example` would get `foo.example.com`, which is node
    /// `foo`'s name under `example.com`).
    pub fn check(&self) -> Result<(), String> {
        for a in &self.extra_dns_suffixes {
            for b in &self.extra_dns_suffixes {
                if a != b && a.ends_with(&format!(".{b}")) {
                    return Err(format!(
                        "the kubelet serving DNS suffix {a:?} is under the suffix {b:?}: a node named <x>.{} would get another node's name; keep one of them",
                        &a[..a.len() - b.len() - 1]
                    ));
                }
            }
        }
        Ok(())
    }

    /// The suffix `name` is under, and the label(s) before it.
    fn under_suffix<'a>(&'a self, name: &'a str) -> Option<(&'a str, &'a str)> {
        self.extra_dns_suffixes.iter().find_map(|s| {
            let head = name.strip_suffix(s.as_str())?.strip_suffix('.')?;
            (!head.is_empty()).then_some((s.as_str(), head))
        })
    }

    /// Whether these rules decide CSRs of `signer`.
    pub fn decides(&self, signer: &str) -> bool {
        (self.serving && signer == KUBELET_SERVING_SIGNER)
            || (self.client && signer == KUBELET_CLIENT_SIGNER)
    }
}

/// An IP range, `10.0.0.0/8` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `addr/prefix`; the address must be the network's first (no host bits set).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text.split_once('/').ok_or_else(|| {
            format!("{text:?} is not a CIDR: write address/prefix, e.g. 10.0.0.0/8")
        })?;
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?}: {addr:?} is not an IP address"))?;
        let network = canonical(network);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{text:?}: the prefix must be 0..={max}"))?;
        let cidr = Cidr { network, prefix };
        if mask(network, prefix) != bits(network) {
            return Err(format!(
                "{text:?} has host bits set; write the network address"
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` (IPv4-mapped IPv6 read as IPv4) is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == bits(self.network)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(ip: IpAddr, prefix: u8) -> u128 {
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let keep = u32::from(prefix).min(width);
    if keep == 0 {
        return 0;
    }
    let all = if width == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    bits(ip) & (all << (width - keep)) & all
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as the IPv4 address it is: Go's `net.IP.Equal` and TLS
/// hostname checks treat the two forms as one address, so kcert compares them as one.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// An address as compared: a lower-cased host name or a canonical IP.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeName {
    /// A DNS name (Hostname, InternalDNS, ExternalDNS).
    Dns(String),
    /// An IP address (InternalIP, ExternalIP).
    Ip(IpAddr),
}

impl std::fmt::Display for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeName::Dns(d) => write!(f, "DNS:{d}"),
            NodeName::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

/// One of a Node's `status.addresses`, as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    /// Hostname, InternalDNS, ExternalDNS, InternalIP or ExternalIP (others are ignored).
    pub kind: String,
    /// The address as written by whoever wrote the status.
    pub address: String,
}

impl NodeAddress {
    /// The address as compared, or `None` for a type kcert does not use or a value that is not
    /// strictly an address of its type (zero-padded or zoned IPs, names with bad characters):
    /// such an entry allows nothing.
    pub fn name(&self) -> Option<NodeName> {
        match self.kind.as_str() {
            "InternalIP" | "ExternalIP" => self
                .address
                .parse::<IpAddr>()
                .ok()
                .map(|ip| NodeName::Ip(canonical(ip))),
            "Hostname" | "InternalDNS" | "ExternalDNS" => {
                let lower = self.address.to_ascii_lowercase();
                is_host_name(&lower).then_some(NodeName::Dns(lower))
            }
            _ => None,
        }
    }
}

impl NodeAddress {
    /// Everything this address could be taken to claim, read loosely (trailing dot and zone
    /// stripped, a name that is an IP also as that IP, any address type): for the
    /// shared-address check, where reading another Node's entry generously protects it. A
    /// node's own entries allow only their strict reading ([`NodeAddress::name`]).
    pub fn claimed_names(&self) -> Vec<NodeName> {
        let mut out = Vec::new();
        if let Some(n) = self.name() {
            out.push(n);
        }
        let text = self
            .address
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let without_zone = text.split('%').next().unwrap_or_default();
        if let Ok(ip) = without_zone.parse::<IpAddr>() {
            out.push(NodeName::Ip(canonical(ip)));
        } else if let Some(ip) = lenient_ipv4(without_zone) {
            out.push(NodeName::Ip(IpAddr::V4(ip)));
        }
        if is_host_name(&text) {
            out.push(NodeName::Dns(text));
        }
        out.sort();
        out.dedup();
        out
    }
}

/// `010.000.000.002` read as decimal octets with leading zeros (how Go before 1.17 and many
/// tools read it), for claims only.
fn lenient_ipv4(text: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    Some(octets.into())
}

/// RFC 1123 host name: labels of letters, digits and inner hyphens, 1..=63 each, 253 in all;
/// no wildcard, no trailing dot, no empty label.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A DNS name some software would read as an IP address (`10.0.0.1`, `010.0.0.1`, `0x0a.1`,
/// `167772161`): every label numeric (decimal, octal or hex). Such a name is never a host name
/// kcert certifies; addresses belong in IP SANs, where they are compared as addresses.
pub fn looks_like_address(name: &str) -> bool {
    name.split('.').all(|label| {
        let hex = label
            .strip_prefix("0x")
            .or_else(|| label.strip_prefix("0X"));
        match hex {
            Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
            None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
        }
    })
}

/// Why an IP address is never certified for a node, if it is one of those: a node writes its
/// own status, so it could report these.
pub fn reserved_ip(ip: IpAddr, rules: &NodeRules) -> Option<String> {
    let ip = canonical(ip);
    let built_in = match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_unspecified() => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local (cloud metadata lives here)"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("multicast"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
        _ => None,
    };
    if let Some(why) = built_in {
        return Some(format!("{ip} is {why}"));
    }
    rules
        .reserved_cidrs
        .iter()
        .find(|c| c.contains(ip))
        .map(|c| format!("{ip} is in the reserved range {c} (--kubelet-serving-reserved-cidr)"))
}

/// Names that mean this machine in common `/etc/hosts` files.
const LOOPBACK_NAMES: [&str; 8] = [
    "localhost",
    "localhost.localdomain",
    "localhost4",
    "localhost4.localdomain4",
    "localhost6",
    "localhost6.localdomain6",
    "ip6-localhost",
    "ip6-loopback",
];

/// Why a (lower-case) host name is never certified for a node, if it is one of those: names
/// that mean this machine or the API server to clients (`localhost` and its aliases, the
/// `kubernetes` Service, anything under `.svc`, Pod names under `.pod`) and the operator's
/// `--kubelet-serving-reserved-name`s.
pub fn reserved_name(name: &str, rules: &NodeRules) -> Option<String> {
    let labels: Vec<&str> = name.split('.').collect();
    let why = if LOOPBACK_NAMES.contains(&name) || name.ends_with(".localhost") {
        "names this machine".to_string()
    } else if labels[0] == "kubernetes" && (labels.len() == 1 || labels.get(1) == Some(&"default"))
    {
        "names the API server (the kubernetes Service)".to_string()
    } else if labels.contains(&"svc") {
        "is a Service name (under .svc)".to_string()
    } else if labels.len() > 3 && labels[2..labels.len() - 1].contains(&"pod") {
        // <address>.<namespace>.pod.<cluster domain>
        "is a Pod name (under .pod)".to_string()
    } else if let Some(r) = rules
        .reserved_names
        .iter()
        .find(|r| match r.strip_prefix("*.") {
            Some(domain) => name.ends_with(&format!(".{domain}")),
            None => name == r.as_str(),
        })
    {
        format!("is reserved ({r}, --kubelet-serving-reserved-name)")
    } else {
        return None;
    };
    Some(format!("{name} {why}"))
}

/// The cluster's Nodes and their addresses, updated one Node at a time; which Nodes claim an
/// address, for the shared-address check. Pure data: the controller fills it from a watch.
#[derive(Clone, Debug, Default)]
pub struct NodeIndex {
    nodes: BTreeMap<String, Vec<NodeAddress>>,
    claims: BTreeMap<NodeName, BTreeSet<String>>,
    cluster_reserved: Vec<(Cidr, String)>,
    api_server_hosts: Vec<(Cidr, String)>,
    names: ClusterNames,
    control_plane: BTreeSet<String>,
}

impl NodeIndex {
    /// Set what the cluster itself gives other meanings, each with what it is: `ranges`
    /// (Service ClusterIPs) are never certified for a node; `api_server_hosts` (the API
    /// server's own addresses) only for a control-plane Node that reports them itself — with
    /// kubeadm the API server listens on its control-plane Nodes' own addresses.
    pub fn set_cluster_reserved(
        &mut self,
        ranges: Vec<(Cidr, String)>,
        api_server_hosts: Vec<(Cidr, String)>,
    ) {
        self.cluster_reserved = ranges;
        self.api_server_hosts = api_server_hosts;
    }

    /// Set what the cluster states about names ([`ClusterNames`]): the API server's endpoints
    /// kubeadm's ConfigMaps name (a control-plane Node's only when it reports them itself, as
    /// the API server's EndpointSlice addresses) and the Namespaces, whose `<svc>.<ns>` names
    /// are never a node's.
    pub fn set_cluster_names(&mut self, names: ClusterNames) {
        self.names = names;
    }

    /// Why the (lower-case) host name `name` is the cluster's and never node `node`'s, if it
    /// is: the API server's name as the cluster states it (unless `node` is a control-plane
    /// Node reporting it), or a Service's short name `<svc>.<ns>` (`ns` an existing Namespace).
    pub fn reserved_name_by_cluster(&self, name: &str, node: &str) -> Option<String> {
        let dns = NodeName::Dns(name.to_string());
        if let Some((_, what)) = self.names.api_server.iter().find(|(n, _)| *n == dns) {
            if self.reports_as_control_plane(node, &dns) {
                return None;
            }
            return Some(format!(
                "{name} is {what}; only a control-plane Node (label node-role.kubernetes.io/control-plane) that reports it is certified for it"
            ));
        }
        if let Some((_, ns)) = name.split_once('.')
            && !ns.contains('.')
            && self.names.namespaces.contains(ns)
        {
            return Some(format!(
                "{name} is a Service's short name (<service>.<namespace>: Namespace {ns} exists, and in-cluster clients resolve such names through their DNS search path)"
            ));
        }
        None
    }

    /// Whether `node` is a control-plane Node that reports `name` among its own addresses.
    fn reports_as_control_plane(&self, node: &str, name: &NodeName) -> bool {
        self.is_control_plane(node)
            && self
                .addresses(node)
                .unwrap_or_default()
                .iter()
                .any(|a| a.name().as_ref() == Some(name))
    }

    /// Mark Node `name` as a control-plane Node (label `node-role.kubernetes.io/control-plane`,
    /// which NodeRestriction does not let a kubelet set on its own Node) or not.
    pub fn set_control_plane(&mut self, name: &str, control_plane: bool) {
        if control_plane {
            self.control_plane.insert(name.to_string());
        } else {
            self.control_plane.remove(name);
        }
    }

    /// Whether Node `name` is marked control-plane.
    pub fn is_control_plane(&self, name: &str) -> bool {
        self.control_plane.contains(name)
    }

    /// Why `ip` is the cluster's and never node `node`'s, if it is.
    pub fn reserved_by_cluster(&self, ip: IpAddr, node: &str) -> Option<String> {
        let ip = canonical(ip);
        if let Some((c, what)) = self.cluster_reserved.iter().find(|(c, _)| c.contains(ip)) {
            return Some(format!("{ip} is {what} ({c})"));
        }
        let what =
            if let Some((c, what)) = self.api_server_hosts.iter().find(|(c, _)| c.contains(ip)) {
                format!("{what} ({c})")
            } else {
                let stated = NodeName::Ip(ip);
                let (_, what) = self.names.api_server.iter().find(|(n, _)| *n == stated)?;
                what.clone()
            };
        if self.reports_as_control_plane(node, &NodeName::Ip(ip)) {
            return None;
        }
        Some(format!(
            "{ip} is {what}; only a control-plane Node (label node-role.kubernetes.io/control-plane) that reports it is certified for it"
        ))
    }

    /// Add or replace Node `name`.
    pub fn upsert(&mut self, name: &str, addresses: Vec<NodeAddress>) {
        self.remove(name);
        for a in &addresses {
            for n in a.claimed_names() {
                self.claims.entry(n).or_default().insert(name.to_string());
            }
        }
        self.nodes.insert(name.to_string(), addresses);
    }

    /// Forget Node `name`.
    pub fn remove(&mut self, name: &str) {
        self.control_plane.remove(name);
        if let Some(old) = self.nodes.remove(name) {
            for a in &old {
                for n in a.claimed_names() {
                    if let Some(set) = self.claims.get_mut(&n) {
                        set.remove(name);
                        if set.is_empty() {
                            self.claims.remove(&n);
                        }
                    }
                }
            }
        }
    }

    /// Node `name`'s addresses, or `None` if there is no such Node.
    pub fn addresses(&self, name: &str) -> Option<&[NodeAddress]> {
        self.nodes.get(name).map(Vec::as_slice)
    }

    /// Another Node than `name` that reports `address`, if any.
    pub fn other_claimant(&self, address: &NodeName, name: &str) -> Option<&str> {
        self.claims
            .get(address)?
            .iter()
            .find(|n| n.as_str() != name)
            .map(String::as_str)
    }

    /// How many Nodes are known.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no Node is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// What the cluster states about names, read with its reserved ranges (the controller every
/// 30 s, `kcert policy test` each time): the API server's endpoints and the Namespaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterNames {
    /// The API server's endpoints the cluster states ([`stated_api_server`]), each with where
    /// it is stated: a name reserved as a name, an address as an address.
    pub api_server: Vec<(NodeName, String)>,
    /// The names of the cluster's Namespaces: `<svc>.<ns>` is a Service's short name.
    pub namespaces: BTreeSet<String>,
}

/// ConfigMap `kube-public/cluster-info` (kubeadm's, readable by anyone): the kubeconfig in
/// key `kubeconfig` names the API server as clients outside the cluster reach it.
pub const CLUSTER_INFO: ConfigMapKey = ConfigMapKey {
    namespace: "kube-public",
    name: "cluster-info",
    key: "kubeconfig",
};

/// ConfigMap `kube-system/kubeadm-config`: kubeadm's ClusterConfiguration, whose
/// `controlPlaneEndpoint` is the API server's shared endpoint (`host:port`).
pub const KUBEADM_CONFIG: ConfigMapKey = ConfigMapKey {
    namespace: "kube-system",
    name: "kubeadm-config",
    key: "ClusterConfiguration",
};

/// A key of a named ConfigMap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigMapKey {
    /// Its namespace.
    pub namespace: &'static str,
    /// Its name.
    pub name: &'static str,
    /// The key of its `data` read.
    pub key: &'static str,
}

impl std::fmt::Display for ConfigMapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfigMap {}/{}", self.namespace, self.name)
    }
}

/// The API server's endpoints the cluster states, from the `data` of [`CLUSTER_INFO`] (every
/// cluster's `server` URL in its kubeconfig) and of [`KUBEADM_CONFIG`] (`controlPlaneEndpoint`,
/// when set), each `None` when that ConfigMap does not exist (not kubeadm: nothing stated).
/// A ConfigMap that exists but cannot be read as kubeadm writes it (no such key, not YAML, a
/// server that names no host) is an error: the caller decides no serving CSR until it is fixed
/// (fail closed: what it would state is not known). `parse_yaml` reads YAML (kubeadm's JSON too).
pub fn stated_api_server(
    cluster_info: Option<&BTreeMap<String, String>>,
    kubeadm_config: Option<&BTreeMap<String, String>>,
    parse_yaml: &dyn Fn(&str) -> Result<serde_json::Value, String>,
) -> Result<Vec<(NodeName, String)>, String> {
    let mut out: Vec<(NodeName, String)> = Vec::new();
    let mut add = |host: NodeName, what: String| {
        if !out.iter().any(|(h, _)| *h == host) {
            out.push((host, what));
        }
    };
    let doc = |cm: ConfigMapKey, data: &BTreeMap<String, String>| {
        let text = data.get(cm.key).ok_or_else(|| {
            format!(
                "{cm} has no key {}: kcert cannot tell which API server endpoint it states",
                cm.key
            )
        })?;
        parse_yaml(text).map_err(|e| format!("{cm} key {}: not YAML: {e}", cm.key))
    };
    if let Some(data) = cluster_info {
        let cm = CLUSTER_INFO;
        let kubeconfig = doc(cm, data)?;
        let clusters = kubeconfig
            .get("clusters")
            .and_then(|c| c.as_array())
            .ok_or_else(|| format!("{cm} key {}: a kubeconfig without clusters", cm.key))?;
        for c in clusters {
            let server = c
                .get("cluster")
                .and_then(|c| c.get("server"))
                .and_then(|s| s.as_str())
                .ok_or_else(|| format!("{cm} key {}: a cluster without a server URL", cm.key))?;
            let host = endpoint_host(server)
                .map_err(|e| format!("{cm} key {}: the server {e}", cm.key))?;
            let what = format!(
                "the API server's {} (the server of the kubeconfig in {cm})",
                kind_of(&host)
            );
            add(host, what);
        }
    }
    if let Some(data) = kubeadm_config {
        let cm = KUBEADM_CONFIG;
        let config = doc(cm, data)?;
        if !config.is_object() {
            return Err(format!("{cm} key {}: not a ClusterConfiguration", cm.key));
        }
        match config.get("controlPlaneEndpoint") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(e)) if e.trim().is_empty() => {}
            Some(serde_json::Value::String(e)) => {
                let host = endpoint_host(e)
                    .map_err(|e| format!("{cm} key {}: controlPlaneEndpoint {e}", cm.key))?;
                let what = format!(
                    "the API server's {} (controlPlaneEndpoint in {cm})",
                    kind_of(&host)
                );
                add(host, what);
            }
            Some(_) => {
                return Err(format!(
                    "{cm} key {}: controlPlaneEndpoint is not a string",
                    cm.key
                ));
            }
        }
    }
    Ok(out)
}

fn kind_of(host: &NodeName) -> &'static str {
    match host {
        NodeName::Ip(_) => "address",
        NodeName::Dns(_) => "name",
    }
}

/// The host of an endpoint as a kubeconfig's `server` or kubeadm's `controlPlaneEndpoint`
/// writes it — `https://host:port/path`, `host:port`, `host`, `[v6]:port`, a bare IPv6
/// address — lower-cased, one trailing dot dropped: an IP address (canonical) or a host name.
pub fn endpoint_host(text: &str) -> Result<NodeName, String> {
    let bad = |why: &str| {
        format!(
            "{} names no host kcert can read: {why}",
            crate::escape_for_message(text)
        )
    };
    let mut rest = text.trim();
    if let Some((scheme, after)) = rest.split_once("://") {
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(bad("not a URL"));
        }
        rest = after;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(inner) = hostport.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(|| bad("an unclosed ["))?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return Err(bad("a bad port"));
        }
        host
    } else if hostport.matches(':').count() > 1 {
        // A bare IPv6 address, no port.
        hostport
    } else {
        match hostport.split_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return Err(bad("a bad port")),
            None => hostport,
        }
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(NodeName::Ip(canonical(ip)));
    }
    let lower = host.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    if is_host_name(lower) {
        Ok(NodeName::Dns(lower.to_string()))
    } else {
        Err(bad("not a host name or IP address"))
    }
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// A kubelet client CSR as kube-controller-manager's csrapproving recognizes it: which
/// SubjectAccessReview (subresource of `certificatesigningrequests`, verb `create`) would
/// allow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientAccess {
    /// A node renewing its own certificate (requester == CN): `selfnodeclient`.
    SelfNodeClient,
    /// A bootstrap-token user asking for a node's first certificate: `nodeclient`.
    NodeClient,
}

impl ClientAccess {
    /// The subresource the SubjectAccessReview names.
    pub fn subresource(self) -> &'static str {
        match self {
            ClientAccess::SelfNodeClient => "selfnodeclient",
            ClientAccess::NodeClient => "nodeclient",
        }
    }
}

/// The SubjectAccessReviews a kubelet client CSR needs (in the order they are tried), for the
/// caller to make before [`decide`]; none for any other CSR.
pub fn client_access_checks(facts: &CsrFacts) -> Vec<ClientAccess> {
    if facts.signer_name != KUBELET_CLIENT_SIGNER {
        return Vec::new();
    }
    let requester = &facts.requester;
    if facts.common_name() == Some(requester.username.as_str())
        && requester.groups.iter().any(|g| g == NODES_GROUP)
    {
        vec![ClientAccess::SelfNodeClient]
    } else if requester.groups.iter().any(|g| g == BOOTSTRAPPERS_GROUP) {
        vec![ClientAccess::NodeClient]
    } else {
        Vec::new()
    }
}

/// What the caller knows beyond the CSR: the Nodes, the SubjectAccessReview answers, how long
/// the CSR has waited.
pub struct NodeFacts<'a> {
    /// The cluster's Nodes (the caller decides nothing before its watch has listed them).
    pub nodes: &'a NodeIndex,
    /// The answer to each check of [`client_access_checks`] the caller made.
    pub access: &'a BTreeMap<ClientAccess, bool>,
    /// Seconds since the CSR was created.
    pub age_seconds: i64,
}

/// A node revoked on kcert's ledger (`kcert revoke --node`) and not cleared since: who, when,
/// why. While it stands the node gets no certificate of either signer, by bootstrap or renewal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRevocation {
    /// When, RFC 3339.
    pub revoked_at: String,
    /// Who.
    pub revoked_by: String,
    /// Why.
    pub reason: String,
}

/// What a node certificate approval certifies beyond the subject: the SANs checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApprovedNames {
    /// DNS SANs, lower-cased as checked.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
}

/// Decide a kubelet CSR for a cluster where no node is revoked ([`decide_with_revocations`]
/// otherwise). `Outcome::Ignore` with `NodeNotFound` means "wait for the Node" (until
/// `node_wait_seconds`, then a denial); in approve-only mode every denial becomes Ignore with the
/// same reason and message.
pub fn decide(facts: &CsrFacts, rules: &NodeRules, node: &NodeFacts<'_>) -> Decision {
    decide_with_revocations(facts, rules, node, &|_| None)
}

/// [`decide`], refusing (`NodeRevoked`) a CSR for a node `revoked` names: `revoked(n)` is the
/// revocation in force of node `n` (`kcert revoke --node n`, not cleared), if any. The caller
/// decides nothing before it has read the revocations (the ledger).
pub fn decide_with_revocations(
    facts: &CsrFacts,
    rules: &NodeRules,
    node: &NodeFacts<'_>,
    revoked: &dyn Fn(&str) -> Option<NodeRevocation>,
) -> Decision {
    let mut d = decide_strict(facts, rules, node, revoked);
    // Every node decision names its rule, denials too (the condition's reason, the metric's
    // and `kcert policy test`'s rule).
    if d.rule.is_none() {
        d.rule = Some(rule_of(&facts.signer_name).into());
    }
    in_mode(d, rules)
}

/// The fixed rule that decides CSRs of `signer`.
pub fn rule_of(signer: &str) -> &'static str {
    if signer == KUBELET_SERVING_SIGNER {
        "kubelet-serving"
    } else {
        "kubelet-client"
    }
}

/// The decision as the mode allows it: in approve-only mode a denial (whatever decided it: the
/// rules, an unreadable or oversized request) is left pending instead, with the same reason.
pub fn in_mode(d: Decision, rules: &NodeRules) -> Decision {
    if rules.approve_only && d.outcome == Outcome::Deny {
        let mut d = d;
        d.outcome = Outcome::Ignore;
        d.message = format!("{} (approve-only mode: left for a human)", d.message);
        return d;
    }
    d
}

fn deny(reason: Reason, message: String, trace: &mut Vec<String>) -> Decision {
    trace.push(message.clone());
    let mut d = Decision::deny(reason, message);
    d.trace = std::mem::take(trace);
    d
}

fn decide_strict(
    facts: &CsrFacts,
    rules: &NodeRules,
    node: &NodeFacts<'_>,
    revoked: &dyn Fn(&str) -> Option<NodeRevocation>,
) -> Decision {
    let mut trace = Vec::new();
    let serving = facts.signer_name == KUBELET_SERVING_SIGNER;
    let rule = rule_of(&facts.signer_name);
    if let Err((reason, m)) = check_signer_table(facts) {
        return deny(reason, m, &mut trace);
    }
    trace.push(format!(
        "{rule}: the signer's table holds (subject, SANs, usages)"
    ));
    let cn = facts.common_name().unwrap_or_default().to_string();
    let node_name = &cn[NODE_USER_PREFIX.len()..];
    if node_name.is_empty() || !is_node_name(node_name) {
        return deny(
            Reason::NodeMismatch,
            format!(
                "the CN {} does not name a node: after system:node: must come a Node name (lower-case DNS subdomain)",
                crate::escape_for_message(&cn)
            ),
            &mut trace,
        );
    }
    // A revoked node gets nothing, whoever asks (a bootstrap token may name any node) and
    // whatever a SubjectAccessReview says, until an admin clears the revocation.
    if let Some(r) = revoked(node_name) {
        return deny(
            Reason::NodeRevoked,
            revoked_message(node_name, &r),
            &mut trace,
        );
    }
    trace.push(format!(
        "{rule}: node {node_name} is not revoked on kcert's ledger"
    ));
    if let Err((reason, m)) = check_key(facts.key, rules) {
        return deny(reason, m, &mut trace);
    }
    let requester = &facts.requester;
    let approved_subject = ApprovedSubject {
        common_name: cn.clone(),
        groups: vec![NODES_GROUP.to_string()],
        uid: None,
    };
    if serving {
        let is_node = requester.username.starts_with(NODE_USER_PREFIX)
            && requester.groups.iter().any(|g| g == NODES_GROUP);
        if !is_node {
            return deny(
                Reason::NotANode,
                format!(
                    "the requester {} is not a node (a user system:node:<name> in group system:nodes); only a node asks for its serving certificate",
                    crate::escape_for_message(&requester.username)
                ),
                &mut trace,
            );
        }
        if requester.username != cn {
            return deny(
                Reason::NodeMismatch,
                format!(
                    "the requester {} asks for {}: a node gets a serving certificate only for itself",
                    crate::escape_for_message(&requester.username),
                    crate::escape_for_message(&cn)
                ),
                &mut trace,
            );
        }
        trace.push(format!("{rule}: the requester is the node {node_name}"));
        // No Node, or a Node not reporting addresses yet (its first status update is on the
        // way): wait for it, within the bound.
        let addresses = match node.nodes.addresses(node_name) {
            Some(list) if !list.is_empty() => list,
            found => {
                let (now, late) = match found {
                    None => ("does not exist (yet)", "did not appear"),
                    Some(_) => ("reports no addresses yet", "reported no addresses"),
                };
                if node.age_seconds >= rules.node_wait_seconds {
                    return deny(
                        Reason::NodeNotFound,
                        format!(
                            "Node {node_name} {late} within {}s of the request; a serving certificate is only for a registered Node's addresses",
                            rules.node_wait_seconds
                        ),
                        &mut trace,
                    );
                }
                let message = format!(
                    "Node {node_name} {now}; waited {}s of {}s",
                    node.age_seconds.max(0),
                    rules.node_wait_seconds
                );
                trace.push(message.clone());
                let mut d = Decision::deny(Reason::NodeNotFound, message);
                d.outcome = Outcome::Ignore;
                d.rule = Some(rule.into());
                d.trace = trace;
                return d;
            }
        };
        let own: BTreeSet<NodeName> = addresses.iter().filter_map(NodeAddress::name).collect();
        let mut approved = ApprovedNames::default();
        let mut checked = Vec::new();
        for dns in &facts.sans.dns {
            let lower = dns.to_ascii_lowercase();
            if !is_host_name(&lower) || looks_like_address(&lower) {
                return deny(
                    Reason::SanNotANodeAddress,
                    format!(
                        "the DNS SAN {} is not a host name (letters, digits, inner hyphens; no wildcard, no trailing dot, not an address in disguise)",
                        crate::escape_for_message(dns)
                    ),
                    &mut trace,
                );
            }
            if let Some(why) = reserved_name(&lower, rules)
                .or_else(|| node.nodes.reserved_name_by_cluster(&lower, node_name))
            {
                return deny(
                    Reason::SanReserved,
                    format!("the DNS SAN {why}: never certified for a node"),
                    &mut trace,
                );
            }
            let name = NodeName::Dns(lower.clone());
            // Another Node's own name, or its name under an allowed suffix, is that Node's
            // whatever this node reports (a node writes its own status); so is anything else
            // under an allowed suffix than this node's own name there.
            // Whose name this is, before what anyone reports: the node's own name is its own;
            // another Node's name is that Node's; under an allowed suffix S, `<m>.S` is node
            // `m`'s (a node writes its own status, so reports cannot decide these).
            // A name that is both this node's own and `<m>.S` of an existing Node m is
            // ambiguous: m's, so that no name is ever certified for two Nodes.
            let under = rules.under_suffix(&lower);
            let suffix_owner = under
                .map(|(_, head)| head)
                .filter(|h| *h != node_name && node.nodes.addresses(h).is_some());
            let suffix = if lower == node_name && suffix_owner.is_none() {
                None
            } else {
                under
            };
            let owner: Option<&str> = if let Some(m) = suffix_owner {
                Some(m)
            } else if lower == node_name {
                Some(node_name)
            } else if node.nodes.addresses(&lower).is_some() {
                Some(lower.as_str())
            } else {
                suffix.map(|(_, head)| head)
            };
            if let Some(other) = owner.filter(|o| *o != node_name) {
                let known = node.nodes.addresses(other).is_some();
                let message = match suffix {
                    Some((s, _)) if other != lower && known => format!(
                        "the DNS SAN {} is Node {other}'s name under the allowed suffix {s}: node {node_name} is certified there only as {node_name}.{s}",
                        crate::escape_for_message(dns)
                    ),
                    Some((s, _)) if other != lower => format!(
                        "the DNS SAN {} is under the allowed suffix {s}, where node {node_name} is certified only as {node_name}.{s}",
                        crate::escape_for_message(dns)
                    ),
                    _ => format!(
                        "the DNS SAN {} is the name of Node {other}: a node is not certified for another Node's name, whatever its own status reports",
                        crate::escape_for_message(dns)
                    ),
                };
                let reason = if known {
                    Reason::SanOfAnotherNode
                } else {
                    Reason::SanNotANodeAddress
                };
                return deny(reason, message, &mut trace);
            }
            let why = if let Some((s, _)) = suffix {
                format!("the node's name under the allowed suffix {s}")
            } else if own.contains(&name) {
                "an address of the Node".to_string()
            } else {
                return deny(
                    Reason::SanNotANodeAddress,
                    format!(
                        "the DNS SAN {} is not among Node {node_name}'s addresses ({}) nor {node_name}.<an allowed suffix>",
                        crate::escape_for_message(dns),
                        list(&own)
                    ),
                    &mut trace,
                );
            };
            // The node's own name (bare or under a suffix) is its own whoever else reports it;
            // other names are checked against what other Nodes report.
            if owner != Some(node_name)
                && let Some(d) = shared(&name, node_name, rules, node, &mut trace)
            {
                return d;
            }
            checked.push(format!("{name} ({why})"));
            approved.dns.push(lower);
        }
        for ip in &facts.sans.ips {
            let Ok(parsed) = ip.parse::<IpAddr>() else {
                return deny(
                    Reason::SanNotANodeAddress,
                    format!(
                        "the IP SAN {} is not an address",
                        crate::escape_for_message(ip)
                    ),
                    &mut trace,
                );
            };
            let parsed = canonical(parsed);
            if let Some(why) = reserved_ip(parsed, rules)
                .or_else(|| node.nodes.reserved_by_cluster(parsed, node_name))
            {
                return deny(
                    Reason::SanReserved,
                    format!("the IP SAN {why}: never certified for a node"),
                    &mut trace,
                );
            }
            let name = NodeName::Ip(parsed);
            let why = if own.contains(&name) {
                "an address of the Node".to_string()
            } else if let Some(c) = rules.extra_cidrs.iter().find(|c| c.contains(parsed)) {
                format!("in the allowed range {c}")
            } else {
                return deny(
                    Reason::SanNotANodeAddress,
                    format!(
                        "the IP SAN {ip} is not among Node {node_name}'s addresses ({}) nor in an allowed range",
                        list(&own)
                    ),
                    &mut trace,
                );
            };
            if let Some(d) = shared(&name, node_name, rules, node, &mut trace) {
                return d;
            }
            checked.push(format!("{name} ({why})"));
            approved.ips.push(parsed);
        }
        let message = format!(
            "{rule}: node {node_name} asked for its own name and addresses: {}",
            checked.join(", ")
        );
        trace.push(message.clone());
        let mut d = Decision::deny(Reason::AutoApproved, message);
        d.outcome = Outcome::Approve;
        d.rule = Some(rule.into());
        d.subject = Some(approved_subject);
        d.names = Some(approved);
        d.trace = trace;
        return d;
    }
    // The client signer: kube-controller-manager's recognizers, then the access checks.
    let checks = client_access_checks(facts);
    if checks.is_empty() {
        let (reason, message) = if requester.username.starts_with(NODE_USER_PREFIX)
            && requester.username != cn
        {
            (
                Reason::NodeMismatch,
                format!(
                    "the requester {} asks for {}: a node renews only its own client certificate",
                    crate::escape_for_message(&requester.username),
                    crate::escape_for_message(&cn)
                ),
            )
        } else {
            (
                Reason::NotANode,
                format!(
                    "the requester {} is neither the node {} renewing its certificate nor a bootstrap token (group system:bootstrappers)",
                    crate::escape_for_message(&requester.username),
                    crate::escape_for_message(&cn)
                ),
            )
        };
        return deny(reason, message, &mut trace);
    }
    for check in &checks {
        match node.access.get(check) {
            Some(true) => {
                let message = format!(
                    "{rule}: {} for {node_name} allowed by a SubjectAccessReview of create on certificatesigningrequests/{}",
                    match check {
                        ClientAccess::SelfNodeClient => "renewal by the node itself",
                        ClientAccess::NodeClient => "bootstrap",
                    },
                    check.subresource()
                );
                trace.push(message.clone());
                let mut d = Decision::deny(Reason::AutoApproved, message);
                d.outcome = Outcome::Approve;
                d.rule = Some(rule.into());
                d.subject = Some(approved_subject);
                d.names = Some(ApprovedNames::default());
                d.trace = trace;
                return d;
            }
            Some(false) => trace.push(format!(
                "{rule}: the SubjectAccessReview for certificatesigningrequests/{} did not allow {}",
                check.subresource(),
                crate::escape_for_message(&requester.username)
            )),
            None => {
                // Fail closed: a check the caller did not make allows nothing.
                trace.push(format!(
                    "{rule}: no answer for certificatesigningrequests/{}",
                    check.subresource()
                ));
            }
        }
    }
    let subresources: Vec<_> = checks.iter().map(|c| c.subresource()).collect();
    deny(
        Reason::NodeClientNotAuthorized,
        format!(
            "{} may not create certificatesigningrequests/{} (SubjectAccessReview not allowed): bind the ClusterRole system:certificates.k8s.io:certificatesigningrequests:{} to them",
            crate::escape_for_message(&requester.username),
            subresources.join(" or "),
            subresources[0]
        ),
        &mut trace,
    )
}

/// The denial's message for a revoked node (also the signer's `Failed` message).
pub fn revoked_message(node_name: &str, r: &NodeRevocation) -> String {
    format!(
        "node {node_name} was revoked at {} by {}: {}; it gets no certificate (bootstrap or renewal) until an admin clears it with `kcert revoke --node {node_name} --clear`",
        if r.revoked_at.is_empty() {
            "an unknown time"
        } else {
            &r.revoked_at
        },
        crate::escape_for_message(&r.revoked_by),
        crate::escape_for_message(&r.reason)
    )
}

/// The shared-address check: another Node reports `name` too.
fn shared(
    name: &NodeName,
    node_name: &str,
    rules: &NodeRules,
    node: &NodeFacts<'_>,
    trace: &mut Vec<String>,
) -> Option<Decision> {
    if !rules.refuse_shared_addresses {
        return None;
    }
    let other = node.nodes.other_claimant(name, node_name)?;
    Some(deny(
        Reason::SanOfAnotherNode,
        format!(
            "{name} is also an address of Node {other}: a node is not certified for an address another Node reports (--kubelet-serving-allow-shared-addresses turns this off)"
        ),
        trace,
    ))
}

/// The Node's addresses for a message: at most [`LISTED`] of them (a node writes its own status
/// and could list thousands; a condition message must stay small).
fn list(names: &BTreeSet<NodeName>) -> String {
    if names.is_empty() {
        return "none usable".into();
    }
    let mut shown: Vec<String> = names.iter().take(LISTED).map(ToString::to_string).collect();
    if names.len() > LISTED {
        shown.push(format!("and {} more", names.len() - LISTED));
    }
    shown.join(", ")
}

/// How many of a Node's addresses a message lists.
const LISTED: usize = 8;

/// A Node name as the API allows it: a lower-case RFC 1123 subdomain.
fn is_node_name(name: &str) -> bool {
    is_host_name(name) && !name.bytes().any(|b| b.is_ascii_uppercase())
}

/// The key rule for node certificates: RSA from `min_rsa_bits` to 8192 bits; ECDSA and Ed25519.
pub fn check_key(key: KeyKind, rules: &NodeRules) -> Result<(), (Reason, String)> {
    match key {
        KeyKind::Rsa(bits) if bits < rules.min_rsa_bits => Err((
            Reason::KeyNotAllowed,
            format!(
                "an RSA key of {bits} bits is too small for a node certificate: at least {} (--kubelet-min-rsa-bits)",
                rules.min_rsa_bits
            ),
        )),
        KeyKind::Rsa(bits) if bits > 8192 => Err((
            Reason::KeyNotAllowed,
            format!("an RSA key of {bits} bits is larger than 8192"),
        )),
        _ => Ok(()),
    }
}

/// The kubelet signers' own tables (Kubernetes' `ValidateKubeletServingCSR` and
/// `ValidateKubeletClientCSR`), stricter where kcert's reading and Go's could differ: exactly
/// one CN, nothing in the subject but CN and O.
pub fn check_signer_table(facts: &CsrFacts) -> Result<(), (Reason, String)> {
    let serving = facts.signer_name == KUBELET_SERVING_SIGNER;
    if facts.organizations != [NODES_GROUP] {
        return Err((
            Reason::GroupNotAllowed,
            format!(
                "subject organization is not system:nodes (a node certificate's O must be exactly [system:nodes], got {})",
                escape_list(&facts.organizations)
            ),
        ));
    }
    let cn = match facts.common_names.as_slice() {
        [] => {
            return Err((
                Reason::MissingCommonName,
                "the subject has no CN; a node certificate's CN is system:node:<name>".into(),
            ));
        }
        [one] => one,
        many => {
            return Err((
                Reason::AmbiguousCommonName,
                format!(
                    "the subject has {} CNs; Kubernetes would use only the last: request one",
                    many.len()
                ),
            ));
        }
    };
    if !cn.starts_with(NODE_USER_PREFIX) {
        return Err((
            Reason::NodeMismatch,
            format!(
                "subject common name does not begin with system:node: (got {})",
                crate::escape_for_message(cn)
            ),
        ));
    }
    if !facts.uids.is_empty() || !facts.other_attributes.is_empty() {
        return Err((
            Reason::SubjectNotAllowed,
            "a node certificate's subject holds only CN and O".into(),
        ));
    }
    let sans = &facts.sans;
    if !sans.emails.is_empty() {
        return Err((
            Reason::SansNotAllowed,
            "Email subjectAltNames are not allowed".into(),
        ));
    }
    if !sans.uris.is_empty() {
        return Err((
            Reason::SansNotAllowed,
            "URI subjectAltNames are not allowed".into(),
        ));
    }
    if sans.other > 0 {
        return Err((
            Reason::SansNotAllowed,
            "subjectAltNames other than DNS and IP are not allowed".into(),
        ));
    }
    if serving {
        if sans.dns.is_empty() && sans.ips.is_empty() {
            return Err((
                Reason::SansNotAllowed,
                "DNS or IP subjectAltName is required".into(),
            ));
        }
    } else {
        if !sans.dns.is_empty() {
            return Err((
                Reason::SansNotAllowed,
                "DNS subjectAltNames are not allowed".into(),
            ));
        }
        if !sans.ips.is_empty() {
            return Err((
                Reason::SansNotAllowed,
                "IP subjectAltNames are not allowed".into(),
            ));
        }
    }
    let sets: &[&[&str]] = if serving {
        &SERVING_USAGE_SETS
    } else {
        &CLIENT_USAGE_SETS
    };
    let asked: BTreeSet<&str> = facts.usages.iter().map(String::as_str).collect();
    if !sets
        .iter()
        .any(|set| set.iter().copied().collect::<BTreeSet<_>>() == asked)
    {
        return Err((
            Reason::UsageNotAllowed,
            format!(
                "usages did not match [{}] or [{}] (got {})",
                sets[0].join(", "),
                sets[1].join(", "),
                escape_list(&facts.usages)
            ),
        ));
    }
    Ok(())
}

fn escape_list(values: &[String]) -> String {
    let items: Vec<_> = values
        .iter()
        .map(|v| crate::escape_for_message(v))
        .collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests;
