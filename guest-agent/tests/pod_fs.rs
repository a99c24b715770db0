//! Host-mode integration tests of the pod file systems (protocol v2): a `Memory` emptyDir
//! (tmpfs) shared by two containers, the scratch limit on the containers' writable layers,
//! rollback of a pod whose file systems fail, and `GetGuestInfo`.

mod common;

use std::path::Path;
use std::time::Duration;

use agent_protocol::*;
use common::*;

const T: Duration = Duration::from_secs(30);

/// The sandbox's mount table (the agent's mount namespace).
fn mountinfo(a: &Agent) -> String {
    let pid = a.sandbox_pid().expect("sandbox pid");
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap()
}

/// The mountinfo line whose mount point is `mp`.
fn mount_line(info: &str, mp: &Path) -> Option<String> {
    let mp = mp.to_str().unwrap();
    info.lines()
        .find(|l| l.split_whitespace().nth(4) == Some(mp))
        .map(str::to_string)
}

fn tmpfs(mount_point: &Path, size: Option<u64>) -> PodFilesystem {
    PodFilesystem {
        mount_point: mount_point.display().to_string(),
        source: FsSource::Tmpfs { size_bytes: size },
        read_only: false,
    }
}

fn agent_error(e: ClientError) -> (ErrorKind, String) {
    match e {
        ClientError::Agent { kind, message } => (kind, message),
        other => panic!("expected an agent error, got {other}"),
    }
}

#[test]
fn memory_empty_dir_is_a_sized_0777_tmpfs_shared_by_two_containers() {
    let a = Agent::start();
    let memvol = a.dir.path().join("state/memvol/cache");
    let vol = |sub: Option<&str>, dst: &str| MountSpec {
        source: memvol.display().to_string(),
        destination: dst.into(),
        read_only: false,
        sub_path: sub.map(str::to_string),
    };
    // The init container runs as nobody: it can write because the tmpfs is 0777.
    let mut prep = a.container(
        "prep",
        "echo from-prep > /cache/f && mkdir /cache/sub && echo in-sub > /cache/sub/g",
    );
    prep.mounts = vec![vol(None, "/cache")];
    prep.user = Some("65534".into());
    let mut writer = a.container("writer", "exec sleep 1000");
    writer.mounts = vec![vol(None, "/cache")];
    let mut reader = a.container("reader", "cat /data/f /only-sub/g && exec sleep 1000");
    reader.mounts = vec![vol(None, "/data"), vol(Some("sub"), "/only-sub")];
    let mut p = pod("memvol", vec![writer, reader]);
    p.init_containers = vec![prep];
    p.filesystems = vec![tmpfs(&memvol, Some(4 << 20))];
    a.control().create_pod(&p).unwrap();
    a.wait_log("reader", "from-prep");
    a.wait_log("reader", "in-sub");
    // Shared: what one app container writes, the other reads.
    assert_eq!(a.exec("writer", &["sh", "-c", "echo w > /cache/w"]).2, 0);
    assert_eq!(a.exec("reader", &["cat", "/data/w"]).0, "w\n");
    let (mode, _, code) = a.exec("reader", &["stat", "-c", "%a", "/data"]);
    assert_eq!((code, mode.trim()), (0, "777"));
    let line = mount_line(&mountinfo(&a), &memvol).expect("memvol mounted in the agent");
    assert!(
        line.contains(" - tmpfs ") && line.contains("size=4096k") && line.contains("nosuid"),
        "{line}"
    );
    // sizeLimit is enforced.
    let (_, err, code) = a.exec(
        "writer",
        &["dd", "if=/dev/zero", "of=/cache/big", "bs=1M", "count=8"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("No space left on device"), "{err}");
    a.control().stop_pod(Some(1)).unwrap();
    assert_eq!(
        mount_line(&mountinfo(&a), &memvol),
        None,
        "unmounted on stop"
    );
    // The agent removed the mount point it had made, and still answers.
    let pid = a.sandbox_pid().expect("sandbox pid");
    assert!(!Path::new(&format!("/proc/{pid}/root{}", memvol.display())).exists());
    a.control().ping().unwrap();
}

#[test]
fn scratch_limit_gives_enospc_and_the_agent_keeps_working() {
    let a = Agent::start();
    let filler = a.container(
        "filler",
        "dd if=/dev/zero of=/big bs=1M count=1024; echo \"dd exit $?\"; exec sleep 1000",
    );
    let other = a.container("other", "exec sleep 1000");
    let mut p = pod("scratch", vec![filler, other]);
    p.scratch_bytes = Some(16 << 20);
    let uid = p.uid.clone();
    a.control().create_pod(&p).unwrap();
    let log = a.wait_log("filler", "dd exit");
    assert!(log.contains("No space left on device"), "{log}");
    assert!(!log.contains("dd exit 0"), "{log}");
    // The write stopped at the limit: /big is at most 16 MiB.
    let (size, _, code) = a.exec("filler", &["stat", "-c", "%s", "/big"]);
    assert_eq!(code, 0);
    let size: u64 = size.trim().parse().unwrap();
    assert!(size > 0 && size <= 16 << 20, "{size}");
    // The agent and the other container still work; freeing the space lets writes through.
    a.control().ping().unwrap();
    let st = a.control().status().unwrap();
    assert!(running(&st, "filler") && running(&st, "other"), "{st:#?}");
    assert_eq!(a.exec("other", &["echo", "alive"]).0, "alive\n");
    assert_eq!(a.exec("filler", &["rm", "/big"]).2, 0);
    assert_eq!(
        a.exec("other", &["sh", "-c", "echo x > /after && cat /after"])
            .0,
        "x\n"
    );
    let scratch = a
        .dir
        .path()
        .join("state/pods")
        .join(&uid)
        .join("containers");
    let line = mount_line(&mountinfo(&a), &scratch).expect("scratch tmpfs mounted");
    assert!(
        line.contains(" - tmpfs ") && line.contains("size=16384k"),
        "{line}"
    );
    a.control().stop_pod(Some(1)).unwrap();
    assert_eq!(mount_line(&mountinfo(&a), &scratch), None);
}

#[test]
fn failing_file_systems_undo_everything_and_bad_mount_points_are_refused() {
    let a = Agent::start();
    let ok = a.dir.path().join("state/memvol/first");
    let bad = a.dir.path().join("state/images/0");
    let mut p = pod("badfs", vec![a.container("app", "exec sleep 1000")]);
    p.scratch_bytes = Some(8 << 20);
    p.filesystems = vec![
        tmpfs(&ok, Some(1 << 20)),
        PodFilesystem {
            mount_point: bad.display().to_string(),
            source: FsSource::VirtioFs {
                tag: "no-such-tag".into(),
            },
            read_only: true,
        },
    ];
    let (kind, msg) = agent_error(a.control().create_pod(&p).unwrap_err());
    assert_eq!(kind, ErrorKind::Internal);
    assert!(
        msg.contains("virtio-fs tag no-such-tag") && msg.contains(bad.to_str().unwrap()),
        "{msg}"
    );
    let info = mountinfo(&a);
    assert_eq!(mount_line(&info, &ok), None, "first tmpfs left:\n{info}");
    assert!(!info.contains("/containers "), "scratch left:\n{info}");
    assert!(!info.contains(a.dir.path().join("state/memvol").to_str().unwrap()));
    // The agent has no pod and takes a good one.
    let (kind, _) = agent_error(a.control().status().unwrap_err());
    assert_eq!(kind, ErrorKind::NotFound);

    for mp in ["/proc/x", "relative", "/", "/a/../b"] {
        let mut p = pod("badmp", vec![a.container("app", "exec sleep 1000")]);
        p.filesystems = vec![tmpfs(Path::new(mp), None)];
        let r = a.control().create_pod(&p);
        // Relative and `..` paths are already refused by the protocol validation.
        let (kind, msg) = agent_error(r.unwrap_err());
        assert_eq!(kind, ErrorKind::InvalidRequest, "{mp}: {msg}");
    }
    let mut p = pod("badsize", vec![a.container("app", "exec sleep 1000")]);
    p.scratch_bytes = Some(0);
    let (kind, msg) = agent_error(a.control().create_pod(&p).unwrap_err());
    assert_eq!(kind, ErrorKind::InvalidRequest, "{msg}");

    let mut good = pod("good", vec![a.container("app", "exec sleep 1000")]);
    good.filesystems = vec![tmpfs(&ok, Some(1 << 20))];
    a.control().create_pod(&good).unwrap();
    a.wait_status("running", T, |s| running(s, "app"));
}

#[test]
fn guest_info_reports_boot_time_readiness_and_memory() {
    let a = Agent::start();
    let g = a.control().guest_info().unwrap();
    // Host mode: the host's clock and memory.
    let uptime_s: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let uptime_ns = (uptime_s * 1e9) as u64;
    assert!(
        g.agent_ready_ns > 0 && g.agent_ready_ns <= g.uptime_ns,
        "{g:?}"
    );
    assert!(
        g.uptime_ns.abs_diff(uptime_ns) < 5_000_000_000,
        "{g:?} vs /proc/uptime {uptime_s}"
    );
    // Ready before the test could connect, so at most a few seconds ago.
    assert!(g.uptime_ns - g.agent_ready_ns < 10_000_000_000, "{g:?}");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(g.mem_total_bytes, total_kb * 1024);
    assert!(g.mem_available_bytes > 0 && g.mem_available_bytes <= g.mem_total_bytes);
    let later = a.control().guest_info().unwrap();
    assert_eq!(later.agent_ready_ns, g.agent_ready_ns);
    assert!(later.uptime_ns > g.uptime_ns);
}
