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
use std::thread::JoinHandle;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use log::warn;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::guard::ConfinedFs;
use self::worker::Worker;
use super::{ActivateError, Interrupt, VirtioDevice, TYPE_FS, VIRTIO_F_VERSION_1};

/// Length of the `tag` field of the config space (spec §5.11.4).
pub const TAG_LEN: usize = 36;
/// Request queues the device offers (plus the high-priority queue).
pub const NUM_REQUEST_QUEUES: u32 = 1;
/// Queues in all: high priority + requests.
const NUM_QUEUES: usize = 1 + NUM_REQUEST_QUEUES as usize;
/// Maximum size of each queue.
pub const QUEUE_SIZE: u16 = 256;

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

/// A running worker thread.
struct Running {
    kill_evt: EventFd,
    thread: JoinHandle<()>,
}

/// The virtio-fs device.
pub struct Fs {
    tag: String,
    shared_dir: PathBuf,
    read_only: bool,
    config: [u8; TAG_LEN + 4],
    acked_features: u64,
    /// The file system for the next activation (a reset starts a fresh one).
    server: Option<Arc<Server<ConfinedFs>>>,
    worker: Option<Running>,
}

impl Fs {
    /// A device exporting `shared_dir` under `tag`. With `read_only`, every operation that
    /// would change the host tree fails with `EROFS`.
    pub fn new(tag: &str, shared_dir: PathBuf, read_only: bool) -> Result<Self, FsError> {
        if tag.is_empty() || tag.len() > TAG_LEN || tag.contains('\0') {
            return Err(FsError::InvalidTag(tag.to_string()));
        }
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
        // Spec §5.11.4: the tag is UTF-8, NUL padded, not NUL terminated if 36 bytes long.
        let mut config = [0u8; TAG_LEN + 4];
        config[..tag.len()].copy_from_slice(tag.as_bytes());
        config[TAG_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
        let server = new_server(&shared_dir, read_only)?;
        Ok(Fs {
            tag: tag.to_string(),
            shared_dir,
            read_only,
            config,
            acked_features: 0,
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

    /// Stops the worker thread, if any, and joins it.
    pub fn shutdown(&mut self) {
        let Some(worker) = self.worker.take() else {
            return;
        };
        if let Err(e) = worker.kill_evt.write(1) {
            // Without the kill event the thread cannot be joined; leave it detached.
            warn!("virtio-fs {}: failed to stop the worker: {e}", self.tag);
            return;
        }
        if worker.thread.join().is_err() {
            warn!("virtio-fs {}: the worker thread panicked", self.tag);
        }
    }
}

/// A FUSE server over a fresh passthrough file system rooted at `dir`.
fn new_server(dir: &Path, read_only: bool) -> Result<Arc<Server<ConfinedFs>>, FsError> {
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
    Ok(Arc::new(Server::new(ConfinedFs::new(fs, read_only))))
}

impl Drop for Fs {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn avail_features(&self) -> u64 {
        // Spec §5.11.3: VIRTIO_FS_F_NOTIFICATION is not offered.
        1 << VIRTIO_F_VERSION_1
    }

    fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        warn!(
            "virtio-fs {}: guest write to read-only config space at {offset:#x} ignored",
            self.tag
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
        queues: Vec<Queue>,
        queue_evts: Vec<EventFd>,
    ) -> Result<(), ActivateError> {
        super::check_activation(self.worker.is_some(), &queues, &queue_evts, NUM_QUEUES)?;
        let backend = |e: String| ActivateError::Backend(e);
        let server = match self.server.take() {
            Some(s) => s,
            None => {
                new_server(&self.shared_dir, self.read_only).map_err(|e| backend(e.to_string()))?
            }
        };
        let kill_evt = EventFd::new(EFD_NONBLOCK).map_err(|e| backend(e.to_string()))?;
        let worker_kill = kill_evt.try_clone().map_err(|e| backend(e.to_string()))?;
        let worker = Worker {
            mem,
            queues,
            queue_evts,
            interrupt,
            kill_evt: worker_kill,
            server,
            tag: self.tag.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("virtio-fs-{}", self.tag))
            .spawn(move || worker.run())
            .map_err(|e| backend(e.to_string()))?;
        self.worker = Some(Running { kill_evt, thread });
        Ok(())
    }

    fn reset(&mut self) {
        // The next activation starts with a fresh file system: the guest's inodes and handles
        // die with the reset (spec §2.4), and so do the host fds behind them.
        self.shutdown();
        self.acked_features = 0;
    }

    fn is_activated(&self) -> bool {
        self.worker.is_some()
    }
}

#[cfg(test)]
mod tests;
