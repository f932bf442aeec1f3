//! One control plane: etcd and kube-apiserver on free loopback ports, with a fresh CA.

use crate::kubeconfig::{self, Credentials};
use crate::{Binaries, Error, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kcert_pki::{
    CertificateAuthority, CertificateRequest, CsrSubject, KeyType, PrivateKey, SigningProfile,
    SubjectAltNames, SystemRandom, Usage, build_csr,
};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The cluster CA's key type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaKeyType {
    /// RSA 2048, kubeadm's default.
    #[default]
    Rsa2048,
    /// ECDSA P-256.
    EcdsaP256,
}

/// Options for [`TestCluster`].
#[derive(Clone, Debug, Default)]
pub struct TestClusterBuilder {
    ca_key: CaKeyType,
    apiserver_args: Vec<String>,
    authorization_config: Option<PathBuf>,
}

impl TestClusterBuilder {
    /// The CA's key type (RSA 2048 by default).
    pub fn ca_key(mut self, key: CaKeyType) -> Self {
        self.ca_key = key;
        self
    }

    /// An extra kube-apiserver flag, e.g. `--admission-control-config-file=…`.
    pub fn apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.apiserver_args.push(arg.into());
        self
    }

    /// Authorize through this `apiserver.config.k8s.io/v1` AuthorizationConfiguration file
    /// (`--authorization-config`, e.g. a webhook ahead of Node and RBAC) instead of
    /// `--authorization-mode=Node,RBAC`. Relative paths inside it are the file's own business:
    /// use absolute ones.
    pub fn authorization_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.authorization_config = Some(path.into());
        self
    }

    /// Start the cluster and wait until `/readyz` answers ok.
    pub async fn start(self) -> Result<TestCluster> {
        let binaries = tokio::task::spawn_blocking(Binaries::locate)
            .await
            .map_err(|e| Error::Setup(format!("binary lookup panicked: {e}")))??;
        // A free port can be taken between our probe and the server's bind: try again then.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match TestCluster::start_once(&self, &binaries).await {
                Err(Error::Startup(msg))
                    if attempt < 3 && msg.contains("address already in use") =>
                {
                    continue;
                }
                other => return other,
            }
        }
    }
}

struct Processes {
    etcd: Child,
    apiserver: Child,
    watchdog: Option<Child>,
}

/// A running etcd + kube-apiserver. Dropping it stops both and deletes its directory
/// (set `KCERT_TESTBED_KEEP=1` to keep the directory and its logs).
pub struct TestCluster {
    dir: PathBuf,
    server: String,
    ca: CertificateAuthority,
    ca_pem: String,
    admin_kubeconfig: PathBuf,
    binaries: Binaries,
    processes: Mutex<Processes>,
    started_in: Duration,
    apiserver_args: Vec<String>,
    /// Other processes the watchdog kills with the cluster (hollow nodes, controller managers).
    adopted: Mutex<Vec<u32>>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("server", &self.server)
            .field("dir", &self.dir)
            .finish()
    }
}

static NAME_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A free TCP port on 127.0.0.1 (the OS picks; we release it for the server to bind).
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?;
    Ok(listener
        .local_addr()
        .map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?
        .port())
}

/// Write a file readable by its owner only (keys), or by all (certificates).
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(contents).map_err(|e| Error::io(path, e))
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl TestCluster {
    /// Start a cluster with default options.
    pub async fn start() -> Result<Self> {
        TestClusterBuilder::default().start().await
    }

    /// Options for a cluster.
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    /// One cluster per test binary, started on first use and stopped (by the watchdog) when the
    /// process exits. Tests sharing it isolate themselves with unique names and namespaces.
    pub async fn shared() -> &'static TestCluster {
        static SHARED: tokio::sync::OnceCell<TestCluster> = tokio::sync::OnceCell::const_new();
        SHARED
            .get_or_try_init(TestCluster::start)
            .await
            .unwrap_or_else(|e| panic!("the shared test cluster did not start: {e}"))
    }

    async fn start_once(options: &TestClusterBuilder, binaries: &Binaries) -> Result<Self> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("kcert-testbed-")
            .tempdir()
            .map_err(|e| Error::io(&std::env::temp_dir(), e))?
            .keep();
        let rng = SystemRandom;
        let now = SystemTime::now();

        let ca_key = PrivateKey::generate(match options.ca_key {
            CaKeyType::Rsa2048 => KeyType::Rsa2048,
            CaKeyType::EcdsaP256 => KeyType::EcdsaP256,
        })?;
        let ca = CertificateAuthority::create(
            ca_key,
            "kcert-testbed-ca",
            Duration::from_secs(365 * 86400),
            now,
            &rng,
        )?;
        let ca_pem = ca.certificate_pem();
        write_file(&dir.join("ca.crt"), ca_pem.as_bytes(), false)?;
        write_file(
            &dir.join("ca.key"),
            ca.private_key()
                .expect("a CA created from a key in memory")
                .to_pkcs8_pem()?
                .as_bytes(),
            true,
        )?;

        let serving_key = PrivateKey::generate(KeyType::EcdsaP256)?;
        let sans = SubjectAltNames {
            dns: vec!["localhost".into()],
            ips: vec!["127.0.0.1".parse().expect("literal")],
            ..Default::default()
        };
        let csr = build_csr(
            &serving_key,
            &CsrSubject::new("kube-apiserver", Vec::<String>::new())?,
            &sans,
        )?;
        let serving = ca.sign(
            &CertificateRequest::from_pem(csr.as_bytes())?,
            &SigningProfile {
                usages: vec![
                    Usage::DigitalSignature,
                    Usage::KeyEncipherment,
                    Usage::ServerAuth,
                ],
                max_lifetime: Duration::from_secs(365 * 86400),
                requested_lifetime: None,
                allow_sans: true,
            },
            now,
            &rng,
        )?;
        write_file(&dir.join("serving.crt"), serving.to_pem().as_bytes(), false)?;
        write_file(
            &dir.join("serving.key"),
            serving_key.to_pkcs8_pem()?.as_bytes(),
            true,
        )?;
        let sa_key = PrivateKey::generate(KeyType::EcdsaP256)?;
        write_file(&dir.join("sa.key"), sa_key.to_pkcs8_pem()?.as_bytes(), true)?;
        let sa_pub = kcert_pki::pem::encode("PUBLIC KEY", sa_key.public_key().spki_der());
        write_file(&dir.join("sa.pub"), sa_pub.as_bytes(), false)?;

        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");

        let (admin_cert, admin_key) =
            issue_client(&ca, "kcert-testbed-admin", &["system:masters"])?;
        let admin_yaml = kubeconfig::render(
            &server,
            &ca_pem,
            "kcert-testbed-admin",
            &Credentials::ClientCertificate {
                cert_pem: &admin_cert,
                key_pem: &admin_key,
            },
        );
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_file(&admin_kubeconfig, admin_yaml.as_bytes(), true)?;

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = spawn(
            &binaries.etcd,
            &[
                "--name=default".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            &dir.join("etcd.log"),
        )?;
        let mut args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--tls-cert-file={}", dir.join("serving.crt").display()),
            format!(
                "--tls-private-key-file={}",
                dir.join("serving.key").display()
            ),
            format!("--client-ca-file={}", dir.join("ca.crt").display()),
            match &options.authorization_config {
                Some(path) => format!("--authorization-config={}", path.display()),
                None => "--authorization-mode=Node,RBAC".into(),
            },
            format!("--service-account-issuer={server}"),
            format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ),
            // Unlikely to hold the machine's own address (hollow nodes report it), since kcert
            // never certifies a Service address for a node.
            "--service-cluster-ip-range=10.254.254.0/24".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            // Node identities for real: NodeRestriction limits what a node may write, bootstrap
            // tokens (Secrets in kube-system) authenticate kubelets that have no certificate.
            "--enable-admission-plugins=NodeRestriction".into(),
            "--enable-bootstrap-token-auth=true".into(),
            "--profiling=false".into(),
            "--v=0".into(),
        ];
        args.extend(options.apiserver_args.iter().cloned());
        let apiserver_args = args.clone();
        let apiserver = spawn(
            &binaries.kube_apiserver,
            &args,
            &dir.join("kube-apiserver.log"),
        );
        let apiserver = match apiserver {
            Ok(child) => child,
            Err(e) => {
                let mut etcd = etcd;
                let _ = etcd.kill();
                let _ = etcd.wait();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        write_pids(&dir, &[etcd.id(), apiserver.id()]);
        let watchdog = spawn_watchdog(&dir).ok();
        let mut cluster = TestCluster {
            dir,
            server,
            ca,
            ca_pem,
            admin_kubeconfig,
            binaries: binaries.clone(),
            processes: Mutex::new(Processes {
                etcd,
                apiserver,
                watchdog,
            }),
            started_in: Duration::ZERO,
            apiserver_args,
            adopted: Mutex::new(Vec::new()),
        };
        cluster.wait_ready(Duration::from_secs(90)).await?;
        cluster.started_in = started.elapsed();
        Ok(cluster)
    }

    async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let client = self.admin_client().await?;
        loop {
            {
                let mut guard = self.processes.lock().expect("process lock");
                let p = &mut *guard;
                for (name, child) in [("etcd", &mut p.etcd), ("kube-apiserver", &mut p.apiserver)] {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(Error::Startup(format!(
                            "{name} exited during start-up ({status}); last lines of its log:\n{}",
                            log_tail(&self.dir.join(format!("{name}.log")), 30)
                        )));
                    }
                }
            }
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("static request");
            if let Ok(body) = client.request_text(request).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Startup(format!(
                    "kube-apiserver not ready after {limit:?}; last lines of its log:\n{}\netcd:\n{}",
                    log_tail(&self.dir.join("kube-apiserver.log"), 30),
                    log_tail(&self.dir.join("etcd.log"), 10)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The working directory (certificates, keys, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long start-up took, from binaries located to `/readyz` ok.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The cluster CA, which `--client-ca-file` trusts.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Path of `ca.crt`.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Path of `ca.key` (mode 0600).
    pub fn ca_key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// Path of a kubeconfig for a `system:masters` admin, which kubectl accepts.
    pub fn admin_kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The binaries this cluster runs.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// A kubectl of the cluster's version if one was built, else the one on PATH.
    pub fn kubectl(&self) -> Command {
        let program = self
            .binaries
            .kubectl
            .clone()
            .unwrap_or_else(|| PathBuf::from("kubectl"));
        let mut cmd = Command::new(program);
        cmd.arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()));
        cmd
    }

    /// The user name kubectl authenticates as with `kubeconfig` (in `context`, or its current
    /// one), as `kubectl auth whoami` reports it: proof that a kubeconfig works for kubectl.
    pub fn kubectl_whoami(&self, kubeconfig: &Path, context: Option<&str>) -> Result<String> {
        let mut cmd = Command::new(
            self.binaries
                .kubectl
                .clone()
                .unwrap_or_else(|| PathBuf::from("kubectl")),
        );
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()));
        if let Some(c) = context {
            cmd.args(["--context", c]);
        }
        let out = cmd
            .args([
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ])
            .output()
            .map_err(|e| Error::io(Path::new("kubectl"), e))?;
        if !out.status.success() {
            return Err(Error::Setup(format!(
                "kubectl auth whoami with {}: {}",
                kubeconfig.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A client with the admin's identity (CN=kcert-testbed-admin, O=system:masters).
    pub async fn admin_client(&self) -> Result<Client> {
        let yaml = std::fs::read_to_string(&self.admin_kubeconfig)
            .map_err(|e| Error::io(&self.admin_kubeconfig, e))?;
        client_from_kubeconfig(&yaml).await
    }

    /// A kubeconfig (YAML) for `user` in `groups`, with a certificate signed by the cluster CA.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<String> {
        let (cert, key) = issue_client(&self.ca, user, groups)?;
        Ok(kubeconfig::render(
            &self.server,
            &self.ca_pem,
            user,
            &Credentials::ClientCertificate {
                cert_pem: &cert,
                key_pem: &key,
            },
        ))
    }

    /// A client for `user` in `groups`, authenticated by a client certificate from the cluster CA.
    pub async fn user_client(&self, user: &str, groups: &[&str]) -> Result<Client> {
        client_from_kubeconfig(&self.user_kubeconfig(user, groups)?).await
    }

    /// A client for ServiceAccount `namespace/name` (created if missing) with a TokenRequest token.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<Client> {
        let token = self.service_account_token(namespace, name).await?;
        let yaml = kubeconfig::render(
            &self.server,
            &self.ca_pem,
            name,
            &Credentials::Token(&token),
        );
        client_from_kubeconfig(&yaml).await
    }

    /// A one-hour token for ServiceAccount `namespace/name`, creating the account if missing.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        let admin = self.admin_client().await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(admin, namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let issued = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        issued
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| Error::Setup("TokenRequest returned no token".into()))
    }

    /// Create a namespace with a unique name starting with `prefix`, for one test's objects.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let name = self.unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(self.admin_client().await?);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces.create(&PostParams::default(), &ns).await?;
        Ok(name)
    }

    /// A name no other test in any process sharing this cluster will pick.
    pub fn unique_name(&self, prefix: &str) -> String {
        let n = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        format!("{prefix}-{}-{n}-{:x}", std::process::id(), nanos % 0xfffff)
    }

    /// Kill kube-apiserver and start it again on the same port and etcd data; wait until ready.
    pub async fn restart_apiserver(&self) -> Result<()> {
        {
            let mut guard = self.processes.lock().unwrap_or_else(|e| e.into_inner());
            let p = &mut *guard;
            let _ = p.apiserver.kill();
            let _ = p.apiserver.wait();
            // The port is released when the process exits; a new server binds it again.
            let log = self.dir.join("kube-apiserver.log");
            let out = std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .map_err(|e| Error::io(&log, e))?;
            let err = out.try_clone().map_err(|e| Error::io(&log, e))?;
            p.apiserver = Command::new(&self.binaries.kube_apiserver)
                .args(&self.apiserver_args)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| Error::io(&self.binaries.kube_apiserver, e))?;
            let mut pids = vec![p.etcd.id(), p.apiserver.id()];
            pids.extend(
                self.adopted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter(),
            );
            write_pids(&self.dir, &pids);
        }
        self.wait_ready(Duration::from_secs(90)).await
    }

    /// Freeze etcd (SIGSTOP) — the API server's requests hang as on a dead etcd — or thaw it.
    pub fn pause_etcd(&self, paused: bool) -> Result<()> {
        let pid = self
            .processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .etcd
            .id();
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .map_err(|e| Error::io(Path::new("kill"), e))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Setup(format!("kill {signal} {pid} failed")))
        }
    }

    /// Have the watchdog kill `pid` too when the test process dies.
    pub(crate) fn adopt(&self, pid: u32) {
        let mut adopted = self.adopted.lock().unwrap_or_else(|e| e.into_inner());
        adopted.push(pid);
        let p = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        let mut pids = vec![p.etcd.id(), p.apiserver.id()];
        pids.extend(adopted.iter());
        write_pids(&self.dir, &pids);
    }

    /// Process ids of kube-apiserver and etcd (for resource accounting in benchmarks).
    pub fn pids(&self) -> (u32, u32) {
        let p = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        (p.apiserver.id(), p.etcd.id())
    }

    /// Stop both processes now (also done on drop).
    pub fn stop(&self) {
        let mut guard = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        let p = &mut *guard;
        for child in [&mut p.apiserver, &mut p.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(w) = p.watchdog.as_mut() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("KCERT_TESTBED_KEEP").is_some() {
            let _ = writeln!(
                std::io::stderr(),
                "kcert-testbed: kept {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Issue a client certificate for `user` in `groups` directly from the CA (one hour).
fn issue_client(
    ca: &CertificateAuthority,
    user: &str,
    groups: &[&str],
) -> Result<(String, String)> {
    let key = PrivateKey::generate(KeyType::EcdsaP256)?;
    let csr = build_csr(
        &key,
        &CsrSubject::new(user, groups.iter().copied())?,
        &SubjectAltNames::default(),
    )?;
    let cert = ca.sign(
        &CertificateRequest::from_pem(csr.as_bytes())?,
        &SigningProfile::client(Duration::from_secs(3600)),
        SystemTime::now(),
        &SystemRandom,
    )?;
    Ok((cert.to_pem(), key.to_pkcs8_pem()?.to_string()))
}

/// A kube client from kubeconfig YAML.
pub async fn client_from_kubeconfig(yaml: &str) -> Result<Client> {
    let kc = Kubeconfig::from_yaml(yaml).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Client::try_from(config).map_err(Error::from)
}

fn spawn(program: &Path, args: &[String], log: &Path) -> Result<Child> {
    let out = File::create(log).map_err(|e| Error::io(log, e))?;
    let err = out.try_clone().map_err(|e| Error::io(log, e))?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| Error::io(program, e))
}

/// A shell that waits for this process to end, then kills the cluster and removes its directory:
/// the clean-up for clusters in statics (never dropped) and for test processes that abort.
/// The processes the watchdog kills (rewritten when one is restarted).
fn write_pids(dir: &Path, pids: &[u32]) {
    let text: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    let _ = std::fs::write(dir.join("pids"), text.join(" "));
}

fn spawn_watchdog(dir: &Path) -> Result<Child> {
    const SCRIPT: &str = r#"trap '' INT HUP
parent=$1; dir=$2
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
kill -CONT $(cat "$dir/pids") 2>/dev/null
kill -9 $(cat "$dir/pids") 2>/dev/null
[ -n "$KCERT_TESTBED_KEEP" ] || rm -rf "$dir""#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("kcert-testbed-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().map_err(|e| Error::io(Path::new("sh"), e))
}
