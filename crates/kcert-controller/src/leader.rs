//! Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does:
//! the holder renews `renewTime`; anyone may take the lease once `renewTime + leaseDuration`
//! has passed. Writes carry the resourceVersion read, so two candidates never both win.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::time::Duration;

/// Where and how to elect.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease lasts without renewal (client-go default 15 s).
    pub lease_duration: Duration,
    /// How often the holder renews, and candidates retry (client-go's retry period, 2 s).
    pub retry_period: Duration,
}

impl LeaderElection {
    /// The defaults client-go uses, for `lease_name` in `namespace`.
    pub fn new(namespace: &str, lease_name: &str, identity: &str) -> Self {
        LeaderElection {
            namespace: namespace.into(),
            lease_name: lease_name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Try once to take or renew the lease. `Ok(true)`: we hold it now.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    le: &LeaderElection,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let secs = i32::try_from(le.lease_duration.as_secs()).unwrap_or(i32::MAX);
    match api.get_opt(&le.lease_name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(le.lease_name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(le.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(secs)));
            let expired = spec
                .renew_time
                .as_ref()
                .map(|t| {
                    t.0.checked_add(duration)
                        .map(|end| end < now)
                        .unwrap_or(true)
                })
                .unwrap_or(true);
            if holder != le.identity && !holder.is_empty() && !expired {
                return Ok(false);
            }
            if holder != le.identity {
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.holder_identity = Some(le.identity.clone());
            }
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(secs);
            match api
                .replace(&le.lease_name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Wait until this replica holds the lease.
pub async fn acquire(client: &Client, le: &LeaderElection) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &le.namespace);
    let mut said = false;
    loop {
        match try_acquire_or_renew(&api, le).await {
            Ok(true) => {
                tracing::info!(lease = %le.lease_name, identity = %le.identity, "became the leader");
                return;
            }
            Ok(false) if !said => {
                tracing::info!(lease = %le.lease_name, "another replica leads; standing by");
                said = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election failed; retrying"),
        }
        tokio::time::sleep(le.retry_period).await;
    }
}

/// Renew until the lease is lost (not renewed for a whole lease duration); then return.
pub async fn hold(client: &Client, le: &LeaderElection) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &le.namespace);
    let mut last_renewed = std::time::Instant::now();
    loop {
        tokio::time::sleep(le.retry_period).await;
        match try_acquire_or_renew(&api, le).await {
            Ok(true) => last_renewed = std::time::Instant::now(),
            Ok(false) => {
                tracing::error!(lease = %le.lease_name, "another replica took the lease");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the lease");
                // Stop before the lease can expire, so two leaders never overlap.
                if last_renewed.elapsed() + le.retry_period >= le.lease_duration {
                    tracing::error!(lease = %le.lease_name, "lease not renewed in time; giving up leadership");
                    return;
                }
            }
        }
    }
}

/// A lease held by this replica, renewed in the background until dropped. [`Leadership::lost`]
/// resolves when another replica takes it or it cannot be renewed in time; then the
/// controllers must stop (two leaders never overlap).
pub struct Leadership {
    renewer: tokio::task::JoinHandle<()>,
    lost: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
    lease: String,
}

impl Leadership {
    /// Wait until this replica holds the lease, then keep renewing it.
    pub async fn acquire(client: Client, le: LeaderElection) -> Leadership {
        use futures::FutureExt;
        acquire(&client, &le).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let lease = le.lease_name.clone();
        let renewer = tokio::spawn(async move {
            hold(&client, &le).await;
            let _ = tx.send(());
        });
        // A dropped sender (the renewer aborted) is not a loss: that is our own shutdown.
        let lost = async move {
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        .boxed()
        .shared();
        Leadership {
            renewer,
            lost,
            lease,
        }
    }

    /// Resolves once leadership is lost (clone it freely).
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static {
        self.lost.clone()
    }

    /// Whether leadership was lost.
    pub fn is_lost(&self) -> bool {
        self.lost.peek().is_some()
    }

    /// The lease's name.
    pub fn lease(&self) -> &str {
        &self.lease
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}
