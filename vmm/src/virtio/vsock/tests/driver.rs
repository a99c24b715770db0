//! The test guest driver for the vsock device tests: packets put as descriptor chains on the
//! shared test rings ([`crate::virtio::test_driver`]) and read back from the used rings, plus
//! helpers for the host side's Unix sockets.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtio_vsock::packet::PKT_HEADER_SIZE;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::virtio::test_driver::Rings;
use crate::virtio::vsock::connection::Header;
use crate::virtio::vsock::defs::{op, EVQ, HOST_CID, RXQ, TXQ, TYPE_STREAM};
use crate::virtio::vsock::{Vsock, VsockLimits};

pub(super) use crate::virtio::test_driver::{new_mem, BUF_START, MEM_SIZE, WAIT};

pub(super) const CID: u64 = 3;
pub(super) const RX_DATA: u32 = 4096;
/// How often the driver looks at a used ring.
const POLL: Duration = Duration::from_millis(1);

/// The guest side: three split queues in guest memory (rx, tx, event) and the buffers given to
/// the device.
pub(super) struct Guest<'a> {
    pub(super) mem: &'a GuestMemoryMmap,
    rings: Rings<3>,
    pub(super) rx_bufs: HashMap<u32, (u64, u64)>,
    pub(super) ev_bufs: HashMap<u32, u64>,
}

impl<'a> Guest<'a> {
    /// Queues in `mem` (the rings share its memory).
    pub(super) fn new(mem: &'a GuestMemoryMmap) -> Self {
        Guest {
            mem,
            rings: Rings::new(mem.clone(), POLL),
            rx_bufs: HashMap::new(),
            ev_bufs: HashMap::new(),
        }
    }

    /// Activates `dev` with this guest's queues.
    pub(super) fn activate(&mut self, dev: &mut Vsock) -> EventFd {
        self.rings.activate(dev)
    }

    pub(super) fn alloc(&mut self, len: u64) -> u64 {
        self.rings.alloc(len)
    }

    /// Puts a chain of (addr, len, device-writable) buffers on queue `q`; returns its head.
    pub(super) fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        self.rings.add_chain(q, bufs)
    }

    pub(super) fn kick(&self, q: usize) {
        self.rings.kick(q);
    }

    /// Next used element of queue `q`, if one arrives within `timeout`.
    pub(super) fn next_used(&mut self, q: usize, timeout: Duration) -> Option<(u32, u32)> {
        self.rings.next_used(q, timeout)
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
        while self.rings.seen_used(TXQ) != self.rings.avail_idx(TXQ) {
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
