//! Which groups and users RBAC makes privileged, kept current from watches of Roles,
//! ClusterRoles and their bindings. Until all four are listed the index is not ready, and
//! neither the approver nor the signer acts (a missing index must never widen approvals).

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kcert_policy::{BindingFacts, PrivilegedSubjects, RbacRule, RoleFacts};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The privileged subjects in force; `None` until the first complete read.
#[derive(Clone, Default)]
pub struct RbacIndex {
    current: Arc<RwLock<Option<Arc<PrivilegedSubjects>>>>,
}

impl RbacIndex {
    /// An index that treats no subject as privileged and is ready at once (`--rbac-protection=false`).
    pub fn disabled() -> Self {
        let index = RbacIndex::default();
        index.set(PrivilegedSubjects::none());
        index
    }

    /// The subjects in force, if the bindings have been read.
    pub fn get(&self) -> Option<Arc<PrivilegedSubjects>> {
        self.current.read().expect("rbac lock").clone()
    }

    fn set(&self, p: PrivilegedSubjects) {
        *self.current.write().expect("rbac lock") = Some(Arc::new(p));
    }
}

fn rules(rules: &Option<Vec<PolicyRule>>) -> Vec<RbacRule> {
    rules
        .iter()
        .flatten()
        .map(|r| RbacRule {
            verbs: r.verbs.clone(),
            api_groups: r.api_groups.clone().unwrap_or_default(),
            resources: r.resources.clone().unwrap_or_default(),
            non_resource_urls: r.non_resource_urls.clone().unwrap_or_default(),
        })
        .collect()
}

fn subjects(list: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>, kind: &str) -> Vec<String> {
    list.iter()
        .flatten()
        .filter(|s| s.kind == kind)
        .map(|s| s.name.clone())
        .collect()
}

/// The index from the four caches (pure given their contents).
pub fn compute(
    cluster_roles: &Store<ClusterRole>,
    roles: &Store<Role>,
    cluster_bindings: &Store<ClusterRoleBinding>,
    bindings: &Store<RoleBinding>,
) -> PrivilegedSubjects {
    let mut role_facts: Vec<RoleFacts> = cluster_roles
        .state()
        .iter()
        .map(|r| RoleFacts {
            namespace: None,
            name: r.name_any(),
            rules: rules(&r.rules),
        })
        .collect();
    role_facts.extend(roles.state().iter().map(|r| RoleFacts {
        namespace: r.namespace(),
        name: r.name_any(),
        rules: rules(&r.rules),
    }));
    let mut binding_facts: Vec<BindingFacts> = cluster_bindings
        .state()
        .iter()
        .map(|b| BindingFacts {
            namespace: None,
            name: b.name_any(),
            role_kind: b.role_ref.kind.clone(),
            role_name: b.role_ref.name.clone(),
            groups: subjects(&b.subjects, "Group"),
            users: subjects(&b.subjects, "User"),
        })
        .collect();
    binding_facts.extend(bindings.state().iter().map(|b| BindingFacts {
        namespace: b.namespace(),
        name: b.name_any(),
        role_kind: b.role_ref.kind.clone(),
        role_name: b.role_ref.name.clone(),
        groups: subjects(&b.subjects, "Group"),
        users: subjects(&b.subjects, "User"),
    }));
    PrivilegedSubjects::from_rbac(&role_facts, &binding_facts)
}

/// Watch the four kinds and keep `index` current until dropped.
pub async fn keep_current(client: Client, index: RbacIndex) {
    let (cr, cr_w) = reflector::store::<ClusterRole>();
    let (r, r_w) = reflector::store::<Role>();
    let (crb, crb_w) = reflector::store::<ClusterRoleBinding>();
    let (rb, rb_w) = reflector::store::<RoleBinding>();
    let cfg = watcher::Config::default;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    macro_rules! watch {
        ($kind:ty, $writer:expr) => {{
            let tx = tx.clone();
            let api: Api<$kind> = Api::all(client.clone());
            let stream = reflector::reflector($writer, watcher(api, cfg()))
                .default_backoff()
                .for_each(move |event| {
                    match event {
                        Ok(_) => {
                            let _ = tx.try_send(());
                        }
                        Err(e) => tracing::warn!(error = %e, kind = stringify!($kind), "watching RBAC objects failed (kcert needs list/watch on roles and bindings); approvals wait"),
                    }
                    futures::future::ready(())
                });
            tokio::spawn(stream)
        }};
    }
    let tasks = [
        watch!(ClusterRole, cr_w),
        watch!(Role, r_w),
        watch!(ClusterRoleBinding, crb_w),
        watch!(RoleBinding, rb_w),
    ];
    struct AbortOnDrop<const N: usize>([tokio::task::JoinHandle<()>; N]);
    impl<const N: usize> Drop for AbortOnDrop<N> {
        fn drop(&mut self) {
            for t in &self.0 {
                t.abort();
            }
        }
    }
    let _tasks = AbortOnDrop(tasks);
    let _ = futures::join!(
        cr.wait_until_ready(),
        r.wait_until_ready(),
        crb.wait_until_ready(),
        rb.wait_until_ready()
    );
    loop {
        let p = compute(&cr, &r, &crb, &rb);
        let (groups, users) = p.len();
        tracing::debug!(groups, users, "privileged RBAC subjects");
        index.set(p);
        if rx.recv().await.is_none() {
            return;
        }
        // Coalesce bursts (a kubectl apply of many bindings).
        tokio::time::sleep(Duration::from_millis(100)).await;
        while rx.try_recv().is_ok() {}
    }
}

/// The index from one list of each kind (for the CLI's dry runs: the same evaluation as the
/// controller's, with the same bindings).
pub async fn list_privileged(client: &Client) -> Result<PrivilegedSubjects, kube::Error> {
    let lp = kube::api::ListParams::default();
    let (cr, cr_w) = reflector::store::<ClusterRole>();
    let (r, r_w) = reflector::store::<Role>();
    let (crb, crb_w) = reflector::store::<ClusterRoleBinding>();
    let (rb, rb_w) = reflector::store::<RoleBinding>();
    async fn fill<K>(
        client: &Client,
        lp: &kube::api::ListParams,
        mut writer: reflector::store::Writer<K>,
    ) -> Result<(), kube::Error>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let api: Api<K> = Api::all(client.clone());
        writer.apply_watcher_event(&watcher::Event::Init);
        for o in api.list(lp).await?.items {
            writer.apply_watcher_event(&watcher::Event::InitApply(o));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        Ok(())
    }
    fill(client, &lp, cr_w).await?;
    fill(client, &lp, r_w).await?;
    fill(client, &lp, crb_w).await?;
    fill(client, &lp, rb_w).await?;
    Ok(compute(&cr, &r, &crb, &rb))
}
