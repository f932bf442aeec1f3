//! The `kcert` binary against a real API server with kcert-controller running: every cluster
//! command end to end, and kubectl using the kubeconfig `kcert request` wrote.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_controller::PolicySource;
use kcert_policy::PolicySpec;
use kcert_testbed::TestCluster;
use kcert_tests::{RunningController, allow_everyone_to_request, csr_object};
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn kcert(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kcert"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kcert runs")
}

fn ok_json(out: Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn onboarding_policy(signer: &str) -> PolicySpec {
    serde_yaml::from_str(&format!(
        r#"
rules:
  - id: admins-onboard
    signerNames: ["{signer}"]
    requesters: {{users: [kcert-testbed-admin]}}
    commonName: {{glob: "*"}}
    groups: {{allowed: ["*"]}}
  - id: self-renew
    signerNames: ["{signer}"]
    requesters: {{groups: [system:authenticated]}}
    groups: {{fromRequester: true}}
"#
    ))
    .unwrap()
}

async fn with_controller(prefix: &str) -> (&'static TestCluster, RunningController) {
    let cluster = TestCluster::shared().await;
    allow_everyone_to_request(cluster).await;
    let signer = format!("kcert.dev/{}", cluster.unique_name(prefix));
    let client = cluster.admin_client().await.unwrap();
    let c = RunningController::start(
        cluster,
        client,
        &signer,
        PolicySource::Static(onboarding_policy(&signer)),
        Duration::from_secs(86_400),
    );
    (cluster, c)
}

fn kubectl(cluster: &TestCluster) -> Command {
    Command::new(
        cluster
            .binaries()
            .kubectl
            .clone()
            .unwrap_or_else(|| "kubectl".into()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_writes_a_kubeconfig_kubectl_accepts_and_reruns_reuse_the_csr() {
    let (cluster, controller) = with_controller("request").await;
    let admin = cluster.admin_kubeconfig_path();
    let dir = tempfile::tempdir().unwrap();
    let user = cluster.unique_name("jane");
    let d = dir.path().to_str().unwrap();
    let out = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "request",
                "--user",
                &user,
                "--group",
                "dev",
                "--group",
                "ops",
                "--signer-name",
                &controller.signer,
                "--out-dir",
                d,
                "--duration",
                "1h",
                "-o",
                "json",
            ],
        )
    }));
    assert_eq!(out["user"], user.as_str());
    assert_eq!(out["reused"], false);
    let csr = out["csr"].as_str().unwrap().to_string();
    assert!(csr.starts_with(&format!("kcert-{user}-")), "{csr}");
    let kubeconfig = dir.path().join(format!("{user}.kubeconfig"));
    for (f, mode) in [
        (format!("{user}.key"), 0o600),
        (format!("{user}.kubeconfig"), 0o600),
        (format!("{user}.crt"), 0o644),
    ] {
        assert_eq!(
            std::fs::metadata(dir.path().join(&f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            mode,
            "{f}"
        );
    }
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(!text.contains("insecure-skip-tls-verify"));
    // kubectl itself, with the file kcert wrote.
    let whoami = kubectl(cluster)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .unwrap();
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    let who: Value = serde_json::from_slice(&whoami.stdout).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], user.as_str());
    let groups = who["status"]["userInfo"]["groups"].as_array().unwrap();
    assert!(
        groups.contains(&Value::from("dev")) && groups.contains(&Value::from("ops")),
        "{groups:?}"
    );
    let contexts = kubectl(cluster)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["config", "current-context"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&contexts.stdout).trim(),
        format!("{user}@kcert-testbed")
    );

    // The same key again: the issued CSR is found and reused, nothing new is created.
    let again = tempfile::tempdir().unwrap();
    let key = dir.path().join(format!("{user}.key"));
    let out = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "request",
                "--user",
                &user,
                "--group",
                "dev",
                "--group",
                "ops",
                "--key",
                key.to_str().unwrap(),
                "--signer-name",
                &controller.signer,
                "--out-dir",
                again.path().to_str().unwrap(),
                "-o",
                "json",
            ],
        )
    }));
    assert_eq!(
        (out["csr"].as_str().unwrap(), out["reused"].as_bool()),
        (csr.as_str(), Some(true))
    );
    // Same name, another key: refused with what to do.
    let clash = tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "request",
                "--user",
                &user,
                "--name",
                &csr,
                "--signer-name",
                &controller.signer,
                "--out-dir",
                again.path().to_str().unwrap(),
                "--force",
            ],
        )
    });
    assert_eq!(clash.status.code(), Some(1));
    assert!(
        stderr(&clash).contains("already exists for another key"),
        "{}",
        stderr(&clash)
    );
    // Existing files are not overwritten without --force, and nothing is requested.
    let refused = tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "request",
                "--user",
                &user,
                "--signer-name",
                &controller.signer,
                "--out-dir",
                d,
            ],
        )
    });
    assert!(
        stderr(&refused).contains("already exists; pass --force"),
        "{}",
        stderr(&refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_and_timeout_have_their_own_exit_codes() {
    let (cluster, controller) = with_controller("exits").await;
    let admin = cluster.admin_kubeconfig_path();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let denied = tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "request",
                "--user",
                "mallory",
                "--group",
                "System:Masters",
                "--signer-name",
                &controller.signer,
                "--out-dir",
                d,
            ],
        )
    });
    assert_eq!(denied.status.code(), Some(3), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("was denied: ProtectedGroup"),
        "{}",
        stderr(&denied)
    );
    let nobody = format!("kcert.dev/{}", cluster.unique_name("nobody"));
    let timed_out = tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "request",
                "--user",
                "slow",
                "--signer-name",
                &nobody,
                "--timeout",
                "2s",
                "--out-dir",
                d,
            ],
        )
    });
    assert_eq!(timed_out.status.code(), Some(4), "{}", stderr(&timed_out));
    assert!(
        stderr(&timed_out).contains("no approval after 2s")
            && stderr(&timed_out).contains("kcert approve"),
        "{}",
        stderr(&timed_out)
    );
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(files.is_empty(), "nothing is written on denial or timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_show_approve_and_deny_and_denial_is_final() {
    let cluster = TestCluster::shared().await;
    let admin = cluster.admin_kubeconfig_path();
    let client = cluster.admin_client().await.unwrap();
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let signer = format!("kcert.dev/{}", cluster.unique_name("manual"));
    let (a, b) = (
        cluster.unique_name("approve-me"),
        cluster.unique_name("deny-me"),
    );
    for n in [&a, &b] {
        api.create(
            &PostParams::default(),
            &csr_object(n, &signer, "jane", &["dev"], None),
        )
        .await
        .unwrap();
    }
    let list = ok_json(tokio::task::block_in_place(|| {
        kcert(admin, &["list", "--signer-name", &signer, "-o", "json"])
    }));
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["state"] == "Pending"
        && r["user"] == "jane"
        && r["requester"] == "kcert-testbed-admin"));
    let approved = ok_json(tokio::task::block_in_place(|| {
        kcert(admin, &["approve", &a, "-o", "json"])
    }));
    assert_eq!(approved["results"][0]["result"], "approved");
    let denied = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "deny",
                &b,
                "--reason",
                "NotToday",
                "--message",
                "ask again tomorrow",
                "-o",
                "json",
            ],
        )
    }));
    assert_eq!(denied["results"][0]["result"], "denied");
    let refused = tokio::task::block_in_place(|| kcert(admin, &["approve", &b]));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("denial is final"),
        "{}",
        stderr(&refused)
    );
    let shown = ok_json(tokio::task::block_in_place(|| {
        kcert(admin, &["show", &b, "-o", "json"])
    }));
    assert_eq!(shown["state"], "Denied");
    assert_eq!(shown["conditions"][0]["reason"], "NotToday");
    assert_eq!(shown["conditions"][0]["message"], "ask again tomorrow");
    let again = ok_json(tokio::task::block_in_place(|| {
        kcert(admin, &["approve", &a, "-o", "json"])
    }));
    assert_eq!(again["results"][0]["result"], "already approved");
    let text = String::from_utf8(
        tokio::task::block_in_place(|| kcert(admin, &["list", "--signer-name", &signer])).stdout,
    )
    .unwrap();
    assert!(
        text.lines().next().unwrap().starts_with("NAME")
            && text.contains("Denied")
            && text.contains("Approved"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_whoami_can_i_and_service_account_kubeconfigs() {
    let cluster = TestCluster::shared().await;
    let admin = cluster.admin_kubeconfig_path();
    let ns = cluster.namespace("access").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let user = cluster.unique_name("erin");
    let user_kc = dir.path().join("erin.kubeconfig");
    std::fs::write(&user_kc, cluster.user_kubeconfig(&user, &["qa"]).unwrap()).unwrap();
    let me = ok_json(tokio::task::block_in_place(|| {
        kcert(&user_kc, &["whoami", "-o", "json"])
    }));
    assert_eq!(me["username"], user.as_str());
    assert!(
        me["groups"]
            .as_array()
            .unwrap()
            .contains(&Value::from("qa"))
    );
    let no = tokio::task::block_in_place(|| {
        kcert(&user_kc, &["can-i", "list", "configmaps", "-n", &ns])
    });
    assert_eq!(
        (no.status.code(), String::from_utf8_lossy(&no.stdout).trim()),
        (Some(1), "no")
    );
    // A ClusterRole of our own (the aggregated "view" needs kube-controller-manager).
    let role: k8s_openapi::api::rbac::v1::ClusterRole = serde_yaml::from_str(&format!(
        "metadata: {{name: {ns}-cm-reader}}\nrules: [{{apiGroups: [''], resources: [configmaps], verbs: [get, list]}}]"
    ))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(cluster.admin_client().await.unwrap())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let granted = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "grant",
                "--group",
                "qa",
                "--clusterrole",
                &format!("{ns}-cm-reader"),
                "-n",
                &ns,
                "-o",
                "json",
            ],
        )
    }));
    assert_eq!(
        (granted["kind"].as_str(), granted["result"].as_str()),
        (Some("RoleBinding"), Some("created"))
    );
    let mut yes = None;
    for _ in 0..100 {
        let out = tokio::task::block_in_place(|| {
            kcert(&user_kc, &["can-i", "list", "configmaps", "-n", &ns])
        });
        if out.status.success() {
            yes = Some(out);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        String::from_utf8_lossy(&yes.expect("allowed after grant").stdout).trim(),
        "yes"
    );
    let still_no = tokio::task::block_in_place(|| {
        kcert(&user_kc, &["can-i", "delete", "configmaps", "-n", &ns])
    });
    assert_eq!(still_no.status.code(), Some(1));
    let again = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "grant",
                "--group",
                "qa",
                "--clusterrole",
                &format!("{ns}-cm-reader"),
                "-n",
                &ns,
                "-o",
                "json",
            ],
        )
    }));
    assert_eq!(again["result"], "already exists");

    let sa_kc = dir.path().join("ci.kubeconfig");
    let written = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "kubeconfig",
                "--service-account",
                "ci",
                "-n",
                &ns,
                "--create",
                "--duration",
                "10m",
                "--out",
                sa_kc.to_str().unwrap(),
                "-o",
                "json",
            ],
        )
    }));
    assert_eq!(written["user"], format!("system:serviceaccount:{ns}:ci"));
    assert_eq!(
        std::fs::metadata(&sa_kc).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let sa = ok_json(tokio::task::block_in_place(|| {
        kcert(&sa_kc, &["whoami", "-o", "json"])
    }));
    assert_eq!(sa["username"], format!("system:serviceaccount:{ns}:ci"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_test_explains_offline_and_against_a_cluster_csr_without_writing() {
    let cluster = TestCluster::shared().await;
    let admin = cluster.admin_kubeconfig_path();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules:\n- id: developers-self\n  requesters: {groups: [developers]}\n  groups: {allowed: [dev]}\n").unwrap();
    let key = dir.path().join("k");
    let csr = dir.path().join("c");
    let offline = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kcert"))
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    };
    assert!(
        offline(&["key", "--out", key.to_str().unwrap()])
            .status
            .success()
    );
    assert!(
        offline(&[
            "csr",
            "-u",
            "jane",
            "-g",
            "dev",
            "-k",
            key.to_str().unwrap(),
            "--out",
            csr.to_str().unwrap()
        ])
        .status
        .success()
    );
    let p = policy.to_str().unwrap();
    let c = csr.to_str().unwrap();
    let yes = ok_json(offline(&[
        "policy",
        "test",
        c,
        "--policy-file",
        p,
        "--requester-group",
        "developers",
        "-o",
        "json",
    ]));
    assert_eq!(
        (yes["outcome"].as_str(), yes["rule"].as_str()),
        (Some("Approve"), Some("developers-self"))
    );
    let no = ok_json(offline(&[
        "policy",
        "test",
        c,
        "--policy-file",
        p,
        "--requester",
        "bob",
        "--requester-group",
        "developers",
        "-o",
        "json",
    ]));
    assert_eq!(no["reason"], "CommonNameNotAllowed");
    assert!(no["trace"].as_array().unwrap().len() >= 2);
    // Against a CSR in the cluster: the requester is the one the API server recorded.
    let name = cluster.unique_name("policy-test");
    let jane = cluster.user_client("jane", &["developers"]).await.unwrap();
    allow_everyone_to_request(cluster).await;
    Api::<CertificateSigningRequest>::all(jane)
        .create(
            &PostParams::default(),
            &csr_object(&name, "kcert.dev/unserved", "jane", &["dev"], None),
        )
        .await
        .unwrap();
    let remote = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &["policy", "test", &name, "--policy-file", p, "-o", "json"],
        )
    }));
    assert_eq!(remote["outcome"], "Approve");
    let api: Api<CertificateSigningRequest> = Api::all(cluster.admin_client().await.unwrap());
    assert!(
        api.get(&name)
            .await
            .unwrap()
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .is_empty(),
        "policy test writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_file_onboards_several_users_and_merge_adds_contexts() {
    let (cluster, controller) = with_controller("batch").await;
    let admin = cluster.admin_kubeconfig_path();
    let dir = tempfile::tempdir().unwrap();
    let (u1, u2) = (cluster.unique_name("ann"), cluster.unique_name("ben"));
    let users = dir.path().join("users.yaml");
    std::fs::write(
        &users,
        format!(
            "- {{user: {u1}, groups: [dev]}}\n- {{user: {u2}, groups: [ops], duration: 30m}}\n"
        ),
    )
    .unwrap();
    let merged = dir.path().join("merged.kubeconfig");
    std::fs::copy(admin, &merged).unwrap();
    let out = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "request",
                "--from-file",
                users.to_str().unwrap(),
                "--signer-name",
                &controller.signer,
                "--out-dir",
                dir.path().to_str().unwrap(),
                "--merge",
                merged.to_str().unwrap(),
                "-o",
                "json",
            ],
        )
    }));
    assert_eq!(out["issued"].as_array().unwrap().len(), 2);
    assert_eq!(out["failed"], 0);
    let contexts = kubectl(cluster)
        .arg(format!("--kubeconfig={}", merged.display()))
        .args(["config", "get-contexts", "-o", "name"])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&contexts.stdout);
    assert!(
        names.contains(&format!("{u1}@kcert-testbed"))
            && names.contains(&format!("{u2}@kcert-testbed"))
            && names.contains("kcert-testbed-admin"),
        "{names}"
    );
    let current = kubectl(cluster)
        .arg(format!("--kubeconfig={}", merged.display()))
        .args(["config", "current-context"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&current.stdout).trim(),
        "kcert-testbed-admin",
        "merge keeps the current context"
    );
    let as_u2 = cluster
        .kubectl_whoami(&merged, Some(&format!("{u2}@kcert-testbed")))
        .unwrap();
    assert_eq!(as_u2, u2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_plugin_kubeconfig_works_and_renews_inside_the_window() {
    let (cluster, controller) = with_controller("renew").await;
    let admin = cluster.admin_kubeconfig_path();
    let dir = tempfile::tempdir().unwrap();
    let user = cluster.unique_name("rita");
    let out = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "request",
                "--user",
                &user,
                "--group",
                "dev",
                "--exec-plugin",
                "--duration",
                "10m",
                "--signer-name",
                &controller.signer,
                "--out-dir",
                dir.path().to_str().unwrap(),
                "-o",
                "json",
            ],
        )
    }));
    let first_serial = out["serial"].as_str().unwrap().to_string();
    let kubeconfig = dir.path().join(format!("{user}.kubeconfig"));
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        text.contains("client.authentication.k8s.io/v1") && text.contains("credential"),
        "{text}"
    );
    assert!(
        !text.contains("client-key-data"),
        "an exec kubeconfig embeds no key"
    );
    // 10 minutes left is inside the default 1 h window: kubectl's first call renews, as rita.
    let whoami = kubectl(cluster)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ])
        .output()
        .unwrap();
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    let said = String::from_utf8_lossy(&whoami.stdout);
    assert!(
        said.starts_with(&format!("{user} ")) && said.contains("dev"),
        "{said}"
    );
    let renewed = kcert_pki::CertificateInfo::from_pem(
        &std::fs::read(dir.path().join(format!("{user}.crt"))).unwrap(),
    )
    .unwrap();
    assert_ne!(renewed.serial, first_serial, "the certificate was renewed");
    assert_eq!(renewed.subject.organizations, ["dev"]);
    let key = kcert_pki::PrivateKey::from_pem(
        &std::fs::read(dir.path().join(format!("{user}.key"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        key.public_key(),
        renewed.public_key(),
        "key and certificate were replaced together"
    );
    // The renewal CSR was created by rita herself and approved by the self-renew rule.
    let api: Api<CertificateSigningRequest> = Api::all(cluster.admin_client().await.unwrap());
    let name = kcert::commands::request::default_csr_name(
        &user,
        &renewed.public_key().fingerprint_sha256(),
    );
    let csr = api.get(&name).await.unwrap();
    assert_eq!(csr.spec.username.as_deref(), Some(user.as_str()));
    let decision: Value = serde_json::from_str(
        &csr.metadata.annotations.unwrap()[kcert_controller::DECISION_ANNOTATION],
    )
    .unwrap();
    assert_eq!(decision["rule"], "self-renew");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_lists_issued_certificates_by_user_and_expiry() {
    let cluster = TestCluster::shared().await;
    kcert_tests::install_crds(cluster).await;
    allow_everyone_to_request(cluster).await;
    let signer = format!("kcert.dev/{}", cluster.unique_name("ledger"));
    let client = cluster.admin_client().await.unwrap();
    let settings = kcert_controller::Settings {
        signer_names: vec![signer.clone()],
        policy: PolicySource::Static(onboarding_policy(&signer)),
        ca: Some(kcert_controller::CaSource::Files {
            cert: cluster.ca_cert_path(),
            key: cluster.ca_key_path(),
        }),
        ledger: true,
        ..Default::default()
    };
    let _c = RunningController::start_with(client, settings);
    let admin = cluster.admin_kubeconfig_path();
    let dir = tempfile::tempdir().unwrap();
    let user = cluster.unique_name("lena");
    let issued = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "request",
                "--user",
                &user,
                "--group",
                "dev",
                "--duration",
                "1h",
                "--signer-name",
                &signer,
                "--out-dir",
                dir.path().to_str().unwrap(),
                "-o",
                "json",
            ],
        )
    }));
    let mut rows = Value::Null;
    for _ in 0..100 {
        rows = ok_json(tokio::task::block_in_place(|| {
            kcert(admin, &["ledger", "--user", &user, "-o", "json"])
        }));
        if rows.as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["serial"], issued["serial"]);
    assert_eq!(
        rows[0]["approvedBy"],
        "rule admins-onboard of policy static"
    );
    let soon = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &["ledger", "--user", &user, "--expiring", "2h", "-o", "json"],
        )
    }));
    assert_eq!(soon.as_array().unwrap().len(), 1);
    let later = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &["ledger", "--user", &user, "--expiring", "30m", "-o", "json"],
        )
    }));
    assert!(later.as_array().unwrap().is_empty());

    // kcert revoke: recorded with who and why, idempotent, shown by ledger and show.
    let serial = issued["serial"].as_str().unwrap().to_string();
    let revoked = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "revoke",
                "--serial",
                &serial,
                "--reason",
                "left the team",
                "-o",
                "json",
            ],
        )
    }));
    let r = &revoked["results"][0];
    assert_eq!(r["result"], "revoked", "{revoked}");
    assert_eq!(r["revocation"]["revokedBy"], "kcert-testbed-admin");
    assert_eq!(r["revocation"]["reason"], "left the team");
    let again = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &["revoke", "--user", &user, "--reason", "again", "-o", "json"],
        )
    }));
    assert_eq!(again["results"][0]["result"], "already revoked");
    assert_eq!(again["results"][0]["revocation"]["reason"], "left the team");
    let rows = ok_json(tokio::task::block_in_place(|| {
        kcert(admin, &["ledger", "--user", &user, "-o", "json"])
    }));
    assert_eq!(rows[0]["revocation"]["reason"], "left the team");
    let csr_name = issued["csr"].as_str().unwrap().to_string();
    let shown = ok_json(tokio::task::block_in_place(|| {
        kcert(admin, &["show", &csr_name, "-o", "json"])
    }));
    assert_eq!(shown["revocation"]["reason"], "left the team", "{shown}");
    let none = tokio::task::block_in_place(|| {
        kcert(
            admin,
            &["revoke", "--user", "nobody-at-all", "--reason", "x"],
        )
    });
    assert_eq!(none.status.code(), Some(1));
    assert!(
        stderr(&none).contains("no certificate in the ledger matches"),
        "{}",
        stderr(&none)
    );
    let usage = tokio::task::block_in_place(|| kcert(admin, &["revoke", "--reason", "x"]));
    assert_eq!(usage.status.code(), Some(2));
}

/// A requester allowed only `create` and `get` on CSRs (no `list`/`watch`, so `kcert request`
/// cannot watch its CSR) still gets a certificate: the wait falls back to reading the CSR.
/// Its own cluster, since RBAC only adds and the shared one lets everyone watch CSRs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_works_for_a_requester_without_watch() {
    let cluster = TestCluster::start().await.unwrap();
    let rbac = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: csr-create-get}
rules: [{apiGroups: [certificates.k8s.io], resources: [certificatesigningrequests], verbs: [create, get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: csr-create-get}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: csr-create-get}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: nowatch}]
"#;
    let mut apply = cluster
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(rbac.as_bytes())
        .unwrap();
    assert!(apply.wait().unwrap().success());
    let signer = "kcert.dev/nowatch";
    let _c = RunningController::start(
        &cluster,
        cluster.admin_client().await.unwrap(),
        signer,
        PolicySource::Static(onboarding_policy(signer)),
        Duration::from_secs(86_400),
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("nowatch.kubeconfig");
    std::fs::write(
        &kubeconfig,
        cluster.user_kubeconfig("nowatch", &[]).unwrap(),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = ok_json(tokio::task::block_in_place(|| {
        kcert(
            &kubeconfig,
            &[
                "request",
                "--user",
                "nowatch",
                "--signer-name",
                signer,
                "--out-dir",
                out_dir.to_str().unwrap(),
                "-o",
                "json",
            ],
        )
    }));
    assert_eq!(out["user"], "nowatch");
    let who = cluster
        .kubectl_whoami(&out_dir.join("nowatch.kubeconfig"), None)
        .unwrap();
    assert_eq!(who, "nowatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_and_policy_test_escape_hostile_names_ignore_forged_provenance_and_agree_with_the_controller()
 {
    use kcert_pki::{KeyType, PrivateKey, build_csr_raw, raw_name_der};
    let cluster = TestCluster::shared().await;
    let admin = cluster.admin_kubeconfig_path();
    let client = cluster.admin_client().await.unwrap();
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let signer = format!("kcert.dev/{}", cluster.unique_name("escape"));
    // A CN that would clear the admin's line and show "jane" instead, and a forged record.
    let evil_cn = "\u{1b}[2K\rjane\u{202e}nimda\nroot";
    let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let request = build_csr_raw(
        &key,
        &raw_name_der(&[(
            kcert_pki::oids::COMMON_NAME,
            der::Tag::Utf8String,
            evil_cn.as_bytes(),
        )])
        .unwrap(),
        vec![],
    )
    .unwrap();
    let name = cluster.unique_name("escape");
    let mut csr = kcert_tests::csr_from_pem(&name, &signer, request.into_bytes(), None);
    csr.metadata.annotations = Some(
        [(
            kcert_controller::DECISION_ANNOTATION.to_string(),
            r#"{"outcome":"Approved","reason":"AutoApproved","rule":"forged","policy":"p","csrUid":""}"#
                .to_string(),
        )]
        .into(),
    );
    api.create(&PostParams::default(), &csr).await.unwrap();
    let policy_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        policy_file.path(),
        format!("rules: [{{id: web, signerNames: ['{signer}'], requesters: {{users: ['*']}}, commonName: {{glob: '*'}}, usages: [digital signature, client auth, server auth]}}]"),
    )
    .unwrap();
    let pf = policy_file.path().to_str().unwrap();
    for args in [
        vec!["list", "--signer-name", &signer, "--policy-file", pf],
        vec!["show", &name],
        vec!["policy", "test", &name, "--policy-file", pf],
    ] {
        let out = tokio::task::block_in_place(|| kcert(admin, &args));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}') && !text.contains('\r'),
            "{args:?} printed raw control characters: {text:?}"
        );
        assert!(
            text.contains("\\u{1b}") || text.contains("\\1B"),
            "{args:?}: the escape is not shown escaped: {text}"
        );
        assert!(
            !text.contains("forged"),
            "{args:?} showed a forged record: {text}"
        );
    }
    let shown = ok_json(tokio::task::block_in_place(|| {
        kcert(admin, &["show", &name, "-o", "json"])
    }));
    assert!(shown["decision"].is_null(), "{shown}");
    // The CLI evaluates as the controller does: the signer's table first, then hygiene.
    let verdict = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &["policy", "test", &name, "--policy-file", pf, "-o", "json"],
        )
    }));
    assert_eq!(verdict["reason"], "UnprintableName", "{verdict}");
    let web = cluster.unique_name("web");
    let mut web_csr = csr_object(&web, &signer, "kcert-testbed-admin", &[], None);
    web_csr.spec.usages = Some(vec![
        "digital signature".into(),
        "client auth".into(),
        "server auth".into(),
    ]);
    api.create(&PostParams::default(), &web_csr).await.unwrap();
    let verdict = ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &["policy", "test", &web, "--policy-file", pf, "-o", "json"],
        )
    }));
    assert_eq!(
        (verdict["outcome"].as_str(), verdict["reason"].as_str()),
        (Some("Deny"), Some("UsageNotAllowed")),
        "{verdict}"
    );
    assert_eq!(
        verdict["message"],
        "invalid usage for client certificate: server auth"
    );
    for n in [name, web] {
        let _ = api.delete(&n, &Default::default()).await;
    }
}

/// kubectl finds `kubectl-kcert` as a plugin, and `kubectl kcert …` is the same CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_kcert_as_a_plugin() {
    let cluster = TestCluster::shared().await;
    let plugin = Path::new(env!("CARGO_BIN_EXE_kubectl-kcert"));
    let dir = plugin.parent().unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let list = tokio::task::block_in_place(|| {
        kubectl(cluster)
            .args(["plugin", "list"])
            .env("PATH", &path)
            .output()
            .unwrap()
    });
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains("kubectl-kcert"),
        "{listed}\n{}",
        stderr(&list)
    );
    let whoami = tokio::task::block_in_place(|| {
        kubectl(cluster)
            .arg("kcert")
            .arg("--kubeconfig")
            .arg(cluster.admin_kubeconfig_path())
            .args(["whoami", "-o", "json"])
            .env("PATH", &path)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    });
    let me = ok_json(whoami);
    assert_eq!(me["username"], "kcert-testbed-admin");
}

/// A renewal rule bound to the ledger: the exec plugin, holding a revoked certificate, is denied
/// CredentialRevoked, says so once, remembers it and stops asking (serving the certificate until
/// it expires: here the API server has no revocation webhook, so it still authenticates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exec_plugin_stops_asking_after_a_final_renewal_denial() {
    let cluster = TestCluster::shared().await;
    kcert_tests::install_crds(cluster).await;
    allow_everyone_to_request(cluster).await;
    let signer = format!("kcert.dev/{}", cluster.unique_name("bound"));
    let policy: PolicySpec = serde_yaml::from_str(&format!(
        r#"
rules:
  - id: admins-onboard
    signerNames: ["{signer}"]
    requesters: {{users: [kcert-testbed-admin]}}
    commonName: {{glob: "*"}}
    groups: {{allowed: ["*"]}}
  - id: self-renew
    signerNames: ["{signer}"]
    requesters: {{groups: [system:authenticated]}}
    groups: {{fromRequester: true}}
    renewal: {{maxChainAge: 90d}}
"#
    ))
    .unwrap();
    let settings = kcert_controller::Settings {
        signer_names: vec![signer.clone()],
        policy: PolicySource::Static(policy),
        ca: Some(kcert_controller::CaSource::Files {
            cert: cluster.ca_cert_path(),
            key: cluster.ca_key_path(),
        }),
        ledger: true,
        ..Default::default()
    };
    let _c = RunningController::start_with(cluster.admin_client().await.unwrap(), settings);
    let admin = cluster.admin_kubeconfig_path();
    let dir = tempfile::tempdir().unwrap();
    let user = cluster.unique_name("remy");
    ok_json(tokio::task::block_in_place(|| {
        kcert(
            admin,
            &[
                "request",
                "--user",
                &user,
                "--group",
                "dev",
                "--exec-plugin",
                "--duration",
                "10m",
                "--signer-name",
                &signer,
                "--out-dir",
                dir.path().to_str().unwrap(),
                "-o",
                "json",
            ],
        )
    }));
    // Revoke it once the ledger has it.
    let mut revoked = false;
    for _ in 0..100 {
        let out = tokio::task::block_in_place(|| {
            kcert(
                admin,
                &["revoke", "--user", &user, "--reason", "left the team"],
            )
        });
        if out.status.success() {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(revoked, "the ledger never recorded {user}");
    let kubeconfig = dir.path().join(format!("{user}.kubeconfig"));
    let whoami = || {
        kubectl(cluster)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ])
            .output()
            .unwrap()
    };
    let first = tokio::task::block_in_place(whoami);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("renewal denied for good")
            && stderr(&first).contains("CredentialRevoked"),
        "{}",
        stderr(&first)
    );
    let marker = dir.path().join(format!("{user}.crt.renewal-denied"));
    assert!(marker.is_file(), "no marker at {}", marker.display());
    let second = tokio::task::block_in_place(whoami);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("not renewing"),
        "{}",
        stderr(&second)
    );
}

/// Kubelet CSRs are explained by the node rules, the cluster's Nodes, the node revocations on
/// the ledger and the SubjectAccessReviews (never by the policy): `kcert list`'s POLICY column,
/// `kcert policy test` (a CSR in the cluster, with the controller's node flags, or a file) and
/// `kcert show`'s names; nothing is written to the CSRs. `kcert revoke --node` makes the node's
/// CSRs `NodeRevoked` and `kcert ledger` list it until `--clear`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_csrs_are_explained_by_the_node_rules() {
    use k8s_openapi::api::core::v1::Node;
    use kcert_pki::{CsrSubject, KeyType, PrivateKey, SubjectAltNames, build_csr};
    let cluster = TestCluster::shared().await;
    // The ledger (node revocations) is read for kubelet CSRs, as kcert-controller reads it.
    kcert_tests::install_crds(cluster).await;
    let admin_path = cluster.admin_kubeconfig_path();
    let node_name = cluster.unique_name("cli-node");
    let user = format!("system:node:{node_name}");
    let nodes: Api<Node> = Api::all(cluster.admin_client().await.unwrap());
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": node_name},
        "status": {"addresses": [
            {"type": "InternalIP", "address": "10.97.0.1"},
            {"type": "Hostname", "address": node_name},
        ]}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let as_node: Api<CertificateSigningRequest> =
        Api::all(cluster.user_client(&user, &["system:nodes"]).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let request = |ips: &[&str]| {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let sans = SubjectAltNames {
            dns: vec![node_name.clone()],
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            ..Default::default()
        };
        build_csr(
            &key,
            &CsrSubject::new(&user, ["system:nodes"]).unwrap(),
            &sans,
        )
        .unwrap()
    };
    let mut names = Vec::new();
    for (suffix, ip) in [("good", "10.97.0.1"), ("bad", "10.97.0.9")] {
        let name = format!("{node_name}-{suffix}");
        let mut csr = kcert_tests::csr_from_pem(
            &name,
            kcert_policy::nodes::KUBELET_SERVING_SIGNER,
            request(&[ip]).into_bytes(),
            None,
        );
        csr.spec.usages = Some(vec!["digital signature".into(), "server auth".into()]);
        as_node.create(&PostParams::default(), &csr).await.unwrap();
        names.push(name);
    }
    let listed = ok_json(kcert(
        admin_path,
        &[
            "list",
            "-o",
            "json",
            "--signer-name",
            "kubernetes.io/kubelet-serving",
        ],
    ));
    let column = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["policy"].clone())
    };
    assert_eq!(
        column(&names[0]),
        Some(Value::from("Approve:AutoApproved")),
        "{listed}"
    );
    assert_eq!(
        column(&names[1]),
        Some(Value::from("Deny:SanNotANodeAddress")),
        "{listed}"
    );
    let explained = ok_json(kcert(
        admin_path,
        &["policy", "test", &names[1], "-o", "json"],
    ));
    assert_eq!(explained["reason"], "SanNotANodeAddress");
    assert_eq!(explained["rule"], "kubelet-serving");
    assert!(
        explained["message"].as_str().unwrap().contains("10.97.0.9"),
        "{explained}"
    );
    // As a controller in approve-only mode would see it.
    let lenient = ok_json(kcert(
        admin_path,
        &[
            "policy",
            "test",
            &names[1],
            "--kubelet-approve-only",
            "-o",
            "json",
        ],
    ));
    assert_eq!(
        (lenient["outcome"].as_str(), lenient["reason"].as_str()),
        (Some("Ignore"), Some("SanNotANodeAddress"))
    );
    // A request file, judged for a requester.
    let file = dir.path().join("serving.csr");
    std::fs::write(&file, request(&["10.97.0.1"])).unwrap();
    let from_file = ok_json(kcert(
        admin_path,
        &[
            "policy",
            "test",
            file.to_str().unwrap(),
            "--signer-name",
            "kubernetes.io/kubelet-serving",
            "--requester",
            &user,
            "--requester-group",
            "system:nodes",
            "-o",
            "json",
        ],
    ));
    assert_eq!(from_file["outcome"], "Approve", "{from_file}");
    let shown = kcert(admin_path, &["show", &names[0]]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains(&format!("names       DNS:{node_name}, IP:10.97.0.1")),
        "{text}"
    );
    // Nothing was written: both still pending.
    let csrs: Api<CertificateSigningRequest> = Api::all(cluster.admin_client().await.unwrap());
    for name in &names {
        assert!(kcert_tests::conditions(&csrs.get(name).await.unwrap()).is_empty());
    }

    // The node revoked: its CSRs are NodeRevoked (it has no certificate on the ledger: the node
    // itself is revoked all the same), and `kcert ledger` lists it.
    let revoked = ok_json(kcert(
        admin_path,
        &[
            "revoke",
            "--node",
            &user,
            "--reason",
            "decommissioned",
            "-o",
            "json",
        ],
    ));
    assert_eq!(revoked["node"]["node"], node_name.as_str(), "{revoked}");
    assert_eq!(revoked["node"]["result"], "revoked", "{revoked}");
    assert_eq!(revoked["results"], serde_json::json!([]), "{revoked}");
    let explained = ok_json(kcert(
        admin_path,
        &["policy", "test", &names[0], "-o", "json"],
    ));
    assert_eq!(explained["reason"], "NodeRevoked", "{explained}");
    assert!(
        explained["message"]
            .as_str()
            .unwrap()
            .contains(&format!("kcert revoke --node {node_name} --clear")),
        "{explained}"
    );
    let ledger = |args: &[&str]| {
        let out = kcert(admin_path, args);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = ledger(&["ledger", "--user", &user]);
    let line = text
        .lines()
        .find(|l| l.starts_with(&node_name))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        text.contains("REVOKED-NODE")
            && line.contains("decommissioned")
            && line.contains("in force"),
        "{text}"
    );
    // Cleared by the admin: recorded, shown, and the rules decide again.
    let cleared = ok_json(kcert(
        admin_path,
        &[
            "revoke",
            "--node",
            &node_name,
            "--clear",
            "--reason",
            "re-imaged",
            "-o",
            "json",
        ],
    ));
    assert_eq!(
        cleared["cleared"][0]["cleared"]["reason"], "re-imaged",
        "{cleared}"
    );
    let text = ledger(&["ledger", "--user", &user]);
    assert!(
        text.contains("re-imaged") && !text.contains("in force"),
        "{text}"
    );
    let explained = ok_json(kcert(
        admin_path,
        &["policy", "test", &names[0], "-o", "json"],
    ));
    assert_eq!(explained["reason"], "AutoApproved", "{explained}");
    // Clearing a node that is not revoked is an error, not a silent success.
    let again = kcert(
        admin_path,
        &["revoke", "--node", &node_name, "--clear", "--reason", "x"],
    );
    assert!(
        !again.status.success() && stderr(&again).contains("is not revoked"),
        "{}",
        stderr(&again)
    );
}
