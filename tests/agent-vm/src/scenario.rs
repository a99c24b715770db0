//! The test scenario against a booted microVM: wait for the agent, guest info, check its PID-1
//! duties, run the web pod, exec, the virtio-fs pod, the OOM pod, then shut the VM down;
//! collects the figures on the way.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_protocol::{
    ContainerState, ControlClient, ExecSession, ExecSpec, GuestInfo, LogSource, LogStream,
    LogsRequest, PodPhase, PodStatus,
};
use anyhow::{bail, ensure, Context, Result};

use peapod_e2e::hybrid_vsock::{self, HybridVsockError};
use peapod_e2e::vmm_process::VmmProcess;

use crate::fs_case;
use crate::pods;
use crate::shares::Shares;

/// Agent's vsock port.
const AGENT_PORT: u32 = agent_protocol::DEFAULT_VSOCK_PORT;
/// Grace period given with the shutdown request.
const SHUTDOWN_GRACE_S: u32 = 5;

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// VMM hybrid vsock socket.
    pub uds: PathBuf,
    /// Busybox rootfs path inside the guest.
    pub rootfs: String,
    /// How long the agent may take to answer after the VMM started.
    pub agent_timeout: Duration,
    /// Timeout of each step once the agent is up (and of each socket read).
    pub step_timeout: Duration,
    /// Host directories shared over virtio-fs.
    pub shares: Shares,
    /// Guest memory.
    pub memory_mib: u32,
}

/// Figures measured during a run.
#[derive(Debug, Default)]
pub struct Figures {
    /// VMM spawn to the first `Pong` from the agent.
    pub spawn_to_ready: Duration,
    /// Connection attempts before the agent answered.
    pub connect_attempts: u32,
    /// `CreatePod` sent to every container of the web pod running.
    pub create_to_running: Duration,
    /// Exec round trips of `true` (start to exit code).
    pub exec_rtts: Vec<Duration>,
    /// `free` in the guest with the web pod running.
    pub guest_free: String,
    /// The agent's `VmRSS` / `VmHWM` (KiB) from its `/proc/1/status`.
    pub agent_rss_kib: Option<(u64, u64)>,
    /// Shutdown request to the VMM's exit.
    pub shutdown_to_exit: Duration,
    /// CreatePod of the hog to its OOM kill seen in the status.
    pub create_to_oom: Duration,
    /// `CreatePod` to both containers of the virtio-fs pod running (includes the mounts).
    pub virtiofs_create_to_running: Duration,
    /// The 1 GiB write into a container root until its ENOSPC.
    pub fill_scratch: Duration,
    /// `GetGuestInfo` right after the agent answered.
    pub guest_info: Option<GuestInfo>,
}

pub fn conn(s: &Settings) -> Result<UnixStream> {
    let t0 = Instant::now();
    hybrid_vsock::connect_guest(&s.uds, AGENT_PORT, s.step_timeout).with_context(|| {
        format!(
            "connect to the agent (vsock port {AGENT_PORT}), failed after {:.2?}",
            t0.elapsed()
        )
    })
}

/// After a failure, whether the agent answers a `Ping` again within `wait` (tells a guest
/// that stalled from one that is gone).
pub fn probe_after_failure(s: &Settings, wait: Duration) -> String {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < wait {
        match control(s).and_then(|mut c| c.ping().context("ping")) {
            Ok(()) => {
                return format!(
                    "the agent answered a ping {:.2?} after the failure",
                    t0.elapsed()
                )
            }
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    format!("the agent did not answer a ping within {wait:?} after the failure: {last}")
}

pub fn control(s: &Settings) -> Result<ControlClient<UnixStream>> {
    ControlClient::new(conn(s)?).context("control handshake")
}

/// Retries the hybrid connection and a `Ping` until the agent answers, the VMM exits or the
/// timeout passes.
pub fn wait_agent(s: &Settings, vmm: &mut VmmProcess, f: &mut Figures) -> Result<()> {
    let deadline = vmm.spawned_at + s.agent_timeout;
    let mut last = String::from("no attempt yet");
    loop {
        if let Some(st) = vmm.try_wait()? {
            bail!("the vmm exited ({st}) before the agent answered; last attempt: {last}");
        }
        if Instant::now() >= deadline {
            bail!(
                "the agent did not answer on vsock port {AGENT_PORT} within {:?}; last attempt: {last}",
                s.agent_timeout
            );
        }
        f.connect_attempts += 1;
        match hybrid_vsock::connect_guest(&s.uds, AGENT_PORT, s.step_timeout) {
            Ok(stream) => {
                let mut c = ControlClient::new(stream).context("control handshake")?;
                c.ping().context("ping")?;
                f.spawn_to_ready = vmm.spawned_at.elapsed();
                println!(
                    "agent-vm: agent {} answered after {:.2?} ({} attempts)",
                    c.agent_version(),
                    f.spawn_to_ready,
                    f.connect_attempts
                );
                return Ok(());
            }
            Err(e @ (HybridVsockError::Connect { .. } | HybridVsockError::Refused { .. })) => {
                last = format!("{:#}", anyhow::Error::from(e));
            }
            Err(e) => return Err(e).context("hybrid vsock handshake"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs `argv` in `container`: (stdout, stderr, exit code).
pub fn exec(s: &Settings, container: &str, argv: &[&str]) -> Result<(String, String, i32)> {
    let spec = ExecSpec {
        container: container.into(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: vec![],
        tty: false,
        stdin: false,
        rows: 0,
        cols: 0,
    };
    let mut ex = ExecSession::start(conn(s)?, spec)
        .with_context(|| format!("exec {argv:?} in {container}"))?;
    let (o, e, code) = ex
        .wait_output()
        .with_context(|| format!("output of {argv:?} in {container}"))?;
    Ok((
        String::from_utf8_lossy(&o).into_owned(),
        String::from_utf8_lossy(&e).into_owned(),
        code,
    ))
}

/// Polls the status until `pred` holds.
pub fn wait_status(
    s: &Settings,
    ctl: &mut ControlClient<UnixStream>,
    what: &str,
    pred: impl Fn(&PodStatus) -> bool,
) -> Result<PodStatus> {
    let t0 = Instant::now();
    loop {
        let st = ctl.status().context("get status")?;
        if pred(&st) {
            return Ok(st);
        }
        if matches!(st.phase, PodPhase::Failed | PodPhase::Succeeded) {
            bail!(
                "the pod ended ({:?}) before {what}; status: {st:#?}",
                st.phase
            );
        }
        if t0.elapsed() > s.step_timeout {
            bail!(
                "timed out after {:?} waiting for {what}; status: {st:#?}",
                s.step_timeout
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn all_running(st: &PodStatus) -> bool {
    st.containers
        .iter()
        .all(|c| matches!(c.state, ContainerState::Running { .. }))
}

fn terminated(st: &PodStatus, name: &str) -> Option<(i32, String)> {
    st.containers.iter().find_map(|c| match &c.state {
        ContainerState::Terminated {
            exit_code, reason, ..
        } if c.name == name => Some((*exit_code, reason.clone())),
        _ => None,
    })
}

/// Follows `container`'s log stream until a line contains `needle`; returns the text read.
pub fn follow_log_until(s: &Settings, container: &str, needle: &str) -> Result<String> {
    let req = LogsRequest {
        container: container.into(),
        source: LogSource::Both,
        follow: true,
        tail: None,
        after_seq: None,
    };
    let mut ls = LogStream::new(conn(s)?, req).context("open log stream")?;
    let mut text = String::new();
    let t0 = Instant::now();
    while t0.elapsed() < s.step_timeout {
        // The agent sends nothing while the container is quiet; the socket read timeout
        // (step_timeout) bounds each wait.
        let Some(batch) = ls
            .next_batch()
            .with_context(|| format!("log stream of {container} (so far: {text:?})"))?
        else {
            break;
        };
        for r in batch {
            text.push_str(&String::from_utf8_lossy(&r.data));
            if !r.partial {
                text.push('\n');
            }
        }
        if text.contains(needle) {
            return Ok(text);
        }
    }
    bail!("{needle:?} not in the log stream of {container}: {text:?}")
}

/// PID-1 duties: hostname and loopback, seen from inside a container.
fn check_pid1_duties(s: &Settings) -> Result<()> {
    let (out, err, code) = exec(s, "server", &["hostname"])?;
    ensure!(
        code == 0 && out.trim() == pods::HOSTNAME,
        "hostname: code {code}, stdout {out:?}, stderr {err:?}, want {:?}",
        pods::HOSTNAME
    );
    let (out, err, code) = exec(s, "server", &["cat", "/proc/net/dev"])?;
    ensure!(
        code == 0 && out.lines().any(|l| l.trim_start().starts_with("lo:")),
        "/proc/net/dev has no lo: code {code}, {out:?} {err:?}"
    );
    let (out, err, code) = exec(s, "server", &["ip", "-o", "link", "show", "lo"])?;
    let up = out
        .split(['<', '>'])
        .nth(1)
        .is_some_and(|flags| flags.split(',').any(|f| f == "UP"));
    ensure!(
        code == 0 && up,
        "lo is not up: code {code}, {out:?} {err:?}"
    );
    println!(
        "agent-vm: ok: hostname {:?}, lo up ({})",
        pods::HOSTNAME,
        out.trim()
    );
    Ok(())
}

/// The web pod: both containers running, the client's log shows the page, exec codes,
/// round trips and `free`.
fn web_pod(s: &Settings, f: &mut Figures) -> Result<()> {
    let mut ctl = control(s)?;
    let t0 = Instant::now();
    ctl.create_pod(&pods::web_pod(&s.rootfs))
        .context("create the web pod")?;
    let st = wait_status(s, &mut ctl, "all web containers running", all_running)?;
    f.create_to_running = t0.elapsed();
    println!(
        "agent-vm: ok: web pod running after {:.2?} (phase {:?})",
        f.create_to_running, st.phase
    );
    let log = follow_log_until(s, "client", pods::PAGE)?;
    println!(
        "agent-vm: ok: client's log stream shows the page served on localhost: {:?}",
        log.trim()
    );
    check_pid1_duties(s)?;

    let (out, err, code) = exec(s, "server", &["sh", "-c", "echo out; echo err >&2; exit 7"])?;
    ensure!(
        (code, out.as_str(), err.as_str()) == (7, "out\n", "err\n"),
        "exec sh -c 'echo out; echo err >&2; exit 7': code {code}, stdout {out:?}, stderr {err:?}"
    );
    let missing = match exec(s, "client", &["/no/such/program"]) {
        Ok((_, err, code)) => {
            ensure!(
                code == 127,
                "exec of a missing program: code {code} {err:?}"
            );
            "exit code 127".to_string()
        }
        Err(e) => {
            let msg = format!("{e:#}");
            ensure!(msg.contains("ENOENT"), "exec of a missing program: {msg}");
            format!("error {msg:?}")
        }
    };
    println!("agent-vm: ok: exec stdout/stderr separate, exit code 7 passes through; missing program -> {missing}");

    for _ in 0..5 {
        let t = Instant::now();
        let (_, err, code) = exec(s, "client", &["true"])?;
        ensure!(code == 0, "exec true: code {code} {err:?}");
        f.exec_rtts.push(t.elapsed());
    }
    let (out, _, code) = exec(s, "server", &["free", "-k"])?;
    ensure!(code == 0, "free: code {code}");
    f.guest_free = out;

    ctl.stop_pod(Some(2)).context("stop the web pod")?;
    let st = ctl.status().context("status after stop")?;
    ensure!(
        st.containers
            .iter()
            .all(|c| matches!(c.state, ContainerState::Terminated { .. })),
        "containers still alive after StopPod: {st:#?}"
    );
    println!("agent-vm: ok: web pod stopped");
    Ok(())
}

/// The hog pod: over its memory limit, reported `Terminated` with reason `OOMKilled`.
fn oom_pod(s: &Settings, f: &mut Figures) -> Result<()> {
    let mut ctl = control(s)?;
    let t0 = Instant::now();
    ctl.create_pod(&pods::oom_pod(&s.rootfs))
        .context("create the oom pod (replacing the stopped web pod)")?;
    let st = wait_status(s, &mut ctl, "the hog to terminate", |st| {
        terminated(st, "hog").is_some()
    })?;
    f.create_to_oom = t0.elapsed();
    let (code, reason) = terminated(&st, "hog").unwrap_or_default();
    let log = read_log(s, "hog").unwrap_or_else(|e| format!("(log unreadable: {e:#})"));
    ensure!(
        reason == "OOMKilled",
        "hog over its {} MiB limit ended with code {code}, reason {reason:?} (want OOMKilled); log {log:?}; status {st:#?}",
        pods::HOG_LIMIT_BYTES >> 20
    );
    ensure!(
        log.lines().next() == Some("allocating") && !log.contains("survived"),
        "hog's log after its OOM kill: {log:?}"
    );
    ensure!(
        st.phase == PodPhase::Failed,
        "oom pod phase {:?}, want Failed",
        st.phase
    );
    println!(
        "agent-vm: ok: hog over memory.max={} MiB -> Terminated, reason OOMKilled, exit code {code}, after {:.2?}",
        pods::HOG_LIMIT_BYTES >> 20,
        f.create_to_oom
    );
    ctl.stop_pod(Some(1)).context("stop the oom pod")?;
    Ok(())
}

/// `VmRSS` and `VmHWM` in KiB from a `/proc/PID/status` text.
pub fn parse_rss(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        status.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A pod in the agent's PID namespace: `/proc/1` is the agent (its memory is read there);
/// the pod stays up so the shutdown has something to stop.
fn inspect_pod(s: &Settings, f: &mut Figures) -> Result<()> {
    let mut ctl = control(s)?;
    ctl.create_pod(&pods::inspect_pod(&s.rootfs))
        .context("create the inspect pod")?;
    wait_status(s, &mut ctl, "the inspect pod running", all_running)?;
    let (out, err, code) = exec(s, "idle", &["cat", "/proc/1/status"])?;
    ensure!(code == 0, "cat /proc/1/status: code {code} {err:?}");
    ensure!(
        out.lines()
            .any(|l| l.starts_with("Name:") && l.contains("init")),
        "/proc/1 in a shareProcessNamespace container is not the agent: {out:?}"
    );
    f.agent_rss_kib = parse_rss(&out);
    ensure!(f.agent_rss_kib.is_some(), "no VmRSS/VmHWM in {out:?}");
    // The agent shields itself from the guest OOM killer; its containers get kubelet scores
    // (the inspect pod sets no resources: BestEffort, 1000).
    let (agent_adj, _, _) = exec(s, "idle", &["cat", "/proc/1/oom_score_adj"])?;
    let (own_adj, _, _) = exec(s, "idle", &["cat", "/proc/self/oom_score_adj"])?;
    ensure!(
        agent_adj.trim() == "-1000" && own_adj.trim() == "1000",
        "oom_score_adj: agent {agent_adj:?} (want -1000), exec in a BestEffort pod {own_adj:?} (want 1000)"
    );
    println!(
        "agent-vm: ok: shareProcessNamespace container sees the agent as PID 1 (oom_score_adj -1000; its own 1000)"
    );
    fs_case::check_unmounted(s, "idle")
}

fn read_log(s: &Settings, container: &str) -> Result<String> {
    let req = LogsRequest {
        container: container.into(),
        source: LogSource::Both,
        follow: false,
        tail: None,
        after_seq: None,
    };
    let mut ls = LogStream::new(conn(s)?, req)?;
    let mut text = String::new();
    while let Some(batch) = ls.next_batch()? {
        for r in batch {
            text.push_str(&String::from_utf8_lossy(&r.data));
            text.push('\n');
        }
    }
    Ok(text)
}

/// Shutdown: `Ok`, then the VMM exits with status 0 within the grace period (plus the
/// VMM's halt detection), and its process and socket are gone.
fn shutdown(s: &Settings, vmm: &mut VmmProcess, f: &mut Figures) -> Result<()> {
    let mut ctl = control(s)?;
    let t0 = Instant::now();
    ctl.shutdown(Some(SHUTDOWN_GRACE_S))
        .context("shutdown request")?;
    // The inspect pod's `sleep` ends on SIGTERM, well within the grace period; the VMM notices
    // the halted vCPUs within its 500 ms probe period. Allow the grace plus emulation slack.
    let limit = Duration::from_secs(u64::from(SHUTDOWN_GRACE_S) + 10);
    let Some(status) = vmm.wait_timeout(limit)? else {
        bail!("the vmm still runs {limit:?} after the shutdown request");
    };
    f.shutdown_to_exit = t0.elapsed();
    ensure!(
        status.code() == Some(0),
        "the vmm exited with {status} after a guest shutdown (documented: 0)"
    );
    ensure!(
        !Path::new(&format!("/proc/{}", vmm.pid())).exists(),
        "vmm process {} still exists",
        vmm.pid()
    );
    ensure!(
        !s.uds.exists(),
        "the vmm left its socket {} behind",
        s.uds.display()
    );
    println!(
        "agent-vm: ok: shutdown -> vmm exit status 0 after {:.2?}; no process or socket left",
        f.shutdown_to_exit
    );
    Ok(())
}

/// The whole scenario after the VMM was spawned.
pub fn run(s: &Settings, vmm: &mut VmmProcess, f: &mut Figures) -> Result<()> {
    wait_agent(s, vmm, f)?;
    let g = fs_case::guest_info(s, s.memory_mib)?;
    println!(
        "agent-vm: ok: guest info: uptime {:.3} s, agent ready at {:.3} s, MemTotal {} KiB, MemAvailable {} KiB",
        g.uptime_ns as f64 / 1e9,
        g.agent_ready_ns as f64 / 1e9,
        g.mem_total_bytes >> 10,
        g.mem_available_bytes >> 10
    );
    f.guest_info = Some(g);
    web_pod(s, f)?;
    fs_case::virtiofs_pod(s, f)?;
    oom_pod(s, f)?;
    inspect_pod(s, f)?;
    shutdown(s, vmm, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_protocol::ContainerStatus;
    use peapod_e2e::vmm_process::VmmArgs;

    fn status(states: Vec<(&str, ContainerState)>) -> PodStatus {
        PodStatus {
            phase: PodPhase::Running,
            reason: None,
            init_containers: vec![],
            containers: states
                .into_iter()
                .map(|(n, state)| ContainerStatus {
                    name: n.into(),
                    state,
                    last_state: None,
                    restart_count: 0,
                    pid: None,
                })
                .collect(),
        }
    }

    fn fake_vmm(dir: &Path, script: &str) -> VmmProcess {
        let path = dir.join("fake-vmm");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        VmmProcess::spawn(&VmmArgs {
            vmm: path,
            kernel: "/k".into(),
            initrd: "/i".into(),
            vsock_uds: dir.join("v.sock"),
            console: dir.join("c.log"),
            memory_mib: 512,
            vcpus: 2,
            cmdline: None,
        })
        .unwrap()
    }

    #[test]
    fn waiting_for_the_agent_fails_fast_and_bounded() {
        let dir = std::env::temp_dir().join(format!("agent-vm-wait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = |t| Settings {
            uds: dir.join("v.sock"),
            rootfs: "/r".into(),
            agent_timeout: Duration::from_millis(t),
            step_timeout: Duration::from_secs(1),
            shares: Shares {
                image: dir.join("img0"),
                volumes: dir.join("podvol"),
            },
            memory_mib: 512,
        };
        // The VMM dies: reported at once, with its status, not after the timeout.
        let mut vmm = fake_vmm(&dir, "exit 3");
        let t0 = Instant::now();
        let e = wait_agent(&settings(30_000), &mut vmm, &mut Figures::default()).unwrap_err();
        assert!(format!("{e:#}").contains("exited"), "{e:#}");
        assert!(t0.elapsed() < Duration::from_secs(10));
        // Nobody answers: the timeout ends the wait, naming the last attempt.
        let mut vmm = fake_vmm(&dir, "exec sleep 30");
        let e = wait_agent(&settings(600), &mut vmm, &mut Figures::default()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("did not answer") && msg.contains("v.sock"),
            "{msg}"
        );
        vmm.kill();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_rss() {
        let st = "Name:\tinit\nVmHWM:\t    5120 kB\nVmRSS:\t    4096 kB\n";
        assert_eq!(parse_rss(st), Some((4096, 5120)));
        assert_eq!(parse_rss("Name:\tx\n"), None);
    }

    #[test]
    fn running_and_terminated_predicates() {
        let run = ContainerState::Running { started_at_ns: 1 };
        let oom = ContainerState::Terminated {
            exit_code: 137,
            signal: Some(9),
            reason: "OOMKilled".into(),
            message: String::new(),
            started_at_ns: 1,
            finished_at_ns: 2,
        };
        let wait = ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        };
        assert!(all_running(&status(vec![
            ("a", run.clone()),
            ("b", run.clone())
        ])));
        assert!(!all_running(&status(vec![("a", run.clone()), ("b", wait)])));
        let st = status(vec![("a", run), ("hog", oom)]);
        assert_eq!(terminated(&st, "hog"), Some((137, "OOMKilled".into())));
        assert_eq!(terminated(&st, "a"), None);
    }
}
