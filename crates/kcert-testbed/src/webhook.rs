//! What an API server needs to consult kcert's authorization webhook: the webhook's own CA and a
//! serving certificate for 127.0.0.1, the webhook kubeconfig, and deploy/'s
//! AuthorizationConfiguration pointing at it. For the tests and the sandbox.

use crate::{Error, Result};
use kcert_pki::{
    CertificateAuthority, CertificateRequest, CsrSubject, KeyType, PrivateKey, SigningProfile,
    SubjectAltNames, SystemRandom, Usage, build_csr,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The AuthorizationConfiguration kcert ships (deploy/authorization-config.yaml): the webhook for
/// X.509 requests of identities kcert issues, the control plane's own excluded.
pub const AUTHORIZATION_CONFIG: &str = include_str!("../../../deploy/authorization-config.yaml");
/// Its opt-in variant that also sends kubelets' certificates to the webhook
/// (deploy/authorization-config-nodes.yaml), for node revocation.
pub const AUTHORIZATION_CONFIG_NODES: &str =
    include_str!("../../../deploy/authorization-config-nodes.yaml");
const KUBECONFIG_PATH_IN_CONFIG: &str = "/etc/kubernetes/kcert-webhook.kubeconfig";

/// Files for a webhook on `127.0.0.1:port`, written in a directory.
#[derive(Clone, Debug)]
pub struct WebhookFiles {
    /// The webhook's address.
    pub addr: std::net::SocketAddr,
    /// Serving certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PKCS#8 PEM).
    pub key: PathBuf,
    /// The CA that signed the serving certificate (PEM): what clients trust.
    pub ca_cert: PathBuf,
    /// The AuthorizationConfiguration to start the API server with.
    pub authorization_config: PathBuf,
}

impl WebhookFiles {
    /// Create them in `dir` for a webhook that will listen on 127.0.0.1:`port`, with the
    /// default AuthorizationConfiguration ([`AUTHORIZATION_CONFIG`]).
    pub fn create(dir: &Path, port: u16) -> Result<Self> {
        Self::create_with(dir, port, AUTHORIZATION_CONFIG)
    }

    /// Like [`WebhookFiles::create`], with this AuthorizationConfiguration (e.g.
    /// [`AUTHORIZATION_CONFIG_NODES`]); its kubeconfig path is pointed at the files written here.
    pub fn create_with(dir: &Path, port: u16, authorization_config: &str) -> Result<Self> {
        if !authorization_config.contains(KUBECONFIG_PATH_IN_CONFIG) {
            return Err(Error::Setup(format!(
                "the AuthorizationConfiguration does not name {KUBECONFIG_PATH_IN_CONFIG}"
            )));
        }
        let pki = |e: kcert_pki::PkiError| Error::Setup(format!("webhook certificates: {e}"));
        let now = SystemTime::now();
        let ca = CertificateAuthority::create(
            PrivateKey::generate(KeyType::EcdsaP256).map_err(pki)?,
            "kcert-webhook-ca",
            Duration::from_secs(30 * 86_400),
            now,
            &SystemRandom,
        )
        .map_err(pki)?;
        let key = PrivateKey::generate(KeyType::EcdsaP256).map_err(pki)?;
        let subject = CsrSubject::new("kcert-webhook", Vec::<String>::new()).map_err(pki)?;
        let sans = SubjectAltNames {
            ips: vec![std::net::Ipv4Addr::LOCALHOST.into()],
            ..Default::default()
        };
        let csr =
            CertificateRequest::from_pem(build_csr(&key, &subject, &sans).map_err(pki)?.as_bytes())
                .map_err(pki)?;
        let profile = SigningProfile {
            usages: vec![
                Usage::DigitalSignature,
                Usage::KeyEncipherment,
                Usage::ServerAuth,
            ],
            max_lifetime: Duration::from_secs(30 * 86_400),
            requested_lifetime: None,
            allow_sans: true,
        };
        let cert = ca
            .sign_as(&csr, &subject, &profile, now, &SystemRandom)
            .map_err(pki)?;
        let files = WebhookFiles {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            cert: dir.join("webhook.crt"),
            key: dir.join("webhook.key"),
            ca_cert: dir.join("webhook-ca.crt"),
            authorization_config: dir.join("authorization-config.yaml"),
        };
        let kubeconfig = crate::kubeconfig::render(
            &format!("https://127.0.0.1:{port}/authorize"),
            &ca.certificate_pem(),
            "kube-apiserver",
            &crate::kubeconfig::Credentials::Token("unused"),
        );
        let kubeconfig_path = dir.join("webhook.kubeconfig");
        let key_pem = key.to_pkcs8_pem().map_err(pki)?;
        for (path, text) in [
            (&files.cert, cert.to_pem()),
            (&files.key, key_pem.to_string()),
            (&files.ca_cert, ca.certificate_pem()),
            (&kubeconfig_path, kubeconfig),
            (
                &files.authorization_config,
                authorization_config.replace(
                    KUBECONFIG_PATH_IN_CONFIG,
                    &kubeconfig_path.display().to_string(),
                ),
            ),
        ] {
            std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
        }
        Ok(files)
    }
}

/// A free TCP port on 127.0.0.1 (for the webhook, chosen before the API server starts).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?
        .port())
}
