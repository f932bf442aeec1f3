//! Subjects RBAC makes as powerful as `system:masters`: a certificate naming them is protected
//! like a built-in group. Built from Roles, ClusterRoles and their bindings (the controller
//! watches them; the CLI lists them), pure and testable without a cluster.
//!
//! "Privileged" means cluster-strength: able to act as anyone, grant anything, or approve and
//! sign certificates. A grant through a ClusterRoleBinding is cluster-wide. A grant through a
//! RoleBinding holds in its namespace only: `impersonate` there reaches only that namespace's
//! ServiceAccounts (users, groups and signers are cluster-scoped, a RoleBinding never grants
//! them), `*` only its objects. So a RoleBinding makes its subjects privileged only in a
//! namespace whose contents are cluster-strength ([`PrivilegedNamespaces`]): `kube-system`
//! (the control plane's ServiceAccounts), `kcert-system` (kcert's CA key), and every namespace
//! holding a ServiceAccount that is itself privileged. There reading Secrets, creating Pods or
//! ServiceAccount tokens counts too: each hands over a privileged ServiceAccount's identity.
//! The built-in `edit` role bound in a team's namespace (it grants `impersonate` on that
//! namespace's ServiceAccounts) therefore protects nobody; bound in `kube-system` it does.

use std::collections::BTreeMap;

/// One rule of a Role or ClusterRole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RbacRule {
    /// `verbs`.
    pub verbs: Vec<String>,
    /// `apiGroups`.
    pub api_groups: Vec<String>,
    /// `resources`.
    pub resources: Vec<String>,
    /// `nonResourceURLs`.
    pub non_resource_urls: Vec<String>,
}

/// A Role (with its namespace) or a ClusterRole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleFacts {
    /// `None` for a ClusterRole.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
    /// Its rules.
    pub rules: Vec<RbacRule>,
}

/// A RoleBinding (with its namespace) or a ClusterRoleBinding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindingFacts {
    /// `None` for a ClusterRoleBinding.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
    /// `roleRef.kind`: `ClusterRole` or `Role`.
    pub role_kind: String,
    /// `roleRef.name`.
    pub role_name: String,
    /// Subjects of kind `Group`.
    pub groups: Vec<String>,
    /// Subjects of kind `User`.
    pub users: Vec<String>,
    /// Subjects of kind `ServiceAccount`, as (namespace, name).
    pub service_accounts: Vec<(String, String)>,
}

impl BindingFacts {
    fn label(&self) -> String {
        match &self.namespace {
            None => format!("ClusterRoleBinding {}", self.name),
            Some(ns) => format!("RoleBinding {ns}/{}", self.name),
        }
    }
}

/// Why a rule makes its holder privileged, or `None`.
pub fn dangerous_rule(rule: &RbacRule) -> Option<String> {
    let has = |list: &[String], v: &str| list.iter().any(|x| x == v);
    if has(&rule.verbs, "*") {
        return Some("grants every verb (*)".into());
    }
    if has(&rule.resources, "*") {
        return Some("grants every resource (*)".into());
    }
    for verb in ["escalate", "bind", "impersonate"] {
        if has(&rule.verbs, verb) {
            return Some(format!("grants {verb}"));
        }
    }
    if has(&rule.resources, "signers") {
        for verb in ["approve", "sign"] {
            if has(&rule.verbs, verb) {
                return Some(format!("grants {verb} on signers"));
            }
        }
    }
    None
}

/// Why a rule bound by a RoleBinding in a privileged namespace makes its holder privileged:
/// [`dangerous_rule`], or a way to a ServiceAccount's identity there.
pub fn dangerous_namespaced_rule(rule: &RbacRule) -> Option<String> {
    if let Some(why) = dangerous_rule(rule) {
        return Some(why);
    }
    let has = |list: &[String], v: &str| list.iter().any(|x| x == v);
    let reads = ["get", "list", "watch"].iter().any(|v| has(&rule.verbs, v));
    if reads && has(&rule.resources, "secrets") {
        return Some("reads Secrets".into());
    }
    if has(&rule.verbs, "create") {
        for resource in [
            "pods",
            "serviceaccounts/token",
            "deployments",
            "daemonsets",
            "jobs",
        ] {
            if has(&rule.resources, resource) {
                return Some(format!("creates {resource}"));
            }
        }
    }
    None
}

/// Why a role makes its holders privileged, or `None` (bound cluster-wide).
pub fn dangerous_role(role: &RoleFacts) -> Option<String> {
    if role.namespace.is_none() && role.name == "cluster-admin" {
        return Some("is cluster-admin".into());
    }
    role.rules.iter().find_map(dangerous_rule)
}

/// Why a role bound by a RoleBinding in a privileged namespace makes its holders privileged.
fn dangerous_namespaced_role(role: &RoleFacts) -> Option<String> {
    if role.namespace.is_none() && role.name == "cluster-admin" {
        return Some("is cluster-admin".into());
    }
    role.rules.iter().find_map(dangerous_namespaced_rule)
}

/// Namespaces where a RoleBinding's grant is cluster-strength.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrivilegedNamespaces {
    /// Each namespace and why.
    pub named: BTreeMap<String, String>,
    /// Every namespace (a privileged binding names `system:serviceaccounts`, every ServiceAccount).
    pub all: Option<String>,
}

/// Namespaces privileged whatever RBAC says: the control plane's, and kcert's (its CA key).
pub const ALWAYS_PRIVILEGED_NAMESPACES: [&str; 2] = ["kube-system", "kcert-system"];

impl PrivilegedNamespaces {
    fn why(&self, ns: &str) -> Option<&str> {
        self.named
            .get(ns)
            .map(String::as_str)
            .or(self.all.as_deref())
    }
}

/// Groups and users bound to a privileged role, each with the binding that makes it so.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrivilegedSubjects {
    groups: BTreeMap<String, String>,
    users: BTreeMap<String, String>,
    namespaces: PrivilegedNamespaces,
}

impl PrivilegedSubjects {
    /// No subject is privileged (offline evaluation; tests).
    pub fn none() -> Self {
        Self::default()
    }

    /// From every role and binding in the cluster. A ServiceAccount a privileged binding names
    /// makes its namespace privileged, which can make more bindings privileged: repeated until
    /// nothing changes.
    pub fn from_rbac(roles: &[RoleFacts], bindings: &[BindingFacts]) -> Self {
        let mut cluster_why: BTreeMap<(Option<&str>, &str), String> = BTreeMap::new();
        let mut namespaced_why: BTreeMap<(Option<&str>, &str), String> = BTreeMap::new();
        for r in roles {
            let key = (r.namespace.as_deref(), r.name.as_str());
            if let Some(why) = dangerous_role(r) {
                cluster_why.insert(key, why);
            }
            if let Some(why) = dangerous_namespaced_role(r) {
                namespaced_why.insert(key, why);
            }
        }
        // cluster-admin is privileged even before its object is seen.
        for m in [&mut cluster_why, &mut namespaced_why] {
            m.entry((None, "cluster-admin"))
                .or_insert_with(|| "is cluster-admin".into());
        }
        let mut namespaces = PrivilegedNamespaces::default();
        for ns in ALWAYS_PRIVILEGED_NAMESPACES {
            namespaces
                .named
                .insert(ns.into(), format!("namespace {ns} is always privileged"));
        }
        loop {
            let out = Self::with_namespaces(&cluster_why, &namespaced_why, bindings, &namespaces);
            if out.namespaces == namespaces {
                return out;
            }
            namespaces = out.namespaces;
        }
    }

    fn with_namespaces(
        cluster_why: &BTreeMap<(Option<&str>, &str), String>,
        namespaced_why: &BTreeMap<(Option<&str>, &str), String>,
        bindings: &[BindingFacts],
        namespaces: &PrivilegedNamespaces,
    ) -> Self {
        let mut out = PrivilegedSubjects {
            namespaces: namespaces.clone(),
            ..Default::default()
        };
        for b in bindings {
            let key = match b.role_kind.as_str() {
                "ClusterRole" => (None, b.role_name.as_str()),
                "Role" => match &b.namespace {
                    Some(ns) => (Some(ns.as_str()), b.role_name.as_str()),
                    None => continue,
                },
                _ => continue,
            };
            let why = match &b.namespace {
                None => cluster_why.get(&key).cloned(),
                Some(ns) => namespaces.why(ns).and_then(|ns_why| {
                    namespaced_why
                        .get(&key)
                        .map(|why| format!("{why}, in a privileged namespace: {ns_why}"))
                }),
            };
            let Some(why) = why else {
                continue;
            };
            let note = format!(
                "{} binds it to {} {} ({why})",
                b.label(),
                b.role_kind,
                b.role_name
            );
            for g in &b.groups {
                out.groups.entry(g.clone()).or_insert_with(|| note.clone());
                if g == "system:serviceaccounts" {
                    out.namespaces.all.get_or_insert_with(|| {
                        format!("every ServiceAccount is privileged: {note}")
                    });
                } else if let Some(ns) = g.strip_prefix("system:serviceaccounts:") {
                    out.namespaces
                        .named
                        .entry(ns.to_string())
                        .or_insert_with(|| format!("its ServiceAccounts are privileged: {note}"));
                }
            }
            for u in &b.users {
                out.users.entry(u.clone()).or_insert_with(|| note.clone());
            }
            for (ns, name) in &b.service_accounts {
                out.namespaces
                    .named
                    .entry(ns.clone())
                    .or_insert_with(|| format!("ServiceAccount {ns}/{name} is privileged: {note}"));
            }
        }
        out
    }

    /// The binding that makes `group` privileged.
    pub fn group(&self, group: &str) -> Option<&str> {
        self.groups.get(group).map(String::as_str)
    }

    /// The binding that makes `user` privileged.
    pub fn user(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }

    /// How many groups and users are privileged.
    pub fn len(&self) -> (usize, usize) {
        (self.groups.len(), self.users.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], resources: &[&str]) -> RbacRule {
        RbacRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: vec!["*".into()],
            resources: resources.iter().map(|s| s.to_string()).collect(),
            non_resource_urls: vec![],
        }
    }

    #[test]
    fn bindings_to_dangerous_roles_make_their_subjects_privileged() {
        let roles = vec![
            RoleFacts {
                name: "pod-reader".into(),
                rules: vec![rule(&["get", "list"], &["pods"])],
                ..Default::default()
            },
            RoleFacts {
                name: "approver".into(),
                rules: vec![rule(&["approve"], &["signers"])],
                ..Default::default()
            },
            RoleFacts {
                namespace: Some("team".into()),
                name: "imp".into(),
                rules: vec![rule(&["impersonate"], &["users"])],
            },
            RoleFacts {
                namespace: Some("kube-system".into()),
                name: "imp".into(),
                rules: vec![rule(&["impersonate"], &["serviceaccounts"])],
            },
        ];
        let bind =
            |ns: Option<&str>, name: &str, kind: &str, role: &str, g: &str, u: &str| BindingFacts {
                namespace: ns.map(String::from),
                name: name.into(),
                role_kind: kind.into(),
                role_name: role.into(),
                groups: vec![g.into()],
                users: vec![u.into()],
                service_accounts: vec![],
            };
        let bindings = vec![
            bind(
                None,
                "admins",
                "ClusterRole",
                "cluster-admin",
                "ops-admins",
                "root",
            ),
            bind(None, "readers", "ClusterRole", "pod-reader", "dev", "jane"),
            bind(
                None,
                "approvers",
                "ClusterRole",
                "approver",
                "csr-approvers",
                "amy",
            ),
            bind(Some("team"), "imp", "Role", "imp", "team-leads", "tim"),
            bind(
                Some("kube-system"),
                "sys-imp",
                "Role",
                "imp",
                "sys-leads",
                "sam",
            ),
            // A Role of the same name in another namespace grants nothing here.
            bind(Some("other"), "imp", "Role", "imp", "others", "olga"),
        ];
        let p = PrivilegedSubjects::from_rbac(&roles, &bindings);
        assert!(
            p.group("ops-admins")
                .unwrap()
                .contains("ClusterRoleBinding admins")
        );
        assert!(p.user("root").unwrap().contains("cluster-admin"));
        assert!(
            p.group("csr-approvers")
                .unwrap()
                .contains("approve on signers")
        );
        // Impersonation granted in a team's namespace reaches only its ServiceAccounts.
        assert_eq!(p.group("team-leads"), None);
        assert_eq!(p.user("tim"), None);
        assert_eq!(p.group("dev"), None);
        assert_eq!(p.user("jane"), None);
        assert_eq!(p.group("others"), None);
        // In kube-system, impersonating its ServiceAccounts is cluster strength.
        assert!(
            p.group("sys-leads")
                .unwrap()
                .contains("RoleBinding kube-system/sys-imp")
        );
        assert_eq!(p.len(), (3, 3));
    }

    #[test]
    fn wildcards_and_escalation_verbs_are_dangerous() {
        assert!(dangerous_rule(&rule(&["*"], &["configmaps"])).is_some());
        assert!(dangerous_rule(&rule(&["get"], &["*"])).is_some());
        assert!(dangerous_rule(&rule(&["bind"], &["clusterroles"])).is_some());
        assert!(dangerous_rule(&rule(&["escalate"], &["roles"])).is_some());
        assert!(dangerous_rule(&rule(&["sign"], &["signers"])).is_some());
        assert!(dangerous_rule(&rule(&["get", "list", "watch"], &["pods", "signers"])).is_none());
    }
}

#[cfg(test)]
mod namespace_tests {
    use super::*;

    fn rule(verbs: &[&str], resources: &[&str]) -> RbacRule {
        RbacRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: vec!["".into()],
            resources: resources.iter().map(|s| s.to_string()).collect(),
            non_resource_urls: vec![],
        }
    }

    /// The built-in `edit` ClusterRole's relevant rules (aggregated from system:aggregate-to-edit).
    fn edit() -> RoleFacts {
        RoleFacts {
            namespace: None,
            name: "edit".into(),
            rules: vec![
                rule(&["impersonate"], &["serviceaccounts"]),
                rule(
                    &["create", "delete", "get", "list", "watch"],
                    &["pods", "secrets"],
                ),
            ],
        }
    }

    fn role_binding(ns: Option<&str>, role: &str, group: &str, user: &str) -> BindingFacts {
        BindingFacts {
            namespace: ns.map(String::from),
            name: format!("{group}-{role}"),
            role_kind: "ClusterRole".into(),
            role_name: role.into(),
            groups: vec![group.into()],
            users: vec![user.into()],
            service_accounts: vec![],
        }
    }

    #[test]
    fn edit_in_a_teams_namespace_is_not_cluster_privilege_but_is_in_kube_system() {
        let roles = [edit()];
        let p = PrivilegedSubjects::from_rbac(
            &roles,
            &[role_binding(Some("team-a"), "edit", "dev", "alice")],
        );
        assert_eq!((p.group("dev"), p.user("alice")), (None, None));
        // Cluster-wide, impersonating every ServiceAccount is cluster strength.
        let p =
            PrivilegedSubjects::from_rbac(&roles, &[role_binding(None, "edit", "dev", "alice")]);
        assert!(p.group("dev").unwrap().contains("grants impersonate"));
        for ns in ALWAYS_PRIVILEGED_NAMESPACES {
            let p = PrivilegedSubjects::from_rbac(
                &roles,
                &[role_binding(Some(ns), "edit", "dev", "alice")],
            );
            let why = p.user("alice").unwrap();
            assert!(
                why.contains(&format!("namespace {ns} is always privileged")),
                "{why}"
            );
        }
        // Reading Secrets alone, where it hands over nothing privileged: nothing.
        let reader = RoleFacts {
            namespace: None,
            name: "secret-reader".into(),
            rules: vec![rule(&["get"], &["secrets"])],
        };
        let p = PrivilegedSubjects::from_rbac(
            std::slice::from_ref(&reader),
            &[role_binding(
                Some("team-a"),
                "secret-reader",
                "dev",
                "alice",
            )],
        );
        assert_eq!(p.group("dev"), None);
        let p = PrivilegedSubjects::from_rbac(
            &[reader],
            &[role_binding(
                Some("kube-system"),
                "secret-reader",
                "dev",
                "alice",
            )],
        );
        assert!(p.group("dev").unwrap().contains("reads Secrets"));
    }

    #[test]
    fn a_namespace_holding_a_privileged_service_account_is_privileged() {
        let roles = [edit()];
        let mut admin_sa = role_binding(None, "cluster-admin", "nobody", "nobody");
        admin_sa.groups.clear();
        admin_sa.users.clear();
        admin_sa.service_accounts = vec![("ci".into(), "deployer".into())];
        let team = role_binding(Some("ci"), "edit", "dev", "alice");
        let p = PrivilegedSubjects::from_rbac(&roles, &[team.clone(), admin_sa.clone()]);
        let why = p.group("dev").unwrap();
        assert!(
            why.contains("ServiceAccount ci/deployer is privileged"),
            "{why}"
        );
        // Through a chain: a RoleBinding in ci makes a ServiceAccount of ops privileged, which
        // makes ops privileged.
        let mut ops_sa = role_binding(Some("ci"), "edit", "x", "x");
        ops_sa.groups.clear();
        ops_sa.users.clear();
        ops_sa.service_accounts = vec![("ops".into(), "bot".into())];
        let ops_team = role_binding(Some("ops"), "edit", "ops-team", "olga");
        let p = PrivilegedSubjects::from_rbac(&roles, &[ops_team, ops_sa, admin_sa]);
        assert!(p.group("ops-team").is_some());
        // Every ServiceAccount privileged: every namespace is.
        let all = role_binding(None, "cluster-admin", "system:serviceaccounts", "x");
        let p = PrivilegedSubjects::from_rbac(&roles, &[team, all]);
        assert!(p.group("dev").unwrap().contains("every ServiceAccount"));
    }
}
