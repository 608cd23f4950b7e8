//! Feeds arbitrary bytes to `Packet::decode` for every version, with a small
//! and a large maximum packet size, all at once and in two chunks (the first
//! input byte picks where to split), and checks that:
//! - decoding never panics, and consumes bytes exactly when it returns a packet;
//! - both ways of feeding give the same packets and the same error;
//! - every decoded packet encodes, and decodes back to itself.
//!
//! Run: `cargo +nightly fuzz run decode -- -max_total_time=120` from the
//! repository root.

#![no_main]

use broker::codec::{DecodeError, Limits, Packet, ProtocolVersion, MAX_REMAINING_LENGTH};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];
const MAX_PACKET_SIZES: [u32; 2] = [64, MAX_REMAINING_LENGTH as u32 + 5];

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let split = split as usize % (stream.len() + 1);
    for version in VERSIONS {
        for max_packet_size in MAX_PACKET_SIZES {
            for refuse_control_characters in [false, true] {
                let limits = Limits {
                    max_packet_size,
                    version,
                    refuse_control_characters,
                };
                let whole = decode_stream(&[stream], &limits);
                let chunked = decode_stream(&[&stream[..split], &stream[split..]], &limits);
                assert_eq!(whole, chunked, "feeding in two chunks changed the result");
                for packet in &whole.0 {
                    check_reencode(packet, version);
                }
            }
        }
    }
});

/// Decodes every packet from `chunks`, appended one after the other, until
/// the bytes run out or an error.
fn decode_stream(chunks: &[&[u8]], limits: &Limits) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match Packet::decode(&mut buf, limits) {
                Ok(Some(packet)) => {
                    assert!(buf.len() < before, "a packet was decoded from no bytes");
                    packets.push(packet);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(e) => return (packets, Some(e)),
            }
        }
    }
    (packets, None)
}

/// A decoded packet is valid: it must encode, and decode back to itself.
fn check_reencode(packet: &Packet, version: ProtocolVersion) {
    // CONNECT carries its own version
    let version = match packet {
        Packet::Connect(c) => c.protocol,
        _ => version,
    };
    let mut buf = BytesMut::new();
    let n = packet
        .encode(version, &mut buf)
        .unwrap_or_else(|e| panic!("decoded {packet:?} does not encode: {e}"));
    assert_eq!(n, buf.len());
    assert_eq!(packet.encoded_len(version), Ok(n));
    let limits = Limits {
        max_packet_size: MAX_REMAINING_LENGTH as u32 + 5,
        version,
        refuse_control_characters: false,
    };
    let again = Packet::decode(&mut buf, &limits);
    assert_eq!(
        again.as_ref().map(Option::as_ref),
        Ok(Some(packet)),
        "re-encoded {packet:?} decodes differently"
    );
    assert!(buf.is_empty());
}
