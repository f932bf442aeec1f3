//! Why a ledger page holds its records as JSON strings: the API server's CPU per record for
//! the same 200-record pages written three ways — records as schema-validated fields (the
//! IssuedCertificate schema), as one string each (what kcert writes), and as fields the schema
//! does not describe (`x-kubernetes-preserve-unknown-fields`).

use crate::process::CpuMeter;
use anyhow::Result;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kcert_testbed::TestCluster;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use std::time::Duration;

const GROUP: &str = "bench.kcert.dev";
const PAGES: usize = 40;
const PER_PAGE: usize = 200;

fn crd(
    plural: &str,
    kind: &str,
    spec_schema: serde_json::Value,
) -> Result<CustomResourceDefinition> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{GROUP}")},
        "spec": {"group": GROUP, "scope": "Cluster",
            "names": {"plural": plural, "kind": kind, "singular": kind.to_lowercase()},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec_schema}}}}]}
    }))?)
}

/// One line per encoding: API server and etcd CPU per record (median of two rounds).
pub async fn run() -> Result<Vec<String>> {
    let cluster = TestCluster::start().await?;
    let client = cluster.admin_client().await?;
    // The record's schema as kube's CRD derive generates one (what the ledger used before).
    let structured = serde_json::to_value(
        schemars::generate::SchemaSettings::openapi3()
            .with(|s| {
                s.inline_subschemas = true;
                s.meta_schema = None;
            })
            .with_transform(schemars::transform::AddNullable::default())
            .with_transform(kube::core::schema::StructuralSchemaRewriter)
            .into_generator()
            .into_root_schema_for::<kcert_kube::crd::IssuedCertificate>(),
    )?;
    let encodings = [
        (
            "structuredpages",
            "StructuredPage",
            serde_json::json!({"type": "object", "properties": {"certificates": {"type": "array", "items": structured}}}),
        ),
        (
            "stringpages",
            "StringPage",
            serde_json::json!({"type": "object", "properties": {"records": {"type": "array", "items": {"type": "string"}}}}),
        ),
        (
            "loosepages",
            "LoosePage",
            serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        ),
    ];
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (plural, kind, schema) in &encodings {
        crds.patch(
            &format!("{plural}.{GROUP}"),
            &PatchParams::apply("kcert-bench").force(),
            &Patch::Apply(&crd(plural, kind, schema.clone())?),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let records: Vec<kcert_kube::crd::IssuedCertificate> = (0..PER_PAGE)
        .map(|i| crate::ledger_scale::record(i, i % 10 == 0))
        .collect();
    let (apiserver, etcd) = cluster.pids();
    let mut per_record: Vec<(String, Vec<(f64, f64)>)> = encodings
        .iter()
        .map(|(p, ..)| (p.to_string(), Vec::new()))
        .collect();
    for round in 0..2 {
        for (i, (plural, kind, _)) in encodings.iter().enumerate() {
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(GROUP, "v1", kind),
                plural,
            );
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let spec = match *plural {
                "stringpages" => {
                    serde_json::json!({"records": records.iter().map(|r| serde_json::to_string(r).expect("serializes")).collect::<Vec<_>>()})
                }
                _ => serde_json::json!({"certificates": records}),
            };
            let meter = CpuMeter::start(&[("apiserver", apiserver), ("etcd", etcd)]);
            for p in 0..PAGES {
                let obj: DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": format!("{GROUP}/v1"), "kind": kind,
                    "metadata": {"name": format!("r{round}-{p}")}, "spec": spec}))?;
                api.create(&PostParams::default(), &obj).await?;
            }
            let cpu = meter.stop();
            let n = (PAGES * PER_PAGE) as f64;
            per_record[i]
                .1
                .push((cpu[0].1 * 1000.0 / n, cpu[1].1 * 1000.0 / n));
        }
    }
    cluster.stop();
    let label = |p: &str| match p {
        "structuredpages" => "records as schema-validated fields",
        "stringpages" => "records as JSON strings (kcert's LedgerPage)",
        _ => "records as unvalidated fields (preserve-unknown-fields)",
    };
    Ok(per_record
        .iter()
        .map(|(p, runs)| {
            let api = crate::stats::Spread::of(&runs.iter().map(|r| r.0).collect::<Vec<_>>());
            let etcd = crate::stats::Spread::of(&runs.iter().map(|r| r.1).collect::<Vec<_>>());
            format!(
                "ledger page encoding: {} — API server {} ms CPU per record, etcd {}",
                label(p),
                api.show(3),
                etcd.show(3)
            )
        })
        .collect())
}
