//! Secrets hygiene: with every log level on, nothing the controller logs contains key material.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;
use kcert_controller::{CaSource, PolicySource, Settings};
use kcert_testbed::TestCluster;
use kcert_tests::{RunningController, csr_with_key, issued, wait_for};
use kube::Api;
use kube::api::PostParams;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The base64 body of a PEM, and lines of it, as they could appear in a log.
fn fragments(pem: &str) -> Vec<String> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut out: Vec<String> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_string)
        .collect();
    out.push(body.chars().take(40).collect());
    out
}

#[tokio::test]
async fn no_key_material_reaches_the_logs_even_at_trace_level() {
    let cluster = TestCluster::shared().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Scoped to this test's thread, where the in-process controller's tasks run.
    let _guard = tracing::subscriber::set_default(subscriber);

    let ns = cluster.namespace("secrets").await.unwrap();
    let admin = cluster.admin_client().await.unwrap();
    let ca_key = std::fs::read_to_string(cluster.ca_key_path()).unwrap();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ca"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": std::fs::read_to_string(cluster.ca_cert_path()).unwrap(), "tls.key": ca_key},
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let signer = format!("kcert.dev/{}", cluster.unique_name("secrets"));
    let settings = Settings {
        signer_names: vec![signer.clone()],
        policy: PolicySource::Static(
            serde_yaml::from_str(&format!(
                "rules: [{{id: s, signerNames: ['{signer}'], requesters: {{users: [kcert-testbed-admin]}}, commonName: {{glob: '*'}}}}]"
            ))
            .unwrap(),
        ),
        ca: Some(CaSource::Secret {
            namespace: ns.clone(),
            name: "ca".into(),
        }),
        ..Settings::default()
    };
    let controller = RunningController::start_with(admin.clone(), settings);
    let csrs: Api<CertificateSigningRequest> = Api::all(admin);
    let name = cluster.unique_name("secret-user");
    let (csr, user_key) = csr_with_key(&name, &signer, "secret-user", &[], None);
    csrs.create(&PostParams::default(), &csr).await.unwrap();
    wait_for(&csrs, &name, Duration::from_secs(20), "issued", issued).await;
    drop(controller);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("issued") && logs.contains("CA loaded"),
        "logs were not captured:\n{}",
        &logs[..logs.len().min(2000)]
    );
    assert!(
        !logs.contains("PRIVATE KEY"),
        "a PEM private key header was logged"
    );
    for (what, pem) in [
        (
            "CA key",
            std::fs::read_to_string(cluster.ca_key_path()).unwrap(),
        ),
        ("user key", user_key),
    ] {
        for f in fragments(&pem) {
            assert!(!logs.contains(&f), "{what} material was logged: {f}");
        }
    }
}
