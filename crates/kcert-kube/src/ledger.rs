//! The issuance ledger as the API server holds it: [`LedgerPage`] objects of many
//! [`IssuedCertificate`] records each, and the index every reader builds from them (by
//! credential hash, the SHA-256 the API server puts in a user's `credential-id`).
//!
//! One object per certificate cost one API write per certificate and halved issuance
//! throughput; a page holds up to [`PAGE_MAX_RECORDS`] records (and at most [`PAGE_MAX_BYTES`]
//! of JSON, well under etcd's 1.5 MiB request limit), so the signer writes once per batch. Each
//! record is one JSON string on its page: the API server spends 0.09 ms of CPU per record so,
//! against 0.41 ms for the same record as schema-validated fields (`kcert-bench ledger`).
//!
//! A record kcert cannot read (edited by hand) fails closed: if its fingerprint can still be
//! found, that certificate is treated as revoked; if not, the index says so and the webhook
//! answers 503 until the page is fixed.
//!
//! Pages also hold node revocations ([`RevokedNodeRecord`], `kcert revoke --node`): records
//! that are no certificate's, indexed by node name ([`LedgerIndex::revoked_node`]) for the
//! kubelet rules. One kcert cannot read is the node's revocation in force (fail closed).

use crate::crd::{
    Clearance, IssuedCertificate, LedgerPage, LedgerPageSpec, Revocation, RevokedNodeRecord,
};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use std::collections::HashMap;
use std::sync::Arc;

/// Records per page at most.
pub const PAGE_MAX_RECORDS: usize = 200;

/// Serialized size of a page's records at most (bytes), well under etcd's 1.5 MiB. An empty
/// page takes one record of any size (the schema allows 1 MiB per record; a record carries the
/// subject, which policies bound with `subjectLimits`, twice).
pub const PAGE_MAX_BYTES: usize = 512 * 1024;

/// The label every ledger page carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kcert");

/// A new, empty page named for `now_unix_ms` and a random suffix (so that pages sort by age
/// and two writers never pick the same name).
pub fn new_page(now_unix_ms: i64, suffix: u32) -> LedgerPage {
    let t = k8s_openapi::jiff::Timestamp::from_millisecond(now_unix_ms)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let name = format!("{}-{suffix:08x}", t.strftime("%Y%m%d-%H%M%S"));
    LedgerPage {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into()),
            ..Default::default()
        },
        spec: LedgerPageSpec::default(),
    }
}

/// Appending rewrites the whole page (the API server decodes, validates and stores all of it,
/// and sends it to every watcher), so the open page takes a batch only while it stays small
/// beside it: at most [`APPEND_PAGE_RECORDS`] records after the append, or
/// [`APPEND_AMPLIFICATION`] times the batch. A steady trickle of small batches then rewrites
/// a few times what it records, not a 200-record page per batch; a burst still fills pages.
pub const APPEND_PAGE_RECORDS: usize = 50;
/// See [`APPEND_PAGE_RECORDS`].
pub const APPEND_AMPLIFICATION: usize = 4;

/// Whether a batch of `batch` records goes onto an open page holding `held` (pure; room on
/// the page is [`room`]'s question).
pub fn appends_to_open_page(held: usize, batch: usize) -> bool {
    held + batch <= APPEND_PAGE_RECORDS.max(APPEND_AMPLIFICATION * batch)
}

/// What one record adds to a page's JSON (the record as a JSON string, quoted and escaped).
pub fn record_bytes(r: &IssuedCertificate) -> usize {
    serde_json::to_string(r).map_or(usize::MAX / 2, |s| encoded_len(&s))
}

fn encoded_len(record: &str) -> usize {
    serde_json::to_string(record).map_or(usize::MAX / 2, |s| s.len() + 1)
}

/// How many of `records` (in order) still fit on `page` (pure).
pub fn room(page: &LedgerPage, records: &[IssuedCertificate]) -> usize {
    let held = page.spec.records.len();
    let mut bytes: usize = page.spec.records.iter().map(|s| encoded_len(s)).sum();
    let mut fit = 0;
    for r in records {
        let b = record_bytes(r);
        let count = held + fit;
        // An empty page takes any one record, however large, so nothing is ever unplaceable.
        if count >= PAGE_MAX_RECORDS || (count > 0 && bytes + b > PAGE_MAX_BYTES) {
            break;
        }
        bytes += b;
        fit += 1;
    }
    fit
}

/// Every page, read in chunks of 50 (a page can be half a megabyte).
pub async fn list_pages(client: &Client) -> Result<Vec<LedgerPage>, kube::Error> {
    let api: Api<LedgerPage> = Api::all(client.clone());
    let mut pages = Vec::new();
    let mut params = ListParams::default().limit(50);
    loop {
        let list = api.list(&params).await?;
        let next = list.metadata.continue_.clone().filter(|c| !c.is_empty());
        pages.extend(list.items);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(pages),
        }
    }
}

/// Every readable certificate record of `pages`, with the page it is on (node revocations are
/// [`node_revocations`]).
pub fn records(pages: &[LedgerPage]) -> Vec<(&str, IssuedCertificate)> {
    pages
        .iter()
        .flat_map(|p| {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            p.spec
                .read()
                .filter_map(Result::ok)
                .filter(|r| !r.is_node_revocation())
                .map(move |r| (name, r))
        })
        .collect()
}

/// Every readable node revocation record of `pages` (in force or cleared), with the page it is
/// on, oldest page first.
pub fn node_revocations(pages: &[LedgerPage]) -> Vec<(&str, RevokedNodeRecord)> {
    let mut out: Vec<(&str, RevokedNodeRecord)> = pages
        .iter()
        .flat_map(|p| {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            p.spec
                .records
                .iter()
                .filter_map(|s| serde_json::from_str::<RevokedNodeRecord>(s).ok())
                .filter(|r| r.record.is_node_revocation())
                .map(move |r| (name, r))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// The records of `pages` kcert cannot read: (page, position, why).
pub fn unreadable(pages: &[LedgerPage]) -> Vec<(&str, usize, String)> {
    pages
        .iter()
        .flat_map(|p| {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            p.spec
                .read()
                .enumerate()
                .filter_map(move |(i, r)| r.err().map(|e| (name, i, e)))
        })
        .collect()
}

/// Change readable certificate records of page `name` in place with `edit` (which returns
/// whether it changed the record), conditioned on the version read; a conflicting write (the
/// signer appending, another revocation) is read again and `edit` applied to the new version.
/// Unreadable records and node revocations are left as they are. Returns the page's readable
/// certificate records afterwards.
pub async fn edit_page(
    client: &Client,
    name: &str,
    edit: impl FnMut(&mut IssuedCertificate) -> bool,
) -> Result<Vec<IssuedCertificate>, kube::Error> {
    edit_records(
        client,
        name,
        |r: &IssuedCertificate| !r.is_node_revocation(),
        edit,
    )
    .await
}

/// [`edit_page`] for the node revocation records of page `name` (clearing one).
pub async fn edit_node_revocations(
    client: &Client,
    name: &str,
    edit: impl FnMut(&mut RevokedNodeRecord) -> bool,
) -> Result<Vec<RevokedNodeRecord>, kube::Error> {
    edit_records(
        client,
        name,
        |r: &RevokedNodeRecord| r.record.is_node_revocation(),
        edit,
    )
    .await
}

/// The records of page `name` that read as `T` and are `of_kind`, edited in place (see
/// [`edit_page`]).
async fn edit_records<T: serde::de::DeserializeOwned + serde::Serialize>(
    client: &Client,
    name: &str,
    of_kind: impl Fn(&T) -> bool,
    mut edit: impl FnMut(&mut T) -> bool,
) -> Result<Vec<T>, kube::Error> {
    let api: Api<LedgerPage> = Api::all(client.clone());
    let read = |s: &String| serde_json::from_str::<T>(s).ok().filter(|r| of_kind(r));
    let readable = |p: &LedgerPage| p.spec.records.iter().filter_map(read).collect::<Vec<_>>();
    let mut attempt = 0;
    loop {
        let mut page = api.get(name).await?;
        let mut changed = false;
        for s in page.spec.records.iter_mut() {
            let Some(mut r) = read(s) else {
                continue;
            };
            if edit(&mut r) {
                // Written back as it was, with only what `edit` changed replaced: fields this
                // version of kcert does not know (a newer one wrote them) are kept.
                let mut value: serde_json::Value =
                    serde_json::from_str(s).expect("it parsed as a record");
                let edited = serde_json::to_value(&r).expect("a record serializes");
                if let (Some(v), Some(e)) = (value.as_object_mut(), edited.as_object()) {
                    for (k, x) in e {
                        v.insert(k.clone(), x.clone());
                    }
                }
                *s = value.to_string();
                changed = true;
            }
        }
        if !changed {
            return Ok(readable(&page));
        }
        match api.replace(name, &PostParams::default(), &page).await {
            Ok(written) => return Ok(readable(&written)),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 20 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// What the index keeps of a record: what the webhook, renewal rules, signer and cleaner read
/// (a few hundred bytes, where the whole record would take two kilobytes).
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerEntry {
    /// Serial, hex.
    pub serial: Box<str>,
    /// The user (CN).
    pub user: Box<str>,
    /// The groups (O).
    pub groups: Box<[Box<str>]>,
    /// NotAfter, Unix seconds (0 if unreadable).
    pub not_after: i64,
    /// When the chain of renewals began, Unix seconds (its NotBefore if not recorded).
    pub chain_started: i64,
    /// The revocation, if revoked.
    pub revocation: Option<Box<crate::crd::Revocation>>,
    /// The certificate its requester authenticated with (its parent), by hash.
    pub parent: Option<[u8; 32]>,
    /// False for the stand-in of a record kcert cannot read (revoked, fail closed): such an
    /// entry does not count as the certificate being on record.
    pub readable: bool,
    /// True when the record on its page is not revoked but this index saw it revoked before
    /// (an unrevoke, by hand): `revocation` is the one remembered, kept in force.
    pub tampered: bool,
    /// The CSR's name.
    pub csr: Box<str>,
    /// When it was issued, Unix seconds (NotBefore plus kcert's backdating; 0 if unreadable).
    pub issued: i64,
    /// The Revocation object whose revocation this entry holds while its page does not (yet).
    pub by_object: Option<Arc<str>>,
    /// Which CA issued it: [`issuer_tag`] of its authority key identifier; `None` on records
    /// written before kcert recorded it.
    pub issuer: Option<[u8; 20]>,
}

/// An authority (or subject) key identifier in hex as the 20 bytes an index keeps: itself when
/// it is 20 bytes (SHA-1 sized, as rcgen and openssl make them), else the first 20 bytes of its
/// SHA-256. `None` if it is not hex.
pub fn issuer_tag(key_id_hex: &str) -> Option<[u8; 20]> {
    let bytes = hex::decode(key_id_hex.trim()).ok()?;
    let mut tag = [0u8; 20];
    if bytes.len() == 20 {
        tag.copy_from_slice(&bytes);
    } else {
        let digest = hex::decode(kcert_pki::sha256_hex(&bytes)).ok()?;
        tag.copy_from_slice(&digest[..20]);
    }
    Some(tag)
}

impl LedgerEntry {
    fn of(r: &IssuedCertificate) -> Self {
        let unix = |t: &str| {
            t.parse::<k8s_openapi::jiff::Timestamp>()
                .map(|t| t.as_second())
                .unwrap_or(0)
        };
        LedgerEntry {
            serial: r.serial.as_str().into(),
            user: r.user.as_str().into(),
            groups: r.groups.iter().map(|g| g.as_str().into()).collect(),
            not_after: unix(&r.not_after),
            chain_started: unix(r.chain_started_at.as_deref().unwrap_or(&r.not_before)),
            revocation: r.revocation.clone().map(Box::new),
            parent: r.requested_with.as_deref().and_then(hash_of),
            readable: true,
            tampered: false,
            csr: r.csr_name.as_str().into(),
            issued: match unix(&r.not_before) {
                0 => 0,
                t => t + kcert_pki::BACKDATE.as_secs() as i64,
            },
            by_object: None,
            issuer: r.issuer_key_id.as_deref().and_then(issuer_tag),
        }
    }
}

/// A SHA-256 as 32 bytes (from hex in any spelling [`crate::crd::normalize_fingerprint`]
/// accepts); `None` unless it is 64 hex digits.
fn hash_of(hex: &str) -> Option<[u8; 32]> {
    let hex = crate::crd::normalize_fingerprint(hex);
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A node revocation as the index keeps it ([`LedgerIndex::revoked_node`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRevocationEntry {
    /// The page holding it.
    pub page: Arc<str>,
    /// Who revoked the node, when, why (for a record kcert cannot read: what is wrong with it).
    pub revocation: Revocation,
    /// Who cleared it, if anyone did.
    pub cleared: Option<Clearance>,
    /// False for the stand-in of a record kcert cannot read: in force until the record is fixed.
    pub readable: bool,
}

impl NodeRevocationEntry {
    /// The revocation as the kubelet rules read it.
    pub fn for_rules(&self) -> kcert_policy::nodes::NodeRevocation {
        kcert_policy::nodes::NodeRevocation {
            revoked_at: self.revocation.revoked_at.clone(),
            revoked_by: self.revocation.revoked_by.clone(),
            reason: self.revocation.reason.clone(),
        }
    }
}

/// Most parents [`LedgerIndex::revoked_lineage`] walks (five-minute renewals for a year are
/// 105,120; hourly ones 8,760).
pub const MAX_LINEAGE: usize = 100_000;

static LINEAGE_TOO_LONG: std::sync::LazyLock<crate::crd::Revocation> = std::sync::LazyLock::new(
    || crate::crd::Revocation {
        revoked_at: String::new(),
        revoked_by: "kcert".into(),
        reason: format!(
            "its line of renewals is longer than {MAX_LINEAGE} certificates and cannot be checked (fail closed): request a new certificate"
        ),
    },
);

/// A revoked certificate, or the revoked ancestor of one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RevokedLineage<'a> {
    /// The serial of the certificate asked about.
    pub serial: &'a str,
    /// The revocation in force for it.
    pub revocation: &'a crate::crd::Revocation,
    /// The serial of the revoked ancestor it descends from, when not itself revoked.
    pub through: Option<&'a str>,
}

/// A page read into index entries, ready for [`LedgerIndex::apply_parsed`].
pub struct ParsedPage {
    name: Arc<str>,
    entries: Vec<([u8; 32], LedgerEntry)>,
    nodes: Vec<(Box<str>, NodeRevocationEntry)>,
    unidentifiable: usize,
}

/// What a page put into the index, to take it out again.
#[derive(Clone, Debug, Default, PartialEq)]
struct PageKeys {
    hashes: Vec<[u8; 32]>,
    nodes: Vec<Box<str>>,
    /// Records that named no certificate at all.
    unidentifiable: usize,
}

/// A revocation that disappeared from a record this index had seen revoked (the page edited by
/// hand, or replaced by a writer that dropped it): kept in force by the index, returned by
/// [`LedgerIndex::apply_parsed`] so that the watcher can report it and a writer put it back.
#[derive(Clone, Debug, PartialEq)]
pub struct Unrevoked {
    /// The page whose record came back unrevoked.
    pub page: String,
    /// The certificate's serial.
    pub serial: String,
    /// The certificate's SHA-256 (lower-case hex).
    pub hash: String,
    /// The certificate's user.
    pub user: String,
    /// The record itself is gone from the page (not only its revocation).
    pub removed: bool,
    /// The revocation remembered, in force again.
    pub revocation: Revocation,
}

fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Revocation object as the index applies it.
#[derive(Clone, Debug, PartialEq)]
struct ObjectRule {
    selector: crate::revocation::Selector,
    /// The selector normalized (what the index files the object under).
    key: SelectorKey,
    revocation: Revocation,
    /// Its creation, Unix seconds: it revokes certificates issued until then.
    created: i64,
    /// The object was deleted; the revocation stays in force.
    deleted: bool,
}

impl ObjectRule {
    /// Whether it selects the record (no allocation: this runs over every record when an
    /// object arrives).
    fn selects(&self, hash: &[u8; 32], e: &LedgerEntry) -> bool {
        e.issued <= self.created
            && match &self.key {
                SelectorKey::Serial(s) => {
                    let ours = e.serial.trim_start_matches('0');
                    ours.eq_ignore_ascii_case(s)
                }
                SelectorKey::Fingerprint(h) => h == hash,
                SelectorKey::Csr(name) => &*e.csr == name,
                SelectorKey::User(user) => &*e.user == user,
                SelectorKey::Nothing => false,
            }
    }
}

/// What a Revocation object selects by, normalized once: objects are indexed by it, so a record
/// finds the objects that select it in a few lookups, however many objects there are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum SelectorKey {
    Serial(String),
    Fingerprint([u8; 32]),
    Csr(String),
    User(String),
    /// A fingerprint that is no SHA-256: selects nothing.
    Nothing,
}

impl SelectorKey {
    fn serial(s: &str) -> String {
        s.to_ascii_lowercase().trim_start_matches('0').to_string()
    }

    fn of_selector(s: &crate::revocation::Selector) -> SelectorKey {
        use crate::revocation::Selector;
        match s {
            Selector::Serial(serial) => SelectorKey::Serial(Self::serial(serial)),
            Selector::Fingerprint(f) => match hash_of(f) {
                Some(h) => SelectorKey::Fingerprint(h),
                None => SelectorKey::Nothing,
            },
            Selector::Csr(name) => SelectorKey::Csr(name.clone()),
            Selector::User(user) => SelectorKey::User(user.clone()),
        }
    }

    /// Every key a record can be selected by.
    fn of_entry(hash: &[u8; 32], e: &LedgerEntry) -> [SelectorKey; 4] {
        [
            SelectorKey::Serial(Self::serial(&e.serial)),
            SelectorKey::Fingerprint(*hash),
            SelectorKey::Csr(e.csr.to_string()),
            SelectorKey::User(e.user.to_string()),
        ]
    }
}

/// One record as the index keeps it, with the page holding it.
#[derive(Clone, Debug, PartialEq)]
struct Copy {
    page: Arc<str>,
    entry: LedgerEntry,
}

/// Every certificate in the ledger by credential hash (lower-case hex SHA-256 of the
/// certificate): what the webhook answers from, what renewals are checked against and what the
/// signer and cleaner consult to know a certificate is on record. Kept current page by page
/// ([`LedgerIndex::apply_page`], [`LedgerIndex::remove_page`]), never rebuilt per event.
///
/// A certificate recorded twice (a record written again after a lost reply or by a new leader)
/// is one entry; if any copy is revoked, it is revoked (fail closed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LedgerIndex {
    by_hash: HashMap<[u8; 32], Vec<Copy>>,
    /// Node revocations (in force and cleared) by node name.
    nodes: HashMap<Box<str>, Vec<NodeRevocationEntry>>,
    /// Per page: what its records put in the index.
    pages: HashMap<Arc<str>, PageKeys>,
    revoked: usize,
    unidentifiable: usize,
    /// Every revocation this index (and the ones it was built beside, [`LedgerIndex::remembering`])
    /// has seen on a readable record, by hash: a revocation is never undone, so a record seen
    /// revoked stays revoked in this process whatever its page says later.
    remembered: HashMap<[u8; 32], Remembered>,
    /// Revocation objects in force, by name (kept when deleted).
    objects: HashMap<Arc<str>, ObjectRule>,
    /// The same objects' names by what they select.
    objects_by_key: HashMap<SelectorKey, Vec<Arc<str>>>,
    /// Stand-ins for deleted pages (`deleted:<name>`, every record of the page), carried into
    /// every index built beside this one: a deleted page must not cut a line of renewals.
    standins: Vec<(String, Vec<String>)>,
}

/// A revocation seen on a readable record, and the pages it was seen on.
#[derive(Clone, Debug, PartialEq)]
struct Remembered {
    revocation: Box<Revocation>,
    pages: Vec<Arc<str>>,
}

impl LedgerIndex {
    /// An empty index that remembers the revocations `previous` saw (a re-list builds the new
    /// index beside the old one: an unrevoke made while the watch was down is still caught).
    pub fn remembering(previous: Option<&LedgerIndex>) -> Self {
        LedgerIndex {
            remembered: previous.map(|p| p.remembered.clone()).unwrap_or_default(),
            objects: previous.map(|p| p.objects.clone()).unwrap_or_default(),
            objects_by_key: previous
                .map(|p| p.objects_by_key.clone())
                .unwrap_or_default(),
            ..Default::default()
        }
        .with_standins(previous.map(|p| p.standins.clone()).unwrap_or_default())
    }

    /// Put stand-ins for deleted pages in force (their records not counting as on record).
    fn with_standins(mut self, standins: Vec<(String, Vec<String>)>) -> Self {
        for (name, records) in &standins {
            let mut page = new_page(0, 0);
            page.metadata.name = Some(name.clone());
            page.spec.records = records.clone();
            let mut parsed = Self::parse_page(&page);
            for (_, entry) in parsed.entries.iter_mut() {
                entry.readable = false;
            }
            self.apply_parsed(parsed);
        }
        self.standins = standins;
        self
    }

    /// Put Revocation object `name` (created at `created`, RFC 3339) in force: every record it
    /// selects issued until then is revoked from now on, those recorded later included. Returns
    /// false if it selects nothing it can (no selector) or was already in force.
    pub fn apply_revocation(
        &mut self,
        name: &str,
        spec: &crate::crd::RevocationSpec,
        created: &str,
    ) -> bool {
        if self.objects.contains_key(name) {
            return false;
        }
        let Some(selector) = spec.selector() else {
            return false;
        };
        let rule = ObjectRule {
            key: SelectorKey::of_selector(&selector),
            selector,
            revocation: Revocation {
                revoked_at: created.to_string(),
                revoked_by: spec.revoked_by.clone(),
                reason: spec.reason.clone(),
            },
            created: created
                .parse::<k8s_openapi::jiff::Timestamp>()
                .map(|t| t.as_second())
                .unwrap_or(i64::MAX),
            deleted: false,
        };
        let name: Arc<str> = Arc::from(name);
        let key = rule.key.clone();
        for (hash, copies) in self.by_hash.iter_mut() {
            if copies.iter().any(|c| rule.selects(hash, &c.entry)) {
                for c in copies.iter_mut().filter(|c| c.entry.revocation.is_none()) {
                    c.entry.revocation = Some(Box::new(rule.revocation.clone()));
                    c.entry.by_object = Some(name.clone());
                    self.revoked += 1;
                }
            }
        }
        self.objects_by_key
            .entry(key)
            .or_default()
            .push(name.clone());
        self.objects.insert(name, rule);
        true
    }

    /// Revocation object `name` was deleted: its revocations stay in force. Returns whether it
    /// was in force until now (false if unknown or already deleted).
    pub fn revocation_deleted(&mut self, name: &str) -> bool {
        match self.objects.get_mut(name) {
            Some(r) if !r.deleted => {
                r.deleted = true;
                true
            }
            _ => false,
        }
    }

    /// Whether Revocation object `name` is in force (deleted ones stay in force).
    pub fn has_revocation(&self, name: &str) -> bool {
        self.objects.contains_key(name)
    }

    /// Revocations in force through Revocation objects that the records' pages do not hold yet:
    /// (page, certificate hash, revocation), for the leader to write.
    pub fn unwritten_revocations(&self) -> Vec<(String, String, Revocation)> {
        let mut out: Vec<_> = self
            .by_hash
            .iter()
            .flat_map(|(h, copies)| {
                copies
                    .iter()
                    .filter(|c| c.entry.readable && c.entry.by_object.is_some())
                    .filter_map(|c| {
                        Some((
                            c.page.to_string(),
                            hex(h),
                            c.entry.revocation.as_deref()?.clone(),
                        ))
                    })
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// What Revocation object `name` revoked, record by record (readable copies), as `kcert
    /// revoke` reports it: `revoked` where its revocation is the one in force, `already revoked`
    /// where an earlier one stands. `None` if it is not in force.
    pub fn revocation_results(&self, name: &str) -> Option<Vec<crate::crd::RevocationResult>> {
        let rule = self.objects.get(name)?;
        let mut out: Vec<crate::crd::RevocationResult> = self
            .by_hash
            .iter()
            .filter(|(h, copies)| copies.iter().any(|c| rule.selects(h, &c.entry)))
            .flat_map(|(_, copies)| {
                copies.iter().filter(|c| c.entry.readable).map(|c| {
                    let in_force = c.entry.revocation.as_deref().cloned().unwrap_or_default();
                    crate::crd::RevocationResult {
                        page: c.page.to_string(),
                        serial: c.entry.serial.to_string(),
                        user: c.entry.user.to_string(),
                        result: if in_force == rule.revocation {
                            "revoked".into()
                        } else {
                            "already revoked".into()
                        },
                        revocation: in_force,
                    }
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.page, &a.serial).cmp(&(&b.page, &b.serial)));
        Some(out)
    }

    /// Every record kept revoked although its page no longer says so ([`Unrevoked`]), by page
    /// and serial.
    pub fn tampered(&self) -> Vec<Unrevoked> {
        let mut out: Vec<Unrevoked> = self
            .by_hash
            .iter()
            .flat_map(|(h, copies)| {
                copies
                    .iter()
                    .filter(|c| c.entry.tampered)
                    .map(|c| Unrevoked {
                        page: c.page.to_string(),
                        serial: c.entry.serial.to_string(),
                        hash: hex(h),
                        user: c.entry.user.to_string(),
                        removed: !c.entry.readable,
                        revocation: c.entry.revocation.as_deref().cloned().unwrap_or_default(),
                    })
            })
            .collect();
        out.sort_by(|a, b| (&a.page, &a.serial).cmp(&(&b.page, &b.serial)));
        out
    }

    /// How many revocations this index remembers ([`LedgerIndex::remembering`]).
    pub fn remembered(&self) -> usize {
        self.remembered.len()
    }

    /// From whole pages.
    pub fn from_pages<'a>(pages: impl IntoIterator<Item = &'a LedgerPage>) -> Self {
        let mut index = LedgerIndex::default();
        for p in pages {
            index.apply_page(p);
        }
        index
    }

    /// From loose records (tests and benchmarks), as if on one page.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a IssuedCertificate>) -> Self {
        let mut page = new_page(0, 0);
        page.metadata.name = Some("records".into());
        for r in records {
            page.spec.push(r);
        }
        Self::from_pages([&page])
    }

    /// Put page `p` in force (added or changed).
    pub fn apply_page(&mut self, p: &LedgerPage) -> Vec<Unrevoked> {
        self.apply_parsed(Self::parse_page(p))
    }

    /// Read page `p` into entries (the costly half of [`LedgerIndex::apply_page`], needing no
    /// access to the index).
    pub fn parse_page(p: &LedgerPage) -> ParsedPage {
        let name: Arc<str> = Arc::from(p.name_any());
        let mut entries = Vec::with_capacity(p.spec.records.len());
        let mut nodes = Vec::new();
        let mut unidentifiable = 0;
        for (i, text) in p.spec.records.iter().enumerate() {
            let record = serde_json::from_str::<IssuedCertificate>(text);
            // A node's revocation, not a certificate.
            if let Some(node) = node_entry(text, record.as_ref().ok(), &name, i) {
                nodes.push(node);
                continue;
            }
            let record = record.map_err(|e| e.to_string()).and_then(|r| {
                match hash_of(&r.fingerprint_sha256) {
                    Some(h) => Ok((h, r)),
                    None => Err(format!(
                        "fingerprintSha256 {:?} is not a SHA-256",
                        r.fingerprint_sha256
                    )),
                }
            });
            let readable = record.is_ok();
            let record = record.or_else(|why| {
                let r = unreadable_record(text, &name, i, &why).ok_or(())?;
                Ok::<_, ()>((hash_of(&r.fingerprint_sha256).ok_or(())?, r))
            });
            let Ok((hash, record)) = record else {
                unidentifiable += 1;
                continue;
            };
            let mut entry = LedgerEntry::of(&record);
            entry.readable = readable;
            entries.push((hash, entry));
        }
        ParsedPage {
            name,
            entries,
            nodes,
            unidentifiable,
        }
    }

    /// Put a parsed page in force (cheap: no JSON). Returns the records that were seen revoked
    /// before and are not any more on this page ([`Unrevoked`]): they stay revoked (fail
    /// closed), marked [`LedgerEntry::tampered`].
    pub fn apply_parsed(&mut self, p: ParsedPage) -> Vec<Unrevoked> {
        // What this page held revoked before: a record that leaves it is an unrevoke too.
        let mut old_revoked: Vec<([u8; 32], LedgerEntry)> = Vec::new();
        // Already found tampered on this page (reported then): not reported again.
        let mut reported = std::collections::HashSet::new();
        if let Some(keys) = self.pages.get(&p.name) {
            let mut seen = std::collections::HashSet::new();
            for h in &keys.hashes {
                if self.by_hash.get(h).is_some_and(|copies| {
                    copies.iter().any(|c| c.page == p.name && c.entry.tampered)
                }) {
                    reported.insert(*h);
                }
                let was_revoked_here = self
                    .remembered
                    .get(h)
                    .is_some_and(|m| m.pages.contains(&p.name));
                if was_revoked_here
                    && let Some(c) = self
                        .by_hash
                        .get(h)
                        .and_then(|copies| copies.iter().find(|c| c.page == p.name))
                    && seen.insert(*h)
                {
                    old_revoked.push((*h, c.entry.clone()));
                }
            }
        }
        self.remove_page(&p.name);
        let mut hashes = Vec::with_capacity(p.entries.len());
        let mut nodes = Vec::with_capacity(p.nodes.len());
        let mut unrevoked = Vec::new();
        for (node, entry) in p.nodes {
            self.nodes.entry(node.clone()).or_default().push(entry);
            nodes.push(node);
        }
        for (hash, mut entry) in p.entries {
            if entry.readable {
                match (&entry.revocation, self.remembered.get_mut(&hash)) {
                    // Seen revoked on this very page: removed by hand. (A copy on another page
                    // may be unrevoked: recorded again after the revocation.)
                    (None, Some(was)) if was.pages.contains(&p.name) => {
                        let was = &was.revocation;
                        entry.revocation = Some(was.clone());
                        entry.tampered = true;
                        if !reported.contains(&hash) {
                            unrevoked.push(Unrevoked {
                                page: p.name.to_string(),
                                serial: entry.serial.to_string(),
                                hash: hex(&hash),
                                user: entry.user.to_string(),
                                removed: false,
                                revocation: (**was).clone(),
                            });
                        }
                    }
                    (Some(_), Some(was)) => {
                        if !was.pages.contains(&p.name) {
                            was.pages.push(p.name.clone());
                        }
                    }
                    (Some(r), None) => {
                        self.remembered.insert(
                            hash,
                            Remembered {
                                revocation: r.clone(),
                                pages: vec![p.name.clone()],
                            },
                        );
                    }
                    (None, _) => {}
                }
            }
            if entry.revocation.is_none()
                && let Some((name, rule)) = (!self.objects.is_empty())
                    .then(|| {
                        SelectorKey::of_entry(&hash, &entry)
                            .iter()
                            .filter_map(|k| self.objects_by_key.get(k))
                            .flatten()
                            .filter_map(|n| self.objects.get_key_value(n))
                            .find(|(_, r)| entry.issued <= r.created)
                    })
                    .flatten()
            {
                entry.revocation = Some(Box::new(rule.revocation.clone()));
                entry.by_object = Some(name.clone());
            }
            if entry.revocation.is_some() {
                self.revoked += 1;
            }
            self.by_hash.entry(hash).or_default().push(Copy {
                page: p.name.clone(),
                entry,
            });
            hashes.push(hash);
        }
        // Revoked records gone from the page: kept in force on it (not counting as on record,
        // so that a writer records them again).
        let now_held: std::collections::HashSet<[u8; 32]> = hashes.iter().copied().collect();
        for (hash, mut entry) in old_revoked {
            if now_held.contains(&hash) {
                continue;
            }
            entry.readable = false;
            entry.tampered = true;
            if let Some(was) = self.remembered.get(&hash) {
                entry.revocation = Some(was.revocation.clone());
            }
            if !reported.contains(&hash) {
                unrevoked.push(Unrevoked {
                    page: p.name.to_string(),
                    serial: entry.serial.to_string(),
                    hash: hex(&hash),
                    user: entry.user.to_string(),
                    removed: true,
                    revocation: entry.revocation.as_deref().cloned().unwrap_or_default(),
                });
            }
            self.revoked += 1;
            self.by_hash.entry(hash).or_default().push(Copy {
                page: p.name.clone(),
                entry,
            });
            hashes.push(hash);
        }
        self.unidentifiable += p.unidentifiable;
        self.pages.insert(
            p.name,
            PageKeys {
                hashes,
                nodes,
                unidentifiable: p.unidentifiable,
            },
        );
        unrevoked
    }

    /// Page `p` was deleted: its records leave the index, but its revocations stay in force
    /// (kept on a stand-in page `deleted:<name>`, not counting as on record), and are returned
    /// so that a writer can put them on a page again. Deleting a page must never undo a
    /// revocation.
    pub fn delete_page(&mut self, p: &LedgerPage) -> Vec<IssuedCertificate> {
        let name = p.name_any();
        // What the index holds revoked on this page although the page does not say so (a
        // Revocation object's not written yet, an unrevoke by hand) is kept too.
        let in_force = |r: &IssuedCertificate| -> Option<Revocation> {
            let h = hash_of(&r.fingerprint_sha256)?;
            self.by_hash
                .get(&h)?
                .iter()
                .find(|c| *c.page == *name && c.entry.revocation.is_some())
                .and_then(|c| c.entry.revocation.as_deref().cloned())
        };
        // Every record is kept, not only the revoked ones: an unrevoked renewal's parent link is
        // what ties its own renewals to a revoked ancestor.
        let kept_records: Vec<IssuedCertificate> = p
            .spec
            .read()
            .filter_map(Result::ok)
            .map(|mut r| {
                if r.revocation.is_none() {
                    r.revocation = in_force(&r);
                }
                r
            })
            .collect();
        self.remove_page(&name);
        if kept_records.is_empty() {
            return kept_records;
        }
        let mut kept = new_page(0, 0);
        kept.metadata.name = Some(format!("deleted:{name}"));
        for r in &kept_records {
            kept.spec.push(r);
        }
        let mut parsed = Self::parse_page(&kept);
        for (_, entry) in parsed.entries.iter_mut() {
            entry.readable = false;
        }
        self.apply_parsed(parsed);
        self.standins
            .push((format!("deleted:{name}"), kept.spec.records));
        kept_records
    }

    /// Take page `name` out (deleted).
    pub fn remove_page(&mut self, name: &str) {
        let Some(PageKeys {
            hashes,
            nodes,
            unidentifiable,
        }) = self.pages.remove(name)
        else {
            return;
        };
        self.unidentifiable -= unidentifiable;
        for node in nodes {
            if let Some(entries) = self.nodes.get_mut(&node) {
                entries.retain(|e| &*e.page != name);
                if entries.is_empty() {
                    self.nodes.remove(&node);
                }
            }
        }
        for hash in hashes {
            if let Some(copies) = self.by_hash.get_mut(&hash) {
                copies.retain(|c| {
                    let gone = &*c.page == name;
                    if gone && c.entry.revocation.is_some() {
                        self.revoked -= 1;
                    }
                    !gone
                });
                if copies.is_empty() {
                    self.by_hash.remove(&hash);
                }
            }
        }
    }

    /// Why the index cannot be trusted, if it cannot: a page holds a record that names no
    /// certificate kcert can find (it might have been a revocation).
    pub fn unidentifiable(&self) -> Option<String> {
        if self.unidentifiable == 0 {
            return None;
        }
        let mut pages: Vec<&str> = self
            .pages
            .iter()
            .filter(|(_, k)| k.unidentifiable > 0)
            .map(|(p, _)| &**p)
            .collect();
        pages.sort();
        Some(format!(
            "{} ledger record(s) cannot be read and name no certificate (pages: {}); fix or remove them (`kcert ledger` lists what it cannot read)",
            self.unidentifiable,
            pages.join(", ")
        ))
    }

    /// The entry of a credential hash (hex, any spelling): a revoked copy if there is one.
    pub fn by_hash(&self, hash: &str) -> Option<&LedgerEntry> {
        self.entry(&hash_of(hash)?)
    }

    /// The certificates on the ledger still live at `now_unix` (unexpired, unrevoked, readable)
    /// that the CA whose subject key identifier is `issuer_key_id` (hex) may have issued: those
    /// recorded with it, and those whose record does not say (written before kcert recorded
    /// issuers: fail closed, they might be). Sorted by user, then serial.
    pub fn live_from(&self, issuer_key_id: &str, now_unix: i64) -> Vec<&LedgerEntry> {
        let tag = issuer_tag(issuer_key_id);
        let mut live: Vec<&LedgerEntry> = self
            .by_hash
            .keys()
            .filter_map(|h| self.entry(h))
            .filter(|e| {
                e.readable
                    && e.revocation.is_none()
                    && e.not_after > now_unix
                    && (e.issuer.is_none() || e.issuer == tag)
            })
            .collect();
        live.sort_by(|a, b| (&a.user, &a.serial).cmp(&(&b.user, &b.serial)));
        live
    }

    /// Whether a readable record of this certificate (hash, any spelling) is on the ledger: what
    /// "on record" means to the signer and the cleaner.
    pub fn holds(&self, hash: &str) -> bool {
        hash_of(hash)
            .and_then(|h| self.by_hash.get(&h))
            .is_some_and(|copies| copies.iter().any(|c| c.entry.readable))
    }

    /// The ledger entry of the certificate a `credential-id` (`X509SHA256=…`) names.
    pub fn record(&self, credential_id: &str) -> Option<&LedgerEntry> {
        self.by_hash(credential_id.strip_prefix("X509SHA256=")?)
    }

    /// The serial and revocation of the certificate a `credential-id` names, if it is revoked
    /// or descends from one that is ([`LedgerIndex::revoked_lineage`]).
    pub fn lookup(&self, credential_id: &str) -> Option<(&str, &crate::crd::Revocation)> {
        self.revoked_lineage(credential_id)
            .map(|l| (l.serial, l.revocation))
    }

    /// Whether the certificate a `credential-id` names is revoked, or was requested with a
    /// certificate that is (its parent, the parent's parent, …): a revocation covers every
    /// renewal made with the revoked certificate, those recorded after it included. Walks at
    /// most [`MAX_LINEAGE`] parents; a longer line is treated as revoked (fail closed).
    pub fn revoked_lineage(&self, credential_id: &str) -> Option<RevokedLineage<'_>> {
        let hash = hash_of(credential_id.strip_prefix("X509SHA256=")?)?;
        let Some(first) = self.entry(&hash) else {
            // Gone from the ledger (its record removed by hand, its page deleted unseen) but
            // seen revoked by this process: still revoked.
            return self.remembered.get(&hash).map(|m| RevokedLineage {
                serial: "(no longer on the ledger)",
                revocation: &m.revocation,
                through: None,
            });
        };
        let mut entry = first;
        for hops in 0..=MAX_LINEAGE {
            if let Some(r) = entry.revocation.as_deref() {
                return Some(RevokedLineage {
                    serial: &first.serial,
                    revocation: r,
                    through: (hops > 0).then_some(&*entry.serial),
                });
            }
            match entry.parent.and_then(|p| self.entry(&p)) {
                Some(parent) => entry = parent,
                None => return None,
            }
        }
        Some(RevokedLineage {
            serial: &first.serial,
            revocation: &LINEAGE_TOO_LONG,
            through: None,
        })
    }

    fn entry(&self, hash: &[u8; 32]) -> Option<&LedgerEntry> {
        let copies = self.by_hash.get(hash)?;
        // A revoked copy first; else one that names its parent (a copy written before records
        // carried parents must not hide the line).
        copies
            .iter()
            .find(|c| c.entry.revocation.is_some())
            .or_else(|| copies.iter().find(|c| c.entry.parent.is_some()))
            .or_else(|| copies.first())
            .map(|c| &c.entry)
    }

    /// Whether the ledger holds the certificate a `credential-id` names.
    pub fn knows(&self, credential_id: &str) -> bool {
        self.record(credential_id).is_some()
    }

    /// How many certificates are on record.
    pub fn records(&self) -> usize {
        self.by_hash.len()
    }

    /// How many pages.
    pub fn pages(&self) -> usize {
        self.pages.len()
    }

    /// How many records are revoked (copies counted once each).
    pub fn revoked(&self) -> usize {
        self.revoked
    }

    /// The revocation in force of node `node` (`kcert revoke --node`, not cleared), if any: the
    /// first on record. A revocation record kcert cannot read counts as in force.
    pub fn revoked_node(&self, node: &str) -> Option<&NodeRevocationEntry> {
        self.nodes.get(node)?.iter().find(|e| e.cleared.is_none())
    }

    /// Every node revocation in force, by node name (sorted).
    pub fn revoked_nodes(&self) -> Vec<(&str, &NodeRevocationEntry)> {
        let mut out: Vec<_> = self
            .nodes
            .keys()
            .filter_map(|n| Some((&**n, self.revoked_node(n)?)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }
}

/// The index entry of record `i` of page `page` if it is a node revocation: read, or, if kcert
/// cannot read it but can tell which node it is for, a stand-in in force naming the problem
/// (fail closed). `None` for a certificate's record (or one naming no node).
fn node_entry(
    text: &str,
    parsed: Option<&IssuedCertificate>,
    page: &Arc<str>,
    i: usize,
) -> Option<(Box<str>, NodeRevocationEntry)> {
    let node_of_user = |user: &str| {
        user.strip_prefix(kcert_policy::nodes::NODE_USER_PREFIX)
            .map(String::from)
    };
    let unreadable = |node: String, why: String| {
        Some((
            node.into_boxed_str(),
            NodeRevocationEntry {
                page: page.clone(),
                revocation: Revocation {
                    revoked_at: String::new(),
                    revoked_by: "kcert".into(),
                    reason: format!(
                        "its node revocation record (ledger page {page}, record {i}) cannot be read ({why}); the node is refused until the record is fixed"
                    ),
                },
                cleared: None,
                readable: false,
            },
        ))
    };
    match parsed {
        Some(r) if r.is_node_revocation() => {
            match serde_json::from_str::<RevokedNodeRecord>(text) {
                Ok(n) if !n.revoked_node.node.is_empty() => {
                    let revocation = n.record.revocation.clone();
                    let readable = revocation.is_some();
                    Some((
                    n.revoked_node.node.clone().into_boxed_str(),
                    NodeRevocationEntry {
                        page: page.clone(),
                        revocation: revocation.unwrap_or_else(|| Revocation {
                            revoked_at: String::new(),
                            revoked_by: "kcert".into(),
                            reason: format!(
                                "its node revocation record (ledger page {page}, record {i}) names no revocation; the node is refused until the record is fixed"
                            ),
                        }),
                        // A record without its revocation is not trusted to say it was cleared.
                        cleared: n.revoked_node.cleared.filter(|_| readable),
                        readable,
                    },
                ))
                }
                Ok(_) => unreadable(node_of_user(&r.user)?, "revokedNode.node is empty".into()),
                Err(e) => unreadable(
                    serde_json::from_str::<serde_json::Value>(text)
                        .ok()
                        .and_then(|v| {
                            Some(v.get("revokedNode")?.get("node")?.as_str()?.to_string())
                        })
                        .filter(|n| !n.is_empty())
                        .or_else(|| node_of_user(&r.user))?,
                    e.to_string(),
                ),
            }
        }
        Some(_) => None,
        None => {
            // Not even a record: a node revocation if it says so.
            let value: serde_json::Value = serde_json::from_str(text).ok()?;
            let marked = value.get("signerName").and_then(|v| v.as_str())
                == Some(crate::crd::NODE_REVOCATION_SIGNER)
                || value.get("revokedNode").is_some();
            if !marked {
                return None;
            }
            let node = value
                .get("revokedNode")
                .and_then(|n| n.get("node"))
                .and_then(|n| n.as_str())
                .filter(|n| !n.is_empty())
                .map(String::from)
                .or_else(|| node_of_user(value.get("user")?.as_str()?))?;
            let why = serde_json::from_str::<IssuedCertificate>(text)
                .err()
                .map_or_else(|| "unreadable".to_string(), |e| e.to_string());
            unreadable(node, why)
        }
    }
}

/// The record of the certificate with this serial (hex, as issued), if the ledger holds it.
pub async fn find_serial(
    client: &Client,
    serial: &str,
) -> Result<Option<IssuedCertificate>, kube::Error> {
    let pages = list_pages(client).await?;
    Ok(records(&pages)
        .into_iter()
        .map(|(_, r)| r)
        .find(|r| r.serial == serial))
}

/// A record kcert cannot read, kept fail-closed: if its fingerprint can be found, the
/// certificate stands as revoked, naming the problem; otherwise `None`.
fn unreadable_record(text: &str, page: &str, i: usize, why: &str) -> Option<IssuedCertificate> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let fingerprint = value.get("fingerprintSha256")?.as_str()?;
    hash_of(fingerprint)?;
    let text_of = |k: &str| {
        value
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    Some(IssuedCertificate {
        serial: text_of("serial"),
        user: text_of("user"),
        fingerprint_sha256: fingerprint.to_string(),
        revocation: Some(crate::crd::Revocation {
            revoked_at: String::new(),
            revoked_by: "kcert".into(),
            reason: format!(
                "its ledger record (page {page}, record {i}) cannot be read ({why}); the certificate is refused until the record is fixed"
            ),
        }),
        ..Default::default()
    })
}

/// The ledger read once (the CLI).
pub async fn read_index(client: &Client) -> Result<LedgerIndex, kube::Error> {
    Ok(LedgerIndex::from_pages(&list_pages(client).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fp` (short hex, e.g. "AA:01") padded to a SHA-256.
    fn sha(fp: &str) -> String {
        format!("{:0>64}", crate::crd::normalize_fingerprint(fp))
    }

    fn id(fp: &str) -> String {
        format!("X509SHA256={}", sha(fp))
    }

    fn rec(serial: &str, fp: &str, revoked: bool) -> IssuedCertificate {
        IssuedCertificate {
            serial: serial.into(),
            fingerprint_sha256: sha(fp),
            revocation: revoked.then(|| Revocation {
                revoked_at: "2026-12-01T00:00:00Z".into(),
                revoked_by: "admin".into(),
                reason: "test".into(),
            }),
            ..Default::default()
        }
    }

    fn page(name: &str, records: Vec<IssuedCertificate>) -> LedgerPage {
        let mut p = new_page(0, 0);
        p.metadata.name = Some(name.into());
        for r in &records {
            p.spec.push(r);
        }
        p
    }

    #[test]
    fn pages_are_applied_changed_and_removed_in_place() {
        let mut index = LedgerIndex::from_pages(&[
            page(
                "a",
                vec![rec("01", "AA:01", false), rec("02", "AA:02", false)],
            ),
            page("b", vec![rec("03", "AA:03", true)]),
        ]);
        assert_eq!((index.records(), index.pages(), index.revoked()), (3, 2, 1));
        assert!(index.knows(&id("aa01")));
        assert!(index.lookup(&id("aa01")).is_none());
        assert_eq!(index.lookup(&id("aa03")).unwrap().0, "03");
        // Page a changed: 02 revoked, 04 appended.
        index.apply_page(&page(
            "a",
            vec![
                rec("01", "AA:01", false),
                rec("02", "AA:02", true),
                rec("04", "AA:04", false),
            ],
        ));
        assert_eq!((index.records(), index.pages(), index.revoked()), (4, 2, 2));
        assert_eq!(index.lookup(&id("aa02")).unwrap().0, "02");
        index.remove_page("b");
        assert_eq!((index.records(), index.pages(), index.revoked()), (3, 1, 1));
        assert!(!index.knows(&id("aa03")));
        // Not an X.509 credential id: nothing.
        assert!(!index.knows("aa01"));
    }

    #[test]
    fn an_unrevoke_by_hand_is_kept_revoked_reported_and_remembered_across_lists() {
        let mut index = LedgerIndex::from_pages(&[page(
            "a",
            vec![rec("01", "AA:01", true), rec("02", "AA:02", false)],
        )]);
        assert!(index.tampered().is_empty());
        // The page edited: 01's revocation removed.
        let edited = page(
            "a",
            vec![rec("01", "AA:01", false), rec("02", "AA:02", false)],
        );
        let found = index.apply_page(&edited);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (
                found[0].serial.as_str(),
                found[0].removed,
                found[0].revocation.revoked_by.as_str()
            ),
            ("01", false, "admin")
        );
        assert_eq!(found[0].hash, sha("AA:01"));
        assert_eq!(index.lookup(&id("aa01")).unwrap().0, "01");
        assert!(index.record(&id("aa01")).unwrap().tampered);
        assert!(
            index.holds(&sha("AA:01")),
            "still on record: written back in place"
        );
        assert_eq!((index.revoked(), index.tampered().len()), (1, 1));
        // Applied again (any later write of the page): still revoked, reported once.
        assert!(index.apply_page(&edited).is_empty());
        assert!(index.lookup(&id("aa01")).is_some() && index.tampered().len() == 1);
        // A fresh list remembering this index: still revoked.
        let mut relisted = LedgerIndex::remembering(Some(&index));
        assert_eq!(relisted.apply_page(&edited).len(), 1);
        assert!(relisted.lookup(&id("aa01")).is_some());
        // Without the memory (a process that never saw the revocation) the page is believed.
        assert!(
            LedgerIndex::from_pages([&edited])
                .lookup(&id("aa01"))
                .is_none()
        );
        // Written back: no longer tampered.
        let mut restored = rec("01", "AA:01", true);
        restored.revocation_restored_at = Some("2026-12-03T11:00:00Z".into());
        assert!(
            index
                .apply_page(&page("a", vec![restored, rec("02", "AA:02", false)]))
                .is_empty()
        );
        assert!(index.tampered().is_empty() && index.lookup(&id("aa01")).is_some());
        // The record itself removed from the page: kept revoked, not on record (so that a
        // writer records it again).
        let found = index.apply_page(&page("a", vec![rec("02", "AA:02", false)]));
        assert_eq!(
            found
                .iter()
                .map(|u| (u.serial.as_str(), u.removed))
                .collect::<Vec<_>>(),
            [("01", true)]
        );
        assert!(index.lookup(&id("aa01")).is_some());
        assert!(!index.holds(&sha("AA:01")) && index.knows(&id("aa01")));
        assert_eq!(index.tampered().len(), 1);
        assert!(
            index
                .apply_page(&page("a", vec![rec("02", "AA:02", false)]))
                .is_empty(),
            "reported once"
        );
        assert!(index.lookup(&id("aa01")).is_some());
        // Recorded again elsewhere, revoked: in force through that copy.
        index.apply_page(&page("b", vec![rec("01", "AA:01", true)]));
        assert!(index.holds(&sha("AA:01")) && index.lookup(&id("aa01")).is_some());
    }

    #[test]
    fn a_revocation_object_revokes_what_it_selects_issued_until_it_was_created() {
        let user = |mut r: IssuedCertificate, u: &str, nb: &str| {
            r.user = u.into();
            r.not_before = nb.into();
            r
        };
        let a = page(
            "a",
            vec![
                user(rec("01", "AA:01", false), "jane", "2026-12-01T00:00:00Z"),
                user(rec("02", "AA:02", false), "bob", "2026-12-01T00:00:00Z"),
            ],
        );
        let mut index = LedgerIndex::from_pages([&a]);
        let spec = crate::crd::RevocationSpec {
            user: Some("jane".into()),
            reason: "laptop stolen".into(),
            revoked_by: "revoker".into(),
            ..Default::default()
        };
        assert!(index.apply_revocation("r1", &spec, "2026-12-02T00:00:00Z"));
        assert!(!index.apply_revocation("r1", &spec, "2026-12-02T00:00:00Z"));
        let (serial, r) = index.lookup(&id("aa01")).unwrap();
        let (serial, r) = (serial.to_string(), r.clone());
        assert_eq!(
            (
                serial.as_str(),
                r.revoked_by.as_str(),
                r.revoked_at.as_str()
            ),
            ("01", "revoker", "2026-12-02T00:00:00Z")
        );
        assert!(index.lookup(&id("aa02")).is_none());
        assert_eq!(index.revoked(), 1);
        // Not on the page yet: for the leader to write.
        let unwritten = index.unwritten_revocations();
        assert_eq!(unwritten.len(), 1);
        assert_eq!(
            (unwritten[0].0.as_str(), unwritten[0].1.clone()),
            ("a", sha("AA:01"))
        );
        let results = index.revocation_results("r1").unwrap();
        assert_eq!(
            results
                .iter()
                .map(|r| (r.serial.as_str(), r.result.as_str()))
                .collect::<Vec<_>>(),
            [("01", "revoked")]
        );
        // Recorded later: revoked if issued before the object was created (NotBefore is
        // backdated by 5 minutes), not if after (jane's next certificate works).
        let b = page(
            "b",
            vec![
                user(rec("03", "AA:03", false), "jane", "2026-12-01T23:55:00Z"),
                user(rec("04", "AA:04", false), "jane", "2026-12-01T23:55:01Z"),
            ],
        );
        index.apply_page(&b);
        assert!(index.lookup(&id("aa03")).is_some());
        assert!(index.lookup(&id("aa04")).is_none());
        // Written onto the page by the leader: nothing left to write, no tampering.
        let mut written = a.clone();
        written.spec.records.clear();
        let mut r1 = user(rec("01", "AA:01", false), "jane", "2026-12-01T00:00:00Z");
        r1.revocation = Some(r.clone());
        written.spec.push(&r1);
        written.spec.push(&user(
            rec("02", "AA:02", false),
            "bob",
            "2026-12-01T00:00:00Z",
        ));
        assert!(index.apply_page(&written).is_empty());
        assert_eq!(
            index.unwritten_revocations().len(),
            1,
            "03 on page b is left"
        );
        // The object deleted: in force all the same, and in every index built beside this one.
        assert!(index.revocation_deleted("r1"));
        assert!(!index.revocation_deleted("r1"));
        assert!(index.lookup(&id("aa03")).is_some() && index.has_revocation("r1"));
        let mut relisted = LedgerIndex::remembering(Some(&index));
        relisted.apply_page(&b);
        assert!(relisted.lookup(&id("aa03")).is_some());
        assert!(relisted.lookup(&id("aa04")).is_none());
        // Page b deleted before the leader wrote 03's revocation onto it: kept, to be written
        // (with its other record, unrevoked, so that no line of renewals is cut).
        let kept = index.delete_page(&b);
        assert_eq!(
            kept.iter()
                .map(|r| (r.serial.as_str(), r.revocation.is_some()))
                .collect::<Vec<_>>(),
            [("03", true), ("04", false)]
        );
        assert!(index.lookup(&id("aa03")).is_some());
        // A spec naming no certificate, or two selectors: nothing.
        let two = crate::crd::RevocationSpec {
            serial: Some("02".into()),
            ..spec.clone()
        };
        assert!(!index.apply_revocation("r2", &two, "2026-12-02T00:00:00Z"));
        assert!(index.lookup(&id("aa02")).is_none());
    }

    #[test]
    fn a_certificate_on_two_pages_is_revoked_if_either_copy_is() {
        let mut index = LedgerIndex::from_pages(&[
            page("a", vec![rec("01", "AA:01", false)]),
            page("b", vec![rec("01", "AA:01", true)]),
        ]);
        assert_eq!(index.records(), 1);
        assert!(index.lookup(&id("aa01")).is_some());
        // Whichever page is applied last.
        index.apply_page(&page("a", vec![rec("01", "AA:01", false)]));
        assert!(index.lookup(&id("aa01")).is_some());
        index.remove_page("b");
        assert!(index.lookup(&id("aa01")).is_none());
        assert!(index.knows(&id("aa01")));
        index.remove_page("a");
        assert_eq!((index.records(), index.revoked()), (0, 0));
    }

    #[test]
    fn small_batches_go_onto_small_open_pages_and_bursts_fill_pages() {
        // A trickle (batches of a few records) rewrites pages of at most 50 records.
        assert!(appends_to_open_page(0, 1));
        assert!(appends_to_open_page(49, 1));
        assert!(!appends_to_open_page(50, 1));
        assert!(appends_to_open_page(36, 12));
        assert!(!appends_to_open_page(48, 12));
        // A burst may grow a page up to 4× its batch (the page bound itself is `room`'s).
        assert!(appends_to_open_page(100, 50));
        assert!(!appends_to_open_page(151, 50));
        // Whatever the sizes, what one write rewrites stays within 4× the batch, or 50.
        for held in 0..300 {
            for batch in 1..300 {
                if appends_to_open_page(held, batch) {
                    assert!(held + batch <= (4 * batch).max(APPEND_PAGE_RECORDS));
                }
            }
        }
    }

    #[test]
    fn a_page_takes_records_until_either_bound_and_always_one() {
        let small = rec("01", "AA:01", false);
        let p = new_page(0, 0);
        assert_eq!(room(&p, &vec![small.clone(); 500]), PAGE_MAX_RECORDS);
        let mut huge = small.clone();
        huge.groups = vec!["g".repeat(250); 4000]; // ~1 MB: larger than a page's bound
        assert_eq!(room(&p, &[huge.clone(), small.clone()]), 1);
        let full = page("x", vec![huge]);
        assert!(record_bytes(&small) > serde_json::to_string(&small).unwrap().len());
        assert_eq!(room(&full, std::slice::from_ref(&small)), 0);
        let half = page("y", vec![small.clone(); PAGE_MAX_RECORDS - 1]);
        assert_eq!(room(&half, &[small.clone(), small]), 1);
    }

    #[test]
    fn an_unreadable_record_fails_closed() {
        let fp = "ab".repeat(32);
        let mut p = page("a", vec![rec("01", "AA:01", false)]);
        // Readable JSON, wrong shape, fingerprint findable: that certificate stands revoked.
        p.spec
            .records
            .push(format!(r#"{{"fingerprintSha256":"{fp}","serial":7}}"#));
        let mut index = LedgerIndex::from_pages([&p]);
        let (_, why) = index.lookup(&format!("X509SHA256={fp}")).unwrap();
        assert!(why.reason.contains("cannot be read"), "{}", why.reason);
        // A stand-in does not count as on record (the cleaner keeps the CSR, the signer
        // writes a good record beside it).
        assert!(!index.holds(&fp) && index.knows(&format!("X509SHA256={fp}")));
        assert!(index.holds(&sha("AA:01")));
        assert!(index.unidentifiable().is_none());
        assert!(index.lookup(&id("aa01")).is_none());
        // Nothing to go by: the whole index says it cannot be trusted, naming the page.
        p.spec.records.push("{not json".into());
        index.apply_page(&p);
        assert!(index.unidentifiable().unwrap().contains("pages: a"));
        assert_eq!(unreadable(&[p.clone()]).len(), 2);
        assert_eq!(records(&[p]).len(), 1);
        // Fixed (the page rewritten): trusted again.
        index.apply_page(&page("a", vec![rec("01", "AA:01", false)]));
        assert!(index.unidentifiable().is_none());
        assert_eq!(index.revoked(), 0);
    }

    fn node_revocation(node: &str, cleared: bool) -> RevokedNodeRecord {
        let mut r = RevokedNodeRecord::new(
            node,
            Revocation {
                revoked_at: "2026-12-01T00:00:00Z".into(),
                revoked_by: "admin".into(),
                reason: "decommissioned".into(),
            },
            "nonce",
        );
        if cleared {
            r.revoked_node.cleared = Some(Clearance {
                cleared_at: "2026-12-02T00:00:00Z".into(),
                cleared_by: "admin".into(),
                reason: "re-provisioned".into(),
            });
        }
        r
    }

    #[test]
    fn a_node_revocation_is_in_force_until_cleared_and_is_no_certificate() {
        let mut p = page("a", vec![rec("01", "AA:01", false)]);
        p.spec.push_node_revocation(&node_revocation("n1", false));
        let mut index = LedgerIndex::from_pages([&p]);
        let e = index.revoked_node("n1").unwrap();
        assert_eq!(
            (&*e.page, e.revocation.reason.as_str(), e.readable),
            ("a", "decommissioned", true)
        );
        assert!(index.revoked_node("n2").is_none());
        assert_eq!(index.revoked_nodes().len(), 1);
        // Not a certificate: not counted, listed, selected nor revoked as one.
        assert_eq!((index.records(), index.revoked()), (1, 0));
        assert_eq!(records(std::slice::from_ref(&p)).len(), 1);
        assert_eq!(node_revocations(std::slice::from_ref(&p)).len(), 1);
        let as_certificate: IssuedCertificate = serde_json::from_str(&p.spec.records[1]).unwrap();
        for s in [
            crate::revocation::Selector::User("system:node:n1".into()),
            crate::revocation::Selector::Serial("0".into()),
            crate::revocation::Selector::Fingerprint(as_certificate.fingerprint_sha256.clone()),
        ] {
            assert!(!s.matches(&as_certificate), "{s:?}");
        }
        // What a kcert without node revocations reads: a revoked certificate nobody presents
        // (a SHA-256 fingerprint), not a record naming nothing.
        assert!(as_certificate.revocation.is_some());
        assert!(hash_of(&as_certificate.fingerprint_sha256).is_some());
        assert_eq!(as_certificate.user, "system:node:n1");
        // Cleared: no longer in force, still on the ledger.
        p.spec.records[1] = serde_json::to_string(&node_revocation("n1", true)).unwrap();
        index.apply_page(&p);
        assert!(index.revoked_node("n1").is_none());
        let listed = node_revocations(std::slice::from_ref(&p));
        assert_eq!(
            listed[0].1.revoked_node.cleared.as_ref().unwrap().reason,
            "re-provisioned"
        );
        // Revoked again (a new record beside the cleared one): in force again.
        p.spec.push_node_revocation(&node_revocation("n1", false));
        index.apply_page(&p);
        assert!(index.revoked_node("n1").is_some());
        index.remove_page("a");
        assert!(index.revoked_node("n1").is_none() && index.revoked_nodes().is_empty());
    }

    #[test]
    fn a_node_revocation_kcert_cannot_read_is_in_force() {
        let good = serde_json::to_value(node_revocation("n1", true)).unwrap();
        let mut cases = Vec::new();
        // Its clearing cannot be read: the node stays revoked.
        let mut v = good.clone();
        v["revokedNode"]["cleared"] = serde_json::json!("yesterday");
        cases.push(("n1", v));
        // Its revocation is gone: not trusted to say it was cleared.
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove("revocation");
        cases.push(("n1", v));
        // Not even a certificate record any more (serial a number), marked as a node's.
        let mut v = good.clone();
        v["serial"] = serde_json::json!(7);
        v["revokedNode"]["node"] = serde_json::json!("n2");
        cases.push(("n2", v));
        for (node, v) in cases {
            let mut p = page("a", vec![]);
            p.spec.records.push(v.to_string());
            let index = LedgerIndex::from_pages([&p]);
            let e = index
                .revoked_node(node)
                .unwrap_or_else(|| panic!("{node} not revoked: {v}"));
            assert!(
                e.revocation.reason.contains("ledger page a, record 0"),
                "{}",
                e.revocation.reason
            );
        }
    }

    #[test]
    fn page_names_sort_by_time() {
        let a = new_page(1_764_547_200_000, 0xffff_ffff).name_any();
        let b = new_page(1_764_547_201_000, 0).name_any();
        assert!(a < b, "{a} {b}");
        assert_eq!(a, "20251201-000000-ffffffff");
    }

    #[test]
    fn a_revocation_covers_every_certificate_requested_with_it_and_their_renewals() {
        let id = |h: &str| format!("X509SHA256={}", h.repeat(32));
        let mut c1 = rec("01", &"a1".repeat(32), true);
        c1.user = "jane".into();
        let mut c2 = rec("02", &"a2".repeat(32), false);
        c2.requested_with = Some("A1".repeat(32));
        let mut c3 = rec("03", &"a3".repeat(32), false);
        c3.requested_with = Some("a2".repeat(32));
        let other = rec("04", &"b4".repeat(32), false);
        // Parent unknown to the ledger: the line ends there.
        let mut orphan = rec("05", &"b5".repeat(32), false);
        orphan.requested_with = Some("ff".repeat(32));
        // A loop written by hand: never revoked by accident, never endless.
        let mut l1 = rec("06", &"c6".repeat(32), false);
        l1.requested_with = Some("c7".repeat(32));
        let mut l2 = rec("07", &"c7".repeat(32), false);
        l2.requested_with = Some("c6".repeat(32));
        let index = LedgerIndex::from_records([&c1, &c2, &c3, &other, &orphan, &l1, &l2]);
        let hit = index.revoked_lineage(&id("a3")).unwrap();
        assert_eq!((hit.serial, hit.through), ("03", Some("01")));
        assert_eq!(index.lookup(&id("a2")).unwrap().0, "02");
        assert_eq!(index.revoked_lineage(&id("a1")).unwrap().through, None);
        assert!(index.lookup(&id("b4")).is_none());
        assert!(index.lookup(&id("b5")).is_none());
        let looped = index.revoked_lineage(&id("c6")).unwrap();
        assert!(
            looped.revocation.reason.contains("cannot be checked"),
            "{looped:?}"
        );
    }

    #[test]
    fn a_deleted_page_does_not_cut_a_line_of_renewals_even_after_a_relist() {
        // Found by review: A revoked on p1, B renewed from A on p2, C from B on p3; p2 deleted.
        let mut a = rec("0a", &"aa".repeat(32), true);
        a.user = "jane".into();
        let mut b = rec("0b", &"bb".repeat(32), false);
        b.requested_with = Some("aa".repeat(32));
        let mut c = rec("0c", &"cc".repeat(32), false);
        c.requested_with = Some("bb".repeat(32));
        let (p1, p2, p3) = (
            page("p1", vec![a]),
            page("p2", vec![b]),
            page("p3", vec![c]),
        );
        let mut index = LedgerIndex::from_pages([&p1, &p2, &p3]);
        let id = |h: &str| format!("X509SHA256={}", h.repeat(32));
        assert_eq!(
            index.revoked_lineage(&id("cc")).unwrap().through,
            Some("0a")
        );
        let kept = index.delete_page(&p2);
        assert_eq!(kept.len(), 1);
        assert_eq!(
            index.revoked_lineage(&id("cc")).unwrap().through,
            Some("0a")
        );
        assert_eq!(
            index.revoked_lineage(&id("bb")).unwrap().through,
            Some("0a")
        );
        // A relist (p2 gone from the list) keeps the stand-in.
        let mut relisted = LedgerIndex::remembering(Some(&index));
        relisted.apply_page(&p1);
        relisted.apply_page(&p3);
        assert_eq!(
            relisted.revoked_lineage(&id("cc")).unwrap().through,
            Some("0a")
        );
        // A copy without the parent (written before records carried one) does not hide it.
        let mut old_b = rec("0b", &"bb".repeat(32), false);
        old_b.requested_with = None;
        let mut b2 = rec("0b", &"bb".repeat(32), false);
        b2.requested_with = Some("aa".repeat(32));
        let index =
            LedgerIndex::from_pages([&p1, &page("old", vec![old_b]), &page("new", vec![b2]), &p3]);
        assert!(index.revoked_lineage(&id("cc")).is_some());
    }

    #[test]
    fn a_revoked_record_removed_by_hand_stays_revoked_and_objects_are_found_by_key() {
        let id = |h: &str| format!("X509SHA256={}", h.repeat(32));
        let mut index =
            LedgerIndex::from_pages([&page("p", vec![rec("01", &"a1".repeat(32), true)])]);
        assert!(index.lookup(&id("a1")).is_some());
        // The page rewritten without the record at all.
        index.apply_page(&page("p", vec![rec("02", &"a2".repeat(32), false)]));
        let hit = index.revoked_lineage(&id("a1")).expect("still revoked");
        assert_eq!(hit.revocation.reason, "test");
        // Many objects: a record finds the one selecting it (by user here) through the index.
        let mut index = LedgerIndex::default();
        for i in 0..500 {
            let spec = crate::crd::RevocationSpec {
                serial: Some(format!("{i:x}ff")),
                reason: "r".into(),
                revoked_by: "rita".into(),
                ..Default::default()
            };
            index.apply_revocation(&format!("o{i}"), &spec, "2026-12-03T12:00:00Z");
        }
        let by_user = crate::crd::RevocationSpec {
            user: Some("jane".into()),
            reason: "left".into(),
            revoked_by: "rita".into(),
            ..Default::default()
        };
        index.apply_revocation("jane", &by_user, "2026-12-03T12:00:00Z");
        let mut jane = rec("0b", &"b1".repeat(32), false);
        jane.user = "jane".into();
        jane.not_before = "2026-12-01T00:00:00Z".into();
        index.apply_page(&page("q", vec![jane, rec("0c", &"c1".repeat(32), false)]));
        assert_eq!(
            index.lookup(&id("b1")).map(|(_, r)| r.reason.as_str()),
            Some("left")
        );
        assert!(index.lookup(&id("c1")).is_none());
    }
}
