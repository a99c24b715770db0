//! Test harness: a busybox root filesystem, the agent in host mode on a Unix socket, and pod
//! builders driven through the `agent-protocol` client.
#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_protocol::*;

/// Fails loudly when not root (never passes silently).
pub fn require_root() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "host-mode agent tests need root (namespaces, mounts, cgroups); run `cargo test -p guest-agent` as root"
    );
    assert!(
        Path::new("/bin/busybox").exists(),
        "host-mode agent tests need Debian's busybox-static (/bin/busybox)"
    );
}

/// Builds a busybox root filesystem in `dir`.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "dev", "sys", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    root
}

/// A running host-mode agent.
pub struct Agent {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub rootfs: PathBuf,
}

impl Agent {
    pub fn start() -> Self {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let rootfs = busybox_rootfs(dir.path());
        let socket = dir.path().join("agent.sock");
        // PEAPOD_AGENT_BIN runs the suite against another build (e.g. the static one).
        let bin = std::env::var("PEAPOD_AGENT_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_peapod-agent").to_string());
        let child = Command::new(bin)
            .arg("--listen-unix")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let agent = Self {
            child,
            dir,
            socket,
            rootfs,
        };
        let t0 = Instant::now();
        while UnixStream::connect(&agent.socket).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "agent did not come up"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        agent
    }

    pub fn conn(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s
    }

    pub fn control(&self) -> ControlClient<UnixStream> {
        ControlClient::new(self.conn()).unwrap()
    }

    pub fn container(&self, name: &str, script: &str) -> ContainerSpec {
        ContainerSpec::new(
            name,
            self.rootfs.display().to_string(),
            vec!["sh".into(), "-c".into(), script.into()],
            vec![EnvVar {
                name: "PATH".into(),
                value: "/bin".into(),
            }],
        )
    }

    pub fn exec(&self, container: &str, argv: &[&str]) -> (String, String, i32) {
        let mut s = ExecSession::start(
            self.conn(),
            ExecSpec {
                container: container.into(),
                argv: argv.iter().map(|s| s.to_string()).collect(),
                env: vec![],
                tty: false,
                stdin: false,
                rows: 0,
                cols: 0,
            },
        )
        .unwrap();
        let (o, e, c) = s.wait_output().unwrap();
        (
            String::from_utf8_lossy(&o).into_owned(),
            String::from_utf8_lossy(&e).into_owned(),
            c,
        )
    }

    /// All log lines of a container so far (stdout and stderr).
    pub fn logs(&self, container: &str) -> String {
        let mut ls = LogStream::new(
            self.conn(),
            LogsRequest {
                container: container.into(),
                source: LogSource::Both,
                follow: false,
                tail: None,
                after_seq: None,
            },
        )
        .unwrap();
        let mut out = String::new();
        while let Some(batch) = ls.next_batch().unwrap() {
            for r in batch {
                out.push_str(&String::from_utf8_lossy(&r.data));
                if !r.partial {
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Waits until `f` holds for the status.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&PodStatus) -> bool,
    ) -> PodStatus {
        let mut c = self.control();
        let t0 = Instant::now();
        loop {
            let s = c.status().unwrap();
            if f(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < timeout,
                "timed out waiting for {what}: {s:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_log(&self, container: &str, needle: &str) -> String {
        let t0 = Instant::now();
        loop {
            let l = self.logs(container);
            if l.contains(needle) {
                return l;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{needle:?} not in logs of {container}: {l:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The PID (in the host namespace) of the sandbox's PID 1.
    pub fn sandbox_pid(&self) -> Option<i32> {
        let parent = self.child.id() as i32;
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
            let ppid: i32 = after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if ppid == parent {
                return Some(pid);
            }
        }
        None
    }

    pub fn shutdown(&mut self) {
        let _ = self.control().shutdown(Some(1));
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("agent did not exit after shutdown");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.control_shutdown_quiet();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Agent {
    fn control_shutdown_quiet(&self) -> Result<(), ClientError> {
        let s = UnixStream::connect(&self.socket).map_err(FrameError::from)?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        ControlClient::new(s)?.shutdown(Some(0))
    }
}

pub fn pod(name: &str, containers: Vec<ContainerSpec>) -> PodSpec {
    PodSpec {
        name: name.into(),
        namespace: "default".into(),
        uid: format!("{name}-{}", std::process::id()),
        hostname: name.into(),
        init_containers: vec![],
        containers,
        restart_policy: RestartPolicy::Always,
        share_process_namespace: false,
        termination_grace_seconds: 1,
        active_deadline_seconds: None,
        resolv_conf: Some("nameserver 127.0.0.1\n".into()),
        test_backoff_base_ms: None,
        filesystems: Vec::new(),
        scratch_bytes: None,
    }
}

pub fn running(s: &PodStatus, name: &str) -> bool {
    s.containers
        .iter()
        .chain(&s.init_containers)
        .any(|c| c.name == name && matches!(c.state, ContainerState::Running { .. }))
}
