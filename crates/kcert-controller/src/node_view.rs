//! The cluster's Nodes and their addresses, for the kubelet-serving rules: one watch kept in a
//! [`NodeIndex`] (kcert-policy), updated Node by Node. Until the first list completes nothing
//! is decided (a missing index must never widen approvals). Each Node that appears or whose
//! addresses change is announced, so that serving CSRs waiting for it are decided at once.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kcert_policy::nodes::{ClusterNames, NodeAddress, NodeIndex};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

use kcert_kube::nodes::ClusterReserved;

/// The Nodes in force; shared by every reconcile.
#[derive(Clone)]
pub struct NodeView {
    current: Arc<RwLock<Option<NodeIndex>>>,
    /// The cluster's own ranges (Service CIDRs, the API server's addresses) and what it states
    /// about names (the API server's endpoints in kubeadm's ConfigMaps, the Namespaces), once
    /// read.
    reserved: Arc<RwLock<Option<(ClusterReserved, ClusterNames)>>>,
    changed: broadcast::Sender<String>,
}

impl Default for NodeView {
    fn default() -> Self {
        NodeView {
            current: Arc::default(),
            reserved: Arc::default(),
            changed: broadcast::channel(1024).0,
        }
    }
}

impl NodeView {
    /// `f` over the index, or `None` before the Nodes and the cluster's reserved ranges and
    /// names have been read.
    pub fn with<T>(&self, f: impl FnOnce(&NodeIndex) -> T) -> Option<T> {
        if !self.reserved_read() {
            return None;
        }
        self.current.read().expect("node view lock").as_ref().map(f)
    }

    /// Whether the Nodes have been listed and the cluster's reserved ranges and names read.
    pub fn is_read(&self) -> bool {
        self.reserved_read() && self.current.read().expect("node view lock").is_some()
    }

    fn reserved_read(&self) -> bool {
        self.reserved.read().expect("node view lock").is_some()
    }

    /// Set the cluster's reserved ranges, for a cluster that states no API server endpoint in
    /// kubeadm's ConfigMaps and has no Namespaces (tests; the poll sets both,
    /// [`NodeView::set_cluster_facts`]).
    pub fn set_cluster_reserved(&self, reserved: ClusterReserved) {
        self.set_cluster_facts(reserved, ClusterNames::default());
    }

    /// Set the cluster's reserved ranges and the names it states (the poll of
    /// [`keep_reserved_current`], and tests).
    pub fn set_cluster_facts(&self, reserved: ClusterReserved, names: ClusterNames) {
        // Lock order: current, then reserved (as in replace), so an index listed meanwhile
        // cannot miss the ranges.
        let mut current = self.current.write().expect("node view lock");
        if let Some(index) = current.as_mut() {
            apply_cluster_facts(index, &reserved, &names);
        }
        *self.reserved.write().expect("node view lock") = Some((reserved, names));
    }

    /// Names of Nodes that appear or change addresses from now on.
    pub fn changes(&self) -> broadcast::Receiver<String> {
        self.changed.subscribe()
    }

    /// Apply one Node (tests and the watch).
    pub fn apply(&self, node: &Node) {
        let name = node.name_any();
        let addresses = addresses_of(node);
        let control_plane = kcert_kube::nodes::is_control_plane(node);
        let mut guard = self.current.write().expect("node view lock");
        // Before the first complete list there is no index to update (a partial one must
        // never look listed).
        let Some(index) = guard.as_mut() else {
            return;
        };
        if index.addresses(&name) == Some(addresses.as_slice())
            && index.is_control_plane(&name) == control_plane
        {
            return;
        }
        index.upsert(&name, addresses);
        index.set_control_plane(&name, control_plane);
        drop(guard);
        let _ = self.changed.send(name);
    }

    fn remove(&self, node: &Node) {
        let name = node.name_any();
        if let Some(index) = self.current.write().expect("node view lock").as_mut() {
            index.remove(&name);
        }
        let _ = self.changed.send(name);
    }

    /// Forget everything: nothing is decided until the next complete list.
    fn invalidate(&self) {
        *self.current.write().expect("node view lock") = None;
    }

    /// Replace everything with a fresh list (the watch's (re)list).
    pub(crate) fn replace(&self, nodes: Vec<Node>) {
        let mut index = NodeIndex::default();
        for n in &nodes {
            index.upsert(&n.name_any(), addresses_of(n));
            index.set_control_plane(&n.name_any(), kcert_kube::nodes::is_control_plane(n));
        }
        let mut current = self.current.write().expect("node view lock");
        if let Some((r, names)) = self.reserved.read().expect("node view lock").as_ref() {
            apply_cluster_facts(&mut index, r, names);
        }
        *current = Some(index);
        drop(current);
        for n in &nodes {
            let _ = self.changed.send(n.name_any());
        }
    }
}

fn apply_cluster_facts(index: &mut NodeIndex, reserved: &ClusterReserved, names: &ClusterNames) {
    index.set_cluster_reserved(reserved.0.clone(), reserved.1.clone());
    index.set_cluster_names(names.clone());
}

fn addresses_of(node: &Node) -> Vec<NodeAddress> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|list| {
            list.iter()
                .map(|a| NodeAddress {
                    kind: a.type_.clone(),
                    address: a.address.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How often the cluster's reserved ranges are read again, by default.
pub const RESERVED_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Read the cluster's reserved ranges and the names it states now and every `every`
/// ([`RESERVED_EVERY`] by default) into `view`. Until the first read of all of them succeeds no serving CSR
/// is decided (fail closed); a later failed read keeps the last ones (they change rarely) and
/// is logged.
pub async fn keep_reserved_current(client: Client, view: NodeView, every: std::time::Duration) {
    loop {
        refresh_reserved(&client, &view).await;
        tokio::time::sleep(every).await;
    }
}

/// One read of [`keep_reserved_current`]: whether it succeeded (and `view` holds it).
async fn refresh_reserved(client: &Client, view: &NodeView) -> bool {
    let ranges = match kcert_kube::nodes::cluster_reserved(client).await {
        Ok(ranges) => ranges,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "reading the cluster's Service CIDRs and API server addresses failed (kcert needs list on servicecidrs and get on the kubernetes Service and EndpointSlice in default); serving CSRs wait until they are read"
            );
            return false;
        }
    };
    let names = match kcert_kube::nodes::cluster_names(client).await {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "reading the names the cluster states failed; serving CSRs wait until they are read"
            );
            return false;
        }
    };
    let last = view.reserved.read().expect("node view lock").clone();
    if last.as_ref().map(|(r, _)| r) != Some(&ranges) {
        tracing::info!(services = ?ranges.0.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>(), api_server = ?ranges.1.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>(), "the cluster's Service addresses (never certified for a node) and the API server's (only for a control-plane Node reporting them)");
    }
    if last.as_ref().map(|(_, n)| &n.api_server) != Some(&names.api_server) {
        tracing::info!(api_server = ?names.api_server.iter().map(|(h, what)| format!("{h}: {what}")).collect::<Vec<_>>(), "the API server's endpoints the cluster states (only for a control-plane Node reporting them)");
    }
    view.set_cluster_facts(ranges, names);
    true
}

/// How long the Node watch may fail before its last state stops deciding anything.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// Errors further apart than this are separate outages, not one: the watcher retries within
/// its backoff (at most 30 s, plus however long a failing attempt takes), and a reconnect that
/// succeeds on a quiet cluster yields no event. Generous on purpose: taking two separate errors
/// for one outage costs only a fresh list.
const SEPARATE_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// Watch Nodes and keep `view` current until dropped.
pub async fn keep_current(client: Client, view: NodeView) {
    let api: Api<Node> = Api::all(client);
    follow(&view, || {
        watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .boxed()
    })
    .await
}

/// Apply the events of the streams `watch` makes to `view`. After errors lasting
/// [`STALE_AFTER`] the view is invalidated (fail closed) and a new stream started: a watch
/// resumed from its last resourceVersion would not list again, and only a list makes the view
/// whole.
async fn follow<S>(view: &NodeView, mut watch: impl FnMut() -> S)
where
    S: futures::Stream<Item = Result<watcher::Event<Node>, watcher::Error>> + Unpin,
{
    loop {
        let mut relist: Vec<Node> = Vec::new();
        let mut failing_since: Option<tokio::time::Instant> = None;
        let mut last_error: Option<tokio::time::Instant> = None;
        let mut events = watch();
        while let Some(event) = events.next().await {
            let now = tokio::time::Instant::now();
            match &event {
                Ok(_) => failing_since = None,
                Err(_) => {
                    if failing_since.is_none()
                        || last_error.is_none_or(|t| now - t > SEPARATE_AFTER)
                    {
                        failing_since = Some(now);
                    }
                    last_error = Some(now);
                }
            }
            match event {
                Ok(watcher::Event::Init) => relist.clear(),
                Ok(watcher::Event::InitApply(n)) => relist.push(n),
                Ok(watcher::Event::InitDone) => view.replace(std::mem::take(&mut relist)),
                Ok(watcher::Event::Apply(n)) => view.apply(&n),
                Ok(watcher::Event::Delete(n)) => view.remove(&n),
                Err(e) => tracing::warn!(
                    error = %e,
                    "watching Nodes failed (kcert needs list/watch on nodes for kubelet serving certificates); serving CSRs wait"
                ),
            }
            if failing_since.is_some_and(|t| now - t > STALE_AFTER) {
                // Fail closed: Nodes that may have changed long ago no longer decide anything
                // until a new list.
                tracing::warn!(
                    "the Node watch has failed for over 2 minutes; listing Nodes again, serving CSRs wait"
                );
                view.invalidate();
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress as Address, NodeStatus};
    use kcert_policy::nodes::Cidr;
    use kcert_policy::nodes::NodeName;

    fn node(name: &str, ips: &[&str]) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.status = Some(NodeStatus {
            addresses: Some(
                ips.iter()
                    .map(|ip| Address {
                        type_: "InternalIP".into(),
                        address: ip.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        n
    }

    type Step = (u64, Result<watcher::Event<Node>, watcher::Error>);

    fn script(
        steps: Vec<Step>,
    ) -> impl futures::Stream<Item = Result<watcher::Event<Node>, watcher::Error>> + Unpin {
        futures::stream::iter(steps)
            .then(|(secs, event)| async move {
                tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
                event
            })
            .chain(futures::stream::pending())
            .boxed()
    }

    fn listed(names: &[&str]) -> Vec<Step> {
        let mut steps = vec![(0, Ok(watcher::Event::Init))];
        for n in names {
            steps.push((0, Ok(watcher::Event::InitApply(node(n, &["10.0.0.1"])))));
        }
        steps.push((0, Ok(watcher::Event::InitDone)));
        steps
    }

    fn failure() -> Result<watcher::Event<Node>, watcher::Error> {
        Err(watcher::Error::NoResourceVersion)
    }

    #[tokio::test(start_paused = true)]
    async fn separate_errors_keep_the_view_and_a_long_outage_lists_again() {
        let view = NodeView::default();
        view.set_cluster_reserved((Vec::new(), Vec::new()));
        let mut first = listed(&["a"]);
        // Two errors far apart on a quiet cluster (the reconnects in between yield nothing):
        // not one outage.
        first.push((10, failure()));
        first.push((400, failure()));
        first.push((1, Ok(watcher::Event::Apply(node("b", &["10.0.0.2"])))));
        // Then an outage: errors every 20 s for 160 s.
        for _ in 0..8 {
            first.push((20, failure()));
        }
        let mut streams = vec![script(listed(&["c"])), script(first)];
        let follower = {
            let view = view.clone();
            tokio::spawn(
                async move { follow(&view, || streams.pop().expect("a third stream")).await },
            )
        };
        tokio::time::sleep(std::time::Duration::from_secs(415)).await;
        assert_eq!(
            view.with(|i| (i.addresses("a").is_some(), i.addresses("b").is_some())),
            Some((true, true)),
            "errors 400 s apart invalidated the view"
        );
        tokio::time::sleep(std::time::Duration::from_secs(400)).await;
        assert_eq!(
            view.with(|i| (i.addresses("a").is_some(), i.addresses("c").is_some())),
            Some((false, true)),
            "after the outage the Nodes are listed again by a new watch"
        );
        follower.abort();
    }

    /// The requests of one read of the cluster's reserved facts, answered: the ranges (none),
    /// then the two kubeadm ConfigMaps (status, object) and the Namespaces.
    fn reserved_reads(
        cluster_info: (u16, serde_json::Value),
        kubeadm_config: Option<(u16, serde_json::Value)>,
        namespaces: Option<&[&str]>,
    ) -> Vec<crate::fake_api::Exchange> {
        use crate::fake_api::Exchange;
        use http::Method;
        let mut script = vec![
            Exchange::new(
                Method::GET,
                "/apis/networking.k8s.io/v1/servicecidrs",
                200,
                serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDRList", "metadata": {}, "items": []}),
            ),
            Exchange::new(
                Method::GET,
                "/api/v1/namespaces/default/services/kubernetes",
                200,
                serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes"}, "spec": {"clusterIPs": ["10.96.0.1"]}}),
            ),
            Exchange::not_found(
                "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
            ),
            Exchange::new(
                Method::GET,
                "/api/v1/namespaces/kube-public/configmaps/cluster-info",
                cluster_info.0,
                cluster_info.1,
            ),
        ];
        let Some(kubeadm_config) = kubeadm_config else {
            return script;
        };
        script.push(Exchange::new(
            Method::GET,
            "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
            kubeadm_config.0,
            kubeadm_config.1,
        ));
        if let Some(names) = namespaces {
            let items: Vec<_> = names
                .iter()
                .map(|n| serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": n}}))
                .collect();
            script.push(Exchange::new(
                Method::GET,
                "/api/v1/namespaces",
                200,
                serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items}),
            ));
        }
        script
    }

    fn config_map(ns: &str, name: &str, key: &str, value: &str) -> (u16, serde_json::Value) {
        (
            200,
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns, "name": name}, "data": {key: value}}),
        )
    }

    fn refused(code: u16) -> (u16, serde_json::Value) {
        (
            code,
            crate::fake_api::status(code, "Forbidden", "forbidden"),
        )
    }

    #[tokio::test]
    async fn the_names_the_cluster_states_are_read_with_its_ranges_and_fail_closed() {
        use crate::fake_api::FakeApi;
        let kubeconfig = "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    server: https://API.corp.example:6443\n";
        let cluster_info = config_map("kube-public", "cluster-info", "kubeconfig", kubeconfig);
        let endpoint = |e: &str| {
            config_map(
                "kube-system",
                "kubeadm-config",
                "ClusterConfiguration",
                &format!("kind: ClusterConfiguration\ncontrolPlaneEndpoint: {e}\n"),
            )
        };
        let mut script = Vec::new();
        // 1. cluster-info exists but may not be read: nothing decided.
        script.extend(reserved_reads(refused(403), None, None));
        // 2. kubeadm-config exists but is not YAML: nothing decided.
        script.extend(reserved_reads(
            cluster_info.clone(),
            Some(config_map(
                "kube-system",
                "kubeadm-config",
                "ClusterConfiguration",
                "[",
            )),
            None,
        ));
        // 3. Both read, and the Namespaces.
        script.extend(reserved_reads(
            cluster_info.clone(),
            Some(endpoint("192.0.2.100:6443")),
            Some(&["default", "team-a"]),
        ));
        // 4. A later refusal keeps what was read.
        script.extend(reserved_reads(
            cluster_info.clone(),
            Some(refused(403)),
            None,
        ));
        // 5. Not kubeadm: neither ConfigMap exists; nothing stated, nothing fails.
        script.extend(reserved_reads(
            (404, crate::fake_api::status(404, "NotFound", "not found")),
            Some((404, crate::fake_api::status(404, "NotFound", "not found"))),
            Some(&["default"]),
        ));
        let api = FakeApi::new(script);
        let client = api.client();
        let view = NodeView::default();
        view.replace(vec![node("w1.corp", &["192.0.2.100"])]);
        assert!(!refresh_reserved(&client, &view).await);
        assert!(!view.is_read(), "decided with cluster-info unreadable");
        assert!(!refresh_reserved(&client, &view).await);
        assert!(!view.is_read(), "decided with kubeadm-config unparseable");
        assert!(refresh_reserved(&client, &view).await);
        let reserved = |view: &NodeView| {
            view.with(|i| {
                (
                    i.reserved_name_by_cluster("api.corp.example", "w1.corp"),
                    i.reserved_by_cluster("192.0.2.100".parse().unwrap(), "w1.corp"),
                    i.reserved_name_by_cluster("web.team-a", "w1.corp"),
                    i.reserved_name_by_cluster("w1.corp", "w1.corp"),
                )
            })
            .expect("read")
        };
        let check = |view: &NodeView| {
            let (name, ip, short, own) = reserved(view);
            assert!(
                name.unwrap()
                    .contains("the server of the kubeconfig in ConfigMap kube-public/cluster-info")
            );
            assert!(
                ip.unwrap()
                    .contains("controlPlaneEndpoint in ConfigMap kube-system/kubeadm-config")
            );
            assert!(short.unwrap().contains("Namespace team-a exists"));
            assert_eq!(own, None, "corp is no Namespace");
        };
        check(&view);
        assert!(!refresh_reserved(&client, &view).await);
        check(&view);
        // A Node listed afresh gets them too.
        view.replace(vec![node("w1.corp", &["192.0.2.100"])]);
        check(&view);
        assert!(refresh_reserved(&client, &view).await);
        assert_eq!(reserved(&view), (None, None, None, None));
        api.assert_done();
    }

    #[test]
    fn a_node_is_announced_when_it_appears_or_its_addresses_change_not_on_heartbeats() {
        let view = NodeView::default();
        let mut changes = view.changes();
        assert!(!view.is_read(), "nothing decided before the list");
        view.replace(vec![node("a", &["10.0.0.1"])]);
        assert!(
            !view.is_read() && view.with(|_| ()).is_none(),
            "nothing decided before the cluster's reserved ranges are read"
        );
        view.set_cluster_reserved((
            vec![(
                Cidr::parse("10.96.0.1/32").unwrap(),
                "the API server's Service address".into(),
            )],
            Vec::new(),
        ));
        assert!(view.is_read());
        assert!(
            view.with(|i| i.reserved_by_cluster("::ffff:10.96.0.1".parse().unwrap(), "a"))
                .unwrap()
                .unwrap()
                .contains("the API server's Service address")
        );
        assert_eq!(changes.try_recv().unwrap(), "a");
        // A status update with the same addresses (a heartbeat): nothing to re-decide.
        view.apply(&node("a", &["10.0.0.1"]));
        assert!(changes.try_recv().is_err());
        view.apply(&node("a", &["10.0.0.2"]));
        assert_eq!(changes.try_recv().unwrap(), "a");
        view.apply(&node("b", &["10.0.0.1"]));
        assert_eq!(changes.try_recv().unwrap(), "b");
        let ip = |s: &str| NodeName::Ip(s.parse().unwrap());
        assert_eq!(
            view.with(|i| i.other_claimant(&ip("10.0.0.1"), "x").map(String::from))
                .unwrap(),
            Some("b".into())
        );
        assert_eq!(
            view.with(|i| i.other_claimant(&ip("10.0.0.1"), "b").map(String::from))
                .unwrap(),
            None
        );
        view.remove(&node("b", &[]));
        assert_eq!(
            changes.try_recv().unwrap(),
            "b",
            "a deletion is announced too"
        );
        assert!(view.with(|i| i.addresses("b").is_none()).unwrap());
        assert_eq!(
            view.with(|i| i.other_claimant(&ip("10.0.0.1"), "x").map(String::from))
                .unwrap(),
            None
        );
        assert_eq!(view.with(|i| i.len()).unwrap(), 1);
    }
}
