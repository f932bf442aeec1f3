//! kcert-controller: an approver and a signer for CertificateSigningRequests.
//!
//! ```text
//!              watch CSRs (spec.signerName ∈ --signer-name)
//!                      │                              │
//!   approver::reconcile│                              │signer::reconcile
//!   pending? parse + verify request                   │Approved, not Failed, no certificate?
//!   decide(CsrFacts, Policy) ── kcert-policy          │parse, check usages for the signer,
//!   Approve/Deny → PUT /approval (+ annotation,       │sign with the CA ── kcert-pki
//!                  Event); Ignore → Event only        │PUT /status: certificate, or Failed
//!                      ▲                              ▲
//!            PolicyStore (static | file | CRD)   CaStore (files | Secret), reloaded on change
//! ```
//!
//! The approver and the signer are separate kube-runtime controllers that share small helpers
//! ([`conditions`], [`facts`]); either can run alone.

pub mod approver;
pub mod ca_source;
pub mod conditions;
pub mod crd;
pub mod facts;
pub mod policy_source;
pub mod signer;

pub use ca_source::{CaSource, CaStore};
pub use policy_source::{PolicySource, PolicyStore};

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;

/// The annotation holding the approver's provenance record (JSON: outcome, reason, rule,
/// policy, policyVersion, maxDurationSeconds, by).
pub const DECISION_ANNOTATION: &str = "kcert.dev/decision";

/// The signer name kcert owns by default.
pub const DEFAULT_SIGNER_NAME: &str = "kcert.dev/client";

/// Errors that requeue a CSR (transient); permanent problems become Denied or Failed instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// Gave up after repeated write conflicts.
    #[error("CSR {0}: kept conflicting with other writers; will retry")]
    Conflict(String),
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
    /// This replica's name (pod name), for Events.
    pub instance: Option<String>,
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
    /// Event recorder.
    pub recorder: Recorder,
}

impl Context {
    /// Whether `signer_name` is one of ours.
    pub fn serves(&self, signer_name: &str) -> bool {
        self.settings.signer_names.iter().any(|s| s == signer_name)
    }
}

fn error_policy(_csr: Arc<CertificateSigningRequest>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed; retrying in 5s");
    Action::requeue(Duration::from_secs(5))
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
    let mut background = Vec::new();
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
    let reporter = Reporter {
        controller: settings.controller_name.clone(),
        instance: settings.instance.clone(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        settings: settings.clone(),
        policy: policy.clone(),
        ca,
    });
    // One signer name: let the API server filter. Several: filter here (fields can't OR).
    let watch_config = match settings.signer_names.as_slice() {
        [one] => watcher::Config::default().fields(&format!("spec.signerName={one}")),
        _ => watcher::Config::default(),
    };
    let config = ControllerConfig::default().concurrency(settings.concurrency);
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let mut loops = Vec::new();
    if settings.approver {
        let policy_changed = futures::stream::unfold(policy.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        });
        let api: Api<CertificateSigningRequest> = Api::all(client.clone());
        let approver = Controller::new(api, watch_config.clone())
            .with_config(config.clone())
            .reconcile_all_on(policy_changed)
            .graceful_shutdown_on(shutdown.clone())
            .run(approver::reconcile, error_policy, ctx.clone())
            .for_each(|_| futures::future::ready(()));
        loops.push(tokio::spawn(approver));
    }
    if settings.signer {
        let api: Api<CertificateSigningRequest> = Api::all(client.clone());
        let signer = Controller::new(api, watch_config)
            .with_config(config)
            .graceful_shutdown_on(shutdown.clone())
            .run(signer::reconcile, error_policy, ctx.clone())
            .for_each(|_| futures::future::ready(()));
        loops.push(tokio::spawn(signer));
    }
    for l in loops {
        let _ = l.await;
    }
    for b in background {
        b.abort();
    }
    Ok(())
}
