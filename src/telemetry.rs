//! Log output: tracing-subscriber's own `fmt`, plain text or JSON, one line per event on stderr.
//! Colour codes only for a person at a terminal: in a pod, stderr is a file or pipe read by log
//! collectors, where escape sequences are noise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter when the one given does not parse (and `serve --log`'s default).
pub const DEFAULT_FILTER: &str = "harbor_iam_webhook=info,warn";

pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|err| {
        eprintln!("invalid log filter {filter:?} ({err}); using {DEFAULT_FILTER:?}");
        EnvFilter::new(DEFAULT_FILTER)
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
}
