//! Virtio devices for the microVM: the transport-agnostic device trait and the activation checks
//! every device makes, the interrupt handle devices use to notify the driver, the virtio-mmio
//! transport, the worker-thread plumbing the devices share ([`event_loop`]) and the user-space
//! vsock and virtio-fs devices (in process, or through a vhost-user back-end).
//!
//! References are to the virtio specification v1.2 ("spec §x.y").

pub mod event_loop;
pub mod fs;
pub mod interrupt;
pub mod mmio;
#[cfg(test)]
pub(crate) mod test_driver;
pub mod vhost_user_fs;
pub mod vsock;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use interrupt::{Interrupt, InterruptError};

/// Device ID of a virtio network device (spec §5, table "Device Types").
pub const TYPE_NET: u32 = 1;
/// Device ID of a virtio block device (spec §5).
pub const TYPE_BLOCK: u32 = 2;
/// Device ID of a virtio vsock device (spec §5, §5.10.1).
pub const TYPE_VSOCK: u32 = 19;
/// Device ID of a virtio file system device (spec §5, §5.11.1).
pub const TYPE_FS: u32 = 26;

/// Feature bit: the device complies with virtio 1.x (spec §6, "Reserved Feature Bits").
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// Feature bit: the driver may use indirect descriptors (spec §2.7.5.3, §6).
pub const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
/// Feature bit: used/avail event index notification suppression (spec §2.7.10, §6).
pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;

/// Device status bits (spec §2.1 "Device Status Field").
pub mod status {
    /// The guest OS has found the device and recognised it as a valid virtio device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest OS knows how to drive the device.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// The driver has acknowledged all the features it understands; negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device has experienced an error from which it can't recover.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// Something went wrong in the guest and it has given up on the device.
    pub const FAILED: u32 = 0x80;
}

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The transport handed over a different number of queues than the device has.
    #[error("expected {expected} queues, got {actual}")]
    QueueCount { expected: usize, actual: usize },
    /// The transport handed over a different number of queue eventfds than queues.
    #[error("expected {expected} queue eventfds, got {actual}")]
    EventCount { expected: usize, actual: usize },
    /// A queue the device needs was not made ready by the driver.
    #[error("queue {0} is not ready")]
    QueueNotReady(usize),
    /// The device was already active.
    #[error("device is already activated")]
    AlreadyActivated,
    /// The device backend could not be started.
    #[error("device backend failed to start: {0}")]
    Backend(String),
}

/// A virtio device, independent of the transport (MMIO, PCI) that exposes it to the guest.
///
/// The transport owns the register state and the driver-status state machine; the device only
/// describes itself (type, queues, features, config space) and is started with
/// [`VirtioDevice::activate`] once the driver has set `DRIVER_OK`.
pub trait VirtioDevice: Send {
    /// The virtio device type (spec §5), e.g. [`TYPE_VSOCK`].
    fn device_type(&self) -> u32;

    /// Maximum size of each of the device's virtqueues; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Feature bits the device offers (spec §2.2), including transport bits such as
    /// [`VIRTIO_F_VERSION_1`].
    fn avail_features(&self) -> u64;

    /// Feature bits the driver accepted, as last given to [`VirtioDevice::ack_features`].
    fn acked_features(&self) -> u64;

    /// Records the features the driver accepted. The transport only calls this with a subset of
    /// [`VirtioDevice::avail_features`] at `FEATURES_OK` time (spec §3.1.1 step 5).
    fn ack_features(&mut self, features: u64);

    /// Reads the device-specific configuration space (spec §4.2.2, offset 0x100 and up).
    /// Bytes outside the config space read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device-specific configuration space. Read-only fields ignore the write.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Starts the device: it takes ownership of guest memory, the interrupt handle, the queues
    /// (one per entry of [`VirtioDevice::queue_max_sizes`], as configured by the driver) and the
    /// eventfds the transport signals on a queue notification.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
        queues: Vec<Queue>,
        queue_evts: Vec<EventFd>,
    ) -> Result<(), ActivateError>;

    /// Stops the device and returns it to its pre-activation state (spec §2.4 "Device Reset"):
    /// the queues, eventfds and interrupt given to `activate` are dropped.
    fn reset(&mut self);

    /// Whether the device is currently activated.
    fn is_activated(&self) -> bool;
}

/// The checks every device makes before it starts (see [`VirtioDevice::activate`]): not already
/// active, one queue and one queue eventfd for each of its `expected` queues, every queue made
/// ready by the driver.
pub fn check_activation(
    activated: bool,
    queues: &[Queue],
    queue_evts: &[EventFd],
    expected: usize,
) -> Result<(), ActivateError> {
    if activated {
        return Err(ActivateError::AlreadyActivated);
    }
    if queues.len() != expected {
        return Err(ActivateError::QueueCount {
            expected,
            actual: queues.len(),
        });
    }
    if queue_evts.len() != expected {
        return Err(ActivateError::EventCount {
            expected,
            actual: queue_evts.len(),
        });
    }
    if let Some(i) = queues.iter().position(|q| !q.ready()) {
        return Err(ActivateError::QueueNotReady(i));
    }
    Ok(())
}

/// Copies the bytes of `config` at `offset` into `data`; bytes outside `config` read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let end = config.len().min(start.saturating_add(data.len()));
    data[..end - start].copy_from_slice(&config[start..end]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn queues(ready: &[bool]) -> Vec<Queue> {
        ready
            .iter()
            .map(|&r| {
                let mut q = Queue::new(16).unwrap();
                q.set_ready(r);
                q
            })
            .collect()
    }

    fn evts(n: usize) -> Vec<EventFd> {
        (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect()
    }

    #[test]
    fn check_activation_accepts_ready_queues() {
        check_activation(false, &queues(&[true, true]), &evts(2), 2).unwrap();
    }

    #[test]
    fn check_activation_rejects_each_problem() {
        let err = |activated, q: &[bool], e, expected| {
            check_activation(activated, &queues(q), &evts(e), expected).unwrap_err()
        };
        assert!(matches!(
            err(true, &[true, true], 2, 2),
            ActivateError::AlreadyActivated
        ));
        assert!(matches!(
            err(false, &[true], 2, 2),
            ActivateError::QueueCount {
                expected: 2,
                actual: 1
            }
        ));
        assert!(matches!(
            err(false, &[true, true], 3, 2),
            ActivateError::EventCount {
                expected: 2,
                actual: 3
            }
        ));
        assert!(matches!(
            err(false, &[true, false, true], 3, 3),
            ActivateError::QueueNotReady(1)
        ));
    }
}
