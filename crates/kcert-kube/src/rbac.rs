//! Which groups and users RBAC makes privileged, from Roles, ClusterRoles and their bindings
//! (the k8s-openapi objects turned into kcert-policy's facts). The controller keeps this current
//! from watches; the CLI lists once.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kcert_policy::{BindingFacts, PrivilegedSubjects, RbacRule, RoleFacts};
use kube::{Api, Client, ResourceExt};

fn rules(rules: &Option<Vec<PolicyRule>>) -> Vec<RbacRule> {
    rules
        .iter()
        .flatten()
        .map(|r| RbacRule {
            verbs: r.verbs.clone(),
            api_groups: r.api_groups.clone().unwrap_or_default(),
            resources: r.resources.clone().unwrap_or_default(),
            non_resource_urls: r.non_resource_urls.clone().unwrap_or_default(),
        })
        .collect()
}

fn role(namespace: Option<String>, name: String, r: &Option<Vec<PolicyRule>>) -> RoleFacts {
    RoleFacts {
        namespace,
        name,
        rules: rules(r),
    }
}

fn binding(
    namespace: Option<String>,
    name: String,
    role_ref: &RoleRef,
    subjects: &Option<Vec<Subject>>,
) -> BindingFacts {
    let of_kind = |kind: &str| {
        subjects
            .iter()
            .flatten()
            .filter(|s| s.kind == kind)
            .map(|s| s.name.clone())
            .collect()
    };
    // A ServiceAccount subject of a RoleBinding may leave out its namespace: the binding's.
    let service_accounts = subjects
        .iter()
        .flatten()
        .filter(|s| s.kind == "ServiceAccount")
        .filter_map(|s| {
            let ns = s.namespace.clone().or_else(|| namespace.clone())?;
            Some((ns, s.name.clone()))
        })
        .collect();
    BindingFacts {
        role_kind: role_ref.kind.clone(),
        role_name: role_ref.name.clone(),
        groups: of_kind("Group"),
        users: of_kind("User"),
        service_accounts,
        namespace,
        name,
    }
}

/// The privileged subjects given every role and binding of the cluster.
pub fn privileged_subjects<'a>(
    cluster_roles: impl IntoIterator<Item = &'a ClusterRole>,
    roles: impl IntoIterator<Item = &'a Role>,
    cluster_bindings: impl IntoIterator<Item = &'a ClusterRoleBinding>,
    bindings: impl IntoIterator<Item = &'a RoleBinding>,
) -> PrivilegedSubjects {
    let mut role_facts: Vec<RoleFacts> = cluster_roles
        .into_iter()
        .map(|r| role(None, r.name_any(), &r.rules))
        .collect();
    role_facts.extend(
        roles
            .into_iter()
            .map(|r| role(r.namespace(), r.name_any(), &r.rules)),
    );
    let mut binding_facts: Vec<BindingFacts> = cluster_bindings
        .into_iter()
        .map(|b| binding(None, b.name_any(), &b.role_ref, &b.subjects))
        .collect();
    binding_facts.extend(
        bindings
            .into_iter()
            .map(|b| binding(b.namespace(), b.name_any(), &b.role_ref, &b.subjects)),
    );
    PrivilegedSubjects::from_rbac(&role_facts, &binding_facts)
}

/// The privileged subjects from one list of each kind (the CLI's dry runs: the same evaluation
/// as the controller's, with the same bindings).
pub async fn list_privileged(client: &Client) -> Result<PrivilegedSubjects, kube::Error> {
    let lp = kube::api::ListParams::default();
    let cr = Api::<ClusterRole>::all(client.clone())
        .list(&lp)
        .await?
        .items;
    let r = Api::<Role>::all(client.clone()).list(&lp).await?.items;
    let crb = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&lp)
        .await?
        .items;
    let rb = Api::<RoleBinding>::all(client.clone())
        .list(&lp)
        .await?
        .items;
    Ok(privileged_subjects(&cr, &r, &crb, &rb))
}
