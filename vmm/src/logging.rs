//! The VMM's log backend: every `log` record at or above the chosen level goes to stderr (the
//! pod's `vmm.log`) as one line, `peapod-vmm: LEVEL +SECONDS message`, the seconds counted from
//! the VMM's start so that lines can be matched with the guest console and the host's events.

use std::io::Write;
use std::time::Instant;

use log::LevelFilter;

/// The level used when none is given: warnings and errors, which are never routine.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::Warn;

/// Installs the stderr logger at `level` for the VMM's own messages; the crates it uses log at
/// most their warnings (fuse-backend-rs, for one, traces every request at debug). A second call
/// (tests) leaves the first logger in place.
pub fn init(level: LevelFilter, start: Instant) {
    let _ = env_logger::Builder::new()
        .filter_level(level.min(LevelFilter::Warn))
        .filter_module("vmm", level)
        .target(env_logger::Target::Stderr)
        .format(move |buf, record| {
            writeln!(
                buf,
                "{}",
                format_line(record.level(), start.elapsed().as_secs_f64(), record.args())
            )
        })
        .try_init();
}

/// One log line (without the newline).
pub fn format_line(level: log::Level, secs: f64, message: &std::fmt::Arguments<'_>) -> String {
    format!("peapod-vmm: {level:<5} +{secs:.3}s {message}")
}

/// Installs a panic hook that prints the panic (the default hook: thread name, message,
/// location) and then aborts the process: a panic in any thread, a device worker included,
/// ends the VM loudly instead of leaving a dead device behind a guest that waits for it.
pub fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!("peapod-vmm: a thread panicked: aborting the VM");
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let line = format_line(log::Level::Warn, 1.23456, &format_args!("vsock: x"));
        assert_eq!(line, "peapod-vmm: WARN  +1.235s vsock: x");
    }
}
