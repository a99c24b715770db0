//! Connecting to the guest agent through the VMM's hybrid vsock socket.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use agent_protocol::hybrid_vsock::{connect_guest, HybridVsockError};
use agent_protocol::{ClientError, ControlClient, LogStream, LogsRequest, DEFAULT_VSOCK_PORT};

/// Errors of agent connections.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent did not answer before the deadline.
    #[error("the guest agent did not answer within {secs} s (last attempt: {last})")]
    Timeout {
        /// Seconds waited.
        secs: u64,
        /// The last connection error.
        last: String,
    },
    /// Waiting was abandoned (the VM exited).
    #[error("{0}")]
    Aborted(String),
    /// The hybrid vsock handshake failed.
    #[error(transparent)]
    Vsock(#[from] HybridVsockError),
    /// The agent protocol failed.
    #[error("agent: {0}")]
    Client(#[from] ClientError),
    /// Socket options could not be set.
    #[error("agent socket: {0}")]
    Io(#[from] std::io::Error),
}

impl AgentError {
    /// Whether connecting failed because the VMM's socket is gone or closed (the VMM removes it
    /// when it exits; after a SIGKILL nothing accepts on it): the VM stopped, and trying again
    /// cannot help.
    pub fn vmm_gone(&self) -> bool {
        matches!(
            self,
            AgentError::Vsock(HybridVsockError::Connect { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                )
        )
    }
}

/// The way to the agent of one pod.
#[derive(Debug, Clone)]
pub struct AgentAddr {
    /// The VMM's hybrid vsock socket.
    pub uds: PathBuf,
    /// Guest port of the agent.
    pub port: u32,
}

/// How many times a log stream connection is tried.
pub const CONNECT_ATTEMPTS: u32 = 3;

/// How long one request may take before the host gives up on the agent.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl AgentAddr {
    /// The agent behind `uds` on the default port.
    pub fn new(uds: &Path) -> Self {
        Self {
            uds: uds.to_path_buf(),
            port: DEFAULT_VSOCK_PORT,
        }
    }

    /// One connection with `io_timeout` on reads and writes (`None`: no timeout).
    pub fn connect(&self, io_timeout: Option<Duration>) -> Result<UnixStream, AgentError> {
        let s = connect_guest(&self.uds, self.port, REQUEST_TIMEOUT)?;
        s.set_read_timeout(io_timeout)?;
        s.set_write_timeout(io_timeout)?;
        Ok(s)
    }

    /// A control connection whose requests may take up to `io_timeout`.
    pub fn control(&self, io_timeout: Duration) -> Result<ControlClient<UnixStream>, AgentError> {
        Ok(ControlClient::new(self.connect(Some(io_timeout))?)?)
    }

    /// A control connection whose `CONNECT` and handshake must finish within `handshake` (an
    /// agent that stopped answering is found out quickly), and whose requests may then take up
    /// to `io_timeout`.
    pub fn control_within(
        &self,
        handshake: Duration,
        io_timeout: Duration,
    ) -> Result<ControlClient<UnixStream>, AgentError> {
        let s = connect_guest(&self.uds, self.port, handshake)?;
        let client = ControlClient::new(s)?;
        client.get_ref().set_read_timeout(Some(io_timeout))?;
        client.get_ref().set_write_timeout(Some(io_timeout))?;
        Ok(client)
    }

    /// A log stream (no read timeout: a quiet container is not an error). The connection is
    /// tried [`CONNECT_ATTEMPTS`] times: a guest slowed down by a busy container may miss the
    /// VMM's connection deadline, and a lost stream would lose log lines.
    pub fn logs(&self, req: LogsRequest) -> Result<LogStream<UnixStream>, AgentError> {
        let mut attempt = 1;
        loop {
            let r = self.connect(None).and_then(|s| {
                s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
                Ok(LogStream::new(s, req.clone())?)
            });
            match r {
                Ok(l) => return Ok(l),
                Err(AgentError::Vsock(_)) if attempt < CONNECT_ATTEMPTS => {
                    attempt += 1;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until the agent answers a ping: retries every 20 ms until `timeout`, asking
    /// `alive` between attempts (an `Err` from it aborts, e.g. when the VMM exited).
    pub fn wait_ready(
        &self,
        timeout: Duration,
        alive: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<ControlClient<UnixStream>, AgentError> {
        let start = Instant::now();
        loop {
            alive().map_err(AgentError::Aborted)?;
            let last = match self.control(REQUEST_TIMEOUT).and_then(|mut c| {
                c.ping()?;
                Ok(c)
            }) {
                Ok(c) => return Ok(c),
                Err(e) => e.to_string(),
            };
            if start.elapsed() >= timeout {
                return Err(AgentError::Timeout {
                    secs: timeout.as_secs(),
                    last,
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}
