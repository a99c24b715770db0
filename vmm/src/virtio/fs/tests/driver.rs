//! The test guest driver for the virtio-fs device tests (in process, and vhost-user with a real
//! virtiofsd): FUSE requests put as descriptor chains on the request queue of the shared test
//! rings ([`crate::virtio::test_driver`]), replies read back from the used ring.

use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{InHeader, OutHeader};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::virtio::test_driver::{new_mem, Rings, WAIT};
use crate::virtio::VirtioDevice;

pub(crate) use crate::virtio::test_driver::MEM_SIZE;

/// How often the driver looks at a used ring.
const POLL: Duration = Duration::from_micros(20);
/// The request queue (queue 0 is high priority).
pub(crate) const REQ: usize = 1;

/// A FUSE reply: header and body.
pub(crate) struct Reply {
    pub(crate) used_len: u32,
    pub(crate) hdr: OutHeader,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn obj<T: ByteValued>(&self) -> T {
        T::from_slice(&self.body[..std::mem::size_of::<T>()])
            .copied()
            .unwrap()
    }
}

/// The guest side: the high-priority and the request queue.
pub(crate) struct Guest {
    rings: Rings<2>,
    unique: u64,
}

impl Guest {
    /// A guest with [`new_mem`] memory.
    pub(crate) fn new() -> Self {
        Self::with_mem(new_mem())
    }

    /// A guest with `mem` as its memory.
    pub(crate) fn with_mem(mem: GuestMemoryMmap) -> Self {
        Guest {
            rings: Rings::new(mem, POLL),
            unique: 0,
        }
    }

    /// The guest memory.
    pub(crate) fn mem(&self) -> &GuestMemoryMmap {
        &self.rings.mem
    }

    pub(crate) fn activate(&mut self, dev: &mut impl VirtioDevice) -> EventFd {
        self.rings.activate(dev)
    }

    pub(crate) fn alloc(&mut self, len: u64) -> u64 {
        self.rings.alloc(len)
    }

    /// Puts a chain of (addr, len, device-writable) buffers on queue `q` and kicks it.
    pub(crate) fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.rings.add_chain(q, bufs);
        self.rings.kick(q);
        head
    }

    /// Puts a one-descriptor chain at `index` whose `next` is itself on queue `q` and kicks it.
    pub(crate) fn add_looping_chain(&mut self, q: usize, index: u16, buf: u64) {
        self.rings.add_looping_chain(q, index, buf);
        self.rings.kick(q);
    }

    /// Waits for the next used element of queue `q`: (descriptor head, length).
    pub(crate) fn wait_used(&mut self, q: usize) -> (u32, u32) {
        self.rings
            .next_used(q, WAIT)
            .unwrap_or_else(|| panic!("no used buffer on queue {q}"))
    }

    /// Sends one FUSE request (`opcode` on `nodeid`, with `args` after the header) on the
    /// request queue, with `out_len` bytes of reply room, and returns the reply.
    pub(crate) fn request(&mut self, opcode: u32, nodeid: u64, args: &[u8], out_len: u32) -> Reply {
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
    pub(crate) fn raw_request(&mut self, msg: &[u8], out_len: u32) -> Reply {
        let inb = self.alloc(msg.len() as u64);
        self.rings.mem.write_slice(msg, GuestAddress(inb)).unwrap();
        let outb = self.alloc(u64::from(out_len));
        self.rings
            .mem
            .write_slice(&vec![0u8; out_len as usize], GuestAddress(outb))
            .unwrap();
        let head = self.add_chain(
            REQ,
            &[(inb, msg.len() as u32, false), (outb, out_len, true)],
        );
        let (id, used_len) = self.wait_used(REQ);
        assert_eq!(id, u32::from(head));
        let mut out = vec![0u8; used_len as usize];
        self.rings
            .mem
            .read_slice(&mut out, GuestAddress(outb))
            .unwrap();
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
