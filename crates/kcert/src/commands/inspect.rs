//! `kcert inspect`: what a file says, never what its secrets are.

use super::report;
use crate::cli::{InspectArgs, OutputFormat};
use crate::files::read;
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use kcert_pki::pem::parse_blocks;
use kcert_pki::{CertificateInfo, CertificateRequest, PrivateKey, PublicKey};
use serde_json::{Value, json};
use std::path::Path;

pub fn run(args: &InspectArgs, out: OutputFormat) -> Result<()> {
    let bytes = read(&args.file)?;
    let objects = inspect_bytes(&bytes).map_err(|e| anyhow!("{}: {e:#}", args.file.display()))?;
    report(
        out,
        json!({ "file": args.file, "objects": objects }),
        || render_text(&args.file, &objects),
    );
    Ok(())
}

/// Describe every object in `bytes`: PEM blocks, or a kubeconfig.
pub fn inspect_bytes(bytes: &[u8]) -> Result<Vec<Value>> {
    let blocks = parse_blocks(bytes).unwrap_or_default();
    if blocks.is_empty() {
        return inspect_kubeconfig(bytes);
    }
    let mut objects = Vec::new();
    for block in &blocks {
        objects.push(match block.label.as_str() {
            "CERTIFICATE" => certificate_json(&CertificateInfo::from_der(&block.der)?),
            "CERTIFICATE REQUEST" => csr_json(&CertificateRequest::from_der(&block.der)?),
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
                let key = PrivateKey::from_block(block)?;
                json!({
                    "kind": "private-key",
                    "format": block.label,
                    "keyAlgorithm": key.algorithm().to_string(),
                    "publicKeySha256": key.public_key().fingerprint_sha256(),
                })
            }
            "PUBLIC KEY" => {
                let key = PublicKey::from_spki_der(&block.der)?;
                json!({
                    "kind": "public-key",
                    "keyAlgorithm": key.algorithm().to_string(),
                    "publicKeySha256": key.fingerprint_sha256(),
                })
            }
            "EC PARAMETERS" => continue,
            other => bail!("unsupported PEM block '{other}'; kcert inspects certificates, CSRs, keys and kubeconfigs"),
        });
    }
    Ok(objects)
}

fn certificate_json(info: &CertificateInfo) -> Value {
    let mut v = serde_json::to_value(info).expect("serializable");
    v["kind"] = json!("certificate");
    v["user"] = json!(info.subject.common_name);
    v["groups"] = json!(info.subject.organizations);
    v["subject"] = json!(info.subject.to_string());
    v
}

fn csr_json(csr: &CertificateRequest) -> Value {
    json!({
        "kind": "certificate-request",
        "subject": csr.subject().to_string(),
        "user": csr.subject().common_name,
        "groups": csr.subject().organizations,
        "sans": csr.sans(),
        "requestedExtensions": csr.requested_extensions(),
        "keyAlgorithm": csr.public_key().algorithm().to_string(),
        "publicKeySha256": csr.public_key().fingerprint_sha256(),
        "signatureAlgorithm": csr.signature_algorithm(),
        "signatureValid": true,
    })
}

fn inspect_kubeconfig(bytes: &[u8]) -> Result<Vec<Value>> {
    let not_recognised = || {
        anyhow!(
            "not PEM and not a kubeconfig; kcert inspects certificates, CSRs, keys and kubeconfigs"
        )
    };
    let doc: serde_yaml::Value = serde_yaml::from_slice(bytes).map_err(|_| not_recognised())?;
    if doc.get("kind").and_then(|k| k.as_str()) != Some("Config") {
        return Err(not_recognised());
    }
    let b64 = |v: Option<&serde_yaml::Value>| -> Result<Option<Vec<u8>>> {
        match v.and_then(|v| v.as_str()) {
            None => Ok(None),
            Some(s) => Ok(Some(
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .context("invalid base64 in kubeconfig")?,
            )),
        }
    };
    let list = |key: &str| {
        doc.get(key)
            .and_then(|v| v.as_sequence())
            .cloned()
            .unwrap_or_default()
    };
    // A certificate embedded as base64 PEM in `section.field`, described as `inspect` shows it.
    let embedded_cert =
        |section: Option<&serde_yaml::Value>, field: &str| -> Result<Option<Value>> {
            match b64(section.and_then(|s| s.get(field)))? {
                Some(pem) => Ok(Some(certificate_json(
                    &CertificateInfo::from_pem_chain(&pem).context(field.to_string())?,
                ))),
                None => Ok(None),
            }
        };
    let mut clusters = Vec::new();
    for c in list("clusters") {
        let name = c
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        let cluster = c.get("cluster");
        let ca = embedded_cert(cluster, "certificate-authority-data")?;
        clusters.push(json!({
            "name": name,
            "server": cluster.and_then(|c| c.get("server")).and_then(|s| s.as_str()),
            "insecureSkipTlsVerify": cluster.and_then(|c| c.get("insecure-skip-tls-verify")).and_then(|s| s.as_bool()).unwrap_or(false),
            "certificateAuthority": ca,
        }));
    }
    let mut users = Vec::new();
    for u in list("users") {
        let name = u
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        let user = u.get("user");
        let cert = embedded_cert(user, "client-certificate-data")?;
        let key = match b64(user.and_then(|u| u.get("client-key-data")))? {
            Some(pem) => {
                let key = PrivateKey::from_pem(&pem).context("client-key-data")?;
                let matches = cert
                    .as_ref()
                    .map(|c| c["publicKeySha256"] == json!(key.public_key().fingerprint_sha256()));
                Some(json!({
                    "keyAlgorithm": key.algorithm().to_string(),
                    "publicKeySha256": key.public_key().fingerprint_sha256(),
                    "matchesCertificate": matches,
                }))
            }
            None => None,
        };
        users.push(json!({
            "name": name,
            "clientCertificate": cert,
            "clientKey": key,
            "token": user.and_then(|u| u.get("token")).map(|_| "(set, not shown)"),
        }));
    }
    let contexts: Vec<Value> = list("contexts")
        .iter()
        .map(|c| {
            json!({
                "name": c.get("name").and_then(|n| n.as_str()),
                "cluster": c.get("context").and_then(|c| c.get("cluster")).and_then(|n| n.as_str()),
                "user": c.get("context").and_then(|c| c.get("user")).and_then(|n| n.as_str()),
                "namespace": c.get("context").and_then(|c| c.get("namespace")).and_then(|n| n.as_str()),
            })
        })
        .collect();
    Ok(vec![json!({
        "kind": "kubeconfig",
        "currentContext": doc.get("current-context").and_then(|c| c.as_str()),
        "clusters": clusters,
        "users": users,
        "contexts": contexts,
    })])
}

fn render_text(file: &Path, objects: &[Value]) -> String {
    let mut out = format!("{}:", file.display());
    for o in objects {
        out.push('\n');
        out.push_str(&render_object(o, "  "));
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(a) if a.is_empty() => "(none)".into(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn render_object(o: &Value, indent: &str) -> String {
    let line = |k: &str, v: String| format!("{indent}  {k:<13}{v}\n");
    let mut out = String::new();
    match o["kind"].as_str().unwrap_or_default() {
        "certificate" => {
            out.push_str(&format!("{indent}certificate\n"));
            out.push_str(&line("subject", s(&o["subject"])));
            out.push_str(&line("user", s(&o["user"])));
            out.push_str(&line("groups", s(&o["groups"])));
            out.push_str(&line("issuer", s(&o["issuer"])));
            out.push_str(&line("serial", s(&o["serial"])));
            out.push_str(&line(
                "valid",
                format!("{} to {}", s(&o["notBefore"]), s(&o["notAfter"])),
            ));
            out.push_str(&line("usages", s(&o["usages"])));
            out.push_str(&line(
                "CA",
                if o["isCa"] == json!(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
            ));
            let sans = sans_text(&o["sans"]);
            if !sans.is_empty() {
                out.push_str(&line("SANs", sans));
            }
            out.push_str(&line(
                "key",
                format!(
                    "{} (SHA-256 {})",
                    s(&o["keyAlgorithm"]),
                    s(&o["publicKeySha256"])
                ),
            ));
            out.push_str(&line(
                "fingerprint",
                format!("SHA-256 {}", s(&o["fingerprintSha256"])),
            ));
        }
        "certificate-request" => {
            out.push_str(&format!(
                "{indent}certificate request (signature verified)\n"
            ));
            out.push_str(&line("subject", s(&o["subject"])));
            out.push_str(&line("user", s(&o["user"])));
            out.push_str(&line("groups", s(&o["groups"])));
            let sans = sans_text(&o["sans"]);
            if !sans.is_empty() {
                out.push_str(&line("SANs", sans));
            }
            let exts: Vec<String> = o["requestedExtensions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    format!(
                        "{}{}",
                        s(&e["name"]),
                        if e["critical"] == json!(true) {
                            " (critical)"
                        } else {
                            ""
                        }
                    )
                })
                .collect();
            out.push_str(&line(
                "extensions",
                if exts.is_empty() {
                    "(none)".into()
                } else {
                    exts.join(", ")
                },
            ));
            out.push_str(&line(
                "key",
                format!(
                    "{} (SHA-256 {})",
                    s(&o["keyAlgorithm"]),
                    s(&o["publicKeySha256"])
                ),
            ));
            out.push_str(&line("signed with", s(&o["signatureAlgorithm"])));
        }
        "private-key" | "public-key" => {
            out.push_str(&format!(
                "{indent}{}\n",
                o["kind"].as_str().unwrap_or_default().replace('-', " ")
            ));
            out.push_str(&line("algorithm", s(&o["keyAlgorithm"])));
            out.push_str(&line(
                "public key",
                format!("SHA-256 {}", s(&o["publicKeySha256"])),
            ));
        }
        "kubeconfig" => {
            out.push_str(&format!(
                "{indent}kubeconfig (current context: {})\n",
                s(&o["currentContext"])
            ));
            for c in o["clusters"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{indent}  cluster {}: {}{}\n",
                    s(&c["name"]),
                    s(&c["server"]),
                    if c["insecureSkipTlsVerify"] == json!(true) {
                        " (INSECURE: TLS verification off)"
                    } else {
                        ""
                    }
                ));
                if c["certificateAuthority"].is_object() {
                    out.push_str(&format!(
                        "{indent}    CA: {} until {}\n",
                        s(&c["certificateAuthority"]["subject"]),
                        s(&c["certificateAuthority"]["notAfter"])
                    ));
                }
            }
            for u in o["users"].as_array().into_iter().flatten() {
                out.push_str(&format!("{indent}  user {}\n", s(&u["name"])));
                if let Some(c) = u["clientCertificate"].as_object() {
                    let c = Value::Object(c.clone());
                    out.push_str(&render_object(&c, &format!("{indent}    ")));
                }
                if u["clientKey"].is_object() {
                    out.push_str(&format!(
                        "{indent}    client key: {} (matches certificate: {})\n",
                        s(&u["clientKey"]["keyAlgorithm"]),
                        s(&u["clientKey"]["matchesCertificate"])
                    ));
                }
                if u["token"].is_string() {
                    out.push_str(&format!("{indent}    token: set (not shown)\n"));
                }
            }
            for c in o["contexts"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{indent}  context {}: user {} on cluster {}{}\n",
                    s(&c["name"]),
                    s(&c["user"]),
                    s(&c["cluster"]),
                    c["namespace"]
                        .as_str()
                        .map(|n| format!(", namespace {n}"))
                        .unwrap_or_default()
                ));
            }
        }
        _ => {}
    }
    out.trim_end().to_string()
}

fn sans_text(v: &Value) -> String {
    let mut parts = Vec::new();
    for (k, p) in [
        ("dns", "DNS"),
        ("ips", "IP"),
        ("emails", "email"),
        ("uris", "URI"),
    ] {
        for x in v[k].as_array().into_iter().flatten() {
            parts.push(format!("{p}:{}", s(x)));
        }
    }
    parts.join(", ")
}
