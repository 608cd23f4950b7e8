//! The header every generated message carries at the front of its payload:
//! who sent it, its sequence number and when it was sent, so the receiving
//! side can count loss, duplicates and reordering and measure end-to-end
//! latency without any side channel.
//!
//! Layout (big endian), [`HEADER_LEN`] bytes, then zero padding up to the
//! payload size asked for:
//!
//! | bytes | field                                        |
//! |-------|----------------------------------------------|
//! | 0..4  | publisher index (within the run)             |
//! | 4..12 | sequence number, from 0, per publisher       |
//! | 12..20| send time, ns since the Unix epoch           |
//!
//! The clock is the host's wall clock: publisher and subscriber run on the
//! same machine (the bench is one process), so their readings compare.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

/// Size of the header; payloads are at least this long.
pub const HEADER_LEN: usize = 20;

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A payload of `size` bytes (at least [`HEADER_LEN`]) starting with `header`.
/// `pad` is a buffer of zeros reused between calls to avoid an allocation
/// per message.
pub fn encode(header: Header, size: usize, scratch: &mut BytesMut) -> Bytes {
    let size = size.max(HEADER_LEN);
    scratch.reserve(size);
    scratch.put_u32(header.publisher);
    scratch.put_u64(header.seq);
    scratch.put_u64(header.sent_ns);
    scratch.put_bytes(0, size - HEADER_LEN);
    scratch.split().freeze()
}

/// The header of a payload, or `None` if it is too short to carry one.
pub fn decode(payload: &[u8]) -> Option<Header> {
    let h = payload.get(..HEADER_LEN)?;
    Some(Header {
        publisher: u32::from_be_bytes(h[0..4].try_into().ok()?),
        seq: u64::from_be_bytes(h[4..12].try_into().ok()?),
        sent_ns: u64::from_be_bytes(h[12..20].try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_payload_has_the_asked_size() {
        let mut scratch = BytesMut::new();
        let h = Header {
            publisher: 7,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        let p = encode(h, 64, &mut scratch);
        assert_eq!(p.len(), 64);
        assert_eq!(decode(&p), Some(h));
        assert_eq!(encode(h, 3, &mut scratch).len(), HEADER_LEN);
        assert_eq!(decode(&p[..HEADER_LEN - 1]), None);
    }
}
