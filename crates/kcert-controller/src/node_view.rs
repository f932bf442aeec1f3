//! The cluster's Nodes and their addresses, for the kubelet-serving rules: one watch kept in a
//! [`NodeIndex`] (kcert-policy), updated Node by Node. Until the first list completes nothing
//! is decided (a missing index must never widen approvals). Each Node that appears or whose
//! addresses change is announced, so that serving CSRs waiting for it are decided at once.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kcert_policy::nodes::{NodeAddress, NodeIndex};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// The Nodes in force; shared by every reconcile.
#[derive(Clone)]
pub struct NodeView {
    current: Arc<RwLock<Option<NodeIndex>>>,
    changed: broadcast::Sender<String>,
}

impl Default for NodeView {
    fn default() -> Self {
        NodeView {
            current: Arc::default(),
            changed: broadcast::channel(1024).0,
        }
    }
}

impl NodeView {
    /// `f` over the index, or `None` before the Nodes have been listed.
    pub fn with<T>(&self, f: impl FnOnce(&NodeIndex) -> T) -> Option<T> {
        self.current.read().expect("node view lock").as_ref().map(f)
    }

    /// Whether the Nodes have been listed.
    pub fn is_read(&self) -> bool {
        self.current.read().expect("node view lock").is_some()
    }

    /// Names of Nodes that appear or change addresses from now on.
    pub fn changes(&self) -> broadcast::Receiver<String> {
        self.changed.subscribe()
    }

    /// Apply one Node (tests and the watch).
    pub fn apply(&self, node: &Node) {
        let name = node.name_any();
        let addresses = addresses_of(node);
        let mut guard = self.current.write().expect("node view lock");
        // Before the first complete list there is no index to update (a partial one must
        // never look listed).
        let Some(index) = guard.as_mut() else {
            return;
        };
        if index.addresses(&name) == Some(addresses.as_slice()) {
            return;
        }
        index.upsert(&name, addresses);
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
    fn replace(&self, nodes: Vec<Node>) {
        let mut index = NodeIndex::default();
        for n in &nodes {
            index.upsert(&n.name_any(), addresses_of(n));
        }
        *self.current.write().expect("node view lock") = Some(index);
        for n in &nodes {
            let _ = self.changed.send(n.name_any());
        }
    }
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

/// How long the Node watch may fail before its last state stops deciding anything.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// Watch Nodes and keep `view` current until dropped.
pub async fn keep_current(client: Client, view: NodeView) {
    let api: Api<Node> = Api::all(client);
    let mut relist: Vec<Node> = Vec::new();
    let mut failing_since: Option<std::time::Instant> = None;
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        if event.is_ok() {
            failing_since = None;
        } else if failing_since
            .get_or_insert_with(std::time::Instant::now)
            .elapsed()
            > STALE_AFTER
        {
            // Fail closed: Nodes that may have changed long ago no longer decide anything.
            view.invalidate();
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress as Address, NodeStatus};
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

    #[test]
    fn a_node_is_announced_when_it_appears_or_its_addresses_change_not_on_heartbeats() {
        let view = NodeView::default();
        let mut changes = view.changes();
        assert!(!view.is_read(), "nothing decided before the list");
        view.replace(vec![node("a", &["10.0.0.1"])]);
        assert!(view.is_read());
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
