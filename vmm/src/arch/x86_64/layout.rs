//! The x86_64 guest physical address map (as Firecracker lays it out).
//!
//! ```text
//! 0x0000_0500  GDT (4 entries)          0x0000_0520  IDT (empty)
//! 0x0000_7000  boot_params (zero page)  0x0000_8ff0  boot stack top
//! 0x0000_9000  PML4   0x0000_a000 PDPT   0x0000_b000 PD (identity map of the first 1 GiB)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  EBDA start: RAM below it is usable, [0x9fc00, 1 MiB) is reserved
//! 0x0010_0000  high memory: the kernel (ELF, loaded at its physical addresses)
//! ...          initramfs at the top of low memory, page aligned
//! 0xd000_0000  MMIO gap (768 MiB): virtio-mmio devices, one 4 KiB window each
//! 0x1_0000_0000 RAM above 4 GiB when the guest has more than 3.25 GiB
//! ```

/// GDT address.
pub const GDT_START: u64 = 0x500;
/// IDT address.
pub const IDT_START: u64 = 0x520;
/// boot_params ("zero page") address; RSI points here at entry.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page map level 4 table.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (512 x 2 MiB pages).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line address.
pub const CMDLINE_START: u64 = 0x20000;
/// Maximum kernel command line length, NUL included.
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Start of the extended BIOS data area; RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high memory, where the kernel goes.
pub const HIMEM_START: u64 = 0x10_0000;
/// First address of the MMIO gap below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// First address past 32 bits.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// Size of the MMIO gap.
pub const MMIO_GAP_SIZE: u64 = FIRST_ADDR_PAST_32BITS - MMIO_GAP_START;
/// Base of the virtio-mmio windows (start of the MMIO gap).
pub const VIRTIO_MMIO_BASE: u64 = MMIO_GAP_START;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// GSI of the first virtio-mmio device (IRQs 0-4 are legacy: timer, keyboard, cascade, COM2, COM1).
pub const VIRTIO_FIRST_GSI: u32 = 5;
/// Highest GSI handed to virtio devices (the IOAPIC has 24 pins).
pub const VIRTIO_LAST_GSI: u32 = 23;
/// Address KVM uses for the TSS (3 pages) on Intel: just below the identity map page.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Address of the one-page EPT identity map KVM needs on Intel for real mode.
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
/// Guest page size.
pub const PAGE_SIZE: u64 = 0x1000;

// The command line and the boot stack stay clear of the other boot structures.
const _: () = assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
const _: () =
    assert!(BOOT_STACK_POINTER < PML4_START && BOOT_STACK_POINTER > ZERO_PAGE_START + PAGE_SIZE);

/// The guest RAM ranges `(start, size)` for `mem_size` bytes of RAM, split around the MMIO gap.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (FIRST_ADDR_PAST_32BITS, mem_size - MMIO_GAP_START),
        ]
    }
}

/// The virtio-mmio window and GSI of device number `index`, or None past the last GSI.
pub fn virtio_mmio_slot(index: u32) -> Option<(u64, u32)> {
    let gsi = VIRTIO_FIRST_GSI.checked_add(index)?;
    (gsi <= VIRTIO_LAST_GSI).then(|| (VIRTIO_MMIO_BASE + u64::from(index) * VIRTIO_MMIO_SIZE, gsi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
        assert_eq!(ram_ranges(MMIO_GAP_START), vec![(0, MMIO_GAP_START)]);
    }

    #[test]
    fn big_guest_skips_the_mmio_gap() {
        let r = ram_ranges(4 << 30);
        assert_eq!(
            r,
            vec![(0, MMIO_GAP_START), (1 << 32, (4 << 30) - MMIO_GAP_START)]
        );
        assert_eq!(r.iter().map(|x| x.1).sum::<u64>(), 4 << 30);
    }

    #[test]
    fn virtio_slots() {
        assert_eq!(virtio_mmio_slot(0), Some((0xd000_0000, 5)));
        assert_eq!(virtio_mmio_slot(2), Some((0xd000_2000, 7)));
        assert_eq!(virtio_mmio_slot(18), Some((0xd001_2000, 23)));
        assert_eq!(virtio_mmio_slot(19), None);
    }

    #[test]
    fn fixed_structures_do_not_overlap() {
        let mut areas = [
            (GDT_START, 4 * 8),
            (IDT_START, 8),
            (ZERO_PAGE_START, PAGE_SIZE),
            (PML4_START, PAGE_SIZE),
            (PDPTE_START, PAGE_SIZE),
            (PDE_START, PAGE_SIZE),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
        ];
        areas.sort();
        for w in areas.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{:x?}", w);
        }
    }
}
