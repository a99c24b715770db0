//! Container logs: splits pipe output into timestamped records (partial lines and long lines
//! become bounded `P` chunks), keeps a bounded ring per container for late readers and fans
//! records out to attached readers through bounded queues. Every record gets its `seq` (its
//! position in the container's log, from 1) when it enters the ring, so a reader whose
//! connection dropped can resume after the last record it has (`after_seq`).
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
            seq: 0, // assigned by `LogBuffer::publish`
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
    /// Records were dropped since the last call (for a resuming reader at first: records
    /// after its `after_seq` that had already left the ring).
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

    fn add_dropped(&self, records: u64) {
        let mut st = self.lock();
        st.dropped = st.dropped.saturating_add(records);
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
    /// `seq` of the last record published (0: none yet).
    last_seq: u64,
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

impl BufState {
    /// How many records after `after_seq` already left the ring.
    fn gone_after(&self, after_seq: u64) -> u64 {
        let oldest = match self.ring.front() {
            Some(r) => r.seq,
            None => self.last_seq.saturating_add(1),
        };
        oldest.saturating_sub(after_seq.saturating_add(1))
    }
}

impl LogBuffer {
    fn lock(&self) -> MutexGuard<'_, BufState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds records to the ring and to every reader, numbering them (`seq`).
    pub fn publish(&self, records: Vec<LogRecord>) {
        if records.is_empty() {
            return;
        }
        let mut st = self.lock();
        let mut touched = Vec::new();
        for mut rec in records {
            // 2^64 records cannot be written in the lifetime of a pod: saturating is safe.
            st.last_seq = st.last_seq.saturating_add(1);
            rec.seq = st.last_seq;
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

    /// Attaches a reader: it gets the history (records with `seq > after_seq`, of those the
    /// last `tail`) then, when `follow`, new records until the log is finished. A reader
    /// resuming after records that already left the ring first gets `Dropped(n)`, `n` the
    /// records (of both streams) that are gone, unless `tail` cut the history anyway.
    pub fn attach(
        &self,
        source: LogSource,
        tail: Option<u32>,
        follow: bool,
        after_seq: Option<u64>,
    ) -> Arc<ReaderQueue> {
        let mut st = self.lock();
        let q = Arc::new(ReaderQueue::default());
        let after = after_seq.unwrap_or(0);
        let history: Vec<&Arc<LogRecord>> = st
            .ring
            .iter()
            .filter(|r| r.seq > after && wants(source, r.stream))
            .collect();
        let tail = tail.map(|t| usize::try_from(t).unwrap_or(usize::MAX));
        let skip = tail.map_or(0, |t| history.len().saturating_sub(t));
        // A gap before the oldest record only matters when the reader wanted older records.
        let wanted_older = tail.is_none_or(|t| t > history.len());
        let gone = after_seq.map_or(0, |a| st.gone_after(a));
        if gone > 0 && wanted_older {
            q.add_dropped(gone);
        }
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
            seq: 0,
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
        let q = log.attach(LogSource::Stdout, Some(1), true, None);
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
        let all = log.attach(LogSource::Both, None, false, None);
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
        let q = log.attach(LogSource::Both, None, true, None);
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
        let q = log.attach(LogSource::Both, None, true, None);
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

    /// What a reader gets until the end (or, `until_idle`, until nothing is queued):
    /// `Err(n)` for a drop report, `Ok(seq)` per record.
    fn read_items(q: &ReaderQueue, until_idle: bool) -> Vec<Result<u64, u64>> {
        let mut got = Vec::new();
        loop {
            match q.next(1000, 1 << 20, Duration::from_millis(10)) {
                ReaderItem::Records(r) => got.extend(r.iter().map(|r| Ok(r.seq))),
                ReaderItem::Dropped(n) => got.push(Err(n)),
                ReaderItem::End => return got,
                ReaderItem::Idle if until_idle => return got,
                ReaderItem::Idle => panic!("idle reader: {got:?}"),
            }
        }
    }

    fn drain(q: &ReaderQueue) -> Vec<Result<u64, u64>> {
        read_items(q, false)
    }

    fn oks(seqs: std::ops::RangeInclusive<u64>) -> Vec<Result<u64, u64>> {
        seqs.map(Ok).collect()
    }

    #[test]
    fn seq_numbers_records_per_container_across_restarts() {
        let log = LogBuffer::default();
        let mut out = Vec::new();
        LineSplitter::new(StreamKind::Stdout).push(b"a\nb\n", 1, &mut out);
        log.publish(out);
        log.publish(vec![rec(StreamKind::Stderr, b"c")]);
        // The container exits and is started again: the same log, the numbering goes on.
        log.finish();
        log.reopen();
        log.publish(vec![
            rec(StreamKind::Stdout, b"d"),
            rec(StreamKind::Stdout, b"e"),
        ]);
        let q = log.attach(LogSource::Both, None, false, None);
        let mut got = Vec::new();
        while let ReaderItem::Records(r) = q.next(10, 1 << 20, Duration::ZERO) {
            got.extend(r.iter().map(|r| (r.seq, r.data.clone())));
        }
        let want: Vec<(u64, Vec<u8>)> = [b"a", b"b", b"c", b"d", b"e"]
            .iter()
            .zip(1..)
            .map(|(d, i)| (i, d.to_vec()))
            .collect();
        assert_eq!(got, want);
        // Another container's log counts on its own.
        let other = LogBuffer::default();
        other.publish(vec![rec(StreamKind::Stdout, b"x")]);
        assert_eq!(
            drain(&other.attach(LogSource::Both, None, false, None)),
            oks(1..=1)
        );
    }

    #[test]
    fn after_seq_skips_history_and_live_records_up_to_it() {
        let log = LogBuffer::default();
        log.publish(vec![
            rec(StreamKind::Stdout, b"1"),
            rec(StreamKind::Stderr, b"2"),
            rec(StreamKind::Stdout, b"3"),
            rec(StreamKind::Stderr, b"4"),
        ]);
        let q = log.attach(LogSource::Both, None, true, Some(2));
        let q_out = log.attach(LogSource::Stdout, None, true, Some(1));
        log.publish(vec![rec(StreamKind::Stdout, b"5")]);
        log.finish();
        assert_eq!(drain(&q), oks(3..=5));
        assert_eq!(drain(&q_out), vec![Ok(3), Ok(5)]);
        // Caught up, or ahead of the log: nothing, and no gap either.
        assert_eq!(
            drain(&log.attach(LogSource::Both, None, false, Some(5))),
            vec![]
        );
        assert_eq!(
            drain(&log.attach(LogSource::Both, None, false, Some(99))),
            vec![]
        );
        // `Some(0)` is the whole log, like `None`.
        assert_eq!(
            drain(&log.attach(LogSource::Both, None, false, Some(0))),
            oks(1..=5)
        );
    }

    #[test]
    fn tail_applies_after_the_after_seq_filter() {
        let log = LogBuffer::default();
        log.publish((0..10).map(|_| rec(StreamKind::Stdout, b"x")).collect());
        let attach = |tail, after| drain(&log.attach(LogSource::Both, tail, false, after));
        assert_eq!(attach(Some(2), Some(5)), oks(9..=10));
        assert_eq!(attach(Some(10), Some(5)), oks(6..=10));
        assert_eq!(attach(Some(3), Some(9)), oks(10..=10));
        assert_eq!(attach(Some(0), Some(5)), vec![]);
        assert_eq!(attach(Some(3), None), oks(8..=10));
    }

    #[test]
    fn resuming_after_evicted_records_reports_the_gap_first() {
        let log = LogBuffer::default();
        let total = u64::try_from(RING_RECORDS).unwrap() + 10;
        for _ in 0..total / 1000 + 1 {
            log.publish((0..1000).map(|_| rec(StreamKind::Stdout, b"")).collect());
        }
        let last = (total / 1000 + 1) * 1000;
        let oldest = log.lock().ring.front().unwrap().seq;
        assert_eq!(oldest, last - u64::try_from(RING_RECORDS).unwrap() + 1);
        // Records 4..oldest-1 are gone: the reader learns how many, then gets the rest.
        let got = drain(&log.attach(LogSource::Both, None, false, Some(3)));
        assert_eq!(got[0], Err(oldest - 4));
        assert_eq!(got[1..], oks(oldest..=last)[..]);
        // A following reader gets the gap before the history, then live records.
        let q = log.attach(LogSource::Both, None, true, Some(oldest - 2));
        let mut got = read_items(&q, true);
        log.publish(vec![rec(StreamKind::Stdout, b"live")]);
        log.finish();
        got.extend(drain(&q));
        assert_eq!(got[0], Err(1));
        assert_eq!(got[1..], oks(oldest..=last + 1)[..]);
        // The live record pushed the oldest one out.
        let oldest = log.lock().ring.front().unwrap().seq;
        // No gap: resuming right before the oldest record, no after_seq at all, or a tail
        // that did not reach back to the gap.
        for (tail, after) in [(None, Some(oldest - 1)), (None, None), (Some(5), Some(3))] {
            let got = drain(&log.attach(LogSource::Both, tail, false, after));
            assert!(got.iter().all(Result::is_ok), "{tail:?} {after:?}");
        }
        // A tail longer than what is left does reach back to the gap.
        let len = u32::try_from(RING_RECORDS).unwrap() + 5;
        let got = drain(&log.attach(LogSource::Both, Some(len), false, Some(3)));
        assert_eq!(got[0], Err(oldest - 4));
    }
}
