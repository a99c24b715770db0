//! Host-mode integration tests: the agent in its own sandbox on a Unix socket, as root, with a
//! busybox root filesystem.

mod common;

use std::time::Duration;

use agent_protocol::*;
use common::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn containers_reach_each_other_on_localhost() {
    let a = Agent::start();
    let p = pod(
        "net",
        vec![
            a.container(
                "server",
                "mkdir -p /www && echo hello-from-server > /www/index.html && exec httpd -f -p 8080 -h /www",
            ),
            a.container(
                "client",
                "until wget -q -O - http://localhost:8080/; do sleep 0.1; done; exec sleep 1000",
            ),
        ],
    );
    a.control().create_pod(&p).unwrap();
    a.wait_log("client", "hello-from-server");
}

#[test]
fn each_container_sees_only_its_own_processes() {
    let a = Agent::start();
    let p = pod(
        "pids",
        vec![
            a.container("one", "exec sleep 1001"),
            a.container("two", "exec sleep 1002"),
        ],
    );
    a.control().create_pod(&p).unwrap();
    a.wait_status("running", T, |s| running(s, "one") && running(s, "two"));
    let (out, _, code) = a.exec("one", &["ps", "-o", "pid,args"]);
    assert_eq!(code, 0);
    assert!(out.contains("sleep 1001"), "{out}");
    assert!(!out.contains("sleep 1002"), "{out}");
    let first = out.lines().nth(1).unwrap_or("");
    assert!(
        first.trim_start().starts_with("1 "),
        "pid 1 is the container's: {out}"
    );
    let (out2, _, _) = a.exec("two", &["ps", "-o", "pid,args"]);
    assert!(
        out2.contains("sleep 1002") && !out2.contains("sleep 1001"),
        "{out2}"
    );
}

#[test]
fn shared_volume_and_private_roots() {
    let a = Agent::start();
    let vol = a.dir.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    let mount = |sub: Option<&str>, ro: bool, dst: &str| MountSpec {
        source: vol.display().to_string(),
        destination: dst.into(),
        read_only: ro,
        sub_path: sub.map(str::to_string),
    };
    let mut writer = a.container(
        "writer",
        "echo shared-data > /shared/f && echo private > /root-file && exec sleep 1000",
    );
    writer.mounts = vec![mount(None, false, "/shared")];
    let mut reader = a.container(
        "reader",
        "until grep shared-data /data/f; do sleep 0.1; done; exec sleep 1000",
    );
    reader.mounts = vec![
        mount(None, true, "/data"),
        mount(Some("sub/dir"), false, "/sub"),
    ];
    a.control()
        .create_pod(&pod("vol", vec![writer, reader]))
        .unwrap();
    a.wait_log("reader", "shared-data");
    // The writer sees its own root file, the reader does not, and the image is untouched.
    assert_eq!(a.exec("writer", &["cat", "/root-file"]).0, "private\n");
    assert_eq!(a.exec("reader", &["test", "-e", "/root-file"]).2, 1);
    assert!(!a.rootfs.join("root-file").exists());
    // readOnly is enforced; subPath is mounted.
    assert_ne!(a.exec("reader", &["touch", "/data/x"]).2, 0);
    assert_eq!(a.exec("reader", &["touch", "/sub/y"]).2, 0);
    assert!(vol.join("sub/dir/y").exists());
    // Pod files.
    assert_eq!(a.exec("reader", &["cat", "/etc/hostname"]).0, "vol\n");
    assert_eq!(a.exec("reader", &["hostname"]).0, "vol\n");
    assert!(a
        .exec("reader", &["cat", "/etc/hosts"])
        .0
        .contains("localhost"));
}

#[test]
fn init_container_output_before_app_starts() {
    let a = Agent::start();
    let mut p = pod(
        "init",
        vec![a.container("app", "echo app-start; exec sleep 1000")],
    );
    p.init_containers = vec![
        a.container("init1", "echo init-one-done"),
        a.container("init2", "echo init-two-done"),
    ];
    a.control().create_pod(&p).unwrap();
    let s = a.wait_status("app running", T, |s| running(s, "app"));
    assert_eq!(s.phase, PodPhase::Running);
    assert!(a.logs("init1").contains("init-one-done"));
    assert!(a.logs("init2").contains("init-two-done"));
    let finished = |i: usize| match &s.init_containers[i].state {
        ContainerState::Terminated {
            exit_code: 0,
            finished_at_ns,
            started_at_ns,
            ..
        } => (*started_at_ns, *finished_at_ns),
        other => panic!("init container not completed: {other:?}"),
    };
    let (_, f1) = finished(0);
    let (s2, f2) = finished(1);
    assert!(f1 <= s2);
    let ContainerState::Running { started_at_ns } = s.containers[0].state else {
        panic!()
    };
    assert!(f2 <= started_at_ns);
}

#[test]
fn crashing_container_backs_off_with_rising_restart_count() {
    let a = Agent::start();
    let mut p = pod("crash", vec![a.container("crasher", "echo crash; exit 3")]);
    // Test knob: 100 ms instead of 10 s.
    p.test_backoff_base_ms = Some(100);
    a.control().create_pod(&p).unwrap();
    let mut saw_backoff = false;
    let s = a.wait_status("restarts", T, |s| {
        let c = &s.containers[0];
        if matches!(&c.state, ContainerState::Waiting { reason, .. } if reason == "CrashLoopBackOff")
        {
            saw_backoff = true;
        }
        c.restart_count >= 4
    });
    assert!(saw_backoff, "never saw CrashLoopBackOff");
    assert_eq!(s.phase, PodPhase::Running);
    match &s.containers[0].last_state {
        Some(ContainerState::Terminated {
            exit_code: 3,
            reason,
            ..
        }) => assert_eq!(reason, "Error"),
        other => panic!("{other:?}"),
    }
    // Back-off doubles: restarts 1..4 take at least 100+200+400 ms.
    let crashes = a.logs("crasher").matches("crash").count();
    assert!(crashes >= 4, "{crashes}");
    let before = a.control().status().unwrap().containers[0].restart_count;
    std::thread::sleep(Duration::from_millis(300));
    let after = a.control().status().unwrap().containers[0].restart_count;
    assert!(
        after <= before + 1,
        "back-off not applied: {before} -> {after}"
    );
}

#[test]
fn exec_exit_code_and_tty_shell() {
    let a = Agent::start();
    a.control()
        .create_pod(&pod("exec", vec![a.container("box", "exec sleep 1000")]))
        .unwrap();
    a.wait_status("running", T, |s| running(s, "box"));
    assert_eq!(a.exec("box", &["sh", "-c", "exit 7"]).2, 7);
    let (out, err, code) = a.exec("box", &["sh", "-c", "echo out; echo err >&2"]);
    assert_eq!((out.as_str(), err.as_str(), code), ("out\n", "err\n", 0));
    // A missing program fails the session start with a clear error (the CLI exits 127).
    let err = ExecSession::start(
        a.conn(),
        ExecSpec {
            container: "box".into(),
            argv: vec!["no-such-binary".into()],
            env: vec![],
            tty: false,
            stdin: false,
            rows: 0,
            cols: 0,
        },
    )
    .err()
    .expect("exec of a missing binary must fail");
    assert!(err.to_string().contains("ENOENT"), "{err}");

    let mut s = ExecSession::start(
        a.conn(),
        ExecSpec {
            container: "box".into(),
            argv: vec!["sh".into()],
            env: vec![],
            tty: true,
            stdin: true,
            rows: 24,
            cols: 80,
        },
    )
    .unwrap();
    s.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    s.write_stdin(b"stty size; tty\n").unwrap();
    let mut out = Vec::new();
    let read_until = |s: &mut ExecSession<_>, needle: &str, out: &mut Vec<u8>| {
        while !String::from_utf8_lossy(out).contains(needle) {
            let ev = s.next_event();
            let ev = ev.unwrap_or_else(|e| {
                panic!("{e}; output so far: {:?}", String::from_utf8_lossy(out))
            });
            match ev {
                ExecEvent::Stdout(d) => out.extend_from_slice(&d),
                ExecEvent::Stderr(d) => out.extend_from_slice(&d),
                ExecEvent::Exit { code, .. } => {
                    panic!("exited {code}: {}", String::from_utf8_lossy(out))
                }
            }
        }
    };
    read_until(&mut s, "24 80", &mut out);
    read_until(&mut s, "/dev/pts/", &mut out);
    s.resize(40, 120).unwrap();
    s.write_stdin(b"stty size; exit 5\n").unwrap();
    read_until(&mut s, "40 120", &mut out);
    loop {
        if let ExecEvent::Exit { code, .. } = s.next_event().unwrap() {
            assert_eq!(code, 5);
            break;
        }
    }
}

#[test]
fn stopping_the_pod_leaves_nothing_behind() {
    let mut a = Agent::start();
    let p = pod(
        "stop",
        vec![
            a.container("one", "exec sleep 31415"),
            a.container("two", "trap 'exit 0' TERM; sleep 31416 & wait"),
        ],
    );
    let uid = p.uid.clone();
    a.control().create_pod(&p).unwrap();
    a.wait_status("running", T, |s| running(s, "one") && running(s, "two"));
    let sandbox = a.sandbox_pid().expect("sandbox pid");
    let procs_with = |marker: &str| -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(marker))
                    .unwrap_or(false)
            })
            .count()
    };
    assert!(procs_with("31415") >= 1);
    let cgroups = || -> Vec<String> {
        let out = std::process::Command::new("find")
            .args(["/sys/fs/cgroup/", "-maxdepth", "6", "-type", "d", "-name"])
            .arg(format!("peapod-{uid}-*"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let mounts = || std::fs::read_to_string(format!("/proc/{sandbox}/mountinfo")).unwrap();
    assert!(!cgroups().is_empty(), "pod cgroup exists while running");
    assert!(mounts().contains("peapod-state"));
    a.control().stop_pod(Some(2)).unwrap();
    let s = a.control().status().unwrap();
    assert!(s.containers.iter().all(|c| c.pid.is_none()), "{s:#?}");
    assert_eq!(
        procs_with("31415") + procs_with("31416"),
        0,
        "container processes left"
    );
    assert!(cgroups().is_empty(), "cgroups left: {:?}", cgroups());
    let state = a.dir.path().join("state");
    assert!(
        !mounts()
            .lines()
            .any(|l| l.contains(" overlay ") && l.contains(state.to_str().unwrap())),
        "overlay mounts left:\n{}",
        mounts()
    );
    a.shutdown();
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(a.dir.path().to_str().unwrap()));
}

#[test]
fn garbage_and_wrong_versions_do_not_hurt_the_agent() {
    use std::io::{Read, Write};
    let a = Agent::start();
    // Garbage instead of a preamble.
    let mut c = a.conn();
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    // A wrong version.
    let mut c = a.conn();
    c.write_all(b"PPOD\0\0\0\x63").unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    // An oversize frame after a good handshake.
    let mut c = a.conn();
    write_preamble(&mut c).unwrap();
    c.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let _ = c.read_to_end(&mut buf);
    // A bad frame on the control connection is answered with an error.
    let mut ctl = a.control();
    let mut raw = a.conn();
    write_preamble(&mut raw).unwrap();
    write_frame(&mut raw, &Message::Hello(StreamTarget::Control)).unwrap();
    read_preamble(&mut raw).unwrap();
    assert!(matches!(
        read_frame(&mut raw).unwrap(),
        Message::HelloOk { .. }
    ));
    raw.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).unwrap();
    assert!(matches!(
        read_frame(&mut raw).unwrap(),
        Message::Error { .. }
    ));
    ctl.ping().unwrap();
    // A second pod while one runs is refused; requests for unknown containers fail cleanly.
    ctl.create_pod(&pod("one", vec![a.container("c", "exec sleep 1000")]))
        .unwrap();
    assert!(ctl
        .create_pod(&pod("two", vec![a.container("c", "true")]))
        .is_err());
    assert!(ctl.kill("nope", 15).is_err());
    ctl.ping().unwrap();
}

#[test]
fn active_deadline_fails_the_pod() {
    let a = Agent::start();
    let mut p = pod("deadline", vec![a.container("app", "exec sleep 27182")]);
    p.active_deadline_seconds = Some(1);
    p.termination_grace_seconds = 0;
    a.control().create_pod(&p).unwrap();
    let s = a.wait_status("deadline", T, |s| s.phase == PodPhase::Failed);
    assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
    let s = a.wait_status("container terminated", T, |s| {
        matches!(s.containers[0].state, ContainerState::Terminated { .. })
    });
    match &s.containers[0].state {
        ContainerState::Terminated { signal, .. } => assert_eq!(*signal, Some(9)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.containers[0].restart_count, 0,
        "no restart after the deadline"
    );
}

#[test]
fn never_and_on_failure_policies_settle_the_phase() {
    let a = Agent::start();
    let mut p = pod(
        "never",
        vec![a.container("ok", "echo fine"), a.container("bad", "exit 4")],
    );
    p.restart_policy = RestartPolicy::Never;
    a.control().create_pod(&p).unwrap();
    let s = a.wait_status("failed", T, |s| s.phase == PodPhase::Failed);
    assert_eq!(s.containers.iter().map(|c| c.restart_count).sum::<u32>(), 0);
    a.control().stop_pod(Some(0)).unwrap();
    let mut p = pod("onfailure", vec![a.container("ok", "exit 0")]);
    p.restart_policy = RestartPolicy::OnFailure;
    a.control().create_pod(&p).unwrap();
    let s = a.wait_status("succeeded", T, |s| s.phase == PodPhase::Succeeded);
    match &s.containers[0].state {
        ContainerState::Terminated { reason, .. } => assert_eq!(reason, "Completed"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sigterm_stops_the_pod_and_the_agent() {
    let mut a = Agent::start();
    a.control()
        .create_pod(&pod("term", vec![a.container("app", "exec sleep 16180")]))
        .unwrap();
    a.wait_status("running", T, |s| running(s, "app"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = a.child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < T, "agent did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    let left = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("16180"))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(left, 0);
}

#[test]
fn kill_and_stop_a_single_container() {
    let a = Agent::start();
    let mut p = pod(
        "signals",
        vec![
            a.container(
                "polite",
                "trap 'echo got-term; exit 0' TERM; echo trap-set; while true; do sleep 0.05; done",
            ),
            a.container("stubborn", "exec sleep 14142"),
        ],
    );
    p.restart_policy = RestartPolicy::Never;
    a.control().create_pod(&p).unwrap();
    a.wait_status("running", T, |s| {
        running(s, "polite") && running(s, "stubborn")
    });
    // Let the shell install its trap.
    a.wait_log("polite", "trap-set");
    let t0 = std::time::Instant::now();
    a.control().stop_container("polite", Some(10)).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "polite container ignored SIGTERM"
    );
    assert!(a.logs("polite").contains("got-term"));
    // PID 1 without a handler ignores SIGTERM: SIGKILL after the grace period.
    let t0 = std::time::Instant::now();
    a.control().stop_container("stubborn", Some(1)).unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(1));
    let s = a.control().status().unwrap();
    match &s.containers[1].state {
        ContainerState::Terminated {
            signal, exit_code, ..
        } => {
            assert_eq!((*signal, *exit_code), (Some(9), 137))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        a.control().kill("stubborn", 9).is_err(),
        "not running any more"
    );
}

#[test]
fn shared_process_namespace_shows_every_container() {
    let a = Agent::start();
    let mut p = pod(
        "sharedpid",
        vec![
            a.container("one", "exec sleep 1011"),
            a.container("two", "exec sleep 1012"),
        ],
    );
    p.share_process_namespace = true;
    a.control().create_pod(&p).unwrap();
    a.wait_status("running", T, |s| running(s, "one") && running(s, "two"));
    let (out, _, code) = a.exec("one", &["ps", "-o", "pid,args"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("sleep 1011") && out.contains("sleep 1012"),
        "{out}"
    );
    // PID 1 is the agent (the infra process), as the pause container is in Kubernetes.
    assert!(
        out.contains("peapod-agent") || out.contains("agent-bench"),
        "{out}"
    );
}

/// A log stream of container `app`: history after `after_seq`, of that the last `tail`.
fn app_logs(
    a: &Agent,
    follow: bool,
    tail: Option<u32>,
    after_seq: Option<u64>,
) -> LogStream<std::os::unix::net::UnixStream> {
    let req = LogsRequest {
        container: "app".into(),
        source: LogSource::Both,
        follow,
        tail,
        after_seq,
    };
    LogStream::new(a.conn(), req).unwrap()
}

/// `(seq, text)` of the records until `n` arrived or the stream ended.
fn take_records(
    ls: &mut LogStream<std::os::unix::net::UnixStream>,
    n: usize,
) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let Some(batch) = ls.next_batch().unwrap() else {
            break;
        };
        got.extend(
            batch
                .into_iter()
                .map(|r| (r.seq, String::from_utf8_lossy(&r.data).into_owned())),
        );
    }
    got
}

#[test]
fn log_streams_resume_after_the_last_seq() {
    let a = Agent::start();
    let script = "printf 'l1\\nl2\\nl3\\nl4\\nl5\\n'; \
        while [ ! -e /tmp/go ]; do sleep 0.05; done; echo l6; exec sleep 1000";
    let p = pod("resume", vec![a.container("app", script)]);
    a.control().create_pod(&p).unwrap();
    a.wait_log("app", "l5");
    let lines = |r: std::ops::RangeInclusive<u64>| -> Vec<(u64, String)> {
        r.map(|i| (i, format!("l{i}"))).collect()
    };
    // A follower gets every record, numbered from 1; then its connection drops.
    let mut ls = app_logs(&a, true, None, None);
    assert_eq!(take_records(&mut ls, 5), lines(1..=5));
    drop(ls);
    // History after a seq, and the tail of that.
    let mut ls = app_logs(&a, false, None, Some(2));
    assert_eq!(take_records(&mut ls, usize::MAX), lines(3..=5));
    assert!(ls.end_received());
    let mut ls = app_logs(&a, false, Some(1), Some(3));
    assert_eq!(take_records(&mut ls, usize::MAX), lines(5..=5));
    // The dropped follower resumes after the last record it had: only what is new.
    let mut ls = app_logs(&a, true, None, Some(5));
    assert_eq!(a.exec("app", &["touch", "/tmp/go"]).2, 0);
    assert_eq!(take_records(&mut ls, 1), lines(6..=6));
    assert_eq!(ls.dropped, 0);
}
