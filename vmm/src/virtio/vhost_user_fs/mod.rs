//! The virtio file system device (spec §5.11) served by an external vhost-user back-end such as
//! virtiofsd: the VMM keeps the config space and the transport, the back-end gets guest memory
//! (the memfd, sent with SET_MEM_TABLE), the rings, the queue kick eventfds and a call eventfd
//! per queue. A thread of ours ([`notifier`]) turns the back-end's calls into MMIO interrupts.
//!
//! Built for the backend comparison of issue 6 (`docs/virtio-fs.md`); the in-process
//! [`crate::virtio::fs`] device is the default.

pub mod notifier;

use std::path::{Path, PathBuf};

use log::warn;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::notifier::Notifier;
use super::fs::{config_space, NUM_QUEUES, QUEUE_SIZE};
use super::{
    ActivateError, Activation, DeviceParts, DeviceState, TYPE_FS, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};

/// The virtio feature bits passed through from the back-end to the driver (when it offers
/// them): the ring features are implemented by the back-end, which owns the rings.
pub const PASSTHROUGH_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// Errors of the vhost-user-fs device.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserFsError {
    /// The tag is empty, longer than 36 bytes or contains a NUL byte.
    #[error("invalid tag {0:?}: must be 1-36 bytes without NUL")]
    InvalidTag(String),
    /// The back-end's socket could not be connected.
    #[error("cannot connect to the vhost-user socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: vhost::Error,
    },
    /// A vhost-user request failed.
    #[error("vhost-user {step} failed: {source}")]
    Request {
        step: &'static str,
        #[source]
        source: vhost::Error,
    },
    /// The back-end does not offer VIRTIO_F_VERSION_1.
    #[error("the back-end does not offer VIRTIO_F_VERSION_1 (features {0:#x})")]
    NoVersion1(u64),
    /// A guest memory region has no file behind it, so it cannot be shared.
    #[error("guest memory region at {0:#x} is not backed by a file (memfd)")]
    AnonymousMemory(u64),
    /// A ring address is outside guest memory.
    #[error("queue {queue}: ring address {addr:#x} is outside guest memory")]
    RingAddress { queue: usize, addr: u64 },
    /// Creating an eventfd failed.
    #[error("failed to create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// The notifier thread could not be started.
    #[error("failed to start the notifier thread: {0}")]
    Thread(#[source] std::io::Error),
}

fn request(step: &'static str) -> impl FnOnce(vhost::Error) -> VhostUserFsError {
    move |source| VhostUserFsError::Request { step, source }
}

/// The virtio-fs device backed by a vhost-user back-end.
pub struct VhostUserFs {
    tag: String,
    socket: PathBuf,
    frontend: Frontend,
    /// Whether VHOST_USER_F_PROTOCOL_FEATURES was negotiated (rings then start disabled and are
    /// enabled with SET_VRING_ENABLE).
    protocol_features: bool,
    state: DeviceState,
    notifier: Option<Notifier>,
}

impl VhostUserFs {
    /// Connects to the back-end listening on `socket` and runs the start of the handshake
    /// (SET_OWNER, GET_FEATURES, protocol features), so that a missing or unusable back-end
    /// fails at VMM start, not when the guest mounts.
    pub fn connect(tag: &str, socket: &Path) -> Result<Self, VhostUserFsError> {
        let config =
            config_space(tag).ok_or_else(|| VhostUserFsError::InvalidTag(tag.to_string()))?;
        let mut frontend = Frontend::connect(socket, NUM_QUEUES as u64).map_err(|source| {
            VhostUserFsError::Connect {
                path: socket.to_path_buf(),
                source,
            }
        })?;
        frontend.set_owner().map_err(request("SET_OWNER"))?;
        let backend_features = frontend.get_features().map_err(request("GET_FEATURES"))?;
        if backend_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(VhostUserFsError::NoVersion1(backend_features));
        }
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let protocol_features = backend_features & protocol_bit != 0;
        if protocol_features {
            let offered = frontend
                .get_protocol_features()
                .map_err(request("GET_PROTOCOL_FEATURES"))?;
            // Only MQ (GET_QUEUE_NUM); no REPLY_ACK, no back-end requests, no config space.
            frontend
                .set_protocol_features(offered & VhostUserProtocolFeatures::MQ)
                .map_err(request("SET_PROTOCOL_FEATURES"))?;
        }
        Ok(VhostUserFs {
            tag: tag.to_string(),
            socket: socket.to_path_buf(),
            frontend,
            protocol_features,
            state: DeviceState::new(
                format!("vhost-user-fs {tag}"),
                TYPE_FS,
                vec![QUEUE_SIZE; NUM_QUEUES],
                backend_features & PASSTHROUGH_FEATURES,
                config.to_vec(),
            ),
            notifier: None,
        })
    }

    /// The mount tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The back-end's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Hands memory, rings and eventfds to the back-end and starts the notifier.
    fn start_back_end(&mut self, activation: Activation) -> Result<(), VhostUserFsError> {
        let Activation {
            mem,
            interrupt,
            queues,
            queue_evts,
        } = activation;
        let mem = &mem;
        let mut features = self.state.acked_features();
        if self.protocol_features {
            features |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        self.frontend
            .set_features(features)
            .map_err(request("SET_FEATURES"))?;
        let regions = memory_regions(mem)?;
        self.frontend
            .set_mem_table(&regions)
            .map_err(request("SET_MEM_TABLE"))?;
        let mut calls = Vec::with_capacity(queues.len());
        for (i, (queue, kick)) in queues.iter().zip(&queue_evts).enumerate() {
            let call = EventFd::new(EFD_NONBLOCK).map_err(VhostUserFsError::EventFd)?;
            self.frontend
                .set_vring_num(i, queue.size())
                .map_err(request("SET_VRING_NUM"))?;
            self.frontend
                .set_vring_addr(i, &vring_config(mem, i, queue)?)
                .map_err(request("SET_VRING_ADDR"))?;
            self.frontend
                .set_vring_base(i, queue.next_avail())
                .map_err(request("SET_VRING_BASE"))?;
            self.frontend
                .set_vring_call(i, &call)
                .map_err(request("SET_VRING_CALL"))?;
            self.frontend
                .set_vring_kick(i, kick)
                .map_err(request("SET_VRING_KICK"))?;
            calls.push(call);
        }
        let notifier = Notifier::start(&self.tag, calls, interrupt)?;
        if self.protocol_features {
            for i in 0..queues.len() {
                if let Err(e) = self.frontend.set_vring_enable(i, true) {
                    notifier.stop(&self.tag);
                    return Err(request("SET_VRING_ENABLE")(e));
                }
            }
        }
        // The kick eventfds were sent to the back-end; our copies are no longer needed.
        drop(queue_evts);
        self.notifier = Some(notifier);
        Ok(())
    }
}

/// The SET_MEM_TABLE regions: each guest memory region with its file (the memfd) and offset.
pub fn memory_regions(
    mem: &GuestMemoryMmap,
) -> Result<Vec<VhostUserMemoryRegionInfo>, VhostUserFsError> {
    mem.iter()
        .map(|region| {
            VhostUserMemoryRegionInfo::from_guest_region(region).map_err(|_| {
                VhostUserFsError::AnonymousMemory(vm_memory::Address::raw_value(
                    &vm_memory::GuestMemoryRegion::start_addr(region),
                ))
            })
        })
        .collect()
}

/// The SET_VRING_ADDR payload of `queue`: vhost-user takes the rings' addresses in the
/// front-end's address space (the back-end translates them with the SET_MEM_TABLE regions).
pub fn vring_config(
    mem: &GuestMemoryMmap,
    index: usize,
    queue: &Queue,
) -> Result<VringConfigData, VhostUserFsError> {
    let host = |addr: u64| {
        mem.get_host_address(GuestAddress(addr))
            .map(|p| p as u64)
            .map_err(|_| VhostUserFsError::RingAddress { queue: index, addr })
    };
    Ok(VringConfigData {
        queue_max_size: queue.max_size(),
        queue_size: queue.size(),
        flags: 0,
        desc_table_addr: host(queue.desc_table())?,
        used_ring_addr: host(queue.used_ring())?,
        avail_ring_addr: host(queue.avail_ring())?,
        log_addr: None,
    })
}

impl Drop for VhostUserFs {
    fn drop(&mut self) {
        self.stop();
    }
}

impl DeviceParts for VhostUserFs {
    fn start(&mut self, activation: Activation) -> Result<(), ActivateError> {
        self.start_back_end(activation)
            .map_err(|e| ActivateError::Backend(e.to_string()))
    }

    /// Stops the rings in the back-end (GET_VRING_BASE, spec of vhost-user "Ring states") and
    /// the notifier thread.
    fn stop(&mut self) {
        let Some(notifier) = self.notifier.take() else {
            return;
        };
        for i in 0..NUM_QUEUES {
            if self.protocol_features {
                if let Err(e) = self.frontend.set_vring_enable(i, false) {
                    warn!("vhost-user-fs {}: SET_VRING_ENABLE {i} 0: {e}", self.tag);
                }
            }
            if let Err(e) = self.frontend.get_vring_base(i) {
                warn!("vhost-user-fs {}: GET_VRING_BASE {i}: {e}", self.tag);
            }
        }
        notifier.stop(&self.tag);
    }

    fn state(&self) -> &DeviceState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }
}

#[cfg(test)]
mod tests;
