//! A pod's directory on the host: `$PEAPOD_ROOT/pods/<namespace>/<name>/`, owned by the
//! `peapod run` that created it (an exclusive `flock` on `lock` while it runs).
//!
//! Layout: `pod.yaml` (the manifest as given), `pod.json` ([`PodRecord`]), `status.json` (the
//! final status), `console.log` (guest console), `vmm.log` (the VMM's stderr),
//! `logs/<container>.log` (CRI format),
//! `vsock.sock` (the VMM's hybrid vsock socket, while running), `volumes/` (emptyDir data,
//! removed when the pod ends), `files/` (bind mounts of hostPath files, while running).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Errors of the pod directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A pod of that name is running.
    #[error("pod {namespace}/{name} is already running (peapod run, pid {pid})")]
    Running {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The owner's pid, or "?".
        pid: String,
    },
    /// A finished pod of that name exists.
    #[error(
        "pod {namespace}/{name} already exists (it has finished); remove it with \
         `peapod delete pod {name} -n {namespace}` or run with --rm"
    )]
    Exists {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// No pod of that name.
    #[error("pod {namespace}/{name} not found")]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The pod is not running.
    #[error("pod {namespace}/{name} is not running")]
    NotRunning {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A record could not be (de)serialized.
    #[error("{path}: {source}")]
    Json {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { op, path, source }
}

/// What other commands (`exec`, `logs`, `delete`) need to know about a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The uid generated at creation.
    pub uid: String,
    /// Init containers, in order.
    pub init_containers: Vec<String>,
    /// App containers, in order.
    pub containers: Vec<String>,
    /// The pid of the `peapod run` that owns the pod.
    pub owner_pid: u32,
}

/// Path of the pods tree under `root`.
pub fn pods_dir(root: &Path) -> PathBuf {
    root.join("pods")
}

/// The directory of pod `namespace/name`.
pub fn pod_path(root: &Path, namespace: &str, name: &str) -> PathBuf {
    pods_dir(root).join(namespace).join(name)
}

/// A pod directory held by its running owner.
#[derive(Debug)]
pub struct PodDir {
    path: PathBuf,
    _lock: Flock<File>,
}

fn lock_file(dir: &Path, create: bool) -> Result<File, StateError> {
    let p = dir.join("lock");
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .open(&p)
        .map_err(io_err("open", &p))
}

/// Whether someone holds the pod's lock (its `peapod run` is alive).
pub fn is_running(dir: &Path) -> bool {
    let Ok(f) = lock_file(dir, false) else {
        return false;
    };
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(_unlocked_on_drop) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

impl PodDir {
    /// Creates the directory of a new pod and takes its lock. Fails when a pod of that name
    /// exists, running or not; a directory left by a `peapod run` that was killed (no lock
    /// holder, no `status.json`) is cleaned up and reused.
    pub fn create(root: &Path, namespace: &str, name: &str) -> Result<Self, StateError> {
        let parent = pods_dir(root).join(namespace);
        fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
        let path = parent.join(name);
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if is_running(&path) {
                    let pid =
                        read_record(&path).map_or_else(|_| "?".into(), |r| r.owner_pid.to_string());
                    return Err(StateError::Running {
                        namespace: namespace.into(),
                        name: name.into(),
                        pid,
                    });
                }
                if path.join("status.json").exists() {
                    return Err(StateError::Exists {
                        namespace: namespace.into(),
                        name: name.into(),
                    });
                }
                // Left behind by a killed owner: nothing runs there any more.
                remove_tree(&path)?;
                fs::create_dir(&path).map_err(io_err("create", &path))?;
            }
            Err(e) => return Err(io_err("create", &path)(e)),
        }
        let f = lock_file(&path, true)?;
        let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            StateError::Running {
                namespace: namespace.into(),
                name: name.into(),
                pid: format!("? ({e})"),
            }
        })?;
        Ok(Self { path, _lock: lock })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The guest console log.
    pub fn console(&self) -> PathBuf {
        self.path.join("console.log")
    }

    /// The VMM's stderr.
    pub fn vmm_log(&self) -> PathBuf {
        self.path.join("vmm.log")
    }

    /// The VMM's hybrid vsock socket.
    pub fn vsock(&self) -> PathBuf {
        vsock_path(&self.path)
    }

    /// The emptyDir directory.
    pub fn volumes(&self) -> PathBuf {
        self.path.join("volumes")
    }

    /// The directory of hostPath file bind mounts.
    pub fn files(&self) -> PathBuf {
        self.path.join("files")
    }

    /// The log file of a container.
    pub fn log_file(&self, container: &str) -> PathBuf {
        log_path(&self.path, container)
    }

    /// Writes `name` atomically (temp file + rename).
    pub fn write_file(&self, name: &str, data: &[u8]) -> Result<(), StateError> {
        let tmp = self.path.join(format!(".{name}.tmp"));
        let dst = self.path.join(name);
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, &dst).map_err(io_err("rename", &dst))
    }

    /// Writes `value` as JSON into `name`.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let data = serde_json::to_vec_pretty(value).map_err(|source| StateError::Json {
            path: self.path.join(name),
            source,
        })?;
        self.write_file(name, &data)
    }

    /// Removes the whole directory (the lock goes with it).
    pub fn remove(self) -> Result<(), StateError> {
        remove_tree(&self.path)
    }
}

/// The VMM socket inside a pod directory.
pub fn vsock_path(dir: &Path) -> PathBuf {
    dir.join("vsock.sock")
}

/// A container's log file inside a pod directory.
pub fn log_path(dir: &Path, container: &str) -> PathBuf {
    dir.join("logs").join(format!("{container}.log"))
}

/// Reads `pod.json` of a pod directory.
pub fn read_record(dir: &Path) -> Result<PodRecord, StateError> {
    let p = dir.join("pod.json");
    let data = fs::read(&p).map_err(io_err("read", &p))?;
    serde_json::from_slice(&data).map_err(|source| StateError::Json { path: p, source })
}

/// Finds an existing pod's directory and record.
pub fn find(root: &Path, namespace: &str, name: &str) -> Result<(PathBuf, PodRecord), StateError> {
    let dir = pod_path(root, namespace, name);
    if !dir.is_dir() {
        return Err(StateError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        });
    }
    let rec = read_record(&dir)?;
    Ok((dir, rec))
}

/// Removes a directory tree, refusing to cross into other file systems (a bind mount left
/// under `files/` is detached first so its host file is never touched).
pub fn remove_tree(path: &Path) -> Result<(), StateError> {
    let files = path.join("files");
    if let Ok(entries) = fs::read_dir(&files) {
        for e in entries.flatten() {
            crate::volumes::detach_tree(&e.path());
        }
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_exclusive_and_finished_pods_block_the_name() {
        let root = tempfile::tempdir().unwrap();
        let a = PodDir::create(root.path(), "default", "p").unwrap();
        assert!(is_running(a.path()));
        let e = PodDir::create(root.path(), "default", "p").unwrap_err();
        assert!(matches!(e, StateError::Running { .. }), "{e}");
        a.write_file("status.json", b"{}").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!is_running(&path));
        let e = PodDir::create(root.path(), "default", "p").unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        // Another namespace is another pod.
        PodDir::create(root.path(), "other", "p").unwrap();
    }

    #[test]
    fn a_killed_owner_leaves_a_reusable_directory() {
        let root = tempfile::tempdir().unwrap();
        let a = PodDir::create(root.path(), "default", "p").unwrap();
        std::fs::write(a.vsock(), b"").unwrap();
        drop(a); // no status.json: the owner died
        let b = PodDir::create(root.path(), "default", "p").unwrap();
        assert!(!b.vsock().exists());
        b.remove().unwrap();
        assert!(!pod_path(root.path(), "default", "p").exists());
    }
}
