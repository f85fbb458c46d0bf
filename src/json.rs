//! A reader of JSON text for serde, strict and quick: what the usual pod CREATE is read with
//! in one pass ([`crate::admission`] into the engine's views).
//!
//! It accepts only text that reading into a `serde_json::Value` accepts too, and gives each
//! value it hands over the meaning that reading gives it. What it is not sure of, it does not
//! accept: a number that is not an integer of 64 bits (where a float would have to be
//! rounded as `serde_json` rounds it), a `\u` escape of half a surrogate pair, nesting deeper
//! than [`MAX_DEPTH`]. The caller then reads the text as a document, which answers it.
//!
//! What makes it quicker than `serde_json`'s reader on a review: runs of spaces (indented
//! text) are skipped a word of eight bytes at a time, and a value nobody keeps
//! (`deserialize_ignored_any`) is checked where it lies, without a visitor, a key string or a
//! number being made of it. It is checked all the same: its strings for control characters
//! and escapes, its numbers for their grammar and their range, its nesting for depth.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Objects and arrays nested deeper than this are not read here (`serde_json` allows 127).
pub(crate) const MAX_DEPTH: u32 = 100;

// A skipped value's reader keeps its levels of nesting as bits of a `u128` ([`Nesting`]).
const _: () = assert!(MAX_DEPTH <= 128);

/// Why the text was not read; the document reading says what is wrong with it, if anything.
#[derive(Debug)]
pub(crate) struct Error;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not JSON of the kind this reader takes")
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Error
    }
}

type Result<T> = std::result::Result<T, Error>;

/// Reads one JSON value from a text.
pub(crate) struct Deserializer<'de> {
    text: &'de str,
    /// The next byte to read.
    at: usize,
    depth: u32,
}

/// A string as read: borrowed from the text unless it has an escape.
enum Text<'de> {
    Borrowed(&'de str),
    Owned(String),
}

/// An integer, as `serde_json` hands it to a visitor.
enum Integer {
    U64(u64),
    I64(i64),
}

/// The objects and arrays a skipped value's reader is inside of: whether each is an object,
/// a bit per level, the innermost in the lowest bit.
#[derive(Default)]
struct Nesting {
    objects: u128,
    levels: u32,
}

impl Nesting {
    fn open(&mut self, object: bool) {
        self.objects = self.objects << 1 | u128::from(object);
        self.levels += 1;
    }

    /// Whether the innermost is an object; `None` outside of any.
    fn innermost(&self) -> Option<bool> {
        (self.levels > 0).then_some(self.objects & 1 == 1)
    }

    fn close(&mut self) {
        self.objects >>= 1;
        self.levels -= 1;
    }
}

impl<'de> Deserializer<'de> {
    pub(crate) fn new(text: &'de str) -> Self {
        Deserializer {
            text,
            at: 0,
            depth: 0,
        }
    }

    /// Succeeds when only whitespace follows the value.
    pub(crate) fn end(&mut self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Error),
        }
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        let mut at = self.at;
        while let Some(&byte) = bytes.get(at) {
            match byte {
                b' ' | b'\n' | b'\r' | b'\t' => {
                    at += 1;
                    // Indentation: the spaces that follow, a word at a time.
                    while let Some(chunk) = bytes.get(at..at + 8) {
                        let mut word = [0u8; 8];
                        word.copy_from_slice(chunk);
                        let others = u64::from_le_bytes(word) ^ u64::from_le_bytes([b' '; 8]);
                        if others != 0 {
                            at += others.trailing_zeros() as usize / 8;
                            break;
                        }
                        at += 8;
                    }
                }
                _ => {
                    self.at = at;
                    return Some(byte);
                }
            }
        }
        self.at = at;
        None
    }

    /// Consumes `byte` as the next byte that is not whitespace.
    #[inline]
    fn expect(&mut self, byte: u8) -> Result<()> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(Error)
        }
    }

    /// Consumes `word` (`true`, `false`, `null`) at the next byte.
    fn word(&mut self, word: &[u8]) -> Result<()> {
        if self.text.as_bytes()[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(Error)
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error);
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Reads the string whose opening quote is the next byte.
    #[inline(always)]
    fn string(&mut self) -> Result<Text<'de>> {
        let bytes = self.text.as_bytes();
        let start = self.at + 1;
        let end = plain_run(bytes, start);
        match bytes.get(end) {
            Some(b'"') => {
                self.at = end + 1;
                // Both ends are at ASCII bytes, so on character boundaries.
                Ok(Text::Borrowed(&self.text[start..end]))
            }
            Some(b'\\') => {
                let mut owned = self.text[start..end].to_owned();
                self.at = end;
                self.rest_of_string(Some(&mut owned))?;
                Ok(Text::Owned(owned))
            }
            _ => Err(Error),
        }
    }

    /// Hands the string whose opening quote is the next byte to `visitor`: borrowed from the
    /// text unless it has an escape.
    #[inline(always)]
    fn string_to<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        match self.string()? {
            Text::Borrowed(text) => visitor.visit_borrowed_str(text),
            Text::Owned(text) => visitor.visit_string(text),
        }
    }

    /// Checks the string whose opening quote is the next byte, and consumes it.
    #[inline]
    fn skip_string(&mut self) -> Result<()> {
        let bytes = self.text.as_bytes();
        let end = plain_run(bytes, self.at + 1);
        self.at = end;
        match bytes.get(end) {
            Some(b'"') => {
                self.at += 1;
                Ok(())
            }
            Some(b'\\') => self.rest_of_string(None),
            _ => Err(Error),
        }
    }

    /// Reads on from an escape (the next byte is a backslash) to the closing quote, adding
    /// what the string says to `out` when there is one.
    fn rest_of_string(&mut self, mut out: Option<&mut String>) -> Result<()> {
        let bytes = self.text.as_bytes();
        let mut at = self.at;
        loop {
            match bytes.get(at) {
                Some(b'"') => {
                    self.at = at + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    let (ch, len) = escape(bytes, at)?;
                    if let Some(out) = out.as_deref_mut() {
                        out.push(ch);
                    }
                    at += len;
                }
                // A control character, or the end of the text.
                _ => return Err(Error),
            }
            let end = plain_run(bytes, at);
            if let Some(out) = out.as_deref_mut() {
                out.push_str(&self.text[at..end]);
            }
            at = end;
        }
    }

    /// Checks the grammar of the number at the next byte and consumes it; returns whether it
    /// is negative, its integer digits, and whether it has a fraction or an exponent.
    fn number(&mut self) -> Result<(bool, &'de str, bool)> {
        let bytes = self.text.as_bytes();
        let mut at = self.at;
        let negative = bytes.get(at) == Some(&b'-');
        if negative {
            at += 1;
        }
        let start = at;
        match bytes.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => at = digits(bytes, at),
            _ => return Err(Error),
        }
        let integer = &self.text[start..at];
        let mut exponent: i64 = 0;
        let mut real = false;
        if bytes.get(at) == Some(&b'.') {
            real = true;
            let end = digits(bytes, at + 1);
            if end == at + 1 {
                return Err(Error);
            }
            at = end;
        }
        if let Some(b'e' | b'E') = bytes.get(at) {
            real = true;
            (exponent, at) = self::exponent(bytes, at + 1)?;
        }
        // Far from the range of an f64 either way, where rounding cannot make the difference
        // between a finite number and an error.
        let magnitude = i64::try_from(integer.len()).map_err(|_| Error)?;
        if magnitude.saturating_add(exponent) > 300 || exponent < -300 {
            return Err(Error);
        }
        self.at = at;
        Ok((negative, integer, real))
    }

    /// Reads the number at the next byte: only an integer of 64 bits, as `serde_json` reads
    /// it (`-0` is a float there, so it is not read here).
    fn integer(&mut self) -> Result<Integer> {
        let (negative, digits, real) = self.number()?;
        if real {
            return Err(Error);
        }
        let value: u64 = digits.parse().map_err(|_| Error)?;
        match (negative, value) {
            (false, value) => Ok(Integer::U64(value)),
            (true, 0) => Err(Error),
            (true, value) => 0i64
                .checked_sub_unsigned(value)
                .map(Integer::I64)
                .ok_or(Error),
        }
    }

    /// Checks the value at the next byte and consumes it: one loop over its tokens, with
    /// the objects and arrays it is inside of kept as bits, not as calls.
    fn skip_value(&mut self) -> Result<()> {
        let mut nesting = Nesting::default();
        loop {
            if self.skip_or_open(&mut nesting)? {
                continue;
            }
            if !self.close_or_go_on(&mut nesting)? {
                return Ok(());
            }
        }
    }

    /// At a value: consumes it when it is a scalar or an empty object or array (`false`);
    /// otherwise opens the object or array, up to the value of its first item (`true`).
    #[inline(always)]
    fn skip_or_open(&mut self, nesting: &mut Nesting) -> Result<bool> {
        match self.peek().ok_or(Error)? {
            b'"' => self.skip_string()?,
            open @ (b'{' | b'[') => {
                if self.depth + nesting.levels >= MAX_DEPTH {
                    return Err(Error);
                }
                self.at += 1;
                let object = open == b'{';
                if self.peek() == Some(if object { b'}' } else { b']' }) {
                    self.at += 1;
                    return Ok(false);
                }
                nesting.open(object);
                if object {
                    self.skip_key()?;
                }
                return Ok(true);
            }
            b't' => self.word(b"true")?,
            b'f' => self.word(b"false")?,
            b'n' => self.word(b"null")?,
            b'-' | b'0'..=b'9' => {
                self.number()?;
            }
            _ => return Err(Error),
        }
        Ok(false)
    }

    /// After a value: consumes the ends of the objects and arrays it closes, then, when one
    /// of them goes on, the comma and (in an object) the key before its next value (`true`).
    /// `false` when the outermost value has ended.
    #[inline(always)]
    fn close_or_go_on(&mut self, nesting: &mut Nesting) -> Result<bool> {
        while let Some(object) = nesting.innermost() {
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    if object {
                        self.skip_key()?;
                    }
                    return Ok(true);
                }
                Some(b'}') if object => {}
                Some(b']') if !object => {}
                _ => return Err(Error),
            }
            self.at += 1;
            nesting.close();
        }
        Ok(false)
    }

    /// Checks the key of an object's entry at the next byte, and the colon after it, and
    /// consumes them.
    #[inline(always)]
    fn skip_key(&mut self) -> Result<()> {
        if self.peek() != Some(b'"') {
            return Err(Error);
        }
        self.skip_string()?;
        self.expect(b':')
    }

    /// Moves to the next item of the object or array being read, which `close` ends: `false`
    /// at its end (not consumed), `true` at an item, past the comma that separates it from
    /// the one before. A comma before `close` (a trailing comma) is refused.
    #[inline]
    fn next_item(&mut self, first: &mut bool, close: u8) -> Result<bool> {
        match self.peek() {
            Some(byte) if byte == close => return Ok(false),
            Some(b',') if !*first => {
                self.at += 1;
                if self.peek() == Some(close) {
                    return Err(Error);
                }
            }
            Some(_) if *first => {}
            _ => return Err(Error),
        }
        *first = false;
        Ok(true)
    }

    /// Hands the object or array whose opening bracket is the next byte, up to `close`, to
    /// `visit` as its items, and consumes its end.
    fn items<T>(
        &mut self,
        close: u8,
        visit: impl FnOnce(Items<'_, 'de>) -> Result<T>,
    ) -> Result<T> {
        self.enter()?;
        self.at += 1;
        let value = visit(Items {
            de: self,
            first: true,
        })?;
        self.expect(close)?;
        self.leave();
        Ok(value)
    }
}

/// The index of the first byte from `at` on that is a quote, a backslash or a control
/// character (or the end): eight bytes at a time, as `serde_json` does.
#[inline(always)]
fn plain_run(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let chars = u64::from_le_bytes(word);
        let control = chars.wrapping_sub(ONES * 0x20);
        let quote = (chars ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
        let backslash = (chars ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
        // `!chars` stands for `!quote` and `!backslash` too: XOR with an ASCII byte keeps each
        // byte's high bit, the only one kept. The lowest byte flagged is the first match.
        let found = (control | quote | backslash) & !chars & (ONES << 7);
        if found != 0 {
            return at + found.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    while let Some(&byte) = bytes.get(at) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            break;
        }
        at += 1;
    }
    at
}

/// The exponent whose sign or first digit is at `at` (saturating), and the index after it.
fn exponent(bytes: &[u8], mut at: usize) -> Result<(i64, usize)> {
    let negative = match bytes.get(at) {
        Some(b'-') => {
            at += 1;
            true
        }
        Some(b'+') => {
            at += 1;
            false
        }
        _ => false,
    };
    let end = digits(bytes, at);
    if end == at {
        return Err(Error);
    }
    let value = bytes[at..end].iter().fold(0i64, |value, &digit| {
        value
            .saturating_mul(10)
            .saturating_add(i64::from(digit - b'0'))
    });
    Ok((if negative { -value } else { value }, end))
}

/// The index after the ASCII digits from `at` on.
fn digits(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    at
}

/// The character of the escape at `at` (a backslash), and its length in bytes. A surrogate
/// is taken only as the two halves of a pair, in order.
fn escape(bytes: &[u8], at: usize) -> Result<(char, usize)> {
    let ch = match bytes.get(at + 1).ok_or(Error)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let high = hex4(bytes, at + 2)?;
            return match high {
                0xD800..=0xDBFF => {
                    if bytes.get(at + 6..at + 8) != Some(b"\\u") {
                        return Err(Error);
                    }
                    let low = hex4(bytes, at + 8)?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return Err(Error);
                    }
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    Ok((char::from_u32(code).ok_or(Error)?, 12))
                }
                0xDC00..=0xDFFF => Err(Error),
                _ => Ok((char::from_u32(high).ok_or(Error)?, 6)),
            };
        }
        _ => return Err(Error),
    };
    Ok((ch, 2))
}

/// Four hexadecimal digits at `at`.
fn hex4(bytes: &[u8], at: usize) -> Result<u32> {
    let digits = bytes.get(at..at + 4).ok_or(Error)?;
    digits.iter().try_fold(0u32, |value, &digit| {
        let nibble = char::from(digit).to_digit(16).ok_or(Error)?;
        Ok(value << 4 | nibble)
    })
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek().ok_or(Error)? {
            b'"' => self.string_to(visitor),
            b'{' => self.items(b'}', |items| visitor.visit_map(items)),
            b'[' => self.items(b']', |items| visitor.visit_seq(items)),
            b't' => {
                self.word(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.word(b"false")?;
                visitor.visit_bool(false)
            }
            b'n' => {
                self.word(b"null")?;
                visitor.visit_unit()
            }
            b'-' | b'0'..=b'9' => match self.integer()? {
                Integer::U64(n) => visitor.visit_u64(n),
                Integer::I64(n) => visitor.visit_i64(n),
            },
            _ => Err(Error),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip_value()?;
        visitor.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek() == Some(b'n') {
            self.word(b"null")?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek() {
            Some(b't' | b'f') => self.deserialize_any(visitor),
            _ => Err(Error),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek() {
            Some(b'"') => self.string_to(visitor),
            _ => Err(Error),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek() {
            Some(b'{') => self.items(b'}', |items| visitor.visit_map(items)),
            _ => Err(Error),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek() {
            Some(b'[') => self.items(b']', |items| visitor.visit_seq(items)),
            _ => Err(Error),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek() != Some(b'n') {
            return Err(Error);
        }
        self.word(b"null")?;
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit_struct
        tuple tuple_struct enum identifier
    }
}

/// The entries of an object or the elements of an array, for a visitor.
struct Items<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    first: bool,
}

impl<'de> MapAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !self.de.next_item(&mut self.first, b'}')? {
            return Ok(None);
        }
        // A key and nothing else.
        if self.de.peek() != Some(b'"') {
            return Err(Error);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        self.de.expect(b':')?;
        seed.deserialize(&mut *self.de)
    }
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.de.next_item(&mut self.first, b']')? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;
    use serde::de::IgnoredAny;
    use serde_json::Value;

    use super::*;

    /// Whether the reader takes `text` as one value, checked and dropped.
    fn skips(text: &str) -> bool {
        let mut de = Deserializer::new(text);
        IgnoredAny::deserialize(&mut de).is_ok() && de.end().is_ok()
    }

    /// The value the reader hands over for `text`, as a document.
    fn read(text: &str) -> Option<Value> {
        let mut de = Deserializer::new(text);
        let value = Value::deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(value)
    }

    fn document(text: &str) -> Option<Value> {
        serde_json::from_str(text).ok()
    }

    /// What the reader takes, a document takes too, with the same meaning.
    fn assert_no_more_than_a_document(text: &str) {
        let document = document(text);
        if skips(text) {
            assert!(
                document.is_some(),
                "taken here, refused as a document: {text:?}"
            );
        }
        if let Some(value) = read(text) {
            assert_eq!(Some(value), document, "read differently: {text:?}");
        }
    }

    #[test]
    fn reads_what_a_document_reads_with_the_same_meaning() {
        for text in [
            r#"{"a":[1,-2,18446744073709551615,-9223372036854775808,0],"b":{"c":null}}"#,
            "  {\n        \"indented\" :\t[ true , false ]\r\n}  ",
            r#""plain""#,
            r#""esc\"aped\\ \/ \b\f\n\r\t \u0041\u00e9\u20ac \ud83d\ude00 \u0000""#,
            r#""ünïcödé 日本""#,
            "[]",
            "{}",
            "[[[[]]]]",
            r#"{"a":{"b":[{},[],{"c":[null,{"d":"e"},-1]}]},"f":[],"g":{}}"#,
            r#"[{"a":[]},[{}],{"b":{"c":[[],{}]}}]"#,
        ] {
            assert!(skips(text), "not taken: {text:?}");
            assert_eq!(read(text), document(text), "{text:?}");
            assert!(read(text).is_some(), "not read: {text:?}");
        }
    }

    #[test]
    fn refuses_what_a_document_refuses() {
        for text in [
            "",
            " ",
            "{",
            r#"{"a":1,}"#,
            "[1,]",
            "[,1]",
            r#"{"a" 1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{1:2}"#,
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[-]",
            "[+1]",
            "[1e400]",
            "[-1e400]",
            &format!("[1{}]", "0".repeat(400)),
            "[tru]",
            "[nul]",
            "[NaN]",
            "\"\u{1}\"",
            "\"tab\tinside\"",
            r#""\x""#,
            r#""\u12""#,
            r#""\uZZZZ""#,
            r#""\ud800""#,
            r#""\ud800\u0041""#,
            r#""\udc00\ud800""#,
            r#""unterminated"#,
            "{} {}",
            "[1] x",
            "\u{feff}{}",
        ] {
            assert_refused(text);
        }
    }

    #[test]
    fn refuses_the_same_mistakes_inside_objects_and_arrays() {
        for text in [
            r#"[{"a":[1,]}]"#,
            r#"{"a":{"b":1,}}"#,
            r#"[[1],[2,]]"#,
            r#"[[1],[,2]]"#,
            r#"{"a":{"b" 1}}"#,
            r#"{"a":{"b":1 "c":2}}"#,
            r#"{"a":{1:2}}"#,
            r#"{"a":[{"b":1}}]"#,
            r#"[{"b":1]}"#,
            r#"[{]}"#,
            r#"{"a":{}"#,
            r#"[[[]]"#,
            r#"{"a":1}}"#,
            r#"{"a":[],}"#,
            r#"{"a":{},"#,
            "[{\"a\":\"\u{1}\"}]",
            r#"[{"a":"\x"}]"#,
        ] {
            assert_refused(text);
        }
    }

    /// Refused here, and as a document.
    fn assert_refused(text: &str) {
        assert!(!skips(text), "taken: {text:?}");
        assert!(read(text).is_none(), "read: {text:?}");
        assert!(
            document(text).is_none(),
            "the fixture is wrong: {text:?} is a document"
        );
    }

    #[test]
    fn leaves_to_the_document_what_it_is_not_sure_of() {
        // Floats, -0 and integers beyond 64 bits are a document's to round; so is deep nesting.
        for text in [
            "[1.5]",
            "[1e3]",
            "[-0]",
            "[18446744073709551616]",
            "[-9223372036854775809]",
        ] {
            assert!(read(text).is_none(), "read: {text:?}");
            assert!(document(text).is_some(), "{text:?}");
        }
        // Skipped, numbers of any grammar within range are checked and taken.
        for text in [
            "[1.5]",
            "[1e3]",
            "[-0]",
            "[1E+2]",
            "[2.5e-300]",
            "[18446744073709551616]",
        ] {
            assert!(skips(text), "not taken: {text:?}");
        }
        let depth = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(skips(&depth(MAX_DEPTH as usize)));
        assert!(!skips(&depth(MAX_DEPTH as usize + 1)));
        assert!(read(&depth(MAX_DEPTH as usize + 1)).is_none());
        assert!(document(&depth(MAX_DEPTH as usize + 1)).is_some());
    }

    /// JSON values of every kind but floats, nested.
    fn values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[ -~\u{80}-\u{10ffff}\\\\\"\n\t]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\\\\\"é]{0,6}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn reads_every_document_as_it_is(value in values(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            prop_assert!(skips(&text), "not taken: {}", text);
            prop_assert_eq!(read(&text), Some(value));
        }

        #[test]
        fn takes_no_text_a_document_refuses(
            text in "[\\[\\]{}\",:0-9eE.+\\- a-z\\\\\n\u{1}é]{0,40}",
        ) {
            assert_no_more_than_a_document(&text);
        }

        #[test]
        fn takes_no_variant_of_a_document_a_document_refuses(
            value in values(),
            at in any::<prop::sample::Index>(),
            with in "[\\[\\]{}\",:0-9eE.+\\- \\\\u]{0,3}",
            cut in 0usize..3,
        ) {
            let text = serde_json::to_string(&value).unwrap();
            let mut at = at.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let end = (at + cut).min(text.len());
            let end = (end..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap();
            let variant = format!("{}{}{}", &text[..at], with, &text[end..]);
            assert_no_more_than_a_document(&variant);
        }
    }
}
