//! The built-in `busybox` image, built deterministically from Debian's `busybox-static`
//! `/bin/busybox` (no external tools): one gzip layer with every applet as a symlink to
//! `/bin/busybox`, a minimal `/etc/passwd` and `/etc/group`, `/tmp` (1777), `/root`, `/var`,
//! and a config with `Cmd ["sh"]` and a standard `PATH`.

use crate::digest::Digest;
use crate::manifest::{
    Descriptor, Index, Manifest, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
};
use crate::reference::ImageRef;
use crate::store::{RefRecord, Store, StoreError, ANNOTATION_NAME, ANNOTATION_REF};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The references the built-in image answers to.
pub const BUILTIN_REFS: [&str; 2] = [
    "docker.io/library/busybox:latest",
    "docker.io/library/busybox:1.36",
];
/// Where the busybox binary comes from unless `PEAPOD_BUSYBOX` says otherwise.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";
/// Applets the examples rely on; the build fails if the binary lacks one.
pub const REQUIRED_APPLETS: [&str; 12] = [
    "sh", "httpd", "wget", "nc", "sleep", "tail", "date", "echo", "ls", "cat", "ps", "mkdir",
];
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MTIME: u64 = 0;

/// Errors while building the built-in image.
#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    /// The binary is missing or unreadable.
    #[error(
        "built-in busybox image: cannot read {path} (install Debian's busybox-static): {cause}"
    )]
    Read {
        /// Which file.
        path: PathBuf,
        /// Cause.
        cause: io::Error,
    },
    /// The binary is dynamically linked (Debian's `busybox`, not `busybox-static`).
    #[error("built-in busybox image: {0} is not statically linked (install busybox-static)")]
    NotStatic(PathBuf),
    /// The applet list could not be obtained.
    #[error("built-in busybox image: `{0} --list-full` failed")]
    List(PathBuf),
    /// A required applet is missing.
    #[error("built-in busybox image: applet {0} missing from the busybox binary")]
    MissingApplet(&'static str),
    /// Writing failed.
    #[error("built-in busybox image: writing {path}: {cause}")]
    Write {
        /// Where.
        path: PathBuf,
        /// Cause.
        cause: io::Error,
    },
    /// Storing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A complete single-layer image in memory.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// The manifest descriptor.
    pub manifest: Descriptor,
    /// Manifest, config and layer blobs.
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

/// Whether `r` is one of the built-in references.
pub fn is_builtin(r: &ImageRef) -> bool {
    r.digest().is_none() && BUILTIN_REFS.contains(&r.to_string().as_str())
}

/// The busybox binary to use (`PEAPOD_BUSYBOX` or `/bin/busybox`).
pub fn busybox_path() -> PathBuf {
    std::env::var_os("PEAPOD_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BUSYBOX))
}

/// Whether an ELF image has no program interpreter (is static).
fn is_static_elf(bin: &[u8]) -> bool {
    let rd16 = |o: usize| {
        bin.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let rd64 = |o: usize| {
        bin.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 8]| u64::from_le_bytes(b) as usize)
    };
    if !bin.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (rd64(0x20), rd16(0x36), rd16(0x38)) else {
        return false;
    };
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        bin.get(o..o + 4).is_some_and(|t| t != 3u32.to_le_bytes()) // PT_INTERP = 3
    })
}

/// Builds the image from the busybox binary at `busybox`.
pub fn build(busybox: &Path) -> Result<BuiltImage, BusyboxError> {
    let bin = fs::read(busybox).map_err(|cause| BusyboxError::Read {
        path: busybox.to_path_buf(),
        cause,
    })?;
    if !is_static_elf(&bin) {
        return Err(BusyboxError::NotStatic(busybox.to_path_buf()));
    }
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|_| BusyboxError::List(busybox.to_path_buf()))?;
    if !out.status.success() {
        return Err(BusyboxError::List(busybox.to_path_buf()));
    }
    let applets: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != "bin/busybox" && !l.contains(".."))
        .collect();
    for a in REQUIRED_APPLETS {
        if !applets.iter().any(|p| p.rsplit('/').next() == Some(a)) {
            return Err(BusyboxError::MissingApplet(a));
        }
    }
    let layer_tar = layer_tar(&bin, &applets).map_err(|cause| BusyboxError::Write {
        path: PathBuf::from("layer"),
        cause,
    })?;
    let diff_id = Digest::of(&layer_tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer_tar)
        .and_then(|()| gz.flush())
        .map_err(|cause| BusyboxError::Write {
            path: PathBuf::from("layer"),
            cause,
        })?;
    let layer = gz.finish().map_err(|cause| BusyboxError::Write {
        path: PathBuf::from("layer"),
        cause,
    })?;
    let config = serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": [PATH_ENV], "Cmd": ["sh"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
        "history": [{ "created": "1970-01-01T00:00:00Z",
                      "created_by": "peapod built-in busybox image from busybox-static" }],
    });
    let config = config.to_string().into_bytes();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: desc(OCI_CONFIG, &config),
        layers: vec![desc(OCI_LAYER_GZIP, &layer)],
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| BusyboxError::Write {
        path: PathBuf::from("manifest"),
        cause: io::Error::other(e),
    })?;
    Ok(BuiltImage {
        manifest: desc(OCI_MANIFEST, &manifest_bytes),
        blobs: vec![
            (Digest::of(&manifest_bytes), manifest_bytes),
            (Digest::of(&config), config),
            (Digest::of(&layer), layer),
        ],
    })
}

fn desc(media_type: &str, data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: Digest::of(data),
        size: data.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

fn layer_tar(bin: &[u8], applets: &BTreeSet<String>) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h
    };
    let mut dirs: BTreeSet<String> = [
        "bin", "dev", "etc", "home", "proc", "root", "sbin", "sys", "tmp", "usr", "usr/bin",
        "usr/sbin", "var", "var/log", "var/run", "var/tmp", "var/www",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    for a in applets {
        let mut p = Path::new(a).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    for d in &dirs {
        let mode = match d.as_str() {
            "tmp" | "var/tmp" => 0o1777,
            "root" => 0o700,
            _ => 0o755,
        };
        let mut h = header(tar::EntryType::Directory, mode, 0);
        b.append_data(&mut h, format!("{d}/"), io::empty())?;
    }
    let files: [(&str, &[u8], u32); 4] = [
        ("bin/busybox", bin, 0o755),
        (
            "etc/group",
            b"root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\nwww-data:x:33:\nnogroup:x:65534:\n",
            0o644,
        ),
        (
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nbin:x:2:2:bin:/bin:/bin/false\nsys:x:3:3:sys:/dev:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
            0o644,
        ),
        ("etc/shadow", b"root:*:10933:0:99999:7:::\nnobody:*:10933:0:99999:7:::\n", 0o640),
    ];
    for (name, data, mode) in files {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        b.append_data(&mut h, name, data)?;
    }
    for a in applets {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, a, "/bin/busybox")?;
    }
    b.into_inner()
}

impl BuiltImage {
    /// Writes an OCI image layout to `out` tagged with both built-in references.
    pub fn write_layout(&self, out: &Path) -> Result<(), BusyboxError> {
        let w = |p: PathBuf, data: &[u8]| {
            fs::write(&p, data).map_err(|cause| BusyboxError::Write { path: p, cause })
        };
        let blobs = out.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(|cause| BusyboxError::Write {
            path: blobs.clone(),
            cause,
        })?;
        for (d, data) in &self.blobs {
            w(blobs.join(d.hex()), data)?;
        }
        w(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let manifests = BUILTIN_REFS
            .iter()
            .map(|r| {
                let mut d = self.manifest.clone();
                d.annotations
                    .insert(ANNOTATION_NAME.to_string(), r.to_string());
                let tag = r.rsplit(':').next().unwrap_or("latest");
                d.annotations
                    .insert(ANNOTATION_REF.to_string(), tag.to_string());
                d
            })
            .collect();
        let index = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests,
            annotations: BTreeMap::new(),
        };
        let data = serde_json::to_vec_pretty(&index).map_err(|e| BusyboxError::Write {
            path: out.join("index.json"),
            cause: io::Error::other(e),
        })?;
        w(out.join("index.json"), &data)
    }

    /// Stores the blobs and points `reference` at the manifest.
    pub fn import_as(
        &self,
        store: &Store,
        reference: &ImageRef,
    ) -> Result<RefRecord, BusyboxError> {
        let _in_use = store.lock_in_use()?;
        for (d, data) in &self.blobs {
            store.put_blob(d, Some(data.len() as u64), &data[..])?;
        }
        Ok(store.set_ref(reference, &self.manifest.digest)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_deterministically_with_applets() {
        let a = build(Path::new(DEFAULT_BUSYBOX)).unwrap();
        let b = build(Path::new(DEFAULT_BUSYBOX)).unwrap();
        assert_eq!(a.manifest.digest, b.manifest.digest);
        assert!(is_builtin(&ImageRef::parse("busybox").unwrap()));
        assert!(is_builtin(&ImageRef::parse("busybox:1.36").unwrap()));
        assert!(!is_builtin(&ImageRef::parse("busybox:1.35").unwrap()));
        assert!(!is_static_elf(b"\x7fELF\x02\x01garbage"));
        let dynamic = fs::read("/bin/ls").unwrap();
        assert!(!is_static_elf(&dynamic));
    }
}
