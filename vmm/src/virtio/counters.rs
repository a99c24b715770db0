//! Per-device event counters (packets, bytes, errors, drops, resets by reason): lock-free
//! atomics that the device's worker thread bumps and the SIGUSR1 state dump prints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A fixed set of named counters of one device.
#[derive(Debug)]
pub struct Counters {
    device: String,
    names: &'static [&'static str],
    values: Box<[AtomicU64]>,
}

impl Counters {
    /// Counters named `names` (each starts at 0) for the device called `device`.
    pub fn new(device: impl Into<String>, names: &'static [&'static str]) -> Arc<Self> {
        Arc::new(Counters {
            device: device.into(),
            names,
            values: names.iter().map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The device these counters belong to.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Adds `n` to counter `index` (an index into the names); an index out of range is a
    /// programming error, counted nowhere rather than panicking on a runtime path.
    pub fn add(&self, index: usize, n: u64) {
        if let Some(v) = self.values.get(index) {
            v.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds one to counter `index`.
    pub fn inc(&self, index: usize) {
        self.add(index, 1);
    }

    /// The current value of counter `index` (0 if out of range).
    pub fn get(&self, index: usize) -> u64 {
        self.values
            .get(index)
            .map_or(0, |v| v.load(Ordering::Relaxed))
    }

    /// The value of the counter called `name`, if there is one.
    pub fn by_name(&self, name: &str) -> Option<u64> {
        let index = self.names.iter().position(|n| *n == name)?;
        Some(self.get(index))
    }

    /// `name=value` for every counter, in order, on one line.
    pub fn summary(&self) -> String {
        self.names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name}={}", self.get(i)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_prints_in_order() {
        let c = Counters::new("vsock", &["a", "b"]);
        c.inc(1);
        c.add(0, 5);
        c.inc(1);
        c.inc(7); // out of range: ignored
        assert_eq!(c.summary(), "a=5 b=2");
        assert_eq!(c.by_name("b"), Some(2));
        assert_eq!(c.by_name("zz"), None);
        assert_eq!(c.device(), "vsock");
    }
}
