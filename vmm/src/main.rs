//! `peapod-vmm`: boots one microVM from a kernel (and optional initramfs) and runs it until the
//! guest powers off, the host signals it, or a vCPU fails; the exit status says which.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use vmm::config::{ConsoleTarget, FsConfig, VhostUserFsConfig, VmConfig, VsockConfig};
use vmm::exit::ExitStatus;
use vmm::host_check::HostCheck;
use vmm::vm::Vm;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    the guest stopped itself: reboot (i8042 reset), KVM shutdown or system event,
       or poweroff/halt (every vCPU halted with interrupts disabled)
  1    setup error (invalid arguments, unreadable kernel or initramfs, KVM ioctl failure)
  2    bad environment: /dev/kvm missing, not accessible, or the PVM software hypervisor
  3    a vCPU failed (KVM_EXIT_INTERNAL_ERROR / emulation failure, FAIL_ENTRY, KVM_RUN error)
  130  stopped by SIGINT
  143  stopped by SIGTERM

Signals: SIGUSR1 while the guest runs prints a state dump to stderr (threads, device counters,
and each vCPU's registers, pending events and LAPIC timer); the VM goes on.

A panic in any VMM thread aborts the process (SIGABRT) after printing where it happened.

Environment:
  PEAPOD_VMM_TIMING=1  print `peapod-vmm: timing setup_us=N` to stderr, N being the
                       microseconds from the start of main() to the first KVM_RUN";

/// Command line of `peapod-vmm`.
#[derive(Debug, Parser)]
#[command(name = "peapod-vmm", version, about = "Run one KVM microVM", after_help = EXIT_STATUS_HELP)]
struct Cli {
    /// Uncompressed ELF guest kernel (vmlinux).
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,
    /// Initramfs (cpio archive, optionally compressed).
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line, replacing the default microVM one; virtio-mmio device entries are
    /// appended automatically.
    #[arg(long, value_name = "STR")]
    cmdline: Option<String>,
    /// Parameters appended to the command line (the default one unless --cmdline is given),
    /// e.g. `quiet`.
    #[arg(long, value_name = "STR")]
    cmdline_append: Option<String>,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=32))]
    vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(16..))]
    memory_mib: u64,
    /// Host Unix socket of a hybrid virtio-vsock device (no vsock device without it).
    #[arg(long, value_name = "PATH")]
    vsock_uds: Option<PathBuf>,
    /// Guest context ID of the vsock device.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=0xffff_fffe))]
    vsock_cid: u64,
    /// Share a host directory over virtio-fs as TAG=PATH, or TAG=PATH:ro for a read-only share
    /// (repeatable; the guest mounts it with `mount -t virtiofs TAG DIR`).
    #[arg(long = "fs", value_name = "TAG=PATH[:ro]", value_parser = parse_fs)]
    fs: Vec<FsConfig>,
    /// Attach a virtio-fs device served by a running vhost-user back-end (virtiofsd) as
    /// TAG=SOCKET (repeatable; for the backend comparison in docs/virtio-fs.md).
    #[arg(long = "vhost-user-fs", value_name = "TAG=SOCKET", value_parser = parse_vhost_user_fs)]
    vhost_user_fs: Vec<VhostUserFsConfig>,
    /// Where the guest serial console goes: a file path, or `-` for stdout.
    #[arg(long, value_name = "PATH|-", default_value = "-")]
    console: String,
    /// Most bytes of guest console output to write; the rest is dropped (a guest must not be
    /// able to fill the host's disk).
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    console_limit: u64,
    /// Feed stdin to the guest's serial console (line by line unless the terminal is raw).
    #[arg(long)]
    console_input: bool,
    /// Do not treat a guest whose vCPUs all halted with interrupts off as powered off; the
    /// guest must end the VM itself (i8042 reset, `reboot=k`), as the peapod agent does.
    #[arg(long)]
    no_halt_detection: bool,
    /// Accept a /dev/kvm served by the PVM software hypervisor (standard guests cannot boot
    /// there: only for measuring host-side setup cost).
    #[arg(long)]
    allow_pvm: bool,
    /// Least severe log messages written to stderr: off, error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", env = "PEAPOD_VMM_LOG", default_value_t = vmm::logging::DEFAULT_LEVEL)]
    log_level: log::LevelFilter,
}

impl Cli {
    fn into_config(self, timing: bool) -> VmConfig {
        VmConfig {
            kernel: self.kernel,
            initrd: self.initrd,
            cmdline: match (self.cmdline, self.cmdline_append) {
                (base, Some(extra)) => Some(format!(
                    "{} {}",
                    base.as_deref().unwrap_or(vmm::cmdline::DEFAULT_CMDLINE),
                    extra.trim()
                )),
                (base, None) => base,
            },
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            vsock: self.vsock_uds.map(|uds_path| VsockConfig {
                guest_cid: self.vsock_cid,
                uds_path,
            }),
            fs: self.fs,
            vhost_user_fs: self.vhost_user_fs,
            console: if self.console == "-" {
                ConsoleTarget::Stdout
            } else {
                ConsoleTarget::File(PathBuf::from(self.console))
            },
            console_input: self.console_input,
            console_limit: self.console_limit,
            timing,
            halt_detection: !self.no_halt_detection,
        }
    }
}

/// Parses `TAG=PATH[:ro]`.
fn parse_fs(spec: &str) -> Result<FsConfig, String> {
    let (tag, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("expected TAG=PATH[:ro], got {spec:?}"))?;
    let (path, read_only) = match rest.strip_suffix(":ro") {
        Some(path) => (path, true),
        None => (rest, false),
    };
    if tag.is_empty() || tag.len() > 36 {
        return Err(format!("tag {tag:?} must be 1-36 bytes"));
    }
    if path.is_empty() {
        return Err("empty PATH".to_string());
    }
    Ok(FsConfig {
        tag: tag.to_string(),
        shared_dir: PathBuf::from(path),
        read_only,
    })
}

/// Parses `TAG=SOCKET`.
fn parse_vhost_user_fs(spec: &str) -> Result<VhostUserFsConfig, String> {
    let (tag, socket) = spec
        .split_once('=')
        .ok_or_else(|| format!("expected TAG=SOCKET, got {spec:?}"))?;
    if tag.is_empty() || tag.len() > 36 {
        return Err(format!("tag {tag:?} must be 1-36 bytes"));
    }
    if socket.is_empty() {
        return Err("empty SOCKET".to_string());
    }
    Ok(VhostUserFsConfig {
        tag: tag.to_string(),
        socket: PathBuf::from(socket),
    })
}

fn exit(status: ExitStatus) -> ExitCode {
    ExitCode::from(status.code() as u8)
}

fn main() -> ExitCode {
    let start = Instant::now();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let is_error = e.use_stderr();
            // Printing help or an error to a closed stream is not worth failing over.
            let _ = e.print();
            return if is_error {
                exit(ExitStatus::SetupError)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    vmm::logging::init(cli.log_level, start);
    vmm::logging::abort_on_panic();
    let check = HostCheck {
        allow_pvm: cli.allow_pvm,
        ..HostCheck::default()
    };
    let timing = std::env::var("PEAPOD_VMM_TIMING").is_ok_and(|v| v == "1");
    let config = cli.into_config(timing);
    let kvm = match check.run() {
        Ok(kvm) => kvm,
        Err(e) => {
            eprintln!("peapod-vmm: {e}");
            return exit(ExitStatus::BadEnvironment);
        }
    };
    let vm = match Vm::build(&config, kvm, start) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("peapod-vmm: setup failed: {e}");
            return exit(ExitStatus::SetupError);
        }
    };
    match vm.run() {
        Ok(reason) => {
            if reason.is_reported() {
                eprintln!("peapod-vmm: stopped: {reason}");
            }
            exit(reason.status())
        }
        Err(e) => {
            eprintln!("peapod-vmm: {e}");
            exit(ExitStatus::SetupError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("peapod-vmm").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let c = parse(&["--kernel", "vmlinux"]).unwrap().into_config(false);
        assert_eq!(c.vcpus, 1);
        assert_eq!(c.memory_mib, 128);
        assert_eq!(c.console, ConsoleTarget::Stdout);
        assert_eq!(c.vsock, None);
        assert!(c.fs.is_empty());
        assert!(c.vhost_user_fs.is_empty());
        assert_eq!(c.cmdline, None);
        assert!(!c.console_input);
        assert_eq!(c.console_limit, 16 << 20);
    }

    #[test]
    fn cmdline_append_extends_the_default_or_the_given_line() {
        let c = parse(&["--kernel", "k", "--cmdline-append", " quiet "])
            .unwrap()
            .into_config(false);
        assert_eq!(
            c.cmdline.as_deref(),
            Some(format!("{} quiet", vmm::cmdline::DEFAULT_CMDLINE).as_str())
        );
        let c = parse(&["--kernel", "k", "--cmdline", "a=1", "--cmdline-append", "b"])
            .unwrap()
            .into_config(false);
        assert_eq!(c.cmdline.as_deref(), Some("a=1 b"));
    }

    #[test]
    fn all_options() {
        let c = parse(&[
            "--kernel",
            "k",
            "--initrd",
            "i",
            "--cmdline",
            "console=ttyS0",
            "--vcpus",
            "2",
            "--memory-mib",
            "512",
            "--vsock-uds",
            "/tmp/v.sock",
            "--vsock-cid",
            "7",
            "--console",
            "/tmp/con",
            "--console-input",
            "--fs",
            "data=/srv/data",
            "--fs",
            "conf=/etc/x:y:ro",
            "--vhost-user-fs",
            "vfs=/run/virtiofsd.sock",
        ])
        .unwrap()
        .into_config(true);
        assert_eq!(c.initrd, Some(PathBuf::from("i")));
        assert_eq!(c.vcpus, 2);
        assert_eq!(c.memory_mib, 512);
        assert_eq!(
            c.vsock,
            Some(VsockConfig {
                guest_cid: 7,
                uds_path: PathBuf::from("/tmp/v.sock")
            })
        );
        assert_eq!(c.console, ConsoleTarget::File(PathBuf::from("/tmp/con")));
        assert!(c.timing);
        assert!(c.console_input);
        assert_eq!(
            c.vhost_user_fs,
            vec![VhostUserFsConfig {
                tag: "vfs".into(),
                socket: PathBuf::from("/run/virtiofsd.sock"),
            }]
        );
        assert_eq!(
            c.fs,
            vec![
                FsConfig {
                    tag: "data".into(),
                    shared_dir: PathBuf::from("/srv/data"),
                    read_only: false,
                },
                FsConfig {
                    tag: "conf".into(),
                    shared_dir: PathBuf::from("/etc/x:y"),
                    read_only: true,
                },
            ]
        );
    }

    #[test]
    fn errors() {
        assert!(parse(&[]).is_err(), "kernel is required");
        assert!(parse(&["--kernel", "k", "--vcpus", "0"]).is_err());
        assert!(parse(&["--kernel", "k", "--vcpus", "x"]).is_err());
        assert!(parse(&["--kernel", "k", "--vcpus", "33"]).is_err());
        assert!(parse(&["--kernel", "k", "--memory-mib", "8"]).is_err());
        assert!(parse(&["--kernel", "k", "--vsock-cid", "2"]).is_err());
        assert!(parse(&["--kernel", "k", "--bogus"]).is_err());
        assert!(parse(&["--kernel", "k", "--fs", "nopath"]).is_err());
        assert!(parse(&["--kernel", "k", "--fs", "=/tmp"]).is_err());
        assert!(parse(&["--kernel", "k", "--fs", "t="]).is_err());
        let long = format!("{}=/tmp", "x".repeat(37));
        assert!(parse(&["--kernel", "k", "--fs", &long]).is_err());
        for bad in ["nosocket", "=/tmp/s.sock", "t=", long.as_str()] {
            assert!(
                parse(&["--kernel", "k", "--vhost-user-fs", bad]).is_err(),
                "{bad}"
            );
        }
        let help = parse(&["--help"]).unwrap_err();
        assert!(!help.use_stderr());
        assert!(help.to_string().contains("143  stopped by SIGTERM"));
    }
}
