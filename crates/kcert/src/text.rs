//! Text for terminals: what users supplied (CNs, groups, messages quoting them) is printed with
//! every control, format and separator character escaped, so an escape sequence or a
//! right-to-left override in a CSR cannot repaint or reorder what an admin reads before
//! approving it.

/// `value` with every unprintable character (controls, including newline and ESC; format
/// characters such as U+202E; line/paragraph separators) shown as `\u{..}`.
pub fn safe(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if kcert_policy::is_unprintable(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A whole text report, line structure kept: unprintable characters other than newline are
/// escaped (a last guard behind [`safe`] on each user-supplied field).
pub fn safe_lines(text: &str) -> String {
    text.split('\n').map(safe).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_repaint_a_terminal() {
        assert_eq!(safe("jane"), "jane");
        assert_eq!(safe("a\u{1b}[2Kb"), "a\\u{1b}[2Kb");
        assert_eq!(safe("x\ny"), "x\\u{a}y");
        assert_eq!(safe("evil\u{202e}txt"), "evil\\u{202e}txt");
        assert_eq!(safe("jos\u{e9}"), "jos\u{e9}");
        assert_eq!(safe_lines("a\u{9b}b\nc"), "a\\u{9b}b\nc");
    }
}
