//! kcert's CEL conditions against the API server's own CEL: for a documented set of expressions
//! and requests, kcert's result (true, or not true) equals what kube-apiserver's CEL makes of
//! the same expression over the same values, asked through a probe CRD's validation rules
//! (rule i is `self.probe != i || (expression i)`, the variables under `self`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kcert_policy::{CsrFacts, KeyKind, Requester, cel_variables, evaluate_cel};
use kcert_testbed::TestCluster;
use kcert_tests::eventually;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use std::time::Duration;

/// The expressions docs/policy.md documents as meaning the same in kcert and in the API server.
pub const DOCUMENTED: [&str; 13] = kcert_policy::cel_budget::DOCUMENTED_CONDITIONS;

/// `request`, `requester`, `signerName` → `self.…` (the documented expressions use them only
/// as variables, never inside string literals).
fn under_self(expr: &str) -> String {
    let mut out = String::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == '\'' {
            in_string = !in_string;
        }
        let word_start = !in_string
            && (i == 0
                || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '.' || bytes[i - 1] == '_'));
        if word_start {
            for name in ["requester", "request", "signerName"] {
                let n: Vec<char> = name.chars().collect();
                if bytes[i..].starts_with(&n)
                    && bytes
                        .get(i + n.len())
                        .is_none_or(|c| !c.is_alphanumeric() && *c != '_')
                {
                    out.push_str("self.");
                    break;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn facts(user: &str, groups: &[&str], cn: &str, asked: &[&str]) -> CsrFacts {
    CsrFacts {
        signer_name: "kcert.dev/client".into(),
        requester: Requester {
            username: user.into(),
            uid: "u-1".into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            extra: Default::default(),
        },
        common_names: vec![cn.into()],
        organizations: asked.iter().map(|s| s.to_string()).collect(),
        usages: kcert_policy::DEFAULT_USAGES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..Default::default()
    }
}

fn cases() -> Vec<CsrFacts> {
    let mut v = vec![
        facts("jane", &["team-a", "team-b"], "jane", &["team-a", "team-b"]),
        facts("jane", &["team-a"], "jane", &["team-a", "ops", "dev", "x"]),
        facts("jane", &[], "Admin-1", &[]),
        facts(
            "system:serviceaccount:ci:runner",
            &["system:serviceaccounts"],
            "runner",
            &["ops"],
        ),
    ];
    let mut rsa = facts("bob", &["team-x"], "bob", &["team-x"]);
    rsa.key = KeyKind::Rsa(2048);
    rsa.expiration_seconds = Some(172_800);
    rsa.usages.push("server auth".into());
    rsa.signer_name = "example.com/serving".into();
    rsa.requester.extra.insert("team".into(), vec!["x".into()]);
    v.push(rsa);
    let mut long = facts("carol", &[], "a-very-long-user-name-indeed", &[]);
    long.key = KeyKind::Rsa(4096);
    long.expiration_seconds = Some(3600);
    v.push(long);
    v
}

fn probe_crd() -> CustomResourceDefinition {
    probe_crd_named("celprobes", &DOCUMENTED)
}

/// A probe CRD `<plural>.test.kcert.dev` whose validation rules are `exprs` over the variables
/// at their declared sizes (kcert's CEL bounds: strings of 256 bytes, lists of 64).
fn probe_crd_named(plural: &str, exprs: &[&str]) -> CustomResourceDefinition {
    // The kind of `celprobes` is the one the agreement test's objects name.
    let kind = match plural {
        "celprobes" => "CelProbe".to_string(),
        other => format!("Probe{other}"),
    };
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"rule": format!("self.probe != {i} || ({})", under_self(e)), "message": format!("probe {i} is false")}))
        .collect();
    let string = serde_json::json!({"type": "string", "maxLength": 256});
    let list = serde_json::json!({"type": "array", "maxItems": 64, "items": string});
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.test.kcert.dev")},
        "spec": {
            "group": "test.kcert.dev",
            "scope": "Cluster",
            "names": {"kind": kind, "plural": plural},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                    "type": "object",
                    "x-kubernetes-validations": rules,
                    "properties": {
                        "probe": {"type": "integer"},
                        "signerName": string,
                        "request": {"type": "object", "properties": {
                            "commonName": string, "groups": list, "uid": string, "usages": list,
                            "sans": {"type": "object", "properties": {"dns": list, "ips": list, "emails": list, "uris": list}},
                            "key": {"type": "object", "properties": {"type": string, "bits": {"type": "integer"}}},
                            "lifetimeSeconds": {"type": "integer"}
                        }},
                        "requester": {"type": "object", "properties": {
                            "user": string, "uid": string, "groups": list,
                            "extra": {"type": "object", "maxProperties": 16, "additionalProperties": list},
                            "serviceAccount": {"type": "object", "properties": {"namespace": string, "name": string}}
                        }}
                    }
                }}}}
            }]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn kcert_cel_agrees_with_the_api_servers_cel_on_the_documented_expressions() {
    let cluster = TestCluster::shared().await;
    let admin = cluster.admin_client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    crds.patch(
        "celprobes.test.kcert.dev",
        &PatchParams::apply("kcert-tests").force(),
        &Patch::Apply(probe_crd()),
    )
    .await
    .unwrap();
    let gvk = GroupVersionKind::gvk("test.kcert.dev", "v1", "CelProbe");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "celprobes");
    let probes: Api<DynamicObject> = Api::all_with(admin, &ar);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let programs: Vec<cel::Program> = DOCUMENTED
        .iter()
        .map(|e| cel::Program::compile(e).unwrap())
        .collect();
    let (mut agreed, mut trues) = (0, 0);
    for (c, f) in cases().iter().enumerate() {
        let vars = cel_variables(f);
        for (i, expr) in DOCUMENTED.iter().enumerate() {
            let ours = evaluate_cel(&programs[i], &vars).unwrap_or(false);
            let mut obj = DynamicObject::new(&format!("probe-{c}-{i}"), &ar);
            let mut spec = vars.clone();
            spec["probe"] = serde_json::json!(i);
            obj.data = serde_json::json!({"spec": spec});
            let theirs = eventually("the probe CRD serving", Duration::from_secs(20), || async {
                match probes.create(&dry, &obj).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s))
                        if s.code == 422 && s.message.contains(&format!("probe {i} is false")) =>
                    {
                        Ok(false)
                    }
                    // A rule that errors (a missing key) is not true either.
                    Err(kube::Error::Api(s)) if s.code == 422 && !s.message.contains("probe ") => {
                        Ok(false)
                    }
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
            assert_eq!(
                ours, theirs,
                "{expr:?} over case {c} ({vars}): kcert {ours}, the API server {theirs}"
            );
            agreed += 1;
            trues += usize::from(ours);
        }
    }
    eprintln!("cel: {agreed} (expression, request) pairs agree with the API server; {trues} true");
    assert!(
        trues > 10 && agreed - trues > 10,
        "the cases do not exercise both outcomes"
    );
}

/// Conditions whose worst case is hours or gigabytes: `.all` nested seven deep over 64 groups
/// (64^7 steps in under 400 bytes), and `.map` four deep building 64^4 strings of 1 KiB (17 GB).
const COSTLY: [&str; 2] = [
    "request.groups.all(a, request.groups.all(b, request.groups.all(c, request.groups.all(d, request.groups.all(e, request.groups.all(f, request.groups.all(g, a == g)))))))",
    "request.groups.map(a, request.groups.map(b, request.groups.map(c, request.groups.map(d, a + b + c + d)))).size() > 0",
];

#[tokio::test]
async fn kcert_refuses_the_conditions_the_api_servers_cost_estimate_refuses() {
    let cluster = TestCluster::shared().await;
    let admin = cluster.admin_client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // Over the same declared sizes, the API server's static estimate refuses each costly rule
    // (its limit per expression is 10 times kcert's per condition) …
    for (i, expr) in COSTLY.iter().enumerate() {
        let refused = crds
            .create(&dry, &probe_crd_named(&format!("costly{i}s"), &[expr]))
            .await
            .expect_err(expr);
        let kube::Error::Api(status) = refused else {
            panic!("{expr}: {refused}")
        };
        assert!(
            status.code == 422 && status.message.contains("cost"),
            "{expr}: {}",
            status.message
        );
        // … and kcert does not compile it.
        let program = cel::Program::compile(expr).unwrap();
        let cost = kcert_policy::cel_budget::estimate(&program).unwrap();
        assert!(
            cost > kcert_policy::cel_budget::MAX_CONDITION_COST,
            "{expr}: {cost}"
        );
    }
    // What kcert accepts, the API server accepts.
    crds.create(&dry, &probe_crd_named("accepted", &DOCUMENTED))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_costly_condition_is_refused_and_the_controller_keeps_deciding() {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    use kcert_controller::PolicySource;
    use kcert_controller::crd::{ApprovalPolicy, ApprovalPolicySpec};
    use kcert_tests::{RunningController, allow_everyone_to_request, csr_object, issued, wait_for};
    let cluster = TestCluster::shared().await;
    allow_everyone_to_request(cluster).await;
    kcert_tests::install_crds(cluster).await;
    let admin_client = cluster.admin_client().await.unwrap();
    let signer = format!("kcert.dev/{}", cluster.unique_name("costly"));
    let policies: Api<ApprovalPolicy> = Api::all(admin_client.clone());
    let good = cluster.unique_name("cel-good");
    let costly = cluster.unique_name("cel-costly");
    let spec = |rules: String| serde_yaml::from_str::<ApprovalPolicySpec>(&rules).unwrap();
    policies
        .create(
            &PostParams::default(),
            &ApprovalPolicy::new(
                &good,
                spec(format!(
                    "rules: [{{id: developers, signerNames: ['{signer}'], requesters: {{groups: [developers]}}, groups: {{allowed: [dev]}}, conditions: [{:?}]}}]",
                    DOCUMENTED[3]
                )),
            ),
        )
        .await
        .unwrap();
    policies
        .create(
            &PostParams::default(),
            &ApprovalPolicy::new(
                &costly,
                spec(format!(
                    "rules: [{{id: hang, signerNames: ['{signer}'], requesters: {{groups: [ops]}}, groups: {{allowed: ['*']}}, conditions: [{:?}]}}, {{id: fill, signerNames: ['{signer}'], requesters: {{groups: [ops]}}, groups: {{allowed: ['*']}}, conditions: [{:?}]}}]",
                    COSTLY[0], COSTLY[1]
                )),
            ),
        )
        .await
        .unwrap();
    let _controller = RunningController::start(
        cluster,
        admin_client.clone(),
        &signer,
        PolicySource::Crd,
        Duration::from_secs(3600),
    );
    let status = eventually(
        "the costly policy's status",
        Duration::from_secs(20),
        || async { policies.get(&costly).await.unwrap().status.ok_or(()) },
    )
    .await;
    assert!(!status.accepted, "{status:?}");
    assert!(
        status.message.contains("rule 'hang'") && status.message.contains("conditions[0]"),
        "{}",
        status.message
    );
    // The controller still decides at once, by a rule with a condition, for a requester of 64
    // groups (with dev, developers and system:authenticated), the most conditions are evaluated
    // over.
    let admin: Api<CertificateSigningRequest> = Api::all(admin_client);
    let many: Vec<String> = (0..61).map(|i| format!("dev{i}")).collect();
    let mut groups: Vec<&str> = many.iter().map(String::as_str).collect();
    groups.extend(["dev", "developers"]);
    let jane: Api<CertificateSigningRequest> =
        Api::all(cluster.user_client("jane", &groups).await.unwrap());
    let name = cluster.unique_name("cel-dev");
    jane.create(
        &PostParams::default(),
        &csr_object(&name, &signer, "jane", &["dev"], None),
    )
    .await
    .unwrap();
    wait_for(&admin, &name, Duration::from_secs(20), "issued", issued).await;
    // Those the refused rules were for are not approved by them.
    let ops: Api<CertificateSigningRequest> =
        Api::all(cluster.user_client("olga", &["ops"]).await.unwrap());
    let name = cluster.unique_name("cel-ops");
    ops.create(
        &PostParams::default(),
        &csr_object(&name, &signer, "olga", &["ops"], None),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let csr = admin.get(&name).await.unwrap();
    assert!(
        !kcert_tests::conditions(&csr)
            .iter()
            .any(|c| c.0 == "Approved"),
        "{:?}",
        kcert_tests::conditions(&csr)
    );
    for n in [good, costly] {
        let _ = policies.delete(&n, &Default::default()).await;
    }
}
