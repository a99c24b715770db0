//! Creating the virtio devices a [`crate::config::VmConfig`] asks for.

use crate::config::VsockConfig;
use crate::virtio::vsock::{Vsock, VsockError};
use crate::virtio::VirtioDevice;

/// Errors of virtio device creation.
#[derive(Debug, thiserror::Error)]
pub enum VirtioDeviceError {
    /// The vsock device could not be created.
    #[error("vsock: {0}")]
    Vsock(#[from] VsockError),
}

/// The hybrid vsock device for `config`.
pub fn vsock(config: &VsockConfig) -> Result<Box<dyn VirtioDevice>, VirtioDeviceError> {
    let dev = Vsock::new(config.guest_cid, config.uds_path.clone())?;
    Ok(Box::new(dev))
}
