//! Console lines printed by the probe and their parser (used by the host side of the test).

use thiserror::Error;

/// Prefix of every line the probe prints.
pub const PREFIX: &str = "peapod-boot-probe: ";
/// Printed first, as soon as /init runs.
pub const HELLO: &str = "peapod-boot-probe: hello from the guest";
/// Printed after the guest → host exchange succeeded.
pub const GUEST_TO_HOST_OK: &str = "peapod-boot-probe: vsock guest->host ok";
/// Printed after the host → guest exchange succeeded.
pub const HOST_TO_GUEST_OK: &str = "peapod-boot-probe: vsock host->guest ok";
/// Printed last, right before the probe ends the VM with `reboot(2)`.
pub const SHUTDOWN: &str = "peapod-boot-probe: shutting down";
/// Key of the uptime at /init start (milliseconds, from /proc/uptime).
pub const KEY_UPTIME_MS: &str = "uptime_at_init_ms";
/// Key of the boot-time clock at /init start (microseconds, CLOCK_BOOTTIME, same clock as /proc/uptime).
pub const KEY_BOOTTIME_US: &str = "boottime_at_init_us";
/// Key of the time from /init start to the first vsock message written (microseconds).
pub const KEY_INIT_TO_VSOCK_US: &str = "init_to_first_vsock_us";

/// Errors parsing the probe's console output.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConsoleError {
    /// A required line is not in the console output.
    #[error("console has no line {0:?}")]
    MissingLine(String),
    /// A `key=value` figure is missing.
    #[error("console has no figure {0}")]
    MissingFigure(&'static str),
    /// A `key=value` figure is not a number.
    #[error("figure {key} has a non-numeric value {value:?}")]
    BadFigure {
        /// Key of the figure.
        key: &'static str,
        /// Value as printed.
        value: String,
    },
    /// The probe reported an error.
    #[error("the probe reported: {0}")]
    ProbeError(String),
}

/// Formats a `key=value` figure line.
pub fn figure_line(key: &str, value: u64) -> String {
    format!("{PREFIX}{key}={value}")
}

/// What the probe reported on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Guest uptime when /init started, milliseconds (/proc/uptime, 10 ms resolution).
    pub uptime_at_init_ms: u64,
    /// CLOCK_BOOTTIME when /init started, microseconds.
    pub boottime_at_init_us: u64,
    /// Time from /init start to the first vsock message written, microseconds.
    pub init_to_first_vsock_us: u64,
}

/// Lines of `console` with the probe's prefix, trimmed of `\r` and of anything the kernel
/// printed before the prefix on the same line.
fn probe_lines(console: &str) -> impl Iterator<Item = &str> {
    console
        .lines()
        .filter_map(|l| l.find(PREFIX).map(|i| l[i..].trim_end_matches('\r')))
}

fn figure(console: &str, key: &'static str) -> Result<u64, ConsoleError> {
    let wanted = format!("{PREFIX}{key}=");
    let value = probe_lines(console)
        .find_map(|l| l.strip_prefix(wanted.as_str()))
        .ok_or(ConsoleError::MissingFigure(key))?;
    value.trim().parse().map_err(|_| ConsoleError::BadFigure {
        key,
        value: value.to_string(),
    })
}

/// Checks that the probe printed every expected line and extracts its figures.
pub fn parse(console: &str) -> Result<ProbeReport, ConsoleError> {
    let error_prefix = format!("{PREFIX}error: ");
    if let Some(err) = probe_lines(console).find_map(|l| l.strip_prefix(error_prefix.as_str())) {
        return Err(ConsoleError::ProbeError(err.to_string()));
    }
    for line in [HELLO, GUEST_TO_HOST_OK, HOST_TO_GUEST_OK, SHUTDOWN] {
        if !probe_lines(console).any(|l| l == line) {
            return Err(ConsoleError::MissingLine(line.to_string()));
        }
    }
    Ok(ProbeReport {
        uptime_at_init_ms: figure(console, KEY_UPTIME_MS)?,
        boottime_at_init_us: figure(console, KEY_BOOTTIME_US)?,
        init_to_first_vsock_us: figure(console, KEY_INIT_TO_VSOCK_US)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> String {
        [
            "[    0.000000] Linux version 6.1",
            HELLO,
            &figure_line(KEY_UPTIME_MS, 1234),
            &figure_line(KEY_BOOTTIME_US, 1_234_567),
            GUEST_TO_HOST_OK,
            HOST_TO_GUEST_OK,
            &figure_line(KEY_INIT_TO_VSOCK_US, 8_901),
            SHUTDOWN,
            "[    2.000000] reboot: Power down",
        ]
        .join("\r\n")
    }

    #[test]
    fn parses_complete_output() {
        let report = parse(&full()).unwrap();
        assert_eq!(
            report,
            ProbeReport {
                uptime_at_init_ms: 1234,
                boottime_at_init_us: 1_234_567,
                init_to_first_vsock_us: 8_901,
            }
        );
    }

    #[test]
    fn missing_line_is_reported() {
        let console = full().replace(HOST_TO_GUEST_OK, "");
        assert_eq!(
            parse(&console),
            Err(ConsoleError::MissingLine(HOST_TO_GUEST_OK.to_string()))
        );
    }

    #[test]
    fn missing_and_bad_figures_are_reported() {
        let console = full().replace(&figure_line(KEY_UPTIME_MS, 1234), "");
        assert_eq!(
            parse(&console),
            Err(ConsoleError::MissingFigure(KEY_UPTIME_MS))
        );
        let console = full().replace("init_to_first_vsock_us=8901", "init_to_first_vsock_us=x");
        assert!(matches!(
            parse(&console),
            Err(ConsoleError::BadFigure { .. })
        ));
    }

    #[test]
    fn probe_error_wins() {
        let console = format!("{}\r\n{PREFIX}error: connect failed", full());
        assert_eq!(
            parse(&console),
            Err(ConsoleError::ProbeError("connect failed".to_string()))
        );
    }

    #[test]
    fn kernel_text_before_prefix_is_ignored() {
        let console = full().replace(HELLO, &format!("[    1.0] x{HELLO}"));
        assert!(parse(&console).is_ok());
    }
}
