//! `peapod bench boot`: boots a pod N times and prints p50/p95 of each start-up phase, the
//! VMM's host memory and the guest memory in use. Figures only: nothing here asserts a time.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use agent_protocol::StreamKind;
use anyhow::Context;
use clap::{Args, Subcommand};
use image_store::Store;
use pod_runtime::run::{Output, RunOptions, RunResult};

use crate::run_cmd::{
    locate_assets, peapod_root, prepare_pod, run_prepared, signal_channel, AssetArgs,
};

/// The pod booted when no `-f` is given: two busybox containers that sleep.
const DEFAULT_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: bench-boot
spec:
  restartPolicy: Never
  containers:
  - name: one
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
  - name: two
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
";

/// `peapod bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Time each phase of a pod's start over several runs.
    Boot(BootArgs),
}

/// `peapod bench boot`.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// The pod to boot (default: two busybox containers that sleep).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Number of runs.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub runs: usize,
    #[command(flatten)]
    pub assets: AssetArgs,
}

struct Quiet;

impl Output for Quiet {
    fn log_line(&mut self, _: &str, _: StreamKind, _: &[u8]) {}
    fn event(&mut self, _: &str) {}
}

/// One run's figures, in milliseconds from the command's start.
#[derive(Debug, Default, Clone)]
struct Sample {
    parsed: f64,
    vmm: f64,
    kernel: f64,
    agent: f64,
    first: f64,
    all: f64,
    guest_agent: f64,
    vmm_rss_kib: u64,
    guest_touched_kib: u64,
    guest_used_kib: u64,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

fn sample(parsed: Duration, r: &RunResult) -> Option<Sample> {
    let t = &r.timeline;
    let (rss, touched) = r.vmm_rss_kib.unwrap_or((0, 0));
    let used = r.guest.map_or(0, |g| {
        g.mem_total_bytes.saturating_sub(g.mem_available_bytes) / 1024
    });
    Some(Sample {
        parsed: parsed.as_secs_f64() * 1000.0,
        vmm: ms(t.vmm_started)?,
        kernel: ms(t.kernel_entry)?,
        agent: ms(t.agent_ready)?,
        first: ms(t.first_running)?,
        all: ms(t.all_running)?,
        guest_agent: ms(t.guest_agent_ready).unwrap_or(f64::NAN),
        vmm_rss_kib: rss,
        guest_touched_kib: touched,
        guest_used_kib: used,
    })
}

/// The `p`-th percentile (nearest rank) of `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Runs `peapod bench boot`.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let BenchWhat::Boot(args) = args.what;
    let signals = signal_channel()?;
    let root = peapod_root();
    let assets = match locate_assets(&root, &args.assets) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let file = match &args.file {
        Some(f) => f.clone(),
        None => {
            let dir = root.join("bench");
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            let f = dir.join("bench-boot.yaml");
            std::fs::write(&f, DEFAULT_POD).with_context(|| format!("write {}", f.display()))?;
            f
        }
    };
    let store = Store::open(&root).context("open the image store")?;
    let _pin = store.lock_in_use().context("pin the image store")?;
    let mut samples = Vec::new();
    let mut failures = 0;
    for i in 1..=args.runs {
        if signals.try_recv().is_ok() {
            eprintln!("peapod: interrupted");
            break;
        }
        let t0 = Instant::now();
        let prepared = match prepare_pod(&file, None, &store, &mut Quiet) {
            Ok(p) => p,
            Err(code) => return Ok(code),
        };
        let parsed = t0.elapsed();
        let opts = RunOptions {
            root: root.clone(),
            assets: assets.clone(),
            remove: true,
            boot_timeout: Duration::from_secs(args.assets.boot_timeout),
            poll_interval: Duration::from_millis(5),
            stop_when_running: true,
            extra_cmdline: args.assets.extra_cmdline(),
            t0,
        };
        match run_prepared(prepared, &opts, &signals, &mut Quiet) {
            Ok(r) => match sample(parsed, &r) {
                Some(s) => {
                    eprintln!(
                        "peapod: run {i}/{}: all containers running after {:.0} ms",
                        args.runs, s.all
                    );
                    samples.push(s);
                }
                None => {
                    failures += 1;
                    eprintln!("peapod: run {i}/{}: a phase was not observed", args.runs);
                }
            },
            Err(_) => failures += 1,
        }
    }
    print_table(&samples, failures)?;
    Ok(if samples.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_table(samples: &[Sample], failures: usize) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "peapod bench boot: {} runs ({failures} failed)",
        samples.len()
    )?;
    writeln!(
        o,
        "{:<34} {:>10} {:>10} {:>10} {:>10}",
        "phase (ms from start)", "p50", "p95", "min", "max"
    )?;
    let col = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    let rows: [(&str, Vec<f64>); 8] = [
        ("manifest parsed, images resolved", col(|s| s.parsed)),
        ("VMM started", col(|s| s.vmm)),
        ("kernel entry", col(|s| s.kernel)),
        ("agent ready", col(|s| s.agent)),
        ("first container exec'd", col(|s| s.first)),
        ("all containers running (total)", col(|s| s.all)),
        (
            "  of which guest boot (VMM->agent)",
            col(|s| s.agent - s.vmm),
        ),
        ("  guest uptime at agent ready", col(|s| s.guest_agent)),
    ];
    for (name, v) in rows {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        writeln!(
            o,
            "{name:<34} {:>10.1} {:>10.1} {min:>10.1} {max:>10.1}",
            percentile(&v, 50.0),
            percentile(&v, 95.0)
        )?;
    }
    writeln!(
        o,
        "{:<34} {:>10} {:>10} {:>10} {:>10}",
        "memory (KiB)", "p50", "p95", "min", "max"
    )?;
    let mem: [(&str, Vec<f64>); 3] = [
        (
            "host RSS per pod (VMM + virtio-fs)",
            col(|s| s.vmm_rss_kib as f64),
        ),
        (
            "guest RAM touched (host memfd RSS)",
            col(|s| s.guest_touched_kib as f64),
        ),
        (
            "guest memory in use (MemTotal-Avail)",
            col(|s| s.guest_used_kib as f64),
        ),
    ];
    for (name, v) in mem {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        writeln!(
            o,
            "{name:<34} {:>10.0} {:>10.0} {min:>10.0} {max:>10.0}",
            percentile(&v, 50.0),
            percentile(&v, 95.0)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 95.0), 19.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn the_default_pod_is_valid() {
        let docs = pod_spec::load::load_str("bench", DEFAULT_POD).unwrap();
        assert!(docs[0].outcome.is_ok(), "{}", docs[0].render_errors());
    }
}
