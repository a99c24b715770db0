//! Framing: preamble exchange and `u32` length-prefixed postcard frames over any byte stream.

use std::io::{self, Read, Write};

use crate::limits::MAX_FRAME_LEN;
use crate::message::{LogRecord, Message, ValidationError};
use crate::PROTOCOL_VERSION;

/// Magic bytes at the start of every connection, in both directions.
pub const MAGIC: [u8; 4] = *b"PPOD";

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// I/O failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the stream at a frame boundary.
    #[error("connection closed")]
    Closed,
    /// The stream ended inside a frame.
    #[error("truncated frame")]
    Truncated,
    /// The length prefix exceeds the maximum.
    #[error("frame of {0} bytes exceeds the maximum of {max}", max = MAX_FRAME_LEN)]
    TooLarge(usize),
    /// The payload is not a valid message.
    #[error("cannot decode frame: {0}")]
    Decode(String),
    /// Trailing bytes after the message.
    #[error("frame has {0} trailing bytes")]
    Trailing(usize),
    /// The message breaks a bound.
    #[error("invalid message: {0}")]
    Invalid(#[from] ValidationError),
    /// The peer does not speak this protocol.
    #[error("bad preamble: not a peapod agent protocol peer")]
    BadMagic,
    /// The peer speaks another version.
    #[error("protocol version mismatch: ours is {ours}, peer's is {theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
}

/// Writes the preamble (magic + version).
pub fn write_preamble(w: &mut impl Write) -> Result<(), FrameError> {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&MAGIC);
    buf[4..].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads and checks the peer's preamble.
pub fn read_preamble(r: &mut impl Read) -> Result<(), FrameError> {
    let mut buf = [0u8; 8];
    read_exact_or(r, &mut buf, true)?;
    if buf[..4] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let theirs = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if theirs != PROTOCOL_VERSION {
        return Err(FrameError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    Ok(())
}

/// Encodes a message into a complete frame (length prefix included).
pub fn encode_frame(msg: &Message) -> Result<Vec<u8>, FrameError> {
    let buf =
        postcard::to_extend(msg, vec![0u8; 4]).map_err(|e| FrameError::Decode(e.to_string()))?;
    finish_frame(buf)
}

/// Writes one message as a frame.
pub fn write_frame(w: &mut impl Write, msg: &Message) -> Result<(), FrameError> {
    let buf = encode_frame(msg)?;
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Decodes and validates a frame payload (without the length prefix).
pub fn decode_payload(payload: &[u8]) -> Result<Message, FrameError> {
    let (msg, rest) = postcard::take_from_bytes::<Message>(payload)
        .map_err(|e| FrameError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    msg.validate()?;
    Ok(msg)
}

/// Reads one frame; [`FrameError::Closed`] at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> Result<Message, FrameError> {
    let mut len = [0u8; 4];
    read_exact_or(r, &mut len, true)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    read_exact_or(r, &mut payload, false)?;
    decode_payload(&payload)
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], at_boundary: bool) -> Result<(), FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 && at_boundary => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Variant index of [`Message::Logs`] in the postcard encoding (checked by a test).
const LOGS_VARIANT: u32 = 14;

struct Records<'a, R>(&'a [R]);

impl<R: AsRef<LogRecord>> serde::Serialize for Records<'_, R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(AsRef::as_ref))
    }
}

struct LogsRef<'a, R>(&'a [R]);

impl<R: AsRef<LogRecord>> serde::Serialize for LogsRef<'_, R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_variant("Message", LOGS_VARIANT, "Logs", &Records(self.0))
    }
}

/// Encodes a `Message::Logs` frame from shared records without cloning them; the bytes are
/// identical to `encode_frame(&Message::Logs(..))`.
pub fn encode_logs_frame<R: AsRef<LogRecord>>(records: &[R]) -> Result<Vec<u8>, FrameError> {
    let cap = 16
        + records
            .iter()
            .map(|r| r.as_ref().data.len() + 34)
            .sum::<usize>();
    let mut buf = Vec::with_capacity(cap);
    buf.extend_from_slice(&[0u8; 4]);
    let buf = postcard::to_extend(&LogsRef(records), buf)
        .map_err(|e| FrameError::Decode(e.to_string()))?;
    finish_frame(buf)
}

fn finish_frame(mut buf: Vec<u8>) -> Result<Vec<u8>, FrameError> {
    let len = buf.len() - 4;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge(len))?;
    buf[..4].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::StreamKind;
    use std::sync::Arc;

    #[test]
    fn borrowed_log_frames_match_owned_ones() {
        let recs = vec![
            LogRecord {
                seq: 1,
                ts_ns: 5,
                stream: StreamKind::Stdout,
                partial: false,
                data: b"abc".to_vec(),
            },
            LogRecord {
                seq: u64::MAX,
                ts_ns: -1,
                stream: StreamKind::Stderr,
                partial: true,
                data: vec![0; 300],
            },
        ];
        let shared: Vec<Arc<LogRecord>> = recs.iter().cloned().map(Arc::new).collect();
        assert_eq!(
            encode_logs_frame(&shared).unwrap(),
            encode_frame(&Message::Logs(recs)).unwrap()
        );
    }
}
