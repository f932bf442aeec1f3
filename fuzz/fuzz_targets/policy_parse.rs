//! Policies from untrusted YAML: parse, compile, and decide a few fixed requests. No panics, and
//! a protected group is never approved whatever the policy says.
#![no_main]
use kcert_policy::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(spec) = serde_yaml::from_str::<PolicySpec>(text) else { return };
    let Ok(policy) = Policy::compile("fuzz", &spec) else { return };
    for (user, groups) in [("jane", vec!["dev"]), ("jane", vec!["dev", "system:masters"]), ("system:admin", vec![])] {
        let facts = CsrFacts {
            signer_name: "kcert.dev/client".into(),
            requester: Requester {
                username: "jane".into(),
                groups: vec!["developers".into(), "system:authenticated".into()],
                ..Default::default()
            },
            common_names: vec![user.into()],
            organizations: groups.iter().map(|g| g.to_string()).collect(),
            sans: SanFacts::default(),
            usages: DEFAULT_USAGES.iter().map(|u| u.to_string()).collect(),
            expiration_seconds: Some(3600),
            key: KeyKind::EcdsaP256,
            ..Default::default()
        };
        let d = decide(&facts, &policy);
        if groups.contains(&"system:masters") || user.starts_with("system:") {
            assert_ne!(d.outcome, Outcome::Approve);
        }
    }
});
