//! proptest generators of valid packets for each version: what a peer may
//! send and the decoder must accept. 3.1 / 3.1.1 packets carry default
//! properties and only the reason codes those versions can express.

use bytes::Bytes;
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;

use crate::codec::{
    AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    Disconnect, DisconnectProperties, LastWill, Packet, PacketType, ProtocolVersion, PubResponse,
    Publish, PublishProperties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscribeProperties, SubscriptionOptions, UnsubAck, Unsubscribe, UserProperties,
    WillProperties,
};

/// Printable text (no control characters, so no U+0000), including non-ASCII.
fn text() -> impl Strategy<Value = ByteString> {
    "\\PC{0,12}".prop_map(ByteString::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn topic_name() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9 /$é_-]{1,16}".prop_map(ByteString::from)
}

fn topic_filter() -> impl Strategy<Value = ByteString> {
    let level = prop_oneof![3 => "[a-z0-9]{0,4}", 1 => Just("+".to_owned())];
    (
        vec(level, 1..4),
        any::<bool>(),
        prop_oneof![4 => Just(""), 1 => Just("$share/g/")],
    )
        .prop_map(|(levels, hash, share)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str("/#");
            }
            if f.is_empty() {
                f.push('#');
            }
            ByteString::from(format!("{share}{f}"))
        })
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn user_properties() -> impl Strategy<Value = UserProperties> {
    vec((text(), text()), 0..3)
}

fn non_zero_u16() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn non_zero_u32() -> impl Strategy<Value = u32> {
    1..=u32::MAX
}

fn subscription_identifier() -> impl Strategy<Value = u32> {
    1..=268_435_455u32
}

/// Reason codes 5.0 allows in `packet`.
fn reason_code(packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    let codes: Vec<ReasonCode> = (0..=255u8)
        .filter_map(ReasonCode::from_u8)
        .filter(|c| c.is_valid_for(packet))
        .collect();
    select(codes)
}

/// Authentication method and data, data only with a method.
fn authentication() -> impl Strategy<Value = (Option<ByteString>, Option<Bytes>)> {
    prop_oneof![
        Just((None, None)),
        (text(), of(binary())).prop_map(|(m, d)| (Some(m), d)),
    ]
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        of(any::<u32>()),
        of(non_zero_u16()),
        of(non_zero_u32()),
        of(any::<u16>()),
        of(any::<bool>()),
        of(any::<bool>()),
        user_properties(),
        authentication(),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, up, (am, ad))| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: up,
                authentication_method: am,
                authentication_data: ad,
            },
        )
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        of(any::<u32>()),
        of(any::<bool>()),
        of(any::<u32>()),
        of(text()),
        of(topic_name()),
        of(binary()),
        user_properties(),
    )
        .prop_map(|(wdi, pfi, mei, ct, rt, cd, up)| WillProperties {
            will_delay_interval: wdi,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
        })
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let first = (
        of(any::<u32>()),
        of(non_zero_u16()),
        of(0..=1u8),
        of(any::<bool>()),
        of(non_zero_u32()),
        of(text()),
        of(any::<u16>()),
        of(text()),
    );
    let second = (
        user_properties(),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<u16>()),
        of(text()),
        of(text()),
        authentication(),
    );
    (first, second).prop_map(
        |((sei, rm, mq, ra, mps, aci, tam, rs), (up, wsa, sia, ssa, ska, ri, sr, (am, ad)))| {
            ConnAckProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_qos: mq,
                retain_available: ra,
                maximum_packet_size: mps,
                assigned_client_identifier: aci,
                topic_alias_maximum: tam,
                reason_string: rs,
                user_properties: up,
                wildcard_subscription_available: wsa,
                subscription_identifiers_available: sia,
                shared_subscription_available: ssa,
                server_keep_alive: ska,
                response_information: ri,
                server_reference: sr,
                authentication_method: am,
                authentication_data: ad,
            }
        },
    )
}

pub(super) fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        of(any::<bool>()),
        of(any::<u32>()),
        of(non_zero_u16()),
        of(topic_name()),
        of(binary()),
        user_properties(),
        vec(subscription_identifier(), 0..3),
        of(text()),
    )
        .prop_map(|(pfi, mei, ta, rt, cd, up, si, ct)| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
            subscription_identifiers: si,
            content_type: ct,
        })
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (of(text()), user_properties()).prop_map(|(rs, up)| AckProperties {
        reason_string: rs,
        user_properties: up,
    })
}

/// 5.0 properties from `v5`, or the default for older versions.
fn props<T: Default + Clone + std::fmt::Debug + 'static>(
    version: ProtocolVersion,
    v5: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    if version.is_v5() {
        v5.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        props(version, will_properties()),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        of(will),
        of(text()),
        of(binary()),
        props(version, connect_properties()),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // [MQTT-3.1.2-22] before 5.0 a password needs a user name
                let password = if version.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = if version.is_v5() {
        reason_code(PacketType::ConnAck).boxed()
    } else {
        (0..=5u8)
            .prop_filter_map("3.1.1 return code", ReasonCode::from_connack_return_code)
            .boxed()
    };
    (any::<bool>(), code, props(version, connack_properties())).prop_map(
        move |(present, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                // no flag in 3.1, and never with a refusal
                session_present: present
                    && version != ProtocolVersion::V31
                    && reason_code == ReasonCode::Success,
                reason_code,
                properties,
            })
        },
    )
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let topic = if version.is_v5() {
        prop_oneof![4 => topic_name(), 1 => Just(ByteString::new())].boxed()
    } else {
        topic_name().boxed()
    };
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic,
        packet_id(),
        binary(),
        props(version, publish_properties()),
    )
        .prop_map(|(qos, dup, retain, topic, id, payload, mut properties)| {
            // 5.0: an empty topic name needs a Topic Alias
            if topic.is_empty() && properties.topic_alias.is_none() {
                properties.topic_alias = Some(1);
            }
            let at_most_once = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !at_most_once,
                qos,
                retain,
                topic,
                packet_id: (!at_most_once).then_some(id),
                payload,
                properties,
            })
        })
}

fn pub_response(version: ProtocolVersion, packet: PacketType) -> impl Strategy<Value = Packet> {
    let code = if version.is_v5() {
        reason_code(packet).boxed()
    } else {
        Just(ReasonCode::Success).boxed()
    };
    (packet_id(), code, props(version, ack_properties())).prop_map(
        move |(packet_id, reason_code, properties)| {
            let ack = PubResponse {
                packet_id,
                reason_code,
                properties,
            };
            match packet {
                PacketType::PubAck => Packet::PubAck(ack),
                PacketType::PubRec => Packet::PubRec(ack),
                PacketType::PubRel => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        },
    )
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let options =
        (qos(), any::<bool>(), any::<bool>(), 0..3u8).prop_map(move |(qos, nl, rap, rh)| {
            if !version.is_v5() {
                return SubscriptionOptions {
                    qos,
                    ..Default::default()
                };
            }
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: [
                    RetainHandling::SendAtSubscribe,
                    RetainHandling::SendAtSubscribeIfNew,
                    RetainHandling::DoNotSend,
                ][rh as usize],
            }
        });
    let subscription = (topic_filter(), options).prop_map(|(filter, mut options)| {
        // 5.0 [MQTT-3.8.3-4] no No Local on shared subscriptions
        if filter.starts_with("$share/") {
            options.no_local = false;
        }
        (filter, options)
    });
    let properties = (of(subscription_identifier()), user_properties()).prop_map(|(si, up)| {
        SubscribeProperties {
            subscription_identifier: si,
            user_properties: up,
        }
    });
    (
        packet_id(),
        vec(subscription, 1..4),
        props(version, properties),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = if version.is_v5() {
        reason_code(PacketType::SubAck).boxed()
    } else {
        select(vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ])
        .boxed()
    };
    (
        packet_id(),
        vec(code, 1..5),
        props(version, ack_properties()),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        vec(topic_filter(), 1..4),
        props(version, user_properties()),
    )
        .prop_map(|(packet_id, filters, user_properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                user_properties,
            })
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    // 3.1.1 UNSUBACK has no reason codes; 5.0 has one per filter
    let codes = if version.is_v5() {
        vec(reason_code(PacketType::UnsubAck), 1..5).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (packet_id(), codes, props(version, ack_properties())).prop_map(
        |(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties,
            })
        },
    )
}

fn disconnect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    if !version.is_v5() {
        return Just(Packet::Disconnect(Disconnect::default())).boxed();
    }
    let properties = (of(any::<u32>()), of(text()), user_properties(), of(text())).prop_map(
        |(sei, rs, up, sr)| DisconnectProperties {
            session_expiry_interval: sei,
            reason_string: rs,
            user_properties: up,
            server_reference: sr,
        },
    );
    (reason_code(PacketType::Disconnect), properties)
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
        .boxed()
}

fn auth() -> impl Strategy<Value = Packet> {
    let properties =
        (authentication(), of(text()), user_properties()).prop_map(|((am, ad), rs, up)| {
            AuthProperties {
                authentication_method: am,
                authentication_data: ad,
                reason_string: rs,
                user_properties: up,
            }
        });
    (reason_code(PacketType::Auth), properties).prop_map(|(reason_code, properties)| {
        Packet::Auth(Auth {
            reason_code,
            properties,
        })
    })
}

/// Any valid packet of `version`.
pub(super) fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut all = vec![
        connect(version).boxed(),
        connack(version).boxed(),
        publish(version).boxed(),
        pub_response(version, PacketType::PubAck).boxed(),
        pub_response(version, PacketType::PubRec).boxed(),
        pub_response(version, PacketType::PubRel).boxed(),
        pub_response(version, PacketType::PubComp).boxed(),
        subscribe(version).boxed(),
        suback(version).boxed(),
        unsubscribe(version).boxed(),
        unsuback(version).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(version),
    ];
    if version.is_v5() {
        all.push(auth().boxed());
    }
    proptest::strategy::Union::new(all).boxed()
}
