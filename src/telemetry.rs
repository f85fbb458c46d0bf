//! Logging set-up: `tracing` events to stderr, as text or JSON.
//!
//! Lines are formatted where they happen and written by a thread of their own, in batches:
//! a review does not wait for a write to stderr, and a busy server makes one write for many
//! lines instead of one each. No line is dropped: when the thread falls behind by
//! [`QUEUED_LINES`], logging waits for it. The lines still queued are written when the
//! [`LogGuard`] is dropped, before the process exits.

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// How many lines may wait for the writing thread before logging waits too.
const QUEUED_LINES: usize = 1024;

/// The buffer the writing thread fills before it writes, unless no line is waiting.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Keeps the writing thread; dropping it writes the lines still queued.
#[must_use = "dropping the guard stops the log writer"]
pub(crate) struct LogGuard(#[allow(dead_code)] WorkerGuard);

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, fields at the top level (for log collectors).
    Json,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TelemetryError {
    #[error("failed to parse the log filter {filter:?}")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("failed to install the log subscriber")]
    Install(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `level` so that one
/// module can be turned up without a new flag; `level` is any `EnvFilter` directive.
pub(crate) fn init(format: LogFormat, level: &str) -> Result<LogGuard, TelemetryError> {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(env) if !env.trim().is_empty() => env,
        _ => level.to_owned(),
    };
    let env_filter = EnvFilter::try_new(&filter).map_err(|source| TelemetryError::Filter {
        filter: filter.clone(),
        source,
    })?;
    let stderr = BufWriter::with_capacity(WRITE_BUFFER_BYTES, std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(stderr);
    // Colour only for a person at a terminal; log collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    }
    .map_err(TelemetryError::Install)?;
    Ok(LogGuard(guard))
}
