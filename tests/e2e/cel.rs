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
pub const DOCUMENTED: [&str; 13] = [
    "size(request.groups) <= 3",
    "request.groups.all(g, g.startsWith('team-'))",
    "request.groups.exists(g, g == 'ops')",
    "request.groups.all(g, g in requester.groups)",
    "request.commonName == requester.user",
    "request.commonName.matches('^[a-z][a-z0-9-]*$')",
    "request.usages.all(u, u in ['digital signature', 'key encipherment', 'client auth'])",
    "request.key.type == 'rsa' ? request.key.bits >= 3072 : true",
    "request.lifetimeSeconds == 0 || request.lifetimeSeconds <= 86400",
    "signerName.endsWith('/client')",
    "has(requester.serviceAccount) && requester.serviceAccount.namespace == 'ci'",
    "'team' in requester.extra && requester.extra['team'].exists(t, 'team-' + t in request.groups)",
    "size(request.commonName) <= 20 && !request.commonName.contains('admin')",
];

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
    let rules: Vec<serde_json::Value> = DOCUMENTED
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"rule": format!("self.probe != {i} || ({})", under_self(e)), "message": format!("probe {i} is false")}))
        .collect();
    let string = serde_json::json!({"type": "string", "maxLength": 256});
    let list = serde_json::json!({"type": "array", "maxItems": 64, "items": string});
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "celprobes.test.kcert.dev"},
        "spec": {
            "group": "test.kcert.dev",
            "scope": "Cluster",
            "names": {"kind": "CelProbe", "plural": "celprobes", "singular": "celprobe"},
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
