//! The protocol's message types: one enum for every frame, plus the pod and status models.

use serde::{Deserialize, Serialize};

use crate::limits::*;

/// What a new connection attaches to; sent by the host as the first message after the preamble.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamTarget {
    /// The control connection: requests and responses.
    Control,
    /// A log stream of one container.
    Logs(LogsRequest),
    /// An exec session; the process starts when this message arrives.
    Exec(ExecSpec),
}

/// Which log stream(s) of a container to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogSource {
    /// Only stdout.
    Stdout,
    /// Only stderr.
    Stderr,
    /// Both, interleaved in arrival order.
    Both,
}

/// Request for a log stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    /// Container name (init or app container).
    pub container: String,
    /// Which streams.
    pub source: LogSource,
    /// Keep streaming new records (otherwise end after the buffered history).
    pub follow: bool,
    /// Only the last N records of the history (all buffered records when `None`); applies
    /// after the `after_seq` filter.
    pub tail: Option<u32>,
    /// Only records with `seq` greater than this (v4): a reader resuming after a dropped
    /// connection passes the last `seq` it has. History older than the agent's ring is gone;
    /// the agent then first reports the gap as `LogsDropped`.
    pub after_seq: Option<u64>,
}

/// An exec request: runs `argv` inside a running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Container name.
    pub container: String,
    /// Program and arguments; `argv[0]` is looked up in the container's `PATH`.
    pub argv: Vec<String>,
    /// Extra environment entries on top of the container's environment.
    pub env: Vec<EnvVar>,
    /// Allocate a pseudo terminal (stdout and stderr are merged).
    pub tty: bool,
    /// Forward stdin frames to the process (otherwise stdin is `/dev/null`).
    pub stdin: bool,
    /// Initial terminal size when `tty`.
    pub rows: u16,
    /// Initial terminal size when `tty`.
    pub cols: u16,
}

/// One environment variable, already resolved by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// Pod-level restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RestartPolicy {
    /// Always restart.
    #[default]
    Always,
    /// Restart on a non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

/// Resource limits and requests of one container.
///
/// The requests (v3) only feed the pod's Kubernetes QoS class and the containers'
/// `oom_score_adj` in the guest; they do not set any cgroup knob. A request of `None` means
/// the limit, as Kubernetes defaults a missing request to the limit; `Some(0)` counts as not
/// set, as in Kubernetes' QoS rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    /// CPU limit in millicores.
    pub cpu_millis: Option<u64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes.
    pub pids: Option<u64>,
    /// CPU request in millicores (`None`: the limit).
    pub cpu_request_millis: Option<u64>,
    /// Memory request in bytes (`None`: the limit).
    pub memory_request_bytes: Option<u64>,
}

impl Resources {
    /// The CPU request after Kubernetes defaulting: the request, else the limit.
    pub fn effective_cpu_request(&self) -> Option<u64> {
        self.cpu_request_millis.or(self.cpu_millis)
    }

    /// The memory request after Kubernetes defaulting: the request, else the limit.
    pub fn effective_memory_request(&self) -> Option<u64> {
        self.memory_request_bytes.or(self.memory_bytes)
    }
}

/// A volume mount: bind mount of a directory the host hands over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute source directory, as the agent sees it.
    pub source: String,
    /// Absolute destination inside the container.
    pub destination: String,
    /// Mount read-only.
    pub read_only: bool,
    /// Relative path inside `source` to mount instead of the whole directory.
    pub sub_path: Option<String>,
}

/// One container of the pod, resolved by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Container name (DNS label).
    pub name: String,
    /// Absolute path of the image root filesystem (read-only lower layer).
    pub rootfs: String,
    /// Final argv (command/args already combined with ENTRYPOINT/CMD and expanded).
    pub argv: Vec<String>,
    /// Final environment (image env merged with spec env, expanded).
    pub env: Vec<EnvVar>,
    /// Working directory (absolute), `/` when `None`.
    pub working_dir: Option<String>,
    /// `user[:group]`, numeric or names from the rootfs `/etc/passwd` and `/etc/group`.
    pub user: Option<String>,
    /// Volume mounts.
    pub mounts: Vec<MountSpec>,
    /// Limits.
    pub resources: Resources,
    /// Allocate a TTY for the container (not supported yet: rejected).
    pub tty: bool,
    /// Keep stdin open (not supported yet: stdin is `/dev/null`).
    pub stdin: bool,
}

/// The pod handed to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// Hostname of the containers.
    pub hostname: String,
    /// Init containers, run in order to success.
    pub init_containers: Vec<ContainerSpec>,
    /// App containers.
    pub containers: Vec<ContainerSpec>,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// One PID namespace for all containers (the agent's).
    pub share_process_namespace: bool,
    /// Default grace period for stops.
    pub termination_grace_seconds: u32,
    /// Deadline after which the pod is failed and its containers stopped.
    pub active_deadline_seconds: Option<u64>,
    /// Content of `/etc/resolv.conf` (copied from the agent's own when `None`).
    pub resolv_conf: Option<String>,
    /// TEST KNOB: base of the restart back-off in milliseconds instead of the real 10 s.
    /// Only for tests; `None` in production. The cap scales by the same factor.
    pub test_backoff_base_ms: Option<u64>,
    /// File systems the agent mounts, in order, before any container starts: image roots and
    /// volumes shared over virtio-fs, `Memory` emptyDirs as tmpfs. Container `rootfs` and
    /// mount `source` paths point into them.
    pub filesystems: Vec<PodFilesystem>,
    /// Size limit of the tmpfs holding the containers' writable layers (the agent's default
    /// when `None`); a container that fills it gets `ENOSPC`, nothing reaches the host.
    pub scratch_bytes: Option<u64>,
}

/// What backs a [`PodFilesystem`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsSource {
    /// A virtio-fs device with this tag (`mount -t virtiofs TAG DIR`).
    VirtioFs {
        /// The device tag.
        tag: String,
    },
    /// A tmpfs in guest memory.
    Tmpfs {
        /// Size limit in bytes (the kernel's default, half of RAM, when `None`).
        size_bytes: Option<u64>,
    },
}

/// A file system the agent mounts for the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodFilesystem {
    /// Absolute mount point in the agent's view; created when missing.
    pub mount_point: String,
    /// What to mount.
    pub source: FsSource,
    /// Mount read-only.
    pub read_only: bool,
}

/// Facts about the guest, for benchmarks and `describe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInfo {
    /// Time since the guest kernel started (`CLOCK_BOOTTIME`), in nanoseconds.
    pub uptime_ns: u64,
    /// When the agent was ready to accept connections, on the same clock.
    pub agent_ready_ns: u64,
    /// `MemTotal` of `/proc/meminfo`, in bytes.
    pub mem_total_bytes: u64,
    /// `MemAvailable` of `/proc/meminfo`, in bytes.
    pub mem_available_bytes: u64,
}

/// The pod phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    /// Not all containers have started yet.
    Pending,
    /// All containers have started; at least one is running or restarting.
    Running,
    /// All containers terminated successfully and will not restart.
    Succeeded,
    /// All containers terminated, at least one failed, and none will restart.
    Failed,
}

/// One container's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Not running: reason such as `PodInitializing`, `ContainerCreating`, `CrashLoopBackOff`.
    Waiting {
        /// Reason.
        reason: String,
        /// Details.
        message: String,
    },
    /// Running since.
    Running {
        /// Start, in nanoseconds since the Unix epoch.
        started_at_ns: i64,
    },
    /// Exited.
    Terminated {
        /// Exit code (128+signal when killed by a signal).
        exit_code: i32,
        /// Signal that killed it.
        signal: Option<i32>,
        /// `Completed`, `Error`, `OOMKilled`, `StartError`, `DeadlineExceeded`.
        reason: String,
        /// Details.
        message: String,
        /// Start, ns since the epoch.
        started_at_ns: i64,
        /// End, ns since the epoch.
        finished_at_ns: i64,
    },
}

/// Status of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Name.
    pub name: String,
    /// Current state.
    pub state: ContainerState,
    /// Previous state (the last termination).
    pub last_state: Option<ContainerState>,
    /// Number of restarts.
    pub restart_count: u32,
    /// PID of the container's first process, in the agent's PID namespace.
    pub pid: Option<u32>,
}

/// Status of the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatus {
    /// Phase.
    pub phase: PodPhase,
    /// Reason of the phase, e.g. `DeadlineExceeded`.
    pub reason: Option<String>,
    /// Init containers.
    pub init_containers: Vec<ContainerStatus>,
    /// App containers.
    pub containers: Vec<ContainerStatus>,
}

/// Which stream a log record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

/// One log line (or a chunk of a long line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Position in the container's log (v4): assigned by the agent, from 1, strictly
    /// increasing per container across its restarts.
    pub seq: u64,
    /// Receive time, ns since the epoch.
    pub ts_ns: i64,
    /// stdout or stderr.
    pub stream: StreamKind,
    /// More of this line follows in the next record (`P` in CRI format).
    pub partial: bool,
    /// Bytes without the trailing newline.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Categories of errors reported by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request is malformed or not allowed in this state.
    InvalidRequest,
    /// The named container does not exist or is not running.
    NotFound,
    /// The operation failed in the agent.
    Internal,
}

/// Every frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// host -> agent, first frame after the preamble: what this connection is for.
    Hello(StreamTarget),
    /// agent -> host: the connection is accepted.
    HelloOk {
        /// Agent version string.
        agent: String,
    },
    /// host -> agent: create and start the pod.
    CreatePod(Box<PodSpec>),
    /// host -> agent: report the pod status.
    GetStatus,
    /// host -> agent: send a signal to a container's first process.
    KillContainer {
        /// Container.
        name: String,
        /// Signal number.
        signal: i32,
    },
    /// host -> agent: stop the pod's containers (grace, then SIGKILL) and remove them.
    StopPod {
        /// Override of the pod's grace period.
        grace_seconds: Option<u32>,
    },
    /// host -> agent: stop the pod, sync and power off (host mode: exit).
    Shutdown {
        /// Override of the pod's grace period.
        grace_seconds: Option<u32>,
    },
    /// host -> agent: liveness check.
    Ping,
    /// agent -> host: success without data.
    Ok,
    /// agent -> host: liveness answer.
    Pong,
    /// agent -> host: status.
    Status(PodStatus),
    /// agent -> host: a request failed.
    Error {
        /// Category.
        kind: ErrorKind,
        /// Description.
        message: String,
    },
    /// host -> agent: report [`GuestInfo`].
    GetGuestInfo,
    /// agent -> host: the answer to [`Message::GetGuestInfo`].
    GuestInfo(GuestInfo),
    /// agent -> host on a log stream: records.
    Logs(Vec<LogRecord>),
    /// agent -> host on a log stream: records were dropped because this reader was slow.
    LogsDropped {
        /// Number of dropped records.
        records: u64,
    },
    /// agent -> host on a log stream: no more records (container gone or not following).
    LogsEnd,
    /// agent -> host on an exec stream: the process started.
    ExecStarted {
        /// PID in the agent's namespace.
        pid: u32,
    },
    /// host -> agent on an exec stream: stdin bytes.
    Stdin(#[serde(with = "serde_bytes")] Vec<u8>),
    /// host -> agent on an exec stream: close stdin.
    StdinEof,
    /// host -> agent on an exec stream: terminal size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// host -> agent on an exec stream: signal the process.
    Signal(i32),
    /// agent -> host on an exec stream: output.
    Stdout(#[serde(with = "serde_bytes")] Vec<u8>),
    /// agent -> host on an exec stream: error output.
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
    /// agent -> host on an exec stream: the process ended; last frame.
    Exit {
        /// Exit code (128+signal when killed).
        code: i32,
        /// Signal that killed it.
        signal: Option<i32>,
    },
    /// host -> agent: SIGTERM a container's first process, SIGKILL after the grace period;
    /// answered once it exited. The restart policy then applies as for any exit.
    StopContainer {
        /// Container.
        name: String,
        /// Override of the pod's grace period.
        grace_seconds: Option<u32>,
    },
}

/// A decoded message broke a bound.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    /// A string is too long.
    #[error("{field} is too long ({len} > {max} bytes)")]
    TooLong {
        /// Field.
        field: &'static str,
        /// Actual length.
        len: usize,
        /// Maximum.
        max: usize,
    },
    /// A list has too many entries.
    #[error("{field} has too many entries ({len} > {max})")]
    TooMany {
        /// Field.
        field: &'static str,
        /// Actual count.
        len: usize,
        /// Maximum.
        max: usize,
    },
    /// A value is not allowed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

fn s(field: &'static str, v: &str, max: usize) -> Result<(), ValidationError> {
    if v.len() > max {
        return Err(ValidationError::TooLong {
            field,
            len: v.len(),
            max,
        });
    }
    if v.contains('\0') {
        return Err(ValidationError::Invalid {
            field,
            reason: "contains a nul byte",
        });
    }
    Ok(())
}

fn n<T>(field: &'static str, v: &[T], max: usize) -> Result<(), ValidationError> {
    if v.len() > max {
        return Err(ValidationError::TooMany {
            field,
            len: v.len(),
            max,
        });
    }
    Ok(())
}

fn name(field: &'static str, v: &str) -> Result<(), ValidationError> {
    s(field, v, MAX_NAME)?;
    if v.is_empty()
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(ValidationError::Invalid {
            field,
            reason: "must be a non-empty name of [A-Za-z0-9._-]",
        });
    }
    Ok(())
}

fn abs_path(field: &'static str, v: &str) -> Result<(), ValidationError> {
    s(field, v, MAX_PATH)?;
    if !v.starts_with('/') {
        return Err(ValidationError::Invalid {
            field,
            reason: "must be an absolute path",
        });
    }
    Ok(())
}

fn env(v: &[EnvVar]) -> Result<(), ValidationError> {
    n("env", v, MAX_ENV)?;
    for e in v {
        s("env name", &e.name, MAX_NAME)?;
        s("env value", &e.value, MAX_ARG)?;
        if e.name.is_empty() || e.name.contains('=') {
            return Err(ValidationError::Invalid {
                field: "env name",
                reason: "must be non-empty without '='",
            });
        }
    }
    Ok(())
}

fn argv(v: &[String]) -> Result<(), ValidationError> {
    n("argv", v, MAX_ARGV)?;
    if v.is_empty() {
        return Err(ValidationError::Invalid {
            field: "argv",
            reason: "nothing to run",
        });
    }
    for a in v {
        s("argv entry", a, MAX_ARG)?;
    }
    Ok(())
}

impl ContainerSpec {
    /// A container running `argv` with `env` in `rootfs`, with every optional setting at its
    /// default: working directory `/`, the image's user, no mounts, no limits, no TTY or stdin.
    pub fn new(
        name: impl Into<String>,
        rootfs: impl Into<String>,
        argv: Vec<String>,
        env: Vec<EnvVar>,
    ) -> Self {
        Self {
            name: name.into(),
            rootfs: rootfs.into(),
            argv,
            env,
            working_dir: None,
            user: None,
            mounts: Vec::new(),
            resources: Resources::default(),
            tty: false,
            stdin: false,
        }
    }

    /// Checks every bound of the container spec.
    pub fn validate(&self) -> Result<(), ValidationError> {
        name("container name", &self.name)?;
        abs_path("rootfs", &self.rootfs)?;
        argv(&self.argv)?;
        env(&self.env)?;
        if let Some(w) = &self.working_dir {
            abs_path("working dir", w)?;
        }
        if let Some(u) = &self.user {
            s("user", u, MAX_NAME)?;
        }
        n("mounts", &self.mounts, MAX_MOUNTS)?;
        for m in &self.mounts {
            abs_path("mount source", &m.source)?;
            abs_path("mount destination", &m.destination)?;
            if let Some(sp) = &m.sub_path {
                s("sub path", sp, MAX_PATH)?;
            }
        }
        if self.tty {
            return Err(ValidationError::Invalid {
                field: "tty",
                reason: "container ttys are not supported; use exec -t",
            });
        }
        Ok(())
    }
}

impl PodSpec {
    /// Checks every bound of the pod spec.
    pub fn validate(&self) -> Result<(), ValidationError> {
        name("pod name", &self.name)?;
        s("namespace", &self.namespace, MAX_NAME)?;
        s("uid", &self.uid, MAX_NAME)?;
        name("hostname", &self.hostname)?;
        n(
            "containers",
            &self.containers,
            MAX_CONTAINERS.saturating_sub(self.init_containers.len()),
        )?;
        if self.containers.is_empty() {
            return Err(ValidationError::Invalid {
                field: "containers",
                reason: "a pod needs at least one container",
            });
        }
        let mut names: Vec<&str> = Vec::new();
        for c in self.init_containers.iter().chain(&self.containers) {
            c.validate()?;
            if names.contains(&c.name.as_str()) {
                return Err(ValidationError::Invalid {
                    field: "container name",
                    reason: "duplicate",
                });
            }
            names.push(&c.name);
        }
        if let Some(r) = &self.resolv_conf {
            s("resolv.conf", r, MAX_ARG)?;
        }
        n("filesystems", &self.filesystems, MAX_FILESYSTEMS)?;
        for f in &self.filesystems {
            abs_path("filesystem mount point", &f.mount_point)?;
            if let FsSource::VirtioFs { tag } = &f.source {
                if tag.is_empty() {
                    return Err(ValidationError::Invalid {
                        field: "virtio-fs tag",
                        reason: "empty",
                    });
                }
                s("virtio-fs tag", tag, MAX_FS_TAG)?;
            }
        }
        Ok(())
    }
}

impl ContainerState {
    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            ContainerState::Waiting { reason, message } => {
                s("reason", reason, MAX_NAME)?;
                s("message", message, MAX_MESSAGE)
            }
            ContainerState::Running { .. } => Ok(()),
            ContainerState::Terminated {
                reason, message, ..
            } => {
                s("reason", reason, MAX_NAME)?;
                s("message", message, MAX_MESSAGE)
            }
        }
    }
}

impl PodStatus {
    /// Checks every bound of a status (the host never trusts the guest).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(r) = &self.reason {
            s("reason", r, MAX_NAME)?;
        }
        n("containers", &self.init_containers, MAX_CONTAINERS)?;
        n("containers", &self.containers, MAX_CONTAINERS)?;
        for c in self.init_containers.iter().chain(&self.containers) {
            s("container name", &c.name, MAX_NAME)?;
            c.state.validate()?;
            if let Some(l) = &c.last_state {
                l.validate()?;
            }
        }
        Ok(())
    }
}

impl ExecSpec {
    /// Checks every bound of an exec request.
    pub fn validate(&self) -> Result<(), ValidationError> {
        name("container name", &self.container)?;
        argv(&self.argv)?;
        env(&self.env)
    }
}

impl Message {
    /// Checks every bound of a decoded message.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Message::Hello(StreamTarget::Control) => Ok(()),
            Message::Hello(StreamTarget::Logs(l)) => name("container name", &l.container),
            Message::Hello(StreamTarget::Exec(e)) => e.validate(),
            Message::HelloOk { agent } => s("agent", agent, MAX_NAME),
            Message::CreatePod(p) => p.validate(),
            Message::KillContainer { name: c, .. } | Message::StopContainer { name: c, .. } => {
                name("container name", c)
            }
            Message::Status(st) => st.validate(),
            Message::Error { message, .. } => s("message", message, MAX_MESSAGE),
            Message::Logs(records) => {
                n("log records", records, MAX_LOG_RECORDS)?;
                for r in records {
                    if r.data.len() > MAX_LOG_CHUNK {
                        return Err(ValidationError::TooLong {
                            field: "log record",
                            len: r.data.len(),
                            max: MAX_LOG_CHUNK,
                        });
                    }
                }
                Ok(())
            }
            Message::Stdin(d) | Message::Stdout(d) | Message::Stderr(d) => {
                if d.len() > MAX_DATA {
                    return Err(ValidationError::TooLong {
                        field: "data",
                        len: d.len(),
                        max: MAX_DATA,
                    });
                }
                Ok(())
            }
            Message::GetStatus
            | Message::GetGuestInfo
            | Message::GuestInfo(_)
            | Message::StopPod { .. }
            | Message::Shutdown { .. }
            | Message::Ping
            | Message::Ok
            | Message::Pong
            | Message::LogsDropped { .. }
            | Message::LogsEnd
            | Message::ExecStarted { .. }
            | Message::StdinEof
            | Message::Resize { .. }
            | Message::Signal(_)
            | Message::Exit { .. } => Ok(()),
        }
    }
}
