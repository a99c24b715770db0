//! The system-call boundary: mounts, files, cgroup writes and signals behind a trait, so the
//! mount plan, cgroup and supervision logic have unit tests without root.

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A failed system call.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A call failed.
    #[error("{op} {path}: {source}")]
    Call {
        /// Operation.
        op: &'static str,
        /// Path or target.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn err(op: &'static str, path: &Path, e: impl Into<std::io::Error>) -> SysError {
    SysError::Call {
        op,
        path: path.display().to_string(),
        source: e.into(),
    }
}

/// System calls the agent's logic needs.
pub trait Sys: Send + Sync {
    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), SysError>;
    /// `umount2(2)` with `MNT_DETACH`.
    fn umount_detach(&self, target: &Path) -> Result<(), SysError>;
    /// `umount2(2)` without flags (fails with `EBUSY` while the file system is in use).
    fn umount(&self, target: &Path) -> Result<(), SysError>;
    /// `syncfs(2)` of the file system holding `path`.
    fn sync_fs(&self, path: &Path) -> Result<(), SysError>;
    /// `mkdir -p`.
    fn mkdir_all(&self, path: &Path) -> Result<(), SysError>;
    /// Creates an empty file if missing (bind-mount target).
    fn touch(&self, path: &Path) -> Result<(), SysError>;
    /// Creates a symlink (existing entries are kept).
    fn symlink(&self, target: &str, link: &Path) -> Result<(), SysError>;
    /// Writes a whole file (cgroup knobs).
    fn write_file(&self, path: &Path, data: &str) -> Result<(), SysError>;
    /// Reads a whole file.
    fn read_file(&self, path: &Path) -> Result<String, SysError>;
    /// Whether a path exists.
    fn exists(&self, path: &Path) -> bool;
    /// `rmdir(2)`.
    fn remove_dir(&self, path: &Path) -> Result<(), SysError>;
    /// Makes `new_root` the root (pivot_root(".", ".") then detaching the old root).
    fn pivot_root(&self, new_root: &Path) -> Result<(), SysError>;
}

/// The real Linux implementation.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSys;

impl Sys for LinuxSys {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), SysError> {
        mount(source, target, fstype, flags, data).map_err(|e| err("mount", target, e))
    }

    fn umount_detach(&self, target: &Path) -> Result<(), SysError> {
        umount2(target, MntFlags::MNT_DETACH).map_err(|e| err("umount", target, e))
    }

    fn umount(&self, target: &Path) -> Result<(), SysError> {
        umount2(target, MntFlags::empty()).map_err(|e| err("umount", target, e))
    }

    fn sync_fs(&self, path: &Path) -> Result<(), SysError> {
        let dir = fs::File::open(path).map_err(|e| err("open", path, e))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
            .map_err(|e| err("syncfs", path, e))
    }

    fn mkdir_all(&self, path: &Path) -> Result<(), SysError> {
        fs::create_dir_all(path).map_err(|e| err("mkdir", path, e))
    }

    fn touch(&self, path: &Path) -> Result<(), SysError> {
        if path.exists() {
            return Ok(());
        }
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(|_| ())
            .map_err(|e| err("create", path, e))
    }

    fn symlink(&self, target: &str, link: &Path) -> Result<(), SysError> {
        if link.symlink_metadata().is_ok() {
            return Ok(());
        }
        symlink(target, link).map_err(|e| err("symlink", link, e))
    }

    fn write_file(&self, path: &Path, data: &str) -> Result<(), SysError> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| err("open", path, e))?;
        f.write_all(data.as_bytes())
            .map_err(|e| err("write", path, e))
    }

    fn read_file(&self, path: &Path) -> Result<String, SysError> {
        fs::read_to_string(path).map_err(|e| err("read", path, e))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn remove_dir(&self, path: &Path) -> Result<(), SysError> {
        fs::remove_dir(path).map_err(|e| err("rmdir", path, e))
    }

    fn pivot_root(&self, new_root: &Path) -> Result<(), SysError> {
        nix::unistd::chdir(new_root).map_err(|e| err("chdir", new_root, e))?;
        nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root", new_root, e))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(|e| err("umount old root", new_root, e))?;
        nix::unistd::chdir("/").map_err(|e| err("chdir", Path::new("/"), e))
    }
}

#[cfg(test)]
pub mod fake {
    //! A recording fake for unit tests.
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::path::PathBuf;
    use std::sync::Mutex;

    /// Records calls; files live in a map.
    #[derive(Default)]
    pub struct FakeSys {
        /// Calls in order, as text.
        pub calls: Mutex<Vec<String>>,
        /// File contents.
        pub files: Mutex<HashMap<PathBuf, String>>,
        /// Directories that exist (`mkdir_all` adds the path and its ancestors).
        pub dirs: Mutex<HashSet<PathBuf>>,
        /// `mount` fails with `ENODEV` for targets ending with this path.
        pub fail_mount: Mutex<Option<PathBuf>>,
        /// `umount` (not the detaching one) fails with `EBUSY` for this target.
        pub busy: Mutex<Option<PathBuf>>,
        /// `write_file` fails with `EACCES` for this path.
        pub denied: Mutex<Option<PathBuf>>,
    }

    impl FakeSys {
        /// Calls so far.
        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
        fn log(&self, s: String) {
            self.calls.lock().unwrap().push(s);
        }
    }

    impl Sys for FakeSys {
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> Result<(), SysError> {
            if let Some(f) = self.fail_mount.lock().unwrap().as_deref() {
                if target.ends_with(f) {
                    self.log(format!("mount {} failed", target.display()));
                    return Err(err(
                        "mount",
                        target,
                        std::io::Error::from_raw_os_error(libc::ENODEV),
                    ));
                }
            }
            self.log(format!(
                "mount {:?} {} {:?} {:?} {:?}",
                source,
                target.display(),
                fstype,
                flags,
                data
            ));
            Ok(())
        }
        fn umount_detach(&self, target: &Path) -> Result<(), SysError> {
            self.log(format!("umount {}", target.display()));
            Ok(())
        }
        fn umount(&self, target: &Path) -> Result<(), SysError> {
            if self.busy.lock().unwrap().as_deref() == Some(target) {
                self.log(format!("umount {} busy", target.display()));
                return Err(err(
                    "umount",
                    target,
                    std::io::Error::from_raw_os_error(libc::EBUSY),
                ));
            }
            self.log(format!("umount {}", target.display()));
            Ok(())
        }
        fn sync_fs(&self, path: &Path) -> Result<(), SysError> {
            self.log(format!("syncfs {}", path.display()));
            Ok(())
        }
        fn mkdir_all(&self, path: &Path) -> Result<(), SysError> {
            self.log(format!("mkdir {}", path.display()));
            let mut dirs = self.dirs.lock().unwrap();
            for a in path.ancestors() {
                dirs.insert(a.to_path_buf());
            }
            Ok(())
        }
        fn touch(&self, path: &Path) -> Result<(), SysError> {
            self.log(format!("touch {}", path.display()));
            Ok(())
        }
        fn symlink(&self, target: &str, link: &Path) -> Result<(), SysError> {
            self.log(format!("symlink {} {}", target, link.display()));
            Ok(())
        }
        fn write_file(&self, path: &Path, data: &str) -> Result<(), SysError> {
            if self.denied.lock().unwrap().as_deref() == Some(path) {
                self.log(format!("write {} {} denied", path.display(), data));
                return Err(err(
                    "write",
                    path,
                    std::io::Error::from_raw_os_error(libc::EACCES),
                ));
            }
            self.log(format!("write {} {}", path.display(), data));
            self.files
                .lock()
                .unwrap()
                .insert(path.to_path_buf(), data.to_string());
            Ok(())
        }
        fn read_file(&self, path: &Path) -> Result<String, SysError> {
            self.files
                .lock()
                .unwrap()
                .get(path)
                .cloned()
                .ok_or_else(|| {
                    err(
                        "read",
                        path,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    )
                })
        }
        fn exists(&self, path: &Path) -> bool {
            self.files.lock().unwrap().contains_key(path)
                || self.dirs.lock().unwrap().contains(path)
        }
        fn remove_dir(&self, path: &Path) -> Result<(), SysError> {
            self.log(format!("rmdir {}", path.display()));
            self.dirs.lock().unwrap().remove(path);
            Ok(())
        }
        fn pivot_root(&self, new_root: &Path) -> Result<(), SysError> {
            self.log(format!("pivot_root {}", new_root.display()));
            Ok(())
        }
    }
}
