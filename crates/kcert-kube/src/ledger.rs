//! The issuance ledger as the API server holds it: [`LedgerPage`] objects of many
//! [`IssuedCertificate`] records each, and the index every reader builds from them (by
//! credential hash, the SHA-256 the API server puts in a user's `credential-id`).
//!
//! One object per certificate cost one API write per certificate and halved issuance
//! throughput; a page holds up to [`PAGE_MAX_RECORDS`] records (and at most [`PAGE_MAX_BYTES`]
//! of JSON, well under etcd's 1.5 MiB request limit), so the signer writes once per batch.

use crate::crd::{IssuedCertificate, LedgerPage, LedgerPageSpec};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use std::collections::HashMap;
use std::sync::Arc;

/// Records per page at most.
pub const PAGE_MAX_RECORDS: usize = 200;

/// Serialized size of a page's records at most (bytes). A record is at most ~70 KiB (the
/// largest subject a policy accepts is 64 KiB), so any one record fits an empty page.
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

/// The JSON size of one record (what it adds to a page).
pub fn record_bytes(r: &IssuedCertificate) -> usize {
    serde_json::to_vec(r)
        .map(|v| v.len() + 1)
        .unwrap_or(usize::MAX / 2)
}

/// How many of `records` (in order) still fit on `page` (pure).
pub fn room(page: &LedgerPage, records: &[IssuedCertificate]) -> usize {
    let held = page.spec.certificates.len();
    let mut bytes: usize = page.spec.certificates.iter().map(record_bytes).sum();
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

/// Every record of `pages`, with the page it is on.
pub fn records(pages: &[LedgerPage]) -> impl Iterator<Item = (&str, &IssuedCertificate)> {
    pages.iter().flat_map(|p| {
        let name = p.metadata.name.as_deref().unwrap_or_default();
        p.spec.certificates.iter().map(move |r| (name, r))
    })
}

/// Change records of page `name` in place with `edit` (which returns whether it changed the
/// record), conditioned on the version read; a conflicting write (the signer appending, another
/// revocation) is read again and `edit` applied to the new version. Returns the page's records
/// as they stand afterwards.
pub async fn edit_page(
    client: &Client,
    name: &str,
    mut edit: impl FnMut(&mut IssuedCertificate) -> bool,
) -> Result<Vec<IssuedCertificate>, kube::Error> {
    let api: Api<LedgerPage> = Api::all(client.clone());
    let mut attempt = 0;
    loop {
        let mut page = api.get(name).await?;
        let mut changed = false;
        for r in page.spec.certificates.iter_mut() {
            changed |= edit(r);
        }
        if !changed {
            return Ok(page.spec.certificates);
        }
        match api.replace(name, &PostParams::default(), &page).await {
            Ok(written) => return Ok(written.spec.certificates),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 20 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// One record as the index keeps it, with the page holding it.
#[derive(Clone, Debug, PartialEq)]
struct Copy {
    page: Arc<str>,
    record: IssuedCertificate,
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
    by_hash: HashMap<String, Vec<Copy>>,
    pages: HashMap<Arc<str>, Vec<String>>,
    revoked: usize,
}

impl LedgerIndex {
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
        page.spec.certificates = records.into_iter().cloned().collect();
        Self::from_pages([&page])
    }

    /// Put page `p` in force (added or changed).
    pub fn apply_page(&mut self, p: &LedgerPage) {
        let name: Arc<str> = Arc::from(p.name_any());
        self.remove_page(&name);
        let mut hashes = Vec::with_capacity(p.spec.certificates.len());
        for r in &p.spec.certificates {
            let hash = r.credential_hash();
            if r.revocation.is_some() {
                self.revoked += 1;
            }
            self.by_hash.entry(hash.clone()).or_default().push(Copy {
                page: name.clone(),
                record: r.clone(),
            });
            hashes.push(hash);
        }
        self.pages.insert(name, hashes);
    }

    /// Take page `name` out (deleted).
    pub fn remove_page(&mut self, name: &str) {
        let Some(hashes) = self.pages.remove(name) else {
            return;
        };
        for hash in hashes {
            if let Some(copies) = self.by_hash.get_mut(&hash) {
                copies.retain(|c| {
                    let gone = &*c.page == name;
                    if gone && c.record.revocation.is_some() {
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

    /// The record of a credential hash (hex, any spelling): a revoked copy if there is one.
    pub fn by_hash(&self, hash: &str) -> Option<&IssuedCertificate> {
        let copies = self.by_hash.get(&crate::crd::normalize_fingerprint(hash))?;
        copies
            .iter()
            .find(|c| c.record.revocation.is_some())
            .or_else(|| copies.first())
            .map(|c| &c.record)
    }

    /// The ledger record of the certificate a `credential-id` (`X509SHA256=…`) names.
    pub fn record(&self, credential_id: &str) -> Option<&IssuedCertificate> {
        self.by_hash(credential_id.strip_prefix("X509SHA256=")?)
    }

    /// The serial and revocation of the certificate a `credential-id` names, if revoked.
    pub fn lookup(&self, credential_id: &str) -> Option<(&str, &crate::crd::Revocation)> {
        let r = self.record(credential_id)?;
        Some((r.serial.as_str(), r.revocation.as_ref()?))
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
}

/// The record of the certificate with this serial (hex, as issued), if the ledger holds it.
pub async fn find_serial(
    client: &Client,
    serial: &str,
) -> Result<Option<IssuedCertificate>, kube::Error> {
    let pages = list_pages(client).await?;
    Ok(records(&pages)
        .map(|(_, r)| r)
        .find(|r| r.serial == serial)
        .cloned())
}

/// The ledger read once (the CLI).
pub async fn read_index(client: &Client) -> Result<LedgerIndex, kube::Error> {
    Ok(LedgerIndex::from_pages(&list_pages(client).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Revocation;

    fn rec(serial: &str, fp: &str, revoked: bool) -> IssuedCertificate {
        IssuedCertificate {
            serial: serial.into(),
            fingerprint_sha256: fp.into(),
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
        p.spec.certificates = records;
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
        assert!(index.knows("X509SHA256=aa01"));
        assert!(index.lookup("X509SHA256=aa01").is_none());
        assert_eq!(index.lookup("X509SHA256=aa03").unwrap().0, "03");
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
        assert_eq!(index.lookup("X509SHA256=aa02").unwrap().0, "02");
        index.remove_page("b");
        assert_eq!((index.records(), index.pages(), index.revoked()), (3, 1, 1));
        assert!(!index.knows("X509SHA256=aa03"));
        // Not an X.509 credential id: nothing.
        assert!(!index.knows("aa01"));
    }

    #[test]
    fn a_certificate_on_two_pages_is_revoked_if_either_copy_is() {
        let mut index = LedgerIndex::from_pages(&[
            page("a", vec![rec("01", "AA:01", false)]),
            page("b", vec![rec("01", "AA:01", true)]),
        ]);
        assert_eq!(index.records(), 1);
        assert!(index.lookup("X509SHA256=aa01").is_some());
        // Whichever page is applied last.
        index.apply_page(&page("a", vec![rec("01", "AA:01", false)]));
        assert!(index.lookup("X509SHA256=aa01").is_some());
        index.remove_page("b");
        assert!(index.lookup("X509SHA256=aa01").is_none());
        assert!(index.knows("X509SHA256=aa01"));
        index.remove_page("a");
        assert_eq!((index.records(), index.revoked()), (0, 0));
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
        assert_eq!(room(&full, std::slice::from_ref(&small)), 0);
        let half = page("y", vec![small.clone(); PAGE_MAX_RECORDS - 1]);
        assert_eq!(room(&half, &[small.clone(), small]), 1);
    }

    #[test]
    fn page_names_sort_by_time() {
        let a = new_page(1_764_547_200_000, 0xffff_ffff).name_any();
        let b = new_page(1_764_547_201_000, 0).name_any();
        assert!(a < b, "{a} {b}");
        assert_eq!(a, "20251201-000000-ffffffff");
    }
}
