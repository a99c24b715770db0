//! vCPU threads: one thread per vCPU runs KVM_RUN in a loop, routes port I/O and MMIO exits to
//! the buses, and reports the event that ends the VM. The VMM stops a vCPU by setting its stop
//! flag and `immediate_exit`, then kicking the thread with a real-time signal.
//!
//! Without ACPI a guest `poweroff` becomes a halt: the kernel disables interrupts and halts
//! every CPU for good, which the in-kernel irqchip handles without any exit to user space. The
//! VMM finds such a guest by "probing" the vCPUs periodically (same kick, with a probe flag):
//! the vCPU thread then reads its MP state and RFLAGS and records whether the vCPU is halted
//! with interrupts disabled (or, for an application processor, was never started).
//!
//! The same kick also serves a state dump ([`VcpuHandle::request_dump`], on SIGUSR1 to the VMM):
//! the vCPU thread prints its registers, MP state, pending events and LAPIC timer to stderr, so
//! a guest that stopped making progress can be told from a VMM thread stuck outside KVM_RUN.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_bindings::{
    kvm_run, KVM_MP_STATE_HALTED, KVM_MP_STATE_UNINITIALIZED, KVM_SYSTEM_EVENT_CRASH,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::bus::Bus;
use crate::exit::VmExit;

/// Errors of vCPU thread management.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The kick signal handler could not be installed.
    #[error("cannot install the vcpu kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    /// The thread could not be spawned.
    #[error("cannot spawn vcpu thread: {0}")]
    Spawn(std::io::Error),
    /// The thread panicked.
    #[error("vcpu {0} thread panicked")]
    Panicked(u32),
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the signal only makes KVM_RUN return EINTR.
}

/// Installs the (empty) kick signal handler; call once before spawning vCPU threads.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(kick_signal(), handle_kick).map_err(VcpuError::Signal)
}

/// The first event that ends the VM, shared by all threads; later events are ignored.
pub struct ExitNotifier {
    reason: Mutex<Option<VmExit>>,
    evt: EventFd,
}

impl ExitNotifier {
    /// A notifier that writes `evt` when an exit is reported.
    pub fn new(evt: EventFd) -> Self {
        ExitNotifier {
            reason: Mutex::new(None),
            evt,
        }
    }

    /// Records `exit` unless another one came first, and wakes the VMM's main thread.
    pub fn report(&self, exit: VmExit) {
        let mut reason = self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if reason.is_none() {
            *reason = Some(exit);
        }
        // Only fails when the counter would overflow, i.e. the main thread is already woken.
        let _ = self.evt.write(1);
    }

    /// The recorded exit, if any.
    pub fn take(&self) -> Option<VmExit> {
        self.reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// The eventfd written on each report.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// What a vCPU thread needs besides its file descriptor.
pub struct VcpuContext {
    /// Port I/O bus.
    pub pio: Arc<Bus>,
    /// MMIO bus.
    pub mmio: Arc<Bus>,
    /// Where to report the end of the VM.
    pub exit: Arc<ExitNotifier>,
    /// Set when the VM stops.
    pub stop: Arc<AtomicBool>,
    /// With `Some(start)`, print the setup time before the first KVM_RUN.
    pub timing_start: Option<Instant>,
}

/// `kvm_run.immediate_exit` of a vCPU, written atomically from the vCPU thread and the VMM's
/// main thread.
#[derive(Clone, Copy)]
struct ImmediateExit(*const AtomicU8);

// SAFETY: the pointer targets the vCPU's mmapped kvm_run page, which stays mapped as long as
// the `VcpuFd`; the `VcpuFd` is returned by the thread and only dropped after the join, so the
// page outlives every use of this pointer (by the thread, and by the handle before the join).
// Accesses are atomic.
unsafe impl Send for ImmediateExit {}

impl ImmediateExit {
    fn set(self, value: u8) {
        // SAFETY: see the `Send` impl: the page is mapped whenever this is called.
        unsafe { (*self.0).store(value, Ordering::SeqCst) };
    }
}

/// Flags shared between a vCPU thread and the VMM's main thread.
#[derive(Default)]
struct ProbeState {
    /// Set by the main thread: report whether the vCPU is stopped for good.
    requested: AtomicBool,
    /// Set by the vCPU thread: the vCPU was halted with interrupts disabled (or never started)
    /// at the last probe.
    stopped: AtomicBool,
    /// Set by the main thread: print the vCPU's state to stderr.
    dump_requested: AtomicBool,
    /// Set by the vCPU thread once it printed the state asked for.
    dumped: AtomicBool,
}

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// A running vCPU thread.
pub struct VcpuHandle {
    id: u32,
    thread: Option<JoinHandle<VcpuFd>>,
    immediate_exit: ImmediateExit,
    probe: Arc<ProbeState>,
}

impl VcpuHandle {
    /// Spawns the thread running vCPU `id`.
    pub fn spawn(id: u32, mut fd: VcpuFd, ctx: VcpuContext) -> Result<Self, VcpuError> {
        let run: *mut kvm_run = fd.get_kvm_run();
        // SAFETY: `run` points to the live kvm_run mapping; addr_of_mut takes the field's
        // address without creating a reference.
        let field = unsafe { std::ptr::addr_of_mut!((*run).immediate_exit) };
        let immediate_exit = ImmediateExit(field.cast::<AtomicU8>());
        let probe = Arc::new(ProbeState::default());
        let thread_probe = probe.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                run_vcpu(id, &mut fd, &ctx, &thread_probe, immediate_exit);
                // Whatever ended this vCPU also ends the VM.
                ctx.stop.store(true, Ordering::SeqCst);
                fd
            })
            .map_err(VcpuError::Spawn)?;
        Ok(VcpuHandle {
            id,
            thread: Some(thread),
            immediate_exit,
            probe,
        })
    }

    /// Asks the vCPU thread to check whether its vCPU is stopped for good; the answer is in
    /// [`VcpuHandle::is_stopped`] shortly after.
    pub fn probe(&self) {
        // A vCPU that does not answer this round must not count with an earlier answer.
        self.probe.stopped.store(false, Ordering::SeqCst);
        self.probe.requested.store(true, Ordering::SeqCst);
        self.kick();
    }

    /// Whether the last probe found the vCPU halted with interrupts disabled (or never
    /// started).
    pub fn is_stopped(&self) -> bool {
        self.probe.stopped.load(Ordering::SeqCst)
    }

    /// Asks the vCPU thread to print its vCPU's state to stderr; [`VcpuHandle::dumped`] says
    /// when it did. A thread blocked outside KVM_RUN (in a device, say) never answers.
    pub fn request_dump(&self) {
        self.probe.dumped.store(false, Ordering::SeqCst);
        self.probe.dump_requested.store(true, Ordering::SeqCst);
        self.kick();
    }

    /// Whether the state asked for by the last [`VcpuHandle::request_dump`] was printed.
    pub fn dumped(&self) -> bool {
        self.probe.dumped.load(Ordering::SeqCst)
    }

    /// The vCPU index.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Makes the vCPU leave KVM_RUN (to stop it, set its stop flag first).
    pub fn kick(&self) {
        // The kvm_run page is mapped until the thread is joined, which consumes `self`.
        self.immediate_exit.set(1);
        if let Some(thread) = &self.thread {
            // SAFETY: the pthread_t belongs to a thread that has not been joined yet, so it is
            // valid; a finished thread only yields ESRCH, which is fine.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), kick_signal()) };
        }
    }

    /// Waits for the thread and closes the vCPU.
    pub fn join(mut self) -> Result<(), VcpuError> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map(drop)
                .map_err(|_| VcpuError::Panicked(self.id)),
            None => Ok(()),
        }
    }
}

fn run_vcpu(
    id: u32,
    fd: &mut VcpuFd,
    ctx: &VcpuContext,
    probe: &ProbeState,
    immediate_exit: ImmediateExit,
) {
    if let Some(start) = ctx.timing_start {
        eprintln!(
            "peapod-vmm: timing setup_us={}",
            start.elapsed().as_micros()
        );
    }
    loop {
        if ctx.stop.load(Ordering::SeqCst) {
            return;
        }
        if let Some(exit) = run_once(id, fd, ctx) {
            if matches!(exit, VmExit::GuestShutdownExit { .. }) {
                // A triple fault leaves the registers as they were at the fault: where the
                // guest was is the one clue such a crash leaves.
                eprintln!(
                    "peapod-vmm: state: vcpu{id} at KVM_EXIT_SHUTDOWN: {}",
                    crate::arch::x86_64::vcpu_state::describe(fd)
                );
            }
            ctx.exit.report(exit);
            return;
        }
        // Re-arm KVM_RUN after a kick. A kick racing with this is not lost: the kicker sets
        // the stop or probe flag before `immediate_exit`, and both flags are read after this
        // store; a kick landing after it makes the next KVM_RUN return at once.
        immediate_exit.set(0);
        if probe.requested.swap(false, Ordering::SeqCst) {
            probe.stopped.store(stopped_for_good(fd), Ordering::SeqCst);
        }
        if probe.dump_requested.swap(false, Ordering::SeqCst) {
            eprintln!(
                "peapod-vmm: state: vcpu{id}: {}",
                crate::arch::x86_64::vcpu_state::describe(fd)
            );
            probe.dumped.store(true, Ordering::SeqCst);
        }
    }
}

/// Whether the vCPU can never run again on its own: halted with interrupts disabled (how
/// Linux stops a CPU on halt or power-off without ACPI), or an application processor that was
/// never started.
fn stopped_for_good(fd: &VcpuFd) -> bool {
    match fd.get_mp_state() {
        Ok(mp) if mp.mp_state == KVM_MP_STATE_UNINITIALIZED => true,
        Ok(mp) if mp.mp_state == KVM_MP_STATE_HALTED => fd
            .get_regs()
            .map(|regs| regs.rflags & RFLAGS_IF == 0)
            .unwrap_or(false),
        _ => false,
    }
}

/// One KVM_RUN; returns the event that ends the VM, if any.
fn run_once(id: u32, fd: &mut VcpuFd, ctx: &VcpuContext) -> Option<VmExit> {
    let error = |reason: String| Some(VmExit::VcpuError { vcpu: id, reason });
    match fd.run() {
        Ok(VcpuExit::IoIn(port, data)) => {
            if !ctx.pio.read(u64::from(port), data) {
                data.fill(0);
            }
            None
        }
        Ok(VcpuExit::IoOut(port, data)) => {
            ctx.pio.write(u64::from(port), data);
            None
        }
        Ok(VcpuExit::MmioRead(addr, data)) => {
            if !ctx.mmio.read(addr, data) {
                data.fill(0);
            }
            None
        }
        Ok(VcpuExit::MmioWrite(addr, data)) => {
            ctx.mmio.write(addr, data);
            None
        }
        Ok(VcpuExit::Hlt) => Some(VmExit::GuestHalt { vcpu: id }),
        Ok(VcpuExit::Shutdown) => Some(VmExit::GuestShutdownExit { vcpu: id }),
        Ok(VcpuExit::SystemEvent(kind, data)) => match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN | KVM_SYSTEM_EVENT_RESET => {
                Some(VmExit::GuestSystemEvent { vcpu: id, kind })
            }
            KVM_SYSTEM_EVENT_CRASH => error(format!("guest crash system event {data:x?}")),
            other => error(format!("unknown system event {other} {data:x?}")),
        },
        Ok(VcpuExit::FailEntry(reason, cpu)) => error(format!(
            "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on cpu {cpu}"
        )),
        Ok(VcpuExit::InternalError) => error(internal_error_text(fd)),
        Ok(VcpuExit::Intr) => None,
        Ok(other) => error(format!("unexpected exit {other:?}")),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
        Err(e) => error(format!("KVM_RUN failed: {e}")),
    }
}

/// Describes a KVM_EXIT_INTERNAL_ERROR (suberror 1 is an instruction emulation failure).
fn internal_error_text(fd: &mut VcpuFd) -> String {
    let run = fd.get_kvm_run();
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the valid member
    // of the exit union.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    let kind = match internal.suberror {
        1 => "emulation failure",
        2 => "simultaneous exception",
        3 => "delivery event failure",
        _ => "internal error",
    };
    let regs = fd
        .get_regs()
        .map(|r| format!(" rip={:#x}", r.rip))
        .unwrap_or_default();
    format!(
        "KVM_EXIT_INTERNAL_ERROR: {kind} (suberror {}) data {:x?}{regs}",
        internal.suberror,
        &internal.data[..n]
    )
}

#[cfg(test)]
mod tests {
    //! These tests run real vCPUs in real mode; they are skipped (with a note) when /dev/kvm
    //! cannot be opened. They need no bootable guest, so they also pass on a PVM host.
    use super::*;
    use crate::bus::BusDevice;
    use kvm_bindings::kvm_userspace_memory_region;
    use kvm_ioctls::{Kvm, VmFd};
    use std::time::Duration;

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl BusDevice for Sink {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(0x42);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(data);
        }
    }

    /// A VM with 64 KiB of memory holding `code` at 0x1000 and one real-mode vCPU there.
    fn real_mode_vm(code: &[u8]) -> Option<(VmFd, VcpuFd, vm_memory::GuestMemoryMmap)> {
        real_mode_vm_with(code, false)
    }

    fn real_mode_vm_with(
        code: &[u8],
        irqchip: bool,
    ) -> Option<(VmFd, VcpuFd, vm_memory::GuestMemoryMmap)> {
        use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryRegion};
        let kvm = match Kvm::new() {
            Ok(kvm) => kvm,
            Err(e) => {
                eprintln!("note: /dev/kvm unusable ({e}); real-mode vcpu test skipped");
                return None;
            }
        };
        let vm = kvm.create_vm().unwrap();
        let mem = vm_memory::GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        mem.write_slice(code, GuestAddress(0x1000)).unwrap();
        let region = mem.iter().next().unwrap();
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .unwrap();
        // SAFETY: `mem` stays mapped for the whole test (it is returned with the VM).
        unsafe {
            vm.set_user_memory_region(kvm_userspace_memory_region {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0,
                memory_size: 0x10000,
                userspace_addr: host as u64,
            })
            .unwrap();
        }
        if irqchip {
            vm.create_irq_chip().unwrap();
        }
        let vcpu = vm.create_vcpu(0).unwrap();
        let mut sregs = vcpu.get_sregs().unwrap();
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu.set_sregs(&sregs).unwrap();
        let regs = kvm_bindings::kvm_regs {
            rip: 0x1000,
            rflags: 2,
            ..Default::default()
        };
        vcpu.set_regs(&regs).unwrap();
        Some((vm, vcpu, mem))
    }

    fn context(out: Arc<Mutex<Vec<u8>>>) -> (VcpuContext, EventFd) {
        let mut pio = Bus::new();
        pio.insert(0x3f8, 8, Arc::new(Mutex::new(Sink(out))))
            .unwrap();
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let ctx = VcpuContext {
            pio: Arc::new(pio),
            mmio: Arc::new(Bus::new()),
            exit: Arc::new(ExitNotifier::new(evt.try_clone().unwrap())),
            stop: Arc::new(AtomicBool::new(false)),
            timing_start: None,
        };
        (ctx, evt)
    }

    #[test]
    fn port_io_reaches_the_bus_and_hlt_ends_the_vcpu() {
        // mov dx,0x3f8; mov al,'o'; out dx,al; mov al,'k'; out dx,al; in al,dx; out dx,al; hlt
        let code = [
            0xba, 0xf8, 0x03, 0xb0, b'o', 0xee, 0xb0, b'k', 0xee, 0xec, 0xee, 0xf4,
        ];
        let Some((_vm, vcpu, _mem)) = real_mode_vm(&code) else {
            return;
        };
        let out = Arc::new(Mutex::new(Vec::new()));
        let (ctx, evt) = context(out.clone());
        let handle = VcpuHandle::spawn(0, vcpu, ctx).unwrap();
        handle.join().unwrap();
        assert_eq!(out.lock().unwrap().as_slice(), b"ok\x42");
        assert_eq!(evt.read().unwrap(), 1);
    }

    #[test]
    fn a_spinning_vcpu_is_kicked_out_of_kvm_run() {
        install_kick_handler().unwrap();
        // jmp $ (spin forever)
        let Some((_vm, vcpu, _mem)) = real_mode_vm(&[0xeb, 0xfe]) else {
            return;
        };
        let out = Arc::new(Mutex::new(Vec::new()));
        let (ctx, _evt) = context(out);
        let stop = ctx.stop.clone();
        let exit = ctx.exit.clone();
        let handle = VcpuHandle::spawn(0, vcpu, ctx).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        stop.store(true, Ordering::SeqCst);
        handle.kick();
        handle.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(exit.take(), None, "a kick is not a guest exit");
    }

    #[test]
    fn a_dump_request_is_answered_by_a_running_vcpu() {
        install_kick_handler().unwrap();
        // jmp $ (spin forever)
        let Some((_vm, vcpu, _mem)) = real_mode_vm(&[0xeb, 0xfe]) else {
            return;
        };
        let (ctx, _evt) = context(Arc::new(Mutex::new(Vec::new())));
        let stop = ctx.stop.clone();
        let handle = VcpuHandle::spawn(0, vcpu, ctx).unwrap();
        assert!(!handle.dumped());
        handle.request_dump();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !handle.dumped() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(handle.dumped(), "the vcpu thread did not print its state");
        stop.store(true, Ordering::SeqCst);
        handle.kick();
        handle.join().unwrap();
    }

    /// Runs `code` with an in-kernel irqchip, probes it for a while, and returns whether a
    /// probe found it stopped for good.
    fn probed_stopped(code: &[u8]) -> Option<bool> {
        install_kick_handler().unwrap();
        let (vm, vcpu, _mem) = real_mode_vm_with(code, true)?;
        let out = Arc::new(Mutex::new(Vec::new()));
        let (ctx, _evt) = context(out);
        let stop = ctx.stop.clone();
        let handle = VcpuHandle::spawn(0, vcpu, ctx).unwrap();
        let mut stopped = false;
        for _ in 0..20 {
            handle.probe();
            std::thread::sleep(Duration::from_millis(10));
            stopped |= handle.is_stopped();
        }
        stop.store(true, Ordering::SeqCst);
        handle.kick();
        handle.join().unwrap();
        drop(vm);
        Some(stopped)
    }

    #[test]
    fn probes_tell_a_dead_cpu_from_a_live_one() {
        // cli; hlt: stopped for good.
        let Some(dead) = probed_stopped(&[0xfa, 0xf4]) else {
            return;
        };
        assert!(dead, "cli; hlt must be found stopped");
        // sti; hlt: idle, an interrupt would wake it.
        assert_eq!(probed_stopped(&[0xfb, 0xf4]), Some(false));
        // jmp $: running.
        assert_eq!(probed_stopped(&[0xeb, 0xfe]), Some(false));
    }
}
