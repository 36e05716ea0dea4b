//! JSON output written by hand: the one escaping rule every JSON line uses.

use std::fmt::Write as _;

/// Appends `s` to `out` as a JSON string literal (quotes, backslashes and
/// control characters escaped).
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
