//! Container logs on the host: a follower thread per container streams records from the
//! agent into `logs/<container>.log` (CRI format) and hands whole lines to the printer; the
//! reader side turns those files back into lines for `peapod logs` (incremental reading and
//! following: [`crate::log_reader`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use agent_protocol::cri::format_record;
use agent_protocol::{
    ClientError, FrameError, LogRecord, LogSource, LogStream, LogsRequest, StreamKind,
};

use crate::agent::{AgentAddr, AgentError};

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
    /// The log stream dropped and the follower connected again; it goes on after the last
    /// record it had.
    Reconnected {
        /// Container.
        container: String,
        /// Which consecutive attempt succeeded (from 1).
        attempt: u32,
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

/// Consecutive reconnects of a dropped log stream that may fail before the follower gives up.
/// A reconnect fails when the connection cannot be made, or when it drops again before a
/// record arrived and before it was up for [`HEALTHY_STREAM`].
pub const RECONNECT_ATTEMPTS: u32 = 5;

/// Pause before each reconnect.
pub const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// A stream that stayed up this long was healthy even without records (a quiet container):
/// its drop starts a new count of reconnect attempts.
const HEALTHY_STREAM: Duration = Duration::from_secs(5);

/// Starts following `container`: records go to `file`, lines to `tx`. The thread ends when
/// the agent ends the stream, or when the connection dropped and could not be resumed (the
/// VM stopped). A dropped connection is resumed after the last record written to `file`
/// (`after_seq`), so no record is lost (unless the agent no longer has it: then it reports
/// the gap) and none is written twice.
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
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| format!("open {}: {e}", file.display()))?;
    let mut f = Follower {
        addr,
        container,
        file,
        out,
        tx,
        lines: LineAssembler::default(),
        last_seq: None,
        buf: Vec::new(),
    };
    let r = f.run();
    // What arrived is kept, the unterminated rest of a line included.
    f.flush_rest();
    r
}

/// How one connection of a log stream ended.
enum StreamEnd {
    /// The agent ended the stream (`LogsEnd`).
    Done,
    /// The connection dropped.
    Cut {
        /// What happened.
        error: String,
        /// Whether records arrived on it.
        progress: bool,
    },
}

/// Whether a client error means the connection dropped (worth resuming), not that the agent
/// refused or broke the protocol.
fn is_transport(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Frame(FrameError::Io(_) | FrameError::Closed | FrameError::Truncated)
    )
}

/// Whether a failed (re)connect may succeed when tried again.
fn connect_retryable(e: &AgentError) -> bool {
    match e {
        AgentError::Vsock(_) | AgentError::Io(_) => true,
        AgentError::Client(c) => is_transport(c),
        _ => false,
    }
}

/// The state of one container's follower, kept across reconnects.
struct Follower<'a> {
    addr: &'a AgentAddr,
    container: &'a str,
    file: &'a Path,
    out: File,
    tx: &'a Sender<LogEvent>,
    /// The partial lines: a line cut by a dropped connection is joined after the reconnect.
    lines: LineAssembler,
    /// `seq` of the last record written to the file.
    last_seq: Option<u64>,
    buf: Vec<u8>,
}

impl Follower<'_> {
    fn run(&mut self) -> Result<(), String> {
        let mut stream = self.connect().map_err(|e| e.to_string())?;
        let mut failures = 0;
        loop {
            let since = Instant::now();
            let (error, progress) = match self.pump(&mut stream)? {
                StreamEnd::Done => return Ok(()),
                StreamEnd::Cut { error, progress } => (error, progress),
            };
            if progress || since.elapsed() >= HEALTHY_STREAM {
                failures = 0;
            }
            match self.reconnect(&mut failures, error)? {
                Some(s) => stream = s,
                // The VM is gone: the stream ended with it, and what arrived is kept.
                None => {
                    self.flush_rest();
                    return Ok(());
                }
            }
        }
    }

    /// A log stream resuming after the last record written.
    fn connect(&self) -> Result<LogStream<UnixStream>, AgentError> {
        self.addr.logs(LogsRequest {
            container: self.container.to_string(),
            source: LogSource::Both,
            follow: true,
            tail: None,
            after_seq: self.last_seq,
        })
    }

    /// Reconnects after a drop (`error`), [`RECONNECT_DELAY`] apart, while fewer than
    /// [`RECONNECT_ATTEMPTS`] consecutive attempts failed; `None` when the VMM's socket is
    /// gone (the VM stopped: nothing to resume).
    fn reconnect(
        &mut self,
        failures: &mut u32,
        error: String,
    ) -> Result<Option<LogStream<UnixStream>>, String> {
        let mut last = error;
        loop {
            if *failures >= RECONNECT_ATTEMPTS {
                return Err(format!("{last} (gave up after {failures} reconnects)"));
            }
            *failures += 1;
            thread::sleep(RECONNECT_DELAY);
            match self.connect() {
                Ok(s) => {
                    let _ = self.tx.send(LogEvent::Reconnected {
                        container: self.container.to_string(),
                        attempt: *failures,
                    });
                    return Ok(Some(s));
                }
                Err(e) if e.vmm_gone() => return Ok(None),
                Err(e) if connect_retryable(&e) => last = format!("reconnect: {e}"),
                Err(e) => return Err(format!("reconnect: {e}")),
            }
        }
    }

    /// Writes and reports the records of one connection until it ends; `Err` for what
    /// resuming cannot fix (the file, the agent's errors).
    fn pump(&mut self, stream: &mut LogStream<UnixStream>) -> Result<StreamEnd, String> {
        let mut dropped = 0;
        let mut progress = false;
        loop {
            let error = match stream.next_batch() {
                Ok(Some(batch)) => {
                    progress = true;
                    self.write(batch, stream.dropped.saturating_sub(dropped))?;
                    dropped = stream.dropped;
                    continue;
                }
                Ok(None) if stream.end_received() => {
                    self.report_dropped(stream.dropped.saturating_sub(dropped));
                    return Ok(StreamEnd::Done);
                }
                // Closed at a frame boundary but without `LogsEnd`: cut off.
                Ok(None) => ClientError::Frame(FrameError::Closed),
                Err(e) => e,
            };
            // Drops reported on a cut connection but not yet followed by records are
            // reported again by the agent when the stream resumes (as a gap).
            if !is_transport(&error) {
                return Err(error.to_string());
            }
            return Ok(StreamEnd::Cut {
                error: error.to_string(),
                progress,
            });
        }
    }

    /// Appends a batch to the file, then reports `dropped` and the completed lines.
    fn write(&mut self, mut batch: Vec<LogRecord>, dropped: u64) -> Result<(), String> {
        // The agent sends only records after `after_seq`; anything else would be a repeat.
        if let Some(last) = self.last_seq {
            batch.retain(|r| r.seq > last);
        }
        self.buf.clear();
        for rec in &batch {
            format_record(rec, &mut self.buf);
        }
        self.out
            .write_all(&self.buf)
            .map_err(|e| format!("write {}: {e}", self.file.display()))?;
        if let Some(seq) = batch.iter().map(|r| r.seq).max() {
            self.last_seq = Some(seq);
        }
        self.report_dropped(dropped);
        for rec in &batch {
            for (stream, text) in self.lines.push(rec) {
                self.send_line(stream, text);
            }
        }
        Ok(())
    }

    fn report_dropped(&self, records: u64) {
        if records > 0 {
            let _ = self.tx.send(LogEvent::Dropped {
                container: self.container.to_string(),
                records,
            });
        }
    }

    fn flush_rest(&mut self) {
        for (stream, text) in self.lines.finish() {
            self.send_line(stream, text);
        }
    }

    fn send_line(&self, stream: StreamKind, text: Vec<u8>) {
        let _ = self.tx.send(LogEvent::Line {
            container: self.container.to_string(),
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
    use std::os::unix::net::UnixListener;

    use agent_protocol::frame::encode_frame;
    use agent_protocol::hybrid_vsock::{self, expect_line};
    use agent_protocol::{read_frame, read_preamble, write_frame, write_preamble};
    use agent_protocol::{Message, StreamTarget};

    fn rec(stream: StreamKind, partial: bool, data: &[u8]) -> LogRecord {
        LogRecord {
            seq: 1,
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

    /// A record with its `seq`.
    fn nrec(seq: u64, stream: StreamKind, partial: bool, data: &[u8]) -> LogRecord {
        LogRecord {
            seq,
            ..rec(stream, partial, data)
        }
    }

    /// One scripted connection to the fake VMM socket.
    enum Conn {
        /// The VMM refuses it (nothing listens on the guest port).
        Refused,
        /// The agent answers `Hello` with an error.
        AgentError,
        /// The agent serves the log stream: these frames, then (`cut`) the first half of
        /// another frame, then the connection closes (without `LogsEnd` unless it is a frame).
        Serve {
            frames: Vec<Message>,
            cut: Option<Message>,
        },
    }

    fn accept_within(l: &UnixListener, limit: Duration) -> Option<UnixStream> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    return Some(s);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        None
    }

    fn serve(mut s: UnixStream, conn: Conn) -> Option<u64> {
        let connect = format!("CONNECT {}\n", agent_protocol::DEFAULT_VSOCK_PORT);
        expect_line(&mut s, "connect", connect.as_bytes()).unwrap();
        s.write_all(b"OK 1\n").unwrap();
        read_preamble(&mut s).unwrap();
        write_preamble(&mut s).unwrap();
        let after_seq = match read_frame(&mut s).unwrap() {
            Message::Hello(StreamTarget::Logs(req)) => req.after_seq,
            m => panic!("{m:?}"),
        };
        let (frames, cut) = match conn {
            Conn::Serve { frames, cut } => (frames, cut),
            _ => {
                let kind = agent_protocol::ErrorKind::NotFound;
                let message = "no such container".into();
                write_frame(&mut s, &Message::Error { kind, message }).unwrap();
                return after_seq;
            }
        };
        let agent = "fake".into();
        write_frame(&mut s, &Message::HelloOk { agent }).unwrap();
        for f in &frames {
            write_frame(&mut s, f).unwrap();
        }
        if let Some(m) = cut {
            let f = encode_frame(&m).unwrap();
            s.write_all(&f[..f.len() / 2]).unwrap();
        }
        after_seq
    }

    /// A fake VMM socket with an agent behind it that serves `script`, one connection each;
    /// the thread returns the `after_seq` of every log request it got. It stops listening
    /// after the script, or when no connection came for 10 s.
    fn fake_agent(dir: &Path, script: Vec<Conn>) -> (AgentAddr, JoinHandle<Vec<Option<u64>>>) {
        let uds = dir.join("vmm.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        listener.set_nonblocking(true).unwrap();
        let sock = uds.clone();
        let h = thread::spawn(move || {
            let mut seen = Vec::new();
            for conn in script {
                let Some(mut s) = accept_within(&listener, Duration::from_secs(10)) else {
                    break;
                };
                if let Conn::Refused = conn {
                    // The VMM reads the request and closes: no `OK`.
                    let _ = hybrid_vsock::read_line(&mut s, "connect");
                    continue;
                }
                seen.push(serve(s, conn));
            }
            // As the VMM does when it exits.
            let _ = fs::remove_file(&sock);
            seen
        });
        (AgentAddr::new(&uds), h)
    }

    /// Follows container `app` of the fake agent into `dir/app.log`: the events sent.
    fn follow_fake(dir: &Path, addr: AgentAddr) -> Vec<LogEvent> {
        let (tx, rx) = std::sync::mpsc::channel();
        follow(addr, "app".into(), dir.join("app.log"), tx)
            .unwrap()
            .join()
            .unwrap();
        rx.iter().collect()
    }

    /// The follower's end without an error.
    fn ended() -> LogEvent {
        LogEvent::End {
            container: "app".into(),
            error: None,
        }
    }

    fn line(stream: StreamKind, text: &str) -> LogEvent {
        LogEvent::Line {
            container: "app".into(),
            stream,
            text: text.into(),
        }
    }

    fn reconnected(attempt: u32) -> LogEvent {
        LogEvent::Reconnected {
            container: "app".into(),
            attempt,
        }
    }

    #[test]
    fn dropped_streams_resume_without_losing_or_repeating_lines() {
        use StreamKind::{Stderr as E, Stdout as O};
        let dir = tempfile::tempdir().unwrap();
        let script = vec![
            // Two lines cut short (a stdout one and a stderr one), then the connection
            // breaks inside a frame.
            Conn::Serve {
                frames: vec![Message::Logs(vec![
                    nrec(1, O, false, b"one"),
                    nrec(2, O, true, b"tw"),
                    nrec(3, E, true, b"err"),
                ])],
                cut: Some(Message::Logs(vec![nrec(4, O, false, b"o")])),
            },
            // Resumed after 3: the rest of both lines, another line cut short, and the
            // connection closes at a frame boundary without `LogsEnd`.
            Conn::Serve {
                frames: vec![Message::Logs(vec![
                    nrec(4, O, false, b"o"),
                    nrec(5, E, false, b"or"),
                    nrec(6, O, true, b"three"),
                ])],
                cut: None,
            },
            // Resumed after 6; this agent repeats record 6, which must not count twice.
            Conn::Serve {
                frames: vec![
                    Message::Logs(vec![nrec(6, O, true, b"three")]),
                    Message::Logs(vec![nrec(7, O, false, b" four")]),
                    Message::LogsEnd,
                ],
                cut: None,
            },
        ];
        let (addr, agent) = fake_agent(dir.path(), script);
        let events = follow_fake(dir.path(), addr);
        assert_eq!(agent.join().unwrap(), vec![None, Some(3), Some(6)]);
        let end = ended();
        assert_eq!(
            events,
            vec![
                line(O, "one"),
                reconnected(1),
                line(O, "two"),
                line(E, "error"),
                reconnected(1),
                line(O, "three four"),
                end,
            ]
        );
        // The file holds every record once, in order.
        let text = fs::read(dir.path().join("app.log")).unwrap();
        let records: Vec<(StreamKind, bool, &[u8])> = text
            .split_inclusive(|b| *b == b'\n')
            .map(|l| parse_cri(&l[..l.len() - 1]).unwrap())
            .map(|c| (c.stream, c.partial, c.data))
            .collect();
        let want: Vec<(StreamKind, bool, &[u8])> = vec![
            (O, false, b"one"),
            (O, true, b"tw"),
            (E, true, b"err"),
            (O, false, b"o"),
            (E, false, b"or"),
            (O, true, b"three"),
            (O, false, b" four"),
        ];
        assert_eq!(records, want);
        let lines: Vec<Vec<u8>> = read_lines(&text).into_iter().map(|l| l.2).collect();
        assert_eq!(lines, [&b"one"[..], b"two", b"error", b"three four"]);
    }

    #[test]
    fn records_gone_before_a_resume_are_reported_once() {
        let o = StreamKind::Stdout;
        let dir = tempfile::tempdir().unwrap();
        let script = vec![
            Conn::Serve {
                frames: vec![
                    Message::LogsDropped { records: 2 },
                    Message::Logs(vec![nrec(3, o, false, b"c")]),
                ],
                cut: None,
            },
            // The agent's ring lost 4..=6 meanwhile: it reports the gap first.
            Conn::Serve {
                frames: vec![
                    Message::LogsDropped { records: 3 },
                    Message::Logs(vec![nrec(7, o, false, b"g")]),
                    Message::LogsEnd,
                ],
                cut: None,
            },
        ];
        let (addr, agent) = fake_agent(dir.path(), script);
        let events = follow_fake(dir.path(), addr);
        assert_eq!(agent.join().unwrap(), vec![None, Some(3)]);
        let dropped = |records| LogEvent::Dropped {
            container: "app".into(),
            records,
        };
        let end = ended();
        assert_eq!(
            events,
            vec![
                dropped(2),
                line(o, "c"),
                reconnected(1),
                dropped(3),
                line(o, "g"),
                end
            ]
        );
    }

    #[test]
    fn the_follower_gives_up_after_failed_reconnects() {
        let dir = tempfile::tempdir().unwrap();
        let mut script = vec![Conn::Serve {
            frames: vec![Message::Logs(vec![
                nrec(1, StreamKind::Stdout, false, b"a"),
                nrec(2, StreamKind::Stdout, true, b"b"),
            ])],
            cut: None,
        }];
        // Every reconnect is tried CONNECT_ATTEMPTS times by `AgentAddr::logs`.
        let refusals = RECONNECT_ATTEMPTS * crate::agent::CONNECT_ATTEMPTS;
        script.extend((0..refusals).map(|_| Conn::Refused));
        let (addr, agent) = fake_agent(dir.path(), script);
        let t0 = Instant::now();
        let mut events = follow_fake(dir.path(), addr);
        assert!(t0.elapsed() >= RECONNECT_DELAY * RECONNECT_ATTEMPTS);
        assert_eq!(agent.join().unwrap(), vec![None]);
        let Some(LogEvent::End { error: Some(e), .. }) = events.pop() else {
            panic!("{events:?}");
        };
        assert!(e.contains("gave up after 5 reconnects"), "{e}");
        // What arrived is kept, the unterminated line too.
        let o = StreamKind::Stdout;
        assert_eq!(events, vec![line(o, "a"), line(o, "b")]);
    }

    #[test]
    fn a_stream_cut_by_the_vm_stopping_ends_quietly() {
        let dir = tempfile::tempdir().unwrap();
        let script = vec![Conn::Serve {
            frames: vec![Message::Logs(vec![nrec(1, StreamKind::Stdout, true, b"x")])],
            cut: None,
        }];
        let (addr, agent) = fake_agent(dir.path(), script);
        let events = follow_fake(dir.path(), addr);
        assert_eq!(agent.join().unwrap(), vec![None]);
        // The socket is found gone on the first reconnect: no error, no "gave up".
        let end = ended();
        assert_eq!(events, vec![line(StreamKind::Stdout, "x"), end]);
    }

    #[test]
    fn an_agent_error_on_reconnect_ends_the_follower() {
        let dir = tempfile::tempdir().unwrap();
        let script = vec![
            Conn::Serve {
                frames: vec![Message::Logs(vec![nrec(1, StreamKind::Stderr, true, b"x")])],
                cut: Some(Message::LogsEnd),
            },
            Conn::AgentError,
        ];
        let (addr, agent) = fake_agent(dir.path(), script);
        let mut events = follow_fake(dir.path(), addr);
        assert_eq!(agent.join().unwrap(), vec![None, Some(1)]);
        let Some(LogEvent::End { error: Some(e), .. }) = events.pop() else {
            panic!("{events:?}");
        };
        assert!(e.contains("no such container"), "{e}");
        assert_eq!(events, vec![line(StreamKind::Stderr, "x")]);
    }
}
