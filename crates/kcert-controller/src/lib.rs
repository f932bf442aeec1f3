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
pub mod authz_webhook;
pub mod ca_expiry;
pub mod ca_source;
pub mod cleaner;
pub mod events;
pub mod file_watch;
pub mod http;
pub mod leader;
pub mod ledger;
pub mod metrics;
pub mod node_approver;
pub mod node_view;
pub mod policy_source;
pub mod rbac;
pub mod rotation;
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

/// Errors that requeue a CSR (transient); permanent problems become Denied or Failed instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// An approval or status write did not happen (conflicts, or refused for good).
    #[error(transparent)]
    Write(#[from] kcert_kube::WriteError),
    /// Another replica took the lease, or it could not be renewed.
    #[error("lost leadership of lease {0}")]
    LostLeadership(String),
    /// The authorization webhook could not start (bind, serving certificate).
    #[error("authorization webhook: {0}")]
    Webhook(String),
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
    /// Record issued certificates on `LedgerPage` objects (needs the CRD).
    pub ledger: bool,
    /// How the ledger writer batches records.
    pub ledger_writer: ledger::WriterSettings,
    /// Delete finished CSRs (only after their certificate is in the ledger).
    pub cleaner: Option<cleaner::CleanerSettings>,
    /// Which Events to publish.
    pub events: events::EventLevel,
    /// Treat groups and users that RBAC binds to privileged roles as protected (needs list and
    /// watch on roles and bindings; nothing is approved or signed until they are read).
    pub rbac_protection: bool,
    /// Serve the authorization webhook that denies revoked certificates (every replica).
    pub webhook: Option<authz_webhook::WebhookSettings>,
    /// The kubelet signers' fixed rules (which are decided, approve-only, extra names).
    pub nodes: kcert_policy::nodes::NodeRules,
    /// How often the cluster's reserved ranges and stated names are read again (kubelet
    /// serving).
    pub reserved_refresh: Duration,
    /// Follow a CA rotation (`CaRotation`): sign with the CA its phase puts in force and
    /// publish the trust bundle. With it, nothing is signed until the rotation has been read.
    pub rotation: Option<rotation::RotationSettings>,
    /// When a CA in force counts as expiring (metrics always; a warning in /readyz, the log
    /// and an Event on the bundle ConfigMap within it).
    pub ca_expiry_window: kcert_kube::rotation::ExpiryWindow,
}

impl Settings {
    /// Every signer name whose CSRs the controllers look at: those served, and the kubelet
    /// signers the node approver decides.
    pub fn watched_signers(&self) -> Vec<String> {
        let mut all = self.signer_names.clone();
        for s in [
            kcert_policy::nodes::KUBELET_SERVING_SIGNER,
            kcert_policy::nodes::KUBELET_CLIENT_SIGNER,
        ] {
            if self.nodes.decides(s) && !all.iter().any(|n| n == s) {
                all.push(s.to_string());
            }
        }
        all
    }

    /// Whether this process needs the Nodes (and the cluster's reserved ranges): the approver
    /// decides serving CSRs by them, and a signer of serving certificates checks the names
    /// against them again.
    pub fn needs_nodes(&self) -> bool {
        (self.approver && self.nodes.serving)
            || (self.signer
                && self
                    .signer_names
                    .iter()
                    .any(|n| n == kcert_policy::nodes::KUBELET_SERVING_SIGNER))
    }

    /// Whether this process only serves the revocation webhook (no approver, no signer).
    pub fn webhook_only(&self) -> bool {
        !self.approver && !self.signer && self.webhook.is_some()
    }

    /// Whether this process watches the ledger: the webhook answers from it, the signer and
    /// the cleaner consult it, renewal rules read it — and the kubelet rules (the node approver,
    /// a kubelet signer) refuse the nodes it says are revoked, so they read it even with
    /// recording off (`--ledger=false`), and decide nothing until they have.
    pub fn reads_ledger(&self) -> bool {
        self.webhook.is_some() || self.ledger || self.judges_kubelets()
    }

    /// Whether the node approver decides, or the signer signs, kubelet CSRs.
    pub fn judges_kubelets(&self) -> bool {
        (self.approver && (self.nodes.serving || self.nodes.client))
            || (self.signer
                && self
                    .signer_names
                    .iter()
                    .any(|n| kcert_policy::nodes::is_kubelet_signer(n)))
    }
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
            ledger_writer: ledger::WriterSettings::default(),
            cleaner: None,
            events: events::EventLevel::default(),
            rbac_protection: true,
            webhook: None,
            nodes: kcert_policy::nodes::NodeRules::default(),
            reserved_refresh: node_view::RESERVED_EVERY,
            rotation: None,
            ca_expiry_window: kcert_kube::rotation::ExpiryWindow::default(),
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
    /// The ledger by credential hash (renewal rules).
    pub ledger_index: ledger::LedgerView,
    /// The cluster's Nodes (kubelet serving rules).
    pub nodes: node_view::NodeView,
    /// CSRs being signed in this process right now (by uid).
    signing: Mutex<HashSet<String>>,
    /// Uids of undecided CSRs an approver has evaluated at least once: the sweep
    /// ([`unevaluated_sweep`]) triggers any undecided CSR not in here, a safety net for a watch
    /// event the controllers never acted on.
    evaluated: Mutex<HashSet<String>>,
}

impl Context {
    /// The context of one `run`: its Event publisher is spawned on `tasks`.
    fn start(
        client: &Client,
        settings: &Settings,
        sources: &Sources,
        metrics: Arc<metrics::Metrics>,
        tasks: &mut Tasks,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: settings.controller_name.clone(),
            instance: settings.instance.clone(),
        };
        let (events, publisher) = events::EventSink::new(
            Recorder::new(client.clone(), reporter.clone()),
            settings.events,
            metrics.clone(),
        );
        tasks.spawn(publisher);
        // The signer records what it issues; the node approver records what another signer
        // (kube-controller-manager) issued for the kubelet CSRs it approved.
        let records = settings.signer
            || (settings.approver && (settings.nodes.serving || settings.nodes.client));
        let ledger = (records && settings.ledger).then(|| {
            let (ledger, queue) = ledger::Ledger::new(sources.ledger.clone(), metrics.clone());
            tasks.spawn(ledger::write_pages(
                client.clone(),
                ledger.clone(),
                queue,
                settings.ledger_writer,
            ));
            // Revocations removed from the pages by hand are written back by the leader.
            // Revocation objects written onto the ledger pages, and reported in their status.
            tasks.spawn(ledger::write_revocations(
                client.clone(),
                sources.ledger.clone(),
            ));
            tasks.spawn(ledger::restore_revocations(
                client.clone(),
                sources.ledger.clone(),
                Recorder::new(client.clone(), reporter.clone()),
            ));
            ledger
        });
        Arc::new(Context {
            events,
            client: client.clone(),
            settings: settings.clone(),
            policy: sources.policy.clone(),
            ca: sources.ca.clone(),
            metrics,
            ledger,
            rbac: sources.rbac.clone(),
            ledger_index: sources.ledger.clone(),
            nodes: sources.nodes.clone(),
            signing: Mutex::new(HashSet::new()),
            evaluated: Mutex::new(HashSet::new()),
        })
    }

    /// Note that an approver has evaluated this CSR (whatever it decided).
    pub(crate) fn mark_evaluated(&self, csr: &CertificateSigningRequest) {
        if let Some(uid) = &csr.metadata.uid {
            self.evaluated
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(uid.clone());
        }
    }

    /// Whether `signer_name` is one of ours.
    pub fn serves(&self, signer_name: &str) -> bool {
        self.settings.signer_names.iter().any(|s| s == signer_name)
    }

    /// Whether a reconcile in this process is signing the CSR right now.
    fn is_signing(&self, csr: &CertificateSigningRequest) -> bool {
        let uid = csr.uid().unwrap_or_else(|| csr.name_any());
        self.signing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&uid)
    }

    /// Claim the CSR for signing; None if another reconcile in this process holds it.
    fn claim(&self, csr: &CertificateSigningRequest) -> Option<SigningClaim<'_>> {
        let uid = csr.uid().unwrap_or_else(|| csr.name_any());
        let fresh = self
            .signing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.clone());
        // Not `then_some`: it would build (and drop) a claim when the CSR is already claimed,
        // and the drop would release the other reconcile's claim.
        if fresh {
            Some(SigningClaim { ctx: self, uid })
        } else {
            None
        }
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

/// One error policy for both controllers: log, count under the controller's name, requeue.
/// (Permanent problems never get here: they become Denied or Failed.)
fn error_policy(
    controller: &'static str,
) -> impl Fn(Arc<CertificateSigningRequest>, &Error, Arc<Context>) -> Action {
    move |_csr, error, ctx| {
        tracing::warn!(%error, controller, "reconcile failed; retrying in 5s");
        ctx.metrics.reconcile_error(controller);
        Action::requeue(Duration::from_secs(5))
    }
}

/// Spawned tasks that die with their owner: dropping `run`'s future (a crash in tests, an
/// aborted task) must stop the controllers and the lease renewals too.
#[derive(Default)]
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    fn spawn(&mut self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(f));
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// What the controllers read, each kept current by a task of its own.
struct Sources {
    policy: PolicyStore,
    ca: CaStore,
    rbac: rbac::RbacIndex,
    /// Every ledger record by credential hash: the webhook's revocations, the approver's
    /// renewals, what the signer and cleaner know to be on record. One watch, when any of
    /// them needs it.
    ledger: ledger::LedgerView,
    /// The Nodes, when kubelet serving CSRs are decided.
    nodes: node_view::NodeView,
    /// What /readyz warns of (an expiring CA).
    warnings: ca_expiry::Warnings,
    /// Whether this replica leads (always, without leader election): only the leader probes a
    /// rotation's new CA and writes the rotation's status and the trust bundle.
    leading: Arc<std::sync::atomic::AtomicBool>,
}

impl Sources {
    fn start(
        client: &Client,
        settings: &Settings,
        metrics: &Arc<metrics::Metrics>,
        tasks: &mut Tasks,
    ) -> Sources {
        let sources = Sources {
            policy: PolicyStore::default(),
            ca: match (&settings.rotation, settings.signer) {
                (Some(_), true) => CaStore::following_rotation(),
                _ => CaStore::default(),
            },
            rbac: if settings.rbac_protection && !settings.webhook_only() {
                rbac::RbacIndex::default()
            } else {
                rbac::RbacIndex::disabled()
            },
            ledger: ledger::LedgerView::default(),
            nodes: node_view::NodeView::default(),
            warnings: ca_expiry::Warnings::default(),
            leading: Arc::new(std::sync::atomic::AtomicBool::new(
                settings.leader_election.is_none(),
            )),
        };
        if settings.needs_nodes() {
            tasks.spawn(node_view::keep_current(
                client.clone(),
                sources.nodes.clone(),
            ));
            tasks.spawn(node_view::keep_reserved_current(
                client.clone(),
                sources.nodes.clone(),
                settings.reserved_refresh,
            ));
        }
        if settings.reads_ledger() {
            tasks.spawn(ledger::keep_current(
                client.clone(),
                sources.ledger.clone(),
                metrics.clone(),
            ));
            // Revocation objects (`kcert-revoker`'s way to revoke), in force at once.
            tasks.spawn(ledger::keep_revocations_current(
                client.clone(),
                sources.ledger.clone(),
                metrics.clone(),
            ));
        }
        if settings.rbac_protection && !settings.webhook_only() {
            tasks.spawn(rbac::keep_current(client.clone(), sources.rbac.clone()));
        }
        if settings.approver {
            tasks.spawn(policy_source::keep_current(
                settings.policy.clone(),
                sources.policy.clone(),
                client.clone(),
            ));
        }
        match (settings.signer, settings.ca.clone()) {
            (true, Some(source)) => tasks.spawn(ca_source::keep_current(
                source,
                sources.ca.clone(),
                client.clone(),
            )),
            (true, None) => tracing::error!(
                "the signer runs without a CA (--ca-cert/--ca-key or --ca-secret); approved CSRs will wait"
            ),
            (false, _) => {}
        }
        if settings.signer && settings.ca.is_some() {
            let events = settings.rotation.as_ref().map(|r| {
                let reporter = Reporter {
                    controller: settings.controller_name.clone(),
                    instance: settings.instance.clone(),
                };
                (Recorder::new(client.clone(), reporter), r.namespace.clone())
            });
            tasks.spawn(ca_expiry::watch(
                sources.ca.clone(),
                metrics.clone(),
                sources.warnings.clone(),
                settings.ca_expiry_window,
                events,
            ));
        }
        if let (true, Some(r)) = (settings.signer, settings.rotation.clone()) {
            tasks.spawn(rotation::follow(
                client.clone(),
                r,
                sources.ca.clone(),
                settings.reads_ledger().then(|| sources.ledger.clone()),
                sources.leading.clone(),
            ));
        }
        sources
    }

    /// Ready when everything the enabled controllers need is loaded.
    fn readiness(&self, settings: &Settings) -> http::Readiness {
        let (policy, ca, rbac) = (self.policy.clone(), self.ca.clone(), self.rbac.clone());
        let (approver, signer) = (settings.approver, settings.signer);
        let nodes = self.nodes.clone();
        let need_nodes = settings.needs_nodes();
        // The webhook answers 503 without a current ledger view: not ready either.
        let ledger = self.ledger.clone();
        let need_ledger = settings.webhook.is_some();
        Arc::new(move || {
            (!need_nodes || nodes.is_read())
                && (!need_ledger || ledger.is_read())
                && (!approver || policy.get().is_some())
                && (!signer || (ca.get().is_some() && !ca.key_is_away()))
                && rbac.get().is_some()
        })
    }
}

/// The one watch of CSRs (filtered by the API server when one signer name is served), feeding
/// the shared cache.
fn watch_csrs(
    client: &Client,
    signer_names: &[String],
    writer: reflector::store::Writer<CertificateSigningRequest>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // One signer name: let the API server filter. Several: filter here (fields can't OR).
    let config = match signer_names {
        [one] => watcher::Config::default().fields(&format!("spec.signerName={one}")),
        _ => watcher::Config::default(),
    };
    watcher(Api::all(client.clone()), config)
        .default_backoff()
        .modify(|csr| *csr = slim(std::mem::take(csr)))
        .reflect_shared(writer)
        .for_each(|event| {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watching CSRs failed; retrying");
            }
            futures::future::ready(())
        })
}

/// Beside the controllers, never in them: store gauges, ledger upkeep, the cleaner.
fn spawn_upkeep(
    ctx: &Arc<Context>,
    client: &Client,
    store: reflector::Store<CertificateSigningRequest>,
    tasks: &mut Tasks,
) {
    // Pending counts, ages and expiries for every signer the controllers look at, the kubelet
    // signers the node approver decides included.
    let (m, signers) = (ctx.metrics.clone(), ctx.settings.watched_signers());
    tasks.spawn(every_10s(store.clone(), move |s| {
        m.observe_store(s, &signers)
    }));
    if let Some(ledger) = ctx.ledger.clone() {
        tasks.spawn(every_10s(store, move |_| ledger.forget_recorded()));
    }
    if let Some(c) = ctx.settings.cleaner.clone() {
        tasks.spawn(cleaner::run(
            client.clone(),
            ctx.settings.signer_names.clone(),
            c,
            ctx.settings.ledger.then(|| ctx.ledger_index.clone()),
        ));
    }
}

/// Every 5 s: the undecided CSRs of the watched signers, older than 5 s, that no approver has
/// evaluated since they appeared, sent to the approvers; uids of CSRs gone or decided are
/// forgotten.
async fn unevaluated_sweep(
    ctx: Arc<Context>,
    store: reflector::Store<CertificateSigningRequest>,
    tx: tokio::sync::broadcast::Sender<reflector::ObjectRef<CertificateSigningRequest>>,
) {
    let signers = ctx.settings.watched_signers();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let missed = {
            let mut evaluated = ctx.evaluated.lock().unwrap_or_else(|e| e.into_inner());
            never_evaluated(&store.state(), &signers, &mut evaluated, now)
        };
        for r in missed {
            tracing::info!(csr = %r.name, "an undecided CSR no approver has looked at; evaluating it now");
            let _ = tx.send(r);
        }
    }
}

/// The undecided CSRs of `signers`, at least 5 s old, whose uid is not in `evaluated` (pure);
/// `evaluated` keeps only uids of CSRs still undecided.
fn never_evaluated(
    state: &[Arc<CertificateSigningRequest>],
    signers: &[String],
    evaluated: &mut HashSet<String>,
    now_unix: i64,
) -> Vec<reflector::ObjectRef<CertificateSigningRequest>> {
    let mut pending_uids = HashSet::new();
    let mut missed = Vec::new();
    for csr in state {
        if !signers.contains(&csr.spec.signer_name) || conditions::is_decided(csr) {
            continue;
        }
        let Some(uid) = csr.metadata.uid.clone() else {
            continue;
        };
        let age = csr
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| now_unix - t.0.as_second());
        if !evaluated.contains(&uid) && age >= 5 {
            missed.push(reflector::ObjectRef::from_obj(csr.as_ref()));
        }
        pending_uids.insert(uid);
    }
    evaluated.retain(|uid| pending_uids.contains(uid));
    missed
}

/// A broadcast receiver as a stream (a lagging receiver skips what it missed; its senders make
/// up for that: the sweep sends again, waiting CSRs are requeued).
fn from_broadcast<T: Clone + Send + 'static>(
    rx: tokio::sync::broadcast::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(r) => return Some((r, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    })
}

/// For each Node that appears or changes addresses, the undecided serving CSRs its node made.
fn node_triggers(
    changes: tokio::sync::broadcast::Receiver<String>,
    store: reflector::Store<CertificateSigningRequest>,
) -> impl futures::Stream<Item = reflector::ObjectRef<CertificateSigningRequest>> + Send + 'static {
    // Missed some (lagged): the periodic requeue of waiting CSRs covers them.
    from_broadcast(changes).flat_map(move |node| {
        let user = format!("{}{node}", kcert_policy::nodes::NODE_USER_PREFIX);
        let refs: Vec<_> = store
            .state()
            .iter()
            .filter(|csr| {
                csr.spec.signer_name == kcert_policy::nodes::KUBELET_SERVING_SIGNER
                    && csr.spec.username.as_deref() == Some(user.as_str())
                    && !conditions::is_decided(csr)
            })
            .map(|csr| reflector::ObjectRef::from_obj(csr.as_ref()))
            .collect();
        futures::stream::iter(refs)
    })
}

/// A tick per policy change: every pending CSR is evaluated again.
/// Each time the ledger becomes readable where it was not: the signer's CSRs that waited for
/// it (a start-up, an outage) are looked at again at once instead of at their next requeue.
fn ledger_installs(view: &ledger::LedgerView) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(view.installs(), |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

fn policy_changes(policy: &PolicyStore) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(policy.subscribe(), |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

/// Every 10 s: `f` over the cache (store gauges; ledger upkeep).
async fn every_10s(
    store: reflector::Store<CertificateSigningRequest>,
    f: impl Fn(&reflector::Store<CertificateSigningRequest>) + Send + 'static,
) {
    loop {
        f(&store);
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Run until `shutdown` completes (or, with leader election, until the lease is lost: then
/// `Err(LostLeadership)`). Loads the policy, CA and RBAC index in the background and keeps
/// them current.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    use futures::FutureExt;
    if settings.signer_names.is_empty() {
        tracing::error!("no signer names configured; nothing to do");
    }
    let mut tasks = Tasks::default();
    let metrics = Arc::new(metrics::Metrics::default());
    let sources = Sources::start(&client, &settings, &metrics, &mut tasks);
    if let Some(addr) = settings.metrics_addr {
        let listener = http::bind(addr).await.map_err(|e| Error::Listen(addr, e))?;
        tasks.spawn(http::serve(
            listener,
            metrics.clone(),
            sources.readiness(&settings),
            {
                let w = sources.warnings.clone();
                Arc::new(move || w.get())
            },
        ));
    }
    if let Some(webhook) = settings.webhook.clone() {
        // Every replica answers, leader or not: the API server asks any of them.
        tasks.spawn(
            authz_webhook::serve(webhook, sources.ledger.clone())
                .await
                .map_err(Error::Webhook)?,
        );
    }
    if settings.webhook_only() {
        // Nothing else: no CSR watch, no CA, no Lease.
        tracing::info!("serving the revocation webhook only");
        shutdown.await;
        return Ok(());
    }
    let shutdown = shutdown.boxed().shared();
    let leadership = match settings.leader_election.clone() {
        Some(le) => tokio::select! {
            held = leader::Leadership::acquire(client.clone(), le) => Some(held),
            _ = shutdown.clone() => return Ok(()),
        },
        None => None,
    };
    sources
        .leading
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let lost = match &leadership {
        Some(l) => l.lost().boxed(),
        None => std::future::pending().boxed(),
    };
    let stop = futures::future::select(shutdown, lost)
        .map(|_| ())
        .boxed()
        .shared();

    let ctx = Context::start(&client, &settings, &sources, metrics, &mut tasks);

    // One watch and one cache of CSRs, shared by the approver and the signer.
    let (store, writer) = reflector::store_shared(1024);
    let approver_events = settings.approver.then(|| writer.subscribe()).flatten();
    let node_events = (settings.approver && (settings.nodes.serving || settings.nodes.client))
        .then(|| writer.subscribe())
        .flatten();
    let signer_events = settings.signer.then(|| writer.subscribe()).flatten();
    tasks.spawn(watch_csrs(&client, &settings.watched_signers(), writer));
    spawn_upkeep(&ctx, &client, store.clone(), &mut tasks);

    let mut controllers = Tasks::default();
    let config = ControllerConfig::default().concurrency(settings.concurrency);
    // The safety net: undecided CSRs of ours that no approver has evaluated, 5 s after they
    // appeared (a missed watch event must not leave a request pending forever).
    let (sweep_tx, _) = tokio::sync::broadcast::channel(1024);
    if settings.approver {
        tasks.spawn(unevaluated_sweep(
            ctx.clone(),
            store.clone(),
            sweep_tx.clone(),
        ));
    }
    if let Some(events) = approver_events {
        let reconcile_all = policy_changes(&sources.policy);
        controllers.spawn(
            Controller::for_shared_stream(events, store.clone())
                .with_config(config.clone())
                .reconcile_all_on(reconcile_all)
                .reconcile_on(from_broadcast(sweep_tx.subscribe()))
                .graceful_shutdown_on(stop.clone())
                .run(approver::reconcile, error_policy("approver"), ctx.clone())
                .for_each(|_| futures::future::ready(())),
        );
    }
    if let Some(events) = node_events {
        // A Node that appears or changes addresses: its pending serving CSRs, again.
        let waiting = node_triggers(ctx.nodes.changes(), store.clone());
        controllers.spawn(
            Controller::for_shared_stream(events, store.clone())
                .with_config(config.clone())
                .reconcile_on(waiting)
                .reconcile_on(from_broadcast(sweep_tx.subscribe()))
                .graceful_shutdown_on(stop.clone())
                .run(
                    node_approver::reconcile,
                    error_policy("node-approver"),
                    ctx.clone(),
                )
                .for_each(|_| futures::future::ready(())),
        );
    }
    if let Some(events) = signer_events {
        controllers.spawn(
            Controller::for_shared_stream(events, store)
                .with_config(config)
                .reconcile_all_on(ledger_installs(&ctx.ledger_index))
                .graceful_shutdown_on(stop)
                .run(signer::reconcile, error_policy("signer"), ctx.clone())
                .for_each(|_| futures::future::ready(())),
        );
    }
    for c in controllers.0.iter_mut() {
        let _ = c.await;
    }
    drop(tasks);
    match leadership {
        Some(l) if l.is_lost() => Err(Error::LostLeadership(l.lease().to_string())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    fn csr(
        name: &str,
        uid: &str,
        signer: &str,
        age: i64,
        decided: bool,
    ) -> Arc<CertificateSigningRequest> {
        let mut c = CertificateSigningRequest::default();
        c.metadata.name = Some(name.into());
        c.metadata.uid = Some(uid.into());
        c.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_000_000 - age).unwrap(),
        ));
        c.spec.signer_name = signer.into();
        if decided {
            conditions::add(&mut c, conditions::DENIED, "X", "x");
        }
        Arc::new(c)
    }

    #[test]
    fn the_sweep_finds_only_undecided_csrs_of_ours_never_evaluated_and_forgets_the_rest() {
        let ours = "kcert.dev/client".to_string();
        let state = vec![
            csr("seen", "u1", &ours, 60, false),
            csr("missed", "u2", &ours, 60, false),
            csr("young", "u3", &ours, 1, false),
            csr("decided", "u4", &ours, 60, true),
            csr("theirs", "u5", "example.com/other", 60, false),
        ];
        let mut evaluated: HashSet<String> = ["u1", "u4", "gone"].map(String::from).into();
        let missed = never_evaluated(
            &state,
            std::slice::from_ref(&ours),
            &mut evaluated,
            1_000_000,
        );
        let names: Vec<_> = missed.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["missed"]);
        // Decided and deleted CSRs are forgotten; the one still pending is kept.
        assert_eq!(evaluated, ["u1"].map(String::from).into());
    }
}
