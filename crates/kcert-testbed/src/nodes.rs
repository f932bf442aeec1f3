//! Real node identities for the node tests: bootstrap tokens, kubemark hollow nodes (a real
//! kubelet over a fake container runtime, bootstrapping its client certificate with the
//! kubelet's own code), the kubelet's certificate managers (`kubeletcerts`), and
//! kube-controller-manager running only its signer.

use crate::kubeconfig::{self, Credentials};
use crate::{Error, Result, TestCluster};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const KUBEADM_NODE_RBAC: &str = include_str!("../kubeadm-node-rbac.yaml");

/// A bootstrap token (`<id>.<secret>`): user `system:bootstrap:<id>` in `system:bootstrappers`.
#[derive(Clone, Debug)]
pub struct BootstrapToken {
    /// The token id (6 characters).
    pub id: String,
    /// The secret part (16 characters).
    pub secret: String,
}

impl BootstrapToken {
    /// The bearer token.
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The user name the API server gives it.
    pub fn user(&self) -> String {
        format!("system:bootstrap:{}", self.id)
    }
}

/// A child process killed (and waited for) on drop, and by the cluster's watchdog if the test
/// process dies first.
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// The process's combined output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kubemark hollow node.
pub struct HollowNode {
    /// The Node's name.
    pub name: String,
    dir: PathBuf,
    /// The running kubemark.
    pub process: Process,
}

impl HollowNode {
    /// Where the kubelet keeps its client certificate (`kubelet-client-current.pem`).
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// The kubeconfig the kubelet wrote after bootstrap (it names the client certificate).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
}

/// A port for a kubelet to listen on (all interfaces): below the ephemeral range, so the many
/// outgoing connections of a crowd of kubelets cannot take it between this pick and the
/// kubelet's bind; each pick in this process is a new port, checked free.
pub fn kubelet_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 16;
    for _ in 0..10_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 8_000;
        let port = base + offset;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Setup(
        "no free port for a kubelet in 20000-36000".into(),
    ))
}

impl TestCluster {
    /// Create a bootstrap token Secret in kube-system (`usage-bootstrap-authentication`), as
    /// `kubeadm token create` does; it authenticates because the API server runs with
    /// `--enable-bootstrap-token-auth`.
    pub async fn bootstrap_token(&self) -> Result<BootstrapToken> {
        let suffix = self.unique_name("t");
        let alnum: String = suffix
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .map(|b| b.to_ascii_lowercase() as char)
            .collect();
        let pad = |s: &str, n: usize| {
            let mut s: String = s.chars().rev().take(n).collect();
            while s.len() < n {
                s.push('0');
            }
            s
        };
        let token = BootstrapToken {
            id: pad(&alnum, 6),
            secret: pad(&format!("{alnum}{}", std::process::id()), 16),
        };
        let data: BTreeMap<String, ByteString> = [
            ("token-id", token.id.as_str()),
            ("token-secret", token.secret.as_str()),
            ("usage-bootstrap-authentication", "true"),
            ("usage-bootstrap-signing", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("bootstrap-token-{}", token.id)),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            type_: Some("bootstrap.kubernetes.io/token".into()),
            data: Some(data),
            ..Default::default()
        };
        let api: Api<Secret> = Api::namespaced(self.admin_client().await?, "kube-system");
        api.create(&PostParams::default(), &secret)
            .await
            .map_err(|e| Error::Setup(format!("creating the bootstrap token: {e}")))?;
        Ok(token)
    }

    /// The node bindings a kubeadm cluster has (`kubeadm-node-rbac.yaml`): bootstrap tokens may
    /// create CSRs and ask for a node client certificate, nodes may renew their own.
    /// Idempotent.
    pub async fn bind_kubeadm_node_roles(&self) -> Result<()> {
        use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
        let api: Api<ClusterRoleBinding> = Api::all(self.admin_client().await?);
        for doc in KUBEADM_NODE_RBAC.split("\n---\n") {
            let binding: ClusterRoleBinding = serde_yaml::from_str(doc)
                .map_err(|e| Error::Setup(format!("kubeadm-node-rbac.yaml: {e}")))?;
            match api.create(&PostParams::default(), &binding).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(Error::Setup(format!("binding kubeadm's node roles: {e}"))),
            }
        }
        Ok(())
    }

    /// A kubeconfig (YAML) that authenticates with `token`.
    pub fn token_kubeconfig(&self, token: &str) -> String {
        kubeconfig::render(
            self.server(),
            self.ca_pem(),
            "bootstrap",
            &Credentials::Token(token),
        )
    }

    /// Start a kubemark hollow node `name` with no credentials but `bootstrap` (a bootstrap
    /// kubeconfig): the kubelet's own bootstrap asks for its client certificate, waits for it,
    /// then registers Node `name`. Its kubelet port is one [`kubelet_port`] picked.
    pub fn hollow_node(&self, name: &str, bootstrap: &str) -> Result<HollowNode> {
        let kubelet_port = kubelet_port()?;
        let bin = crate::kubemark()?;
        let dir = self.dir().join("nodes").join(name);
        std::fs::create_dir_all(dir.join("pki")).map_err(|e| Error::io(&dir, e))?;
        std::fs::create_dir_all(dir.join("tmp")).map_err(|e| Error::io(&dir, e))?;
        let boot = dir.join("bootstrap.kubeconfig");
        std::fs::write(&boot, bootstrap).map_err(|e| Error::io(&boot, e))?;
        let args = [
            "--morph=kubelet".to_string(),
            format!("--name={name}"),
            format!("--kubeconfig={}", dir.join("kubeconfig").display()),
            format!("--bootstrap-kubeconfig={}", boot.display()),
            format!("--cert-dir={}", dir.join("pki").display()),
            format!("--kubelet-port={kubelet_port}"),
            "--kubelet-read-only-port=0".into(),
            "--use-host-image-service=false".into(),
            "--kube-api-content-type=application/json".into(),
            "--v=1".into(),
        ];
        let process =
            self.spawn_adopted(&bin, &args, &dir.join("kubemark.log"), &dir.join("tmp"))?;
        Ok(HollowNode {
            name: name.to_string(),
            dir,
            process,
        })
    }

    /// kube-controller-manager running only `--controllers=csrsigning` with the cluster CA
    /// (24 h certificates): Kubernetes' own signer for the kubelet signers.
    pub fn controller_manager_signer(&self) -> Result<Process> {
        self.controller_manager("csrsigning")
    }

    /// kube-controller-manager running only `controllers` (e.g. `csrapproving,csrsigning`),
    /// signing with the cluster CA (24 h certificates), no leader election, no serving port.
    pub fn controller_manager(&self, controllers: &str) -> Result<Process> {
        let bin = self
            .binaries()
            .kube_controller_manager
            .clone()
            .ok_or_else(|| {
                Error::Setup(
                    "kube-controller-manager was not built (KUBEBUILDER_ASSETS lacks it?)".into(),
                )
            })?;
        let args = [
            format!("--kubeconfig={}", self.admin_kubeconfig_path().display()),
            format!("--controllers={controllers}"),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            format!(
                "--cluster-signing-cert-file={}",
                self.ca_cert_path().display()
            ),
            format!(
                "--cluster-signing-key-file={}",
                self.ca_key_path().display()
            ),
            "--cluster-signing-duration=24h".into(),
        ];
        self.spawn_adopted(&bin, &args, &self.dir().join("kcm.log"), self.dir())
    }

    /// Start `program` with its output in `log`, killed on drop and by the watchdog.
    pub fn spawn_adopted(
        &self,
        program: &Path,
        args: &[String],
        log: &Path,
        tmp: &Path,
    ) -> Result<Process> {
        // Appended: a second process started with the same log (a restart) keeps the first's.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(log, e))?;
        let err = out.try_clone().map_err(|e| Error::io(log, e))?;
        let child = Command::new(program)
            .args(args)
            .env("TMPDIR", tmp)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::io(program, e))?;
        self.adopt(child.id());
        Ok(Process {
            child,
            log: log.to_path_buf(),
        })
    }
}
