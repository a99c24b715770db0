//! The description of one microVM: kernel, initramfs, command line, vCPUs, memory, devices.

use std::path::PathBuf;

/// Where the guest serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleTarget {
    /// The VMM's stdout.
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
}

/// A hybrid vsock device (guest CID plus the host Unix socket path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context ID (3 or more).
    pub guest_cid: u64,
    /// Host-side Unix socket of the hybrid vsock.
    pub uds_path: PathBuf,
}

/// A virtio-fs share: the guest mounts `shared_dir` with `mount -t virtiofs TAG DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// Mount tag (1-36 bytes).
    pub tag: String,
    /// Host directory exported to the guest.
    pub shared_dir: PathBuf,
    /// Refuse every write with EROFS.
    pub read_only: bool,
}

/// A virtio-fs device served by an external vhost-user back-end (virtiofsd) listening on
/// `socket`; the guest mounts it with `mount -t virtiofs TAG DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserFsConfig {
    /// Mount tag (1-36 bytes).
    pub tag: String,
    /// The back-end's Unix socket.
    pub socket: PathBuf,
}

/// Everything needed to build a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Uncompressed ELF kernel (`vmlinux`).
    pub kernel: PathBuf,
    /// Optional initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command line; None means [`crate::cmdline::DEFAULT_CMDLINE`].
    pub cmdline: Option<String>,
    /// Number of vCPUs (1 to 32).
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Optional vsock device.
    pub vsock: Option<VsockConfig>,
    /// virtio-fs shares, each on its own MMIO slot after the vsock device.
    pub fs: Vec<FsConfig>,
    /// virtio-fs devices served by vhost-user back-ends, on the MMIO slots after `fs`.
    pub vhost_user_fs: Vec<VhostUserFsConfig>,
    /// Serial console destination.
    pub console: ConsoleTarget,
    /// Most bytes of guest console output written (the rest is dropped).
    pub console_limit: u64,
    /// Feed the VMM's stdin to the guest's serial port.
    pub console_input: bool,
    /// Print `peapod-vmm: timing setup_us=...` before the first KVM_RUN.
    pub timing: bool,
    /// Treat a guest whose vCPUs all halted with interrupts off as powered off (how Linux
    /// without ACPI powers off). Guests that end themselves with an i8042 reset (the peapod
    /// agent) turn it off, since it can misfire; the vCPUs are still probed twice a second.
    pub halt_detection: bool,
}
