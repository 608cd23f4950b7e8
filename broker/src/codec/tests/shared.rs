//! Behaviour 3.1.1 and 5.0 share, one body run for each version (as
//! mosquitto's broker tests run `do_test(proto_ver=4)` then `(proto_ver=5)`).

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::limits;
use crate::codec::{
    EncodeError, Packet, PacketType, ProtocolVersion, PubResponse, Publish, PublishProperties, QoS,
    Subscribe, SubscribeProperties, MAX_REMAINING_LENGTH,
};

/// Runs `$body(version)` as two tests, `v3_1_1` and `v5`.
macro_rules! for_v311_and_v5 {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn v3_1_1() {
                ($body)(ProtocolVersion::V311)
            }
            #[test]
            fn v5() {
                ($body)(ProtocolVersion::V5)
            }
        }
    };
}

fn publish(qos: QoS, packet_id: Option<u16>, payload: Bytes) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from_static("a/b"),
        packet_id,
        payload,
        properties: PublishProperties::default(),
    }
}

fn encode(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).expect("encodes");
    buf
}

for_v311_and_v5!(publish_payload_is_split_off_without_copying, |version| {
    let packet = Packet::Publish(publish(
        QoS::AtLeastOnce,
        Some(9),
        Bytes::from(vec![7u8; 1000]),
    ));
    let mut buf = encode(&packet, version);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Ok(Some(Packet::Publish(decoded))) = Packet::decode(&mut buf, &limits(version)) else {
        panic!("decodes")
    };
    assert!(
        range.contains(&(decoded.payload.as_ptr() as usize)),
        "payload points into the input"
    );
    assert_eq!(Packet::Publish(decoded), packet);
});

for_v311_and_v5!(packets_split_across_reads_decode_in_order, |version| {
    let packets = [
        Packet::Publish(publish(
            QoS::ExactlyOnce,
            Some(1),
            Bytes::from_static(b"one"),
        )),
        Packet::PubRel(PubResponse::new(1)),
        Packet::PingReq,
        Packet::Publish(publish(QoS::AtMostOnce, None, Bytes::new())),
    ];
    let mut stream = BytesMut::new();
    for p in &packets {
        p.encode(version, &mut stream).unwrap();
    }
    // one byte at a time, as a slow socket would deliver them
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for &byte in stream.iter() {
        buf.extend_from_slice(&[byte]);
        while let Some(p) = Packet::decode(&mut buf, &limits(version)).unwrap() {
            decoded.push(p);
        }
    }
    assert_eq!(decoded, packets);
    assert!(buf.is_empty());
});

for_v311_and_v5!(
    publish_packet_id_must_match_qos_mqtt_2_3_1_1_and_5,
    |version| {
        let mut buf = BytesMut::from(&b"earlier bytes"[..]);
        for (qos, id, field) in [
            (QoS::AtLeastOnce, None, "packet identifier"),
            (QoS::ExactlyOnce, Some(0), "packet identifier"),
            (QoS::AtMostOnce, Some(3), "packet identifier"),
        ] {
            let err = Packet::Publish(publish(qos, id, Bytes::new())).encode(version, &mut buf);
            assert!(
                matches!(err, Err(EncodeError::Invalid { field: f, .. }) if f == field),
                "{err:?}"
            );
            assert_eq!(&buf[..], b"earlier bytes", "nothing is appended on error");
        }
        let mut dup = publish(QoS::AtMostOnce, None, Bytes::new());
        dup.dup = true;
        assert!(Packet::Publish(dup).encode(version, &mut buf).is_err());
    }
);

for_v311_and_v5!(strings_over_65535_bytes_are_not_encoded, |version| {
    let mut p = publish(QoS::AtMostOnce, None, Bytes::new());
    p.topic = ByteString::from("t".repeat(65_536));
    let mut buf = BytesMut::new();
    let err = Packet::Publish(p).encode(version, &mut buf).unwrap_err();
    assert_eq!(
        err,
        EncodeError::Invalid {
            packet: PacketType::Publish,
            field: "topic name",
            reason: "is 65536 bytes long, over 65,535".into()
        }
    );
    assert!(buf.is_empty());
});

for_v311_and_v5!(
    packets_over_the_remaining_length_maximum_are_not_encoded,
    |version| {
        // zeroed allocation: pages are never touched, since encoding stops at
        // the counting pass
        let payload = Bytes::from(vec![0u8; MAX_REMAINING_LENGTH]);
        let p = publish(QoS::AtMostOnce, None, payload);
        let mut buf = BytesMut::new();
        let err = Packet::Publish(p.clone())
            .encode(version, &mut buf)
            .unwrap_err();
        assert!(
            matches!(
                err,
                EncodeError::PacketTooLarge {
                    packet: PacketType::Publish,
                    ..
                }
            ),
            "{err}"
        );
        assert!(buf.is_empty());
        assert!(p.encoded_len(version).is_err());
    }
);

for_v311_and_v5!(subscribe_needs_a_filter_to_be_encoded, |version| {
    let s = Subscribe {
        packet_id: 1,
        filters: Vec::new(),
        properties: SubscribeProperties::default(),
    };
    let mut buf = BytesMut::new();
    assert!(matches!(
        Packet::Subscribe(s).encode(version, &mut buf),
        Err(EncodeError::Invalid {
            field: "topic filters",
            ..
        })
    ));
});

for_v311_and_v5!(publish_encoded_len_matches_encode, |version| {
    let p = publish(QoS::AtLeastOnce, Some(5), Bytes::from(vec![1u8; 300]));
    let buf = encode(&Packet::Publish(p.clone()), version);
    assert_eq!(p.encoded_len(version), Ok(buf.len()));
});
