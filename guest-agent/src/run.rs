//! The agent's top level: mode setup, listener, signal handling and the accept loop that, as
//! PID 1, never returns and never panics out.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::socket::{
    accept4, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
};

use crate::cgroup;
use crate::exec::TryCloneStream;
use crate::init;
use crate::net;
use crate::oom;
use crate::pod::Env;
use crate::reaper::Reaper;
use crate::server::Agent;
use crate::sys::{LinuxSys, Sys};

/// Where the agent listens.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Guest: vsock port.
    Vsock(u32),
    /// Host mode: Unix socket path (the agent unshares its sandbox first).
    Unix(PathBuf),
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("peapod-agent: {msg}");
}

fn cgroup_parent(guest: bool) -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = cgroup::cgroup2_mount(&mi)?;
    if guest {
        return Some(mount);
    }
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| cgroup::own_cgroup(&c))
        .unwrap_or_default();
    Some(mount.join(own.trim_start_matches('/')))
}

/// Runs the agent. Returns only in host mode after a shutdown (by exiting the process).
pub fn run(mode: Mode, state_dir: Option<PathBuf>, pid1: bool) {
    let guest = matches!(mode, Mode::Vsock(_)) && pid1;
    std::panic::set_hook(Box::new(|info| {
        log(format!("panic: {info}"));
    }));
    let sys = LinuxSys;
    let state_dir = state_dir.unwrap_or_else(|| PathBuf::from("/run/peapod"));
    // Out of the OOM killer's reach: as PID 1 its death panics the guest. The guest has no
    // /proc before `guest_setup`; host mode shields the sandbox's waiting parent too.
    let protect = || {
        if let Err(e) = oom::protect_agent(&sys) {
            log(format!(
                "warning: {e}: the OOM killer may pick the agent, and containers whose \
                 score would be lower than the agent's keep the agent's"
            ));
        }
    };
    if !guest {
        protect();
    }
    match &mode {
        Mode::Unix(_) => {
            if let Err(e) = init::host_sandbox(&state_dir, &sys) {
                log(e);
                std::process::exit(1);
            }
        }
        Mode::Vsock(_) if guest => {
            match init::leave_initramfs(&sys) {
                Ok(true) => log("initramfs root re-mounted as a bind mount of itself"),
                Ok(false) => {}
                Err(e) => log(format!("warning: {e}: containers will fail to pivot_root")),
            }
            init::guest_setup(&sys);
            protect();
            if let Err(e) = sys.mkdir_all(&state_dir) {
                log(e);
            }
        }
        Mode::Vsock(_) => {}
    }
    if let Err(e) = net::loopback_up() {
        log(format!("lo: {e}"));
    }
    // Signals are taken by a dedicated thread; everyone else (and children, until they reset
    // the mask before execve) has them blocked.
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGTERM);
    sigs.add(Signal::SIGINT);
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigs), None) {
        log(format!("sigprocmask: {e}"));
    }
    let reaper = Reaper::new();
    {
        let r = reaper.clone();
        spawn("reaper", move || r.run());
    }
    let env = Env {
        state_dir,
        cgroup_parent: cgroup_parent(guest),
    };
    let shutdown: crate::server::ShutdownHook = if guest {
        Box::new(|| init::poweroff())
    } else {
        Box::new(|| std::process::exit(0))
    };
    let agent = Agent::new(env, reaper, shutdown);
    {
        let a = agent.clone();
        spawn("signals", move || loop {
            if let Ok(sig) = sigs.wait() {
                log(format!("{sig:?}: stopping the pod"));
                a.stop_pod(None);
                if guest {
                    init::poweroff();
                }
                std::process::exit(0);
            }
        });
    }
    loop {
        let res = catch_unwind(AssertUnwindSafe(|| match &mode {
            Mode::Unix(path) => serve_unix(&agent, path),
            Mode::Vsock(port) => serve_vsock(&agent, *port),
        }));
        match res {
            Ok(Err(e)) => log(format!("listener: {e}")),
            Ok(Ok(())) => {}
            Err(_) => log("listener panicked"),
        }
        if !guest {
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        log(format!("cannot start thread {name}: {e}"));
    }
}

fn serve_conn<S>(agent: &Arc<Agent>, conn: S)
where
    S: std::io::Read + std::io::Write + Send + 'static + TryCloneStream,
{
    let a = agent.clone();
    spawn("conn", move || {
        if catch_unwind(AssertUnwindSafe(|| a.serve(conn))).is_err() {
            log("connection handler panicked");
        }
    });
}

fn serve_unix(agent: &Arc<Agent>, path: &PathBuf) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    agent.mark_ready();
    log(format!("listening on {}", path.display()));
    loop {
        match listener.accept() {
            Ok((conn, _)) => serve_conn(agent, conn),
            Err(e) => {
                log(format!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn serve_vsock(agent: &Arc<Agent>, port: u32) -> std::io::Result<()> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &VsockAddr::new(libc::VMADDR_CID_ANY, port),
    )?;
    listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN))?;
    agent.mark_ready();
    log(format!("listening on vsock port {port}"));
    loop {
        match accept4(std::os::fd::AsRawFd::as_raw_fd(&fd), SockFlag::SOCK_CLOEXEC) {
            Ok(raw) => {
                // SAFETY: accept4 returned a new fd that nothing else owns.
                let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
                serve_conn(agent, File::from(owned));
            }
            Err(e) => {
                log(format!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
