//! The chart's admission guard covers every signer name the chart serves: rendered by Helm with
//! extra `signerNames`, its ValidatingAdmissionPolicy refuses `system:` names at create for each
//! of them on the real API server, and leaves Kubernetes' kubelet signers (whose names are
//! `system:node:<n>` by design) alone.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kcert_testbed::TestCluster;
use kcert_tests::{csr_object, eventually};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde::Deserialize;
use std::process::Command;
use std::time::Duration;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/chart/kcert");

#[tokio::test]
async fn the_charts_admission_guard_follows_its_signer_names() {
    let cluster = TestCluster::shared().await;
    let helm = tokio::task::spawn_blocking(kcert_testbed::helm)
        .await
        .unwrap()
        .unwrap();
    let extra = format!("example.com/{}", cluster.unique_name("team"));
    let out = Command::new(&helm)
        .args(["template", "kcert", CHART, "--namespace", "kcert-system"])
        .args([
            "--set",
            &format!(
                "signerNames={{kcert.dev/client,{extra},kubernetes.io/kube-apiserver-client-kubelet}}"
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let mut guard: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&rendered)
        .filter_map(|d| serde_json::Value::deserialize(d).ok())
        .filter(|o| {
            o["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("ValidatingAdmissionPolicy"))
                // Not the Revocation author check (kcert-revocation-author).
                && o["metadata"]["name"] == "kcert-no-system-names"
        })
        .collect();
    assert_eq!(guard.len(), 2, "{rendered}");
    let expression = guard
        .iter()
        .find(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .map(|o| o["spec"]["matchConditions"][0]["expression"].clone())
        .unwrap();
    assert_eq!(
        expression,
        serde_json::json!(format!(
            "object.spec.signerName in ['kcert.dev/client', '{extra}']"
        )),
        "the kubelet signer must be left out, the others all in"
    );
    // Installed under a name of its own (the shared cluster may hold deploy/'s).
    let name = cluster.unique_name("guard");
    for o in guard.iter_mut() {
        o["metadata"]["name"] = serde_json::json!(name);
        if o["kind"] == "ValidatingAdmissionPolicyBinding" {
            o["spec"]["policyName"] = serde_json::json!(name);
        }
    }
    let admin = cluster.admin_client().await.unwrap();
    // The API for one of the guard's objects (a policy or its binding).
    let api_of = |o: &serde_json::Value| -> Api<DynamicObject> {
        let kind = o["kind"].as_str().unwrap();
        let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        let plural = match kind {
            "ValidatingAdmissionPolicy" => "validatingadmissionpolicies",
            _ => "validatingadmissionpolicybindings",
        };
        Api::all_with(
            admin.clone(),
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        )
    };
    for o in &guard {
        api_of(o)
            .create(
                &PostParams::default(),
                &serde_json::from_value(o.clone()).unwrap(),
            )
            .await
            .unwrap();
    }
    let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let message = eventually(
        "the guard refuses system:masters for the extra signer",
        Duration::from_secs(20),
        || async {
            let n = cluster.unique_name("guarded");
            let obj = csr_object(&n, &extra, "evil", &["system:masters"], None);
            match csrs.create(&PostParams::default(), &obj).await {
                Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Ok(s.message),
                Ok(_) => {
                    let _ = csrs.delete(&n, &Default::default()).await;
                    Err("admitted".to_string())
                }
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    assert!(
        message.contains("kcert never issues such certificates"),
        "{message}"
    );
    for o in guard.iter().rev() {
        let _ = api_of(o).delete(&name, &Default::default()).await;
    }
}
