//! PID-1 and sandbox duties by mode: the guest's early mounts and power-off, and host mode's
//! self-unshared sandbox (mount, PID, network, UTS and IPC namespaces, the agent as PID 1).

use std::path::Path;

use nix::mount::MsFlags;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

use crate::sys::{Sys, SysError};

/// Errors of the early setup.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A namespace, fork or signal call failed.
    #[error("{0}: {1}")]
    Call(&'static str, nix::Error),
    /// A mount failed.
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// The guest's early mounts, in order: (source, target, fstype, flags, data).
pub fn guest_mounts() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    MsFlags,
    Option<&'static str>,
)> {
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    vec![
        ("proc", "/proc", "proc", nse, None),
        ("sysfs", "/sys", "sysfs", nse, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("ptmxmode=0666,mode=0620,gid=5"),
        ),
        ("shm", "/dev/shm", "tmpfs", nse, Some("mode=1777")),
        (
            "run",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", nse, None),
    ]
}

/// Where the initramfs root is bind-mounted before it becomes the agent's root.
pub const INITRAMFS_BIND: &str = "/.peapod-root";

/// `RAMFS_MAGIC` from `<linux/magic.h>` (neither nix nor libc export it).
pub const RAMFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x8584_58f6);

/// Whether a root file system of this type is the kernel's initramfs (`rootfs`: a ramfs or a
/// tmpfs), which `pivot_root(2)` refuses with `EINVAL`.
pub fn is_initramfs_type(fs: nix::sys::statfs::FsType) -> bool {
    fs == RAMFS_MAGIC || fs == nix::sys::statfs::TMPFS_MAGIC
}

/// The mounts that turn the initramfs into a bind mount of itself: `(source, target, flags)`,
/// run with the working directory changes of [`leave_initramfs`] between them.
pub fn initramfs_bind_mounts() -> [(&'static str, &'static str, MsFlags); 2] {
    [
        ("/", INITRAMFS_BIND, MsFlags::MS_BIND | MsFlags::MS_REC),
        (".", "/", MsFlags::MS_MOVE),
    ]
}

/// Guest mode, before anything else is mounted: when `/` is the initramfs, bind-mounts it onto
/// [`INITRAMFS_BIND`], moves that mount over `/` and chroots into it (what `switch_root` does).
/// The agent's root is then a real mount with a parent, so the containers' `pivot_root`
/// works; without this every container fails with `pivot_root: Invalid argument`.
/// Returns whether the root was switched.
pub fn leave_initramfs(sys: &dyn Sys) -> Result<bool, InitError> {
    let fs = nix::sys::statfs::statfs("/").map_err(|e| InitError::Call("statfs /", e))?;
    if !is_initramfs_type(fs.filesystem_type()) {
        return Ok(false);
    }
    let [(bind_src, bind_dst, bind_flags), (move_src, move_dst, move_flags)] =
        initramfs_bind_mounts();
    let bind_dst = Path::new(bind_dst);
    sys.mkdir_all(bind_dst)?;
    sys.mount(Some(Path::new(bind_src)), bind_dst, None, bind_flags, None)?;
    nix::unistd::chdir(bind_dst).map_err(|e| InitError::Call("chdir to the bind mount", e))?;
    sys.mount(
        Some(Path::new(move_src)),
        Path::new(move_dst),
        None,
        move_flags,
        None,
    )?;
    nix::unistd::chroot(".").map_err(|e| InitError::Call("chroot", e))?;
    nix::unistd::chdir("/").map_err(|e| InitError::Call("chdir /", e))?;
    Ok(true)
}

/// Mounts the guest's pseudo file systems; failures are logged and skipped (PID 1 goes on).
pub fn guest_setup(sys: &dyn Sys) {
    for (src, target, fstype, flags, data) in guest_mounts() {
        let t = Path::new(target);
        if let Err(e) = sys.mkdir_all(t) {
            eprintln!("peapod-agent: {e}");
        }
        if let Err(e) = sys.mount(Some(Path::new(src)), t, Some(fstype), flags, data) {
            eprintln!("peapod-agent: {e}");
        }
    }
}

/// Host mode: unshares the sandbox namespaces and forks; the parent waits and exits with the
/// sandbox's status (forwarding SIGTERM/SIGINT), the child returns as PID 1 of the new PID
/// namespace with a private mount tree, `/proc` remounted and `lo` up.
pub fn host_sandbox(state_dir: &Path, sys: &dyn Sys) -> Result<(), InitError> {
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(|e| InitError::Call("unshare (host mode needs root)", e))?;
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        set.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| InitError::Call("sigprocmask", e))?;
    // SAFETY: called before any thread is started, so the child is a full copy.
    match unsafe { fork() }.map_err(|e| InitError::Call("fork", e))? {
        ForkResult::Parent { child } => loop {
            match set.wait() {
                Ok(Signal::SIGCHLD) => {
                    match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                        Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
                        _ => {}
                    }
                }
                Ok(sig) => {
                    let _ = kill(child, sig);
                }
                Err(_) => {}
            }
        },
        ForkResult::Child => {}
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&chld), None);
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    sys.mount(
        Some(Path::new("proc")),
        Path::new("/proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    sys.mkdir_all(state_dir)?;
    sys.mount(
        Some(Path::new("peapod-state")),
        state_dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )?;
    Ok(())
}

/// Guest mode: flushes file systems and ends the VM; never returns. The microVM has no ACPI,
/// so a power-off would only halt the vCPUs; a restart goes through the i8042 controller
/// (`reboot=k`), which the VMM answers by exiting at once (it never reboots a guest).
pub fn poweroff() -> ! {
    nix::unistd::sync();
    loop {
        let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        eprintln!("peapod-agent: ending the VM failed: {e}");
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    #[test]
    fn initramfs_is_recognised_and_bound_onto_itself() {
        use nix::sys::statfs::{FsType, EXT4_SUPER_MAGIC, TMPFS_MAGIC};
        assert!(is_initramfs_type(RAMFS_MAGIC));
        assert!(is_initramfs_type(TMPFS_MAGIC));
        assert!(!is_initramfs_type(EXT4_SUPER_MAGIC));
        assert!(!is_initramfs_type(FsType(0x6573_5546))); // fuse
        let [bind, mv] = initramfs_bind_mounts();
        assert_eq!(bind.0, "/");
        assert!(bind.2.contains(MsFlags::MS_BIND));
        assert_eq!((mv.0, mv.1), (".", "/"));
        assert_eq!(mv.2, MsFlags::MS_MOVE);
    }

    #[test]
    fn guest_mounts_in_order() {
        let sys = FakeSys::default();
        guest_setup(&sys);
        let mounts: Vec<String> = sys
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("mount"))
            .collect();
        let targets: Vec<&str> = mounts
            .iter()
            .filter_map(|m| m.split_whitespace().nth(2))
            .collect();
        assert_eq!(
            targets,
            vec![
                "/proc",
                "/sys",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/run",
                "/sys/fs/cgroup"
            ]
        );
        assert!(mounts[2].contains("Some(\"devtmpfs\")"));
        assert!(mounts[6].contains("Some(\"cgroup2\")"));
    }
}
