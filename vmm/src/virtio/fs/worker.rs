//! The virtio-fs device's worker thread: one epoll loop over the queue eventfds and a kill
//! eventfd; each descriptor chain is one FUSE request, handed to the `fuse-backend-rs` server
//! with a `Reader` over its device-readable part and a `Writer` over its device-writable part.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{Reader, VirtioFsWriter, Writer};
use log::{debug, error, warn};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

use super::guard::ConfinedFs;
use crate::virtio::event_loop::{self, add_input, EventLoopError};
use crate::virtio::Interrupt;

/// Epoll token of the kill eventfd; queue `i` uses token `i + 1`.
const TOKEN_KILL: u64 = 0;

/// Requests taken from one queue per loop iteration, so that one busy queue cannot starve the
/// others or the kill event.
const QUEUE_BUDGET: usize = 256;

/// Everything the worker thread owns.
pub struct Worker {
    pub(super) mem: GuestMemoryMmap,
    pub(super) queues: Vec<Queue>,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) interrupt: Interrupt,
    pub(super) kill_evt: EventFd,
    pub(super) server: Arc<Server<ConfinedFs>>,
    pub(super) tag: String,
}

impl Worker {
    /// Runs until the kill eventfd is written (or epoll fails).
    pub fn run(mut self) {
        if let Err(e) = self.run_loop() {
            error!("virtio-fs {}: worker stopped: {e}", self.tag);
        }
    }

    fn run_loop(&mut self) -> Result<(), EventLoopError> {
        let epoll = Epoll::new().map_err(EventLoopError::Epoll)?;
        add_input(&epoll, self.kill_evt.as_raw_fd(), TOKEN_KILL)?;
        for (i, evt) in self.queue_evts.iter().enumerate() {
            add_input(&epoll, evt.as_raw_fd(), i as u64 + 1)?;
        }
        let mut pending: Vec<bool> = vec![true; self.queues.len()];
        let mut events = vec![EpollEvent::default(); self.queues.len() + 1];
        loop {
            // Requests may have come before the loop started, or a budget was left unfinished.
            let mut more = false;
            for (i, p) in pending.iter_mut().enumerate() {
                if std::mem::take(p) {
                    let (used, left) = self.process_queue(i);
                    if used {
                        self.notify(i);
                    }
                    *p = left;
                    more |= left;
                }
            }
            let timeout = if more { 0 } else { -1 };
            let Some(n) = event_loop::wait(&epoll, timeout, &mut events)? else {
                continue;
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_KILL => {
                        debug!("virtio-fs {}: worker asked to stop", self.tag);
                        return Ok(());
                    }
                    token => {
                        let Some(i) = usize::try_from(token - 1)
                            .ok()
                            .filter(|i| *i < self.queues.len())
                        else {
                            continue;
                        };
                        event_loop::drain(&self.queue_evts[i]);
                        pending[i] = true;
                    }
                }
            }
        }
    }

    /// Serves up to [`QUEUE_BUDGET`] requests of queue `q`. Returns whether a buffer was used
    /// and whether requests may be left.
    fn process_queue(&mut self, q: usize) -> (bool, bool) {
        let mut used = false;
        for _ in 0..QUEUE_BUDGET {
            let Some(chain) = self.queues[q].pop_descriptor_chain(&self.mem) else {
                return (used, false);
            };
            let head = chain.head_index();
            let len = handle_request(&self.server, &self.mem, chain, &self.tag);
            event_loop::add_used(
                &mut self.queues[q],
                &self.mem,
                head,
                len,
                format_args!("virtio-fs {}", self.tag),
            );
            used = true;
        }
        (used, true)
    }

    fn notify(&mut self, q: usize) {
        let needed = event_loop::needs_notification(
            &mut self.queues[q],
            &self.mem,
            q,
            format_args!("virtio-fs {}", self.tag),
        );
        if needed {
            if let Err(e) = self.interrupt.signal_used_queue() {
                warn!("virtio-fs {}: {e}", self.tag);
            }
        }
    }
}

/// Serves one FUSE request; returns the number of bytes written into the chain. A malformed
/// chain or request is logged and used with length 0.
pub fn handle_request(
    server: &Server<ConfinedFs>,
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    tag: &str,
) -> u32 {
    let reader = match Reader::from_descriptor_chain(mem, chain.clone()) {
        Ok(r) => r,
        Err(e) => {
            warn!("virtio-fs {tag}: bad request buffers: {e}");
            return 0;
        }
    };
    let writer = match VirtioFsWriter::new(mem, chain) {
        Ok(w) => Writer::from(w),
        Err(e) => {
            warn!("virtio-fs {tag}: bad reply buffers: {e}");
            return 0;
        }
    };
    match server.handle_message(reader, writer, None, None) {
        Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
        Err(e) => {
            debug!("virtio-fs {tag}: request failed: {e}");
            0
        }
    }
}
