//! Container logs on the host: a follower thread per container streams records from the
//! agent into `logs/<container>.log` (CRI format) and hands whole lines to the printer; the
//! reader side turns those files back into lines for `peapod logs` (incremental reading and
//! following: [`crate::log_reader`]).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};

use agent_protocol::cri::format_record;
use agent_protocol::{LogRecord, LogSource, LogsRequest, StreamKind};

use crate::agent::AgentAddr;

/// Longest line handed to the printer; longer lines are cut into pieces of this size.
pub const MAX_PRINTED_LINE: usize = 64 * 1024;

/// What a follower reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// A complete line.
    Line {
        /// Container.
        container: String,
        /// stdout or stderr.
        stream: StreamKind,
        /// Bytes without the newline.
        text: Vec<u8>,
    },
    /// The agent dropped records because the host fell behind.
    Dropped {
        /// Container.
        container: String,
        /// How many.
        records: u64,
    },
    /// The container's log ended (it will not run again), or the follower failed.
    End {
        /// Container.
        container: String,
        /// Why it ended abnormally.
        error: Option<String>,
    },
}

/// Joins partial records into lines, per stream, with a bound on a line's length.
#[derive(Debug, Default)]
pub struct LineAssembler {
    out: Vec<u8>,
    err: Vec<u8>,
}

impl LineAssembler {
    /// Feeds one record; returns the completed lines.
    pub fn push(&mut self, rec: &LogRecord) -> Vec<(StreamKind, Vec<u8>)> {
        let buf = match rec.stream {
            StreamKind::Stdout => &mut self.out,
            StreamKind::Stderr => &mut self.err,
        };
        let mut lines = Vec::new();
        buf.extend_from_slice(&rec.data);
        while buf.len() > MAX_PRINTED_LINE {
            let rest = buf.split_off(MAX_PRINTED_LINE);
            lines.push((rec.stream, std::mem::replace(buf, rest)));
        }
        if !rec.partial {
            lines.push((rec.stream, std::mem::take(buf)));
        }
        lines
    }

    /// What is left unterminated at the end.
    pub fn finish(&mut self) -> Vec<(StreamKind, Vec<u8>)> {
        let mut v = Vec::new();
        for (k, b) in [
            (StreamKind::Stdout, &mut self.out),
            (StreamKind::Stderr, &mut self.err),
        ] {
            if !b.is_empty() {
                v.push((k, std::mem::take(b)));
            }
        }
        v
    }
}

/// Starts following `container`: records go to `file`, lines to `tx`. The thread ends when
/// the agent ends the stream or the connection drops (the VM stopped).
pub fn follow(
    addr: AgentAddr,
    container: String,
    file: PathBuf,
    tx: Sender<LogEvent>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("logs-{container}"))
        .spawn(move || {
            let error = follow_inner(&addr, &container, &file, &tx).err();
            let _ = tx.send(LogEvent::End { container, error });
        })
}

fn follow_inner(
    addr: &AgentAddr,
    container: &str,
    file: &Path,
    tx: &Sender<LogEvent>,
) -> Result<(), String> {
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| format!("open {}: {e}", file.display()))?;
    let mut stream = addr
        .logs(LogsRequest {
            container: container.to_string(),
            source: LogSource::Both,
            follow: true,
            tail: None,
        })
        .map_err(|e| e.to_string())?;
    let mut lines = LineAssembler::default();
    let mut dropped = 0;
    let mut buf = Vec::new();
    loop {
        let batch = match stream.next_batch() {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                // The VM went away under the stream: what arrived is kept.
                flush_rest(&mut lines, container, tx);
                return Err(e.to_string());
            }
        };
        buf.clear();
        for rec in &batch {
            format_record(rec, &mut buf);
        }
        out.write_all(&buf)
            .map_err(|e| format!("write {}: {e}", file.display()))?;
        if stream.dropped != dropped {
            let _ = tx.send(LogEvent::Dropped {
                container: container.to_string(),
                records: stream.dropped - dropped,
            });
            dropped = stream.dropped;
        }
        for rec in &batch {
            for (stream, text) in lines.push(rec) {
                let _ = tx.send(LogEvent::Line {
                    container: container.to_string(),
                    stream,
                    text,
                });
            }
        }
    }
    flush_rest(&mut lines, container, tx);
    Ok(())
}

fn flush_rest(lines: &mut LineAssembler, container: &str, tx: &Sender<LogEvent>) {
    for (stream, text) in lines.finish() {
        let _ = tx.send(LogEvent::Line {
            container: container.to_string(),
            stream,
            text,
        });
    }
}

/// One parsed CRI log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// RFC 3339 timestamp.
    pub timestamp: &'a str,
    /// stdout or stderr.
    pub stream: StreamKind,
    /// A partial line (`P`).
    pub partial: bool,
    /// The bytes.
    pub data: &'a [u8],
}

/// Parses `TIMESTAMP STREAM F|P DATA` (without the newline).
pub fn parse_cri(line: &[u8]) -> Option<CriLine<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => StreamKind::Stdout,
        b"stderr" => StreamKind::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(CriLine {
        timestamp,
        stream,
        partial,
        data: parts.next().unwrap_or_default(),
    })
}

/// The lines of a CRI log file, partial records joined: `(timestamp of the first piece,
/// stream, text)`. Malformed lines are skipped. See [`crate::log_reader`] for reading files
/// that grow.
pub fn read_lines(text: &[u8]) -> Vec<(String, StreamKind, Vec<u8>)> {
    let mut d = crate::log_reader::CriDecoder::default();
    let mut lines = d.feed(text);
    lines.extend(d.finish());
    lines
        .into_iter()
        .map(|l| (l.timestamp, l.stream, l.text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(stream: StreamKind, partial: bool, data: &[u8]) -> LogRecord {
        LogRecord {
            ts_ns: 1,
            stream,
            partial,
            data: data.to_vec(),
        }
    }

    #[test]
    fn partials_join_per_stream_and_long_lines_are_cut() {
        let mut a = LineAssembler::default();
        assert!(a.push(&rec(StreamKind::Stdout, true, b"hel")).is_empty());
        assert!(a.push(&rec(StreamKind::Stderr, true, b"E")).is_empty());
        let l = a.push(&rec(StreamKind::Stdout, false, b"lo"));
        assert_eq!(l, vec![(StreamKind::Stdout, b"hello".to_vec())]);
        let big = vec![b'x'; MAX_PRINTED_LINE + 10];
        let l = a.push(&rec(StreamKind::Stdout, false, &big));
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].1.len(), MAX_PRINTED_LINE);
        assert_eq!(l[1].1.len(), 10);
        assert_eq!(a.finish(), vec![(StreamKind::Stderr, b"E".to_vec())]);
    }

    #[test]
    fn cri_files_read_back_as_lines() {
        let mut buf = Vec::new();
        for r in [
            rec(StreamKind::Stdout, true, b"a b"),
            rec(StreamKind::Stderr, false, b"err"),
            rec(StreamKind::Stdout, false, b" c"),
            rec(StreamKind::Stdout, false, b""),
        ] {
            format_record(&r, &mut buf);
        }
        buf.extend_from_slice(b"garbage line\n");
        let lines = read_lines(&buf);
        let texts: Vec<(StreamKind, &[u8])> =
            lines.iter().map(|(_, k, d)| (*k, d.as_slice())).collect();
        assert_eq!(
            texts,
            vec![
                (StreamKind::Stderr, &b"err"[..]),
                (StreamKind::Stdout, &b"a b c"[..]),
                (StreamKind::Stdout, &b""[..]),
            ]
        );
        assert!(parse_cri(b"t stdout X y").is_none());
    }
}
