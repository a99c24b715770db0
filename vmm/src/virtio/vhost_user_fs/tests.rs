//! Tests of the vhost-user-fs device: config space and argument checks, and the whole
//! front-end side (handshake, feature negotiation, activation, call -> interrupt, reset) against
//! a fake back-end ([`fake`]). `real_virtiofsd_serves_a_read` drives a real virtiofsd (ignored
//! unless `PEAPOD_VIRTIOFSD` names its binary; needs root).

mod fake;
mod real;

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vm_memory::Bytes;

use self::fake::Server;
use super::*;
use crate::memory::create_guest_ram;
use crate::virtio::fs::TAG_LEN;
use crate::virtio::interrupt::INT_USED_BUFFER;
use crate::virtio::test_driver::{Rings, MEM_SIZE};
use crate::virtio::{Interrupt, VirtioDevice};

const PROTOCOL_FEATURES: u64 = 1 << 30;
/// VIRTIO_F_ANY_LAYOUT (bit 27): offered by the back-end, not passed to the driver.
const ANY_LAYOUT: u64 = 1 << 27;

fn memfd_mem() -> GuestMemoryMmap {
    create_guest_ram(&[(0, MEM_SIZE)]).unwrap().mem
}

/// A device connected to a fake back-end offering `features` (and `protocol` features), with
/// VIRTIO_F_VERSION_1 acked as a driver would.
fn connected(features: u64, protocol: u64) -> (Server, VhostUserFs) {
    let server = Server::start(features, protocol);
    let mut dev = VhostUserFs::connect("t", &server.socket).unwrap();
    dev.ack_features(1 << VIRTIO_F_VERSION_1);
    (server, dev)
}

/// Activates `dev` with two ready queues in `mem`, without a driver to kick them; returns the
/// result and the device's interrupt.
fn activate_in(
    dev: &mut VhostUserFs,
    mem: GuestMemoryMmap,
) -> (Result<(), ActivateError>, Interrupt) {
    let (queues, kicks) = Rings::<2>::new(mem.clone(), Duration::from_millis(1)).device_queues();
    let interrupt = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let result = dev.activate(mem, interrupt.clone(), queues, kicks);
    (result, interrupt)
}

#[test]
fn connect_fails_without_a_back_end() {
    let dir = tempfile::tempdir().unwrap();
    let err = VhostUserFs::connect("t", &dir.path().join("none.sock"))
        .err()
        .unwrap();
    assert!(matches!(err, VhostUserFsError::Connect { .. }), "{err}");
    assert!(matches!(
        VhostUserFs::connect("", &dir.path().join("none.sock")),
        Err(VhostUserFsError::InvalidTag(_))
    ));
}

#[test]
fn back_end_without_version_1_is_refused() {
    let server = Server::start(1 << VIRTIO_RING_F_EVENT_IDX, 0);
    let err = VhostUserFs::connect("t", &server.socket).err().unwrap();
    assert!(matches!(err, VhostUserFsError::NoVersion1(_)), "{err}");
}

#[test]
fn handshake_negotiates_features_and_protocol() {
    let offered =
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | ANY_LAYOUT | PROTOCOL_FEATURES;
    let proto = (VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIG)
        .bits();
    let server = Server::start(offered, proto);
    let mut dev = VhostUserFs::connect("myfs", &server.socket).unwrap();
    assert_eq!(
        server.wait_log(4),
        [
            "SET_OWNER",
            "GET_FEATURES",
            "GET_PROTOCOL_FEATURES",
            "SET_PROTOCOL_FEATURES"
        ]
    );
    assert_eq!(
        server.state.lock().unwrap().acked_protocol_features,
        Some(VhostUserProtocolFeatures::MQ.bits())
    );
    assert_eq!(dev.device_type(), TYPE_FS);
    assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE; 2]);
    // Only the ring/transport bits the back-end implements reach the driver.
    assert_eq!(
        dev.avail_features(),
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX)
    );
    dev.ack_features(u64::MAX);
    assert_eq!(dev.acked_features(), dev.avail_features());
    let mut cfg = [0xffu8; TAG_LEN + 4];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..4], b"myfs");
    assert_eq!(u32::from_le_bytes(cfg[TAG_LEN..].try_into().unwrap()), 1);
    dev.write_config(0, b"evil");
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..4], b"myfs");
}

#[test]
fn without_protocol_features_there_is_no_protocol_handshake() {
    let (server, mut dev) = connected(1 << VIRTIO_F_VERSION_1, 0);
    assert_eq!(server.wait_log(2), ["SET_OWNER", "GET_FEATURES"]);
    let mut rings = Rings::<2>::new(memfd_mem(), Duration::from_millis(1));
    rings.activate(&mut dev);
    let log = server.wait_log(2 + 2 + 2 * 5);
    assert!(
        !log.iter().any(|l| l.starts_with("SET_VRING_ENABLE")),
        "{log:?}"
    );
    // Rings are enabled by SET_FEATURES without the protocol bit.
    assert_eq!(
        server.state.lock().unwrap().acked_features,
        Some(1 << VIRTIO_F_VERSION_1)
    );
}

#[test]
fn activation_hands_memory_rings_and_eventfds_to_the_back_end() {
    let offered = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | PROTOCOL_FEATURES;
    let (server, mut dev) = connected(offered, VhostUserProtocolFeatures::MQ.bits());
    let mem = memfd_mem();
    let mut rings = Rings::<2>::new(mem.clone(), Duration::from_millis(1));
    let irq = rings.activate(&mut dev);
    assert!(dev.is_activated());

    let mut want = vec!["SET_FEATURES".to_string(), "SET_MEM_TABLE".to_string()];
    for q in 0..2 {
        for r in [
            "SET_VRING_NUM",
            "SET_VRING_ADDR",
            "SET_VRING_BASE",
            "SET_VRING_CALL",
            "SET_VRING_KICK",
        ] {
            want.push(format!("{r} {q}"));
        }
    }
    want.extend(["SET_VRING_ENABLE 0 1".into(), "SET_VRING_ENABLE 1 1".into()]);
    let log = server.wait_log(4 + want.len());
    assert_eq!(log[4..], want[..]);

    let s = server.state.lock().unwrap();
    assert_eq!(
        s.acked_features,
        Some((1 << VIRTIO_F_VERSION_1) | PROTOCOL_FEATURES)
    );
    // One region: the memfd, at the same host address the VMM maps it.
    let region = mem.iter().next().unwrap();
    assert_eq!(s.regions, [(0, MEM_SIZE, region.as_ptr() as u64, 0)]);
    assert_eq!(s.region_files.len(), 1);
    // The back-end's copy of the memory is the same memory.
    mem.write_obj(0x5a5a_u16, GuestAddress(0x8000)).unwrap();
    let mut buf = [0u8; 2];
    s.region_files[0].read_exact_at(&mut buf, 0x8000).unwrap();
    assert_eq!(u16::from_le_bytes(buf), 0x5a5a);
    for q in 0..2 {
        assert_eq!(s.vring_num[q], u32::from(crate::virtio::test_driver::QSIZE));
        assert_eq!(s.vring_base[q], Some(0));
        let (desc, used, avail) = s.vring_addr[q];
        let host = |a: u64| mem.get_host_address(GuestAddress(a)).unwrap() as u64;
        let base = 0x1_0000 * (q as u64 + 1);
        assert_eq!(
            (desc, avail, used),
            (host(base), host(base + 0x1000), host(base + 0x2000))
        );
        assert!(s.enabled[q]);
    }
    drop(s);

    // A guest kick reaches the back-end's kick eventfd.
    rings.kick(1);
    let mut counter = [0u8; 8];
    let s = server.state.lock().unwrap();
    let kick = s.kick[1].as_ref().unwrap();
    set_nonblocking(kick);
    read_eventfd(kick, &mut counter);
    assert_eq!(u64::from_ne_bytes(counter), 1);
    // A call by the back-end raises the device interrupt with the used-buffer reason.
    let call = s.call[1].as_ref().unwrap();
    write_eventfd(call, 1);
    drop(s);
    let start = Instant::now();
    while irq.read().is_err() {
        assert!(start.elapsed() < Duration::from_secs(5), "no interrupt");
        std::thread::sleep(Duration::from_millis(2));
    }

    dev.reset();
    assert!(!dev.is_activated());
    let log = server.wait_log(4 + want.len() + 4);
    assert_eq!(
        log[4 + want.len()..],
        [
            "SET_VRING_ENABLE 0 0",
            "GET_VRING_BASE 0",
            "SET_VRING_ENABLE 1 0",
            "GET_VRING_BASE 1"
        ]
    );
    // A reset device can be activated again.
    rings.activate(&mut dev);
    assert!(dev.is_activated());
}

#[test]
fn interrupt_status_is_set_by_a_call() {
    let (server, mut dev) = connected((1 << VIRTIO_F_VERSION_1) | PROTOCOL_FEATURES, 0);
    let (result, interrupt) = activate_in(&mut dev, memfd_mem());
    result.unwrap();
    server.wait_log(4 + 2 * 5 + 2);
    assert_eq!(interrupt.status(), 0);
    let s = server.state.lock().unwrap();
    write_eventfd(s.call[0].as_ref().unwrap(), 1);
    drop(s);
    let start = Instant::now();
    while interrupt.status() & INT_USED_BUFFER == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no interrupt status"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn anonymous_guest_memory_cannot_be_shared() {
    let (_server, mut dev) = connected(1 << VIRTIO_F_VERSION_1, 0);
    let (result, _) = activate_in(&mut dev, crate::virtio::test_driver::new_mem());
    let err = result.unwrap_err();
    assert!(err.to_string().contains("not backed by a file"), "{err}");
    assert!(!dev.is_activated());
}

fn write_eventfd(f: &std::fs::File, n: u64) {
    use std::io::Write;
    let mut f: &std::fs::File = f;
    f.write_all(&n.to_ne_bytes()).unwrap();
}

fn set_nonblocking(f: &std::fs::File) {
    // SAFETY: F_SETFL on a valid fd owned by `f`; the return value is checked.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    assert_eq!(rc, 0);
}

fn read_eventfd(f: &std::fs::File, buf: &mut [u8; 8]) {
    use std::io::Read;
    let mut f: &std::fs::File = f;
    f.read_exact(buf).unwrap();
}
