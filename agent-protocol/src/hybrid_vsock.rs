//! Host side of Firecracker-style hybrid vsock, as the VMM offers it: guest-initiated
//! connections arrive on the Unix socket `<uds>_<port>`; host-initiated ones connect to `<uds>`,
//! send `CONNECT <port>\n` and get `OK <hostport>\n`, after which the socket carries the guest
//! stream.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

/// Longest line accepted from the peer.
const MAX_LINE: usize = 256;

/// Errors of the hybrid vsock exchanges.
#[derive(Debug, Error)]
pub enum HybridVsockError {
    /// The VMM's socket does not accept connections (not there yet, or gone).
    #[error("connect {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Socket I/O failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The VMM closed the socket or answered something else than `OK <port>` to `CONNECT`
    /// (the guest refused the connection or did not answer: nothing listens on the port yet).
    #[error("guest port {port} refused the connection (vmm replied {reply:?})")]
    Refused {
        /// Guest port.
        port: u32,
        /// What the VMM sent (empty on end of file or reset).
        reply: String,
    },
    /// The peer sent something else than expected.
    #[error("{what}: expected {expected:?}, got {got:?}")]
    Unexpected {
        /// What was being read.
        what: String,
        /// Expected text.
        expected: String,
        /// Received text.
        got: String,
    },
    /// Nothing arrived before the deadline.
    #[error("no guest connection on {0} before the deadline")]
    Timeout(PathBuf),
    /// The caller asked to stop waiting (e.g. the VMM exited).
    #[error("stopped waiting for a guest connection on {path}: {reason}")]
    Aborted {
        /// Socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HybridVsockError {
    let what = what.into();
    move |source| {
        let what = match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("{what}: timed out")
            }
            _ => what,
        };
        HybridVsockError::Io { what, source }
    }
}

/// The Unix socket where guest connections to `port` arrive.
pub fn port_path(uds: &Path, port: u32) -> PathBuf {
    let mut s = uds.as_os_str().to_owned();
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// Binds the listener for guest connections to `port`.
pub fn listen(uds: &Path, port: u32) -> Result<UnixListener, HybridVsockError> {
    let path = port_path(uds, port);
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).map_err(io(format!("bind {}", path.display())))?;
    l.set_nonblocking(true)
        .map_err(io(format!("set_nonblocking {}", path.display())))?;
    Ok(l)
}

/// Accepts one guest connection before `deadline`; `check` is polled while waiting and stops
/// the wait with its message when it returns `Some`.
pub fn accept(
    listener: &UnixListener,
    deadline: Instant,
    io_timeout: Duration,
    mut check: impl FnMut() -> Option<String>,
) -> Result<UnixStream, HybridVsockError> {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .unwrap_or_default();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(io("set_nonblocking"))?;
                set_timeouts(&stream, io_timeout)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(io(format!("accept on {}", path.display()))(e)),
        }
        if let Some(reason) = check() {
            return Err(HybridVsockError::Aborted { path, reason });
        }
        if Instant::now() >= deadline {
            return Err(HybridVsockError::Timeout(path));
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Host-side port number from the VMM's `OK <port>\n` line.
pub fn parse_ok(line: &str) -> Option<u32> {
    line.strip_prefix("OK ")?.strip_suffix('\n')?.parse().ok()
}

/// Connects to guest vsock `port` through the VMM socket `uds`: `CONNECT <port>\n`, expects
/// `OK <n>\n`; `io_timeout` bounds the handshake and every later read and write on the
/// returned stream. Nothing after the `OK` line is consumed.
pub fn connect_guest(
    uds: &Path,
    port: u32,
    io_timeout: Duration,
) -> Result<UnixStream, HybridVsockError> {
    let mut s = UnixStream::connect(uds).map_err(|source| HybridVsockError::Connect {
        path: uds.to_path_buf(),
        source,
    })?;
    set_timeouts(&s, io_timeout)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(io("write CONNECT"))?;
    let reply = match read_line_raw(&mut s) {
        Ok(r) => r,
        // A reset by the VMM is a refusal like an end of file.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => String::new(),
        Err(e) => return Err(io("read CONNECT reply")(e)),
    };
    if parse_ok(&reply).is_none() {
        return Err(HybridVsockError::Refused { port, reply });
    }
    Ok(s)
}

fn set_timeouts(s: &UnixStream, t: Duration) -> Result<(), HybridVsockError> {
    s.set_read_timeout(Some(t))
        .map_err(io("set_read_timeout"))?;
    s.set_write_timeout(Some(t))
        .map_err(io("set_write_timeout"))
}

/// Reads one line byte by byte (so nothing after it is consumed), at most [`MAX_LINE`]
/// bytes; returns what was read on end of file.
fn read_line_raw(s: &mut impl Read) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while buf.len() < MAX_LINE {
        if s.read(&mut byte)? == 0 {
            break;
        }
        buf.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Reads one line (up to `\n`, at most [`MAX_LINE`] bytes, byte by byte so nothing after the
/// line is consumed); `what` names it in the error.
pub fn read_line(s: &mut impl Read, what: &str) -> Result<String, HybridVsockError> {
    read_line_raw(s).map_err(io(format!("read {what}")))
}

/// Reads one line and checks it is exactly `expected`.
pub fn expect_line(s: &mut impl Read, what: &str, expected: &[u8]) -> Result<(), HybridVsockError> {
    let got = read_line(s, what)?;
    if got.as_bytes() == expected {
        Ok(())
    } else {
        Err(HybridVsockError::Unexpected {
            what: what.to_string(),
            expected: String::from_utf8_lossy(expected).into_owned(),
            got,
        })
    }
}

/// Writes all of `msg`.
pub fn send(s: &mut impl Write, what: &str, msg: &[u8]) -> Result<(), HybridVsockError> {
    s.write_all(msg).map_err(io(format!("write {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_path_appends_port() {
        assert_eq!(
            port_path(Path::new("/tmp/x/v.sock"), 52000),
            PathBuf::from("/tmp/x/v.sock_52000")
        );
    }

    #[test]
    fn parses_ok_lines() {
        assert_eq!(parse_ok("OK 1073741824\n"), Some(1 << 30));
        assert_eq!(parse_ok("OK 12"), None);
        assert_eq!(parse_ok("OK x\n"), None);
        assert_eq!(parse_ok(""), None);
        assert_eq!(parse_ok("FAILURE\n"), None);
    }

    /// A fake VMM: binds `v.sock` in a fresh directory and runs `serve` on it in a thread;
    /// returns the directory, the socket and the thread.
    fn fake_vmm(
        name: &str,
        serve: impl FnOnce(UnixListener) + Send + 'static,
    ) -> (PathBuf, PathBuf, thread::JoinHandle<()>) {
        let dir = std::env::temp_dir().join(format!("peapod-e2e-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let _ = std::fs::remove_file(&uds);
        let l = UnixListener::bind(&uds).unwrap();
        (dir, uds, thread::spawn(move || serve(l)))
    }

    /// The fake VMM's side of one host-initiated connection: accepts it and checks the
    /// `CONNECT <port>` line.
    fn accept_connect(l: &UnixListener, port: u32) -> UnixStream {
        let (mut s, _) = l.accept().unwrap();
        let line = read_line(&mut s, "connect").unwrap();
        assert_eq!(line, format!("CONNECT {port}\n"));
        s
    }

    #[test]
    fn connect_guest_speaks_the_hybrid_protocol() {
        let (dir, uds, vmm) = fake_vmm("proto", |l| {
            let mut s = accept_connect(&l, 52001);
            s.write_all(b"OK 1073741824\n").unwrap();
            expect_line(&mut s, "ping", b"ping\n").unwrap();
            s.write_all(b"pong\n").unwrap();
            // A refusing VMM is reported, not accepted.
            let mut s = accept_connect(&l, 52001);
            s.write_all(b"FAILURE\n").unwrap();
        });
        let mut s = connect_guest(&uds, 52001, Duration::from_secs(5)).unwrap();
        send(&mut s, "ping", b"ping\n").unwrap();
        expect_line(&mut s, "pong", b"pong\n").unwrap();
        let r = connect_guest(&uds, 52001, Duration::from_secs(5));
        assert!(
            matches!(r, Err(HybridVsockError::Refused { port: 52001, ref reply }) if reply == "FAILURE\n"),
            "{r:?}"
        );
        vmm.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn handshake_then_stream_and_refusal() {
        let (dir, uds, vmm) = fake_vmm("hybrid", |l| {
            // First client: accepted; the line and the data right after it are separate.
            let mut s = accept_connect(&l, 1024);
            s.write_all(b"OK 1073741825\nPPOD").unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"ping");
            // Second client: refused (closed without a reply).
            drop(accept_connect(&l, 1024));
        });
        let t = Duration::from_secs(5);
        let mut s = connect_guest(&uds, 1024, t).unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"PPOD", "bytes after the OK line must reach the caller");
        s.write_all(b"ping").unwrap();
        let r = connect_guest(&uds, 1024, t);
        assert!(
            matches!(r, Err(HybridVsockError::Refused { port: 1024, ref reply }) if reply.is_empty()),
            "{r:?}"
        );
        vmm.join().unwrap();
        let _ = std::fs::remove_file(&uds);
        assert!(matches!(
            connect_guest(&uds, 1024, t),
            Err(HybridVsockError::Connect { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn io_timeout_bounds_the_handshake() {
        // A VMM that accepts but never replies: the read times out and says so.
        let (dir, uds, vmm) = fake_vmm("iot", |l| {
            let (s, _) = l.accept().unwrap();
            thread::sleep(Duration::from_millis(500));
            drop(s);
        });
        let t0 = Instant::now();
        let r = connect_guest(&uds, 1024, Duration::from_millis(100));
        assert!(
            matches!(r, Err(HybridVsockError::Io { ref what, .. }) if what.ends_with("timed out")),
            "{r:?}"
        );
        assert!(t0.elapsed() < Duration::from_millis(450));
        vmm.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn accept_times_out_and_aborts() {
        let dir = std::env::temp_dir().join(format!("peapod-e2e-acc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let l = listen(&uds, 7).unwrap();
        let t = Duration::from_secs(1);
        let r = accept(&l, Instant::now() + Duration::from_millis(20), t, || None);
        assert!(matches!(r, Err(HybridVsockError::Timeout(_))));
        let r = accept(&l, Instant::now() + t, t, || Some("vmm exited".into()));
        assert!(matches!(r, Err(HybridVsockError::Aborted { .. })));
        let _c = UnixStream::connect(port_path(&uds, 7)).unwrap();
        assert!(accept(&l, Instant::now() + t, t, || None).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
