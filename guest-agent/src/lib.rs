//! The pod's infra process: PID 1 in the guest, container runtime and agent server.
