//! Starting one container: a fork into new mount, UTS and (unless shared) PID namespaces,
//! joining its cgroup, running the mount plan, pivot_root, hostname, identity and execve, with
//! stdout/stderr on pipes.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;

use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{fork, pipe2, ForkResult};

use crate::mounts::{self, MountStep};
use crate::process::{self, ErrorPipe, Prepared, ProcessError};
use crate::reaper::{Exit, Reaper};
use crate::sys::LinuxSys;

/// Everything needed to start a container, prepared in the agent.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Program, environment, identity and working directory.
    pub process: Prepared,
    /// Mount plan (ends with pivot_root).
    pub steps: Vec<MountStep>,
    /// The container cgroup's `cgroup.procs`, if any.
    pub cgroup_procs: Option<PathBuf>,
    /// Give the container its own PID namespace.
    pub new_pid_ns: bool,
    /// Hostname.
    pub hostname: String,
}

/// A started container process.
pub struct Started {
    /// PID in the agent's namespace.
    pub pid: i32,
    /// Exit notification.
    pub exit: Receiver<Exit>,
    /// Read end of stdout.
    pub stdout: File,
    /// Read end of stderr.
    pub stderr: File,
}

fn child_main(launch: &Launch, stdin: i32, out: i32, err: i32, err_pipe: i32) -> isize {
    let fail = |m: String| -> isize { process::child_fail(err_pipe, &m) };
    if let Err(m) = process::child_stdio(stdin, out, err) {
        return fail(m);
    }
    if let Some(procs) = &launch.cgroup_procs {
        if let Err(e) = std::fs::write(procs, "0") {
            return fail(format!("join cgroup {}: {e}", procs.display()));
        }
    }
    if let Err(e) = mounts::execute(&LinuxSys, &launch.steps) {
        return fail(format!("mounts: {e}"));
    }
    if let Err(e) = nix::unistd::sethostname(&launch.hostname) {
        return fail(format!("sethostname: {e}"));
    }
    let m = process::child_exec(&launch.process);
    fail(m)
}

/// Clones the container's first process; returns once it has exec'd (or failed to).
pub fn start(reaper: &Reaper, launch: &Launch) -> Result<Started, ProcessError> {
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| ProcessError::Sys("pipe", e))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| ProcessError::Sys("pipe", e))?;
    let devnull: OwnedFd = File::open("/dev/null")
        .map_err(|e| {
            ProcessError::Sys(
                "open /dev/null",
                nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?
        .into();
    let err_pipe = ErrorPipe::new()?;
    let flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS;
    let (fd_in, fd_out, fd_err, fd_ep) = (
        devnull.as_raw_fd(),
        out_w.as_raw_fd(),
        err_w.as_raw_fd(),
        err_pipe.child_fd(),
    );
    // The fork happens on a throw-away thread: unshare(CLONE_NEWPID) only changes the PID
    // namespace of that thread's future children. fork (unlike a raw clone) runs glibc's
    // atfork handlers, so the child's allocator is usable even if another thread held it.
    let spawned = std::thread::scope(|s| {
        s.spawn(|| {
            if launch.new_pid_ns {
                unshare(CloneFlags::CLONE_NEWPID)
                    .map_err(|e| ProcessError::Sys("unshare pid", e))?;
            }
            let guard = reaper.lock_for_spawn();
            // SAFETY: the child only runs `child_main`, which ends in execve or _exit; its
            // inputs were allocated before the fork.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    if let Err(e) = unshare(flags) {
                        process::child_fail(fd_ep, &format!("unshare: {e}"));
                    }
                    child_main(launch, fd_in, fd_out, fd_err, fd_ep);
                    process::child_fail(fd_ep, "container start returned")
                }
                Ok(ForkResult::Parent { child }) => Ok((child, guard.register(child.as_raw()))),
                Err(e) => Err(ProcessError::Sys("fork", e)),
            }
        })
        .join()
        .unwrap_or(Err(ProcessError::Start("spawn thread panicked".into())))
    });
    let (pid, exit) = spawned?;
    drop((out_w, err_w, devnull));
    err_pipe.wait()?;
    Ok(Started {
        pid: pid.as_raw(),
        exit,
        stdout: File::from(out_r),
        stderr: File::from(err_r),
    })
}
