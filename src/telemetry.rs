//! Log output: one line per event, plain text or JSON, on stderr.
//!
//! Lines are written in batches, not one `write` per line: a review line costs the server
//! more in that system call than in formatting it (measured in `benches/load.sh`). A batch is
//! written when it reaches [`BATCH_BYTES`], every [`FLUSH_EVERY`], when a warning or error is
//! logged (which goes out at once, after the lines before it), and when the [`LogGuard`] is
//! dropped at exit. What a killed process loses is at most the last [`FLUSH_EVERY`] of
//! informational lines.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

mod fields;

/// A batch is written once it holds this many bytes (about 60 review lines).
pub const BATCH_BYTES: usize = 16 * 1024;
/// A batch is written at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Writes what is left at exit; keep it until the process is done logging.
#[must_use = "dropping the guard writes the last lines now, and later lines wait for the timer"]
pub struct LogGuard {
    _flush: FlushOnDrop<std::io::Stderr>,
}

struct FlushOnDrop<W: Write>(Batch<W>);

impl<W: Write> Drop for FlushOnDrop<W> {
    fn drop(&mut self) {
        self.0.flush();
    }
}

pub fn init(format: LogFormat, filter: &str) -> LogGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|err| {
        eprintln!("invalid log filter {filter:?} ({err}); using the default");
        EnvFilter::new("harbor_iam_webhook=info,warn")
    });
    let batch = Batch::new(std::io::stderr());
    let timer = batch.clone();
    let _ = std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(move || {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                timer.flush();
            }
        });
    // Colour codes only for a person at a terminal: in a pod, stderr is a file or pipe read
    // by log collectors, where escape sequences are noise (and bytes written per review).
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(batch.clone())
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text if ansi => builder.try_init(),
        LogFormat::Text => builder.fmt_fields(fields::PlainFields).try_init(),
    };
    LogGuard {
        _flush: FlushOnDrop(batch),
    }
}

/// Lines waiting to be written to `W`, shared by every thread that logs.
struct Batch<W: Write>(Arc<Mutex<Pending<W>>>);

struct Pending<W> {
    out: W,
    lines: Vec<u8>,
}

impl<W: Write> Clone for Batch<W> {
    fn clone(&self) -> Self {
        Batch(self.0.clone())
    }
}

impl<W: Write> Batch<W> {
    fn new(out: W) -> Self {
        Batch(Arc::new(Mutex::new(Pending {
            out,
            lines: Vec::with_capacity(BATCH_BYTES + 1024),
        })))
    }

    /// Add one formatted line; write the batch if it is full or the line `urgent`.
    fn push(&self, line: &[u8], urgent: bool) -> std::io::Result<()> {
        // A panic while holding the lock leaves whole lines behind: still worth writing.
        let mut p = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        p.lines.extend_from_slice(line);
        if urgent || p.lines.len() >= BATCH_BYTES {
            p.write_out()
        } else {
            Ok(())
        }
    }

    fn flush(&self) {
        let mut p = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Nowhere to report a failure to write the log: the lines are dropped.
        let _ = p.write_out();
    }
}

impl<W: Write> Pending<W> {
    fn write_out(&mut self) -> std::io::Result<()> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let written = self
            .out
            .write_all(&self.lines)
            .and_then(|()| self.out.flush());
        self.lines.clear();
        written
    }
}

/// One event's output: `tracing_subscriber` formats the event, then writes it whole.
struct Line<'a, W: Write> {
    batch: &'a Batch<W>,
    urgent: bool,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.batch.push(buf, self.urgent)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for Batch<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            batch: self,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line {
            batch: self,
            // `Level` orders by verbosity: WARN and ERROR are the lesser.
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records each `write_all` of a batch as one write.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn writes(sink: &Sink) -> Vec<String> {
        let w = sink.0.lock().unwrap();
        w.iter()
            .map(|b| String::from_utf8(b.clone()).unwrap())
            .collect()
    }

    fn log(batch: &Batch<Sink>, level: Level, text: &str) {
        let urgent = level <= Level::WARN;
        let mut line = Line { batch, urgent };
        line.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn info_lines_wait_and_a_warning_takes_them_out_in_order() {
        let sink = Sink::default();
        let batch = Batch::new(sink.clone());
        log(&batch, Level::INFO, "a\n");
        log(&batch, Level::DEBUG, "b\n");
        assert!(writes(&sink).is_empty());
        log(&batch, Level::WARN, "c\n");
        assert_eq!(writes(&sink), ["a\nb\nc\n"]);
        log(&batch, Level::ERROR, "d\n");
        assert_eq!(writes(&sink), ["a\nb\nc\n", "d\n"]);
    }

    #[test]
    fn a_full_batch_is_written_and_a_flush_writes_the_rest() {
        let sink = Sink::default();
        let batch = Batch::new(sink.clone());
        let line = format!("{}\n", "x".repeat(99));
        let per_batch = BATCH_BYTES.div_ceil(line.len());
        for _ in 0..per_batch + 3 {
            log(&batch, Level::INFO, &line);
        }
        let w = writes(&sink);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0], line.repeat(per_batch));
        batch.flush();
        assert_eq!(writes(&sink)[1], line.repeat(3));
        // Nothing left: a flush writes nothing more.
        batch.flush();
        assert_eq!(writes(&sink).len(), 2);
    }

    #[test]
    fn the_guard_writes_what_is_left() {
        let sink = Sink::default();
        let batch = Batch::new(sink.clone());
        let guard = FlushOnDrop(batch.clone());
        log(&batch, Level::INFO, "last\n");
        assert!(writes(&sink).is_empty());
        drop(guard);
        assert_eq!(writes(&sink), ["last\n"]);
    }
}
