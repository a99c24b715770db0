//! Test harness: a real `docker-registry` on loopback, `skopeo` to populate it, and builders
//! for OCI image layouts made of generated layers.
#![allow(dead_code)]

use image_store::digest::Digest;
use image_store::manifest::{
    Descriptor, Index, Manifest, Platform, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn require(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "required test tool `{tool}` is missing: install Debian packages docker-registry and skopeo (scripts/setup.sh)"
    );
}

/// A running registry; killed on drop.
pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
    pub creds: Option<(String, String)>,
}

impl Registry {
    pub fn start(creds: Option<(&str, &str)>) -> Self {
        require("docker-registry");
        require("skopeo");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port, creds)
    }

    /// A registry whose `auth:` section is `auth_yaml` (already indented under `auth:`).
    pub fn start_with_auth(auth_yaml: &str, creds: (&str, &str)) -> Self {
        require("docker-registry");
        require("skopeo");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_inner(port, None, Some(auth_yaml), Some(creds))
    }

    pub fn start_on(port: u16, creds: Option<(&str, &str)>) -> Self {
        Self::start_inner(port, creds, None, creds)
    }

    fn start_inner(
        port: u16,
        htpasswd: Option<(&str, &str)>,
        auth_yaml: Option<&str>,
        creds: Option<(&str, &str)>,
    ) -> Self {
        require("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).unwrap();
        let mut auth = auth_yaml.map(|a| format!("auth:\n{a}")).unwrap_or_default();
        if let Some((u, p)) = htpasswd {
            let hash = bcrypt::hash(p, 5).unwrap();
            let htp = dir.path().join("htpasswd");
            fs::write(&htp, format!("{u}:{hash}\n")).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: peapod-test\n    path: {}\n",
                htp.display()
            );
        }
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            storage.display()
        );
        let cfg_path = dir.path().join("config.yml");
        fs::write(&cfg_path, cfg).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Self {
            port,
            dir,
            child,
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                if s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_ok() {
                    let mut buf = [0u8; 12];
                    if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/") {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not come up: {}",
                fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `skopeo copy` of `oci:LAYOUT:tag` to `HOST/repo:tag` (all platforms with `all`).
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str, all: bool) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if all {
            cmd.args(["--all", "--preserve-digests"]);
        }
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()));
        cmd.arg(format!("docker://{}/{repo_tag}", self.host()));
        let out = cmd.output().expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Path of a blob's data in the registry's storage.
    pub fn blob_data(&self, d: &Digest) -> PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&d.hex()[..2])
            .join(d.hex())
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tar layer builder.
pub struct LayerBuilder(tar::Builder<Vec<u8>>);

impl Default for LayerBuilder {
    fn default() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }
}

impl LayerBuilder {
    pub fn file(mut self, path: &str, data: &[u8]) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }
    pub fn dir(mut self, path: &str) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Directory);
        self.0.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }
    pub fn tar(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A tar holding one regular file whose header name is written raw (for `../` names).
pub fn raw_layer(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
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

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 1).unwrap()
}

fn desc(mt: &str, data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: mt.to_string(),
        digest: Digest::of(data),
        size: data.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

/// An OCI image layout being assembled in a directory.
pub struct Layout {
    pub dir: PathBuf,
    entries: Vec<Descriptor>,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Self {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        }
    }

    pub fn blob(&self, data: &[u8]) -> Digest {
        let d = Digest::of(data);
        fs::write(self.dir.join("blobs/sha256").join(d.hex()), data).unwrap();
        d
    }

    /// Adds an image; layers are (media type, blob bytes). Returns the manifest descriptor.
    pub fn image(&self, layers: &[(&str, Vec<u8>)], config: serde_json::Value) -> Descriptor {
        let config = config.to_string().into_bytes();
        self.blob(&config);
        let mut ls = Vec::new();
        for (mt, data) in layers {
            self.blob(data);
            ls.push(desc(mt, data));
        }
        let m = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_string()),
            config: desc(OCI_CONFIG, &config),
            layers: ls,
        };
        let bytes = serde_json::to_vec(&m).unwrap();
        self.blob(&bytes);
        desc(OCI_MANIFEST, &bytes)
    }

    /// Adds an index of (platform arch, manifest) entries.
    pub fn index(&self, entries: &[(&str, Descriptor)]) -> Descriptor {
        let idx = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: entries
                .iter()
                .map(|(arch, d)| {
                    let mut d = d.clone();
                    d.platform = Some(Platform {
                        architecture: arch.to_string(),
                        os: "linux".to_string(),
                        variant: None,
                    });
                    d
                })
                .collect(),
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&idx).unwrap();
        self.blob(&bytes);
        desc(OCI_INDEX, &bytes)
    }

    /// Tags `d` as `tag` in index.json (OCI `ref.name`).
    pub fn tag(&mut self, d: &Descriptor, tag: &str) {
        let mut d = d.clone();
        d.annotations.insert(
            "org.opencontainers.image.ref.name".to_string(),
            tag.to_string(),
        );
        self.entries.push(d);
        let idx = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: self.entries.clone(),
            annotations: BTreeMap::new(),
        };
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&idx).unwrap(),
        )
        .unwrap();
    }
}

pub fn config(cmd: &[&str]) -> serde_json::Value {
    serde_json::json!({"architecture":"amd64","os":"linux","config":{"Cmd":cmd,"Env":["PATH=/bin"]},
        "rootfs":{"type":"layers","diff_ids":[]}})
}

/// Relative paths of everything under `root`, sorted.
pub fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let p = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

pub fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}
