//! An address bus (port I/O or MMIO) that routes guest accesses to the device owning the range.
//!
//! The bus is built once during VM setup and then shared read-only between vCPU threads; each
//! device sits behind its own mutex.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that answers guest accesses inside its address range.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset` from the device's base address.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset` from the device's base address.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the bus and its owner.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors of the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range has length zero.
    #[error("bus range at {0:#x} has zero length")]
    ZeroLength(u64),
    /// base + len does not fit in 64 bits.
    #[error("bus range {base:#x}+{len:#x} overflows")]
    Overflow { base: u64, len: u64 },
    /// The range overlaps one already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps {other_base:#x}+{other_len:#x}")]
    Overlap {
        base: u64,
        len: u64,
        other_base: u64,
        other_len: u64,
    },
}

struct Entry {
    len: u64,
    device: SharedDevice,
}

/// Address ranges mapped to devices; ranges never overlap.
#[derive(Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Entry>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Bus::default()
    }

    /// Places `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::ZeroLength(base));
        }
        let end = base
            .checked_add(len)
            .ok_or(BusError::Overflow { base, len })?;
        // The nearest range starting at or below the new one, and the nearest above it.
        let below = self.ranges.range(..=base).next_back();
        let above = self.ranges.range(base..).next();
        for (&other_base, other) in below.into_iter().chain(above) {
            let other_end = other_base.saturating_add(other.len);
            if base < other_end && other_base < end {
                return Err(BusError::Overlap {
                    base,
                    len,
                    other_base,
                    other_len: other.len,
                });
            }
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// The device owning `addr` and the offset of `addr` inside its range.
    pub fn resolve(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (&base, entry) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < entry.len).then_some((offset, &entry.device))
    }

    /// Routes a read; returns false when no device owns `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((offset, device)) => {
                lock(device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Routes a write; returns false when no device owns `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((offset, device)) => {
                lock(device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device; a device whose previous user panicked is still usable (its state is plain
/// register values), so a poisoned lock is not an error here.
fn lock(device: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    fn dev() -> SharedDevice {
        Arc::new(Mutex::new(Recorder::default()))
    }

    #[test]
    fn routes_to_the_right_device_with_offsets() {
        let mut bus = Bus::new();
        let a = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        bus.insert(0x60, 5, dev()).unwrap();
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data[0], 5);
        assert!(bus.write(0x3f9, &[0xaa]));
        assert_eq!(a.lock().unwrap().last_write, Some((1, vec![0xaa])));
        assert!(!bus.read(0x400, &mut data));
        assert!(!bus.read(0x3f7, &mut data));
        assert!(!bus.write(0x65, &[0]));
        assert!(bus.write(0x64, &[0]));
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x1000, dev()).unwrap();
        for (base, len) in [(0x1000, 1), (0xfff, 2), (0x1fff, 0x10), (0x800, 0x2000)] {
            assert!(
                matches!(bus.insert(base, len, dev()), Err(BusError::Overlap { .. })),
                "{base:#x}+{len:#x}"
            );
        }
        // Adjacent ranges are fine.
        bus.insert(0x2000, 0x1000, dev()).unwrap();
        bus.insert(0x0, 0x1000, dev()).unwrap();
    }

    #[test]
    fn degenerate_ranges_are_rejected() {
        let mut bus = Bus::new();
        assert_eq!(
            bus.insert(5, 0, dev()).unwrap_err(),
            BusError::ZeroLength(5)
        );
        assert!(matches!(
            bus.insert(u64::MAX, 2, dev()),
            Err(BusError::Overflow { .. })
        ));
    }
}
