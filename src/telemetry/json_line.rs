//! The JSON log line (`--log-format json`): the bytes of `tracing-subscriber`'s JSON format
//! as the webhook configures it (the event's fields at the top level, no spans), written
//! straight to the line instead of through a `serde_json` serializer over a `fmt::Write`
//! adaptor, which passes each of the many short pieces of a line on by itself.

use std::fmt::{self, Write};
use std::io;

use serde_json::ser::{CompactFormatter, Formatter};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::json_escape::escape;

/// `{"timestamp", "level", the fields in order, "target"}`.
#[derive(Debug, Default)]
pub(super) struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A record of the `log` crate carries its own level and target.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = JsonFields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`, as `tracing-serde` serializes it: booleans and
/// integers as JSON literals, finite floats as `serde_json` writes them (by its own
/// formatter) and the others as `null`, everything else as the string of its `Debug`.
struct JsonFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self
                .writer
                .write_char(',')
                .and_then(|()| string(self.writer, field.name()))
                .and_then(|()| self.writer.write_char(':'))
                .and_then(|()| value(self.writer));
        }
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |w| {
            if !value.is_finite() {
                return w.write_str("null");
            }
            // At most 24 bytes (`-1.7976931348623157e+308`).
            let mut digits = io::Cursor::new([0u8; 32]);
            CompactFormatter
                .write_f64(&mut digits, value)
                .map_err(|_| fmt::Error)?;
            let len = usize::try_from(digits.position()).map_err(|_| fmt::Error)?;
            let digits = digits.into_inner();
            w.write_str(std::str::from_utf8(&digits[..len]).map_err(|_| fmt::Error)?)
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| string(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaping(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// `text` as a JSON string.
fn string(writer: &mut Writer<'_>, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    Escaping(writer).write_str(text)?;
    writer.write_char('"')
}

/// Writes text as the inside of a JSON string, escaped as `serde_json` escapes it: quote,
/// backslash and the control characters below U+0020, the rest as it is.
struct Escaping<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let bytes = text.as_bytes();
        let mut plain = 0;
        for (at, &byte) in bytes.iter().enumerate() {
            let Some(escape) = escape(byte) else {
                continue;
            };
            // Every byte escaped is ASCII, so `plain..at` lies on character boundaries; every
            // escape is ASCII too.
            self.0.write_str(&text[plain..at])?;
            self.0
                .write_str(std::str::from_utf8(escape.as_bytes()).map_err(|_| fmt::Error)?)?;
            plain = at + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::telemetry::plain::PlainFields;
    use crate::telemetry::sample::written;

    /// The lines of the sample events, each with its time (checked for its shape) taken out.
    fn lines(ours: bool) -> Vec<String> {
        let text = if ours {
            written(|builder| {
                builder
                    .event_format(JsonLine)
                    .fmt_fields(PlainFields)
                    .finish()
            })
        } else {
            written(|builder| {
                builder
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .finish()
            })
        };
        let time = regex::Regex::new(r#"^\{"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z","#)
            .unwrap();
        text.lines()
            .map(|line| {
                assert!(time.is_match(line), "{line}");
                serde_json::from_str::<serde_json::Value>(line).unwrap();
                time.replace(line, "{").into_owned()
            })
            .collect()
    }

    #[test]
    fn writes_what_the_stock_json_format_writes() {
        let ours = lines(true);
        let stock = lines(false);
        assert_eq!(ours.len(), 11, "{ours:#?}");
        for (ours, stock) in ours.iter().zip(&stock) {
            assert_eq!(ours, stock);
        }
        assert_eq!(ours.len(), stock.len());
        assert!(ours[0].starts_with(r#"{"level":"INFO","message":"review","uid":"#));
    }

    /// `text` escaped by [`Escaping`], in a JSON string.
    fn escaped(text: &str) -> String {
        let mut out = String::from("\"");
        Escaping(&mut out).write_str(text).unwrap();
        out.push('"');
        out
    }

    #[test]
    fn escapes_as_serde_json_does() {
        for text in [
            "",
            "plain",
            "\"\\/",
            "\u{0}\u{1f}\u{7f}\u{85}",
            "\x08\x0c\n\r\t",
            "é😀\u{2028}",
        ] {
            assert_eq!(escaped(text), serde_json::to_string(text).unwrap());
        }
    }

    proptest! {
        #[test]
        fn escapes_any_text_as_serde_json_does(text in any::<String>()) {
            prop_assert_eq!(escaped(&text), serde_json::to_string(&text).unwrap());
        }
    }
}
