//! `launch CMD ARGS...`: starts CMD the way an interactive terminal does, for the pod
//! end-to-end cases: SIGINT and SIGQUIT back to their default action (a shell without job
//! control starts background commands with both ignored, and children inherit that) and a
//! process group of its own (so `kill -INT -PID` reaches CMD and every child it did not move
//! elsewhere, like Ctrl-C). Then it execs CMD in place (same pid).
//!
//! Built with plain `rustc` by tests/pod-e2e/run.sh (no dependencies, not a workspace member).

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

const SIGINT: i32 = 2;
const SIGQUIT: i32 = 3;
const SIG_DFL: usize = 0;

extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn setpgid(pid: i32, pgid: i32) -> i32;
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: launch CMD [ARGS...]");
        return ExitCode::from(125);
    };
    for sig in [SIGINT, SIGQUIT] {
        // SAFETY: installs the default disposition (no handler code runs) for a valid signal
        // number; the process is single-threaded here.
        unsafe { signal(sig, SIG_DFL) };
    }
    // SAFETY: setpgid(0, 0) only changes this process's own process group.
    if unsafe { setpgid(0, 0) } != 0 {
        eprintln!("launch: setpgid: {}", std::io::Error::last_os_error());
        return ExitCode::from(125);
    }
    let err = Command::new(&program).args(args).exec();
    eprintln!("launch: cannot run {}: {err}", program.to_string_lossy());
    ExitCode::from(127)
}
