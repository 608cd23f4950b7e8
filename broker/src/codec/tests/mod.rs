//! Tests of the whole codec, through `Packet::decode` and `Packet::encode`:
//! annotated byte fixtures (`fixtures_v3`, `fixtures_v5`), one row per rule
//! of the malformed input table (`malformed`), behaviour shared by 3.1.1 and
//! 5.0 run for both (`shared`), proptest round-trips (`roundtrip`, with the
//! generators in `strategies`). Unit tests of single helpers sit beside them in each file.

mod fixtures_v3;
mod fixtures_v5;
mod malformed;
mod roundtrip;
mod shared;
mod strategies;

use bytes::BytesMut;

use super::{DecodeError, Limits, Packet, ProtocolVersion, MAX_REMAINING_LENGTH};

/// PINGREQ, appended after each fixture to prove the decoder stops at the end
/// of the packet.
const NEXT_PACKET: [u8; 2] = [0xC0, 0x00];

fn limits(version: ProtocolVersion) -> Limits {
    Limits {
        max_packet_size: MAX_REMAINING_LENGTH as u32 + 5,
        version,
        refuse_control_characters: false,
    }
}

fn decode(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    Packet::decode(&mut BytesMut::from(bytes), &limits(version))
}

fn decode_err(bytes: &[u8], version: ProtocolVersion) -> DecodeError {
    match decode(bytes, version) {
        Err(e) => e,
        other => panic!("expected an error for {bytes:02X?} ({version}), got {other:?}"),
    }
}

/// Concatenates annotated parts of a fixture.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The checks every fixture passes:
/// - `packet` encodes to exactly `bytes` (built by hand, not by the encoder);
/// - `bytes` followed by another packet decode to `packet`, leaving exactly
///   the other packet in the buffer;
/// - every proper prefix of `bytes` is `Ok(None)` and consumes nothing.
fn check_fixture(version: ProtocolVersion, bytes: &[u8], packet: &Packet) {
    let mut encoded = BytesMut::new();
    let n = packet
        .encode(version, &mut encoded)
        .expect("fixture encodes");
    assert_eq!(&encoded[..], bytes, "encoding of {packet:?} for {version}");
    assert_eq!(n, bytes.len());
    assert_eq!(packet.encoded_len(version), Ok(bytes.len()));

    let mut buf = BytesMut::from(bytes);
    buf.extend_from_slice(&NEXT_PACKET);
    let decoded = Packet::decode(&mut buf, &limits(version)).expect("fixture decodes");
    assert_eq!(
        decoded.as_ref(),
        Some(packet),
        "decoding {bytes:02X?} for {version}"
    );
    assert_eq!(
        &buf[..],
        &NEXT_PACKET,
        "the decoder consumed exactly one packet"
    );
    assert_eq!(
        Packet::decode(&mut buf, &limits(version)),
        Ok(Some(Packet::PingReq))
    );
    assert!(buf.is_empty());

    check_prefixes(version, bytes);
}

/// Every proper prefix of a valid packet is `Ok(None)` and consumes nothing.
fn check_prefixes(version: ProtocolVersion, bytes: &[u8]) {
    for len in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..len]);
        assert_eq!(
            Packet::decode(&mut buf, &limits(version)),
            Ok(None),
            "prefix of {len} bytes of {bytes:02X?}"
        );
        assert_eq!(buf.len(), len, "a prefix must not be consumed");
    }
}
