//! Quoting of text bound for a terminal. Names come from the backed-up
//! trees and from stores, which other users write: a file named
//! `\x1b[2K\r\x1b[32mcompleted without warnings` printed raw erases the line
//! and prints a fake message (issue #12, finding 10). Every message the CLI
//! prints, and every log line, goes through [`quote`]; like `ls` and restic,
//! control characters are shown as escapes and the rest is kept as is.
//! JSON output is not quoted: serde escapes control characters already.

use std::borrow::Cow;
use std::fmt::Write;

/// True for the characters that must not reach a terminal raw: C0 controls
/// (but not a tab), DEL, and C1 controls (U+0080..U+009F, which some
/// terminals take as CSI and friends).
fn is_control(c: char) -> bool {
    c.is_control() && c != '\t'
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\x1b' => out.push_str("\\e"),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `s` with every control character escaped (`\e`, `\n`, `\r`, `\xNN`),
/// and backslashes kept as they are; borrowed when there is nothing to do
/// (the usual case).
pub fn quote(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_control(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A name of raw bytes (a file name, a source path) for a message: valid
/// UTF-8 is kept, control characters escaped as by [`quote`], and bytes
/// that are not UTF-8 shown as `\xNN` (not as U+FFFD, which would hide
/// which name it was).
pub fn quote_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(&quote(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls_and_keeps_the_rest() {
        let evil = "a\x1b[2K\r\x1b[32mcompleted without warnings\n\x07\u{9b}31m\x7f";
        let q = quote(evil);
        assert_eq!(
            q,
            "a\\e[2K\\r\\e[32mcompleted without warnings\\n\\x07\\x9b31m\\x7f"
        );
        assert!(!q.chars().any(|c| c.is_control()));
        assert!(matches!(quote("plain näme\twith tab"), Cow::Borrowed(_)));
        assert_eq!(quote("back\\slash"), "back\\slash");
    }

    #[test]
    fn errors_display_quoted() {
        let e = crate::error::Error::io("read /src/a\x1b[31mred", std::io::Error::other("b\rc"));
        let shown = e.to_string();
        assert!(
            !shown.contains('\x1b') && !shown.contains('\r'),
            "{shown:?}"
        );
        assert!(
            shown.contains("a\\e[31mred") && shown.contains("b\\rc"),
            "{shown}"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex() {
        assert_eq!(quote_bytes(b"bad\xffbyte\x1b"), "bad\\xffbyte\\e");
        assert_eq!(quote_bytes("é".as_bytes()), "é");
    }
}
