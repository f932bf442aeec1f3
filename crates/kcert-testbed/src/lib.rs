//! kcert-testbed: a real control plane for kcert's tests.
//!
//! ```text
//!  Binaries::locate ── KUBEBUILDER_ASSETS, or ~/.cache/kcert/control-plane/<version>/bin
//!        │              (built once from Kubernetes' Go modules, under a file lock)
//!        ▼
//!  TestCluster::start ── fresh CA (kcert-pki) ─► etcd + kube-apiserver on free 127.0.0.1 ports
//!        │                                        (--client-ca-file = that CA, RBAC, SA tokens)
//!        ▼
//!  admin / user / service-account clients, fresh namespaces, kubeconfig files
//! ```
//!
//! Every process is killed and the temporary directory removed when the cluster is dropped,
//! and, for clusters kept in a `static` (never dropped), by a watchdog shell that notices the
//! test process is gone.

mod binaries;
mod cluster;
pub mod kubeconfig;
pub mod nodes;
pub mod softhsm;
pub mod webhook;

pub use binaries::{
    Binaries, ETCD_VERSION, HELM_VERSION, KUBERNETES_VERSION, cache_dir, helm, kubeletcerts,
    kubemark, x509read,
};
pub use cluster::{CaKeyType, TestCluster, TestClusterBuilder, client_from_kubeconfig};

/// Errors of the test bed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something is missing on the machine or misconfigured.
    #[error("{0}")]
    Setup(String),
    /// A file or process operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or program.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A process died or never became ready; the message carries its log tail.
    #[error("{0}")]
    Startup(String),
    /// Building X.509 material failed.
    #[error(transparent)]
    Pki(#[from] kcert_pki::PkiError),
    /// The API server refused a request the test bed makes.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// A kubeconfig could not be turned into a client.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias of the test bed.
pub type Result<T, E = Error> = std::result::Result<T, E>;
