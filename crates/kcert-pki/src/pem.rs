//! PEM armour: splitting files with several blocks, and picking the one needed.

use crate::{PkiError, Result};
use zeroize::Zeroizing;

/// One PEM block: its label and the DER inside. The DER is wiped on drop because it may be a key.
pub struct PemBlock {
    /// The label between `BEGIN` and the dashes, e.g. `CERTIFICATE REQUEST`.
    pub label: String,
    /// The decoded contents.
    pub der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PemBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemBlock")
            .field("label", &self.label)
            .field("len", &self.der.len())
            .finish()
    }
}

/// Every PEM block in `input`, in order. Text around blocks is ignored, as openssl does.
pub fn parse_blocks(input: &[u8]) -> Result<Vec<PemBlock>> {
    let text =
        std::str::from_utf8(input).map_err(|_| PkiError::BadPem("input is not text".into()))?;
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let label_end = after
            .find("-----")
            .ok_or_else(|| PkiError::BadPem("unterminated BEGIN line".into()))?;
        let label = &after[..label_end];
        let end_marker = format!("-----END {label}-----");
        let end = rest[start..]
            .find(&end_marker)
            .ok_or_else(|| PkiError::BadPem(format!("no '{end_marker}' line")))?;
        let block = &rest[start..start + end + end_marker.len()];
        let (found, der) = pem_rfc7468::decode_vec(block.as_bytes())
            .map_err(|e| PkiError::BadPem(format!("block '{label}': {e}")))?;
        blocks.push(PemBlock {
            label: found.to_string(),
            der: Zeroizing::new(der),
        });
        rest = &rest[start + end + end_marker.len()..];
    }
    Ok(blocks)
}

/// The single block labelled `label` in `input`; `expected` names it in errors.
pub fn single_block(input: &[u8], label: &'static str) -> Result<PemBlock> {
    let blocks = parse_blocks(input)?;
    let count = blocks.iter().filter(|b| b.label == label).count();
    match count {
        1 => Ok(blocks
            .into_iter()
            .find(|b| b.label == label)
            .expect("counted one")),
        0 => match blocks.into_iter().next() {
            Some(other) => Err(PkiError::WrongPemType {
                found: other.label,
                expected: label,
            }),
            None => Err(PkiError::NotPem { expected: label }),
        },
        count => Err(PkiError::SeveralPemBlocks {
            label: label.to_string(),
            count,
        }),
    }
}

/// PEM-encode `der` under `label` with LF line endings.
pub fn encode(label: &'static str, der: &[u8]) -> String {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der)
        .expect("PEM encoding of in-memory bytes cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_blocks_among_text_and_rejects_wrong_or_repeated() {
        let one = encode("CERTIFICATE", b"abc");
        let two = format!("hello\n{one}between\n{}", encode("EC PARAMETERS", b"x"));
        let blocks = parse_blocks(two.as_bytes()).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "CERTIFICATE");
        assert_eq!(&blocks[0].der[..], b"abc");
        assert!(matches!(
            single_block(one.as_bytes(), "CERTIFICATE REQUEST"),
            Err(PkiError::WrongPemType { .. })
        ));
        assert!(matches!(
            single_block(format!("{one}{one}").as_bytes(), "CERTIFICATE"),
            Err(PkiError::SeveralPemBlocks { count: 2, .. })
        ));
        assert!(matches!(
            single_block(b"not pem", "CERTIFICATE"),
            Err(PkiError::NotPem { .. })
        ));
        let truncated = &one[..one.len() - 10];
        assert!(matches!(
            single_block(truncated.as_bytes(), "CERTIFICATE"),
            Err(PkiError::BadPem(_))
        ));
    }
}
