//! The thread that turns a vhost-user back-end's "call" eventfds into virtio-mmio interrupts:
//! the back-end writes a queue's call eventfd when it used buffers; the MMIO transport needs the
//! InterruptStatus bit set before the irqfd fires, so the eventfds cannot go to KVM directly.

use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use log::{error, warn};
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::VhostUserFsError;
use crate::virtio::event_loop::{self, add_input, EventLoopError};
use crate::virtio::Interrupt;

/// Epoll token of the kill eventfd; call eventfd `i` uses token `i + 1`.
const TOKEN_KILL: u64 = 0;

/// A running notifier thread.
pub struct Notifier {
    kill_evt: EventFd,
    thread: JoinHandle<()>,
}

impl Notifier {
    /// Starts a thread (`vhost-fs-TAG`) that raises `interrupt` (used buffer) each time one of
    /// `calls` is written.
    pub fn start(
        tag: &str,
        calls: Vec<EventFd>,
        interrupt: Interrupt,
    ) -> Result<Self, VhostUserFsError> {
        let kill_evt = EventFd::new(EFD_NONBLOCK).map_err(VhostUserFsError::EventFd)?;
        let thread_kill = kill_evt.try_clone().map_err(VhostUserFsError::EventFd)?;
        let name = tag.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("vhost-fs-{tag}"))
            .spawn(move || {
                if let Err(e) = run(&calls, &interrupt, &thread_kill) {
                    error!("vhost-user-fs {name}: notifier stopped: {e}");
                }
            })
            .map_err(VhostUserFsError::Thread)?;
        Ok(Notifier { kill_evt, thread })
    }

    /// Stops the thread and joins it.
    pub fn stop(self, tag: &str) {
        if let Err(e) = self.kill_evt.write(1) {
            // Without the kill event the thread cannot be joined; leave it detached.
            warn!("vhost-user-fs {tag}: failed to stop the notifier: {e}");
            return;
        }
        if self.thread.join().is_err() {
            warn!("vhost-user-fs {tag}: the notifier thread panicked");
        }
    }
}

fn run(calls: &[EventFd], interrupt: &Interrupt, kill_evt: &EventFd) -> Result<(), EventLoopError> {
    let epoll = Epoll::new().map_err(EventLoopError::Epoll)?;
    add_input(&epoll, kill_evt.as_raw_fd(), TOKEN_KILL)?;
    for (i, evt) in calls.iter().enumerate() {
        add_input(&epoll, evt.as_raw_fd(), i as u64 + 1)?;
    }
    let mut events = vec![EpollEvent::default(); calls.len() + 1];
    loop {
        let Some(n) = event_loop::wait(&epoll, -1, &mut events)? else {
            continue;
        };
        let mut raise = false;
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_KILL => return Ok(()),
                token => {
                    if let Some(evt) = usize::try_from(token - 1).ok().and_then(|i| calls.get(i)) {
                        event_loop::drain(evt);
                        raise = true;
                    }
                }
            }
        }
        if raise {
            if let Err(e) = interrupt.signal_used_queue() {
                warn!("vhost-user-fs: {e}");
            }
        }
    }
}
