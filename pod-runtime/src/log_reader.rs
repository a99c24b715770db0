//! Reading container log files back for `peapod logs`: incremental CRI decoding (partial
//! records joined, an unterminated trailing line kept until it completes), `--tail`
//! selection, and following growing files until the pod stops (`-f`), with truncation and
//! replacement of a file restarting it from its beginning.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use agent_protocol::StreamKind;

use crate::logs::parse_cri;

/// Errors of reading log files.
#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    /// A log file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The printer failed (for example stdout was closed).
    #[error("write log output: {0}")]
    Output(#[source] io::Error),
}

/// One log line: CRI partial records joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339 timestamp of the line's first record.
    pub timestamp: String,
    /// stdout or stderr.
    pub stream: StreamKind,
    /// The text, without the newline.
    pub text: Vec<u8>,
}

/// Turns CRI bytes, fed in arbitrary pieces, into lines.
#[derive(Debug, Default)]
pub struct CriDecoder {
    /// Bytes of a file line without its `\n` yet.
    carry: Vec<u8>,
    /// Per stream (stdout, stderr): a line whose `P` records wait for the closing `F`.
    pending: [Option<(String, Vec<u8>)>; 2],
}

fn slot(stream: StreamKind) -> usize {
    usize::from(stream == StreamKind::Stderr)
}

impl CriDecoder {
    /// Feeds bytes; returns the lines they complete. Malformed records are skipped.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<LogLine> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.carry.is_empty() {
                self.record(head, &mut out);
            } else {
                let mut raw = std::mem::take(&mut self.carry);
                raw.extend_from_slice(head);
                self.record(&raw, &mut out);
            }
        }
        self.carry.extend_from_slice(rest);
        out
    }

    fn record(&mut self, raw: &[u8], out: &mut Vec<LogLine>) {
        if raw.is_empty() {
            return;
        }
        let Some(l) = parse_cri(raw) else { return };
        let pending = &mut self.pending[slot(l.stream)];
        let (timestamp, mut text) = pending
            .take()
            .unwrap_or_else(|| (l.timestamp.to_string(), Vec::new()));
        text.extend_from_slice(l.data);
        if l.partial {
            *pending = Some((timestamp, text));
        } else {
            out.push(LogLine {
                timestamp,
                stream: l.stream,
                text,
            });
        }
    }

    /// The end of the input: an unterminated last record is taken as it is and lines still
    /// waiting for their `F` record are returned (stdout first).
    pub fn finish(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        let carry = std::mem::take(&mut self.carry);
        self.record(&carry, &mut out);
        for (i, p) in self.pending.iter_mut().enumerate() {
            if let Some((timestamp, text)) = p.take() {
                let stream = if i == 0 {
                    StreamKind::Stdout
                } else {
                    StreamKind::Stderr
                };
                out.push(LogLine {
                    timestamp,
                    stream,
                    text,
                });
            }
        }
        out
    }

    /// Forgets everything (the file started over).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// `--tail`: how many of the last lines to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Every line.
    All,
    /// The last N lines.
    Last(usize),
}

impl Tail {
    /// kubectl's convention: `-1` means all lines; other negative values are rejected.
    pub fn from_arg(n: i64) -> Option<Self> {
        match n {
            -1 => Some(Self::All),
            n => usize::try_from(n).ok().map(Self::Last),
        }
    }

    /// Keeps the last lines of `lines`.
    pub fn apply<T>(self, mut lines: Vec<T>) -> Vec<T> {
        if let Self::Last(n) = self {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        lines
    }
}

/// Reads a log file incrementally: each [`FileFollower::poll`] returns the lines completed
/// by the bytes appended since the previous one.
#[derive(Debug)]
pub struct FileFollower {
    path: PathBuf,
    offset: u64,
    inode: Option<(u64, u64)>,
    decoder: CriDecoder,
}

impl FileFollower {
    /// Follows `path` (it need not exist yet).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            inode: None,
            decoder: CriDecoder::default(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended. A missing file yields nothing; a file that shrank or was
    /// replaced by another one is read again from its beginning.
    pub fn poll(&mut self) -> Result<Vec<LogLine>, LogReadError> {
        let read_err = |source| LogReadError::Read {
            path: self.path.clone(),
            source,
        };
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(read_err(e)),
        };
        let meta = f.metadata().map_err(read_err)?;
        let inode = Some((meta.dev(), meta.ino()));
        if (self.inode.is_some() && self.inode != inode) || meta.len() < self.offset {
            self.offset = 0;
            self.decoder.reset();
        }
        self.inode = inode;
        if meta.len() == self.offset {
            return Ok(Vec::new());
        }
        f.seek(SeekFrom::Start(self.offset)).map_err(read_err)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(read_err)?;
        self.offset += buf.len() as u64;
        Ok(self.decoder.feed(&buf))
    }

    /// The end of following: what is left unterminated.
    pub fn finish(&mut self) -> Vec<LogLine> {
        self.decoder.finish()
    }
}

/// How [`print_logs`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Keep printing new lines while the pod runs.
    pub follow: bool,
    /// Lines shown from what is already there (per file).
    pub tail: Tail,
}

/// Prints the logs of `files` (in order) through `emit(file index, line)`: first the
/// existing lines of each file, cut to `opts.tail` per file; then, with `opts.follow`, new
/// lines of all files as they appear, polling every time after `sleep()`, until
/// `is_running()` says the pod stopped and everything written before was printed.
pub fn print_logs(
    files: &mut [FileFollower],
    opts: ReadOptions,
    mut is_running: impl FnMut() -> bool,
    mut sleep: impl FnMut(),
    mut emit: impl FnMut(usize, &LogLine) -> io::Result<()>,
) -> Result<(), LogReadError> {
    // Sampled before reading: once it says stopped, every write is already in the files.
    let mut running = opts.follow && is_running();
    for (i, f) in files.iter_mut().enumerate() {
        let mut lines = f.poll()?;
        if !running {
            lines.extend(f.finish());
        }
        for l in opts.tail.apply(lines) {
            emit(i, &l).map_err(LogReadError::Output)?;
        }
    }
    while running {
        sleep();
        running = is_running();
        for (i, f) in files.iter_mut().enumerate() {
            let mut lines = f.poll()?;
            if !running {
                lines.extend(f.finish());
            }
            for l in &lines {
                emit(i, l).map_err(LogReadError::Output)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::io::Write;

    use super::*;

    fn texts(lines: &[LogLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.text).into_owned())
            .collect()
    }

    #[test]
    fn decoder_keeps_unterminated_lines_and_joins_partials() {
        let mut d = CriDecoder::default();
        assert!(d.feed(b"t1 stdout F hel").is_empty());
        assert_eq!(texts(&d.feed(b"lo\nt2 stdout P a")), ["hello"]);
        // The P record is complete but its line is not.
        assert!(d.feed(b"b\nt3 stderr F err\n").len() == 1);
        let l = d.feed(b"t4 stdout F c\n");
        assert_eq!(texts(&l), ["abc"]);
        assert_eq!(l[0].timestamp, "t2");
        assert_eq!(l[0].stream, StreamKind::Stdout);
        assert!(d.feed(b"junk\n\nt5 stdout P tail").is_empty());
        assert_eq!(texts(&d.finish()), ["tail"]);
        assert!(d.finish().is_empty());
    }

    #[test]
    fn decoder_byte_by_byte_matches_whole() {
        let input = b"a stdout P x\nb stderr F e\nc stdout F y\nd stdout F \n";
        let mut whole = CriDecoder::default();
        let expected = whole.feed(input);
        let mut d = CriDecoder::default();
        let mut got = Vec::new();
        for b in input {
            got.extend(d.feed(std::slice::from_ref(b)));
        }
        assert_eq!(got, expected);
        assert_eq!(texts(&got), ["e", "xy", ""]);
    }

    #[test]
    fn tail_selection() {
        assert_eq!(Tail::from_arg(-1), Some(Tail::All));
        assert_eq!(Tail::from_arg(0), Some(Tail::Last(0)));
        assert_eq!(Tail::from_arg(-2), None);
        assert_eq!(Tail::Last(2).apply(vec![1, 2, 3]), [2, 3]);
        assert_eq!(Tail::Last(5).apply(vec![1, 2]), [1, 2]);
        assert!(Tail::Last(0).apply(vec![1]).is_empty());
        assert_eq!(Tail::All.apply(vec![1, 2]), [1, 2]);
    }

    fn append(path: &Path, data: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(data).unwrap();
    }

    #[test]
    fn follower_reads_new_bytes_and_restarts_on_truncation_or_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut f = FileFollower::new(&p);
        assert!(f.poll().unwrap().is_empty(), "missing file");
        append(&p, b"t stdout F one\nt stdout F tw");
        assert_eq!(texts(&f.poll().unwrap()), ["one"]);
        assert!(f.poll().unwrap().is_empty());
        append(&p, b"o\n");
        assert_eq!(texts(&f.poll().unwrap()), ["two"]);
        // Truncated and rewritten shorter: read from the start again.
        std::fs::write(&p, b"t stdout F new\n").unwrap();
        assert_eq!(texts(&f.poll().unwrap()), ["new"]);
        // Replaced by a longer file (rename over it).
        let q = dir.path().join("other");
        std::fs::write(&q, b"t stdout F r1\nt stdout F r2\nt stdout F r3\n").unwrap();
        std::fs::rename(&q, &p).unwrap();
        assert_eq!(texts(&f.poll().unwrap()), ["r1", "r2", "r3"]);
    }

    #[test]
    fn print_logs_follows_until_the_pod_stops_then_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        append(&a, b"t stdout F a1\nt stdout F a2\nt stdout F a3\n");
        let mut files = [FileFollower::new(&a), FileFollower::new(&b)];
        let polls = Cell::new(0);
        let out = RefCell::new(Vec::new());
        print_logs(
            &mut files,
            ReadOptions {
                follow: true,
                tail: Tail::Last(2),
            },
            || polls.get() < 3,
            || {
                // Each sleep, the "pod" writes something.
                match polls.get() {
                    0 => append(&b, b"t stdout F b1\nt stdout P b\nt stdout F"),
                    1 => append(&b, b" 2\n"),
                    // Written before it stopped, no newline and an open partial record.
                    2 => append(&a, b"t stderr P last"),
                    _ => panic!("slept after the pod stopped"),
                }
                polls.set(polls.get() + 1);
            },
            |i, l| {
                out.borrow_mut()
                    .push(format!("{i}:{}", String::from_utf8_lossy(&l.text)));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(polls.get(), 3);
        assert_eq!(out.into_inner(), ["0:a2", "0:a3", "1:b1", "1:b2", "0:last"]);
    }

    #[test]
    fn print_logs_without_follow_reads_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        append(&a, b"t stdout F 1\nt stdout F 2\nt stdout F 3");
        let mut files = [FileFollower::new(&a)];
        let mut out = Vec::new();
        print_logs(
            &mut files,
            ReadOptions {
                follow: false,
                tail: Tail::Last(2),
            },
            || panic!("no need to ask"),
            || panic!("no need to sleep"),
            |_, l| {
                out.push(l.text.clone());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(out, [b"2".to_vec(), b"3".to_vec()]);
    }

    #[test]
    fn print_logs_stops_on_output_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        append(&a, b"t stdout F 1\n");
        let mut files = [FileFollower::new(&a)];
        let e = print_logs(
            &mut files,
            ReadOptions {
                follow: true,
                tail: Tail::All,
            },
            || true,
            || panic!("no need to sleep"),
            |_, _| Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        )
        .unwrap_err();
        assert!(matches!(e, LogReadError::Output(_)), "{e}");
    }
}
