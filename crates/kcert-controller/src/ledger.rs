//! The issuance ledger: an `IssuedCertificate` per certificate, written by the signer and kept
//! after the CSR is gone.

use crate::conditions;
use crate::crd::{IssuedCertificate, IssuedCertificateSpec};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_pki::CertificateInfo;
use kube::api::{GetParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use std::collections::HashSet;
use std::sync::Mutex;

pub use kcert_kube::crd::record_name;

/// What approved the CSR: the kcert rule from the provenance record (only when kcert provably
/// wrote it for this object), or the Approved condition's reason.
pub fn approved_by(csr: &CertificateSigningRequest) -> String {
    if let Some(p) = crate::provenance::Provenance::read(csr).filter(|p| p.approved_by_rule())
        && let (Some(rule), Some(policy)) = (&p.rule, &p.policy)
    {
        return format!("rule {rule} of policy {policy}");
    }
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == conditions::APPROVED))
        .map(|c| c.reason.clone().unwrap_or_else(|| "Approved".into()))
        .unwrap_or_else(|| "unknown".into())
}

/// The ledger record for an issued CSR (pure).
pub fn record(csr: &CertificateSigningRequest, cert: &CertificateInfo) -> IssuedCertificate {
    let spec = IssuedCertificateSpec {
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
    };
    IssuedCertificate {
        metadata: ObjectMeta {
            name: Some(record_name(&cert.serial)),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "kcert".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec,
    }
}

/// Make sure the ledger holds the CSR's certificate. Ok(true) when the record exists afterwards.
pub async fn ensure(client: &Client, csr: &CertificateSigningRequest) -> Result<bool, kube::Error> {
    let Some(pem) = csr.status.as_ref().and_then(|s| s.certificate.as_ref()) else {
        return Ok(false);
    };
    let Ok(cert) = CertificateInfo::from_pem(&pem.0) else {
        return Ok(false);
    };
    let api: Api<IssuedCertificate> = Api::all(client.clone());
    match api
        .create(&PostParams::default(), &record(csr, &cert))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(true),
        Err(e) => Err(e),
    }
}

/// The signer's view of the ledger: remembers which CSRs are on record, so each certificate
/// costs one create, and a CSR found already issued (after a restart or a re-list) costs one
/// read from the API server's cache instead of a create that fails with 409. Nothing is listed:
/// the ledger only grows, the CSRs in the cache do not.
pub struct Ledger {
    client: Client,
    recorded: Mutex<HashSet<String>>,
    issued_here: Mutex<HashSet<String>>,
}

impl Ledger {
    /// A ledger writing through `client`.
    pub fn new(client: Client) -> Self {
        Ledger {
            client,
            recorded: Mutex::new(HashSet::new()),
            issued_here: Mutex::new(HashSet::new()),
        }
    }

    fn set(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
        set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This process just wrote the CSR's certificate: its record cannot exist yet.
    pub fn issued_here(&self, csr: &CertificateSigningRequest) {
        Self::set(&self.issued_here).insert(csr.metadata.uid.clone().unwrap_or_default());
    }

    /// Make sure the ledger holds the CSR's certificate (see [`ensure`]).
    pub async fn ensure(&self, csr: &CertificateSigningRequest) -> Result<bool, kube::Error> {
        let uid = csr.metadata.uid.clone().unwrap_or_default();
        if Self::set(&self.recorded).contains(&uid) {
            return Ok(true);
        }
        let fresh = Self::set(&self.issued_here).remove(&uid);
        if !fresh && self.on_record(csr).await? {
            Self::set(&self.recorded).insert(uid);
            return Ok(true);
        }
        let on_record = ensure(&self.client, csr).await?;
        if on_record {
            Self::set(&self.recorded).insert(uid);
        }
        Ok(on_record)
    }

    /// Whether the record exists, read from the API server's watch cache.
    async fn on_record(&self, csr: &CertificateSigningRequest) -> Result<bool, kube::Error> {
        lookup(&self.client, csr, &GetParams::any()).await
    }

    /// Forget CSRs that are gone (`present` holds the uids still in the cache), so memory
    /// follows the cluster's CSRs rather than every certificate ever issued.
    pub fn retain(&self, present: &HashSet<String>) {
        Self::set(&self.recorded).retain(|uid| present.contains(uid));
        Self::set(&self.issued_here).retain(|uid| present.contains(uid));
    }
}

/// Whether the ledger holds the CSR's certificate.
pub async fn contains(
    client: &Client,
    csr: &CertificateSigningRequest,
) -> Result<bool, kube::Error> {
    lookup(client, csr, &GetParams::default()).await
}

async fn lookup(
    client: &Client,
    csr: &CertificateSigningRequest,
    params: &GetParams,
) -> Result<bool, kube::Error> {
    let Some(cert) = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .and_then(|c| CertificateInfo::from_pem(&c.0).ok())
    else {
        return Ok(false);
    };
    let api: Api<IssuedCertificate> = Api::all(client.clone());
    match api.get_with(&record_name(&cert.serial), params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}
