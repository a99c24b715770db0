//! The device against a real virtiofsd on this host: FUSE INIT, LOOKUP, OPEN and READ of a file
//! through rings in memfd guest memory. Ignored by default: needs root and `PEAPOD_VIRTIOFSD`
//! set to the virtiofsd binary (`vmm/scripts/fs-compare.sh` installs one).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::OpenOut;

use super::memfd_mem;
use crate::virtio::fs::tests::driver::Guest;
use crate::virtio::fs::tests::{entry, init, open, read};
use crate::virtio::vhost_user_fs::VhostUserFs;
use crate::virtio::VirtioDevice;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let mut g = Guest::with_mem(memfd_mem());
    g.activate(&mut dev);
    init(&mut g);
    let e = entry(&mut g, 1, "hello.txt");
    let r = open(&mut g, e.nodeid, libc::O_RDONLY);
    assert_eq!(r.hdr.error, 0, "open");
    let r = read(&mut g, e.nodeid, r.obj::<OpenOut>().fh, 4096);
    assert_eq!(r.hdr.error, 0, "read");
    assert_eq!(r.body, b"hello through vhost-user\n");
    // `..` at the root stays inside the share (virtiofsd's own confinement).
    assert_eq!(entry(&mut g, 1, "..").nodeid, 1);
    dev.reset();
}
