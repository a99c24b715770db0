//! The virtio file system device (spec §5.11), served in process by `fuse-backend-rs`: the
//! guest mounts a host directory with `mount -t virtiofs TAG /mnt`.
//!
//! Queue 0 is the high-priority queue (FORGET, INTERRUPT), queue 1 the one request queue. Each
//! descriptor chain carries one FUSE request (device-readable part) and room for its reply
//! (device-writable part). The device runs its own worker thread ([`worker`]) once activated.
//! The host side is confined to the shared directory ([`guard`]). See `docs/virtio-fs.md`.

pub mod guard;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};

use self::guard::ConfinedFs;
use self::worker::Worker;
use super::{
    ActivateError, Activation, DeviceParts, DeviceState, WorkerThread, TYPE_FS, VIRTIO_F_VERSION_1,
};

/// Length of the `tag` field of the config space (spec §5.11.4).
pub const TAG_LEN: usize = 36;
/// Request queues the device offers (plus the high-priority queue).
pub const NUM_REQUEST_QUEUES: u32 = 1;
/// Queues in all: high priority + requests.
pub const NUM_QUEUES: usize = 1 + NUM_REQUEST_QUEUES as usize;
/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Length of the config space: the tag and `num_request_queues` (spec §5.11.4).
pub const CONFIG_LEN: usize = TAG_LEN + 4;

/// The config space of a file system device exporting `tag` (spec §5.11.4): the tag, UTF-8 and
/// NUL padded (not NUL terminated when 36 bytes long), then `num_request_queues` (le32). `None`
/// if the tag is empty, longer than 36 bytes or contains a NUL byte.
pub fn config_space(tag: &str) -> Option<[u8; CONFIG_LEN]> {
    if tag.is_empty() || tag.len() > TAG_LEN || tag.contains('\0') {
        return None;
    }
    let mut config = [0u8; CONFIG_LEN];
    config[..tag.len()].copy_from_slice(tag.as_bytes());
    config[TAG_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
    Some(config)
}

/// Errors of the virtio-fs device.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The tag is empty, longer than 36 bytes or contains a NUL byte.
    #[error("invalid tag {0:?}: must be 1-36 bytes without NUL")]
    InvalidTag(String),
    /// The shared directory cannot be used.
    #[error("shared directory {path}: {source}")]
    SharedDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The shared directory is not a directory.
    #[error("shared directory {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The shared directory's path is not UTF-8 (fuse-backend-rs takes a `String`).
    #[error("shared directory {0} is not a utf-8 path")]
    NonUtf8Path(PathBuf),
    /// The passthrough file system could not be set up.
    #[error("failed to set up the passthrough file system for {path}: {source}")]
    Backend {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Creating an eventfd failed.
    #[error("failed to create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// The virtio-fs device.
pub struct Fs {
    tag: String,
    shared_dir: PathBuf,
    read_only: bool,
    state: DeviceState,
    /// The file system for the next activation (a reset starts a fresh one).
    server: Option<Arc<Server<ConfinedFs>>>,
    worker: Option<WorkerThread<()>>,
}

impl Fs {
    /// A device exporting `shared_dir` under `tag`. With `read_only`, every operation that
    /// would change the host tree fails with `EROFS`.
    pub fn new(tag: &str, shared_dir: PathBuf, read_only: bool) -> Result<Self, FsError> {
        let config = config_space(tag).ok_or_else(|| FsError::InvalidTag(tag.to_string()))?;
        let shared_dir =
            std::fs::canonicalize(&shared_dir).map_err(|source| FsError::SharedDir {
                path: shared_dir.clone(),
                source,
            })?;
        let meta = std::fs::metadata(&shared_dir).map_err(|source| FsError::SharedDir {
            path: shared_dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(FsError::NotADirectory(shared_dir));
        }
        let server = new_server(&shared_dir, read_only)?;
        Ok(Fs {
            tag: tag.to_string(),
            shared_dir,
            read_only,
            // Spec §5.11.3: VIRTIO_FS_F_NOTIFICATION is not offered.
            state: DeviceState::new(
                format!("virtio-fs {tag}"),
                TYPE_FS,
                vec![QUEUE_SIZE; NUM_QUEUES],
                1 << VIRTIO_F_VERSION_1,
                config.to_vec(),
            ),
            server: Some(server),
            worker: None,
        })
    }

    /// The mount tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The shared directory (canonical).
    pub fn shared_dir(&self) -> &Path {
        &self.shared_dir
    }

    /// Whether the share is read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }
}

/// A FUSE server over a fresh passthrough file system rooted at `dir`.
fn new_server(dir: &Path, read_only: bool) -> Result<Arc<Server<ConfinedFs>>, FsError> {
    Ok(Arc::new(Server::new(new_confined(dir, read_only)?)))
}

/// A fresh passthrough file system rooted at `dir`, behind the guard.
fn new_confined(dir: &Path, read_only: bool) -> Result<ConfinedFs, FsError> {
    let root_dir = dir
        .to_str()
        .ok_or_else(|| FsError::NonUtf8Path(dir.to_path_buf()))?
        .to_string();
    let cfg = Config {
        root_dir,
        // No xattrs: they would bypass the guard's type checks for security.* names.
        xattr: false,
        do_import: true,
        cache_policy: CachePolicy::Auto,
        // File handles need CAP_DAC_READ_SEARCH and a mount fd per host mount.
        inode_file_handles: false,
        ..Config::default()
    };
    let backend = |source| FsError::Backend {
        path: dir.to_path_buf(),
        source,
    };
    let fs: PassthroughFs<()> = PassthroughFs::new(cfg).map_err(backend)?;
    fs.import().map_err(backend)?;
    Ok(ConfinedFs::new(fs, read_only))
}

impl Drop for Fs {
    fn drop(&mut self) {
        self.stop();
    }
}

impl DeviceParts for Fs {
    fn start(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let backend = |e: &dyn std::fmt::Display| ActivateError::Backend(e.to_string());
        let server = match self.server.take() {
            Some(s) => s,
            None => new_server(&self.shared_dir, self.read_only).map_err(|e| backend(&e))?,
        };
        let tag = self.tag.clone();
        let worker = WorkerThread::spawn(format!("virtio-fs-{}", self.tag), move |kill_evt| {
            Worker {
                mem: activation.mem,
                queues: activation.queues,
                queue_evts: activation.queue_evts,
                interrupt: activation.interrupt,
                kill_evt,
                server,
                tag,
            }
            .run()
        })
        .map_err(|e| backend(&e))?;
        self.worker = Some(worker);
        Ok(())
    }

    /// Stops the worker thread, if any, and joins it. The next activation starts with a fresh
    /// file system: the guest's inodes and handles die with a reset (spec §2.4), and so do the
    /// host fds behind them.
    fn stop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop();
        }
    }

    fn state(&self) -> &DeviceState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }
}

#[cfg(test)]
pub(crate) mod tests;
