//! Starting one container: a fork into new mount, UTS and (unless shared) PID namespaces,
//! setting its `oom_score_adj`, joining its cgroup, running the mount plan, pivot_root,
//! hostname, identity and execve, with stdout/stderr on pipes.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;

use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{fork, pipe2, ForkResult};

use crate::mounts::{self, MountStep};
use crate::oom;
use crate::process::{self, ErrorPipe, Prepared, ProcessError};
use crate::reaper::{Exit, Reaper};
use crate::sys::{LinuxSys, Sys};

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
    /// The container's `oom_score_adj` (see [`crate::oom`]), set before anything else.
    pub oom_score_adj: i32,
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

/// The child's steps through the system-call boundary, in order: its `oom_score_adj` (the
/// agent's -1000 must not reach the container), its cgroup, the mount plan.
fn child_setup(sys: &dyn Sys, launch: &Launch) -> Result<(), String> {
    oom::set_child(sys, launch.oom_score_adj).map_err(|e| e.to_string())?;
    if let Some(procs) = &launch.cgroup_procs {
        sys.write_file(procs, "0")
            .map_err(|e| format!("join cgroup: {e}"))?;
    }
    mounts::execute(sys, &launch.steps).map_err(|e| format!("mounts: {e}"))
}

fn child_main(launch: &Launch, stdin: i32, out: i32, err: i32, err_pipe: i32) -> isize {
    let fail = |m: String| -> isize { process::child_fail(err_pipe, &m) };
    if let Err(m) = process::child_stdio(stdin, out, err) {
        return fail(m);
    }
    if let Err(m) = child_setup(&LinuxSys, launch) {
        return fail(m);
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::sys::fake::FakeSys;
    use crate::users::Ids;

    fn launch(cgroup: Option<&str>) -> Launch {
        Launch {
            process: process::prepare(&["true".into()], &[], "/", Ids { uid: 0, gid: 0 }).unwrap(),
            steps: vec![MountStep::Mkdir("/merged/proc".into())],
            cgroup_procs: cgroup.map(PathBuf::from),
            new_pid_ns: true,
            hostname: "h".into(),
            oom_score_adj: 750,
        }
    }

    #[test]
    fn child_sets_its_score_before_anything_else() {
        let sys = FakeSys::default();
        child_setup(&sys, &launch(Some("/cg/app/cgroup.procs"))).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                "write /proc/self/oom_score_adj 750".to_string(),
                "write /cg/app/cgroup.procs 0".to_string(),
                "mkdir /merged/proc".to_string(),
            ]
        );
        let sys = FakeSys::default();
        let mut l = launch(None);
        l.oom_score_adj = -997;
        child_setup(&sys, &l).unwrap();
        assert_eq!(
            sys.files.lock().unwrap()[Path::new("/proc/self/oom_score_adj")],
            "-997"
        );
    }
}
