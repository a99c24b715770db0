//! Content-addressed OCI image store: import, pull, unpack and image configs.

pub mod digest;
pub mod manifest;
pub mod reference;
pub mod store;
pub mod tar_limits;
pub mod unpack;

pub use digest::Digest;
pub use manifest::ImageConfig;
pub use reference::ImageRef;
pub use store::{GcReport, ImageHandle, ImageInfo, RefRecord, Store, StoreError};
pub mod busybox;
pub mod import;
pub mod policy;
pub mod progress;
pub mod pull;

pub use policy::{ensure_image, EnsureError, EnsureOptions, Outcome, PullPolicy};
pub use pull::{Credentials, RegistryOptions};
