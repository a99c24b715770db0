//! The interrupt handle a virtio device uses to notify the driver: it sets the reason bits the
//! transport exposes in its InterruptStatus register (spec §4.2.2) and writes the eventfd the VMM
//! registered as a KVM irqfd.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// InterruptStatus bit 0: the device used a buffer in at least one virtqueue (spec §4.2.2).
pub const INT_USED_BUFFER: u32 = 1;
/// InterruptStatus bit 1: the device configuration changed (spec §4.2.2).
pub const INT_CONFIG_CHANGE: u32 = 2;

/// Errors raised while signalling an interrupt.
#[derive(Debug, thiserror::Error)]
pub enum InterruptError {
    /// Writing the interrupt eventfd failed.
    #[error("failed to write the interrupt eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// A cloneable, thread-safe handle that raises the device's interrupt line.
///
/// The transport keeps one clone to serve InterruptStatus reads and InterruptACK writes; the
/// device gets another at activation and calls [`Interrupt::signal_used_queue`] or
/// [`Interrupt::signal_config_change`].
#[derive(Clone, Debug)]
pub struct Interrupt {
    status: Arc<AtomicU32>,
    irq_evt: Arc<EventFd>,
}

impl Interrupt {
    /// Wraps the eventfd that injects the device's interrupt (a KVM irqfd in the VMM).
    pub fn new(irq_evt: EventFd) -> Self {
        Interrupt {
            status: Arc::new(AtomicU32::new(0)),
            irq_evt: Arc::new(irq_evt),
        }
    }

    /// Tells the driver that buffers were added to a used ring.
    pub fn signal_used_queue(&self) -> Result<(), InterruptError> {
        self.signal(INT_USED_BUFFER)
    }

    /// Tells the driver that the device configuration (or status, e.g. `DEVICE_NEEDS_RESET`)
    /// changed.
    pub fn signal_config_change(&self) -> Result<(), InterruptError> {
        self.signal(INT_CONFIG_CHANGE)
    }

    fn signal(&self, bits: u32) -> Result<(), InterruptError> {
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.irq_evt.write(1).map_err(InterruptError::EventFd)
    }

    /// Current value of the InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears the given bits (an InterruptACK write, spec §4.2.2).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears every pending reason (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// The eventfd written on every interrupt.
    pub fn eventfd(&self) -> &EventFd {
        &self.irq_evt
    }
}
