//! Image references normalised like Docker's (`busybox` → `docker.io/library/busybox:latest`).

use crate::digest::Digest;
use oci_client::Reference;
use std::fmt;
use std::str::FromStr;

/// Errors about image references.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid {
        /// What was given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
}

/// A normalised image reference: registry, repository, and a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parses and normalises `s`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let inner = Reference::from_str(s.trim()).map_err(|e| ReferenceError::Invalid {
            reference: s.to_string(),
            reason: e.to_string().to_lowercase(),
        })?;
        if let Some(d) = inner.digest() {
            d.parse::<Digest>().map_err(|e| ReferenceError::Invalid {
                reference: s.to_string(),
                reason: e.to_string(),
            })?;
        }
        Ok(Self { inner })
    }

    /// Registry host (with port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// Repository path, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<Digest> {
        self.inner.digest().and_then(|d| d.parse().ok())
    }

    /// The same repository pinned to `digest`.
    pub fn with_digest(&self, digest: &Digest) -> Self {
        Self {
            inner: Reference::with_digest(
                self.registry().to_string(),
                self.repository().to_string(),
                digest.to_string(),
            ),
        }
    }

    /// `registry/repository`, the name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The underlying oci-client reference.
    pub fn as_oci(&self) -> &Reference {
        &self.inner
    }

    /// Whether the registry host is loopback (`localhost`, `127.0.0.1`, `[::1]`), which is
    /// always reached over plain HTTP.
    pub fn is_loopback_registry(&self) -> bool {
        let reg = self.registry();
        let host = if let Some(rest) = reg.strip_prefix('[') {
            rest.split(']').next().unwrap_or(rest)
        } else {
            reg.split(':').next().unwrap_or(reg)
        };
        matches!(host, "localhost" | "127.0.0.1" | "::1")
    }
}

impl fmt::Display for ImageRef {
    /// The canonical key: `registry/repo@digest` when pinned, else `registry/repo:tag`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.inner.digest(), self.inner.tag()) {
            (Some(d), _) => write!(f, "{}@{}", self.name(), d),
            (None, Some(t)) => write!(f, "{}:{}", self.name(), t),
            (None, None) => write!(f, "{}:latest", self.name()),
        }
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("team/app:v1", "docker.io/team/app:v1"),
            ("127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b:latest"),
            ("localhost:5000/x:y", "localhost:5000/x:y"),
            (
                "registry.example:5000/team/app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "registry.example:5000/team/app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(ImageRef::parse(input).unwrap().to_string(), want, "{input}");
        }
        assert!(ImageRef::parse("UPPER/Case").is_err());
        assert!(ImageRef::parse("a@sha256:xyz").is_err());
        assert!(ImageRef::parse("localhost:5000/x")
            .unwrap()
            .is_loopback_registry());
        assert!(!ImageRef::parse("busybox").unwrap().is_loopback_registry());
    }
}
