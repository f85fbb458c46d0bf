//! Bounding text that a user reads: warnings, audit annotations, log fields taken from a
//! request.

use std::fmt;

/// Kubernetes asks for warnings of at most 120 characters.
pub(crate) const MAX_WARNING_LEN: usize = 120;

/// How long a text may be, and in what unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// Characters, as a person reads them (warnings).
    Chars(usize),
    /// Bytes, as a size is counted (annotation values).
    Bytes(usize),
}

/// The limit of an admission warning.
pub(crate) const WARNING: Limit = Limit::Chars(MAX_WARNING_LEN);

const ELLIPSIS: &str = "...";

/// Cuts `text` on a character boundary so that, with a trailing `...`, it fits `limit`;
/// text that fits already is returned as it is.
pub(crate) fn shorten(mut text: String, limit: Limit) -> String {
    let (max, fits) = match limit {
        Limit::Chars(max) => (max, text.chars().count() <= max),
        Limit::Bytes(max) => (max, text.len() <= max),
    };
    if fits {
        return text;
    }
    let keep = max.saturating_sub(ELLIPSIS.len());
    // The longest prefix of at most `keep` units that ends on a character boundary.
    let cut = text
        .char_indices()
        .enumerate()
        .take_while(|&(chars, (bytes, _))| match limit {
            Limit::Chars(_) => chars <= keep,
            Limit::Bytes(_) => bytes <= keep,
        })
        .last()
        .map_or(0, |(_, (bytes, _))| bytes);
    text.truncate(cut);
    text.push_str(ELLIPSIS);
    text
}

/// How many characters of a value taken from a request a log line shows.
pub(crate) const LOG_VALUE_CHARS: usize = 256;

/// A value taken from a request (a pod name, a namespace, a uid, a reason quoting the
/// client), fit for a log line: characters that could end the line, colour or reorder
/// the terminal, or fake a field (controls, ANSI escapes, line and paragraph separators,
/// bidirectional overrides, whitespace, `=`, `"`, `\`) are written as `\u{..}` escapes,
/// and the value is cut after [`LOG_VALUE_CHARS`] characters with its length in bytes.
/// Names Kubernetes accepts never need an escape, so they read as sent.
pub(crate) struct LogValue<'a>(pub(crate) &'a str);

impl fmt::Display for LogValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let bytes = text.as_bytes();
        // Characters that need no escape are written a run at a time; an ASCII character is
        // judged by its byte.
        let mut run = 0;
        let mut at = 0;
        let mut chars = 0;
        while let Some(&byte) = bytes.get(at) {
            if chars == LOG_VALUE_CHARS {
                f.write_str(&text[run..at])?;
                return write!(f, "...({} bytes)", text.len());
            }
            chars += 1;
            let (c, escape) = if byte.is_ascii() {
                let escape = byte <= b' ' || matches!(byte, 0x7f | b'=' | b'"' | b'\\');
                (char::from(byte), escape)
            } else {
                // `at` is on a character boundary: it only ever moves by whole characters.
                let c = text[at..].chars().next().unwrap_or_default();
                (c, needs_escape(c))
            };
            if escape {
                f.write_str(&text[run..at])?;
                write!(f, "\\u{{{:x}}}", u32::from(c))?;
                run = at + c.len_utf8();
            }
            at += c.len_utf8();
        }
        f.write_str(&text[run..])
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '=' | '"' | '\\'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_values_cannot_forge_lines_or_fields() {
        let forged = "web-\n2026-11-27T10:00:00Z INFO review outcome=mutated \x1b[31mx\u{2028}";
        let shown = LogValue(forged).to_string();
        assert_eq!(
            shown,
            "web-\\u{a}2026-11-27T10:00:00Z\\u{20}INFO\\u{20}review\\u{20}outcome\\u{3d}mutated\\u{20}\\u{1b}[31mx\\u{2028}"
        );
        assert!(!shown.chars().any(|c| c.is_control() || c.is_whitespace()));
        assert_eq!(LogValue("sales-api-7d4b9").to_string(), "sales-api-7d4b9");
    }

    /// Character by character, as the escaping is defined.
    fn reference(text: &str) -> String {
        let mut out = String::new();
        for (i, c) in text.chars().enumerate() {
            if i == LOG_VALUE_CHARS {
                return format!("{out}...({} bytes)", text.len());
            }
            if needs_escape(c) {
                out += &format!("\\u{{{:x}}}", u32::from(c));
            } else {
                out.push(c);
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn log_values_escape_any_text_as_defined(
            text in "([ -~]|[\\x00-\\x20\\x7f]|[\\u{80}-\\u{3000}]|\\u{feff}|\\u{200b}|\\u{2028}){0,300}"
        ) {
            proptest::prop_assert_eq!(LogValue(&text).to_string(), reference(&text));
        }
    }

    #[test]
    fn log_values_escape_each_character_and_keep_the_others() {
        for text in [
            String::new(),
            "é=日本\"".to_owned(),
            "\n".repeat(300),
            format!("{}=tail", "é".repeat(LOG_VALUE_CHARS - 1)),
            format!("{}é", "a".repeat(LOG_VALUE_CHARS)),
        ] {
            assert_eq!(LogValue(&text).to_string(), reference(&text), "{text:?}");
        }
    }

    #[test]
    fn log_values_are_bounded() {
        let huge = "u".repeat(8 << 20);
        let shown = LogValue(&huge).to_string();
        assert_eq!(shown, format!("{}...({} bytes)", "u".repeat(256), 8 << 20));
    }

    #[test]
    fn text_within_the_limit_is_kept() {
        assert_eq!(shorten("abc".into(), Limit::Chars(3)), "abc");
        assert_eq!(shorten("abc".into(), Limit::Bytes(3)), "abc");
    }

    #[test]
    fn counts_characters_for_warnings() {
        let cut = shorten("é".repeat(200), WARNING);
        assert_eq!(cut.chars().count(), MAX_WARNING_LEN);
        assert!(cut.ends_with("é..."));
    }

    #[test]
    fn counts_bytes_for_sizes_and_never_splits_a_character() {
        // 10 bytes leave 7 for the text: "a" and three "é" of two bytes each.
        let cut = shorten(format!("a{}", "é".repeat(10)), Limit::Bytes(10));
        assert_eq!(cut, "aééé...");
        assert!(cut.len() <= 10);
    }
}
