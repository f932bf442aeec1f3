//! `kcert ca rotate prepare|switch|complete|status` and `kcert ca bundle`: the admin's side of
//! a CA rotation. The CLI writes what the admin asks for on the CaRotation object (with its
//! resourceVersion: two admins at once get a conflict, not a mix) and waits for the
//! controller, which alone decides what is in force (kcert_kube::rotation::plan).

use super::report;
use super::request::api_message;
use crate::cli::{
    BundleArgs, CaStatusArgs, OutputFormat, RotateArgs, RotateCommand, RotateCompleteArgs,
    RotatePrepareArgs,
};
use crate::target::Target;
use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kcert_kube::rotation::{
    AskedPhase, BUNDLE_CONFIGMAP, BUNDLE_KEY, CaRotationObject, CaRotationSpec, NextCa,
    ReachedPhase,
};
use kcert_pki::{CertificateAuthority, PrivateKey, SystemRandom};
use kube::api::{PostParams, ResourceExt};
use kube::{Api, Client};
use std::time::{Duration, SystemTime};

/// Run one `kcert ca rotate` command.
pub async fn run(command: &RotateCommand, out: OutputFormat, target: &Target) -> Result<()> {
    let (client, _) = target.connect().await?;
    match command {
        RotateCommand::Prepare(args) => prepare(&client, args, out).await,
        RotateCommand::Switch(args) => switch(&client, args, out).await,
        RotateCommand::Complete(args) => complete(&client, args, out).await,
        RotateCommand::Status(args) => {
            let rotation = get(&client, &args.rotation).await?;
            print(out, &rotation, None);
            Ok(())
        }
    }
}

fn rotations(client: &Client) -> Api<CaRotationObject> {
    Api::all(client.clone())
}

async fn get(client: &Client, name: &str) -> Result<CaRotationObject> {
    match rotations(client).get_opt(name).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => bail!(
            "no CA rotation {name} (start one with `kcert ca rotate prepare`; another controller's: --rotation NAME)"
        ),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            bail!("the cluster has no CaRotation CRD; apply deploy/crd.yaml")
        }
        Err(e) => bail!("reading CA rotation {name}: {}", api_message(&e)),
    }
}

/// The subject key identifier (hex) of the rotation's `old` or `new` CA.
pub(crate) async fn ca_of_role(client: &Client, rotation: &str, role: &str) -> Result<String> {
    let r = get(client, rotation).await?;
    r.status
        .unwrap_or_default()
        .trusted
        .into_iter()
        .find(|t| t.role == role && !t.key_id.is_empty())
        .map(|t| kcert_kube::crd::normalize_fingerprint(&t.key_id))
        .ok_or_else(|| {
            anyhow!(
                "CA rotation {rotation} has no {role} CA in its bundle now (`kcert ca rotate status`)"
            )
        })
}

/// The CA certificates of the published bundle, parsed (never printed as they came).
async fn published(client: &Client, namespace: &str) -> Result<Vec<kcert_pki::CertificateInfo>> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(BUNDLE_CONFIGMAP)
        .await
        .map_err(|e| anyhow!("reading ConfigMap {namespace}/{BUNDLE_CONFIGMAP}: {}", api_message(&e)))?
        .ok_or_else(|| {
            anyhow!(
                "no ConfigMap {namespace}/{BUNDLE_CONFIGMAP}: kcert-controller publishes it once it has loaded its CA (is it running, with --ca-rotation on? another namespace: -n)"
            )
        })?;
    let pem = cm
        .data
        .and_then(|d| d.get(BUNDLE_KEY).cloned())
        .unwrap_or_default();
    let blocks = kcert_pki::pem::parse_blocks(pem.as_bytes())
        .map_err(|e| anyhow!("ConfigMap {namespace}/{BUNDLE_CONFIGMAP}: {e}"))?;
    blocks
        .iter()
        .map(|b| {
            kcert_pki::CertificateInfo::from_der(&b.der)
                .map_err(|e| anyhow!("ConfigMap {namespace}/{BUNDLE_CONFIGMAP}: {e}"))
        })
        .collect()
}

async fn prepare(client: &Client, args: &RotatePrepareArgs, out: OutputFormat) -> Result<()> {
    let common = &args.common;
    if let Some(existing) = rotations(client)
        .get_opt(&common.rotation)
        .await
        .map_err(|e| {
            anyhow!(
                "reading CA rotation {}: {}",
                common.rotation,
                api_message(&e)
            )
        })?
    {
        let reached = existing.status.and_then(|s| s.phase);
        bail!(
            "CA rotation {} exists (asked {}, reached {}): finish it first; once it has completed and kcert-controller's own CA flags name the new CA, delete it (`kubectl delete carotation {}`)",
            common.rotation,
            existing.spec.phase,
            reached.map_or("nothing yet".into(), |p| p.to_string()),
            common.rotation
        );
    }
    // The CA that signs now, as kcert-controller publishes it beside the bundle (for an
    // intermediate CA the bundle holds its root, not itself).
    published(client, &common.namespace).await?;
    let old_fp = Api::<ConfigMap>::namespaced(client.clone(), &common.namespace)
        .get(BUNDLE_CONFIGMAP)
        .await
        .map_err(|e| anyhow!("reading ConfigMap {}/{BUNDLE_CONFIGMAP}: {}", common.namespace, api_message(&e)))?
        .metadata
        .annotations
        .unwrap_or_default()
        .get(kcert_kube::rotation::SIGNING_ANNOTATION)
        .map(|f| kcert_kube::crd::normalize_fingerprint(f))
        .filter(|f| f.len() == 64)
        .ok_or_else(|| {
            anyhow!(
                "ConfigMap {}/{BUNDLE_CONFIGMAP} does not say which CA signs (annotation {}): is kcert-controller running, and this version or later?",
                common.namespace,
                kcert_kube::rotation::SIGNING_ANNOTATION
            )
        })?;
    let (next, new_info) = match (&args.token_key_label, &args.certificate) {
        (Some(label), Some(path)) => {
            let pem =
                std::fs::read_to_string(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let blocks = kcert_pki::pem::parse_blocks(pem.as_bytes())
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let [block] = blocks.as_slice() else {
                bail!("{}: one CA certificate expected", path.display());
            };
            let info = kcert_pki::CertificateInfo::from_der(&block.der)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            if !info.is_ca {
                bail!("{}: not a CA certificate", path.display());
            }
            (
                NextCa {
                    token_key_label: Some(label.clone()),
                    certificate: Some(kcert_pki::pem::encode("CERTIFICATE", &block.der)),
                    fingerprint: kcert_kube::crd::normalize_fingerprint(&info.fingerprint_sha256),
                    ..Default::default()
                },
                info,
            )
        }
        _ => {
            let info = if args.existing {
                existing_secret(client, &common.namespace, &args.secret).await?
            } else {
                generate_secret(client, args).await?
            };
            (
                NextCa {
                    secret: Some(args.secret.clone()),
                    fingerprint: kcert_kube::crd::normalize_fingerprint(&info.fingerprint_sha256),
                    ..Default::default()
                },
                info,
            )
        }
    };
    if next.fingerprint == old_fp {
        bail!("the new CA is the one kcert-controller signs with already");
    }
    let rotation = CaRotationObject::new(
        &common.rotation,
        CaRotationSpec {
            phase: AskedPhase::Prepare,
            from: old_fp,
            next,
            forced_by: None,
        },
    );
    rotations(client)
        .create(&PostParams::default(), &rotation)
        .await
        .map_err(|e| {
            anyhow!(
                "creating CA rotation {}: {}",
                common.rotation,
                api_message(&e)
            )
        })?;
    eprintln!(
        "new CA {} (SHA-256 {}), until {}",
        crate::text::safe(&new_info.subject.to_string()),
        new_info.fingerprint_sha256,
        new_info.not_after
    );
    let r = wait_for(client, common, ReachedPhase::Prepared).await?;
    print(
        out,
        &r,
        Some(
            "next: add the bundle (`kcert ca bundle`) to kube-apiserver's --client-ca-file, then `kcert ca rotate switch`",
        ),
    );
    Ok(())
}

async fn existing_secret(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<kcert_pki::CertificateInfo> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| anyhow!("reading Secret {namespace}/{name}: {}", api_message(&e)))?
        .ok_or_else(|| {
            anyhow!("no Secret {namespace}/{name} (without --existing, kcert generates it)")
        })?;
    let data = secret.data.unwrap_or_default();
    let (Some(cert), Some(key)) = (data.get("tls.crt"), data.get("tls.key")) else {
        bail!("Secret {namespace}/{name} needs tls.crt and tls.key");
    };
    let ca = CertificateAuthority::load(&cert.0, &key.0, SystemTime::now())
        .map_err(|e| anyhow!("Secret {namespace}/{name}: {e}"))?;
    Ok(ca.info().clone())
}

/// A new CA generated here and written straight into its Secret (the key never touches a
/// file); refused if the Secret exists.
async fn generate_secret(
    client: &Client,
    args: &RotatePrepareArgs,
) -> Result<kcert_pki::CertificateInfo> {
    let namespace = &args.common.namespace;
    let name = args.name.clone().unwrap_or_else(|| {
        format!(
            "kcert-ca-{}",
            k8s_openapi::jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S")
        )
    });
    let key = PrivateKey::generate(args.key_type)?;
    let ca = CertificateAuthority::create(
        key,
        &name,
        Duration::from_secs(u64::from(args.days) * 86_400),
        SystemTime::now(),
        &SystemRandom,
    )?;
    let key_pem = ca
        .private_key()
        .expect("a CA created from a key in memory")
        .to_pkcs8_pem()?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(args.secret.clone()),
            namespace: Some(namespace.clone()),
            labels: Some([("app.kubernetes.io/name".to_string(), "kcert".to_string())].into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                (
                    "tls.crt".to_string(),
                    k8s_openapi::ByteString(ca.certificate_pem().into_bytes()),
                ),
                (
                    "tls.key".to_string(),
                    k8s_openapi::ByteString(key_pem.as_bytes().to_vec()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    match Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
    {
        Ok(_) => Ok(ca.info().clone()),
        Err(kube::Error::Api(s)) if s.code == 409 => bail!(
            "Secret {namespace}/{} exists: pass --existing to rotate to the CA it holds, or --secret NAME for another",
            args.secret
        ),
        Err(e) => bail!(
            "creating Secret {namespace}/{}: {}",
            args.secret,
            api_message(&e)
        ),
    }
}

async fn switch(client: &Client, args: &RotateArgs, out: OutputFormat) -> Result<()> {
    let r = get(client, &args.rotation).await?;
    let reached = r.status.as_ref().and_then(|s| s.phase);
    if reached.is_none() {
        bail!(
            "CA rotation {} is not prepared yet: {}",
            args.rotation,
            status_message(&r)
        );
    }
    if reached >= Some(ReachedPhase::Switched) {
        print(out, &r, None);
        return Ok(());
    }
    let asked = ask(client, r, AskedPhase::Switch, None).await?;
    match wait_for(client, args, ReachedPhase::Switched).await {
        Ok(r) => {
            print(
                out,
                &r,
                Some(
                    "next: renew every user (`kcert ledger --issuer old`), then `kcert ca rotate complete`",
                ),
            );
            Ok(())
        }
        Err(e) => {
            // Refused: the rotation goes back to Prepare, unless the controller switched or
            // someone else changed it meanwhile (its resourceVersion guards that).
            let now = get(client, &args.rotation).await?;
            if now.metadata.resource_version == asked.metadata.resource_version
                || now.status.as_ref().and_then(|s| s.phase) < Some(ReachedPhase::Switched)
                    && now.spec.phase == AskedPhase::Switch
            {
                let message = status_message(&now);
                let _ = ask(client, now, AskedPhase::Prepare, None).await;
                return Err(super::Exit {
                    code: crate::exit::ERROR,
                    message: format!(
                        "not switched, and set back to Prepare: {message} (the old CA keeps signing)"
                    ),
                    condition: None,
                }
                .into());
            }
            Err(e)
        }
    }
}

async fn complete(client: &Client, args: &RotateCompleteArgs, out: OutputFormat) -> Result<()> {
    let common = &args.common;
    let r = get(client, &common.rotation).await?;
    let status = r.status.clone().unwrap_or_default();
    if status.phase < Some(ReachedPhase::Switched) {
        bail!(
            "CA rotation {} has not switched to the new CA: `kcert ca rotate switch` first ({})",
            common.rotation,
            status_message(&r)
        );
    }
    if status.phase == Some(ReachedPhase::Completed) {
        print(out, &r, None);
        return Ok(());
    }
    let old = status
        .trusted
        .iter()
        .find(|t| t.role == "old")
        .ok_or_else(|| anyhow!("CA rotation {} lists no old CA", common.rotation))?;
    let index = kcert_kube::ledger::read_index(client)
        .await
        .map_err(|e| anyhow!("reading the ledger: {}", api_message(&e)))?;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let live = index.live_from(&old.key_id, now);
    let named: Vec<String> = live
        .iter()
        .map(|e| format!("{} (serial {})", crate::text::safe(&e.user), e.serial))
        .collect();
    let forced_by = if live.is_empty() {
        None
    } else if args.force {
        eprintln!(
            "warning: completing with {} live certificate(s) of the old CA, cut off once the API server drops it: {}",
            live.len(),
            named.join(", ")
        );
        Some(super::admin::caller(client).await)
    } else {
        return Err(super::Exit {
            code: crate::exit::ERROR,
            message: format!(
                "not completed: {} unexpired, unrevoked certificate(s) of the old CA are on the ledger: {}. Renew them (`kcert --kubeconfig THEIR.kubeconfig request … --force`, or the credential plugin at its next renewal), revoke them, or pass --force to cut them off",
                live.len(),
                named.join(", ")
            ),
            condition: None,
        }
        .into());
    };
    ask(client, r, AskedPhase::Complete, forced_by).await?;
    let r = wait_for(client, common, ReachedPhase::Completed).await?;
    print(
        out,
        &r,
        Some(
            "next: set kube-apiserver's --client-ca-file to the bundle (`kcert ca bundle`), then point kcert-controller's CA flags at the new CA and delete the rotation",
        ),
    );
    Ok(())
}

/// Ask for `phase` (with the object's resourceVersion: a concurrent change is a conflict).
async fn ask(
    client: &Client,
    mut r: CaRotationObject,
    phase: AskedPhase,
    forced_by: Option<String>,
) -> Result<CaRotationObject> {
    let name = r.name_any();
    r.spec.phase = phase;
    if forced_by.is_some() {
        r.spec.forced_by = forced_by;
    }
    r.metadata.managed_fields = None;
    match rotations(client)
        .replace(&name, &PostParams::default(), &r)
        .await
    {
        Ok(r) => Ok(r),
        Err(kube::Error::Api(s)) if s.code == 409 => bail!(
            "CA rotation {name} was changed by someone else meanwhile: `kcert ca rotate status`, then run the phase again"
        ),
        Err(e) => bail!("updating CA rotation {name}: {}", api_message(&e)),
    }
}

/// Wait until the controller has answered the current generation and reached `phase`.
async fn wait_for(
    client: &Client,
    args: &RotateArgs,
    phase: ReachedPhase,
) -> Result<CaRotationObject> {
    let deadline = std::time::Instant::now() + args.wait;
    loop {
        let r = get(client, &args.rotation).await?;
        let status = r.status.clone().unwrap_or_default();
        let answered = status.observed_generation == r.metadata.generation.unwrap_or(0);
        if answered && status.phase >= Some(phase) {
            return Ok(r);
        }
        if std::time::Instant::now() >= deadline {
            return Err(super::Exit {
                code: crate::exit::TIMED_OUT,
                message: format!(
                    "CA rotation {} has not reached {phase} within {:?}: {}",
                    args.rotation,
                    args.wait,
                    if answered {
                        status_message(&r)
                    } else {
                        "kcert-controller has not answered the change (is it running, with --ca-rotation on?)".into()
                    }
                ),
                condition: None,
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn status_message(r: &CaRotationObject) -> String {
    let m = r
        .status
        .as_ref()
        .map(|s| s.message.clone())
        .unwrap_or_default();
    if m.is_empty() {
        "no message from kcert-controller yet".into()
    } else {
        m
    }
}

fn print(out: OutputFormat, r: &CaRotationObject, next: Option<&str>) {
    let status = r.status.clone().unwrap_or_default();
    let json = serde_json::json!({
        "name": r.name_any(),
        "asked": r.spec.phase,
        "reached": status.phase,
        "signing": status.signing,
        "trusted": status.trusted,
        "switchedAt": status.switched_at,
        "probe": status.probe,
        "oldCaLive": status.old_ca_live,
        "forcedBy": r.spec.forced_by,
        "message": status.message,
    });
    report(out, json, || {
        let mut lines = vec![
            format!(
                "CA rotation {}: asked {}, reached {}",
                r.name_any(),
                r.spec.phase,
                status.phase.map_or("nothing yet".into(), |p| p.to_string())
            ),
            format!(
                "signing: {}",
                status
                    .signing
                    .as_deref()
                    .map_or("none".into(), kcert_kube::rotation::short)
            ),
        ];
        for t in &status.trusted {
            lines.push(format!(
                "trusted ({}): {} SHA-256 {} until {}",
                t.role, t.subject, t.fingerprint, t.not_after
            ));
        }
        if let Some(p) = &status.probe {
            lines.push(format!(
                "last probe at {}: {}",
                p.at,
                if p.authenticated {
                    "authenticated".to_string()
                } else {
                    format!("refused ({})", p.message)
                }
            ));
        }
        lines.push(format!(
            "live certificates of the old CA on the ledger: {}",
            status.old_ca_live
        ));
        if let Some(by) = &r.spec.forced_by {
            lines.push(format!("completed by force by {by}"));
        }
        if !status.message.is_empty() {
            lines.push(status.message.clone());
        }
        if let Some(n) = next {
            lines.push(n.to_string());
        }
        lines.join("\n")
    });
}

/// `kcert ca bundle`: the published bundle, each certificate checked and re-encoded (PEM).
pub async fn bundle(args: &BundleArgs, target: &Target) -> Result<()> {
    let (client, _) = target.connect().await?;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &args.namespace)
        .get_opt(BUNDLE_CONFIGMAP)
        .await
        .map_err(|e| anyhow!("reading ConfigMap {}/{BUNDLE_CONFIGMAP}: {}", args.namespace, api_message(&e)))?
        .ok_or_else(|| {
            anyhow!(
                "no ConfigMap {}/{BUNDLE_CONFIGMAP}: kcert-controller publishes it once it has loaded its CA",
                args.namespace
            )
        })?;
    let pem = cm
        .data
        .and_then(|d| d.get(BUNDLE_KEY).cloned())
        .unwrap_or_default();
    let mut outp = String::new();
    for block in kcert_pki::pem::parse_blocks(pem.as_bytes())
        .map_err(|e| anyhow!("ConfigMap {}/{BUNDLE_CONFIGMAP}: {e}", args.namespace))?
    {
        let info = kcert_pki::CertificateInfo::from_der(&block.der)
            .map_err(|e| anyhow!("ConfigMap {}/{BUNDLE_CONFIGMAP}: {e}", args.namespace))?;
        if !info.is_ca {
            bail!(
                "ConfigMap {}/{BUNDLE_CONFIGMAP} holds a certificate that is not a CA's ({})",
                args.namespace,
                crate::text::safe(&info.subject.to_string())
            );
        }
        outp.push_str(&kcert_pki::pem::encode("CERTIFICATE", &block.der));
    }
    if outp.is_empty() {
        bail!(
            "ConfigMap {}/{BUNDLE_CONFIGMAP} holds no certificate",
            args.namespace
        );
    }
    print!("{outp}");
    Ok(())
}

/// `kcert ca status`: the bundle's CAs, which signs and where its key is, expiry, the rotation.
pub async fn status(args: &CaStatusArgs, out: OutputFormat, target: &Target) -> Result<()> {
    let (client, _) = target.connect().await?;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &args.namespace)
        .get_opt(BUNDLE_CONFIGMAP)
        .await
        .map_err(|e| {
            anyhow!(
                "reading ConfigMap {}/{BUNDLE_CONFIGMAP}: {}",
                args.namespace,
                api_message(&e)
            )
        })?;
    let annotations = cm
        .as_ref()
        .and_then(|c| c.metadata.annotations.clone())
        .unwrap_or_default();
    let signing = annotations
        .get(kcert_kube::rotation::SIGNING_ANNOTATION)
        .map(|s| kcert_kube::crd::normalize_fingerprint(s));
    let cas = published(&client, &args.namespace).await?;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let unix = |t: SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    };
    let rows: Vec<serde_json::Value> = cas
        .iter()
        .map(|info| {
            let fp = kcert_kube::crd::normalize_fingerprint(&info.fingerprint_sha256);
            let signs = signing.as_deref() == Some(fp.as_str());
            let expiring = args.warn_within.warns(
                unix(info.not_before_time()),
                unix(info.not_after_time()),
                now,
            );
            serde_json::json!({
                "subject": info.subject.to_string(),
                "fingerprintSha256": fp,
                "keyId": info.subject_key_id,
                "keyAlgorithm": info.key_algorithm.to_string(),
                "notBefore": info.not_before,
                "notAfter": info.not_after,
                "signing": signs,
                "key": if signs { annotations.get(kcert_kube::rotation::SIGNING_KEY_ANNOTATION).cloned() } else { None },
                "expiring": expiring,
            })
        })
        .collect();
    let rotation = rotations(&client)
        .get_opt(&args.rotation)
        .await
        .ok()
        .flatten();
    let json = serde_json::json!({
        "cas": rows,
        "expiryWarning": args.warn_within.to_string(),
        "rotation": rotation.as_ref().map(|r| serde_json::json!({
            "name": r.name_any(),
            "asked": r.spec.phase,
            "reached": r.status.as_ref().and_then(|s| s.phase),
            "message": r.status.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
        })),
    });
    report(out, json, || {
        let mut lines = Vec::new();
        for (info, row) in cas.iter().zip(&rows) {
            let signs = row["signing"] == true;
            lines.push(format!(
                "{} CA {} ({}), SHA-256 {}",
                if signs { "signing" } else { "trusted" },
                info.subject,
                info.key_algorithm,
                row["fingerprintSha256"].as_str().unwrap_or_default()
            ));
            lines.push(format!("  valid {} to {}", info.not_before, info.not_after));
            if let Some(key) = row["key"].as_str() {
                lines.push(format!("  key: {key}"));
            }
            if row["expiring"] == true {
                lines.push(format!(
                    "  WARNING: within its expiry window ({}): rotate it (`kcert ca rotate prepare`)",
                    args.warn_within
                ));
            }
        }
        match &rotation {
            Some(r) => lines.push(format!(
                "rotation {}: asked {}, reached {}{}",
                r.name_any(),
                r.spec.phase,
                r.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .map_or("nothing yet".into(), |p| p.to_string()),
                r.status
                    .as_ref()
                    .filter(|s| !s.message.is_empty())
                    .map_or(String::new(), |s| format!(": {}", s.message))
            )),
            None => lines.push("no rotation under way".into()),
        }
        lines.join("\n")
    });
    Ok(())
}
