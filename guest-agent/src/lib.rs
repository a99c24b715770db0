//! The pod's infra process: PID 1 in the guest, container runtime and agent server.
//!
//! The agent owns the pod's network and IPC namespaces (its own), starts each container in new
//! mount, UTS and PID namespaces with an overlay root and its own cgroup, supervises restarts,
//! captures logs and serves exec sessions over the `agent-protocol` streams. It keeps itself
//! out of the OOM killer's reach and gives containers the kubelet's `oom_score_adj`. In host
//! mode (`--listen-unix`) it first unshares a sandbox of its own; see `docs/guest-agent.md`.

pub mod cgroup;
pub mod container;
pub mod exec;
pub mod guestinfo;
pub mod init;
pub mod logs;
pub mod mounts;
pub mod net;
pub mod oom;
pub mod pod;
pub mod podfs;
pub mod process;
pub mod reaper;
pub mod restart;
pub mod run;
pub mod server;
pub mod status;
pub mod sys;
pub mod users;
