//! The edits as JSONPatch operations. Every operation adds or replaces one field the
//! webhook owns, creating the objects that hold it when they are missing, since JSONPatch
//! `add` does not create parents. The operations are typed: each value is one of the few
//! shapes the webhook writes, written straight to the wire as JSON, each as it is made:
//! their fixed parts as the bytes `serde_json` would write for them, the text that comes
//! from the pod escaped by `serde_json`, and the status annotation's JSON escaped into its
//! string as `serde_json` escapes a string.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::io;

use serde::Serialize;

use super::edit::{Edit, GomemlimitEdit};
use super::read::{MetadataShape, Place};
use super::status::Merged;
use super::view::{GOGC, GOMEMLIMIT};
use super::{GomemlimitValue, STATUS, Status};
use crate::json_escape::{LONGEST_ESCAPE, escape};

/// One JSONPatch operation, written as `{"op", "path", "value"}`.
#[derive(Debug, Clone)]
pub(crate) struct Operation<'a> {
    op: &'static str,
    path: Pointer<'a>,
    value: Value<'a>,
}

impl Operation<'_> {
    /// Writes the operation as `serde_json` writes a struct of these fields.
    fn write<W: io::Write>(&self, out: &mut W) -> io::Result<()> {
        // The operation and the pointer's keys are the webhook's own: nothing in them is
        // escaped in a JSON string (the pointers test checks the pointers' text).
        out.write_all(b"{\"op\":\"")?;
        out.write_all(self.op.as_bytes())?;
        out.write_all(b"\",\"path\":\"")?;
        self.path.write(out)?;
        out.write_all(b"\",\"value\":")?;
        self.value.write(out)?;
        out.write_all(b"}")
    }
}

/// The JSON pointer an operation writes at: a place in the pod (or the pod itself), then
/// the tokens below it. Written out as text, never built as a string.
#[derive(Debug, Clone, Copy)]
struct Pointer<'a> {
    place: Option<&'a Place>,
    tokens: [Token; 3],
    len: usize,
}

/// One token of a [`Pointer`].
#[derive(Debug, Clone, Copy)]
enum Token {
    /// A key of the webhook's own: none has a character that a JSON string escapes.
    Key(&'static str),
    Index(usize),
}

impl<'a> Pointer<'a> {
    /// `tokens` below `place`, or below the pod.
    fn new(place: Option<&'a Place>, tail: &[Token]) -> Self {
        let mut tokens = [Token::Key(""); 3];
        tokens[..tail.len()].copy_from_slice(tail);
        Pointer {
            place,
            tokens,
            len: tail.len(),
        }
    }

    /// Writes the pointer's text.
    fn write<W: io::Write>(&self, out: &mut W) -> io::Result<()> {
        match self.place {
            None => {}
            Some(Place::Spec) => out.write_all(b"/spec")?,
            Some(Place::Container { list, index }) => {
                out.write_all(b"/spec/")?;
                out.write_all(list.as_bytes())?;
                out.write_all(b"/")?;
                out.write_all(Decimal::of(*index).as_bytes())?;
            }
        }
        for token in &self.tokens[..self.len] {
            out.write_all(b"/")?;
            match token {
                Token::Index(index) => out.write_all(Decimal::of(*index).as_bytes())?,
                Token::Key(key) => {
                    // RFC 6901: `~` is written `~0` and `/` is written `~1`.
                    let mut rest = key.as_bytes();
                    while let Some(at) = rest.iter().position(|b| matches!(b, b'~' | b'/')) {
                        out.write_all(&rest[..at])?;
                        out.write_all(if rest[at] == b'~' { b"~0" } else { b"~1" })?;
                        rest = &rest[at + 1..];
                    }
                    out.write_all(rest)?;
                }
            }
        }
        Ok(())
    }
}

/// The value an operation writes.
#[derive(Debug, Clone)]
enum Value<'a> {
    /// A quantity or an env value.
    Text(Cow<'a, str>),
    /// The status annotation's text.
    Status(StatusText<'a>),
    /// `resources.limits` or `resources.requests`: the memory quantity.
    Memory(&'a str),
    /// `resources`, with the memory limit or request or both.
    Resources {
        limits: Option<&'a str>,
        requests: Option<&'a str>,
    },
    Env(EnvEntry),
    EnvList(Vec<EnvEntry>),
    /// The `resizePolicy` entry that restarts the container when its memory is resized.
    Resize,
    /// A `resizePolicy` of that entry alone.
    ResizeList,
    /// `annotations` holding only the status annotation.
    Annotations(StatusText<'a>),
    /// `metadata` holding only the status annotation.
    Metadata(StatusText<'a>),
}

/// The `resizePolicy` entry that restarts the container when its memory is resized.
const RESTART_ON_MEMORY_RESIZE: &[u8] =
    br#"{"resourceName":"memory","restartPolicy":"RestartContainer"}"#;

impl Value<'_> {
    /// Writes the value as `serde_json` writes it.
    fn write<W: io::Write>(&self, out: &mut W) -> io::Result<()> {
        match self {
            Value::Text(text) => string(out, text),
            Value::Status(status) => status.write(out),
            Value::Memory(memory) => {
                out.write_all(br#"{"memory":"#)?;
                string(out, memory)?;
                out.write_all(b"}")
            }
            Value::Resources { limits, requests } => {
                out.write_all(b"{")?;
                let mut commas = Commas::default();
                for (key, memory) in [(&b"\"limits\":"[..], limits), (b"\"requests\":", requests)] {
                    let Some(memory) = memory else { continue };
                    commas.before_item(out)?;
                    out.write_all(key)?;
                    Value::Memory(memory).write(out)?;
                }
                out.write_all(b"}")
            }
            Value::Env(entry) => entry.write(out),
            Value::EnvList(entries) => {
                out.write_all(b"[")?;
                let mut commas = Commas::default();
                for entry in entries {
                    commas.before_item(out)?;
                    entry.write(out)?;
                }
                out.write_all(b"]")
            }
            Value::Resize => out.write_all(RESTART_ON_MEMORY_RESIZE),
            Value::ResizeList => {
                out.write_all(b"[")?;
                out.write_all(RESTART_ON_MEMORY_RESIZE)?;
                out.write_all(b"]")
            }
            Value::Annotations(status) => {
                // The annotation's name is the webhook's own, with nothing to escape.
                out.write_all(b"{\"")?;
                out.write_all(STATUS.as_bytes())?;
                out.write_all(b"\":")?;
                status.write(out)?;
                out.write_all(b"}")
            }
            Value::Metadata(status) => {
                out.write_all(br#"{"annotations":"#)?;
                Value::Annotations(*status).write(out)?;
                out.write_all(b"}")
            }
        }
    }
}

/// The commas between the items of a JSON array or object: none before the first.
#[derive(Debug, Default)]
struct Commas {
    started: bool,
}

impl Commas {
    /// Writes the comma that goes before the next item, if it is not the first.
    fn before_item<W: io::Write>(&mut self, out: &mut W) -> io::Result<()> {
        if std::mem::replace(&mut self.started, true) {
            out.write_all(b",")?;
        }
        Ok(())
    }
}

/// Writes `value` as a JSON string, escaped as `serde_json` escapes it.
fn string<W: io::Write, T: Serialize + ?Sized>(out: &mut W, value: &T) -> io::Result<()> {
    serde_json::to_writer(out, value).map_err(io::Error::from)
}

/// An `env` entry the webhook adds: the memory limit through the downward API, or a value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EnvEntry {
    /// `GOMEMLIMIT` from the container's memory limit, through the downward API.
    GomemlimitDownward,
    /// `GOMEMLIMIT` as a byte count.
    Gomemlimit(u64),
    /// `GOGC`.
    Gogc(String),
}

impl EnvEntry {
    /// Writes the entry as `serde_json` writes a `name`, `value` and `valueFrom` struct.
    fn write<W: io::Write>(&self, out: &mut W) -> io::Result<()> {
        // The names are the webhook's own, with nothing to escape.
        out.write_all(b"{\"name\":\"")?;
        match self {
            EnvEntry::GomemlimitDownward => {
                out.write_all(GOMEMLIMIT.as_bytes())?;
                out.write_all(
                    br#"","valueFrom":{"resourceFieldRef":{"resource":"limits.memory","divisor":"1"}}}"#,
                )
            }
            EnvEntry::Gomemlimit(bytes) => {
                out.write_all(GOMEMLIMIT.as_bytes())?;
                out.write_all(br#"","value":""#)?;
                out.write_all(Decimal::of_u64(*bytes).as_bytes())?;
                out.write_all(br#""}"#)
            }
            EnvEntry::Gogc(value) => {
                out.write_all(GOGC.as_bytes())?;
                out.write_all(br#"","value":"#)?;
                string(out, value)?;
                out.write_all(b"}")
            }
        }
    }
}

/// The status annotation's text: its JSON, written as a JSON string as it is made, never
/// held whole.
#[derive(Debug, Clone, Copy)]
struct StatusText<'a>(Merged<'a>);

impl StatusText<'_> {
    /// Writes the text as `serde_json` writes a string holding it.
    fn write<W: io::Write>(&self, out: &mut W) -> io::Result<()> {
        out.write_all(b"\"")?;
        let mut text = Escaped::new(out);
        serde_json::to_writer(&mut text, &self.0).map_err(io::Error::from)?;
        text.pass()?;
        out.write_all(b"\"")
    }
}

/// How many bytes of escaped text an [`Escaped`] gathers before passing them on.
const ESCAPED_PIECE: usize = 256;

/// Makes text the inside of a JSON string: each byte that `serde_json` escapes in a string
/// (a quote, a backslash, a control character) escaped as it escapes it, the others as they
/// are. The bytes are escaped one by one, so text may come in pieces of any size, split
/// anywhere. `serde_json` writes its text a few bytes at a time; the escaped text is
/// gathered and passed on in pieces of up to [`ESCAPED_PIECE`] bytes, the last by
/// [`Escaped::pass`] (or `flush`, which flushes the output too).
struct Escaped<'a, W: io::Write> {
    out: &'a mut W,
    buffer: [u8; ESCAPED_PIECE],
    len: usize,
}

impl<'a, W: io::Write> Escaped<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Escaped {
            out,
            buffer: [0; ESCAPED_PIECE],
            len: 0,
        }
    }

    /// Passes on what has been gathered.
    fn pass(&mut self) -> io::Result<()> {
        let gathered = &self.buffer[..self.len];
        self.len = 0;
        self.out.write_all(gathered)
    }
}

impl<W: io::Write> io::Write for Escaped<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &byte in buf {
            if self.len > ESCAPED_PIECE - LONGEST_ESCAPE {
                self.pass()?;
            }
            match escape(byte) {
                None => {
                    self.buffer[self.len] = byte;
                    self.len += 1;
                }
                Some(escape) => {
                    let escape = escape.as_bytes();
                    self.buffer[self.len..self.len + escape.len()].copy_from_slice(escape);
                    self.len += escape.len();
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.pass()?;
        self.out.flush()
    }
}

/// The JSONPatch of an evaluation: its edits, and the status annotation when it changes,
/// written as operations only when serialized. A pod of thousands of containers never
/// holds its operations, nor the status annotation's text.
#[derive(Debug, Default)]
pub(crate) struct Patch {
    metadata: MetadataShape,
    /// In the order the rules made them; written in the order of their JSON pointers.
    edits: Vec<Edit>,
    /// What an earlier pass recorded, which the edits' records go over.
    previous: Status,
    /// Whether the status annotation is written (it reads otherwise than `previous`).
    status: bool,
}

impl Patch {
    /// The operations of `edits`, then the one that writes the status annotation when it
    /// changes.
    pub(super) fn new(metadata: MetadataShape, edits: Vec<Edit>, previous: Status) -> Self {
        let status = Merged {
            previous: &previous,
            edits: &edits,
        }
        .changed();
        Patch {
            metadata,
            edits,
            previous,
            status,
        }
    }

    /// The edits, in the order the rules made them.
    pub(super) fn edits(&self) -> &[Edit] {
        &self.edits
    }

    /// Drops every edit: nothing is changed.
    pub(super) fn clear(&mut self) {
        *self = Patch::default();
    }

    /// Whether the patch has no operation.
    pub(crate) fn is_empty(&self) -> bool {
        self.edits.is_empty() && !self.status
    }

    /// About how many operations the patch has: most edits make three (memory, GOMEMLIMIT
    /// and GOGC, the resize policy).
    pub(crate) fn estimated_operations(&self) -> usize {
        3 * self.edits.len() + usize::from(self.status)
    }

    /// Writes the JSON array of operations, each made as it is written, as `serde_json`
    /// would write them.
    pub(crate) fn write_json<W: io::Write>(&self, out: &mut W) -> io::Result<()> {
        out.write_all(b"[")?;
        let mut commas = Commas::default();
        self.each(|op| {
            commas.before_item(out)?;
            op.write(out)
        })?;
        out.write_all(b"]")
    }

    /// Passes every operation, in order, to `each`, stopping at its first error.
    fn each<'a, E>(
        &'a self,
        mut each: impl FnMut(Operation<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut order: Vec<&Edit> = self.edits.iter().collect();
        order.sort_unstable_by(|a, b| pointer_order(&a.place, &b.place));
        for edit in order {
            emit(edit, &mut each)?;
        }
        if self.status {
            let merged = Merged {
                previous: &self.previous,
                edits: &self.edits,
            };
            each(status_annotation(self.metadata, merged))?;
        }
        Ok(())
    }
}

/// The order of the places' JSON pointers as text: `/spec`, then
/// `/spec/containers/0`, `/spec/containers/1`, `/spec/containers/10`, …, then
/// `/spec/initContainers/…`.
fn pointer_order(a: &Place, b: &Place) -> Ordering {
    match (a, b) {
        (Place::Spec, Place::Spec) => Ordering::Equal,
        (Place::Spec, _) => Ordering::Less,
        (_, Place::Spec) => Ordering::Greater,
        (
            Place::Container { list, index },
            Place::Container {
                list: other_list,
                index: other_index,
            },
        ) => list.cmp(other_list).then_with(|| {
            Decimal::of(*index)
                .as_bytes()
                .cmp(Decimal::of(*other_index).as_bytes())
        }),
    }
}

/// A number's decimal digits, without allocating.
struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    fn of(n: usize) -> Self {
        // A usize has at most 64 bits on every target Rust supports.
        Self::of_u64(n as u64)
    }

    fn of_u64(mut n: u64) -> Self {
        let mut digits = [0; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return Decimal { digits, start };
            }
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

/// Passes the operations of `edit` to `each`.
fn emit<'a, E>(
    edit: &'a Edit,
    each: &mut impl FnMut(Operation<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let at = &edit.place;
    emit_memory(edit, at, each)?;
    if let Some(GomemlimitEdit::Updated { index, to, .. }) = &edit.gomemlimit {
        each(Operation {
            op: "replace",
            path: below(
                at,
                &[Token::Key("env"), Token::Index(*index), Token::Key("value")],
            ),
            value: Value::Text(Cow::Owned(to.to_string())),
        })?;
    }
    if edit.restart_on_memory_resize {
        each(if edit.holder.resize_policy {
            let end = [Token::Key("resizePolicy"), Token::Key("-")];
            add(below(at, &end), Value::Resize)
        } else {
            add(below(at, &[Token::Key("resizePolicy")]), Value::ResizeList)
        })?;
    }
    let Some(GomemlimitEdit::Added(value)) = &edit.gomemlimit else {
        return Ok(());
    };
    let mut env = vec![match value {
        GomemlimitValue::Downward => EnvEntry::GomemlimitDownward,
        GomemlimitValue::Literal { bytes, .. } => EnvEntry::Gomemlimit(*bytes),
    }];
    if let Some(gogc) = &edit.gogc {
        env.push(EnvEntry::Gogc(gogc.to_string()));
    }
    if edit.holder.env {
        for entry in env {
            each(add(
                below(at, &[Token::Key("env"), Token::Key("-")]),
                Value::Env(entry),
            ))?;
        }
        Ok(())
    } else {
        each(add(below(at, &[Token::Key("env")]), Value::EnvList(env)))
    }
}

fn emit_memory<'a, E>(
    edit: &'a Edit,
    at: &'a Place,
    each: &mut impl FnMut(Operation<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let limits = edit.limit.as_deref();
    let requests = edit.request.as_ref().map(|set| set.to.as_str());
    if limits.is_none() && requests.is_none() {
        return Ok(());
    }
    if !edit.holder.resources {
        let resources = Value::Resources { limits, requests };
        return each(add(below(at, &[Token::Key("resources")]), resources));
    }
    let lists = [
        ("limits", limits, edit.holder.limits),
        ("requests", requests, edit.holder.requests),
    ];
    for (kind, memory, held) in lists {
        let Some(memory) = memory else { continue };
        each(if held {
            add(
                below(
                    at,
                    &[
                        Token::Key("resources"),
                        Token::Key(kind),
                        Token::Key("memory"),
                    ],
                ),
                Value::Text(Cow::Borrowed(memory)),
            )
        } else {
            add(
                below(at, &[Token::Key("resources"), Token::Key(kind)]),
                Value::Memory(memory),
            )
        })?;
    }
    Ok(())
}

/// The operation that writes the status annotation, creating `metadata` or its
/// `annotations` when the pod has none.
fn status_annotation(metadata: MetadataShape, status: Merged<'_>) -> Operation<'_> {
    let status = StatusText(status);
    match metadata {
        MetadataShape::Missing => add(
            Pointer::new(None, &[Token::Key("metadata")]),
            Value::Metadata(status),
        ),
        MetadataShape::NoAnnotations => add(
            Pointer::new(None, &[Token::Key("metadata"), Token::Key("annotations")]),
            Value::Annotations(status),
        ),
        MetadataShape::Annotations => add(
            Pointer::new(
                None,
                &[
                    Token::Key("metadata"),
                    Token::Key("annotations"),
                    Token::Key(STATUS),
                ],
            ),
            Value::Status(status),
        ),
    }
}

/// `tail` below the place `at`.
fn below<'a>(at: &'a Place, tail: &[Token]) -> Pointer<'a> {
    Pointer::new(Some(at), tail)
}

fn add<'a>(path: Pointer<'a>, value: Value<'a>) -> Operation<'a> {
    Operation {
        op: "add",
        path,
        value,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn pointers_are_written_as_rfc_6901_says() {
        let container = Place::Container {
            list: "initContainers",
            index: 12,
        };
        let cases = [
            (Pointer::new(None, &[]), ""),
            (Pointer::new(Some(&Place::Spec), &[]), "/spec"),
            (
                below(
                    &container,
                    &[Token::Key("env"), Token::Index(3), Token::Key("value")],
                ),
                "/spec/initContainers/12/env/3/value",
            ),
            (
                Pointer::new(
                    None,
                    &[Token::Key("a~b/c"), Token::Key("~/~"), Token::Key("-")],
                ),
                "/a~0b~1c/~0~1~0/-",
            ),
            (
                Pointer::new(
                    None,
                    &[
                        Token::Key("metadata"),
                        Token::Key("annotations"),
                        Token::Key(STATUS),
                    ],
                ),
                "/metadata/annotations/gomemlimit.io~1status",
            ),
        ];
        for (pointer, text) in cases {
            let mut written = Vec::new();
            pointer.write(&mut written).unwrap();
            assert_eq!(String::from_utf8(written).unwrap(), text);
            // Written into a JSON string as it is: nothing in it is escaped there.
            assert_eq!(serde_json::to_string(text).unwrap(), format!("\"{text}\""));
        }
    }

    /// `text` written through [`Escaped`] in pieces of `piece` bytes, between quotes.
    fn escaped(text: &str, piece: usize) -> String {
        let mut out = b"\"".to_vec();
        let mut escaped = Escaped::new(&mut out);
        for chunk in text.as_bytes().chunks(piece) {
            escaped.write_all(chunk).unwrap();
        }
        escaped.flush().unwrap();
        out.push(b'"');
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_a_text_as_serde_json_escapes_a_string() {
        let every_ascii: String = (0..=0x7f_u8).map(char::from).collect();
        let texts = [
            String::new(),
            every_ascii.repeat(5),
            // Longer than a piece, escapes across its end.
            "\"x\u{1}".repeat(ESCAPED_PIECE),
            r#"{"containers":{"a\"b":{"request":"1Gi"}},"pod":{"gogc":"off"}}"#.to_owned(),
            "é, ü, 日本, 🦀 and \u{7f}\u{1}\n".to_owned(),
        ];
        for text in &texts {
            // Split anywhere, inside a character too.
            for piece in [1, 2, 3, 7, 256] {
                assert_eq!(escaped(text, piece), serde_json::to_string(text).unwrap());
            }
        }
    }
}
