//! Putting one vCPU in the state the Linux 64-bit boot protocol expects: CPUID, boot MSRs,
//! general, special and FPU registers (with the GDT and page tables in guest memory), LAPIC.

use kvm_bindings::CpuId;
use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

use super::{cpuid, lapic, msrs, regs};

/// Errors of vCPU configuration.
#[derive(Debug, thiserror::Error)]
pub enum VcpuSetupError {
    /// A vCPU ioctl failed.
    #[error("kvm: {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    /// CPUID patching failed.
    #[error(transparent)]
    Cpuid(#[from] cpuid::CpuidError),
    /// The MSR list could not be built.
    #[error(transparent)]
    Msrs(#[from] msrs::MsrError),
    /// Not every boot MSR was accepted.
    #[error("kvm accepted only {set} of {wanted} boot msrs")]
    MsrsPartial { set: usize, wanted: usize },
    /// Page tables or GDT could not be written.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuSetupError {
    move |source| VcpuSetupError::Kvm { what, source }
}

/// The boot CPU topology and host features a vCPU is configured with.
#[derive(Debug, Clone, Copy)]
pub struct VcpuTopology {
    /// This vCPU's index (= its APIC ID).
    pub id: u8,
    /// Number of vCPUs of the VM.
    pub count: u8,
    /// Host KVM features that affect CPUID.
    pub host: cpuid::HostFeatures,
}

/// Configures `fd` to start the kernel at `entry` (every vCPU gets the same state; KVM keeps
/// the application processors waiting for INIT/SIPI).
pub fn configure_vcpu(
    fd: &VcpuFd,
    mem: &GuestMemoryMmap,
    entry: u64,
    supported_cpuid: &CpuId,
    topology: VcpuTopology,
) -> Result<(), VcpuSetupError> {
    let mut cpuid = supported_cpuid.clone();
    cpuid::patch_cpuid(&mut cpuid, topology.id, topology.count, topology.host)?;
    fd.set_cpuid2(&cpuid).map_err(kvm_err("set cpuid"))?;
    let boot_msrs = msrs::boot_msrs()?;
    let set = fd.set_msrs(&boot_msrs).map_err(kvm_err("set msrs"))?;
    let wanted = boot_msrs.as_slice().len();
    if set != wanted {
        return Err(VcpuSetupError::MsrsPartial { set, wanted });
    }
    fd.set_regs(&regs::boot_regs(entry))
        .map_err(kvm_err("set regs"))?;
    let mut sregs = fd.get_sregs().map_err(kvm_err("get sregs"))?;
    regs::setup_segments(mem, &mut sregs)?;
    regs::setup_page_tables(mem, &mut sregs)?;
    fd.set_sregs(&sregs).map_err(kvm_err("set sregs"))?;
    fd.set_fpu(&regs::boot_fpu()).map_err(kvm_err("set fpu"))?;
    let mut klapic = fd.get_lapic().map_err(kvm_err("get lapic"))?;
    lapic::set_lint(&mut klapic);
    fd.set_lapic(&klapic).map_err(kvm_err("set lapic"))?;
    Ok(())
}
