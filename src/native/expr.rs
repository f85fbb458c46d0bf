//! CEL building blocks: each function returns the text of a CEL expression built from the
//! texts of its operands. CEL has no functions of its own making and no `let`, so a value
//! used several times is bound with [`bind`], and a rule used in several places is one of
//! these functions, written out where it is used.
//!
//! Every function here does what the engine's counterpart does, in the API server's CEL
//! (Kubernetes' quantity library, the `strings` and `lists` extensions).

/// The largest byte count the engine accepts (`i64::MAX`, as Kubernetes stores it).
const MAX_BYTES: &str = "9223372036854775807";

/// 2^53: up to here a float holds every whole number, so a fractional quantity is rounded
/// up exactly from its approximate float. Above it the native engine treats a fractional
/// memory quantity as out of range (a difference the README lists).
const EXACT_FRACTIONS: &str = "9007199254740992";

/// `body` with `name` bound to `value`, evaluated once.
pub(super) fn bind(value: &str, name: &str, body: &str) -> String {
    format!("[{value}].map({name}, {body})[0]")
}

/// A CEL string literal of `text` (single-quoted; `text` holds no quote or backslash).
pub(super) fn lit(text: &str) -> String {
    debug_assert!(!text.contains(['\'', '\\']), "{text}");
    format!("'{text}'")
}

/// Why the engine would not use the quantity `s` (a non-empty string expression), as its
/// `QuantityError` says it, or `''`. Quantities reach admission as the API server parsed
/// them, so only its range is in question: negative, or more bytes than an `int64` holds.
pub(super) fn quantity_error(s: &str) -> String {
    bind(
        &format!("quantity({s})"),
        "q",
        &format!(
            "sign(q) < 0 ? 'quantity \"' + {s} + '\" is negative'\n\
             : q.compareTo(quantity('{MAX_BYTES}')) > 0\n  \
               || (!q.isInteger() && q.compareTo(quantity('{EXACT_FRACTIONS}')) > 0)\n\
             ? 'quantity \"' + {s} + '\" is out of range' : ''"
        ),
    )
}

/// The quantity `s` as whole bytes, rounded up as the kubelet does; `s` is in range.
/// A fractional value is rounded up from its float, checked against the exact quantity.
pub(super) fn bytes(s: &str) -> String {
    bind(
        &format!("quantity({s})"),
        "q",
        "q.isInteger() ? q.asInteger() : [int(q.asApproximateFloat())].map(t,\n  \
         [t - 1, t, t + 1, t + 2].filter(k, quantity(string(k)).compareTo(q) >= 0)[0])[0]",
    )
}

/// Whether the quantity `s` is exactly zero.
pub(super) fn is_zero(s: &str) -> String {
    format!("sign(quantity({s})) == 0")
}

/// -1, 0 or 1 as the quantity `a` is below, equal to or above `b`, by exact value.
pub(super) fn compare(a: &str, b: &str) -> String {
    format!("quantity({a}).compareTo(quantity({b}))")
}

/// `floor(bytes × percent / 100)` without overflow: `bytes = 100a + b`.
pub(super) fn percent_of(bytes: &str, percent: &str) -> String {
    bind(
        bytes,
        "b",
        &format!("(b / 100) * {percent} + (b % 100) * {percent} / 100"),
    )
}

/// `s` quoted as Rust's `{:?}` quotes a string: in double quotes, with `\`, `"`, tab,
/// newline, carriage return and NUL escaped, and every other ASCII control character as
/// `\u{..}`. (Rust also escapes invisible non-ASCII characters; CEL leaves them, a
/// difference the README lists.)
pub(super) fn quote(s: &str) -> String {
    let mut out = format!("{s}.replace('\\\\', '\\\\\\\\').replace('\"', '\\\\\"')");
    for (c, escaped) in [('t', "\\\\t"), ('n', "\\\\n"), ('r', "\\\\r")] {
        out.push_str(&format!(".replace('\\{c}', '{escaped}')"));
    }
    out.push_str(".replace('\\x00', '\\\\0')");
    for code in (1u8..0x20).chain([0x7f]) {
        if matches!(code, b'\t' | b'\n' | b'\r') {
            continue;
        }
        out.push_str(&format!(".replace('\\x{code:02x}', '\\\\u{{{code:x}}}')"));
    }
    format!("'\"' + {out} + '\"'")
}

/// `s` cut to `max` characters with a trailing `...`, as `text::shorten` cuts warnings.
/// Also right for byte limits where the text is ASCII.
pub(super) fn shorten(s: &str, max: usize) -> String {
    let keep = max - 3;
    bind(
        s,
        "w",
        &format!("size(w) > {max} ? w.substring(0, {keep}) + '...' : w"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_a_value_once() {
        assert_eq!(bind("1 + 2", "x", "x * x"), "[1 + 2].map(x, x * x)[0]");
    }

    #[test]
    fn quotes_like_rust_debug() {
        let q = quote("v");
        assert!(q.starts_with("'\"' + v.replace('\\\\', '\\\\\\\\')"), "{q}");
        assert!(q.contains(".replace('\\x1b', '\\\\u{1b}')"), "{q}");
        assert!(q.contains(".replace('\\x7f', '\\\\u{7f}')"), "{q}");
        assert!(!q.contains("'\\x09'"), "tab has its own escape: {q}");
    }
}
