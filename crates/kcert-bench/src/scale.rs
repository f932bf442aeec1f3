//! A test bed that looks like a large cluster to kcert-controller's watches: Node objects with a
//! kubelet's status (addresses, conditions, images: about 5 KB each) and RBAC bindings, with
//! the churn such a cluster has (Node status heartbeats, a binding changed now and then)
//! running while a latency run measures. kcert watches Nodes (kubelet serving rules) and every
//! Role, ClusterRole and binding (the privilege index), so this is where their cost shows.

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::time::Duration;

/// What is in the cluster, and how fast it changes.
#[derive(Clone, Copy, Debug)]
pub struct Population {
    pub nodes: usize,
    pub bindings: usize,
    /// Node status updates per second, spread over the Nodes in turn.
    pub node_updates_per_s: u32,
    /// Binding changes per second (a label on one binding).
    pub binding_updates_per_s: u32,
}

impl Population {
    pub fn describe(&self) -> String {
        format!(
            "{} Nodes and {} RBAC bindings ({} Node status updates/s, {} binding change/s)",
            self.nodes, self.bindings, self.node_updates_per_s, self.binding_updates_per_s
        )
    }
}

const NAMESPACES: usize = 50;

fn node_name(i: usize) -> String {
    format!("scale-node-{i:05}")
}

fn address(i: usize) -> String {
    format!("10.{}.{}.{}", 64 + i / 65_536, (i / 256) % 256, i % 256)
}

fn heartbeat(now: &str) -> serde_json::Value {
    json!([
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now, "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure", "lastHeartbeatTime": now, "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available", "lastHeartbeatTime": now, "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": "2026-01-01T00:00:00Z"}
    ])
}

/// A kubelet's status for Node `i`: what makes a Node object the size it is in a real cluster.
fn node_status(i: usize, now: &str) -> serde_json::Value {
    let images: Vec<_> = (0..25)
        .map(|k| {
            json!({
                "names": [
                    format!("registry.example.com/team-{}/service-{k}@sha256:{:064x}", k % 7, (i * 31 + k) as u128 * 0x9e37_79b9_7f4a_7c15),
                    format!("registry.example.com/team-{}/service-{k}:v1.{k}.0", k % 7)
                ],
                "sizeBytes": 10_000_000 + k * 1_234_567
            })
        })
        .collect();
    json!({
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": address(i)},
                {"type": "Hostname", "address": node_name(i)}
            ],
            "capacity": {"cpu": "8", "memory": "32827396Ki", "pods": "110", "ephemeral-storage": "102350Mi"},
            "allocatable": {"cpu": "7910m", "memory": "31676420Ki", "pods": "110", "ephemeral-storage": "94327Mi"},
            "conditions": heartbeat(now),
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("{:032x}", i), "systemUUID": format!("{:032x}", i * 7 + 1), "bootID": format!("{:032x}", i * 13 + 2),
                "kernelVersion": "6.1.0-28-cloud-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.24", "kubeletVersion": "v1.36.3", "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64"
            },
            "images": images
        }
    })
}

/// Create the Nodes (then their status, as a kubelet does) and the bindings, 32 requests in
/// flight.
pub async fn populate(client: &Client, p: Population) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let results: Vec<Result<()>> = futures::stream::iter(0..p.nodes)
        .map(|i| {
            let (nodes, now) = (nodes.clone(), now.clone());
            async move {
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": node_name(i), "labels": {
                        "kubernetes.io/hostname": node_name(i), "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
                        "node.kubernetes.io/instance-type": "m5.2xlarge", "kcert-bench/scale": "true"
                    }},
                    "spec": {"podCIDR": format!("10.{}.{}.0/24", 128 + i / 256, i % 256)}
                }))?;
                nodes.create(&PostParams::default(), &node).await?;
                nodes
                    .patch_status(
                        &node_name(i),
                        &PatchParams::default(),
                        &Patch::Merge(node_status(i, &now)),
                    )
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    first_error(results)?;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    for n in 0..NAMESPACES.min(p.bindings.max(1)) {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": format!("scale-ns-{n:02}")}}))?;
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Nine in ten bindings are RoleBindings in the namespaces, one in ten cluster-wide; users
    // and groups of teams, to the aggregated roles a cluster has.
    let results: Vec<Result<()>> = futures::stream::iter(0..p.bindings)
        .map(|i| {
            let client = client.clone();
            async move {
                let subjects = Some(vec![
                    Subject {
                        kind: "User".into(),
                        name: format!("user-{i}@example.com"),
                        api_group: Some("rbac.authorization.k8s.io".into()),
                        ..Default::default()
                    },
                    Subject {
                        kind: "Group".into(),
                        name: format!("team-{}", i % 100),
                        api_group: Some("rbac.authorization.k8s.io".into()),
                        ..Default::default()
                    },
                ]);
                let role_ref = RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: ["view", "edit", "admin"][i % 3].into(),
                };
                let mut meta = kube::api::ObjectMeta {
                    name: Some(format!("scale-binding-{i:05}")),
                    labels: Some([("kcert-bench/scale".to_string(), "true".to_string())].into()),
                    ..Default::default()
                };
                if i % 10 == 9 {
                    let crb = ClusterRoleBinding {
                        metadata: meta,
                        role_ref: RoleRef {
                            name: "view".into(),
                            ..role_ref
                        },
                        subjects,
                    };
                    Api::<ClusterRoleBinding>::all(client)
                        .create(&PostParams::default(), &crb)
                        .await?;
                } else {
                    let ns = format!("scale-ns-{:02}", i % NAMESPACES);
                    meta.namespace = Some(ns.clone());
                    let rb = RoleBinding {
                        metadata: meta,
                        role_ref,
                        subjects,
                    };
                    Api::<RoleBinding>::namespaced(client, &ns)
                        .create(&PostParams::default(), &rb)
                        .await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    first_error(results)?;
    Ok(())
}

/// Every result, or the first error among them.
fn first_error(results: Vec<Result<()>>) -> Result<()> {
    results.into_iter().collect()
}

/// The cluster's churn until dropped: Node heartbeats (a kubelet's strategic-merge patch of its
/// conditions) in turn, and a label changed on one RoleBinding at a time.
pub struct Churn {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Churn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Every `1/per_s` s, `f(i)` for i = 0, 1, 2, … spawned (on schedule, whatever the responses do).
fn every<F, Fut>(per_s: u32, f: F) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn(usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    (per_s > 0).then(|| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_s)));
            for i in 0.. {
                tick.tick().await;
                tokio::spawn(f(i));
            }
        })
    })
}

pub fn churn(client: Client, p: Population) -> Churn {
    let nodes: Api<Node> = Api::all(client.clone());
    let node_updates = every(p.node_updates_per_s * u32::from(p.nodes > 0), move |i| {
        let nodes = nodes.clone();
        async move {
            let now = k8s_openapi::jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let name = node_name(i % p.nodes);
            let patch = json!({"status": {"conditions": heartbeat(&now)}});
            if let Err(e) = nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                eprintln!("scale churn: Node {name}: {e}");
            }
        }
    });
    let binding_updates = every(
        p.binding_updates_per_s * u32::from(p.bindings > 9),
        move |k| {
            let client = client.clone();
            async move {
                // RoleBindings only: those with i % 10 != 9.
                let mut i = k % p.bindings;
                if i % 10 == 9 {
                    i -= 1;
                }
                let ns = format!("scale-ns-{:02}", i % NAMESPACES);
                let api: Api<RoleBinding> = Api::namespaced(client, &ns);
                let name = format!("scale-binding-{i:05}");
                let patch = json!({"metadata": {"labels": {"kcert-bench/touched": k.to_string()}}});
                if let Err(e) = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    eprintln!("scale churn: RoleBinding {ns}/{name}: {e}");
                }
            }
        },
    );
    Churn {
        tasks: node_updates.into_iter().chain(binding_updates).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_status_is_the_size_of_a_real_one_and_addresses_stay_distinct() {
        let size = serde_json::to_vec(&node_status(999, "2026-01-01T00:00:00Z"))
            .unwrap()
            .len();
        assert!((4_000..12_000).contains(&size), "{size} bytes");
        let a: std::collections::HashSet<_> = (0..5000).map(address).collect();
        assert_eq!(a.len(), 5000);
    }
}
