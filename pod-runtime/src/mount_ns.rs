//! A private mount namespace for the calling thread, so the host mounts a pod needs (bind
//! mounts of hostPath files) vanish with the process even when it is killed with SIGKILL.
//!
//! `unshare(CLONE_NEWNS)` implies `CLONE_FS` and, in a multi-threaded process, moves only the
//! calling thread into the new namespace: the other threads stay where they were. Threads and
//! processes started *from* that thread afterwards inherit it. So the mounts must be made, the
//! VMM spawned (it must see them to share them) and the mounts detached, all from the thread
//! that called [`enter_private`]; `run::run_pod` does all three on its own thread.
//!
//! Every mount of the new namespace is made private, so nothing mounted or unmounted in it
//! propagates back to the host (nor do later host mounts come in, like Kubernetes' default
//! `mountPropagation: None`). When the last process in the namespace exits (peapod and the
//! VMM, which has a parent-death signal), the kernel drops the namespace and its mounts.

use std::fs::File;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// The calling thread's mount namespace, as procfs names it.
const THREAD_MNT_NS: &str = "/proc/thread-self/ns/mnt";

/// Errors entering a private mount namespace.
#[derive(Debug, thiserror::Error)]
pub enum MountNsError {
    /// The current namespace could not be opened (to return to it on failure).
    #[error("cannot open {THREAD_MNT_NS}: {0}")]
    Open(std::io::Error),
    /// `unshare(CLONE_NEWNS)` failed (usually: no CAP_SYS_ADMIN).
    #[error("unshare(CLONE_NEWNS) failed: {0}")]
    Unshare(Errno),
    /// Making the new namespace's mounts private failed; the thread went back to its old
    /// namespace.
    #[error("cannot make the mounts of the new mount namespace private: {0}")]
    MakePrivate(Errno),
    /// Making the mounts private failed and the thread could not go back either.
    #[error(
        "cannot make the mounts of the new mount namespace private ({private}), nor return to \
         the previous namespace ({setns})"
    )]
    Stuck {
        /// Why the mounts could not be made private.
        private: Errno,
        /// Why `setns` failed.
        setns: Errno,
    },
}

/// Moves the calling thread (only it: see the module doc) into a new mount namespace whose
/// mounts are all private. Needs CAP_SYS_ADMIN. On error the thread is in its old namespace
/// (except [`MountNsError::Stuck`]).
pub fn enter_private() -> Result<(), MountNsError> {
    let old = File::open(THREAD_MNT_NS).map_err(MountNsError::Open)?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(MountNsError::Unshare)?;
    let private = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    );
    match private {
        Ok(()) => Ok(()),
        Err(private) => match setns(old.as_fd(), CloneFlags::CLONE_NEWNS) {
            Ok(()) => Err(MountNsError::MakePrivate(private)),
            Err(setns) => Err(MountNsError::Stuck { private, setns }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    const HELPER_ENV: &str = "PEAPOD_MOUNT_NS_HELPER";

    fn skip_unless_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return false;
        }
        eprintln!("skipped: mount namespaces and bind mounts need root");
        true
    }

    /// Whether the mountinfo text has a mount point at `path` (no spaces in test paths).
    fn mounted_at(mountinfo: &str, path: &Path) -> bool {
        let p = path.to_string_lossy();
        mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(p.as_ref()))
    }

    fn bind(src: &Path, target: &Path) {
        mount(
            Some(src),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
    }

    /// Every live task (any process, any thread) whose mount namespace is `ns`.
    fn tasks_in(ns: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for p in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(tasks) = fs::read_dir(p.path().join("task")) else {
                continue;
            };
            for t in tasks.flatten() {
                let link = t.path().join("ns/mnt");
                if fs::read_link(&link).is_ok_and(|l| l.to_string_lossy() == ns) {
                    out.push(link);
                }
            }
        }
        out
    }

    /// Waits (the kernel releases a dying task's namespaces a little after it is reaped or
    /// joined) until no task is in `ns`.
    fn wait_ns_gone(ns: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = tasks_in(ns);
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{ns} still used by {left:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Undoes what a failing test would leave: kills the helper process and detaches a
    /// mount that leaked to this namespace (nothing to do when the test passes).
    struct Undo {
        target: PathBuf,
        helper: Option<Child>,
    }

    impl Drop for Undo {
        fn drop(&mut self) {
            if let Some(mut h) = self.helper.take() {
                let _ = h.kill();
                let _ = h.wait();
            }
            let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    fn files(dir: &Path) -> (PathBuf, PathBuf) {
        let dir = dir.canonicalize().unwrap();
        let src = dir.join("src");
        let target = dir.join("target");
        fs::write(&src, b"from source").unwrap();
        fs::write(&target, b"original").unwrap();
        (src, target)
    }

    /// Spawns `cmd` the way `Vm::spawn` does (fork + pre_exec with a parent-death signal).
    fn with_pdeathsig(cmd: &mut Command) -> &mut Command {
        // SAFETY: the closure runs in the forked child before exec and only calls prctl,
        // which is async-signal-safe, on the child itself.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }

    #[test]
    fn a_thread_mounts_privately_and_the_mount_goes_with_it() {
        if skip_unless_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (src, target) = files(d.path());
        let _undo = Undo {
            target: target.clone(),
            helper: None,
        };
        let (seen_tx, seen_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let t = target.clone();
        let th = std::thread::spawn(move || {
            enter_private().unwrap();
            bind(&src, &t);
            let info = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
            let ns = fs::read_link("/proc/thread-self/ns/mnt").unwrap();
            // Children of this thread (the VMM) see the mount: plain spawn and fork+pre_exec.
            let plain = Command::new("cat").arg(&t).output().unwrap().stdout;
            let forked = with_pdeathsig(Command::new("cat").arg(&t))
                .output()
                .unwrap()
                .stdout;
            seen_tx
                .send((mounted_at(&info, &t), ns, plain, forked))
                .unwrap();
            let _ = done_rx.recv();
        });
        let (seen, ns, plain, forked) = seen_rx.recv().unwrap();
        let ns = ns.to_string_lossy().into_owned();
        assert!(seen, "the entering thread sees its bind mount");
        assert_eq!(plain, b"from source", "a spawned child sees the mount");
        assert_eq!(forked, b"from source", "a forked child sees the mount");
        // Other threads, and the process as the thread-group leader shows it, do not.
        let here = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        assert!(!mounted_at(&here, &target), "mount leaked to this thread");
        let leader = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounted_at(&leader, &target), "mount leaked to the leader");
        assert_ne!(
            fs::read_link("/proc/thread-self/ns/mnt")
                .unwrap()
                .to_string_lossy(),
            ns
        );
        assert_eq!(fs::read(&target).unwrap(), b"original");
        done_tx.send(()).unwrap();
        th.join().unwrap();
        wait_ns_gone(&ns);
        assert_eq!(fs::read(&target).unwrap(), b"original");
        let here = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        assert!(!mounted_at(&here, &target));
    }

    /// Run by [`a_sigkilled_process_leaves_no_mount`] in a child process: enters the
    /// namespace, bind-mounts, starts a VMM stand-in, reports, and waits to be killed.
    #[test]
    #[ignore = "helper process of a_sigkilled_process_leaves_no_mount"]
    fn sigkill_helper() {
        let Some(dir) = std::env::var_os(HELPER_ENV) else {
            return;
        };
        let dir = PathBuf::from(dir);
        enter_private().unwrap();
        bind(&dir.join("src"), &dir.join("target"));
        let mut vmm = with_pdeathsig(Command::new("sleep").arg("600").stdin(Stdio::null()))
            .spawn()
            .unwrap();
        let tid = nix::unistd::gettid();
        fs::write(dir.join("ready.tmp"), format!("{tid} {}", vmm.id())).unwrap();
        fs::rename(dir.join("ready.tmp"), dir.join("ready")).unwrap();
        // Killed long before the stand-in ends.
        let _ = vmm.wait();
    }

    #[test]
    fn a_sigkilled_process_leaves_no_mount() {
        if skip_unless_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (_, target) = files(d.path());
        let dir = target.parent().unwrap().to_path_buf();
        let mut undo = Undo {
            target: target.clone(),
            helper: None,
        };
        let helper = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "mount_ns::tests::sigkill_helper",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = helper.id();
        let helper = undo.helper.insert(helper);
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = loop {
            if let Ok(s) = fs::read_to_string(dir.join("ready")) {
                break s;
            }
            if let Some(s) = helper.try_wait().unwrap() {
                panic!("helper exited early: {s}");
            }
            assert!(Instant::now() < deadline, "helper not ready");
            std::thread::sleep(Duration::from_millis(20));
        };
        let (tid, vmm) = ready.split_once(' ').unwrap();
        let task = PathBuf::from(format!("/proc/{pid}/task/{tid}"));
        let ns = fs::read_link(task.join("ns/mnt")).unwrap();
        let ns = ns.to_string_lossy().into_owned();
        let info = fs::read_to_string(task.join("mountinfo")).unwrap();
        assert!(mounted_at(&info, &target), "helper thread has the mount");
        let vmm_info = fs::read_to_string(format!("/proc/{vmm}/mountinfo")).unwrap();
        assert!(mounted_at(&vmm_info, &target), "its child has the mount");
        let here = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        assert!(!mounted_at(&here, &target), "mount leaked to the host");
        assert_eq!(fs::read(&target).unwrap(), b"original");

        helper.kill().unwrap(); // SIGKILL
        helper.wait().unwrap();
        // The VMM stand-in dies by its parent-death signal; with it the namespace and mount.
        wait_ns_gone(&ns);
        assert_eq!(fs::read(&target).unwrap(), b"original");
        let here = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        assert!(!mounted_at(&here, &target));
    }
}
