//! The pod's own file systems: validates `PodSpec.filesystems` (virtio-fs shares carrying image
//! roots and volumes, tmpfs for `Memory` emptyDirs) and the scratch tmpfs of the containers'
//! writable layers, mounts them in order with a rollback on failure, and unmounts them (after a
//! `syncfs`) when the pod stops.

use std::path::{Component, Path, PathBuf};

use agent_protocol::{FsSource, PodFilesystem};
use nix::mount::MsFlags;

use crate::sys::{Sys, SysError};

/// Errors of the pod file systems.
#[derive(Debug, thiserror::Error)]
pub enum PodFsError {
    /// A file system of the spec is not acceptable.
    #[error("filesystem {index} at {mount_point:?}: {reason}")]
    Invalid {
        /// Position in `PodSpec.filesystems`.
        index: usize,
        /// Its mount point.
        mount_point: String,
        /// Why it was refused.
        reason: String,
    },
    /// `scratch_bytes` is not acceptable.
    #[error("scratch_bytes: {0}")]
    Scratch(&'static str),
    /// Mounting failed (everything mounted before was undone).
    #[error("mount {what} at {mount_point}: {source}")]
    Mount {
        /// What was mounted (`virtio-fs tag img0`, `tmpfs`, `scratch tmpfs`).
        what: String,
        /// Where.
        mount_point: String,
        /// Cause.
        source: SysError,
    },
}

/// Paths the pod's file systems must leave alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// Mount points of the agent (its early mounts and its state dir): a pod file system may
    /// be neither one of them nor an ancestor (it would hide them).
    pub agent_mounts: Vec<PathBuf>,
    /// Trees a pod file system may not be mounted inside (pseudo file systems, the agent's
    /// per-pod state).
    pub forbidden_trees: Vec<PathBuf>,
}

impl Reserved {
    /// The agent's reserved paths, for a state dir: the guest's early mounts
    /// ([`crate::init::guest_mounts`]), the state dir; no mounts inside `/proc`, `/sys`, `/dev`
    /// or `STATE/pods` (container scratch and pod files).
    pub fn for_agent(state_dir: &Path) -> Self {
        let mut agent_mounts: Vec<PathBuf> = crate::init::guest_mounts()
            .into_iter()
            .map(|(_, target, ..)| PathBuf::from(target))
            .collect();
        agent_mounts.push(state_dir.to_path_buf());
        agent_mounts.push(state_dir.join("pods"));
        Self {
            agent_mounts,
            forbidden_trees: vec![
                PathBuf::from("/proc"),
                PathBuf::from("/sys"),
                PathBuf::from("/dev"),
                state_dir.join("pods"),
            ],
        }
    }
}

/// One mount to make for the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsMount {
    /// Human-readable description for errors and logs.
    pub what: String,
    /// Mount point.
    pub target: PathBuf,
    /// `mount(2)` source.
    pub source: String,
    /// File system type.
    pub fstype: &'static str,
    /// Flags.
    pub flags: MsFlags,
    /// Options.
    pub data: Option<String>,
}

/// Checks that a mount point is absolute, normalised (no `.`, `..`, `//` or trailing `/`) and
/// clear of the agent's own mounts.
pub fn check_mount_point(p: &str, reserved: &Reserved) -> Result<PathBuf, String> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err("not an absolute path".into());
    }
    let mut normal = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => normal.push(n),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => {
                return Err("has `.` or `..` components".into())
            }
        }
    }
    if normal.as_os_str() != path.as_os_str() {
        return Err(format!("not normalised (want {:?})", normal.display()));
    }
    if normal == Path::new("/") {
        return Err("is the root".into());
    }
    if let Some(r) = reserved
        .agent_mounts
        .iter()
        .find(|r| r.starts_with(&normal))
    {
        return Err(format!("would cover the agent's mount {}", r.display()));
    }
    if let Some(t) = reserved
        .forbidden_trees
        .iter()
        .find(|t| normal.starts_with(t))
    {
        return Err(format!("is inside {}", t.display()));
    }
    Ok(normal)
}

fn size_option(index: usize, mount_point: &str, size: Option<u64>) -> Result<String, PodFsError> {
    match size {
        // tmpfs reads size=0 as "no limit".
        Some(0) => Err(PodFsError::Invalid {
            index,
            mount_point: mount_point.into(),
            reason: "tmpfs size 0 (tmpfs would read it as unlimited)".into(),
        }),
        Some(n) => Ok(format!("size={n},")),
        None => Ok(String::new()),
    }
}

/// Turns the spec's file systems into mounts, in order, refusing bad or duplicate mount
/// points. Every pod file system is `nosuid,nodev` (images are only overlay lower layers: the
/// overlay mount decides about exec and set-uid); tmpfs gets mode 0777 like Kubernetes'
/// emptyDir.
pub fn plan(fss: &[PodFilesystem], reserved: &Reserved) -> Result<Vec<FsMount>, PodFsError> {
    let mut out: Vec<FsMount> = Vec::with_capacity(fss.len());
    for (index, f) in fss.iter().enumerate() {
        let invalid = |reason: String| PodFsError::Invalid {
            index,
            mount_point: f.mount_point.clone(),
            reason,
        };
        let target = check_mount_point(&f.mount_point, reserved).map_err(invalid)?;
        if out.iter().any(|m| m.target == target) {
            return Err(invalid("mount point used twice".into()));
        }
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if f.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        let m = match &f.source {
            FsSource::VirtioFs { tag } => {
                if tag.is_empty() || tag.contains(['\0', ',']) {
                    return Err(invalid(format!("bad virtio-fs tag {tag:?}")));
                }
                FsMount {
                    what: format!("virtio-fs tag {tag}"),
                    target,
                    source: tag.clone(),
                    fstype: "virtiofs",
                    flags,
                    data: None,
                }
            }
            FsSource::Tmpfs { size_bytes } => {
                let size = size_option(index, &f.mount_point, *size_bytes)?;
                FsMount {
                    what: match size_bytes {
                        Some(n) => format!("tmpfs of {n} bytes"),
                        None => "tmpfs".into(),
                    },
                    target,
                    source: "tmpfs".into(),
                    fstype: "tmpfs",
                    flags,
                    data: Some(format!("{size}mode=0777")),
                }
            }
        };
        out.push(m);
    }
    Ok(out)
}

/// The scratch tmpfs at `dir` holding every container's `upper`/`work`/`root` directories,
/// limited to `bytes`; `None` keeps the scratch on the state dir's tmpfs.
pub fn scratch(dir: &Path, bytes: Option<u64>) -> Result<Option<FsMount>, PodFsError> {
    match bytes {
        None => Ok(None),
        Some(0) => Err(PodFsError::Scratch(
            "0 bytes (tmpfs would read it as unlimited)",
        )),
        Some(n) => Ok(Some(FsMount {
            what: format!("scratch tmpfs of {n} bytes"),
            target: dir.to_path_buf(),
            source: "peapod-scratch".into(),
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some(format!("size={n},mode=0755")),
        })),
    }
}

/// A mounted file system and the directories made for its mount point.
#[derive(Debug)]
struct Done {
    target: PathBuf,
    created: Vec<PathBuf>,
}

/// The pod's mounted file systems, unmounted in reverse order by [`Mounted::unmount`].
#[derive(Debug, Default)]
pub struct Mounted {
    done: Vec<Done>,
}

/// Creates the missing directories of `path` one level at a time; returns them, outermost
/// first.
fn mkdirs(sys: &dyn Sys, path: &Path) -> Result<Vec<PathBuf>, SysError> {
    let mut missing: Vec<PathBuf> = path
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !sys.exists(a))
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    let mut created = Vec::with_capacity(missing.len());
    for d in missing {
        if let Err(e) = sys.mkdir_all(&d) {
            remove_dirs(sys, &created);
            return Err(e);
        }
        created.push(d);
    }
    Ok(created)
}

fn remove_dirs(sys: &dyn Sys, created: &[PathBuf]) {
    for d in created.iter().rev() {
        let _ = sys.remove_dir(d);
    }
}

/// Mounts `plan` in order. On a failure everything this call mounted is unmounted and the
/// directories it made are removed, and the error names the file system and the cause.
pub fn mount_all(sys: &dyn Sys, plan: &[FsMount]) -> Result<Mounted, PodFsError> {
    let mut mounted = Mounted::default();
    for m in plan {
        let fail = |source| PodFsError::Mount {
            what: m.what.clone(),
            mount_point: m.target.display().to_string(),
            source,
        };
        let created = match mkdirs(sys, &m.target) {
            Ok(c) => c,
            Err(e) => {
                mounted.unmount(sys);
                return Err(fail(e));
            }
        };
        if let Err(e) = sys.mount(
            Some(Path::new(&m.source)),
            &m.target,
            Some(m.fstype),
            m.flags,
            m.data.as_deref(),
        ) {
            remove_dirs(sys, &created);
            mounted.unmount(sys);
            return Err(fail(e));
        }
        mounted.done.push(Done {
            target: m.target.clone(),
            created,
        });
    }
    Ok(mounted)
}

impl Mounted {
    /// Mount points still mounted, in mount order.
    pub fn targets(&self) -> Vec<&Path> {
        self.done.iter().map(|d| d.target.as_path()).collect()
    }

    /// Flushes and unmounts everything in reverse order (a busy file system is detached
    /// instead), then removes the directories made for the mount points. Returns the
    /// problems met; it always finishes.
    pub fn unmount(&mut self, sys: &dyn Sys) -> Vec<SysError> {
        let mut problems = Vec::new();
        while let Some(d) = self.done.pop() {
            if let Err(e) = sys.sync_fs(&d.target) {
                problems.push(e);
            }
            if let Err(e) = sys.umount(&d.target) {
                problems.push(e);
                if let Err(e) = sys.umount_detach(&d.target) {
                    problems.push(e);
                }
            }
            remove_dirs(sys, &d.created);
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    fn reserved() -> Reserved {
        Reserved::for_agent(Path::new("/run/peapod"))
    }

    fn virtiofs(mp: &str, tag: &str, ro: bool) -> PodFilesystem {
        PodFilesystem {
            mount_point: mp.into(),
            source: FsSource::VirtioFs { tag: tag.into() },
            read_only: ro,
        }
    }

    fn tmpfs(mp: &str, size: Option<u64>) -> PodFilesystem {
        PodFilesystem {
            mount_point: mp.into(),
            source: FsSource::Tmpfs { size_bytes: size },
            read_only: false,
        }
    }

    /// The host runtime's layout: images, the emptyDir share, a Memory emptyDir, a hostPath.
    fn host_layout() -> Vec<PodFilesystem> {
        vec![
            virtiofs("/run/peapod/images/0", "img0", true),
            virtiofs("/run/peapod/images/1", "img1", true),
            virtiofs("/run/peapod/volumes", "podvol", false),
            tmpfs("/run/peapod/memvol/cache", Some(1 << 20)),
            virtiofs("/run/peapod/hostpath/0", "hp0", true),
        ]
    }

    #[test]
    fn host_layout_mounts_in_order_with_flags() {
        let p = plan(&host_layout(), &reserved()).unwrap();
        let sys = FakeSys::default();
        sys.mkdir_all(Path::new("/run/peapod")).unwrap();
        let m = mount_all(&sys, &p).unwrap();
        let mounts: Vec<String> = sys
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("mount"))
            .collect();
        assert_eq!(
            mounts,
            vec![
                "mount Some(\"img0\") /run/peapod/images/0 Some(\"virtiofs\") MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV) None",
                "mount Some(\"img1\") /run/peapod/images/1 Some(\"virtiofs\") MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV) None",
                "mount Some(\"podvol\") /run/peapod/volumes Some(\"virtiofs\") MsFlags(MS_NOSUID | MS_NODEV) None",
                "mount Some(\"tmpfs\") /run/peapod/memvol/cache Some(\"tmpfs\") MsFlags(MS_NOSUID | MS_NODEV) Some(\"size=1048576,mode=0777\")",
                "mount Some(\"hp0\") /run/peapod/hostpath/0 Some(\"virtiofs\") MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV) None",
            ]
        );
        // Each mount point was made just before its mount, missing parents included.
        let calls = sys.calls();
        let pos = |s: &str| calls.iter().position(|c| c == s).unwrap();
        assert!(pos("mkdir /run/peapod/images") < pos("mkdir /run/peapod/images/0"));
        assert!(
            pos("mkdir /run/peapod/images/0")
                < pos("mount Some(\"img0\") /run/peapod/images/0 Some(\"virtiofs\") MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV) None")
        );
        // Existing directories are left alone (only the test made /run/peapod).
        assert_eq!(
            calls.iter().filter(|c| *c == "mkdir /run/peapod").count(),
            1
        );
        assert_eq!(m.targets().len(), 5);
    }

    #[test]
    fn tmpfs_without_size_and_read_only() {
        let mut t = tmpfs("/mnt/x", None);
        t.read_only = true;
        let p = plan(&[t], &reserved()).unwrap();
        assert_eq!(p[0].data.as_deref(), Some("mode=0777"));
        assert!(p[0].flags.contains(MsFlags::MS_RDONLY));
        assert_eq!(p[0].what, "tmpfs");
    }

    #[test]
    fn failure_rolls_back_everything_mounted_before() {
        let p = plan(&host_layout(), &reserved()).unwrap();
        let sys = FakeSys::default();
        sys.mkdir_all(Path::new("/run/peapod")).unwrap();
        *sys.fail_mount.lock().unwrap() = Some(PathBuf::from("memvol/cache"));
        let e = mount_all(&sys, &p).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("tmpfs of 1048576 bytes")
                && msg.contains("/run/peapod/memvol/cache")
                && msg.contains("No such device"),
            "{msg}"
        );
        let calls = sys.calls();
        let after: Vec<&str> = calls
            .iter()
            .skip_while(|c| !c.ends_with("failed"))
            .skip(1)
            .map(String::as_str)
            .collect();
        assert_eq!(
            after,
            vec![
                // The failed mount's own directories first.
                "rmdir /run/peapod/memvol/cache",
                "rmdir /run/peapod/memvol",
                // Then what was mounted, in reverse.
                "syncfs /run/peapod/volumes",
                "umount /run/peapod/volumes",
                "rmdir /run/peapod/volumes",
                "syncfs /run/peapod/images/1",
                "umount /run/peapod/images/1",
                "rmdir /run/peapod/images/1",
                "syncfs /run/peapod/images/0",
                "umount /run/peapod/images/0",
                "rmdir /run/peapod/images/0",
                "rmdir /run/peapod/images",
            ]
        );
        assert!(!calls.iter().any(|c| c.contains("hostpath")));
        // Nothing the agent did not create is removed.
        assert!(sys.exists(Path::new("/run/peapod")));
        assert!(!sys.exists(Path::new("/run/peapod/images")));
    }

    #[test]
    fn unmount_is_reverse_and_detaches_busy_mounts() {
        let p = plan(
            &[
                tmpfs("/run/peapod/memvol/a", Some(4096)),
                virtiofs("/run/peapod/volumes", "podvol", false),
            ],
            &reserved(),
        )
        .unwrap();
        let sys = FakeSys::default();
        sys.mkdir_all(Path::new("/run/peapod/memvol")).unwrap();
        let mut m = mount_all(&sys, &p).unwrap();
        *sys.busy.lock().unwrap() = Some(PathBuf::from("/run/peapod/volumes"));
        let before = sys.calls().len();
        let problems = m.unmount(&sys);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].to_string().contains("busy"), "{problems:?}");
        assert_eq!(
            sys.calls()[before..],
            [
                "syncfs /run/peapod/volumes",
                "umount /run/peapod/volumes busy",
                "umount /run/peapod/volumes",
                "rmdir /run/peapod/volumes",
                "syncfs /run/peapod/memvol/a",
                "umount /run/peapod/memvol/a",
                "rmdir /run/peapod/memvol/a",
            ]
        );
        assert!(m.targets().is_empty());
        // A second call has nothing left to do.
        assert!(m.unmount(&sys).is_empty());
        assert_eq!(sys.calls().len(), before + 7);
    }

    #[test]
    fn mount_points_are_validated() {
        let r = reserved();
        for (bad, why) in [
            ("relative/x", "absolute"),
            ("/", "root"),
            ("/a/../b", ".."),
            ("/a/./b", "normalised"),
            ("/a//b", "normalised"),
            ("/a/b/", "normalised"),
            ("/run", "agent's mount /run"),
            ("/run/peapod", "agent's mount /run/peapod"),
            ("/run/peapod/pods", "agent's mount"),
            ("/run/peapod/pods/x/containers", "inside /run/peapod/pods"),
            ("/proc/sys", "inside /proc"),
            ("/dev/shm", "agent's mount /dev/shm"),
            ("/dev/vda", "inside /dev"),
            ("/sys/fs", "agent's mount /sys/fs/cgroup"),
        ] {
            let e = plan(&[tmpfs(bad, None)], &r).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("filesystem 0"), "{bad}: {e}");
        }
        for good in ["/run/peapod/images/0", "/mnt", "/run/other", "/srv/data"] {
            assert!(check_mount_point(good, &r).is_ok(), "{good}");
        }
        let e = plan(&[tmpfs("/mnt/a", None), virtiofs("/mnt/a", "t", false)], &r)
            .unwrap_err()
            .to_string();
        assert!(e.contains("filesystem 1") && e.contains("twice"), "{e}");
        let e = plan(&[tmpfs("/mnt/a", Some(0))], &r)
            .unwrap_err()
            .to_string();
        assert!(e.contains("size 0"), "{e}");
        for tag in ["", "a,b", "a\0b"] {
            let e = plan(&[virtiofs("/mnt/a", tag, false)], &r)
                .unwrap_err()
                .to_string();
            assert!(e.contains("tag"), "{tag:?}: {e}");
        }
    }

    #[test]
    fn scratch_is_a_sized_tmpfs_or_nothing() {
        let d = Path::new("/run/peapod/pods/p/containers");
        assert_eq!(scratch(d, None).unwrap(), None);
        assert!(scratch(d, Some(0)).is_err());
        let m = scratch(d, Some(64 << 20)).unwrap().unwrap();
        assert_eq!(m.target, d);
        assert_eq!(m.fstype, "tmpfs");
        assert_eq!(m.data.as_deref(), Some("size=67108864,mode=0755"));
        assert!(m.flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NODEV));
    }
}
