//! Commands on a pod started by `peapod run`: `exec` and `delete pod` (`logs` is in
//! `logs_cmd`).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agent_protocol::{ExecEvent, ExecSession, ExecSpec};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use pod_runtime::agent::AgentAddr;
use pod_runtime::state::{self, find, is_running};

use crate::run_cmd::peapod_root;

/// `peapod exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the first app container).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `peapod delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(subcommand)]
    pub what: DeleteWhat,
}

/// What to delete.
#[derive(Debug, Subcommand)]
pub enum DeleteWhat {
    /// A pod: a running one is stopped gracefully first; its directory (logs) is removed.
    Pod {
        /// The pod.
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

/// The container `asked` for, or the first app container.
pub(crate) fn pick_container(
    rec: &state::PodRecord,
    asked: Option<&str>,
) -> anyhow::Result<String> {
    let all: Vec<&String> = rec.init_containers.iter().chain(&rec.containers).collect();
    match asked {
        Some(c) if all.iter().any(|n| n.as_str() == c) => Ok(c.to_string()),
        Some(c) => bail!(
            "container {c} is not valid for pod {}: choose one of [{}]",
            rec.name,
            all.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
        ),
        None => rec
            .containers
            .first()
            .cloned()
            .context("the pod has no containers"),
    }
}

/// Runs `peapod exec`.
pub fn run_exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let (dir, rec) = find(&peapod_root(), &args.namespace, &args.pod)?;
    if !is_running(&dir) {
        bail!("pod {}/{} is not running", args.namespace, args.pod);
    }
    let container = pick_container(&rec, args.container.as_deref())?;
    let addr = AgentAddr::new(&state::vsock_path(&dir));
    let stream = addr.connect(None).context("connect to the pod's agent")?;
    let mut session = ExecSession::start(
        stream,
        ExecSpec {
            container,
            argv: args.command,
            env: Vec::new(),
            tty: false,
            stdin: false,
            rows: 0,
            cols: 0,
        },
    )
    .context("start the command")?;
    loop {
        match session.next_event().context("exec stream")? {
            ExecEvent::Stdout(d) => {
                let mut o = std::io::stdout().lock();
                o.write_all(&d)?;
                o.flush()?;
            }
            ExecEvent::Stderr(d) => std::io::stderr().lock().write_all(&d)?,
            ExecEvent::Exit { code, .. } => {
                return Ok(ExitCode::from(
                    u8::try_from(code.rem_euclid(256)).unwrap_or(1),
                ))
            }
        }
    }
}

/// Runs `peapod delete`.
pub fn run_delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let DeleteWhat::Pod { name, namespace } = args.what;
    let (dir, rec) = find(&peapod_root(), &namespace, &name)?;
    if is_running(&dir) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(rec.owner_pid).unwrap_or(0));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .with_context(|| format!("signal peapod run (pid {pid})"))?;
        let start = Instant::now();
        while is_running(&dir) {
            if start.elapsed() > Duration::from_secs(600) {
                bail!("pod {namespace}/{name} did not stop within 600 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    state::remove_tree(&dir)?;
    println!("pod \"{name}\" deleted");
    Ok(ExitCode::SUCCESS)
}
