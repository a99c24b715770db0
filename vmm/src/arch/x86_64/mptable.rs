//! The Intel MultiProcessor Specification 1.4 table: tells a guest without ACPI about its
//! CPUs (local APIC IDs), the IOAPIC and the ISA interrupt routing, so that it starts the
//! application processors and routes device interrupts through the IOAPIC.
//!
//! The floating pointer sits at the start of the EBDA (the last KiB of base memory, one of the
//! places Linux scans), the configuration table right after it; both are in the e820 reserved
//! range below 1 MiB.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{EBDA_START, HIMEM_START};

/// Where the floating pointer structure goes.
pub const MPTABLE_START: u64 = EBDA_START;
/// Most vCPUs the table (and the VMM) supports.
pub const MAX_VCPUS: u8 = 32;
/// Local APIC base address.
pub const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
/// IOAPIC base address.
pub const IO_APIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
/// IOAPIC pins (GSIs 0-23).
pub const IOAPIC_PINS: u8 = 24;

const MP_PROCESSOR: u8 = 0;
const MP_BUS: u8 = 1;
const MP_IOAPIC: u8 = 2;
const MP_INTSRC: u8 = 3;
const MP_LINTSRC: u8 = 4;
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const MPC_APIC_USABLE: u8 = 1;
/// Family 6 signature for the processor entries.
const CPU_STEPPING: u32 = 0x600;
/// FPU and APIC present.
const CPU_FEATURES: u32 = 0x201;
const BUS_ID_ISA: u8 = 0;
const SPEC_REV: u8 = 4;

/// Errors of MP table setup.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// Too many or zero vCPUs.
    #[error("the mp table supports 1 to {MAX_VCPUS} vcpus, not {0}")]
    VcpuCount(u8),
    /// The table does not fit below 1 MiB.
    #[error("the mp table does not fit below 1 MiB")]
    TooBig,
    /// Writing the table to guest memory failed.
    #[error("cannot write the mp table: {0}")]
    GuestWrite(vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// The bytes of the floating pointer plus configuration table for `vcpus` CPUs, placed at
/// `base`.
pub fn build_mptable(base: u64, vcpus: u8) -> Result<Vec<u8>, MptableError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(MptableError::VcpuCount(vcpus));
    }
    let ioapic_id = vcpus + 1;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..vcpus {
        entries.extend_from_slice(&[MP_PROCESSOR, cpu, APIC_VERSION]);
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 };
        entries.push(flags);
        entries.extend_from_slice(&CPU_STEPPING.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0u8; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[MP_BUS, BUS_ID_ISA]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[MP_IOAPIC, ioapic_id, IOAPIC_VERSION, MPC_APIC_USABLE]);
    entries.extend_from_slice(&IO_APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    count += 1;
    for irq in 0..IOAPIC_PINS {
        // type, irq type, flags (u16: bus default polarity and trigger), bus, bus irq,
        // destination IOAPIC, pin.
        entries.extend_from_slice(&[MP_INTSRC, MP_INT, 0, 0, BUS_ID_ISA, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0 of every local APIC is ExtINT (the PIC); LINT1 is NMI.
    entries.extend_from_slice(&[MP_LINTSRC, MP_EXTINT, 0, 0, BUS_ID_ISA, 0, 0xff, 0]);
    entries.extend_from_slice(&[MP_LINTSRC, MP_NMI, 0, 0, BUS_ID_ISA, 0, 0xff, 1]);
    count += 2;

    const HEADER_LEN: usize = 44;
    const FLOATING_LEN: usize = 16;
    let table_len = HEADER_LEN + entries.len();
    let table_addr = base + FLOATING_LEN as u64;
    if table_addr + table_len as u64 > HIMEM_START {
        return Err(MptableError::TooBig);
    }
    let mut table = Vec::with_capacity(table_len);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&(table_len as u16).to_le_bytes());
    table.push(SPEC_REV);
    table.push(0); // checksum, below
    table.extend_from_slice(b"PEAPOD  ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes()); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(FLOATING_LEN + table_len);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&(table_addr as u32).to_le_bytes());
    floating.push(1); // length in 16-byte units
    floating.push(SPEC_REV);
    floating.push(0); // checksum, below
    floating.extend_from_slice(&[0u8; 5]); // feature bytes: 0 = a configuration table exists
    floating[10] = checksum(&floating);
    floating.extend_from_slice(&table);
    Ok(floating)
}

/// Writes the MP table for `vcpus` CPUs at [`MPTABLE_START`].
pub fn setup_mptable(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), MptableError> {
    let bytes = build_mptable(MPTABLE_START, vcpus)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(MptableError::GuestWrite)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn layout_and_checksums() {
        for n in [1u8, 2, 32] {
            let t = build_mptable(MPTABLE_START, n).unwrap();
            assert_eq!(&t[0..4], b"_MP_");
            assert_eq!(sum(&t[0..16]), 0, "floating pointer checksum");
            let phys = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
            assert_eq!(phys, MPTABLE_START + 16);
            let table = &t[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0, "configuration table checksum");
            let count = u16::from_le_bytes([table[34], table[35]]);
            assert_eq!(count, u16::from(n) + 1 + 1 + 24 + 2);
            assert_eq!(len, 44 + 20 * n as usize + 8 + 8 + 24 * 8 + 2 * 8);
            // First processor entry: boot processor with APIC ID 0.
            assert_eq!(&table[44..48], &[MP_PROCESSOR, 0, APIC_VERSION, 3]);
            if n > 1 {
                assert_eq!(&table[64..68], &[MP_PROCESSOR, 1, APIC_VERSION, 1]);
            }
            // The IOAPIC takes the first APIC ID after the CPUs.
            let ioapic = 44 + 20 * n as usize + 8;
            assert_eq!(&table[ioapic..ioapic + 2], &[MP_IOAPIC, n + 1]);
            assert!(MPTABLE_START + t.len() as u64 <= HIMEM_START);
        }
    }

    #[test]
    fn vcpu_count_is_bounded() {
        assert!(build_mptable(MPTABLE_START, 0).is_err());
        assert!(build_mptable(MPTABLE_START, MAX_VCPUS + 1).is_err());
    }

    #[test]
    fn written_to_guest_memory() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        setup_mptable(&m, 2).unwrap();
        let sig: [u8; 4] = m.read_obj(GuestAddress(MPTABLE_START)).unwrap();
        assert_eq!(&sig, b"_MP_");
        let sig: [u8; 4] = m.read_obj(GuestAddress(MPTABLE_START + 16)).unwrap();
        assert_eq!(&sig, b"PCMP");
    }
}
