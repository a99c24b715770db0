//! `boot-e2e`: boots one microVM with `peapod-vmm` and the boot probe as `/init`, checks the
//! console line, both vsock exchanges, the uptime line and the VMM exit status, and prints the
//! boot benchmark figures. Runs inside the KVM test host or directly on hardware KVM.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use boot_probe::{
    console, GUEST_PING, GUEST_PONG, GUEST_TO_HOST_PORT, HOST_PING, HOST_PONG, HOST_TO_GUEST_PORT,
};
use clap::Parser;
use peapod_e2e::hybrid_vsock;
use peapod_e2e::vmm_process::{MemoryPeak, VmmArgs, VmmProcess};

/// Command line of `boot-e2e`.
#[derive(Debug, Parser)]
#[command(
    name = "boot-e2e",
    about = "Boot a microVM with the boot probe and measure it"
)]
struct Cli {
    /// The `peapod-vmm` binary (default: next to this binary, then the static release build).
    #[arg(long)]
    vmm: Option<PathBuf>,
    /// Guest kernel (ELF vmlinux from kernel-config/build.sh).
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs with the boot probe as /init (tests/boot-probe/make-initramfs.sh).
    #[arg(long)]
    initrd: PathBuf,
    /// Working directory for the vsock sockets and the console log (default: a new dir in /tmp).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Seconds the VM may take to come up and finish (emulated hosts are 10-50x slower).
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Kernel command line override (default: the VMM's microVM command line).
    #[arg(long)]
    cmdline: Option<String>,
    /// Expected VMM exit status after the guest powers off (docs/vmm.md: 0).
    #[arg(long, default_value_t = 0)]
    expect_exit: i32,
}

/// Benchmark figures of one boot.
#[derive(Debug)]
struct Figures {
    setup_us: u64,
    uptime_at_init_ms: u64,
    boottime_at_init_us: u64,
    init_to_first_vsock_us: u64,
    total_us: u64,
    peak: MemoryPeak,
}

fn main() {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(f) => {
            print_figures(&f);
            println!("boot-e2e: PASS");
        }
        Err(e) => {
            eprintln!("boot-e2e: FAIL: {e:#}");
            std::process::exit(1);
        }
    }
}

fn default_vmm() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("peapod-vmm"));
        }
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    candidates.push(repo.join("target/static/x86_64-unknown-linux-gnu/release/peapod-vmm"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("peapod-vmm not found next to boot-e2e nor in target/static; pass --vmm")
}

fn run(cli: &Cli) -> Result<Figures> {
    let vmm = match &cli.vmm {
        Some(v) => v.clone(),
        None => default_vmm()?,
    };
    for (what, p) in [
        ("kernel", &cli.kernel),
        ("initrd", &cli.initrd),
        ("vmm", &vmm),
    ] {
        if !p.is_file() {
            bail!("{what} {} does not exist", p.display());
        }
    }
    let workdir = match &cli.workdir {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("peapod-boot-e2e-{}", std::process::id())),
    };
    std::fs::create_dir_all(&workdir).with_context(|| format!("create {}", workdir.display()))?;
    let uds = workdir.join("vsock.sock");
    let console_log = workdir.join("console.log");
    let _ = std::fs::remove_file(&uds);
    let _ = std::fs::remove_file(&console_log);
    let timeout = Duration::from_secs(cli.timeout_secs);
    let io_timeout = timeout.min(Duration::from_secs(120));

    // The guest connects as soon as it runs: listen before the VMM exists.
    let listener = hybrid_vsock::listen(&uds, GUEST_TO_HOST_PORT)?;
    let args = VmmArgs {
        vmm,
        kernel: cli.kernel.clone(),
        initrd: cli.initrd.clone(),
        vsock_uds: uds.clone(),
        console: console_log.clone(),
        memory_mib: cli.memory_mib,
        vcpus: cli.vcpus,
        cmdline: cli.cmdline.clone(),
    };
    eprintln!(
        "boot-e2e: starting {} (timeout {}s)",
        args.vmm.display(),
        timeout.as_secs()
    );
    let mut vm = VmmProcess::spawn(&args)?.with_memory_sampler();
    let deadline = vm.spawned_at + timeout;
    let result = exchange(&mut vm, &listener, &uds, deadline, io_timeout);
    let total = match result {
        Ok(t) => t,
        Err(e) => {
            vm.kill();
            let (setup_us, peak) = vm.finish();
            eprintln!(
                "boot-e2e: partial figures: setup_us={} vmm_peak_rss_kib={} guest_rss_shmem_kib={}",
                setup_us.map_or_else(|| "none".to_string(), |v| v.to_string()),
                peak.rss_anon_file_kib,
                peak.rss_shmem_kib
            );
            return Err(fail_with_logs(e, &vm, &console_log));
        }
    };

    let remaining = deadline.saturating_duration_since(Instant::now());
    let status = match vm.wait_or_kill(remaining.max(Duration::from_secs(30))) {
        Ok(s) => s,
        Err(e) => {
            let e = anyhow::Error::from(e).context("the guest did not power off");
            return Err(fail_with_logs(e, &vm, &console_log));
        }
    };
    let (setup_us, peak) = vm.finish();
    let console_text = std::fs::read_to_string(&console_log).unwrap_or_default();
    if status.code() != Some(cli.expect_exit) {
        let e = anyhow::anyhow!(
            "vmm exit status {status}, expected {} (guest power off)",
            cli.expect_exit
        );
        return Err(fail_with_logs(e, &vm, &console_log));
    }
    let report = match console::parse(&console_text) {
        Ok(r) => r,
        Err(e) => {
            let e = anyhow::Error::from(e).context("console check");
            return Err(fail_with_logs(e, &vm, &console_log));
        }
    };
    let setup_us = setup_us.context(
        "the vmm printed no `peapod-vmm: timing setup_us=N` line although PEAPOD_VMM_TIMING=1",
    )?;
    if cli.workdir.is_none() {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    Ok(Figures {
        setup_us,
        uptime_at_init_ms: report.uptime_at_init_ms,
        boottime_at_init_us: report.boottime_at_init_us,
        init_to_first_vsock_us: report.init_to_first_vsock_us,
        total_us: u64::try_from(total.as_micros()).unwrap_or(u64::MAX),
        peak,
    })
}

/// Both vsock exchanges; returns the time from spawn to the first guest message.
fn exchange(
    vm: &mut VmmProcess,
    listener: &std::os::unix::net::UnixListener,
    uds: &Path,
    deadline: Instant,
    io_timeout: Duration,
) -> Result<Duration> {
    // Guest -> host.
    let mut s = hybrid_vsock::accept(listener, deadline, io_timeout, || match vm.try_wait() {
        Ok(Some(st)) => Some(format!("the vmm exited ({st}) before the guest connected")),
        Ok(None) => None,
        Err(e) => Some(e.to_string()),
    })
    .context("guest->host: waiting for the guest's connection")?;
    hybrid_vsock::expect_line(&mut s, "guest->host message", GUEST_PING)?;
    let first_message = vm.spawned_at.elapsed();
    eprintln!(
        "boot-e2e: guest->host message after {:.3} s",
        first_message.as_secs_f64()
    );
    hybrid_vsock::send(&mut s, "guest->host reply", HOST_PONG)?;
    drop(s);

    // Host -> guest.
    let mut s = hybrid_vsock::connect_guest(uds, HOST_TO_GUEST_PORT, io_timeout)
        .context("host->guest: connecting through the vmm")?;
    hybrid_vsock::send(&mut s, "host->guest message", HOST_PING)?;
    hybrid_vsock::expect_line(&mut s, "host->guest reply", GUEST_PONG)?;
    eprintln!("boot-e2e: host->guest exchange ok");
    Ok(first_message)
}

fn fail_with_logs(
    e: impl Into<anyhow::Error>,
    vm: &VmmProcess,
    console_log: &Path,
) -> anyhow::Error {
    let console_text = std::fs::read_to_string(console_log)
        .unwrap_or_else(|err| format!("(no console log at {}: {err})", console_log.display()));
    eprintln!("===== guest console ({}) =====", console_log.display());
    eprintln!("{console_text}");
    eprintln!("===== vmm stderr =====");
    for l in vm.stderr_lines() {
        eprintln!("{l}");
    }
    eprintln!("======================");
    e.into()
}

fn print_figures(f: &Figures) {
    println!("boot-e2e figures:");
    println!(
        "  vmm exec to first guest instruction (vmm setup_us)   {:>10.3} ms",
        f.setup_us as f64 / 1000.0
    );
    println!(
        "  kernel entry to /init (guest uptime at /init)        {:>10.3} ms  (CLOCK_BOOTTIME {:.3} ms)",
        f.uptime_at_init_ms as f64,
        f.boottime_at_init_us as f64 / 1000.0
    );
    println!(
        "  /init to first vsock message (guest)                 {:>10.3} ms",
        f.init_to_first_vsock_us as f64 / 1000.0
    );
    println!(
        "  total: vmm spawn to first vsock message (host wall)  {:>10.3} ms",
        f.total_us as f64 / 1000.0
    );
    println!(
        "  vmm peak RSS excluding guest memory (Anon+File)      {:>10} KiB  ({} samples; guest memory touched, RssShmem peak: {} KiB)",
        f.peak.rss_anon_file_kib, f.peak.samples, f.peak.rss_shmem_kib
    );
    println!(
        "boot-e2e: figures setup_us={} uptime_at_init_ms={} boottime_at_init_us={} init_to_first_vsock_us={} total_us={} vmm_peak_rss_kib={} guest_rss_shmem_kib={}",
        f.setup_us,
        f.uptime_at_init_ms,
        f.boottime_at_init_us,
        f.init_to_first_vsock_us,
        f.total_us,
        f.peak.rss_anon_file_kib,
        f.peak.rss_shmem_kib
    );
}
