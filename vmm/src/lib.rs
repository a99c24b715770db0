//! KVM microVM monitor: guest memory, vCPUs, kernel boot and virtio-mmio devices.
//!
//! The library builds one microVM from a [`config::VmConfig`] ([`vm::Vm::build`]) and runs it
//! until the guest powers off, a signal arrives or a vCPU fails ([`vm::Vm::run`]). The
//! `peapod-vmm` binary is a thin CLI around it; its exit statuses are in [`exit::ExitStatus`].

#[cfg(target_arch = "x86_64")]
pub mod arch;
pub mod bus;
pub mod cmdline;
pub mod config;
pub mod devices;
pub mod diagnostics;
pub mod exit;
pub mod host_check;
pub mod logging;
pub mod memory;
pub mod signals;
pub mod vcpu;
pub mod virtio;
pub mod virtio_devices;
pub mod vm;
