//! Typed, versioned, length-prefixed messages between the host and the guest agent.
