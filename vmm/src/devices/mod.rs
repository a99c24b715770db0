//! Legacy platform devices on the port I/O bus: the 16550 serial console and the i8042 reset.

pub mod i8042;
pub mod serial;

use std::io;
use std::ops::Deref;

use vmm_sys_util::eventfd::EventFd;

/// An [`EventFd`] usable as a vm-superio interrupt or reset trigger.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Wraps `evt`.
    pub fn new(evt: EventFd) -> Self {
        EventFdTrigger(evt)
    }
}

impl vm_superio::Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

impl Deref for EventFdTrigger {
    type Target = EventFd;

    fn deref(&self) -> &EventFd {
        &self.0
    }
}
