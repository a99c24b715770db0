//! Creating the virtio devices a [`crate::config::VmConfig`] asks for.

use crate::config::VsockConfig;
use crate::virtio::vsock::Vsock;
use crate::virtio::VirtioDevice;

/// The hybrid vsock device for `config`.
pub fn vsock(config: &VsockConfig) -> Result<Box<dyn VirtioDevice>, String> {
    let dev =
        Vsock::new(config.guest_cid, config.uds_path.clone()).map_err(|e| format!("vsock: {e}"))?;
    Ok(Box::new(dev))
}
