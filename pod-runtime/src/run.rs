//! Running one prepared pod in a microVM, from creating its directory to removing what it
//! leaves: the VMM, the agent conversation, log followers, signals, and the final status.
//!
//! Whatever happens (the pod ends, a signal, the VMM or the agent dies, an error), the VMM is
//! reaped, host bind mounts are detached, emptyDir data and the vsock socket are removed, and
//! with `remove` the whole pod directory goes too.
//!
//! A pod with a hostPath file runs in a private mount namespace ([`crate::mount_ns`]) entered
//! by the thread calling [`run_pod`]: that thread makes the bind mounts, spawns the VMM and
//! detaches the mounts, so all three happen in the namespace (keep it so). If `peapod` is
//! killed with SIGKILL, the VMM dies with it and the kernel drops the namespace and its mounts.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use agent_protocol::{ContainerState, GuestInfo, PodPhase, PodStatus, StreamKind};
use serde::Serialize;

use crate::agent::{AgentAddr, AgentError, REQUEST_TIMEOUT};
use crate::assets::Assets;
use crate::control::Control;
use crate::events::EventTracker;
use crate::logs::{self, LogEvent};
use crate::mount_ns::{self, MountNsError};
use crate::outcome;
use crate::prepare::Prepared;
use crate::state::{PodDir, PodRecord, StateError};
use crate::translate::{self, TranslateError};
use crate::vm::{Vm, VmError, VmSpec};
use crate::volumes::{self, Layout, VolumeError};

/// Errors of a pod run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The pod directory could not be made (e.g. the name is taken).
    #[error(transparent)]
    State(#[from] StateError),
    /// Volumes could not be set up.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// The private mount namespace for hostPath file mounts could not be entered.
    #[error("cannot give the pod a private mount namespace for its hostPath file mounts: {0}")]
    MountNamespace(#[from] MountNsError),
    /// The pod cannot be expressed for the agent.
    #[error(transparent)]
    Translate(#[from] TranslateError),
    /// The VMM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The agent failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The VM ended while the pod was running.
    #[error("the microVM exited unexpectedly ({status}){details}")]
    Crashed {
        /// The VMM's exit status.
        status: String,
        /// Console and VMM output tails.
        details: String,
    },
    /// The agent never answered while the VM kept running.
    #[error("{cause}{details}")]
    BootTimeout {
        /// The agent connection's error.
        cause: AgentError,
        /// Console tail and the VMM's state dump.
        details: String,
    },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// How long a VMM gets to print its state dump (SIGUSR1) for an error report.
const STATE_DUMP_WAIT: Duration = Duration::from_millis(1500);

impl RunError {
    /// Whether this is bad input (found before the VM started) rather than a failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            RunError::State(StateError::Running { .. } | StateError::Exists { .. })
                | RunError::Volume(VolumeError::HostPath { .. })
                | RunError::Translate(TranslateError::Unsupported { .. })
        )
    }
}

/// Where a run's output goes.
pub trait Output {
    /// A container's log line.
    fn log_line(&mut self, container: &str, stream: StreamKind, text: &[u8]);
    /// A progress or event line.
    fn event(&mut self, text: &str);
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `PEAPOD_ROOT`.
    pub root: PathBuf,
    /// VMM, kernel, initramfs.
    pub assets: Assets,
    /// Remove the pod directory at the end (`--rm`).
    pub remove: bool,
    /// How long the agent may take to answer after the VMM started.
    pub boot_timeout: Duration,
    /// How often the status is polled.
    pub poll_interval: Duration,
    /// Stop the pod as soon as every app container runs (for benchmarks).
    pub stop_when_running: bool,
    /// Extra guest kernel parameters.
    pub extra_cmdline: Option<String>,
    /// When the command started (timeline origin).
    pub t0: Instant,
}

/// When each phase was reached, measured from [`RunOptions::t0`] on the host clock.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    /// The VMM process was spawned.
    pub vmm_started: Option<Duration>,
    /// The guest kernel was entered: the VMM's first `KVM_RUN` (spawn time plus the setup
    /// time the VMM reports).
    pub kernel_entry: Option<Duration>,
    /// The agent answered the host's first ping.
    pub agent_ready: Option<Duration>,
    /// The guest's own clock (`CLOCK_BOOTTIME`) when the agent started listening: the guest's
    /// view of its boot, not on the host timeline.
    pub guest_agent_ready: Option<Duration>,
    /// The first container was seen running.
    pub first_running: Option<Duration>,
    /// Every app container was seen running.
    pub all_running: Option<Duration>,
    /// The VMM exited.
    pub vmm_exited: Option<Duration>,
}

/// What a run ended with.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Exit code for the shell.
    pub exit_code: u8,
    /// The last status seen.
    pub status: Option<PodStatus>,
    /// Phase times.
    pub timeline: Timeline,
    /// VMM memory once all containers ran: (own RSS KiB, guest memory touched KiB).
    pub vmm_rss_kib: Option<(u64, u64)>,
    /// Guest facts once all containers ran.
    pub guest: Option<GuestInfo>,
}

#[derive(Serialize)]
struct FinalStatus<'a> {
    exit_code: u8,
    interrupted_by_signal: Option<i32>,
    status: Option<&'a PodStatus>,
}

/// Undoes what the run made, whatever way it ends.
struct Cleanup {
    dir: Option<PodDir>,
    layout: Layout,
    remove: bool,
}

impl Drop for Cleanup {
    // Dropped in `run_pod`, on the thread (and so in the mount namespace) that made the
    // bind mounts: the detach reaches them.
    fn drop(&mut self) {
        self.layout.teardown();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_file(dir.vsock());
            let _ = crate::state::remove_tree(&dir.files());
            if self.remove {
                if let Err(e) = dir.remove() {
                    eprintln!("peapod: warning: {e}");
                }
            }
        }
    }
}

const MIB: u64 = 1024 * 1024;

fn all_running(s: &PodStatus) -> bool {
    !s.containers.is_empty()
        && s.containers
            .iter()
            .all(|c| matches!(c.state, ContainerState::Running { .. }))
}

fn any_running(s: &PodStatus) -> bool {
    s.init_containers
        .iter()
        .chain(&s.containers)
        .any(|c| matches!(c.state, ContainerState::Running { .. }))
}

fn tail_of(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Runs `prepared` to its end (or until a signal arrives on `signals`).
///
/// When the pod has a hostPath file, the calling thread first moves into a private mount
/// namespace (and stays there): the bind mounts, the VMM and their teardown all come from
/// this thread, so do not move any of them to another one.
pub fn run_pod(
    prepared: Prepared,
    opts: &RunOptions,
    signals: &Receiver<i32>,
    out: &mut dyn Output,
) -> Result<RunResult, RunError> {
    let plan = &prepared.plan;
    let dir = PodDir::create(&opts.root, &plan.namespace, &plan.name)?;
    let mut cleanup = Cleanup {
        dir: None,
        layout: Layout::default(),
        remove: opts.remove,
    };
    dir.write_file("pod.yaml", prepared.manifest.text.as_bytes())?;
    dir.write_json(
        "pod.json",
        &PodRecord {
            namespace: plan.namespace.clone(),
            name: plan.name.clone(),
            uid: plan.uid.clone(),
            init_containers: plan
                .init_containers
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            containers: plan.containers.iter().map(|c| c.name.clone()).collect(),
            owner_pid: std::process::id(),
        },
    )?;
    let dir_path = dir.path().to_path_buf();
    let log_files: Vec<(String, PathBuf)> = plan
        .init_containers
        .iter()
        .chain(&plan.containers)
        .map(|c| (c.name.clone(), dir.log_file(&c.name)))
        .collect();
    let vsock = dir.vsock();
    let console = dir.console();
    let vmm_log = dir.vmm_log();
    cleanup.dir = Some(dir);
    // A pod whose set-up fails before the VM starts leaves nothing, not even its directory.
    let setup = (|| {
        // Only host mounts need the namespace (and CAP_SYS_ADMIN); it must exist before they
        // are made, in this thread, which also spawns the VMM below and detaches them.
        if volumes::needs_host_mounts(&prepared.host_paths) {
            mount_ns::enter_private()?;
        }
        cleanup.layout =
            Layout::build(plan, &prepared.image_roots, &prepared.host_paths, &dir_path)?;
        let scratch = plan.vm.memory_mib.saturating_mul(MIB) / 2;
        let spec =
            translate::pod_spec(plan, &prepared.image_roots, &cleanup.layout, Some(scratch))?;
        Ok::<_, RunError>(spec)
    })();
    let spec = match setup {
        Ok(s) => s,
        Err(e) => {
            cleanup.remove = true;
            return Err(e);
        }
    };
    let vm_spec = VmSpec {
        vmm: opts.assets.vmm.clone(),
        kernel: opts.assets.kernel.clone(),
        initrd: opts.assets.initrd.clone(),
        vcpus: plan.vm.vcpus,
        memory_mib: plan.vm.memory_mib,
        vsock_uds: vsock.clone(),
        console: console.clone(),
        stderr_log: vmm_log,
        shares: cleanup.layout.shares.clone(),
        extra_cmdline: opts.extra_cmdline.clone(),
    };
    // Spawned from this thread: the VMM inherits its mount namespace (and so the bind mounts)
    // and its parent-death signal follows this thread.
    let mut vm = Vm::spawn(&vm_spec)?;
    let mut tl = Timeline {
        vmm_started: Some(opts.t0.elapsed()),
        ..Timeline::default()
    };
    out.event(&format!(
        "pod {}/{}: microVM started (pid {}, {} vCPU, {} MiB, {} virtio-fs shares)",
        plan.namespace,
        plan.name,
        vm.pid(),
        plan.vm.vcpus,
        plan.vm.memory_mib,
        vm_spec.shares.len()
    ));
    let crashed = |vm: &mut Vm, status: String| RunError::Crashed {
        status,
        details: format!(
            "\n--- last console lines ({}):\n{}\n--- vmm:\n{}",
            console.display(),
            tail_of(&console, 15),
            vm.stderr_tail().join("\n")
        ),
    };
    let addr = AgentAddr::new(&vsock);
    let mut interrupted: Option<i32> = None;
    let ready = {
        let mut alive = || {
            if let Ok(sig) = signals.try_recv() {
                interrupted = Some(sig);
                return Err(format!("interrupted by signal {sig} while the VM booted"));
            }
            match vm.try_wait() {
                Ok(Some(s)) => Err(format!("vmm exited during boot ({s})")),
                Ok(None) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        };
        addr.wait_ready(opts.boot_timeout, &mut alive)
    };
    let client = match ready {
        Ok(c) => c,
        Err(e) => {
            if let Some(sig) = interrupted {
                drop(vm);
                return Ok(interrupted_result(sig, tl));
            }
            return Err(match vm.try_wait()? {
                Some(s) => crashed(&mut vm, s.to_string()),
                None => {
                    // A guest that never answered: keep the VMM's view of it for the report.
                    vm.dump_state(STATE_DUMP_WAIT);
                    RunError::BootTimeout {
                        cause: e,
                        details: format!(
                            "\n--- last console lines ({}):\n{}\n--- vmm state:\n{}",
                            console.display(),
                            tail_of(&console, 15),
                            vm.stderr_tail().join("\n")
                        ),
                    }
                }
            });
        }
    };
    let mut control = Control::new(addr.clone(), REQUEST_TIMEOUT, client);
    tl.agent_ready = Some(opts.t0.elapsed());
    tl.kernel_entry = vm
        .setup_us()
        .zip(tl.vmm_started)
        .map(|(us, spawned)| spawned + Duration::from_micros(us));
    if let Ok(g) = control.guest_info() {
        tl.guest_agent_ready = Some(Duration::from_nanos(g.agent_ready_ns));
    }
    let created = control.create_pod(&spec);
    control_notes(&mut control, out);
    if let Err(e) = created {
        if exits_within(&mut || Ok(vm.try_wait()?.is_some()), VMM_EXIT_GRACE)? {
            let status = vm.try_wait()?.map_or_else(String::new, |s| s.to_string());
            return Err(crashed(&mut vm, status));
        }
        return Err(e.into());
    }
    let (tx, rx) = mpsc::channel();
    let mut followers: Vec<JoinHandle<()>> = Vec::new();
    for (name, file) in &log_files {
        followers.push(
            logs::follow(addr.clone(), name.clone(), file.clone(), tx.clone())
                .map_err(RunError::Thread)?,
        );
    }
    drop(tx);
    let mut tracker = EventTracker::default();
    let mut status: Option<PodStatus> = None;
    let mut result_rss = None;
    let mut guest = None;
    let mut open_logs = log_files.len();
    let mut last_poll = Instant::now() - opts.poll_interval;
    let mut shutdown: Option<JoinHandle<()>> = None;
    let grace = Duration::from_secs(plan.termination_grace_period_seconds);
    let mut stop_deadline: Option<Instant> = None;
    let mut final_seen: Option<Instant> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(5).min(opts.poll_interval)) {
            Ok(ev) => {
                handle_log(ev, out, &mut open_logs);
                continue;
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
        if let Ok(sig) = signals.try_recv() {
            if interrupted.is_none() && shutdown.is_none() {
                interrupted = Some(sig);
                out.event(&format!(
                    "signal {sig}: stopping the pod (grace period {} s; again to kill it)",
                    grace.as_secs()
                ));
                shutdown = Some(start_shutdown(&addr, grace)?);
                stop_deadline = Some(Instant::now() + grace + Duration::from_secs(60));
            } else {
                out.event("killing the microVM");
                vm.kill()?;
            }
        }
        if let Some(s) = vm.try_wait()? {
            tl.vmm_exited = Some(opts.t0.elapsed());
            if shutdown.is_none() {
                return Err(crashed(&mut vm, s.to_string()));
            }
            break;
        }
        if stop_deadline.is_some_and(|d| Instant::now() >= d) {
            out.event("the pod did not stop in time: killing the microVM");
            vm.kill()?;
            continue;
        }
        if shutdown.is_some() {
            continue;
        }
        if last_poll.elapsed() < opts.poll_interval {
            continue;
        }
        last_poll = Instant::now();
        let st = control.status();
        control_notes(&mut control, out);
        let st = match st {
            Ok(s) => s,
            Err(e) => {
                // A guest that crashed closes the agent's connections a moment before its VMM
                // is reaped: the crash, not the agent, is what gets reported.
                if exits_within(&mut || Ok(vm.try_wait()?.is_some()), VMM_EXIT_GRACE)? {
                    continue; // reported as a crash above
                }
                return Err(e.into());
            }
        };
        for e in tracker.update(&st) {
            out.event(&e);
        }
        if tl.first_running.is_none() && any_running(&st) {
            tl.first_running = Some(opts.t0.elapsed());
        }
        if tl.all_running.is_none() && all_running(&st) {
            tl.all_running = Some(opts.t0.elapsed());
            result_rss = vm.rss_kib();
            guest = control.guest_info().ok();
        }
        let done = matches!(st.phase, PodPhase::Succeeded | PodPhase::Failed);
        let bench_done = opts.stop_when_running && tl.all_running.is_some();
        status = Some(st);
        if done || bench_done {
            // Let the followers deliver the last lines (their streams end when the
            // containers are final), then stop the VM.
            let since = *final_seen.get_or_insert_with(Instant::now);
            if open_logs > 0 && !bench_done && since.elapsed() < Duration::from_secs(5) {
                continue;
            }
            shutdown = Some(start_shutdown(&addr, grace)?);
            stop_deadline = Some(Instant::now() + grace + Duration::from_secs(60));
        }
    }
    if let Some(h) = shutdown {
        let _ = h.join();
    }
    for f in followers {
        let _ = f.join();
    }
    while let Ok(ev) = rx.try_recv() {
        handle_log(ev, out, &mut open_logs);
    }
    let exit_code = match interrupted {
        Some(sig) => u8::try_from(128 + sig).unwrap_or(1),
        None => status
            .as_ref()
            .map_or(outcome::EXIT_RUNTIME, outcome::exit_code),
    };
    if let Some(dir) = &cleanup.dir {
        dir.write_json(
            "status.json",
            &FinalStatus {
                exit_code,
                interrupted_by_signal: interrupted,
                status: status.as_ref(),
            },
        )?;
    }
    drop(vm);
    drop(cleanup);
    Ok(RunResult {
        exit_code,
        status,
        timeline: tl,
        vmm_rss_kib: result_rss,
        guest,
    })
}

/// How long a failed agent request waits for the VMM to exit before the agent is blamed.
const VMM_EXIT_GRACE: Duration = Duration::from_secs(2);

/// Whether `exited` turns true within `grace` (asked every 20 ms).
fn exits_within(
    exited: &mut dyn FnMut() -> Result<bool, RunError>,
    grace: Duration,
) -> Result<bool, RunError> {
    let end = Instant::now() + grace;
    loop {
        if exited()? {
            return Ok(true);
        }
        if Instant::now() >= end {
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Tells the user what happened to the agent's control connection.
fn control_notes(control: &mut Control, out: &mut dyn Output) {
    for note in control.take_notes() {
        out.event(&note);
    }
}

fn interrupted_result(sig: i32, timeline: Timeline) -> RunResult {
    RunResult {
        exit_code: u8::try_from(128 + sig).unwrap_or(1),
        status: None,
        timeline,
        vmm_rss_kib: None,
        guest: None,
    }
}

fn handle_log(ev: LogEvent, out: &mut dyn Output, open: &mut usize) {
    match ev {
        LogEvent::Line {
            container,
            stream,
            text,
        } => out.log_line(&container, stream, &text),
        LogEvent::Dropped { container, records } => out.event(&format!(
            "container {container}: {records} log records dropped (the host fell behind)"
        )),
        LogEvent::Reconnected { container, attempt } => out.event(&format!(
            "container {container}: log stream reconnected (attempt {attempt})"
        )),
        LogEvent::End { container, error } => {
            *open = open.saturating_sub(1);
            if let Some(e) = error {
                out.event(&format!("container {container}: log stream ended: {e}"));
            }
        }
    }
}

/// Asks the agent, on its own connection and thread, to stop the pod within `grace` and
/// power the VM off.
fn start_shutdown(addr: &AgentAddr, grace: Duration) -> Result<JoinHandle<()>, RunError> {
    let addr = addr.clone();
    thread::Builder::new()
        .name("shutdown".into())
        .spawn(move || {
            let r = addr
                .control(grace + Duration::from_secs(30))
                .and_then(|mut c| Ok(c.shutdown(None)?));
            if let Err(e) = r {
                eprintln!("peapod: shutdown request: {e}");
            }
        })
        .map_err(RunError::Thread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::Manifest;
    use crate::volumes::check_host_paths;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// The order a guest crash shows on the host: the VMM's sockets close (the agent request
    /// fails) a moment before the VMM process can be reaped. The failure is the crash's.
    #[test]
    fn a_vmm_that_exits_just_after_the_agent_error_is_a_crash() {
        let t0 = Instant::now();
        let mut exited = || Ok(t0.elapsed() >= Duration::from_millis(100));
        assert!(exits_within(&mut exited, VMM_EXIT_GRACE).unwrap());
        // A VMM still running after the grace period: the agent is blamed.
        let mut running = || Ok(false);
        assert!(!exits_within(&mut running, Duration::from_millis(50)).unwrap());
        // An error asking the VMM is passed on.
        let mut broken = || Err(RunError::Thread(std::io::Error::other("wait failed")));
        assert!(exits_within(&mut broken, VMM_EXIT_GRACE).is_err());
    }

    struct Quiet;

    impl Output for Quiet {
        fn log_line(&mut self, _: &str, _: StreamKind, _: &[u8]) {}
        fn event(&mut self, _: &str) {}
    }

    fn plan_with_host_file(file: &Path) -> pod_spec::plan::PodPlan {
        serde_json::from_value(serde_json::json!({
            "name": "p", "namespace": "default", "uid": "u", "hostname": "p", "subdomain": "",
            "restart_policy": "Never", "share_process_namespace": false,
            "active_deadline_seconds": null, "termination_grace_period_seconds": 1,
            "vm": {"vcpus": 1, "memory_mib": 128, "effective_cpu_millis": 0,
                   "effective_memory_bytes": 0},
            "volumes": [{"name": "conf", "source": {"hostPath": {
                "path": file.display().to_string(), "path_type": "File"}}}],
            "init_containers": [],
            "containers": [{
                "name": "a", "image": "busybox", "image_pull_policy": "IfNotPresent",
                "argv": ["true"], "env": [], "working_dir": "", "user": "",
                "mounts": [{"volume": "conf", "mount_path": "/conf", "read_only": false,
                            "sub_path": ""}],
                "ports": [], "stdin": false, "tty": false, "cpu_limit_millis": null,
                "memory_limit_bytes": null, "cpu_request_millis": null,
                "memory_request_bytes": null}]
        }))
        .unwrap()
    }

    /// A pod with a hostPath file: the bind mount is made in the run thread's private mount
    /// namespace, the VMM (here a script that copies the shared file and exits) sees it, and
    /// the host never does.
    #[test]
    fn a_host_file_mount_is_seen_by_the_vmm_and_never_by_the_host() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mount namespaces and bind mounts need root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let base = d.path().canonicalize().unwrap();
        let file = base.join("app.conf");
        fs::write(&file, b"v=1\n").unwrap();
        let seen = base.join("seen");
        let vmm = base.join("fake-vmm");
        fs::write(
            &vmm,
            format!(
                "#!/bin/sh\nwhile [ $# -gt 0 ]; do\n  case \"$2\" in hf0=*) d=\"${{2#hf0=}}\"; \
                 cat \"$d/app.conf\" > {seen}; grep -c \" $d/app.conf \" /proc/self/mountinfo \
                 >> {seen};; esac\n  shift\ndone\nexit 3\n",
                seen = seen.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&vmm, fs::Permissions::from_mode(0o755)).unwrap();
        let plan = plan_with_host_file(&file);
        let host_paths = check_host_paths(&plan).unwrap();
        assert!(volumes::needs_host_mounts(&host_paths));
        let prepared = Prepared {
            plan,
            manifest: Manifest {
                pod: pod_spec::model::Pod::default(),
                text: String::new(),
            },
            image_roots: vec![base.join("rootfs")],
            host_paths,
        };
        let opts = RunOptions {
            root: base.join("root"),
            assets: Assets {
                vmm,
                kernel: base.join("k"),
                initrd: base.join("i"),
            },
            remove: false,
            boot_timeout: Duration::from_secs(20),
            poll_interval: Duration::from_millis(20),
            stop_when_running: false,
            extra_cmdline: None,
            t0: Instant::now(),
        };
        let host_ns = fs::read_link("/proc/thread-self/ns/mnt").unwrap();
        // A thread of its own: run_pod leaves its thread in the namespace.
        let (r, run_ns) = thread::spawn(move || {
            let (_tx, rx) = mpsc::channel();
            let r = run_pod(prepared, &opts, &rx, &mut Quiet);
            (r, fs::read_link("/proc/thread-self/ns/mnt").unwrap())
        })
        .join()
        .unwrap();
        let e = r.expect_err("the fake VMM exits during boot");
        assert!(matches!(e, RunError::Crashed { .. }), "{e}");
        assert_ne!(
            run_ns, host_ns,
            "the run thread had its own mount namespace"
        );
        assert_eq!(
            fs::read_to_string(&seen).unwrap(),
            "v=1\n1\n",
            "the VMM saw the file through the bind mount"
        );
        let here = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!here.contains("/files/0/app.conf"), "{here}");
        assert_eq!(fs::read(&file).unwrap(), b"v=1\n");
    }
}
