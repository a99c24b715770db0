//! The device against a real virtiofsd on this host: FUSE INIT, LOOKUP, OPEN and READ of a file
//! through rings in memfd guest memory. Ignored by default: needs root and `PEAPOD_VIRTIOFSD`
//! set to the virtiofsd binary (`vmm/scripts/fs-compare.sh` installs one).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{
    EntryOut, InHeader, InitIn, Opcode, OpenIn, OpenOut, OutHeader, ReadIn,
};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use super::memfd_mem;
use crate::virtio::test_driver::Rings;
use crate::virtio::vhost_user_fs::VhostUserFs;
use crate::virtio::VirtioDevice;

/// The request queue.
const REQ: usize = 1;
const OUT: u32 = 64 * 1024;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Guest {
    rings: Rings<2>,
    unique: u64,
}

impl Guest {
    /// Sends one FUSE request and returns (reply header, body).
    fn request(&mut self, opcode: Opcode, nodeid: u64, args: &[u8]) -> (OutHeader, Vec<u8>) {
        self.unique += 1;
        let hdr = InHeader {
            len: (std::mem::size_of::<InHeader>() + args.len()) as u32,
            opcode: opcode as u32,
            unique: self.unique,
            nodeid,
            ..Default::default()
        };
        let mut msg = hdr.as_slice().to_vec();
        msg.extend_from_slice(args);
        let inb = self.rings.alloc(msg.len() as u64);
        self.rings.mem.write_slice(&msg, GuestAddress(inb)).unwrap();
        let outb = self.rings.alloc(u64::from(OUT));
        let head = self
            .rings
            .add_chain(REQ, &[(inb, msg.len() as u32, false), (outb, OUT, true)]);
        self.rings.kick(REQ);
        let (id, len) = self
            .rings
            .next_used(REQ, Duration::from_secs(10))
            .expect("no reply from virtiofsd");
        assert_eq!(id, u32::from(head));
        let mut out = vec![0u8; len as usize];
        self.rings
            .mem
            .read_slice(&mut out, GuestAddress(outb))
            .unwrap();
        let n = std::mem::size_of::<OutHeader>();
        let hdr = *OutHeader::from_slice(&out[..n]).unwrap();
        (hdr, out[n..].to_vec())
    }
}

fn obj<T: ByteValued>(body: &[u8]) -> T {
    *T::from_slice(&body[..std::mem::size_of::<T>()]).unwrap()
}

#[test]
#[ignore = "needs root and PEAPOD_VIRTIOFSD=/path/to/virtiofsd"]
fn real_virtiofsd_serves_a_read() {
    let bin = std::env::var("PEAPOD_VIRTIOFSD").expect("set PEAPOD_VIRTIOFSD");
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("hello.txt"), b"hello through vhost-user\n").unwrap();
    let socket = tmp.path().join("vfsd.sock");
    let _daemon = Daemon(
        Command::new(bin)
            .arg("--shared-dir")
            .arg(&share)
            .arg("--socket-path")
            .arg(&socket)
            .args(["--sandbox", "none", "--cache", "auto"])
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "no socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut dev = VhostUserFs::connect("share", &socket).unwrap();
    dev.ack_features(dev.avail_features());
    let mut g = Guest {
        rings: Rings::new(memfd_mem(), Duration::from_micros(50)),
        unique: 0,
    };
    g.rings.activate(&mut dev);

    let init = InitIn {
        major: 7,
        minor: 31,
        max_readahead: 128 * 1024,
        flags: 0,
    };
    let (h, _) = g.request(Opcode::Init, 0, init.as_slice());
    assert_eq!(h.error, 0, "init");
    let (h, body) = g.request(Opcode::Lookup, 1, b"hello.txt\0");
    assert_eq!(h.error, 0, "lookup");
    let e: EntryOut = obj(&body);
    let open = OpenIn {
        flags: libc::O_RDONLY as u32,
        fuse_flags: 0,
    };
    let (h, body) = g.request(Opcode::Open, e.nodeid, open.as_slice());
    assert_eq!(h.error, 0, "open");
    let o: OpenOut = obj(&body);
    let read = ReadIn {
        fh: o.fh,
        offset: 0,
        size: 4096,
        ..Default::default()
    };
    let (h, body) = g.request(Opcode::Read, e.nodeid, read.as_slice());
    assert_eq!(h.error, 0, "read");
    assert_eq!(body, b"hello through vhost-user\n");
    // `..` at the root stays inside the share (virtiofsd's own confinement).
    let (h, body) = g.request(Opcode::Lookup, 1, b"..\0");
    assert_eq!(h.error, 0, "lookup ..");
    assert_eq!(obj::<EntryOut>(&body).nodeid, 1);
    dev.reset();
}
