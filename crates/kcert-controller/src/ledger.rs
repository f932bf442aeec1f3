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
use crate::crd::{IssuedCertificate, LedgerPage};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_kube::ledger::{LedgerIndex, new_page, room};
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
    CertificateInfo::from_pem(&pem.0).ok()
}

/// The ledger as this process sees it: one watch of the pages, shared by the webhook (every
/// replica), the approver's renewal rules, the signer and the cleaner. `None` inside until the
/// pages have been listed once: nothing that needs the ledger decides before that.
#[derive(Clone, Default)]
pub struct LedgerView {
    current: Arc<RwLock<Option<LedgerIndex>>>,
    /// Where revocations of a deleted page go to be written again (this process's writer).
    restorer: Arc<Mutex<Option<mpsc::UnboundedSender<IssuedCertificate>>>>,
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
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Put `index` in force (the watch does this after each full list; benchmarks fill it).
    pub fn set(&self, index: LedgerIndex) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(index);
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
            watcher(api.clone(), watcher::Config::default().page_size(20))
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
        let mut events = watch();
        let mut ticks = tokio::time::interval(LEDGER_PROBE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (failed, refused) = tokio::select! {
                event = events.next() => {
                    let Some(event) = event else { break };
                    match event {
                        Ok(event) => {
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
                    failing_since = Some(now);
                }
                last_error = Some(now);
            } else if last_error.is_none_or(|t| now - t > LEDGER_PROBE_EVERY) {
                // A success after the last error (not an answer that raced it): over.
                failing_since = None;
            }
            if failing_since.is_some_and(|t| now - t >= LEDGER_STALE_AFTER) {
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
        watcher::Event::Init => *building = Some(LedgerIndex::default()),
        watcher::Event::InitApply(p) => {
            building.get_or_insert_with(Default::default).apply_page(&p)
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
            view.update(|i| i.apply_parsed(parsed))
        }
        watcher::Event::Delete(p) => {
            let mut kept = Vec::new();
            view.update(|i| kept = i.delete_page(&p));
            if kept.is_empty() {
                return;
            }
            tracing::error!(
                page = %p.name_any(),
                revocations = kept.len(),
                "a ledger page holding revocations was deleted; they stay in force and are written again"
            );
            metrics.ledger_revocations_restored(kept.len());
            let restorer = view.restorer.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(queue) = restorer.as_ref() {
                for r in kept {
                    let _ = queue.send(r);
                }
            }
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
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(r) => batch.push(r),
                None => return,
            }
            // Gather until the flush interval is up or the records stop coming.
            let deadline = tokio::time::Instant::now() + settings.flush_after;
            while let Ok(Some(r)) = tokio::time::timeout(
                settings
                    .idle_after
                    .min(deadline.saturating_duration_since(tokio::time::Instant::now())),
                rx.recv(),
            )
            .await
            {
                batch.push(r);
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
        match write_batch(&api, &mut open, &mut batch, &ledger).await {
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
        // fits; otherwise onto new pages of its own. At a high rate every page is written
        // once; at a low rate small batches fill one page.
        let mut page = match open.take() {
            Some(p) if room(&p, batch) == batch.len() => p,
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
        let mut streams = vec![script(listed(85)), script(listed(0))];
        let follower = {
            let (view, metrics) = (view.clone(), metrics.clone());
            tokio::spawn(async move {
                follow(
                    &view,
                    &metrics,
                    || streams.pop().expect("a third watch"),
                    probe,
                )
                .await
            })
        };
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
        let mut streams = vec![script(listed(0)), script(first)];
        let follower = {
            let (view, metrics) = (view.clone(), metrics.clone());
            tokio::spawn(async move {
                follow(
                    &view,
                    &metrics,
                    || streams.pop().expect("a third watch"),
                    || async { Ok(()) },
                )
                .await
            })
        };
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
        let mut streams = vec![script(steps)];
        let follower = {
            let (view, metrics) = (view.clone(), metrics.clone());
            tokio::spawn(async move {
                follow(
                    &view,
                    &metrics,
                    || streams.pop().expect("one watch"),
                    || async { Ok(()) },
                )
                .await
            })
        };
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
        assert!(!index.knows(&format!("X509SHA256={}", "cd".repeat(32))));
        let again = written
            .try_recv()
            .expect("the revocation queued to be written again");
        assert_eq!(
            (again.serial.as_str(), again.revocation.is_some()),
            ("01", true)
        );
        assert!(
            written.try_recv().is_err(),
            "only the revocation is written again"
        );
        assert!(
            metrics
                .render()
                .contains("kcert_ledger_revocations_restored_total 1")
        );
        follower.abort();
    }
}
