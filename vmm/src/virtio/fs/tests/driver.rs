//! The test guest driver for the virtio-fs device tests: two split virtqueues laid out by hand
//! in `GuestMemoryMmap` memory (not `MockSplitQueue`), FUSE requests put on them as descriptor
//! chains, replies read back from the used ring.

use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{InHeader, OutHeader};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::virtio::fs::Fs;
use crate::virtio::{Interrupt, VirtioDevice};

pub(super) const QSIZE: u16 = 256;
pub(super) const MEM_SIZE: u64 = 0x100_0000;
const BUF_START: u64 = 0x10_0000;
const WAIT: Duration = Duration::from_secs(5);
/// The request queue (queue 0 is high priority).
pub(super) const REQ: usize = 1;

pub(super) fn new_mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// Guest addresses of one split virtqueue, each part in its own page.
#[derive(Clone, Copy)]
struct Vq {
    desc: u64,
    avail: u64,
    used: u64,
}

impl Vq {
    fn at(base: u64) -> Self {
        Vq {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
        }
    }

    fn queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_ready(true);
        q
    }
}

/// A FUSE reply: header and body.
pub(super) struct Reply {
    pub(super) used_len: u32,
    pub(super) hdr: OutHeader,
    pub(super) body: Vec<u8>,
}

impl Reply {
    pub(super) fn obj<T: ByteValued>(&self) -> T {
        T::from_slice(&self.body[..std::mem::size_of::<T>()])
            .copied()
            .unwrap()
    }
}

/// The guest side.
pub(super) struct Guest {
    pub(super) mem: GuestMemoryMmap,
    qs: [Vq; 2],
    kicks: Vec<EventFd>,
    next_desc: [u16; 2],
    seen_used: [u16; 2],
    next_buf: u64,
    unique: u64,
}

impl Guest {
    pub(super) fn new() -> Self {
        Guest {
            mem: new_mem(),
            qs: [Vq::at(0x1_0000), Vq::at(0x2_0000)],
            kicks: Vec::new(),
            next_desc: [0; 2],
            seen_used: [0; 2],
            next_buf: BUF_START,
            unique: 0,
        }
    }

    pub(super) fn activate(&mut self, dev: &mut Fs) -> EventFd {
        let queues: Vec<Queue> = self.qs.iter().map(Vq::queue).collect();
        let evts: Vec<EventFd> = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        self.kicks = evts.iter().map(|e| e.try_clone().unwrap()).collect();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq_copy = irq.try_clone().unwrap();
        dev.activate(self.mem.clone(), Interrupt::new(irq), queues, evts)
            .unwrap();
        irq_copy
    }

    fn read_u16(&self, addr: u64) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(addr)).unwrap())
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

    /// Puts a chain of (addr, len, device-writable) buffers on queue `q` and kicks it.
    pub(super) fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let n = bufs.len() as u16;
        if self.next_desc[q] + n > QSIZE {
            self.next_desc[q] = 0;
        }
        let head = self.next_desc[q];
        let vq = self.qs[q];
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let i = i as u16;
            let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
            let mut next = 0;
            if i + 1 < n {
                flags |= VRING_DESC_F_NEXT as u16;
                next = head + i + 1;
            }
            let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
            let at = vq.desc + 16 * u64::from(head + i);
            self.mem.write_obj(d, GuestAddress(at)).unwrap();
        }
        self.next_desc[q] += n;
        self.publish(q, head);
        head
    }

    /// Puts a one-descriptor chain at `index` whose `next` is itself on queue `q`.
    pub(super) fn add_looping_chain(&mut self, q: usize, index: u16, buf: u64) {
        let flags = VRING_DESC_F_NEXT as u16;
        let d = RawDescriptor::from(SplitDescriptor::new(buf, 64, flags, index));
        let at = self.qs[q].desc + 16 * u64::from(index);
        self.mem.write_obj(d, GuestAddress(at)).unwrap();
        self.publish(q, index);
    }

    /// Publishes chain `head` on queue `q` (ring entry, then index; spec §2.7.13) and kicks.
    fn publish(&mut self, q: usize, head: u16) {
        let vq = self.qs[q];
        let idx = self.read_u16(vq.avail + 2);
        let slot = vq.avail + 4 + 2 * u64::from(idx % QSIZE);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1).to_le(), GuestAddress(vq.avail + 2))
            .unwrap();
        self.kicks[q].write(1).unwrap();
    }

    /// Waits for the next used element of queue `q`: (descriptor head, length).
    pub(super) fn wait_used(&mut self, q: usize) -> (u32, u32) {
        let vq = self.qs[q];
        let deadline = Instant::now() + WAIT;
        while self.read_u16(vq.used + 2) == self.seen_used[q] {
            assert!(Instant::now() < deadline, "no used buffer on queue {q}");
            std::thread::sleep(Duration::from_micros(20));
        }
        let slot = vq.used + 4 + 8 * u64::from(self.seen_used[q] % QSIZE);
        self.seen_used[q] = self.seen_used[q].wrapping_add(1);
        let id: u32 = self.mem.read_obj(GuestAddress(slot)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).unwrap();
        (u32::from_le(id), u32::from_le(len))
    }

    /// Sends one FUSE request (`opcode` on `nodeid`, with `args` after the header) on the
    /// request queue, with `out_len` bytes of reply room, and returns the reply.
    pub(super) fn request(&mut self, opcode: u32, nodeid: u64, args: &[u8], out_len: u32) -> Reply {
        self.unique += 1;
        let hdr = InHeader {
            len: (std::mem::size_of::<InHeader>() + args.len()) as u32,
            opcode,
            unique: self.unique,
            nodeid,
            ..Default::default()
        };
        let mut msg = hdr.as_slice().to_vec();
        msg.extend_from_slice(args);
        self.raw_request(&msg, out_len)
    }

    /// Sends `msg` as the device-readable part of a chain with `out_len` bytes of reply room.
    pub(super) fn raw_request(&mut self, msg: &[u8], out_len: u32) -> Reply {
        let inb = self.alloc(msg.len() as u64);
        self.mem.write_slice(msg, GuestAddress(inb)).unwrap();
        let outb = self.alloc(u64::from(out_len));
        self.mem
            .write_slice(&vec![0u8; out_len as usize], GuestAddress(outb))
            .unwrap();
        let head = self.add_chain(
            REQ,
            &[(inb, msg.len() as u32, false), (outb, out_len, true)],
        );
        let (id, used_len) = self.wait_used(REQ);
        assert_eq!(id, u32::from(head));
        let mut out = vec![0u8; used_len as usize];
        self.mem.read_slice(&mut out, GuestAddress(outb)).unwrap();
        let hdr_len = std::mem::size_of::<OutHeader>();
        let hdr = if out.len() >= hdr_len {
            OutHeader::from_slice(&out[..hdr_len]).copied().unwrap()
        } else {
            OutHeader::default()
        };
        let body = out.get(hdr_len..).unwrap_or_default().to_vec();
        Reply {
            used_len,
            hdr,
            body,
        }
    }
}
