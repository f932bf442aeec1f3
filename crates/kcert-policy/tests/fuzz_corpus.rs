//! The policy fuzz target's corpus and regressions, replayed on stable as a smoke test.

use kcert_policy::*;
use std::path::Path;

#[test]
fn the_policy_corpus_and_regressions_replay_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for dir in ["corpus/policy_parse", "regressions/policy_parse"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
            n += 1;
            let Ok(spec) = serde_yaml::from_str::<PolicySpec>(&text) else {
                continue;
            };
            let Ok(policy) = Policy::compile("corpus", &spec) else {
                continue;
            };
            let facts = CsrFacts {
                signer_name: "kcert.dev/client".into(),
                requester: Requester {
                    username: "jane".into(),
                    groups: vec!["developers".into()],
                    ..Default::default()
                },
                common_names: vec!["jane".into()],
                organizations: vec!["dev".into(), "system:masters".into()],
                sans: SanFacts::default(),
                usages: DEFAULT_USAGES.iter().map(|u| u.to_string()).collect(),
                expiration_seconds: None,
                key: KeyKind::EcdsaP256,
                ..Default::default()
            };
            assert_ne!(decide(&facts, &policy).outcome, Outcome::Approve);
        }
    }
    assert!(n >= 2, "the seed corpus is missing ({n} files)");
}
