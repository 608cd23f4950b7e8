//! One row per rule: input that breaks it, the error variant and the field
//! the error must name. Rows are named after the rule (`mqtt_3_1_2_3_...`), or
//! after the 5.0 section where the rule has no number.

use bytes::BytesMut;

use super::{decode, decode_err};
use crate::codec::{
    DecodeError, Limits, Packet, PacketType, ProtocolVersion,
    ProtocolVersion::{V31, V311, V5},
    ReasonCode,
};

/// Which `DecodeError` variant a row expects.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Malformed,
    Protocol,
    Topic,
    Unsupported,
    Reserved,
}

/// `first` byte, a one-byte remaining length, then `body`. Built by hand, not
/// by the encoder.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut out = vec![first, body.len() as u8];
    out.extend_from_slice(body);
    out
}

/// A string field: two-byte length, then the bytes.
fn string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// A 5.0 property block: one-byte property length, then the properties.
fn props(p: &[u8]) -> Vec<u8> {
    let mut out = vec![p.len() as u8];
    out.extend_from_slice(p);
    out
}

/// CONNECT with `name`, `level`, `flags`, keep alive 0, 5.0 `properties` if
/// given, client id "c", then `rest` (will, user name, password).
fn connect(name: &[u8], level: u8, flags: u8, properties: Option<&[u8]>, rest: &[u8]) -> Vec<u8> {
    let mut body = string(name);
    body.extend_from_slice(&[level, flags, 0x00, 0x00]);
    if let Some(p) = properties {
        body.extend(props(p));
    }
    body.extend(string(b"c"));
    body.extend_from_slice(rest);
    packet(0x10, &body)
}

fn connect_v311(flags: u8, rest: &[u8]) -> Vec<u8> {
    connect(b"MQTT", 4, flags, None, rest)
}

fn connect_v5(properties: &[u8]) -> Vec<u8> {
    connect(b"MQTT", 5, 0x02, Some(properties), &[])
}

/// 5.0 QoS 0 PUBLISH to `topic` with `properties` and payload "x".
fn publish_v5(topic: &[u8], properties: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    body.extend(props(properties));
    body.push(b'x');
    packet(0x30, &body)
}

/// SUBSCRIBE with packet id 1, 5.0 `properties` if given, then `payload`.
fn subscribe(properties: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    if let Some(p) = properties {
        body.extend(props(p));
    }
    body.extend_from_slice(payload);
    packet(0x82, &body)
}

fn filter(f: &[u8], options: u8) -> Vec<u8> {
    let mut out = string(f);
    out.push(options);
    out
}

#[rustfmt::skip]
fn rows() -> Vec<(&'static str, ProtocolVersion, Vec<u8>, Kind, &'static str)> {
    use Kind::*;
    vec![
        // Fixed header
        ("mqtt_2_2_1_packet_type_0_is_reserved", V311, vec![0x00, 0x00], Reserved, ""),
        ("mqtt_2_2_1_packet_type_15_is_reserved_before_5_0", V311, vec![0xF0, 0x00], Reserved, ""),
        ("mqtt_2_2_1_auth_is_reserved_in_3_1", V31, vec![0xF0, 0x00], Reserved, ""),
        ("mqtt_2_2_2_1_puback_flags_must_be_0", V311, vec![0x41, 0x02, 0x00, 0x01], Malformed, "fixed header flags"),
        ("mqtt_2_2_2_1_pingreq_flags_must_be_0", V5, vec![0xC8, 0x00], Malformed, "fixed header flags"),
        ("mqtt_3_6_1_1_pubrel_flags_must_be_0010", V311, vec![0x60, 0x02, 0x00, 0x01], Malformed, "fixed header flags"),
        ("mqtt_3_8_1_1_subscribe_flags_must_be_0010", V5, vec![0x80, 0x00], Malformed, "fixed header flags"),
        ("mqtt_3_8_1_1_subscribe_dup_is_only_tolerated_in_3_1", V311, vec![0x8A, 0x00], Malformed, "fixed header flags"),
        ("mqtt_3_10_1_1_unsubscribe_flags_must_be_0010", V311, vec![0xA3, 0x00], Malformed, "fixed header flags"),
        ("mqtt_3_3_1_4_publish_qos_3_is_malformed", V311, vec![0x36, 0x00], Malformed, "fixed header flags"),
        ("mqtt_3_3_1_2_publish_dup_must_be_0_at_qos_0", V5, vec![0x38, 0x00], Malformed, "fixed header flags"),
        ("section_2_2_3_remaining_length_at_most_4_bytes", V311, vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], Malformed, "remaining length"),
        ("section_3_12_1_pingreq_remaining_length_0", V5, vec![0xC0, 0x01, 0x00], Malformed, "remaining length"),
        ("section_3_13_1_pingresp_remaining_length_0", V311, vec![0xD0, 0x01, 0x00], Malformed, "remaining length"),
        ("section_3_14_1_disconnect_remaining_length_0_before_5_0", V311, vec![0xE0, 0x01, 0x00], Malformed, "remaining length"),
        ("section_3_4_1_puback_remaining_length_2_before_5_0", V311, vec![0x40, 0x03, 0x00, 0x01, 0x00], Malformed, "remaining length"),
        ("section_3_2_1_connack_remaining_length_2_before_5_0", V31, vec![0x20, 0x03, 0x00, 0x00, 0x00], Malformed, "remaining length"),
        ("section_3_11_1_unsuback_remaining_length_2_before_5_0", V311, vec![0xB0, 0x03, 0x00, 0x01, 0x00], Malformed, "remaining length"),
        ("section_2_2_3_bytes_after_the_last_field", V311, { let mut c = connect_v311(0x02, &[]); c[1] += 1; c.push(0); c }, Malformed, "remaining length"),
        ("section_2_2_3_body_shorter_than_its_fields", V311, packet(0x32, &[0x00, 0x01, b't']), Malformed, "packet identifier"),
        ("mqtt_1_5_3_string_longer_than_the_packet", V311, packet(0x30, &[0x00, 0x05, b'a']), Malformed, "topic name"),
        // Strings
        ("mqtt_1_5_3_1_string_must_be_utf8", V311, connect(b"MQTT", 4, 0x02, None, &[]).iter().copied().enumerate().map(|(i, b)| if i == 14 { 0xFF } else { b }).collect(), Malformed, "client identifier"),
        ("mqtt_1_5_3_2_string_must_not_contain_null", V5, publish_v5(b"a\0b", &[]), Malformed, "topic name"),
        // CONNECT
        ("mqtt_3_1_2_1_unknown_protocol_name", V311, connect(b"MQTX", 4, 0x02, None, &[]), Unsupported, ""),
        ("mqtt_3_1_2_2_unknown_protocol_level", V311, connect(b"MQTT", 6, 0x02, None, &[]), Unsupported, ""),
        ("mqtt_3_1_2_2_level_3_needs_name_mqisdp", V311, connect(b"MQTT", 3, 0x02, None, &[]), Unsupported, ""),
        ("mqtt_3_1_2_2_name_mqisdp_needs_level_3", V311, connect(b"MQIsdp", 4, 0x02, None, &[]), Unsupported, ""),
        ("mqtt_3_1_2_3_connect_reserved_flag_must_be_0", V311, connect_v311(0x03, &[]), Malformed, "connect flags"),
        ("mqtt_3_1_2_13_will_qos_0_without_will_flag", V311, connect_v311(0x0A, &[]), Malformed, "will QoS"),
        ("mqtt_3_1_2_15_will_retain_0_without_will_flag", V5, connect(b"MQTT", 5, 0x22, Some(&[]), &[]), Malformed, "will retain"),
        ("mqtt_3_1_2_14_will_qos_3_is_malformed", V311, connect_v311(0x1E, &[&string(b"t")[..], &string(b"p")].concat()), Malformed, "will QoS"),
        ("mqtt_3_1_2_22_password_needs_user_name_in_3_1_1", V311, connect_v311(0x42, &string(b"p")), Malformed, "connect flags"),
        ("mqtt_3_1_2_22_password_needs_user_name_in_3_1", V31, connect(b"MQIsdp", 3, 0x42, None, &string(b"p")), Malformed, "connect flags"),
        ("mqtt_3_1_2_9_will_topic_and_payload_must_be_present", V311, connect_v311(0x06, &string(b"t")), Malformed, "will payload"),
        ("mqtt_3_1_2_19_user_name_must_be_present", V311, connect_v311(0x82, &[]), Malformed, "user name"),
        ("mqtt_3_1_2_21_password_must_be_present_in_3_1_1", V311, connect_v311(0xC2, &string(b"u")), Malformed, "password"),
        ("mqtt_3_3_2_2_will_topic_without_wildcards", V311, connect_v311(0x06, &[&string(b"a/+")[..], &string(b"p")].concat()), Topic, "will topic"),
        ("section_3_1_2_11_2_receive_maximum_0_is_a_protocol_error", V5, connect_v5(&[0x21, 0x00, 0x00]), Protocol, "Receive Maximum"),
        ("section_3_1_2_11_4_maximum_packet_size_0_is_a_protocol_error", V5, connect_v5(&[0x27, 0, 0, 0, 0]), Protocol, "Maximum Packet Size"),
        ("section_3_1_2_11_6_request_response_information_0_or_1", V5, connect_v5(&[0x19, 0x02]), Protocol, "Request Response Information"),
        ("section_3_1_2_11_7_request_problem_information_0_or_1", V5, connect_v5(&[0x17, 0x02]), Protocol, "Request Problem Information"),
        ("section_3_1_2_11_10_authentication_data_needs_a_method", V5, connect_v5(&[0x16, 0x00, 0x01, 0x01]), Protocol, "Authentication Data"),
        ("section_3_1_2_11_duplicate_session_expiry_interval", V5, connect_v5(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]), Protocol, "Session Expiry Interval"),
        ("section_2_2_2_2_topic_alias_not_allowed_in_connect", V5, connect_v5(&[0x23, 0x00, 0x01]), Malformed, "Topic Alias"),
        ("section_3_1_3_2_3_will_response_topic_without_wildcards", V5, connect(b"MQTT", 5, 0x06, Some(&[]), &[&[0x04, 0x08, 0x00, 0x01, b'#'][..], &string(b"t"), &string(b"p")].concat()), Topic, "Response Topic"),
        // CONNACK
        ("mqtt_3_2_2_1_connack_reserved_flags_must_be_0", V311, vec![0x20, 0x02, 0x02, 0x00], Malformed, "connect acknowledge flags"),
        ("section_3_2_2_3_connack_return_codes_6_to_255_are_reserved", V311, vec![0x20, 0x02, 0x00, 0x06], Malformed, "return code"),
        ("mqtt_3_2_2_4_no_session_present_on_refusal", V311, vec![0x20, 0x02, 0x01, 0x05], Protocol, "session present"),
        ("mqtt_3_2_2_6_no_session_present_on_refusal_5_0", V5, vec![0x20, 0x03, 0x01, 0x87, 0x00], Protocol, "session present"),
        ("section_3_2_2_2_connack_reason_code_must_be_a_connack_code", V5, vec![0x20, 0x03, 0x00, 0x10, 0x00], Protocol, "reason code"),
        ("section_3_2_2_3_4_maximum_qos_0_or_1", V5, vec![0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02], Protocol, "Maximum QoS"),
        ("section_3_2_2_3_5_retain_available_0_or_1", V5, vec![0x20, 0x05, 0x00, 0x00, 0x02, 0x25, 0x07], Protocol, "Retain Available"),
        // PUBLISH
        ("mqtt_2_3_1_1_publish_packet_id_non_zero", V311, packet(0x32, &[0x00, 0x01, b't', 0x00, 0x00]), Protocol, "packet identifier"),
        ("mqtt_3_3_2_2_topic_name_without_wildcards", V311, packet(0x30, &string(b"a/#")), Topic, "topic name"),
        ("mqtt_4_7_3_1_topic_name_not_empty", V311, packet(0x30, &string(b"")), Topic, "topic name"),
        ("section_3_3_2_1_empty_topic_needs_a_topic_alias", V5, publish_v5(b"", &[]), Protocol, "topic name"),
        ("section_3_3_2_3_4_topic_alias_0_is_a_protocol_error", V5, publish_v5(b"t", &[0x23, 0x00, 0x00]), Protocol, "Topic Alias"),
        ("section_3_3_2_3_2_payload_format_indicator_0_or_1", V5, publish_v5(b"t", &[0x01, 0x02]), Protocol, "Payload Format Indicator"),
        ("section_3_3_2_3_8_subscription_identifier_0_is_a_protocol_error", V5, publish_v5(b"t", &[0x0B, 0x00]), Protocol, "Subscription Identifier"),
        ("section_3_3_2_3_duplicate_message_expiry_interval", V5, publish_v5(b"t", &[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1]), Protocol, "Message Expiry Interval"),
        ("section_2_2_2_2_session_expiry_not_allowed_in_publish", V5, publish_v5(b"t", &[0x11, 0, 0, 0, 1]), Malformed, "Session Expiry Interval"),
        ("section_2_2_2_2_unknown_property_identifier", V5, publish_v5(b"t", &[0x7F, 0x00]), Malformed, "property identifier"),
        ("section_2_2_2_1_property_length_past_the_end", V5, packet(0x30, &[0x00, 0x01, b't', 0x05, 0x01]), Malformed, "property length"),
        ("section_2_2_2_1_property_value_past_the_property_length", V5, packet(0x30, &[0x00, 0x01, b't', 0x02, 0x02, 0x00, 0x00, 0x00, 0x01]), Malformed, "Message Expiry Interval"),
        ("section_3_3_2_3_5_response_topic_without_wildcards", V5, publish_v5(b"t", &[0x08, 0x00, 0x01, b'+']), Topic, "Response Topic"),
        // SUBSCRIBE
        ("mqtt_2_3_1_1_subscribe_packet_id_non_zero", V311, packet(0x82, &[&[0x00, 0x00][..], &filter(b"a", 0)].concat()), Protocol, "packet identifier"),
        ("mqtt_3_8_3_3_subscribe_needs_a_topic_filter", V311, subscribe(None, &[]), Protocol, "topic filters"),
        ("mqtt_3_8_3_2_subscribe_needs_a_topic_filter_5_0", V5, subscribe(Some(&[]), &[]), Protocol, "topic filters"),
        ("mqtt_3_8_3_4_reserved_option_bits_3_1_1", V311, subscribe(None, &filter(b"a", 0x04)), Malformed, "subscription options"),
        ("mqtt_3_8_3_4_requested_qos_3_3_1_1", V311, subscribe(None, &filter(b"a", 0x03)), Malformed, "subscription options"),
        ("mqtt_4_7_1_2_topic_filter_hash_must_be_last", V311, subscribe(None, &filter(b"a/#/b", 0)), Topic, "topic filter"),
        ("mqtt_4_7_1_3_topic_filter_plus_whole_level", V5, subscribe(Some(&[]), &filter(b"a+", 0)), Topic, "topic filter"),
        ("mqtt_3_8_3_5_reserved_option_bits_5_0", V5, subscribe(Some(&[]), &filter(b"a", 0x40)), Malformed, "subscription options"),
        ("section_3_8_3_1_maximum_qos_3_is_a_protocol_error", V5, subscribe(Some(&[]), &filter(b"a", 0x03)), Protocol, "subscription options"),
        ("section_3_8_3_1_retain_handling_3_is_a_protocol_error", V5, subscribe(Some(&[]), &filter(b"a", 0x30)), Protocol, "subscription options"),
        ("mqtt_3_8_3_4_no_local_on_shared_subscription", V5, subscribe(Some(&[]), &filter(b"$share/g/a", 0x04)), Protocol, "subscription options"),
        ("section_3_8_2_1_2_subscription_identifier_0", V5, subscribe(Some(&[0x0B, 0x00]), &filter(b"a", 0)), Protocol, "Subscription Identifier"),
        ("section_3_8_2_1_2_subscription_identifier_once", V5, subscribe(Some(&[0x0B, 0x01, 0x0B, 0x02]), &filter(b"a", 0)), Protocol, "Subscription Identifier"),
        ("section_1_5_5_subscription_identifier_over_4_bytes", V5, subscribe(Some(&[0x0B, 0xFF, 0xFF, 0xFF, 0xFF]), &filter(b"a", 0)), Malformed, "Subscription Identifier"),
        // SUBACK
        ("section_3_9_3_suback_return_code_reserved", V311, vec![0x90, 0x03, 0x00, 0x01, 0x03], Malformed, "return code"),
        ("mqtt_3_9_3_1_suback_needs_a_return_code", V311, vec![0x90, 0x02, 0x00, 0x01], Protocol, "reason codes"),
        ("section_3_9_3_suback_reason_code_must_be_a_suback_code", V5, vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x10], Protocol, "reason code"),
        // UNSUBSCRIBE / UNSUBACK
        ("mqtt_3_10_3_2_unsubscribe_needs_a_topic_filter", V311, vec![0xA2, 0x02, 0x00, 0x01], Protocol, "topic filters"),
        ("mqtt_4_7_1_2_unsubscribe_filter_hash_must_be_last", V5, packet(0xA2, &[&[0x00, 0x01, 0x00][..], &string(b"#/a")].concat()), Topic, "topic filter"),
        ("section_2_2_2_2_only_user_properties_in_unsubscribe", V5, packet(0xA2, &[&[0x00, 0x01, 0x02, 0x0B, 0x01][..], &string(b"a")].concat()), Malformed, "Subscription Identifier"),
        ("section_3_11_3_unsuback_needs_a_reason_code", V5, vec![0xB0, 0x03, 0x00, 0x01, 0x00], Protocol, "reason codes"),
        ("section_3_11_3_unsuback_reason_code_must_be_an_unsuback_code", V5, vec![0xB0, 0x04, 0x00, 0x01, 0x00, 0x01], Protocol, "reason code"),
        // PUBACK, PUBREC, PUBREL, PUBCOMP
        ("mqtt_2_3_1_1_puback_packet_id_non_zero", V311, vec![0x40, 0x02, 0x00, 0x00], Protocol, "packet identifier"),
        ("mqtt_2_3_1_1_pubcomp_packet_id_non_zero_5_0", V5, vec![0x70, 0x02, 0x00, 0x00], Protocol, "packet identifier"),
        ("section_3_6_2_1_pubrel_reason_code_must_be_a_pubrel_code", V5, vec![0x62, 0x03, 0x00, 0x01, 0x10], Protocol, "reason code"),
        ("section_2_4_unknown_reason_code", V5, vec![0x40, 0x03, 0x00, 0x01, 0x03], Malformed, "reason code"),
        ("section_2_2_2_2_topic_alias_not_allowed_in_puback", V5, vec![0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01], Malformed, "Topic Alias"),
        ("section_3_4_2_2_duplicate_reason_string", V5, vec![0x50, 0x0C, 0x00, 0x01, 0x00, 0x08, 0x1F, 0x00, 0x01, b'a', 0x1F, 0x00, 0x01, b'b'], Protocol, "Reason String"),
        // DISCONNECT, AUTH
        ("section_3_14_2_1_disconnect_reason_code_must_be_a_disconnect_code", V5, vec![0xE0, 0x01, 0x18], Protocol, "reason code"),
        ("section_3_14_2_2_disconnect_properties_past_the_end", V5, vec![0xE0, 0x02, 0x00, 0x05], Malformed, "property length"),
        ("section_3_15_2_1_auth_reason_code_must_be_an_auth_code", V5, vec![0xF0, 0x01, 0x04], Protocol, "reason code"),
        ("section_3_15_2_2_3_auth_data_needs_a_method", V5, vec![0xF0, 0x06, 0x18, 0x04, 0x16, 0x00, 0x01, 0x01], Protocol, "Authentication Data"),
    ]
}

#[test]
fn every_malformed_input_is_rejected_naming_its_field() {
    let mut names = std::collections::HashSet::new();
    for (name, version, bytes, kind, field) in rows() {
        assert!(names.insert(name), "duplicate row {name}");
        let err = decode_err(&bytes, version);
        let (got_kind, got_field, reason) = match &err {
            DecodeError::Malformed { field, .. } => {
                (Kind::Malformed, *field, ReasonCode::MalformedPacket)
            }
            DecodeError::ProtocolError { field, .. } => {
                (Kind::Protocol, *field, ReasonCode::ProtocolError)
            }
            DecodeError::InvalidTopic { field, packet, .. } => (
                Kind::Topic,
                *field,
                if *packet == PacketType::Publish {
                    ReasonCode::TopicNameInvalid
                } else {
                    ReasonCode::MalformedPacket
                },
            ),
            DecodeError::UnsupportedProtocolVersion { .. } => (
                Kind::Unsupported,
                "",
                ReasonCode::UnsupportedProtocolVersion,
            ),
            DecodeError::ReservedPacketType { .. } => {
                (Kind::Reserved, "", ReasonCode::MalformedPacket)
            }
            DecodeError::PacketTooLarge { .. } => panic!("{name}: unexpected {err}"),
        };
        assert_eq!((got_kind, got_field), (kind, field), "{name}: {err}");
        assert_eq!(err.reason_code(), reason, "{name}");
    }
}

#[test]
fn header_errors_come_before_the_body_arrives() {
    // bad flags: the first byte is enough
    assert!(matches!(
        decode_err(&[0x80], V311),
        DecodeError::Malformed {
            field: "fixed header flags",
            ..
        }
    ));
    // a fixed-size packet announcing another size: the header is enough
    assert!(matches!(
        decode_err(&[0xC0, 0x05], V5),
        DecodeError::Malformed {
            field: "remaining length",
            ..
        }
    ));
    // AUTH before 5.0
    assert!(matches!(
        decode_err(&[0xF0], V311),
        DecodeError::ReservedPacketType {
            packet_type: 15,
            ..
        }
    ));
}

#[test]
fn packet_too_large_is_reported_as_soon_as_the_header_is_readable() {
    let limits = Limits {
        max_packet_size: 100,
        version: V5,
        ..Limits::default()
    };
    // PUBLISH announcing 16,384 bytes of body; none of them has arrived
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x01][..]);
    let err = Packet::decode(&mut buf, &limits).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            packet: 3,
            size: 4 + 16_384,
            max: 100
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
    // the limit counts the whole packet: 2 + 98 fits, 2 + 99 does not
    let mut exact = vec![0x30, 98, 0x00, 0x01, b't'];
    exact.resize(100, 0);
    assert!(matches!(
        Packet::decode(&mut BytesMut::from(&exact[..]), &limits),
        Ok(Some(_))
    ));
    let mut over = BytesMut::from(&[0x30, 99][..]);
    assert!(matches!(
        Packet::decode(&mut over, &limits),
        Err(DecodeError::PacketTooLarge { size: 101, .. })
    ));
    // CONNECT is checked too, whatever version it announces
    let mut connect = BytesMut::from(&[0x10, 0xFF, 0x01][..]);
    assert!(matches!(
        Packet::decode(&mut connect, &limits),
        Err(DecodeError::PacketTooLarge { packet: 1, .. })
    ));
}

#[test]
fn an_incomplete_remaining_length_waits() {
    assert_eq!(decode(&[0x30, 0x80, 0x80], V311), Ok(None));
    assert_eq!(decode(&[], V5), Ok(None));
}

#[test]
fn server_only_packets_from_a_client_are_protocol_errors_even_when_malformed_5_0_section_4_13() {
    let limits = Limits {
        version: V5,
        ..Limits::default()
    };
    for (name, bytes, packet) in [
        // CONNACK: flags, reason code, property length
        (
            "CONNACK",
            vec![0x20, 0x03, 0x00, 0x00, 0x00],
            PacketType::ConnAck,
        ),
        // CONNACK with a reserved flag set and a short body: malformed too
        (
            "CONNACK malformed",
            vec![0x21, 0x01, 0x00],
            PacketType::ConnAck,
        ),
        // SUBACK: packet id 1, no properties, granted QoS 0
        (
            "SUBACK",
            vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x00],
            PacketType::SubAck,
        ),
        // UNSUBACK without its reason codes
        (
            "UNSUBACK malformed",
            vec![0xB0, 0x01, 0x00],
            PacketType::UnsubAck,
        ),
        ("PINGRESP", vec![0xD0, 0x00], PacketType::PingResp),
        // PINGRESP with a body: malformed for a client reading it
        (
            "PINGRESP with a body",
            vec![0xD0, 0x01, 0x00],
            PacketType::PingResp,
        ),
    ] {
        let err =
            Packet::decode_from_client(&mut BytesMut::from(&bytes[..]), &limits).expect_err(name);
        assert!(
            matches!(err, DecodeError::ProtocolError { packet: p, field: "packet type", .. } if p == packet),
            "{name}: {err:?}"
        );
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError, "{name}");
    }
    // packets that go both ways are decoded as usual
    let mut pingreq = BytesMut::from(&[0xC0, 0x00][..]);
    assert_eq!(
        Packet::decode_from_client(&mut pingreq, &limits),
        Ok(Some(Packet::PingReq))
    );
}

#[test]
fn control_characters_in_names_are_malformed_when_refused_3_1_1_section_1_5_3_and_5_0_section_1_5_4(
) {
    let strict = |version| Limits {
        version,
        refuse_control_characters: true,
        ..Limits::default()
    };
    let connect_with_id = |level: u8, id: &str| {
        let mut body = string(b"MQTT");
        body.extend_from_slice(&[level, 0x02, 0x00, 0x00]);
        if level == 5 {
            body.push(0); // no properties
        }
        body.extend(string(id.as_bytes()));
        packet(0x10, &body)
    };
    // one row per name field; U+0001, U+001F, U+007F and U+0085 (NEL, two
    // bytes in UTF-8) are control characters
    let rows: Vec<(&str, ProtocolVersion, Vec<u8>, &str)> = vec![
        (
            "client id U+0001",
            V311,
            connect_with_id(4, "a\u{1}b"),
            "client identifier",
        ),
        (
            "client id U+0085",
            V5,
            connect_with_id(5, "a\u{85}"),
            "client identifier",
        ),
        // user name flag, then the user name after client id "c"
        (
            "user name U+000A",
            V311,
            connect_v311(0x82, &string(b"us\ner")),
            "user name",
        ),
        // will flag: will topic, then will message
        (
            "will topic U+001B",
            V311,
            connect_v311(0x06, &[&string(b"w/\x1b")[..], &string(b"m")].concat()),
            "will topic",
        ),
        (
            "topic name U+001F",
            V311,
            packet(0x30, &[&string(b"a/\x1f")[..], b"x"].concat()),
            "topic name",
        ),
        (
            "topic name U+007F",
            V5,
            packet(0x30, &[&string(b"a/\x7f")[..], &[0], b"x"].concat()),
            "topic name",
        ),
        (
            "topic filter U+0001",
            V311,
            packet(0x82, &[&[0, 1][..], &string(b"a/\x01"), &[0]].concat()),
            "topic filter",
        ),
        (
            "unsubscribe filter U+0009",
            V311,
            packet(0xA2, &[&[0, 1][..], &string(b"a\tb")].concat()),
            "topic filter",
        ),
    ];
    for (name, version, bytes, field) in rows {
        let err =
            Packet::decode(&mut BytesMut::from(&bytes[..]), &strict(version)).expect_err(name);
        assert!(
            matches!(&err, DecodeError::Malformed { field: f, reason, .. } if *f == field && reason.contains("control character")),
            "{name}: {err:?}"
        );
        assert_eq!(err.reason_code(), ReasonCode::MalformedPacket, "{name}");
        // the same bytes decode when control characters are allowed
        assert!(
            matches!(decode(&bytes, version), Ok(Some(_))),
            "{name} allowed: {:?}",
            decode(&bytes, version)
        );
    }
    // printable text beyond ASCII is not a control character
    let ok = packet(
        0x30,
        &[&string("caf\u{e9}/\u{2603}".as_bytes())[..], b"x"].concat(),
    );
    assert!(matches!(
        Packet::decode(&mut BytesMut::from(&ok[..]), &strict(V311)),
        Ok(Some(Packet::Publish(_)))
    ));
}
