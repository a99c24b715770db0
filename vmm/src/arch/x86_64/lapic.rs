//! Local APIC setup: LINT0 as ExtINT (the PIC's output) and LINT1 as NMI, as in a PC.

use kvm_bindings::kvm_lapic_state;

/// Offset of LVT LINT0 in the APIC register page.
pub const APIC_LVT0: usize = 0x350;
/// Offset of LVT LINT1 in the APIC register page.
pub const APIC_LVT1: usize = 0x360;
/// Delivery mode ExtINT.
pub const APIC_MODE_EXTINT: u32 = 0x7;
/// Delivery mode NMI.
pub const APIC_MODE_NMI: u32 = 0x4;

pub(crate) fn get_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let mut bytes = [0u8; 4];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = lapic.regs[offset + i] as u8;
    }
    u32::from_le_bytes(bytes)
}

fn set_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = b as _;
    }
}

fn set_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Sets LINT0 to ExtINT and LINT1 to NMI in `lapic`.
pub fn set_lint(lapic: &mut kvm_lapic_state) {
    let lvt0 = get_reg(lapic, APIC_LVT0);
    set_reg(lapic, APIC_LVT0, set_delivery_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = get_reg(lapic, APIC_LVT1);
    set_reg(lapic, APIC_LVT1, set_delivery_mode(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_modes() {
        let mut l = kvm_lapic_state::default();
        set_reg(&mut l, APIC_LVT0, 0x0001_0000 | 0x400);
        set_lint(&mut l);
        assert_eq!(get_reg(&l, APIC_LVT0), 0x0001_0700);
        assert_eq!(get_reg(&l, APIC_LVT1), 0x400);
        assert_eq!(l.regs[APIC_LVT1 + 1], 0x04);
    }
}
