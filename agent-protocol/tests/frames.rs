//! Protocol tests: round trips of every message, and rejection (without panics) of oversize,
//! truncated, garbage, out-of-bounds and wrong-version input.

use std::io::Cursor;

use agent_protocol::frame::{decode_payload, encode_frame, MAGIC};
use agent_protocol::limits::*;
use agent_protocol::*;

fn container() -> ContainerSpec {
    ContainerSpec {
        name: "app".into(),
        rootfs: "/images/busybox".into(),
        argv: vec!["sh".into(), "-c".into(), "echo $(HOME)".into()],
        env: vec![EnvVar {
            name: "HOME".into(),
            value: "/root".into(),
        }],
        working_dir: Some("/work".into()),
        user: Some("1000:1000".into()),
        mounts: vec![MountSpec {
            source: "/vol/data".into(),
            destination: "/data".into(),
            read_only: true,
            sub_path: Some("a/b".into()),
        }],
        resources: Resources {
            cpu_millis: Some(500),
            memory_bytes: Some(1 << 26),
            pids: Some(64),
            cpu_request_millis: Some(250),
            memory_request_bytes: None,
        },
        tty: false,
        stdin: true,
    }
}

fn pod() -> PodSpec {
    let mut init = container();
    init.name = "init".into();
    PodSpec {
        name: "web".into(),
        namespace: "default".into(),
        uid: "1234-5678".into(),
        hostname: "web".into(),
        init_containers: vec![init],
        containers: vec![container()],
        restart_policy: RestartPolicy::OnFailure,
        share_process_namespace: true,
        termination_grace_seconds: 30,
        active_deadline_seconds: Some(600),
        resolv_conf: Some("nameserver 10.0.2.3\n".into()),
        test_backoff_base_ms: None,
        filesystems: vec![
            PodFilesystem {
                mount_point: "/run/peapod/images/0".into(),
                source: FsSource::VirtioFs { tag: "img0".into() },
                read_only: true,
            },
            PodFilesystem {
                mount_point: "/run/peapod/memvol/cache".into(),
                source: FsSource::Tmpfs {
                    size_bytes: Some(64 << 20),
                },
                read_only: false,
            },
        ],
        scratch_bytes: Some(256 << 20),
    }
}

fn exec_spec() -> ExecSpec {
    ExecSpec {
        container: "app".into(),
        argv: vec!["sh".into()],
        env: vec![],
        tty: true,
        stdin: true,
        rows: 24,
        cols: 80,
    }
}

fn terminated() -> ContainerState {
    ContainerState::Terminated {
        exit_code: 137,
        signal: Some(9),
        reason: "OOMKilled".into(),
        message: "".into(),
        started_at_ns: 1,
        finished_at_ns: 2,
    }
}

fn every_message() -> Vec<Message> {
    vec![
        Message::Hello(StreamTarget::Control),
        Message::Hello(StreamTarget::Logs(LogsRequest {
            container: "app".into(),
            source: LogSource::Both,
            follow: true,
            tail: Some(10),
            after_seq: Some(u64::MAX),
        })),
        Message::Hello(StreamTarget::Exec(exec_spec())),
        Message::HelloOk {
            agent: "peapod-agent/0.1.0".into(),
        },
        Message::CreatePod(Box::new(pod())),
        Message::GetStatus,
        Message::KillContainer {
            name: "app".into(),
            signal: 15,
        },
        Message::StopPod {
            grace_seconds: Some(3),
        },
        Message::Shutdown {
            grace_seconds: None,
        },
        Message::Ping,
        Message::Ok,
        Message::Pong,
        Message::Status(PodStatus {
            phase: PodPhase::Running,
            reason: None,
            init_containers: vec![ContainerStatus {
                name: "init".into(),
                state: terminated(),
                last_state: None,
                restart_count: 0,
                pid: None,
            }],
            containers: vec![ContainerStatus {
                name: "app".into(),
                state: ContainerState::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: "back-off".into(),
                },
                last_state: Some(terminated()),
                restart_count: 3,
                pid: Some(42),
            }],
        }),
        Message::Error {
            kind: ErrorKind::NotFound,
            message: "no container".into(),
        },
        Message::GetGuestInfo,
        Message::GuestInfo(GuestInfo {
            uptime_ns: 2_500_000_000,
            agent_ready_ns: 2_100_000_000,
            mem_total_bytes: 500 << 20,
            mem_available_bytes: 480 << 20,
        }),
        Message::Logs(vec![LogRecord {
            seq: 1 << 40,
            ts_ns: 1_700_000_000_000_000_000,
            stream: StreamKind::Stderr,
            partial: true,
            data: b"partial line".to_vec(),
        }]),
        Message::LogsDropped { records: 7 },
        Message::LogsEnd,
        Message::ExecStarted { pid: 99 },
        Message::Stdin(b"ls\n".to_vec()),
        Message::StdinEof,
        Message::Resize {
            rows: 50,
            cols: 132,
        },
        Message::Signal(2),
        Message::Stdout(vec![0, 1, 2, 255]),
        Message::Stderr(b"err".to_vec()),
        Message::Exit {
            code: 130,
            signal: Some(2),
        },
        Message::StopContainer {
            name: "app".into(),
            grace_seconds: Some(1),
        },
    ]
}

#[test]
fn every_message_round_trips() {
    let mut buf = Vec::new();
    for m in every_message() {
        write_frame(&mut buf, &m).unwrap();
    }
    let mut r = Cursor::new(buf);
    for m in every_message() {
        assert_eq!(read_frame(&mut r).unwrap(), m);
    }
    assert!(matches!(read_frame(&mut r), Err(FrameError::Closed)));
}

#[test]
fn preamble_and_versions() {
    let mut buf = Vec::new();
    write_preamble(&mut buf).unwrap();
    read_preamble(&mut Cursor::new(&buf)).unwrap();
    let mut wrong = MAGIC.to_vec();
    wrong.extend_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
    match read_preamble(&mut Cursor::new(wrong)) {
        Err(FrameError::VersionMismatch { ours, theirs }) => {
            assert_eq!((ours, theirs), (PROTOCOL_VERSION, PROTOCOL_VERSION + 1))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        read_preamble(&mut Cursor::new(b"HTTP/1.1".to_vec())),
        Err(FrameError::BadMagic)
    ));
    assert!(matches!(
        read_preamble(&mut Cursor::new(b"PP".to_vec())),
        Err(FrameError::Truncated)
    ));
}

#[test]
fn oversize_and_truncated_frames_are_rejected() {
    let mut big = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
    big.extend_from_slice(&[0; 16]);
    assert!(matches!(
        read_frame(&mut Cursor::new(big)),
        Err(FrameError::TooLarge(_))
    ));
    let frame = encode_frame(&Message::CreatePod(Box::new(pod()))).unwrap();
    for cut in [1, 3, 4, 5, frame.len() - 1] {
        assert!(
            matches!(
                read_frame(&mut Cursor::new(&frame[..cut])),
                Err(FrameError::Truncated)
            ),
            "cut at {cut}"
        );
    }
    // Encoding refuses to produce an oversize frame.
    let huge = Message::Stdout(vec![0; MAX_FRAME_LEN + 10]);
    assert!(matches!(encode_frame(&huge), Err(FrameError::TooLarge(_))));
}

#[test]
fn out_of_bounds_content_is_rejected() {
    let mut p = pod();
    p.containers[0].argv = vec!["x".repeat(MAX_ARG + 1)];
    assert!(matches!(
        decode_payload(&encode_frame(&Message::CreatePod(Box::new(p))).unwrap()[4..]),
        Err(FrameError::Invalid(_))
    ));
    let mut p = pod();
    p.containers[0].env = (0..MAX_ENV + 1)
        .map(|i| EnvVar {
            name: format!("V{i}"),
            value: String::new(),
        })
        .collect();
    assert!(decode_payload(&encode_frame(&Message::CreatePod(Box::new(p))).unwrap()[4..]).is_err());
    let mut p = pod();
    p.containers[0].rootfs = "relative/path".into();
    assert!(p.validate().is_err());
    let mut p = pod();
    p.containers[0].name = "../evil".into();
    assert!(p.validate().is_err());
    let mut p = pod();
    p.containers[0].argv = vec![];
    assert!(p.validate().is_err());
    let mut p = pod();
    p.containers.push(container());
    assert!(p.validate().is_err(), "duplicate names");
    let mut p = pod();
    p.containers[0].env[0].name = "A=B".into();
    assert!(p.validate().is_err());
    // Pod file systems (v2): absolute mount points, bounded count, non-empty bounded tags.
    let mut p = pod();
    p.filesystems[0].mount_point = "run/peapod/images/0".into();
    assert!(p.validate().is_err());
    let mut p = pod();
    p.filesystems[0].source = FsSource::VirtioFs { tag: String::new() };
    assert!(p.validate().is_err());
    let mut p = pod();
    p.filesystems[0].source = FsSource::VirtioFs {
        tag: "t".repeat(MAX_FS_TAG + 1),
    };
    assert!(p.validate().is_err());
    let mut p = pod();
    p.filesystems[0].source = FsSource::VirtioFs {
        tag: "t".repeat(MAX_FS_TAG),
    };
    assert!(p.validate().is_ok());
    let mut p = pod();
    p.filesystems = vec![p.filesystems[1].clone(); MAX_FILESYSTEMS + 1];
    assert!(decode_payload(&encode_frame(&Message::CreatePod(Box::new(p))).unwrap()[4..]).is_err());
    let status = Message::Status(PodStatus {
        phase: PodPhase::Failed,
        reason: Some("x".repeat(MAX_NAME + 1)),
        init_containers: vec![],
        containers: vec![],
    });
    assert!(decode_payload(&encode_frame(&status).unwrap()[4..]).is_err());
    let logs = Message::Logs(vec![LogRecord {
        seq: 1,
        ts_ns: 0,
        stream: StreamKind::Stdout,
        partial: false,
        data: vec![b'x'; MAX_LOG_CHUNK + 1],
    }]);
    assert!(decode_payload(&encode_frame(&logs).unwrap()[4..]).is_err());
    // Trailing bytes.
    let mut f = encode_frame(&Message::Ping).unwrap();
    f.push(0);
    let len = (f.len() - 4) as u32;
    f[..4].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(
        read_frame(&mut Cursor::new(f)),
        Err(FrameError::Trailing(1))
    ));
}

/// A small deterministic PRNG (xorshift64*), so the property test needs no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let valid: Vec<Vec<u8>> = every_message()
        .iter()
        .map(|m| encode_frame(m).unwrap())
        .collect();
    for i in 0..20_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let n = (rng.next() % 300) as usize;
            (0..n).map(|_| rng.next() as u8).collect()
        } else {
            // Mutate a valid frame: flip bytes, keep the length prefix plausible.
            let mut f = valid[(rng.next() as usize) % valid.len()].clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = 4 + (rng.next() as usize) % (f.len() - 4).max(1);
                if at < f.len() {
                    f[at] = rng.next() as u8;
                }
            }
            f
        };
        let mut r = Cursor::new(bytes);
        // Read frames until an error; any result is fine, a panic is not.
        for _ in 0..8 {
            if read_frame(&mut r).is_err() {
                break;
            }
        }
        let _ = read_preamble(&mut Cursor::new(r.into_inner()));
    }
}

#[test]
fn requests_default_to_limits() {
    let r = Resources {
        cpu_millis: Some(500),
        memory_bytes: Some(1 << 26),
        pids: None,
        cpu_request_millis: Some(100),
        memory_request_bytes: None,
    };
    assert_eq!(r.effective_cpu_request(), Some(100));
    assert_eq!(r.effective_memory_request(), Some(1 << 26));
    assert_eq!(Resources::default().effective_memory_request(), None);
    assert_eq!(Resources::default().effective_cpu_request(), None);
}
