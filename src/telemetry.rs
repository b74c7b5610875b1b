//! Log output: one line per event, plain text or JSON, on stderr.
//!
//! Lines are written in batches, not one `write` per line: a review line costs the server
//! more in that system call than in formatting it (measured in `benches/load.sh`). The thread
//! that logs only appends to the batch; a thread of its own writes it out (`log-flush`), so a
//! review never waits for stderr: a 16 KiB write in the middle of a review was every fiftieth
//! review's latency at concurrency 1. A batch is written once it reaches [`BATCH_BYTES`], at
//! least every [`FLUSH_EVERY`], as soon as a warning or error is logged (after the lines before
//! it), and when the [`LogGuard`] is dropped at exit. Should stderr stall so that the batch
//! grows to [`BACKLOG_BYTES`] (32 KiB), the thread that logs writes it itself rather than
//! hold more. What a killed process loses is at most the last [`FLUSH_EVERY`] of
//! informational lines.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

#[cfg(test)]
mod captured;
mod fields;
mod line;

/// A batch is written once it holds this many bytes (about 50 review lines).
pub const BATCH_BYTES: usize = 16 * 1024;
/// A batch is written at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// With this much waiting (the writing thread has not had the CPU since the batch was due),
/// the thread that logs writes the batch out itself. Kept low: a buffer that grows past its
/// capacity is memory the process keeps.
pub const BACKLOG_BYTES: usize = 2 * BATCH_BYTES;
/// Each of the two buffers (the batch filling, the batch being written): the backlog and the
/// line that reached it.
const BUFFER_CAPACITY: usize = BACKLOG_BYTES + 1024;

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
    // Without the thread, lines are written when a batch is due, by the thread that logs.
    let _ = batch.spawn_writer();
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
        LogFormat::Text => builder
            .fmt_fields(fields::PlainFields)
            .event_format(line::PlainLine::default())
            .try_init(),
    };
    LogGuard {
        _flush: FlushOnDrop(batch),
    }
}

/// Lines waiting to be written to `W`, shared by every thread that logs and the one that
/// writes them.
struct Batch<W: Write>(Arc<Shared<W>>);

struct Shared<W> {
    /// Held while a batch is written, and taken before the batch is: batches go out in the
    /// order they were taken.
    out: Mutex<W>,
    pending: Mutex<Pending>,
    /// Wakes the writing thread when a batch is due.
    due: Condvar,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// A warning or error is waiting.
    urgent: bool,
    /// A thread writes batches ([`Batch::run`]); without one, the thread that logs does.
    threaded: bool,
    /// The buffer of the batch last written, kept for the next one.
    spare: Vec<u8>,
}

impl Pending {
    fn is_due(&self) -> bool {
        self.urgent || self.lines.len() >= BATCH_BYTES
    }
}

/// A poisoned lock still guards whole lines: a panic while holding one does not lose them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write> Clone for Batch<W> {
    fn clone(&self) -> Self {
        Batch(self.0.clone())
    }
}

impl<W: Write> Batch<W> {
    fn new(out: W) -> Self {
        Batch(Arc::new(Shared {
            out: Mutex::new(out),
            pending: Mutex::new(Pending {
                lines: Vec::with_capacity(BUFFER_CAPACITY),
                spare: Vec::with_capacity(BUFFER_CAPACITY),
                ..Pending::default()
            }),
            due: Condvar::new(),
        }))
    }

    /// Start the thread that writes the batches (`log-flush`). It ends once every other
    /// handle on the batch is dropped.
    fn spawn_writer(&self) -> std::io::Result<std::thread::JoinHandle<()>>
    where
        W: Send + 'static,
    {
        let shared = Arc::downgrade(&self.0);
        let handle = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || Batch::run(&shared))?;
        lock(&self.0.pending).threaded = true;
        Ok(handle)
    }

    /// Add one formatted line; `urgent` (a warning or error) makes the batch due at once.
    fn push(&self, line: &[u8], urgent: bool) {
        let mut p = lock(&self.0.pending);
        p.lines.extend_from_slice(line);
        p.urgent |= urgent;
        let write_here = if p.threaded {
            p.lines.len() >= BACKLOG_BYTES
        } else {
            p.is_due()
        };
        if write_here {
            drop(p);
            self.flush();
        } else if p.is_due() {
            drop(p);
            self.0.due.notify_one();
        }
    }

    /// Write out whatever is waiting, now, on this thread.
    fn flush(&self) {
        let mut out = lock(&self.0.out);
        let mut batch = {
            let mut p = lock(&self.0.pending);
            p.urgent = false;
            let spare = std::mem::take(&mut p.spare);
            std::mem::replace(&mut p.lines, spare)
        };
        if !batch.is_empty() {
            // Nowhere to report a failure to write the log: the lines are dropped.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
        }
        // Kept for the next batch (at its size, should a long line have grown it), before
        // the next writer may take the spare: two buffers in all.
        batch.clear();
        batch.shrink_to(BUFFER_CAPACITY);
        lock(&self.0.pending).spare = batch;
        drop(out);
    }

    /// The writing thread: each batch once it is due, or after [`FLUSH_EVERY`].
    fn run(shared: &std::sync::Weak<Shared<W>>) {
        while let Some(shared) = shared.upgrade() {
            let p = lock(&shared.pending);
            let (p, _) = shared
                .due
                .wait_timeout_while(p, FLUSH_EVERY, |p| !p.is_due())
                .unwrap_or_else(PoisonError::into_inner);
            drop(p);
            Batch(shared).flush();
        }
    }
}

/// One event's output: `tracing_subscriber` formats the event, then writes it whole.
struct Line<'a, W: Write> {
    batch: &'a Batch<W>,
    urgent: bool,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.batch.push(buf, self.urgent);
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

    fn log<W: Write>(batch: &Batch<W>, level: Level, text: &str) {
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

    /// A write, and the name of the thread that made it.
    type Named = (String, Vec<u8>);

    /// Each write of a batch, with the name of the thread that made it.
    #[derive(Clone, Default)]
    struct ThreadSink(Arc<Mutex<Vec<Named>>>);

    impl Write for ThreadSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            self.0.lock().unwrap().push((name, buf.to_vec()));
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl ThreadSink {
        /// Every write so far, once they hold `expected` bytes in all (waiting up to 10 s).
        fn wait_for(&self, expected: usize) -> Vec<(String, String)> {
            for _ in 0..1000 {
                let w = self.0.lock().unwrap().clone();
                if w.iter().map(|(_, b)| b.len()).sum::<usize>() >= expected {
                    return w
                        .into_iter()
                        .map(|(t, b)| (t, String::from_utf8(b).unwrap()))
                        .collect();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("fewer than {expected} bytes written after 10 s");
        }
    }

    #[test]
    fn with_its_thread_the_batch_is_written_there_never_by_the_thread_that_logs() {
        let sink = ThreadSink::default();
        let batch = Batch::new(sink.clone());
        let writer = batch.spawn_writer().unwrap();
        // A warning, a full batch, and lines below a batch (which wait for the timer).
        let line = format!("{}\n", "x".repeat(99));
        let mut expected = String::from("a\nb\n");
        log(&batch, Level::INFO, "a\n");
        log(&batch, Level::WARN, "b\n");
        for _ in 0..BATCH_BYTES.div_ceil(line.len()) {
            log(&batch, Level::INFO, &line);
            expected.push_str(&line);
        }
        log(&batch, Level::INFO, "c\n");
        expected.push_str("c\n");
        let writes = sink.wait_for(expected.len());
        let written: String = writes.iter().map(|(_, b)| b.as_str()).collect();
        assert_eq!(written, expected, "every line, in order");
        for (thread, _) in &writes {
            assert_eq!(thread, "log-flush");
        }
        // The thread ends with the last handle on the batch.
        drop(batch);
        writer.join().unwrap();
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
