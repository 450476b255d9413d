//! A buffered log sink for the server: request threads append formatted lines to one shared
//! buffer; it goes to the output in one `write(2)` when it fills up, and at least every
//! flush interval from a small flusher thread. Under load that is one system call per
//! buffer rather than one per audit line, and at low load no thread is woken per line.
//!
//! Lines are never dropped. What a crash can lose is at most one flush interval of lines
//! still in the buffer; a normal exit (including SIGTERM's drain) flushes them through
//! [`FlushGuard`].

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The shared buffer in front of an output.
pub struct BufferedLog<W: Write + Send> {
    inner: Mutex<Inner<W>>,
    limit: usize,
}

struct Inner<W> {
    buf: Vec<u8>,
    out: W,
}

impl<W: Write + Send + 'static> BufferedLog<W> {
    /// A sink in front of `out` that writes out once `limit` bytes are buffered, and starts a
    /// thread that flushes every `interval`.
    pub fn start(out: W, limit: usize, interval: Duration) -> Arc<Self> {
        let mut log = Arc::new(BufferedLog {
            inner: Mutex::new(Inner {
                buf: Vec::with_capacity(limit),
                out,
            }),
            limit,
        });
        let weak = Arc::downgrade(&log);
        let spawned = std::thread::Builder::new()
            .name("graphguard-log-flush".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                match weak.upgrade() {
                    Some(log) => {
                        let _ = log.flush();
                    }
                    None => return,
                }
            });
        if spawned.is_err() {
            // Without the flusher (its closure and weak reference are gone), every line is
            // written at once: no line may wait unseen.
            if let Some(l) = Arc::get_mut(&mut log) {
                l.limit = 0;
            }
        }
        log
    }

    fn lock(&self) -> MutexGuard<'_, Inner<W>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write out whatever is buffered.
    pub fn flush(&self) -> io::Result<()> {
        let mut inner = self.lock();
        inner.drain()
    }

    /// Append one line; written out at once if the buffer is full.
    pub fn append_line(&self, line: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        inner.buf.extend_from_slice(line);
        if inner.buf.len() >= self.limit {
            inner.drain()?;
        }
        Ok(())
    }
}

impl<W: Write> Inner<W> {
    fn drain(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush());
        // A failed write (a closed stderr) must not make the buffer grow without bound.
        self.buf.clear();
        result
    }
}

/// Flushes the log when dropped (at the end of `main`).
pub struct FlushGuard<W: Write + Send + 'static>(pub Arc<BufferedLog<W>>);

impl<W: Write + Send + 'static> Drop for FlushGuard<W> {
    fn drop(&mut self) {
        let _ = self.0.flush();
    }
}

/// The writer handed to `tracing_subscriber::fmt` for each event (one `write` per line).
pub struct LineWriter<W: Write + Send + 'static>(Arc<BufferedLog<W>>);

impl<W: Write + Send + 'static> Write for LineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append_line(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + Send + 'static> tracing_subscriber::fmt::MakeWriter<'a> for LogSink<W> {
    type Writer = LineWriter<W>;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self.0.clone())
    }
}

/// The `MakeWriter` for [`BufferedLog`].
pub struct LogSink<W: Write + Send + 'static>(pub Arc<BufferedLog<W>>);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<(Vec<u8>, usize)>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut g = self.0.lock().unwrap();
            g.0.extend_from_slice(buf);
            g.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_batched_until_the_limit_then_written_in_order() {
        let out = Shared::default();
        let log = BufferedLog::start(out.clone(), 30, Duration::from_secs(3600));
        let w = LogSink(log.clone());
        for i in 0..10 {
            let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&w);
            line.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        let (text, writes) = out.0.lock().unwrap().clone();
        // 7 bytes a line: written out at 35 and 70 bytes, two writes so far.
        assert_eq!(writes, 2);
        assert_eq!(text.len(), 70);
        drop(FlushGuard(log));
        let (text, _) = out.0.lock().unwrap().clone();
        let expected: String = (0..10).map(|i| format!("line {i}\n")).collect();
        assert_eq!(String::from_utf8(text).unwrap(), expected);
    }

    #[test]
    fn the_flusher_writes_a_lone_line_within_the_interval() {
        let out = Shared::default();
        let log = BufferedLog::start(out.clone(), 1 << 20, Duration::from_millis(20));
        LineWriter(log.clone()).write_all(b"alone\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().0.is_empty() {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.0.lock().unwrap().0, b"alone\n");
    }
}
