//! How `serde_json` escapes a byte inside a JSON string: the one table the webhook's own
//! JSON writers (the patch's status annotation, the JSON log line) escape by.

/// The longest escape of one byte: `\u001f`.
pub(crate) const LONGEST_ESCAPE: usize = 6;

/// The escape of one byte.
pub(crate) enum Escape {
    /// `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`.
    Short(&'static str),
    /// `\u00XX`, in lowercase hex.
    Unicode([u8; LONGEST_ESCAPE]),
}

impl Escape {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Escape::Short(text) => text.as_bytes(),
            Escape::Unicode(bytes) => bytes,
        }
    }
}

/// How `serde_json` writes `byte` inside a JSON string: `None` for a byte written as it is
/// (from U+0020 on, the quote and the backslash aside, and every byte of a character beyond
/// ASCII).
#[inline]
pub(crate) fn escape(byte: u8) -> Option<Escape> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    Some(match byte {
        b'"' => Escape::Short("\\\""),
        b'\\' => Escape::Short("\\\\"),
        0x20.. => return None,
        b'\n' => Escape::Short("\\n"),
        b'\r' => Escape::Short("\\r"),
        b'\t' => Escape::Short("\\t"),
        0x08 => Escape::Short("\\b"),
        0x0c => Escape::Short("\\f"),
        _ => Escape::Unicode([
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_each_byte_as_serde_json_does() {
        for byte in 0..=0x7f_u8 {
            let mut ours = b"\"".to_vec();
            match escape(byte) {
                Some(escape) => {
                    assert!(escape.as_bytes().len() <= LONGEST_ESCAPE);
                    ours.extend_from_slice(escape.as_bytes());
                }
                None => ours.push(byte),
            }
            ours.push(b'"');
            let text = char::from(byte).to_string();
            assert_eq!(ours, serde_json::to_vec(&text).unwrap(), "byte {byte:#04x}");
        }
        // The bytes of a character beyond ASCII are written as they are.
        assert!((0x80..=0xff_u8).all(|byte| escape(byte).is_none()));
    }
}
