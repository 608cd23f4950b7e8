//! MQTT 5.0 properties (5.0 section 2.2.2): one struct per packet family, so a
//! property that a packet cannot carry cannot be set. Decoding rejects a
//! property not allowed in the packet, and a duplicate of one that may appear
//! only once (5.0 section 2.2.2.2), as a Protocol Error / Malformed Packet.

use bytes::Bytes;
use bytestring::ByteString;

/// User Property (0x26) pairs, in order; names may repeat.
pub type UserProperties = Vec<(ByteString, ByteString)>;

/// Properties of CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectProperties {
    /// 0x11, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x21, non-zero.
    pub receive_maximum: Option<u16>,
    /// 0x27, non-zero.
    pub maximum_packet_size: Option<u32>,
    /// 0x22.
    pub topic_alias_maximum: Option<u16>,
    /// 0x19, 0 or 1.
    pub request_response_information: Option<bool>,
    /// 0x17, 0 or 1.
    pub request_problem_information: Option<bool>,
    /// 0x26.
    pub user_properties: UserProperties,
    /// 0x15.
    pub authentication_method: Option<ByteString>,
    /// 0x16; only with an authentication method.
    pub authentication_data: Option<Bytes>,
}

/// Will Properties in the CONNECT payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WillProperties {
    /// 0x18, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x01, 0 or 1.
    pub payload_format_indicator: Option<bool>,
    /// 0x02, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03.
    pub content_type: Option<ByteString>,
    /// 0x08, a topic name (no wildcards).
    pub response_topic: Option<ByteString>,
    /// 0x09.
    pub correlation_data: Option<Bytes>,
    /// 0x26.
    pub user_properties: UserProperties,
}

/// Properties of CONNACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAckProperties {
    /// 0x11.
    pub session_expiry_interval: Option<u32>,
    /// 0x21.
    pub receive_maximum: Option<u16>,
    /// 0x24, 0 or 1.
    pub maximum_qos: Option<u8>,
    /// 0x25.
    pub retain_available: Option<bool>,
    /// 0x27.
    pub maximum_packet_size: Option<u32>,
    /// 0x12.
    pub assigned_client_identifier: Option<ByteString>,
    /// 0x22.
    pub topic_alias_maximum: Option<u16>,
    /// 0x1F.
    pub reason_string: Option<ByteString>,
    /// 0x26.
    pub user_properties: UserProperties,
    /// 0x28.
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29.
    pub subscription_identifiers_available: Option<bool>,
    /// 0x2A.
    pub shared_subscription_available: Option<bool>,
    /// 0x13.
    pub server_keep_alive: Option<u16>,
    /// 0x1A.
    pub response_information: Option<ByteString>,
    /// 0x1C.
    pub server_reference: Option<ByteString>,
    /// 0x15.
    pub authentication_method: Option<ByteString>,
    /// 0x16.
    pub authentication_data: Option<Bytes>,
}

/// Properties of PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishProperties {
    /// 0x01, 0 (unspecified bytes) or 1 (UTF-8).
    pub payload_format_indicator: Option<bool>,
    /// 0x02, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x23, non-zero.
    pub topic_alias: Option<u16>,
    /// 0x08, a topic name (no wildcards).
    pub response_topic: Option<ByteString>,
    /// 0x09.
    pub correlation_data: Option<Bytes>,
    /// 0x26.
    pub user_properties: UserProperties,
    /// 0x0B, each 1..=268,435,455; several allowed (server to client only).
    pub subscription_identifiers: Vec<u32>,
    /// 0x03.
    pub content_type: Option<ByteString>,
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckProperties {
    /// 0x1F.
    pub reason_string: Option<ByteString>,
    /// 0x26.
    pub user_properties: UserProperties,
}

/// Properties of SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeProperties {
    /// 0x0B, 1..=268,435,455; at most one.
    pub subscription_identifier: Option<u32>,
    /// 0x26.
    pub user_properties: UserProperties,
}

/// Properties of DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisconnectProperties {
    /// 0x11; only from the client.
    pub session_expiry_interval: Option<u32>,
    /// 0x1F.
    pub reason_string: Option<ByteString>,
    /// 0x26.
    pub user_properties: UserProperties,
    /// 0x1C; only from the server.
    pub server_reference: Option<ByteString>,
}

/// Properties of AUTH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthProperties {
    /// 0x15.
    pub authentication_method: Option<ByteString>,
    /// 0x16.
    pub authentication_data: Option<Bytes>,
    /// 0x1F.
    pub reason_string: Option<ByteString>,
    /// 0x26.
    pub user_properties: UserProperties,
}
