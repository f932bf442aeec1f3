//! Subjects RBAC makes as powerful as `system:masters`: a certificate naming them is protected
//! like a built-in group. Built from Roles, ClusterRoles and their bindings (the controller
//! watches them; the CLI lists them), pure and testable without a cluster.

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

/// Why a role makes its holders privileged, or `None`.
pub fn dangerous_role(role: &RoleFacts) -> Option<String> {
    if role.namespace.is_none() && role.name == "cluster-admin" {
        return Some("is cluster-admin".into());
    }
    role.rules.iter().find_map(dangerous_rule)
}

/// Groups and users bound to a privileged role, each with the binding that makes it so.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrivilegedSubjects {
    groups: BTreeMap<String, String>,
    users: BTreeMap<String, String>,
}

impl PrivilegedSubjects {
    /// No subject is privileged (offline evaluation; tests).
    pub fn none() -> Self {
        Self::default()
    }

    /// From every role and binding in the cluster.
    pub fn from_rbac(roles: &[RoleFacts], bindings: &[BindingFacts]) -> Self {
        let mut why_role: BTreeMap<(Option<&str>, &str), String> = BTreeMap::new();
        for r in roles {
            if let Some(why) = dangerous_role(r) {
                why_role.insert((r.namespace.as_deref(), r.name.as_str()), why);
            }
        }
        // cluster-admin is privileged even before its object is seen.
        why_role
            .entry((None, "cluster-admin"))
            .or_insert_with(|| "is cluster-admin".into());
        let mut out = PrivilegedSubjects::default();
        for b in bindings {
            let key = match b.role_kind.as_str() {
                "ClusterRole" => (None, b.role_name.as_str()),
                "Role" => match &b.namespace {
                    Some(ns) => (Some(ns.as_str()), b.role_name.as_str()),
                    None => continue,
                },
                _ => continue,
            };
            let Some(why) = why_role.get(&key) else {
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
            }
            for u in &b.users {
                out.users.entry(u.clone()).or_insert_with(|| note.clone());
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
        ];
        let bind =
            |ns: Option<&str>, name: &str, kind: &str, role: &str, g: &str, u: &str| BindingFacts {
                namespace: ns.map(String::from),
                name: name.into(),
                role_kind: kind.into(),
                role_name: role.into(),
                groups: vec![g.into()],
                users: vec![u.into()],
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
        assert!(
            p.group("team-leads")
                .unwrap()
                .contains("RoleBinding team/imp")
        );
        assert_eq!(p.group("dev"), None);
        assert_eq!(p.user("jane"), None);
        assert_eq!(p.group("others"), None);
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
