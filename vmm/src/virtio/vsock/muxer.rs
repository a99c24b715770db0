//! The vsock device's worker thread: one epoll loop over the queue eventfds, the listening Unix
//! socket, every connection's socket, a control eventfd and a kill eventfd. It moves packets
//! between the virtqueues and the [`ConnTable`].

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::time::Instant;

use log::{debug, error, warn};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::epoll::EpollEvent;
use vmm_sys_util::eventfd::EventFd;

use super::connection::Header;
use super::defs::{EVENT_TRANSPORT_RESET, EVQ, MAX_PKT_DATA, NUM_QUEUES, RXQ, TXQ};
use super::stats;
use super::table::{ConnTable, Fill};
use crate::virtio::event_loop::{self, add_input, drain, EventLoopError};
use crate::virtio::Interrupt;

const TOKEN_KILL: u64 = 0;
const TOKEN_RXQ: u64 = 1;
const TOKEN_TXQ: u64 = 2;
const TOKEN_EVQ: u64 = 3;
const TOKEN_LISTENER: u64 = 4;
const TOKEN_CONTROL: u64 = 5;

/// Descriptor chains taken from one queue per loop iteration, so that a guest that keeps its tx
/// queue full cannot starve the other event sources.
const QUEUE_BUDGET: usize = 256;

/// Everything the worker thread owns.
pub struct Muxer {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    interrupt: Interrupt,
    kill_evt: EventFd,
    control_evt: EventFd,
    table: ConnTable,
    pending_reset_event: bool,
    used: [bool; NUM_QUEUES],
    more_work: bool,
}

impl Muxer {
    /// A worker for an activated device. `queues` and `queue_evts` are in [`RXQ`], [`TXQ`],
    /// [`EVQ`] order.
    pub fn new(
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        queue_evts: Vec<EventFd>,
        interrupt: Interrupt,
        kill_evt: EventFd,
        control_evt: EventFd,
        table: ConnTable,
    ) -> Self {
        Muxer {
            mem,
            queues,
            queue_evts,
            interrupt,
            kill_evt,
            control_evt,
            table,
            pending_reset_event: false,
            used: [false; NUM_QUEUES],
            more_work: false,
        }
    }

    fn register(&self) -> Result<(), EventLoopError> {
        let epoll = self.table.epoll();
        let add = |fd: i32, token: u64| add_input(epoll, fd, token);
        add(self.kill_evt.as_raw_fd(), TOKEN_KILL)?;
        add(self.queue_evts[RXQ].as_raw_fd(), TOKEN_RXQ)?;
        add(self.queue_evts[TXQ].as_raw_fd(), TOKEN_TXQ)?;
        add(self.queue_evts[EVQ].as_raw_fd(), TOKEN_EVQ)?;
        add(self.table.listener().as_raw_fd(), TOKEN_LISTENER)?;
        add(self.control_evt.as_raw_fd(), TOKEN_CONTROL)?;
        Ok(())
    }

    /// Runs until the kill eventfd is written (or epoll fails); returns the listening socket so
    /// that a reset device can be activated again.
    pub fn run(mut self) -> UnixListener {
        if let Err(e) = self.run_loop() {
            error!("vsock: worker stopped: {e}");
        }
        // Connections close with the table; the listener leaves the epoll set with it.
        let Muxer { table, .. } = self;
        table.into_listener()
    }

    fn run_loop(&mut self) -> Result<(), EventLoopError> {
        self.register()?;
        // Queue notifications may have come before the loop started.
        self.process_tx();
        self.process_rx();
        self.notify_guest();
        let mut events = vec![EpollEvent::default(); 64];
        loop {
            let timeout = self.epoll_timeout_ms();
            let Some(n) = event_loop::wait(self.table.epoll(), timeout, &mut events)? else {
                continue;
            };
            let now = Instant::now();
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_KILL => {
                        debug!("vsock: worker asked to stop");
                        return Ok(());
                    }
                    TOKEN_RXQ => drain(&self.queue_evts[RXQ]),
                    TOKEN_TXQ => drain(&self.queue_evts[TXQ]),
                    TOKEN_EVQ => drain(&self.queue_evts[EVQ]),
                    TOKEN_CONTROL => {
                        drain(&self.control_evt);
                        self.transport_reset();
                    }
                    TOKEN_LISTENER => self.table.accept_host_conns(now),
                    token => self.table.handle_socket_event(token, ev.event_set(), now),
                }
            }
            // Tx first: guest packets may queue answers that the rx pass then delivers.
            self.more_work = false;
            self.process_tx();
            self.table.expire_deadlines(Instant::now());
            self.process_rx();
            self.process_evq();
            self.table.sync_interest();
            self.notify_guest();
        }
    }

    fn epoll_timeout_ms(&self) -> i32 {
        if self.more_work {
            return 0;
        }
        match self.table.next_deadline() {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so that the deadline has passed when epoll returns.
                let ms = left.as_millis().saturating_add(1);
                i32::try_from(ms).unwrap_or(i32::MAX)
            }
        }
    }

    /// Handles the packets the guest put on the tx queue.
    fn process_tx(&mut self) {
        for _ in 0..QUEUE_BUDGET {
            let Some(mut chain) = self.queues[TXQ].pop_descriptor_chain(&self.mem) else {
                return;
            };
            let head = chain.head_index();
            match VsockPacket::from_tx_virtq_chain(&self.mem, &mut chain, MAX_PKT_DATA) {
                Ok(pkt) => {
                    let hdr = Header::from_packet(&pkt);
                    let counters = self.table.counters();
                    counters.inc(stats::TX_PACKETS);
                    counters.add(stats::TX_BYTES, u64::from(hdr.len));
                    self.table.handle_guest_packet(&hdr, pkt.data_slice());
                }
                Err(e) => {
                    warn!("vsock: dropping malformed tx packet: {e}");
                    self.table.counters().inc(stats::MALFORMED_TX);
                }
            }
            add_used(&mut self.queues[TXQ], &self.mem, head, 0);
            self.used[TXQ] = true;
        }
        self.more_work = true;
    }

    /// Fills guest rx buffers with waiting packets.
    fn process_rx(&mut self) {
        let now = Instant::now();
        for _ in 0..QUEUE_BUDGET {
            if !self.table.has_rx_work() {
                return;
            }
            let Some(mut chain) = self.queues[RXQ].pop_descriptor_chain(&self.mem) else {
                // No buffer: the rx queue eventfd wakes us when the guest adds some.
                return;
            };
            let head = chain.head_index();
            let fill = match VsockPacket::from_rx_virtq_chain(&self.mem, &mut chain, MAX_PKT_DATA) {
                Ok(mut pkt) => self.table.fill_rx(&mut pkt, now),
                Err(e) => {
                    warn!("vsock: skipping malformed rx buffer: {e}");
                    self.table.counters().inc(stats::MALFORMED_RX);
                    Fill::Used(0)
                }
            };
            match fill {
                Fill::Used(len) => {
                    if let Some(payload) = len.checked_sub(PKT_HEADER_SIZE as u32) {
                        let counters = self.table.counters();
                        counters.inc(stats::RX_PACKETS);
                        counters.add(stats::RX_BYTES, u64::from(payload));
                    }
                    add_used(&mut self.queues[RXQ], &self.mem, head, len);
                    self.used[RXQ] = true;
                }
                Fill::Unused => self.queues[RXQ].go_to_previous_position(),
            }
        }
        // Budget spent with work left: come back right away.
        self.more_work = true;
    }

    /// Delivers a pending transport reset event (spec §5.10.6.8).
    fn process_evq(&mut self) {
        if !self.pending_reset_event {
            return;
        }
        let Some(mut chain) = self.queues[EVQ].pop_descriptor_chain(&self.mem) else {
            return;
        };
        let head = chain.head_index();
        let mut len = 0;
        match chain.next() {
            Some(desc) if desc.is_write_only() && desc.len() >= 4 => {
                match self
                    .mem
                    .write_obj(EVENT_TRANSPORT_RESET.to_le(), desc.addr())
                {
                    Ok(()) => {
                        len = 4;
                        self.pending_reset_event = false;
                    }
                    Err(e) => warn!("vsock: failed to write the event buffer: {e}"),
                }
            }
            _ => warn!("vsock: skipping malformed event buffer"),
        }
        add_used(&mut self.queues[EVQ], &self.mem, head, len);
        self.used[EVQ] = true;
    }

    /// Drops every connection and tells the guest its transport was reset.
    fn transport_reset(&mut self) {
        debug!("vsock: transport reset");
        self.table.reset_all();
        self.pending_reset_event = true;
    }

    /// Interrupts the guest once per iteration for the queues that got used buffers.
    fn notify_guest(&mut self) {
        let mut signal = false;
        for (i, used) in self.used.iter_mut().enumerate() {
            if !std::mem::take(used) {
                continue;
            }
            signal |= event_loop::needs_notification(
                &mut self.queues[i],
                &self.mem,
                i,
                format_args!("vsock"),
            );
        }
        if signal {
            if let Err(e) = self.interrupt.signal_used_queue() {
                warn!("vsock: {e}");
            }
        }
    }
}

fn add_used(queue: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: u32) {
    event_loop::add_used(queue, mem, head, len, format_args!("vsock"));
}
