//! Loading the guest kernel (ELF vmlinux), the initramfs and the command line, and writing the
//! boot_params "zero page" with the e820 memory map for the 64-bit boot protocol.

use std::fs::File;
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::Elf;
use linux_loader::loader::{load_cmdline, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

use super::layout::{
    ram_ranges, CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START, MMIO_GAP_START,
    PAGE_SIZE, ZERO_PAGE_START,
};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;

/// Errors of the kernel boot setup.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel image could not be opened.
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        path: String,
        source: std::io::Error,
    },
    /// linux-loader refused the kernel.
    #[error("cannot load kernel {path} (an uncompressed ELF vmlinux is required): {source}")]
    LoadKernel {
        path: String,
        source: linux_loader::loader::Error,
    },
    /// The initramfs could not be read.
    #[error("cannot read initramfs {path}: {source}")]
    ReadInitrd {
        path: String,
        source: std::io::Error,
    },
    /// The initramfs does not fit between the kernel and the end of low memory.
    #[error("initramfs of {size} bytes does not fit in guest memory (kernel ends at {kernel_end:#x}, low memory at {lowmem_end:#x})")]
    InitrdTooBig {
        size: u64,
        kernel_end: u64,
        lowmem_end: u64,
    },
    /// Writing to guest memory failed.
    #[error("cannot write {what} to guest memory: {source}")]
    GuestWrite {
        what: &'static str,
        source: vm_memory::GuestMemoryError,
    },
    /// The command line is invalid or too long.
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
    /// More e820 entries than the zero page holds.
    #[error("too many e820 entries")]
    E820Full,
}

/// Where the kernel was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedKernel {
    /// Entry point (RIP at boot).
    pub entry: u64,
    /// First address past the kernel image.
    pub end: u64,
}

/// Where the initramfs was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedInitrd {
    /// Guest physical address (page aligned).
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Loads the ELF `vmlinux` at `path` into guest memory.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let shown = path.display().to_string();
    let mut file = File::open(path).map_err(|source| BootError::OpenKernel {
        path: shown.clone(),
        source,
    })?;
    let result =
        Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|source| {
            BootError::LoadKernel {
                path: shown,
                source,
            }
        })?;
    Ok(LoadedKernel {
        entry: result.kernel_load.0,
        end: result.kernel_end,
    })
}

/// Where an initramfs of `size` bytes goes: page aligned, at the top of low memory.
pub fn initrd_address(mem_size: u64, kernel_end: u64, size: u64) -> Result<u64, BootError> {
    let lowmem_end = mem_size.min(MMIO_GAP_START);
    let too_big = BootError::InitrdTooBig {
        size,
        kernel_end,
        lowmem_end,
    };
    let addr = lowmem_end.checked_sub(size).ok_or(too_big)? & !(PAGE_SIZE - 1);
    if addr < kernel_end {
        return Err(BootError::InitrdTooBig {
            size,
            kernel_end,
            lowmem_end,
        });
    }
    Ok(addr)
}

/// Loads the initramfs at `path` at the top of low memory.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel_end: u64,
    path: &Path,
) -> Result<LoadedInitrd, BootError> {
    let data = std::fs::read(path).map_err(|source| BootError::ReadInitrd {
        path: path.display().to_string(),
        source,
    })?;
    let size = data.len() as u64;
    let addr = initrd_address(mem_size, kernel_end, size)?;
    mem.write_slice(&data, GuestAddress(addr))
        .map_err(|source| BootError::GuestWrite {
            what: "initramfs",
            source,
        })?;
    Ok(LoadedInitrd { addr, size })
}

/// Writes the NUL-terminated command line at [`CMDLINE_START`].
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), BootError> {
    let cl = Cmdline::try_from(cmdline, CMDLINE_MAX_SIZE)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cl)
        .map_err(|e| BootError::Cmdline(e.to_string()))
}

/// The e820 map for `mem_size` bytes of RAM.
pub fn e820_map(mem_size: u64) -> Vec<boot_e820_entry> {
    let mut map = vec![
        boot_e820_entry {
            addr: 0,
            size: EBDA_START,
            type_: E820_RAM,
        },
        boot_e820_entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            type_: E820_RESERVED,
        },
    ];
    for (start, size) in ram_ranges(mem_size) {
        // The first range starts at 0: its part below 1 MiB is described above.
        let (start, size) = if start == 0 {
            (HIMEM_START, size.saturating_sub(HIMEM_START))
        } else {
            (start, size)
        };
        if size > 0 {
            map.push(boot_e820_entry {
                addr: start,
                size,
                type_: E820_RAM,
            });
        }
    }
    map
}

/// Builds the boot_params for the 64-bit boot protocol.
pub fn build_boot_params(
    mem_size: u64,
    cmdline_len: usize,
    initrd: Option<LoadedInitrd>,
) -> Result<boot_params, BootError> {
    let mut params = boot_params::default();
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    let map = e820_map(mem_size);
    if map.len() > params.e820_table.len() {
        return Err(BootError::E820Full);
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = *entry;
    }
    params.e820_entries = map.len() as u8;
    Ok(params)
}

/// Writes `params` at [`ZERO_PAGE_START`].
pub fn write_boot_params(mem: &GuestMemoryMmap, params: &boot_params) -> Result<(), BootError> {
    mem.write_obj(*params, GuestAddress(ZERO_PAGE_START))
        .map_err(|source| BootError::GuestWrite {
            what: "boot_params",
            source,
        })
}

/// Whether `mem` covers the whole fixed boot area (the first MiB).
pub fn covers_boot_area(mem: &GuestMemoryMmap) -> bool {
    mem.address_in_range(GuestAddress(HIMEM_START - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(size: u64) -> GuestMemoryMmap {
        let ranges: Vec<_> = ram_ranges(size)
            .into_iter()
            .map(|(s, l)| (GuestAddress(s), l as usize))
            .collect();
        GuestMemoryMmap::from_ranges(&ranges).unwrap()
    }

    #[test]
    fn e820_small_guest() {
        let map = e820_map(256 << 20);
        let got: Vec<_> = map.iter().map(|e| (e.addr, e.size, e.type_)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0x9fc00, E820_RAM),
                (0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED),
                (0x100000, (256 << 20) - 0x100000, E820_RAM),
            ]
        );
    }

    #[test]
    fn e820_large_guest_skips_gap() {
        let map: Vec<(u64, u64)> = e820_map(5 << 30).iter().map(|e| (e.addr, e.size)).collect();
        assert_eq!(map.len(), 4);
        assert_eq!(map[2].0, 0x100000);
        assert_eq!(map[2].0 + map[2].1, MMIO_GAP_START);
        assert_eq!(map[3], (1 << 32, (5 << 30) - MMIO_GAP_START));
    }

    #[test]
    fn boot_params_layout_in_guest_memory() {
        let m = mem(128 << 20);
        let initrd = LoadedInitrd {
            addr: 0x7f0_0000,
            size: 0x1234,
        };
        let params = build_boot_params(128 << 20, 57, Some(initrd)).unwrap();
        write_boot_params(&m, &params).unwrap();
        // Offsets from Documentation/arch/x86/zero-page.rst and boot.rst.
        let z = ZERO_PAGE_START;
        let r8 = |off: u64| m.read_obj::<u8>(GuestAddress(z + off)).unwrap();
        let r16 = |off: u64| m.read_obj::<u16>(GuestAddress(z + off)).unwrap();
        let r32 = |off: u64| m.read_obj::<u32>(GuestAddress(z + off)).unwrap();
        let r64 = |off: u64| m.read_obj::<u64>(GuestAddress(z + off)).unwrap();
        assert_eq!(r8(0x1e8), 3, "e820_entries");
        assert_eq!(r16(0x1fe), 0xaa55, "boot_flag");
        assert_eq!(r32(0x202), 0x5372_6448, "header");
        assert_eq!(r8(0x210), 0xff, "type_of_loader");
        assert_eq!(r32(0x218), 0x7f0_0000, "ramdisk_image");
        assert_eq!(r32(0x21c), 0x1234, "ramdisk_size");
        assert_eq!(r32(0x228), CMDLINE_START as u32, "cmd_line_ptr");
        assert_eq!(r32(0x238), 57, "cmdline_size");
        // e820_table at 0x2d0, 20 bytes per entry.
        assert_eq!(r64(0x2d0 + 2 * 20), 0x100000);
        assert_eq!(r64(0x2d0 + 2 * 20 + 8), (128 << 20) - 0x100000);
        assert_eq!(r32(0x2d0 + 2 * 20 + 16), E820_RAM);
    }

    #[test]
    fn initrd_goes_to_top_of_low_memory_page_aligned() {
        let addr = initrd_address(128 << 20, 0x200_0000, 0x1001).unwrap();
        assert_eq!(addr, (128 << 20) - 0x2000);
        assert_eq!(addr % PAGE_SIZE, 0);
        // Above 3.25 GiB the initrd stays below the MMIO gap.
        let addr = initrd_address(8 << 30, 0x200_0000, 0x1000).unwrap();
        assert_eq!(addr, MMIO_GAP_START - 0x1000);
        assert!(matches!(
            initrd_address(64 << 20, 0x300_0000, 48 << 20),
            Err(BootError::InitrdTooBig { .. })
        ));
    }

    #[test]
    fn initrd_is_copied() {
        let m = mem(64 << 20);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("initrd");
        std::fs::write(&p, b"070701 cpio").unwrap();
        let l = load_initrd(&m, 64 << 20, 0x200_0000, &p).unwrap();
        let mut buf = [0u8; 11];
        m.read_slice(&mut buf, GuestAddress(l.addr)).unwrap();
        assert_eq!(&buf, b"070701 cpio");
        assert_eq!(l.size, 11);
    }

    #[test]
    fn cmdline_is_written_nul_terminated() {
        let m = mem(64 << 20);
        write_cmdline(&m, "console=ttyS0 panic=1").unwrap();
        let mut buf = [0xffu8; 22];
        m.read_slice(&mut buf, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&buf, b"console=ttyS0 panic=1\0");
        let long = "a".repeat(CMDLINE_MAX_SIZE + 1);
        assert!(write_cmdline(&m, &long).is_err());
    }

    #[test]
    fn a_non_elf_kernel_is_refused() {
        let m = mem(64 << 20);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vmlinux");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let err = load_kernel(&m, &p).unwrap_err();
        assert!(matches!(err, BootError::LoadKernel { .. }), "{err}");
        assert!(matches!(
            load_kernel(&m, &dir.path().join("missing")),
            Err(BootError::OpenKernel { .. })
        ));
        assert!(covers_boot_area(&m));
    }
}
