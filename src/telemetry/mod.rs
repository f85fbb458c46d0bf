//! Logging set-up: `tracing` events to stderr, as text or JSON.
//!
//! The lines are those of `tracing-subscriber`'s formats (its default text format, its JSON
//! format with the fields at the top level), written by formatters of the webhook's own
//! ([`plain`], [`json_line`]) that go straight to the line: a review writes one line, and the
//! stock formatters spent more on it than on anything else but reading the pod. With colours
//! on (a terminal), the stock text format is used.
//!
//! Lines are formatted where they happen and written by a thread of their own, in batches
//! ([`writer`]): a review does not wait for a write to stderr, and a busy server makes one
//! write for many lines instead of one each. The lines still waiting are written when the
//! [`LogGuard`] is dropped, before the process exits.

mod json_line;
mod plain;
#[cfg(test)]
mod sample;
mod writer;

use std::io::{IsTerminal, Stderr};

use tracing_subscriber::EnvFilter;

/// Keeps the writing thread; dropping it writes the lines still waiting.
#[must_use = "dropping the guard stops the log writer"]
pub(crate) struct LogGuard(#[allow(dead_code)] writer::WriterGuard<Stderr>);

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
    #[error("failed to start the log writer thread")]
    Thread(#[source] std::io::Error),
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
    let (writer, guard) =
        writer::spawn(std::io::stderr(), "log-writer").map_err(TelemetryError::Thread)?;
    // Colour only for a person at a terminal; log collectors get plain text.
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text if ansi => builder.try_init(),
        LogFormat::Text => builder
            .event_format(plain::PlainLine)
            .fmt_fields(plain::PlainFields)
            .try_init(),
        LogFormat::Json => builder
            .event_format(json_line::JsonLine)
            .fmt_fields(plain::PlainFields)
            .try_init(),
    }
    .map_err(TelemetryError::Install)?;
    Ok(LogGuard(guard))
}
