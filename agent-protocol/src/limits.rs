//! Hard bounds of the protocol: every size a peer may send has a maximum.

/// Largest frame payload (bytes after the length prefix).
pub const MAX_FRAME_LEN: usize = 2 * 1024 * 1024;
/// Longest name (container, pod, env var name, reason, user).
pub const MAX_NAME: usize = 253;
/// Longest path.
pub const MAX_PATH: usize = 4096;
/// Longest single argument or env value.
pub const MAX_ARG: usize = 128 * 1024;
/// Most argv entries.
pub const MAX_ARGV: usize = 4096;
/// Most env entries.
pub const MAX_ENV: usize = 4096;
/// Most mounts per container.
pub const MAX_MOUNTS: usize = 64;
/// Most containers per pod (init + app).
pub const MAX_CONTAINERS: usize = 64;
/// Longest human-readable message.
pub const MAX_MESSAGE: usize = 4096;
/// Largest log record payload: longer lines are split into partial records.
pub const MAX_LOG_CHUNK: usize = 16 * 1024;
/// Most records in one log frame.
pub const MAX_LOG_RECORDS: usize = 1024;
/// Largest stdin/stdout/stderr data frame of an exec session.
pub const MAX_DATA: usize = 256 * 1024;
/// Most pod file systems (image roots and volumes).
pub const MAX_FILESYSTEMS: usize = 64;
/// Longest virtio-fs tag (the device's config field is 36 bytes).
pub const MAX_FS_TAG: usize = 36;
