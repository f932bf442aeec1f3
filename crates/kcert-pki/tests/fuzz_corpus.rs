//! The CSR fuzz target's corpus and every input that once crashed it, replayed on stable as a
//! smoke test (the fuzzer itself runs with `cargo +nightly fuzz run csr_parse`, see docs/security.md).

use std::path::Path;

fn exercise(data: &[u8]) {
    kcert_pki::fuzz_untrusted_bytes(data);
}

#[test]
fn the_csr_corpus_and_regressions_replay_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for dir in ["corpus/csr_parse", "regressions/csr_parse"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            exercise(&data);
            // Every prefix too: truncation is the commonest corruption.
            for cut in (0..data.len()).step_by(7) {
                exercise(&data[..cut]);
            }
            n += 1;
        }
    }
    assert!(n >= 3, "the seed corpus is missing ({n} files)");
}
