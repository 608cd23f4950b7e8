//! `decode(encode(p)) == p` for every packet type of every version, whole and
//! split in two reads.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::limits;
use super::strategies::{packet, publish_properties};
use crate::codec::{decode_publish_properties, encode_publish_properties, Packet, ProtocolVersion};

fn round_trip(
    version: ProtocolVersion,
    p: &Packet,
    split: prop::sample::Index,
) -> Result<(), TestCaseError> {
    let mut encoded = BytesMut::new();
    let n = p
        .encode(version, &mut encoded)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(n, encoded.len());
    prop_assert_eq!(p.encoded_len(version), Ok(n));
    let whole = encoded.clone().freeze();

    let decoded = Packet::decode(&mut encoded, &limits(version));
    prop_assert_eq!(decoded, Ok(Some(p.clone())));
    prop_assert!(encoded.is_empty());

    // the same bytes in two reads: nothing until the last byte is there
    let at = split.index(whole.len());
    let mut buf = BytesMut::from(&whole[..at]);
    prop_assert_eq!(Packet::decode(&mut buf, &limits(version)), Ok(None));
    buf.extend_from_slice(&whole[at..]);
    prop_assert_eq!(
        Packet::decode(&mut buf, &limits(version)),
        Ok(Some(p.clone()))
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_v3_1_packet_round_trips(p in packet(ProtocolVersion::V31), split in any::<prop::sample::Index>()) {
        round_trip(ProtocolVersion::V31, &p, split)?;
    }

    #[test]
    fn every_v3_1_1_packet_round_trips(p in packet(ProtocolVersion::V311), split in any::<prop::sample::Index>()) {
        round_trip(ProtocolVersion::V311, &p, split)?;
    }

    #[test]
    fn every_v5_packet_round_trips(p in packet(ProtocolVersion::V5), split in any::<prop::sample::Index>()) {
        round_trip(ProtocolVersion::V5, &p, split)?;
    }

    #[test]
    fn publish_properties_round_trip_on_their_own(props in publish_properties(), tail in any::<Vec<u8>>()) {
        let mut buf = BytesMut::new();
        encode_publish_properties(&props, &mut buf);
        buf.extend_from_slice(&tail);
        let mut bytes: Bytes = buf.freeze();
        prop_assert_eq!(decode_publish_properties(&mut bytes), Ok(props));
        prop_assert_eq!(&bytes[..], &tail[..], "exactly the properties are consumed");
    }
}

#[test]
fn publish_properties_that_cannot_be_encoded_are_left_out() {
    use bytestring::ByteString;
    let props = crate::codec::PublishProperties {
        topic_alias: Some(0),
        content_type: Some(ByteString::from("c".repeat(70_000))),
        subscription_identifiers: vec![0, 5, 300_000_000],
        message_expiry_interval: Some(9),
        ..Default::default()
    };
    let mut buf = BytesMut::new();
    encode_publish_properties(&props, &mut buf);
    let decoded = decode_publish_properties(&mut buf.freeze()).unwrap();
    let expected = crate::codec::PublishProperties {
        subscription_identifiers: vec![5],
        message_expiry_interval: Some(9),
        ..Default::default()
    };
    assert_eq!(decoded, expected);
}

#[test]
fn decode_publish_properties_leaves_the_buffer_on_error() {
    let mut bytes = Bytes::from_static(&[0x03, 0x23, 0x00, 0x00]); // Topic Alias 0
    assert!(decode_publish_properties(&mut bytes).is_err());
    assert_eq!(bytes.len(), 4);
}
