//! Guest system chores of the probe as PID 1: early mounts, console, clocks, power off.

use std::fs::{self, OpenOptions};
use std::io::Write;

use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};
use nix::time::{clock_gettime, ClockId};
use thiserror::Error;

/// Errors of the system chores.
#[derive(Debug, Error)]
pub enum SystemError {
    /// A mount failed.
    #[error("mount {target}: {source}")]
    Mount {
        /// Mount point.
        target: &'static str,
        /// Cause.
        source: nix::Error,
    },
    /// /proc/uptime could not be read or parsed.
    #[error("read /proc/uptime: {0}")]
    Uptime(String),
    /// A clock could not be read.
    #[error("clock_gettime: {0}")]
    Clock(nix::Error),
    /// reboot(2) returned.
    #[error("reboot: {0}")]
    Reboot(nix::Error),
}

/// Mounts /proc and /dev (devtmpfs); an already mounted /dev is fine.
pub fn early_mounts() -> Result<(), SystemError> {
    for (source, target, fstype) in [("proc", "/proc", "proc"), ("devtmpfs", "/dev", "devtmpfs")] {
        let _ = fs::create_dir_all(target);
        match mount(
            Some(source),
            target,
            Some(fstype),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            None::<&str>,
        ) {
            Ok(()) | Err(nix::Error::EBUSY) => {}
            Err(source) => return Err(SystemError::Mount { target, source }),
        }
    }
    Ok(())
}

/// The serial console, or stdout when /dev/console cannot be opened.
pub fn console() -> Box<dyn Write> {
    match OpenOptions::new().write(true).open("/dev/console") {
        Ok(f) => Box::new(f),
        Err(_) => Box::new(std::io::stdout()),
    }
}

/// Uptime in milliseconds from /proc/uptime (kernel entry to now, 10 ms resolution).
pub fn uptime_ms() -> Result<u64, SystemError> {
    let text =
        fs::read_to_string("/proc/uptime").map_err(|e| SystemError::Uptime(e.to_string()))?;
    parse_uptime_ms(&text)
        .ok_or_else(|| SystemError::Uptime(format!("unexpected content {text:?}")))
}

fn parse_uptime_ms(text: &str) -> Option<u64> {
    let first = text.split_whitespace().next()?;
    let (secs, frac) = first.split_once('.').unwrap_or((first, "0"));
    let secs: u64 = secs.parse().ok()?;
    let frac = format!("{frac:0<3}");
    let ms: u64 = frac.get(..3)?.parse().ok()?;
    Some(secs * 1000 + ms)
}

/// CLOCK_BOOTTIME (the clock behind /proc/uptime) in microseconds.
pub fn boottime_us() -> Result<u64, SystemError> {
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME).map_err(SystemError::Clock)?;
    let us = ts.tv_sec() * 1_000_000 + ts.tv_nsec() / 1000;
    Ok(u64::try_from(us).unwrap_or(0))
}

/// Kernel command line word that makes the probe reboot instead of powering off.
pub const REBOOT_PARAM: &str = "peapod_probe=reboot";

/// How the probe ends the VM: `reboot(RB_POWER_OFF)` by default.
///
/// The microVM has no ACPI, so Linux turns a power off into a halt (`reboot: System halted`,
/// every vCPU in `hlt` with interrupts off); peapod-vmm detects that state and exits with
/// status 0 (docs/vmm.md, "Guest power-off without ACPI"), within its 500 ms probe period.
/// `peapod_probe=reboot` on the kernel command line selects `RB_AUTOBOOT` instead: with
/// `reboot=k` the kernel resets through the i8042, which ends the VMM at once.
pub fn shutdown_mode() -> RebootMode {
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    mode_for_cmdline(&cmdline)
}

fn mode_for_cmdline(cmdline: &str) -> RebootMode {
    if cmdline.split_whitespace().any(|w| w == REBOOT_PARAM) {
        RebootMode::RB_AUTOBOOT
    } else {
        RebootMode::RB_POWER_OFF
    }
}

/// Ends the VM with `reboot(mode)`; only returns on failure.
pub fn shutdown(mode: RebootMode) -> Result<(), SystemError> {
    nix::unistd::sync();
    match reboot(mode) {
        Ok(never) => match never {},
        Err(e) => Err(SystemError::Reboot(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::{mode_for_cmdline, parse_uptime_ms};
    use nix::sys::reboot::RebootMode;

    #[test]
    fn shutdown_mode_from_cmdline() {
        assert_eq!(
            mode_for_cmdline("console=ttyS0 reboot=k\n"),
            RebootMode::RB_POWER_OFF
        );
        assert_eq!(
            mode_for_cmdline("console=ttyS0 peapod_probe=reboot panic=1\n"),
            RebootMode::RB_AUTOBOOT
        );
        assert_eq!(
            mode_for_cmdline("peapod_probe=rebootx"),
            RebootMode::RB_POWER_OFF
        );
    }

    #[test]
    fn parses_uptime() {
        assert_eq!(parse_uptime_ms("1.23 0.50\n"), Some(1230));
        assert_eq!(parse_uptime_ms("12.5 0.50\n"), Some(12500));
        assert_eq!(parse_uptime_ms("0.07 0.00\n"), Some(70));
        assert_eq!(parse_uptime_ms("3 0\n"), Some(3000));
        assert_eq!(parse_uptime_ms("x 0\n"), None);
        assert_eq!(parse_uptime_ms(""), None);
    }
}
