//! Reading a layer's tar stream with bounded memory.
//!
//! The `tar` crate reads the body of a GNU long-name (`L`) or long-link (`K`) entry and of a
//! PAX extension header (`x`) into memory whole, however large its header says it is (a 261 KB
//! gzip layer declaring a 256 MiB long name cost 1.9 GB). Here the archive is read in raw mode:
//! those entries come back as entries, their declared size is checked against [`TarLimits`]
//! before a byte of their body is read, and their meaning is applied here as the crate would
//! (GNU long names first, then PAX `path` / `linkpath`; PAX `uid`, `gid`; `SCHILY.xattr.*`).
//! The number of entries, of hard links and of xattrs per entry is bounded too.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Longest GNU long-name / long-link body (with its NUL) and PAX `path` / `linkpath`: PATH_MAX.
pub const MAX_NAME_BYTES: u64 = 4096;
/// Largest PAX extension header (local `x` or global `g`), all records together: 1 MiB.
pub const MAX_PAX_BYTES: u64 = 1 << 20;
/// Most entries in one layer (extension headers not counted, PAX global headers counted).
pub const MAX_ENTRIES: u64 = 1_000_000;
/// Most `SCHILY.xattr.*` records on one entry.
pub const MAX_XATTRS: usize = 128;
/// Most hard-link entries in one layer (ext4 allows 65000 links to one inode).
pub const MAX_HARD_LINKS: u64 = 65_536;
/// Most bytes of paths the unpacker remembers for one layer (for opaque whiteouts and
/// directory modes applied at the end): 64 MiB.
pub const MAX_REMEMBERED_BYTES: usize = 64 << 20;

/// What unpacking one layer may cost; [`TarLimits::DEFAULT`] is used unless a caller says
/// otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TarLimits {
    /// Longest long-name body and PAX path, in bytes.
    pub max_name_bytes: u64,
    /// Largest PAX header, in bytes.
    pub max_pax_bytes: u64,
    /// Most entries.
    pub max_entries: u64,
    /// Most xattrs on one entry.
    pub max_xattrs: usize,
    /// Most hard links.
    pub max_hard_links: u64,
    /// Most bytes of remembered paths.
    pub max_remembered_bytes: usize,
}

impl TarLimits {
    /// The limits used by default.
    pub const DEFAULT: TarLimits = TarLimits {
        max_name_bytes: MAX_NAME_BYTES,
        max_pax_bytes: MAX_PAX_BYTES,
        max_entries: MAX_ENTRIES,
        max_xattrs: MAX_XATTRS,
        max_hard_links: MAX_HARD_LINKS,
        max_remembered_bytes: MAX_REMEMBERED_BYTES,
    };
}

impl Default for TarLimits {
    fn default() -> Self {
        TarLimits::DEFAULT
    }
}

/// A layer refused while reading its tar stream.
#[derive(Debug, thiserror::Error)]
pub enum TarLimitError {
    /// A GNU long name or link name, or a PAX path or linkpath, is too long.
    #[error("{what} of {size} bytes is longer than {max} bytes (PATH_MAX)")]
    NameTooLong {
        /// Which name.
        what: &'static str,
        /// Its (declared) size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A PAX header is too large.
    #[error("PAX header of {size} bytes is larger than {max} bytes")]
    PaxTooLarge {
        /// Its declared size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Too many entries.
    #[error("more than {max} entries in one layer")]
    TooManyEntries {
        /// The limit.
        max: u64,
    },
    /// Too many xattrs on one entry.
    #[error("entry {entry:?} has more than {max} extended attributes")]
    TooManyXattrs {
        /// The entry.
        entry: String,
        /// The limit.
        max: usize,
    },
    /// Too many hard links.
    #[error("more than {max} hard links in one layer")]
    TooManyHardLinks {
        /// The limit.
        max: u64,
    },
    /// Too many bytes of paths to remember.
    #[error("the layer's paths to remember total more than {max} bytes")]
    TooManyPaths {
        /// The limit.
        max: usize,
    },
    /// A PAX `size` record that disagrees with the header (files of 8 GiB and more).
    #[error("entry {entry:?}: PAX size {pax} differs from the header's size {header}")]
    PaxSize {
        /// The entry.
        entry: String,
        /// The PAX record's size.
        pax: u64,
        /// The header's size.
        header: u64,
    },
    /// Extension headers out of order, or an unsupported form.
    #[error("malformed layer: {0}")]
    Malformed(&'static str),
    /// Reading the stream failed.
    #[error("reading the layer: {0}")]
    Read(#[source] io::Error),
}

/// Extended attributes of an entry: name (without `SCHILY.xattr.`) and value.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// One file-system entry of a layer, with what its extension headers said about it.
pub struct Member<'a, R: Read> {
    /// The entry; its body is the file's data.
    pub entry: tar::Entry<'a, R>,
    /// Its name (GNU long name, else PAX `path`, else the header's).
    pub path: PathBuf,
    /// Its link target (GNU long link, else PAX `linkpath`, else the header's).
    pub link_name: Option<PathBuf>,
    /// Owner (PAX `uid`, else the header's, else 0).
    pub uid: u64,
    /// Group (PAX `gid`, else the header's, else 0).
    pub gid: u64,
    /// `SCHILY.xattr.*` records: name without the prefix, value.
    pub xattrs: Xattrs,
}

/// Extension headers read so far for the next member.
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

/// The members of a layer, read within [`TarLimits`].
pub struct Members<'a, R: Read> {
    entries: tar::Entries<'a, R>,
    limits: TarLimits,
    entries_seen: u64,
    hard_links: u64,
}

impl<'a, R: Read> Members<'a, R> {
    /// Starts reading `archive` (at its beginning) in raw mode.
    pub fn new(archive: &'a mut tar::Archive<R>, limits: TarLimits) -> Result<Self, TarLimitError> {
        let entries = archive.entries().map_err(TarLimitError::Read)?.raw(true);
        Ok(Members {
            entries,
            limits,
            entries_seen: 0,
            hard_links: 0,
        })
    }

    /// The next member, or `None` at the end of the archive.
    pub fn next_member(&mut self) -> Result<Option<Member<'a, R>>, TarLimitError> {
        let mut ext = Extensions::default();
        loop {
            let Some(entry) = self.entries.next() else {
                if ext.long_name.is_some() || ext.long_link.is_some() || ext.pax.is_some() {
                    return Err(TarLimitError::Malformed(
                        "extension headers describe a member that is missing",
                    ));
                }
                return Ok(None);
            };
            let mut entry = entry.map_err(TarLimitError::Read)?;
            let header = entry.header();
            let kind = header.entry_type();
            // As the crate: only GNU and ustar headers carry extensions.
            let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
            if recognized && kind.is_gnu_longname() {
                let name = read_long_name(&mut entry, "GNU long name", &self.limits)?;
                set_once(&mut ext.long_name, name, "two long names for one member")?;
            } else if recognized && kind.is_gnu_longlink() {
                let name = read_long_name(&mut entry, "GNU long link name", &self.limits)?;
                set_once(
                    &mut ext.long_link,
                    name,
                    "two long link names for one member",
                )?;
            } else if recognized && kind.is_pax_local_extensions() {
                let pax = read_pax(&mut entry, &self.limits)?;
                set_once(&mut ext.pax, pax, "two PAX headers for one member")?;
            } else {
                return self.member(entry, ext).map(Some);
            }
        }
    }

    /// Counts a member and applies its extensions.
    fn member(
        &mut self,
        entry: tar::Entry<'a, R>,
        ext: Extensions,
    ) -> Result<Member<'a, R>, TarLimitError> {
        self.entries_seen = self.entries_seen.saturating_add(1);
        if self.entries_seen > self.limits.max_entries {
            return Err(TarLimitError::TooManyEntries {
                max: self.limits.max_entries,
            });
        }
        let header = entry.header();
        let kind = header.entry_type();
        if kind.is_pax_global_extensions() && entry.size() > self.limits.max_pax_bytes {
            // Its body is skipped, never read; refused all the same, as no real one is large.
            return Err(TarLimitError::PaxTooLarge {
                size: entry.size(),
                max: self.limits.max_pax_bytes,
            });
        }
        if kind.is_gnu_sparse() && header.as_gnu().is_some_and(|g| g.is_extended()) {
            // Raw mode does not read the extra sparse-map headers.
            return Err(TarLimitError::Malformed(
                "GNU sparse entries with extended sparse maps are not supported",
            ));
        }
        if kind == tar::EntryType::Link {
            self.hard_links = self.hard_links.saturating_add(1);
            if self.hard_links > self.limits.max_hard_links {
                return Err(TarLimitError::TooManyHardLinks {
                    max: self.limits.max_hard_links,
                });
            }
        }
        let pax = ext.pax.as_deref().unwrap_or_default();
        let path = match ext.long_name {
            Some(name) => bytes_to_path(strip_nul(name)),
            None => match pax_record(pax, b"path") {
                Some(p) => bytes_to_path(checked_name(p, "PAX path", &self.limits)?.to_vec()),
                None => bytes_to_path(entry.path_bytes().into_owned()),
            },
        };
        let link_name = match ext.long_link {
            Some(name) => Some(bytes_to_path(strip_nul(name))),
            None => match pax_record(pax, b"linkpath") {
                Some(p) => Some(bytes_to_path(
                    checked_name(p, "PAX linkpath", &self.limits)?.to_vec(),
                )),
                None => entry
                    .link_name_bytes()
                    .map(|b| bytes_to_path(b.into_owned())),
            },
        };
        if let Some(size) = pax_number(pax, "size") {
            if size != entry.size() {
                // Raw mode frames the stream by the header's size; a different PAX size would
                // read the rest of the layer out of step.
                return Err(TarLimitError::PaxSize {
                    entry: path.display().to_string(),
                    pax: size,
                    header: entry.size(),
                });
            }
        }
        let xattrs = xattrs(pax, &path, &self.limits)?;
        Ok(Member {
            uid: pax_number(pax, "uid").unwrap_or_else(|| header.uid().unwrap_or(0)),
            gid: pax_number(pax, "gid").unwrap_or_else(|| header.gid().unwrap_or(0)),
            entry,
            path,
            link_name,
            xattrs,
        })
    }
}

fn set_once(
    slot: &mut Option<Vec<u8>>,
    value: Vec<u8>,
    twice: &'static str,
) -> Result<(), TarLimitError> {
    if slot.is_some() {
        return Err(TarLimitError::Malformed(twice));
    }
    *slot = Some(value);
    Ok(())
}

/// Reads a GNU long-name body, refusing one declared longer than the limit before reading it.
fn read_long_name<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    what: &'static str,
    limits: &TarLimits,
) -> Result<Vec<u8>, TarLimitError> {
    let size = entry.size();
    if size > limits.max_name_bytes {
        return Err(TarLimitError::NameTooLong {
            what,
            size,
            max: limits.max_name_bytes,
        });
    }
    read_body(entry, size)
}

/// Reads a PAX header's body, refusing one declared larger than the limit before reading it.
fn read_pax<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    limits: &TarLimits,
) -> Result<Vec<u8>, TarLimitError> {
    let size = entry.size();
    if size > limits.max_pax_bytes {
        return Err(TarLimitError::PaxTooLarge {
            size,
            max: limits.max_pax_bytes,
        });
    }
    read_body(entry, size)
}

/// Reads at most `size` bytes (already checked against a limit) of an entry's body.
fn read_body<R: Read>(entry: &mut tar::Entry<'_, R>, size: u64) -> Result<Vec<u8>, TarLimitError> {
    let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry
        .take(size)
        .read_to_end(&mut body)
        .map_err(TarLimitError::Read)?;
    Ok(body)
}

/// Drops one trailing NUL, as the crate does for long names.
fn strip_nul(mut name: Vec<u8>) -> Vec<u8> {
    if name.last() == Some(&0) {
        name.pop();
    }
    name
}

fn bytes_to_path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&bytes))
}

fn checked_name<'p>(
    name: &'p [u8],
    what: &'static str,
    limits: &TarLimits,
) -> Result<&'p [u8], TarLimitError> {
    let size = u64::try_from(name.len()).unwrap_or(u64::MAX);
    if size > limits.max_name_bytes {
        return Err(TarLimitError::NameTooLong {
            what,
            size,
            max: limits.max_name_bytes,
        });
    }
    Ok(name)
}

/// The first well-formed record named `key`, as the crate finds `path` and `linkpath`.
fn pax_record<'p>(pax: &'p [u8], key: &[u8]) -> Option<&'p [u8]> {
    tar::PaxExtensions::new(pax)
        .flatten()
        .find(|r| r.key_bytes() == key)
        .map(|r| r.value_bytes())
}

/// A numeric record, as the crate reads `size`, `uid` and `gid`: the first record named
/// `key`; nothing when a malformed record comes before it or its value is not a number.
fn pax_number(pax: &[u8], key: &str) -> Option<u64> {
    for record in tar::PaxExtensions::new(pax) {
        let record = record.ok()?;
        if record.key() == Ok(key) {
            return record.value().ok()?.parse().ok();
        }
    }
    None
}

/// The `SCHILY.xattr.*` records, refused past the per-entry limit.
fn xattrs(pax: &[u8], path: &std::path::Path, limits: &TarLimits) -> Result<Xattrs, TarLimitError> {
    let mut out = Vec::new();
    for record in tar::PaxExtensions::new(pax).flatten() {
        let Some(name) = record.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
            continue;
        };
        if out.len() >= limits.max_xattrs {
            return Err(TarLimitError::TooManyXattrs {
                entry: path.display().to_string(),
                max: limits.max_xattrs,
            });
        }
        out.push((name.to_vec(), record.value_bytes().to_vec()));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::Compression;
    use crate::unpack::{apply_layer, UnpackError, UnpackOptions};
    use std::cell::Cell;
    use std::rc::Rc;

    /// A reader that counts what is taken from it.
    struct Counted<R> {
        inner: R,
        taken: Rc<Cell<usize>>,
    }

    impl<R: Read> Read for Counted<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.taken.set(self.taken.get() + n);
            Ok(n)
        }
    }

    /// A header of `kind` whose body is said to be `size` bytes.
    fn ext_header(kind: tar::EntryType, size: u64) -> Vec<u8> {
        let mut h = if kind.is_pax_local_extensions() {
            tar::Header::new_ustar()
        } else {
            tar::Header::new_gnu()
        };
        h.set_path("././@LongLink").unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn opts(limits: TarLimits) -> UnpackOptions {
        UnpackOptions {
            preserve_owner: false,
            limits,
        }
    }

    /// Unpacks `layer` into a fresh directory; returns the error and how many bytes were read.
    fn refuse(layer: &[u8], limits: TarLimits) -> (TarLimitError, usize) {
        let root = tempfile::tempdir().unwrap();
        let taken = Rc::new(Cell::new(0));
        let reader = Counted {
            inner: layer,
            taken: taken.clone(),
        };
        match apply_layer(root.path(), reader, Compression::None, opts(limits)) {
            Err(UnpackError::Refused(e)) => (e, taken.get()),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Appends a regular file (also used by the unpack tests).
    pub(crate) fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    }

    #[test]
    fn gnu_long_name_of_256_mib_is_refused_before_its_body_is_read() {
        for (kind, what) in [
            (tar::EntryType::GNULongName, "GNU long name"),
            (tar::EntryType::GNULongLink, "GNU long link name"),
        ] {
            // The header declares 256 MiB; 1 MiB of body follows, none of which may be read.
            let mut layer = ext_header(kind, 256 << 20);
            layer.resize(512 + (1 << 20), b'a');
            let (err, taken) = refuse(&layer, TarLimits::DEFAULT);
            assert!(
                matches!(err, TarLimitError::NameTooLong { what: w, size, max: MAX_NAME_BYTES }
                    if w == what && size == 256 << 20),
                "{err:?}"
            );
            assert!(taken < 64 << 10, "{taken} bytes read before refusing");
            assert_eq!(
                err.to_string(),
                format!("{what} of 268435456 bytes is longer than 4096 bytes (PATH_MAX)")
            );
        }
    }

    #[test]
    fn pax_header_too_large_is_refused_before_its_body_is_read() {
        let mut layer = ext_header(tar::EntryType::XHeader, 2 << 20);
        layer.resize(512 + (2 << 20), b'a');
        let (err, taken) = refuse(&layer, TarLimits::DEFAULT);
        assert!(
            matches!(
                err,
                TarLimitError::PaxTooLarge {
                    size: 2097152,
                    max: MAX_PAX_BYTES
                }
            ),
            "{err:?}"
        );
        assert!(taken < 64 << 10, "{taken} bytes read before refusing");
        let mut layer = ext_header(tar::EntryType::XGlobalHeader, 2 << 20);
        layer.resize(512 + (2 << 20), b'a');
        assert!(matches!(
            refuse(&layer, TarLimits::DEFAULT).0,
            TarLimitError::PaxTooLarge { .. }
        ));
    }

    #[test]
    fn entries_hard_links_and_xattrs_are_counted() {
        let small = TarLimits {
            max_entries: 3,
            max_hard_links: 1,
            max_xattrs: 2,
            ..TarLimits::DEFAULT
        };
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..4 {
            file(&mut b, &format!("f{i}"), b"x");
        }
        let (err, _) = refuse(&b.into_inner().unwrap(), small);
        assert!(
            matches!(err, TarLimitError::TooManyEntries { max: 3 }),
            "{err:?}"
        );

        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "f", b"x");
        for name in ["h1", "h2"] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            h.set_mode(0o644);
            b.append_link(&mut h, name, "f").unwrap();
        }
        let (err, _) = refuse(&b.into_inner().unwrap(), small);
        assert!(
            matches!(err, TarLimitError::TooManyHardLinks { max: 1 }),
            "{err:?}"
        );

        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("SCHILY.xattr.user.a", &b"1"[..]),
            ("SCHILY.xattr.user.b", &b"2"[..]),
            ("SCHILY.xattr.user.c", &b"3"[..]),
        ])
        .unwrap();
        file(&mut b, "f", b"x");
        let (err, _) = refuse(&b.into_inner().unwrap(), small);
        assert!(
            matches!(&err, TarLimitError::TooManyXattrs { entry, max: 2 } if entry == "f"),
            "{err:?}"
        );
    }

    #[test]
    fn long_names_pax_paths_and_owners_still_apply() {
        let long = format!("{}/{}", "a".repeat(200), "b".repeat(200));
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, &long, b"long"); // a GNU long-name entry
        b.append_pax_extensions([("path", &b"p/from-pax"[..]), ("uid", &b"7"[..])])
            .unwrap();
        file(&mut b, "ignored", b"pax");
        let layer = b.into_inner().unwrap();
        let root = tempfile::tempdir().unwrap();
        apply_layer(
            root.path(),
            &layer[..],
            Compression::None,
            opts(TarLimits::DEFAULT),
        )
        .unwrap();
        assert_eq!(std::fs::read(root.path().join(&long)).unwrap(), b"long");
        assert_eq!(
            std::fs::read(root.path().join("p/from-pax")).unwrap(),
            b"pax"
        );
        assert!(!root.path().join("ignored").exists());

        let mut archive = tar::Archive::new(&layer[..]);
        let mut members = Members::new(&mut archive, TarLimits::DEFAULT).unwrap();
        let first = members.next_member().unwrap().unwrap();
        assert_eq!(first.path, PathBuf::from(&long));
        drop(first);
        let second = members.next_member().unwrap().unwrap();
        assert_eq!((second.uid, second.path.to_str()), (7, Some("p/from-pax")));
        drop(second);
        assert!(members.next_member().unwrap().is_none());
    }

    #[test]
    fn pax_path_too_long_size_mismatch_and_dangling_extensions_are_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let path = "p/".repeat(2100);
        b.append_pax_extensions([("path", path.as_bytes())])
            .unwrap();
        file(&mut b, "f", b"x");
        let (err, _) = refuse(&b.into_inner().unwrap(), TarLimits::DEFAULT);
        assert!(
            matches!(
                err,
                TarLimitError::NameTooLong {
                    what: "PAX path",
                    size: 4200,
                    ..
                }
            ),
            "{err:?}"
        );

        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"5"[..])]).unwrap();
        file(&mut b, "f", b"x");
        let (err, _) = refuse(&b.into_inner().unwrap(), TarLimits::DEFAULT);
        assert!(
            matches!(
                err,
                TarLimitError::PaxSize {
                    pax: 5,
                    header: 1,
                    ..
                }
            ),
            "{err:?}"
        );

        let mut layer = ext_header(tar::EntryType::GNULongName, 4);
        layer.extend_from_slice(b"name");
        layer.resize(1024, 0);
        layer.extend_from_slice(&[0; 1024]);
        let (err, _) = refuse(&layer, TarLimits::DEFAULT);
        assert!(matches!(err, TarLimitError::Malformed(_)), "{err:?}");
    }
}
