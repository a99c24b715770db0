//! Typed, versioned, length-prefixed messages between the host and the guest agent.
//!
//! Every connection starts with a fixed preamble (magic + protocol version) in both directions,
//! then the host sends [`Message::Hello`] naming what the connection is for: the control
//! connection, one container's log stream, or one exec session. Frames are a big-endian `u32`
//! length followed by a `postcard` encoding of [`Message`]; see `docs/agent-protocol.md`.

pub mod client;
pub mod cri;
pub mod frame;
pub mod hybrid_vsock;
pub mod limits;
pub mod message;

pub use client::{ClientError, ControlClient, ExecEvent, ExecSession, LogStream};
pub use frame::{read_frame, read_preamble, write_frame, write_preamble, FrameError};
pub use message::*;

/// Protocol version; both ends must agree exactly.
pub const PROTOCOL_VERSION: u32 = 4;

/// Default vsock port of the agent.
pub const DEFAULT_VSOCK_PORT: u32 = 1024;
