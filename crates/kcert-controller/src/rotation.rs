//! Following a CA rotation (`CaRotation`, written by `kcert ca rotate`): load its new CA, probe
//! whether the API server trusts it, put [`kcert_kube::rotation::plan`]'s answer in force in the
//! [`CaStore`], publish the trust bundle and report in the object's status.
//!
//! Every replica running the signer follows (so that the one that becomes leader signs with the
//! right CA from its first CSR: until it has read the rotation once, it signs nothing); only the
//! leader probes and writes (the status, the bundle, ClusterTrustBundles), the others follow the
//! status it writes.

use crate::CaStore;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kcert_kube::rotation::{
    BUNDLE_CONFIGMAP, BUNDLE_KEY, CaRotationObject, CaRotationStatus, NextCa, PROBE_USER, Probe,
    RETIRED_ANNOTATION, ReachedPhase, SIGNING_ANNOTATION, SIGNING_KEY_ANNOTATION, Seen, TrustedCa,
    Which,
};
use kcert_pki::CertificateAuthority;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How the controller follows rotations.
#[derive(Clone, Debug)]
pub struct RotationSettings {
    /// The CaRotation object followed.
    pub name: String,
    /// The controller's namespace: the new CA's Secret and the bundle ConfigMap live here.
    pub namespace: String,
    /// The API server as the controller reaches it (the switch probe connects with its own
    /// certificate instead of the controller's credentials).
    pub api: kube::Config,
    /// The controller's token, for a new CA whose key is in it (`next.tokenKeyLabel`).
    pub token: Option<kcert_pkcs11::TokenConfig>,
    /// How often the rotation is read.
    pub every: Duration,
    /// Also publish the bundle as a ClusterTrustBundle linked to each of these signer names
    /// (certificates.k8s.io/v1beta1; needs `attest` on the signer), kept current through
    /// rotations. Empty: none.
    pub trust_bundle_signers: Vec<String>,
}

/// How long a failed probe is not repeated.
const PROBE_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Follower {
    /// The new CA loaded, by what it was loaded from (a Secret's resourceVersion, a token
    /// label and certificate).
    next: Option<(String, Arc<CertificateAuthority>)>,
    /// The last probe, by the new CA's fingerprint.
    probe: Option<(String, Probe, std::time::Instant)>,
    /// The bundle last published.
    published: Option<String>,
    /// The own CA, once a completed rotation has retired it (recorded on the bundle).
    retire: Option<String>,
    /// Whether the own CA was last found retired (said once, not at every look).
    refused_retired: bool,
    /// The own CA's fingerprint, whether the bundle lists it as retired, and when that was read.
    retired_seen: Option<(String, bool, std::time::Instant)>,
    /// Whether this replica leads: only then does it probe and write.
    leading: bool,
    /// The bundle last published as ClusterTrustBundles.
    published_ctb: Option<String>,
    /// The bundle whose write last failed, and when (retried every [`PUBLISH_RETRY`], not at
    /// every look; a changed bundle at once).
    publish_failed: Option<(String, std::time::Instant)>,
}

/// How long whether the own CA is retired is taken as read.
const RETIRED_EVERY: Duration = Duration::from_secs(30);

/// How long a failed bundle write waits before the next try.
const PUBLISH_RETRY: Duration = Duration::from_secs(30);

/// Follow the rotation `settings.name` for as long as the controller runs.
/// `leading`: whether this replica leads; one that does not follows the status the leader
/// writes (the CA in force for it too, should it become leader) but neither probes nor writes.
pub async fn follow(
    client: Client,
    settings: RotationSettings,
    store: CaStore,
    ledger: Option<crate::ledger::LedgerView>,
    leading: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut follower = Follower::default();
    let mut loads = store.loads();
    loop {
        follower.leading = leading.load(std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = follower
            .look(&client, &settings, &store, ledger.as_ref())
            .await
        {
            tracing::warn!(error = %e, rotation = %settings.name, "cannot read the CA rotation; retrying (the plan last read stays in force)");
        }
        // Again after `every`, or at once when the own CA (re)loads (start-up, a new Secret).
        tokio::select! {
            _ = tokio::time::sleep(settings.every) => {}
            _ = loads.changed() => {}
        }
    }
}

fn fingerprint(ca: &CertificateAuthority) -> String {
    kcert_kube::crd::normalize_fingerprint(&ca.info().fingerprint_sha256)
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl Follower {
    async fn look(
        &mut self,
        client: &Client,
        settings: &RotationSettings,
        store: &CaStore,
        ledger: Option<&crate::ledger::LedgerView>,
    ) -> Result<(), kube::Error> {
        let own = store.own();
        let api: Api<CaRotationObject> = Api::all(client.clone());
        let Some(rotation) = api.get_opt(&settings.name).await? else {
            let Some(own) = &own else {
                store.set_rotation(None, None, vec![]);
                return Ok(());
            };
            // A CA a completed rotation retired never signs again, rotation object or not.
            // (Read again when the own CA changes, else every RETIRED_EVERY: a retirement is
            // written by this controller's leader, or undone by hand.)
            let own_fp = fingerprint(own);
            let is_retired = match &self.retired_seen {
                Some((fp, verdict, at)) if *fp == own_fp && at.elapsed() < RETIRED_EVERY => {
                    *verdict
                }
                _ => {
                    let verdict = retired(client, &settings.namespace)
                        .await?
                        .contains(&own_fp);
                    self.retired_seen = Some((own_fp, verdict, std::time::Instant::now()));
                    verdict
                }
            };
            if is_retired {
                store.set_rotation(None, None, vec![]);
                if !self.refused_retired {
                    tracing::error!(ca = %own.describe(), "the controller's CA was retired by a completed rotation (bundle annotation kcert.dev/retired-sha256): nothing is signed; point the CA flags at the new CA");
                    self.refused_retired = true;
                }
                return Ok(());
            }
            self.refused_retired = false;
            store.set_rotation(None, Some(Which::Own), vec![Which::Own]);
            self.publish(client, settings, std::slice::from_ref(own), Some(own))
                .await;
            return Ok(());
        };
        if own.is_none() {
            // Starting: nothing signs until the own CA is loaded (the plan would say so), and the
            // status a running replica wrote is left as it is, not blanked.
            store.set_rotation(None, None, vec![]);
            return Ok(());
        }
        let next = self.load_next(client, settings, &rotation.spec.next).await;
        let next_fp = next.as_ref().map(|ca| fingerprint(ca));
        let status = rotation.status.clone().unwrap_or_default();
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let old_live = match (&own, ledger) {
            (None, _) => Err("the old CA is not loaded".to_string()),
            (_, None) => Err("the ledger is off (--ledger=false)".to_string()),
            (Some(own), Some(view)) => {
                match (own.info().subject_key_id.as_deref(), &*view.read()) {
                    (None, _) => Err("the old CA has no subject key identifier".to_string()),
                    (_, None) => Err("the ledger is not read yet".to_string()),
                    (Some(ski), Some(index)) => Ok(index.live_from(ski, now).len() as u32),
                }
            }
        };
        let switched_at = status
            .switched_at
            .as_deref()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_second());
        let own_fp = own.as_deref().map(fingerprint);
        let probe_now = |f: &Follower| -> Option<Probe> {
            match (&f.probe, &next_fp) {
                (Some((fp, p, _)), Ok(n)) if fp == n => Some(p.clone()),
                _ => None,
            }
        };
        let seen = |probe: Option<&Probe>| -> kcert_kube::rotation::Plan {
            kcert_kube::rotation::plan(&Seen {
                own: own_fp.as_deref(),
                spec: &rotation.spec,
                reached: status.phase,
                switched_at,
                next: next_fp.as_deref().map_err(|e| e.as_str()),
                probe,
                old_ca_live: old_live.as_ref().copied().map_err(|e| e.as_str()),
                now,
            })
        };
        let mut plan = seen(probe_now(self).as_ref());
        if plan.probe
            && self.leading
            && let Ok(ca) = &next
        {
            let due = self.probe.as_ref().is_none_or(|(fp, _, at)| {
                Some(fp) != next_fp.as_ref().ok() || at.elapsed() >= PROBE_EVERY
            });
            if due {
                let p = probe(&settings.api, ca).await;
                tracing::info!(authenticated = p.authenticated, answer = %p.message, "CA rotation: switch probe");
                self.probe = Some((fingerprint(ca), p, std::time::Instant::now()));
                plan = seen(probe_now(self).as_ref());
            }
        }
        let next_ca = next.as_ref().ok().cloned();
        if plan.reached != status.phase
            || plan.signing != signing_of(&status, own_fp.as_deref(), next_fp.as_deref().ok())
        {
            tracing::info!(reached = ?plan.reached, signing = ?plan.signing, message = %plan.message, "CA rotation: plan in force");
        }
        store.set_rotation(next_ca.clone(), plan.signing, plan.trusted.clone());
        if plan.reached == Some(ReachedPhase::Completed) && !plan.trusted.contains(&Which::Own) {
            self.retire = own_fp.clone();
        }
        let ca_of = |w: &Which| match w {
            Which::Own => own.clone(),
            Which::Next => next_ca.clone(),
        };
        let trusted: Vec<Arc<CertificateAuthority>> =
            plan.trusted.iter().filter_map(ca_of).collect();
        let signing = plan.signing.as_ref().and_then(ca_of);
        if !trusted.is_empty() {
            self.publish(client, settings, &trusted, signing.as_ref())
                .await;
        }
        let new_status = CaRotationStatus {
            phase: plan.reached,
            observed_generation: rotation.metadata.generation.unwrap_or(0),
            signing: plan
                .signing
                .as_ref()
                .and_then(ca_of)
                .map(|ca| fingerprint(&ca)),
            trusted: plan
                .trusted
                .iter()
                .filter_map(|w| {
                    let ca = ca_of(w)?;
                    let info = ca.info();
                    Some(TrustedCa {
                        // The flags already naming the new CA: it is "new", not "old".
                        role: if matches!(w, Which::Next)
                            || fingerprint(&ca)
                                == kcert_kube::crd::normalize_fingerprint(
                                    &rotation.spec.next.fingerprint,
                                )
                        {
                            "new"
                        } else {
                            "old"
                        }
                        .into(),
                        fingerprint: fingerprint(&ca),
                        key_id: info.subject_key_id.clone().unwrap_or_default(),
                        subject: info.subject.to_string(),
                        not_after: info.not_after.clone(),
                    })
                })
                .collect(),
            switched_at: match plan.reached {
                Some(ReachedPhase::Switched | ReachedPhase::Completed) => {
                    status.switched_at.clone().or_else(|| Some(now_rfc3339()))
                }
                _ => None,
            },
            probe: probe_now(self).or(status.probe.clone()),
            old_ca_live: *old_live.as_ref().unwrap_or(&status.old_ca_live),
            message: plan.message.clone(),
        };
        if self.leading && !same_status(&status, &new_status) {
            let patch = serde_json::json!({ "status": new_status });
            api.patch_status(
                &settings.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        }
        Ok(())
    }

    /// The new CA, from its Secret or the token; cached while its source is unchanged.
    async fn load_next(
        &mut self,
        client: &Client,
        settings: &RotationSettings,
        next: &NextCa,
    ) -> Result<Arc<CertificateAuthority>, String> {
        match (&next.secret, &next.token_key_label, &next.certificate) {
            (Some(name), None, _) => {
                let api: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
                let secret = api
                    .get_opt(name)
                    .await
                    .map_err(|e| format!("Secret {}/{name}: {e}", settings.namespace))?
                    .ok_or_else(|| format!("Secret {}/{name} not found", settings.namespace))?;
                let source = format!(
                    "secret:{name}:{}",
                    secret.metadata.resource_version.as_deref().unwrap_or("")
                );
                if let Some((s, ca)) = &self.next
                    && *s == source
                {
                    return Ok(ca.clone());
                }
                let data = secret.data.unwrap_or_default();
                let (Some(cert), Some(key)) = (data.get("tls.crt"), data.get("tls.key")) else {
                    return Err(format!(
                        "Secret {}/{name} needs tls.crt and tls.key",
                        settings.namespace
                    ));
                };
                let ca = CertificateAuthority::load(&cert.0, &key.0, SystemTime::now())
                    .map_err(|e| format!("Secret {}/{name}: {e}", settings.namespace))?;
                let ca = Arc::new(ca);
                self.next = Some((source, ca.clone()));
                Ok(ca)
            }
            (None, Some(label), Some(cert)) => {
                let source = format!("token:{label}:{}", kcert_pki::sha256_hex(cert.as_bytes()));
                if let Some((s, ca)) = &self.next
                    && *s == source
                {
                    return Ok(ca.clone());
                }
                let Some(mut token) = settings.token.clone() else {
                    return Err(format!(
                        "the new CA's key is in a token (label {label}), but this controller has no --ca-pkcs11-module"
                    ));
                };
                token.key = kcert_pkcs11::KeySelector::Label(label.clone());
                let key = tokio::task::spawn_blocking(move || kcert_pkcs11::TokenKey::open(token))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                let ca = CertificateAuthority::with_key(
                    cert.as_bytes(),
                    Arc::new(key),
                    SystemTime::now(),
                )
                .map_err(|e| format!("the new CA (token key {label}): {e}"))?;
                let ca = Arc::new(ca);
                self.next = Some((source, ca.clone()));
                Ok(ca)
            }
            _ => Err(
                "the rotation names no new CA (a secret, or a tokenKeyLabel with its certificate)"
                    .into(),
            ),
        }
    }

    /// Write the bundle ConfigMap unless it already holds exactly these CAs.
    async fn publish(
        &mut self,
        client: &Client,
        settings: &RotationSettings,
        cas: &[Arc<CertificateAuthority>],
        signing: Option<&Arc<CertificateAuthority>>,
    ) {
        if !self.leading {
            return;
        }
        let annotations = std::collections::BTreeMap::from_iter(
            signing
                .map(|ca| {
                    [
                        (SIGNING_ANNOTATION.to_string(), fingerprint(ca)),
                        (SIGNING_KEY_ANNOTATION.to_string(), ca.key_location()),
                    ]
                })
                .into_iter()
                .flatten(),
        );
        // What is published: the certificates and which of them signs, with its key's place.
        let mut annotations = annotations;
        if let Some(fp) = &self.retire {
            annotations.insert(RETIRED_ANNOTATION.to_string(), fp.clone());
        }
        let pem = bundle_pem(cas);
        if !settings.trust_bundle_signers.is_empty()
            && self.published_ctb.as_deref() != Some(pem.as_str())
        {
            match publish_trust_bundles(client, &settings.trust_bundle_signers, &pem).await {
                Ok(()) => self.published_ctb = Some(pem.clone()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish the CA bundle as ClusterTrustBundles; retrying")
                }
            }
        }
        let published = format!("{pem}{annotations:?}");
        if self.published.as_deref() == Some(published.as_str())
            || self
                .publish_failed
                .as_ref()
                .is_some_and(|(failed, at)| *failed == published && at.elapsed() < PUBLISH_RETRY)
        {
            return;
        }
        match publish_bundle(client, &settings.namespace, &pem, &annotations).await {
            Ok(()) => {
                self.published = Some(published);
                self.publish_failed = None;
            }
            Err(e) => {
                self.publish_failed = Some((published, std::time::Instant::now()));
                tracing::warn!(error = %e, configmap = %format!("{}/{BUNDLE_CONFIGMAP}", settings.namespace), "cannot publish the CA bundle; retrying")
            }
        }
    }
}

/// Which CA the status says signs.
fn signing_of(status: &CaRotationStatus, own: Option<&str>, next: Option<&str>) -> Option<Which> {
    let s = status.signing.as_deref()?;
    if own == Some(s) {
        Some(Which::Own)
    } else if next == Some(s) {
        Some(Which::Next)
    } else {
        None
    }
}

/// Whether two statuses say the same (a probe's time alone is no news).
fn same_status(a: &CaRotationStatus, b: &CaRotationStatus) -> bool {
    let outcome = |s: &CaRotationStatus| {
        s.probe
            .as_ref()
            .map(|p| (p.authenticated, p.message.clone()))
    };
    a.phase == b.phase
        && a.observed_generation == b.observed_generation
        && a.signing == b.signing
        && a.trusted == b.trusted
        && a.switched_at == b.switched_at
        && a.old_ca_live == b.old_ca_live
        && a.message == b.message
        && outcome(a) == outcome(b)
}

/// The certificates relying parties trust for these CAs, PEM, in order, each once: a root CA
/// itself, an intermediate its chain's top (so that rotating an intermediate under the same
/// root leaves the bundle as it is).
pub fn bundle_pem(cas: &[Arc<CertificateAuthority>]) -> String {
    let mut out: Vec<String> = Vec::new();
    for pem in cas.iter().map(|ca| ca.anchor_pem()) {
        if !out.contains(&pem) {
            out.push(pem);
        }
    }
    out.concat()
}

async fn publish_bundle(
    client: &Client,
    namespace: &str,
    pem: &str,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let data = std::collections::BTreeMap::from([(BUNDLE_KEY.to_string(), pem.to_string())]);
    let existing = api.get_opt(BUNDLE_CONFIGMAP).await?;
    // Retired CAs accumulate: what is there stays, a newly retired one is added.
    let mut annotations = annotations.clone();
    let mut retired: Vec<String> = existing
        .as_ref()
        .and_then(|cm| {
            cm.metadata
                .annotations
                .as_ref()?
                .get(RETIRED_ANNOTATION)
                .cloned()
        })
        .map(|v| {
            v.split(',')
                .map(str::to_string)
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(fp) = annotations.remove(RETIRED_ANNOTATION)
        && !retired.contains(&fp)
    {
        retired.push(fp);
    }
    if !retired.is_empty() {
        annotations.insert(RETIRED_ANNOTATION.to_string(), retired.join(","));
    }
    let keys = [
        SIGNING_ANNOTATION,
        SIGNING_KEY_ANNOTATION,
        RETIRED_ANNOTATION,
    ];
    let annotated = |cm: &ConfigMap| {
        let have = cm.metadata.annotations.clone().unwrap_or_default();
        keys.iter().all(|k| have.get(*k) == annotations.get(*k))
    };
    match existing {
        Some(cm) if cm.data.as_ref() == Some(&data) && annotated(&cm) => Ok(()),
        Some(mut cm) => {
            cm.data = Some(data);
            let all = cm.metadata.annotations.get_or_insert_with(Default::default);
            for k in keys {
                match annotations.get(k) {
                    Some(v) => all.insert(k.to_string(), v.clone()),
                    None => all.remove(k),
                };
            }
            api.replace(BUNDLE_CONFIGMAP, &PostParams::default(), &cm)
                .await
                .map(drop)
        }
        None => {
            let cm = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(BUNDLE_CONFIGMAP.into()),
                    namespace: Some(namespace.into()),
                    annotations: Some(annotations),
                    labels: Some(
                        [("app.kubernetes.io/name".to_string(), "kcert".to_string())].into(),
                    ),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await.map(drop)
        }
    }
}

/// The CAs (SHA-256) the bundle ConfigMap records as retired by completed rotations.
async fn retired(client: &Client, namespace: &str) -> Result<Vec<String>, kube::Error> {
    Ok(Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(BUNDLE_CONFIGMAP)
        .await?
        .and_then(|cm| cm.metadata.annotations?.get(RETIRED_ANNOTATION).cloned())
        .map(|v| {
            v.split(',')
                .map(kcert_kube::crd::normalize_fingerprint)
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default())
}

/// The ClusterTrustBundle kcert keeps for `signer` (the signer-linked naming rule:
/// `<signer with "/" as ":">:<suffix>`).
pub fn trust_bundle_name(signer: &str) -> String {
    format!("{}:kcert", signer.replace('/', ":"))
}

/// Create or update one ClusterTrustBundle per signer holding exactly `pem`.
async fn publish_trust_bundles(
    client: &Client,
    signers: &[String],
    pem: &str,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::certificates::v1beta1::{ClusterTrustBundle, ClusterTrustBundleSpec};
    let api: Api<ClusterTrustBundle> = Api::all(client.clone());
    for signer in signers {
        let name = trust_bundle_name(signer);
        match api.get_opt(&name).await? {
            Some(b) if b.spec.trust_bundle == pem => {}
            Some(mut b) => {
                b.spec.trust_bundle = pem.to_string();
                api.replace(&name, &PostParams::default(), &b).await?;
            }
            None => {
                let b = ClusterTrustBundle {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(
                            [("app.kubernetes.io/name".to_string(), "kcert".to_string())].into(),
                        ),
                        ..Default::default()
                    },
                    spec: ClusterTrustBundleSpec {
                        signer_name: Some(signer.clone()),
                        trust_bundle: pem.to_string(),
                    },
                };
                api.create(&PostParams::default(), &b).await?;
            }
        }
        tracing::info!(bundle = %name, signer = %signer, "ClusterTrustBundle published");
    }
    Ok(())
}

/// How many connections a switch probe makes: each must authenticate. Behind a load balancer
/// of several API servers, each new connection may reach another one (not a proof that all
/// have read the new bundle; sync every API server's --client-ca-file before switching).
const PROBE_CONNECTIONS: usize = 3;

/// Whether the API server authenticates a certificate of `ca`: a fresh key, a 10-minute
/// certificate for [`PROBE_USER`] (no groups: RBAC grants it nothing), a SelfSubjectReview on
/// each of [`PROBE_CONNECTIONS`] connections of its own.
pub async fn probe(api: &kube::Config, ca: &CertificateAuthority) -> Probe {
    let mut outcome = (true, String::new());
    let config = match probe_config(api, ca) {
        Ok(c) => c,
        Err(e) => {
            return Probe {
                at: now_rfc3339(),
                authenticated: false,
                message: e,
            };
        }
    };
    for _ in 0..PROBE_CONNECTIONS {
        outcome = match probe_once(&config).await {
            Ok(user) if user == PROBE_USER => (
                true,
                format!("authenticated as {PROBE_USER} on {PROBE_CONNECTIONS} connections"),
            ),
            Ok(user) => (
                false,
                format!(
                    "authenticated as {}, not {PROBE_USER}",
                    kcert_policy::escape_for_message(&user)
                ),
            ),
            Err(e) => (false, e),
        };
        if !outcome.0 {
            break;
        }
    }
    let (authenticated, message) = outcome;
    Probe {
        at: now_rfc3339(),
        authenticated,
        message,
    }
}

/// `api` with a fresh probe certificate of `ca` (and its chain) as the only credential.
fn probe_config(api: &kube::Config, ca: &CertificateAuthority) -> Result<kube::Config, String> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let key = kcert_pki::PrivateKey::generate(kcert_pki::KeyType::EcdsaP256)
        .map_err(|e| e.to_string())?;
    let subject =
        kcert_pki::CsrSubject::new(PROBE_USER, Vec::<String>::new()).map_err(|e| e.to_string())?;
    let csr = kcert_pki::build_csr(&key, &subject, &kcert_pki::SubjectAltNames::default())
        .and_then(|pem| kcert_pki::CertificateRequest::from_pem(pem.as_bytes()))
        .map_err(|e| e.to_string())?;
    let issued = ca
        .sign_as(
            &csr,
            &subject,
            &kcert_pki::SigningProfile::client(kcert_pki::MIN_LIFETIME),
            SystemTime::now(),
            &kcert_pki::SystemRandom,
        )
        .map_err(|e| format!("the new CA cannot sign: {e}"))?;
    tracing::info!(serial = %issued.serial, user = PROBE_USER, "CA rotation: probe certificate issued (10 minutes, no groups)");
    let key_pem = key.to_pkcs8_pem().map_err(|e| e.to_string())?;
    let mut config = api.clone();
    config.auth_info = kube::config::AuthInfo {
        client_certificate_data: Some(b64(&issued.to_pem_with_chain())),
        client_key_data: Some(b64(key_pem.as_str()).into()),
        ..Default::default()
    };
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(10));
    Ok(config)
}

/// One SelfSubjectReview on a connection of its own: the user the API server saw.
async fn probe_once(config: &kube::Config) -> Result<String, String> {
    let client = Client::try_from(config.clone()).map_err(|e| e.to_string())?;
    let review = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) => format!("{} {}", s.code, s.message),
            e => e.to_string(),
        })?;
    Ok(review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default())
}
