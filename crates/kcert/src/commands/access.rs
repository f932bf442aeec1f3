//! `kcert grant`, `whoami`, `can-i`, `kubeconfig --service-account`: the seeds' "grant access"
//! and "test the access" steps, and kubeconfigs for pipelines.

use super::request::api_message;
use super::{Exit, report};
use crate::cli::{CanIArgs, GrantArgs, KubeconfigArgs, OutputFormat};
use crate::files::{Mode, write_all};
use crate::kubeconfig::{self, Credentials};
use crate::target::Target;
use anyhow::{Result, anyhow};
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

fn binding_name(kind: &str, who: &str, role: &str) -> String {
    let clean = |s: &str| -> String {
        s.to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!("kcert-{kind}-{}-{}", clean(who), clean(role))
}

pub async fn grant(args: &GrantArgs, out: OutputFormat, target: &Target) -> Result<()> {
    let (client, _) = target.connect().await?;
    let (kind, who) = match (&args.user, &args.group) {
        (Some(u), _) => ("User", u.clone()),
        (None, Some(g)) => ("Group", g.clone()),
        _ => unreachable!("clap requires --user or --group"),
    };
    let (role_kind, role) = match (&args.role, &args.clusterrole) {
        (Some(r), _) => ("Role", r.clone()),
        (None, Some(r)) => ("ClusterRole", r.clone()),
        _ => unreachable!("clap requires --role or --clusterrole"),
    };
    let name = binding_name(&kind.to_lowercase(), &who, &role);
    let subjects = Some(vec![Subject {
        kind: kind.into(),
        name: who.clone(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        ..Default::default()
    }]);
    let role_ref = RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: role_kind.into(),
        name: role.clone(),
    };
    let meta = super::request::managed(&name);
    let created = match &args.namespace {
        Some(ns) => {
            let b = RoleBinding {
                metadata: meta,
                role_ref,
                subjects,
            };
            Api::<RoleBinding>::namespaced(client, ns)
                .create(&PostParams::default(), &b)
                .await
                .map(|_| ())
        }
        None => {
            let b = ClusterRoleBinding {
                metadata: meta,
                role_ref,
                subjects,
            };
            Api::<ClusterRoleBinding>::all(client)
                .create(&PostParams::default(), &b)
                .await
                .map(|_| ())
        }
    };
    let result = match created {
        Ok(()) => "created",
        Err(kube::Error::Api(s)) if s.code == 409 => "already exists",
        Err(e) => return Err(anyhow!("creating binding {name}: {}", api_message(&e))),
    };
    let binding_kind = if args.namespace.is_some() {
        "RoleBinding"
    } else {
        "ClusterRoleBinding"
    };
    report(
        out,
        serde_json::json!({"binding": name, "kind": binding_kind, "namespace": args.namespace, "subject": {"kind": kind, "name": who}, "roleRef": {"kind": role_kind, "name": role}, "result": result}),
        || {
            format!(
                "{binding_kind} {}{name} {result}: {kind} {who} -> {role_kind} {role}",
                args.namespace
                    .as_ref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default()
            )
        },
    );
    Ok(())
}

pub async fn whoami(out: OutputFormat, target: &Target) -> Result<()> {
    let (client, _) = target.connect().await?;
    let review = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| anyhow!("SelfSubjectReview: {}", api_message(&e)))?;
    let info = review.status.and_then(|s| s.user_info).unwrap_or_default();
    let user = info.username.unwrap_or_default();
    let groups = info.groups.unwrap_or_default();
    report(
        out,
        serde_json::json!({"username": user, "groups": groups, "uid": info.uid}),
        || format!("user {user}\ngroups {}", groups.join(", ")),
    );
    Ok(())
}

pub async fn can_i(args: &CanIArgs, out: OutputFormat, target: &Target) -> Result<()> {
    let status = ask(args, target).await?;
    report(
        out,
        serde_json::json!({"allowed": status.allowed, "denied": status.denied, "reason": status.reason}),
        || {
            if status.allowed {
                "yes".into()
            } else {
                "no".into()
            }
        },
    );
    if status.allowed {
        Ok(())
    } else {
        Err(Exit {
            code: crate::exit::ERROR,
            message: format!(
                "not allowed to {} {}{}",
                args.verb,
                args.resource,
                args.namespace
                    .as_ref()
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default()
            ),
            condition: None,
        }
        .into())
    }
}

/// The API server's answer to "may I?".
pub async fn ask(
    args: &CanIArgs,
    target: &Target,
) -> Result<k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus> {
    let (client, _) = target.connect().await?;
    // "pods/log" -> resource pods, subresource log; "deployments.apps" -> group apps.
    let (resource, subresource) = match args.resource.split_once('/') {
        Some((r, s)) => (r.to_string(), Some(s.to_string())),
        None => (args.resource.clone(), None),
    };
    let (resource, group) = match resource.split_once('.') {
        Some((r, g)) => (r.to_string(), Some(g.to_string())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(args.verb.clone()),
                resource: Some(resource),
                subresource,
                group,
                namespace: args.namespace.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client)
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| anyhow!("SelfSubjectAccessReview: {}", api_message(&e)))?;
    Ok(answer.status.unwrap_or_default())
}

pub async fn kubeconfig(args: &KubeconfigArgs, out: OutputFormat, target: &Target) -> Result<()> {
    let (client, cluster) = target.connect().await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client, &args.namespace);
    if args.create {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(args.service_account.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match accounts.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(anyhow!("creating ServiceAccount: {}", api_message(&e))),
        }
    }
    if !args.force && args.out.exists() {
        return Err(anyhow!(
            "{}: already exists; pass --force to replace it",
            args.out.display()
        ));
    }
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(args.duration.as_secs() as i64),
            ..Default::default()
        }),
        ..Default::default()
    };
    let issued = accounts
        .create_token_request(&args.service_account, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            anyhow!(
                "TokenRequest for {}/{}: {}",
                args.namespace,
                args.service_account,
                api_message(&e)
            )
        })?;
    let status = issued
        .status
        .ok_or_else(|| anyhow!("the TokenRequest returned no token"))?;
    let token = status
        .token
        .ok_or_else(|| anyhow!("the TokenRequest returned no token"))?;
    let user = format!(
        "system:serviceaccount:{}:{}",
        args.namespace, args.service_account
    );
    let config = kubeconfig::render(
        &cluster,
        &user,
        &Credentials::Token(&token),
        Some(&args.namespace),
    );
    write_all(
        vec![(args.out.clone(), config.into_bytes(), Mode::Private)],
        args.force,
    )?;
    let expires = status.expiration_timestamp.map(|t| t.0.to_string());
    report(
        out,
        serde_json::json!({"kubeconfig": args.out, "user": user, "expires": expires}),
        || {
            format!(
                "wrote {} for {user} (token expires {})",
                args.out.display(),
                expires.clone().unwrap_or_default()
            )
        },
    );
    Ok(())
}
