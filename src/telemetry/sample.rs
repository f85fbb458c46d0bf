//! For the tests of the logging: events of every kind the server and its libraries log, what
//! the log formats are checked against `tracing-subscriber`'s own formats with, and an
//! output that keeps what is written to it (the subscribers' lines, the log writer's batches).

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::{Level, Subscriber};
use tracing_log::log;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full};
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::fmt::{MakeWriter, SubscriberBuilder};

use crate::text::LogValue;

/// A subscriber builder without colours, at every level, writing to what is kept.
pub(super) type Builder =
    SubscriberBuilder<DefaultFields, Format<Full, SystemTime>, LevelFilter, Kept>;

/// The text the subscriber that `finish` makes of a [`Builder`] writes for [`events`].
pub(super) fn written<S>(finish: impl FnOnce(Builder) -> S) -> String
where
    S: Subscriber + Send + Sync + 'static,
{
    let kept = Kept::default();
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(Level::TRACE)
        .with_writer(kept.clone());
    tracing::subscriber::with_default(finish(builder), events);
    kept.text()
}

/// Keeps what is written to it.
#[derive(Clone, Default)]
pub(super) struct Kept(Arc<Mutex<Vec<u8>>>);

impl Kept {
    /// What has been written.
    pub(super) fn text(&self) -> String {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8(kept.clone()).unwrap()
    }
}

impl io::Write for Kept {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Kept {
    type Writer = Kept;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[derive(Debug)]
struct Failure(&'static str, Option<Box<Failure>>);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.as_deref().map(|e| e as _)
    }
}

/// Events of every kind the server and its libraries log: a review line, messages and
/// values with terminal controls, errors with and without sources, raw field names,
/// nested spans with and without fields and with fields recorded later, a `log` record.
fn events() {
    values();
    errors();
    in_spans();
}

/// A review line, messages and values of every kind, terminal controls among them.
fn values() {
    tracing::info!(
        target: "gomemlimit_injector::server",
        uid = %LogValue("2f6e1c0a-8d3b"),
        namespace = %LogValue("shop"),
        pod = %LogValue("checkout-\x1b[31m\"quoted\"\n"),
        operation = %"CREATE",
        dry_run = false,
        path = "mutate",
        outcome = "mutated",
        duration_ms = 0.006,
        status = 200u16,
        "review"
    );
    tracing::warn!(
        code = -3i64,
        big = u64::MAX,
        ratio = 1.0f64,
        text = "tab\t \u{85}\x1b",
        "controls: \x1b[2J bell\x07 back\x08 feed\x0c del\x7f c1\u{85}\u{9f} é"
    );
    tracing::warn!(message = "a message field \x07", extra = 1);
    tracing::info!(
        nan = f64::NAN,
        infinite = f64::NEG_INFINITY,
        tiny = 1.5e-7,
        huge = 1e21,
        exact = 0.1 + 0.2,
        wide = 1u128 << 100,
        negative = i64::MIN,
        "numbers"
    );
    tracing::debug!(r#type = "raw", "{} formatted {:?}", 1, "two");
    tracing::trace!("no fields");
    tracing::info!(empty = "");
}

/// Errors with and without sources.
fn errors() {
    let nested = Failure("outer \x1b", Some(Box::new(Failure("inner", None))));
    let alone = Failure("alone\u{9b}", None);
    tracing::error!(
        error = &nested as &(dyn std::error::Error + 'static),
        "a failure"
    );
    tracing::error!(error = &alone as &(dyn std::error::Error + 'static));
}

/// An event and a `log` record in nested spans: with fields, without, and with a field
/// recorded after the span was made.
fn in_spans() {
    let outer = tracing::info_span!("conn", peer = "10.0.0.1:443", r#type = 2);
    let _outer = outer.enter();
    let bare = tracing::info_span!("bare");
    let _bare = bare.enter();
    let later = tracing::info_span!("later", stream = tracing::field::Empty);
    later.record("stream", 7);
    let _later = later.enter();
    tracing::info!(inside = true, "in spans");
    let record = log::Record::builder()
        .args(format_args!("from the log crate \x1b"))
        .level(log::Level::Warn)
        .target("rustls::conn")
        .module_path(Some("rustls::conn"))
        .file(Some("src/conn.rs"))
        .line(Some(10))
        .build();
    tracing_log::format_trace(&record).unwrap();
}
