//! Agent benchmark: start-to-ready, container create-and-start (1 and 4 containers), `exec --
//! true` (p50/p99 over 100 runs) and log throughput, with the agent in host mode (needs root
//! and /bin/busybox). Run: `cargo run --release -p guest-agent --example agent-bench`.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_protocol::*;

const RUNS: usize = 100;
const CHILD_ENV: &str = "PEAPOD_AGENT_BENCH_CHILD";

fn main() {
    // Re-executed as the agent itself.
    if let Ok(sock) = std::env::var(CHILD_ENV) {
        let state = PathBuf::from(format!("{sock}.state"));
        guest_agent::run::run(
            guest_agent::run::Mode::Unix(sock.into()),
            Some(state),
            false,
        );
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "agent-bench needs root (host-mode agent sandbox)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = busybox_rootfs(dir.path());
    let sock = dir.path().join("agent.sock");

    // Start to ready.
    let mut ready = Vec::new();
    for i in 0..10 {
        let s = dir.path().join(format!("ready{i}.sock"));
        let t0 = Instant::now();
        let mut child = spawn_agent(&s);
        let mut c = connect_control(&s);
        c.ping().expect("ping");
        ready.push(t0.elapsed());
        let _ = c.shutdown(Some(0));
        let _ = child.wait();
    }
    report("agent start to ready (10 runs)", &mut ready);

    let mut agent = spawn_agent(&sock);
    let mut ctl = connect_control(&sock);
    let ctr = |name: &str, script: &str| {
        ContainerSpec::new(
            name,
            rootfs.display().to_string(),
            vec!["sh".into(), "-c".into(), script.into()],
            vec![EnvVar {
                name: "PATH".into(),
                value: "/bin".into(),
            }],
        )
    };
    let pod = |n: usize| PodSpec {
        name: "bench".into(),
        namespace: "default".into(),
        uid: "bench".into(),
        hostname: "bench".into(),
        init_containers: vec![],
        containers: (0..n)
            .map(|i| ctr(&format!("c{i}"), "exec sleep 1000"))
            .collect(),
        restart_policy: RestartPolicy::Never,
        share_process_namespace: false,
        termination_grace_seconds: 0,
        active_deadline_seconds: None,
        resolv_conf: Some(String::new()),
        test_backoff_base_ms: None,
        filesystems: Vec::new(),
        scratch_bytes: None,
    };
    for n in [1usize, 4] {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let p = pod(n);
            let t0 = Instant::now();
            ctl.create_pod(&p).expect("create");
            loop {
                let s = ctl.status().expect("status");
                if s.containers
                    .iter()
                    .all(|c| matches!(c.state, ContainerState::Running { .. }))
                {
                    break;
                }
                if let Some(c) = s
                    .containers
                    .iter()
                    .find(|c| matches!(c.state, ContainerState::Terminated { .. }))
                {
                    panic!("container failed: {c:?}");
                }
                // Poll gently so the poller does not steal the CPU from the start path.
                std::thread::sleep(Duration::from_micros(100));
            }
            times.push(t0.elapsed());
            ctl.stop_pod(Some(0)).expect("stop");
        }
        report(&format!("create-and-start, {n}-container pod"), &mut times);
    }

    // exec -- true.
    ctl.create_pod(&pod(1)).expect("create");
    while !matches!(
        ctl.status().expect("status").containers[0].state,
        ContainerState::Running { .. }
    ) {}
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let mut s = ExecSession::start(
            UnixStream::connect(&sock).expect("connect"),
            ExecSpec {
                container: "c0".into(),
                argv: vec!["true".into()],
                env: vec![],
                tty: false,
                stdin: false,
                rows: 0,
                cols: 0,
            },
        )
        .expect("exec");
        let (_, _, code) = s.wait_output().expect("exec output");
        assert_eq!(code, 0);
        times.push(t0.elapsed());
    }
    report("exec -- true", &mut times);
    ctl.stop_pod(Some(0)).expect("stop");

    // Log throughput: 4 KiB lines from a file in the image.
    let line_len = 4096usize;
    let total = 256 * 1024 * 1024usize;
    {
        let mut line = vec![b'x'; line_len - 1];
        line.push(b'\n');
        let data: Vec<u8> = line.iter().copied().cycle().take(total).collect();
        std::fs::write(rootfs.join("big"), data).expect("write big");
    }
    let mut p = pod(1);
    p.containers[0] = ctr("c0", "sleep 0.3; cat /big");
    ctl.create_pod(&p).expect("create");
    let mut logs = LogStream::new(
        UnixStream::connect(&sock).expect("connect"),
        LogsRequest {
            container: "c0".into(),
            source: LogSource::Stdout,
            follow: true,
            tail: None,
            after_seq: None,
        },
    )
    .expect("logs");
    let mut got = 0usize;
    let mut lines = 0usize;
    let mut t0 = None;
    while let Some(batch) = logs.next_batch().expect("batch") {
        if t0.is_none() {
            t0 = Some(Instant::now());
        }
        for r in batch {
            got += r.data.len() + usize::from(!r.partial);
            lines += usize::from(!r.partial);
        }
        if got >= total {
            break;
        }
    }
    let el = t0.map(|t| t.elapsed()).unwrap_or_default();
    println!(
        "log throughput: {:.0} MB/s ({} MiB in {:.3} s, {} lines of {} bytes, {} records dropped)",
        got as f64 / 1e6 / el.as_secs_f64(),
        got >> 20,
        el.as_secs_f64(),
        lines,
        line_len,
        logs.dropped
    );
    let _ = ctl.shutdown(Some(0));
    let _ = agent.wait();
}

fn spawn_agent(sock: &Path) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, sock)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn agent")
}

fn connect_control(sock: &Path) -> ControlClient<UnixStream> {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = UnixStream::connect(sock) {
            return ControlClient::new(s).expect("handshake");
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "agent not ready");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms (n={})",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        times.len()
    );
}

fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "dev", "sys"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("needs /bin/busybox");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
    root
}
