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
///
/// The guest controls how much it prints, so the total is capped (`limit`): past it, output is
/// dropped after one note, and a hostile guest cannot fill the host's disk through its console.
pub struct ConsoleWriter {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    limit: u64,
    written: u64,
}

impl ConsoleWriter {
    /// Bytes kept at most before they are written out.
    pub const CAPACITY: usize = 4096;

    /// Note written once when the limit is reached.
    pub const TRUNCATED_NOTE: &'static [u8] =
        b"\n[peapod-vmm: console output limit reached, further output dropped]\n";

    /// A writer in front of `out` that writes at most `limit` bytes of guest output.
    pub fn new(out: Box<dyn Write + Send>, limit: u64) -> Self {
        ConsoleWriter {
            out,
            buf: Vec::with_capacity(Self::CAPACITY),
            limit,
            written: 0,
        }
    }

    /// Writes out everything kept so far (up to the limit).
    pub fn write_pending(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let room = self.limit.saturating_sub(self.written);
        if room == 0 {
            self.buf.clear();
            return Ok(());
        }
        let take = self
            .buf
            .len()
            .min(usize::try_from(room).unwrap_or(usize::MAX));
        self.written += take as u64;
        let mut result = self.out.write_all(&self.buf[..take]);
        if self.written >= self.limit {
            result = result.and_then(|()| self.out.write_all(Self::TRUNCATED_NOTE));
        }
        let result = result.and_then(|()| self.out.flush());
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
    /// A UART raising `irq_evt` and writing at most `limit` transmitted bytes to `out`.
    pub fn new(irq_evt: EventFd, out: Box<dyn Write + Send>, limit: u64) -> Self {
        SerialDevice {
            serial: Serial::new(EventFdTrigger::new(irq_evt), ConsoleWriter::new(out, limit)),
        }
    }

    /// Queues bytes for the guest to read (console input); returns how many fit.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> Result<usize, SerialError> {
        self.serial
            .enqueue_raw_bytes(bytes)
            .map_err(|e| SerialError::Input(format!("{e:?}")))
    }

    /// How many input bytes the receive FIFO can still take.
    pub fn input_capacity(&self) -> usize {
        self.serial.fifo_capacity()
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
        let mut dev = SerialDevice::new(evt.try_clone().unwrap(), Box::new(buf.clone()), 1 << 20);
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
        // Input: queued bytes are readable from the receive buffer register.
        let room = dev.input_capacity();
        assert_eq!(dev.enqueue_input(b"ls").unwrap(), 2);
        assert_eq!(dev.input_capacity(), room - 2);
        let mut rbr = [0u8];
        dev.read(0, &mut rbr);
        assert_eq!(rbr[0], b'l');
        assert!(evt.read().unwrap() >= 1);
        // Line status register: transmitter empty.
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }

    #[test]
    fn long_lines_are_written_in_chunks() {
        let buf = SharedBuf::default();
        let mut w = ConsoleWriter::new(Box::new(buf.clone()), 1 << 20);
        for _ in 0..ConsoleWriter::CAPACITY {
            w.write_all(b"a").unwrap();
            w.flush().unwrap();
        }
        assert_eq!(buf.0.lock().unwrap().len(), ConsoleWriter::CAPACITY);
    }

    #[test]
    fn output_is_capped() {
        let buf = SharedBuf::default();
        let mut w = ConsoleWriter::new(Box::new(buf.clone()), 10);
        w.write_all(b"12345678\n").unwrap();
        w.write_all(b"abcdef\n").unwrap();
        w.write_all(b"more\n").unwrap();
        let mut want = b"12345678\na".to_vec();
        want.extend_from_slice(ConsoleWriter::TRUNCATED_NOTE);
        assert_eq!(buf.0.lock().unwrap().as_slice(), want.as_slice());
    }
}
