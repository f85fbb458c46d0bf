//! The text log line without colours, as log collectors get it: the bytes of
//! `tracing-subscriber`'s default format with ANSI off, written straight to the line
//! instead of through its styling layer (which runs, and costs, even when it adds nothing).
//! A review writes one such line; the stock format stays in use when colours are on.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The line: time, level, the spans in scope, target, fields.
#[derive(Debug, Default)]
pub(super) struct PlainLine;

impl<S, N> FormatEvent<S, N> for PlainLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A record of the `log` crate carries its own level and target.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if SystemTime.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        writer.write_char(' ')?;
        writer.write_str(level(meta.level()))?;
        writer.write_char(' ')?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// The level, five characters wide, as the default format pads it.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// The fields of events and spans: `message` first as it is, then `name=value` each with
/// the value's `Debug`, separated by spaces, as `DefaultFields` writes them without ANSI.
#[derive(Debug, Default)]
pub(super) struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        PlainVisitor {
            writer: target,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes the fields of one event or span.
pub(super) struct PlainVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    fn pad(&mut self) {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.result = self.writer.write_char(' ');
        }
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"))
        } else {
            self.record_debug(field, &value)
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let sanitize = self.writer.sanitizes_ansi_escapes();
        let error = Escaped(format_args!("{value}"), sanitize);
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!(
                    "{error} {}.sources={}",
                    field.name(),
                    Sources(source, sanitize)
                ),
            ),
            None => self.record_debug(field, &format_args!("{error}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // What the `log` crate's records carry besides their message, written already.
        if name.starts_with("log.") {
            return;
        }
        self.pad();
        if self.result.is_err() {
            return;
        }
        self.result = match name {
            "message" => {
                let sanitize = self.writer.sanitizes_ansi_escapes();
                write!(self.writer, "{:?}", Escaped(value, sanitize))
            }
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                self.writer
                    .write_str(name)
                    .and_then(|()| self.writer.write_char('='))
                    .and_then(|()| write!(self.writer, "{value:?}"))
            }
        };
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// A value whose terminal control characters are written as escapes when `.1` is set, as
/// the default format does for messages and errors.
struct Escaped<T>(T, bool);

impl<T: fmt::Debug> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            write!(Escaping(f), "{:?}", self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            write!(Escaping(f), "{}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Writes ESC, BEL, BS, FF, DEL and the C1 controls as escapes, the rest as it is.
struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, ch) in text.char_indices() {
            let escape = match ch {
                '\x1b' => "\\x1b",
                '\x07' => "\\x07",
                '\x08' => "\\x08",
                '\x0c' => "\\x0c",
                '\x7f' => "\\x7f",
                '\u{80}'..='\u{9f}' => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{{{:x}}}", u32::from(ch))?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = at + ch.len_utf8();
        }
        self.0.write_str(&text[plain..])
    }
}

/// An error and its sources, as a list of their messages.
struct Sources<'a>(&'a (dyn std::error::Error + 'static), bool);

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut current = Some(self.0);
        while let Some(error) = current {
            list.entry(&Escaped(format_args!("{error}"), self.1));
            current = error.source();
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::sample::written;

    /// The lines of the sample events, each without its time, which is checked for its shape.
    fn lines(plain: bool) -> Vec<String> {
        let text = if plain {
            written(|builder| {
                builder
                    .event_format(PlainLine)
                    .fmt_fields(PlainFields)
                    .finish()
            })
        } else {
            written(|builder| builder.finish())
        };
        let time = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z ").unwrap();
        text.lines()
            .map(|line| {
                assert!(time.is_match(line), "{line}");
                line.split_once(' ').unwrap().1.to_owned()
            })
            .collect()
    }

    #[test]
    fn writes_what_the_default_format_writes_without_colours() {
        let plain = lines(true);
        let stock = lines(false);
        assert_eq!(plain.len(), 11, "{plain:#?}");
        for (plain, stock) in plain.iter().zip(&stock) {
            assert_eq!(plain, stock);
        }
        assert_eq!(plain.len(), stock.len());
        // The review line as a collector sees it.
        assert_eq!(
            plain[0],
            r#" INFO gomemlimit_injector::server: review uid=2f6e1c0a-8d3b namespace=shop pod=checkout-\u{1b}[31m\u{22}quoted\u{22}\u{a} operation=CREATE dry_run=false path="mutate" outcome="mutated" duration_ms=0.006 status=200"#
        );
    }
}
