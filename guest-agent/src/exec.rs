//! Exec sessions: a process joins a running container's PID, mount and UTS namespaces, its
//! cgroup and its `oom_score_adj`, with pipes or a pseudo terminal; stdin, resize and signals
//! come from the host and the output and exit code go back on the session's own stream.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use agent_protocol::frame::{read_frame, write_frame};
use agent_protocol::limits::MAX_DATA;
use agent_protocol::{ExecSpec, Message};
use nix::fcntl::OFlag;
use nix::pty::{openpty, Winsize};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{fork, pipe2, setsid, ForkResult, Pid};

use crate::oom;
use crate::process::{self, ErrorPipe, Prepared, ProcessError};
use crate::reaper::{Exit, Reaper};
use crate::sys::{LinuxSys, Sys};

nix::ioctl_write_int_bad!(tiocsctty, libc::TIOCSCTTY);
nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, Winsize);

/// What the exec joins.
#[derive(Debug, Clone)]
pub struct Target {
    /// PID of the container's first process.
    pub pid: i32,
    /// The container cgroup's `cgroup.procs`.
    pub cgroup_procs: Option<PathBuf>,
    /// The container's `oom_score_adj`, which the exec process gets too.
    pub oom_score_adj: i32,
}

/// The host side of a running exec process.
pub struct Running {
    /// PID.
    pub pid: i32,
    /// Exit notification.
    pub exit: std::sync::mpsc::Receiver<Exit>,
    /// Stdin (pipe or pty master), if kept open.
    pub stdin: Option<File>,
    /// Stdout (or the pty master).
    pub stdout: File,
    /// Stderr when not a TTY.
    pub stderr: Option<File>,
    /// The pty master, for resizes.
    pub pty: Option<Arc<File>>,
}

fn io_err(op: &'static str, e: std::io::Error) -> ProcessError {
    ProcessError::Sys(
        op,
        nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    )
}

struct ChildFds {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    tty: bool,
}

/// The child's steps through the system-call boundary, before it joins the container's
/// namespaces: the container's `oom_score_adj` (not the agent's -1000), then its cgroup.
fn child_setup(sys: &dyn Sys, target: &Target) -> Result<(), String> {
    oom::set_child(sys, target.oom_score_adj).map_err(|e| e.to_string())?;
    if let Some(procs) = &target.cgroup_procs {
        sys.write_file(procs, "0")
            .map_err(|e| format!("join cgroup: {e}"))?;
    }
    Ok(())
}

fn child(target: &Target, ns: &[(File, CloneFlags)], fds: &ChildFds, p: &Prepared, ep: i32) -> ! {
    let fail = |m: String| -> ! { process::child_fail(ep, &m) };
    if fds.tty {
        if let Err(e) = setsid() {
            fail(format!("setsid: {e}"));
        }
        // SAFETY: TIOCSCTTY on the pty slave fd owned by this child.
        if let Err(e) = unsafe { tiocsctty(fds.stdin.as_raw_fd(), 0) } {
            fail(format!("TIOCSCTTY: {e}"));
        }
    }
    if let Err(m) = process::child_stdio(
        fds.stdin.as_raw_fd(),
        fds.stdout.as_raw_fd(),
        fds.stderr.as_raw_fd(),
    ) {
        fail(m);
    }
    if let Err(m) = child_setup(&LinuxSys, target) {
        fail(m);
    }
    for (f, kind) in ns {
        if let Err(e) = setns(f.as_fd(), *kind) {
            fail(format!("setns {kind:?}: {e}"));
        }
    }
    let m = process::child_exec(p);
    fail(m)
}

/// Opens a pseudo terminal in the container's own devpts (so `tty` names a device the
/// container can see), falling back to the agent's devpts.
fn container_pty(pid: i32, ws: &Winsize) -> Result<(File, OwnedFd), ProcessError> {
    use std::os::unix::fs::OpenOptionsExt;
    let ptmx = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(format!("/proc/{pid}/root/dev/pts/ptmx"));
    let (master, slave) = match ptmx {
        Ok(master) => {
            let unlock: libc::c_int = 0;
            // SAFETY: TIOCSPTLCK reads an int from a valid pointer, on our ptmx fd.
            if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
                return Err(ProcessError::Sys("TIOCSPTLCK", nix::Error::last()));
            }
            // SAFETY: TIOCGPTPEER returns a new fd for the slave or -1; we own the result.
            let fd = unsafe {
                libc::ioctl(
                    master.as_raw_fd(),
                    libc::TIOCGPTPEER,
                    libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(ProcessError::Sys("TIOCGPTPEER", nix::Error::last()));
            }
            // SAFETY: fd is a fresh descriptor nothing else owns.
            let slave = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            (master, slave)
        }
        Err(_) => {
            let pt = openpty(None, None).map_err(|e| ProcessError::Sys("openpty", e))?;
            for fd in [&pt.master, &pt.slave] {
                nix::fcntl::fcntl(
                    fd.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                )
                .map_err(|e| ProcessError::Sys("fcntl", e))?;
            }
            (File::from(pt.master), pt.slave)
        }
    };
    // SAFETY: TIOCSWINSZ on our pty master with a valid winsize pointer.
    unsafe { tiocswinsz(master.as_raw_fd(), ws) }
        .map_err(|e| ProcessError::Sys("TIOCSWINSZ", e))?;
    Ok((master, slave))
}

/// Starts an exec process in `target`'s namespaces.
pub fn start(
    reaper: &Arc<Reaper>,
    target: &Target,
    spec: &ExecSpec,
    p: Prepared,
) -> Result<Running, ProcessError> {
    let open_ns = |n: &str| {
        File::open(format!("/proc/{}/ns/{n}", target.pid)).map_err(|e| io_err("open ns", e))
    };
    let pid_ns = open_ns("pid")?;
    let ns = vec![
        (open_ns("uts")?, CloneFlags::CLONE_NEWUTS),
        (open_ns("mnt")?, CloneFlags::CLONE_NEWNS),
    ];
    let (fds, parent_in, parent_out, parent_err, pty) = if spec.tty {
        let ws = Winsize {
            ws_row: spec.rows.max(1),
            ws_col: spec.cols.max(1),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let (master, slave) = container_pty(target.pid, &ws)?;
        let master = Arc::new(master);
        let out = master.try_clone().map_err(|e| io_err("dup", e))?;
        let inp = master.try_clone().map_err(|e| io_err("dup", e))?;
        let fds = ChildFds {
            stdin: slave.try_clone().map_err(|e| io_err("dup", e))?,
            stdout: slave.try_clone().map_err(|e| io_err("dup", e))?,
            stderr: slave,
            tty: true,
        };
        (fds, Some(inp), out, None, Some(master))
    } else {
        let (in_r, in_w) = if spec.stdin {
            let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| ProcessError::Sys("pipe", e))?;
            (r, Some(File::from(w)))
        } else {
            let f = File::open("/dev/null").map_err(|e| io_err("open /dev/null", e))?;
            (OwnedFd::from(f), None)
        };
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| ProcessError::Sys("pipe", e))?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| ProcessError::Sys("pipe", e))?;
        let fds = ChildFds {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
            tty: false,
        };
        (fds, in_w, File::from(out_r), Some(File::from(err_r)), None)
    };
    let ep = ErrorPipe::new()?;
    let ep_fd = ep.child_fd();
    // setns(CLONE_NEWPID) changes the namespace of this thread's future children only, so the
    // fork happens on a throw-away thread.
    let reaper2 = reaper.clone();
    let target2 = target.clone();
    let spawned = std::thread::scope(|s| {
        s.spawn(|| {
            setns(pid_ns.as_fd(), CloneFlags::CLONE_NEWPID)
                .map_err(|e| ProcessError::Sys("setns pid", e))?;
            let guard = reaper2.lock_for_spawn();
            // SAFETY: the child only runs `child`, which ends in execve or _exit; all its
            // inputs were allocated before the fork.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => child(&target2, &ns, &fds, &p, ep_fd),
                Ok(ForkResult::Parent { child }) => Ok((child, guard.register(child.as_raw()))),
                Err(e) => Err(ProcessError::Sys("fork", e)),
            }
        })
        .join()
        .unwrap_or(Err(ProcessError::Start("exec thread panicked".into())))
    });
    let (pid, exit) = spawned?;
    drop(fds);
    ep.wait()?;
    Ok(Running {
        pid: pid.as_raw(),
        exit,
        stdin: parent_in,
        stdout: parent_out,
        stderr: parent_err,
        pty,
    })
}

/// Serves an exec session on its connection until the process exits.
pub fn serve<S>(mut conn: S, run: Running) -> Result<(), agent_protocol::FrameError>
where
    S: Read + Write + Send + 'static + TryCloneStream,
{
    write_frame(
        &mut conn,
        &Message::ExecStarted {
            pid: run.pid as u32,
        },
    )?;
    let writer = Arc::new(Mutex::new(conn.try_clone_stream()?));
    let pid = run.pid;
    let pty = run.pty.clone();
    let mut stdin = run.stdin;
    // Host -> process: stdin, resize, signals. Ends with the connection.
    let mut reader = conn;
    let input = std::thread::Builder::new()
        .name("exec-in".into())
        .spawn(move || loop {
            match read_frame(&mut reader) {
                Ok(Message::Stdin(d)) => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&d).is_err() {
                            stdin = None;
                        }
                    }
                }
                Ok(Message::StdinEof) => {
                    if pty.is_none() {
                        stdin = None;
                    } else if let Some(s) = stdin.as_mut() {
                        let _ = s.write_all(&[4]);
                    }
                }
                Ok(Message::Resize { rows, cols }) => {
                    if let Some(m) = &pty {
                        let ws = Winsize {
                            ws_row: rows,
                            ws_col: cols,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        // SAFETY: TIOCSWINSZ on our pty master with a valid winsize pointer.
                        let _ = unsafe { tiocswinsz(m.as_raw_fd(), &ws) };
                    }
                }
                Ok(Message::Signal(sig)) => {
                    if let Ok(sig) = Signal::try_from(sig) {
                        let _ = kill(Pid::from_raw(pid), sig);
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        });
    let pump = |mut f: File, err: bool| {
        let w = writer.clone();
        std::thread::Builder::new()
            .name("exec-out".into())
            .spawn(move || {
                let mut buf = vec![0u8; MAX_DATA.min(64 * 1024)];
                loop {
                    match f.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let d = buf[..n].to_vec();
                            let m = if err {
                                Message::Stderr(d)
                            } else {
                                Message::Stdout(d)
                            };
                            let mut g = w.lock().unwrap_or_else(|p| p.into_inner());
                            if write_frame(&mut *g, &m).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
    };
    let mut pumps = vec![pump(run.stdout, false)];
    if let Some(e) = run.stderr {
        pumps.push(pump(e, true));
    }
    let exit = run.exit.recv().unwrap_or(Exit {
        code: 137,
        signal: Some(9),
    });
    // With a pty the master reads EIO once the last slave holder exits; pipes reach EOF.
    for p in pumps.into_iter().flatten() {
        let _ = p.join();
    }
    let mut g = writer.lock().unwrap_or_else(|p| p.into_inner());
    write_frame(
        &mut *g,
        &Message::Exit {
            code: exit.code,
            signal: exit.signal,
        },
    )?;
    let _ = g.shutdown_stream();
    drop(g);
    drop(input);
    Ok(())
}

/// Streams that can be duplicated for a second thread (Unix sockets, vsock files).
pub trait TryCloneStream: Sized {
    /// Another handle to the same stream.
    fn try_clone_stream(&self) -> std::io::Result<Self>;
    /// Shuts both directions down, waking any thread blocked reading it.
    fn shutdown_stream(&self) -> std::io::Result<()>;
    /// Closes the stream once the peer has everything written to it, waiting at most
    /// `timeout` (`SO_LINGER`). Needed before a power-off: a vsock `write` only queues the
    /// data in the guest kernel, and a VM halted right after it never sends it.
    fn close_delivered(self, timeout: std::time::Duration) -> std::io::Result<()>;
}

/// Sets `SO_LINGER` so that `close` blocks until the peer acknowledged the data (vsock: the
/// device's RST answering our shutdown), at most `timeout`, then closes `fd`.
fn linger_close(fd: OwnedFd, timeout: std::time::Duration) -> std::io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX),
    };
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::Linger, &linger)?;
    drop(fd);
    Ok(())
}

impl TryCloneStream for std::os::unix::net::UnixStream {
    fn try_clone_stream(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_stream(&self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Both)
    }
    fn close_delivered(self, timeout: std::time::Duration) -> std::io::Result<()> {
        linger_close(OwnedFd::from(self), timeout)
    }
}

impl TryCloneStream for File {
    fn try_clone_stream(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_stream(&self) -> std::io::Result<()> {
        nix::sys::socket::shutdown(self.as_raw_fd(), nix::sys::socket::Shutdown::Both)
            .map_err(std::io::Error::from)
    }
    fn close_delivered(self, timeout: std::time::Duration) -> std::io::Result<()> {
        linger_close(OwnedFd::from(self), timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    #[test]
    fn exec_child_gets_the_container_score() {
        let sys = FakeSys::default();
        let target = Target {
            pid: 42,
            cgroup_procs: Some("/cg/app/cgroup.procs".into()),
            oom_score_adj: 1000,
        };
        child_setup(&sys, &target).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                "write /proc/self/oom_score_adj 1000".to_string(),
                "write /cg/app/cgroup.procs 0".to_string(),
            ]
        );
        let sys = FakeSys::default();
        let target = Target {
            cgroup_procs: None,
            oom_score_adj: 3,
            ..target
        };
        child_setup(&sys, &target).unwrap();
        assert_eq!(
            sys.calls(),
            vec!["write /proc/self/oom_score_adj 3".to_string()]
        );
    }
}
