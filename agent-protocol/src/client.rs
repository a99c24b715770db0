//! Host-side client API: the control connection, log streams and exec sessions.
//!
//! Each type takes an already connected stream (Unix socket, vsock, or the VMM's hybrid vsock
//! socket after its `CONNECT` handshake) and performs the preamble and `Hello` exchange.

use std::io::{Read, Write};

use crate::frame::{read_frame, read_preamble, write_frame, write_preamble, FrameError};
use crate::message::*;

/// Errors of the client API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Framing or transport failure.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The agent reported an error.
    #[error("agent error ({kind:?}): {message}")]
    Agent {
        /// Category.
        kind: ErrorKind,
        /// Description.
        message: String,
    },
    /// The agent sent a message that does not fit the exchange.
    #[error("unexpected message from agent: {0}")]
    Unexpected(String),
}

fn unexpected(m: &Message) -> ClientError {
    let mut s = format!("{m:?}");
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    ClientError::Unexpected(s)
}

fn handshake<S: Read + Write>(stream: &mut S, target: StreamTarget) -> Result<String, ClientError> {
    write_preamble(stream)?;
    write_frame(stream, &Message::Hello(target))?;
    read_preamble(stream)?;
    match read_frame(stream)? {
        Message::HelloOk { agent } => Ok(agent),
        Message::Error { kind, message } => Err(ClientError::Agent { kind, message }),
        m => Err(unexpected(&m)),
    }
}

/// The control connection.
pub struct ControlClient<S> {
    stream: S,
    agent: String,
}

impl<S: Read + Write> ControlClient<S> {
    /// Performs the handshake on a connected stream.
    pub fn new(mut stream: S) -> Result<Self, ClientError> {
        let agent = handshake(&mut stream, StreamTarget::Control)?;
        Ok(Self { stream, agent })
    }

    /// Version string the agent announced.
    pub fn agent_version(&self) -> &str {
        &self.agent
    }

    /// The underlying stream (e.g. to change its timeouts).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Sends one request and reads its response; agent errors become [`ClientError::Agent`].
    pub fn request(&mut self, msg: &Message) -> Result<Message, ClientError> {
        write_frame(&mut self.stream, msg)?;
        match read_frame(&mut self.stream)? {
            Message::Error { kind, message } => Err(ClientError::Agent { kind, message }),
            m => Ok(m),
        }
    }

    fn expect_ok(&mut self, msg: &Message) -> Result<(), ClientError> {
        match self.request(msg)? {
            Message::Ok => Ok(()),
            m => Err(unexpected(&m)),
        }
    }

    /// Liveness check.
    pub fn ping(&mut self) -> Result<(), ClientError> {
        match self.request(&Message::Ping)? {
            Message::Pong => Ok(()),
            m => Err(unexpected(&m)),
        }
    }

    /// Creates and starts the pod.
    pub fn create_pod(&mut self, pod: &PodSpec) -> Result<(), ClientError> {
        self.expect_ok(&Message::CreatePod(Box::new(pod.clone())))
    }

    /// Current pod status.
    pub fn status(&mut self) -> Result<PodStatus, ClientError> {
        match self.request(&Message::GetStatus)? {
            Message::Status(s) => Ok(s),
            m => Err(unexpected(&m)),
        }
    }

    /// Facts about the guest (uptime, memory).
    pub fn guest_info(&mut self) -> Result<GuestInfo, ClientError> {
        match self.request(&Message::GetGuestInfo)? {
            Message::GuestInfo(g) => Ok(g),
            m => Err(unexpected(&m)),
        }
    }

    /// Signals a container's first process.
    pub fn kill(&mut self, container: &str, signal: i32) -> Result<(), ClientError> {
        self.expect_ok(&Message::KillContainer {
            name: container.to_string(),
            signal,
        })
    }

    /// Stops one container (SIGTERM, SIGKILL after the grace period) and waits for its exit.
    pub fn stop_container(
        &mut self,
        container: &str,
        grace_seconds: Option<u32>,
    ) -> Result<(), ClientError> {
        self.expect_ok(&Message::StopContainer {
            name: container.to_string(),
            grace_seconds,
        })
    }

    /// Stops and removes every container of the pod.
    pub fn stop_pod(&mut self, grace_seconds: Option<u32>) -> Result<(), ClientError> {
        self.expect_ok(&Message::StopPod { grace_seconds })
    }

    /// Stops the pod and powers the VM off (host mode: the agent exits).
    pub fn shutdown(&mut self, grace_seconds: Option<u32>) -> Result<(), ClientError> {
        self.expect_ok(&Message::Shutdown { grace_seconds })
    }
}

/// A log stream of one container.
pub struct LogStream<S> {
    stream: S,
    ended: bool,
    end_received: bool,
    /// Total records the agent reported as dropped for this reader.
    pub dropped: u64,
}

impl<S: Read + Write> LogStream<S> {
    /// Opens a log stream on a connected stream.
    pub fn new(mut stream: S, req: LogsRequest) -> Result<Self, ClientError> {
        handshake(&mut stream, StreamTarget::Logs(req))?;
        Ok(Self {
            stream,
            ended: false,
            end_received: false,
            dropped: 0,
        })
    }

    /// Next batch of records; `None` once the stream ended: the agent sent `LogsEnd`, or the
    /// connection closed at a frame boundary (see [`LogStream::end_received`]).
    pub fn next_batch(&mut self) -> Result<Option<Vec<LogRecord>>, ClientError> {
        while !self.ended {
            match read_frame(&mut self.stream) {
                Ok(Message::Logs(r)) => return Ok(Some(r)),
                Ok(Message::LogsDropped { records }) => {
                    self.dropped = self.dropped.saturating_add(records)
                }
                Ok(Message::LogsEnd) => {
                    self.ended = true;
                    self.end_received = true;
                }
                Err(FrameError::Closed) => self.ended = true,
                Ok(Message::Error { kind, message }) => {
                    return Err(ClientError::Agent { kind, message })
                }
                Ok(m) => return Err(unexpected(&m)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Whether the agent ended the stream with `LogsEnd`; `false` after a stream that was
    /// cut off (the connection closed without it), which a resuming reader treats as a
    /// dropped connection.
    pub fn end_received(&self) -> bool {
        self.end_received
    }

    /// The underlying stream (e.g. to set a read timeout).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

/// What an exec session produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Output on stdout (or the terminal).
    Stdout(Vec<u8>),
    /// Output on stderr.
    Stderr(Vec<u8>),
    /// The process ended.
    Exit {
        /// Exit code.
        code: i32,
        /// Killing signal.
        signal: Option<i32>,
    },
}

/// An exec session.
pub struct ExecSession<S> {
    stream: S,
    /// PID of the process in the agent's namespace.
    pub pid: u32,
}

impl<S: Read + Write> ExecSession<S> {
    /// Starts an exec on a connected stream and waits for it to start.
    pub fn start(mut stream: S, spec: ExecSpec) -> Result<Self, ClientError> {
        handshake(&mut stream, StreamTarget::Exec(spec))?;
        match read_frame(&mut stream)? {
            Message::ExecStarted { pid } => Ok(Self { stream, pid }),
            Message::Error { kind, message } => Err(ClientError::Agent { kind, message }),
            m => Err(unexpected(&m)),
        }
    }

    /// Sends stdin bytes (split into bounded frames).
    pub fn write_stdin(&mut self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(crate::limits::MAX_DATA) {
            write_frame(&mut self.stream, &Message::Stdin(chunk.to_vec()))?;
        }
        Ok(())
    }

    /// Closes stdin.
    pub fn close_stdin(&mut self) -> Result<(), ClientError> {
        Ok(write_frame(&mut self.stream, &Message::StdinEof)?)
    }

    /// Resizes the terminal.
    pub fn resize(&mut self, rows: u16, cols: u16) -> Result<(), ClientError> {
        Ok(write_frame(
            &mut self.stream,
            &Message::Resize { rows, cols },
        )?)
    }

    /// Signals the process.
    pub fn signal(&mut self, sig: i32) -> Result<(), ClientError> {
        Ok(write_frame(&mut self.stream, &Message::Signal(sig))?)
    }

    /// Next output or the exit.
    pub fn next_event(&mut self) -> Result<ExecEvent, ClientError> {
        match read_frame(&mut self.stream)? {
            Message::Stdout(d) => Ok(ExecEvent::Stdout(d)),
            Message::Stderr(d) => Ok(ExecEvent::Stderr(d)),
            Message::Exit { code, signal } => Ok(ExecEvent::Exit { code, signal }),
            Message::Error { kind, message } => Err(ClientError::Agent { kind, message }),
            m => Err(unexpected(&m)),
        }
    }

    /// Collects all output until exit: (stdout, stderr, exit code).
    pub fn wait_output(&mut self) -> Result<(Vec<u8>, Vec<u8>, i32), ClientError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match self.next_event()? {
                ExecEvent::Stdout(d) => out.extend_from_slice(&d),
                ExecEvent::Stderr(d) => err.extend_from_slice(&d),
                ExecEvent::Exit { code, .. } => return Ok((out, err, code)),
            }
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unexpected_truncates_multibyte_text_on_a_char_boundary() {
        // A hostile agent answers with a message full of multi-byte characters: its Debug
        // text must be cut without panicking inside a character.
        for pad in 0..4 {
            let agent = format!("{}{}", "a".repeat(pad), "é".repeat(120));
            let m = Message::HelloOk { agent };
            match unexpected(&m) {
                ClientError::Unexpected(s) => assert!(s.len() <= 200 && !s.is_empty()),
                other => panic!("{other:?}"),
            }
        }
    }
}
