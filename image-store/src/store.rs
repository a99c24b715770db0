//! The on-disk store: an OCI image layout under `$PEAPOD_ROOT/images`, reference metadata,
//! locks, verified blob writes, unpacked root filesystems, removal and garbage collection.
//!
//! Layout: `oci-layout`, `index.json` (one entry per reference, annotated with the full name),
//! `blobs/sha256/<hex>`, `refs.json` (reference → digests; `index.json` is regenerated from it),
//! `rootfs/<image-manifest-hex>/` (read-only by convention, shared by pods), `tmp/` (everything
//! in flight, named `.tmp-*`), `locks/` (per-digest lock files), `store.lock` (metadata) and
//! `gc.lock` (held shared by pulls and imports, exclusively by GC and by the start-up cleanup).

use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::manifest::{
    AnyManifest, Compression, Descriptor, ImageConfig, Manifest, ManifestError, OCI_INDEX,
    OCI_MANIFEST,
};
use crate::reference::ImageRef;
use crate::unpack::{self, UnpackError, UnpackOptions};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Prefix of every temporary file or directory; the next open removes leftovers.
pub const TMP_PREFIX: &str = ".tmp-";
/// Annotation with the full normalised reference in `index.json`.
pub const ANNOTATION_NAME: &str = "io.containerd.image.name";
/// Standard OCI annotation (the tag) in `index.json`.
pub const ANNOTATION_REF: &str = "org.opencontainers.image.ref.name";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("image store: {op} {path}: {cause}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Cause.
        cause: io::Error,
    },
    /// A blob's content does not match its digest.
    #[error("blob digest mismatch: expected {expected}, got {actual} ({size} bytes)")]
    DigestMismatch {
        /// Expected.
        expected: Digest,
        /// Computed.
        actual: Digest,
        /// Bytes read.
        size: u64,
    },
    /// A blob's size does not match its descriptor.
    #[error("blob {digest} has size {actual}, descriptor says {expected}")]
    SizeMismatch {
        /// Which blob.
        digest: Digest,
        /// Descriptor size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// A blob is not in the store.
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    /// No such reference.
    #[error("image {0} is not in the store")]
    NotFound(String),
    /// A manifest problem.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Unpacking failed.
    #[error("unpacking image {image}: {cause}")]
    Unpack {
        /// Image manifest digest.
        image: Digest,
        /// Cause.
        cause: UnpackError,
    },
    /// The metadata file is corrupt.
    #[error("image store metadata {path}: {cause}")]
    Metadata {
        /// Which file.
        path: PathBuf,
        /// Cause.
        cause: serde_json::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |cause| StoreError::Io { op, path, cause }
}

/// One reference in the store.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefRecord {
    /// What the reference points at (an image manifest or an index).
    pub digest: Digest,
    /// Media type of `digest`.
    pub media_type: String,
    /// Size of the `digest` blob.
    pub size: u64,
    /// The linux/amd64 image manifest (equal to `digest` for single-platform images).
    pub manifest: Digest,
    /// The config blob.
    pub config: Digest,
    /// Unix seconds when the reference was last set.
    pub created: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct RefsFile {
    refs: BTreeMap<String, RefRecord>,
}

/// A line of `peapod images`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// Normalised reference.
    pub reference: String,
    /// The record.
    pub record: RefRecord,
    /// Compressed size of config plus layers.
    pub size: u64,
}

/// An image ready for a pod: its config and unpacked root filesystem.
#[derive(Clone, Debug)]
pub struct ImageHandle {
    /// The normalised reference asked for.
    pub reference: String,
    /// The image manifest digest (the image ID peapod shows).
    pub manifest_digest: Digest,
    /// The config for the runtime plan.
    pub config: ImageConfig,
    /// The unpacked root filesystem; treat it as read-only.
    pub rootfs: PathBuf,
}

/// What GC removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_removed: usize,
    /// Bytes freed from blobs.
    pub bytes_freed: u64,
    /// Root filesystems deleted.
    pub rootfs_removed: usize,
}

/// A guard that releases a lock on drop.
pub struct LockGuard {
    _lock: Flock<File>,
}

/// The image store.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    seq: AtomicU64,
}

impl Store {
    /// Opens (creating if needed) the store under `$PEAPOD_ROOT/images`
    /// (`PEAPOD_ROOT` defaults to `/var/lib/peapod`).
    pub fn open_default() -> Result<Self, StoreError> {
        let root = std::env::var_os("PEAPOD_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/peapod"));
        Self::open(&root)
    }

    /// Opens (creating if needed) the store under `peapod_root/images`, and removes leftovers
    /// of interrupted operations when no other process is using the store.
    pub fn open(peapod_root: &Path) -> Result<Self, StoreError> {
        let dir = peapod_root.join("images");
        for sub in ["blobs/sha256", "rootfs", "tmp", "locks"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        let store = Self {
            dir,
            seq: AtomicU64::new(0),
        };
        let layout = store.dir.join("oci-layout");
        if !layout.exists() || !store.dir.join("index.json").exists() {
            // Temp files are only written while holding the in-use lock, so that a concurrent
            // open's cleanup cannot remove them.
            let _in_use = store.lock_in_use()?;
            let _g = store.lock_metadata()?;
            if !layout.exists() {
                store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            }
            if !store.dir.join("index.json").exists() {
                store.write_index(&RefsFile::default())?;
            }
        }
        store.cleanup_tmp()?;
        Ok(store)
    }

    /// The store directory (`$PEAPOD_ROOT/images`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a blob.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// Whether a blob is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    fn lock_file(&self, name: &str, arg: FlockArg) -> Result<Option<LockGuard>, StoreError> {
        let p = if name == "store.lock" || name == "gc.lock" {
            self.dir.join(name)
        } else {
            self.dir.join("locks").join(name)
        };
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err("open lock", &p))?;
        match Flock::lock(f, arg) {
            Ok(l) => Ok(Some(LockGuard { _lock: l })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(io_err("lock", &p)(io::Error::from(e))),
        }
    }

    fn must_lock(&self, name: &str, arg: FlockArg) -> Result<LockGuard, StoreError> {
        self.lock_file(name, arg)?.ok_or_else(|| StoreError::Io {
            op: "lock",
            path: self.dir.join(name),
            cause: io::Error::from(io::ErrorKind::WouldBlock),
        })
    }

    /// Exclusive metadata lock (short critical sections).
    fn lock_metadata(&self) -> Result<LockGuard, StoreError> {
        self.must_lock("store.lock", FlockArg::LockExclusive)
    }

    /// Shared "in use" lock that keeps GC and temp cleanup away; hold it for a whole pull or
    /// import. Blocks while a GC runs.
    pub fn lock_in_use(&self) -> Result<LockGuard, StoreError> {
        self.must_lock("gc.lock", FlockArg::LockShared)
    }

    /// Non-blocking [`Store::lock_in_use`]: `None` while a GC runs.
    pub fn try_lock_in_use(&self) -> Result<Option<LockGuard>, StoreError> {
        self.lock_file("gc.lock", FlockArg::LockSharedNonblock)
    }

    /// Non-blocking [`Store::lock_digest`]: `None` while someone else holds it.
    pub fn try_lock_digest(&self, kind: &str, d: &Digest) -> Result<Option<LockGuard>, StoreError> {
        self.lock_file(
            &format!("{kind}-{}.lock", d.hex()),
            FlockArg::LockExclusiveNonblock,
        )
    }

    /// Exclusive per-digest lock for writing a blob or unpacking a root filesystem.
    pub fn lock_digest(&self, kind: &str, d: &Digest) -> Result<LockGuard, StoreError> {
        self.must_lock(&format!("{kind}-{}.lock", d.hex()), FlockArg::LockExclusive)
    }

    fn cleanup_tmp(&self) -> Result<(), StoreError> {
        let Some(_g) = self.lock_file("gc.lock", FlockArg::LockExclusiveNonblock)? else {
            return Ok(()); // someone is pulling or importing; their temp files are live
        };
        let tmp = self.dir.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io_err("read", &tmp))?.flatten() {
            let p = e.path();
            let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            if let Err(err) = r {
                tracing::warn!("cannot remove leftover {}: {err}", p.display());
            }
        }
        Ok(())
    }

    /// A fresh temp path inside the store (same filesystem, so rename is atomic).
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.dir.join("tmp").join(format!(
            "{TMP_PREFIX}{what}-{}-{n}-{nanos}",
            std::process::id()
        ))
    }

    fn write_atomic(&self, dest: &Path, data: &[u8]) -> Result<(), StoreError> {
        let tmp = self.tmp_path("meta");
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, dest).map_err(io_err("rename", dest))
    }

    /// Writes a blob from a reader; the content must hash to `expected` (and have `size`
    /// bytes when given). Concurrent writers of one digest serialise on its lock; a blob that
    /// is already present is not written again.
    pub fn put_blob<R: Read>(
        &self,
        expected: &Digest,
        size: Option<u64>,
        reader: R,
    ) -> Result<(), StoreError> {
        if self.has_blob(expected) {
            return Ok(());
        }
        let _g = self.lock_digest("blob", expected)?;
        if self.has_blob(expected) {
            return Ok(());
        }
        let tmp = self.tmp_path("blob");
        let res = (|| {
            let f = File::create(&tmp).map_err(io_err("create", &tmp))?;
            let mut w = HashingWriter::new(io::BufWriter::new(f));
            let mut r = reader;
            io::copy(&mut r, &mut w).map_err(io_err("write", &tmp))?;
            let (bw, actual, n) = w.finish();
            let f = bw
                .into_inner()
                .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
            self.commit_blob(&tmp, f, expected, &actual, size, n)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    /// Stores bytes as a blob and returns their digest.
    pub fn put_blob_bytes(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(data);
        self.put_blob(&d, Some(data.len() as u64), data)?;
        Ok(d)
    }

    /// Finishes a blob written to `tmp` by a caller holding the digest lock: checks the digest
    /// and size, syncs and renames into place. On error the caller removes `tmp`.
    pub fn commit_blob(
        &self,
        tmp: &Path,
        file: File,
        expected: &Digest,
        actual: &Digest,
        size: Option<u64>,
        n: u64,
    ) -> Result<(), StoreError> {
        if actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
                size: n,
            });
        }
        if let Some(s) = size {
            if s != n {
                return Err(StoreError::SizeMismatch {
                    digest: expected.clone(),
                    expected: s,
                    actual: n,
                });
            }
        }
        file.sync_all().map_err(io_err("sync", tmp))?;
        let dest = self.blob_path(expected);
        fs::rename(tmp, &dest).map_err(io_err("rename", &dest))
    }

    /// Reads a (small) blob fully and verifies its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        let data = match fs::read(&p) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob(d.clone()))
            }
            Err(e) => return Err(io_err("read", &p)(e)),
        };
        let actual = Digest::of(&data);
        if &actual != d {
            return Err(StoreError::DigestMismatch {
                expected: d.clone(),
                actual,
                size: data.len() as u64,
            });
        }
        Ok(data)
    }

    /// Reads and parses an image manifest blob.
    pub fn read_manifest(&self, d: &Digest) -> Result<Manifest, StoreError> {
        match AnyManifest::parse(&self.read_blob(d)?, None)? {
            AnyManifest::Image(m) => Ok(m),
            AnyManifest::Index(_) => Err(ManifestError::Unsupported(OCI_INDEX.to_string()).into()),
        }
    }

    /// Resolves `top` (manifest or index, present in the store) to the linux/amd64 image
    /// manifest, checks that its config and layers are present, and returns a record.
    pub fn record_for(&self, top: &Digest) -> Result<RefRecord, StoreError> {
        let data = self.read_blob(top)?;
        let (media_type, manifest) = match AnyManifest::parse(&data, None)? {
            AnyManifest::Image(m) => (
                m.media_type
                    .clone()
                    .unwrap_or_else(|| OCI_MANIFEST.to_string()),
                top.clone(),
            ),
            AnyManifest::Index(i) => (
                i.media_type
                    .clone()
                    .unwrap_or_else(|| OCI_INDEX.to_string()),
                i.select_linux_amd64()?.digest.clone(),
            ),
        };
        let m = self.read_manifest(&manifest)?;
        for d in std::iter::once(&m.config).chain(m.layers.iter()) {
            if !self.has_blob(&d.digest) {
                return Err(StoreError::MissingBlob(d.digest.clone()));
            }
        }
        Ok(RefRecord {
            digest: top.clone(),
            media_type,
            size: data.len() as u64,
            manifest,
            config: m.config.digest,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        })
    }

    fn read_refs(&self) -> Result<RefsFile, StoreError> {
        let p = self.dir.join("refs.json");
        match fs::read(&p) {
            Ok(v) => {
                serde_json::from_slice(&v).map_err(|cause| StoreError::Metadata { path: p, cause })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RefsFile::default()),
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }

    fn write_refs(&self, refs: &RefsFile) -> Result<(), StoreError> {
        let data = serde_json::to_vec_pretty(refs).map_err(|cause| StoreError::Metadata {
            path: self.dir.join("refs.json"),
            cause,
        })?;
        self.write_atomic(&self.dir.join("refs.json"), &data)?;
        self.write_index(refs)
    }

    fn write_index(&self, refs: &RefsFile) -> Result<(), StoreError> {
        let manifests: Vec<Descriptor> = refs
            .refs
            .iter()
            .map(|(name, r)| {
                let mut annotations = BTreeMap::new();
                annotations.insert(ANNOTATION_NAME.to_string(), name.clone());
                let tag = name
                    .rsplit_once(['@', ':'])
                    .map(|(_, t)| t)
                    .unwrap_or("latest");
                annotations.insert(ANNOTATION_REF.to_string(), tag.to_string());
                Descriptor {
                    media_type: r.media_type.clone(),
                    digest: r.digest.clone(),
                    size: r.size,
                    platform: None,
                    annotations,
                }
            })
            .collect();
        let index = crate::manifest::Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests,
            annotations: BTreeMap::new(),
        };
        let data = serde_json::to_vec_pretty(&index).map_err(|cause| StoreError::Metadata {
            path: self.dir.join("index.json"),
            cause,
        })?;
        self.write_atomic(&self.dir.join("index.json"), &data)
    }

    /// Points `reference` at `top` (which must be fully present), atomically.
    pub fn set_ref(&self, reference: &ImageRef, top: &Digest) -> Result<RefRecord, StoreError> {
        let rec = self.record_for(top)?;
        let _g = self.lock_metadata()?;
        let mut refs = self.read_refs()?;
        refs.refs.insert(reference.to_string(), rec.clone());
        self.write_refs(&refs)?;
        Ok(rec)
    }

    /// The record of a reference, if present. A digest reference also matches any stored
    /// image whose top or image manifest digest is that digest.
    pub fn lookup(&self, reference: &ImageRef) -> Result<Option<RefRecord>, StoreError> {
        let refs = self.read_refs()?;
        if let Some(r) = refs.refs.get(&reference.to_string()) {
            return Ok(Some(r.clone()));
        }
        if let Some(d) = reference.digest() {
            let name = reference.name();
            for (k, r) in &refs.refs {
                let same_repo =
                    k.starts_with(&format!("{name}:")) || k.starts_with(&format!("{name}@"));
                if same_repo && (r.digest == d || r.manifest == d) {
                    return Ok(Some(r.clone()));
                }
            }
            // Content addressed: a complete image whose tags have moved on is still present.
            if self.has_blob(&d) {
                if let Ok(rec) = self.record_for(&d) {
                    return Ok(Some(rec));
                }
            }
        }
        Ok(None)
    }

    /// All references, sorted.
    pub fn list(&self) -> Result<Vec<ImageInfo>, StoreError> {
        let refs = self.read_refs()?;
        let mut out = Vec::new();
        for (name, rec) in refs.refs {
            let size = match self.read_manifest(&rec.manifest) {
                Ok(m) => m
                    .layers
                    .iter()
                    .fold(m.config.size, |acc, l| acc.saturating_add(l.size)),
                Err(_) => 0,
            };
            out.push(ImageInfo {
                reference: name,
                record: rec,
                size,
            });
        }
        Ok(out)
    }

    /// Removes a reference (blobs stay until [`Store::gc`]).
    pub fn remove(&self, reference: &ImageRef) -> Result<RefRecord, StoreError> {
        let _in_use = self.lock_in_use()?;
        let _g = self.lock_metadata()?;
        let mut refs = self.read_refs()?;
        let rec = refs
            .refs
            .remove(&reference.to_string())
            .ok_or_else(|| StoreError::NotFound(reference.to_string()))?;
        self.write_refs(&refs)?;
        Ok(rec)
    }

    /// Deletes blobs and root filesystems that no reference reaches. Waits for running
    /// pulls and imports to finish, and blocks new ones while it runs.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let _gc = self.must_lock("gc.lock", FlockArg::LockExclusive)?;
        let _meta = self.lock_metadata()?;
        let refs = self.read_refs()?;
        let mut live: HashSet<String> = HashSet::new();
        let mut live_rootfs: HashSet<String> = HashSet::new();
        for rec in refs.refs.values() {
            live.insert(rec.digest.hex().to_string());
            live_rootfs.insert(rec.manifest.hex().to_string());
            let mut tops = vec![rec.digest.clone()];
            if let Ok(AnyManifest::Index(i)) = self
                .read_blob(&rec.digest)
                .and_then(|b| Ok(AnyManifest::parse(&b, None)?))
            {
                tops = i.manifests.iter().map(|d| d.digest.clone()).collect();
            }
            for t in tops {
                live.insert(t.hex().to_string());
                if let Ok(m) = self.read_manifest(&t) {
                    live.insert(m.config.digest.hex().to_string());
                    live.extend(m.layers.iter().map(|l| l.digest.hex().to_string()));
                }
            }
        }
        let mut report = GcReport::default();
        let blobs = self.dir.join("blobs/sha256");
        for e in fs::read_dir(&blobs)
            .map_err(io_err("read", &blobs))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(e.path()).map_err(io_err("remove", &e.path()))?;
                report.blobs_removed += 1;
                report.bytes_freed += len;
            }
        }
        let rootfs = self.dir.join("rootfs");
        for e in fs::read_dir(&rootfs)
            .map_err(io_err("read", &rootfs))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !live_rootfs.contains(&name) {
                fs::remove_dir_all(e.path()).map_err(io_err("remove", &e.path()))?;
                report.rootfs_removed += 1;
            }
        }
        let locks = self.dir.join("locks");
        for e in fs::read_dir(&locks)
            .map_err(io_err("read", &locks))?
            .flatten()
        {
            let _ = fs::remove_file(e.path());
        }
        Ok(report)
    }

    /// The unpacked root filesystem of an image manifest, unpacking it first if needed
    /// (into a temp dir, renamed into place when complete; a failed unpack leaves nothing).
    pub fn rootfs(&self, manifest: &Digest) -> Result<PathBuf, StoreError> {
        let dest = self.dir.join("rootfs").join(manifest.hex());
        if dest.is_dir() {
            return Ok(dest);
        }
        let _in_use = self.lock_in_use()?;
        let _g = self.lock_digest("rootfs", manifest)?;
        if dest.is_dir() {
            return Ok(dest);
        }
        let m = self.read_manifest(manifest)?;
        let tmp = self.tmp_path("rootfs");
        let res = (|| {
            fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
            fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(io_err("chmod", &tmp))?;
            for layer in &m.layers {
                let p = self.blob_path(&layer.digest);
                let f = File::open(&p).map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        StoreError::MissingBlob(layer.digest.clone())
                    } else {
                        io_err("open", &p)(e)
                    }
                })?;
                let mut hr = HashingReader::new(io::BufReader::with_capacity(1 << 20, f));
                unpack::apply_layer(
                    &tmp,
                    &mut hr,
                    Compression::from_media_type(&layer.media_type),
                    UnpackOptions::default(),
                )
                .map_err(|cause| StoreError::Unpack {
                    image: manifest.clone(),
                    cause,
                })?;
                // Drain trailing bytes so the digest covers the whole blob.
                io::copy(&mut hr, &mut io::sink()).map_err(io_err("read", &p))?;
                let (actual, n) = hr.finish();
                if actual != layer.digest {
                    return Err(StoreError::DigestMismatch {
                        expected: layer.digest.clone(),
                        actual,
                        size: n,
                    });
                }
            }
            fs::rename(&tmp, &dest).map_err(io_err("rename", &dest))
        })();
        if res.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        res.map(|()| dest)
    }

    /// The config of an image manifest.
    pub fn config(&self, manifest: &Digest) -> Result<ImageConfig, StoreError> {
        let m = self.read_manifest(manifest)?;
        Ok(ImageConfig::from_json(&self.read_blob(&m.config.digest)?)?)
    }

    /// A ready-to-use image for a stored reference (unpacking on first use).
    pub fn image(&self, reference: &ImageRef) -> Result<ImageHandle, StoreError> {
        let rec = self
            .lookup(reference)?
            .ok_or_else(|| StoreError::NotFound(reference.to_string()))?;
        Ok(ImageHandle {
            reference: reference.to_string(),
            config: self.config(&rec.manifest)?,
            rootfs: self.rootfs(&rec.manifest)?,
            manifest_digest: rec.manifest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_survives_hostile_descriptor_sizes() {
        // Blobs already in the store are not re-fetched, so a later manifest's descriptor
        // sizes are never checked against them: summing them must not overflow.
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let config = store.put_blob_bytes(b"{}").unwrap();
        let layer = store.put_blob_bytes(b"layer").unwrap();
        let d = |digest: &Digest, size: u64| Descriptor {
            media_type: crate::manifest::OCI_LAYER_TAR.to_string(),
            digest: digest.clone(),
            size,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let m = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_string()),
            config: d(&config, u64::MAX),
            layers: vec![d(&layer, u64::MAX), d(&layer, u64::MAX)],
        };
        let md = store
            .put_blob_bytes(&serde_json::to_vec(&m).unwrap())
            .unwrap();
        store
            .set_ref(&ImageRef::parse("hostile:1").unwrap(), &md)
            .unwrap();
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].size, u64::MAX);
    }
}
