//! Revoking certificates: marking their ledger records (`kcert revoke`), and the index of revoked
//! credentials that kcert's authorization webhook answers from.

use crate::crd::{IssuedCertificate, Revocation, normalize_fingerprint};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use std::collections::HashMap;

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
    /// Whether `record` is selected.
    pub fn matches(&self, record: &IssuedCertificate) -> bool {
        let s = &record.spec;
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
    /// The record (`sn-<serial>`).
    pub record: String,
    /// The serial.
    pub serial: String,
    /// The user.
    pub user: String,
    /// `revoked` now, or `already revoked` (the first revocation stands).
    pub result: &'static str,
    /// The revocation in force.
    pub revocation: Revocation,
}

/// Mark every record `selector` picks as revoked by `by` for `reason`, now. Idempotent: a
/// record already revoked keeps its first revocation.
pub async fn revoke(
    client: &Client,
    selector: &Selector,
    by: &str,
    reason: &str,
) -> Result<Vec<Revoked>, kube::Error> {
    let api: Api<IssuedCertificate> = Api::all(client.clone());
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut out = Vec::new();
    for record in api.list(&ListParams::default()).await?.items {
        if !selector.matches(&record) {
            continue;
        }
        let name = record.name_any();
        if let Some(existing) = &record.spec.revocation {
            out.push(Revoked {
                record: name,
                serial: record.spec.serial.clone(),
                user: record.spec.user.clone(),
                result: "already revoked",
                revocation: existing.clone(),
            });
            continue;
        }
        let revocation = Revocation {
            revoked_at: now.clone(),
            revoked_by: by.to_string(),
            reason: reason.to_string(),
        };
        // Conditioned on the version read: a concurrent revocation is not overwritten.
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": record.metadata.resource_version},
            "spec": {"revocation": revocation},
        });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => out.push(Revoked {
                record: name,
                serial: record.spec.serial.clone(),
                user: record.spec.user.clone(),
                result: "revoked",
                revocation,
            }),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let now = api.get(&name).await?;
                out.push(Revoked {
                    record: name,
                    serial: now.spec.serial.clone(),
                    user: now.spec.user.clone(),
                    result: "already revoked",
                    revocation: now.spec.revocation.clone().unwrap_or(revocation),
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The revoked credentials, by credential hash (lower-case hex SHA-256 of the certificate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevokedCredentials {
    by_hash: HashMap<String, (String, Revocation)>,
}

impl RevokedCredentials {
    /// From every ledger record.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a IssuedCertificate>) -> Self {
        let by_hash = records
            .into_iter()
            .filter_map(|r| {
                let revocation = r.spec.revocation.clone()?;
                Some((
                    r.spec.credential_hash(),
                    (r.spec.serial.clone(), revocation),
                ))
            })
            .collect();
        RevokedCredentials { by_hash }
    }

    /// The serial and revocation of the certificate a `credential-id` names, if revoked.
    pub fn lookup(&self, credential_id: &str) -> Option<&(String, Revocation)> {
        let hash = credential_id.strip_prefix("X509SHA256=")?;
        self.by_hash.get(&normalize_fingerprint(hash))
    }

    /// How many are revoked.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The key under which the API server puts the certificate's fingerprint in a user's extra.
pub const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// Answer a SubjectAccessReview (v1, as JSON) for kcert's authorization webhook: `denied` with
/// the revocation named when the request's X.509 credential is revoked, no opinion otherwise
/// (the next authorizer, RBAC, decides). Pure.
pub fn review(request: &serde_json::Value, revoked: &RevokedCredentials) -> serde_json::Value {
    let ids = request["spec"]["extra"][CREDENTIAL_ID]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let hit = ids
        .iter()
        .filter_map(|v| v.as_str())
        .find_map(|id| revoked.lookup(id));
    let status = match hit {
        Some((serial, r)) => serde_json::json!({
            "allowed": false,
            "denied": true,
            "reason": format!(
                "kcert: certificate serial {serial} was revoked at {} by {}: {}",
                r.revoked_at, r.revoked_by, r.reason
            ),
        }),
        None => serde_json::json!({"allowed": false}),
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
    use crate::crd::IssuedCertificateSpec;

    fn record(serial: &str, fp: &str, user: &str, revoked: bool) -> IssuedCertificate {
        IssuedCertificate::new(
            &format!("sn-{serial}"),
            IssuedCertificateSpec {
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
            },
        )
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
            record("01", "AA:BB", "jane", true),
            record("02", "CC:DD", "bob", false),
        ];
        let revoked = RevokedCredentials::from_records(&records);
        assert_eq!(revoked.len(), 1);
        let sar = |id: &str| {
            serde_json::json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": "jane", "extra": {CREDENTIAL_ID: [id]}}})
        };
        let denied = review(&sar("X509SHA256=aabb"), &revoked);
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
            sar("X509SHA256=ccdd"),
            sar("JWT=whatever"),
            serde_json::json!({"spec": {"user": "x"}}),
        ] {
            let answer = review(&other, &revoked);
            assert_eq!(
                answer["status"],
                serde_json::json!({"allowed": false}),
                "{other}"
            );
        }
    }
}
