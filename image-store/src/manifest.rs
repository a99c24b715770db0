//! OCI and Docker v2 manifest, index and image-config documents, and the runtime view of a config.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Media types accepted when fetching a manifest.
pub const ACCEPTED_MANIFESTS: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Errors about manifest documents.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The JSON does not parse as the expected document.
    #[error("malformed {what}: {cause}")]
    Malformed {
        /// Which document.
        what: &'static str,
        /// Parser error.
        cause: serde_json::Error,
    },
    /// An index has no linux/amd64 entry.
    #[error("image index has no linux/amd64 manifest (platforms: {0})")]
    NoPlatform(String),
    /// A manifest of a kind this store does not handle.
    #[error("unsupported manifest media type {0:?}")]
    Unsupported(String),
}

/// A content descriptor.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the target.
    pub media_type: String,
    /// Digest of the target.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An index entry's platform.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// CPU architecture (`amd64`).
    pub architecture: String,
    /// OS (`linux`).
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when the manifest states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An image index or Docker manifest list.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Entries.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A manifest document of either kind.
#[derive(Clone, Debug)]
pub enum AnyManifest {
    /// A single-platform image.
    Image(Manifest),
    /// A multi-platform index.
    Index(Index),
}

impl AnyManifest {
    /// Parses raw manifest bytes, using `media_type` when known, else the document itself.
    pub fn parse(bytes: &[u8], media_type: Option<&str>) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|cause| ManifestError::Malformed {
                what: "manifest",
                cause,
            })?;
        let mt = media_type.map(str::to_string).or(probe.media_type);
        let is_index = match mt.as_deref() {
            Some(OCI_INDEX) | Some(DOCKER_LIST) => true,
            Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
            Some(other) if other.contains("manifest.v1") => {
                return Err(ManifestError::Unsupported(other.to_string()))
            }
            _ => probe.manifests.is_some(),
        };
        if is_index {
            serde_json::from_slice(bytes)
                .map(AnyManifest::Index)
                .map_err(|cause| ManifestError::Malformed {
                    what: "image index",
                    cause,
                })
        } else {
            serde_json::from_slice(bytes)
                .map(AnyManifest::Image)
                .map_err(|cause| ManifestError::Malformed {
                    what: "image manifest",
                    cause,
                })
        }
    }
}

impl Index {
    /// The linux/amd64 entry (the platform peapod guests run).
    pub fn select_linux_amd64(&self) -> Result<&Descriptor, ManifestError> {
        self.manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .ok_or_else(|| {
                let names: Vec<String> = self
                    .manifests
                    .iter()
                    .map(|d| match &d.platform {
                        Some(p) => format!("{}/{}", p.os, p.architecture),
                        None => "unknown".to_string(),
                    })
                    .collect();
                ManifestError::NoPlatform(names.join(", "))
            })
    }
}

/// Layer compression, from the media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// Decide by the stream's magic bytes.
    Sniff,
}

impl Compression {
    /// Compression implied by a layer media type.
    pub fn from_media_type(mt: &str) -> Self {
        if mt.ends_with("+gzip")
            || mt.ends_with(".tar.gzip")
            || mt == "application/vnd.docker.image.rootfs.diff.tar.gzip"
        {
            Compression::Gzip
        } else if mt.ends_with("+zstd") || mt.ends_with(".zstd") {
            Compression::Zstd
        } else if mt.ends_with(".tar") {
            Compression::None
        } else {
            Compression::Sniff
        }
    }
}

/// The image config file (only the parts peapod uses are typed).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConfigFile {
    /// `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// The runtime defaults.
    #[serde(default)]
    pub config: Option<RawRunConfig>,
}

/// The `config` object of an image config, with Docker's capitalised field names.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawRunConfig {
    /// ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// ENV, `NAME=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// WORKDIR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// USER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// EXPOSE, keys like `80/tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

/// What the runtime plan needs from an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// ENTRYPOINT (empty when unset).
    pub entrypoint: Vec<String>,
    /// CMD (empty when unset).
    pub cmd: Vec<String>,
    /// ENV as `(name, value)` pairs in image order.
    pub env: Vec<(String, String)>,
    /// WORKDIR, `None` when unset (the runtime uses `/`).
    pub working_dir: Option<String>,
    /// USER, `None` when unset (root).
    pub user: Option<String>,
    /// EXPOSE entries such as `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
}

impl ImageConfig {
    /// Parses an image config blob.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let file: ConfigFile =
            serde_json::from_slice(bytes).map_err(|cause| ManifestError::Malformed {
                what: "image config",
                cause,
            })?;
        let raw = file.config.unwrap_or_default();
        Ok(Self {
            entrypoint: raw.entrypoint.unwrap_or_default(),
            cmd: raw.cmd.unwrap_or_default(),
            env: raw
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv, String::new()),
                })
                .collect(),
            working_dir: raw.working_dir.filter(|w| !w.is_empty()),
            user: raw.user.filter(|u| !u.is_empty()),
            exposed_ports: raw.exposed_ports.unwrap_or_default().into_keys().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_index() {
        let cfg = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/e"],"Cmd":["sh","-c","x"],
            "Env":["PATH=/bin","EMPTY=","A=b=c"],"WorkingDir":"/w","User":"1000:1000","ExposedPorts":{"80/tcp":{}}}}"#;
        let c = ImageConfig::from_json(cfg).unwrap();
        assert_eq!(c.entrypoint, vec!["/e"]);
        assert_eq!(c.cmd, vec!["sh", "-c", "x"]);
        assert_eq!(c.env[2], ("A".to_string(), "b=c".to_string()));
        assert_eq!(c.env[1], ("EMPTY".to_string(), String::new()));
        assert_eq!(c.working_dir.as_deref(), Some("/w"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.exposed_ports, vec!["80/tcp"]);
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":2,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d = Digest::of(b"x")
        );
        match AnyManifest::parse(idx.as_bytes(), None).unwrap() {
            AnyManifest::Index(i) => assert_eq!(i.select_linux_amd64().unwrap().size, 2),
            AnyManifest::Image(_) => panic!("expected an index"),
        }
        assert_eq!(
            Compression::from_media_type(OCI_LAYER_ZSTD),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Compression::Gzip
        );
    }
}
