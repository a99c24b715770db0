//! Host signals received through a signalfd while a VM runs: SIGINT and SIGTERM end the VM,
//! SIGUSR1 asks for a state dump on stderr.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// Errors of signal handling.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The signal mask could not be changed.
    #[error("cannot block host signals: {0}")]
    Mask(std::io::Error),
    /// signalfd failed.
    #[error("signalfd failed: {0}")]
    SignalFd(std::io::Error),
    /// Reading the signalfd failed.
    #[error("cannot read signalfd: {0}")]
    Read(std::io::Error),
    /// poll failed.
    #[error("poll failed: {0}")]
    Poll(std::io::Error),
}

/// SIGINT, SIGTERM and SIGUSR1 blocked in this thread and readable from a signalfd; dropping it
/// restores the previous signal mask.
pub struct HostSignals {
    fd: File,
    old_mask: libc::sigset_t,
}

fn host_signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; these calls cannot fail for valid signal numbers.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGUSR1);
    }
    set
}

impl HostSignals {
    /// Blocks SIGINT, SIGTERM and SIGUSR1 in the calling thread (threads spawned later inherit the
    /// mask) and opens a signalfd for them.
    pub fn block() -> Result<Self, SignalError> {
        let set = host_signal_set();
        // SAFETY: sigset_t is plain data, filled in by pthread_sigmask.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are valid sigset_t values for the duration of the call.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask) };
        if rc != 0 {
            return Err(SignalError::Mask(std::io::Error::from_raw_os_error(rc)));
        }
        // SAFETY: `set` is valid; -1 asks for a new descriptor; the result is checked.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            // SAFETY: restores the mask saved above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
            return Err(SignalError::SignalFd(err));
        }
        // SAFETY: `fd` is a new descriptor owned by nothing else.
        let fd = unsafe { File::from_raw_fd(fd) };
        Ok(HostSignals { fd, old_mask })
    }

    /// Reads one pending signal number, if any.
    pub fn read(&self) -> Result<Option<i32>, SignalError> {
        let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        match (&self.fd).read(&mut buf) {
            Ok(n) if n == buf.len() => {
                let signo = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                Ok(Some(signo as i32))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(SignalError::Read(e)),
        }
    }
}

impl AsRawFd for HostSignals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for HostSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `block`; the pointer is valid.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_sigterm_is_read_from_the_signalfd() {
        // Run in a fresh thread so the test harness's other threads keep their masks; the
        // signal is sent to this thread only.
        std::thread::spawn(|| {
            let sigs = HostSignals::block().unwrap();
            assert_eq!(sigs.read().unwrap(), None);
            // SAFETY: sends SIGTERM to this very thread, where it is blocked.
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGTERM) };
            assert_eq!(sigs.read().unwrap(), Some(libc::SIGTERM));
        })
        .join()
        .unwrap();
    }
}
