//! Annotated byte fixtures for MQTT 5.0, one or more per packet type, each
//! checked by [`check_fixture`]. Properties are listed in the order the
//! encoder writes them; the decoder accepts any order.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::{cat, check_fixture, decode, limits};
use crate::codec::{
    AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    Disconnect, DisconnectProperties, LastWill, Packet, ProtocolVersion::V5, PubResponse, Publish,
    PublishProperties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeProperties,
    SubscriptionOptions, UnsubAck, Unsubscribe, WillProperties,
};

fn s(text: &'static str) -> ByteString {
    ByteString::from_static(text)
}

#[test]
#[rustfmt::skip]
fn connect_v5_with_properties_will_properties_and_password_alone() {
    let bytes = cat(&[
        &[0x10, 0x3B],                               // CONNECT, remaining length 59
        &[0x00, 0x04, b'M', b'Q', b'T', b'T'],       // protocol name "MQTT"
        &[0x05],                                     // protocol level 5
        &[0b0100_0110],                              // password (no user name: allowed in 5.0), will QoS 0, will, clean start
        &[0x00, 0x1E],                               // keep alive 30
        &[0x17],                                     // property length 23
        &[0x11, 0x00, 0x00, 0x0E, 0x10],             //   Session Expiry Interval 3600
        &[0x21, 0x00, 0x14],                         //   Receive Maximum 20
        &[0x15, 0x00, 0x01, b'm'],                   //   Authentication Method "m"
        &[0x16, 0x00, 0x01, 0x01],                   //   Authentication Data [1]
        &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v'], // User Property ("k", "v")
        &[0x00, 0x02, b'c', b'1'],                   // client identifier "c1"
        &[0x0B],                                     // will property length 11
        &[0x18, 0x00, 0x00, 0x00, 0x05],             //   Will Delay Interval 5
        &[0x01, 0x01],                               //   Payload Format Indicator 1 (UTF-8)
        &[0x08, 0x00, 0x01, b'r'],                   //   Response Topic "r"
        &[0x00, 0x01, b'w'],                         // will topic "w"
        &[0x00, 0x01, b'x'],                         // will payload "x"
        &[0x00, 0x01, b'p'],                         // password "p"
    ]);
    let connect = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 30,
        client_id: s("c1"),
        will: Some(LastWill {
            topic: s("w"),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: Some(5),
                payload_format_indicator: Some(true),
                response_topic: Some(s("r")),
                ..Default::default()
            },
        }),
        username: None,
        password: Some(Bytes::from_static(b"p")),
        properties: ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(20),
            authentication_method: Some(s("m")),
            authentication_data: Some(Bytes::from_static(&[1])),
            user_properties: vec![(s("k"), s("v"))],
            ..Default::default()
        },
    };
    check_fixture(V5, &bytes, &Packet::Connect(Box::new(connect)));

    // A detached will is equal and owns its bytes: none points into the
    // buffer it was decoded from.
    let mut buf = BytesMut::from(&bytes[..]);
    let buffer = buf.as_ptr_range();
    let Ok(Some(Packet::Connect(decoded))) = Packet::decode(&mut buf, &limits(V5)) else {
        panic!("the fixture decodes")
    };
    let will = decoded.will.expect("the fixture has a will");
    assert!(buffer.contains(&will.topic.as_ptr()), "decoded as a slice");
    let detached = will.detached();
    assert_eq!(detached, will);
    let p = &detached.properties;
    for ptr in [
        detached.topic.as_ptr(),
        detached.payload.as_ptr(),
        p.response_topic.as_ref().expect("in the fixture").as_ptr(),
    ] {
        assert!(!buffer.contains(&ptr), "still a slice of the decoded buffer");
    }
}

#[test]
#[rustfmt::skip]
fn connack_v5_with_properties() {
    let bytes = cat(&[
        &[0x20, 0x0F],                   // CONNACK, remaining length 15
        &[0x00],                         // no session present
        &[0x00],                         // reason code Success
        &[0x0C],                         // property length 12
        &[0x24, 0x01],                   //   Maximum QoS 1
        &[0x25, 0x00],                   //   Retain Available 0
        &[0x12, 0x00, 0x02, b'i', b'd'], //   Assigned Client Identifier "id"
        &[0x22, 0x00, 0x0A],             //   Topic Alias Maximum 10
    ]);
    let connack = ConnAck {
        session_present: false,
        reason_code: ReasonCode::Success,
        properties: ConnAckProperties {
            maximum_qos: Some(1),
            retain_available: Some(false),
            assigned_client_identifier: Some(s("id")),
            topic_alias_maximum: Some(10),
            ..Default::default()
        },
    };
    check_fixture(V5, &bytes, &Packet::ConnAck(connack));
    let refused = [
        0x20, 0x03, // CONNACK, remaining length 3
        0x00,       // no session present
        0x87,       // reason code Not authorized
        0x00,       // property length 0
    ];
    let connack = ConnAck {
        session_present: false,
        reason_code: ReasonCode::NotAuthorized,
        properties: ConnAckProperties::default(),
    };
    check_fixture(V5, &refused, &Packet::ConnAck(connack));
}

#[test]
#[rustfmt::skip]
fn publish_v5_with_properties_and_two_subscription_identifiers() {
    let bytes = cat(&[
        &[0x32],                         // PUBLISH, QoS 1
        &[0x1D],                         // remaining length 29
        &[0x00, 0x03, b'a', b'/', b'b'], // topic name "a/b"
        &[0x00, 0x02],                   // packet identifier 2
        &[0x13],                         // property length 19
        &[0x01, 0x01],                   //   Payload Format Indicator 1
        &[0x02, 0x00, 0x00, 0x00, 0x3C], //   Message Expiry Interval 60
        &[0x23, 0x00, 0x05],             //   Topic Alias 5
        &[0x0B, 0x01],                   //   Subscription Identifier 1
        &[0x0B, 0x80, 0x01],             //   Subscription Identifier 128 (two bytes)
        &[0x03, 0x00, 0x01, b't'],       //   Content Type "t"
        b"hi",                           // payload "hi"
    ]);
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: s("a/b"),
        packet_id: Some(2),
        payload: Bytes::from_static(b"hi"),
        properties: PublishProperties {
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(60),
            topic_alias: Some(5),
            subscription_identifiers: vec![1, 128],
            content_type: Some(s("t")),
            ..Default::default()
        },
    };
    check_fixture(V5, &bytes, &Packet::Publish(publish));
}

#[test]
#[rustfmt::skip]
fn publish_v5_empty_topic_with_topic_alias() {
    let bytes = cat(&[
        &[0x30, 0x07],       // PUBLISH QoS 0, remaining length 7
        &[0x00, 0x00],       // topic name "" (the alias stands for it)
        &[0x03],             // property length 3
        &[0x23, 0x00, 0x05], //   Topic Alias 5
        b"x",                // payload "x"
    ]);
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s(""),
        packet_id: None,
        payload: Bytes::from_static(b"x"),
        properties: PublishProperties {
            topic_alias: Some(5),
            ..Default::default()
        },
    };
    check_fixture(V5, &bytes, &Packet::Publish(publish));
}

#[test]
#[rustfmt::skip]
fn publish_acks_v5_short_and_long_forms() {
    // remaining length 2: Success, no properties
    check_fixture(
        V5,
        &[0x40, 0x02, 0x00, 0x01],
        &Packet::PubAck(PubResponse::new(1)),
    );
    check_fixture(
        V5,
        &[0x70, 0x02, 0x00, 0x01],
        &Packet::PubComp(PubResponse::new(1)),
    );
    // remaining length 3: reason code, no property length
    let no_match = PubResponse {
        reason_code: ReasonCode::NoMatchingSubscribers,
        ..PubResponse::new(1)
    };
    check_fixture(
        V5,
        &[0x40, 0x03, 0x00, 0x01, 0x10],
        &Packet::PubAck(no_match),
    );
    let not_found = PubResponse {
        reason_code: ReasonCode::PacketIdentifierNotFound,
        ..PubResponse::new(1)
    };
    check_fixture(
        V5,
        &[0x62, 0x03, 0x00, 0x01, 0x92],
        &Packet::PubRel(not_found),
    );
    // reason code and properties
    let bytes = cat(&[
        &[0x50, 0x09],                   // PUBREC, remaining length 9
        &[0x00, 0x02],                   // packet identifier 2
        &[0x80],                         // reason code Unspecified error
        &[0x05],                         // property length 5
        &[0x1F, 0x00, 0x02, b'n', b'o'], //   Reason String "no"
    ]);
    let pubrec = PubResponse {
        packet_id: 2,
        reason_code: ReasonCode::UnspecifiedError,
        properties: AckProperties {
            reason_string: Some(s("no")),
            ..Default::default()
        },
    };
    check_fixture(V5, &bytes, &Packet::PubRec(pubrec));
    // Success with an empty property length is the same packet as the short form
    assert_eq!(
        decode(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x00], V5),
        Ok(Some(Packet::PubAck(PubResponse::new(1))))
    );
}

#[test]
#[rustfmt::skip]
fn subscribe_v5_with_options_and_subscription_identifier() {
    let bytes = cat(&[
        &[0x82, 0x18],                   // SUBSCRIBE, remaining length 24
        &[0x00, 0x0A],                   // packet identifier 10
        &[0x02],                         // property length 2
        &[0x0B, 0x07],                   //   Subscription Identifier 7
        &[0x00, 0x03, b'a', b'/', b'#'], // topic filter "a/#"
        &[0b0010_1101],                  // retain handling 2, retain as published, no local, QoS 1
        &[0x00, 0x0A],                   // topic filter, 10 bytes:
        b"$share/g/b",                   //   "$share/g/b"
        &[0b0001_0000],                  // retain handling 1, QoS 0
    ]);
    let subscribe = Subscribe {
        packet_id: 10,
        filters: vec![
            (
                s("a/#"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            ),
            (
                s("$share/g/b"),
                SubscriptionOptions {
                    retain_handling: RetainHandling::SendAtSubscribeIfNew,
                    ..Default::default()
                },
            ),
        ],
        properties: SubscribeProperties {
            subscription_identifier: Some(7),
            ..Default::default()
        },
    };
    check_fixture(V5, &bytes, &Packet::Subscribe(subscribe));
}

#[test]
#[rustfmt::skip]
fn suback_unsubscribe_unsuback_v5() {
    let bytes = [
        0x90, 0x05, // SUBACK, remaining length 5
        0x00, 0x0A, // packet identifier 10
        0x00,       // property length 0
        0x01, 0xA2, // Granted QoS 1, Wildcard Subscriptions not supported
    ];
    let suback = SubAck {
        packet_id: 10,
        reason_codes: vec![
            ReasonCode::GrantedQoS1,
            ReasonCode::WildcardSubscriptionsNotSupported,
        ],
        properties: AckProperties::default(),
    };
    check_fixture(V5, &bytes, &Packet::SubAck(suback));
    let bytes = cat(&[
        &[0xA2, 0x0D],                               // UNSUBSCRIBE, remaining length 13
        &[0x00, 0x0B],                               // packet identifier 11
        &[0x07],                                     // property length 7
        &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v'], //   User Property ("k", "v")
        &[0x00, 0x01, b'a'],                         // topic filter "a"
    ]);
    let unsubscribe = Unsubscribe {
        packet_id: 11,
        filters: vec![s("a")],
        user_properties: vec![(s("k"), s("v"))],
    };
    check_fixture(V5, &bytes, &Packet::Unsubscribe(unsubscribe));
    let bytes = [
        0xB0, 0x05, // UNSUBACK, remaining length 5
        0x00, 0x0B, // packet identifier 11
        0x00,       // property length 0
        0x00, 0x11, // Success, No subscription existed
    ];
    let unsuback = UnsubAck {
        packet_id: 11,
        reason_codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
        properties: AckProperties::default(),
    };
    check_fixture(V5, &bytes, &Packet::UnsubAck(unsuback));
}

#[test]
#[rustfmt::skip]
fn disconnect_v5_forms() {
    // remaining length 0: Normal disconnection
    check_fixture(
        V5,
        &[0xE0, 0x00],
        &Packet::Disconnect(Disconnect::default()),
    );
    // remaining length 1: reason code only
    let with_will = Disconnect {
        reason_code: ReasonCode::DisconnectWithWillMessage,
        ..Default::default()
    };
    check_fixture(V5, &[0xE0, 0x01, 0x04], &Packet::Disconnect(with_will));
    let bytes = cat(&[
        &[0xE0, 0x0B],                   // DISCONNECT, remaining length 11
        &[0x8E],                         // reason code Session taken over
        &[0x09],                         // property length 9
        &[0x11, 0x00, 0x00, 0x00, 0x0A], //   Session Expiry Interval 10
        &[0x1F, 0x00, 0x01, b'x'],       //   Reason String "x"
    ]);
    let disconnect = Disconnect {
        reason_code: ReasonCode::SessionTakenOver,
        properties: DisconnectProperties {
            session_expiry_interval: Some(10),
            reason_string: Some(s("x")),
            ..Default::default()
        },
    };
    check_fixture(V5, &bytes, &Packet::Disconnect(disconnect));
}

#[test]
#[rustfmt::skip]
fn auth_v5_forms() {
    // remaining length 0: Success, no properties
    check_fixture(V5, &[0xF0, 0x00], &Packet::Auth(Auth::default()));
    let bytes = cat(&[
        &[0xF0, 0x0B],                   // AUTH, remaining length 11
        &[0x18],                         // reason code Continue authentication
        &[0x09],                         // property length 9
        &[0x15, 0x00, 0x01, b'm'],       //   Authentication Method "m"
        &[0x16, 0x00, 0x02, 0x01, 0x02], //   Authentication Data [1, 2]
    ]);
    let auth = Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: AuthProperties {
            authentication_method: Some(s("m")),
            authentication_data: Some(Bytes::from_static(&[1, 2])),
            ..Default::default()
        },
    };
    check_fixture(V5, &bytes, &Packet::Auth(auth));
}

#[test]
#[rustfmt::skip]
fn ping_v5() {
    check_fixture(V5, &[0xC0, 0x00], &Packet::PingReq);
    check_fixture(V5, &[0xD0, 0x00], &Packet::PingResp);
}
