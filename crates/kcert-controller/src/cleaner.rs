//! Garbage collection of finished CSRs with kube-controller-manager's timings: issued and
//! approved after 1 h, denied or failed after 1 h, pending after 24 h, issued with an expired
//! certificate at once — an issued CSR only once its certificate is in the ledger.

use crate::conditions;
use crate::ledger::LedgerView;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use std::time::{Duration, SystemTime};

/// When to delete what.
#[derive(Clone, Debug)]
pub struct CleanerSettings {
    /// How often to look.
    pub interval: Duration,
    /// Approved (and issued) CSRs, counted from the Approved condition's last update.
    pub approved: Duration,
    /// Denied CSRs.
    pub denied: Duration,
    /// Failed CSRs.
    pub failed: Duration,
    /// Pending CSRs, counted from creation.
    pub pending: Duration,
}

impl Default for CleanerSettings {
    fn default() -> Self {
        CleanerSettings {
            interval: Duration::from_secs(3600),
            approved: Duration::from_secs(3600),
            denied: Duration::from_secs(3600),
            failed: Duration::from_secs(3600),
            pending: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a CSR may go now, or None.
pub fn due(
    csr: &CertificateSigningRequest,
    s: &CleanerSettings,
    now: SystemTime,
) -> Option<&'static str> {
    let since = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| -> Duration {
        t.and_then(|t| {
            let secs =
                now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs() as i64 - t.0.as_second();
            u64::try_from(secs).ok()
        })
        .map(Duration::from_secs)
        .unwrap_or_default()
    };
    let condition = |type_: &str| {
        csr.status
            .as_ref()
            .and_then(|st| st.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == "True"))
            .cloned()
    };
    if let Some(cert) = csr
        .status
        .as_ref()
        .and_then(|st| st.certificate.as_ref())
        .and_then(|c| kcert_pki::CertificateInfo::from_pem_chain(&c.0).ok())
        && cert.not_after_time() <= now
    {
        return Some("certificate expired");
    }
    if let Some(c) = condition(conditions::FAILED) {
        return (since(c.last_update_time.as_ref()) >= s.failed).then_some("failed");
    }
    if let Some(c) = condition(conditions::DENIED) {
        return (since(c.last_update_time.as_ref()) >= s.denied).then_some("denied");
    }
    if let Some(c) = condition(conditions::APPROVED) {
        return (since(c.last_update_time.as_ref()) >= s.approved).then_some("approved");
    }
    (since(csr.metadata.creation_timestamp.as_ref()) >= s.pending).then_some("pending too long")
}

/// Whether the certificate `csr` holds is on record (or there is nothing to record).
fn on_record(csr: &CertificateSigningRequest, ledger: &LedgerView) -> bool {
    let Some(cert) = csr
        .status
        .as_ref()
        .and_then(|st| st.certificate.as_ref())
        .and_then(|c| kcert_pki::CertificateInfo::from_pem_chain(&c.0).ok())
    else {
        return !conditions::has_certificate(csr);
    };
    ledger.holds(&cert.fingerprint_sha256) == Some(true)
}

/// One pass: delete what is due among `signers`' CSRs. Returns the names deleted. With a
/// `ledger`, an issued CSR is deleted only once the ledger shows its certificate (the signer
/// records it; until then the CSR is the only copy).
pub async fn sweep(
    client: &Client,
    signers: &[String],
    s: &CleanerSettings,
    ledger: Option<&LedgerView>,
) -> Result<Vec<String>, kube::Error> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut deleted = Vec::new();
    for csr in api.list(&ListParams::default()).await?.items {
        if !signers.contains(&csr.spec.signer_name) {
            continue;
        }
        let Some(why) = due(&csr, s, SystemTime::now()) else {
            continue;
        };
        if let Some(ledger) = ledger
            && !on_record(&csr, ledger)
        {
            tracing::info!(csr = %csr.name_any(), "not deleting yet: its certificate is not on record");
            continue;
        }
        let name = csr.name_any();
        // This very object only: a CSR re-created under the same name since the list (a new
        // request, not yet decided) is the API server's 409, and is left alone.
        let this_one = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: csr.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &this_one).await {
            Ok(_) => {
                tracing::info!(csr = %name, why, "deleted finished CSR");
                deleted.push(name);
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Sweep every `interval` until dropped.
pub async fn run(
    client: Client,
    signers: Vec<String>,
    s: CleanerSettings,
    ledger: Option<LedgerView>,
) {
    loop {
        if let Err(e) = sweep(&client, &signers, &s, ledger.as_ref()).await {
            tracing::warn!(error = %e, "cleaner pass failed");
        }
        tokio::time::sleep(s.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(secs_ago: i64) -> Time {
        Time(
            k8s_openapi::jiff::Timestamp::from_second(
                k8s_openapi::jiff::Timestamp::now().as_second() - secs_ago,
            )
            .unwrap(),
        )
    }

    fn csr(created_ago: i64, condition: Option<(&str, i64)>) -> CertificateSigningRequest {
        let mut c = CertificateSigningRequest::default();
        c.metadata.creation_timestamp = Some(at(created_ago));
        if let Some((t, ago)) = condition {
            let mut cond = conditions::condition(t, "R", "m");
            cond.last_update_time = Some(at(ago));
            c.status = Some(Default::default());
            c.status.as_mut().unwrap().conditions = Some(vec![cond]);
        }
        c
    }

    #[tokio::test]
    async fn a_csr_re_created_under_the_same_name_is_not_deleted() {
        use crate::fake_api::{Exchange, FakeApi, status};
        use http::Method;
        let mut denied = csr(7200, Some((conditions::DENIED, 7200)));
        denied.metadata.name = Some("jane".into());
        denied.metadata.uid = Some("uid-old".into());
        denied.spec.signer_name = "kcert.dev/client".into();
        let list = serde_json::json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequestList",
            "metadata": {},
            "items": [serde_json::to_value(&denied).unwrap()],
        });
        let api = FakeApi::new(vec![
            Exchange::new(Method::GET, "/certificatesigningrequests", 200, list),
            Exchange::new(
                Method::DELETE,
                "/certificatesigningrequests/jane",
                409,
                status(409, "Conflict", "Precondition failed: UID in precondition: uid-old, UID in object meta: uid-new"),
            )
            .checking(|body| {
                assert_eq!(body["preconditions"]["uid"], "uid-old", "{body}");
            }),
        ]);
        let deleted = sweep(
            &api.client(),
            &["kcert.dev/client".to_string()],
            &CleanerSettings::default(),
            None,
        )
        .await
        .unwrap();
        assert!(deleted.is_empty(), "{deleted:?}");
        api.assert_done();
    }

    #[test]
    fn timings_follow_kube_controller_manager() {
        let s = CleanerSettings::default();
        let now = SystemTime::now();
        assert_eq!(due(&csr(10, None), &s, now), None);
        assert_eq!(
            due(&csr(25 * 3600, None), &s, now),
            Some("pending too long")
        );
        assert_eq!(due(&csr(7200, Some(("Approved", 1800))), &s, now), None);
        assert_eq!(
            due(&csr(7200, Some(("Approved", 3700))), &s, now),
            Some("approved")
        );
        assert_eq!(
            due(&csr(7200, Some(("Denied", 3700))), &s, now),
            Some("denied")
        );
        assert_eq!(due(&csr(7200, Some(("Denied", 60))), &s, now), None);
        assert_eq!(
            due(&csr(7200, Some(("Failed", 3700))), &s, now),
            Some("failed")
        );
    }
}
