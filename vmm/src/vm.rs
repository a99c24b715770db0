//! Building a microVM from a [`VmConfig`] (KVM VM, memory, devices, kernel, vCPUs) and running
//! it until the guest stops, the host signals the VMM, or a vCPU fails.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuFd, VmFd};
use vm_memory::{Address, GuestMemory, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::vcpu_setup::{configure_vcpu, VcpuSetupError, VcpuTopology};
use crate::arch::x86_64::{boot, cpuid, layout, mptable};
use crate::bus::{Bus, BusDevice, BusError};
use crate::cmdline::{build_cmdline, MmioDeviceParam};
use crate::config::{ConsoleTarget, VmConfig};
use crate::devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::serial::{SerialDevice, COM1_BASE, COM1_GSI, COM1_LEN};
use crate::exit::VmExit;
use crate::memory::{create_guest_ram, GuestRam, MemoryError};
use crate::signals::{HostSignals, SignalError};
use crate::vcpu::{install_kick_handler, ExitNotifier, VcpuContext, VcpuError, VcpuHandle};
use crate::virtio::counters::Counters;
use crate::virtio::mmio::{MmioError, MmioTransport};
use crate::virtio::VirtioDevice;

/// Offset of the QueueNotify register in a virtio-mmio window.
const VIRTIO_MMIO_QUEUE_NOTIFY: u64 = 0x50;
const KVM_API_VERSION: i32 = 12;

/// Errors of VM setup and run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A KVM ioctl failed.
    #[error("kvm: {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    /// KVM lacks a capability the VMM needs.
    #[error("kvm lacks a required capability: {0}")]
    MissingCap(&'static str),
    /// The KVM API version is not 12.
    #[error("unsupported kvm api version {0}")]
    ApiVersion(i32),
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Guest memory could not be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Kernel, initramfs, command line or boot_params setup failed.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// A vCPU could not be configured.
    #[error(transparent)]
    VcpuSetup(#[from] VcpuSetupError),
    /// The MP table could not be written.
    #[error(transparent)]
    Mptable(#[from] mptable::MptableError),
    /// A device could not be placed on a bus.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// An eventfd could not be created.
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
    /// The console could not be opened.
    #[error("cannot open console {path}: {source}")]
    Console {
        path: String,
        source: std::io::Error,
    },
    /// A virtio device could not be created.
    #[error("virtio device: {0}")]
    Virtio(#[from] crate::virtio_devices::VirtioDeviceError),
    /// The virtio-mmio transport could not be created.
    #[error(transparent)]
    Mmio(#[from] MmioError),
    /// vCPU thread handling failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// Signal handling failed.
    #[error(transparent)]
    Signals(#[from] SignalError),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        MmioTransport::read(self, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        MmioTransport::write(self, offset, data);
    }
}

/// A built VM, ready to run.
pub struct Vm {
    vm_fd: VmFd,
    ram: GuestRam,
    vcpus: Vec<VcpuFd>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<ExitNotifier>,
    reset_evt: EventFd,
    serial: Arc<Mutex<SerialDevice>>,
    console_input: Option<File>,
    virtio: Vec<Arc<Mutex<MmioTransport>>>,
    counters: Vec<Arc<Counters>>,
    irq_evts: Vec<(EventFd, u32)>,
    cmdline: String,
    timing_start: Option<Instant>,
    halt_detection: bool,
}

impl Vm {
    /// Builds the VM described by `config` on the KVM device `kvm_file` (see
    /// [`crate::host_check::HostCheck::run`]). `start` is when the process started, for the
    /// setup timing line.
    pub fn build(config: &VmConfig, kvm_file: File, start: Instant) -> Result<Vm, VmError> {
        validate(config)?;
        // SAFETY: `kvm_file` is an open /dev/kvm whose ownership moves into `Kvm`.
        let kvm = unsafe { Kvm::from_raw_fd(kvm_file.into_raw_fd()) };
        check_kvm(&kvm)?;
        let vm_fd = kvm.create_vm().map_err(kvm_err("create vm"))?;
        vm_fd
            .set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDRESS)
            .map_err(kvm_err("set identity map address"))?;
        vm_fd
            .set_tss_address(layout::KVM_TSS_ADDRESS as usize)
            .map_err(kvm_err("set tss address"))?;
        vm_fd.create_irq_chip().map_err(kvm_err("create irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm_fd.create_pit2(pit).map_err(kvm_err("create pit2"))?;

        let mem_size = config.memory_mib << 20;
        let ram = create_guest_ram(&layout::ram_ranges(mem_size))?;
        register_memory(&vm_fd, &ram)?;

        let exit = Arc::new(ExitNotifier::new(new_eventfd()?));
        let reset_evt = new_eventfd()?;
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let mut irq_evts = Vec::new();

        let serial_irq = new_eventfd()?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            clone_evt(&serial_irq)?,
            open_console(&config.console)?,
            config.console_limit,
        )));
        pio.insert(COM1_BASE, COM1_LEN, serial.clone())?;
        irq_evts.push((serial_irq, COM1_GSI));
        let i8042 = Arc::new(Mutex::new(I8042::new(clone_evt(&reset_evt)?)));
        pio.insert(I8042_BASE, I8042_LEN, i8042)?;

        let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
        if let Some(vsock) = &config.vsock {
            devices.push(crate::virtio_devices::vsock(vsock)?);
        }
        for fs in &config.fs {
            devices.push(crate::virtio_devices::fs(fs)?);
        }
        for fs in &config.vhost_user_fs {
            devices.push(crate::virtio_devices::vhost_user_fs(fs)?);
        }
        let counters: Vec<Arc<Counters>> = devices.iter().filter_map(|d| d.counters()).collect();
        let mut virtio = Vec::new();
        let mut params = Vec::new();
        for (index, device) in devices.into_iter().enumerate() {
            let (base, gsi) = u32::try_from(index)
                .ok()
                .and_then(layout::virtio_mmio_slot)
                .ok_or_else(|| VmError::Config("too many virtio devices".into()))?;
            let irq = new_eventfd()?;
            let transport = MmioTransport::new(ram.mem.clone(), device, clone_evt(&irq)?)?;
            for (queue, evt) in transport.queue_evts().iter().enumerate() {
                vm_fd
                    .register_ioevent(
                        evt,
                        &IoEventAddress::Mmio(base + VIRTIO_MMIO_QUEUE_NOTIFY),
                        queue as u32,
                    )
                    .map_err(kvm_err("register virtio queue ioeventfd"))?;
            }
            let transport = Arc::new(Mutex::new(transport));
            mmio.insert(base, layout::VIRTIO_MMIO_SIZE, transport.clone())?;
            irq_evts.push((irq, gsi));
            virtio.push(transport);
            params.push(MmioDeviceParam {
                base,
                size: layout::VIRTIO_MMIO_SIZE,
                irq: gsi,
            });
        }
        for (evt, gsi) in &irq_evts {
            vm_fd
                .register_irqfd(evt, *gsi)
                .map_err(kvm_err("register irqfd"))?;
        }

        let kernel = boot::load_kernel(&ram.mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => Some(boot::load_initrd(&ram.mem, mem_size, kernel.end, path)?),
            None => None,
        };
        let cmdline = build_cmdline(config.cmdline.as_deref(), &params);
        boot::write_cmdline(&ram.mem, &cmdline)?;
        let params = boot::build_boot_params(mem_size, cmdline.len() + 1, initrd)?;
        boot::write_boot_params(&ram.mem, &params)?;
        mptable::setup_mptable(&ram.mem, config.vcpus)?;

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("get supported cpuid"))?;
        let host = cpuid::HostFeatures {
            tsc_deadline_timer: kvm.check_extension(Cap::TscDeadlineTimer),
        };
        let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
        for id in 0..config.vcpus {
            let fd = vm_fd
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("create vcpu"))?;
            let topology = VcpuTopology {
                id,
                count: config.vcpus,
                host,
            };
            configure_vcpu(&fd, &ram.mem, kernel.entry, &supported, topology)?;
            vcpus.push(fd);
        }

        Ok(Vm {
            vm_fd,
            ram,
            vcpus,
            pio: Arc::new(pio),
            mmio: Arc::new(mmio),
            exit,
            reset_evt,
            serial,
            console_input: if config.console_input {
                Some(stdin_file()?)
            } else {
                None
            },
            virtio,
            counters,
            irq_evts,
            cmdline,
            timing_start: config.timing.then_some(start),
            halt_detection: config.halt_detection,
        })
    }

    /// The kernel command line given to the guest.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Bytes of guest RAM.
    pub fn memory_size(&self) -> u64 {
        self.ram.mem.iter().map(|r| r.len()).sum()
    }

    /// Runs the VM until it ends, then stops and joins every vCPU thread. SIGINT and SIGTERM
    /// are blocked in the calling thread (and thus in the vCPU threads) while it runs; SIGUSR1
    /// prints a state dump to stderr ([`crate::diagnostics`]).
    pub fn run(mut self) -> Result<VmExit, VmError> {
        let signals = HostSignals::block()?;
        install_kick_handler()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(self.vcpus.len());
        let mut spawn_error = None;
        for (id, fd) in self.vcpus.drain(..).enumerate() {
            let ctx = VcpuContext {
                pio: self.pio.clone(),
                mmio: self.mmio.clone(),
                exit: self.exit.clone(),
                stop: stop.clone(),
                timing_start: if id == 0 { self.timing_start } else { None },
            };
            match VcpuHandle::spawn(id as u32, fd, ctx) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        let outcome = match spawn_error {
            Some(e) => Err(VmError::Vcpu(e)),
            None => wait_for_exit(Watched {
                signals: &signals,
                exit: self.exit.as_ref(),
                reset_evt: &self.reset_evt,
                vcpus: &handles,
                counters: &self.counters,
                transports: &self.virtio,
                serial: &self.serial,
                input: self.console_input.take(),
                halt_detection: self.halt_detection,
            }),
        };
        stop.store(true, Ordering::SeqCst);
        for h in &handles {
            h.kick();
        }
        let mut join_error = None;
        for h in handles {
            if let Err(e) = h.join() {
                join_error.get_or_insert(e);
            }
        }
        // Console output that cannot be flushed at exit is lost; nothing else to do about it.
        let _ = lock_serial(&self.serial).flush();
        for (evt, gsi) in &self.irq_evts {
            // Best effort: the VM fd closes right after, which drops them anyway.
            let _ = self.vm_fd.unregister_irqfd(evt, *gsi);
        }
        drop(signals);
        match (outcome, join_error) {
            (Ok(exit), None) => Ok(exit),
            (Err(e), _) => Err(e),
            (Ok(_), Some(e)) => Err(VmError::Vcpu(e)),
        }
    }

    /// Number of virtio-mmio devices.
    pub fn virtio_device_count(&self) -> usize {
        self.virtio.len()
    }
}

/// How often the vCPUs are probed for a guest that halted all its CPUs.
const HALT_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Consecutive probe rounds that must find every vCPU stopped before the guest counts as
/// stopped. One round is not enough: a live Linux vCPU also halts with interrupts off for a
/// moment (waiting on a paravirtual spinlock), and the vCPUs answer a round at different
/// instants, so a single round can see every vCPU "stopped" in a running guest (seen as a VMM
/// exiting 0 in the middle of a 2-vCPU boot). A real halt or power-off stays that way.
const HALT_CONFIRM_ROUNDS: u32 = 4;
/// Most bytes of console input read at once.
const CONSOLE_INPUT_CHUNK: usize = 64;

/// What the main thread watches while the VM runs.
struct Watched<'a> {
    signals: &'a HostSignals,
    exit: &'a ExitNotifier,
    reset_evt: &'a EventFd,
    vcpus: &'a [VcpuHandle],
    counters: &'a [Arc<Counters>],
    transports: &'a [Arc<Mutex<MmioTransport>>],
    serial: &'a Mutex<SerialDevice>,
    /// The VMM's stdin (unbuffered), fed to the guest's serial port, until end of file.
    input: Option<File>,
    /// Probe the vCPUs for a halted guest.
    halt_detection: bool,
}

fn lock_serial(serial: &Mutex<SerialDevice>) -> std::sync::MutexGuard<'_, SerialDevice> {
    serial
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn wait_for_exit(mut w: Watched<'_>) -> Result<VmExit, VmError> {
    let mut probed = false;
    let mut stopped_rounds = 0u32;
    let mut next_probe = Instant::now() + HALT_PROBE_INTERVAL;
    loop {
        let mut fds = vec![
            pollfd(w.exit.eventfd().as_raw_fd()),
            pollfd(w.reset_evt.as_raw_fd()),
            pollfd(w.signals.as_raw_fd()),
        ];
        // Console input is only read while the UART's FIFO has room; the guest drains it, and
        // the next probe tick (at the latest) looks again.
        let input_room = match &w.input {
            Some(_) => lock_serial(w.serial).input_capacity(),
            None => 0,
        };
        if let (Some(input), true) = (&w.input, input_room > 0) {
            fds.push(pollfd(input.as_raw_fd()));
        }
        let timeout = next_probe.saturating_duration_since(Instant::now());
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs during the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(VmError::Signals(SignalError::Poll(err)));
        }
        if fds[2].revents != 0 {
            match w.signals.read()? {
                Some(libc::SIGUSR1) => {
                    crate::diagnostics::dump_state(w.vcpus, w.counters, w.transports)
                }
                Some(sig) => return Ok(VmExit::Signal(sig)),
                None => {}
            }
        }
        if fds[1].revents != 0 {
            let _ = w.reset_evt.read();
            return Ok(VmExit::GuestReset);
        }
        if fds[0].revents != 0 {
            let _ = w.exit.eventfd().read();
            if let Some(e) = w.exit.take() {
                return Ok(e);
            }
        }
        if fds.get(3).is_some_and(|f| f.revents != 0) {
            forward_input(&mut w.input, w.serial, input_room);
        }
        if Instant::now() >= next_probe {
            next_probe = Instant::now() + HALT_PROBE_INTERVAL;
            // The answers to the previous probe round are in; a guest whose vCPUs are all
            // halted with interrupts off has stopped itself. Without halt detection the probe
            // still runs (it kicks every vCPU out of KVM_RUN twice a second): in the emulated
            // test host, guests stalled in timed waits when it was off.
            if w.halt_detection && probed && w.vcpus.iter().all(VcpuHandle::is_stopped) {
                stopped_rounds += 1;
                if stopped_rounds >= HALT_CONFIRM_ROUNDS {
                    return Ok(VmExit::GuestStopped);
                }
            } else {
                stopped_rounds = 0;
            }
            w.vcpus.iter().for_each(VcpuHandle::probe);
            probed = true;
        }
    }
}

fn pollfd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Moves up to `room` bytes from the console input to the UART; closes the input at end of
/// file or on a read error.
fn forward_input(input: &mut Option<File>, serial: &Mutex<SerialDevice>, room: usize) {
    let Some(file) = input else {
        return;
    };
    let mut buf = [0u8; CONSOLE_INPUT_CHUNK];
    let len = room.min(buf.len());
    match file.read(&mut buf[..len]) {
        Ok(0) => *input = None,
        Ok(n) => {
            // At most `room` bytes were read, so the FIFO takes them all.
            let _ = lock_serial(serial).enqueue_input(&buf[..n]);
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
        Err(_) => *input = None,
    }
}

/// An unbuffered handle on the VMM's stdin (a duplicate of fd 0, close-on-exec).
fn stdin_file() -> Result<File, VmError> {
    let stdin = std::io::stdin();
    let fd = stdin
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| VmError::Console {
            path: "stdin".into(),
            source,
        })?;
    Ok(File::from(fd))
}

fn validate(config: &VmConfig) -> Result<(), VmError> {
    if config.vcpus == 0 || config.vcpus > mptable::MAX_VCPUS {
        return Err(VmError::Config(format!(
            "vcpus must be 1 to {}, got {}",
            mptable::MAX_VCPUS,
            config.vcpus
        )));
    }
    // The boot area, page tables and a kernel need a few MiB; 64 TiB is far past any host.
    if config.memory_mib < 16 || config.memory_mib > (64 << 20) {
        return Err(VmError::Config(format!(
            "memory must be 16 MiB to 64 TiB, got {} MiB",
            config.memory_mib
        )));
    }
    Ok(())
}

fn check_kvm(kvm: &Kvm) -> Result<(), VmError> {
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(VmError::ApiVersion(version));
    }
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::PitState2, "KVM_CAP_PIT_STATE2"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
        (Cap::SetIdentityMapAddr, "KVM_CAP_SET_IDENTITY_MAP_ADDR"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmError::MissingCap(name));
        }
    }
    Ok(())
}

fn register_memory(vm_fd: &VmFd, ram: &GuestRam) -> Result<(), VmError> {
    for (slot, region) in ram.mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| VmError::Config(format!("guest region without host mapping: {e}")))?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping of `memory_size` bytes owned by `ram`, which
        // the `Vm` keeps until after the VM fd (and with it the slot) is closed.
        unsafe { vm_fd.set_user_memory_region(region) }.map_err(kvm_err("set memory region"))?;
    }
    Ok(())
}

fn new_eventfd() -> Result<EventFd, VmError> {
    EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)
}

fn clone_evt(evt: &EventFd) -> Result<EventFd, VmError> {
    evt.try_clone().map_err(VmError::EventFd)
}

fn open_console(target: &ConsoleTarget) -> Result<Box<dyn Write + Send>, VmError> {
    match target {
        ConsoleTarget::Stdout => {
            // Unbuffered: the UART flushes after each byte anyway.
            let fd = std::io::stdout().lock();
            let dup = std::os::fd::AsFd::as_fd(&fd)
                .try_clone_to_owned()
                .map_err(|source| VmError::Console {
                    path: "stdout".into(),
                    source,
                })?;
            Ok(Box::new(File::from(dup)))
        }
        ConsoleTarget::File(path) => {
            let file = File::create(path).map_err(|source| VmError::Console {
                path: path.display().to_string(),
                source,
            })?;
            Ok(Box::new(file))
        }
    }
}
