//! Pulls images from a registry with oci-client: anonymous, basic or bearer-token auth, plain
//! HTTP for loopback or `insecure` registries, manifest lists resolved to linux/amd64, every
//! blob verified before it becomes visible, bounded connect and read timeouts.

use crate::digest::{Digest, Hasher};
use crate::manifest::{AnyManifest, Descriptor, ManifestError, ACCEPTED_MANIFESTS};
use crate::progress::{Progress, ProgressMode};
use crate::reference::ImageRef;
use crate::store::{LockGuard, RefRecord, Store, StoreError};
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Errors while pulling.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry could not be reached or answered with an error.
    #[error("registry {registry}: {message}")]
    Registry {
        /// Registry host.
        registry: String,
        /// What went wrong (lower case, with the cause chain).
        message: String,
    },
    /// A manifest's bytes do not match the digest asked for.
    #[error("manifest digest mismatch from {registry}: expected {expected}, got {actual}")]
    ManifestDigest {
        /// Registry host.
        registry: String,
        /// Expected.
        expected: Digest,
        /// Received.
        actual: Digest,
    },
    /// A downloaded blob failed verification or storing.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A manifest problem.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Local file I/O while downloading.
    #[error("writing downloaded blob: {0}")]
    Io(#[from] std::io::Error),
}

/// Registry credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials (token servers may still hand out anonymous tokens).
    #[default]
    Anonymous,
    /// Username and password, sent as basic auth or exchanged for a bearer token.
    Basic {
        /// User.
        username: String,
        /// Password.
        password: String,
    },
}

/// How to reach registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Plain HTTP for every registry (loopback registries always use HTTP).
    pub insecure: bool,
    /// Credentials.
    pub credentials: Credentials,
    /// TCP connect timeout; an unreachable registry fails within it.
    pub connect_timeout: Duration,
    /// Timeout for one read of the response.
    pub read_timeout: Duration,
    /// Progress reporting.
    pub progress: ProgressMode,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            insecure: false,
            credentials: Credentials::Anonymous,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            progress: ProgressMode::Auto,
        }
    }
}

fn registry_err(r: &ImageRef, e: impl std::error::Error) -> PullError {
    let mut message = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    PullError::Registry {
        registry: r.registry().to_string(),
        message: message.to_lowercase(),
    }
}

async fn lock_async(store: &Store, kind: &str, d: &Digest) -> Result<LockGuard, StoreError> {
    loop {
        if let Some(g) = store.try_lock_digest(kind, d)? {
            return Ok(g);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn in_use_async(store: &Store) -> Result<LockGuard, StoreError> {
    loop {
        if let Some(g) = store.try_lock_in_use()? {
            return Ok(g);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A registry client for one pull session.
pub struct Puller<'a> {
    store: &'a Store,
    client: Client,
    auth: RegistryAuth,
    progress: Progress,
}

impl<'a> Puller<'a> {
    /// A client for `reference`'s registry.
    pub fn new(store: &'a Store, reference: &ImageRef, opts: &RegistryOptions) -> Self {
        let protocol = if opts.insecure || reference.is_loopback_registry() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(opts.connect_timeout),
            read_timeout: Some(opts.read_timeout),
            ..Default::default()
        });
        let auth = match &opts.credentials {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
        };
        Self {
            store,
            client,
            auth,
            progress: Progress::new(opts.progress),
        }
    }

    async fn fetch_manifest(
        &self,
        r: &ImageRef,
        expect: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest), PullError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(r.as_oci(), &self.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| registry_err(r, e))?;
        let actual = Digest::of(&bytes);
        if let Some(want) = expect {
            if &actual != want {
                return Err(PullError::ManifestDigest {
                    registry: r.registry().to_string(),
                    expected: want.clone(),
                    actual,
                });
            }
        }
        Ok((bytes.to_vec(), actual))
    }

    async fn fetch_blob(&self, r: &ImageRef, d: &Descriptor) -> Result<(), PullError> {
        let label = d.digest.short().to_string();
        if self.store.has_blob(&d.digest) {
            self.progress.note(&format!("{label}: already exists"));
            return Ok(());
        }
        let _g = lock_async(self.store, "blob", &d.digest).await?;
        if self.store.has_blob(&d.digest) {
            self.progress.note(&format!("{label}: already exists"));
            return Ok(());
        }
        let bar = self.progress.blob(&label, d.size);
        let tmp = self.store.tmp_path("blob");
        let res: Result<(), PullError> = async {
            let mut file =
                tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&tmp).await?);
            let digest_str = d.digest.to_string();
            let mut s = self
                .client
                .pull_blob_stream(r.as_oci(), digest_str.as_str())
                .await
                .map_err(|e| registry_err(r, e))?;
            let mut hasher = Hasher::default();
            while let Some(chunk) = s.stream.next().await {
                let chunk = chunk.map_err(|e| registry_err(r, e))?;
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
                bar.inc(chunk.len() as u64);
            }
            file.flush().await?;
            let n = hasher.len();
            let std_file = file.into_inner().into_std().await;
            self.store
                .commit_blob(&tmp, std_file, &d.digest, &hasher.finish(), Some(d.size), n)?;
            Ok(())
        }
        .await;
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
            bar.finish("failed");
        } else {
            bar.finish("done");
        }
        res
    }

    /// Pulls `reference` into the store and points the reference at it.
    pub async fn pull(&self, reference: &ImageRef) -> Result<RefRecord, PullError> {
        let _in_use = in_use_async(self.store).await?;
        self.progress.note(&format!("pulling {reference}"));
        let pinned = reference.digest();
        let (top_bytes, top) = self.fetch_manifest(reference, pinned.as_ref()).await?;
        let manifest = match AnyManifest::parse(&top_bytes, None)? {
            AnyManifest::Image(m) => m,
            AnyManifest::Index(i) => {
                let d = i.select_linux_amd64()?.clone();
                let (bytes, md) = self
                    .fetch_manifest(&reference.with_digest(&d.digest), Some(&d.digest))
                    .await?;
                let m = match AnyManifest::parse(&bytes, Some(&d.media_type))? {
                    AnyManifest::Image(m) => m,
                    AnyManifest::Index(_) => {
                        return Err(
                            ManifestError::Unsupported("nested image index".to_string()).into()
                        )
                    }
                };
                self.store.put_blob(&md, None, &bytes[..])?;
                m
            }
        };
        let blobs: Vec<&Descriptor> = std::iter::once(&manifest.config)
            .chain(manifest.layers.iter())
            .collect();
        let results =
            futures_util::future::join_all(blobs.iter().map(|d| self.fetch_blob(reference, d)))
                .await;
        for r in results {
            r?;
        }
        self.store.put_blob(&top, None, &top_bytes[..])?;
        let rec = self.store.set_ref(reference, &top)?;
        self.progress
            .note(&format!("{reference}: pulled {}", rec.digest));
        Ok(rec)
    }
}

/// Pulls `reference` with `opts` (convenience for [`Puller`]).
pub async fn pull(
    store: &Store,
    reference: &ImageRef,
    opts: &RegistryOptions,
) -> Result<RefRecord, PullError> {
    Puller::new(store, reference, opts).pull(reference).await
}
