//! The regular expression of deploy/admission.yaml's guard, derived here and checked for drift.
//!
//! The API server hands a ValidatingAdmissionPolicy `spec.request` as the base64 of the PEM
//! text, and CEL cannot decode base64. So the guard looks for the bytes `system:` through two
//! layers of base64: the DER inside the PEM (three alignments), possibly broken by one line
//! break (`\n` or `\r\n`) of the PEM, then the PEM text inside the JSON base64 (three alignments).

use base64::Engine as _;

const NEEDLE: &[u8] = b"system:";

/// The base64 characters fully determined by `needle` when it sits at offset `align` (mod 3).
fn aligned(needle: &[u8], align: usize) -> String {
    let encode = |fill: u8, tail: u8| {
        let mut data = vec![fill; align];
        data.extend_from_slice(needle);
        data.extend_from_slice(&[tail, tail]);
        base64::engine::general_purpose::STANDARD.encode(data)
    };
    let variants = [
        encode(0, 0),
        encode(0xff, 0xff),
        encode(0, 0xff),
        encode(0xff, 0),
    ];
    let first = variants[0].as_bytes();
    let n = variants.iter().map(|v| v.len()).min().unwrap_or(0);
    let agree: Vec<bool> = (0..n)
        .map(|i| variants.iter().all(|v| v.as_bytes()[i] == first[i]))
        .collect();
    let start = agree.iter().position(|a| *a).unwrap_or(0);
    let end = agree[start..]
        .iter()
        .position(|a| !*a)
        .map_or(n, |p| start + p);
    String::from_utf8(first[start..end].to_vec()).expect("base64 is ASCII")
}

/// Every form `system:` takes in the JSON base64 of a PEM CSR, as one alternation.
pub fn system_names_regex() -> String {
    let mut outer = std::collections::BTreeSet::new();
    for inner_align in 0..3 {
        let inner = aligned(NEEDLE, inner_align);
        let mut pem_forms = vec![inner.clone()];
        for cut in 1..inner.len() {
            for brk in ["\n", "\r\n"] {
                pem_forms.push(format!("{}{brk}{}", &inner[..cut], &inner[cut..]));
            }
        }
        for form in pem_forms {
            for outer_align in 0..3 {
                outer.insert(aligned(form.as_bytes(), outer_align));
            }
        }
    }
    // '+' is a regex operator; a class keeps it literal without a CEL escape sequence.
    outer
        .into_iter()
        .map(|p| p.replace('+', "[+]"))
        .collect::<Vec<_>>()
        .join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_regex_finds_system_names_in_any_csr_and_deploy_uses_it() {
        let re = regex_lite(&system_names_regex());
        let key = kcert_pki::PrivateKey::generate(kcert_pki::KeyType::EcdsaP256).unwrap();
        // Names of every length move "system:" across alignments and line breaks.
        for pad in 0..80 {
            let user = format!("u{}", "x".repeat(pad));
            for groups in [vec!["dev", "system:masters"], vec!["system:nodes"]] {
                let subject = kcert_pki::CsrSubject::new(user.as_str(), groups.clone()).unwrap();
                let pem = kcert_pki::build_csr(&key, &subject, &Default::default()).unwrap();
                let json_b64 =
                    base64::engine::general_purpose::STANDARD.encode(pem.replace('\n', "\r\n"));
                assert!(
                    re.iter().any(|p| json_b64.contains(p.as_str())),
                    "missed {user} {groups:?}"
                );
                let json_b64 = base64::engine::general_purpose::STANDARD.encode(&pem);
                assert!(
                    re.iter().any(|p| json_b64.contains(p.as_str())),
                    "missed {user} {groups:?}"
                );
            }
            let clean = kcert_pki::CsrSubject::new(user.as_str(), ["dev", "ops"]).unwrap();
            let pem = kcert_pki::build_csr(&key, &clean, &Default::default()).unwrap();
            let json_b64 = base64::engine::general_purpose::STANDARD.encode(&pem);
            assert!(
                !re.iter().any(|p| json_b64.contains(p.as_str())),
                "false positive for {user}"
            );
        }
        let yaml = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/admission.yaml"
        ))
        .unwrap();
        assert!(
            yaml.contains(&format!("matches('{}')", system_names_regex())),
            "deploy/admission.yaml is out of date: its matches() must hold kcert_controller::admission::system_names_regex()"
        );
    }

    fn regex_lite(alternation: &str) -> Vec<String> {
        alternation
            .split('|')
            .map(|p| p.replace("[+]", "+"))
            .collect()
    }
}
