//! `peapod-agent`: the guest agent binary (PID 1 in the microVM, or host mode for tests).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "peapod-agent", version, about = "peapod guest agent")]
struct Args {
    /// Listen on this vsock port (the default when running as PID 1: 1024).
    #[arg(long, conflicts_with = "listen_unix")]
    vsock_port: Option<u32>,
    /// Host mode: unshare a sandbox and listen on this Unix socket.
    #[arg(long)]
    listen_unix: Option<PathBuf>,
    /// Scratch directory (a tmpfs is mounted there).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

/// Options that take a value as the next argument.
const VALUE_OPTIONS: [&str; 3] = ["--vsock-port", "--listen-unix", "--state-dir"];

/// As PID 1 the kernel hands `/init` every boot parameter it does not know and that has no
/// `=` (e.g. `nomodules`): keep only the program name, `--options` and their values.
fn pid1_args(argv: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut want_value = false;
    for (i, a) in argv.into_iter().enumerate() {
        let s = a.to_string_lossy();
        if i == 0 || s.starts_with("--") || want_value {
            want_value = VALUE_OPTIONS.contains(&s.as_ref());
            out.push(a);
        }
    }
    out
}

fn main() {
    let pid1 = std::process::id() == 1;
    let parsed = if pid1 {
        Args::try_parse_from(pid1_args(std::env::args_os()))
    } else {
        Args::try_parse()
    };
    let args = match parsed {
        Ok(a) => a,
        Err(e) if !pid1 => e.exit(),
        Err(e) => {
            // PID 1 must not exit on bad kernel command line arguments.
            eprintln!("peapod-agent: {e}; using defaults");
            Args {
                vsock_port: None,
                listen_unix: None,
                state_dir: None,
            }
        }
    };
    let mode = match (args.listen_unix, args.vsock_port) {
        (Some(path), _) => guest_agent::run::Mode::Unix(path),
        (None, Some(port)) => guest_agent::run::Mode::Vsock(port),
        (None, None) if pid1 => guest_agent::run::Mode::Vsock(agent_protocol::DEFAULT_VSOCK_PORT),
        (None, None) => {
            eprintln!("peapod-agent: give --listen-unix PATH or --vsock-port N");
            std::process::exit(2);
        }
    };
    guest_agent::run::run(mode, args.state_dir, pid1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn pid1_drops_kernel_parameters() {
        let kept = pid1_args(os(&["/init", "nomodules", "--vsock-port", "2000", "quiet"]));
        assert_eq!(kept, os(&["/init", "--vsock-port", "2000"]));
        let args = Args::try_parse_from(kept).unwrap();
        assert_eq!(args.vsock_port, Some(2000));
        let kept = pid1_args(os(&["/init", "nomodules", "pci=off"]));
        assert_eq!(kept, os(&["/init"]));
        assert!(Args::try_parse_from(kept).is_ok());
        let kept = pid1_args(os(&["/init", "--state-dir=/s", "x"]));
        assert_eq!(kept, os(&["/init", "--state-dir=/s"]));
    }
}
