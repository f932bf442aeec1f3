//! Revoking certificates: marking their ledger records (`kcert revoke`), and the index of revoked
//! credentials that kcert's authorization webhook answers from. Revoking nodes: a record of its
//! own on the ledger (`kcert revoke --node`), in force until an admin clears it.

use crate::crd::{
    Clearance, IssuedCertificate, LedgerPage, Revocation, RevokedNodeRecord, normalize_fingerprint,
};
use crate::ledger::{LedgerIndex, edit_node_revocations, edit_page, list_pages, new_page};
use kube::api::PostParams;
use kube::{Api, Client};

/// Which certificates to revoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// By serial number (hex, as the ledger and openssl show it).
    Serial(String),
    /// By SHA-256 fingerprint (any spelling: `AB:CD…`, hex, `X509SHA256=…`).
    Fingerprint(String),
    /// The certificate issued for this CSR.
    Csr(String),
    /// Every certificate of this user (CN).
    User(String),
}

impl Selector {
    /// Whether `record` is selected (a node revocation record, which is no certificate, never
    /// is).
    pub fn matches(&self, s: &IssuedCertificate) -> bool {
        if s.is_node_revocation() {
            return false;
        }
        match self {
            Selector::Serial(serial) => {
                s.serial.trim_start_matches('0') == serial.to_lowercase().trim_start_matches('0')
            }
            Selector::Fingerprint(f) => s.credential_hash() == normalize_fingerprint(f),
            Selector::Csr(name) => &s.csr_name == name,
            Selector::User(user) => &s.user == user,
        }
    }
}

/// What `revoke` did to each selected record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    /// The ledger page holding the record.
    pub page: String,
    /// The serial.
    pub serial: String,
    /// The user.
    pub user: String,
    /// `revoked` now, or `already revoked` (the first revocation stands).
    pub result: &'static str,
    /// The revocation in force.
    pub revocation: Revocation,
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// What `revoke_node` did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRevoked {
    /// The node.
    pub node: String,
    /// The ledger page holding the revocation in force.
    pub page: String,
    /// `revoked` now, or `already revoked` (the revocation in force stands).
    pub result: &'static str,
    /// The revocation in force.
    pub revocation: Revocation,
}

/// Revoke node `node` (its name, not its user) by `by` for `reason`, now: a node revocation
/// record on a ledger page of its own ([`RevokedNodeRecord`]), which kcert-controller reads to
/// refuse every kubelet CSR for `system:node:<node>`, bootstrap or renewal (`NodeRevoked`), until
/// [`clear_node`]. Idempotent: while a revocation of the node is in force it stands and nothing
/// is written. (The node's certificates are revoked by [`revoke`] with its user.)
pub async fn revoke_node(
    client: &Client,
    node: &str,
    by: &str,
    reason: &str,
) -> Result<NodeRevoked, kube::Error> {
    let index = LedgerIndex::from_pages(&list_pages(client).await?);
    if let Some(e) = index.revoked_node(node) {
        return Ok(NodeRevoked {
            node: node.into(),
            page: e.page.to_string(),
            result: "already revoked",
            revocation: e.revocation.clone(),
        });
    }
    let revocation = Revocation {
        revoked_at: now_rfc3339(),
        revoked_by: by.into(),
        reason: reason.into(),
    };
    let mut nonce = [0u8; 16];
    {
        use kcert_pki::RandomSource;
        // Only for the record's fingerprint to be unique; the clock will do otherwise.
        if kcert_pki::SystemRandom.fill(&mut nonce).is_err() {
            nonce = k8s_openapi::jiff::Timestamp::now()
                .as_nanosecond()
                .to_be_bytes();
        }
    }
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let record = RevokedNodeRecord::new(node, revocation.clone(), &nonce);
    let suffix = u32::from_str_radix(&nonce[..8], 16).unwrap_or_default();
    let mut page = new_page(k8s_openapi::jiff::Timestamp::now().as_millisecond(), suffix);
    page.spec.push_node_revocation(&record);
    let written = Api::<LedgerPage>::all(client.clone())
        .create(&PostParams::default(), &page)
        .await?;
    Ok(NodeRevoked {
        node: node.into(),
        page: written.metadata.name.unwrap_or_default(),
        result: "revoked",
        revocation,
    })
}

/// What `clear_node` did to one revocation of the node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCleared {
    /// The node.
    pub node: String,
    /// The ledger page holding the record.
    pub page: String,
    /// The revocation cleared.
    pub revocation: Revocation,
    /// Who cleared it, when, why.
    pub cleared: Clearance,
}

/// Clear every revocation in force of node `node`, recording who (`by`), when and why on each
/// record (which stays on the ledger). The node may bootstrap again once kcert-controller sees
/// it; its certificates stay revoked (a certificate's revocation is never undone). Returns what
/// was cleared: empty if the node was not revoked. A revocation record kcert cannot read is not
/// cleared (the caller sees it still in force in the ledger).
pub async fn clear_node(
    client: &Client,
    node: &str,
    by: &str,
    reason: &str,
) -> Result<Vec<NodeCleared>, kube::Error> {
    let clearance = Clearance {
        cleared_at: now_rfc3339(),
        cleared_by: by.into(),
        reason: reason.into(),
    };
    let pages = list_pages(client).await?;
    let holding: Vec<String> = crate::ledger::node_revocations(&pages)
        .into_iter()
        .filter(|(_, r)| r.revoked_node.node == node && r.in_force())
        .map(|(p, _)| p.to_string())
        .collect();
    let mut out = Vec::new();
    for name in holding.iter().collect::<std::collections::BTreeSet<_>>() {
        let now = edit_node_revocations(client, name, |r| {
            if r.revoked_node.node == node && r.in_force() {
                r.revoked_node.cleared = Some(clearance.clone());
                true
            } else {
                false
            }
        })
        .await?;
        for r in now {
            if r.revoked_node.node == node && r.revoked_node.cleared.as_ref() == Some(&clearance) {
                out.push(NodeCleared {
                    node: node.into(),
                    page: name.clone(),
                    revocation: r.record.revocation.clone().unwrap_or_default(),
                    cleared: clearance.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// Mark every record `selector` picks as revoked by `by` for `reason`, now. Idempotent: a
/// record already revoked keeps its first revocation. Each page is changed conditioned on the
/// version read, so neither the signer appending to it nor a concurrent revocation is
/// overwritten.
pub async fn revoke(
    client: &Client,
    selector: &Selector,
    by: &str,
    reason: &str,
) -> Result<Vec<Revoked>, kube::Error> {
    let revocation = Revocation {
        revoked_at: now_rfc3339(),
        revoked_by: by.to_string(),
        reason: reason.to_string(),
    };
    revoke_as(client, selector, &revocation).await
}

/// [`revoke`] with a given revocation (that of a Revocation object, so that the pages and the
/// object say the same).
pub async fn revoke_as(
    client: &Client,
    selector: &Selector,
    revocation: &Revocation,
) -> Result<Vec<Revoked>, kube::Error> {
    let revocation = revocation.clone();
    let pages = list_pages(client).await?;
    let mut out = Vec::new();
    for page in &pages {
        let name = page.metadata.name.clone().unwrap_or_default();
        if !page
            .spec
            .read()
            .any(|r| r.is_ok_and(|r| selector.matches(&r)))
        {
            continue;
        }
        let now = edit_page(client, &name, |r| {
            if selector.matches(r) && r.revocation.is_none() {
                r.revocation = Some(revocation.clone());
                true
            } else {
                false
            }
        })
        .await?;
        for r in now.iter().filter(|r| selector.matches(r)) {
            let Some(in_force) = &r.revocation else {
                continue;
            };
            out.push(Revoked {
                page: name.clone(),
                serial: r.serial.clone(),
                user: r.user.clone(),
                // Ours, or an earlier (or concurrent) one that stands.
                result: if *in_force == revocation {
                    "revoked"
                } else {
                    "already revoked"
                },
                revocation: in_force.clone(),
            });
        }
    }
    Ok(out)
}

/// The Revocation object that revokes what `selector` picks, by `by` for `reason` (its name
/// generated: `revoke-<random>`).
pub fn revocation_object(
    selector: &Selector,
    by: &str,
    reason: &str,
) -> crate::crd::RevocationObject {
    let mut spec = crate::crd::RevocationSpec {
        reason: reason.into(),
        revoked_by: by.into(),
        ..Default::default()
    };
    match selector {
        Selector::Serial(s) => spec.serial = Some(s.clone()),
        Selector::Fingerprint(f) => spec.fingerprint = Some(f.clone()),
        Selector::Csr(c) => spec.csr = Some(c.clone()),
        Selector::User(u) => spec.user = Some(u.clone()),
    }
    let mut object = crate::crd::RevocationObject::new("", spec);
    object.metadata.name = None;
    object.metadata.generate_name = Some("revoke-".into());
    object
}

/// The revocation a Revocation object stands for (its creation time, author and reason).
pub fn revocation_of(object: &crate::crd::RevocationObject) -> Revocation {
    Revocation {
        revoked_at: object
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(now_rfc3339),
        revoked_by: object.spec.revoked_by.clone(),
        reason: object.spec.reason.clone(),
    }
}

/// Strict mode: users and groups (patterns with `*`, `?`) whose X.509 requests must come with a
/// certificate kcert issued (in the ledger); any other certificate — minted by hand with the CA
/// key, say — is denied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Strict {
    /// User patterns.
    pub users: Vec<String>,
    /// Group patterns.
    pub groups: Vec<String>,
}

impl Strict {
    fn applies(&self, request: &serde_json::Value) -> Option<String> {
        let user = request["spec"]["user"].as_str().unwrap_or_default();
        if let Some(p) = self
            .users
            .iter()
            .find(|p| kcert_policy::glob_matches(p, user))
        {
            return Some(format!("user {user:?} (strict: {p})"));
        }
        let groups = request["spec"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        groups.iter().filter_map(|g| g.as_str()).find_map(|g| {
            self.groups
                .iter()
                .find(|p| kcert_policy::glob_matches(p, g))
                .map(|p| format!("group {g:?} (strict: {p})"))
        })
    }
}

/// The key under which the API server puts the certificate's fingerprint in a user's extra.
pub const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// Answer a SubjectAccessReview (v1, as JSON) for kcert's authorization webhook: `denied` with
/// the revocation named when the request's X.509 credential is revoked, no opinion otherwise
/// (the next authorizer, RBAC, decides). Pure.
/// What a revoked certificate (or the descendant of one) is told.
pub fn refusal(hit: &crate::ledger::RevokedLineage<'_>) -> String {
    let r = hit.revocation;
    match hit.through {
        None => format!(
            "kcert: certificate serial {} was revoked at {} by {}: {}",
            hit.serial, r.revoked_at, r.revoked_by, r.reason
        ),
        Some(ancestor) => format!(
            "kcert: certificate serial {} was requested with certificate serial {ancestor} (or its renewals), which was revoked at {} by {}: {}",
            hit.serial, r.revoked_at, r.revoked_by, r.reason
        ),
    }
}

pub fn review(
    request: &serde_json::Value,
    revoked: &LedgerIndex,
    strict: &Strict,
) -> serde_json::Value {
    let ids: Vec<String> = request["spec"]["extra"][CREDENTIAL_ID]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .filter(|id| id.starts_with("X509SHA256="))
        .collect();
    let deny =
        |reason: String| serde_json::json!({"allowed": false, "denied": true, "reason": reason});
    let hit = ids.iter().find_map(|id| revoked.revoked_lineage(id));
    let status = match hit {
        Some(hit) => deny(crate::revocation::refusal(&hit)),
        None => match strict.applies(request) {
            Some(who) if !ids.is_empty() && !ids.iter().any(|id| revoked.knows(id)) => {
                deny(format!(
                    "kcert: this certificate was not issued by kcert (not in the ledger), and {who} may only use kcert-issued certificates"
                ))
            }
            _ => serde_json::json!({"allowed": false}),
        },
    };
    serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(serial: &str, fp: &str, user: &str, revoked: bool) -> IssuedCertificate {
        IssuedCertificate {
            serial: serial.into(),
            user: user.into(),
            fingerprint_sha256: fp.into(),
            csr_name: format!("csr-{serial}"),
            revocation: revoked.then(|| Revocation {
                revoked_at: "2026-12-01T00:00:00Z".into(),
                revoked_by: "admin".into(),
                reason: "left the company".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn selectors_and_fingerprint_spellings() {
        let r = record("0a1b", "AB:CD:EF", "jane", false);
        assert!(Selector::Serial("A1B".into()).matches(&r));
        assert!(Selector::Fingerprint("abcdef".into()).matches(&r));
        assert!(Selector::Fingerprint("X509SHA256=ABCDEF".into()).matches(&r));
        assert!(Selector::Csr("csr-0a1b".into()).matches(&r));
        assert!(Selector::User("jane".into()).matches(&r));
        assert!(!Selector::User("bob".into()).matches(&r));
        assert!(!Selector::Fingerprint("abcdee".into()).matches(&r));
    }

    #[test]
    fn a_revoked_credential_is_denied_naming_the_revocation_and_others_get_no_opinion() {
        let records = [
            record(
                "01",
                &format!("AA:BB:{}", "00:".repeat(29) + "00"),
                "jane",
                true,
            ),
            record(
                "02",
                &format!("CC:DD:{}", "00:".repeat(29) + "00"),
                "bob",
                false,
            ),
        ];
        let revoked = LedgerIndex::from_records(&records);
        assert_eq!(revoked.revoked(), 1);
        let sar = |id: &str| {
            serde_json::json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": "jane", "extra": {CREDENTIAL_ID: [id]}}})
        };
        let none = Strict::default();
        let denied = review(
            &sar(format!("X509SHA256=aabb{}", "00".repeat(30)).as_str()),
            &revoked,
            &none,
        );
        assert_eq!(denied["status"]["denied"], true);
        assert_eq!(denied["status"]["allowed"], false);
        let reason = denied["status"]["reason"].as_str().unwrap();
        assert!(
            reason.contains("serial 01")
                && reason.contains("left the company")
                && reason.contains("admin"),
            "{reason}"
        );
        for other in [
            sar(format!("X509SHA256=ccdd{}", "00".repeat(30)).as_str()),
            sar("JWT=whatever"),
            serde_json::json!({"spec": {"user": "x"}}),
        ] {
            let answer = review(&other, &revoked, &none);
            assert_eq!(
                answer["status"],
                serde_json::json!({"allowed": false}),
                "{other}"
            );
        }
    }

    #[test]
    fn strict_mode_denies_certificates_kcert_never_issued_for_the_subjects_named() {
        let records = [record(
            "02",
            &format!("CC:DD:{}", "00:".repeat(29) + "00"),
            "bob",
            false,
        )];
        let index = LedgerIndex::from_records(&records);
        let strict = Strict {
            users: vec!["admin-*".into()],
            groups: vec!["ops".into()],
        };
        let sar = |user: &str, groups: &[&str], id: &str| serde_json::json!({"spec": {"user": user, "groups": groups, "extra": {CREDENTIAL_ID: [id]}}});
        let no_opinion = serde_json::json!({"allowed": false});
        // Minted by hand (unknown hash) for a strict user or group: denied.
        let d = review(
            &sar(
                "admin-1",
                &[],
                format!("X509SHA256=eeee{}", "00".repeat(30)).as_str(),
            ),
            &index,
            &strict,
        );
        assert_eq!(d["status"]["denied"], true);
        assert!(
            d["status"]["reason"]
                .as_str()
                .unwrap()
                .contains("not issued by kcert")
        );
        let d = review(
            &sar(
                "carol",
                &["ops"],
                format!("X509SHA256=eeee{}", "00".repeat(30)).as_str(),
            ),
            &index,
            &strict,
        );
        assert_eq!(d["status"]["denied"], true);
        // A kcert-issued certificate, or someone not named: no opinion.
        let d = review(
            &sar(
                "admin-1",
                &["ops"],
                format!("X509SHA256=ccdd{}", "00".repeat(30)).as_str(),
            ),
            &index,
            &strict,
        );
        assert_eq!(d["status"], no_opinion);
        let d = review(
            &sar(
                "carol",
                &["dev"],
                format!("X509SHA256=eeee{}", "00".repeat(30)).as_str(),
            ),
            &index,
            &strict,
        );
        assert_eq!(d["status"], no_opinion);
    }
}
