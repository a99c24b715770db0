//! The vsock device's connection table: the hybrid-vsock Unix socket plumbing (host-initiated
//! `CONNECT <port>` handshakes on the listening socket, guest-initiated connections to
//! `<uds_path>_<port>`), guest packet dispatch, deadlines, epoll interest and the queue of
//! packets waiting for guest rx buffers. Every collection here is bounded by [`VsockLimits`].

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use log::{debug, warn};
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileSlice;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{ConnError, ConnKey, Connection, Header, TxOutcome};
use super::defs::{op, HOST_CID, TYPE_STREAM};
use super::{stats, VsockLimits};
use crate::virtio::counters::Counters;

/// Longest `CONNECT <port>\n` line accepted from a host client.
const MAX_CONNECT_LINE: usize = 32;
/// First ephemeral host-side port for host-initiated connections (as Firecracker does).
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// First epoll token handed to sockets; lower values are the muxer's own fds.
pub const FIRST_SOCKET_TOKEN: u64 = 16;

/// Errors of the connection table's own plumbing (never caused by the guest).
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// An epoll operation on a socket failed.
    #[error("epoll operation on a vsock socket failed: {0}")]
    Epoll(#[source] io::Error),
}

/// What an epoll token stands for.
#[derive(Clone, Copy, Debug)]
enum Target {
    Conn(ConnKey),
    PendingHost,
}

/// A host client that connected to the listening socket and has not sent its
/// `CONNECT <port>\n` line yet.
#[derive(Debug)]
struct PendingHost {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

/// A packet waiting for a guest rx buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxItem {
    /// The connection has something to send.
    Conn(ConnKey),
    /// A RST for a packet that matched no connection.
    Rst(ConnKey),
}

/// Result of filling one rx buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// The buffer was used; this many bytes were written.
    Used(u32),
    /// Nothing was written; the buffer can be given back to the queue.
    Unused,
}

/// The connections of one vsock device.
pub struct ConnTable {
    guest_cid: u64,
    uds_path: PathBuf,
    limits: VsockLimits,
    listener: UnixListener,
    epoll: Epoll,
    conns: HashMap<ConnKey, Connection>,
    targets: HashMap<u64, Target>,
    registered: HashMap<u64, EventSet>,
    pending_host: HashMap<u64, PendingHost>,
    rx_work: VecDeque<RxItem>,
    queued_rsts: usize,
    next_token: u64,
    next_local_port: u32,
    counters: Arc<Counters>,
}

impl ConnTable {
    /// A table serving `listener` (bound at `uds_path`), with its sockets in `epoll`; what
    /// happens is counted in `counters` (names: [`stats::NAMES`]).
    pub fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        limits: VsockLimits,
        listener: UnixListener,
        epoll: Epoll,
        counters: Arc<Counters>,
    ) -> Self {
        ConnTable {
            guest_cid,
            uds_path,
            limits,
            listener,
            epoll,
            conns: HashMap::new(),
            targets: HashMap::new(),
            registered: HashMap::new(),
            pending_host: HashMap::new(),
            rx_work: VecDeque::new(),
            queued_rsts: 0,
            next_token: FIRST_SOCKET_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            counters,
        }
    }

    /// The table's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Resets connection `key` because of `e`: logged, counted by reason, and a RST queued for
    /// the guest (the host socket is shut down).
    fn reset(&mut self, key: ConnKey, e: &ConnError) {
        self.reset_for(key, e.reset_counter(), format_args!("{e}"));
    }

    fn reset_for(&mut self, key: ConnKey, counter: usize, why: std::fmt::Arguments<'_>) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        warn!(
            "vsock: connection {key:?} in state {:?}: {why}; resetting it",
            conn.state()
        );
        self.counters.inc(counter);
        conn.kill();
        self.mark(key);
    }

    /// The epoll instance the table's sockets are registered with.
    pub fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// The listening socket.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Gives the listening socket back (the worker is stopping); all connections close.
    pub fn into_listener(self) -> UnixListener {
        self.listener
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether there is no connection.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    fn new_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(FIRST_SOCKET_TOKEN);
        t
    }

    /// Dispatches one packet the guest sent on its tx queue.
    pub fn handle_guest_packet<B: BitmapSlice>(
        &mut self,
        hdr: &Header,
        data: Option<&VolatileSlice<'_, B>>,
    ) {
        // Spec §5.10.6.1: the guest may only send from its own CID; this device only serves the
        // host CID. Anything else is dropped without an answer.
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            warn!(
                "vsock: dropping packet from cid {} to cid {} (guest cid is {})",
                hdr.src_cid, hdr.dst_cid, self.guest_cid
            );
            self.counters.inc(stats::DROPPED_WRONG_CID);
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if hdr.type_ != TYPE_STREAM {
            // Spec §5.10.6.4: unknown socket types are answered with a RST.
            if hdr.op != op::RST {
                self.queue_rst(key);
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            match hdr.op {
                op::REQUEST => self.connect_to_host(key, hdr),
                op::RST => {}
                // Spec §5.10.6.5: a packet for no connection is answered with a RST.
                _ => self.queue_rst(key),
            }
            return;
        };
        match conn.handle_tx(hdr, data) {
            Ok(TxOutcome::Ok) => self.mark(key),
            Ok(TxOutcome::Remove) => {
                if conn.fully_open() {
                    warn!("vsock: connection {key:?} reset by the guest while open both ways");
                    self.counters.inc(stats::GUEST_RST_OPEN);
                } else {
                    debug!(
                        "vsock: connection {key:?} reset by the guest in state {:?}",
                        conn.state()
                    );
                }
                self.counters.inc(stats::GUEST_RST);
                self.remove_conn(key);
            }
            Err(e) => self.reset(key, &e),
        }
    }

    /// Queues a RST for a packet that has no connection; dropped beyond the limit (a guest
    /// flooding bogus packets gets fewer answers, and host memory stays bounded).
    fn queue_rst(&mut self, key: ConnKey) {
        if self.queued_rsts >= self.limits.max_queued_rsts {
            debug!("vsock: rst queue full, not answering {key:?}");
            self.counters.inc(stats::RST_QUEUE_FULL);
            return;
        }
        self.counters.inc(stats::RST_UNKNOWN);
        self.queued_rsts += 1;
        self.rx_work.push_back(RxItem::Rst(key));
    }

    /// A guest connection request to host port `key.local_port`: forwarded to a Unix socket
    /// connection to `<uds_path>_<port>` (the hybrid vsock scheme).
    fn connect_to_host(&mut self, key: ConnKey, hdr: &Header) {
        if self.conns.len() >= self.limits.max_connections {
            warn!("vsock: connection limit reached, refusing guest request {key:?}");
            self.counters.inc(stats::REFUSED_LIMIT);
            self.queue_rst(key);
            return;
        }
        let path = port_socket_path(&self.uds_path, key.local_port);
        match connect_nonblocking(&path) {
            Ok(stream) => {
                let token = self.new_token();
                let conn = Connection::new_peer(
                    key,
                    self.guest_cid,
                    stream,
                    self.limits.conn_buf_size,
                    token,
                    hdr,
                );
                self.conns.insert(key, conn);
                self.targets.insert(token, Target::Conn(key));
                self.counters.inc(stats::OPENED_BY_GUEST);
                self.mark(key);
            }
            Err(e) => {
                debug!("vsock: guest connect to {} failed: {e}", path.display());
                self.counters.inc(stats::GUEST_CONNECT_FAILED);
                self.queue_rst(key);
            }
        }
    }

    /// Accepts host clients on the listening socket.
    pub fn accept_host_conns(&mut self, now: Instant) {
        // Bounded per event so that a connect storm does not starve the queues.
        for _ in 0..64 {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("vsock: accept failed: {e}");
                    return;
                }
            };
            if self.pending_host.len() >= self.limits.max_pending_host
                || self.conns.len() >= self.limits.max_connections
            {
                warn!("vsock: too many host connections, closing a new one");
                self.counters.inc(stats::HOST_CLIENT_DROPPED);
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                warn!("vsock: set_nonblocking failed: {e}");
                continue;
            }
            let token = self.new_token();
            if let Err(e) = self.epoll_ctl(ControlOperation::Add, &stream, token, EventSet::IN) {
                warn!("vsock: {e}");
                continue;
            }
            self.registered.insert(token, EventSet::IN);
            self.targets.insert(token, Target::PendingHost);
            let deadline = now + self.limits.connect_timeout;
            self.pending_host.insert(
                token,
                PendingHost {
                    stream,
                    line: Vec::new(),
                    deadline,
                },
            );
        }
    }

    /// An epoll event on one of the table's sockets.
    pub fn handle_socket_event(&mut self, token: u64, events: EventSet, now: Instant) {
        match self.targets.get(&token).copied() {
            Some(Target::PendingHost) => self.read_connect_line(token, now),
            Some(Target::Conn(key)) => {
                let Some(conn) = self.conns.get_mut(&key) else {
                    return;
                };
                if events.contains(EventSet::IN) {
                    conn.on_host_readable();
                }
                let written = if events.contains(EventSet::OUT) {
                    conn.on_host_writable()
                } else {
                    Ok(())
                };
                if events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
                    conn.on_host_hangup(now, self.limits.connect_timeout);
                }
                match written {
                    Ok(()) => self.mark(key),
                    Err(e) => self.reset(key, &e),
                }
            }
            None => debug!("vsock: event for stale token {token}"),
        }
    }

    /// Reads the host client's `CONNECT <port>\n` line one byte at a time, so that no data sent
    /// after it is consumed here.
    fn read_connect_line(&mut self, token: u64, now: Instant) {
        let Some(p) = self.pending_host.get_mut(&token) else {
            return;
        };
        let complete = loop {
            let mut b = [0u8; 1];
            match (&p.stream).read(&mut b) {
                Ok(0) => break false,
                Ok(_) if b[0] == b'\n' => break true,
                Ok(_) => {
                    p.line.push(b[0]);
                    if p.line.len() > MAX_CONNECT_LINE {
                        break false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break false,
            }
        };
        let Some(p) = self.drop_pending_host(token) else {
            return;
        };
        let port = if complete {
            parse_connect_line(&p.line)
        } else {
            None
        };
        let Some(peer_port) = port else {
            debug!("vsock: host client sent no valid CONNECT line");
            self.counters.inc(stats::HOST_CLIENT_DROPPED);
            return;
        };
        if self.conns.len() >= self.limits.max_connections {
            warn!("vsock: connection limit reached, refusing host connect to port {peer_port}");
            self.counters.inc(stats::REFUSED_LIMIT);
            return;
        }
        let Some(local_port) = self.alloc_local_port(peer_port) else {
            warn!("vsock: no free host port for a connection to guest port {peer_port}");
            self.counters.inc(stats::REFUSED_LIMIT);
            return;
        };
        let key = ConnKey {
            local_port,
            peer_port,
        };
        let token = self.new_token();
        let deadline = now + self.limits.connect_timeout;
        let conn = Connection::new_local(
            key,
            self.guest_cid,
            p.stream,
            self.limits.conn_buf_size,
            token,
            deadline,
        );
        self.conns.insert(key, conn);
        self.targets.insert(token, Target::Conn(key));
        self.counters.inc(stats::OPENED_BY_HOST);
        self.mark(key);
    }

    fn drop_pending_host(&mut self, token: u64) -> Option<PendingHost> {
        let p = self.pending_host.remove(&token)?;
        self.targets.remove(&token);
        if self.registered.remove(&token).is_some() {
            let _ = self.epoll_ctl(
                ControlOperation::Delete,
                &p.stream,
                token,
                EventSet::empty(),
            );
        }
        Some(p)
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> Option<u32> {
        // At most `max_connections` ports are taken, so this ends quickly.
        for _ in 0..=self.limits.max_connections {
            let port = self.next_local_port;
            self.next_local_port = port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            let key = ConnKey {
                local_port: port,
                peer_port,
            };
            if !self.conns.contains_key(&key) {
                return Some(port);
            }
        }
        None
    }

    /// Re-files a connection after a change: dropped when finished, queued for the guest when
    /// it has a packet to send.
    fn mark(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.is_done() {
            self.remove_conn(key);
            return;
        }
        if !conn.queued && conn.has_pending_rx() {
            conn.queued = true;
            self.rx_work.push_back(RxItem::Conn(key));
        }
    }

    fn remove_conn(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        self.targets.remove(&conn.token);
        if self.registered.remove(&conn.token).is_some() {
            let _ = self.epoll_ctl(
                ControlOperation::Delete,
                conn.stream(),
                conn.token,
                EventSet::empty(),
            );
        }
        if conn.queued {
            self.rx_work.retain(|i| *i != RxItem::Conn(key));
        }
        debug!("vsock: connection {key:?} closed");
    }

    /// Kills connections and drops host clients whose deadline passed.
    pub fn expire_deadlines(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending_host
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            debug!("vsock: host client sent no CONNECT line in time");
            self.counters.inc(stats::HOST_CLIENT_DROPPED);
            self.drop_pending_host(token);
        }
        let expired: Vec<ConnKey> = self
            .conns
            .values()
            .filter(|c| c.deadline().is_some_and(|d| d <= now))
            .map(Connection::key)
            .collect();
        for key in expired {
            self.reset_for(
                key,
                stats::RESET_TIMEOUT,
                format_args!("the guest did not answer in time"),
            );
        }
    }

    /// The earliest deadline of any connection or host client.
    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self.conns.values().filter_map(Connection::deadline);
        let pending = self.pending_host.values().map(|p| p.deadline);
        conns.chain(pending).min()
    }

    /// Makes each connection's epoll registration match what it waits for.
    pub fn sync_interest(&mut self) {
        let mut changes = Vec::new();
        for conn in self.conns.values() {
            let wanted = if conn.wants_events() {
                let mut set = EventSet::empty();
                if conn.wants_read() {
                    set |= EventSet::IN;
                }
                if conn.wants_write() {
                    set |= EventSet::OUT;
                }
                Some(set)
            } else {
                None
            };
            let current = self.registered.get(&conn.token).copied();
            if wanted != current {
                changes.push((conn.key(), current, wanted));
            }
        }
        for (key, current, wanted) in changes {
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            let token = conn.token;
            let op = match (current, wanted) {
                (None, Some(_)) => ControlOperation::Add,
                (Some(_), Some(_)) => ControlOperation::Modify,
                (Some(_), None) => ControlOperation::Delete,
                (None, None) => continue,
            };
            let set = wanted.unwrap_or(EventSet::empty());
            let fd = conn.stream().as_raw_fd();
            let result = self
                .epoll
                .ctl(op, fd, EpollEvent::new(set, token))
                .map_err(TableError::Epoll);
            match result {
                Ok(()) => match wanted {
                    Some(set) => {
                        self.registered.insert(token, set);
                    }
                    None => {
                        self.registered.remove(&token);
                    }
                },
                Err(e) => {
                    self.registered.remove(&token);
                    self.reset_for(key, stats::RESET_EPOLL, format_args!("{e}"));
                }
            }
        }
    }

    fn epoll_ctl(
        &self,
        op: ControlOperation,
        fd: &impl AsRawFd,
        token: u64,
        set: EventSet,
    ) -> Result<(), TableError> {
        self.epoll
            .ctl(op, fd.as_raw_fd(), EpollEvent::new(set, token))
            .map_err(TableError::Epoll)
    }

    /// Whether a packet waits for a guest rx buffer. Stale entries at the front are dropped.
    pub fn has_rx_work(&mut self) -> bool {
        while let Some(item) = self.rx_work.front().copied() {
            let RxItem::Conn(key) = item else {
                return true;
            };
            match self.conns.get_mut(&key) {
                Some(c) if c.has_pending_rx() => return true,
                Some(c) => c.queued = false,
                None => {}
            }
            self.rx_work.pop_front();
        }
        false
    }

    /// Writes the first waiting packet into `pkt`.
    pub fn fill_rx<B: BitmapSlice>(&mut self, pkt: &mut VsockPacket<'_, B>, now: Instant) -> Fill {
        let Some(item) = self.rx_work.front().copied() else {
            return Fill::Unused;
        };
        match item {
            RxItem::Rst(key) => {
                self.rx_work.pop_front();
                self.queued_rsts = self.queued_rsts.saturating_sub(1);
                let hdr = Header {
                    src_cid: HOST_CID,
                    dst_cid: self.guest_cid,
                    src_port: key.local_port,
                    dst_port: key.peer_port,
                    type_: TYPE_STREAM,
                    op: op::RST,
                    ..Header::default()
                };
                match hdr.write_to(pkt) {
                    Ok(()) => Fill::Used(PKT_HEADER_SIZE as u32),
                    Err(e) => {
                        warn!("vsock: {e}");
                        Fill::Used(0)
                    }
                }
            }
            RxItem::Conn(key) => {
                let Some(conn) = self.conns.get_mut(&key) else {
                    self.rx_work.pop_front();
                    return Fill::Unused;
                };
                let result = conn.fill_rx(pkt, now, self.limits.connect_timeout);
                let fill = match result {
                    Ok(Some(n)) => Fill::Used(n),
                    // The connection had something to send but this buffer could not carry
                    // it (no room for data): the guest gets the buffer back empty.
                    Ok(None) if conn.has_pending_rx() => return Fill::Used(0),
                    Ok(None) => Fill::Unused,
                    Err(e) => {
                        self.reset(key, &e);
                        return Fill::Used(0);
                    }
                };
                self.rx_work.pop_front();
                conn.queued = false;
                // Round robin: a connection with more to send goes to the back.
                self.mark(key);
                fill
            }
        }
    }

    /// Drops every connection and host client (transport reset, spec §5.10.6.8): the guest
    /// resets its sockets itself when it gets the reset event.
    pub fn reset_all(&mut self) {
        self.counters.inc(stats::TRANSPORT_RESETS);
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove_conn(key);
        }
        let tokens: Vec<u64> = self.pending_host.keys().copied().collect();
        for token in tokens {
            self.drop_pending_host(token);
        }
        self.rx_work.clear();
        self.queued_rsts = 0;
    }
}

/// `<uds_path>_<port>`: where guest connections to host port `port` go.
pub fn port_socket_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut s = OsString::from(uds_path.as_os_str());
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// Parses `CONNECT <port>` (the trailing newline already removed).
fn parse_connect_line(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    line.strip_prefix("CONNECT ")?.trim().parse().ok()
}

/// Connects without blocking: a host listener whose backlog is full fails the connection
/// (EAGAIN) instead of stalling the device thread.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(fd.as_raw_fd(), &addr)?;
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_line_parsing() {
        assert_eq!(parse_connect_line(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect_line(b"CONNECT 4294967295"), Some(u32::MAX));
        assert_eq!(parse_connect_line(b"CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect_line(b"CONNECT 4294967296"), None);
        assert_eq!(parse_connect_line(b"CONNECT -1"), None);
        assert_eq!(parse_connect_line(b"connect 52"), None);
        assert_eq!(parse_connect_line(b"CONNECT"), None);
        assert_eq!(parse_connect_line(&[0xff, 0xfe]), None);
    }

    #[test]
    fn port_path() {
        assert_eq!(
            port_socket_path(Path::new("/run/pod/v.sock"), 1024),
            PathBuf::from("/run/pod/v.sock_1024")
        );
    }
}
