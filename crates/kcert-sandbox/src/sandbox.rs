//! `kcert-sandbox up` and `kcert-sandbox demo`: the test bed's real control plane plus
//! kcert-controller with a default onboarding policy, on this machine.

use crate::SandboxUpArgs;
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kcert::cli::{CanIArgs, GrantArgs, OutputFormat, RequestArgs};
use kcert::commands::report;
use kcert::target::Target;
use kcert_controller::crd::ApprovalPolicy;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_testbed::TestCluster;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use std::path::Path;
use std::time::Duration;

/// The policy the sandbox installs: admins onboard anyone into any non-protected group; every
/// user may renew their own certificate with the groups they already have, with a current
/// kcert certificate, for 90 days after onboarding.
pub const SANDBOX_POLICY: &str = r#"apiVersion: kcert.dev/v1alpha1
kind: ApprovalPolicy
metadata:
  name: sandbox-onboarding
spec:
  whenNoRuleMatches: Ignore
  rules:
    - id: admins-onboard
      signerNames: [kcert.dev/client]
      requesters:
        users: [kcert-testbed-admin]
        groups: ["kcert:admins"]
      commonName: {glob: "*"}
      groups: {allowed: ["*"]}
      maxDuration: 720h
    - id: self-renew
      signerNames: [kcert.dev/client]
      requesters:
        groups: [system:authenticated]
      commonName: {self: true}
      groups: {fromRequester: true}
      # Only with a current, unrevoked kcert certificate of the same user, for at most 90 days
      # after onboarding.
      renewal: {maxChainAge: 90d}
      maxDuration: 24h
"#;

/// A running sandbox: the cluster and an in-process controller, which also serves the
/// revocation webhook the API server consults for X.509 requests.
pub struct Sandbox {
    /// The control plane.
    pub cluster: TestCluster,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    controller: tokio::task::JoinHandle<()>,
    _webhook_files: tempfile::TempDir,
    /// kube-controller-manager running only the ClusterRole aggregation controller, so that the
    /// aggregated `view`, `edit` and `admin` roles have their rules, as in a real cluster.
    _aggregation: Option<tokio::process::Child>,
}

impl Sandbox {
    /// Start the control plane, install the CRD, RBAC and policy, and run the controller.
    pub async fn start() -> Result<Self> {
        let webhook_dir = tempfile::tempdir()?;
        let port = kcert_testbed::webhook::free_port()?;
        let files = kcert_testbed::webhook::WebhookFiles::create(webhook_dir.path(), port)?;
        let cluster = TestCluster::builder()
            .authorization_config(&files.authorization_config)
            .start()
            .await
            .context("starting the control plane")?;
        let client = cluster.admin_client().await?;
        install(&client).await?;
        let aggregation = match cluster.binaries().kube_controller_manager.clone() {
            Some(kcm) => Some(
                tokio::process::Command::new(kcm)
                    .arg(format!(
                        "--kubeconfig={}",
                        cluster.admin_kubeconfig_path().display()
                    ))
                    .args([
                        "--controllers=clusterrole-aggregation",
                        "--leader-elect=false",
                        "--bind-address=127.0.0.1",
                        "--secure-port=0",
                    ])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting kube-controller-manager (ClusterRole aggregation)")?,
            ),
            None => {
                eprintln!(
                    "kcert-sandbox: no kube-controller-manager (KUBEBUILDER_ASSETS?): the aggregated view/edit/admin ClusterRoles stay empty"
                );
                None
            }
        };
        let settings = Settings {
            policy: PolicySource::Crd,
            ledger: true,
            ca: Some(CaSource::Files {
                cert: cluster.ca_cert_path(),
                key: cluster.ca_key_path(),
            }),
            webhook: Some(kcert_controller::authz_webhook::WebhookSettings {
                addr: files.addr,
                cert: files.cert,
                key: files.key,
                strict: Default::default(),
            }),
            ..Settings::default()
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let controller = tokio::spawn(async move {
            let _ = kcert_controller::run(client, settings, async {
                let _ = rx.await;
            })
            .await;
        });
        Ok(Sandbox {
            cluster,
            stop: Some(tx),
            controller,
            _webhook_files: webhook_dir,
            _aggregation: aggregation,
        })
    }

    /// Stop the controller, then the control plane.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.controller).await;
        self.controller.abort();
    }
}

async fn install(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // The CRDs: policies, the ledger the controller records every certificate in (and that
    // renewals and revocations are checked against), and Revocation objects (`kcert revoke`).
    for (name, crd) in [
        ("approvalpolicies.kcert.dev", ApprovalPolicy::crd()),
        (
            "ledgerpages.kcert.dev",
            kcert_controller::crd::LedgerPage::crd(),
        ),
        (
            "revocations.kcert.dev",
            kcert_controller::crd::revocation_crd(),
        ),
    ] {
        crds.patch(
            name,
            &PatchParams::apply("kcert").force(),
            &Patch::Apply(crd),
        )
        .await
        .with_context(|| format!("installing the CRD {name}"))?;
        for _ in 0..100 {
            let crd = crds.get(name).await?;
            if crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Self-service: every authenticated user may create and read CSRs (approval is the policy's).
    let role: ClusterRole = serde_yaml::from_str(
        "metadata: {name: kcert-csr-requester}\nrules: [{apiGroups: [certificates.k8s.io], resources: [certificatesigningrequests], verbs: [create, get, list, watch]}]",
    )?;
    let binding: ClusterRoleBinding = serde_yaml::from_str(
        "metadata: {name: kcert-csr-requester}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kcert-csr-requester}\nsubjects: [{kind: Group, apiGroup: rbac.authorization.k8s.io, name: 'system:authenticated'}]",
    )?;
    let pp = PatchParams::apply("kcert").force();
    Api::<ClusterRole>::all(client.clone())
        .patch("kcert-csr-requester", &pp, &Patch::Apply(&role))
        .await?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch("kcert-csr-requester", &pp, &Patch::Apply(&binding))
        .await?;
    let policy: ApprovalPolicy = serde_yaml::from_str(SANDBOX_POLICY)?;
    Api::<ApprovalPolicy>::all(client.clone())
        .patch("sandbox-onboarding", &pp, &Patch::Apply(&policy))
        .await
        .context("installing the sandbox policy")?;
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let data = std::fs::read(from)?;
    kcert::files::write_all(
        vec![(to.to_path_buf(), data, kcert::files::Mode::Private)],
        true,
    )?;
    Ok(())
}

pub async fn up(args: &SandboxUpArgs, out: OutputFormat) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("{}: cannot create", args.dir.display()))?;
    let sandbox = Sandbox::start().await?;
    let kubeconfig = args.dir.join("admin.kubeconfig");
    copy_file(sandbox.cluster.admin_kubeconfig_path(), &kubeconfig)?;
    copy_file(&sandbox.cluster.ca_cert_path(), &args.dir.join("ca.crt"))?;
    let abs = std::fs::canonicalize(&kubeconfig)?;
    report(
        out,
        serde_json::json!({"server": sandbox.cluster.server(), "kubeconfig": abs, "signerName": kcert_controller::DEFAULT_SIGNER_NAME}),
        || {
            format!(
                "kcert sandbox: {} with kcert-controller (signer kcert.dev/client, policy sandbox-onboarding)\n\n  export KUBECONFIG={}\n  kcert request --user jane --group dev\n  kcert grant --user jane --clusterrole view --namespace default\n  kubectl --kubeconfig jane.kubeconfig auth whoami\n  kubectl --kubeconfig jane.kubeconfig get pods --namespace default\n  kcert revoke --user jane --reason testing    # within about 2 s her requests are refused\n\nCtrl-C to stop.",
                sandbox.cluster.server(),
                abs.display()
            )
        },
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sandbox.stop().await;
    Ok(())
}

pub async fn demo(out: OutputFormat) -> Result<()> {
    let step = |n: u32, text: &str| {
        if out.is_text() {
            println!("\n== {n}. {text}");
        }
    };
    step(
        1,
        "start a local control plane and kcert-controller (policy sandbox-onboarding)",
    );
    let sandbox = Sandbox::start().await?;
    let result = demo_steps(&sandbox, out, step).await;
    sandbox.stop().await;
    result
}

async fn demo_steps(sandbox: &Sandbox, out: OutputFormat, step: impl Fn(u32, &str)) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let admin = Target::new(
        Some(sandbox.cluster.admin_kubeconfig_path().to_path_buf()),
        None,
    );
    step(
        2,
        "the admin requests a certificate for jane in group dev (kcert request --user jane --group dev)",
    );
    let request = RequestArgs {
        user: Some("jane".into()),
        groups: vec!["dev".into()],
        from_file: None,
        key_type: kcert_pki::KeyType::EcdsaP256,
        key: None,
        signer_name: kcert_controller::DEFAULT_SIGNER_NAME.into(),
        duration: Some(Duration::from_secs(3600)),
        timeout: Duration::from_secs(60),
        name: None,
        out_dir: dir.path().to_path_buf(),
        merge: None,
        namespace: Some("demo".into()),
        force: false,
        exec_plugin: false,
    };
    kcert::commands::request::run(&request, out, &admin).await?;
    if out.is_text() {
        println!(
            "  (the demo's files and cluster are removed at the end: to try them yourself, `kcert-sandbox up` keeps a cluster running)"
        );
    }
    step(
        3,
        "create a pod-reader Role in namespace demo and grant it to jane (kcert grant --user jane --role pod-reader -n demo)",
    );
    let client = sandbox.cluster.admin_client().await?;
    let ns: Namespace = serde_yaml::from_str("metadata: {name: demo}")?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let role: Role = serde_yaml::from_str(
        "metadata: {name: pod-reader}\nrules: [{apiGroups: [''], resources: [pods], verbs: [get, list, watch]}]",
    )?;
    Api::<Role>::namespaced(client, "demo")
        .create(&PostParams::default(), &role)
        .await?;
    let grant = GrantArgs {
        user: Some("jane".into()),
        group: None,
        role: Some("pod-reader".into()),
        clusterrole: None,
        namespace: Some("demo".into()),
    };
    kcert::commands::access::grant(&grant, out, &admin).await?;
    let jane = Target::new(Some(dir.path().join("jane.kubeconfig")), None);
    step(4, "as jane: who am I? (kcert whoami)");
    kcert::commands::access::whoami(out, &jane).await?;
    let can = |verb: &str, resource: &str| CanIArgs {
        verb: verb.into(),
        resource: resource.into(),
        namespace: Some("demo".into()),
    };
    // RBAC applies new bindings within moments; ask until the answer settles.
    step(
        5,
        "as jane: may I list pods in demo? (kcert can-i list pods -n demo)",
    );
    for _ in 0..50 {
        if kcert::commands::access::ask(&can("list", "pods"), &jane)
            .await?
            .allowed
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kcert::commands::access::can_i(&can("list", "pods"), out, &jane).await?;
    step(
        6,
        "as jane: may I delete pods in demo? (kcert can-i delete pods -n demo)",
    );
    if kcert::commands::access::ask(&can("delete", "pods"), &jane)
        .await?
        .allowed
    {
        anyhow::bail!("jane may delete pods: pod-reader should not allow it");
    }
    if out.is_text() {
        println!("no (as expected)");
    }
    step(
        7,
        "the admin revokes jane's certificate (kcert revoke --user jane --reason \"demo\")",
    );
    let revoke = kcert::cli::RevokeArgs {
        serial: None,
        fingerprint: None,
        csr: None,
        user: Some("jane".into()),
        node: None,
        clear: false,
        reason: "demo".into(),
    };
    // The ledger records a certificate moments after it is issued.
    let mut attempt = 0;
    while let Err(e) = kcert::commands::admin::revoke(&revoke, out, &admin).await {
        attempt += 1;
        if attempt > 50 {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    step(
        8,
        "as jane: may I list pods in demo? (refused now: her certificate is revoked)",
    );
    let mut refused = None;
    for _ in 0..50 {
        match kcert::commands::access::ask(&can("list", "pods"), &jane).await {
            Err(e) if format!("{e:#}").contains("revoked") => {
                refused = Some(format!("{e:#}"));
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let refused =
        refused.ok_or_else(|| anyhow::anyhow!("jane's revoked certificate still works"))?;
    if out.is_text() {
        println!("refused (as expected): {}", kcert::text::safe(&refused));
    }
    step(9, "tear down (the sandbox removes itself)");
    Ok(())
}
