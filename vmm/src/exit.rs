//! Why the VMM stopped, and the documented process exit status for each reason.

use std::fmt;

/// Process exit statuses of `peapod-vmm` (documented in `docs/vmm.md` and `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The guest powered off or rebooted (i8042 reset, KVM_EXIT_SHUTDOWN, system event).
    GuestShutdown = 0,
    /// The VMM could not set the VM up (bad kernel, bad arguments, a failing ioctl).
    SetupError = 1,
    /// The host cannot run a standard guest: `/dev/kvm` missing, not accessible, or PVM.
    BadEnvironment = 2,
    /// A vCPU failed: KVM_EXIT_INTERNAL_ERROR (emulation failure), FAIL_ENTRY, or an
    /// unexpected exit or ioctl error.
    VcpuError = 3,
    /// The host sent SIGINT (128 + 2).
    Interrupted = 130,
    /// The host sent SIGTERM (128 + 15).
    Terminated = 143,
}

impl ExitStatus {
    /// The numeric process exit status.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The event that ended a running VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest wrote the reset command (0xFE) to the i8042 command port.
    GuestReset,
    /// A vCPU exited with KVM_EXIT_SHUTDOWN (triple fault or guest shutdown).
    GuestShutdownExit { vcpu: u32 },
    /// A vCPU exited with KVM_EXIT_SYSTEM_EVENT of the given type (shutdown or reset).
    GuestSystemEvent { vcpu: u32, kind: u32 },
    /// A vCPU halted with KVM_EXIT_HLT (only seen without an in-kernel irqchip).
    GuestHalt { vcpu: u32 },
    /// Every vCPU is halted with interrupts disabled (or was never started): the guest halted
    /// or powered off without ACPI.
    GuestStopped,
    /// The host sent this signal (SIGINT or SIGTERM).
    Signal(i32),
    /// A vCPU failed; the text says how.
    VcpuError { vcpu: u32, reason: String },
}

impl VmExit {
    /// The process exit status this event maps to.
    pub fn status(&self) -> ExitStatus {
        match self {
            VmExit::GuestReset
            | VmExit::GuestShutdownExit { .. }
            | VmExit::GuestSystemEvent { .. }
            | VmExit::GuestHalt { .. }
            | VmExit::GuestStopped => ExitStatus::GuestShutdown,
            VmExit::Signal(sig) if *sig == libc::SIGINT => ExitStatus::Interrupted,
            VmExit::Signal(_) => ExitStatus::Terminated,
            VmExit::VcpuError { .. } => ExitStatus::VcpuError,
        }
    }
}

impl VmExit {
    /// Whether the VMM says why it stopped on stderr: for every end but the guest's own
    /// orderly ones (reset through the i8042, power-off, halt), and for KVM_EXIT_SHUTDOWN,
    /// which is usually a guest crash (a triple fault; our guests reboot with `reboot=k`).
    pub fn is_reported(&self) -> bool {
        self.status() != ExitStatus::GuestShutdown
            || matches!(self, VmExit::GuestShutdownExit { .. })
    }
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmExit::GuestReset => write!(f, "guest reset through the i8042 controller"),
            VmExit::GuestShutdownExit { vcpu } => write!(
                f,
                "vcpu {vcpu}: KVM_EXIT_SHUTDOWN (a triple fault, unless the guest reset itself that way)"
            ),
            VmExit::GuestSystemEvent { vcpu, kind } => {
                write!(f, "vcpu {vcpu}: guest system event {kind}")
            }
            VmExit::GuestHalt { vcpu } => write!(f, "vcpu {vcpu}: guest halted"),
            VmExit::GuestStopped => write!(f, "guest halted all its cpus (halt or power-off)"),
            VmExit::Signal(sig) => write!(f, "host signal {sig}"),
            VmExit::VcpuError { vcpu, reason } => write!(f, "vcpu {vcpu} error: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_distinct_and_documented() {
        assert_eq!(VmExit::GuestReset.status().code(), 0);
        assert_eq!(VmExit::GuestShutdownExit { vcpu: 0 }.status().code(), 0);
        assert!(VmExit::GuestShutdownExit { vcpu: 0 }.is_reported());
        assert!(!VmExit::GuestReset.is_reported());
        assert!(!VmExit::GuestStopped.is_reported());
        assert!(VmExit::Signal(libc::SIGTERM).is_reported());
        assert_eq!(VmExit::GuestStopped.status().code(), 0);
        assert_eq!(VmExit::Signal(libc::SIGINT).status().code(), 130);
        assert_eq!(VmExit::Signal(libc::SIGTERM).status().code(), 143);
        let err = VmExit::VcpuError {
            vcpu: 1,
            reason: "x".into(),
        };
        assert_eq!(err.status().code(), 3);
        assert_eq!(ExitStatus::SetupError.code(), 1);
        assert_eq!(ExitStatus::BadEnvironment.code(), 2);
    }
}
