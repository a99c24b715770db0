//! Tests of the guard on its own: its `FileSystem` methods called directly over a temporary
//! share, for the checks the FUSE session tests in `fs/tests.rs` do not reach (RMDIR, LINK,
//! FALLOCATE, xattrs, ACCESS) and for the pass-through methods reaching `PassthroughFs`.

use std::ffi::CString;
use std::io;
use std::path::Path;

use fuse_backend_rs::abi::fuse_abi::{CreateIn, FsOptions, SetattrValid};
use fuse_backend_rs::api::filesystem::{Context, FileSystem};

use super::ConfinedFs;
use crate::virtio::fs::new_confined;

/// The root inode (FUSE_ROOT_ID).
const ROOT: u64 = 1;

fn c(name: &str) -> CString {
    CString::new(name).unwrap()
}

/// The errno of a call that must fail.
fn errno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => panic!("the call succeeded"),
        Err(e) => e.raw_os_error().unwrap(),
    }
}

/// `dir/f` (a regular file), `dir/d` (an empty directory), `dir/fifo` and `dir/link -> f`.
fn populate(dir: &Path) {
    std::fs::write(dir.join("f"), b"data").unwrap();
    std::fs::create_dir(dir.join("d")).unwrap();
    let fifo = c(dir.join("fifo").to_str().unwrap());
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink("f", dir.join("link")).unwrap();
}

/// The guard over a populated temporary share, initialised, and the share.
fn guard(read_only: bool) -> (tempfile::TempDir, ConfinedFs) {
    let tmp = tempfile::tempdir().unwrap();
    populate(tmp.path());
    let fs = new_confined(tmp.path(), read_only).unwrap();
    fs.init(FsOptions::empty()).unwrap();
    (tmp, fs)
}

fn inode(fs: &ConfinedFs, name: &str) -> u64 {
    fs.lookup(&Context::new(), ROOT, &c(name)).unwrap().inode
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn create_args() -> CreateIn {
    CreateIn {
        flags: (libc::O_RDWR | libc::O_CREAT) as u32,
        mode: 0o644,
        umask: 0,
        fuse_flags: 0,
    }
}

#[test]
fn pass_through_methods_reach_the_host_tree() {
    let (_tmp, fs) = guard(true);
    let ctx = Context::new();
    let f = inode(&fs, "f");
    let (st, _) = fs.getattr(&ctx, f, None).unwrap();
    assert_eq!(st.st_size, 4);
    assert_eq!(fs.readlink(&ctx, inode(&fs, "link")).unwrap(), b"f");
    assert_eq!(errno(fs.lookup(&ctx, ROOT, &c("missing"))), libc::ENOENT);
    assert!(fs.statfs(&ctx, ROOT).unwrap().f_bsize > 0);
    let (handle, _) = fs.opendir(&ctx, ROOT, 0).unwrap();
    let mut seen = Vec::new();
    fs.readdir(&ctx, ROOT, handle.unwrap(), 4096, 0, &mut |e| {
        seen.push(String::from_utf8_lossy(e.name).into_owned());
        Ok(1)
    })
    .unwrap();
    seen.sort();
    assert_eq!(seen, ["d", "f", "fifo", "link"]);
    fs.releasedir(&ctx, ROOT, 0, handle.unwrap()).unwrap();
}

#[test]
fn read_only_share_refuses_every_change_with_erofs() {
    let (tmp, fs) = guard(true);
    let before = names(tmp.path());
    let ctx = Context::new();
    let f = inode(&fs, "f");
    let erofs = libc::EROFS;
    assert_eq!(errno(fs.symlink(&ctx, &c("f"), ROOT, &c("s"))), erofs);
    assert_eq!(errno(fs.mkdir(&ctx, ROOT, &c("m"), 0o755, 0)), erofs);
    assert_eq!(errno(fs.unlink(&ctx, ROOT, &c("f"))), erofs);
    assert_eq!(errno(fs.rmdir(&ctx, ROOT, &c("d"))), erofs);
    assert_eq!(errno(fs.link(&ctx, f, ROOT, &c("hard"))), erofs);
    assert_eq!(errno(fs.create(&ctx, ROOT, &c("n"), create_args())), erofs);
    assert_eq!(errno(fs.fallocate(&ctx, f, 0, 0, 0, 4096)), erofs);
    assert_eq!(
        errno(fs.mknod(&ctx, ROOT, &c("n"), libc::S_IFREG, 0, 0)),
        erofs
    );
    assert_eq!(
        errno(fs.rename(&ctx, ROOT, &c("f"), ROOT, &c("g"), 0)),
        erofs
    );
    let (st, _) = fs.getattr(&ctx, f, None).unwrap();
    let size = SetattrValid::SIZE;
    assert_eq!(errno(fs.setattr(&ctx, f, st, None, size)), erofs);
    assert_eq!(errno(fs.setxattr(&ctx, f, &c("user.x"), b"1", 0)), erofs);
    assert_eq!(errno(fs.removexattr(&ctx, f, &c("user.x"))), erofs);
    let wr = libc::O_WRONLY as u32;
    assert_eq!(errno(fs.open(&ctx, f, wr, 0)), erofs);
    assert_eq!(errno(fs.access(&ctx, f, libc::W_OK as u32)), erofs);
    // Reading is still allowed.
    fs.access(&ctx, f, libc::R_OK as u32).unwrap();
    let (h, _, _) = fs.open(&ctx, f, libc::O_RDONLY as u32, 0).unwrap();
    fs.release(&ctx, f, 0, h.unwrap(), false, false, None)
        .unwrap();
    assert_eq!(names(tmp.path()), before);
    assert_eq!(std::fs::read(tmp.path().join("f")).unwrap(), b"data");
}

#[test]
fn writable_share_passes_changes_through() {
    let (tmp, fs) = guard(false);
    let ctx = Context::new();
    let f = inode(&fs, "f");
    fs.mkdir(&ctx, ROOT, &c("m"), 0o755, 0).unwrap();
    assert!(tmp.path().join("m").is_dir());
    fs.rmdir(&ctx, ROOT, &c("m")).unwrap();
    fs.link(&ctx, f, ROOT, &c("hard")).unwrap();
    assert_eq!(std::fs::read(tmp.path().join("hard")).unwrap(), b"data");
    fs.unlink(&ctx, ROOT, &c("hard")).unwrap();
    fs.symlink(&ctx, &c("f"), ROOT, &c("s")).unwrap();
    assert_eq!(
        std::fs::read_link(tmp.path().join("s")).unwrap(),
        Path::new("f")
    );
    let (e, h, _, _) = fs.create(&ctx, ROOT, &c("n"), create_args()).unwrap();
    fs.fallocate(&ctx, e.inode, h.unwrap(), 0, 0, 4096).unwrap();
    assert_eq!(std::fs::metadata(tmp.path().join("n")).unwrap().len(), 4096);
    fs.rename(&ctx, ROOT, &c("n"), ROOT, &c("n2"), 0).unwrap();
    assert_eq!(names(tmp.path()), ["d", "f", "fifo", "link", "n2", "s"]);
}

#[test]
fn special_files_are_neither_made_nor_changed() {
    let (tmp, fs) = guard(false);
    let ctx = Context::new();
    for mode in [libc::S_IFCHR, libc::S_IFIFO, libc::S_IFSOCK, libc::S_IFREG] {
        let r = fs.mknod(&ctx, ROOT, &c("made"), mode | 0o644, 0, 0);
        assert_eq!(errno(r), libc::EPERM, "mknod {mode:o}");
    }
    let whiteout = libc::RENAME_WHITEOUT;
    let r = fs.rename(&ctx, ROOT, &c("f"), ROOT, &c("g"), whiteout);
    assert_eq!(errno(r), libc::EPERM);
    // Metadata and xattrs by inode only on regular files and directories.
    for name in ["fifo", "link"] {
        let i = inode(&fs, name);
        let (st, _) = fs.getattr(&ctx, i, None).unwrap();
        let mode = SetattrValid::MODE;
        assert_eq!(errno(fs.setattr(&ctx, i, st, None, mode)), libc::EPERM);
        let x = c("user.x");
        assert_eq!(errno(fs.setxattr(&ctx, i, &x, b"1", 0)), libc::EPERM);
        assert_eq!(errno(fs.getxattr(&ctx, i, &x, 64)), libc::EPERM);
        assert_eq!(errno(fs.listxattr(&ctx, i, 64)), libc::EPERM);
        assert_eq!(errno(fs.removexattr(&ctx, i, &x)), libc::EPERM);
    }
    assert_eq!(names(tmp.path()), ["d", "f", "fifo", "link"]);
}
