//! The cluster a command talks to: kubeconfig and context from flags or the environment.

use crate::kubeconfig::{ClusterInfo, cluster_of};
use anyhow::{Context, Result, anyhow};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;

/// Where to connect.
pub struct Target {
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
}

impl Target {
    /// From `--kubeconfig` (or $KUBECONFIG) and `--context`.
    pub fn new(kubeconfig: Option<PathBuf>, context: Option<String>) -> Self {
        Target {
            kubeconfig,
            context,
        }
    }

    fn path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.kubeconfig {
            // $KUBECONFIG may be a list; the first file is the one kcert reads.
            let first = std::env::split_paths(p.as_os_str())
                .next()
                .unwrap_or_else(|| p.clone());
            return Ok(first);
        }
        let home = std::env::var_os("HOME")
            .ok_or_else(|| anyhow!("no --kubeconfig, $KUBECONFIG or $HOME"))?;
        Ok(PathBuf::from(home).join(".kube").join("config"))
    }

    /// A client, and the cluster's name, server and CA for kubeconfigs we write.
    pub async fn connect(&self) -> Result<(Client, ClusterInfo)> {
        let path = self.path()?;
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot read the kubeconfig (pass --kubeconfig or set KUBECONFIG)",
                path.display()
            )
        })?;
        let base = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
        let cluster = cluster_of(&text, self.context.as_deref(), &base)
            .with_context(|| path.display().to_string())?;
        let kc = Kubeconfig::from_yaml(&text).with_context(|| path.display().to_string())?;
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .with_context(|| path.display().to_string())?;
        Ok((Client::try_from(config)?, cluster))
    }
}
