//! Which groups and users RBAC makes privileged, kept current from watches of Roles,
//! ClusterRoles and their bindings. Until all four are listed the index is not ready, and
//! neither the approver nor the signer acts (a missing index must never widen approvals).

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kcert_policy::PrivilegedSubjects;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
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
        let (crs, rs, crbs, rbs) = (cr.state(), r.state(), crb.state(), rb.state());
        let p = kcert_kube::rbac::privileged_subjects(
            crs.iter().map(|o| o.as_ref()),
            rs.iter().map(|o| o.as_ref()),
            crbs.iter().map(|o| o.as_ref()),
            rbs.iter().map(|o| o.as_ref()),
        );
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
