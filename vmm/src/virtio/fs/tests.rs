//! Tests of the virtio-fs device against guest memory and hand-laid split virtqueues: config
//! space, a FUSE session (INIT, LOOKUP, OPEN, READ), confinement to the shared directory,
//! read-only shares and malformed requests.

pub(crate) mod driver;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use fuse_backend_rs::abi::fuse_abi::{
    CreateIn, EntryOut, InitIn, MkdirIn, MknodIn, Opcode, OpenIn, OpenOut, ReadIn, Rename2In,
    SetattrIn, WriteIn,
};
use vm_memory::{ByteValued, Bytes};

use self::driver::{Guest, Reply, REQ};
use super::{config_space, Fs, FsError, NUM_REQUEST_QUEUES, TAG_LEN};
use crate::virtio::{VirtioDevice, TYPE_FS};

/// Reply room for each request.
pub(crate) const OUT: u32 = 64 * 1024;

pub(crate) fn errno(r: &Reply) -> i32 {
    -r.hdr.error
}

fn cname(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

/// A request's arguments: the fixed part `arg`, then the NUL-terminated `names`.
fn args_with_names(arg: &impl ByteValued, names: &[&str]) -> Vec<u8> {
    let mut msg = arg.as_slice().to_vec();
    for name in names {
        msg.extend(cname(name));
    }
    msg
}

/// The names in `dir`, sorted.
fn dir_names(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names
}

pub(crate) fn init(g: &mut Guest) {
    let arg = InitIn {
        major: 7,
        minor: 31,
        max_readahead: 128 * 1024,
        flags: 0,
    };
    let r = g.request(Opcode::Init as u32, 0, arg.as_slice(), OUT);
    assert_eq!(r.hdr.error, 0, "init failed");
}

pub(crate) fn lookup(g: &mut Guest, parent: u64, name: &str) -> Reply {
    g.request(Opcode::Lookup as u32, parent, &cname(name), OUT)
}

pub(crate) fn entry(g: &mut Guest, parent: u64, name: &str) -> EntryOut {
    let r = lookup(g, parent, name);
    assert_eq!(r.hdr.error, 0, "lookup {name}: errno {}", errno(&r));
    r.obj::<EntryOut>()
}

pub(crate) fn open(g: &mut Guest, nodeid: u64, flags: i32) -> Reply {
    let arg = OpenIn {
        flags: flags as u32,
        fuse_flags: 0,
    };
    g.request(Opcode::Open as u32, nodeid, arg.as_slice(), OUT)
}

/// CREATE of `name` in the root with open `flags`.
fn create(g: &mut Guest, name: &str, flags: i32) -> Reply {
    let arg = CreateIn {
        flags: flags as u32,
        mode: 0o644,
        umask: 0,
        fuse_flags: 0,
    };
    g.request(
        Opcode::Create as u32,
        1,
        &args_with_names(&arg, &[name]),
        OUT,
    )
}

/// WRITE of `data` at offset 0 through handle `fh`.
fn write(g: &mut Guest, nodeid: u64, fh: u64, data: &[u8]) -> Reply {
    let arg = WriteIn {
        fh,
        offset: 0,
        size: data.len() as u32,
        ..Default::default()
    };
    let mut msg = arg.as_slice().to_vec();
    msg.extend_from_slice(data);
    g.request(Opcode::Write as u32, nodeid, &msg, OUT)
}

pub(crate) fn read(g: &mut Guest, nodeid: u64, fh: u64, size: u32) -> Reply {
    read_with_flags(g, nodeid, fh, size, 0)
}

/// READ whose file status flags (the guest file's `f_flags`) are `flags`.
fn read_with_flags(g: &mut Guest, nodeid: u64, fh: u64, size: u32, flags: i32) -> Reply {
    let arg = ReadIn {
        fh,
        offset: 0,
        size,
        flags: flags as u32,
        ..Default::default()
    };
    g.request(Opcode::Read as u32, nodeid, arg.as_slice(), OUT)
}

/// Clears `CAP_FOWNER` from the calling thread's effective capabilities (threads it starts
/// afterwards inherit that); the thread ends with the test.
fn drop_cap_fowner() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_FOWNER: u32 = 3;
    let mut hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two `Data` structs for version 3, both live for the call.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    assert_eq!(r, 0, "capget: {}", std::io::Error::last_os_error());
    data[0].effective &= !(1 << CAP_FOWNER);
    // SAFETY: as above; capset reads the two structs.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    assert_eq!(r, 0, "capset: {}", std::io::Error::last_os_error());
}

/// A READ whose flags the host's `fcntl(F_SETFL)` refuses must leave the handle's host fd open:
/// fuse-backend-rs 0.14 closed it on that error (and again when the handle went), so a guest
/// could make the VMM close whatever later got that fd number (seen as vsock connections to
/// the agent dying under live pods). Needs root (to give the file another owner).
#[test]
fn refused_read_flags_do_not_close_the_handle() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    let (_tmp, share) = layout();
    let file = share.join("hello.txt");
    std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
    // The device's worker inherits this thread's capabilities: without CAP_FOWNER, the host
    // refuses O_NOATIME on a file it does not own.
    let (mut dev, mut g) = std::thread::spawn(move || {
        drop_cap_fowner();
        let (dev, g) = session(&share, false);
        (dev, g)
    })
    .join()
    .unwrap();
    let e = entry(&mut g, 1, "hello.txt");
    let r = open(&mut g, e.nodeid, libc::O_RDONLY);
    assert_eq!(r.hdr.error, 0);
    let fh = r.obj::<OpenOut>().fh;
    // What overlayfs in the guest sends for a lower file it reads.
    let r = read_with_flags(&mut g, e.nodeid, fh, 64, libc::O_RDONLY | libc::O_NOATIME);
    assert_eq!(r.hdr.error, 0, "errno {}", errno(&r));
    assert_eq!(r.body, b"hello from the host\n");
    // The handle still reads its own file.
    let r = read(&mut g, e.nodeid, fh, 64);
    assert_eq!(r.hdr.error, 0, "errno {}", errno(&r));
    assert_eq!(r.body, b"hello from the host\n");
    dev.reset();
}

#[test]
fn io_flags_clear_what_the_host_may_refuse() {
    use crate::virtio::fs::guard::io_flags;
    let f = |x: i32| x as u32;
    assert_eq!(
        io_flags(f(libc::O_RDONLY | libc::O_NOATIME)),
        f(libc::O_RDONLY)
    );
    assert_eq!(
        io_flags(f(libc::O_WRONLY | libc::O_DIRECT)),
        f(libc::O_WRONLY)
    );
    let keep = f(libc::O_RDWR | libc::O_APPEND | libc::O_NONBLOCK | libc::O_LARGEFILE);
    assert_eq!(io_flags(keep), keep);
}

/// A started device on `dir` and its guest, past FUSE_INIT.
fn session(dir: &Path, read_only: bool) -> (Fs, Guest) {
    let mut dev = Fs::new("share", dir.to_path_buf(), read_only).unwrap();
    let mut g = Guest::new();
    g.activate(&mut dev);
    init(&mut g);
    (dev, g)
}

/// `<tmp>/share` with `hello.txt`, next to `<tmp>/outside/secret`.
fn layout() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("hello.txt"), b"hello from the host\n").unwrap();
    std::fs::create_dir(tmp.path().join("outside")).unwrap();
    std::fs::write(tmp.path().join("outside/secret"), b"SECRET").unwrap();
    (tmp, share)
}

#[test]
fn device_config_space() {
    let (_tmp, share) = layout();
    let dev = Fs::new("myfs", share, false).unwrap();
    assert_eq!(dev.device_type(), TYPE_FS);
    assert_eq!(dev.device_type(), 26);
    assert_eq!(dev.queue_max_sizes().len(), 1 + NUM_REQUEST_QUEUES as usize);
    let mut cfg = [0xffu8; TAG_LEN + 4];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..4], b"myfs");
    assert!(cfg[4..TAG_LEN].iter().all(|b| *b == 0));
    assert_eq!(u32::from_le_bytes(cfg[TAG_LEN..].try_into().unwrap()), 1);
    // Partial and out-of-range reads.
    let mut two = [0u8; 2];
    dev.read_config(2, &mut two);
    assert_eq!(&two, b"fs");
    let mut past = [0xffu8; 4];
    dev.read_config(40, &mut past);
    assert_eq!(past, [0; 4]);
}

#[test]
fn config_space_holds_tag_and_queue_count() {
    let c = config_space("share").unwrap();
    assert_eq!(&c[..5], b"share");
    assert!(c[5..TAG_LEN].iter().all(|&b| b == 0));
    assert_eq!(u32::from_le_bytes(c[TAG_LEN..].try_into().unwrap()), 1);
    let full = "x".repeat(TAG_LEN);
    assert_eq!(&config_space(&full).unwrap()[..TAG_LEN], full.as_bytes());
    for bad in ["", "a\0b", &"y".repeat(TAG_LEN + 1)] {
        assert_eq!(config_space(bad), None, "{bad:?}");
    }
}

#[test]
fn new_rejects_bad_arguments() {
    let (_tmp, share) = layout();
    assert!(matches!(
        Fs::new("", share.clone(), false),
        Err(FsError::InvalidTag(_))
    ));
    let long = "x".repeat(TAG_LEN + 1);
    assert!(matches!(
        Fs::new(&long, share.clone(), false),
        Err(FsError::InvalidTag(_))
    ));
    assert!(Fs::new(&"x".repeat(TAG_LEN), share.clone(), false).is_ok());
    assert!(matches!(
        Fs::new("t", share.join("hello.txt"), false),
        Err(FsError::NotADirectory(_))
    ));
    assert!(matches!(
        Fs::new("t", share.join("missing"), false),
        Err(FsError::SharedDir { .. })
    ));
}

#[test]
fn init_lookup_open_read() {
    let (_tmp, share) = layout();
    let (mut dev, mut g) = session(&share, false);
    let e = entry(&mut g, 1, "hello.txt");
    assert_ne!(e.nodeid, 0);
    assert_eq!(e.attr.size, 20);
    assert_eq!(e.attr.mode & libc::S_IFMT, libc::S_IFREG);
    let r = open(&mut g, e.nodeid, libc::O_RDONLY);
    assert_eq!(r.hdr.error, 0);
    let fh = r.obj::<OpenOut>().fh;
    let r = read(&mut g, e.nodeid, fh, 4096);
    assert_eq!(r.hdr.error, 0);
    assert_eq!(r.body, b"hello from the host\n");
    assert_eq!(r.used_len as usize, 16 + 20);
    // A missing name is ENOENT.
    assert_eq!(errno(&lookup(&mut g, 1, "nope")), libc::ENOENT);
    dev.reset();
    assert!(!dev.is_activated());
}

#[test]
fn dotdot_at_root_stays_at_root() {
    let (_tmp, share) = layout();
    let (_dev, mut g) = session(&share, false);
    let up = entry(&mut g, 1, "..");
    assert_eq!(up.nodeid, 1, "'..' at the root must be the root");
    // The host directory above the share is not reachable: its `outside` is not found.
    assert_eq!(errno(&lookup(&mut g, up.nodeid, "outside")), libc::ENOENT);
    let up2 = entry(&mut g, up.nodeid, "..");
    assert_eq!(up2.nodeid, 1);
    // Names with a slash are not path walks.
    assert_ne!(lookup(&mut g, 1, "../outside").hdr.error, 0);
    assert_ne!(lookup(&mut g, 1, "../outside/secret").hdr.error, 0);
    // From a subdirectory, '..' is the root again, not beyond.
    std::fs::create_dir(share.join("sub")).unwrap();
    let sub = entry(&mut g, 1, "sub");
    let back = entry(&mut g, sub.nodeid, "..");
    assert_eq!(back.nodeid, 1);
}

#[test]
fn symlinks_are_not_followed_on_the_host() {
    let (tmp, share) = layout();
    let secret = tmp.path().join("outside/secret");
    symlink(&secret, share.join("abs")).unwrap();
    symlink("../outside/secret", share.join("rel")).unwrap();
    symlink(tmp.path().join("outside"), share.join("dirlink")).unwrap();
    let (_dev, mut g) = session(&share, false);
    for name in ["abs", "rel"] {
        let e = entry(&mut g, 1, name);
        // The entry is the link itself, not the file it points at.
        assert_eq!(e.attr.mode & libc::S_IFMT, libc::S_IFLNK, "{name}");
        assert_ne!(e.attr.size, 6, "{name}: size of the target leaked");
        let r = open(&mut g, e.nodeid, libc::O_RDONLY);
        assert_ne!(r.hdr.error, 0, "{name}: opening a symlink must fail");
        // READLINK gives the text only (the guest resolves it in its own namespace).
        let r = g.request(Opcode::Readlink as u32, e.nodeid, &[], OUT);
        assert_eq!(r.hdr.error, 0);
        assert!(!r.body.windows(6).any(|w| w == b"SECRET"));
        // Changing the mode through the link must not reach the target.
        let arg = SetattrIn {
            valid: 1, // FATTR_MODE
            mode: 0o777,
            ..Default::default()
        };
        let r = g.request(Opcode::Setattr as u32, e.nodeid, arg.as_slice(), OUT);
        assert_ne!(r.hdr.error, 0, "{name}: setattr through a symlink");
    }
    assert_ne!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o777
    );
    // A symlinked directory is not a way out either.
    let d = entry(&mut g, 1, "dirlink");
    assert_eq!(d.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_ne!(lookup(&mut g, d.nodeid, "secret").hdr.error, 0);
    // Creating a file under a link's name does not write through it.
    let r = create(
        &mut g,
        "abs",
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    );
    assert_ne!(r.hdr.error, 0);
    assert_eq!(std::fs::read(&secret).unwrap(), b"SECRET");
}

#[test]
fn device_nodes_cannot_be_opened_or_made() {
    let (_tmp, share) = layout();
    let fifo = std::ffi::CString::new(share.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
    // A character device (/dev/null's numbers) where we may make one (root).
    let null = std::ffi::CString::new(share.join("null").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mknod does not touch our memory otherwise.
    let made_dev =
        unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } == 0;
    let (_dev, mut g) = session(&share, false);
    let mut names = vec!["fifo"];
    if made_dev {
        names.push("null");
    } else {
        eprintln!("not root: no character device made, testing the fifo only");
    }
    for name in names {
        let e = entry(&mut g, 1, name);
        for flags in [
            libc::O_RDONLY,
            libc::O_RDWR,
            libc::O_RDONLY | libc::O_NONBLOCK,
        ] {
            let r = open(&mut g, e.nodeid, flags);
            assert_ne!(r.hdr.error, 0, "{name} opened with flags {flags:#x}");
        }
    }
    // MKNOD is refused, for every file type.
    for mode in [
        libc::S_IFCHR | 0o666,
        libc::S_IFBLK | 0o666,
        libc::S_IFIFO | 0o666,
        libc::S_IFREG | 0o644,
    ] {
        let arg = MknodIn {
            mode,
            rdev: libc::makedev(1, 3) as u32,
            umask: 0,
            padding: 0,
        };
        let msg = args_with_names(&arg, &["made"]);
        let r = g.request(Opcode::Mknod as u32, 1, &msg, OUT);
        assert_eq!(errno(&r), libc::EPERM, "mknod mode {mode:o}");
        assert!(!share.join("made").exists());
    }
}

#[test]
fn read_only_share_refuses_writes() {
    let (_tmp, share) = layout();
    let (_dev, mut g) = session(&share, true);
    let e = entry(&mut g, 1, "hello.txt");
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert_eq!(errno(&open(&mut g, e.nodeid, flags)), libc::EROFS);
    }
    // Reading still works; a write through a read handle is refused.
    let r = open(&mut g, e.nodeid, libc::O_RDONLY);
    assert_eq!(r.hdr.error, 0);
    let fh = r.obj::<OpenOut>().fh;
    let r = write(&mut g, e.nodeid, fh, b"overwritten");
    assert_eq!(errno(&r), libc::EROFS);
    // Creating, making directories, removing, truncating and renaming are refused.
    let r = create(&mut g, "new", libc::O_WRONLY | libc::O_CREAT);
    assert_eq!(errno(&r), libc::EROFS);
    let arg = MkdirIn {
        mode: 0o755,
        umask: 0,
    };
    let msg = args_with_names(&arg, &["dir"]);
    assert_eq!(
        errno(&g.request(Opcode::Mkdir as u32, 1, &msg, OUT)),
        libc::EROFS
    );
    assert_eq!(
        errno(&g.request(Opcode::Unlink as u32, 1, &cname("hello.txt"), OUT)),
        libc::EROFS
    );
    let arg = SetattrIn {
        valid: 8, // FATTR_SIZE
        size: 0,
        ..Default::default()
    };
    assert_eq!(
        errno(&g.request(Opcode::Setattr as u32, e.nodeid, arg.as_slice(), OUT)),
        libc::EROFS
    );
    let mut msg = 1u64.to_le_bytes().to_vec(); // RenameIn { newdir: 1 }
    msg.extend(cname("hello.txt"));
    msg.extend(cname("moved"));
    assert_eq!(
        errno(&g.request(Opcode::Rename as u32, 1, &msg, OUT)),
        libc::EROFS
    );
    let mut msg = cname("link");
    msg.extend(cname("hello.txt"));
    assert_eq!(
        errno(&g.request(Opcode::Symlink as u32, 1, &msg, OUT)),
        libc::EROFS
    );
    assert_eq!(
        std::fs::read(share.join("hello.txt")).unwrap(),
        b"hello from the host\n"
    );
    assert_eq!(dir_names(&share), ["hello.txt"]);
}

#[test]
fn writable_share_writes() {
    let (_tmp, share) = layout();
    let (_dev, mut g) = session(&share, false);
    let r = create(&mut g, "new", libc::O_WRONLY | libc::O_CREAT);
    assert_eq!(r.hdr.error, 0, "create: errno {}", errno(&r));
    let e = r.obj::<EntryOut>();
    let out = OpenOut::from_slice(
        &r.body[std::mem::size_of::<EntryOut>()..][..std::mem::size_of::<OpenOut>()],
    )
    .copied()
    .unwrap();
    let data = b"from the guest";
    let r = write(&mut g, e.nodeid, out.fh, data);
    assert_eq!(r.hdr.error, 0);
    assert_eq!(std::fs::read(share.join("new")).unwrap(), data);
}

/// RENAME2 with `RENAME_WHITEOUT` leaves a whiteout, a character device (0, 0), at the old
/// name: it is refused like MKNOD, while the other RENAME2 flags keep working.
#[test]
fn rename_whiteout_makes_no_device_node() {
    use std::os::unix::fs::FileTypeExt;
    let (_tmp, share) = layout();
    let (_dev, mut g) = session(&share, false);
    let rename2 = |g: &mut Guest, from: &str, to: &str, flags: u32| {
        let arg = Rename2In {
            newdir: 1,
            flags,
            padding: 0,
        };
        let msg = args_with_names(&arg, &[from, to]);
        g.request(Opcode::Rename2 as u32, 1, &msg, OUT)
    };
    let r = rename2(&mut g, "hello.txt", "moved", libc::RENAME_WHITEOUT);
    assert_eq!(errno(&r), libc::EPERM, "rename with RENAME_WHITEOUT");
    let meta = std::fs::symlink_metadata(share.join("hello.txt")).unwrap();
    assert!(
        !meta.file_type().is_char_device(),
        "a whiteout device node was made on the host"
    );
    assert!(meta.is_file());
    assert!(!share.join("moved").exists());
    // The same with other flags mixed in.
    let r = rename2(
        &mut g,
        "hello.txt",
        "moved",
        libc::RENAME_WHITEOUT | libc::RENAME_NOREPLACE,
    );
    assert_eq!(errno(&r), libc::EPERM);
    assert!(std::fs::symlink_metadata(share.join("hello.txt"))
        .unwrap()
        .is_file());
    // Plain and RENAME_NOREPLACE renames still work.
    let r = rename2(&mut g, "hello.txt", "moved", libc::RENAME_NOREPLACE);
    assert_eq!(r.hdr.error, 0, "rename2 noreplace: errno {}", errno(&r));
    let r = rename2(&mut g, "moved", "back", 0);
    assert_eq!(r.hdr.error, 0, "rename2: errno {}", errno(&r));
    assert_eq!(dir_names(&share), ["back"]);
}

#[test]
fn malformed_requests_are_errors_not_panics() {
    let (_tmp, share) = layout();
    let (dev, mut g) = session(&share, false);
    // Unknown opcode: ENOSYS.
    let r = g.request(9999, 1, &[], OUT);
    assert_eq!(errno(&r), libc::ENOSYS);
    // A header shorter than InHeader: no reply, the buffer is returned with length 0.
    let r = g.raw_request(&[1, 2, 3], OUT);
    assert_eq!(r.used_len, 0);
    // A header claiming a huge length.
    let mut msg = fuse_backend_rs::abi::fuse_abi::InHeader {
        len: u32::MAX,
        opcode: Opcode::Lookup as u32,
        unique: 77,
        nodeid: 1,
        ..Default::default()
    }
    .as_slice()
    .to_vec();
    msg.extend(cname("hello.txt"));
    let r = g.raw_request(&msg, OUT);
    assert!(r.used_len == 0 || r.hdr.error != 0);
    // Arguments missing after the header.
    let r = g.request(Opcode::Read as u32, 1, &[0; 4], OUT);
    assert!(r.used_len == 0 || r.hdr.error != 0);
    // A name without its NUL.
    let r = g.request(Opcode::Lookup as u32, 1, b"hello.txt", OUT);
    assert!(r.used_len == 0 || r.hdr.error != 0);
    // A reply buffer too small for the reply.
    let r = {
        let arg = cname("hello.txt");
        g.request(Opcode::Lookup as u32, 1, &arg, 8)
    };
    assert_eq!(r.hdr.error, 0);
    assert!(r.used_len <= 8);
    // Buffers outside guest memory, and a chain with no writable part.
    let far = driver::MEM_SIZE + 0x1000;
    g.add_chain(REQ, &[(far, 64, false), (far + 64, 4096, true)]);
    assert_eq!(g.wait_used(REQ).1, 0);
    let inb = g.alloc(64);
    g.add_chain(REQ, &[(inb, 64, false)]);
    assert_eq!(g.wait_used(REQ).1, 0);
    // A chain whose descriptor points to itself: the queue's chain limit ends it.
    let b = g.alloc(64);
    g.add_looping_chain(REQ, 200, b);
    assert_eq!(g.wait_used(REQ).1, 0);
    // The device is still alive and serving.
    let e = entry(&mut g, 1, "hello.txt");
    assert_ne!(e.nodeid, 0);
    assert!(dev.is_activated());
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Measurement, not a check: the device's resident memory cost. Run alone:
/// `cargo test -p vmm --release --lib rss_cost -- --ignored --nocapture --test-threads=1`.
#[test]
#[ignore = "measurement; run alone with --ignored --nocapture"]
fn rss_cost() {
    let (_tmp, share) = layout();
    for i in 0..100 {
        std::fs::write(share.join(format!("f{i}")), vec![b'x'; 4096]).unwrap();
    }
    let mut g = Guest::new();
    // Touch the guest memory the driver uses so that it does not count as device cost.
    g.mem()
        .write_slice(
            &vec![0u8; driver::MEM_SIZE as usize],
            vm_memory::GuestAddress(0),
        )
        .unwrap();
    let before_new = rss_kib();
    let mut dev = Fs::new("share", share.clone(), false).unwrap();
    g.activate(&mut dev);
    init(&mut g);
    let after_init = rss_kib();
    let start = std::time::Instant::now();
    let rounds = 1000;
    for r in 0..rounds {
        let e = entry(&mut g, 1, &format!("f{}", r % 100));
        let o = open(&mut g, e.nodeid, libc::O_RDONLY);
        let fh = o.obj::<OpenOut>().fh;
        let rd = read(&mut g, e.nodeid, fh, 4096);
        assert_eq!(rd.body.len(), 4096);
        let rel = fuse_backend_rs::abi::fuse_abi::ReleaseIn {
            fh,
            ..Default::default()
        };
        assert_eq!(
            g.request(Opcode::Release as u32, e.nodeid, rel.as_slice(), OUT)
                .hdr
                .error,
            0
        );
        let _ = g.request(Opcode::Getattr as u32, e.nodeid, &[0; 16], OUT);
    }
    let elapsed = start.elapsed();
    let after = rss_kib();
    let requests = rounds * 5;
    println!(
        "virtio-fs rss: before Fs::new {before_new} KiB, after activate+INIT {after_init} KiB \
         (+{}), after {requests} requests {after} KiB (+{} since INIT); {:.1} us/request",
        after_init.saturating_sub(before_new),
        after.saturating_sub(after_init),
        elapsed.as_secs_f64() * 1e6 / requests as f64
    );
    drop(dev);
    println!("virtio-fs rss: after drop {} KiB", rss_kib());
}

/// Random requests (fixed seed): every opcode number up to 60 with random arguments, node ids
/// and reply room. The device must answer each one (error or not) and keep serving.
#[test]
fn random_requests_do_not_break_the_device() {
    let (tmp, share) = layout();
    std::fs::create_dir(share.join("d")).unwrap();
    let (dev, mut g) = session(&share, false);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let opcode = (next() % 61) as u32;
        // FORGET/BATCH_FORGET have no reply; DESTROY ends the session.
        if matches!(opcode, 2 | 38 | 42) {
            continue;
        }
        let nodeid = next() % 8;
        let len = (next() % 96) as usize;
        let mut args: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if next() % 2 == 0 {
            // Often a plausible name, so that name-taking opcodes get past decoding.
            args.extend(cname(
                ["hello.txt", "d", "x", "..", "."][(next() % 5) as usize],
            ));
        }
        let out = [16u32, 64, 4096, 65536][(next() % 4) as usize];
        let r = g.request(opcode, nodeid, &args, out);
        assert!(r.used_len <= out);
    }
    let e = entry(&mut g, 1, "hello.txt");
    let r = open(&mut g, e.nodeid, libc::O_RDONLY);
    assert_eq!(r.hdr.error, 0);
    assert!(dev.is_activated());
    // Nothing appeared outside the share.
    assert_eq!(dir_names(tmp.path()), ["outside", "share"]);
}
