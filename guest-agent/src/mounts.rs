//! The container mount plan: overlay root, volumes, private /proc, /dev, /dev/pts, /dev/shm,
//! /sys and the pod's /etc files, computed as data and executed through [`Sys`].

use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;

use crate::sys::{Sys, SysError};

/// Errors building the plan.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MountError {
    /// A path would leave its base directory.
    #[error("path {0:?} escapes its base directory")]
    Escape(String),
    /// A destination is not absolute or is the root.
    #[error("invalid mount destination {0:?}")]
    BadDestination(String),
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    /// Create a directory (and parents).
    Mkdir(PathBuf),
    /// Create an empty file (bind target).
    Touch(PathBuf),
    /// A `mount(2)` call.
    Mount {
        /// Source.
        source: Option<PathBuf>,
        /// Target.
        target: PathBuf,
        /// File system type.
        fstype: Option<&'static str>,
        /// Flags.
        flags: MsFlags,
        /// Options.
        data: Option<String>,
    },
    /// A symlink.
    Symlink {
        /// Link target.
        target: &'static str,
        /// Link path.
        link: PathBuf,
    },
    /// Switch the root to this directory.
    PivotRoot(PathBuf),
}

/// A volume mount with its source already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMount {
    /// Host (agent) side path.
    pub source: PathBuf,
    /// Absolute destination in the container.
    pub destination: String,
    /// Read-only.
    pub read_only: bool,
    /// The source is a directory (otherwise a file).
    pub is_dir: bool,
}

/// Where a container's file systems live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPaths {
    /// Read-only image root (overlay lower layer).
    pub rootfs: PathBuf,
    /// Overlay upper directory.
    pub upper: PathBuf,
    /// Overlay work directory.
    pub work: PathBuf,
    /// Overlay mount point, the new root.
    pub merged: PathBuf,
    /// Directory holding the pod's `hostname`, `hosts` and `resolv.conf`.
    pub pod_etc: PathBuf,
}

/// Device nodes bind-mounted from the agent's /dev.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Files of the pod bind-mounted into /etc.
pub const ETC_FILES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];

/// Joins a relative path under `base` lexically, refusing `..` and absolute components.
pub fn join_inside(base: &Path, rel: &str) -> Result<PathBuf, MountError> {
    let mut out = base.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(MountError::Escape(rel.to_string()))
            }
        }
    }
    Ok(out)
}

/// Resolves `source/sub_path` and checks that symlinks do not lead outside `source`.
/// The result is canonical; missing sub paths are created as directories, as Kubernetes does.
pub fn resolve_sub_path(source: &Path, sub_path: &str) -> Result<PathBuf, MountError> {
    if Path::new(sub_path).is_absolute() {
        return Err(MountError::Escape(sub_path.to_string()));
    }
    let joined = join_inside(source, sub_path)?;
    let base = source
        .canonicalize()
        .map_err(|_| MountError::Escape(source.display().to_string()))?;
    if !joined.exists() {
        // Create step by step so no symlink along the way is followed outside the base.
        let mut cur = base.clone();
        for c in Path::new(sub_path).components() {
            if let Component::Normal(p) = c {
                cur.push(p);
                if !cur.exists() {
                    std::fs::create_dir(&cur)
                        .map_err(|_| MountError::Escape(sub_path.to_string()))?;
                }
                cur = cur
                    .canonicalize()
                    .map_err(|_| MountError::Escape(sub_path.to_string()))?;
                if !cur.starts_with(&base) {
                    return Err(MountError::Escape(sub_path.to_string()));
                }
            }
        }
    }
    let real = joined
        .canonicalize()
        .map_err(|_| MountError::Escape(sub_path.to_string()))?;
    if !real.starts_with(&base) {
        return Err(MountError::Escape(sub_path.to_string()));
    }
    Ok(real)
}

fn mnt(
    source: Option<&Path>,
    target: PathBuf,
    fstype: Option<&'static str>,
    flags: MsFlags,
    data: Option<&str>,
) -> MountStep {
    MountStep::Mount {
        source: source.map(Path::to_path_buf),
        target,
        fstype,
        flags,
        data: data.map(str::to_string),
    }
}

fn bind_ro(target: PathBuf) -> MountStep {
    mnt(
        None,
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None,
    )
}

/// Builds the mount plan of one container, run inside its new mount namespace.
pub fn plan(
    paths: &ContainerPaths,
    volumes: &[ResolvedMount],
) -> Result<Vec<MountStep>, MountError> {
    let m = &paths.merged;
    let mut steps = vec![
        mnt(
            None,
            PathBuf::from("/"),
            None,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None,
        ),
        mnt(
            Some(Path::new("overlay")),
            m.clone(),
            Some("overlay"),
            MsFlags::empty(),
            Some(&format!(
                "lowerdir={},upperdir={},workdir={}",
                paths.rootfs.display(),
                paths.upper.display(),
                paths.work.display()
            )),
        ),
    ];
    for (dir, fstype, flags, data) in [
        (
            "proc",
            "proc",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
        (
            "dev",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        ),
    ] {
        let target = m.join(dir);
        steps.push(MountStep::Mkdir(target.clone()));
        steps.push(mnt(
            Some(Path::new(fstype)),
            target,
            Some(fstype),
            flags,
            data,
        ));
    }
    for dev in DEVICES {
        let target = m.join("dev").join(dev);
        steps.push(MountStep::Touch(target.clone()));
        steps.push(mnt(
            Some(&Path::new("/dev").join(dev)),
            target,
            None,
            MsFlags::MS_BIND,
            None,
        ));
    }
    let pts = m.join("dev/pts");
    steps.push(MountStep::Mkdir(pts.clone()));
    steps.push(mnt(
        Some(Path::new("devpts")),
        pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    ));
    let shm = m.join("dev/shm");
    steps.push(MountStep::Mkdir(shm.clone()));
    steps.push(mnt(
        Some(Path::new("shm")),
        shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    ));
    for (target, link) in [
        ("pts/ptmx", "dev/ptmx"),
        ("/proc/self/fd", "dev/fd"),
        ("/proc/self/fd/0", "dev/stdin"),
        ("/proc/self/fd/1", "dev/stdout"),
        ("/proc/self/fd/2", "dev/stderr"),
    ] {
        steps.push(MountStep::Symlink {
            target,
            link: m.join(link),
        });
    }
    let sys = m.join("sys");
    steps.push(MountStep::Mkdir(sys.clone()));
    steps.push(mnt(
        Some(Path::new("/sys")),
        sys.clone(),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    ));
    steps.push(bind_ro(sys));
    let etc = m.join("etc");
    steps.push(MountStep::Mkdir(etc.clone()));
    for f in ETC_FILES {
        let target = etc.join(f);
        steps.push(MountStep::Touch(target.clone()));
        steps.push(mnt(
            Some(&paths.pod_etc.join(f)),
            target.clone(),
            None,
            MsFlags::MS_BIND,
            None,
        ));
    }
    for v in volumes {
        let rel = v.destination.trim_start_matches('/');
        if !v.destination.starts_with('/') || rel.is_empty() {
            return Err(MountError::BadDestination(v.destination.clone()));
        }
        let target = join_inside(m, rel)?;
        if v.is_dir {
            steps.push(MountStep::Mkdir(target.clone()));
        } else {
            if let Some(parent) = target.parent() {
                steps.push(MountStep::Mkdir(parent.to_path_buf()));
            }
            steps.push(MountStep::Touch(target.clone()));
        }
        steps.push(mnt(
            Some(&v.source),
            target.clone(),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        ));
        if v.read_only {
            steps.push(bind_ro(target));
        }
    }
    steps.push(MountStep::PivotRoot(m.clone()));
    Ok(steps)
}

/// Runs the plan.
pub fn execute(sys: &dyn Sys, steps: &[MountStep]) -> Result<(), SysError> {
    for s in steps {
        match s {
            MountStep::Mkdir(p) => sys.mkdir_all(p)?,
            MountStep::Touch(p) => sys.touch(p)?,
            MountStep::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => sys.mount(source.as_deref(), target, *fstype, *flags, data.as_deref())?,
            MountStep::Symlink { target, link } => sys.symlink(target, link)?,
            MountStep::PivotRoot(p) => sys.pivot_root(p)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    fn paths() -> ContainerPaths {
        ContainerPaths {
            rootfs: "/img".into(),
            upper: "/s/upper".into(),
            work: "/s/work".into(),
            merged: "/s/root".into(),
            pod_etc: "/pod/etc".into(),
        }
    }

    #[test]
    fn plan_has_overlay_private_mounts_volumes_and_pivot() {
        let vols = vec![
            ResolvedMount {
                source: "/vol/data".into(),
                destination: "/data".into(),
                read_only: true,
                is_dir: true,
            },
            ResolvedMount {
                source: "/vol/cfg/app.conf".into(),
                destination: "/etc/app/app.conf".into(),
                read_only: false,
                is_dir: false,
            },
        ];
        let steps = plan(&paths(), &vols).unwrap();
        let sys = FakeSys::default();
        execute(&sys, &steps).unwrap();
        let calls = sys.calls();
        let text = calls.join("\n");
        assert!(calls[0].starts_with("mount None / None MsFlags(MS_REC | MS_PRIVATE)"));
        assert!(calls[1].starts_with("mount Some(\"overlay\") /s/root Some(\"overlay\")"));
        assert!(calls[1].ends_with("Some(\"lowerdir=/img,upperdir=/s/upper,workdir=/s/work\")"));
        for needle in [
            "mount Some(\"proc\") /s/root/proc Some(\"proc\")",
            "mount Some(\"tmpfs\") /s/root/dev Some(\"tmpfs\")",
            "mount Some(\"devpts\") /s/root/dev/pts Some(\"devpts\")",
            "Some(\"newinstance,ptmxmode=0666,mode=0620\")",
            "mount Some(\"shm\") /s/root/dev/shm Some(\"tmpfs\")",
            "mount Some(\"/dev/null\") /s/root/dev/null None MsFlags(MS_BIND)",
            "symlink pts/ptmx /s/root/dev/ptmx",
            "mount Some(\"/pod/etc/hosts\") /s/root/etc/hosts",
            "mount Some(\"/pod/etc/resolv.conf\") /s/root/etc/resolv.conf",
            "mount Some(\"/pod/etc/hostname\") /s/root/etc/hostname",
            "mkdir /s/root/data\nmount Some(\"/vol/data\") /s/root/data None MsFlags(MS_BIND | MS_REC)",
            "mount None /s/root/data None MsFlags(MS_RDONLY | MS_REMOUNT | MS_BIND)",
            "mkdir /s/root/etc/app\ntouch /s/root/etc/app/app.conf\nmount Some(\"/vol/cfg/app.conf\")",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        // The read-write file volume is not remounted read-only.
        assert!(!text.contains("mount None /s/root/etc/app/app.conf"));
        assert_eq!(calls.last().unwrap(), "pivot_root /s/root");
    }

    #[test]
    fn destinations_cannot_escape_the_root() {
        for bad in ["/../etc", "/a/../../x", "/", "relative"] {
            let v = ResolvedMount {
                source: "/v".into(),
                destination: bad.into(),
                read_only: false,
                is_dir: true,
            };
            assert!(plan(&paths(), &[v]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn sub_paths_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("vol");
        std::fs::create_dir_all(base.join("a")).unwrap();
        std::os::unix::fs::symlink("/etc", base.join("evil")).unwrap();
        let base_c = base.canonicalize().unwrap();
        assert_eq!(resolve_sub_path(&base, "a").unwrap(), base_c.join("a"));
        assert_eq!(
            resolve_sub_path(&base, "new/dir").unwrap(),
            base_c.join("new/dir")
        );
        assert!(base.join("new/dir").is_dir());
        for bad in ["../x", "a/../../x", "/etc", "evil", "evil/passwd"] {
            assert!(resolve_sub_path(&base, bad).is_err(), "{bad} accepted");
        }
    }
}
