//! CRI log line formatting: `<RFC 3339 nanos> <stream> <F|P> <bytes>\n`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::message::{LogRecord, StreamKind};

/// Formats nanoseconds since the epoch as RFC 3339 with nanoseconds, UTC.
pub fn rfc3339_nanos(ts_ns: i64) -> String {
    let t = if ts_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ts_ns.unsigned_abs())
    } else {
        UNIX_EPOCH
    };
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Current time in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Appends one record as a CRI log line to `out`.
pub fn format_record(rec: &LogRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(rfc3339_nanos(rec.ts_ns).as_bytes());
    out.extend_from_slice(match rec.stream {
        StreamKind::Stdout => b" stdout ",
        StreamKind::Stderr => b" stderr ",
    });
    out.extend_from_slice(if rec.partial { b"P " } else { b"F " });
    out.extend_from_slice(&rec.data);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_cri_lines() {
        let mut out = Vec::new();
        format_record(
            &LogRecord {
                seq: 1,
                ts_ns: 1_500_000_000_123_456_789,
                stream: StreamKind::Stdout,
                partial: false,
                data: b"hello".to_vec(),
            },
            &mut out,
        );
        format_record(
            &LogRecord {
                seq: 1,
                ts_ns: 0,
                stream: StreamKind::Stderr,
                partial: true,
                data: b"x".to_vec(),
            },
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2017-07-14T02:40:00.123456789Z stdout F hello\n1970-01-01T00:00:00.000000000Z stderr P x\n"
        );
    }
}
