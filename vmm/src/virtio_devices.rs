//! Creating the virtio devices a [`crate::config::VmConfig`] asks for.

use crate::config::{FsConfig, VhostUserFsConfig, VsockConfig};
use crate::virtio::fs::{Fs, FsError};
use crate::virtio::vhost_user_fs::{VhostUserFs, VhostUserFsError};
use crate::virtio::vsock::{Vsock, VsockError};
use crate::virtio::VirtioDevice;

/// Errors of virtio device creation.
#[derive(Debug, thiserror::Error)]
pub enum VirtioDeviceError {
    /// The vsock device could not be created.
    #[error("vsock: {0}")]
    Vsock(#[from] VsockError),
    /// A virtio-fs device could not be created.
    #[error("virtio-fs {tag}: {source}")]
    Fs {
        tag: String,
        #[source]
        source: FsError,
    },
    /// A vhost-user-fs device could not be created.
    #[error("vhost-user-fs {tag}: {source}")]
    VhostUserFs {
        tag: String,
        #[source]
        source: VhostUserFsError,
    },
}

/// The hybrid vsock device for `config`.
pub fn vsock(config: &VsockConfig) -> Result<Box<dyn VirtioDevice>, VirtioDeviceError> {
    let dev = Vsock::new(config.guest_cid, config.uds_path.clone())?;
    Ok(Box::new(dev))
}

/// A virtio-fs device for `config`.
pub fn fs(config: &FsConfig) -> Result<Box<dyn VirtioDevice>, VirtioDeviceError> {
    let dev =
        Fs::new(&config.tag, config.shared_dir.clone(), config.read_only).map_err(|source| {
            VirtioDeviceError::Fs {
                tag: config.tag.clone(),
                source,
            }
        })?;
    Ok(Box::new(dev))
}

/// A virtio-fs device served by the vhost-user back-end of `config` (connected now).
pub fn vhost_user_fs(
    config: &VhostUserFsConfig,
) -> Result<Box<dyn VirtioDevice>, VirtioDeviceError> {
    let dev = VhostUserFs::connect(&config.tag, &config.socket).map_err(|source| {
        VirtioDeviceError::VhostUserFs {
            tag: config.tag.clone(),
            source,
        }
    })?;
    Ok(Box::new(dev))
}
