//! `imagePullPolicy` (Always, IfNotPresent, Never) with Kubernetes' default rule, and the
//! built-in busybox image that satisfies `busybox:latest` / `busybox:1.36` without a registry.
//!
//! Built-in rule: for `docker.io/library/busybox:latest` and `:1.36` (by tag, not digest),
//! when the built-in image is enabled, the image is a local import that satisfies every policy
//! — Always included — without contacting any registry: it is imported from `/bin/busybox`
//! on first use and reused afterwards. `peapod pull busybox` still goes to the registry.
//! Disable with [`EnsureOptions::builtin`] = false (CLI: `PEAPOD_BUILTIN_BUSYBOX=0`), after
//! which busybox is an ordinary reference.

use crate::busybox::{self, BusyboxError};
use crate::pull::{self, PullError, RegistryOptions};
use crate::reference::{ImageRef, ReferenceError};
use crate::store::{ImageHandle, Store, StoreError};
use std::str::FromStr;

/// Errors of `ensure_image`, named like the kubelet's waiting reasons.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    /// The reference does not parse.
    #[error("InvalidImageName: {0}")]
    InvalidImageName(#[from] ReferenceError),
    /// Pulling failed.
    #[error("ErrImagePull: failed to pull image {reference:?}: {cause}")]
    ErrImagePull {
        /// The reference.
        reference: String,
        /// Cause (names the registry).
        cause: PullError,
    },
    /// Policy Never and the image is absent.
    #[error("ErrImageNeverPull: container image {0:?} is not present with pull policy of Never")]
    ErrImageNeverPull(String),
    /// Building the built-in image failed.
    #[error("ErrImagePull: {0}")]
    Builtin(#[from] BusyboxError),
    /// The store failed (including unpacking).
    #[error("CreateContainerError: {0}")]
    Store(#[from] StoreError),
}

/// `imagePullPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always contact the registry (a stored digest reference is not re-pulled).
    Always,
    /// Pull only when absent.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// Kubernetes' default: Always for `:latest` or no tag, IfNotPresent otherwise
    /// (a digest reference with no tag is IfNotPresent).
    pub fn default_for(r: &ImageRef, raw: &str) -> Self {
        let raw_has_tag = {
            let last = raw.rsplit('/').next().unwrap_or(raw);
            last.split('@').next().is_some_and(|n| n.contains(':'))
        };
        if r.digest().is_some() && !raw_has_tag {
            return PullPolicy::IfNotPresent;
        }
        match r.tag() {
            None | Some("latest") => PullPolicy::Always,
            Some(_) => PullPolicy::IfNotPresent,
        }
    }
}

impl FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Always" => Ok(Self::Always),
            "IfNotPresent" => Ok(Self::IfNotPresent),
            "Never" => Ok(Self::Never),
            other => Err(format!(
                "unsupported imagePullPolicy {other:?}: expected Always, IfNotPresent or Never"
            )),
        }
    }
}

/// Options for [`ensure_image`].
#[derive(Clone, Debug)]
pub struct EnsureOptions {
    /// Registry access.
    pub registry: RegistryOptions,
    /// Whether the built-in busybox answers `busybox:latest` / `busybox:1.36`.
    pub builtin: bool,
}

impl Default for EnsureOptions {
    fn default() -> Self {
        Self {
            registry: RegistryOptions::default(),
            builtin: std::env::var("PEAPOD_BUILTIN_BUSYBOX").map_or(true, |v| v != "0"),
        }
    }
}

/// What [`ensure_image`] did, for pod events (`Pulling`, `Pulled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Already present; no registry contact.
    Present,
    /// Pulled from the registry.
    Pulled,
    /// Imported from the built-in busybox.
    Builtin,
}

/// [`Store::image`] (which may unpack for seconds) without stalling other tasks on a
/// multi-threaded runtime.
fn image_blocking(store: &Store, r: &ImageRef) -> Result<ImageHandle, StoreError> {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi {
        tokio::task::block_in_place(|| store.image(r))
    } else {
        store.image(r)
    }
}

/// Makes `reference` available according to `policy` (`None` = Kubernetes' default) and
/// returns the unpacked image.
pub async fn ensure_image(
    store: &Store,
    reference: &str,
    policy: Option<PullPolicy>,
    opts: &EnsureOptions,
) -> Result<(ImageHandle, Outcome), EnsureError> {
    let r = ImageRef::parse(reference)?;
    let policy = policy.unwrap_or_else(|| PullPolicy::default_for(&r, reference));
    let present = store.lookup(&r)?.is_some();
    if opts.builtin && busybox::is_builtin(&r) {
        if present {
            return Ok((image_blocking(store, &r)?, Outcome::Present));
        }
        let img = busybox::build(&busybox::busybox_path())?;
        img.import_as(store, &r)?;
        return Ok((image_blocking(store, &r)?, Outcome::Builtin));
    }
    let pull_needed = match policy {
        PullPolicy::Never if !present => return Err(EnsureError::ErrImageNeverPull(r.to_string())),
        PullPolicy::Never | PullPolicy::IfNotPresent => !present,
        // Content addressed: a stored digest reference cannot be out of date.
        PullPolicy::Always => !(present && r.digest().is_some()),
    };
    if pull_needed {
        pull::pull(store, &r, &opts.registry)
            .await
            .map_err(|cause| EnsureError::ErrImagePull {
                reference: r.to_string(),
                cause,
            })?;
        return Ok((image_blocking(store, &r)?, Outcome::Pulled));
    }
    Ok((image_blocking(store, &r)?, Outcome::Present))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_rule() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        for (raw, want) in [
            ("busybox", PullPolicy::Always),
            ("busybox:latest", PullPolicy::Always),
            ("busybox:1.36", PullPolicy::IfNotPresent),
            ("localhost:5000/a", PullPolicy::Always),
            ("localhost:5000/a:v2", PullPolicy::IfNotPresent),
        ] {
            assert_eq!(
                PullPolicy::default_for(&ImageRef::parse(raw).unwrap(), raw),
                want,
                "{raw}"
            );
        }
        let raw = format!("localhost:5000/a@{d}");
        assert_eq!(
            PullPolicy::default_for(&ImageRef::parse(&raw).unwrap(), &raw),
            PullPolicy::IfNotPresent
        );
        assert!("Sometimes".parse::<PullPolicy>().is_err());
    }
}
