//! The file system the virtio-fs device serves: `fuse-backend-rs`'s `PassthroughFs` behind a
//! guard that keeps an untrusted guest inside the shared directory.
//!
//! What `PassthroughFs` already guarantees (fuse-backend-rs 0.14, checked in its source):
//! every name is resolved with `openat(parent, name, O_PATH | O_NOFOLLOW)` relative to the
//! parent's fd, so a symlink is never followed on the host; names are single path components
//! (no `/`); `..` at the root resolves to the root itself; files are only (re)opened when they
//! are regular files or directories (`is_safe_inode`), so device nodes, FIFOs, sockets and
//! symlinks cannot be opened; `O_CREAT` goes through `O_EXCL` first.
//!
//! What the guard adds: `MKNOD` and a rename with `RENAME_WHITEOUT` (which leaves a character
//! device) are refused (no device node, FIFO or socket is ever created on the host); metadata
//! and xattr operations by inode are refused on anything but regular files and directories
//! (they go through `/proc/self/fd` paths); a read-only share refuses every operation that
//! would change the host tree with `EROFS`.

use std::ffi::CStr;
use std::io;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{
    stat64, statvfs64, CreateIn, FsOptions, OpenOptions, SetattrValid,
};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileLock, FileSystem, GetxattrReply, ListxattrReply, ZeroCopyReader,
    ZeroCopyWriter,
};
use fuse_backend_rs::passthrough::PassthroughFs;

/// Inode and handle numbers as `PassthroughFs` uses them.
type Inode = u64;
type Handle = u64;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn erofs() -> io::Error {
    errno(libc::EROFS)
}

/// `PassthroughFs` confined as described in the module documentation.
pub struct ConfinedFs {
    inner: PassthroughFs<()>,
    read_only: bool,
}

impl ConfinedFs {
    /// Wraps an imported `PassthroughFs`.
    pub fn new(inner: PassthroughFs<()>, read_only: bool) -> Self {
        ConfinedFs { inner, read_only }
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.read_only {
            Err(erofs())
        } else {
            Ok(())
        }
    }

    /// Refuses inodes that are neither regular files nor directories.
    fn check_plain(&self, ctx: &Context, inode: Inode) -> io::Result<()> {
        let (st, _) = self.inner.getattr(ctx, inode, None)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFDIR => Ok(()),
            _ => Err(errno(libc::EPERM)),
        }
    }
}

/// The guard's methods that end in `PassthroughFs`: `fn name(&self, arg: Type, ...) -> Ret
/// { checks };` becomes a method that runs the checks (statements that return an error to
/// refuse the request), then calls `self.inner.name(arg, ...)`. A method without checks is
/// passed through as it is: it only reads, or resolves names under the rules `PassthroughFs`
/// already enforces (module docs).
macro_rules! delegate {
    ($(
        $(#[$attr:meta])*
        fn $name:ident(&$self:ident $(, $arg:ident: $ty:ty)* $(,)?) $(-> $ret:ty)?
            $($checks:block)?;
    )*) => {
        $(
            $(#[$attr])*
            fn $name(&$self, $($arg: $ty),*) $(-> $ret)? {
                $($checks)?
                $self.inner.$name($($arg),*)
            }
        )*
    };
}

/// The file status flags of a READ or WRITE, as passed on to `PassthroughFs`.
///
/// `PassthroughFs` (0.14) applies a request's flags to the handle's host fd with
/// `fcntl(F_SETFL)` when they differ from the flags the handle has, and when that `fcntl` fails
/// it returns the error *after* its temporary `File` over the handle's fd was dropped: the fd
/// is closed while the handle still holds its number, and the handle's own drop closes that
/// number again later, whatever it has become by then (a vsock connection, an eventfd, a vCPU).
/// `F_SETFL` refuses `O_DIRECT` on a host file system without direct I/O (tmpfs before Linux
/// 6.6, ramfs) and `O_NOATIME` on a file the VMM neither owns nor has `CAP_FOWNER` for; a guest
/// sets both at will (overlayfs in the guest adds `O_NOATIME` itself). Neither changes what a
/// positioned read or write returns to the guest, which has its own page cache, so both are
/// cleared here, and clearing them never fails. `O_APPEND` is left as the guest has it: clearing
/// it is refused on an append-only host file, whose writable handles all carry it.
pub fn io_flags(flags: u32) -> u32 {
    // The flag bits are small positive constants.
    let refusable = (libc::O_DIRECT | libc::O_NOATIME) as u32;
    flags & !refusable
}

/// Whether open flags ask for write access or truncation.
fn wants_write(flags: u32) -> bool {
    // The flag bits are small positive constants.
    let flags = flags as i32;
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

impl FileSystem for ConfinedFs {
    type Inode = Inode;
    type Handle = Handle;

    delegate! {
        fn init(&self, capable: FsOptions) -> io::Result<FsOptions>;
        fn destroy(&self);
        fn lookup(&self, ctx: &Context, parent: Inode, name: &CStr) -> io::Result<Entry>;
        fn forget(&self, ctx: &Context, inode: Inode, count: u64);
        fn batch_forget(&self, ctx: &Context, requests: Vec<(Inode, u64)>);
        fn getattr(
            &self,
            ctx: &Context,
            inode: Inode,
            handle: Option<Handle>,
        ) -> io::Result<(stat64, Duration)>;
        // Metadata changes by inode go through /proc/self/fd paths: plain files only.
        fn setattr(
            &self,
            ctx: &Context,
            inode: Inode,
            attr: stat64,
            handle: Option<Handle>,
            valid: SetattrValid,
        ) -> io::Result<(stat64, Duration)> {
            self.check_writable()?;
            self.check_plain(ctx, inode)?;
        };
        // Returns the link text (readlinkat on the O_PATH fd); the guest resolves it in its own
        // namespace, so an absolute target means the guest's path, not the host's.
        fn readlink(&self, ctx: &Context, inode: Inode) -> io::Result<Vec<u8>>;
        fn symlink(
            &self,
            ctx: &Context,
            linkname: &CStr,
            parent: Inode,
            name: &CStr,
        ) -> io::Result<Entry> {
            self.check_writable()?;
        };
        fn mkdir(
            &self,
            ctx: &Context,
            parent: Inode,
            name: &CStr,
            mode: u32,
            umask: u32,
        ) -> io::Result<Entry> {
            self.check_writable()?;
        };
        fn unlink(&self, ctx: &Context, parent: Inode, name: &CStr) -> io::Result<()> {
            self.check_writable()?;
        };
        fn rmdir(&self, ctx: &Context, parent: Inode, name: &CStr) -> io::Result<()> {
            self.check_writable()?;
        };
        fn rename(
            &self,
            ctx: &Context,
            olddir: Inode,
            oldname: &CStr,
            newdir: Inode,
            newname: &CStr,
            flags: u32,
        ) -> io::Result<()> {
            self.check_writable()?;
            // RENAME_WHITEOUT leaves a whiteout, a character device, at the old name: refused
            // like MKNOD.
            if flags & libc::RENAME_WHITEOUT != 0 {
                return Err(errno(libc::EPERM));
            }
        };
        fn link(
            &self,
            ctx: &Context,
            inode: Inode,
            newparent: Inode,
            newname: &CStr,
        ) -> io::Result<Entry> {
            self.check_writable()?;
        };
        fn open(
            &self,
            ctx: &Context,
            inode: Inode,
            flags: u32,
            fuse_flags: u32,
        ) -> io::Result<(Option<Handle>, OpenOptions, Option<u32>)> {
            if wants_write(flags) {
                self.check_writable()?;
            }
        };
        fn create(
            &self,
            ctx: &Context,
            parent: Inode,
            name: &CStr,
            args: CreateIn,
        ) -> io::Result<(Entry, Option<Handle>, OpenOptions, Option<u32>)> {
            self.check_writable()?;
        };
        fn flush(
            &self,
            ctx: &Context,
            inode: Inode,
            handle: Handle,
            lock_owner: u64,
        ) -> io::Result<()>;
        fn fsync(
            &self,
            ctx: &Context,
            inode: Inode,
            datasync: bool,
            handle: Handle,
        ) -> io::Result<()>;
        fn fallocate(
            &self,
            ctx: &Context,
            inode: Inode,
            handle: Handle,
            mode: u32,
            offset: u64,
            length: u64,
        ) -> io::Result<()> {
            self.check_writable()?;
        };
        #[allow(clippy::too_many_arguments)]
        fn release(
            &self,
            ctx: &Context,
            inode: Inode,
            flags: u32,
            handle: Handle,
            flush: bool,
            flock_release: bool,
            lock_owner: Option<u64>,
        ) -> io::Result<()>;
        fn statfs(&self, ctx: &Context, inode: Inode) -> io::Result<statvfs64>;
        // Xattrs by inode go through /proc/self/fd paths: plain files only.
        fn setxattr(
            &self,
            ctx: &Context,
            inode: Inode,
            name: &CStr,
            value: &[u8],
            flags: u32,
        ) -> io::Result<()> {
            self.check_writable()?;
            self.check_plain(ctx, inode)?;
        };
        fn getxattr(
            &self,
            ctx: &Context,
            inode: Inode,
            name: &CStr,
            size: u32,
        ) -> io::Result<GetxattrReply> {
            self.check_plain(ctx, inode)?;
        };
        fn listxattr(&self, ctx: &Context, inode: Inode, size: u32) -> io::Result<ListxattrReply> {
            self.check_plain(ctx, inode)?;
        };
        fn removexattr(&self, ctx: &Context, inode: Inode, name: &CStr) -> io::Result<()> {
            self.check_writable()?;
            self.check_plain(ctx, inode)?;
        };
        fn opendir(
            &self,
            ctx: &Context,
            inode: Inode,
            flags: u32,
        ) -> io::Result<(Option<Handle>, OpenOptions)>;
        fn readdir(
            &self,
            ctx: &Context,
            inode: Inode,
            handle: Handle,
            size: u32,
            offset: u64,
            add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
        ) -> io::Result<()>;
        fn readdirplus(
            &self,
            ctx: &Context,
            inode: Inode,
            handle: Handle,
            size: u32,
            offset: u64,
            add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
        ) -> io::Result<()>;
        fn fsyncdir(
            &self,
            ctx: &Context,
            inode: Inode,
            datasync: bool,
            handle: Handle,
        ) -> io::Result<()>;
        fn releasedir(
            &self,
            ctx: &Context,
            inode: Inode,
            flags: u32,
            handle: Handle,
        ) -> io::Result<()>;
        fn access(&self, ctx: &Context, inode: Inode, mask: u32) -> io::Result<()> {
            if self.read_only && mask & (libc::W_OK as u32) != 0 {
                return Err(erofs());
            }
        };
        fn lseek(
            &self,
            ctx: &Context,
            inode: Inode,
            handle: Handle,
            offset: u64,
            whence: u32,
        ) -> io::Result<u64>;
        fn getlk(
            &self,
            ctx: &Context,
            inode: Inode,
            handle: Handle,
            owner: u64,
            lock: FileLock,
            flags: u32,
        ) -> io::Result<FileLock>;
        fn setlk(
            &self,
            ctx: &Context,
            inode: Inode,
            handle: Handle,
            owner: u64,
            lock: FileLock,
            flags: u32,
        ) -> io::Result<()>;
        fn setlkw(
            &self,
            ctx: &Context,
            inode: Inode,
            handle: Handle,
            owner: u64,
            lock: FileLock,
            flags: u32,
        ) -> io::Result<()>;
    }

    fn mknod(
        &self,
        _ctx: &Context,
        _inode: Inode,
        _name: &CStr,
        _mode: u32,
        _rdev: u32,
        _umask: u32,
    ) -> io::Result<Entry> {
        // Regular files come through CREATE; device nodes, FIFOs and sockets are never made.
        if self.read_only {
            return Err(erofs());
        }
        Err(errno(libc::EPERM))
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Handle,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        let flags = io_flags(flags);
        self.inner
            .read(ctx, inode, handle, w, size, offset, lock_owner, flags)
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        ctx: &Context,
        inode: Inode,
        handle: Handle,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        delayed_write: bool,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        self.check_writable()?;
        let flags = io_flags(flags);
        self.inner.write(
            ctx,
            inode,
            handle,
            r,
            size,
            offset,
            lock_owner,
            delayed_write,
            flags,
            fuse_flags,
        )
    }
}

#[cfg(test)]
mod tests;
