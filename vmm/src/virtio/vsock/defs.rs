//! Constants of the virtio vsock device and its packet protocol (spec §5.10).

/// Index of the receive (device to driver) queue (spec §5.10.2).
pub const RXQ: usize = 0;
/// Index of the transmit (driver to device) queue.
pub const TXQ: usize = 1;
/// Index of the event queue.
pub const EVQ: usize = 2;
/// Number of virtqueues of the device.
pub const NUM_QUEUES: usize = 3;
/// Maximum size of each virtqueue.
pub const QUEUE_SIZE: u16 = 256;

/// The host's well-known CID (spec §5.10.4).
pub const HOST_CID: u64 = 2;
/// CIDs 0-2 are reserved; 0xFFFF_FFFF is `VMADDR_CID_ANY` (spec §5.10.4: only the low 32 bits of
/// `guest_cid` are used).
pub const MIN_GUEST_CID: u64 = 3;
/// First CID that is not a valid guest CID.
pub const MAX_GUEST_CID_EXCLUSIVE: u64 = 0xffff_ffff;

/// Stream socket type (spec §5.10.6).
pub const TYPE_STREAM: u16 = 1;

/// Packet operations (spec §5.10.6).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection reset (also the answer to anything for an unknown connection).
    pub const RST: u16 = 3;
    /// One or both directions shut down, see [`super::shutdown`].
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Unsolicited credit (buf_alloc / fwd_cnt) update.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Request for a credit update.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// Flags of a SHUTDOWN packet (spec §5.10.6.4).
pub mod shutdown {
    /// The sender will receive no more data.
    pub const RCV: u32 = 1;
    /// The sender will send no more data.
    pub const SEND: u32 = 2;
    /// Both directions.
    pub const BOTH: u32 = RCV | SEND;
}

/// Event queue event id: the transport was reset (spec §5.10.6.8), e.g. after migration.
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// Largest payload accepted in one packet (the Linux driver's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PKT_DATA: u32 = 64 * 1024;
