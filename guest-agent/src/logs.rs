//! Container logs: splits pipe output into timestamped records (partial lines and long lines
//! become bounded `P` chunks), keeps a bounded ring per container for late readers and fans
//! records out to attached readers through bounded queues.
//!
//! Drop policy: a reader whose queue holds more than [`READER_QUEUE_BYTES`] (or
//! [`READER_QUEUE_RECORDS`] records, which bounds empty lines) loses new records
//! (counted and reported to it as `LogsDropped`); the container and other readers never wait.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use agent_protocol::cri::now_ns;
use agent_protocol::limits::MAX_LOG_CHUNK;
use agent_protocol::{LogRecord, LogSource, StreamKind};

/// Bytes of history kept per container.
pub const RING_BYTES: usize = 4 * 1024 * 1024;
/// Bytes a reader may have queued before records are dropped for it.
pub const READER_QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Records of history kept per container (bounds zero-byte records too).
pub const RING_RECORDS: usize = 64 * 1024;
/// Records a reader may have queued before records are dropped for it.
pub const READER_QUEUE_RECORDS: usize = 64 * 1024;
/// Size of each read from a container pipe.
pub const READ_CHUNK: usize = 64 * 1024;

/// Splits a byte stream into log records of at most `max` bytes each.
#[derive(Debug)]
pub struct LineSplitter {
    stream: StreamKind,
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    /// A splitter with the protocol's chunk size.
    pub fn new(stream: StreamKind) -> Self {
        Self::with_max(stream, MAX_LOG_CHUNK)
    }

    /// A splitter with another chunk size (tests).
    pub fn with_max(stream: StreamKind, max: usize) -> Self {
        Self {
            stream,
            pending: Vec::new(),
            max: max.max(1),
        }
    }

    fn emit(&mut self, ts: i64, partial: bool, out: &mut Vec<LogRecord>) {
        out.push(LogRecord {
            ts_ns: ts,
            stream: self.stream,
            partial,
            data: std::mem::take(&mut self.pending),
        });
    }

    /// Feeds bytes; complete lines and full chunks are appended to `out`.
    pub fn push(&mut self, mut data: &[u8], ts: i64, out: &mut Vec<LogRecord>) {
        while !data.is_empty() {
            let room = self.max - self.pending.len();
            let window = &data[..data.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&window[..i]);
                    self.emit(ts, false, out);
                    data = &data[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(window);
                    data = &data[window.len()..];
                    if self.pending.len() == self.max {
                        // A line of max bytes or more: emit a partial chunk, unless the very
                        // next byte ends the line.
                        if data.first() == Some(&b'\n') {
                            self.emit(ts, false, out);
                            data = &data[1..];
                        } else {
                            self.emit(ts, true, out);
                        }
                    }
                }
            }
        }
    }

    /// End of stream: an unterminated last line is emitted as a full line.
    pub fn finish(&mut self, ts: i64, out: &mut Vec<LogRecord>) {
        if !self.pending.is_empty() {
            self.emit(ts, false, out);
        }
    }
}

/// One attached reader's queue.
#[derive(Default)]
pub struct ReaderQueue {
    state: Mutex<ReaderState>,
    cv: Condvar,
}

#[derive(Default)]
struct ReaderState {
    records: VecDeque<Arc<LogRecord>>,
    bytes: usize,
    dropped: u64,
    ended: bool,
}

/// What a reader gets from [`ReaderQueue::next`].
#[derive(Debug)]
pub enum ReaderItem {
    /// Records (at most `max` of them).
    Records(Vec<Arc<LogRecord>>),
    /// Records were dropped since the last call.
    Dropped(u64),
    /// The log ended.
    End,
    /// Nothing arrived within the timeout.
    Idle,
}

impl ReaderQueue {
    fn lock(&self) -> MutexGuard<'_, ReaderState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, rec: &Arc<LogRecord>) {
        let mut st = self.lock();
        if st.bytes + rec.data.len() > READER_QUEUE_BYTES
            || st.records.len() >= READER_QUEUE_RECORDS
        {
            st.dropped += 1;
        } else {
            st.bytes += rec.data.len();
            st.records.push_back(rec.clone());
        }
    }

    fn end(&self) {
        self.lock().ended = true;
        self.cv.notify_all();
    }

    /// Waits for records, up to `max_records` and about `max_bytes`.
    pub fn next(&self, max_records: usize, max_bytes: usize, timeout: Duration) -> ReaderItem {
        let mut st = self.lock();
        if st.records.is_empty() && st.dropped == 0 && !st.ended {
            st = self
                .cv
                .wait_timeout(st, timeout)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        if st.dropped > 0 {
            return ReaderItem::Dropped(std::mem::take(&mut st.dropped));
        }
        if st.records.is_empty() {
            return if st.ended {
                ReaderItem::End
            } else {
                ReaderItem::Idle
            };
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(r) = st.records.front() {
            if out.len() >= max_records || (bytes > 0 && bytes + r.data.len() > max_bytes) {
                break;
            }
            bytes += r.data.len();
            if let Some(r) = st.records.pop_front() {
                out.push(r);
            }
        }
        st.bytes -= bytes;
        ReaderItem::Records(out)
    }
}

struct Reader {
    source: LogSource,
    queue: Arc<ReaderQueue>,
}

#[derive(Default)]
struct BufState {
    ring: VecDeque<Arc<LogRecord>>,
    ring_bytes: usize,
    readers: Vec<Reader>,
    finished: bool,
}

/// The log of one container (across restarts).
#[derive(Default)]
pub struct LogBuffer {
    state: Mutex<BufState>,
}

fn wants(source: LogSource, s: StreamKind) -> bool {
    matches!(
        (source, s),
        (LogSource::Both, _)
            | (LogSource::Stdout, StreamKind::Stdout)
            | (LogSource::Stderr, StreamKind::Stderr)
    )
}

impl LogBuffer {
    fn lock(&self) -> MutexGuard<'_, BufState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds records to the ring and to every reader.
    pub fn publish(&self, records: Vec<LogRecord>) {
        if records.is_empty() {
            return;
        }
        let mut st = self.lock();
        let mut touched = Vec::new();
        for rec in records {
            let rec = Arc::new(rec);
            for (i, r) in st.readers.iter().enumerate() {
                if wants(r.source, rec.stream) {
                    r.queue.push(&rec);
                    if !touched.contains(&i) {
                        touched.push(i);
                    }
                }
            }
            st.ring_bytes += rec.data.len();
            st.ring.push_back(rec);
            while st.ring_bytes > RING_BYTES || st.ring.len() > RING_RECORDS {
                match st.ring.pop_front() {
                    Some(old) => st.ring_bytes -= old.data.len(),
                    None => break,
                }
            }
        }
        for i in touched {
            st.readers[i].queue.cv.notify_all();
        }
        st.readers.retain(|r| Arc::strong_count(&r.queue) > 1);
    }

    /// Attaches a reader: it gets the history (last `tail` records) then, when `follow`,
    /// new records until the log is finished.
    pub fn attach(&self, source: LogSource, tail: Option<u32>, follow: bool) -> Arc<ReaderQueue> {
        let mut st = self.lock();
        let q = Arc::new(ReaderQueue::default());
        let history: Vec<&Arc<LogRecord>> =
            st.ring.iter().filter(|r| wants(source, r.stream)).collect();
        let skip = match tail {
            Some(t) => history.len().saturating_sub(t as usize),
            None => 0,
        };
        for r in &history[skip..] {
            q.push(r);
        }
        if follow && !st.finished {
            st.readers.push(Reader {
                source,
                queue: q.clone(),
            });
        } else {
            q.end();
        }
        q
    }

    /// Marks the log finished: followers get the end after the queued records.
    pub fn finish(&self) {
        let mut st = self.lock();
        st.finished = true;
        for r in st.readers.drain(..) {
            r.queue.end();
        }
    }

    /// Re-opens a finished log (the container is created again).
    pub fn reopen(&self) {
        self.lock().finished = false;
    }
}

/// Copies a container pipe into the log until EOF.
pub fn pump(mut pipe: impl Read, stream: StreamKind, log: &LogBuffer) {
    let mut splitter = LineSplitter::new(stream);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut out = Vec::new();
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                splitter.push(&buf[..n], now_ns(), &mut out);
                log.publish(std::mem::take(&mut out));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    splitter.finish(now_ns(), &mut out);
    log.publish(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<(bool, Vec<u8>)> {
        let mut s = LineSplitter::with_max(StreamKind::Stdout, max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, 1, &mut out);
        }
        s.finish(2, &mut out);
        out.into_iter().map(|r| (r.partial, r.data)).collect()
    }

    #[test]
    fn splits_lines_across_reads() {
        assert_eq!(
            split(&[b"hel", b"lo\nwor", b"ld\n\nlast"], 100),
            vec![
                (false, b"hello".to_vec()),
                (false, b"world".to_vec()),
                (false, b"".to_vec()),
                (false, b"last".to_vec()),
            ]
        );
    }

    #[test]
    fn long_lines_become_bounded_partials() {
        assert_eq!(
            split(&[b"abcdefgh", b"ij\n"], 4),
            vec![
                (true, b"abcd".to_vec()),
                (true, b"efgh".to_vec()),
                (false, b"ij".to_vec()),
            ]
        );
        // Exactly max bytes followed by newline is one full line.
        assert_eq!(
            split(&[b"abcd\nxy\n"], 4),
            vec![(false, b"abcd".to_vec()), (false, b"xy".to_vec())]
        );
    }

    #[test]
    fn megabyte_lines_use_bounded_chunks() {
        let line = vec![b'x'; 3 * 1024 * 1024 + 5];
        let mut s = LineSplitter::new(StreamKind::Stderr);
        let mut out = Vec::new();
        for c in line.chunks(READ_CHUNK) {
            s.push(c, 0, &mut out);
            assert!(s.pending.len() <= MAX_LOG_CHUNK);
        }
        s.push(b"\n", 0, &mut out);
        assert!(out.iter().all(|r| r.data.len() <= MAX_LOG_CHUNK));
        assert_eq!(out.iter().map(|r| r.data.len()).sum::<usize>(), line.len());
        assert!(out[..out.len() - 1].iter().all(|r| r.partial));
        assert!(!out.last().unwrap().partial);
    }

    fn rec(stream: StreamKind, data: &[u8]) -> LogRecord {
        LogRecord {
            ts_ns: 0,
            stream,
            partial: false,
            data: data.to_vec(),
        }
    }

    #[test]
    fn ring_tail_follow_and_end() {
        let log = LogBuffer::default();
        log.publish(vec![
            rec(StreamKind::Stdout, b"1"),
            rec(StreamKind::Stderr, b"2"),
            rec(StreamKind::Stdout, b"3"),
        ]);
        let q = log.attach(LogSource::Stdout, Some(1), true);
        log.publish(vec![rec(StreamKind::Stdout, b"4")]);
        log.finish();
        let mut got = Vec::new();
        loop {
            match q.next(10, 1 << 20, Duration::from_millis(10)) {
                ReaderItem::Records(r) => got.extend(r.iter().map(|r| r.data.clone())),
                ReaderItem::End => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, vec![b"3".to_vec(), b"4".to_vec()]);
        let all = log.attach(LogSource::Both, None, false);
        match all.next(10, 1 << 20, Duration::ZERO) {
            ReaderItem::Records(r) => assert_eq!(r.len(), 4),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_lines_keep_ring_and_queue_bounded() {
        // A container printing only newlines makes zero-byte records: they must not grow the
        // ring or a slow reader's queue without bound.
        let log = LogBuffer::default();
        let q = log.attach(LogSource::Both, None, true);
        let n = RING_RECORDS.max(READER_QUEUE_RECORDS) + 10;
        for _ in 0..n / 1000 + 1 {
            log.publish((0..1000).map(|_| rec(StreamKind::Stdout, b"")).collect());
        }
        assert!(log.lock().ring.len() <= RING_RECORDS);
        assert!(q.lock().records.len() <= READER_QUEUE_RECORDS);
        assert!(q.lock().dropped > 0);
    }

    #[test]
    fn slow_reader_drops_instead_of_blocking() {
        let log = LogBuffer::default();
        let q = log.attach(LogSource::Both, None, true);
        let big = vec![b'x'; MAX_LOG_CHUNK];
        let n = READER_QUEUE_BYTES / MAX_LOG_CHUNK + 10;
        for _ in 0..n {
            log.publish(vec![rec(StreamKind::Stdout, &big)]);
        }
        match q.next(1, 1, Duration::ZERO) {
            ReaderItem::Dropped(d) => assert_eq!(d, 10),
            other => panic!("{other:?}"),
        }
        // The ring stays bounded too.
        assert!(log.lock().ring_bytes <= RING_BYTES);
    }
}
