//! Imports images from an OCI image layout (directory or tar) or a `docker save` archive.

use crate::digest::{Digest, HashingReader};
use crate::manifest::{
    AnyManifest, Compression, Descriptor, Index, Manifest, ManifestError, OCI_CONFIG,
    OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use crate::reference::{ImageRef, ReferenceError};
use crate::store::{Store, StoreError, ANNOTATION_NAME, ANNOTATION_REF};
use crate::tar_limits::TarLimits;
use crate::unpack::{self, UnpackError, UnpackOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Errors while importing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Neither an OCI layout nor a docker archive.
    #[error("{0}: not an OCI image layout (no oci-layout file) nor a docker save archive (no manifest.json)")]
    UnknownFormat(PathBuf),
    /// A file could not be read.
    #[error("import {path}: {cause}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Cause.
        cause: io::Error,
    },
    /// A path in the archive points outside it.
    #[error("import: {0:?} points outside the archive")]
    Outside(String),
    /// Malformed JSON.
    #[error("import {path}: {cause}")]
    Json {
        /// Which file.
        path: PathBuf,
        /// Cause.
        cause: serde_json::Error,
    },
    /// An index entry names only a tag and no repository name was given.
    #[error("import: entry {0:?} has no repository name; pass a name (e.g. --name myrepo)")]
    NoName(String),
    /// Nothing to import.
    #[error("import: the archive contains no images")]
    Empty,
    /// A bad reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A manifest problem.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A store failure (includes digest mismatches).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Extracting the tar failed.
    #[error("import: extracting archive: {0}")]
    Extract(#[from] UnpackError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImportError {
    let path = path.to_path_buf();
    move |cause| ImportError::Io { path, cause }
}

/// Options for imports.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Repository name for entries that carry only a tag (`oci:DIR:tag` layouts).
    pub name: Option<String>,
}

/// Imports `path` (a directory or a tar file, optionally gzip/zstd compressed); returns the
/// references set.
pub fn import_path(
    store: &Store,
    path: &Path,
    opts: &ImportOptions,
) -> Result<Vec<String>, ImportError> {
    let _in_use = store.lock_in_use()?;
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        return import_dir(store, path, opts);
    }
    let tmp = store.tmp_path("import");
    let res = (|| {
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        let f = File::open(path).map_err(io_err(path))?;
        unpack::apply_layer(
            &tmp,
            io::BufReader::new(f),
            Compression::Sniff,
            UnpackOptions {
                preserve_owner: false,
                limits: TarLimits::DEFAULT,
            },
        )?;
        import_dir(store, &tmp, opts)
    })();
    let _ = fs::remove_dir_all(&tmp);
    res
}

fn import_dir(store: &Store, dir: &Path, opts: &ImportOptions) -> Result<Vec<String>, ImportError> {
    if dir.join("oci-layout").is_file() {
        import_oci(store, dir, opts)
    } else if dir.join("manifest.json").is_file() {
        import_docker(store, dir, opts)
    } else {
        Err(ImportError::UnknownFormat(dir.to_path_buf()))
    }
}

/// Opens `rel` under `base`, refusing anything that resolves outside `base`.
fn open_inside(base: &Path, rel: &str) -> Result<(File, PathBuf), ImportError> {
    let base_c = base.canonicalize().map_err(io_err(base))?;
    let p = base.join(rel);
    let pc = p.canonicalize().map_err(io_err(&p))?;
    if !pc.starts_with(&base_c) {
        return Err(ImportError::Outside(rel.to_string()));
    }
    Ok((File::open(&pc).map_err(io_err(&pc))?, pc))
}

fn read_json<T: for<'de> Deserialize<'de>>(base: &Path, rel: &str) -> Result<T, ImportError> {
    let (mut f, p) = open_inside(base, rel)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).map_err(io_err(&p))?;
    serde_json::from_slice(&v).map_err(|cause| ImportError::Json { path: p, cause })
}

fn copy_blob(store: &Store, dir: &Path, d: &Descriptor) -> Result<(), ImportError> {
    let (f, _) = open_inside(dir, &format!("blobs/sha256/{}", d.digest.hex()))?;
    store.put_blob(&d.digest, Some(d.size), io::BufReader::new(f))?;
    Ok(())
}

fn copy_image(store: &Store, dir: &Path, top: &Descriptor) -> Result<(), ImportError> {
    copy_blob(store, dir, top)?;
    let m = match AnyManifest::parse(&store.read_blob(&top.digest)?, None)? {
        AnyManifest::Image(m) => m,
        AnyManifest::Index(i) => {
            let d = i.select_linux_amd64()?.clone();
            copy_blob(store, dir, &d)?;
            store.read_manifest(&d.digest)?
        }
    };
    copy_blob(store, dir, &m.config)?;
    for l in &m.layers {
        copy_blob(store, dir, l)?;
    }
    Ok(())
}

fn name_for(raw: Option<&String>, opts: &ImportOptions) -> Result<ImageRef, ImportError> {
    match (raw, &opts.name) {
        (Some(r), _) if r.contains('/') || r.contains(':') || r.contains('@') => {
            Ok(ImageRef::parse(r)?)
        }
        (Some(tag), Some(name)) => Ok(ImageRef::parse(&format!("{name}:{tag}"))?),
        (None, Some(name)) => Ok(ImageRef::parse(name)?),
        (Some(tag), None) => Err(ImportError::NoName(tag.clone())),
        (None, None) => Err(ImportError::NoName(String::new())),
    }
}

fn import_oci(store: &Store, dir: &Path, opts: &ImportOptions) -> Result<Vec<String>, ImportError> {
    let index: Index = read_json(dir, "index.json")?;
    let mut out = Vec::new();
    for d in &index.manifests {
        let raw = d
            .annotations
            .get(ANNOTATION_NAME)
            .or_else(|| d.annotations.get(ANNOTATION_REF));
        let r = name_for(raw, opts)?;
        copy_image(store, dir, d)?;
        store.set_ref(&r, &d.digest)?;
        out.push(r.to_string());
    }
    if out.is_empty() {
        return Err(ImportError::Empty);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker(
    store: &Store,
    dir: &Path,
    opts: &ImportOptions,
) -> Result<Vec<String>, ImportError> {
    let entries: Vec<DockerEntry> = read_json(dir, "manifest.json")?;
    let mut out = Vec::new();
    for e in entries {
        let (mut cf, cp) = open_inside(dir, &e.config)?;
        let mut config = Vec::new();
        cf.read_to_end(&mut config).map_err(io_err(&cp))?;
        let config_d = store.put_blob_bytes(&config)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (f, p) = open_inside(dir, l)?;
            let mut head = [0u8; 4];
            let n = (&f).read(&mut head).map_err(io_err(&p))?;
            let media_type = if n >= 2 && head[..2] == [0x1f, 0x8b] {
                OCI_LAYER_GZIP
            } else if n == 4 && head == [0x28, 0xb5, 0x2f, 0xfd] {
                OCI_LAYER_ZSTD
            } else {
                OCI_LAYER_TAR
            };
            let mut hr =
                HashingReader::new(io::BufReader::new(File::open(&p).map_err(io_err(&p))?));
            io::copy(&mut hr, &mut io::sink()).map_err(io_err(&p))?;
            let (digest, size) = hr.finish();
            let f = File::open(&p).map_err(io_err(&p))?;
            store.put_blob(&digest, Some(size), io::BufReader::new(f))?;
            layers.push(desc(media_type, digest, size));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_string()),
            config: desc(OCI_CONFIG, config_d, config.len() as u64),
            layers,
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|cause| ImportError::Json {
            path: dir.join("manifest.json"),
            cause,
        })?;
        let md = store.put_blob_bytes(&bytes)?;
        let tags = e.repo_tags.unwrap_or_default();
        let names: Vec<ImageRef> = if tags.is_empty() {
            vec![name_for(None, opts)?]
        } else {
            tags.iter()
                .map(|t| ImageRef::parse(t))
                .collect::<Result<_, _>>()?
        };
        for r in names {
            store.set_ref(&r, &md)?;
            out.push(r.to_string());
        }
    }
    if out.is_empty() {
        return Err(ImportError::Empty);
    }
    Ok(out)
}

fn desc(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        platform: None,
        annotations: BTreeMap::new(),
    }
}
