//! The host's control connection to the guest agent, kept alive: when it drops under a live
//! agent (an I/O error, a reset, an end of file), it is opened again, at most
//! [`RECONNECT_ATTEMPTS`] times in a row, and the request is sent again, so that a broken
//! connection does not fail the pod. Requests are safe to repeat: status and guest info read
//! state, and `CreatePod` is only sent again when the agent says it has no pod.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use agent_protocol::frame::FrameError;
use agent_protocol::{ClientError, ControlClient, ErrorKind, GuestInfo, PodSpec, PodStatus};

use crate::agent::{AgentAddr, AgentError};

/// Consecutive failed attempts (a dropped request or a failed reconnect) before giving up.
pub const RECONNECT_ATTEMPTS: u32 = 5;
/// Pause between attempts.
pub const RECONNECT_DELAY: Duration = Duration::from_millis(200);
/// How long a reconnect's `CONNECT` and handshake may take: a live agent answers within
/// milliseconds, and one that does not must not keep the caller (and the user's Ctrl-C) waiting
/// for the full request timeout on every attempt.
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a new control connection.
pub type Connector = Box<dyn FnMut() -> Result<ControlClient<UnixStream>, AgentError> + Send>;

/// A control connection that reconnects.
pub struct Control {
    connect: Connector,
    client: Option<ControlClient<UnixStream>>,
    delay: Duration,
    connected: bool,
    reconnects: u64,
    notes: Vec<String>,
}

/// Whether a request failed because the connection broke (worth a new connection), rather than
/// because the agent answered with an error, sent nonsense, or did not answer in time.
pub fn connection_lost(e: &ClientError) -> bool {
    match e {
        ClientError::Frame(FrameError::Closed | FrameError::Truncated) => true,
        ClientError::Frame(FrameError::Io(io)) => !matches!(
            io.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        _ => false,
    }
}

impl Control {
    /// Control connections to `addr` whose requests may take up to `io_timeout`; `client` is an
    /// already open one (from [`AgentAddr::wait_ready`]).
    pub fn new(addr: AgentAddr, io_timeout: Duration, client: ControlClient<UnixStream>) -> Self {
        Self::with_connector(
            Box::new(move || addr.control_within(RECONNECT_TIMEOUT, io_timeout)),
            Some(client),
        )
    }

    /// A control connection opened by `connect` (tests give their own).
    pub fn with_connector(connect: Connector, client: Option<ControlClient<UnixStream>>) -> Self {
        Control {
            connect,
            connected: client.is_some(),
            client,
            delay: RECONNECT_DELAY,
            reconnects: 0,
            notes: Vec::new(),
        }
    }

    /// Sets the pause between attempts.
    pub fn set_delay(&mut self, delay: Duration) {
        self.delay = delay;
    }

    /// How many times the connection was opened again.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// What happened to the connection since the last call (one line each), for the user.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// The pod's status.
    pub fn status(&mut self) -> Result<PodStatus, AgentError> {
        self.call("a status request", |c, _| c.status())
    }

    /// Facts about the guest.
    pub fn guest_info(&mut self) -> Result<GuestInfo, AgentError> {
        self.call("a guest info request", |c, _| c.guest_info())
    }

    /// Creates the pod. After a lost connection the agent is asked first whether it already
    /// has the pod (the lost request may have arrived), so the pod is never created twice.
    pub fn create_pod(&mut self, spec: &PodSpec) -> Result<(), AgentError> {
        self.call("CreatePod", |c, retry| {
            if retry {
                match c.status() {
                    Ok(_) => return Ok(()),
                    Err(ClientError::Agent {
                        kind: ErrorKind::NotFound,
                        ..
                    }) => {}
                    Err(e) => return Err(e),
                }
            }
            c.create_pod(spec)
        })
    }

    /// Runs `request` on the connection (the flag says whether this is a repeat after a lost
    /// connection), reconnecting when the connection is lost.
    fn call<T>(
        &mut self,
        what: &str,
        mut request: impl FnMut(&mut ControlClient<UnixStream>, bool) -> Result<T, ClientError>,
    ) -> Result<T, AgentError> {
        let mut failures = 0u32;
        loop {
            let client = match self.client.take() {
                Some(c) => c,
                None => match (self.connect)() {
                    Ok(c) => {
                        if self.connected {
                            self.reconnects += 1;
                            self.notes.push(format!(
                                "agent control connection re-established (reconnect {})",
                                self.reconnects
                            ));
                        }
                        self.connected = true;
                        c
                    }
                    Err(e) => {
                        failures += 1;
                        if failures >= RECONNECT_ATTEMPTS || e.vmm_gone() {
                            return Err(e);
                        }
                        self.notes.push(format!(
                            "agent control connection: reconnect failed ({e}); attempt {} of {RECONNECT_ATTEMPTS}",
                            failures + 1
                        ));
                        std::thread::sleep(self.delay);
                        continue;
                    }
                },
            };
            let client = self.client.insert(client);
            match request(client, failures > 0) {
                Ok(v) => return Ok(v),
                Err(e) if connection_lost(&e) => {
                    self.client = None;
                    failures += 1;
                    if failures >= RECONNECT_ATTEMPTS {
                        return Err(e.into());
                    }
                    self.notes.push(format!(
                        "agent control connection lost during {what} ({e}); reconnecting"
                    ));
                    std::thread::sleep(self.delay);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests;
