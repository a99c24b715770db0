//! The agent server: accepts connections (Unix socket or vsock), performs the handshake and
//! serves the control connection, log streams and exec sessions, each on its own thread.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_protocol::frame::{
    encode_logs_frame, read_frame, read_preamble, write_frame, write_preamble, FrameError,
};
use agent_protocol::limits::{MAX_FRAME_LEN, MAX_LOG_RECORDS};
use agent_protocol::{ErrorKind, ExecSpec, LogsRequest, Message, StreamTarget};

use crate::exec::{self, TryCloneStream};
use crate::guestinfo::{self, Readiness};
use crate::logs::ReaderItem;
use crate::pod::{Env, Pod, PodError};
use crate::process;
use crate::reaper::Reaper;
use crate::users;

/// Agent version announced in the handshake.
pub const AGENT_VERSION: &str = concat!("peapod-agent/", env!("CARGO_PKG_VERSION"));

/// Longest wait for the host to receive the answer to `Shutdown` before powering off.
pub const SHUTDOWN_REPLY_LINGER: Duration = Duration::from_secs(2);

/// What the agent does on a shutdown request.
pub type ShutdownHook = Box<dyn Fn() + Send + Sync>;

/// The agent: one pod at a time, plus the shared reaper.
pub struct Agent {
    env: Env,
    reaper: Arc<Reaper>,
    pod: Mutex<Option<Arc<Pod>>>,
    on_shutdown: ShutdownHook,
    ready: Readiness,
}

fn error(kind: ErrorKind, message: impl std::fmt::Display) -> Message {
    let mut m = message.to_string();
    m.truncate(agent_protocol::limits::MAX_MESSAGE);
    Message::Error { kind, message: m }
}

fn pod_error(e: PodError) -> Message {
    let kind = match e {
        PodError::NotFound(_) | PodError::NotRunning(_) => ErrorKind::NotFound,
        PodError::Invalid(_) => ErrorKind::InvalidRequest,
        PodError::Setup(_) | PodError::Signal(_) => ErrorKind::Internal,
    };
    error(kind, e)
}

impl Agent {
    /// A new agent.
    pub fn new(env: Env, reaper: Arc<Reaper>, on_shutdown: ShutdownHook) -> Arc<Self> {
        Arc::new(Self {
            env,
            reaper,
            pod: Mutex::new(None),
            on_shutdown,
            ready: Readiness::default(),
        })
    }

    /// Records that the listener accepts connections (`GuestInfo.agent_ready_ns`).
    pub fn mark_ready(&self) {
        self.ready.mark();
    }

    fn pod_lock(&self) -> MutexGuard<'_, Option<Arc<Pod>>> {
        self.pod.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current(&self) -> Result<Arc<Pod>, Message> {
        self.pod_lock()
            .clone()
            .ok_or_else(|| error(ErrorKind::NotFound, "no pod"))
    }

    /// Stops the pod (if any), e.g. on SIGTERM.
    pub fn stop_pod(&self, grace: Option<u32>) {
        let pod = self.pod_lock().clone();
        if let Some(p) = pod {
            p.stop(grace);
        }
    }

    fn handle(&self, msg: Message) -> Message {
        match msg {
            Message::Ping => Message::Pong,
            Message::CreatePod(spec) => {
                let mut cur = self.pod_lock();
                if let Some(p) = cur.as_ref() {
                    if !p.is_stopped() {
                        return error(ErrorKind::InvalidRequest, "a pod is already running");
                    }
                }
                match Pod::create(*spec, &self.env, self.reaper.clone()) {
                    Ok(p) => {
                        *cur = Some(p);
                        Message::Ok
                    }
                    Err(e) => pod_error(e),
                }
            }
            Message::GetGuestInfo => match guestinfo::collect(&self.ready) {
                Ok(g) => Message::GuestInfo(g),
                Err(e) => error(ErrorKind::Internal, e),
            },
            Message::GetStatus => match self.current() {
                Ok(p) => Message::Status(p.status()),
                Err(m) => m,
            },
            Message::KillContainer { name, signal } => match self.current() {
                Ok(p) => match p.kill(&name, signal) {
                    Ok(()) => Message::Ok,
                    Err(e) => pod_error(e),
                },
                Err(m) => m,
            },
            Message::StopContainer {
                name,
                grace_seconds,
            } => match self.current() {
                Ok(p) => match p.stop_container(&name, grace_seconds) {
                    Ok(()) => Message::Ok,
                    Err(e) => pod_error(e),
                },
                Err(m) => m,
            },
            Message::StopPod { grace_seconds } => {
                self.stop_pod(grace_seconds);
                Message::Ok
            }
            Message::Shutdown { grace_seconds } => {
                self.stop_pod(grace_seconds);
                Message::Ok
            }
            other => error(
                ErrorKind::InvalidRequest,
                format!("not a control request: {}", variant(&other)),
            ),
        }
    }

    /// Serves one accepted connection.
    pub fn serve<S>(self: &Arc<Self>, mut conn: S)
    where
        S: Read + Write + Send + 'static + TryCloneStream,
    {
        let target = match handshake(&mut conn) {
            Ok(t) => t,
            Err(e) if peer_left(&e) => return,
            Err(e) => {
                eprintln!("peapod-agent: handshake failed: {e}");
                return;
            }
        };
        let res = match target {
            StreamTarget::Control => self.control(conn),
            StreamTarget::Logs(req) => self.logs(conn, req),
            StreamTarget::Exec(spec) => self.exec(conn, spec),
        };
        if let Err(e) = res {
            if !peer_left(&e) {
                eprintln!("peapod-agent: connection: {e}");
            }
        }
    }

    fn control<S: Read + Write + TryCloneStream>(&self, mut conn: S) -> Result<(), FrameError> {
        write_frame(
            &mut conn,
            &Message::HelloOk {
                agent: AGENT_VERSION.into(),
            },
        )?;
        loop {
            let msg = match read_frame(&mut conn) {
                Ok(m) => m,
                Err(
                    e @ (FrameError::Decode(_) | FrameError::Invalid(_) | FrameError::Trailing(_)),
                ) => {
                    // The frame was read completely: answer and keep the connection.
                    write_frame(&mut conn, &error(ErrorKind::InvalidRequest, e))?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let shutdown = matches!(msg, Message::Shutdown { .. });
            let reply = self.handle(msg);
            write_frame(&mut conn, &reply)?;
            if shutdown {
                // The host must get its `Ok` before the VM is gone.
                if let Err(e) = conn.close_delivered(SHUTDOWN_REPLY_LINGER) {
                    eprintln!("peapod-agent: shutdown reply: {e}");
                }
                (self.on_shutdown)();
                return Ok(());
            }
        }
    }

    fn logs<S: Read + Write>(&self, mut conn: S, req: LogsRequest) -> Result<(), FrameError> {
        let pod = match self.current() {
            Ok(p) => p,
            Err(m) => return write_frame(&mut conn, &m),
        };
        let ctr = match pod.container(&req.container) {
            Ok(c) => c.clone(),
            Err(e) => return write_frame(&mut conn, &pod_error(e)),
        };
        write_frame(
            &mut conn,
            &Message::HelloOk {
                agent: AGENT_VERSION.into(),
            },
        )?;
        let q = ctr
            .log
            .attach(req.source, req.tail, req.follow, req.after_seq);
        loop {
            match q.next(MAX_LOG_RECORDS, MAX_FRAME_LEN / 2, Duration::from_secs(5)) {
                ReaderItem::Records(r) => {
                    let frame = encode_logs_frame(&r)?;
                    conn.write_all(&frame)?;
                }
                ReaderItem::Dropped(n) => {
                    write_frame(&mut conn, &Message::LogsDropped { records: n })?
                }
                ReaderItem::End => return write_frame(&mut conn, &Message::LogsEnd),
                ReaderItem::Idle => {}
            }
        }
    }

    fn exec<S>(&self, mut conn: S, spec: ExecSpec) -> Result<(), FrameError>
    where
        S: Read + Write + Send + 'static + TryCloneStream,
    {
        let prepared = self.prepare_exec(&spec);
        let (target, p) = match prepared {
            Ok(x) => x,
            Err(m) => return write_frame(&mut conn, &m),
        };
        write_frame(
            &mut conn,
            &Message::HelloOk {
                agent: AGENT_VERSION.into(),
            },
        )?;
        match exec::start(&self.reaper, &target, &spec, p) {
            Ok(run) => exec::serve(conn, run),
            Err(e) => write_frame(&mut conn, &error(ErrorKind::Internal, e)),
        }
    }

    fn prepare_exec(&self, spec: &ExecSpec) -> Result<(exec::Target, process::Prepared), Message> {
        let pod = self.current()?;
        let ctr = pod.container(&spec.container).map_err(pod_error)?;
        let (pid, cgroup) = {
            let st = ctr.state();
            (st.pid, st.cgroup.clone())
        };
        let pid = pid.ok_or_else(|| pod_error(PodError::NotRunning(spec.container.clone())))?;
        let mut env: Vec<(String, String)> = ctr
            .spec
            .env
            .iter()
            .chain(&spec.env)
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        if spec.tty && !env.iter().any(|(k, _)| k == "TERM") {
            env.push(("TERM".into(), "xterm".into()));
        }
        let root = std::path::Path::new(&ctr.spec.rootfs);
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
        let group = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
        let ids = users::resolve(ctr.spec.user.as_deref(), &passwd, &group)
            .map_err(|e| error(ErrorKind::InvalidRequest, e))?;
        let workdir = ctr.spec.working_dir.clone().unwrap_or_else(|| "/".into());
        let p = process::prepare(&spec.argv, &env, &workdir, ids)
            .map_err(|e| error(ErrorKind::InvalidRequest, e))?;
        Ok((
            exec::Target {
                pid,
                cgroup_procs: cgroup.map(|d| d.join("cgroup.procs")),
                oom_score_adj: ctr.oom_score_adj,
            },
            p,
        ))
    }
}

/// Whether an error only means the host went away (e.g. a log follower that stopped
/// reading): normal, not worth a line on the console.
fn peer_left(e: &FrameError) -> bool {
    match e {
        FrameError::Closed => true,
        FrameError::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        _ => false,
    }
}

fn variant(m: &Message) -> String {
    let s = format!("{m:?}");
    s.split(['(', ' ', '{']).next().unwrap_or("").to_string()
}

fn handshake<S: Read + Write>(conn: &mut S) -> Result<StreamTarget, FrameError> {
    write_preamble(conn)?;
    read_preamble(conn)?;
    match read_frame(conn)? {
        Message::Hello(t) => Ok(t),
        other => {
            let e = error(
                ErrorKind::InvalidRequest,
                format!("expected hello, got {}", variant(&other)),
            );
            write_frame(conn, &e)?;
            Err(FrameError::Decode("expected hello".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_reply_is_delivered_before_close() {
        use std::os::unix::net::UnixStream;
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut a = std::fs::File::from(std::os::fd::OwnedFd::from(a));
        write_frame(&mut a, &Message::Ok).unwrap();
        a.close_delivered(SHUTDOWN_REPLY_LINGER).unwrap();
        assert_eq!(read_frame(&mut b).unwrap(), Message::Ok);
        assert!(matches!(read_frame(&mut b), Err(FrameError::Closed)));
        let (c, mut d) = UnixStream::pair().unwrap();
        c.close_delivered(Duration::from_millis(10)).unwrap();
        assert!(matches!(read_frame(&mut d), Err(FrameError::Closed)));
        // Not a socket: the failure is reported, not ignored.
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(f.close_delivered(Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_host_going_away_is_not_an_error() {
        let io = |k| FrameError::Io(std::io::Error::from(k));
        assert!(peer_left(&FrameError::Closed));
        assert!(peer_left(&io(std::io::ErrorKind::BrokenPipe)));
        assert!(peer_left(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(!peer_left(&io(std::io::ErrorKind::PermissionDenied)));
        assert!(!peer_left(&FrameError::Truncated));
    }
}
