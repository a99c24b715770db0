//! One vsock stream connection between a guest port and a host Unix socket: its state machine
//! (spec §5.10.6.5-6), credit-based flow control in both directions (spec §5.10.6.3) and the
//! bounded buffer of guest data the host socket has not accepted yet.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use log::debug;
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{Bytes, VolatileMemoryError, VolatileSlice};

use super::defs::{op, shutdown, HOST_CID, MAX_PKT_DATA, TYPE_STREAM};
use super::stats;

/// Errors of one connection; any of them ends the connection with a RST.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The guest sent more data than the credit it was given (spec §5.10.6.3).
    #[error("guest overran its credit: {buffered} bytes buffered, {incoming} more, limit {limit}")]
    CreditOverrun {
        buffered: usize,
        incoming: usize,
        limit: u32,
    },
    /// Reading or writing the host socket failed.
    #[error("host socket i/o failed: {0}")]
    HostIo(#[source] std::io::Error),
    /// Accessing the packet buffer in guest memory failed.
    #[error("guest buffer access failed: {0}")]
    GuestMemory(#[source] VolatileMemoryError),
    /// The packet's operation is not valid in the connection's state.
    #[error("unexpected op {op} in state {state:?}")]
    UnexpectedOp { op: u16, state: ConnState },
    /// The packet carried an invalid header for the rx buffer.
    #[error("failed to write the packet header: {0}")]
    Header(String),
}

impl ConnError {
    /// The counter ([`super::stats`]) of connections reset for this reason.
    pub fn reset_counter(&self) -> usize {
        match self {
            ConnError::CreditOverrun { .. } => stats::RESET_CREDIT_OVERRUN,
            ConnError::HostIo(_) => stats::RESET_HOST_IO,
            ConnError::GuestMemory(_) => stats::RESET_GUEST_MEMORY,
            ConnError::UnexpectedOp { .. } => stats::RESET_UNEXPECTED_OP,
            ConnError::Header(_) => stats::RESET_HEADER,
        }
    }
}

/// Identifies a connection: the host-side port and the guest-side port (the guest CID is fixed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Port on the host side (CID 2): the guest's destination port, or the ephemeral port the
    /// device picked for a host-initiated connection.
    pub local_port: u32,
    /// Port on the guest side.
    pub peer_port: u32,
}

/// Connection states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated: a REQUEST is (to be) sent to the guest, waiting for its RESPONSE.
    LocalInit,
    /// Guest-initiated: the host socket is connected, a RESPONSE is to be sent to the guest.
    PeerInit,
    /// Data flows.
    Established,
    /// Being torn down: a RST is queued for the guest; the connection goes once it is sent.
    Killed,
}

/// Packets the connection wants to send to the guest, besides data.
mod pending {
    pub const RST: u8 = 1;
    pub const REQUEST: u8 = 2;
    pub const RESPONSE: u8 = 4;
    pub const SHUTDOWN: u8 = 8;
    pub const CREDIT_UPDATE: u8 = 16;
    pub const CREDIT_REQUEST: u8 = 32;
}

/// The fields of a vsock packet header (spec §5.10.6, `struct virtio_vsock_hdr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    /// The little-endian wire form.
    pub fn to_bytes(&self) -> [u8; PKT_HEADER_SIZE] {
        let mut b = [0u8; PKT_HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Parses the little-endian wire form.
    pub fn from_bytes(b: &[u8; PKT_HEADER_SIZE]) -> Self {
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |i: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[i..i + 4]);
            u32::from_le_bytes(a)
        };
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The header of a packet parsed from a tx chain.
    pub fn from_packet<B: BitmapSlice>(pkt: &VsockPacket<'_, B>) -> Self {
        Header {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
    }

    /// Writes this header into an rx packet.
    pub fn write_to<B: BitmapSlice>(&self, pkt: &mut VsockPacket<'_, B>) -> Result<(), ConnError> {
        pkt.set_header_from_raw(&self.to_bytes())
            .map_err(|e| ConnError::Header(e.to_string()))
    }
}

/// What handling a guest packet asks of the muxer.
#[derive(Debug, PartialEq, Eq)]
pub enum TxOutcome {
    /// Nothing beyond the connection's own state changes.
    Ok,
    /// The guest reset the connection: drop it without answering.
    Remove,
}

/// A vsock connection bridged to a host Unix stream socket.
#[derive(Debug)]
pub struct Connection {
    key: ConnKey,
    guest_cid: u64,
    stream: UnixStream,
    state: ConnState,
    pending: u8,
    shutdown_flags: u32,
    /// The host socket may have data (or EOF) to read.
    rx_ready: bool,
    /// The host socket returned EOF: the host sends no more.
    host_eof: bool,
    /// The host socket hung up or failed: nothing can be written to it any more.
    host_gone: bool,
    /// Write half of the host socket was shut down (the guest sends no more).
    host_write_shut: bool,
    /// SHUTDOWN flags received from the guest.
    guest_shutdown: u32,
    /// Our receive buffer size, advertised as `buf_alloc` (bounds `tx_buf`).
    buf_alloc: u32,
    /// Bytes of guest data written to the host socket.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    last_fwd_cnt_to_peer: Wrapping<u32>,
    /// Bytes of host data sent to the guest.
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    credit_requested: bool,
    /// Bytes for the host socket not accepted yet: first `handshake_len` bytes of the
    /// `OK <port>\n` line, then guest data (at most `buf_alloc` bytes).
    tx_buf: VecDeque<u8>,
    /// Bytes at the front of `tx_buf` that are the handshake, not guest data: they must not
    /// count in `fwd_cnt` (the guest would see credit for bytes it never sent).
    handshake_len: usize,
    /// When the connection is killed if still waiting (REQUEST unanswered, RST not received).
    deadline: Option<Instant>,
    /// The connection's epoll token.
    pub token: u64,
    /// The connection is in the muxer's rx work list.
    pub queued: bool,
}

impl Connection {
    /// A host-initiated connection: a REQUEST goes to the guest, which must answer by
    /// `deadline`.
    pub fn new_local(
        key: ConnKey,
        guest_cid: u64,
        stream: UnixStream,
        buf_alloc: u32,
        token: u64,
        deadline: Instant,
    ) -> Self {
        let mut c = Self::new(
            key,
            guest_cid,
            stream,
            buf_alloc,
            token,
            ConnState::LocalInit,
        );
        c.pending = pending::REQUEST;
        c.deadline = Some(deadline);
        c
    }

    /// A guest-initiated connection whose host socket is connected: a RESPONSE goes to the
    /// guest. `hdr` is the guest's REQUEST, carrying its initial credit.
    pub fn new_peer(
        key: ConnKey,
        guest_cid: u64,
        stream: UnixStream,
        buf_alloc: u32,
        token: u64,
        hdr: &Header,
    ) -> Self {
        let mut c = Self::new(
            key,
            guest_cid,
            stream,
            buf_alloc,
            token,
            ConnState::PeerInit,
        );
        c.pending = pending::RESPONSE;
        c.update_peer_credit(hdr);
        c
    }

    fn new(
        key: ConnKey,
        guest_cid: u64,
        stream: UnixStream,
        buf_alloc: u32,
        token: u64,
        state: ConnState,
    ) -> Self {
        Connection {
            key,
            guest_cid,
            stream,
            state,
            pending: 0,
            shutdown_flags: 0,
            rx_ready: false,
            host_eof: false,
            host_gone: false,
            host_write_shut: false,
            guest_shutdown: 0,
            buf_alloc,
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_to_peer: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            credit_requested: false,
            tx_buf: VecDeque::new(),
            handshake_len: 0,
            deadline: None,
            token,
            queued: false,
        }
    }

    /// The connection's ports.
    pub fn key(&self) -> ConnKey {
        self.key
    }

    /// The connection's state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// The host socket.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// When the connection must be killed if nothing happens.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Bytes of guest data buffered for the host socket.
    pub fn buffered(&self) -> usize {
        self.tx_buf.len()
    }

    /// Whether the connection was open both ways with nothing closing it: no shutdown from
    /// either side and no end of file or hang-up from the host. A guest RST then is not the end
    /// of an orderly close but a guest that lost the socket.
    pub fn fully_open(&self) -> bool {
        self.state == ConnState::Established
            && self.guest_shutdown == 0
            && !self.host_eof
            && !self.host_gone
            && !self.host_write_shut
            && self.pending & pending::SHUTDOWN == 0
    }

    /// Whether the connection is finished and can be dropped.
    pub fn is_done(&self) -> bool {
        self.state == ConnState::Killed && self.pending == 0
    }

    /// Whether the host socket must stay registered with epoll.
    pub fn wants_events(&self) -> bool {
        self.state != ConnState::Killed && !self.host_gone
    }

    /// Whether to poll the host socket for input.
    pub fn wants_read(&self) -> bool {
        self.state == ConnState::Established && !self.rx_ready && self.can_send_data()
    }

    /// Whether to poll the host socket for output.
    pub fn wants_write(&self) -> bool {
        !self.tx_buf.is_empty() && !self.host_gone && self.state != ConnState::Killed
    }

    fn can_send_data(&self) -> bool {
        !self.host_eof && self.guest_shutdown & shutdown::RCV == 0
    }

    /// Credit the guest has given us for host-to-guest data (spec §5.10.6.3:
    /// `buf_alloc - (rx_cnt - fwd_cnt)`); a bogus `fwd_cnt` from the guest gives no credit.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the connection has a packet for the guest.
    pub fn has_pending_rx(&self) -> bool {
        if self.pending != 0 {
            return true;
        }
        self.state == ConnState::Established
            && self.rx_ready
            && self.can_send_data()
            && (self.peer_credit() > 0 || !self.credit_requested)
    }

    /// Ends the connection with a RST to the guest; the host socket is closed for I/O.
    pub fn kill(&mut self) {
        if self.state == ConnState::Killed {
            return;
        }
        self.state = ConnState::Killed;
        self.pending = pending::RST;
        self.rx_ready = false;
        self.tx_buf = VecDeque::new();
        self.handshake_len = 0;
        self.deadline = None;
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The host socket became readable (or hit EOF).
    pub fn on_host_readable(&mut self) {
        if self.state == ConnState::Established {
            self.rx_ready = true;
        }
    }

    /// The host socket hung up or failed (EPOLLHUP / EPOLLERR): data still queued in it is read
    /// and forwarded, then the guest is told the host is gone.
    pub fn on_host_hangup(&mut self, now: Instant, timeout: std::time::Duration) {
        match self.state {
            // The guest was already told the host is gone (end of file seen on a hung-up
            // socket): nothing more to do.
            ConnState::Established if self.host_gone && self.host_eof => {}
            ConnState::Established => {
                self.host_gone = true;
                self.tx_buf = VecDeque::new();
                self.handshake_len = 0;
                if self.can_send_data() {
                    self.rx_ready = true;
                } else {
                    self.finish_host_input(now, timeout);
                }
            }
            ConnState::LocalInit | ConnState::PeerInit => self.kill(),
            ConnState::Killed => {}
        }
    }

    /// The host socket became writable: flushes buffered guest data.
    pub fn on_host_writable(&mut self) -> Result<(), ConnError> {
        self.flush_tx_buf()?;
        self.after_forward()
    }

    /// Applies the credit information every guest packet carries (spec §5.10.6.3).
    fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    /// Handles a packet the guest sent on this connection. `data` is the payload (RW only).
    pub fn handle_tx<B: BitmapSlice>(
        &mut self,
        hdr: &Header,
        data: Option<&VolatileSlice<'_, B>>,
    ) -> Result<TxOutcome, ConnError> {
        if hdr.op == op::RST {
            return Ok(TxOutcome::Remove);
        }
        if self.state == ConnState::Killed {
            // A RST is on its way; ignore everything else.
            return Ok(TxOutcome::Ok);
        }
        self.update_peer_credit(hdr);
        match (hdr.op, self.state) {
            (op::RESPONSE, ConnState::LocalInit) => {
                self.state = ConnState::Established;
                self.deadline = None;
                // The hybrid vsock handshake: tell the host which port it got.
                let ack = format!("OK {}\n", self.key.local_port);
                self.tx_buf.extend(ack.as_bytes());
                self.handshake_len = ack.len();
                self.flush_tx_buf()?;
            }
            (op::RW, ConnState::Established) => self.forward_to_host(hdr, data)?,
            (op::CREDIT_UPDATE, ConnState::Established) => {}
            (op::CREDIT_REQUEST, ConnState::Established) => self.pending |= pending::CREDIT_UPDATE,
            (op::SHUTDOWN, ConnState::Established) => {
                self.guest_shutdown |= hdr.flags & shutdown::BOTH;
                self.apply_guest_shutdown()?;
            }
            (op, state) => return Err(ConnError::UnexpectedOp { op, state }),
        }
        Ok(TxOutcome::Ok)
    }

    fn forward_to_host<B: BitmapSlice>(
        &mut self,
        hdr: &Header,
        data: Option<&VolatileSlice<'_, B>>,
    ) -> Result<(), ConnError> {
        let Some(data) = data else {
            return Ok(());
        };
        if self.guest_shutdown & shutdown::SEND != 0 || self.host_gone || self.host_write_shut {
            // Data after the guest said it would send no more, or to a host that is gone.
            return Err(ConnError::UnexpectedOp {
                op: hdr.op,
                state: self.state,
            });
        }
        let len = data.len();
        let mut written = 0;
        if self.tx_buf.is_empty() {
            match data.write_volatile_to(0, &mut &self.stream, len) {
                Ok(n) => written = n,
                Err(VolatileMemoryError::IOError(e)) if e.kind() == ErrorKind::WouldBlock => {}
                Err(VolatileMemoryError::IOError(e)) => return Err(ConnError::HostIo(e)),
                Err(e) => return Err(ConnError::GuestMemory(e)),
            }
        }
        let rest = len - written;
        if rest > 0 {
            // The guest may only have `buf_alloc` bytes in flight that we have not forwarded.
            let buffered = self.tx_buf.len() - self.handshake_len;
            if buffered + rest > self.buf_alloc as usize {
                return Err(ConnError::CreditOverrun {
                    buffered,
                    incoming: rest,
                    limit: self.buf_alloc,
                });
            }
            let mut chunk = vec![0u8; rest];
            data.read_slice(&mut chunk, written)
                .map_err(ConnError::GuestMemory)?;
            self.tx_buf.extend(chunk);
        }
        self.fwd_cnt += Wrapping(written as u32);
        self.after_forward()
    }

    /// Writes as much of `tx_buf` as the host socket takes.
    fn flush_tx_buf(&mut self) -> Result<(), ConnError> {
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match (&self.stream).write(front) {
                Ok(0) => break,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    let handshake = n.min(self.handshake_len);
                    self.handshake_len -= handshake;
                    self.fwd_cnt += Wrapping((n - handshake) as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::HostIo(e)),
            }
        }
        if self.tx_buf.is_empty() && self.tx_buf.capacity() > 4096 {
            // Give back memory a burst needed.
            self.tx_buf = VecDeque::new();
        }
        Ok(())
    }

    /// After guest data reached the host: shuts the host write half if the guest asked for it,
    /// and refreshes the guest's credit once enough was forwarded.
    fn after_forward(&mut self) -> Result<(), ConnError> {
        if self.tx_buf.is_empty() {
            self.apply_guest_shutdown()?;
        }
        let threshold = (self.buf_alloc / 4).max(1);
        if (self.fwd_cnt - self.last_fwd_cnt_to_peer).0 >= threshold {
            self.pending |= pending::CREDIT_UPDATE;
        }
        Ok(())
    }

    /// Acts on the SHUTDOWN flags the guest sent, once buffered data is flushed.
    fn apply_guest_shutdown(&mut self) -> Result<(), ConnError> {
        if self.state != ConnState::Established || !self.tx_buf.is_empty() {
            return Ok(());
        }
        if self.guest_shutdown & shutdown::SEND != 0 && !self.host_write_shut && !self.host_gone {
            self.host_write_shut = true;
            match self.stream.shutdown(Shutdown::Write) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => {}
                Err(e) => return Err(ConnError::HostIo(e)),
            }
        }
        // Both directions are finished: answer with the RST that completes the close
        // (spec §5.10.6.6: the peer sends RST once it has no more data to deliver).
        let guest_done = self.guest_shutdown == shutdown::BOTH
            || (self.guest_shutdown & shutdown::SEND != 0 && self.host_eof);
        if guest_done {
            debug!("vsock: {:?} closed by the guest", self.key);
            self.kill();
        }
        Ok(())
    }

    /// The host sends no more data: tells the guest with a SHUTDOWN, and if the host is gone
    /// entirely, expects the guest's RST before `timeout`.
    fn finish_host_input(&mut self, now: Instant, timeout: std::time::Duration) {
        self.host_eof = true;
        self.rx_ready = false;
        self.pending |= pending::SHUTDOWN;
        self.shutdown_flags = if self.host_gone {
            shutdown::BOTH
        } else {
            shutdown::SEND
        };
        if self.host_gone {
            self.deadline = Some(now + timeout);
        }
        if self.guest_shutdown & shutdown::SEND != 0 && self.tx_buf.is_empty() {
            self.kill();
        }
    }

    fn header(&mut self, op: u16) -> Header {
        // Every packet carries our credit, so a separate CREDIT_UPDATE is no longer needed.
        self.last_fwd_cnt_to_peer = self.fwd_cnt;
        self.pending &= !pending::CREDIT_UPDATE;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.key.local_port,
            dst_port: self.key.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Fills one rx buffer with the connection's next packet for the guest. Returns the number of
    /// bytes written (header and payload), or `None` if there was nothing to send, in which case
    /// [`Connection::has_pending_rx`] is false afterwards.
    pub fn fill_rx<B: BitmapSlice>(
        &mut self,
        pkt: &mut VsockPacket<'_, B>,
        now: Instant,
        timeout: std::time::Duration,
    ) -> Result<Option<u32>, ConnError> {
        let hdr_len = PKT_HEADER_SIZE as u32;
        let control = [
            (pending::RST, op::RST),
            (pending::REQUEST, op::REQUEST),
            (pending::RESPONSE, op::RESPONSE),
            (pending::CREDIT_UPDATE, op::CREDIT_UPDATE),
        ];
        for (bit, op) in control {
            if self.pending & bit != 0 {
                self.pending &= !bit;
                let h = self.header(op);
                h.write_to(pkt)?;
                match op {
                    op::RST => self.pending = 0,
                    op::RESPONSE => self.state = ConnState::Established,
                    _ => {}
                }
                return Ok(Some(hdr_len));
            }
        }
        if self.state == ConnState::Established && self.rx_ready && self.can_send_data() {
            if let Some(n) = self.fill_rw(pkt, now, timeout)? {
                return Ok(Some(n));
            }
        }
        if self.pending & pending::SHUTDOWN != 0 {
            self.pending &= !pending::SHUTDOWN;
            let mut h = self.header(op::SHUTDOWN);
            h.flags = self.shutdown_flags;
            h.write_to(pkt)?;
            return Ok(Some(hdr_len));
        }
        if self.pending & pending::CREDIT_REQUEST != 0 {
            self.pending &= !pending::CREDIT_REQUEST;
            self.credit_requested = true;
            self.header(op::CREDIT_REQUEST).write_to(pkt)?;
            return Ok(Some(hdr_len));
        }
        Ok(None)
    }

    /// Reads host data straight into the guest buffer, within the guest's credit.
    fn fill_rw<B: BitmapSlice>(
        &mut self,
        pkt: &mut VsockPacket<'_, B>,
        now: Instant,
        timeout: std::time::Duration,
    ) -> Result<Option<u32>, ConnError> {
        let credit = self.peer_credit();
        if credit == 0 {
            // Out of credit: ask for an update (once) and stop reading until it comes.
            if !self.credit_requested {
                self.pending |= pending::CREDIT_REQUEST;
            }
            return Ok(None);
        }
        let Some(data) = pkt.data_slice() else {
            // A buffer without room for data: use it for nothing but control packets.
            return Ok(None);
        };
        let max = (data.len() as u64)
            .min(u64::from(credit))
            .min(u64::from(MAX_PKT_DATA)) as usize;
        let n = match data.read_volatile_from(0, &mut &self.stream, max) {
            Ok(n) => n,
            Err(VolatileMemoryError::IOError(e)) if e.kind() == ErrorKind::WouldBlock => {
                self.rx_ready = false;
                if self.host_gone {
                    // Cannot happen on a hung-up socket, but never wait for an event that
                    // will not come.
                    self.finish_host_input(now, timeout);
                }
                return Ok(None);
            }
            Err(VolatileMemoryError::IOError(e)) => return Err(ConnError::HostIo(e)),
            Err(e) => return Err(ConnError::GuestMemory(e)),
        };
        if n == 0 {
            if !self.host_gone && host_hung_up(&self.stream) {
                // The host closed its socket, not just its sending side: tell the guest BOTH
                // now rather than SEND now and BOTH once the hang-up event is handled.
                self.host_gone = true;
                self.tx_buf = VecDeque::new();
                self.handshake_len = 0;
            }
            self.finish_host_input(now, timeout);
            return Ok(None);
        }
        let mut h = self.header(op::RW);
        h.len = n as u32;
        h.write_to(pkt)?;
        self.rx_cnt += Wrapping(n as u32);
        Ok(Some(PKT_HEADER_SIZE as u32 + n as u32))
    }
}

/// Whether the host closed its socket entirely (POLLHUP), as opposed to only shutting down its
/// sending side (end of file without POLLHUP).
fn host_hung_up(stream: &UnixStream) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

#[cfg(test)]
mod hangup_tests {
    use super::host_hung_up;
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;

    #[test]
    fn close_is_a_hang_up_but_half_close_is_not() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        assert!(!host_hung_up(&ours), "open peer");
        theirs.shutdown(Shutdown::Write).unwrap();
        assert!(!host_hung_up(&ours), "peer only stopped sending");
        drop(theirs);
        assert!(host_hung_up(&ours), "peer closed");
    }
}
