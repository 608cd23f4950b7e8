//! Annotated byte fixtures for MQTT 3.1 and 3.1.1, one per packet type (3.1
//! only where it differs), each checked by [`check_fixture`].

use bytes::Bytes;
use bytestring::ByteString;

use super::{cat, check_fixture, decode, NEXT_PACKET};
use crate::codec::{
    AckProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties, Disconnect, LastWill,
    Packet, ProtocolVersion::*, PubResponse, Publish, PublishProperties, QoS, ReasonCode, SubAck,
    Subscribe, SubscribeProperties, SubscriptionOptions, UnsubAck, Unsubscribe, WillProperties,
};

fn s(text: &'static str) -> ByteString {
    ByteString::from_static(text)
}

fn connect_full(protocol: crate::codec::ProtocolVersion) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: s("c1"),
        will: Some(LastWill {
            topic: s("w/t"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        username: Some(s("u")),
        password: Some(Bytes::from_static(b"pw")),
        properties: ConnectProperties::default(),
    }
}

#[test]
#[rustfmt::skip]
fn connect_v311_with_will_user_name_and_password() {
    let bytes = cat(&[
        &[0x10],                               // CONNECT, flags 0
        &[0x1F],                               // remaining length 31
        &[0x00, 0x04, b'M', b'Q', b'T', b'T'], // protocol name "MQTT"
        &[0x04],                               // protocol level 4
        &[0b1110_1110],                        // user, password, will retain, will QoS 1, will, clean
        &[0x00, 0x3C],                         // keep alive 60
        &[0x00, 0x02, b'c', b'1'],             // client identifier "c1"
        &[0x00, 0x03, b'w', b'/', b't'],       // will topic "w/t"
        &[0x00, 0x03, b'b', b'y', b'e'],       // will payload "bye"
        &[0x00, 0x01, b'u'],                   // user name "u"
        &[0x00, 0x02, b'p', b'w'],             // password "pw"
    ]);
    check_fixture(V311, &bytes, &Packet::Connect(Box::new(connect_full(V311))));
    // CONNECT announces its own version: `limits.version` does not matter
    assert_eq!(
        decode(&bytes, V5),
        Ok(Some(Packet::Connect(Box::new(connect_full(V311)))))
    );
}

#[test]
#[rustfmt::skip]
fn connect_v311_minimal() {
    let bytes = cat(&[
        &[0x10, 0x0C],                         // CONNECT, remaining length 12
        &[0x00, 0x04, b'M', b'Q', b'T', b'T'], // protocol name "MQTT"
        &[0x04],                               // protocol level 4
        &[0x00],                               // no flags, clean session 0
        &[0x00, 0x00],                         // keep alive 0
        &[0x00, 0x00],                         // empty client identifier
    ]);
    let connect = Connect {
        protocol: V311,
        clean_start: false,
        keep_alive: 0,
        client_id: s(""),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    };
    check_fixture(V311, &bytes, &Packet::Connect(Box::new(connect)));
}

#[test]
#[rustfmt::skip]
fn connect_v31_uses_protocol_name_mqisdp_level_3() {
    let bytes = cat(&[
        &[0x10, 0x21],                                     // CONNECT, remaining length 33
        &[0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p'], // protocol name "MQIsdp"
        &[0x03],                                           // protocol level 3
        &[0b1110_1110],                                    // same flags as the 3.1.1 fixture
        &[0x00, 0x3C],                                     // keep alive 60
        &[0x00, 0x02, b'c', b'1'],                         // client identifier "c1"
        &[0x00, 0x03, b'w', b'/', b't'],                   // will topic "w/t"
        &[0x00, 0x03, b'b', b'y', b'e'],                   // will message "bye"
        &[0x00, 0x01, b'u'],                               // user name "u"
        &[0x00, 0x02, b'p', b'w'],                         // password "pw"
    ]);
    check_fixture(V31, &bytes, &Packet::Connect(Box::new(connect_full(V31))));
}

#[test]
#[rustfmt::skip]
fn connect_v31_password_flag_without_password_means_no_password() {
    let bytes = cat(&[
        &[0x10, 0x13],                                     // CONNECT, remaining length 19
        &[0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p'], // protocol name "MQIsdp"
        &[0x03],                                           // protocol level 3
        &[0b1100_0010],                                    // user name, password, clean
        &[0x00, 0x0A],                                     // keep alive 10
        &[0x00, 0x02, b'c', b'1'],                         // client identifier "c1"
        &[0x00, 0x01, b'u'],                               // user name "u", and no password
    ]);
    let Ok(Some(Packet::Connect(c))) = decode(&bytes, V31) else {
        panic!("3.1 CONNECT without its password decodes")
    };
    assert_eq!((c.username.as_deref(), c.password), (Some("u"), None));
}

#[test]
#[rustfmt::skip]
fn connack_v311_session_present() {
    let bytes = cat(&[
        &[0x20, 0x02], // CONNACK, remaining length 2
        &[0x01],       // session present
        &[0x00],       // return code 0: accepted
    ]);
    let connack = ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties: ConnAckProperties::default(),
    };
    check_fixture(V311, &bytes, &Packet::ConnAck(connack));
}

#[test]
#[rustfmt::skip]
fn connack_v311_return_codes_map_to_reason_codes() {
    for (code, reason) in [
        (1, ReasonCode::UnsupportedProtocolVersion),
        (2, ReasonCode::ClientIdentifierNotValid),
        (3, ReasonCode::ServerUnavailable),
        (4, ReasonCode::BadUserNameOrPassword),
        (5, ReasonCode::NotAuthorized),
    ] {
        let bytes = [0x20, 0x02, 0x00, code]; // CONNACK, no session, return code
        let connack = ConnAck {
            session_present: false,
            reason_code: reason,
            properties: ConnAckProperties::default(),
        };
        check_fixture(V311, &bytes, &Packet::ConnAck(connack));
    }
}

#[test]
#[rustfmt::skip]
fn connack_v31_has_no_session_present_flag() {
    let bytes = [
        0x20, 0x02, // CONNACK, remaining length 2
        0x00,       // reserved (3.1 has no session present flag)
        0x00,       // return code 0: accepted
    ];
    let connack = ConnAck {
        session_present: false,
        reason_code: ReasonCode::Success,
        properties: ConnAckProperties::default(),
    };
    check_fixture(V31, &bytes, &Packet::ConnAck(connack.clone()));
    // a session_present of true is dropped for 3.1
    let mut out = bytes::BytesMut::new();
    let present = ConnAck {
        session_present: true,
        ..connack
    };
    Packet::ConnAck(present).encode(V31, &mut out).unwrap();
    assert_eq!(&out[..], &bytes);
}

#[test]
#[rustfmt::skip]
fn publish_v311_qos0() {
    let bytes = cat(&[
        &[0x30],                         // PUBLISH, QoS 0, no DUP, no RETAIN
        &[0x07],                         // remaining length 7
        &[0x00, 0x03, b'a', b'/', b'b'], // topic name "a/b"
        b"hi",                           // payload "hi" (no packet identifier at QoS 0)
    ]);
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s("a/b"),
        packet_id: None,
        payload: Bytes::from_static(b"hi"),
        properties: PublishProperties::default(),
    };
    check_fixture(V311, &bytes, &Packet::Publish(publish.clone()));
    check_fixture(V31, &bytes, &Packet::Publish(publish));
}

#[test]
#[rustfmt::skip]
fn publish_v311_qos2_dup_retain() {
    let bytes = cat(&[
        &[0x3D],             // PUBLISH, DUP 1, QoS 2, RETAIN 1
        &[0x06],             // remaining length 6
        &[0x00, 0x01, b't'], // topic name "t"
        &[0x12, 0x34],       // packet identifier 0x1234
        &[0xFF],             // payload: one byte
    ]);
    let publish = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: s("t"),
        packet_id: Some(0x1234),
        payload: Bytes::from_static(&[0xFF]),
        properties: PublishProperties::default(),
    };
    check_fixture(V311, &bytes, &Packet::Publish(publish));
}

#[test]
#[rustfmt::skip]
fn publish_acks_v311_are_a_packet_identifier() {
    type Variant = fn(PubResponse) -> Packet;
    let cases: [(u8, Variant); 4] = [
        (0x40, Packet::PubAck),  // PUBACK, flags 0
        (0x50, Packet::PubRec),  // PUBREC, flags 0
        (0x62, Packet::PubRel),  // PUBREL, flags 0b0010
        (0x70, Packet::PubComp), // PUBCOMP, flags 0
    ];
    for (first, variant) in cases {
        let bytes = [
            first, 0x02, // fixed header, remaining length 2
            0x00, 0x07, // packet identifier 7
        ];
        check_fixture(V311, &bytes, &variant(PubResponse::new(7)));
    }
}

#[test]
#[rustfmt::skip]
fn subscribe_v311_two_filters() {
    let bytes = cat(&[
        &[0x82],                         // SUBSCRIBE, flags 0b0010
        &[0x0E],                         // remaining length 14
        &[0x00, 0x0A],                   // packet identifier 10
        &[0x00, 0x03, b'a', b'/', b'#'], // topic filter "a/#"
        &[0x01],                         // requested QoS 1
        &[0x00, 0x03, b'+', b'/', b'b'], // topic filter "+/b"
        &[0x02],                         // requested QoS 2
    ]);
    let subscribe = Subscribe {
        packet_id: 10,
        filters: vec![
            (
                s("a/#"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            ),
            (
                s("+/b"),
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    ..Default::default()
                },
            ),
        ],
        properties: SubscribeProperties::default(),
    };
    check_fixture(V311, &bytes, &Packet::Subscribe(subscribe.clone()));
    check_fixture(V31, &bytes, &Packet::Subscribe(subscribe.clone()));
    // 3.1 clients set DUP on a retried SUBSCRIBE
    let mut retried = bytes.clone();
    retried[0] = 0x8A;
    assert_eq!(
        decode(&retried, V31),
        Ok(Some(Packet::Subscribe(subscribe)))
    );
}

#[test]
#[rustfmt::skip]
fn suback_v311_return_codes() {
    let bytes = cat(&[
        &[0x90, 0x06],             // SUBACK, remaining length 6
        &[0x00, 0x0A],             // packet identifier 10
        &[0x00, 0x01, 0x02, 0x80], // granted QoS 0, 1, 2, failure
    ]);
    let suback = SubAck {
        packet_id: 10,
        reason_codes: vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ],
        properties: AckProperties::default(),
    };
    check_fixture(V311, &bytes, &Packet::SubAck(suback));
}

#[test]
#[rustfmt::skip]
fn unsubscribe_and_unsuback_v311() {
    let bytes = cat(&[
        &[0xA2, 0x07],                   // UNSUBSCRIBE, flags 0b0010, remaining length 7
        &[0x00, 0x0B],                   // packet identifier 11
        &[0x00, 0x03, b'a', b'/', b'+'], // topic filter "a/+"
    ]);
    let unsubscribe = Unsubscribe {
        packet_id: 11,
        filters: vec![s("a/+")],
        user_properties: Vec::new(),
    };
    check_fixture(V311, &bytes, &Packet::Unsubscribe(unsubscribe));
    let bytes = [
        0xB0, 0x02, // UNSUBACK, remaining length 2
        0x00, 0x0B, // packet identifier 11
    ];
    let unsuback = UnsubAck {
        packet_id: 11,
        reason_codes: Vec::new(),
        properties: AckProperties::default(),
    };
    check_fixture(V311, &bytes, &Packet::UnsubAck(unsuback));
}

#[test]
#[rustfmt::skip]
fn ping_and_disconnect_have_no_body() {
    for version in [V31, V311] {
        check_fixture(version, &[0xC0, 0x00], &Packet::PingReq); // PINGREQ
        check_fixture(version, &[0xD0, 0x00], &Packet::PingResp); // PINGRESP
        check_fixture(
            version,
            &[0xE0, 0x00],
            &Packet::Disconnect(Disconnect::default()),
        ); // DISCONNECT
    }
    assert_eq!(NEXT_PACKET, [0xC0, 0x00]);
}

#[test]
#[rustfmt::skip]
fn v311_encoding_drops_5_0_only_data() {
    let mut ack = PubResponse::new(3);
    ack.reason_code = ReasonCode::NoMatchingSubscribers;
    ack.properties.reason_string = Some(s("nobody"));
    let mut out = bytes::BytesMut::new();
    Packet::PubAck(ack).encode(V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0x40, 0x02, 0x00, 0x03]);

    let mut publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s("t"),
        packet_id: None,
        payload: Bytes::new(),
        properties: PublishProperties::default(),
    };
    publish.properties.user_properties.push((s("k"), s("v")));
    out.clear();
    Packet::Publish(publish).encode(V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0x30, 0x03, 0x00, 0x01, b't']);

    // any failure is 0x80 in a 3.1.1 SUBACK, and a CONNACK reason without a
    // 3.1.1 return code becomes the closest one
    let suback = SubAck {
        packet_id: 1,
        reason_codes: vec![ReasonCode::NotAuthorized],
        properties: AckProperties::default(),
    };
    out.clear();
    Packet::SubAck(suback).encode(V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0x90, 0x03, 0x00, 0x01, 0x80]);
    let connack = ConnAck {
        session_present: false,
        reason_code: ReasonCode::ServerBusy,
        properties: ConnAckProperties::default(),
    };
    out.clear();
    Packet::ConnAck(connack).encode(V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x03]);
}
