//! `peapod-agent`: the guest agent binary (PID 1 in the microVM, or host mode for tests).

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

fn main() {
    let pid1 = std::process::id() == 1;
    let args = match Args::try_parse() {
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
