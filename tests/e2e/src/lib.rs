//! Host-side harness shared by the microVM end-to-end tests (`boot-e2e` here, `agent-vm-e2e`
//! in `tests/agent-vm`): the `peapod-vmm` child process and the VMM's hybrid vsock.

pub use agent_protocol::hybrid_vsock;
pub mod vmm_process;
