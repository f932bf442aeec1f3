//! Kubeconfig files: render one with everything embedded, merge it into another, and read the
//! server and CA of a context. Pure functions over YAML text.

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use serde_yaml::Value;

/// A cluster as a kubeconfig names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Its name in the kubeconfig.
    pub name: String,
    /// The API server URL.
    pub server: String,
    /// The CA bundle (PEM) that verifies the server.
    pub ca_pem: Vec<u8>,
}

/// How the user authenticates.
pub enum Credentials<'a> {
    /// A client certificate and key (PEM), embedded.
    ClientCertificate {
        /// Certificate.
        cert_pem: &'a str,
        /// Key.
        key_pem: &'a str,
    },
    /// A bearer token.
    Token(&'a str),
    /// A client-go exec plugin: `command args…`, given the cluster's details.
    Exec {
        /// Absolute path of the program.
        command: &'a str,
        /// Its arguments.
        args: &'a [String],
    },
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The context name kcert writes: `USER@CLUSTER`.
pub fn context_name(user: &str, cluster: &str) -> String {
    format!("{user}@{cluster}")
}

/// A kubeconfig for `user` on `cluster`, data embedded, its context current.
pub fn render(
    cluster: &ClusterInfo,
    user: &str,
    credentials: &Credentials<'_>,
    namespace: Option<&str>,
) -> String {
    let user_entry = match credentials {
        Credentials::ClientCertificate { cert_pem, key_pem } => serde_json::json!({
            "client-certificate-data": b64(cert_pem.as_bytes()),
            "client-key-data": b64(key_pem.as_bytes()),
        }),
        Credentials::Token(t) => serde_json::json!({ "token": t }),
        Credentials::Exec { command, args } => serde_json::json!({ "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": command,
            "args": args,
            "provideClusterInfo": true,
            "interactiveMode": "Never",
        }}),
    };
    let mut context = serde_json::json!({"cluster": cluster.name, "user": user});
    if let Some(ns) = namespace {
        context["namespace"] = serde_json::json!(ns);
    }
    let ctx = context_name(user, &cluster.name);
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster.name, "cluster": {"server": cluster.server, "certificate-authority-data": b64(&cluster.ca_pem)}}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": ctx, "context": context}],
        "current-context": ctx,
    });
    serde_yaml::to_string(&doc).expect("JSON values render as YAML")
}

/// Merge `addition` into `existing`: entries with the same name are replaced, others kept in
/// order; `current-context` becomes the addition's only if `switch` (else stays, or is set if
/// there was none).
pub fn merge(existing: &str, addition: &str, switch: bool) -> Result<String> {
    let mut base: Value = if existing.trim().is_empty() {
        serde_yaml::from_str(
            "{apiVersion: v1, kind: Config, clusters: [], users: [], contexts: []}",
        )
        .expect("literal")
    } else {
        serde_yaml::from_str(existing).context("the existing kubeconfig is not YAML")?
    };
    if !base.is_mapping() {
        bail!("the existing kubeconfig is not a mapping");
    }
    let add: Value = serde_yaml::from_str(addition).context("the new kubeconfig is not YAML")?;
    for key in ["clusters", "users", "contexts"] {
        let new_items = add
            .get(key)
            .and_then(|v| v.as_sequence())
            .cloned()
            .unwrap_or_default();
        let list = base
            .as_mapping_mut()
            .expect("checked")
            .entry(Value::from(key))
            .or_insert_with(|| Value::Sequence(Vec::new()));
        if list.is_null() {
            *list = Value::Sequence(Vec::new());
        }
        let seq = list
            .as_sequence_mut()
            .ok_or_else(|| anyhow!("the existing kubeconfig's {key} is not a list"))?;
        for item in new_items {
            let name = item.get("name").cloned();
            match seq.iter_mut().find(|e| e.get("name") == name.as_ref()) {
                Some(slot) => *slot = item,
                None => seq.push(item),
            }
        }
    }
    let current = base
        .get("current-context")
        .and_then(|c| c.as_str())
        .unwrap_or_default()
        .to_string();
    if (switch || current.is_empty())
        && let Some(c) = add.get("current-context").cloned()
    {
        base.as_mapping_mut()
            .expect("checked")
            .insert(Value::from("current-context"), c);
    }
    Ok(serde_yaml::to_string(&base)?)
}

/// The cluster of `context` (or the current context) in a kubeconfig, with its CA.
pub fn cluster_of(
    kubeconfig: &str,
    context: Option<&str>,
    base_dir: &std::path::Path,
) -> Result<ClusterInfo> {
    let doc: Value = serde_yaml::from_str(kubeconfig).context("the kubeconfig is not YAML")?;
    let ctx_name = match context {
        Some(c) => c.to_string(),
        None => doc
            .get("current-context")
            .and_then(|c| c.as_str())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| anyhow!("the kubeconfig has no current-context; pass --context"))?
            .to_string(),
    };
    let find = |key: &str, name: &str| -> Option<Value> {
        doc.get(key)?
            .as_sequence()?
            .iter()
            .find(|e| e.get("name").and_then(|n| n.as_str()) == Some(name))
            .cloned()
    };
    let ctx = find("contexts", &ctx_name)
        .ok_or_else(|| anyhow!("context {ctx_name:?} is not in the kubeconfig"))?;
    let cluster_name = ctx
        .get("context")
        .and_then(|c| c.get("cluster"))
        .and_then(|c| c.as_str())
        .ok_or_else(|| anyhow!("context {ctx_name:?} names no cluster"))?
        .to_string();
    let entry = find("clusters", &cluster_name)
        .ok_or_else(|| anyhow!("cluster {cluster_name:?} is not in the kubeconfig"))?;
    let cluster = entry
        .get("cluster")
        .ok_or_else(|| anyhow!("cluster {cluster_name:?} is empty"))?;
    let server = cluster
        .get("server")
        .and_then(|s| s.as_str())
        .ok_or_else(|| anyhow!("cluster {cluster_name:?} has no server"))?
        .to_string();
    let ca_pem = if let Some(data) = cluster
        .get("certificate-authority-data")
        .and_then(|d| d.as_str())
    {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("certificate-authority-data is not base64")?
    } else if let Some(file) = cluster
        .get("certificate-authority")
        .and_then(|d| d.as_str())
    {
        let path = base_dir.join(file);
        std::fs::read(&path)
            .with_context(|| format!("reading the cluster CA {}", path.display()))?
    } else {
        bail!(
            "cluster {cluster_name:?} has no CA (certificate-authority-data); kcert writes no kubeconfig that skips TLS verification"
        );
    };
    Ok(ClusterInfo {
        name: cluster_name,
        server,
        ca_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterInfo {
        ClusterInfo {
            name: "prod".into(),
            server: "https://10.0.0.1:6443".into(),
            ca_pem: b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".to_vec(),
        }
    }

    #[test]
    fn render_names_user_and_context_and_embeds_everything() {
        let y = render(
            &cluster(),
            "jane",
            &Credentials::ClientCertificate {
                cert_pem: "C",
                key_pem: "K",
            },
            Some("dev"),
        );
        let v: Value = serde_yaml::from_str(&y).unwrap();
        assert_eq!(v["current-context"], "jane@prod");
        assert_eq!(v["users"][0]["name"], "jane");
        assert_eq!(v["users"][0]["user"]["client-key-data"], b64(b"K"));
        assert_eq!(v["contexts"][0]["context"]["namespace"], "dev");
        assert!(
            v["clusters"][0]["cluster"]
                .get("insecure-skip-tls-verify")
                .is_none()
        );
        let back = cluster_of(&y, None, std::path::Path::new(".")).unwrap();
        assert_eq!(back, cluster());
    }

    #[test]
    fn merge_replaces_same_names_keeps_others_and_current_context() {
        let a = render(&cluster(), "admin", &Credentials::Token("t"), None);
        let b = render(&cluster(), "jane", &Credentials::Token("u"), None);
        let merged = merge(&a, &b, false).unwrap();
        let v: Value = serde_yaml::from_str(&merged).unwrap();
        assert_eq!(v["clusters"].as_sequence().unwrap().len(), 1);
        assert_eq!(v["users"].as_sequence().unwrap().len(), 2);
        assert_eq!(v["current-context"], "admin@prod");
        let again = merge(
            &merged,
            &render(&cluster(), "jane", &Credentials::Token("v"), None),
            true,
        )
        .unwrap();
        let v: Value = serde_yaml::from_str(&again).unwrap();
        assert_eq!(v["users"].as_sequence().unwrap().len(), 2);
        assert_eq!(v["users"][1]["user"]["token"], "v");
        assert_eq!(v["current-context"], "jane@prod");
        let fresh = merge("", &b, false).unwrap();
        assert_eq!(
            serde_yaml::from_str::<Value>(&fresh).unwrap()["current-context"],
            "jane@prod"
        );
    }

    #[test]
    fn a_context_without_a_ca_is_refused() {
        let y = "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://x', insecure-skip-tls-verify: true}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n";
        let err = cluster_of(y, None, std::path::Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no CA"), "{err}");
        let err = cluster_of(y, Some("nope"), std::path::Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"nope\" is not in the kubeconfig"), "{err}");
    }
}
