//! x86_64 guest setup (memory layout, kernel boot parameters, CPUID, MSRs, registers, LAPIC)
//! and the vCPU state dump.

pub mod boot;
pub mod cpuid;
pub mod lapic;
pub mod layout;
pub mod mptable;
pub mod msrs;
pub mod regs;
pub mod vcpu_setup;
pub mod vcpu_state;
