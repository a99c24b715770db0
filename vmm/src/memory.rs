//! Guest RAM backed by one memfd, mapped shared, so it can later be handed to other processes
//! (virtio-fs) and shows up as RssShmem, apart from the VMM's own memory.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

/// Errors of guest memory creation.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// memfd_create failed.
    #[error("memfd_create failed: {0}")]
    Memfd(std::io::Error),
    /// The memfd could not be sized.
    #[error("cannot size guest memory to {size} bytes: {source}")]
    Truncate { size: u64, source: std::io::Error },
    /// The size is zero or not page aligned.
    #[error("guest memory size {0:#x} must be a non-zero multiple of 4 KiB")]
    BadSize(u64),
    /// Mapping the memfd failed.
    #[error("cannot map guest memory: {0}")]
    Map(#[from] vm_memory::mmap::FromRangesError),
}

/// Guest RAM and the memfd behind it.
pub struct GuestRam {
    /// The guest memory, one region per RAM range.
    pub mem: GuestMemoryMmap,
    /// The backing memfd.
    pub file: Arc<File>,
}

/// Creates a close-on-exec memfd of `size` bytes.
pub fn create_memfd(name: &CStr, size: u64) -> Result<File, MemoryError> {
    // SAFETY: `name` is a valid NUL-terminated string; the return value is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(|source| MemoryError::Truncate { size, source })?;
    Ok(file)
}

/// Maps `ranges` (guest address, size) of guest RAM, back to back in one memfd.
pub fn create_guest_ram(ranges: &[(u64, u64)]) -> Result<GuestRam, MemoryError> {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    if total == 0 || ranges.iter().any(|r| r.1 == 0 || !r.1.is_multiple_of(4096)) {
        return Err(MemoryError::BadSize(total));
    }
    let file = Arc::new(create_memfd(c"peapod-guest-ram", total)?);
    let mut offset = 0u64;
    let mut regions = Vec::with_capacity(ranges.len());
    for &(start, size) in ranges {
        let len = usize::try_from(size).map_err(|_| MemoryError::BadSize(size))?;
        regions.push((
            GuestAddress(start),
            len,
            Some(FileOffset::from_arc(file.clone(), offset)),
        ));
        offset += size;
    }
    let mem = GuestMemoryMmap::from_ranges_with_files(&regions)?;
    Ok(GuestRam { mem, file })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemory, GuestMemoryRegion};

    #[test]
    fn memory_is_shared_through_the_memfd() {
        let ram = create_guest_ram(&[(0, 1 << 20), (1 << 32, 1 << 20)]).unwrap();
        assert_eq!(ram.file.metadata().unwrap().len(), 2 << 20);
        assert_eq!(ram.mem.num_regions(), 2);
        ram.mem
            .write_obj(0xabcd_u16, GuestAddress((1 << 32) + 8))
            .unwrap();
        // The second region starts at file offset 1 MiB.
        let mut buf = [0u8; 2];
        std::os::unix::fs::FileExt::read_exact_at(&*ram.file, &mut buf, (1 << 20) + 8).unwrap();
        assert_eq!(u16::from_le_bytes(buf), 0xabcd);
        for r in ram.mem.iter() {
            assert!(r.file_offset().is_some());
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(matches!(
            create_guest_ram(&[(0, 0)]),
            Err(MemoryError::BadSize(_))
        ));
        assert!(matches!(
            create_guest_ram(&[(0, 100)]),
            Err(MemoryError::BadSize(_))
        ));
    }
}
