//! "Nothing issued is ever unrecorded", proven with a real kill: kcert-controller (this
//! package's binary) issues certificates whose ledger records it holds back (a long
//! `--ledger-flush-interval`), is killed with SIGKILL before writing them, and on its next start
//! finds every issued certificate missing from the ledger and records it, once. Meanwhile the
//! cleaner, told to delete CSRs 5 s after approval, keeps every CSR whose certificate is not on
//! record.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_testbed::TestCluster;
use kcert_tests::{csr_from_pem, eventually, install_crds};
use kube::Api;
use kube::api::{ListParams, PostParams};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SIGNER: &str = "kcert.dev/crash";
const N: usize = 20;

fn start(cluster: &TestCluster, flush: &str, log: &str) -> Child {
    let log = std::fs::File::create(cluster.dir().join(log)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kcert-controller"))
        .args([
            &format!("--kubeconfig={}", cluster.admin_kubeconfig_path().display()),
            &format!("--ca-cert={}", cluster.ca_cert_path().display()),
            &format!("--ca-key={}", cluster.ca_key_path().display()),
            "--controllers=signer",
            "--signer-name",
            SIGNER,
            "--metrics-addr=off",
            "--rbac-protection=false",
            "--ledger=true",
            &format!("--ledger-flush-interval={flush}"),
            &format!("--ledger-flush-idle={flush}"),
            "--cleaner=true",
            "--cleaner-interval=1s",
            "--gc-approved=5s",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Prints the controllers' logs if the test fails (the cluster's directory goes with it).
struct LogsOnFailure(std::path::PathBuf);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in ["kcert-controller-1.log", "kcert-controller-2.log"] {
                let text = std::fs::read_to_string(self.0.join(log)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!(
                    "--- {log} (last 40 lines, newest first)\n{}",
                    tail.join("\n")
                );
            }
        }
    }
}

fn serial(csr: &CertificateSigningRequest) -> Option<String> {
    let pem = csr.status.as_ref()?.certificate.as_ref()?;
    Some(kcert_pki::CertificateInfo::from_pem(&pem.0).ok()?.serial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_signing_and_recording_is_repaired_at_the_next_start() {
    let cluster = TestCluster::start().await.unwrap();
    install_crds(&cluster).await;
    let _logs = LogsOnFailure(cluster.dir().to_path_buf());
    let client = cluster.admin_client().await.unwrap();
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let key = kcert_pki::PrivateKey::generate(kcert_pki::KeyType::EcdsaP256).unwrap();
    let request = kcert_pki::build_csr(
        &key,
        &kcert_pki::CsrSubject::new("crash-user", ["crash"]).unwrap(),
        &Default::default(),
    )
    .unwrap()
    .into_bytes();
    for i in 0..N {
        let name = format!("crash-{i}");
        let mut created = csrs
            .create(
                &PostParams::default(),
                &csr_from_pem(&name, SIGNER, request.clone(), None),
            )
            .await
            .unwrap();
        created
            .status
            .get_or_insert_with(Default::default)
            .conditions = Some(vec![kcert_kube::conditions::condition(
            "Approved",
            "CrashTest",
            "approved by the test",
        )]);
        csrs.replace_subresource("approval", &name, &PostParams::default(), &created)
            .await
            .unwrap();
    }

    // First run: records wait 10 minutes for company, so every one is still in memory when
    // the process is killed.
    let mut first = start(&cluster, "10m", "kcert-controller-1.log");
    let lp = ListParams::default().fields(&format!("spec.signerName={SIGNER}"));
    let issued: HashMap<String, String> =
        eventually("all issued", Duration::from_secs(60), || async {
            let items = csrs.list(&lp).await.unwrap().items;
            let serials: HashMap<String, String> = items
                .iter()
                .filter_map(|c| Some((c.metadata.name.clone()?, serial(c)?)))
                .collect();
            if serials.len() == N {
                Ok(serials)
            } else {
                Err(serials.len())
            }
        })
        .await;
    // Cleaner passes (every 1 s) after the CSRs fell due (5 s after approval; issued well
    // before): none deleted, none recorded.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pages = kcert_kube::ledger::list_pages(&client).await.unwrap();
    assert_eq!(
        kcert_kube::ledger::records(&pages).len(),
        0,
        "records were written before the flush interval (the test would prove nothing)"
    );
    assert_eq!(
        csrs.list(&lp).await.unwrap().items.len(),
        N,
        "the cleaner deleted an issued CSR whose certificate was not on record"
    );
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    // Second run: the certificates are found missing from the ledger and recorded, each once;
    // then, on record, their CSRs are cleaned.
    let mut second = start(&cluster, "100ms", "kcert-controller-2.log");
    let recorded = eventually(
        "every issued certificate on record",
        Duration::from_secs(60),
        || async {
            let pages = kcert_kube::ledger::list_pages(&client).await.unwrap();
            let records: Vec<_> = kcert_kube::ledger::records(&pages)
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            if records.len() >= N {
                Ok(records)
            } else {
                Err(records.len())
            }
        },
    )
    .await;
    let mut by_serial: HashMap<&str, usize> = HashMap::new();
    for r in &recorded {
        *by_serial.entry(r.serial.as_str()).or_default() += 1;
        assert_eq!(r.user, "crash-user");
        assert_eq!(r.groups, ["crash"]);
        assert_eq!(r.approved_by, "CrashTest");
        assert_eq!(issued.get(&r.csr_name), Some(&r.serial), "{r:?}");
    }
    assert_eq!(by_serial.len(), N, "every certificate recorded");
    assert!(
        by_serial.values().all(|n| *n == 1),
        "recorded once each: {by_serial:?}"
    );
    eventually(
        "the recorded CSRs cleaned",
        Duration::from_secs(30),
        || async {
            match csrs.list(&lp).await.unwrap().items.len() {
                0 => Ok(()),
                n => Err(n),
            }
        },
    )
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    let log = std::fs::read_to_string(cluster.dir().join("kcert-controller-2.log")).unwrap();
    assert_eq!(
        log.matches("issued but not on record").count(),
        N,
        "each repair is logged once"
    );
}
