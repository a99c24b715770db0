//! Wire contract between the boot probe (guest `/init`) and the boot end-to-end test (host):
//! vsock ports, exact payloads and the console lines the probe prints.

pub mod console;

/// Host CID as seen from the guest (`VMADDR_CID_HOST`).
pub const HOST_CID: u32 = 2;
/// Guest → host: the probe connects to the host on this port (hybrid vsock: `<uds>_<port>`).
pub const GUEST_TO_HOST_PORT: u32 = 52000;
/// Host → guest: the probe listens on this port (hybrid vsock: `CONNECT <port>\n` on `<uds>`).
pub const HOST_TO_GUEST_PORT: u32 = 52001;

/// First message of the guest → host exchange, sent by the guest.
pub const GUEST_PING: &[u8] = b"peapod-boot-probe ping guest->host\n";
/// Reply of the host to [`GUEST_PING`].
pub const HOST_PONG: &[u8] = b"peapod-boot-probe pong host->guest\n";
/// First message of the host → guest exchange, sent by the host.
pub const HOST_PING: &[u8] = b"peapod-boot-probe ping host->guest\n";
/// Reply of the guest to [`HOST_PING`].
pub const GUEST_PONG: &[u8] = b"peapod-boot-probe pong guest->host\n";

/// Longest line either side accepts on a vsock connection.
pub const MAX_LINE: usize = 256;
