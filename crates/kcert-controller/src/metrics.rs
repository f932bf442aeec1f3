//! Prometheus metrics, beside the reconcilers rather than in them: they call small recorders.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: String,
    reason: String,
    rule: String,
    signer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignerLabels {
    signer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExpiryLabels {
    signer: String,
    within: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CaLabels {
    /// The first 16 hex digits of the CA certificate's SHA-256.
    ca: String,
    subject: String,
}

/// Every metric kcert-controller exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    decisions: Family<DecisionLabels, Counter>,
    issued: Family<SignerLabels, Counter>,
    signing_seconds: Family<SignerLabels, Histogram, fn() -> Histogram>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    pending: Family<SignerLabels, Gauge>,
    oldest_pending_seconds: Family<SignerLabels, Gauge<f64, AtomicU64>>,
    expiring: Family<ExpiryLabels, Gauge>,
    events_dropped: Counter,
    ledger_records: Counter,
    ledger_writes: Counter,
    ledger_write_seconds: Histogram,
    ledger_write_failures: Counter,
    ledger_repaired: Counter,
    ledger_refused_foreign: Counter,
    ledger_view_current: Gauge,
    ledger_view_outages: Counter,
    ledger_revocations_restored: Counter,
    ledger_unrevoked: Counter,
    ca_not_after: Family<CaLabels, Gauge>,
    /// NotAfter of each issued certificate in the cache, by CSR uid and resourceVersion, so a
    /// pass over the store parses only certificates it has not seen.
    not_after: Mutex<HashMap<String, (String, SystemTime)>>,
}

fn signing_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("kcert")),
            decisions: Family::default(),
            issued: Family::default(),
            signing_seconds: Family::new_with_constructor(signing_buckets),
            reconcile_errors: Family::default(),
            pending: Family::default(),
            oldest_pending_seconds: Family::default(),
            expiring: Family::default(),
            events_dropped: Counter::default(),
            ledger_records: Counter::default(),
            ledger_writes: Counter::default(),
            ledger_write_seconds: signing_buckets(),
            ledger_write_failures: Counter::default(),
            ledger_repaired: Counter::default(),
            ledger_refused_foreign: Counter::default(),
            ledger_view_current: Gauge::default(),
            ledger_view_outages: Counter::default(),
            ledger_revocations_restored: Counter::default(),
            ledger_unrevoked: Counter::default(),
            ca_not_after: Family::default(),
            not_after: Mutex::new(HashMap::new()),
        };
        {
            let mut r = m.registry.lock().expect("registry");
            r.register(
                "decisions",
                "Approval decisions by outcome, reason, rule and signer",
                m.decisions.clone(),
            );
            r.register("issued", "Certificates issued", m.issued.clone());
            r.register(
                "signing_duration_seconds",
                "Time to sign a certificate and write it to the CSR",
                m.signing_seconds.clone(),
            );
            r.register(
                "reconcile_errors",
                "Reconciles that failed and were retried",
                m.reconcile_errors.clone(),
            );
            r.register(
                "pending_csrs",
                "CSRs of our signers with no decision yet",
                m.pending.clone(),
            );
            r.register(
                "oldest_pending_csr_age_seconds",
                "Age of the oldest undecided CSR of our signers",
                m.oldest_pending_seconds.clone(),
            );
            r.register(
                "certificates_expiring",
                "Certificates issued for our signers (still in CSRs) that expire within the window",
                m.expiring.clone(),
            );
            r.register(
                "events_dropped",
                "Events not published because the queue to the API server was full",
                m.events_dropped.clone(),
            );
            r.register(
                "ledger_records_written",
                "Certificate records written to the ledger",
                m.ledger_records.clone(),
            );
            r.register(
                "ledger_page_writes",
                "Ledger page writes (each carries one or more records)",
                m.ledger_writes.clone(),
            );
            r.register(
                "ledger_write_duration_seconds",
                "Time to write one batch of records to the ledger",
                m.ledger_write_seconds.clone(),
            );
            r.register(
                "ledger_write_failures",
                "Ledger writes that failed (retried) or records the API server refused (kept for the next start)",
                m.ledger_write_failures.clone(),
            );
            r.register(
                "ledger_repaired",
                "Issued certificates found not on record (a restart between signing and recording) and queued again",
                m.ledger_repaired.clone(),
            );
            r.register(
                "ledger_refused_foreign",
                "Looks at a certificate on a CSR of kcert's signer that kcert did not issue for it (another key, subject, names, usages, lifetime or CA), refused a ledger record",
                m.ledger_refused_foreign.clone(),
            );
            r.register(
                "ledger_view_current",
                "1 while this process's view of the ledger is read and its watch healthy; 0 before the first read and after an outage (the webhook answers 503, renewals wait)",
                m.ledger_view_current.clone(),
            );
            r.register(
                "ledger_view_outages",
                "Times the ledger view was dropped because its watch (or the reachability probe) failed for longer than the staleness bound; each is followed by a fresh list",
                m.ledger_view_outages.clone(),
            );
            r.register(
                "ledger_revocations_restored",
                "Revocations on a ledger page someone deleted: kept in force and written onto a new page",
                m.ledger_revocations_restored.clone(),
            );
            r.register(
                "ledger_unrevoked",
                "Revocations that disappeared from a ledger record this process had seen revoked (a page edited by hand, or a Revocation object deleted): kept in force, logged, and written back by the leader",
                m.ledger_unrevoked.clone(),
            );
            r.register(
                "ca_not_after_seconds",
                "NotAfter (Unix seconds) of each CA in force: the one signing, and during a rotation the other one trusted",
                m.ca_not_after.clone(),
            );
        }
        m
    }
}

impl Metrics {
    /// One decision made (written, or left for a human).
    pub fn decision(&self, outcome: &str, reason: &str, rule: Option<&str>, signer: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                outcome: outcome.into(),
                reason: reason.into(),
                rule: rule.unwrap_or("").into(),
                signer: signer.into(),
            })
            .inc();
    }

    /// One certificate issued, taking `elapsed`.
    pub fn issued(&self, signer: &str, elapsed: Duration) {
        let l = SignerLabels {
            signer: signer.into(),
        };
        self.issued.get_or_create(&l).inc();
        self.signing_seconds
            .get_or_create(&l)
            .observe(elapsed.as_secs_f64());
    }

    /// A failed reconcile.
    pub fn reconcile_error(&self, controller: &str) {
        self.reconcile_errors
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .inc();
    }

    /// An event dropped because the publishing queue was full.
    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// A batch of `records` written to the ledger, taking `elapsed`.
    pub fn ledger_written(&self, records: usize, elapsed: Duration) {
        self.ledger_records.inc_by(records as u64);
        self.ledger_writes.inc();
        self.ledger_write_seconds.observe(elapsed.as_secs_f64());
    }

    /// A ledger write failed.
    pub fn ledger_write_failed(&self) {
        self.ledger_write_failures.inc();
    }

    /// An issued certificate found not on record and queued again.
    pub fn ledger_repaired(&self) {
        self.ledger_repaired.inc();
    }

    /// Whether the ledger view is read and current.
    pub fn ledger_view_current(&self, current: bool) {
        self.ledger_view_current.set(i64::from(current));
    }

    /// `n` revocations of a deleted ledger page kept and queued to be written again.
    pub fn ledger_revocations_restored(&self, n: usize) {
        self.ledger_revocations_restored.inc_by(n as u64);
    }

    /// `n` revocations found removed (tampering) and kept in force.
    pub fn ledger_unrevoked(&self, n: usize) {
        self.ledger_unrevoked.inc_by(n as u64);
    }

    /// The ledger view was dropped after an outage.
    pub fn ledger_view_outage(&self) {
        self.ledger_view_outages.inc();
    }

    /// A certificate kcert did not issue, found on a CSR of its signer and not recorded.
    pub fn ledger_refused_foreign(&self) {
        self.ledger_refused_foreign.inc();
    }

    /// Recompute the gauges from the watch cache.
    pub fn observe_store(&self, store: &Store<CertificateSigningRequest>, signers: &[String]) {
        let now = SystemTime::now();
        let state = store.state();
        let mut cache = self.not_after.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = std::collections::HashSet::new();
        for signer in signers {
            let mut pending = 0i64;
            let mut oldest = 0f64;
            let mut expiring = [(7u64, 0i64), (30, 0)];
            for csr in state.iter().filter(|c| &c.spec.signer_name == signer) {
                if !crate::conditions::is_decided(csr) {
                    pending += 1;
                    if let Some(t) = &csr.metadata.creation_timestamp {
                        let age = (k8s_openapi::jiff::Timestamp::now().as_second()
                            - t.0.as_second())
                        .max(0) as f64;
                        oldest = oldest.max(age);
                    }
                }
                if let Some(not_after) = cached_not_after(&mut cache, csr) {
                    seen.insert(csr.metadata.uid.clone().unwrap_or_default());
                    for (days, count) in expiring.iter_mut() {
                        let horizon = now + Duration::from_secs(*days * 86_400);
                        if not_after > now && not_after <= horizon {
                            *count += 1;
                        }
                    }
                }
            }
            let l = SignerLabels {
                signer: signer.clone(),
            };
            self.pending.get_or_create(&l).set(pending);
            self.oldest_pending_seconds.get_or_create(&l).set(oldest);
            for (days, count) in expiring {
                self.expiring
                    .get_or_create(&ExpiryLabels {
                        signer: signer.clone(),
                        within: format!("{days}d"),
                    })
                    .set(count);
            }
        }
        cache.retain(|uid, _| seen.contains(uid));
    }

    /// The CAs in force now (the others' series are dropped).
    pub fn ca_in_force(&self, cas: &[std::sync::Arc<kcert_pki::CertificateAuthority>]) {
        self.ca_not_after.clear();
        for ca in cas {
            let info = ca.info();
            let not_after = info
                .not_after_time()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            self.ca_not_after
                .get_or_create(&CaLabels {
                    ca: kcert_kube::rotation::short(&info.fingerprint_sha256),
                    subject: info.subject.to_string(),
                })
                .set(not_after);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(
            &mut out,
            &self.registry.lock().expect("registry"),
        )
        .expect("encoding to a String");
        out
    }
}

/// The certificate's NotAfter, parsed once per CSR version.
fn cached_not_after(
    cache: &mut HashMap<String, (String, SystemTime)>,
    csr: &CertificateSigningRequest,
) -> Option<SystemTime> {
    let pem = csr.status.as_ref()?.certificate.as_ref()?;
    let uid = csr.metadata.uid.clone().unwrap_or_default();
    let version = csr.metadata.resource_version.clone().unwrap_or_default();
    if let Some((v, t)) = cache.get(&uid)
        && *v == version
    {
        return Some(*t);
    }
    let t = kcert_pki::CertificateInfo::from_pem_chain(&pem.0)
        .ok()?
        .not_after_time();
    cache.insert(uid, (version, t));
    Some(t)
}
