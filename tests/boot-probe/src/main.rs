//! `boot-probe`: the `/init` of the boot end-to-end test's initramfs. Prints a console line,
//! makes one vsock exchange in each direction, prints boot timings and ends the VM.

mod system;
mod vsock;

use std::fmt::Display;
use std::io::Write;
use std::time::Instant;

use boot_probe::console::{self, figure_line};
use boot_probe::{
    GUEST_PING, GUEST_PONG, GUEST_TO_HOST_PORT, HOST_CID, HOST_PING, HOST_PONG, HOST_TO_GUEST_PORT,
};

/// Where the probe prints: the console, falling back to stdout.
struct Out(Box<dyn Write>);

impl Out {
    fn line(&mut self, line: impl Display) {
        // Nothing sensible is left to do when the console itself fails.
        let _ = writeln!(self.0, "{line}");
        let _ = self.0.flush();
    }
}

fn main() {
    let init_start = Instant::now();
    let boottime_us = system::boottime_us().unwrap_or(0);
    let early = system::early_mounts();
    let mut out = Out(system::console());
    out.line(console::HELLO);
    if let Err(e) = early {
        out.line(format_args!("{}warning: {e}", console::PREFIX));
    }
    match system::uptime_ms() {
        Ok(ms) => out.line(figure_line(console::KEY_UPTIME_MS, ms)),
        Err(e) => out.line(format_args!("{}error: {e}", console::PREFIX)),
    }
    out.line(figure_line(console::KEY_BOOTTIME_US, boottime_us));

    if let Err(e) = exchanges(&mut out, init_start) {
        out.line(format_args!("{}error: {e}", console::PREFIX));
    }
    out.line(console::SHUTDOWN);
    if let Err(e) = system::shutdown(system::shutdown_mode()) {
        out.line(format_args!("{}error: {e}", console::PREFIX));
    }
}

/// Guest → host, then host → guest. The listener exists before the first message goes out,
/// so the host may connect as soon as it has seen that message.
fn exchanges(out: &mut Out, init_start: Instant) -> Result<(), vsock::VsockError> {
    let listener = vsock::listen(HOST_TO_GUEST_PORT)?;

    let mut to_host = vsock::connect(HOST_CID, GUEST_TO_HOST_PORT)?;
    vsock::send(&mut to_host, GUEST_PING)?;
    let first_vsock = init_start.elapsed();
    vsock::expect_line(&mut to_host, HOST_PONG)?;
    drop(to_host);
    out.line(console::GUEST_TO_HOST_OK);

    let mut from_host = vsock::accept(&listener)?;
    out.line(format_args!(
        "{}host->guest connection accepted",
        console::PREFIX
    ));
    vsock::expect_line(&mut from_host, HOST_PING)?;
    vsock::send(&mut from_host, GUEST_PONG)?;
    drop(from_host);
    out.line(console::HOST_TO_GUEST_OK);

    let us = u64::try_from(first_vsock.as_micros()).unwrap_or(u64::MAX);
    out.line(figure_line(console::KEY_INIT_TO_VSOCK_US, us));
    Ok(())
}
