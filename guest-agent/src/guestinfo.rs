//! `GetGuestInfo`: the guest's uptime (`CLOCK_BOOTTIME`), when the agent became ready, and
//! `MemTotal`/`MemAvailable` from `/proc/meminfo`.

use std::sync::atomic::{AtomicU64, Ordering};

use agent_protocol::GuestInfo;
use nix::time::{clock_gettime, ClockId};

/// Errors collecting the guest facts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuestInfoError {
    /// `clock_gettime(CLOCK_BOOTTIME)` failed.
    #[error("clock_gettime(CLOCK_BOOTTIME): {0}")]
    Clock(nix::Error),
    /// `/proc/meminfo` could not be read.
    #[error("read /proc/meminfo: {0}")]
    Read(String),
    /// A field is missing or malformed.
    #[error("/proc/meminfo: no valid {0} line")]
    Field(&'static str),
    /// The listener has not reported ready yet.
    #[error("the agent is not ready yet")]
    NotReady,
}

/// Nanoseconds since the kernel started, suspend included (`CLOCK_BOOTTIME`).
pub fn boottime_ns() -> Result<u64, GuestInfoError> {
    let t = clock_gettime(ClockId::CLOCK_BOOTTIME).map_err(GuestInfoError::Clock)?;
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// `(MemTotal, MemAvailable)` in bytes from the text of `/proc/meminfo` (values in kB).
pub fn parse_meminfo(text: &str) -> Result<(u64, u64), GuestInfoError> {
    let field = |name: &'static str| -> Result<u64, GuestInfoError> {
        text.lines()
            .find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                let mut parts = rest.split_whitespace();
                let n: u64 = parts.next()?.parse().ok()?;
                match (parts.next(), parts.next()) {
                    (Some("kB"), None) => n.checked_mul(1024),
                    _ => None,
                }
            })
            .ok_or(GuestInfoError::Field(name))
    };
    Ok((field("MemTotal")?, field("MemAvailable")?))
}

/// When the agent's listener became ready, on the `CLOCK_BOOTTIME` clock (0: not yet).
#[derive(Debug, Default)]
pub struct Readiness(AtomicU64);

impl Readiness {
    /// Records now as the ready time (the first call wins).
    pub fn mark(&self) {
        let now = boottime_ns().unwrap_or(0).max(1);
        let _ = self
            .0
            .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The ready time, if recorded.
    pub fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }
}

/// Collects the facts.
pub fn collect(ready: &Readiness) -> Result<GuestInfo, GuestInfoError> {
    let agent_ready_ns = ready.get().ok_or(GuestInfoError::NotReady)?;
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| GuestInfoError::Read(e.to_string()))?;
    let (mem_total_bytes, mem_available_bytes) = parse_meminfo(&text)?;
    Ok(GuestInfo {
        uptime_ns: boottime_ns()?,
        agent_ready_ns,
        mem_total_bytes,
        mem_available_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "MemTotal:         503700 kB\nMemFree:          480000 kB\nMemAvailable:     470123 kB\nBuffers:               0 kB\nHugePages_Total:       0\n";

    #[test]
    fn parses_meminfo() {
        assert_eq!(parse_meminfo(SAMPLE), Ok((503_700 * 1024, 470_123 * 1024)));
        // Order does not matter; a field name that is a prefix of another does not match.
        let t = "MemAvailableX: 1 kB\nMemAvailable: 2 kB\nMemTotal: 3 kB\n";
        assert_eq!(parse_meminfo(t), Ok((3 * 1024, 2 * 1024)));
    }

    #[test]
    fn refuses_broken_meminfo() {
        assert_eq!(
            parse_meminfo("MemTotal: 10 kB\n"),
            Err(GuestInfoError::Field("MemAvailable"))
        );
        assert_eq!(
            parse_meminfo("MemTotal: ten kB\nMemAvailable: 1 kB\n"),
            Err(GuestInfoError::Field("MemTotal"))
        );
        assert_eq!(
            parse_meminfo("MemTotal: 10 MB\nMemAvailable: 1 kB\n"),
            Err(GuestInfoError::Field("MemTotal"))
        );
        assert_eq!(
            parse_meminfo("MemTotal: 18446744073709551615 kB\nMemAvailable: 1 kB\n"),
            Err(GuestInfoError::Field("MemTotal"))
        );
        assert_eq!(parse_meminfo(""), Err(GuestInfoError::Field("MemTotal")));
    }

    #[test]
    fn readiness_is_recorded_once_and_collected() {
        let r = Readiness::default();
        assert_eq!(collect(&r), Err(GuestInfoError::NotReady));
        r.mark();
        let first = r.get().unwrap();
        r.mark();
        assert_eq!(r.get(), Some(first));
        let g = collect(&r).unwrap();
        assert!(g.uptime_ns >= g.agent_ready_ns, "{g:?}");
        assert!(g.mem_total_bytes >= g.mem_available_bytes && g.mem_total_bytes > 0);
        // This machine's own meminfo parses to the same total.
        let text = std::fs::read_to_string("/proc/meminfo").unwrap();
        assert_eq!(parse_meminfo(&text).unwrap().0, g.mem_total_bytes);
    }
}
