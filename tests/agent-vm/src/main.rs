//! `agent-vm-e2e`: boots a microVM with `peapod-agent` as PID 1 and drives it over the VMM's
//! hybrid vsock with the agent protocol; see `tests/agent-vm/README.md`.

mod fs_case;
mod pods;
mod scenario;
mod shares;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use peapod_e2e::vmm_process::{VmmArgs, VmmProcess};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "agent-vm-e2e",
    about = "guest agent as PID 1 in a real microVM: end-to-end test"
)]
struct Args {
    /// `peapod-vmm` binary.
    #[arg(long)]
    vmm: PathBuf,
    /// Guest kernel (ELF vmlinux).
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs from tests/agent-vm/make-initramfs.sh.
    #[arg(long)]
    initrd: PathBuf,
    /// Working directory for the socket and the console log (default: a new dir in /tmp).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Guest console log (default: console.log in the working directory).
    #[arg(long)]
    console: Option<PathBuf>,
    /// Busybox root file system on the host, shared (a copy of it) over virtio-fs as the image
    /// root `img0` of the virtio-fs pod (tests/agent-vm/make-rootfs.sh makes one).
    #[arg(long)]
    image_dir: PathBuf,
    /// Busybox root filesystem inside the guest (initramfs), for the other pods.
    #[arg(long, default_value = "/images/busybox/rootfs")]
    rootfs: String,
    /// Guest memory.
    #[arg(long, default_value_t = 512)]
    memory_mib: u32,
    /// Guest vCPUs. 1 by default, as `peapod run` gives a pod without CPU limits: with 2, the
    /// guest double-faulted under the emulated test host in 2 of 8 runs (tests/README.md,
    /// "Known intermittent failures"); SMP boot stays covered by boot-smoke's `smp` case.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Seconds the agent may take to answer after the VMM started (emulation is slow).
    #[arg(long, default_value_t = 300)]
    agent_timeout_secs: u64,
    /// Seconds each later step may take.
    #[arg(long, default_value_t = 120)]
    step_timeout_secs: u64,
}

/// Asks the running VMM for its state dump (SIGUSR1: its threads with state and wait channel,
/// each vCPU's registers and LAPIC timer); it prints it on its stderr, which is echoed with a
/// `[vmm]` prefix and kept for the report.
fn request_vmm_state(pid: u32) {
    match std::process::Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
    {
        Ok(s) if s.success() => std::thread::sleep(Duration::from_millis(1500)),
        Ok(s) => println!("agent-vm: kill -USR1 {pid}: {s}"),
        Err(e) => println!("agent-vm: cannot run kill -USR1 {pid}: {e}"),
    }
}

fn print_console(path: &std::path::Path) {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            eprintln!("----- guest console ({}) -----", path.display());
            eprintln!("{text}");
            eprintln!("----- end of guest console -----");
        }
        Err(e) => eprintln!(
            "agent-vm: cannot read the console log {}: {e}",
            path.display()
        ),
    }
}

/// The figures report.
fn format_figures(f: &scenario::Figures, setup_us: Option<u64>) -> String {
    let mut r = String::from(
        "agent-vm: figures (wall clock on this host; emulated KVM is 10-50x slower than hardware):\n",
    );
    if let Some(us) = setup_us {
        r += &format!(
            "  vmm setup (main() -> first KVM_RUN):   {:.3} ms\n",
            us as f64 / 1000.0
        );
    }
    r += &format!(
        "  vmm spawn -> agent ready (first Pong): {:.3?} ({} connection attempts)\n",
        f.spawn_to_ready, f.connect_attempts
    );
    r += &format!(
        "  CreatePod -> all containers running:   {:.3?}\n",
        f.create_to_running
    );
    let mut rtts = f.exec_rtts.clone();
    rtts.sort();
    if let (Some(min), Some(max)) = (rtts.first(), rtts.last()) {
        let median = rtts[rtts.len() / 2];
        r += &format!(
            "  exec round trip (`true`, {} runs):     min {min:.3?}, median {median:.3?}, max {max:.3?}\n",
            rtts.len()
        );
    }
    r += &format!(
        "  CreatePod -> virtio-fs pod running:    {:.3?}\n",
        f.virtiofs_create_to_running
    );
    r += &format!(
        "  1 GiB write -> ENOSPC (64 MiB scratch): {:.3?}\n",
        f.fill_scratch
    );
    r += &format!(
        "  CreatePod -> OOM kill reported:        {:.3?}\n",
        f.create_to_oom
    );
    if let Some((rss, hwm)) = f.agent_rss_kib {
        r +=
            &format!("  agent (PID 1) memory:                  VmRSS {rss} KiB, VmHWM {hwm} KiB\n");
    }
    r += &format!(
        "  Shutdown request -> vmm exit:          {:.3?}\n",
        f.shutdown_to_exit
    );
    if let Some(g) = &f.guest_info {
        r += &format!(
            "  guest info: uptime at first request {:.3} s, agent ready at {:.3} s, MemTotal {} KiB, MemAvailable {} KiB\n",
            g.uptime_ns as f64 / 1e9,
            g.agent_ready_ns as f64 / 1e9,
            g.mem_total_bytes >> 10,
            g.mem_available_bytes >> 10
        );
    }
    r += "  guest `free -k` with the web pod running:\n";
    for l in f.guest_free.lines() {
        r += &format!("    {l}\n");
    }
    r
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => println!("agent-vm: PASS"),
        Err(e) => {
            eprintln!("agent-vm: FAIL: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let work = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("peapod-agent-vm-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let uds = work.join("vsock.sock");
    let console = args
        .console
        .clone()
        .unwrap_or_else(|| work.join("console.log"));
    let _ = std::fs::remove_file(&uds);
    let shares = shares::prepare(&work, &args.image_dir)?;
    let vmm = shares::write_wrapper(&work, &args.vmm, &shares.vmm_args())?;
    let vargs = VmmArgs {
        vmm,
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        vsock_uds: uds.clone(),
        console: console.clone(),
        memory_mib: args.memory_mib,
        vcpus: args.vcpus,
        cmdline: None,
    };
    let settings = scenario::Settings {
        uds,
        rootfs: args.rootfs.clone(),
        agent_timeout: Duration::from_secs(args.agent_timeout_secs),
        step_timeout: Duration::from_secs(args.step_timeout_secs),
        shares,
        memory_mib: args.memory_mib,
    };
    println!(
        "agent-vm: starting {} {} {}",
        args.vmm.display(),
        vargs.argv().join(" "),
        settings.shares.vmm_args().join(" ")
    );
    let mut vm = VmmProcess::spawn(&vargs)?;
    let mut figures = scenario::Figures::default();
    let res = scenario::run(&settings, &mut vm, &mut figures);
    if res.is_err() {
        if vm.try_wait().ok().flatten().is_none() {
            println!("agent-vm: asking the vmm for its state at the failure (SIGUSR1)");
            request_vmm_state(vm.pid());
            println!(
                "agent-vm: after the failure: {}",
                scenario::probe_after_failure(&settings, Duration::from_secs(20))
            );
        }
        vm.kill();
        print_console(&console);
        let stderr = vm.stderr_lines();
        if !stderr.is_empty() {
            eprintln!("----- vmm stderr -----\n{}\n-----", stderr.join("\n"));
        }
        return res;
    }
    print!("{}", format_figures(&figures, vm.setup_us()));
    if std::env::var_os("PEAPOD_AGENT_VM_CONSOLE").is_some() {
        print_console(&console);
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_report() {
        let f = scenario::Figures {
            exec_rtts: vec![
                Duration::from_millis(3),
                Duration::from_millis(1),
                Duration::from_millis(2),
            ],
            agent_rss_kib: Some((4096, 5000)),
            guest_free: "Mem: 1 2 3".into(),
            ..Default::default()
        };
        let r = format_figures(&f, Some(1500));
        assert!(r.contains("1.500 ms"), "{r}");
        assert!(
            r.contains("min 1.000ms, median 2.000ms, max 3.000ms"),
            "{r}"
        );
        assert!(r.contains("VmRSS 4096 KiB, VmHWM 5000 KiB"), "{r}");
        assert!(r.contains("    Mem: 1 2 3"), "{r}");
    }
}
