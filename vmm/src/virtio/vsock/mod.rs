//! The virtio vsock device (spec §5.10) in user space, with Firecracker's hybrid vsock scheme:
//! the guest's vsock is bridged to Unix sockets on the host.
//!
//! - Host-initiated: a host process connects to the listening socket at `uds_path` and sends
//!   `CONNECT <port>\n`; the device opens a connection to guest port `<port>` and, once the guest
//!   accepts, answers `OK <host port>\n`; then the socket carries the stream.
//! - Guest-initiated: a guest connection to CID 2 (the host) port `P` is forwarded to a
//!   connection to the Unix socket `<uds_path>_P`.
//!
//! The device runs its own worker thread ([`muxer`]) once activated. See `docs/vsock.md`.

pub mod connection;
pub mod defs;
pub mod muxer;
pub mod stats;
pub mod table;

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vmm_sys_util::epoll::Epoll;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::defs::{MAX_GUEST_CID_EXCLUSIVE, MIN_GUEST_CID, NUM_QUEUES, QUEUE_SIZE};
use self::muxer::Muxer;
use self::table::ConnTable;
use super::counters::Counters;
use super::{
    ActivateError, Activation, DeviceParts, DeviceState, WorkerThread, TYPE_VSOCK,
    VIRTIO_F_VERSION_1,
};

/// Errors of the vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The guest CID is reserved or does not fit the 32 bits Linux uses.
    #[error("invalid guest cid {0}: must be in 3..4294967295")]
    InvalidCid(u64),
    /// Something that is not a socket is in the way of the listening socket.
    #[error("{0} exists and is not a unix socket")]
    PathInUse(PathBuf),
    /// Binding the listening socket failed.
    #[error("failed to bind the vsock unix socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Setting up an eventfd failed.
    #[error("failed to create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// Signalling the worker failed.
    #[error("failed to signal the vsock worker: {0}")]
    Signal(#[source] std::io::Error),
}

/// Bounds on what one vsock device may hold, whatever the guest or host clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsockLimits {
    /// Live connections (both directions); further requests get a RST.
    pub max_connections: usize,
    /// Receive buffer per connection, advertised to the guest as `buf_alloc`: the most guest
    /// data the device buffers for a host socket that does not read.
    pub conn_buf_size: u32,
    /// Host clients connected to the listening socket that have not sent `CONNECT` yet.
    pub max_pending_host: usize,
    /// RSTs for unknown connections waiting for an rx buffer; more are dropped.
    pub max_queued_rsts: usize,
    /// How long the guest has to answer a connection request, and to acknowledge a shutdown
    /// with a RST, before the device resets the connection; also how long a host client has to
    /// send its `CONNECT` line.
    pub connect_timeout: Duration,
}

impl Default for VsockLimits {
    fn default() -> Self {
        VsockLimits {
            max_connections: 256,
            conn_buf_size: 256 * 1024,
            max_pending_host: 32,
            max_queued_rsts: 256,
            // Firecracker uses 2 s; the emulated KVM test hosts run guests 10-50 times slower,
            // and 5 s was missed there once by a guest busy writing 1 GiB.
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// Asks a running vsock device for a transport reset: all connections are dropped and the guest
/// gets a `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` event (spec §5.10.6.8).
#[derive(Debug)]
pub struct VsockHandle {
    control_evt: EventFd,
}

impl VsockHandle {
    /// Requests the reset; it happens on the worker thread (if the device is active).
    pub fn reset_transport(&self) -> Result<(), VsockError> {
        self.control_evt.write(1).map_err(VsockError::Signal)
    }
}

/// The virtio vsock device.
pub struct Vsock {
    guest_cid: u64,
    uds_path: PathBuf,
    limits: VsockLimits,
    state: DeviceState,
    listener: Option<UnixListener>,
    control_evt: EventFd,
    worker: Option<WorkerThread<UnixListener>>,
    counters: Arc<Counters>,
}

impl Vsock {
    /// A device for guest CID `guest_cid`, listening for host clients at `uds_path`. A stale
    /// Unix socket at `uds_path` is replaced; any other file there is an error.
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Result<Self, VsockError> {
        Self::with_limits(guest_cid, uds_path, VsockLimits::default())
    }

    /// As [`Vsock::new`], with explicit bounds.
    pub fn with_limits(
        guest_cid: u64,
        uds_path: PathBuf,
        limits: VsockLimits,
    ) -> Result<Self, VsockError> {
        if !(MIN_GUEST_CID..MAX_GUEST_CID_EXCLUSIVE).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        let listener = bind_listener(&uds_path)?;
        let control_evt = EventFd::new(EFD_NONBLOCK).map_err(VsockError::EventFd)?;
        Ok(Vsock {
            guest_cid,
            uds_path,
            limits,
            // Spec §5.10.3: no feature bit set means stream sockets only. Spec §5.10.4:
            // `le64 guest_cid` is the whole config space.
            state: DeviceState::new(
                "vsock",
                TYPE_VSOCK,
                vec![QUEUE_SIZE; NUM_QUEUES],
                1 << VIRTIO_F_VERSION_1,
                guest_cid.to_le_bytes().to_vec(),
            ),
            listener: Some(listener),
            control_evt,
            worker: None,
            counters: Counters::new(format!("vsock-{guest_cid}"), stats::NAMES),
        })
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The listening socket's path.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// A handle to request transport resets.
    pub fn handle(&self) -> Result<VsockHandle, VsockError> {
        let control_evt = self.control_evt.try_clone().map_err(VsockError::EventFd)?;
        Ok(VsockHandle { control_evt })
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.stop();
        // Only remove the socket file if it is still ours.
        if self.listener.take().is_some() {
            let _ = std::fs::remove_file(&self.uds_path);
        }
    }
}

impl DeviceParts for Vsock {
    fn start(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let backend = |e: std::io::Error| ActivateError::Backend(e.to_string());
        let listener = match self.listener.take() {
            Some(l) => l,
            // The previous worker died without giving the socket back: bind it again.
            None => {
                bind_listener(&self.uds_path).map_err(|e| ActivateError::Backend(e.to_string()))?
            }
        };
        let setup = (|| Ok::<_, std::io::Error>((self.control_evt.try_clone()?, Epoll::new()?)))();
        let (control, epoll) = match setup {
            Ok(parts) => parts,
            Err(e) => {
                self.listener = Some(listener);
                return Err(backend(e));
            }
        };
        let table = ConnTable::new(
            self.guest_cid,
            self.uds_path.clone(),
            self.limits,
            listener,
            epoll,
            self.counters.clone(),
        );
        // If the thread cannot start, the listener is lost with the table; the next activation
        // binds the socket again.
        let worker = WorkerThread::spawn(format!("vsock-{}", self.guest_cid), move |kill_evt| {
            Muxer::new(
                activation.mem,
                activation.queues,
                activation.queue_evts,
                activation.interrupt,
                kill_evt,
                control,
                table,
            )
            .run()
        })
        .map_err(backend)?;
        self.worker = Some(worker);
        Ok(())
    }

    /// Stops the worker thread, if any, and keeps its listening socket for the next activation.
    fn stop(&mut self) {
        if let Some(listener) = self.worker.take().and_then(WorkerThread::stop) {
            self.listener = Some(listener);
        }
    }

    fn state(&self) -> &DeviceState {
        &self.state
    }

    fn counters(&self) -> Option<Arc<Counters>> {
        Some(self.counters.clone())
    }

    fn state_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }
}

/// Binds the listening socket, replacing a stale socket file.
fn bind_listener(path: &Path) -> Result<UnixListener, VsockError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => return Err(VsockError::PathInUse(path.to_path_buf())),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(source) => {
            return Err(VsockError::Bind {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let bind_err = |source| VsockError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    Ok(listener)
}

#[cfg(test)]
mod tests;
