//! Plumbing shared by the devices' worker threads: the epoll calls of their event loops
//! (registering an fd for input under a token, waiting through signal interruptions, draining
//! an eventfd) and returning used buffers and deciding on an interrupt with failures logged.

use std::fmt;
use std::os::fd::RawFd;

use log::warn;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// Errors that stop a worker's event loop.
#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    /// Creating the epoll instance failed.
    #[error("failed to create epoll: {0}")]
    Epoll(#[source] std::io::Error),
    /// Registering one of the worker's own fds with epoll failed.
    #[error("failed to register fd with epoll: {0}")]
    Register(#[source] std::io::Error),
    /// Waiting on epoll failed.
    #[error("epoll wait failed: {0}")]
    Wait(#[source] std::io::Error),
}

/// Registers `fd` with `epoll` for input, reported with `token`.
pub fn add_input(epoll: &Epoll, fd: RawFd, token: u64) -> Result<(), EventLoopError> {
    epoll
        .ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )
        .map_err(EventLoopError::Register)
}

/// Waits up to `timeout_ms` (-1: no limit) for events. `None` when a signal interrupted the
/// wait: the caller goes round its loop again.
pub fn wait(
    epoll: &Epoll,
    timeout_ms: i32,
    events: &mut [EpollEvent],
) -> Result<Option<usize>, EventLoopError> {
    match epoll.wait(timeout_ms, events) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
        Err(e) => Err(EventLoopError::Wait(e)),
    }
}

/// Resets a nonblocking eventfd's counter.
pub fn drain(evt: &EventFd) {
    // A nonblocking eventfd with nothing to read returns EAGAIN; either way it is drained.
    let _ = evt.read();
}

/// Returns descriptor chain `head` to the driver with `len` bytes written; a failure is logged
/// with the device name `dev`.
pub fn add_used(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
    dev: fmt::Arguments,
) {
    if let Err(e) = queue.add_used(mem, head, len) {
        warn!("{dev}: failed to return descriptor {head}: {e}");
    }
}

/// Whether the driver wants an interrupt for queue `q` (spec §2.7.10); when that cannot be
/// read, it is logged with the device name `dev` and the answer is yes.
pub fn needs_notification(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    q: usize,
    dev: fmt::Arguments,
) -> bool {
    match queue.needs_notification(mem) {
        Ok(needed) => needed,
        Err(e) => {
            warn!("{dev}: queue {q}: {e}");
            true
        }
    }
}
