//! AF_VSOCK stream helpers of the probe (nix), with timeouts so a silent host cannot hang it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use boot_probe::MAX_LINE;
use nix::sys::socket::{
    self as sock, sockopt, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
};
use nix::sys::time::{TimeVal, TimeValLike};
use thiserror::Error;

/// Seconds any single vsock operation may block (emulated hosts are slow; shorter than the
/// host side's timeout so the probe reports its error before the host gives up).
const TIMEOUT_SECS: i64 = 60;

/// Errors of the vsock exchanges.
#[derive(Debug, Error)]
pub enum VsockError {
    /// A socket call failed.
    #[error("vsock {op} (port {port}): {source}")]
    Socket {
        /// The call.
        op: &'static str,
        /// The vsock port involved.
        port: u32,
        /// Cause.
        source: nix::Error,
    },
    /// Reading or writing the stream failed.
    #[error("vsock {op}: {source}")]
    Io {
        /// Read or write.
        op: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// The peer sent something else than expected.
    #[error("vsock: expected {expected:?}, got {got:?}")]
    Unexpected {
        /// Expected line.
        expected: String,
        /// Received bytes.
        got: String,
    },
}

fn new_socket(port: u32) -> Result<OwnedFd, VsockError> {
    let fd = sock::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|source| VsockError::Socket {
        op: "socket",
        port,
        source,
    })?;
    set_timeouts(&fd, port)?;
    Ok(fd)
}

/// Sets the receive and send timeouts of `fd` to [`TIMEOUT_SECS`].
fn set_timeouts(fd: &OwnedFd, port: u32) -> Result<(), VsockError> {
    let timeout = TimeVal::seconds(TIMEOUT_SECS);
    let map = |source| VsockError::Socket {
        op: "setsockopt",
        port,
        source,
    };
    sock::setsockopt(fd, sockopt::ReceiveTimeout, &timeout).map_err(map)?;
    sock::setsockopt(fd, sockopt::SendTimeout, &timeout).map_err(map)
}

/// Connects to `cid:port`.
pub fn connect(cid: u32, port: u32) -> Result<File, VsockError> {
    let fd = new_socket(port)?;
    sock::connect(fd.as_raw_fd(), &VsockAddr::new(cid, port)).map_err(|source| {
        VsockError::Socket {
            op: "connect",
            port,
            source,
        }
    })?;
    Ok(File::from(fd))
}

/// Listens on `port` for any CID.
pub fn listen(port: u32) -> Result<OwnedFd, VsockError> {
    let fd = new_socket(port)?;
    sock::bind(fd.as_raw_fd(), &VsockAddr::new(libc_any_cid(), port)).map_err(|source| {
        VsockError::Socket {
            op: "bind",
            port,
            source,
        }
    })?;
    let backlog = Backlog::new(1).map_err(|source| VsockError::Socket {
        op: "listen",
        port,
        source,
    })?;
    sock::listen(&fd, backlog).map_err(|source| VsockError::Socket {
        op: "listen",
        port,
        source,
    })?;
    Ok(fd)
}

/// `VMADDR_CID_ANY`.
fn libc_any_cid() -> u32 {
    u32::MAX
}

/// Accepts one connection (bounded by the receive timeout).
pub fn accept(listener: &OwnedFd) -> Result<File, VsockError> {
    let raw = sock::accept(listener.as_raw_fd()).map_err(|source| VsockError::Socket {
        op: "accept",
        port: 0,
        source,
    })?;
    // SAFETY: accept(2) just returned `raw` as a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // Accepted vsock sockets do not inherit the listener's timeouts.
    set_timeouts(&fd, 0)?;
    Ok(File::from(fd))
}

/// Writes all of `msg`.
pub fn send(stream: &mut File, msg: &[u8]) -> Result<(), VsockError> {
    stream.write_all(msg).map_err(|source| VsockError::Io {
        op: "write",
        source,
    })
}

/// Reads one `\n`-terminated line (at most [`MAX_LINE`] bytes) and checks it equals `expected`.
pub fn expect_line(stream: &mut File, expected: &[u8]) -> Result<(), VsockError> {
    let mut got = Vec::with_capacity(expected.len());
    let mut byte = [0u8; 1];
    while got.len() < MAX_LINE {
        let n = stream
            .read(&mut byte)
            .map_err(|source| VsockError::Io { op: "read", source })?;
        if n == 0 {
            break;
        }
        got.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    if got == expected {
        Ok(())
    } else {
        Err(VsockError::Unexpected {
            expected: String::from_utf8_lossy(expected).into_owned(),
            got: String::from_utf8_lossy(&got).into_owned(),
        })
    }
}
