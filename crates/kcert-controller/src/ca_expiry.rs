//! The CAs in force, watched for expiry rather than discovered expired: their NotAfter as a
//! metric (`kcert_ca_not_after_seconds`), and for one within the warning window a warning in
//! `/readyz` (still ready: an expiring CA signs, and pulling every replica out would be the
//! outage), in the log, and a Warning Event on the trust bundle ConfigMap.

use crate::CaStore;
use kcert_kube::rotation::{BUNDLE_CONFIGMAP, ExpiryWindow};
use kcert_pki::CertificateAuthority;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The Event reason for a CA within its warning window.
pub const CA_EXPIRING: &str = "CaExpiring";

/// Warnings for `/readyz`, kept current by [`watch`].
#[derive(Clone, Default)]
pub struct Warnings(Arc<RwLock<Vec<String>>>);

impl Warnings {
    /// The warnings now.
    pub fn get(&self) -> Vec<String> {
        self.0.read().expect("warnings lock").clone()
    }

    fn set(&self, w: Vec<String>) {
        *self.0.write().expect("warnings lock") = w;
    }
}

/// The warning for `ca` at `now` (Unix seconds), if it is within `window` (pure).
pub fn warning(ca: &CertificateAuthority, window: ExpiryWindow, now: i64) -> Option<String> {
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    };
    let info = ca.info();
    let (from, until) = (unix(info.not_before_time()), unix(info.not_after_time()));
    window.warns(from, until, now).then(|| {
        let days = (until - now) as f64 / 86_400.0;
        format!(
            "CA {} (SHA-256 {}) {} {} ({:.0} days; warned with {window}): rotate it (`kcert ca rotate prepare`, docs/operations.md)",
            info.subject,
            kcert_kube::rotation::short(&info.fingerprint_sha256),
            if until <= now { "expired at" } else { "expires at" },
            info.not_after,
            days.abs(),
        )
    })
}

/// Every minute, and whenever the CA reloads: the CAs in force (the trusted ones during a
/// rotation) into the metrics and warnings; an Event the first time this process sees each CA
/// within its window (`events`: the recorder and the bundle's namespace).
pub async fn watch(
    store: CaStore,
    metrics: Arc<crate::metrics::Metrics>,
    warnings: Warnings,
    window: ExpiryWindow,
    events: Option<(kube::runtime::events::Recorder, String)>,
) {
    let mut loads = store.loads();
    let mut warned: HashSet<String> = HashSet::new();
    loop {
        let mut cas = store.trusted();
        if cas.is_empty() {
            cas.extend(store.own());
        }
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        metrics.ca_in_force(&cas);
        let mut now_warnings = Vec::new();
        for ca in &cas {
            let Some(w) = warning(ca, window, now) else {
                continue;
            };
            let fp = ca.info().fingerprint_sha256.clone();
            if warned.insert(fp) {
                tracing::warn!(warning = %w, "CA expiring");
                if let Some((recorder, namespace)) = &events {
                    let reference = k8s_openapi::api::core::v1::ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("ConfigMap".into()),
                        name: Some(BUNDLE_CONFIGMAP.into()),
                        namespace: Some(namespace.clone()),
                        ..Default::default()
                    };
                    let event = kube::runtime::events::Event {
                        type_: kube::runtime::events::EventType::Warning,
                        reason: CA_EXPIRING.into(),
                        note: Some(crate::conditions::truncate(&w, 1000)),
                        action: "WatchCaExpiry".into(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&event, &reference).await {
                        tracing::warn!(error = %e, "cannot publish an Event");
                    }
                }
            }
            now_warnings.push(w);
        }
        warnings.set(now_warnings);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = loads.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn a_ca_warns_once_within_a_third_of_its_lifetime() {
        let now = SystemTime::now();
        let ca = CertificateAuthority::create(
            kcert_pki::PrivateKey::generate(kcert_pki::KeyType::EcdsaP256).unwrap(),
            "short-lived",
            Duration::from_secs(3 * 86_400),
            now,
            &kcert_pki::SystemRandom,
        )
        .unwrap();
        let unix = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let window = ExpiryWindow::default();
        // `create` backdates NotBefore by an hour; a third of 3 days + 1 h is left after ~2 days.
        assert_eq!(warning(&ca, window, unix), None);
        assert_eq!(warning(&ca, window, unix + 86_400), None);
        let w = warning(&ca, window, unix + 2 * 86_400 + 3_600).expect("within a third");
        assert!(
            w.contains("CN=short-lived") && w.contains("expires at"),
            "{w}"
        );
        let w = warning(&ca, window, unix + 4 * 86_400).expect("expired");
        assert!(w.contains("expired at"), "{w}");
        let ninety = ExpiryWindow::Before(Duration::from_secs(90 * 86_400));
        assert!(warning(&ca, ninety, unix).is_some());
    }
}
