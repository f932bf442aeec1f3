//! The one way kcert writes a CSR's `/approval` or `/status`: mutate the object the decision was
//! made for, PUT it under optimistic concurrency, and on a conflict read it again — but write
//! only while it is still *that* object (same uid). A CSR deleted and re-created under the same
//! name is another request: it is decided afresh, never handed the old one's decision.

use crate::WriteError as Error;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

/// Which subresource a write goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `/approval`: Approved and Denied conditions (and metadata).
    Approval,
    /// `/status`: the certificate and the Failed condition.
    Status,
}

/// How a write ended.
#[derive(Debug)]
pub enum Written {
    /// The API server accepted it; the object as stored.
    Done(Box<CertificateSigningRequest>),
    /// `mutate` found nothing left to write (someone else decided, signed or failed it).
    NothingToDo,
    /// The object is gone, or its name now belongs to another object (another uid).
    Gone,
}

/// How many conflicts in a row before giving up (the CSR is requeued).
const ATTEMPTS: usize = 5;

/// Whether an API error is permanent: retrying the same write cannot succeed (an invalid or
/// too large object), so the CSR must be marked Failed instead of retried forever.
pub fn is_permanent(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if matches!(s.code, 400 | 413 | 422))
}

/// Apply `mutate` to `csr` and write `subresource`, retrying on conflict. `mutate` returns
/// false when there is nothing (left) to write. Every write is conditioned on `csr`'s uid.
pub async fn replace_with_retry(
    api: &Api<CertificateSigningRequest>,
    csr: &CertificateSigningRequest,
    subresource: Subresource,
    mut mutate: impl FnMut(&mut CertificateSigningRequest) -> bool,
) -> Result<Written, Error> {
    let name = csr.name_any();
    let expected_uid = csr.metadata.uid.clone();
    let mut current = csr.clone();
    for _ in 0..ATTEMPTS {
        if current.metadata.uid != expected_uid {
            tracing::info!(csr = %name, "the CSR was re-created under the same name; not writing the old object's decision");
            return Ok(Written::Gone);
        }
        if !mutate(&mut current) {
            return Ok(Written::NothingToDo);
        }
        let pp = PostParams::default();
        let result = match subresource {
            Subresource::Approval => {
                api.replace_subresource("approval", &name, &pp, &current)
                    .await
            }
            Subresource::Status => api.replace_status(&name, &pp, &current).await,
        };
        match result {
            Ok(written) => return Ok(Written::Done(Box::new(written))),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!(csr = %name, "conflict; reading the latest version");
                match api.get_opt(&name).await? {
                    Some(latest) => current = latest,
                    None => return Ok(Written::Gone),
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Written::Gone),
            Err(e) if is_permanent(&e) => return Err(Error::Permanent(name, e.to_string())),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict(name))
}
