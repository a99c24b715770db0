//! Host side of Firecracker-style hybrid vsock: guest-initiated connections arrive on the
//! Unix socket `<uds>_<port>`; host-initiated ones connect to `<uds>` and send `CONNECT <port>\n`.

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
    /// Socket I/O failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
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

/// Connects to guest `port` through the VMM's socket: `CONNECT <port>\n`, expects `OK <n>\n`.
pub fn connect_guest(
    uds: &Path,
    port: u32,
    io_timeout: Duration,
) -> Result<UnixStream, HybridVsockError> {
    let mut s = UnixStream::connect(uds).map_err(io(format!("connect {}", uds.display())))?;
    set_timeouts(&s, io_timeout)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(io("write CONNECT"))?;
    let reply = read_line(&mut s, "CONNECT reply")?;
    let ok = reply
        .strip_prefix("OK ")
        .and_then(|r| r.strip_suffix('\n'))
        .is_some_and(|n| n.parse::<u32>().is_ok());
    if !ok {
        return Err(HybridVsockError::Unexpected {
            what: format!("reply to CONNECT {port}"),
            expected: "OK <port>\\n".to_string(),
            got: reply,
        });
    }
    Ok(s)
}

fn set_timeouts(s: &UnixStream, t: Duration) -> Result<(), HybridVsockError> {
    s.set_read_timeout(Some(t))
        .map_err(io("set_read_timeout"))?;
    s.set_write_timeout(Some(t))
        .map_err(io("set_write_timeout"))
}

/// Reads one line (up to `\n`, at most [`MAX_LINE`] bytes, byte by byte so nothing after the
/// line is consumed).
pub fn read_line(s: &mut UnixStream, what: &str) -> Result<String, HybridVsockError> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while buf.len() < MAX_LINE {
        let n = s.read(&mut byte).map_err(io(format!("read {what}")))?;
        if n == 0 {
            break;
        }
        buf.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Reads one line and checks it is exactly `expected`.
pub fn expect_line(
    s: &mut UnixStream,
    what: &str,
    expected: &[u8],
) -> Result<(), HybridVsockError> {
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
pub fn send(s: &mut UnixStream, what: &str, msg: &[u8]) -> Result<(), HybridVsockError> {
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
    fn connect_guest_speaks_the_hybrid_protocol() {
        let dir = std::env::temp_dir().join(format!("peapod-e2e-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let _ = std::fs::remove_file(&uds);
        let l = UnixListener::bind(&uds).unwrap();
        let fake_vmm = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let line = read_line(&mut s, "connect").unwrap();
            assert_eq!(line, "CONNECT 52001\n");
            s.write_all(b"OK 1073741824\n").unwrap();
            expect_line(&mut s, "ping", b"ping\n").unwrap();
            s.write_all(b"pong\n").unwrap();
        });
        let mut s = connect_guest(&uds, 52001, Duration::from_secs(5)).unwrap();
        send(&mut s, "ping", b"ping\n").unwrap();
        expect_line(&mut s, "pong", b"pong\n").unwrap();
        fake_vmm.join().unwrap();

        // A refusing VMM is reported, not accepted.
        let _ = std::fs::remove_file(&uds);
        let l = UnixListener::bind(&uds).unwrap();
        let fake_vmm = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _ = read_line(&mut s, "connect").unwrap();
            s.write_all(b"FAILURE\n").unwrap();
        });
        assert!(matches!(
            connect_guest(&uds, 52001, Duration::from_secs(5)),
            Err(HybridVsockError::Unexpected { .. })
        ));
        fake_vmm.join().unwrap();
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
