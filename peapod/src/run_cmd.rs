//! `peapod run -f FILE`: runs one pod in a microVM in the foreground, streams its logs, and
//! exits with the pod's result (see `pod_runtime::outcome` for the exit codes).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use agent_protocol::StreamKind;
use anyhow::Context;
use clap::Args;
use image_store::{Outcome, Store};
use nix::sys::signal::{SigSet, Signal};
use pod_runtime::assets::{AssetOverrides, Assets};
use pod_runtime::outcome::{EXIT_BAD_INPUT, EXIT_RUNTIME};
use pod_runtime::prepare::{load_manifest, prepare, ImageEvent, Prepared};
use pod_runtime::run::{run_pod, Output, RunOptions, RunResult};

/// Where the VMM, kernel and initramfs come from.
#[derive(Debug, Args, Clone)]
pub struct AssetArgs {
    /// The peapod-vmm binary (default: $PEAPOD_VMM, else next to peapod).
    #[arg(long, value_name = "PATH")]
    pub vmm: Option<PathBuf>,
    /// The guest kernel (default: $PEAPOD_KERNEL, else $PEAPOD_ROOT/assets/vmlinux).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The guest initramfs (default: $PEAPOD_INITRD, else $PEAPOD_ROOT/assets/initramfs.cpio.gz).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Seconds the guest agent may take to answer after the VMM started.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub boot_timeout: u64,
    /// Guest kernel parameters added to the VMM's defaults. `quiet` keeps only the kernel's
    /// errors (panics, oopses, OOM kills) on the console log: the boot is faster, with far fewer
    /// serial port exits. `--kernel-args ''` logs every kernel message.
    #[arg(long, value_name = "PARAMS", default_value = "quiet")]
    pub kernel_args: String,
}

impl AssetArgs {
    /// The extra kernel parameters, if any.
    pub fn extra_cmdline(&self) -> Option<String> {
        let k = self.kernel_args.trim();
        (!k.is_empty()).then(|| k.to_string())
    }
}

/// `peapod run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The manifest: exactly one Pod.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// Remove the pod's directory (logs, status) when it ends.
    #[arg(long)]
    pub rm: bool,
    /// Namespace (default: the manifest's, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub assets: AssetArgs,
}

/// `PEAPOD_ROOT`, default `/var/lib/peapod`.
pub fn peapod_root() -> PathBuf {
    std::env::var_os("PEAPOD_ROOT")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/var/lib/peapod"), PathBuf::from)
}

/// Blocks SIGINT and SIGTERM in this thread (and every thread started after) and delivers
/// them on a channel from a dedicated thread. Call before starting any other thread.
pub fn signal_channel() -> anyhow::Result<Receiver<i32>> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("block SIGINT/SIGTERM")?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(sig) = set.wait() {
                if tx.send(sig as i32).is_err() {
                    break;
                }
            }
        })
        .context("start the signal thread")?;
    Ok(rx)
}

/// Prints logs to stdout as `[container] line` and events to stderr as `peapod: ...`.
pub struct TerminalOutput;

impl Output for TerminalOutput {
    fn log_line(&mut self, container: &str, _stream: StreamKind, text: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(format!("[{container}] ").as_bytes());
        let _ = out.write_all(text);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }

    fn event(&mut self, text: &str) {
        eprintln!("peapod: {text}");
    }
}

fn image_line(ev: &ImageEvent) -> String {
    let what = match ev.outcome {
        Outcome::Present => "already present",
        Outcome::Pulled => "pulled",
        Outcome::Builtin => "imported from the built-in busybox",
    };
    format!("container {}: image {} {what}", ev.container, ev.image)
}

/// Loads, checks and resolves the pod, printing what it does; `Err(code)` after reporting.
pub fn prepare_pod(
    file: &Path,
    namespace: Option<&str>,
    store: &Store,
    out: &mut dyn Output,
) -> Result<Prepared, ExitCode> {
    let (manifest, warnings) = match load_manifest(file, namespace) {
        Ok(m) => m,
        Err(e) => {
            eprint!("error: {e}");
            if !e.to_string().ends_with('\n') {
                eprintln!();
            }
            return Err(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    if !warnings.is_empty() {
        eprint!("{warnings}");
    }
    prepare(manifest, store, &mut |ev| out.event(&image_line(ev))).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_BAD_INPUT)
    })
}

/// Finds the assets or reports which is missing.
pub fn locate_assets(root: &Path, a: &AssetArgs) -> Result<Assets, ExitCode> {
    let overrides = AssetOverrides {
        vmm: a.vmm.clone(),
        kernel: a.kernel.clone(),
        initrd: a.initrd.clone(),
    };
    let exe = std::env::current_exe().ok();
    Assets::locate(root, &overrides, &|v| std::env::var(v).ok(), exe.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_BAD_INPUT)
    })
}

/// Runs a prepared pod and maps errors to exit codes.
pub fn run_prepared(
    prepared: Prepared,
    opts: &RunOptions,
    signals: &Receiver<i32>,
    out: &mut dyn Output,
) -> Result<RunResult, ExitCode> {
    run_pod(prepared, opts, signals, out).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(if e.is_bad_input() {
            EXIT_BAD_INPUT
        } else {
            EXIT_RUNTIME
        })
    })
}

/// Runs `peapod run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let signals = signal_channel()?;
    let root = peapod_root();
    let mut out = TerminalOutput;
    let assets = match locate_assets(&root, &args.assets) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let store = Store::open(&root).context("open the image store")?;
    // Held while the pod runs: image GC waits instead of removing a root file system in use.
    let _pin = store.lock_in_use().context("pin the image store")?;
    let prepared = match prepare_pod(&args.file, args.namespace.as_deref(), &store, &mut out) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let opts = RunOptions {
        root,
        assets,
        remove: args.rm,
        boot_timeout: Duration::from_secs(args.assets.boot_timeout),
        poll_interval: Duration::from_millis(200),
        stop_when_running: false,
        extra_cmdline: args.assets.extra_cmdline(),
        t0,
    };
    let name = format!("{}/{}", prepared.plan.namespace, prepared.plan.name);
    match run_prepared(prepared, &opts, &signals, &mut out) {
        Ok(r) => {
            out.event(&format!("pod {name}: exit code {}", r.exit_code));
            Ok(ExitCode::from(r.exit_code))
        }
        Err(code) => Ok(code),
    }
}
