//! Log output: tracing-subscriber's own `fmt`, plain text or JSON, one line per event on stderr.
//! Colour codes only for a person at a terminal: in a pod, stderr is a file or pipe read by log
//! collectors, where escape sequences are noise.
//!
//! Lines are written by tracing-appender's worker thread, buffered and flushed whenever it has
//! caught up, so a loaded server does not make a write call per review (a blocking write was 3.5%
//! of its CPU). It never drops a line: when the queue is full, logging waits.

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter when the one given does not parse (and `serve --log`'s default).
pub const DEFAULT_FILTER: &str = "harbor_iam_webhook=info,warn";

/// Install the subscriber. Keep the guard until the process ends: dropping it writes out what is
/// still queued.
pub fn init(format: LogFormat, filter: &str) -> WorkerGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|err| {
        eprintln!("invalid log filter {filter:?} ({err}); using {DEFAULT_FILTER:?}");
        EnvFilter::new(DEFAULT_FILTER)
    });
    // A short queue: its slots stay resident once used (the default, 128,000 lines, is 4 MiB).
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(1024)
        .lossy(false)
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}
