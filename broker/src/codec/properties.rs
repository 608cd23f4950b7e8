//! MQTT 5.0 properties (5.0 section 2.2.2): one struct per packet family, so a
//! property that a packet cannot carry cannot be set. Decoding rejects a
//! property not allowed in the packet as a Malformed Packet (5.0 section
//! 2.2.2.2), and a duplicate of one that may appear only once as a Protocol
//! Error (User Property may repeat everywhere, Subscription Identifier in
//! PUBLISH). Value rules of section 3.x.2.y that need no session state are
//! checked here: Receive Maximum, Maximum Packet Size, Topic Alias and
//! Subscription Identifier non-zero, the 0/1 bytes, Maximum QoS 0/1, and
//! Authentication Data only with an Authentication Method.
//!
//! Never checked here (the session's job): Topic Alias against Topic Alias
//! Maximum, a Subscription Identifier in a PUBLISH sent by a client, Session
//! Expiry Interval in a DISCONNECT after a CONNECT with 0, a Payload Format
//! Indicator of 1 with a payload that is not UTF-8.
//!
//! Properties are encoded in two passes of one `write` function per struct:
//! over a [`Counter`] for the Property Length, then over the buffer.

use bytes::Bytes;
use bytestring::ByteString;

use super::primitives::{Counter, Reader, Sink, Writer, MAX_VARIABLE_BYTE_INTEGER};
use super::{topic, DecodeError, EncodeError};

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

// Property identifiers (5.0 section 2.2.2.2, table 2-4).
pub(super) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub(super) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub(super) const CONTENT_TYPE: u8 = 0x03;
pub(super) const RESPONSE_TOPIC: u8 = 0x08;
pub(super) const CORRELATION_DATA: u8 = 0x09;
pub(super) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub(super) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub(super) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub(super) const SERVER_KEEP_ALIVE: u8 = 0x13;
pub(super) const AUTHENTICATION_METHOD: u8 = 0x15;
pub(super) const AUTHENTICATION_DATA: u8 = 0x16;
pub(super) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub(super) const WILL_DELAY_INTERVAL: u8 = 0x18;
pub(super) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub(super) const RESPONSE_INFORMATION: u8 = 0x1A;
pub(super) const SERVER_REFERENCE: u8 = 0x1C;
pub(super) const REASON_STRING: u8 = 0x1F;
pub(super) const RECEIVE_MAXIMUM: u8 = 0x21;
pub(super) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub(super) const TOPIC_ALIAS: u8 = 0x23;
pub(super) const MAXIMUM_QOS: u8 = 0x24;
pub(super) const RETAIN_AVAILABLE: u8 = 0x25;
pub(super) const USER_PROPERTY: u8 = 0x26;
pub(super) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub(super) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub(super) const SUBSCRIPTION_IDENTIFIERS_AVAILABLE: u8 = 0x29;
pub(super) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// The property's name in the specification, used as the field of errors;
/// `None` for identifiers 5.0 does not define.
pub(super) fn property_name(id: u8) -> Option<&'static str> {
    Some(match id {
        PAYLOAD_FORMAT_INDICATOR => "Payload Format Indicator",
        MESSAGE_EXPIRY_INTERVAL => "Message Expiry Interval",
        CONTENT_TYPE => "Content Type",
        RESPONSE_TOPIC => "Response Topic",
        CORRELATION_DATA => "Correlation Data",
        SUBSCRIPTION_IDENTIFIER => "Subscription Identifier",
        SESSION_EXPIRY_INTERVAL => "Session Expiry Interval",
        ASSIGNED_CLIENT_IDENTIFIER => "Assigned Client Identifier",
        SERVER_KEEP_ALIVE => "Server Keep Alive",
        AUTHENTICATION_METHOD => "Authentication Method",
        AUTHENTICATION_DATA => "Authentication Data",
        REQUEST_PROBLEM_INFORMATION => "Request Problem Information",
        WILL_DELAY_INTERVAL => "Will Delay Interval",
        REQUEST_RESPONSE_INFORMATION => "Request Response Information",
        RESPONSE_INFORMATION => "Response Information",
        SERVER_REFERENCE => "Server Reference",
        REASON_STRING => "Reason String",
        RECEIVE_MAXIMUM => "Receive Maximum",
        TOPIC_ALIAS_MAXIMUM => "Topic Alias Maximum",
        TOPIC_ALIAS => "Topic Alias",
        MAXIMUM_QOS => "Maximum QoS",
        RETAIN_AVAILABLE => "Retain Available",
        USER_PROPERTY => "User Property",
        MAXIMUM_PACKET_SIZE => "Maximum Packet Size",
        WILDCARD_SUBSCRIPTION_AVAILABLE => "Wildcard Subscription Available",
        SUBSCRIPTION_IDENTIFIERS_AVAILABLE => "Subscription Identifier Available",
        SHARED_SUBSCRIPTION_AVAILABLE => "Shared Subscription Available",
        _ => return None,
    })
}

/// A decoded property value, by data type (5.0 section 2.2.2.2).
pub(super) enum Value {
    Byte(u8),
    Two(u16),
    Four(u32),
    Variable(u32),
    String(ByteString),
    Binary(Bytes),
    Pair(ByteString, ByteString),
}

/// Iterates over the properties of one packet: reads the Property Length,
/// then one (identifier, value) at a time, rejecting identifiers the packet
/// does not allow and repeats of those that may appear once.
pub(super) struct PropertyReader {
    r: Reader,
    allowed: &'static [u8],
    repeatable: &'static [u8],
    /// Bit `id` is set once property `id` has been read (all ids are < 64).
    seen: u64,
}

impl PropertyReader {
    pub(super) fn open(
        r: &mut Reader,
        allowed: &'static [u8],
        repeatable: &'static [u8],
    ) -> Result<Self, DecodeError> {
        let len = r.variable_byte_integer("property length")?;
        // 5.0 section 2.2.2.1: a Property Length past the end is malformed
        let r = r.sub_reader(len as usize, "property length")?;
        Ok(PropertyReader {
            r,
            allowed,
            repeatable,
            seen: 0,
        })
    }

    pub(super) fn next(&mut self) -> Result<Option<(u8, &'static str, Value)>, DecodeError> {
        if self.r.is_empty() {
            return Ok(None);
        }
        // The identifier is a variable byte integer, but every defined one is
        // below 0x80: a first byte with the continuation bit is unknown.
        let id = self.r.u8("property identifier")?;
        let Some(name) = property_name(id) else {
            return Err(self.r.malformed(
                "property identifier",
                format!("0x{id:02X} is not a property identifier"),
            ));
        };
        // 5.0 section 2.2.2.2: an identifier not valid for the packet type is
        // a Malformed Packet
        if !self.allowed.contains(&id) {
            return Err(self.r.malformed(
                name,
                format!("property 0x{id:02X} is not allowed in {}", self.r.packet()),
            ));
        }
        let bit = 1u64 << id;
        if self.seen & bit != 0 && !self.repeatable.contains(&id) {
            // 5.0 section 3.x.2.y: "It is a Protocol Error to include the
            // <property> more than once"
            return Err(self.r.protocol(name, "must not appear more than once"));
        }
        self.seen |= bit;
        let value = match id {
            PAYLOAD_FORMAT_INDICATOR
            | REQUEST_PROBLEM_INFORMATION
            | REQUEST_RESPONSE_INFORMATION
            | MAXIMUM_QOS
            | RETAIN_AVAILABLE
            | WILDCARD_SUBSCRIPTION_AVAILABLE
            | SUBSCRIPTION_IDENTIFIERS_AVAILABLE
            | SHARED_SUBSCRIPTION_AVAILABLE => Value::Byte(self.r.u8(name)?),
            SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => {
                Value::Two(self.r.u16(name)?)
            }
            MESSAGE_EXPIRY_INTERVAL
            | SESSION_EXPIRY_INTERVAL
            | WILL_DELAY_INTERVAL
            | MAXIMUM_PACKET_SIZE => Value::Four(self.r.u32(name)?),
            SUBSCRIPTION_IDENTIFIER => Value::Variable(self.r.variable_byte_integer(name)?),
            CORRELATION_DATA | AUTHENTICATION_DATA => Value::Binary(self.r.binary(name)?),
            USER_PROPERTY => {
                let (k, v) = self.r.string_pair(name)?;
                Value::Pair(k, v)
            }
            _ => Value::String(self.r.string(name)?),
        };
        Ok(Some((id, name, value)))
    }

    /// A value of the wrong type for its identifier: unreachable as long as
    /// `next` and the structs agree, reported rather than panicking.
    pub(super) fn mismatch(&self, name: &'static str) -> DecodeError {
        self.r
            .malformed(name, "internal error: unexpected value type")
    }

    pub(super) fn flag(&self, name: &'static str, value: u8) -> Result<bool, DecodeError> {
        match value {
            0 => Ok(false),
            1 => Ok(true),
            // 5.0 sections 3.1.2.11.6/7, 3.2.2.3.5, 3.2.2.3.11-13, 3.3.2.3.2:
            // a value other than 0 or 1 is a Protocol Error
            v => Err(self.r.protocol(name, format!("must be 0 or 1, got {v}"))),
        }
    }

    pub(super) fn non_zero_u16(&self, name: &'static str, value: u16) -> Result<u16, DecodeError> {
        if value == 0 {
            // 5.0 3.1.2.11.3 / 3.2.2.3.3 Receive Maximum, 3.3.2.3.4 Topic Alias
            return Err(self.r.protocol(name, "must be non-zero, got 0"));
        }
        Ok(value)
    }

    pub(super) fn non_zero_u32(&self, name: &'static str, value: u32) -> Result<u32, DecodeError> {
        if value == 0 {
            // 5.0 3.1.2.11.4 / 3.2.2.3.6 Maximum Packet Size, 3.3.2.3.8 /
            // 3.8.2.1.2 Subscription Identifier
            return Err(self.r.protocol(name, "must be non-zero, got 0"));
        }
        Ok(value)
    }

    pub(super) fn topic(
        &self,
        name: &'static str,
        value: ByteString,
    ) -> Result<ByteString, DecodeError> {
        // 5.0 section 3.3.2.3.5: the Response Topic is a topic name, without
        // wildcards
        topic::validate_topic_name(&value).map_err(|error| DecodeError::InvalidTopic {
            packet: self.r.packet(),
            field: name,
            error,
        })?;
        Ok(value)
    }

    /// 5.0 sections 3.1.2.11.10, 3.2.2.3.18, 3.15.2.2.3: Authentication Data
    /// without an Authentication Method is a Protocol Error.
    pub(super) fn check_authentication(
        &self,
        method: &Option<ByteString>,
        data: &Option<Bytes>,
    ) -> Result<(), DecodeError> {
        if data.is_some() && method.is_none() {
            return Err(self.r.protocol(
                "Authentication Data",
                "present without an Authentication Method",
            ));
        }
        Ok(())
    }
}

/// Encoding of one properties struct; `write` runs once to count, once to write.
pub(super) trait Properties {
    fn write<S: Sink>(&self, w: &mut Writer<'_, S>) -> Result<(), EncodeError>;
}

/// Writes the Property Length, then the properties.
pub(super) fn write_properties<S: Sink, P: Properties>(
    props: &P,
    w: &mut Writer<'_, S>,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    props.write(&mut Writer::new(&mut counter, w.packet()))?;
    w.variable_byte_integer("property length", counter.0)?;
    props.write(w)
}

pub(super) fn put_byte<S: Sink>(w: &mut Writer<'_, S>, id: u8, value: Option<u8>) {
    if let Some(v) = value {
        w.u8(id);
        w.u8(v);
    }
}

pub(super) fn put_flag<S: Sink>(w: &mut Writer<'_, S>, id: u8, value: Option<bool>) {
    put_byte(w, id, value.map(u8::from));
}

pub(super) fn put_two<S: Sink>(w: &mut Writer<'_, S>, id: u8, value: Option<u16>) {
    if let Some(v) = value {
        w.u8(id);
        w.u16(v);
    }
}

pub(super) fn put_four<S: Sink>(w: &mut Writer<'_, S>, id: u8, value: Option<u32>) {
    if let Some(v) = value {
        w.u8(id);
        w.u32(v);
    }
}

pub(super) fn put_string<S: Sink>(
    w: &mut Writer<'_, S>,
    id: u8,
    value: &Option<ByteString>,
) -> Result<(), EncodeError> {
    if let Some(v) = value {
        w.u8(id);
        w.string(property_name(id).unwrap_or("property"), v)?;
    }
    Ok(())
}

pub(super) fn put_binary<S: Sink>(
    w: &mut Writer<'_, S>,
    id: u8,
    value: &Option<Bytes>,
) -> Result<(), EncodeError> {
    if let Some(v) = value {
        w.u8(id);
        w.binary(property_name(id).unwrap_or("property"), v)?;
    }
    Ok(())
}

pub(super) fn put_subscription_identifier<S: Sink>(
    w: &mut Writer<'_, S>,
    value: u32,
) -> Result<(), EncodeError> {
    if value == 0 || value > MAX_VARIABLE_BYTE_INTEGER {
        return Err(w.invalid(
            "Subscription Identifier",
            format!("must be 1..=268,435,455, got {value}"),
        ));
    }
    w.u8(SUBSCRIPTION_IDENTIFIER);
    w.variable_byte_integer("Subscription Identifier", value as usize)
}

pub(super) fn non_zero<S: Sink, T: Default + PartialEq>(
    w: &Writer<'_, S>,
    id: u8,
    value: Option<T>,
) -> Result<(), EncodeError> {
    if value == Some(T::default()) {
        return Err(w.invalid(
            property_name(id).unwrap_or("property"),
            "must be non-zero, got 0",
        ));
    }
    Ok(())
}

pub(super) fn authentication<S: Sink>(
    w: &Writer<'_, S>,
    method: &Option<ByteString>,
    data: &Option<Bytes>,
) -> Result<(), EncodeError> {
    if data.is_some() && method.is_none() {
        return Err(w.invalid(
            "Authentication Data",
            "present without an Authentication Method",
        ));
    }
    Ok(())
}

impl Properties for UserProperties {
    fn write<S: Sink>(&self, w: &mut Writer<'_, S>) -> Result<(), EncodeError> {
        for (name, value) in self {
            w.u8(USER_PROPERTY);
            w.string("User Property", name)?;
            w.string("User Property", value)?;
        }
        Ok(())
    }
}

/// Reads the Property Length and properties of an UNSUBSCRIBE, which may only
/// carry User Properties.
pub(super) fn decode_user_properties(r: &mut Reader) -> Result<UserProperties, DecodeError> {
    let mut props = PropertyReader::open(r, &[USER_PROPERTY], &[USER_PROPERTY])?;
    let mut users = UserProperties::new();
    while let Some((_, name, value)) = props.next()? {
        match value {
            Value::Pair(k, v) => users.push((k, v)),
            _ => return Err(props.mismatch(name)),
        }
    }
    Ok(users)
}
