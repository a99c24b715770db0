//! Applies image layers (tar, gzip, zstd) onto a root directory: whiteouts, opaque directories,
//! links, devices, xattrs, ownership, and refusal of every path that would escape the root.
//!
//! Every path is resolved one component at a time inside the root: `..` in an entry name, an
//! absolute entry name, and a symlinked parent whose target climbs above the root all fail the
//! layer. Absolute symlink targets are interpreted relative to the root, as the container sees
//! them. The root is private to the unpacker (a fresh temp dir) while it runs, so the
//! check-then-use walk has no concurrent writer to race with.
//!
//! The tar stream is read through [`crate::tar_limits`], so that long names, PAX headers, the
//! number of entries, hard links and xattrs are bounded before anything large is read.

use crate::manifest::Compression;
use crate::tar_limits::{Member, Members, TarLimitError, TarLimits};
use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
const MAX_SYMLINKS: usize = 40;

/// Errors while unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry name or link target leaves the root.
    #[error("layer entry {0:?} escapes the root filesystem")]
    Escape(String),
    /// An absolute entry name.
    #[error("layer entry {0:?} has an absolute path")]
    Absolute(String),
    /// A parent component is not a directory.
    #[error("layer entry {0:?}: a parent path component is not a directory")]
    NotADirectory(String),
    /// Too many symlinks while resolving.
    #[error("layer entry {0:?}: too many levels of symbolic links")]
    SymlinkLoop(String),
    /// A hard link to something missing.
    #[error("layer entry {entry:?}: hard link target {target:?} does not exist")]
    MissingLinkTarget {
        /// The link entry.
        entry: String,
        /// Its target.
        target: String,
    },
    /// An owner or group that does not fit in 32 bits.
    #[error("layer entry {0:?}: uid or gid out of range")]
    Owner(String),
    /// The tar stream is refused: over a limit of [`TarLimits`], or malformed.
    #[error("layer refused: {0}")]
    Refused(#[source] TarLimitError),
    /// Reading the archive or writing the tree failed.
    #[error("unpacking {path:?}: {cause}")]
    Io {
        /// Where.
        path: String,
        /// Cause.
        cause: io::Error,
    },
}

impl From<TarLimitError> for UnpackError {
    fn from(e: TarLimitError) -> Self {
        match e {
            TarLimitError::Read(cause) => UnpackError::Io {
                path: "layer".to_string(),
                cause,
            },
            other => UnpackError::Refused(other),
        }
    }
}

fn io_err(path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> UnpackError {
    let path = path.as_ref().display().to_string();
    move |cause| UnpackError::Io { path, cause }
}

/// Options for unpacking.
#[derive(Clone, Copy, Debug)]
pub struct UnpackOptions {
    /// Apply tar uid/gid (only effective as root).
    pub preserve_owner: bool,
    /// Bounds on the tar stream.
    pub limits: TarLimits,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            preserve_owner: nix::unistd::geteuid().is_root(),
            limits: TarLimits::DEFAULT,
        }
    }
}

/// Wraps `reader` in the right decompressor.
pub fn decompressor<'a, R: Read + 'a>(
    reader: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    let mut buf = BufReader::new(reader);
    let kind = match compression {
        Compression::Sniff => {
            let head = buf.fill_buf()?;
            if head.starts_with(&[0x1f, 0x8b]) {
                Compression::Gzip
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                Compression::Zstd
            } else {
                Compression::None
            }
        }
        other => other,
    };
    Ok(match kind {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
        Compression::None | Compression::Sniff => Box::new(buf),
    })
}

/// Applies one layer onto `root`.
pub fn apply_layer<R: Read>(
    root: &Path,
    layer: R,
    compression: Compression,
    opts: UnpackOptions,
) -> Result<(), UnpackError> {
    let reader = decompressor(layer, compression).map_err(io_err("layer"))?;
    let mut archive = tar::Archive::new(reader);
    let mut layer = Layer {
        root,
        opts,
        written: HashSet::new(),
        dir_modes: Vec::new(),
        remembered: 0,
    };
    let mut members = Members::new(&mut archive, opts.limits)?;
    while let Some(member) = members.next_member()? {
        layer.apply_entry(member)?;
    }
    // Directory modes last, so read-only directories do not block their own children.
    for (path, mode, mtime) in layer.dir_modes.into_iter().rev() {
        if !is_real_dir(root, &path) {
            // Replaced (by a symlink that chmod would follow) or removed by a later entry.
            continue;
        }
        let full = root.join(&path);
        fs::set_permissions(&full, fs::Permissions::from_mode(mode)).map_err(io_err(&full))?;
        let t = filetime::FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
        filetime::set_symlink_file_times(&full, t, t).map_err(io_err(&full))?;
    }
    Ok(())
}

/// Whether every component of `rel` under `root` is a directory and none is a symlink.
fn is_real_dir(root: &Path, rel: &Path) -> bool {
    let mut p = root.to_path_buf();
    rel.components().all(|c| {
        p.push(c);
        fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
    })
}

/// Splits an entry name into normal components, refusing `..` and absolute names.
fn clean_components(name: &Path) -> Result<Vec<OsString>, UnpackError> {
    let shown = || name.display().to_string();
    let mut out = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(s) => out.push(s.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err(UnpackError::Escape(shown())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Absolute(shown()))
            }
        }
    }
    Ok(out)
}

/// Resolves directory components inside `root`, following symlinks only within it.
/// Returns the real relative path (no symlinks). Missing directories are created (0755).
fn resolve_dir(root: &Path, comps: &[OsString], entry: &str) -> Result<PathBuf, UnpackError> {
    let mut stack: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = comps.iter().cloned().collect();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == OsStr::new("..") {
            if stack.pop().is_none() {
                return Err(UnpackError::Escape(entry.to_string()));
            }
            continue;
        }
        if c.is_empty() || c == OsStr::new(".") {
            continue;
        }
        let mut candidate: PathBuf = root.to_path_buf();
        candidate.extend(stack.iter());
        candidate.push(&c);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(UnpackError::SymlinkLoop(entry.to_string()));
                }
                let target = fs::read_link(&candidate).map_err(io_err(&candidate))?;
                if target.is_absolute() {
                    stack.clear();
                }
                let mut new_front: Vec<OsString> = Vec::new();
                for tc in target.components() {
                    match tc {
                        Component::Normal(s) => new_front.push(s.to_os_string()),
                        Component::ParentDir => new_front.push(OsString::from("..")),
                        _ => {}
                    }
                }
                for tc in new_front.into_iter().rev() {
                    pending.push_front(tc);
                }
            }
            Ok(m) if m.is_dir() => stack.push(c),
            Ok(_) => return Err(UnpackError::NotADirectory(entry.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&candidate).map_err(io_err(&candidate))?;
                stack.push(c);
            }
            Err(e) => return Err(io_err(&candidate)(e)),
        }
    }
    Ok(stack.iter().collect())
}

/// Sets the entry's `SCHILY.xattr.*` attributes; a refusal by the filesystem is a warning.
fn set_xattrs(xattrs: &[(Vec<u8>, Vec<u8>)], full: &Path) {
    for (name, value) in xattrs {
        let name = OsStr::from_bytes(name);
        if let Err(e) = xattr::set(full, name, value) {
            tracing::warn!("cannot set xattr {name:?} on {}: {e}", full.display());
        }
    }
}

/// Removes whatever is at `path` (file, link or whole directory); absent is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

struct Layer<'a> {
    root: &'a Path,
    opts: UnpackOptions,
    /// Relative real paths this layer created (protects them from its own opaque markers).
    written: HashSet<PathBuf>,
    dir_modes: Vec<(PathBuf, u32, u64)>,
    /// Bytes of paths in `written` and `dir_modes`.
    remembered: usize,
}

impl Layer<'_> {
    fn apply_entry<R: Read>(&mut self, member: Member<'_, R>) -> Result<(), UnpackError> {
        let raw_name = &member.path;
        let shown = raw_name.display().to_string();
        let mut comps = clean_components(raw_name)?;
        let Some(base) = comps.pop() else {
            return Ok(()); // the root itself ("./")
        };
        let parent = resolve_dir(self.root, &comps, &shown)?;
        let base_str = base.to_string_lossy();
        if base_str == OPAQUE {
            return self.opaque(&parent);
        }
        if let Some(hidden) = base_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(UnpackError::Escape(shown));
            }
            let target = self.root.join(&parent).join(hidden);
            return remove_any(&target).map_err(io_err(&target));
        }
        let rel = parent.join(&base);
        let full = self.root.join(&rel);
        let kind = member.entry.header().entry_type();
        let existing = fs::symlink_metadata(&full).ok();
        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    remove_any(&full).map_err(io_err(&full))?;
                    fs::create_dir(&full).map_err(io_err(&full))?;
                }
                None => fs::create_dir(&full).map_err(io_err(&full))?,
            }
        } else if existing.is_some() {
            remove_any(&full).map_err(io_err(&full))?;
        }
        self.create(member, shown, rel, &full)
    }

    /// Creates the entry at `full` (its place `rel` is free, or a directory for a directory)
    /// and applies its metadata.
    fn create<R: Read>(
        &mut self,
        mut member: Member<'_, R>,
        shown: String,
        rel: PathBuf,
        full: &Path,
    ) -> Result<(), UnpackError> {
        let header = member.entry.header().clone();
        let mode = header.mode().map_err(io_err(&shown))? & 0o7777;
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();
        match kind {
            tar::EntryType::Directory => {}
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(full)
                    .map_err(io_err(full))?;
                io::copy(&mut member.entry, &mut f).map_err(io_err(full))?;
            }
            tar::EntryType::Symlink => {
                let target = member
                    .link_name
                    .ok_or_else(|| UnpackError::Escape(shown.clone()))?;
                // The symlink itself is harmless: every later use resolves inside the root.
                symlink(&target, full).map_err(io_err(full))?;
            }
            tar::EntryType::Link => {
                let target = member
                    .link_name
                    .ok_or_else(|| UnpackError::Escape(shown.clone()))?;
                self.hard_link(&target, shown, full)?;
                // A hard link shares the target's inode metadata.
                return self.remember(rel, None);
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                if !self.make_node(&header, kind, full, mode)? {
                    return Ok(());
                }
            }
            other => {
                tracing::warn!("skipping layer entry {shown:?} of unsupported type {other:?}");
                return Ok(());
            }
        }
        set_xattrs(&member.xattrs, full);
        if self.opts.preserve_owner {
            let owner = |id| u32::try_from(id).map_err(|_| UnpackError::Owner(shown.clone()));
            let (uid, gid) = (owner(member.uid)?, owner(member.gid)?);
            std::os::unix::fs::lchown(full, Some(uid), Some(gid)).map_err(io_err(full))?;
        }
        if !kind.is_dir() && !kind.is_symlink() {
            // After chown, which clears set-id bits.
            fs::set_permissions(full, fs::Permissions::from_mode(mode)).map_err(io_err(full))?;
        }
        if !kind.is_dir() {
            let t = filetime::FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
            filetime::set_symlink_file_times(full, t, t).map_err(io_err(full))?;
        }
        self.remember(rel, kind.is_dir().then_some((mode, mtime)))
    }

    /// Links `full` to `target`, resolved inside the root like an entry name.
    fn hard_link(&self, target: &Path, shown: String, full: &Path) -> Result<(), UnpackError> {
        let tshown = target.display().to_string();
        let mut tcomps = clean_components(target)
            .map_err(|_| UnpackError::Escape(format!("{shown} -> {tshown}")))?;
        let tbase = tcomps
            .pop()
            .ok_or_else(|| UnpackError::Escape(shown.clone()))?;
        let tparent = resolve_dir(self.root, &tcomps, &tshown)?;
        let tfull = self.root.join(tparent).join(tbase);
        if fs::symlink_metadata(&tfull).is_err() {
            return Err(UnpackError::MissingLinkTarget {
                entry: shown,
                target: tshown,
            });
        }
        fs::hard_link(&tfull, full).map_err(io_err(full))
    }

    /// Records that this layer wrote `rel` (and, for a directory, its mode and mtime to apply
    /// at the end), within the bound on remembered path bytes.
    fn remember(&mut self, rel: PathBuf, dir: Option<(u32, u64)>) -> Result<(), UnpackError> {
        let copies = if dir.is_some() { 2 } else { 1 };
        let cost = rel.as_os_str().len().saturating_mul(copies);
        self.remembered = self.remembered.saturating_add(cost);
        let max = self.opts.limits.max_remembered_bytes;
        if self.remembered > max {
            return Err(TarLimitError::TooManyPaths { max }.into());
        }
        if let Some((mode, mtime)) = dir {
            self.dir_modes.push((rel.clone(), mode, mtime));
        }
        self.written.insert(rel);
        Ok(())
    }

    /// Creates a device node or fifo; returns false when skipped for lack of privilege.
    fn make_node(
        &self,
        header: &tar::Header,
        kind: tar::EntryType,
        full: &Path,
        mode: u32,
    ) -> Result<bool, UnpackError> {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        let sflag = match kind {
            tar::EntryType::Char => SFlag::S_IFCHR,
            tar::EntryType::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        let major = header.device_major().ok().flatten().unwrap_or(0) as u64;
        let minor = header.device_minor().ok().flatten().unwrap_or(0) as u64;
        let perm = Mode::from_bits_truncate(mode & 0o777);
        match mknod(full, sflag, perm, makedev(major, minor)) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::EPERM) => {
                tracing::warn!("skipping device node {} (not permitted)", full.display());
                Ok(false)
            }
            Err(e) => Err(io_err(full)(io::Error::from(e))),
        }
    }

    /// Empties `dir` of everything lower layers put there (this layer's entries stay).
    fn opaque(&mut self, dir: &Path) -> Result<(), UnpackError> {
        let full = self.root.join(dir);
        let entries = fs::read_dir(&full).map_err(io_err(&full))?;
        for e in entries {
            let e = e.map_err(io_err(&full))?;
            let rel = dir.join(e.file_name());
            if self.written.contains(&rel) {
                if e.file_type().map_err(io_err(&full))?.is_dir() {
                    self.opaque(&rel)?;
                }
            } else {
                let p = self.root.join(&rel);
                remove_any(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    use crate::tar_limits::tests::file;

    fn raw_name_file(path: &str, data: &[u8]) -> Vec<u8> {
        // tar::Builder refuses `..`; write the header name bytes directly.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(512 + data.len().div_ceil(512) * 512, 0);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_entry_type(kind);
        b.append_link(&mut h, path, target).unwrap();
    }

    fn opts() -> UnpackOptions {
        UnpackOptions {
            preserve_owner: false,
            limits: TarLimits::DEFAULT,
        }
    }

    #[test]
    fn dotdot_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let inner = root.path().join("r");
        fs::create_dir(&inner).unwrap();
        let err = apply_layer(
            &inner,
            &raw_name_file("../../etc/passwd", b"x")[..],
            Compression::None,
            opts(),
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::Escape(_)), "{err}");
        let err = apply_layer(
            &inner,
            &raw_name_file("/etc/passwd", b"x")[..],
            Compression::None,
            opts(),
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::Absolute(_)), "{err}");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn symlink_parent_cannot_escape() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        let inner = root.path().join("r");
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir(&inner).unwrap();
        // Relative climb: refused.
        let l = layer(|b| {
            link(b, tar::EntryType::Symlink, "evil", "../../outside");
            file(b, "evil/pwned", b"x");
        });
        assert!(matches!(
            apply_layer(&inner, &l[..], Compression::None, opts()).unwrap_err(),
            UnpackError::Escape(_)
        ));
        // Absolute target: stays inside the root.
        let l = layer(|b| {
            link(b, tar::EntryType::Symlink, "abs", "/etc");
            file(b, "abs/passwd", b"root:x:0:0::/root:/bin/sh\n");
        });
        apply_layer(&inner, &l[..], Compression::None, opts()).unwrap();
        assert!(inner.join("etc/passwd").is_file());
        // Hard link to outside: refused.
        let l = layer(|b| link(b, tar::EntryType::Link, "hl", "../outside/x"));
        assert!(apply_layer(&inner, &l[..], Compression::None, opts()).is_err());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn replaced_directory_mode_does_not_follow_symlinks_out() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        let inner = root.path().join("r");
        fs::create_dir_all(outside.join("b")).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(outside.join("b"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(&inner).unwrap();
        let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o700);
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, path, io::empty()).unwrap();
        };
        // A directory entry later replaced by an absolute symlink (which, on the host, names a
        // host path), and a nested directory whose parent is replaced the same way.
        let target = outside.display().to_string();
        let l = layer(|b| {
            dir(b, "d/");
            link(b, tar::EntryType::Symlink, "d", &target);
            dir(b, "a/");
            dir(b, "a/b/");
            link(b, tar::EntryType::Symlink, "a", &target);
        });
        apply_layer(&inner, &l[..], Compression::None, opts()).unwrap();
        assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o7777, 0o755);
        assert_eq!(
            fs::metadata(outside.join("b")).unwrap().mode() & 0o7777,
            0o755
        );
    }

    #[test]
    fn whiteouts_across_three_layers_and_links() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let l1 = layer(|b| {
            file(b, "a/keep", b"1");
            file(b, "a/gone", b"1");
            file(b, "o/lower1", b"1");
            file(b, "o/sub/lower2", b"1");
            file(b, "top", b"1");
        });
        let l2 = layer(|b| {
            file(b, "a/.wh.gone", b"");
            file(b, "a/new", b"2");
            file(b, "o/mid", b"2");
            link(b, tar::EntryType::Symlink, "s", "a/keep");
            link(b, tar::EntryType::Link, "h", "a/keep");
        });
        let l3 = layer(|b| {
            file(b, "o/.wh..wh..opq", b"");
            file(b, "o/upper", b"3");
            file(b, ".wh.top", b"");
            file(b, "a/gone", b"3");
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &l2).unwrap();
        let l2gz = gz.finish().unwrap();
        let l3z = zstd::encode_all(&l3[..], 1).unwrap();
        apply_layer(r, &l1[..], Compression::None, opts()).unwrap();
        apply_layer(r, &l2gz[..], Compression::Sniff, opts()).unwrap();
        apply_layer(r, &l3z[..], Compression::Zstd, opts()).unwrap();
        let mut names: Vec<String> = walk(r);
        names.sort();
        assert_eq!(
            names,
            vec!["a", "a/gone", "a/keep", "a/new", "h", "o", "o/upper", "s"]
        );
        assert_eq!(fs::read(r.join("a/gone")).unwrap(), b"3");
        assert_eq!(fs::read_link(r.join("s")).unwrap(), Path::new("a/keep"));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(r.join("h")).unwrap().ino(),
            fs::metadata(r.join("a/keep")).unwrap().ino()
        );
    }

    #[test]
    fn devices_fifos_xattrs_and_modes() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let l = layer(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o666);
            h.set_entry_type(tar::EntryType::Char);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            b.append_data(&mut h, "dev/null", io::empty()).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::Fifo);
            b.append_data(&mut h, "run/fifo", io::empty()).unwrap();
            b.append_pax_extensions([("SCHILY.xattr.user.peapod", &b"yes"[..])])
                .unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o4755);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, "bin/suid", &b"#!"[..]).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o555);
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, "ro/", io::empty()).unwrap();
            file(b, "ro/inside", b"x");
        });
        apply_layer(r, &l[..], Compression::None, UnpackOptions::default()).unwrap();
        let fifo = fs::symlink_metadata(r.join("run/fifo")).unwrap();
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o600);
        // Device nodes are skipped only where mknod is not permitted; probe for that.
        let probe = r.join("probe");
        let can_mknod = nix::sys::stat::mknod(
            &probe,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, 3),
        )
        .is_ok();
        let dev = fs::symlink_metadata(r.join("dev/null"));
        if can_mknod {
            let m = dev.unwrap();
            assert!(m.file_type().is_char_device());
            assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 3));
        } else {
            assert!(dev.is_err());
        }
        let suid = fs::metadata(r.join("bin/suid")).unwrap();
        assert_eq!(suid.mode() & 0o7777, 0o4755);
        assert_eq!(fs::metadata(r.join("ro")).unwrap().mode() & 0o7777, 0o555);
        assert!(r.join("ro/inside").is_file());
        // xattrs: set when the filesystem supports user.* attributes.
        if xattr::set(r.join("ro/inside"), "user.probe", b"1").is_ok() {
            assert_eq!(
                xattr::get(r.join("bin/suid"), "user.peapod")
                    .unwrap()
                    .as_deref(),
                Some(&b"yes"[..])
            );
        }
    }

    fn walk(r: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for e in fs::read_dir(r.join(&rel)).unwrap() {
                let e = e.unwrap();
                let p = rel.join(e.file_name());
                if e.file_type().unwrap().is_dir() {
                    stack.push(p.clone());
                }
                out.push(p.display().to_string());
            }
        }
        out
    }
}
