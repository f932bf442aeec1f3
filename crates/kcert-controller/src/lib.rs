//! kcert-controller: an approver and a signer for CertificateSigningRequests.
//!
//! ```text
//!              watch CSRs (spec.signerName ∈ --signer-name)
//!                      │                              │
//!   approver::reconcile│                              │signer::reconcile
//!   pending? parse + verify request                   │Approved, not Failed, no certificate?
//!   evaluate(CsrFacts, Policy, PrivilegedSubjects)    │check_request again (whoever approved),
//!     ── kcert-policy                                 │build the subject from checked values,
//!   Approve/Deny → PUT /approval (+ provenance,       │sign with the CA ── kcert-pki
//!                  Event); Ignore → Event only        │PUT /status: certificate, or Failed
//!     (every write: replace_with_retry, same uid)     │
//!                      ▲                              ▲
//!   PolicyStore (static | file | CRD, fail closed)    CaStore (files | Secret), reloaded
//!   RbacIndex (roles + bindings → privileged groups/users; nothing decided until read)
//! ```
//!
//! The approver and the signer are separate kube-runtime controllers that share small helpers
//! ([`conditions`], [`facts`]); either can run alone.

pub mod admission;
pub mod approver;
pub mod ca_source;
pub mod cleaner;
pub mod events;
pub mod http;
pub mod leader;
pub mod ledger;
pub mod metrics;
pub mod policy_source;
pub mod rbac;
pub mod signer;

// The shared Kubernetes vocabulary, under the names the controller has always used.
pub use kcert_kube::{
    DECISION_ANNOTATION, DEFAULT_SIGNER_NAME, conditions, crd, facts, provenance, replace,
};

#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod reconcile_tests;

pub use ca_source::{CaSource, CaStore};
pub use policy_source::{PolicySource, PolicyStore};

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl From<kcert_kube::WriteError> for Error {
    fn from(e: kcert_kube::WriteError) -> Self {
        match e {
            kcert_kube::WriteError::Kube(e) => Error::Kube(e),
            kcert_kube::WriteError::Conflict(n) => Error::Conflict(n),
            kcert_kube::WriteError::Permanent(n, m) => Error::Permanent(n, m),
        }
    }
}

/// Errors that requeue a CSR (transient); permanent problems become Denied or Failed instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// Gave up after repeated write conflicts.
    #[error("CSR {0}: kept conflicting with other writers; will retry")]
    Conflict(String),
    /// The API server refuses the write for good (invalid, too large): retrying cannot help.
    #[error("CSR {0}: the API server refused the write: {1}")]
    Permanent(String, String),
    /// Another replica took the lease, or it could not be renewed.
    #[error("lost leadership of lease {0}")]
    LostLeadership(String),
    /// The metrics address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
}

/// What the controller does and with what.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Signer names served; CSRs of any other signer are never touched.
    pub signer_names: Vec<String>,
    /// Run the approver.
    pub approver: bool,
    /// Run the signer.
    pub signer: bool,
    /// Where the policy comes from (approver).
    pub policy: PolicySource,
    /// Where the CA comes from (signer).
    pub ca: Option<CaSource>,
    /// The longest lifetime the signer grants (requests and rules can only shorten it).
    pub max_duration: Duration,
    /// Parallel reconciles per controller (0 = unbounded).
    pub concurrency: u16,
    /// Name in Events and provenance.
    pub controller_name: String,
    /// This replica's name (pod name), for Events and provenance.
    pub instance: Option<String>,
    /// Serve /metrics, /healthz and /readyz here.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Run controllers only while holding this lease.
    pub leader_election: Option<leader::LeaderElection>,
    /// Record issued certificates as `IssuedCertificate` objects (needs the CRD).
    pub ledger: bool,
    /// Delete finished CSRs (only after their certificate is in the ledger).
    pub cleaner: Option<cleaner::CleanerSettings>,
    /// Which Events to publish.
    pub events: events::EventLevel,
    /// Treat groups and users that RBAC binds to privileged roles as protected (needs list and
    /// watch on roles and bindings; nothing is approved or signed until they are read).
    pub rbac_protection: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            signer_names: vec![DEFAULT_SIGNER_NAME.to_string()],
            approver: true,
            signer: true,
            policy: PolicySource::Crd,
            ca: None,
            max_duration: Duration::from_secs(30 * 86_400),
            concurrency: 8,
            controller_name: "kcert-controller".into(),
            instance: None,
            metrics_addr: None,
            leader_election: None,
            ledger: false,
            cleaner: None,
            events: events::EventLevel::default(),
            rbac_protection: true,
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Settings.
    pub settings: Settings,
    /// The policy in force.
    pub policy: PolicyStore,
    /// The CA in force.
    pub ca: CaStore,
    /// Where reconciles queue their Events.
    pub events: events::EventSink,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The issuance ledger, when enabled.
    pub ledger: Option<ledger::Ledger>,
    /// Groups and users RBAC makes privileged.
    pub rbac: rbac::RbacIndex,
    /// CSRs being signed in this process right now (by uid).
    signing: Mutex<HashSet<String>>,
}

impl Context {
    /// Whether `signer_name` is one of ours.
    pub fn serves(&self, signer_name: &str) -> bool {
        self.settings.signer_names.iter().any(|s| s == signer_name)
    }

    /// Claim the CSR for signing; None if another reconcile in this process holds it.
    fn claim(&self, csr: &CertificateSigningRequest) -> Option<SigningClaim<'_>> {
        let uid = csr.uid().unwrap_or_else(|| csr.name_any());
        let fresh = self
            .signing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.clone());
        fresh.then_some(SigningClaim { ctx: self, uid })
    }
}

/// Released when the signing attempt ends, however it ends.
struct SigningClaim<'a> {
    ctx: &'a Context,
    uid: String,
}

impl Drop for SigningClaim<'_> {
    fn drop(&mut self) {
        self.ctx
            .signing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.uid);
    }
}

/// What the cache keeps of a CSR: managed fields and kubectl's copy of the whole object (the
/// `last-applied-configuration` annotation repeats the request) are never read, and are most of
/// an object's size.
fn slim(mut csr: CertificateSigningRequest) -> CertificateSigningRequest {
    csr.managed_fields_mut().clear();
    csr.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
    csr
}

fn approver_error(
    _csr: Arc<CertificateSigningRequest>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    tracing::warn!(%error, "approval failed; retrying in 5s");
    ctx.metrics.reconcile_error("approver");
    Action::requeue(Duration::from_secs(5))
}

fn signer_error(_csr: Arc<CertificateSigningRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "signing failed; retrying in 5s");
    ctx.metrics.reconcile_error("signer");
    Action::requeue(Duration::from_secs(5))
}

/// Spawned tasks that die with their owner: dropping `run`'s future (a crash in tests, an
/// aborted task) must stop the controllers and the lease renewals too.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    fn push(&mut self, t: tokio::task::JoinHandle<()>) {
        self.0.push(t);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Run until `shutdown` completes. Loads the policy and CA in the background and keeps them
/// current.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    if settings.signer_names.is_empty() {
        tracing::error!("no signer names configured; nothing to do");
    }
    let policy = PolicyStore::default();
    let ca = CaStore::default();
    let mut background = Tasks(Vec::new());
    let rbac_index = if settings.rbac_protection {
        let index = rbac::RbacIndex::default();
        background.push(tokio::spawn(rbac::keep_current(
            client.clone(),
            index.clone(),
        )));
        index
    } else {
        rbac::RbacIndex::disabled()
    };
    if settings.approver {
        background.push(tokio::spawn(policy_source::keep_current(
            settings.policy.clone(),
            policy.clone(),
            client.clone(),
        )));
    }
    if settings.signer {
        match settings.ca.clone() {
            Some(source) => background.push(tokio::spawn(ca_source::keep_current(
                source,
                ca.clone(),
                client.clone(),
            ))),
            None => tracing::error!(
                "the signer runs without a CA (--ca-cert/--ca-key or --ca-secret); approved CSRs will wait"
            ),
        }
    }
    let metrics = Arc::new(metrics::Metrics::default());
    if let Some(addr) = settings.metrics_addr {
        let listener = http::bind(addr).await.map_err(|e| Error::Listen(addr, e))?;
        let (policy, ca, s, index) = (
            policy.clone(),
            ca.clone(),
            settings.clone(),
            rbac_index.clone(),
        );
        let ready: http::Readiness = Arc::new(move || {
            (!s.approver || policy.get().is_some())
                && (!s.signer || ca.get().is_some())
                && index.get().is_some()
        });
        background.push(tokio::spawn(http::serve(listener, metrics.clone(), ready)));
    }
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(le) = settings.leader_election.clone() {
        tokio::select! {
            _ = leader::acquire(&client, &le) => {}
            _ = shutdown.clone() => return Ok(()),
        }
        let holder_client = client.clone();
        background.push(tokio::spawn(async move {
            leader::hold(&holder_client, &le).await;
            let _ = lost_tx.send(());
        }));
    } else {
        drop(lost_tx);
    }
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lost_flag = lost.clone();
    let user_shutdown = shutdown.clone();
    let stop = async move {
        let lost_signal = Box::pin(async move {
            if lost_rx.await.is_ok() {
                lost_flag.store(true, std::sync::atomic::Ordering::SeqCst);
            } else {
                std::future::pending::<()>().await;
            }
        });
        futures::future::select(user_shutdown, lost_signal).await;
    };
    let stop = futures::future::FutureExt::shared(Box::pin(stop));
    let reporter = Reporter {
        controller: settings.controller_name.clone(),
        instance: settings.instance.clone(),
    };
    let (event_sink, publisher) = events::EventSink::new(
        Recorder::new(client.clone(), reporter),
        settings.events,
        metrics.clone(),
    );
    background.push(tokio::spawn(publisher));
    let ctx = Arc::new(Context {
        events: event_sink,
        client: client.clone(),
        settings: settings.clone(),
        policy: policy.clone(),
        ca,
        metrics: metrics.clone(),
        ledger: (settings.signer && settings.ledger).then(|| ledger::Ledger::new(client.clone())),
        rbac: rbac_index,
        signing: Mutex::new(HashSet::new()),
    });
    // One signer name: let the API server filter. Several: filter here (fields can't OR).
    let watch_config = match settings.signer_names.as_slice() {
        [one] => watcher::Config::default().fields(&format!("spec.signerName={one}")),
        _ => watcher::Config::default(),
    };
    let config = ControllerConfig::default().concurrency(settings.concurrency);
    // One watch and one cache of CSRs, shared by the approver and the signer.
    let (store, writer) = reflector::store_shared(1024);
    let approver_events = settings.approver.then(|| writer.subscribe()).flatten();
    let signer_events = settings.signer.then(|| writer.subscribe()).flatten();
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let watch = watcher(api, watch_config)
        .default_backoff()
        .modify(|csr| *csr = slim(std::mem::take(csr)))
        .reflect_shared(writer)
        .for_each(|event| {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watching CSRs failed; retrying");
            }
            futures::future::ready(())
        });
    background.push(tokio::spawn(watch));
    {
        let (ctx, store, signers) = (ctx.clone(), store.clone(), settings.signer_names.clone());
        background.push(tokio::spawn(async move {
            loop {
                ctx.metrics.observe_store(&store, &signers);
                if let Some(ledger) = &ctx.ledger {
                    let present = store.state().iter().filter_map(|c| c.uid()).collect();
                    ledger.retain(&present);
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }));
    }
    let mut loops = Tasks(Vec::new());
    if let Some(events) = approver_events {
        let policy_changed = futures::stream::unfold(policy.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        });
        let approver = Controller::for_shared_stream(events, store.clone())
            .with_config(config.clone())
            .reconcile_all_on(policy_changed)
            .graceful_shutdown_on(stop.clone())
            .run(approver::reconcile, approver_error, ctx.clone())
            .for_each(|_| futures::future::ready(()));
        loops.push(tokio::spawn(approver));
    }
    if let Some(c) = settings.cleaner.clone() {
        background.push(tokio::spawn(cleaner::run(
            client.clone(),
            settings.signer_names.clone(),
            c,
        )));
    }
    if let Some(events) = signer_events {
        let signer = Controller::for_shared_stream(events, store)
            .with_config(config)
            .graceful_shutdown_on(stop.clone())
            .run(signer::reconcile, signer_error, ctx.clone())
            .for_each(|_| futures::future::ready(()));
        loops.push(tokio::spawn(signer));
    }
    for l in loops.0.iter_mut() {
        let _ = l.await;
    }
    drop(background);
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        let name = settings
            .leader_election
            .map(|l| l.lease_name)
            .unwrap_or_default();
        return Err(Error::LostLeadership(name));
    }
    Ok(())
}
