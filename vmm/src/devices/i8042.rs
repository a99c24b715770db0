//! The i8042 keyboard controller at 0x60/0x64: enough of it for Linux's i8042 driver to probe
//! the controller without timing out (control byte, output port, self tests), and the CPU
//! reset command.
//!
//! With `reboot=k` and no ACPI, a guest `reboot` ends by writing 0xFE to port 0x64, which
//! writes the reset EventFd that ends the VMM. (vm-superio's `I8042Device` only implements the
//! reset; without answers to "read control byte" the guest driver waits 0.5 s and more in
//! time-outs on every boot, so the controller is modelled here.)

use std::collections::VecDeque;

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// First port of the controller (data port).
pub const I8042_BASE: u64 = 0x60;
/// Ports 0x60..=0x64 (data and command/status).
pub const I8042_LEN: u64 = 5;

const DATA_OFFSET: u64 = 0;
const COMMAND_OFFSET: u64 = 4;

/// Status: output buffer full (data to read at 0x60).
const SB_OUT_DATA_AVAIL: u8 = 0x01;
/// Status: system flag (self test passed).
const SB_SYSTEM_FLAG: u8 = 0x04;
/// Status: the last write to 0x60 is a command parameter.
const SB_I8042_CMD_DATA: u8 = 0x08;
/// Status: keyboard not locked.
const SB_KBD_ENABLED: u8 = 0x10;

/// Control byte: keyboard interrupt enabled.
const CB_KBD_INT: u8 = 0x01;
/// Control byte: system flag (POST passed).
const CB_POST_OK: u8 = 0x04;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_RESET_CPU: u8 = 0xfe;

const SELF_TEST_OK: u8 = 0x55;
const PORT_TEST_OK: u8 = 0x00;
const KBD_ACK: u8 = 0xfa;
/// Bound on queued output bytes (the guest drains them; a real controller holds one).
const OUT_BUFFER_CAP: usize = 16;

/// The i8042 controller.
pub struct I8042 {
    reset_evt: EventFd,
    status: u8,
    control: u8,
    outp: u8,
    pending_cmd: Option<u8>,
    out: VecDeque<u8>,
}

impl I8042 {
    /// A controller that writes `reset_evt` when the guest asks for a CPU reset.
    pub fn new(reset_evt: EventFd) -> Self {
        I8042 {
            reset_evt,
            status: SB_SYSTEM_FLAG | SB_KBD_ENABLED,
            control: CB_POST_OK | CB_KBD_INT,
            outp: 0,
            pending_cmd: None,
            out: VecDeque::new(),
        }
    }

    fn push(&mut self, byte: u8) {
        if self.out.len() < OUT_BUFFER_CAP {
            self.out.push_back(byte);
        }
    }

    fn status(&self) -> u8 {
        let mut status = self.status & !(SB_OUT_DATA_AVAIL | SB_I8042_CMD_DATA);
        if !self.out.is_empty() {
            status |= SB_OUT_DATA_AVAIL;
        }
        if self.pending_cmd.is_some() {
            status |= SB_I8042_CMD_DATA;
        }
        status
    }

    fn command(&mut self, cmd: u8) {
        match cmd {
            CMD_READ_CTR => {
                self.out.clear();
                self.push(self.control);
            }
            CMD_WRITE_CTR | CMD_WRITE_OUTP => {
                self.out.clear();
                self.pending_cmd = Some(cmd);
            }
            CMD_READ_OUTP => {
                self.out.clear();
                self.push(self.outp);
            }
            CMD_SELF_TEST => {
                self.out.clear();
                self.push(SELF_TEST_OK);
            }
            CMD_KBD_TEST | CMD_AUX_TEST => {
                self.out.clear();
                self.push(PORT_TEST_OK);
            }
            CMD_RESET_CPU => {
                // Only fails when the counter would overflow: a reset is pending already.
                let _ = self.reset_evt.write(1);
            }
            CMD_AUX_DISABLE | CMD_AUX_ENABLE | CMD_KBD_DISABLE | CMD_KBD_ENABLE => {}
            _ => {}
        }
    }

    fn data(&mut self, value: u8) {
        match self.pending_cmd.take() {
            Some(CMD_WRITE_CTR) => self.control = value,
            Some(CMD_WRITE_OUTP) => self.outp = value,
            // A byte for the keyboard itself: there is none, but acknowledge it like one.
            _ => self.push(KBD_ACK),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() != 1 {
            return;
        }
        data[0] = match offset {
            DATA_OFFSET => self.out.pop_front().unwrap_or(0),
            COMMAND_OFFSET => self.status(),
            _ => 0,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 {
            return;
        }
        match offset {
            DATA_OFFSET => self.data(data[0]),
            COMMAND_OFFSET => self.command(data[0]),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    fn dev() -> (I8042, EventFd) {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        (I8042::new(evt.try_clone().unwrap()), evt)
    }

    #[test]
    fn reset_command_fires_the_reset_event() {
        let (mut dev, evt) = dev();
        dev.write(4, &[CMD_SELF_TEST]);
        assert!(evt.read().is_err(), "only 0xfe resets");
        dev.write(0, &[0xfe]);
        assert!(evt.read().is_err(), "0xfe on the data port is no reset");
        dev.write(4, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
    }

    #[test]
    fn control_byte_round_trip_like_the_linux_driver() {
        let (mut dev, _evt) = dev();
        assert_eq!(read(&mut dev, 4) & SB_OUT_DATA_AVAIL, 0, "empty at start");
        dev.write(4, &[CMD_READ_CTR]);
        assert_ne!(read(&mut dev, 4) & SB_OUT_DATA_AVAIL, 0);
        assert_eq!(read(&mut dev, 0), CB_POST_OK | CB_KBD_INT);
        assert_eq!(read(&mut dev, 4) & SB_OUT_DATA_AVAIL, 0, "drained");
        dev.write(4, &[CMD_WRITE_CTR]);
        assert_ne!(read(&mut dev, 4) & SB_I8042_CMD_DATA, 0);
        dev.write(0, &[0x47]);
        assert_eq!(read(&mut dev, 4) & SB_I8042_CMD_DATA, 0);
        dev.write(4, &[CMD_READ_CTR]);
        assert_eq!(read(&mut dev, 0), 0x47);
    }

    #[test]
    fn self_tests_and_output_port() {
        let (mut dev, _evt) = dev();
        dev.write(4, &[CMD_SELF_TEST]);
        assert_eq!(read(&mut dev, 0), SELF_TEST_OK);
        dev.write(4, &[CMD_KBD_TEST]);
        assert_eq!(read(&mut dev, 0), PORT_TEST_OK);
        dev.write(4, &[CMD_WRITE_OUTP]);
        dev.write(0, &[0x03]);
        dev.write(4, &[CMD_READ_OUTP]);
        assert_eq!(read(&mut dev, 0), 0x03);
        // Keyboard bytes are acknowledged; the buffer stays bounded.
        for _ in 0..100 {
            dev.write(0, &[0xf4]);
        }
        let mut n = 0;
        while read(&mut dev, 4) & SB_OUT_DATA_AVAIL != 0 {
            assert_eq!(read(&mut dev, 0), KBD_ACK);
            n += 1;
        }
        assert_eq!(n, OUT_BUFFER_CAP);
    }
}
