//! The test guest driver for the vsock device tests: split virtqueues laid out in
//! `GuestMemoryMmap` memory, descriptor chains put on them, used rings read back, plus helpers
//! for the host side's Unix sockets.
//!
//! The rings are laid out here rather than with `virtio_queue::mock::MockSplitQueue`: in
//! virtio-queue 0.18 the mock places the used ring over the second half of the available ring
//! (its ring end is computed in elements, not bytes), which corrupts both once more than half
//! of the ring has been used, as the longer tests do.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use virtio_vsock::packet::PKT_HEADER_SIZE;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::virtio::vsock::connection::Header;
use crate::virtio::vsock::defs::{op, EVQ, HOST_CID, RXQ, TXQ, TYPE_STREAM};
use crate::virtio::vsock::{Vsock, VsockLimits};
use crate::virtio::{Interrupt, VirtioDevice};

pub(super) const CID: u64 = 3;
pub(super) const QSIZE: u16 = 256;
pub(super) const MEM_SIZE: u64 = 0x100_0000;
pub(super) const BUF_START: u64 = 0x10_0000;
pub(super) const RX_DATA: u32 = 4096;
pub(super) const WAIT: Duration = Duration::from_secs(5);

/// Guest addresses of one split virtqueue (spec §2.7): descriptor table, available ring and
/// used ring, each in its own page.
#[derive(Clone, Copy)]
pub(super) struct Vq {
    desc: u64,
    avail: u64,
    used: u64,
}

impl Vq {
    pub(super) fn at(base: u64) -> Self {
        Vq {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
        }
    }

    /// A device-side queue over this layout, as a driver would configure it.
    pub(super) fn queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_ready(true);
        q
    }
}

/// The guest side: three split queues in guest memory and a bump allocator for buffers.
pub(super) struct Guest<'a> {
    pub(super) mem: &'a GuestMemoryMmap,
    pub(super) qs: [Vq; 3],
    pub(super) kicks: Vec<EventFd>,
    pub(super) next_desc: [u16; 3],
    pub(super) seen_used: [u16; 3],
    pub(super) next_buf: u64,
    pub(super) rx_bufs: HashMap<u32, (u64, u64)>,
    pub(super) ev_bufs: HashMap<u32, u64>,
}

impl<'a> Guest<'a> {
    pub(super) fn new(mem: &'a GuestMemoryMmap) -> Self {
        Guest {
            mem,
            qs: [Vq::at(0x1_0000), Vq::at(0x2_0000), Vq::at(0x3_0000)],
            kicks: Vec::new(),
            next_desc: [0; 3],
            seen_used: [0; 3],
            next_buf: BUF_START,
            rx_bufs: HashMap::new(),
            ev_bufs: HashMap::new(),
        }
    }

    /// Activates `dev` with this guest's queues.
    pub(super) fn activate(&mut self, dev: &mut Vsock) -> EventFd {
        let queues: Vec<Queue> = self.qs.iter().map(Vq::queue).collect();
        let evts: Vec<EventFd> = (0..3)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        self.kicks = evts.iter().map(|e| e.try_clone().unwrap()).collect();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq_copy = irq.try_clone().unwrap();
        dev.activate(self.mem.clone(), Interrupt::new(irq), queues, evts)
            .unwrap();
        irq_copy
    }

    pub(super) fn read_u16(&self, addr: u64) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(addr)).unwrap())
    }

    pub(super) fn avail_idx(&self, q: usize) -> u16 {
        self.read_u16(self.qs[q].avail + 2)
    }

    pub(super) fn used_idx(&self, q: usize) -> u16 {
        self.read_u16(self.qs[q].used + 2)
    }

    pub(super) fn alloc(&mut self, len: u64) -> u64 {
        let len = len.max(1).next_multiple_of(64);
        if self.next_buf + len > MEM_SIZE {
            self.next_buf = BUF_START;
        }
        let addr = self.next_buf;
        self.next_buf += len;
        addr
    }

    /// Puts a chain of (addr, len, device-writable) buffers on queue `q`; returns its head.
    pub(super) fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let n = bufs.len() as u16;
        if self.next_desc[q] + n > QSIZE {
            self.next_desc[q] = 0;
        }
        let head = self.next_desc[q];
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, write))| {
                let i = i as u16;
                let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
                let mut next = 0;
                if i + 1 < n {
                    flags |= VRING_DESC_F_NEXT as u16;
                    next = head + i + 1;
                }
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
            })
            .collect();
        let vq = self.qs[q];
        for (i, d) in descs.into_iter().enumerate() {
            let addr = vq.desc + 16 * u64::from(head + i as u16);
            self.mem.write_obj(d, GuestAddress(addr)).unwrap();
        }
        // Publish the chain: ring entry first, then the index (spec §2.7.13).
        let idx = self.avail_idx(q);
        let slot = vq.avail + 4 + 2 * u64::from(idx % QSIZE);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1).to_le(), GuestAddress(vq.avail + 2))
            .unwrap();
        self.next_desc[q] += n;
        head
    }

    pub(super) fn kick(&self, q: usize) {
        self.kicks[q].write(1).unwrap();
    }

    /// Sends one packet on the tx queue.
    pub(super) fn tx(&mut self, hdr: Header, data: &[u8]) {
        let h = self.alloc(PKT_HEADER_SIZE as u64);
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(h))
            .unwrap();
        if data.is_empty() {
            self.add_chain(TXQ, &[(h, PKT_HEADER_SIZE as u32, false)]);
        } else {
            let d = self.alloc(data.len() as u64);
            self.mem.write_slice(data, GuestAddress(d)).unwrap();
            self.add_chain(
                TXQ,
                &[
                    (h, PKT_HEADER_SIZE as u32, false),
                    (d, data.len() as u32, false),
                ],
            );
        }
        self.kick(TXQ);
    }

    /// Sends a raw chain on the tx queue.
    pub(super) fn tx_raw(&mut self, bufs: &[(u64, u32, bool)]) {
        self.add_chain(TXQ, bufs);
        self.kick(TXQ);
    }

    /// Gives the device `n` rx buffers (header descriptor + data descriptor).
    pub(super) fn give_rx(&mut self, n: usize) {
        for _ in 0..n {
            let h = self.alloc(PKT_HEADER_SIZE as u64);
            let d = self.alloc(u64::from(RX_DATA));
            let head = self.add_chain(
                RXQ,
                &[(h, PKT_HEADER_SIZE as u32, true), (d, RX_DATA, true)],
            );
            self.rx_bufs.insert(u32::from(head), (h, d));
        }
        self.kick(RXQ);
    }

    /// Gives the device `n` rx buffers of one descriptor each, header and data together (as
    /// Linux 6.2 and later do).
    pub(super) fn give_rx_single(&mut self, n: usize) {
        for _ in 0..n {
            let total = PKT_HEADER_SIZE as u32 + RX_DATA;
            let h = self.alloc(u64::from(total));
            let head = self.add_chain(RXQ, &[(h, total, true)]);
            self.rx_bufs
                .insert(u32::from(head), (h, h + PKT_HEADER_SIZE as u64));
        }
        self.kick(RXQ);
    }

    /// Sends one packet with header and data in a single descriptor.
    pub(super) fn tx_single(&mut self, hdr: Header, data: &[u8]) {
        let total = PKT_HEADER_SIZE + data.len();
        let h = self.alloc(total as u64);
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(h))
            .unwrap();
        self.mem
            .write_slice(data, GuestAddress(h + PKT_HEADER_SIZE as u64))
            .unwrap();
        self.add_chain(TXQ, &[(h, total as u32, false)]);
        self.kick(TXQ);
    }

    pub(super) fn give_ev(&mut self) {
        let b = self.alloc(8);
        self.mem
            .write_obj(0xdead_beef_u32, GuestAddress(b))
            .unwrap();
        let head = self.add_chain(EVQ, &[(b, 8, true)]);
        self.ev_bufs.insert(u32::from(head), b);
        self.kick(EVQ);
    }

    /// Next used element of queue `q`, if one arrives within `timeout`.
    pub(super) fn next_used(&mut self, q: usize, timeout: Duration) -> Option<(u32, u32)> {
        let start = Instant::now();
        loop {
            if self.used_idx(q) != self.seen_used[q] {
                let slot = self.qs[q].used + 4 + 8 * u64::from(self.seen_used[q] % QSIZE);
                let id: u32 = self.mem.read_obj(GuestAddress(slot)).unwrap();
                let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).unwrap();
                self.seen_used[q] = self.seen_used[q].wrapping_add(1);
                return Some((u32::from_le(id), u32::from_le(len)));
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Next packet the device delivered on the rx queue.
    pub(super) fn try_recv(&mut self, timeout: Duration) -> Option<(Header, Vec<u8>)> {
        let (id, len) = self.next_used(RXQ, timeout)?;
        let Some((h, d)) = self.rx_bufs.remove(&id) else {
            let mut ours: Vec<_> = self.rx_bufs.keys().copied().collect();
            ours.sort();
            panic!("used id {id} (len {len}) is not one of our buffers {ours:?}");
        };
        assert!(len as usize >= PKT_HEADER_SIZE, "rx used len {len}");
        let mut hb = [0u8; PKT_HEADER_SIZE];
        self.mem.read_slice(&mut hb, GuestAddress(h)).unwrap();
        let hdr = Header::from_bytes(&hb);
        let data_len = len as usize - PKT_HEADER_SIZE;
        assert_eq!(data_len, hdr.len as usize, "used len matches header len");
        let mut data = vec![0u8; data_len];
        self.mem.read_slice(&mut data, GuestAddress(d)).unwrap();
        Some((hdr, data))
    }

    pub(super) fn recv(&mut self) -> (Header, Vec<u8>) {
        self.try_recv(WAIT).expect("a packet from the device")
    }

    /// Waits until the device consumed the tx chains sent so far.
    pub(super) fn wait_tx_done(&mut self) {
        while self.seen_used[TXQ] != self.avail_idx(TXQ) {
            self.next_used(TXQ, WAIT).expect("tx chain consumed");
        }
    }
}

/// A header from the guest (CID 3) to the host.
pub(super) fn ghdr(src_port: u32, dst_port: u32, op: u16) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        type_: TYPE_STREAM,
        op,
        buf_alloc: 64 * 1024,
        ..Header::default()
    }
}

pub(super) fn new_mem() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

pub(super) fn new_dev(dir: &Path, limits: VsockLimits) -> (Vsock, PathBuf) {
    let uds = dir.join("v.sock");
    let dev = Vsock::with_limits(CID, uds.clone(), limits).unwrap();
    (dev, uds)
}

pub(super) fn accept(listener: &UnixListener) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                return s;
            }
            Err(_) if start.elapsed() < WAIT => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("no connection from the device: {e}"),
        }
    }
}

pub(super) fn read_n(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

pub(super) fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Opens a guest-initiated connection from guest port `gport` to host port `hport`.
pub(super) fn guest_connect(g: &mut Guest, l: &UnixListener, gport: u32, hport: u32) -> UnixStream {
    g.tx(ghdr(gport, hport, op::REQUEST), &[]);
    let host = accept(l);
    let (h, _) = g.recv();
    assert_eq!(h.op, op::RESPONSE);
    assert_eq!((h.src_port, h.dst_port), (hport, gport));
    host
}

impl Header {
    pub(super) fn with_len(mut self, len: u32) -> Self {
        self.len = len;
        self
    }
}
