//! The issuance ledger: every certificate the signer issues is recorded on a [`LedgerPage`]
//! (many records per object, kept after the CSR is gone), written off the issuance path by one
//! writer task in batches.
//!
//! ```text
//!  signer ──issued──► Ledger::record_issued ──queue──► write_pages ──append/create──► LedgerPage
//!     ▲                                                                                  │
//!     └── Ledger::ensure (CSR with a certificate: on record? else queue it) ◄── LedgerView ◄┘ watch
//! ```
//!
//! Nothing issued stays unrecorded: a certificate is on record once the watch of the pages shows
//! it. Until then its CSR (which holds the certificate) is kept: the cleaner deletes an issued
//! CSR only once the view shows the record, and after a crash between signing and recording,
//! the signer's first pass over the CSRs finds every certificate the view does not hold and
//! queues it again (`kcert_ledger_repaired_total`).

use crate::conditions;
use crate::crd::{IssuedCertificate, LedgerPage, RevocationObject, RevocationSpec};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_kube::ledger::{LedgerIndex, Unrevoked, new_page, room};
use kcert_pki::CertificateInfo;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// What approved the CSR: the kcert rule from the provenance record (only when kcert provably
/// wrote it for this object), or the Approved condition's reason.
pub fn approved_by(csr: &CertificateSigningRequest) -> String {
    if let Some(p) = crate::provenance::Provenance::read(csr).filter(|p| p.approved_by_rule())
        && let Some(rule) = &p.rule
    {
        return match &p.policy {
            Some(policy) => format!("rule {rule} of policy {policy}"),
            // The kubelet signers' fixed rules.
            None => format!("rule {rule} (node rules)"),
        };
    }
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == conditions::APPROVED))
        .map(|c| c.reason.clone().unwrap_or_else(|| "Approved".into()))
        .unwrap_or_else(|| "unknown".into())
}

/// The ledger record for a CSR's certificate (pure).
pub fn record(csr: &CertificateSigningRequest, cert: &CertificateInfo) -> IssuedCertificate {
    IssuedCertificate {
        serial: cert.serial.clone(),
        subject: cert.subject.to_string(),
        user: cert.subject.common_name.clone().unwrap_or_default(),
        groups: cert.subject.organizations.clone(),
        not_before: cert.not_before.clone(),
        not_after: cert.not_after.clone(),
        fingerprint_sha256: cert.fingerprint_sha256.clone(),
        signer_name: csr.spec.signer_name.clone(),
        requester: csr.spec.username.clone().unwrap_or_default(),
        requester_groups: csr.spec.groups.clone().unwrap_or_default(),
        approved_by: approved_by(csr),
        csr_name: csr.name_any(),
        csr_uid: csr.metadata.uid.clone().unwrap_or_default(),
        revocation: None,
        // A renewal carries its chain's start on; a first certificate starts one.
        chain_started_at: crate::provenance::Provenance::read(csr)
            .filter(|p| p.approved_by_rule())
            .and_then(|p| p.chain_started_at)
            .or_else(|| Some(cert.not_before.clone())),
        requested_with: requested_with(csr),
        revocation_restored_at: None,
        issuer_key_id: cert.authority_key_id.clone(),
    }
}

/// The hash of the certificate the CSR's requester authenticated with (the `credential-id`
/// the API server recorded in `spec.extra`), if one.
pub fn requested_with(csr: &CertificateSigningRequest) -> Option<String> {
    csr.spec
        .extra
        .as_ref()?
        .get(kcert_kube::revocation::CREDENTIAL_ID)?
        .iter()
        .find_map(|id| id.strip_prefix("X509SHA256="))
        .map(|hex| hex.to_ascii_lowercase())
}

/// The certificate a CSR holds, parsed.
fn certificate(csr: &CertificateSigningRequest) -> Option<CertificateInfo> {
    let pem = csr.status.as_ref()?.certificate.as_ref()?;
    CertificateInfo::from_pem_chain(&pem.0).ok()
}

/// The ledger as this process sees it: one watch of the pages, shared by the webhook (every
/// replica), the approver's renewal rules, the signer and the cleaner. `None` inside until the
/// pages have been listed once: nothing that needs the ledger decides before that.
#[derive(Clone, Default)]
pub struct LedgerView {
    current: Arc<RwLock<Option<LedgerIndex>>>,
    /// Where revocations of a deleted page go to be written again (this process's writer).
    restorer: Arc<Mutex<Option<mpsc::UnboundedSender<IssuedCertificate>>>>,
    /// Where revocations removed from a page go to be written back ([`restore_revocations`],
    /// the leader's).
    rewriter: Arc<Mutex<Option<mpsc::UnboundedSender<Unrevoked>>>>,
    /// The revocations the index had seen, kept while it is dropped (after an outage) so that
    /// the next list still catches an unrevoke.
    memory: Arc<Mutex<Option<LedgerIndex>>>,
    /// Every Revocation object seen (name → spec, creation time), deleted ones included: put in
    /// force in every index this view builds.
    objects: Arc<Mutex<std::collections::BTreeMap<String, (RevocationSpec, String)>>>,
    /// Revocation objects whose status says what they revoked.
    reported: Arc<Mutex<HashSet<String>>>,
    /// True once the Revocation objects have been listed (or cannot be: no CRD, no right):
    /// the page watch waits for it, so that no index answers without them.
    revocations_listed: Arc<tokio::sync::watch::Sender<bool>>,
    /// Counts the times an index came into force where there was none (the first read, and
    /// each read after an outage): what waited for the ledger can go on at once.
    installs: Arc<tokio::sync::watch::Sender<u64>>,
}

impl LedgerView {
    /// The index, `None` until read. Do not hold the guard across an await.
    pub fn read(&self) -> RwLockReadGuard<'_, Option<LedgerIndex>> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the pages have been read.
    pub fn is_read(&self) -> bool {
        self.read().is_some()
    }

    /// Drop the index (fail closed until the next full list: [`follow`]).
    pub fn invalidate(&self) {
        let old = self
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(old) = old {
            *self.memory.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(LedgerIndex::remembering(Some(&old)));
        }
    }

    /// An empty index to list the pages into, remembering every revocation this view has seen.
    fn fresh(&self) -> LedgerIndex {
        let mut index = self.fresh_remembering();
        for (name, (spec, created)) in self
            .objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            index.apply_revocation(name, spec, created);
        }
        index
    }

    /// Put Revocation object `name` in force (now, in the index, and in every later one).
    /// Returns whether it was new to this view.
    pub fn apply_revocation(&self, name: &str, spec: &RevocationSpec, created: &str) -> bool {
        let new = self
            .objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), (spec.clone(), created.to_string()))
            .is_none();
        self.update(|i| {
            i.apply_revocation(name, spec, created);
        });
        new
    }

    /// Names of the Revocation objects this view holds.
    fn revocation_names(&self) -> Vec<String> {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn fresh_remembering(&self) -> LedgerIndex {
        match self.read().as_ref() {
            Some(i) => LedgerIndex::remembering(Some(i)),
            None => LedgerIndex::remembering(
                self.memory
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref(),
            ),
        }
    }

    /// Put `index` in force (the watch does this after each full list; benchmarks fill it).
    pub fn set(&self, index: LedgerIndex) {
        let was_read = self
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(index)
            .is_some();
        if !was_read {
            self.installs.send_modify(|n| *n += 1);
        }
    }

    /// Changes each time the ledger becomes readable where it was not (see `installs`).
    pub fn installs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.installs.subscribe()
    }

    fn update(&self, f: impl FnOnce(&mut LedgerIndex)) {
        if let Some(index) = self
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            f(index)
        }
    }

    /// Whether the certificate with this hash is on record; `None` before the first read.
    pub fn holds(&self, hash: &str) -> Option<bool> {
        self.read().as_ref().map(|i| i.holds(hash))
    }
}

/// How long the ledger watch (or the reachability probe beside it) may fail before the view
/// stops answering: after this, the webhook answers 503 (the API server's failurePolicy Deny),
/// renewal rules wait and readiness is false, until a fresh list. A replica cut off from the
/// API server never answers "no opinion" from an old index for longer than this (plus one probe).
pub const LEDGER_STALE_AFTER: Duration = Duration::from_secs(60);
/// How often the probe asks the API server for one ledger page. A watch on a connection that
/// went dark yields neither events nor errors until the client's read timeout (minutes); the
/// probe's failures count as the watch's.
pub const LEDGER_PROBE_EVERY: Duration = Duration::from_secs(15);
/// Errors further apart than this are separate outages (the watcher's backoff is at most 30 s).
const LEDGER_SEPARATE_AFTER: Duration = Duration::from_secs(120);

/// Keep `view` current from a watch of the ledger pages until dropped. A re-list (after the
/// watch fell behind) builds a new index beside the one in force and swaps it in when done.
pub async fn keep_current(client: Client, view: LedgerView, metrics: Arc<crate::metrics::Metrics>) {
    // The Revocation objects first (at most 10 s): an index must not answer without them.
    let mut listed = view.revocations_listed.subscribe();
    if tokio::time::timeout(Duration::from_secs(10), listed.wait_for(|l| *l))
        .await
        .is_err()
    {
        tracing::warn!(
            "the Revocation objects could not be listed within 10s; reading the ledger without them meanwhile"
        );
    }
    let api: Api<LedgerPage> = Api::all(client);
    let probe_api = api.clone();
    follow(
        &view,
        &metrics,
        || {
            // Pages are never modified by anyone reading them here: drop managed fields early.
            // Listed 20 pages (up to 10 MiB) at a time, not the default 500: a start-up with a
            // long ledger would otherwise hold hundreds of megabytes of JSON at once.
            use futures::StreamExt;
            // A watch on a connection that went dark (an API server gone without a FIN, a
            // dropped flow) yields nothing until the watch's timeout: 30 s, not the default
            // 290, so such a view is caught up within about 35 s (the probe only shows that
            // the API server answers, not that the watch is current).
            watcher(
                api.clone(),
                watcher::Config::default().page_size(20).timeout(30),
            )
            .default_backoff()
            .modify(|p| p.managed_fields_mut().clear())
            .boxed()
        },
        move || {
            let api = probe_api.clone();
            async move {
                let one = kube::api::ListParams::default().limit(1);
                let list = api.list_metadata(&one);
                match tokio::time::timeout(Duration::from_secs(10), list).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within 10s".to_string()),
                }
            }
        },
    )
    .await
}

/// Apply the events of the streams `watch` makes to `view`, probing the API server with `probe`
/// every [`LEDGER_PROBE_EVERY`]. When the watch or the probe has failed for
/// [`LEDGER_STALE_AFTER`] the view is dropped (fail closed: what it holds may be missing
/// revocations) and a new stream lists the pages afresh.
async fn follow<S, P, F>(
    view: &LedgerView,
    metrics: &crate::metrics::Metrics,
    mut watch: impl FnMut() -> S,
    mut probe: P,
) where
    S: futures::Stream<Item = Result<watcher::Event<LedgerPage>, watcher::Error>> + Unpin,
    P: FnMut() -> F,
    F: std::future::Future<Output = Result<(), String>>,
{
    use futures::StreamExt;
    let mut refused_backoff = Duration::from_secs(1);
    loop {
        let mut building: Option<LedgerIndex> = None;
        let mut failing_since: Option<tokio::time::Instant> = None;
        let mut last_error: Option<tokio::time::Instant> = None;
        // The last time the watch delivered or the probe answered: an outage is counted from
        // here, not from the first failure noticed (which can come a probe interval later).
        let mut last_ok: Option<tokio::time::Instant> = None;
        let mut events = watch();
        let mut ticks = tokio::time::interval(LEDGER_PROBE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (failed, refused) = tokio::select! {
                event = events.next() => {
                    let Some(event) = event else { break };
                    match event {
                        Ok(event) => {
                            if matches!(event, watcher::Event::InitDone) {
                                // Listed: a later refusal is a new episode, not the next of many.
                                refused_backoff = Duration::from_secs(1);
                            }
                            apply(view, metrics, &mut building, event);
                            (false, false)
                        }
                        Err(e) if forbidden(&e) => {
                            // Not a blip: this process may not watch the ledger (RBAC). Fail
                            // closed now, not after the staleness bound: a view that cannot be
                            // kept current must not answer.
                            tracing::error!(error = %e, "kcert may not watch ledgerpages (it needs get, list and watch); the webhook answers 503 until it may");
                            (true, true)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "watching the ledger failed; retrying");
                            (true, false)
                        }
                    }
                }
                _ = ticks.tick() => match probe().await {
                    Ok(()) => (false, false),
                    Err(e) => {
                        tracing::warn!(error = %e, "the API server did not answer a read of the ledger");
                        (true, false)
                    }
                },
            };
            let now = tokio::time::Instant::now();
            if refused {
                failing_since = Some(now - LEDGER_STALE_AFTER);
                last_error = Some(now);
            } else if failed {
                if failing_since.is_none()
                    || last_error.is_none_or(|t| now - t > LEDGER_SEPARATE_AFTER)
                {
                    failing_since = Some(last_ok.unwrap_or(now));
                }
                last_error = Some(now);
            } else {
                last_ok = Some(now);
                if last_error.is_none_or(|t| now - t > LEDGER_PROBE_EVERY) {
                    // A success after the last error (not an answer that raced it): over.
                    failing_since = None;
                }
            }
            // Declared on a failure only: an answer just after the last error proves the API
            // server is back, even if it is too close to that error to end the outage's count.
            if failed && failing_since.is_some_and(|t| now - t >= LEDGER_STALE_AFTER) {
                tracing::error!(
                    seconds = LEDGER_STALE_AFTER.as_secs(),
                    "the ledger could not be read for too long; the webhook answers 503 and renewals wait until the pages are listed again"
                );
                view.invalidate();
                metrics.ledger_view_current(false);
                metrics.ledger_view_outage();
                if refused {
                    // Listing again at once would only be refused again: wait, longer each time.
                    tokio::time::sleep(refused_backoff).await;
                    refused_backoff = (refused_backoff * 2).min(Duration::from_secs(60));
                } else {
                    refused_backoff = Duration::from_secs(1);
                }
                break;
            }
        }
    }
}

/// Whether a watch error is the API server refusing this identity (401/403).
fn forbidden(e: &watcher::Error) -> bool {
    let code = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code,
        watcher::Error::WatchError(s) => s.code,
        _ => 0,
    };
    code == 401 || code == 403
}

/// One event of the page watch applied to the view.
fn apply(
    view: &LedgerView,
    metrics: &crate::metrics::Metrics,
    building: &mut Option<LedgerIndex>,
    event: watcher::Event<LedgerPage>,
) {
    match event {
        watcher::Event::Init => *building = Some(view.fresh()),
        watcher::Event::InitApply(p) => {
            let unrevoked = building.get_or_insert_with(|| view.fresh()).apply_page(&p);
            unrevoked_found(view, metrics, unrevoked);
        }
        watcher::Event::InitDone => {
            let index = building.take().unwrap_or_default();
            tracing::info!(
                records = index.records(),
                pages = index.pages(),
                revoked = index.revoked(),
                "ledger read"
            );
            view.set(index);
            metrics.ledger_view_current(true);
        }
        watcher::Event::Apply(p) => {
            // Parsed outside the lock the webhook and signer read under.
            let parsed = LedgerIndex::parse_page(&p);
            let mut unrevoked = Vec::new();
            view.update(|i| unrevoked = i.apply_parsed(parsed));
            unrevoked_found(view, metrics, unrevoked);
        }
        watcher::Event::Delete(p) => {
            let mut kept = Vec::new();
            view.update(|i| kept = i.delete_page(&p));
            if kept.is_empty() {
                return;
            }
            let revoked = kept.iter().filter(|r| r.revocation.is_some()).count();
            tracing::error!(
                page = %p.name_any(),
                records = kept.len(),
                revocations = revoked,
                "a ledger page was deleted; its records stay in the index (revocations in force, lines of renewals linked) and are written again"
            );
            metrics.ledger_revocations_restored(revoked);
            let restorer = view.restorer.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(queue) = restorer.as_ref() {
                for r in kept {
                    let _ = queue.send(r);
                }
            }
        }
    }
}

/// Keep `view` current with the Revocation objects (every process reading the ledger): each is
/// in force as soon as it is seen. One that disappears (deleted, or gone from a re-list) stays in
/// force: logged as an error and counted in `kcert_ledger_unrevoked_total` (the leader has
/// written, or will write, its revocations onto the ledger pages, which are the record). A cluster
/// without the Revocation CRD is retried every minute.
pub async fn keep_revocations_current(
    client: Client,
    view: LedgerView,
    metrics: Arc<crate::metrics::Metrics>,
) {
    use futures::StreamExt;
    let api: Api<RevocationObject> = Api::all(client);
    let mut listing: Option<HashSet<String>> = None;
    // The same 30 s watch timeout as the pages': a dark connection is noticed within ~35 s.
    let mut events = watcher(api, watcher::Config::default().timeout(30))
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(e) => {
                let done = matches!(e, watcher::Event::InitDone);
                revocation_event(&view, &metrics, &mut listing, e);
                if done {
                    view.revocations_listed.send_replace(true);
                }
            }
            Err(e) => {
                // No CRD (an older install) or no right to list: the ledger is read without.
                view.revocations_listed.send_replace(true);
                tracing::warn!(error = %e, "watching Revocation objects failed; retrying (revocations already seen stay in force)")
            }
        }
    }
}

fn revocation_event(
    view: &LedgerView,
    metrics: &crate::metrics::Metrics,
    listing: &mut Option<HashSet<String>>,
    event: watcher::Event<RevocationObject>,
) {
    let apply = |r: &RevocationObject| {
        let name = r.name_any();
        let created = r
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        if r.status.is_some() {
            view.reported
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone());
        }
        if r.spec.selector().is_none() {
            tracing::error!(revocation = %name, "a Revocation object names no certificate (exactly one of serial, fingerprint, csr, user); ignored");
        } else if view.apply_revocation(&name, &r.spec, &created) {
            tracing::info!(revocation = %name, revoked_by = %r.spec.revoked_by, reason = %r.spec.reason, "revocation in force");
        }
        name
    };
    let gone = |name: &str| {
        let mut was = false;
        view.update(|i| was = i.revocation_deleted(name));
        if was {
            tracing::error!(revocation = %name, "a Revocation object was deleted; its revocations stay in force");
            metrics.ledger_unrevoked(1);
        }
    };
    match event {
        watcher::Event::Init => *listing = Some(HashSet::new()),
        watcher::Event::InitApply(r) => {
            let name = apply(&r);
            listing.get_or_insert_with(HashSet::new).insert(name);
        }
        watcher::Event::InitDone => {
            let listed = listing.take().unwrap_or_default();
            for name in view.revocation_names() {
                if !listed.contains(&name) {
                    gone(&name);
                }
            }
        }
        watcher::Event::Apply(r) => {
            apply(&r);
        }
        watcher::Event::Delete(r) => gone(&r.name_any()),
    }
}

/// The leader's task that writes Revocation objects onto the ledger: every record an object
/// revokes whose page does not say so yet gets the revocation (in place, conditioned on the
/// page's version), and each object not yet reported gets its `status` (what it revoked).
pub async fn write_revocations(client: Client, view: LedgerView) {
    let objects: Api<RevocationObject> = Api::all(client.clone());
    loop {
        if view
            .objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            // No Revocation objects (most clusters, most of the time): nothing to scan for.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let reported = view
            .reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (unwritten, pending) = {
            let index = view.read();
            match index.as_ref() {
                None => (Vec::new(), Vec::new()),
                Some(i) => (
                    i.unwritten_revocations(),
                    view.revocation_names()
                        .into_iter()
                        .filter(|n| !reported.contains(n))
                        .filter_map(|n| Some((i.revocation_results(&n)?, n)))
                        .collect::<Vec<_>>(),
                ),
            }
        };
        let mut by_page: HashMap<String, Vec<(String, crate::crd::Revocation)>> = HashMap::new();
        for (page, hash, r) in unwritten {
            by_page.entry(page).or_default().push((hash, r));
        }
        let mut all_written = true;
        for (page, items) in by_page {
            let written = kcert_kube::ledger::edit_page(&client, &page, |rec| {
                match items.iter().find(|(h, _)| *h == rec.credential_hash()) {
                    Some((_, r)) if rec.revocation.is_none() => {
                        rec.revocation = Some(r.clone());
                        true
                    }
                    _ => false,
                }
            })
            .await;
            match written {
                Ok(_) => {
                    tracing::info!(page = %page, records = items.len(), "revocations written onto the ledger")
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    all_written = false;
                    tracing::warn!(error = %e, page = %page, "writing revocations onto the ledger failed; retrying");
                }
            }
        }
        // Reported once its revocations are on the pages (the next pass sees them there).
        if all_written {
            for (results, name) in pending {
                if results.iter().any(|r| r.result == "revoked")
                    && view
                        .read()
                        .as_ref()
                        .is_some_and(|i| !i.unwritten_revocations().is_empty())
                {
                    continue;
                }
                let status = crate::crd::RevocationStatus {
                    revoked: results.len() as u32,
                    results,
                };
                let patch = serde_json::json!({"status": status});
                match objects
                    .patch_status(
                        &name,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => {
                        view.reported
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(name);
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        view.reported
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(name);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, revocation = %name, "cannot report a Revocation's status; retrying")
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Revocations found removed from their records: they stay in force (the index keeps them),
/// and are logged, counted and handed to the leader's [`restore_revocations`].
fn unrevoked_found(
    view: &LedgerView,
    metrics: &crate::metrics::Metrics,
    unrevoked: Vec<Unrevoked>,
) {
    if unrevoked.is_empty() {
        return;
    }
    for u in &unrevoked {
        tracing::error!(
            page = %u.page,
            serial = %u.serial,
            user = %u.user,
            revoked_by = %u.revocation.revoked_by,
            record_removed = u.removed,
            "a revoked certificate's ledger record came back without its revocation (the page was edited); it stays revoked"
        );
    }
    metrics.ledger_unrevoked(unrevoked.len());
    let rewriter = view.rewriter.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(queue) = rewriter.as_ref() {
        for u in unrevoked {
            let _ = queue.send(u);
        }
    }
}

/// The reason of the Warning Event on a page whose revocation was removed.
pub const REVOCATION_REMOVED: &str = "RevocationRemoved";

/// The leader's task that writes removed revocations back ([`Unrevoked`], found by the watch):
/// onto the record in place, marked `revocationRestoredAt`, or, when the record itself was
/// removed, as a new record through the writer. Each is announced by a Warning Event on the page.
pub async fn restore_revocations(
    client: Client,
    view: LedgerView,
    recorder: kube::runtime::events::Recorder,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // What the view already holds (found before this process led) first.
    if let Some(index) = view.read().as_ref() {
        for u in index.tampered() {
            let _ = tx.send(u);
        }
    }
    *view.rewriter.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    while let Some(u) = rx.recv().await {
        let now = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let mut backoff = Duration::from_millis(200);
        let outcome = loop {
            let done = if u.removed {
                let restorer = view.restorer.lock().unwrap_or_else(|e| e.into_inner());
                let sent = restorer.as_ref().is_some_and(|q| {
                    q.send(IssuedCertificate {
                        serial: u.serial.clone(),
                        user: u.user.clone(),
                        fingerprint_sha256: u.hash.clone(),
                        revocation: Some(u.revocation.clone()),
                        revocation_restored_at: Some(now.clone()),
                        ..Default::default()
                    })
                    .is_ok()
                });
                Ok(if sent {
                    "written onto a new page"
                } else {
                    "kept in memory only (no writer)"
                })
            } else {
                kcert_kube::ledger::edit_page(&client, &u.page, |r| {
                    if r.credential_hash() == u.hash && r.revocation.is_none() {
                        r.revocation = Some(u.revocation.clone());
                        r.revocation_restored_at = Some(now.clone());
                        true
                    } else {
                        false
                    }
                })
                .await
                .map(|_| "written back onto the record")
            };
            match done {
                Ok(what) => break what,
                // The page is gone: the watch's delete keeps the revocation and rewrites it.
                Err(kube::Error::Api(s)) if s.code == 404 => break "page deleted meanwhile",
                Err(e) if backoff < Duration::from_secs(30) => {
                    tracing::warn!(error = %e, page = %u.page, "writing a removed revocation back failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => {
                    tracing::error!(error = %e, page = %u.page, serial = %u.serial, "cannot write a removed revocation back; it stays in force in memory");
                    break "not written back (kept in memory)";
                }
            }
        };
        tracing::warn!(page = %u.page, serial = %u.serial, outcome, "removed revocation restored");
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("kcert.dev/v1alpha1".into()),
            kind: Some("LedgerPage".into()),
            name: Some(u.page.clone()),
            ..Default::default()
        };
        let note = format!(
            "the revocation of certificate serial {} (user {}; revoked at {} by {}: {}) was removed from this page{}; kcert keeps it in force: {outcome}",
            u.serial,
            u.user,
            u.revocation.revoked_at,
            u.revocation.revoked_by,
            u.revocation.reason,
            if u.removed { " with its record" } else { "" },
        );
        let event = kube::runtime::events::Event {
            type_: kube::runtime::events::EventType::Warning,
            reason: REVOCATION_REMOVED.into(),
            note: Some(crate::conditions::truncate(&note, 1000)),
            action: "RestoreRevocation".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "cannot publish an Event");
        }
    }
}

/// Whether a CSR's certificate is on record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnRecord {
    /// The ledger shows it (or it holds no certificate to record).
    Recorded,
    /// Queued or being written; look again later.
    Queued,
    /// The ledger has not been read yet: cannot tell.
    NotRead,
    /// Not on record, and not recorded: the caller's check found it is not a certificate kcert
    /// issued for this CSR (the reason).
    NotOurs(String),
}

/// Certificates this process has queued (by hash) and has written but the view may not show
/// yet.
#[derive(Default)]
struct Progress {
    queued: HashSet<String>,
    written: HashSet<String>,
    /// CSR uid → hash of the certificate this process issued for it, so the CSR's next watch
    /// event is answered without parsing its certificate again.
    issued_here: HashMap<String, String>,
}

/// The signer's handle on the ledger: queues records for [`write_pages`] and tells whether a
/// CSR's certificate is on record. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    queue: mpsc::UnboundedSender<IssuedCertificate>,
    progress: Arc<Mutex<Progress>>,
    view: LedgerView,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Ledger {
    /// A ledger reading `view`; the receiver goes to [`write_pages`].
    pub fn new(
        view: LedgerView,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> (Self, mpsc::UnboundedReceiver<IssuedCertificate>) {
        let (queue, rx) = mpsc::unbounded_channel();
        *view.restorer.lock().unwrap_or_else(|e| e.into_inner()) = Some(queue.clone());
        let ledger = Ledger {
            queue,
            progress: Arc::default(),
            view,
            metrics,
        };
        (ledger, rx)
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self, r: IssuedCertificate) {
        let hash = r.credential_hash();
        if self.progress().queued.insert(hash) {
            // The writer lives as long as the controllers; if it is gone, so are they.
            let _ = self.queue.send(r);
        }
    }

    /// This process just issued `issued` for `csr`: queue its record.
    pub fn record_issued(&self, csr: &CertificateSigningRequest, issued_der: &[u8]) {
        match CertificateInfo::from_der(issued_der) {
            Ok(cert) => {
                let r = record(csr, &cert);
                if let Some(uid) = &csr.metadata.uid {
                    self.progress()
                        .issued_here
                        .insert(uid.clone(), r.credential_hash());
                }
                self.queue(r)
            }
            // Cannot happen for what we just signed; the CSR's next pass records it if it does.
            Err(e) => tracing::error!(error = %e, "cannot read the certificate just issued"),
        }
    }

    /// Whether the certificate `csr` holds is on record; queues it if it is neither on record
    /// nor queued (issued before a restart, or by another replica that stopped) and `vouch`
    /// finds it is one kcert issued for this CSR — asked only then, as the one costly check.
    pub fn ensure(
        &self,
        csr: &CertificateSigningRequest,
        vouch: impl FnOnce() -> Result<(), String>,
    ) -> OnRecord {
        self.ensure_from(csr, true, vouch)
    }

    /// [`Ledger::ensure`] for a certificate another signer issued for a CSR kcert approved (a
    /// kubelet's, signed by kube-controller-manager): recording it is the normal path, not a
    /// repair.
    pub fn ensure_observed(
        &self,
        csr: &CertificateSigningRequest,
        matches: impl FnOnce() -> Result<(), String>,
    ) -> OnRecord {
        self.ensure_from(csr, false, matches)
    }

    fn ensure_from(
        &self,
        csr: &CertificateSigningRequest,
        repair: bool,
        vouch: impl FnOnce() -> Result<(), String>,
    ) -> OnRecord {
        if let Some(uid) = &csr.metadata.uid {
            let p = self.progress();
            if let Some(hash) = p.issued_here.get(uid) {
                if p.written.contains(hash) {
                    return OnRecord::Recorded;
                }
                if p.queued.contains(hash) {
                    return OnRecord::Queued;
                }
            }
        }
        let Some(cert) = certificate(csr) else {
            return OnRecord::Recorded;
        };
        let hash = kcert_kube::crd::normalize_fingerprint(&cert.fingerprint_sha256);
        // This process's progress first, then the view: a hash leaves `queued` for `written`
        // when the API server acknowledges it, and leaves `written` only once the view holds
        // it, so in this order no record can slip between the two looks.
        {
            let p = self.progress();
            if p.written.contains(&hash) {
                return OnRecord::Recorded;
            }
            if p.queued.contains(&hash) {
                return OnRecord::Queued;
            }
        }
        match self.view.holds(&hash) {
            None => return OnRecord::NotRead,
            Some(true) => return OnRecord::Recorded,
            Some(false) => {}
        }
        if let Err(why) = vouch() {
            return OnRecord::NotOurs(why);
        }
        if repair {
            tracing::warn!(csr = %csr.name_any(), serial = %cert.serial, "issued but not on record (a restart between signing and recording?); recording it now");
            self.metrics.ledger_repaired();
        } else {
            tracing::info!(csr = %csr.name_any(), serial = %cert.serial, "recording a certificate another signer issued for a CSR kcert approved");
        }
        self.queue(record(csr, &cert));
        OnRecord::Queued
    }

    /// Forget what the view now shows, so memory follows what is in flight rather than every
    /// certificate ever issued.
    pub fn forget_recorded(&self) {
        let view = self.view.read();
        let Some(index) = view.as_ref() else {
            return;
        };
        let mut p = self.progress();
        p.written.retain(|h| !index.holds(h));
        let Progress {
            issued_here,
            queued,
            written,
        } = &mut *p;
        issued_here.retain(|_, h| queued.contains(h) || written.contains(h));
    }

    fn written(&self, hashes: impl IntoIterator<Item = String>) {
        let mut p = self.progress();
        for h in hashes {
            p.queued.remove(&h);
            p.written.insert(h);
        }
    }
}

/// How the writer batches.
#[derive(Clone, Copy, Debug)]
pub struct WriterSettings {
    /// How long a record may wait for others to share its write, at most.
    pub flush_after: Duration,
    /// Write sooner when no record has come for this long (a burst has ended).
    pub idle_after: Duration,
}

impl Default for WriterSettings {
    fn default() -> Self {
        WriterSettings {
            flush_after: Duration::from_millis(250),
            idle_after: Duration::from_millis(20),
        }
    }
}

/// Whether records gathered since the last write may be written as soon as they pause, without
/// waiting out the rate limit (one early write per `flush_after`). They may when they came at a
/// burst's rate: at least an append's worth (`APPEND_PAGE_RECORDS`) per `flush_after`,
/// counted over no less than `idle_after` (one record just after a write is not a burst). A
/// trickle (the latency bench's 50/s is 12 per 250 ms) stays batched once per interval; the
/// end of a burst is written at once, so it is on record one write after its last certificate
/// instead of up to `flush_after` later.
pub fn burst_ended(gathered: usize, since_last_write: Duration, settings: WriterSettings) -> bool {
    if since_last_write >= settings.flush_after {
        return true;
    }
    let window = since_last_write.max(settings.idle_after).as_secs_f64();
    let burst_rate =
        kcert_kube::ledger::APPEND_PAGE_RECORDS as f64 / settings.flush_after.as_secs_f64();
    gathered as f64 >= burst_rate * window
}

/// The one writer: collects queued records for up to `flush_after`, then appends them to the
/// page it wrote last if they all fit there (conditioned on its version), or else writes them
/// on new pages. A failed write keeps the batch and retries with backoff; what the API server
/// refuses for good is logged, counted and left for the next start (its CSR is kept).
pub async fn write_pages(
    client: Client,
    ledger: Ledger,
    mut rx: mpsc::UnboundedReceiver<IssuedCertificate>,
    settings: WriterSettings,
) {
    let api: Api<LedgerPage> = Api::all(client);
    let mut open: Option<LedgerPage> = None;
    let mut batch: Vec<IssuedCertificate> = Vec::new();
    let mut backoff = Duration::from_millis(200);
    // When the last page write ended: the early write after a pause (`idle_after`) comes at
    // most once per `flush_after`, so a steady trickle (a record every few ms) is written in
    // batches of `flush_after`, not one write per record or two.
    let mut last_write = tokio::time::Instant::now() - settings.flush_after;
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(r) => batch.push(r),
                None => return,
            }
            // Gather until the flush interval is up or the records stop coming.
            let deadline = tokio::time::Instant::now() + settings.flush_after;
            loop {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    break;
                }
                let earliest = if burst_ended(
                    batch.len(),
                    now.saturating_duration_since(last_write),
                    settings,
                ) {
                    now
                } else {
                    last_write + settings.flush_after
                };
                let until = (now + settings.idle_after).max(earliest).min(deadline);
                match tokio::time::timeout(until.saturating_duration_since(now), rx.recv()).await {
                    Ok(Some(r)) => batch.push(r),
                    _ => break,
                }
            }
        }
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
        }
        // Already on record (the view caught up with an earlier write): nothing to do.
        {
            let view = ledger.view.read();
            if let Some(index) = view.as_ref() {
                let (known, rest): (Vec<_>, Vec<_>) = batch
                    .drain(..)
                    .partition(|r| index.holds(&r.credential_hash()));
                batch = rest;
                drop(view);
                ledger.written(known.iter().map(|r| r.credential_hash()));
            }
        }
        if batch.is_empty() {
            continue;
        }
        let written = write_batch(&api, &mut open, &mut batch, &ledger).await;
        last_write = tokio::time::Instant::now();
        match written {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(kube::Error::Api(s)) if [400, 413, 422].contains(&s.code) => {
                // What landed before the refusal is out of `batch`. One record the API server
                // will not take must not hold up the others: write each of the rest on a page
                // of its own (a fresh one: the open page itself may have been the problem).
                tracing::warn!(error = %s.message, records = batch.len(), "the API server refused a ledger page; writing its records one by one");
                for r in std::mem::take(&mut batch) {
                    let mut one = vec![r];
                    match write_batch(&api, &mut None, &mut one, &ledger).await {
                        Ok(()) => {}
                        Err(kube::Error::Api(s)) if [400, 413, 422].contains(&s.code) => {
                            refused(&ledger, &one[0], &s.message)
                        }
                        Err(_) => batch.append(&mut one),
                    }
                }
                open = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, records = batch.len(), retry_in = ?backoff, "writing the ledger failed; retrying");
                ledger.metrics.ledger_write_failed();
                open = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn refused(ledger: &Ledger, r: &IssuedCertificate, why: &str) {
    // Stays "queued": not retried until the next start, and its CSR is kept (not on record).
    tracing::error!(csr = %r.csr_name, serial = %r.serial, error = %why, "the API server refuses this ledger record; its CSR is kept until it can be recorded");
    ledger.metrics.ledger_write_failed();
}

/// Write `batch` (none of it already on `open`): onto `open` if it all fits, else onto new
/// pages. Each page's records leave `batch` (and count as written) as soon as that page lands,
/// so after an error `batch` holds exactly what is not on record.
async fn write_batch(
    api: &Api<LedgerPage>,
    open: &mut Option<LedgerPage>,
    batch: &mut Vec<IssuedCertificate>,
    ledger: &Ledger,
) -> Result<(), kube::Error> {
    let mut conflicts = 0;
    while !batch.is_empty() {
        // Appending rewrites the whole page (the API server decodes, validates, stores and
        // sends every watcher all of it), so a batch goes onto the open page only if all of it
        // fits and the page stays small beside it (`appends_to_open_page`); otherwise onto new
        // pages of its own. At a high rate every page is written once; a trickle of small
        // batches fills pages of about 50.
        let mut page = match open.take() {
            Some(p)
                if room(&p, batch) == batch.len()
                    && kcert_kube::ledger::appends_to_open_page(
                        p.spec.records.len(),
                        batch.len(),
                    ) =>
            {
                p
            }
            _ => new_page(
                k8s_openapi::jiff::Timestamp::now().as_millisecond(),
                rand_suffix(),
            ),
        };
        let n = room(&page, batch);
        let before = page.spec.records.len();
        for r in &batch[..n] {
            page.spec.push(r);
        }
        let started = std::time::Instant::now();
        let written = if before == 0 {
            api.create(&PostParams::default(), &page).await
        } else {
            api.replace(&page.name_any(), &PostParams::default(), &page)
                .await
        };
        match written {
            Ok(mut w) => {
                tracing::debug!(
                    page = %page.name_any(),
                    records = n,
                    page_records = page.spec.records.len(),
                    page_bytes = page.spec.records.iter().map(String::len).sum::<usize>(),
                    millis = started.elapsed().as_secs_f64() * 1000.0,
                    "ledger page written"
                );
                w.managed_fields_mut().clear();
                *open = Some(w);
                ledger.metrics.ledger_written(n, started.elapsed());
                ledger.written(batch.drain(..n).map(|r| r.credential_hash()));
            }
            Err(kube::Error::Api(s)) if s.code == 409 && before > 0 && conflicts < 10 => {
                // Changed by a revocation since we wrote it: append to the page as it is now.
                conflicts += 1;
                let name = page.name_any();
                let mut now = api.get(&name).await?;
                now.managed_fields_mut().clear();
                *open = Some(now);
            }
            Err(kube::Error::Api(s)) if s.code == 404 && before > 0 => *open = None,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn rand_suffix() -> u32 {
    use kcert_pki::RandomSource;
    let mut b = [0u8; 4];
    // Only for a name's uniqueness; a clock-derived fallback will do.
    if kcert_pki::SystemRandom.fill(&mut b).is_err() {
        return std::process::id() ^ k8s_openapi::jiff::Timestamp::now().subsec_nanosecond() as u32;
    }
    u32::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    type Step = (u64, Result<watcher::Event<LedgerPage>, watcher::Error>);

    #[test]
    fn the_view_says_when_the_ledger_becomes_readable_and_only_then() {
        let view = LedgerView::default();
        let mut installs = view.installs();
        assert!(!installs.has_changed().unwrap());
        view.set(LedgerIndex::default());
        assert!(
            installs.has_changed().unwrap(),
            "the first read is announced"
        );
        installs.borrow_and_update();
        // A re-list over a readable ledger changes nothing for those waiting: none are.
        view.set(LedgerIndex::default());
        assert!(!installs.has_changed().unwrap());
        // After an outage (the index dropped), the next read is announced again.
        view.invalidate();
        assert!(!view.is_read());
        view.set(LedgerIndex::default());
        assert!(installs.has_changed().unwrap());
        assert_eq!(*installs.borrow(), 2);
    }

    #[test]
    fn a_burst_end_is_written_at_once_and_a_trickle_waits_for_the_interval() {
        let s = WriterSettings::default();
        let ms = Duration::from_millis;
        // The end of a burst at ~1,000/s: 10 records 9 ms after the last write.
        assert!(burst_ended(10, ms(9), s));
        // An append's worth waiting is a burst whenever it came.
        assert!(burst_ended(
            kcert_kube::ledger::APPEND_PAGE_RECORDS,
            ms(240),
            s
        ));
        // A trickle at 50/s: one record per 20 ms is 12 per interval, not a burst.
        assert!(!burst_ended(2, ms(40), s));
        assert!(!burst_ended(6, ms(120), s));
        // One record just after a write is not a burst: the rate counts over `idle_after`.
        assert!(!burst_ended(1, ms(1), s));
        // Past the interval, nothing holds the write back.
        assert!(burst_ended(1, ms(250), s));
    }

    proptest::proptest! {
        /// Whatever the settings, early writes of a trickle come at most once per interval:
        /// records at no more than an append's worth per interval never count as a burst
        /// before the interval is up.
        #[test]
        fn a_trickle_never_writes_early(
            flush_ms in 50u64..2_000,
            idle_ms in 1u64..50,
            since_ms in 0u64..2_000,
            per_interval in 0usize..kcert_kube::ledger::APPEND_PAGE_RECORDS,
        ) {
            let s = WriterSettings {
                flush_after: Duration::from_millis(flush_ms),
                idle_after: Duration::from_millis(idle_ms.min(flush_ms)),
            };
            let since = Duration::from_millis(since_ms);
            // Records gathered since the last write at `per_interval` per interval.
            let gathered = (per_interval as f64 * since_ms as f64 / flush_ms as f64).floor() as usize;
            let early = burst_ended(gathered, since, s);
            proptest::prop_assert!(!early || since >= s.flush_after,
                "{gathered} records in {since:?} (interval {flush_ms} ms) counted as a burst");
        }
    }

    /// Events after the given delays, then nothing, ever: a watch on a connection gone dark.
    fn script(
        steps: Vec<Step>,
    ) -> impl futures::Stream<Item = Result<watcher::Event<LedgerPage>, watcher::Error>> + Unpin
    {
        futures::stream::iter(steps)
            .then(|(secs, event)| async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                event
            })
            .chain(futures::stream::pending())
            .boxed()
    }

    fn listed(after: u64) -> Vec<Step> {
        vec![
            (after, Ok(watcher::Event::Init)),
            (0, Ok(watcher::Event::InitDone)),
        ]
    }

    /// `follow` on a task of its own, over `streams` (the last one first) and `probe`.
    fn following<S, F>(
        view: &LedgerView,
        metrics: &Arc<crate::metrics::Metrics>,
        mut streams: Vec<S>,
        probe: impl FnMut() -> F + Send + 'static,
    ) -> tokio::task::JoinHandle<()>
    where
        S: futures::Stream<Item = Result<watcher::Event<LedgerPage>, watcher::Error>>
            + Unpin
            + Send
            + 'static,
        F: std::future::Future<Output = Result<(), String>> + Send,
    {
        let (view, metrics) = (view.clone(), metrics.clone());
        tokio::spawn(async move {
            follow(
                &view,
                &metrics,
                || streams.pop().expect("no more watches scripted"),
                probe,
            )
            .await
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_view_that_cannot_be_refreshed_fails_closed_then_lists_again() {
        let view = LedgerView::default();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let start = tokio::time::Instant::now();
        // The API server does not answer: once at 30 s (a blip), then from 100 s to 200 s. The
        // first watch never errors: it hangs, as on a connection that went dark.
        let probe = move || async move {
            let t = (tokio::time::Instant::now() - start).as_secs();
            if t == 30 || (100..200).contains(&t) {
                Err("connection refused".to_string())
            } else {
                Ok(())
            }
        };
        let streams = vec![script(listed(85)), script(listed(0))];
        let follower = following(&view, &metrics, streams, probe);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert!(view.is_read(), "one failed probe dropped the view");
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert!(
            !view.is_read(),
            "after 60 s without an answer the view still answers"
        );
        assert!(metrics.render().contains("kcert_ledger_view_current 0"));
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert!(view.is_read(), "a new watch did not list the pages again");
        let text = metrics.render();
        assert!(
            text.contains("kcert_ledger_view_outages_total 1")
                && text.contains("kcert_ledger_view_current 1"),
            "{text}"
        );
        follower.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_the_api_server_forbids_fails_closed_at_once() {
        let view = LedgerView::default();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let refused = || {
            Err(watcher::Error::WatchError(Box::new(kube::core::Status {
                code: 403,
                message: "ledgerpages is forbidden".into(),
                ..Default::default()
            })))
        };
        let mut first = listed(0);
        first.push((5, refused()));
        let streams = vec![script(listed(0)), script(first)];
        let follower = following(&view, &metrics, streams, || async { Ok(()) });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(view.is_read());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!view.is_read(), "a forbidden watch kept the view answering");
        // Listed again only after a pause, not in a tight loop.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(view.is_read());
        follower.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_revocation_removed_by_hand_stays_in_force_is_counted_and_queued_to_be_written_back()
    {
        let view = LedgerView::default();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let (tx, mut rewrites) = mpsc::unbounded_channel();
        *view.rewriter.lock().unwrap() = Some(tx);
        let fp = "ab".repeat(32);
        let revoked = IssuedCertificate {
            serial: "01".into(),
            fingerprint_sha256: fp.clone(),
            revocation: Some(kcert_kube::crd::Revocation {
                revoked_at: "2026-12-03T10:00:00Z".into(),
                revoked_by: "admin".into(),
                reason: "stolen".into(),
            }),
            ..Default::default()
        };
        let mut page = kcert_kube::ledger::new_page(0, 1);
        page.spec.push(&revoked);
        let mut edited = page.clone();
        edited.spec.records.clear();
        edited.spec.push(&IssuedCertificate {
            revocation: None,
            ..revoked.clone()
        });
        // The first watch sees the page revoked, then edited; it ends, and the view is dropped
        // (an outage) before the second lists the edited page.
        let first = futures::stream::iter(vec![
            (0, Ok(watcher::Event::Init)),
            (0, Ok(watcher::Event::InitApply(page.clone()))),
            (0, Ok(watcher::Event::InitDone)),
            (1, Ok(watcher::Event::Apply(edited.clone()))),
        ])
        .then(|(secs, event): Step| async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            event
        })
        .boxed();
        let second = script(vec![
            (5, Ok(watcher::Event::Init)),
            (0, Ok(watcher::Event::InitApply(edited))),
            (0, Ok(watcher::Event::InitDone)),
        ])
        .boxed();
        let streams = vec![second, first];
        let follower = following(&view, &metrics, streams, || async { Ok(()) });
        let id = format!("X509SHA256={fp}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            view.read()
                .as_ref()
                .unwrap()
                .lookup(&id)
                .map(|(s, r)| (s, r.reason.as_str())),
            Some(("01", "stolen")),
            "an edited page undid a revocation"
        );
        let queued = rewrites.try_recv().expect("queued to be written back");
        assert_eq!(
            (queued.serial.as_str(), queued.hash.as_str(), queued.removed),
            ("01", fp.as_str(), false)
        );
        assert!(
            metrics.render().contains("kcert_ledger_unrevoked_total 1"),
            "{}",
            metrics.render()
        );
        view.invalidate();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(
            view.read().as_ref().unwrap().lookup(&id).is_some(),
            "a fresh list forgot the revocation"
        );
        assert!(metrics.render().contains("kcert_ledger_unrevoked_total 2"));
        follower.abort();
    }

    #[test]
    fn a_revocation_object_is_in_force_at_once_and_stays_in_force_when_deleted() {
        let view = LedgerView::default();
        let metrics = crate::metrics::Metrics::default();
        let fp = "ab".repeat(32);
        let mut page = kcert_kube::ledger::new_page(0, 1);
        page.spec.push(&IssuedCertificate {
            serial: "01".into(),
            user: "jane".into(),
            fingerprint_sha256: fp.clone(),
            not_before: "2026-12-01T00:00:00Z".into(),
            ..Default::default()
        });
        let mut object = kcert_kube::revocation::revocation_object(
            &kcert_kube::revocation::Selector::User("jane".into()),
            "rita",
            "laptop stolen",
        );
        object.metadata.name = Some("revoke-1".into());
        object.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-12-02T00:00:00Z".parse().unwrap(),
            ));
        let mut listing = None;
        // Seen before the pages are read: applied to the index the first list builds.
        revocation_event(&view, &metrics, &mut listing, watcher::Event::Init);
        revocation_event(
            &view,
            &metrics,
            &mut listing,
            watcher::Event::InitApply(object.clone()),
        );
        revocation_event(&view, &metrics, &mut listing, watcher::Event::InitDone);
        let mut building = None;
        apply(&view, &metrics, &mut building, watcher::Event::Init);
        apply(
            &view,
            &metrics,
            &mut building,
            watcher::Event::InitApply(page),
        );
        apply(&view, &metrics, &mut building, watcher::Event::InitDone);
        let id = format!("X509SHA256={fp}");
        let revoked_by = |view: &LedgerView| {
            view.read()
                .as_ref()
                .and_then(|i| i.lookup(&id).map(|(_, r)| r.revoked_by.clone()))
        };
        assert_eq!(revoked_by(&view).as_deref(), Some("rita"));
        assert_eq!(
            view.read().as_ref().unwrap().unwritten_revocations().len(),
            1
        );
        // Deleted: still in force, logged and counted once (a re-list without it counts nothing
        // more).
        revocation_event(
            &view,
            &metrics,
            &mut listing,
            watcher::Event::Delete(object),
        );
        assert_eq!(revoked_by(&view).as_deref(), Some("rita"));
        revocation_event(&view, &metrics, &mut listing, watcher::Event::Init);
        revocation_event(&view, &metrics, &mut listing, watcher::Event::InitDone);
        assert_eq!(revoked_by(&view).as_deref(), Some("rita"));
        assert!(metrics.render().contains("kcert_ledger_unrevoked_total 1"));
        // And in the index of the next full list of the pages.
        view.invalidate();
        let mut building = None;
        let mut page = kcert_kube::ledger::new_page(0, 2);
        page.spec.push(&IssuedCertificate {
            serial: "01".into(),
            user: "jane".into(),
            fingerprint_sha256: fp.clone(),
            not_before: "2026-12-01T00:00:00Z".into(),
            ..Default::default()
        });
        apply(&view, &metrics, &mut building, watcher::Event::Init);
        apply(
            &view,
            &metrics,
            &mut building,
            watcher::Event::InitApply(page),
        );
        apply(&view, &metrics, &mut building, watcher::Event::InitDone);
        assert_eq!(revoked_by(&view).as_deref(), Some("rita"));
    }

    #[tokio::test(start_paused = true)]
    async fn deleting_a_page_never_undoes_its_revocations() {
        let view = LedgerView::default();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let (_ledger, mut written) = Ledger::new(view.clone(), metrics.clone());
        let fp = "ab".repeat(32);
        let mut page = kcert_kube::ledger::new_page(0, 1);
        page.spec.push(&IssuedCertificate {
            serial: "01".into(),
            fingerprint_sha256: fp.clone(),
            revocation: Some(kcert_kube::crd::Revocation {
                revoked_at: "2026-12-03T10:00:00Z".into(),
                revoked_by: "admin".into(),
                reason: "stolen".into(),
            }),
            ..Default::default()
        });
        page.spec.push(&IssuedCertificate {
            serial: "02".into(),
            fingerprint_sha256: "cd".repeat(32),
            ..Default::default()
        });
        let steps: Vec<Step> = vec![
            (0, Ok(watcher::Event::Init)),
            (0, Ok(watcher::Event::InitApply(page.clone()))),
            (0, Ok(watcher::Event::InitDone)),
            (1, Ok(watcher::Event::Delete(page))),
        ];
        let streams = vec![script(steps)];
        let follower = following(&view, &metrics, streams, || async { Ok(()) });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let id = format!("X509SHA256={fp}");
        let index = view.read();
        let index = index.as_ref().unwrap();
        assert_eq!(
            index.lookup(&id).map(|(s, r)| (s, r.reason.as_str())),
            Some(("01", "stolen"))
        );
        // Kept in force, but not "on record": the writer puts it on a page again.
        assert!(!index.holds(&fp));
        // The page's other records stay too (a renewal's parent link must not be cut), not on
        // record either, and are written again.
        let other = format!("X509SHA256={}", "cd".repeat(32));
        assert!(index.knows(&other) && !index.holds(&"cd".repeat(32)));
        let mut again: Vec<(String, bool)> = std::iter::from_fn(|| written.try_recv().ok())
            .map(|r| (r.serial, r.revocation.is_some()))
            .collect();
        again.sort();
        assert_eq!(again, [("01".to_string(), true), ("02".to_string(), false)]);
        assert!(
            metrics
                .render()
                .contains("kcert_ledger_revocations_restored_total 1")
        );
        follower.abort();
    }
}
