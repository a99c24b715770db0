//! The one-line vCPU state dump printed on SIGUSR1: registers, MP state, pending events, the
//! LAPIC's timer and interrupt registers and the TSC deadline, read from KVM.

use std::fmt::Write;

use kvm_bindings::{kvm_lapic_state, kvm_msr_entry, kvm_vcpu_events, Msrs};
use kvm_ioctls::VcpuFd;

use super::lapic::get_reg;

/// MSR IA32_TIME_STAMP_COUNTER.
const MSR_TSC: u32 = 0x10;
/// MSR IA32_TSC_DEADLINE.
const MSR_TSC_DEADLINE: u32 = 0x6e0;
/// LAPIC register offsets (Intel SDM vol. 3A, table 11-1).
const APIC_TPR: usize = 0x80;
const APIC_ISR: usize = 0x100;
const APIC_IRR: usize = 0x200;
const APIC_LVTT: usize = 0x320;
const APIC_TMICT: usize = 0x380;
const APIC_TMCCT: usize = 0x390;

/// What the dump shows; each part is `None` when KVM could not return it.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// KVM_GET_MP_STATE.
    pub mp_state: Option<u32>,
    /// rip, rsp, rflags.
    pub regs: Option<(u64, u64, u64)>,
    /// CS selector and CR0.
    pub sregs: Option<(u16, u64)>,
    /// KVM_GET_VCPU_EVENTS.
    pub events: Option<kvm_vcpu_events>,
    /// KVM_GET_LAPIC.
    pub lapic: Option<kvm_lapic_state>,
    /// The TSC and the TSC deadline.
    pub tsc: Option<(u64, u64)>,
}

/// Reads the state of a vCPU that is not in KVM_RUN (call it from the vCPU's own thread).
pub fn describe(fd: &VcpuFd) -> String {
    let snapshot = Snapshot {
        mp_state: fd.get_mp_state().ok().map(|m| m.mp_state),
        regs: fd.get_regs().ok().map(|r| (r.rip, r.rsp, r.rflags)),
        sregs: fd.get_sregs().ok().map(|s| (s.cs.selector, s.cr0)),
        events: fd.get_vcpu_events().ok(),
        lapic: fd.get_lapic().ok(),
        tsc: read_tsc(fd),
    };
    format(&snapshot)
}

fn read_tsc(fd: &VcpuFd) -> Option<(u64, u64)> {
    let entry = |index| kvm_msr_entry {
        index,
        ..Default::default()
    };
    let mut msrs = Msrs::from_entries(&[entry(MSR_TSC), entry(MSR_TSC_DEADLINE)]).ok()?;
    match fd.get_msrs(&mut msrs) {
        Ok(2) => {
            let e = msrs.as_slice();
            Some((e[0].data, e[1].data))
        }
        _ => None,
    }
}

fn mp_state_name(state: u32) -> String {
    match state {
        kvm_bindings::KVM_MP_STATE_RUNNABLE => "runnable".into(),
        kvm_bindings::KVM_MP_STATE_UNINITIALIZED => "uninitialized".into(),
        kvm_bindings::KVM_MP_STATE_INIT_RECEIVED => "init-received".into(),
        kvm_bindings::KVM_MP_STATE_HALTED => "halted".into(),
        kvm_bindings::KVM_MP_STATE_SIPI_RECEIVED => "sipi-received".into(),
        other => format!("mp-state-{other}"),
    }
}

/// The highest vector set in a 256-bit LAPIC register array (ISR, IRR) at `base`.
fn highest_vector(lapic: &kvm_lapic_state, base: usize) -> Option<u32> {
    (0..8usize).rev().find_map(|i| {
        let word = get_reg(lapic, base + i * 0x10);
        (word != 0).then(|| i as u32 * 32 + (31 - word.leading_zeros()))
    })
}

fn timer_mode(lvtt: u32) -> &'static str {
    match (lvtt >> 17) & 3 {
        0 => "oneshot",
        1 => "periodic",
        2 => "tsc-deadline",
        _ => "reserved",
    }
}

/// Formats `s` as one line of `key=value` fields.
pub fn format(s: &Snapshot) -> String {
    let mut out = String::new();
    let missing = "?";
    match s.mp_state {
        Some(m) => out.push_str(&mp_state_name(m)),
        None => out.push_str(missing),
    }
    if let Some((rip, rsp, rflags)) = s.regs {
        let _ = write!(
            out,
            " rip={rip:#x} rsp={rsp:#x} rflags={rflags:#x} if={}",
            (rflags >> 9) & 1
        );
    }
    if let Some((cs, cr0)) = s.sregs {
        let _ = write!(out, " cs={cs:#x} cpl={} cr0={cr0:#x}", cs & 3);
    }
    if let Some(e) = &s.events {
        let _ = write!(
            out,
            " exception={}{} interrupt={}{} nmi_pending={} irq_shadow={}",
            e.exception.injected,
            if e.exception.injected != 0 {
                format!("/{:#x}", e.exception.nr)
            } else {
                String::new()
            },
            e.interrupt.injected,
            if e.interrupt.injected != 0 {
                format!("/{:#x}", e.interrupt.nr)
            } else {
                String::new()
            },
            e.nmi.pending,
            e.interrupt.shadow,
        );
    }
    if let Some(l) = &s.lapic {
        let lvtt = get_reg(l, APIC_LVTT);
        let vector = |v: Option<u32>| v.map_or_else(|| "none".to_string(), |v| format!("{v:#x}"));
        let _ = write!(
            out,
            " lvtt={lvtt:#x}({}{}) tmict={} tmcct={} tpr={:#x} isr={} irr={}",
            timer_mode(lvtt),
            if lvtt & (1 << 16) != 0 { ",masked" } else { "" },
            get_reg(l, APIC_TMICT),
            get_reg(l, APIC_TMCCT),
            get_reg(l, APIC_TPR),
            vector(highest_vector(l, APIC_ISR)),
            vector(highest_vector(l, APIC_IRR)),
        );
    }
    if let Some((tsc, deadline)) = s.tsc {
        let _ = write!(out, " tsc={tsc}");
        if deadline == 0 {
            out.push_str(" tsc_deadline=0(disarmed)");
        } else {
            let _ = write!(
                out,
                " tsc_deadline={deadline}({:+} cycles)",
                i128::from(deadline) - i128::from(tsc)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(l: &mut kvm_lapic_state, offset: usize, value: u32) {
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            l.regs[offset + i] = b as _;
        }
    }

    #[test]
    fn an_empty_snapshot_says_what_is_unknown() {
        assert_eq!(format(&Snapshot::default()), "?");
    }

    #[test]
    fn a_halted_vcpu_waiting_on_its_tsc_deadline() {
        let mut lapic = kvm_lapic_state::default();
        set(&mut lapic, APIC_LVTT, (2 << 17) | 0xec);
        set(&mut lapic, APIC_IRR + 0x70, 1 << 31); // vector 0xff
        set(&mut lapic, APIC_ISR + 0x10, 1 << 4); // vector 0x24
        let mut events = kvm_vcpu_events::default();
        events.interrupt.injected = 1;
        events.interrupt.nr = 0x22;
        let s = Snapshot {
            mp_state: Some(kvm_bindings::KVM_MP_STATE_HALTED),
            regs: Some((0xffff_ffff_8100_0000, 0x1000, 0x246)),
            sregs: Some((0x10, 0x8005_0033)),
            events: Some(events),
            lapic: Some(lapic),
            tsc: Some((1000, 400)),
        };
        let line = format(&s);
        assert!(line.starts_with("halted rip=0xffffffff81000000"), "{line}");
        assert!(line.contains(" if=1 cs=0x10 cpl=0 "), "{line}");
        assert!(line.contains(" interrupt=1/0x22 "), "{line}");
        assert!(line.contains(" lvtt=0x400ec(tsc-deadline) "), "{line}");
        assert!(line.contains(" isr=0x24 irr=0xff"), "{line}");
        assert!(
            line.ends_with(" tsc=1000 tsc_deadline=400(-600 cycles)"),
            "{line}"
        );
    }

    #[test]
    fn masked_timer_and_disarmed_deadline() {
        let mut lapic = kvm_lapic_state::default();
        set(&mut lapic, APIC_LVTT, 1 << 16);
        let s = Snapshot {
            mp_state: Some(kvm_bindings::KVM_MP_STATE_RUNNABLE),
            lapic: Some(lapic),
            tsc: Some((5, 0)),
            ..Snapshot::default()
        };
        let line = format(&s);
        assert!(
            line.starts_with("runnable lvtt=0x10000(oneshot,masked)"),
            "{line}"
        );
        assert!(line.contains(" isr=none irr=none"), "{line}");
        assert!(line.ends_with(" tsc_deadline=0(disarmed)"), "{line}");
    }
}
