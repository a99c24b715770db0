//! Kubernetes container semantics shared by the host and the guest agent, so both sides agree
//! byte for byte: `$(VAR)` expansion, the command/args/ENTRYPOINT/CMD table, restart back-off.

pub mod backoff;
pub mod command;
pub mod env;
