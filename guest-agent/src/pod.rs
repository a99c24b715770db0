//! The pod: its containers, their supervision (init containers in order, restart policy with
//! back-off and `CrashLoopBackOff`, `activeDeadlineSeconds`), status, signals and stop.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent_protocol::cri::now_ns;
use agent_protocol::{
    ContainerSpec, ContainerState, ContainerStatus, PodSpec, PodStatus, StreamKind,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cgroup::{self, PodCgroup};
use crate::container::{self, Launch};
use crate::logs::{self, LogBuffer};
use crate::mounts::{self, ContainerPaths, ResolvedMount};
use crate::oom;
use crate::podfs::{self, Mounted, PodFsError};
use crate::process;
use crate::reaper::{Exit, Reaper};
use crate::restart::{Decision, RestartState};
use crate::status::{self, Progress};
use crate::sys::LinuxSys;
use crate::users;

/// Errors of pod operations.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// No container of that name.
    #[error("no container named {0:?}")]
    NotFound(String),
    /// The container is not running.
    #[error("container {0:?} is not running")]
    NotRunning(String),
    /// The request cannot be carried out as given (e.g. a bad file system mount point).
    #[error("{0}")]
    Invalid(String),
    /// Preparing the pod or a container failed.
    #[error("{0}")]
    Setup(String),
    /// A signal could not be delivered.
    #[error("signal: {0}")]
    Signal(nix::Error),
}

/// Mutable state of one container.
#[derive(Debug, Clone)]
pub struct CtrState {
    /// Current state.
    pub state: ContainerState,
    /// Previous termination.
    pub last_state: Option<ContainerState>,
    /// Restarts.
    pub restart_count: u32,
    /// Running PID.
    pub pid: Option<i32>,
    /// Started at least once.
    pub ever_started: bool,
    /// Waiting for a restart.
    pub will_restart: bool,
    /// cgroup directory.
    pub cgroup: Option<PathBuf>,
}

/// One container of the pod.
pub struct Ctr {
    /// Spec.
    pub spec: ContainerSpec,
    /// Init container.
    pub init: bool,
    /// Logs.
    pub log: Arc<LogBuffer>,
    /// `oom_score_adj` of its processes (and of exec sessions in it), from the pod's QoS
    /// class (see [`crate::oom`]).
    pub oom_score_adj: i32,
    st: Mutex<CtrState>,
}

impl Ctr {
    /// Locks the state.
    pub fn state(&self) -> MutexGuard<'_, CtrState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn status(&self) -> ContainerStatus {
        let st = self.state();
        ContainerStatus {
            name: self.spec.name.clone(),
            state: st.state.clone(),
            last_state: st.last_state.clone(),
            restart_count: st.restart_count,
            pid: st.pid.and_then(|p| u32::try_from(p).ok()),
        }
    }

    fn progress(&self) -> Progress {
        let st = self.state();
        status::progress(&st.state, st.ever_started, st.will_restart)
    }
}

#[derive(Default)]
struct Flags {
    stopping: bool,
    deadline_exceeded: bool,
}

/// Where the agent keeps its state.
#[derive(Debug, Clone)]
pub struct Env {
    /// Scratch directory (tmpfs in the guest and in host mode).
    pub state_dir: PathBuf,
    /// cgroup2 directory under which the pod cgroup is made.
    pub cgroup_parent: Option<PathBuf>,
}

/// A pod.
pub struct Pod {
    /// Spec.
    pub spec: PodSpec,
    dir: PathBuf,
    cgroup: Option<PodCgroup>,
    /// Containers, init first.
    pub containers: Vec<Arc<Ctr>>,
    flags: Mutex<Flags>,
    cv: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
    reaper: Arc<Reaper>,
    stopped: Mutex<bool>,
    fs: Mutex<Mounted>,
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState::Waiting {
        reason: reason.into(),
        message: message.into(),
    }
}

fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

impl Pod {
    /// Prepares the pod's files and cgroup and starts supervising it.
    ///
    /// The pod's file systems (`PodSpec.filesystems`, and the scratch tmpfs when
    /// `scratch_bytes` is set) are mounted first; if they or anything after them fail, what
    /// was mounted is unmounted again before the error is returned.
    pub fn create(spec: PodSpec, env: &Env, reaper: Arc<Reaper>) -> Result<Arc<Self>, PodError> {
        let id = if spec.uid.is_empty() {
            &spec.name
        } else {
            &spec.uid
        };
        let dir = env.state_dir.join("pods").join(sanitize(id));
        let invalid = |e: PodFsError| PodError::Invalid(e.to_string());
        let mut plan: Vec<_> = podfs::scratch(&dir.join("containers"), spec.scratch_bytes)
            .map_err(invalid)?
            .into_iter()
            .collect();
        plan.extend(
            podfs::plan(
                &spec.filesystems,
                &podfs::Reserved::for_agent(&env.state_dir),
            )
            .map_err(invalid)?,
        );
        let mut mounted =
            podfs::mount_all(&LinuxSys, &plan).map_err(|e| PodError::Setup(e.to_string()))?;
        match Self::create_mounted(spec, env, reaper, dir, &mut mounted) {
            Ok(p) => Ok(p),
            Err(e) => {
                for problem in mounted.unmount(&LinuxSys) {
                    eprintln!("peapod-agent: warning: undoing the pod file systems: {problem}");
                }
                Err(e)
            }
        }
    }

    fn create_mounted(
        spec: PodSpec,
        env: &Env,
        reaper: Arc<Reaper>,
        dir: PathBuf,
        mounted: &mut Mounted,
    ) -> Result<Arc<Self>, PodError> {
        let setup = |e: &dyn std::fmt::Display| PodError::Setup(e.to_string());
        let id = if spec.uid.is_empty() {
            &spec.name
        } else {
            &spec.uid
        };
        if let Err(e) = nix::unistd::sethostname(&spec.hostname) {
            eprintln!("peapod-agent: warning: sethostname: {e}");
        }
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).map_err(|e| setup(&e))?;
        std::fs::write(etc.join("hostname"), format!("{}\n", spec.hostname))
            .map_err(|e| setup(&e))?;
        std::fs::write(etc.join("hosts"), hosts_file(&spec.hostname)).map_err(|e| setup(&e))?;
        let resolv = match &spec.resolv_conf {
            Some(r) => r.clone(),
            None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        std::fs::write(etc.join("resolv.conf"), resolv).map_err(|e| setup(&e))?;
        let cgroup = match &env.cgroup_parent {
            Some(parent) => {
                let name = format!("peapod-{}-{}", sanitize(id), now_ns());
                match PodCgroup::create(&LinuxSys, parent, &name) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        eprintln!("peapod-agent: warning: no pod cgroup: {e}");
                        None
                    }
                }
            }
            None => None,
        };
        let qos = oom::pod_qos(
            spec.init_containers
                .iter()
                .chain(&spec.containers)
                .map(|c| &c.resources),
        );
        let capacity = oom::mem_total(&LinuxSys).unwrap_or_else(|e| {
            eprintln!("peapod-agent: warning: {e}: Burstable containers get oom_score_adj 999");
            0
        });
        let mk = |c: &ContainerSpec, init: bool| {
            Arc::new(Ctr {
                spec: c.clone(),
                init,
                log: Arc::new(LogBuffer::default()),
                oom_score_adj: oom::container_score_adj(qos, &c.resources, capacity),
                st: Mutex::new(CtrState {
                    state: waiting(
                        if init {
                            "PodInitializing"
                        } else {
                            "ContainerCreating"
                        },
                        "",
                    ),
                    last_state: None,
                    restart_count: 0,
                    pid: None,
                    ever_started: false,
                    will_restart: false,
                    cgroup: None,
                }),
            })
        };
        let containers = spec
            .init_containers
            .iter()
            .map(|c| mk(c, true))
            .chain(spec.containers.iter().map(|c| mk(c, false)))
            .collect();
        let pod = Arc::new(Self {
            spec,
            dir,
            cgroup,
            containers,
            flags: Mutex::new(Flags::default()),
            cv: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            reaper,
            stopped: Mutex::new(false),
            fs: Mutex::new(std::mem::take(mounted)),
        });
        let p = pod.clone();
        let main = match std::thread::Builder::new()
            .name("pod".into())
            .spawn(move || p.run())
        {
            Ok(t) => t,
            Err(e) => {
                // Nothing started: drop the pod cgroup; the caller unmounts the file systems.
                if let Some(cg) = &pod.cgroup {
                    let _ = cgroup::remove(&LinuxSys, &cg.dir);
                }
                *mounted = std::mem::take(&mut *pod.fs_lock());
                return Err(setup(&e));
            }
        };
        pod.threads_lock().push(main);
        if let Some(secs) = pod.spec.active_deadline_seconds {
            let p = pod.clone();
            let t = std::thread::Builder::new()
                .name("deadline".into())
                .spawn(move || p.deadline(Duration::from_secs(secs)));
            match t {
                Ok(t) => pod.threads_lock().push(t),
                Err(e) => {
                    // Containers may be starting: stop them (this unmounts everything).
                    pod.stop(Some(0));
                    return Err(setup(&e));
                }
            }
        }
        Ok(pod)
    }

    fn fs_lock(&self) -> MutexGuard<'_, Mounted> {
        self.fs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn threads_lock(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flags(&self) -> MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopping(&self) -> bool {
        self.flags().stopping
    }

    /// Sleeps up to `d`; false when the pod is stopping.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        let mut f = self.flags();
        while !f.stopping {
            let now = Instant::now();
            if now >= end {
                return true;
            }
            f = self
                .cv
                .wait_timeout(f, end - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        false
    }

    fn deadline(self: Arc<Self>, d: Duration) {
        if self.sleep(d) {
            self.flags().deadline_exceeded = true;
            eprintln!("peapod-agent: pod exceeded activeDeadlineSeconds, stopping it");
            self.terminate_all(self.spec.termination_grace_seconds, "DeadlineExceeded");
        }
    }

    fn run(self: Arc<Self>) {
        let inits: Vec<_> = self.containers.iter().filter(|c| c.init).cloned().collect();
        for c in inits {
            if !self.supervise(&c) {
                return;
            }
        }
        for c in self.containers.iter().filter(|c| !c.init).cloned() {
            let p = self.clone();
            let name = format!("ctr-{}", c.spec.name);
            match std::thread::Builder::new().name(name).spawn(move || {
                p.supervise(&c);
            }) {
                Ok(t) => self.threads_lock().push(t),
                Err(e) => eprintln!("peapod-agent: cannot start supervisor thread: {e}"),
            }
        }
    }

    fn backoff_base(&self) -> Option<Duration> {
        self.spec.test_backoff_base_ms.map(Duration::from_millis)
    }

    /// Runs a container until it stays terminated; true if it completed successfully.
    fn supervise(&self, c: &Ctr) -> bool {
        let policy = if c.init && self.spec.restart_policy == agent_protocol::RestartPolicy::Always
        {
            agent_protocol::RestartPolicy::OnFailure
        } else {
            self.spec.restart_policy
        };
        let mut restart = RestartState::new(policy, self.backoff_base());
        loop {
            if self.stopping() {
                return false;
            }
            let began = Instant::now();
            let (code, state) = match self.run_once(c) {
                Ok(exit) => exit,
                Err(e) => {
                    let now = now_ns();
                    (
                        128,
                        ContainerState::Terminated {
                            exit_code: 128,
                            signal: None,
                            reason: "StartError".into(),
                            message: truncate(&e.to_string()),
                            started_at_ns: now,
                            finished_at_ns: now,
                        },
                    )
                }
            };
            let decision = if self.stopping() {
                Decision::Stay
            } else {
                restart.on_exit(code, began.elapsed())
            };
            {
                let mut st = c.state();
                st.pid = None;
                st.state = state.clone();
                st.last_state = Some(state);
                st.will_restart = matches!(decision, Decision::Restart(_));
                if let Decision::Restart(_) = decision {
                    st.restart_count = restart.restart_count;
                }
            }
            match decision {
                Decision::Stay => {
                    c.log.finish();
                    return code == 0;
                }
                Decision::Restart(delay) => {
                    c.state().state = waiting(
                        "CrashLoopBackOff",
                        &format!(
                            "back-off {}ms restarting failed container",
                            delay.as_millis()
                        ),
                    );
                    if !self.sleep(delay) {
                        c.log.finish();
                        return false;
                    }
                }
            }
        }
    }

    fn resolve_volumes(&self, spec: &ContainerSpec) -> Result<Vec<ResolvedMount>, PodError> {
        let mut out = Vec::new();
        for m in &spec.mounts {
            let src = Path::new(&m.source);
            let source = match &m.sub_path {
                Some(sp) if !sp.is_empty() => {
                    mounts::resolve_sub_path(src, sp).map_err(|e| PodError::Setup(e.to_string()))?
                }
                _ => src.to_path_buf(),
            };
            let meta = std::fs::metadata(&source)
                .map_err(|e| PodError::Setup(format!("volume {}: {e}", source.display())))?;
            out.push(ResolvedMount {
                source,
                destination: m.destination.clone(),
                read_only: m.read_only,
                is_dir: meta.is_dir(),
            });
        }
        Ok(out)
    }

    /// Starts the container once and waits for it; returns (exit code, terminated state).
    fn run_once(&self, c: &Ctr) -> Result<(i32, ContainerState), PodError> {
        let spec = &c.spec;
        let setup = |e: &dyn std::fmt::Display| PodError::Setup(e.to_string());
        let rootfs = PathBuf::from(&spec.rootfs);
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
        let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
        let ids = users::resolve(spec.user.as_deref(), &passwd, &group).map_err(|e| setup(&e))?;
        let volumes = self.resolve_volumes(spec)?;
        let scratch = self.dir.join("containers").join(&spec.name);
        let _ = std::fs::remove_dir_all(&scratch);
        let paths = ContainerPaths {
            rootfs,
            upper: scratch.join("upper"),
            work: scratch.join("work"),
            merged: scratch.join("root"),
            pod_etc: self.dir.join("etc"),
        };
        for d in [&paths.upper, &paths.work, &paths.merged] {
            std::fs::create_dir_all(d).map_err(|e| setup(&e))?;
        }
        let steps = mounts::plan(&paths, &volumes).map_err(|e| setup(&e))?;
        let cg = match &self.cgroup {
            Some(pc) => {
                let dir = pc
                    .create_container(&LinuxSys, &spec.name, &spec.resources)
                    .map_err(|e| setup(&e))?;
                Some(dir)
            }
            None => None,
        };
        let env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        let workdir = spec.working_dir.clone().unwrap_or_else(|| "/".into());
        let launch = Launch {
            process: process::prepare(&spec.argv, &env, &workdir, ids).map_err(|e| setup(&e))?,
            steps,
            cgroup_procs: cg.as_ref().map(|d| d.join("cgroup.procs")),
            new_pid_ns: !self.spec.share_process_namespace,
            hostname: self.spec.hostname.clone(),
            oom_score_adj: c.oom_score_adj,
        };
        if self.stopping() {
            return Err(PodError::Setup("pod is stopping".into()));
        }
        c.log.reopen();
        let started_at = now_ns();
        let started = container::start(&self.reaper, &launch).map_err(|e| setup(&e))?;
        {
            let mut st = c.state();
            st.pid = Some(started.pid);
            st.ever_started = true;
            st.will_restart = false;
            st.cgroup = cg.clone();
            st.state = ContainerState::Running {
                started_at_ns: started_at,
            };
        }
        // A stop that began while this container was starting did not see its PID
        // (terminate_all sets the flag before reading PIDs, we set the PID before the flag).
        if self.stopping() {
            let _ = kill(Pid::from_raw(started.pid), Signal::SIGKILL);
        }
        let pumps: Vec<_> = [
            (started.stdout, StreamKind::Stdout),
            (started.stderr, StreamKind::Stderr),
        ]
        .into_iter()
        .filter_map(|(f, kind)| {
            let log = c.log.clone();
            std::thread::Builder::new()
                .name("log".into())
                .spawn(move || logs::pump(f, kind, &log))
                .ok()
        })
        .collect();
        let exit = started.exit.recv().unwrap_or(Exit {
            code: 137,
            signal: Some(9),
        });
        let oom = cg
            .as_deref()
            .map(|d| cgroup::container_oom_killed(&LinuxSys, d))
            .unwrap_or(false);
        // The container's PID namespace is gone; kill leftovers (exec sessions) and drain.
        if let Some(d) = &cg {
            if let Err(e) = cgroup::remove(&LinuxSys, d) {
                eprintln!("peapod-agent: warning: {e}");
            }
        }
        for p in pumps {
            let _ = p.join();
        }
        let _ = std::fs::remove_dir_all(&scratch);
        let reason = if oom {
            "OOMKilled"
        } else if exit.code == 0 {
            "Completed"
        } else {
            "Error"
        };
        Ok((
            exit.code,
            ContainerState::Terminated {
                exit_code: exit.code,
                signal: exit.signal,
                reason: reason.into(),
                message: String::new(),
                started_at_ns: started_at,
                finished_at_ns: now_ns(),
            },
        ))
    }

    /// Finds a container by name.
    pub fn container(&self, name: &str) -> Result<&Arc<Ctr>, PodError> {
        self.containers
            .iter()
            .find(|c| c.spec.name == name)
            .ok_or_else(|| PodError::NotFound(name.to_string()))
    }

    /// Signals a container's first process.
    pub fn kill(&self, name: &str, sig: i32) -> Result<(), PodError> {
        let c = self.container(name)?;
        let pid = c
            .state()
            .pid
            .ok_or_else(|| PodError::NotRunning(name.into()))?;
        let sig = Signal::try_from(sig).map_err(PodError::Signal)?;
        kill(Pid::from_raw(pid), sig).map_err(PodError::Signal)
    }

    /// SIGTERM to one container, SIGKILL after the grace period; returns once it exited.
    pub fn stop_container(&self, name: &str, grace: Option<u32>) -> Result<(), PodError> {
        let c = self.container(name)?;
        let pid = c
            .state()
            .pid
            .ok_or_else(|| PodError::NotRunning(name.into()))?;
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let grace = grace.unwrap_or(self.spec.termination_grace_seconds);
        let end = Instant::now() + Duration::from_secs(u64::from(grace));
        let exited = || c.state().pid != Some(pid);
        while Instant::now() < end && !exited() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !exited() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let end = Instant::now() + Duration::from_secs(10);
            while !exited() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// The pod status.
    pub fn status(&self) -> PodStatus {
        let f = self.flags();
        let (exceeded, stopping) = (f.deadline_exceeded, f.stopping);
        drop(f);
        let init: Vec<_> = self.containers.iter().filter(|c| c.init).collect();
        let apps: Vec<_> = self.containers.iter().filter(|c| !c.init).collect();
        let mut phase = status::phase(
            &init.iter().map(|c| c.progress()).collect::<Vec<_>>(),
            &apps.iter().map(|c| c.progress()).collect::<Vec<_>>(),
            exceeded,
        );
        if stopping && phase == agent_protocol::PodPhase::Running {
            phase = agent_protocol::PodPhase::Failed;
        }
        PodStatus {
            phase,
            reason: exceeded.then(|| "DeadlineExceeded".to_string()),
            init_containers: init.iter().map(|c| c.status()).collect(),
            containers: apps.iter().map(|c| c.status()).collect(),
        }
    }

    /// SIGTERM to every running container, SIGKILL after `grace` seconds; no restarts.
    fn terminate_all(&self, grace: u32, why: &str) {
        {
            self.flags().stopping = true;
        }
        self.cv.notify_all();
        let pids = |sig: Signal| {
            let mut n = 0;
            for c in &self.containers {
                if let Some(pid) = c.state().pid {
                    n += 1;
                    let _ = kill(Pid::from_raw(pid), sig);
                }
            }
            n
        };
        eprintln!("peapod-agent: stopping containers ({why})");
        if pids(Signal::SIGTERM) == 0 {
            return;
        }
        let end = Instant::now() + Duration::from_secs(u64::from(grace));
        while Instant::now() < end {
            if self.containers.iter().all(|c| c.state().pid.is_none()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        pids(Signal::SIGKILL);
    }

    /// Stops every container, removes the pod's cgroups and scratch files and unmounts its
    /// file systems. Idempotent.
    pub fn stop(&self, grace: Option<u32>) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        if *stopped {
            return;
        }
        self.terminate_all(grace.unwrap_or(self.spec.termination_grace_seconds), "stop");
        let threads: Vec<_> = self.threads_lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        for c in &self.containers {
            c.log.finish();
        }
        if let Some(cg) = &self.cgroup {
            for c in &self.containers {
                if let Some(d) = &c.state().cgroup {
                    let _ = cgroup::remove(&LinuxSys, d);
                }
            }
            if let Err(e) = cgroup::remove(&LinuxSys, &cg.dir) {
                eprintln!("peapod-agent: warning: {e}");
            }
        }
        // No container is left: flush and unmount the pod's file systems (the scratch tmpfs
        // last), then remove what is left of the scratch directory.
        for problem in self.fs_lock().unmount(&LinuxSys) {
            eprintln!("peapod-agent: warning: unmounting the pod file systems: {problem}");
        }
        let _ = std::fs::remove_dir_all(self.dir.join("containers"));
        *stopped = true;
    }

    /// Whether [`Pod::stop`] completed.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

fn truncate(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        if out.len() + ch.len_utf8() > agent_protocol::limits::MAX_MESSAGE {
            break;
        }
        out.push(ch);
    }
    out
}
