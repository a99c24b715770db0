//! The guest side of the device tests: split virtqueues (spec §2.7) laid out by hand in
//! `GuestMemoryMmap` memory, descriptor chains put on them, queue kicks and used rings read back.
//! Each device's tests wrap [`Rings`] with their own request/packet helpers.
//!
//! The rings are laid out here rather than with `virtio_queue::mock::MockSplitQueue`: in
//! virtio-queue 0.18 the mock places the used ring over the second half of the available ring
//! (its ring end is computed in elements, not bytes), which corrupts both once more than half
//! of the ring has been used, as the longer tests do.

use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::virtio::{Interrupt, VirtioDevice};

/// Size of every test queue.
pub(crate) const QSIZE: u16 = 256;
/// Size of the test guest memory.
pub(crate) const MEM_SIZE: u64 = 0x100_0000;
/// Start of the buffer area; the rings live below it.
pub(crate) const BUF_START: u64 = 0x10_0000;
/// How long the tests wait for the device.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// Test guest memory of [`MEM_SIZE`] bytes at guest address 0.
pub(crate) fn new_mem() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// Guest addresses of one split virtqueue: descriptor table, available ring and used ring, each
/// in its own page.
#[derive(Clone, Copy)]
pub(crate) struct Vq {
    desc: u64,
    avail: u64,
    used: u64,
}

impl Vq {
    pub(crate) fn at(base: u64) -> Self {
        Vq {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
        }
    }

    /// A device-side queue over this layout, as a driver would configure it.
    pub(crate) fn queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_ready(true);
        q
    }
}

/// `N` split queues in guest memory (queue `i` at `0x1_0000 * (i + 1)`), their kick eventfds
/// and a bump allocator for buffers.
pub(crate) struct Rings<const N: usize> {
    /// The guest memory (shared with the device once activated).
    pub(crate) mem: GuestMemoryMmap,
    qs: [Vq; N],
    kicks: Vec<EventFd>,
    next_desc: [u16; N],
    seen_used: [u16; N],
    next_buf: u64,
    /// How often [`Rings::next_used`] looks at the used ring.
    poll: Duration,
}

impl<const N: usize> Rings<N> {
    /// Queues in `mem`; [`Rings::next_used`] polls the used ring every `poll`.
    pub(crate) fn new(mem: GuestMemoryMmap, poll: Duration) -> Self {
        Rings {
            mem,
            qs: std::array::from_fn(|i| Vq::at(0x1_0000 * (i as u64 + 1))),
            kicks: Vec::new(),
            next_desc: [0; N],
            seen_used: [0; N],
            next_buf: BUF_START,
            poll,
        }
    }

    /// The device side of these queues, for an activation: the queues as a driver configures
    /// them, and fresh kick eventfds (the driver keeps copies to kick with).
    pub(crate) fn device_queues(&mut self) -> (Vec<Queue>, Vec<EventFd>) {
        let queues: Vec<Queue> = self.qs.iter().map(Vq::queue).collect();
        let evts: Vec<EventFd> = (0..N)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        self.kicks = evts.iter().map(|e| e.try_clone().unwrap()).collect();
        (queues, evts)
    }

    /// Activates `dev` with these queues; returns the interrupt eventfd.
    pub(crate) fn activate(&mut self, dev: &mut impl VirtioDevice) -> EventFd {
        let (queues, evts) = self.device_queues();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq_copy = irq.try_clone().unwrap();
        dev.activate(self.mem.clone(), Interrupt::new(irq), queues, evts)
            .unwrap();
        irq_copy
    }

    fn read_u16(&self, addr: u64) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(addr)).unwrap())
    }

    /// The driver's available index of queue `q`.
    pub(crate) fn avail_idx(&self, q: usize) -> u16 {
        self.read_u16(self.qs[q].avail + 2)
    }

    /// The device's used index of queue `q`.
    pub(crate) fn used_idx(&self, q: usize) -> u16 {
        self.read_u16(self.qs[q].used + 2)
    }

    /// How many used elements of queue `q` the driver has read.
    pub(crate) fn seen_used(&self, q: usize) -> u16 {
        self.seen_used[q]
    }

    /// A buffer of `len` bytes (64-byte aligned), wrapping to [`BUF_START`] at the end.
    pub(crate) fn alloc(&mut self, len: u64) -> u64 {
        let len = len.max(1).next_multiple_of(64);
        if self.next_buf + len > MEM_SIZE {
            self.next_buf = BUF_START;
        }
        let addr = self.next_buf;
        self.next_buf += len;
        addr
    }

    /// Puts a chain of (addr, len, device-writable) buffers on queue `q`, without a kick;
    /// returns its head.
    pub(crate) fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
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

    /// Puts a one-descriptor chain at `index` whose `next` is itself on queue `q`, without a
    /// kick.
    pub(crate) fn add_looping_chain(&mut self, q: usize, index: u16, buf: u64) {
        let flags = VRING_DESC_F_NEXT as u16;
        let d = RawDescriptor::from(SplitDescriptor::new(buf, 64, flags, index));
        let at = self.qs[q].desc + 16 * u64::from(index);
        self.mem.write_obj(d, GuestAddress(at)).unwrap();
        self.publish(q, index);
    }

    /// Publishes chain `head` on queue `q`: ring entry first, then the index (spec §2.7.13).
    fn publish(&mut self, q: usize, head: u16) {
        let vq = self.qs[q];
        let idx = self.avail_idx(q);
        let slot = vq.avail + 4 + 2 * u64::from(idx % QSIZE);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1).to_le(), GuestAddress(vq.avail + 2))
            .unwrap();
    }

    /// Notifies the device of new buffers on queue `q`.
    pub(crate) fn kick(&self, q: usize) {
        self.kicks[q].write(1).unwrap();
    }

    /// Next used element of queue `q` (descriptor head, length), if one arrives within
    /// `timeout`.
    pub(crate) fn next_used(&mut self, q: usize, timeout: Duration) -> Option<(u32, u32)> {
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
            std::thread::sleep(self.poll);
        }
    }
}
