//! The log writer: formatted lines are gathered in memory and written to the output by a
//! thread of their own, a batch at a time.
//!
//! A line costs its writer a copy under a lock, not a system call: the thread is woken once
//! per batch, by its first line, and then lets lines gather for [`LINGER`] (or until
//! [`BATCH_BYTES`] are waiting) before it makes one write for all of them. No line is
//! dropped: when [`MAX_WAITING_BYTES`] are waiting, the next line waits for the thread.
//! Dropping the [`WriterGuard`] writes what is still waiting and stops the thread; lines
//! logged after that go straight to the output.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// How long the first line of a batch waits for others before they are written together.
const LINGER: Duration = Duration::from_millis(10);

/// A batch this large is written without waiting for the rest of [`LINGER`].
const BATCH_BYTES: usize = 64 * 1024;

/// With this much waiting, logging waits for the thread.
const MAX_WAITING_BYTES: usize = 256 * 1024;

/// Where lines are handed over; every handle writes to the same thread.
pub(crate) struct BatchWriter<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
}

/// Keeps the writing thread; dropping it writes the lines still waiting.
#[must_use = "dropping the guard stops the log writer"]
pub(crate) struct WriterGuard<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared<W> {
    state: Mutex<State>,
    /// Signalled when the thread has lines to write, or is to stop.
    lines: Condvar,
    /// Signalled when the thread has taken the waiting lines.
    room: Condvar,
    /// The output, used by the thread and, once it has stopped, by the lines that follow.
    out: Mutex<W>,
}

#[derive(Default)]
struct State {
    waiting: Vec<u8>,
    /// The thread waits on `lines` and has not been signalled since.
    idle: bool,
    /// The guard was dropped: the thread writes what is waiting and stops.
    closing: bool,
    /// The thread has stopped; lines go straight to the output.
    stopped: bool,
}

impl<W: Write + Send + 'static> Shared<W> {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_out(&self, bytes: &[u8]) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        // There is nowhere to report a failed log write; the lines are dropped.
        let _ = out.write_all(bytes).and_then(|()| out.flush());
    }

    /// The thread: one write per batch until the guard is dropped and nothing waits.
    fn run(&self) {
        let mut batch = Vec::new();
        loop {
            {
                let mut state = self.state();
                while state.waiting.is_empty() && !state.closing {
                    state.idle = true;
                    state = self
                        .lines
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                let until = Instant::now() + LINGER;
                while state.waiting.len() < BATCH_BYTES && !state.closing {
                    let Some(left) = until.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    state.idle = true;
                    state = self
                        .lines
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                state.idle = false;
                if state.waiting.is_empty() {
                    state.stopped = true;
                    return;
                }
                std::mem::swap(&mut state.waiting, &mut batch);
                self.room.notify_all();
            }
            self.write_out(&batch);
            batch.clear();
        }
    }
}

/// Starts the writing thread, named `name`, over `out`.
pub(crate) fn spawn<W: Write + Send + 'static>(
    out: W,
    name: &str,
) -> io::Result<(BatchWriter<W>, WriterGuard<W>)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        lines: Condvar::new(),
        room: Condvar::new(),
        out: Mutex::new(out),
    });
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || shared.run())?
    };
    let writer = BatchWriter {
        shared: Arc::clone(&shared),
    };
    let guard = WriterGuard {
        shared,
        thread: Some(thread),
    };
    Ok((writer, guard))
}

impl<W: Write + Send + 'static> Write for &BatchWriter<W> {
    /// Takes all of `buf` (one formatted line): it is written whole, in order.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shared = &self.shared;
        let mut state = shared.state();
        while state.waiting.len() >= MAX_WAITING_BYTES && !state.stopped {
            state = shared
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.stopped {
            drop(state);
            shared.write_out(buf);
            return Ok(buf.len());
        }
        let first = state.waiting.is_empty();
        state.waiting.extend_from_slice(buf);
        if state.idle && (first || state.waiting.len() >= BATCH_BYTES) {
            state.idle = false;
            shared.lines.notify_one();
        }
        Ok(buf.len())
    }

    /// The lines are with the thread, which writes them within [`LINGER`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for BatchWriter<W> {
    type Writer = &'a BatchWriter<W>;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl<W: Write + Send + 'static> Drop for WriterGuard<W> {
    fn drop(&mut self) {
        self.shared.state().closing = true;
        self.shared.lines.notify_one();
        if let Some(thread) = self.thread.take() {
            // A panic of the thread has already been reported; the lines it held are lost.
            let _ = thread.join();
        }
        // Were the thread gone without stopping, lines would wait for it forever.
        let mut state = self.shared.state();
        if !state.stopped {
            state.stopped = true;
            let left = std::mem::take(&mut state.waiting);
            drop(state);
            self.shared.room.notify_all();
            self.shared.write_out(&left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::sample::Kept;

    #[test]
    fn every_line_is_written_whole_and_in_order_per_thread() {
        let out = Kept::default();
        let (writer, guard) = spawn(out.clone(), "test-log-writer").unwrap();
        let writer = Arc::new(writer);
        // Enough lines, and long enough, to fill the waiting bytes several times over.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = Arc::clone(&writer);
                std::thread::spawn(move || {
                    let padding = "x".repeat(200);
                    for i in 0..5_000 {
                        let line = format!("thread={t} line={i} {padding}\n");
                        (&*writer).write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = out.text();
        let mut next = [0usize; 4];
        let mut count = 0;
        for line in text.lines() {
            let mut fields = line.split(' ');
            let t: usize = fields.next().unwrap()["thread=".len()..].parse().unwrap();
            let i: usize = fields.next().unwrap()["line=".len()..].parse().unwrap();
            assert_eq!(i, next[t], "thread {t}: a line is missing or out of order");
            assert_eq!(fields.next().map(str::len), Some(200), "a line was cut");
            next[t] += 1;
            count += 1;
        }
        assert_eq!(count, 20_000);
        assert_eq!(next, [5_000; 4]);
    }

    #[test]
    fn a_line_is_written_without_more_lines_or_a_flush() {
        let out = Kept::default();
        let (writer, _guard) = spawn(out.clone(), "test-log-writer").unwrap();
        (&writer).write_all(b"alone\n").unwrap();
        // Bounded: the thread writes a lone line after the linger, not at the next line.
        let until = Instant::now() + Duration::from_secs(10);
        while out.text().is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.text(), "alone\n");
    }

    #[test]
    fn dropping_the_guard_writes_what_waits_and_later_lines_go_straight_out() {
        let out = Kept::default();
        let (writer, guard) = spawn(out.clone(), "test-log-writer").unwrap();
        (&writer).write_all(b"before\n").unwrap();
        drop(guard);
        assert_eq!(out.text(), "before\n");
        (&writer).write_all(b"after\n").unwrap();
        assert_eq!(out.text(), "before\nafter\n");
    }
}
