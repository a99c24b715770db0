//! The 16550 UART at 0x3f8 (COM1, IRQ 4) writing the guest console to a host file or stdout.

use std::io::{self, Write};

use vm_superio::serial::NoEvents;
use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// Port base of COM1.
pub const COM1_BASE: u64 = 0x3f8;
/// Number of ports of a 16550.
pub const COM1_LEN: u64 = 8;
/// Legacy IRQ line (and GSI) of COM1.
pub const COM1_GSI: u32 = 4;

/// Errors of the serial device.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The guest input could not be queued.
    #[error("cannot queue serial input: {0}")]
    Input(String),
}

/// Console output, written out a line at a time.
///
/// vm-superio writes and flushes every transmitted byte; passing that through would cost a
/// system call per byte of guest console output (on the vCPU thread). This writer keeps bytes
/// until a newline or [`ConsoleWriter::CAPACITY`] bytes, and its `flush` is a no-op: the VMM
/// calls [`SerialDevice::flush`] when the VM stops, so partial lines are not lost.
pub struct ConsoleWriter {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
}

impl ConsoleWriter {
    /// Bytes kept at most before they are written out.
    pub const CAPACITY: usize = 4096;

    /// A writer in front of `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        ConsoleWriter {
            out,
            buf: Vec::with_capacity(Self::CAPACITY),
        }
    }

    /// Writes out everything kept so far.
    pub fn write_pending(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush());
        // On error the bytes are dropped: console output must never stall the guest.
        self.buf.clear();
        result
    }
}

impl Write for ConsoleWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if data.contains(&b'\n') || self.buf.len() >= Self::CAPACITY {
            self.write_pending()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The guest console: a vm-superio 16550 whose interrupt is an irqfd.
pub struct SerialDevice {
    serial: Serial<EventFdTrigger, NoEvents, ConsoleWriter>,
}

impl SerialDevice {
    /// A UART raising `irq_evt` and writing transmitted bytes to `out`.
    pub fn new(irq_evt: EventFd, out: Box<dyn Write + Send>) -> Self {
        SerialDevice {
            serial: Serial::new(EventFdTrigger::new(irq_evt), ConsoleWriter::new(out)),
        }
    }

    /// Queues bytes for the guest to read (console input); returns how many fit.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> Result<usize, SerialError> {
        self.serial
            .enqueue_raw_bytes(bytes)
            .map_err(|e| SerialError::Input(format!("{e:?}")))
    }

    /// Writes out buffered console output (a last partial line).
    pub fn flush(&mut self) -> io::Result<()> {
        self.serial.writer_mut().write_pending()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || offset >= COM1_LEN {
            data.fill(0);
            return;
        }
        data[0] = self.serial.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 || offset >= COM1_LEN {
            return;
        }
        // A failed console write must not stop the guest; the output is lost.
        let _ = self.serial.write(offset as u8, data[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmitted_bytes_reach_the_console_and_raise_the_irq() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let buf = SharedBuf::default();
        let mut dev = SerialDevice::new(evt.try_clone().unwrap(), Box::new(buf.clone()));
        // Enable the THR-empty interrupt (IER bit 1), then send "hi".
        dev.write(1, &[0x02]);
        dev.write(0, b"h");
        dev.write(0, b"i");
        assert!(
            buf.0.lock().unwrap().is_empty(),
            "kept until the end of the line"
        );
        dev.write(0, b"\n");
        dev.write(0, b"x");
        assert_eq!(buf.0.lock().unwrap().as_slice(), b"hi\n");
        dev.flush().unwrap();
        assert_eq!(buf.0.lock().unwrap().as_slice(), b"hi\nx");
        assert!(evt.read().unwrap() >= 1);
        // Line status register: transmitter empty.
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }

    #[test]
    fn long_lines_are_written_in_chunks() {
        let buf = SharedBuf::default();
        let mut w = ConsoleWriter::new(Box::new(buf.clone()));
        for _ in 0..ConsoleWriter::CAPACITY {
            w.write_all(b"a").unwrap();
            w.flush().unwrap();
        }
        assert_eq!(buf.0.lock().unwrap().len(), ConsoleWriter::CAPACITY);
    }
}
