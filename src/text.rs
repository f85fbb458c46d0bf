//! Bounding text that a user reads: warnings, audit annotations, log fields taken from a
//! request.

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

#[cfg(test)]
mod tests {
    use super::*;

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
