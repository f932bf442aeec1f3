//! The control-plane binaries: from `KUBEBUILDER_ASSETS`, or built once per machine from
//! Kubernetes' Go modules into a cache keyed by version, under a lock.

use crate::{Error, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Kubernetes release the test bed builds (and that `k8s-openapi`'s `v1_36` matches).
pub const KUBERNETES_VERSION: &str = "v1.36.3";
/// The etcd release that Kubernetes pins (see go.mod).
pub const ETCD_VERSION: &str = "v3.6.8";

const GO_MOD: &str = include_str!("../go/go.mod");
const GO_SUM: &str = include_str!("../go/go.sum");
const TOOLS_GO: &str = include_str!("../go/tools.go");
const X509READ_GO: &str = include_str!("../go/x509read/main.go");
const KUBELETCERTS_GO: &str = include_str!("../go/kubeletcerts/main.go");
/// The Helm the test bed builds (its own Go module: Helm pins its own Kubernetes libraries).
pub const HELM_VERSION: &str = "v4.3.1";
const HELM_GO_MOD: &str = include_str!("../go-helm/go.mod");
const HELM_GO_SUM: &str = include_str!("../go-helm/go.sum");
const HELM_TOOLS_GO: &str = include_str!("../go-helm/tools.go");

/// `helm` (helm.sh/helm/v4 at [`HELM_VERSION`]), built once per machine from its Go module into
/// the cache, under the cache's lock; `$KCERT_TESTBED_HELM` names one to use instead.
pub fn helm() -> Result<PathBuf> {
    if let Some(explicit) = std::env::var_os("KCERT_TESTBED_HELM") {
        return Ok(PathBuf::from(explicit));
    }
    let dir = cache_dir()?;
    let bin = dir.join("tools").join(format!("helm-{HELM_VERSION}"));
    build_once(&dir, bin, |go, tmp| {
        let src = dir.join("src-helm");
        std::fs::create_dir_all(&src).map_err(|e| Error::io(&src, e))?;
        for (name, text) in [
            ("go.mod", HELM_GO_MOD),
            ("go.sum", HELM_GO_SUM),
            ("tools.go", HELM_TOOLS_GO),
        ] {
            std::fs::write(src.join(name), text).map_err(|e| Error::io(&src.join(name), e))?;
        }
        progress(&format!(
            "building helm {HELM_VERSION} from its Go module (once per machine, a few minutes)"
        ));
        let ldflags = format!("-s -w -X helm.sh/helm/v4/internal/version.version={HELM_VERSION}");
        go_build(
            go,
            &src,
            &["-ldflags", &ldflags, "-o", &tmp.display().to_string()],
            &["helm.sh/helm/v4/cmd/helm"],
            Instant::now(),
        )
    })
}

/// `bin` if the cache has it; otherwise, under the cache's lock (another process may be
/// building it), `build(go, tmp)` writes it to a temporary path that is then renamed into place,
/// so a half-built binary is never found.
fn build_once(
    dir: &Path,
    bin: PathBuf,
    build: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<PathBuf> {
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    if bin.is_file() {
        return Ok(bin);
    }
    let go = go()?;
    let tmp = bin.with_extension("tmp");
    let parent = bin.parent().expect("tools dir");
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    build(&go, &tmp)?;
    std::fs::rename(&tmp, &bin).map_err(|e| Error::io(&bin, e))?;
    Ok(bin)
}

/// Write the test bed's Go module (go.mod, go.sum, tools.go and the small programs) into
/// `dir/src`, the directory every Go build of the bed runs in.
fn write_module(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("src");
    for (path, text) in [
        ("go.mod", GO_MOD),
        ("go.sum", GO_SUM),
        ("tools.go", TOOLS_GO),
        ("x509read/main.go", X509READ_GO),
        ("kubeletcerts/main.go", KUBELETCERTS_GO),
    ] {
        let path = src.join(path);
        let parent = path.parent().expect("a file in src");
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(src)
}

/// FNV-1a of a program's source: a new program gets a new binary.
fn source_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// Build the Go program `./name` of the bed's module into the cache once per version of its
/// source, under the cache's lock (it reuses the module and build caches the control plane
/// filled, so it takes seconds after that build).
fn small_program(name: &str, source: &str, what: &str) -> Result<PathBuf> {
    let dir = cache_dir()?;
    let bin = dir
        .join("tools")
        .join(format!("{name}-{:016x}", source_hash(source)));
    build_once(&dir, bin, |go, tmp| {
        let src = write_module(&dir)?;
        progress(&format!("building {name} ({what})"));
        go_build(
            go,
            &src,
            &["-ldflags", "-s -w", "-o", &tmp.display().to_string()],
            &[&format!("./{name}")],
            Instant::now(),
        )
    })
}

/// `x509read`: Go's crypto/x509 and kube-apiserver's own x509 authenticator (from the same
/// v1.36.3 module as the control plane) reading CSRs and certificates, for differential tests.
pub fn x509read() -> Result<PathBuf> {
    small_program(
        "x509read",
        X509READ_GO,
        "Go's crypto/x509 + the API server's x509 authenticator",
    )
}

/// `kubeletcerts`: the kubelet's own certificate managers (`pkg/kubelet/certificate`, v1.36.3)
/// asking for a serving certificate and renewing a client certificate, for the node tests.
pub fn kubeletcerts() -> Result<PathBuf> {
    small_program(
        "kubeletcerts",
        KUBELETCERTS_GO,
        "the kubelet's serving and client certificate managers",
    )
}

/// `kubemark` of Kubernetes [`KUBERNETES_VERSION`]: the hollow node, a real kubelet over a fake
/// container runtime, which bootstraps its client certificate with the kubelet's own code.
/// Built once per machine into the cache (about a minute after the control plane's build).
pub fn kubemark() -> Result<PathBuf> {
    if let Some(explicit) = std::env::var_os("KCERT_TESTBED_KUBEMARK") {
        return Ok(PathBuf::from(explicit));
    }
    let dir = cache_dir()?;
    let bin = dir
        .join("tools")
        .join(format!("kubemark-{KUBERNETES_VERSION}"));
    build_once(&dir, bin, |go, tmp| {
        let src = write_module(&dir)?;
        progress(&format!(
            "building kubemark {KUBERNETES_VERSION} (the hollow node; once per machine)"
        ));
        let ldflags = version_ldflags();
        go_build(
            go,
            &src,
            &["-ldflags", &ldflags, "-o", &tmp.display().to_string()],
            &["k8s.io/kubernetes/cmd/kubemark"],
            Instant::now(),
        )
    })
}

/// Paths to the binaries a cluster needs.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// etcd.
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager, when available (benchmarks only).
    pub kube_controller_manager: Option<PathBuf>,
    /// kubectl of the same version.
    pub kubectl: Option<PathBuf>,
}

impl Binaries {
    /// Find the binaries: `KUBEBUILDER_ASSETS` if set, otherwise the cache (building it if empty).
    pub fn locate() -> Result<Self> {
        if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS") {
            return Self::from_assets(Path::new(&assets));
        }
        let dir = cache_dir()?;
        let bin = dir.join("bin");
        if is_complete(&bin) {
            return Ok(Self::in_dir(&bin));
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join(".lock");
        let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        // Parallel test binaries wait here while one of them builds.
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        if !is_complete(&bin) {
            build(&dir)?;
        }
        drop(lock);
        Ok(Self::in_dir(&bin))
    }

    fn from_assets(dir: &Path) -> Result<Self> {
        let found = Self::in_dir(dir);
        for needed in [&found.etcd, &found.kube_apiserver] {
            if !needed.is_file() {
                return Err(Error::Setup(format!(
                    "KUBEBUILDER_ASSETS={} has no {}; point it at a directory with etcd and kube-apiserver (setup-envtest use), or unset it to build them from source",
                    dir.display(),
                    needed.file_name().unwrap_or_default().to_string_lossy()
                )));
            }
        }
        Ok(found)
    }

    fn in_dir(dir: &Path) -> Self {
        let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        Binaries {
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            kube_controller_manager: optional("kube-controller-manager"),
            kubectl: optional("kubectl"),
        }
    }
}

/// `$KCERT_TESTBED_CACHE`, else `$XDG_CACHE_HOME/kcert/control-plane/<version>`, else `~/.cache/…`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KCERT_TESTBED_CACHE") {
        return Ok(PathBuf::from(dir).join(KUBERNETES_VERSION));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| {
            Error::Setup("neither HOME nor XDG_CACHE_HOME is set; set KCERT_TESTBED_CACHE".into())
        })?;
    Ok(base
        .join("kcert")
        .join("control-plane")
        .join(KUBERNETES_VERSION))
}

const COMPLETE_MARKER: &str = ".complete";

fn is_complete(bin: &Path) -> bool {
    std::fs::read_to_string(bin.join(COMPLETE_MARKER)).is_ok_and(|v| v.trim() == KUBERNETES_VERSION)
}

fn progress(line: &str) {
    // Straight to the process's stderr: the test harness captures eprintln!, and a silent
    // ten-minute build looks like a hang.
    let _ = writeln!(std::io::stderr(), "kcert-testbed: {line}");
}

fn go() -> Result<PathBuf> {
    let missing = || {
        Error::Setup(
        "Go is not installed: install Go 1.26 or newer to build kube-apiserver and etcd from source (once per machine), or set KUBEBUILDER_ASSETS to a directory holding etcd and kube-apiserver (e.g. from setup-envtest)".into(),
    )
    };
    if let Some(explicit) = std::env::var_os("KCERT_TESTBED_GO") {
        let path = PathBuf::from(explicit);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(missing())
        };
    }
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/local/go/bin")]);
    for dir in candidates {
        let path = dir.join("go");
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(missing())
}

/// `-X` flags that make Kubernetes binaries report their version (else v0.0.0, which clients
/// complain about).
fn version_ldflags() -> String {
    let minor = KUBERNETES_VERSION.split('.').nth(1).unwrap_or("0");
    format!(
        "-s -w -X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor={minor} -X k8s.io/component-base/version.gitTreeState=clean"
    )
}

/// Build every binary into `dir/bin` (through `dir/bin.tmp`, renamed when complete).
fn build(dir: &Path) -> Result<()> {
    let go = go()?;
    let src = write_module(dir)?;
    let tmp = dir.join("bin.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let started = Instant::now();
    progress(&format!(
        "building Kubernetes {KUBERNETES_VERSION} (kube-apiserver, kube-controller-manager, kubectl) and etcd {ETCD_VERSION} from source into {}; once per machine, about 8-20 minutes on 2 cores",
        dir.display()
    ));
    let k8s_ldflags = version_ldflags();
    let tmp_arg = format!("{}/", tmp.display());
    go_build(
        &go,
        &src,
        &["-ldflags", &k8s_ldflags, "-o", &tmp_arg],
        &[
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kubectl",
        ],
        started,
    )?;
    let etcd_out = tmp.join("etcd");
    go_build(
        &go,
        &src,
        &["-ldflags", "-s -w", "-o", &etcd_out.display().to_string()],
        &["go.etcd.io/etcd/server/v3"],
        started,
    )?;
    std::fs::write(tmp.join(COMPLETE_MARKER), KUBERNETES_VERSION)
        .map_err(|e| Error::io(&tmp, e))?;
    let bin = dir.join("bin");
    let _ = std::fs::remove_dir_all(&bin);
    std::fs::rename(&tmp, &bin).map_err(|e| Error::io(&bin, e))?;
    progress(&format!(
        "built in {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    ));
    Ok(())
}

fn go_build(
    go: &Path,
    src: &Path,
    flags: &[&str],
    packages: &[&str],
    started: Instant,
) -> Result<()> {
    let mut child = Command::new(go)
        .current_dir(src)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-buildvcs=false")
        .args(["build", "-v", "-trimpath"])
        .args(flags)
        .args(packages)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(go, e))?;
    let stderr = child.stderr.take().expect("piped");
    let mut last = Instant::now();
    let mut compiled = 0usize;
    let mut tail: Vec<String> = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
        compiled += 1;
        tail.push(line);
        if tail.len() > 40 {
            tail.remove(0);
        }
        if last.elapsed() > Duration::from_secs(30) {
            last = Instant::now();
            progress(&format!(
                "  {:.1} min, {compiled} packages compiled ({})",
                started.elapsed().as_secs_f64() / 60.0,
                packages.join(" ")
            ));
        }
    }
    let status = child.wait().map_err(|e| Error::io(go, e))?;
    if !status.success() {
        return Err(Error::Setup(format!(
            "go build {} failed ({status}); last output:\n{}",
            packages.join(" "),
            tail.join("\n")
        )));
    }
    Ok(())
}
