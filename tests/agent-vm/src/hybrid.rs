//! Host side of the VMM's hybrid vsock for host-initiated connections: connect to the VMM's
//! Unix socket, send `CONNECT <port>\n`, expect `OK <hostport>\n`; the socket then carries the
//! guest stream (here: the agent protocol).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest reply line accepted from the VMM.
const MAX_LINE: usize = 64;

/// Errors of the hybrid vsock handshake.
#[derive(Debug, thiserror::Error)]
pub enum HybridError {
    /// The VMM's socket does not accept connections (not there yet, or gone).
    #[error("connect {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Reading or writing the handshake failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// The VMM closed the socket or answered something else than `OK <port>` (the guest
    /// refused the connection or did not answer: nothing listens on the port yet).
    #[error("guest port {port} refused the connection (vmm replied {reply:?})")]
    Refused {
        /// Guest port.
        port: u32,
        /// What the VMM sent (empty on end of file).
        reply: String,
    },
}

/// Host-side port number from the VMM's `OK <port>\n` line.
pub fn parse_ok(line: &str) -> Option<u32> {
    line.strip_prefix("OK ")?.strip_suffix('\n')?.parse().ok()
}

/// Reads one line byte by byte (so no guest data after it is consumed), at most [`MAX_LINE`]
/// bytes; returns what was read on end of file.
fn read_line(s: &mut impl Read) -> std::io::Result<String> {
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

/// Connects to guest vsock `port` through the VMM socket `uds`; `io_timeout` bounds every
/// read and write on the returned stream (and the handshake).
pub fn connect(uds: &Path, port: u32, io_timeout: Duration) -> Result<UnixStream, HybridError> {
    let mut s = UnixStream::connect(uds).map_err(|source| HybridError::Connect {
        path: uds.to_path_buf(),
        source,
    })?;
    let io = |what| move |source| HybridError::Io { what, source };
    s.set_read_timeout(Some(io_timeout))
        .map_err(io("set read timeout"))?;
    s.set_write_timeout(Some(io_timeout))
        .map_err(io("set write timeout"))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(io("write CONNECT"))?;
    let reply = match read_line(&mut s) {
        Ok(r) => r,
        // A reset by the VMM is a refusal like an end of file.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => String::new(),
        Err(e) => return Err(io("read CONNECT reply")(e)),
    };
    if parse_ok(&reply).is_none() {
        return Err(HybridError::Refused { port, reply });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn parses_ok_lines() {
        assert_eq!(parse_ok("OK 1073741824\n"), Some(1 << 30));
        assert_eq!(parse_ok("OK 12"), None);
        assert_eq!(parse_ok("OK x\n"), None);
        assert_eq!(parse_ok(""), None);
        assert_eq!(parse_ok("FAILURE\n"), None);
    }

    #[test]
    fn handshake_then_stream_and_refusal() {
        let dir = std::env::temp_dir().join(format!("agent-vm-hybrid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let _ = std::fs::remove_file(&uds);
        let l = UnixListener::bind(&uds).unwrap();
        let fake_vmm = std::thread::spawn(move || {
            // First client: accepted; the line and the data right after it are separate.
            let (mut s, _) = l.accept().unwrap();
            let line = read_line(&mut s).unwrap();
            assert_eq!(line, "CONNECT 1024\n");
            s.write_all(b"OK 1073741825\nPPOD").unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"ping");
            // Second client: refused (closed without a reply).
            let (mut s, _) = l.accept().unwrap();
            let _ = read_line(&mut s).unwrap();
            drop(s);
        });
        let t = Duration::from_secs(5);
        let mut s = connect(&uds, 1024, t).unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"PPOD", "bytes after the OK line must reach the caller");
        s.write_all(b"ping").unwrap();
        let r = connect(&uds, 1024, t);
        assert!(
            matches!(r, Err(HybridError::Refused { port: 1024, ref reply }) if reply.is_empty()),
            "{r:?}"
        );
        fake_vmm.join().unwrap();
        let _ = std::fs::remove_file(&uds);
        assert!(matches!(
            connect(&uds, 1024, t),
            Err(HybridError::Connect { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
