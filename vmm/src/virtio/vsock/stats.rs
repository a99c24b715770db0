//! The vsock device's counters ([`crate::virtio::counters::Counters`]): packets and bytes each
//! way, what was dropped, and every connection the device reset, by reason. The SIGUSR1 state
//! dump prints them; a connection that dies under a live guest shows up here.

/// Packets the guest sent (tx queue).
pub const TX_PACKETS: usize = 0;
/// Payload bytes the guest sent.
pub const TX_BYTES: usize = 1;
/// Packets given to the guest (rx queue).
pub const RX_PACKETS: usize = 2;
/// Payload bytes given to the guest.
pub const RX_BYTES: usize = 3;
/// Tx descriptor chains that were not a valid packet.
pub const MALFORMED_TX: usize = 4;
/// Rx descriptor chains that could not carry a packet.
pub const MALFORMED_RX: usize = 5;
/// Packets dropped for a wrong source or destination CID.
pub const DROPPED_WRONG_CID: usize = 6;
/// RSTs sent for packets that matched no connection.
pub const RST_UNKNOWN: usize = 7;
/// RSTs for unknown connections not sent because the queue of them was full.
pub const RST_QUEUE_FULL: usize = 8;
/// Connection requests (either side) refused at the connection limit.
pub const REFUSED_LIMIT: usize = 9;
/// Guest connection requests whose host socket could not be connected.
pub const GUEST_CONNECT_FAILED: usize = 10;
/// Host clients closed without a connection (no valid `CONNECT` line, or no room).
pub const HOST_CLIENT_DROPPED: usize = 11;
/// Connections opened by the host (`CONNECT`) and by the guest (`OP_REQUEST`).
pub const OPENED_BY_HOST: usize = 12;
/// See [`OPENED_BY_HOST`].
pub const OPENED_BY_GUEST: usize = 13;
/// Connections that ended with a RST from the guest.
pub const GUEST_RST: usize = 14;
/// Connections the device reset because the guest overran its credit.
pub const RESET_CREDIT_OVERRUN: usize = 15;
/// ... because reading or writing the host socket failed.
pub const RESET_HOST_IO: usize = 16;
/// ... because guest memory could not be accessed.
pub const RESET_GUEST_MEMORY: usize = 17;
/// ... because the guest sent an operation its state does not allow.
pub const RESET_UNEXPECTED_OP: usize = 18;
/// ... because a header could not be written.
pub const RESET_HEADER: usize = 19;
/// ... because the guest did not answer a request or a shutdown in time.
pub const RESET_TIMEOUT: usize = 20;
/// ... because the socket's epoll registration failed.
pub const RESET_EPOLL: usize = 21;
/// Transport resets (every connection dropped, the guest told).
pub const TRANSPORT_RESETS: usize = 22;
/// Connections the guest reset while they were open both ways (no shutdown from either side):
/// not an orderly close, the guest lost the socket.
pub const GUEST_RST_OPEN: usize = 23;

/// The names, in index order, as the state dump prints them.
pub const NAMES: &[&str] = &[
    "tx_packets",
    "tx_bytes",
    "rx_packets",
    "rx_bytes",
    "malformed_tx",
    "malformed_rx",
    "dropped_wrong_cid",
    "rst_unknown",
    "rst_queue_full",
    "refused_limit",
    "guest_connect_failed",
    "host_client_dropped",
    "opened_by_host",
    "opened_by_guest",
    "guest_rst",
    "reset_credit_overrun",
    "reset_host_io",
    "reset_guest_memory",
    "reset_unexpected_op",
    "reset_header",
    "reset_timeout",
    "reset_epoll",
    "transport_resets",
    "guest_rst_open",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_indices() {
        assert_eq!(NAMES.len(), GUEST_RST_OPEN + 1);
        assert_eq!(NAMES[GUEST_RST_OPEN], "guest_rst_open");
        assert_eq!(NAMES[RESET_TIMEOUT], "reset_timeout");
        assert_eq!(NAMES[GUEST_RST], "guest_rst");
        assert_eq!(NAMES[OPENED_BY_GUEST], "opened_by_guest");
    }
}
