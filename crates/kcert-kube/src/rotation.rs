//! CA rotation as data: the `CaRotation` object admins write (`kcert ca rotate`) and the
//! controller follows, and the one pure function that says, from what it sees, which CA signs
//! and which CAs the published trust bundle holds.
//!
//! The phases, in order: **Prepare** (the new CA is loaded and published beside the old one;
//! the old one still signs), **Switch** (the new CA signs, only once the API server has been
//! seen to authenticate a probe certificate from it), **Complete** (the old CA leaves the
//! bundle, only once no live certificate of the old CA is on the ledger, or when forced).
//! Kept in the cluster, so a second admin or a restarted controller sees where a rotation is.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The name of the rotation object a controller follows unless told otherwise.
pub const DEFAULT_ROTATION: &str = "kcert";

/// The ConfigMap (in the controller's namespace) that holds the trust bundle, key
/// [`BUNDLE_KEY`]: every CA certificate a client certificate of kcert's may be issued by right
/// now. Operators sync it into kube-apiserver's `--client-ca-file`.
pub const BUNDLE_CONFIGMAP: &str = "kcert-ca-bundle";

/// The bundle's key in [`BUNDLE_CONFIGMAP`].
pub const BUNDLE_KEY: &str = "ca.crt";

/// The user the switch probe's certificate names (no groups): RBAC grants it nothing, so a
/// probe certificate, short-lived as it is, can do nothing but be authenticated.
pub const PROBE_USER: &str = "kcert:ca-rotation-probe";

/// How long after the switch `complete` is refused whatever the ledger says: a certificate the
/// old CA signed just before the switch reaches the ledger within its flush interval, well
/// inside this.
pub const COMPLETE_GRACE_SECONDS: i64 = 30;

/// A rotation of the CA a kcert-controller signs with. Cluster-scoped, one per controller
/// (named by `--ca-rotation`, default `kcert`); created by `kcert ca rotate prepare`, which
/// also names the new CA. Whoever may write it decides which CA kcert signs with: grant it as
/// you grant the CA's Secret.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "kcert.dev",
    version = "v1alpha1",
    kind = "CaRotation",
    root = "CaRotationObject",
    plural = "carotations",
    shortname = "carotation",
    status = "CaRotationStatus",
    printcolumn = r#"{"name":"Asked","type":"string","jsonPath":".spec.phase"}"#,
    printcolumn = r#"{"name":"Reached","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CaRotationSpec {
    /// The phase the admins ask for.
    pub phase: AskedPhase,
    /// The CA in force when the rotation began: the SHA-256 of its certificate (hex). A
    /// controller whose own CA is another one does nothing with this rotation (and says so).
    #[schemars(length(min = 64, max = 64))]
    pub from: String,
    /// The new CA.
    pub next: NextCa,
    /// Set by `kcert ca rotate complete --force`: who completed the rotation though
    /// certificates of the old CA were still live (they are cut off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub forced_by: Option<String>,
}

/// A phase an admin asks for.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
pub enum AskedPhase {
    /// Publish the new CA beside the old; keep signing with the old.
    #[default]
    Prepare,
    /// Sign with the new CA once the API server trusts it.
    Switch,
    /// Drop the old CA from the bundle.
    Complete,
}

/// A phase a controller has reached.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
pub enum ReachedPhase {
    /// Both CAs published; the old one signs.
    Prepared,
    /// Both CAs published; the new one signs.
    Switched,
    /// Only the new CA published and signing.
    Completed,
}

impl std::fmt::Display for AskedPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AskedPhase::Prepare => "Prepare",
            AskedPhase::Switch => "Switch",
            AskedPhase::Complete => "Complete",
        })
    }
}

impl std::fmt::Display for ReachedPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReachedPhase::Prepared => "Prepared",
            ReachedPhase::Switched => "Switched",
            ReachedPhase::Completed => "Completed",
        })
    }
}

/// Where the new CA is. Exactly one of `secret`, `tokenKeyLabel`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NextCa {
    /// A `kubernetes.io/tls` Secret in the controller's own namespace (`tls.crt`, `tls.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret: Option<String>,
    /// A key of this label in the controller's PKCS#11 token (the `--ca-pkcs11-*` module,
    /// token and PIN), with `certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub token_key_label: Option<String>,
    /// The new CA's certificate (PEM), for a key in a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub certificate: Option<String>,
    /// The SHA-256 of the new CA's certificate (hex), as `prepare` saw it: a Secret replaced
    /// since by another CA is refused, not followed.
    #[schemars(length(min = 64, max = 64))]
    pub fingerprint: String,
}

/// Where a controller is with a rotation.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaRotationStatus {
    /// The phase reached; unset until the controller has loaded the new CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ReachedPhase>,
    /// The `metadata.generation` this status answers.
    #[serde(default)]
    pub observed_generation: i64,
    /// The CA that signs now (SHA-256 of its certificate), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<String>,
    /// The CAs in the published bundle.
    #[serde(default)]
    pub trusted: Vec<TrustedCa>,
    /// When the new CA began to sign (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<String>,
    /// The last switch probe: when, and what the API server answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// Live (unexpired, unrevoked) certificates of the old CA on the ledger, as last counted.
    #[serde(default)]
    pub old_ca_live: u32,
    /// Why the phase asked for is not (yet) reached, or what was done; empty when there is
    /// nothing to say.
    #[serde(default)]
    pub message: String,
}

/// A CA in the bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustedCa {
    /// `old` or `new`.
    pub role: String,
    /// SHA-256 of its certificate (hex).
    pub fingerprint: String,
    /// Its subject key identifier (hex): the authority key identifier of what it issued.
    #[serde(default)]
    pub key_id: String,
    /// Its subject.
    pub subject: String,
    /// Its end of validity (RFC 3339).
    pub not_after: String,
}

/// One switch probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// When (RFC 3339).
    pub at: String,
    /// Whether the API server authenticated the probe certificate as [`PROBE_USER`].
    pub authenticated: bool,
    /// What it answered.
    pub message: String,
}

/// A CA as the rotation plan sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The controller's own CA (its flags): the old one during a rotation.
    Own,
    /// The rotation's new CA.
    Next,
}

/// What the controller sees when it plans.
#[derive(Clone, Debug)]
pub struct Seen<'a> {
    /// The SHA-256 of the controller's own CA, if loaded.
    pub own: Option<&'a str>,
    /// The rotation's spec.
    pub spec: &'a CaRotationSpec,
    /// The phase reached so far (the status).
    pub reached: Option<ReachedPhase>,
    /// When the switch happened (Unix seconds), if it has.
    pub switched_at: Option<i64>,
    /// The new CA's SHA-256 if it is loaded, or why it is not.
    pub next: Result<&'a str, &'a str>,
    /// The last probe's result, if one was made for this new CA.
    pub probe: Option<&'a Probe>,
    /// Live certificates of the old CA on the ledger, or why they cannot be counted.
    pub old_ca_live: Result<u32, &'a str>,
    /// Now, Unix seconds.
    pub now: i64,
}

/// What the controller does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The phase reached.
    pub reached: Option<ReachedPhase>,
    /// The CA that signs (`None`: none may).
    pub signing: Option<Which>,
    /// The CAs published.
    pub trusted: Vec<Which>,
    /// Whether a probe of the new CA is wanted now.
    pub probe: bool,
    /// What to tell the admins.
    pub message: String,
}

/// Which CA signs and which are published, from what the controller sees (pure). Fails closed:
/// a new CA that is not loaded is never trusted for signing, an old CA is never trusted again
/// once the rotation has completed, and a rotation that does not start from the controller's
/// own CA changes nothing.
pub fn plan(seen: &Seen) -> Plan {
    let unchanged = |message: String| Plan {
        reached: seen.reached,
        signing: Some(Which::Own),
        trusted: vec![Which::Own],
        probe: false,
        message,
    };
    let Some(own) = seen.own else {
        return Plan {
            signing: None,
            trusted: vec![],
            ..unchanged("the controller's own CA is not loaded".into())
        };
    };
    let own = crate::crd::normalize_fingerprint(own);
    let next_fp = crate::crd::normalize_fingerprint(&seen.spec.next.fingerprint);
    // The flags already name the new CA: the rotation is over for this controller.
    if own == next_fp {
        return Plan {
            reached: Some(ReachedPhase::Completed),
            ..unchanged(String::new())
        };
    }
    if own != crate::crd::normalize_fingerprint(&seen.spec.from) {
        return unchanged(format!(
            "this rotation starts from CA {}, but the controller signs with CA {}: it does nothing with it (delete it, or point the controller at its CA)",
            short(&seen.spec.from),
            short(&own)
        ));
    }
    let next_ok = match seen.next {
        Ok(fp) if crate::crd::normalize_fingerprint(fp) == next_fp => Ok(()),
        Ok(fp) => Err(format!(
            "the new CA's source now holds CA {}, not the CA {} prepared: it is not used (prepare again to rotate to it)",
            short(fp),
            short(&next_fp)
        )),
        Err(why) => Err(format!("the new CA cannot be loaded: {why}")),
    };
    if let Err(why) = next_ok {
        return match seen.reached {
            // The old CA is no longer published: nothing may be signed until the new CA loads.
            Some(ReachedPhase::Completed) => Plan {
                reached: seen.reached,
                signing: None,
                trusted: vec![],
                probe: false,
                message: format!("{why}; nothing is signed until it can be"),
            },
            // Both were published; the old one is trusted still and signs meanwhile.
            _ => unchanged(format!("{why}; the old CA signs meanwhile")),
        };
    }
    let both = vec![Which::Own, Which::Next];
    let prepared = Plan {
        reached: Some(ReachedPhase::Prepared),
        signing: Some(Which::Own),
        trusted: both.clone(),
        probe: false,
        message: String::new(),
    };
    let switched = Plan {
        reached: Some(ReachedPhase::Switched),
        signing: Some(Which::Next),
        trusted: both,
        probe: false,
        message: String::new(),
    };
    let completed = Plan {
        reached: Some(ReachedPhase::Completed),
        signing: Some(Which::Next),
        trusted: vec![Which::Next],
        probe: false,
        message: String::new(),
    };
    if seen.reached == Some(ReachedPhase::Completed) {
        return Plan {
            message: if seen.spec.phase < AskedPhase::Complete {
                format!(
                    "the rotation has completed: the old CA is no longer trusted and cannot sign again (asked: {})",
                    seen.spec.phase
                )
            } else {
                "completed: the bundle holds the new CA alone; point kcert-controller's CA flags at the new CA, then delete this rotation".into()
            },
            ..completed
        };
    }
    match seen.spec.phase {
        AskedPhase::Prepare => prepared,
        AskedPhase::Switch | AskedPhase::Complete
            if seen.reached == Some(ReachedPhase::Switched) =>
        {
            if seen.spec.phase == AskedPhase::Switch {
                return switched;
            }
            let since = seen.switched_at.map_or(0, |t| seen.now - t);
            if since < COMPLETE_GRACE_SECONDS {
                return Plan {
                    message: format!(
                        "switched {since}s ago: complete waits {COMPLETE_GRACE_SECONDS}s after the switch, for certificates the old CA signed just before it to reach the ledger"
                    ),
                    ..switched
                };
            }
            match (seen.old_ca_live, &seen.spec.forced_by) {
                (_, Some(_)) | (Ok(0), None) => completed,
                (Ok(n), None) => Plan {
                    message: format!(
                        "{n} unexpired, unrevoked certificate(s) of the old CA are on the ledger (`kcert ledger --issuer old`): renew or revoke them, or complete with --force to cut them off"
                    ),
                    ..switched
                },
                (Err(why), None) => Plan {
                    message: format!(
                        "cannot tell whether certificates of the old CA are live ({why}); complete waits (or --force)"
                    ),
                    ..switched
                },
            }
        }
        AskedPhase::Switch | AskedPhase::Complete => match seen.probe {
            Some(p) if p.authenticated => Plan {
                message: if seen.spec.phase == AskedPhase::Complete {
                    "switched; complete is considered from the next look".into()
                } else {
                    String::new()
                },
                ..switched
            },
            Some(p) => Plan {
                probe: true,
                message: format!(
                    "not switched: the API server does not authenticate a certificate of the new CA yet ({}); add the bundle (ConfigMap {BUNDLE_CONFIGMAP}) to its --client-ca-file",
                    p.message
                ),
                ..prepared
            },
            None => Plan {
                probe: true,
                message: "not switched yet: probing whether the API server trusts the new CA"
                    .into(),
                ..prepared
            },
        },
    }
}

/// When a CA counts as expiring: with a fraction of its lifetime left (`1/3`, `25%`), or within
/// a duration of its end (`90d`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ExpiryWindow {
    /// This fraction of its lifetime (0 to 1) or less left.
    FractionLeft(f64),
    /// This long or less left.
    Before(std::time::Duration),
}

impl Default for ExpiryWindow {
    /// A third of its lifetime left.
    fn default() -> Self {
        ExpiryWindow::FractionLeft(1.0 / 3.0)
    }
}

impl ExpiryWindow {
    /// `1/3`, `25%` or a duration (`90d`, `720h`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let fraction = if let Some(p) = t.strip_suffix('%') {
            p.trim().parse::<f64>().ok().map(|p| p / 100.0)
        } else if let Some((a, b)) = t.split_once('/') {
            match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
                (Ok(a), Ok(b)) if b > 0.0 => Some(a / b),
                _ => None,
            }
        } else {
            None
        };
        match fraction {
            Some(f) if (0.0..=1.0).contains(&f) => Ok(ExpiryWindow::FractionLeft(f)),
            Some(_) => Err(format!("{text:?}: a fraction of the lifetime is between 0 and 1 (e.g. 1/3, 25%)")),
            None => kcert_policy::duration::parse(t)
                .map(ExpiryWindow::Before)
                .map_err(|_| format!("{text:?} is neither a fraction of the lifetime (1/3, 25%) nor a duration (90d)")),
        }
    }

    /// Whether a CA valid from `not_before` to `not_after` (Unix seconds) is within the window
    /// at `now` (an expired one is).
    pub fn warns(self, not_before: i64, not_after: i64, now: i64) -> bool {
        let left = not_after - now;
        match self {
            ExpiryWindow::FractionLeft(f) => {
                let lifetime = (not_after - not_before).max(1) as f64;
                (left as f64) <= f * lifetime
            }
            ExpiryWindow::Before(d) => left <= d.as_secs() as i64,
        }
    }
}

impl std::fmt::Display for ExpiryWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpiryWindow::FractionLeft(x) if (x - 1.0 / 3.0).abs() < 1e-9 => {
                f.write_str("a third of its lifetime left")
            }
            ExpiryWindow::FractionLeft(x) => write!(f, "{:.0}% of its lifetime left", x * 100.0),
            ExpiryWindow::Before(d) => write!(f, "{}s or less left", d.as_secs()),
        }
    }
}

/// The bundle ConfigMap's annotation naming the CA that signs (SHA-256 of its certificate).
pub const SIGNING_ANNOTATION: &str = "kcert.dev/signing-sha256";

/// The bundle ConfigMap's annotation listing the CAs (SHA-256, comma-separated) retired by a
/// completed rotation: a controller whose own CA is one of them signs nothing, so that deleting
/// a completed rotation before the controller's flags name the new CA does not bring the old CA
/// back. (Remove a fingerprint from it by hand to use that CA again.)
pub const RETIRED_ANNOTATION: &str = "kcert.dev/retired-sha256";

/// The bundle ConfigMap's annotation saying where the signing CA's key lives (a file, a
/// Secret, a PKCS#11 token and key label; never key material).
pub const SIGNING_KEY_ANNOTATION: &str = "kcert.dev/signing-key";

/// The first 16 hex digits of a fingerprint, for messages.
pub fn short(fp: &str) -> String {
    crate::crd::normalize_fingerprint(fp)
        .chars()
        .take(16)
        .collect()
}

/// The CaRotation CRD, with the rule that `from` and `next` never change (a new rotation is a
/// new object).
pub fn ca_rotation_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
    use kube::CustomResourceExt;
    let mut crd = CaRotationObject::crd();
    for v in crd.spec.versions.iter_mut() {
        if let Some(spec) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
        {
            spec.x_kubernetes_validations = Some(vec![
                ValidationRule {
                    rule: "self.from == oldSelf.from && self.next == oldSelf.next".into(),
                    message: Some(
                        "a rotation's old and new CA never change (delete it and prepare another)"
                            .into(),
                    ),
                    ..Default::default()
                },
                ValidationRule {
                    rule: "(has(self.next.secret) ? 1 : 0) + (has(self.next.tokenKeyLabel) ? 1 : 0) == 1 && (has(self.next.tokenKeyLabel) == has(self.next.certificate))".into(),
                    message: Some(
                        "the new CA is a secret, or a tokenKeyLabel with its certificate".into(),
                    ),
                    ..Default::default()
                },
            ]);
        }
    }
    crd
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "aa";
    const NEW: &str = "bb";

    fn fp(s: &str) -> String {
        s.repeat(32)
    }

    fn spec(phase: AskedPhase) -> CaRotationSpec {
        CaRotationSpec {
            phase,
            from: fp(OLD),
            next: NextCa {
                secret: Some("kcert-ca-next".into()),
                fingerprint: fp(NEW),
                ..Default::default()
            },
            forced_by: None,
        }
    }

    struct Case {
        own: Option<String>,
        spec: CaRotationSpec,
        reached: Option<ReachedPhase>,
        switched_at: Option<i64>,
        next: Result<String, String>,
        probe: Option<Probe>,
        live: Result<u32, String>,
    }

    impl Case {
        fn new(phase: AskedPhase, reached: Option<ReachedPhase>) -> Case {
            Case {
                own: Some(fp(OLD)),
                spec: spec(phase),
                reached,
                switched_at: Some(0),
                next: Ok(fp(NEW)),
                probe: None,
                live: Ok(0),
            }
        }

        fn plan(&self) -> Plan {
            plan(&Seen {
                own: self.own.as_deref(),
                spec: &self.spec,
                reached: self.reached,
                switched_at: self.switched_at,
                next: self.next.as_deref().map_err(|e| e.as_str()),
                probe: self.probe.as_ref(),
                old_ca_live: self.live.as_ref().copied().map_err(|e| e.as_str()),
                now: 1000,
            })
        }
    }

    fn probe(ok: bool) -> Option<Probe> {
        Some(Probe {
            at: String::new(),
            authenticated: ok,
            message: if ok { "ok" } else { "401 Unauthorized" }.into(),
        })
    }

    #[test]
    fn prepare_publishes_both_and_the_old_ca_signs() {
        let p = Case::new(AskedPhase::Prepare, None).plan();
        assert_eq!(p.reached, Some(ReachedPhase::Prepared));
        assert_eq!(p.signing, Some(Which::Own));
        assert_eq!(p.trusted, vec![Which::Own, Which::Next]);
        assert!(!p.probe);
    }

    #[test]
    fn switch_waits_for_a_probe_the_api_server_authenticated() {
        let mut c = Case::new(AskedPhase::Switch, Some(ReachedPhase::Prepared));
        let p = c.plan();
        assert_eq!(
            (p.reached, p.signing, p.probe),
            (Some(ReachedPhase::Prepared), Some(Which::Own), true)
        );
        c.probe = probe(false);
        let p = c.plan();
        assert_eq!(p.signing, Some(Which::Own));
        assert!(p.message.contains("401 Unauthorized"), "{}", p.message);
        c.probe = probe(true);
        let p = c.plan();
        assert_eq!(
            (p.reached, p.signing),
            (Some(ReachedPhase::Switched), Some(Which::Next))
        );
        assert_eq!(p.trusted, vec![Which::Own, Which::Next]);
    }

    #[test]
    fn complete_straight_after_prepare_switches_first_and_completes_later() {
        let mut c = Case::new(AskedPhase::Complete, Some(ReachedPhase::Prepared));
        c.probe = probe(true);
        assert_eq!(c.plan().reached, Some(ReachedPhase::Switched));
        c.reached = Some(ReachedPhase::Switched);
        c.switched_at = Some(1000);
        let p = c.plan();
        assert_eq!(p.reached, Some(ReachedPhase::Switched), "within the grace");
        assert!(p.message.contains("waits"), "{}", p.message);
        c.switched_at = Some(0);
        let p = c.plan();
        assert_eq!(
            (p.reached, p.signing),
            (Some(ReachedPhase::Completed), Some(Which::Next))
        );
        assert_eq!(p.trusted, vec![Which::Next]);
    }

    #[test]
    fn complete_refuses_while_old_certificates_are_live_unless_forced() {
        let mut c = Case::new(AskedPhase::Complete, Some(ReachedPhase::Switched));
        c.live = Ok(2);
        let p = c.plan();
        assert_eq!(p.reached, Some(ReachedPhase::Switched));
        assert!(p.message.starts_with("2 unexpired"), "{}", p.message);
        c.live = Err("the ledger is not read".into());
        assert_eq!(
            c.plan().reached,
            Some(ReachedPhase::Switched),
            "unknown counts as live"
        );
        c.spec.forced_by = Some("admin".into());
        assert_eq!(c.plan().reached, Some(ReachedPhase::Completed));
    }

    #[test]
    fn a_completed_rotation_never_trusts_the_old_ca_again() {
        for asked in [
            AskedPhase::Prepare,
            AskedPhase::Switch,
            AskedPhase::Complete,
        ] {
            let mut c = Case::new(asked, Some(ReachedPhase::Completed));
            let p = c.plan();
            assert_eq!(
                (p.signing, p.trusted.clone()),
                (Some(Which::Next), vec![Which::Next])
            );
            // The new CA gone (its Secret deleted): nothing signs, nothing old comes back.
            c.next = Err("Secret not found".into());
            let p = c.plan();
            assert_eq!((p.signing, p.trusted), (None, vec![]), "{asked}");
        }
    }

    #[test]
    fn a_new_ca_that_is_not_loaded_or_not_the_prepared_one_never_signs() {
        for reached in [Some(ReachedPhase::Prepared), Some(ReachedPhase::Switched)] {
            let mut c = Case::new(AskedPhase::Switch, reached);
            c.probe = probe(true);
            c.next = Err("Secret not found".into());
            let p = c.plan();
            assert_eq!(
                (p.signing, p.trusted.clone()),
                (Some(Which::Own), vec![Which::Own])
            );
            c.next = Ok(fp("cc"));
            let p = c.plan();
            assert_eq!((p.signing, p.trusted), (Some(Which::Own), vec![Which::Own]));
            assert!(p.message.contains("not the CA"), "{}", p.message);
        }
    }

    #[test]
    fn a_rotation_from_another_ca_changes_nothing() {
        let mut c = Case::new(AskedPhase::Complete, Some(ReachedPhase::Switched));
        c.own = Some(fp("cc"));
        let p = c.plan();
        assert_eq!(
            (p.signing, p.trusted.clone()),
            (Some(Which::Own), vec![Which::Own])
        );
        assert!(p.message.contains("does nothing"), "{}", p.message);
        c.own = None;
        assert_eq!(c.plan().signing, None);
    }

    #[test]
    fn flags_pointing_at_the_new_ca_end_the_rotation() {
        let mut c = Case::new(AskedPhase::Complete, Some(ReachedPhase::Completed));
        c.own = Some(fp(NEW));
        let p = c.plan();
        assert_eq!((p.signing, p.trusted), (Some(Which::Own), vec![Which::Own]));
    }

    #[test]
    fn the_expiry_window_is_a_fraction_of_the_lifetime_or_a_duration() {
        let third = ExpiryWindow::default();
        assert_eq!(ExpiryWindow::parse("1/3").unwrap(), third);
        assert!(!third.warns(0, 300, 199), "more than a third left");
        assert!(third.warns(0, 300, 200), "a third left");
        assert!(third.warns(0, 300, 400), "expired");
        assert_eq!(
            ExpiryWindow::parse("25%").unwrap(),
            ExpiryWindow::FractionLeft(0.25)
        );
        let days = ExpiryWindow::parse("90d").unwrap();
        assert_eq!(
            days,
            ExpiryWindow::Before(std::time::Duration::from_secs(90 * 86_400))
        );
        assert!(days.warns(0, 100 * 86_400, 10 * 86_400));
        assert!(!days.warns(0, 100 * 86_400, 9 * 86_400));
        for bad in ["4/3", "150%", "1/0", "soon", ""] {
            assert!(ExpiryWindow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn going_back_from_switched_to_prepare_signs_with_the_old_ca_again() {
        let p = Case::new(AskedPhase::Prepare, Some(ReachedPhase::Switched)).plan();
        assert_eq!(
            (p.reached, p.signing),
            (Some(ReachedPhase::Prepared), Some(Which::Own))
        );
    }
}
