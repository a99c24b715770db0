//! `peapod logs`: prints a pod's container logs from its directory, like `kubectl logs`:
//! `-f` follows them while the pod's `peapod run` is alive, `--tail N` starts from the last
//! lines, `--all-containers` shows every container with a `[container] ` prefix.

use std::io::{ErrorKind, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use pod_runtime::log_reader::{print_logs, FileFollower, LogReadError, ReadOptions, Tail};
use pod_runtime::state::{self, find, is_running};

use crate::pod_cmds::pick_container;
use crate::run_cmd::peapod_root;

/// How often a followed log file is checked for new lines.
const POLL_INTERVAL: Duration = Duration::from_millis(150);

/// `peapod logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the first app container).
    #[arg(short = 'c', long, conflicts_with = "all_containers")]
    pub container: Option<String>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Prefix each line with its timestamp.
    #[arg(long)]
    pub timestamps: bool,
    /// Keep printing new lines until the pod stops (or Ctrl-C).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines of each container's log (-1: all).
    #[arg(long, default_value = "-1", allow_negative_numbers = true, value_parser = parse_tail)]
    pub tail: Tail,
    /// Every container: init containers first, then app containers, in pod order; each line
    /// prefixed `[container] `.
    #[arg(long)]
    pub all_containers: bool,
    /// Prefix each line with `[container] ` (implied by --all-containers).
    #[arg(long)]
    pub prefix: bool,
}

fn parse_tail(s: &str) -> Result<Tail, String> {
    let n: i64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of lines"))?;
    Tail::from_arg(n).ok_or_else(|| format!("{n} lines: use -1 (all) or a count >= 0"))
}

/// Runs `peapod logs`.
pub fn run_logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let (dir, rec) = find(&peapod_root(), &args.namespace, &args.pod)?;
    let containers = if args.all_containers {
        rec.init_containers
            .iter()
            .chain(&rec.containers)
            .cloned()
            .collect()
    } else {
        vec![pick_container(&rec, args.container.as_deref())?]
    };
    if containers.is_empty() {
        bail!("pod {}/{} has no containers", args.namespace, args.pod);
    }
    let prefixes: Vec<String> = containers
        .iter()
        .map(|c| {
            if args.all_containers || args.prefix {
                format!("[{c}] ")
            } else {
                String::new()
            }
        })
        .collect();
    let mut files: Vec<FileFollower> = containers
        .iter()
        .map(|c| FileFollower::new(&state::log_path(&dir, c)))
        .collect();
    let mut out = std::io::stdout().lock();
    let mut line = Vec::new();
    let result = print_logs(
        &mut files,
        ReadOptions {
            follow: args.follow,
            tail: args.tail,
        },
        || is_running(&dir),
        // stdout is line buffered: what was printed shows before the wait.
        || std::thread::sleep(POLL_INTERVAL),
        |i, l| {
            line.clear();
            line.extend_from_slice(prefixes[i].as_bytes());
            if args.timestamps {
                line.extend_from_slice(l.timestamp.as_bytes());
                line.push(b' ');
            }
            line.extend_from_slice(&l.text);
            line.push(b'\n');
            out.write_all(&line)
        },
    );
    let result = result.and_then(|()| out.flush().map_err(LogReadError::Output));
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The reader went away (`peapod logs -f | head`): nothing more to do.
        Err(LogReadError::Output(e)) if e.kind() == ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("print the logs"),
    }
}
