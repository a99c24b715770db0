//! The i8042 keyboard controller at 0x60/0x64, used only for the guest's reset command.
//!
//! With `reboot=k` and no ACPI, a guest `reboot` or `poweroff` ends by writing 0xFE to port
//! 0x64; vm-superio's `I8042Device` then writes the reset EventFd that ends the VMM.

use vm_superio::I8042Device as Inner;
use vmm_sys_util::eventfd::EventFd;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// First port of the controller (data port).
pub const I8042_BASE: u64 = 0x60;
/// Ports 0x60..=0x64 (data and command/status).
pub const I8042_LEN: u64 = 5;

/// The i8042 controller.
pub struct I8042 {
    inner: Inner<EventFdTrigger>,
}

impl I8042 {
    /// A controller that writes `reset_evt` when the guest asks for a CPU reset.
    pub fn new(reset_evt: EventFd) -> Self {
        I8042 {
            inner: Inner::new(EventFdTrigger::new(reset_evt)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() == 1 && offset < I8042_LEN {
            data[0] = self.inner.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 && offset < I8042_LEN {
            // An EventFd write only fails when its counter would overflow; the reset is
            // already pending then.
            let _ = self.inner.write(offset as u8, data[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_fires_the_reset_event() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = I8042::new(evt.try_clone().unwrap());
        dev.write(4, &[0xaa]);
        assert!(evt.read().is_err(), "only 0xfe resets");
        dev.write(0, &[0xfe]);
        assert!(evt.read().is_err(), "0xfe on the data port is no reset");
        dev.write(4, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
    }
}
