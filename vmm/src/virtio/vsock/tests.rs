//! Tests of the vsock device against guest memory (`GuestMemoryMmap`) and split virtqueues: the
//! [`driver`] plays the guest (descriptor chains, queue kicks, used rings), real Unix sockets
//! play the host side.

mod driver;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use self::driver::*;
use super::defs::{op, shutdown, EVQ, HOST_CID, RXQ, TXQ, TYPE_STREAM};
use super::{Vsock, VsockLimits};
use crate::virtio::VirtioDevice;
use virtio_vsock::packet::PKT_HEADER_SIZE;

#[test]
fn config_space_and_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, _) = new_dev(dir.path(), VsockLimits::default());
    assert_eq!(dev.device_type(), crate::virtio::TYPE_VSOCK);
    assert_eq!(dev.queue_max_sizes(), &[256, 256, 256]);
    let mut b = [0u8; 8];
    dev.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), CID);
    let mut b4 = [0u8; 4];
    dev.read_config(4, &mut b4);
    assert_eq!(b4, [0; 4]);
    assert!(matches!(
        Vsock::new(2, dir.path().join("x")),
        Err(super::VsockError::InvalidCid(2))
    ));
    assert!(Vsock::new(u64::from(u32::MAX), dir.path().join("y")).is_err());
    // A regular file in the way is not removed.
    let f = dir.path().join("file");
    std::fs::write(&f, b"keep").unwrap();
    assert!(matches!(
        Vsock::new(CID, f.clone()),
        Err(super::VsockError::PathInUse(_))
    ));
    assert_eq!(std::fs::read(&f).unwrap(), b"keep");
}

#[test]
fn guest_initiated_connection_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, uds) = new_dev(dir.path(), VsockLimits::default());
    let l = UnixListener::bind(format!("{}_1234", uds.display())).unwrap();
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    let irq = g.activate(&mut dev);
    g.give_rx(16);

    g.tx(ghdr(5000, 1234, op::REQUEST), &[]);
    let mut host = accept(&l);
    let (h, _) = g.recv();
    assert_eq!(h.op, op::RESPONSE);
    assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, CID));
    assert_eq!((h.src_port, h.dst_port), (1234, 5000));
    assert_eq!(h.type_, TYPE_STREAM);
    assert_eq!(h.buf_alloc, VsockLimits::default().conn_buf_size);
    assert_eq!(h.fwd_cnt, 0);
    assert!(irq.read().unwrap() >= 1, "the guest was interrupted");

    g.tx(ghdr(5000, 1234, op::RW).with_len(5), b"hello");
    assert_eq!(read_n(&mut host, 5), b"hello");

    host.write_all(b"world").unwrap();
    let (h, data) = g.recv();
    assert_eq!(h.op, op::RW);
    assert_eq!(data, b"world");
    assert_eq!((h.src_port, h.dst_port), (1234, 5000));
    assert_eq!(h.fwd_cnt, 5, "the 5 forwarded bytes are credited");

    // The guest closes: the device answers with RST and the host sees EOF.
    let mut sd = ghdr(5000, 1234, op::SHUTDOWN);
    sd.flags = shutdown::BOTH;
    g.tx(sd, &[]);
    let (h, _) = g.recv();
    assert_eq!(h.op, op::RST);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn host_initiated_connection_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, uds) = new_dev(dir.path(), VsockLimits::default());
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    g.give_rx(16);

    let mut host = UnixStream::connect(&uds).unwrap();
    host.set_read_timeout(Some(WAIT)).unwrap();
    host.write_all(b"CONNECT 80\n").unwrap();
    let (req, _) = g.recv();
    assert_eq!(req.op, op::REQUEST);
    assert_eq!((req.src_cid, req.dst_cid), (HOST_CID, CID));
    assert_eq!(req.dst_port, 80);
    let hport = req.src_port;
    assert!(hport >= 1 << 30, "ephemeral host port {hport}");

    let mut resp = ghdr(80, hport, op::RESPONSE);
    resp.buf_alloc = 64 * 1024;
    g.tx(resp, &[]);
    assert_eq!(read_line(&mut host), format!("OK {hport}"));

    host.write_all(b"ping").unwrap();
    let (h, data) = g.recv();
    assert_eq!(h.op, op::RW);
    assert_eq!(data, b"ping");
    assert_eq!((h.src_port, h.dst_port), (hport, 80));
    // The `OK` line is not guest data: the guest has sent nothing, so nothing is credited (a
    // Linux guest computes its credit as buf_alloc - (tx_cnt - fwd_cnt) and would stall).
    assert_eq!(h.fwd_cnt, 0);

    g.tx(ghdr(80, hport, op::RW).with_len(4), b"pong");
    assert_eq!(read_n(&mut host, 4), b"pong");
    g.tx(ghdr(80, hport, op::CREDIT_REQUEST), &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.fwd_cnt), (op::CREDIT_UPDATE, 4));

    // Half close from the host: the guest is told the host sends no more.
    host.shutdown(std::net::Shutdown::Write).unwrap();
    let (h, _) = g.recv();
    assert_eq!(h.op, op::SHUTDOWN);
    assert_eq!(h.flags, shutdown::SEND);
    // The guest can still answer, then closes.
    g.tx(ghdr(80, hport, op::RW).with_len(3), b"bye");
    assert_eq!(read_n(&mut host, 3), b"bye");
    let mut sd = ghdr(80, hport, op::SHUTDOWN);
    sd.flags = shutdown::BOTH;
    g.tx(sd, &[]);
    let (h, _) = g.recv();
    assert_eq!(h.op, op::RST);
    assert_eq!(read_n(&mut host, 0), b"");
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn single_descriptor_packets() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, uds) = new_dev(dir.path(), VsockLimits::default());
    let l = UnixListener::bind(format!("{}_8", uds.display())).unwrap();
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    g.give_rx_single(4);
    let mut host = guest_connect(&mut g, &l, 9, 8);
    g.tx_single(ghdr(9, 8, op::RW).with_len(6), b"single");
    assert_eq!(read_n(&mut host, 6), b"single");
    host.write_all(b"reply").unwrap();
    let (h, data) = g.recv();
    assert_eq!((h.op, data.as_slice()), (op::RW, b"reply".as_slice()));
}

#[test]
fn host_close_sends_shutdown_and_guest_rst_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, uds) = new_dev(dir.path(), VsockLimits::default());
    let l = UnixListener::bind(format!("{}_7", uds.display())).unwrap();
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    g.give_rx(8);
    let mut host = guest_connect(&mut g, &l, 9, 7);
    // The host writes a last message and goes away: the data still arrives first.
    host.write_all(b"last words").unwrap();
    drop(host);
    let (h, data) = g.recv();
    assert_eq!((h.op, data.as_slice()), (op::RW, b"last words".as_slice()));
    let (h, _) = g.recv();
    assert_eq!(h.op, op::SHUTDOWN);
    assert_eq!(h.flags, shutdown::BOTH);
    g.tx(ghdr(9, 7, op::RST), &[]);
    g.wait_tx_done();
    // The connection is gone: data for it now gets a RST.
    g.tx(ghdr(9, 7, op::RW).with_len(1), b"x");
    let (h, _) = g.recv();
    assert_eq!(h.op, op::RST);
}

#[test]
fn rx_credit_limits_host_to_guest_data() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, uds) = new_dev(dir.path(), VsockLimits::default());
    let l = UnixListener::bind(format!("{}_1", uds.display())).unwrap();
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    g.give_rx(64);
    let mut req = ghdr(2, 1, op::REQUEST);
    req.buf_alloc = 1000;
    g.tx(req, &[]);
    let mut host = accept(&l);
    assert_eq!(g.recv().0.op, op::RESPONSE);

    let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    host.write_all(&payload).unwrap();
    let mut got = Vec::new();
    let mut fwd = 0u32;
    let mut credit_requests = 0;
    while got.len() < payload.len() {
        let (h, data) = g.recv();
        match h.op {
            op::RW => {
                got.extend_from_slice(&data);
                assert!(
                    got.len() as u32 <= fwd + 1000,
                    "device exceeded the guest's credit"
                );
            }
            op::CREDIT_REQUEST => {
                credit_requests += 1;
                assert_eq!(got.len() as u32, fwd + 1000, "asks only when out of credit");
                // Nothing more comes until the guest frees space.
                assert!(g.try_recv(Duration::from_millis(100)).is_none());
                fwd = got.len() as u32;
                let mut upd = ghdr(2, 1, op::CREDIT_UPDATE);
                upd.buf_alloc = 1000;
                upd.fwd_cnt = fwd;
                g.tx(upd, &[]);
                g.give_rx(8);
            }
            other => panic!("unexpected op {other}"),
        }
    }
    assert_eq!(got, payload);
    assert_eq!(
        credit_requests, 4,
        "one request per 1000 bytes of credit used up"
    );
}

#[test]
fn tx_credit_updates_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let limits = VsockLimits {
        conn_buf_size: 4096,
        ..VsockLimits::default()
    };
    let (mut dev, uds) = new_dev(dir.path(), limits);
    let l = UnixListener::bind(format!("{}_1", uds.display())).unwrap();
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    g.give_rx(16);
    let mut host = guest_connect(&mut g, &l, 2, 1);

    // 1500 bytes forwarded is past a quarter of buf_alloc: an unsolicited credit update.
    g.tx(ghdr(2, 1, op::RW).with_len(1500), &[7u8; 1500]);
    assert_eq!(read_n(&mut host, 1500), vec![7u8; 1500]);
    let (h, _) = g.recv();
    assert_eq!(h.op, op::CREDIT_UPDATE);
    assert_eq!((h.buf_alloc, h.fwd_cnt), (4096, 1500));

    // A small write gives no update, but a credit request is always answered.
    g.tx(ghdr(2, 1, op::RW).with_len(10), &[1u8; 10]);
    assert_eq!(read_n(&mut host, 10), vec![1u8; 10]);
    assert!(g.try_recv(Duration::from_millis(100)).is_none());
    g.tx(ghdr(2, 1, op::CREDIT_REQUEST), &[]);
    let (h, _) = g.recv();
    assert_eq!(h.op, op::CREDIT_UPDATE);
    assert_eq!(h.fwd_cnt, 1510);
}

#[test]
fn guest_ignoring_credit_is_reset_with_bounded_buffering() {
    let dir = tempfile::tempdir().unwrap();
    let limits = VsockLimits {
        conn_buf_size: 4096,
        ..VsockLimits::default()
    };
    let (mut dev, uds) = new_dev(dir.path(), limits);
    let l = UnixListener::bind(format!("{}_1", uds.display())).unwrap();
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    g.give_rx(64);
    // The host never reads.
    let _host = guest_connect(&mut g, &l, 2, 1);
    let chunk = vec![0x55u8; 32 * 1024];
    let mut sent = 0usize;
    let rst = loop {
        assert!(sent < 64 << 20, "no reset after {sent} bytes");
        g.tx(ghdr(2, 1, op::RW).with_len(chunk.len() as u32), &chunk);
        g.wait_tx_done();
        sent += chunk.len();
        if let Some((h, _)) = g.try_recv(Duration::from_millis(0)) {
            if h.op == op::RST {
                break h;
            }
            assert_eq!(h.op, op::CREDIT_UPDATE);
        }
    };
    assert_eq!((rst.src_port, rst.dst_port), (1, 2));
}

#[test]
fn packets_for_unknown_connections_and_wrong_cids() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, _uds) = new_dev(dir.path(), VsockLimits::default());
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    g.give_rx(8);

    // Data for a connection that does not exist: RST with the ports swapped.
    g.tx(ghdr(40, 41, op::RW).with_len(2), b"hi");
    let (h, _) = g.recv();
    assert_eq!(h.op, op::RST);
    assert_eq!((h.src_port, h.dst_port, h.dst_cid), (41, 40, CID));

    // A request to a port nobody listens on: RST.
    g.tx(ghdr(40, 42, op::REQUEST), &[]);
    assert_eq!(g.recv().0.op, op::RST);

    // A RST for an unknown connection gets no answer.
    g.tx(ghdr(40, 43, op::RST), &[]);
    // A spoofed source CID or a packet for another CID is dropped silently.
    let mut spoof = ghdr(40, 44, op::REQUEST);
    spoof.src_cid = 7;
    g.tx(spoof, &[]);
    let mut other = ghdr(40, 44, op::REQUEST);
    other.dst_cid = 9;
    g.tx(other, &[]);
    // A non-stream socket type is refused with a RST.
    let mut dgram = ghdr(40, 45, op::REQUEST);
    dgram.type_ = 2;
    g.tx(dgram, &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.src_port), (op::RST, 45));
    assert!(g.try_recv(Duration::from_millis(100)).is_none());
    g.wait_tx_done();
}

#[test]
fn malformed_chains_are_dropped_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, _uds) = new_dev(dir.path(), VsockLimits::default());
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);

    // Header descriptor shorter than a header.
    let a = g.alloc(64);
    g.tx_raw(&[(a, 20, false)]);
    // Device-writable descriptor on the tx queue.
    let b = g.alloc(64);
    mem.write_slice(&ghdr(1, 2, op::RW).to_bytes(), GuestAddress(b))
        .unwrap();
    g.tx_raw(&[(b, PKT_HEADER_SIZE as u32, true)]);
    // Header `len` larger than the data buffer.
    let c = g.alloc(64);
    let d = g.alloc(100);
    mem.write_slice(
        &ghdr(1, 2, op::RW).with_len(1000).to_bytes(),
        GuestAddress(c),
    )
    .unwrap();
    g.tx_raw(&[(c, PKT_HEADER_SIZE as u32, false), (d, 100, false)]);
    // Header `len` beyond the largest packet.
    let e = g.alloc(64);
    mem.write_slice(
        &ghdr(1, 2, op::RW).with_len(u32::MAX).to_bytes(),
        GuestAddress(e),
    )
    .unwrap();
    g.tx_raw(&[(e, PKT_HEADER_SIZE as u32, false), (d, 100, false)]);
    // Data announced but no data descriptor.
    let f = g.alloc(64);
    mem.write_slice(&ghdr(1, 2, op::RW).with_len(10).to_bytes(), GuestAddress(f))
        .unwrap();
    g.tx_raw(&[(f, PKT_HEADER_SIZE as u32, false)]);
    // Buffers outside guest memory.
    g.tx_raw(&[(MEM_SIZE + 0x1000, PKT_HEADER_SIZE as u32, false)]);
    g.tx_raw(&[(u64::MAX - 8, PKT_HEADER_SIZE as u32, false)]);
    // Every chain is returned to the guest and none produced a packet.
    for _ in 0..7 {
        let (_, len) = g.next_used(TXQ, WAIT).expect("chain returned");
        assert_eq!(len, 0);
    }

    // Malformed rx buffers: read-only, too short, data descriptor too long. They are returned
    // with length 0 and the next good buffer carries the packet.
    let r1 = g.alloc(64);
    g.add_chain(RXQ, &[(r1, PKT_HEADER_SIZE as u32, false), (r1, 64, false)]);
    let r2 = g.alloc(64);
    g.add_chain(RXQ, &[(r2, 8, true)]);
    let r3 = g.alloc(64);
    g.add_chain(
        RXQ,
        &[
            (r3, PKT_HEADER_SIZE as u32, true),
            (BUF_START, 1 << 20, true),
        ],
    );
    g.give_rx(1);
    g.tx(ghdr(1, 2, op::RW).with_len(1), b"z");
    for _ in 0..3 {
        let (_, len) = g.next_used(RXQ, WAIT).expect("bad buffer returned");
        assert_eq!(len, 0);
    }
    let (h, _) = g.recv();
    assert_eq!(h.op, op::RST);

    // The device still works.
    g.give_rx(1);
    g.tx(ghdr(1, 3, op::RW), &[]);
    assert_eq!(g.recv().0.op, op::RST);
}

#[test]
fn connection_limit_and_rst_queue_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let limits = VsockLimits {
        max_connections: 2,
        max_queued_rsts: 4,
        ..VsockLimits::default()
    };
    let (mut dev, uds) = new_dev(dir.path(), limits);
    let l = UnixListener::bind(format!("{}_5", uds.display())).unwrap();
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    // Exactly the buffers for two RESPONSEs and one RST.
    g.give_rx(3);
    let _a = guest_connect(&mut g, &l, 100, 5);
    let _b = guest_connect(&mut g, &l, 101, 5);
    g.tx(ghdr(102, 5, op::REQUEST), &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.dst_port), (op::RST, 102));

    // Without rx buffers, 50 bogus packets queue at most 4 RSTs.
    for port in 0..50 {
        g.tx(ghdr(1000 + port, 6, op::RW), &[]);
    }
    g.wait_tx_done();
    g.give_rx(60);
    let mut rsts = 0;
    while let Some((h, _)) = g.try_recv(Duration::from_millis(200)) {
        assert_eq!(h.op, op::RST);
        rsts += 1;
    }
    assert_eq!(rsts, 4);
}

#[test]
fn unanswered_host_connect_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let limits = VsockLimits {
        connect_timeout: Duration::from_millis(100),
        ..VsockLimits::default()
    };
    let (mut dev, uds) = new_dev(dir.path(), limits);
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    g.give_rx(4);
    let mut host = UnixStream::connect(&uds).unwrap();
    host.set_read_timeout(Some(WAIT)).unwrap();
    host.write_all(b"CONNECT 99\n").unwrap();
    let (req, _) = g.recv();
    assert_eq!(req.op, op::REQUEST);
    // The guest never answers: the device gives up, resets the guest side and closes the host.
    let (rst, _) = g.recv();
    assert_eq!((rst.op, rst.src_port), (op::RST, req.src_port));
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // A client that never sends its CONNECT line is dropped too; a bad line closes at once.
    let mut idle = UnixStream::connect(&uds).unwrap();
    idle.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(idle.read(&mut [0u8; 8]).unwrap(), 0);
    let mut bad = UnixStream::connect(&uds).unwrap();
    bad.set_read_timeout(Some(WAIT)).unwrap();
    bad.write_all(b"HELLO\n").unwrap();
    assert_eq!(bad.read(&mut [0u8; 8]).unwrap(), 0);
}

#[test]
fn transport_reset_event_drops_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, uds) = new_dev(dir.path(), VsockLimits::default());
    let l = UnixListener::bind(format!("{}_5", uds.display())).unwrap();
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    g.give_rx(4);
    let mut host = guest_connect(&mut g, &l, 100, 5);
    dev.handle().unwrap().reset_transport().unwrap();
    g.give_ev();
    let (id, len) = g.next_used(EVQ, WAIT).expect("event delivered");
    assert_eq!(len, 4);
    let addr = g.ev_bufs[&id];
    assert_eq!(mem.read_obj::<u32>(GuestAddress(addr)).unwrap(), 0);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn reset_and_reactivate_then_drop_removes_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, uds) = new_dev(dir.path(), VsockLimits::default());
    let mem = new_mem();
    {
        let mut g = Guest::new(&mem);
        g.activate(&mut dev);
        assert!(dev.is_activated());
    }
    dev.reset();
    assert!(!dev.is_activated());
    // A second activation (fresh queues) serves host clients on the same socket.
    let mem2 = new_mem();
    let mut g = Guest::new(&mem2);
    g.activate(&mut dev);
    g.give_rx(2);
    let mut host = UnixStream::connect(&uds).unwrap();
    host.write_all(b"CONNECT 3\n").unwrap();
    assert_eq!(g.recv().0.op, op::REQUEST);
    drop(dev);
    assert!(!uds.exists(), "socket file removed on drop");
}

#[test]
fn concurrent_connections_echo() {
    const CONNS: u32 = 4;
    const TOTAL: usize = 96 * 1024;
    const CHUNK: usize = 4096;
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, uds) = new_dev(dir.path(), VsockLimits::default());
    let l = UnixListener::bind(format!("{}_9", uds.display())).unwrap();
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    g.give_rx(CONNS as usize);
    let mut echoes = Vec::new();
    for i in 0..CONNS {
        let mut host = guest_connect(&mut g, &l, 200 + i, 9);
        echoes.push(std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match host.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => host.write_all(&buf[..n]).unwrap(),
                }
            }
        }));
    }
    let pattern = |port: u32, i: usize| (i as u32).wrapping_mul(port) as u8;
    let mut sent = vec![0usize; CONNS as usize];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); CONNS as usize];
    let mut outstanding_rx = 0;
    let start = Instant::now();
    while got.iter().any(|v| v.len() < TOTAL) {
        assert!(start.elapsed() < Duration::from_secs(60), "echo stalled");
        // Interleave the connections' data, one chunk each per round.
        for (c, sent) in sent.iter_mut().enumerate() {
            if *sent < TOTAL {
                let port = 200 + c as u32;
                let data: Vec<u8> = (*sent..*sent + CHUNK).map(|i| pattern(port, i)).collect();
                g.tx(ghdr(port, 9, op::RW).with_len(CHUNK as u32), &data);
                *sent += CHUNK;
            }
        }
        g.wait_tx_done();
        if outstanding_rx < 32 {
            g.give_rx(32 - outstanding_rx);
            outstanding_rx = 32;
        }
        while let Some((h, data)) = g.try_recv(Duration::from_millis(5)) {
            outstanding_rx -= 1;
            let c = (h.dst_port - 200) as usize;
            match h.op {
                op::RW => got[c].extend_from_slice(&data),
                op::CREDIT_REQUEST => {
                    let mut upd = ghdr(h.dst_port, 9, op::CREDIT_UPDATE);
                    upd.fwd_cnt = got[c].len() as u32;
                    g.tx(upd, &[]);
                }
                op::CREDIT_UPDATE => {}
                other => panic!("unexpected op {other}"),
            }
            if outstanding_rx == 0 {
                break;
            }
        }
    }
    for (c, data) in got.iter().enumerate() {
        let port = 200 + c as u32;
        assert_eq!(data.len(), TOTAL);
        assert!(data.iter().enumerate().all(|(i, b)| *b == pattern(port, i)));
    }
    drop(dev);
    for e in echoes {
        e.join().unwrap();
    }
}

/// The boot probe's sequence: guest-initiated ping/pong with the host closing right after its
/// reply, then a host-initiated ping/pong on a new connection.
#[test]
fn probe_sequence_guest_then_host_initiated() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, uds) = new_dev(dir.path(), VsockLimits::default());
    let l = UnixListener::bind(format!("{}_52000", uds.display())).unwrap();
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    g.give_rx(8);

    let mut host = guest_connect(&mut g, &l, 1025, 52000);
    g.tx(ghdr(1025, 52000, op::RW).with_len(5), b"ping\n");
    assert_eq!(read_n(&mut host, 5), b"ping\n");
    host.write_all(b"pong\n").unwrap();
    drop(host);
    let (h, data) = g.recv();
    assert_eq!((h.op, data.as_slice()), (op::RW, b"pong\n".as_slice()));
    let (h, _) = g.recv();
    assert_eq!((h.op, h.flags), (op::SHUTDOWN, shutdown::BOTH));
    // Linux answers a full shutdown from the peer with a RST once the data was read.
    g.tx(ghdr(1025, 52000, op::RST), &[]);

    let mut host = UnixStream::connect(&uds).unwrap();
    host.set_read_timeout(Some(WAIT)).unwrap();
    host.write_all(b"CONNECT 52001\n").unwrap();
    let (req, _) = g.recv();
    assert_eq!((req.op, req.dst_port), (op::REQUEST, 52001));
    let hport = req.src_port;
    g.tx(ghdr(52001, hport, op::RESPONSE), &[]);
    assert_eq!(read_line(&mut host), format!("OK {hport}"));
    host.write_all(b"ping2\n").unwrap();
    let (h, data) = g.recv();
    assert_eq!((h.op, data.as_slice()), (op::RW, b"ping2\n".as_slice()));
    g.tx(ghdr(52001, hport, op::RW).with_len(6), b"pong2\n");
    assert_eq!(read_n(&mut host, 6), b"pong2\n");
}

/// The counters the SIGUSR1 dump prints: what moved, and each reset by its reason, so that a
/// connection dying under a live guest names its cause.
#[test]
fn counters_name_every_reset_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, uds) = new_dev(dir.path(), VsockLimits::default());
    let counters = crate::virtio::VirtioDevice::counters(&dev).unwrap();
    let l = UnixListener::bind(format!("{}_7", uds.display())).unwrap();
    let mem = new_mem();
    let mut g = Guest::new(&mem);
    g.activate(&mut dev);
    g.give_rx(16);
    let count = |name: &str| counters.by_name(name).unwrap();

    // A guest RST on a connection open both ways: counted apart from orderly closes.
    let mut h1 = guest_connect(&mut g, &l, 9, 7);
    g.tx(ghdr(9, 7, op::RW).with_len(2), b"hi");
    assert_eq!(read_n(&mut h1, 2), b"hi");
    g.tx(ghdr(9, 7, op::RST), &[]);
    g.wait_tx_done();
    assert_eq!((count("guest_rst"), count("guest_rst_open")), (1, 1));

    // An orderly close (the host hung up, the guest's RST completes it) is not "open".
    let h2 = guest_connect(&mut g, &l, 10, 7);
    drop(h2);
    let (h, _) = g.recv();
    assert_eq!(h.op, op::SHUTDOWN);
    g.tx(ghdr(10, 7, op::RST), &[]);
    g.wait_tx_done();
    assert_eq!((count("guest_rst"), count("guest_rst_open")), (2, 1));

    // An operation the state does not allow (RESPONSE on an open connection) resets it, and
    // the reason is counted.
    let _h3 = guest_connect(&mut g, &l, 11, 7);
    g.tx(ghdr(11, 7, op::RESPONSE), &[]);
    let (h, _) = g.recv();
    assert_eq!(h.op, op::RST);
    assert_eq!(count("reset_unexpected_op"), 1, "{}", counters.summary());
    assert_eq!(count("opened_by_guest"), 3, "{}", counters.summary());
    assert_eq!(count("tx_bytes"), 2);
    assert!(count("tx_packets") >= 7 && count("rx_packets") >= 5);
    let dump = counters.summary();
    assert!(dump.contains("reset_unexpected_op=1") && dump.contains("guest_rst_open=1"));
}
