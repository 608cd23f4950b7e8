//! PUBLISH (3.1.1 section 3.3; 5.0 section 3.3) and its properties.
//!
//! The fixed header flags (QoS 3, DUP with QoS 0) are checked in `header`,
//! before the body arrives. Left to the session: Topic Alias against Topic
//! Alias Maximum and the alias mapping itself, a Subscription Identifier sent
//! by a client, packet identifiers in use, Receive Maximum, and the Payload
//! Format Indicator against the payload (5.0 section 3.3.2.3.2).

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::header::publish_encoded_len;
use super::primitives::{Reader, Sink, Writer, MAX_VARIABLE_BYTE_INTEGER};
use super::properties::*;
use super::{topic, DecodeError, EncodeError, PacketType, ProtocolVersion, QoS};

/// PUBLISH, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty only in 5.0 when a topic alias is present.
    pub topic: ByteString,
    /// `Some` exactly when `qos > 0`, and then non-zero.
    pub packet_id: Option<u16>,
    /// Split off the input without copying.
    pub payload: Bytes,
    /// Always default for 3.1 / 3.1.1.
    pub properties: PublishProperties,
}

impl Publish {
    /// Size of this PUBLISH encoded for `version`, fixed header included:
    /// what the session compares with the client's Maximum Packet Size.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        publish_encoded_len(self, version)
    }

    /// `flags` passed the checks of `header::check_first_byte`.
    pub(super) fn decode(
        r: &mut Reader,
        flags: u8,
        version: ProtocolVersion,
    ) -> Result<Publish, DecodeError> {
        let qos_bits = (flags >> 1) & 0x03;
        let Some(qos) = QoS::from_u8(qos_bits) else {
            return Err(r.malformed("QoS", "[MQTT-3.3.1-4] 3 is not a QoS level"));
        };
        let topic = r.name("topic name")?;
        // [MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3]) QoS 1 and 2 carry a non-zero id
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(r.packet_id()?)
        };
        let properties = if version.is_v5() {
            PublishProperties::decode(r)?
        } else {
            PublishProperties::default()
        };
        if topic.is_empty() && version.is_v5() {
            // 5.0 section 3.3.2.1: an empty topic name needs a Topic Alias
            if properties.topic_alias.is_none() {
                return Err(r.protocol("topic name", "is empty and there is no Topic Alias"));
            }
        } else {
            // [MQTT-3.3.2-1] [MQTT-3.3.2-2] [MQTT-4.7.3-1]
            topic::validate_topic_name(&topic).map_err(|error| DecodeError::InvalidTopic {
                packet: PacketType::Publish,
                field: "topic name",
                error,
            })?;
        }
        Ok(Publish {
            dup: flags & 0x08 != 0,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            packet_id,
            payload: r.rest(),
            properties,
        })
    }

    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        w: &mut Writer<'_, S>,
    ) -> Result<(), EncodeError> {
        match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, Some(id)) => {
                // [MQTT-2.3.1-5] (5.0 [MQTT-2.2.1-2]) no packet id at QoS 0
                return Err(w.invalid(
                    "packet identifier",
                    format!("[MQTT-2.3.1-5] QoS 0 PUBLISH must not have one, got {id}"),
                ));
            }
            (QoS::AtLeastOnce | QoS::ExactlyOnce, None) => {
                return Err(w.invalid(
                    "packet identifier",
                    format!("[MQTT-2.3.1-1] QoS {} PUBLISH needs one", self.qos as u8),
                ));
            }
            _ => {}
        }
        if self.dup && self.qos == QoS::AtMostOnce {
            return Err(w.invalid("DUP", "[MQTT-3.3.1-2] must be false for QoS 0"));
        }
        if self.topic.is_empty() && !(version.is_v5() && self.properties.topic_alias.is_some()) {
            return Err(w.invalid(
                "topic name",
                "is empty (allowed only in 5.0 with a Topic Alias)",
            ));
        }
        w.string("topic name", &self.topic)?;
        if let Some(id) = self.packet_id {
            w.packet_id(id)?;
        }
        if version.is_v5() {
            write_properties(&self.properties, w)?;
        }
        w.raw(&self.payload);
        Ok(())
    }
}

impl Properties for PublishProperties {
    fn write<S: Sink>(&self, w: &mut Writer<'_, S>) -> Result<(), EncodeError> {
        non_zero(w, TOPIC_ALIAS, self.topic_alias)?;
        put_flag(w, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        put_four(w, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_two(w, TOPIC_ALIAS, self.topic_alias);
        put_string(w, RESPONSE_TOPIC, &self.response_topic)?;
        put_binary(w, CORRELATION_DATA, &self.correlation_data)?;
        for &id in &self.subscription_identifiers {
            put_subscription_identifier(w, id)?;
        }
        put_string(w, CONTENT_TYPE, &self.content_type)?;
        self.user_properties.write(w)
    }
}

impl PublishProperties {
    /// Reads the Property Length and the properties of a 5.0 PUBLISH.
    ///
    /// Subscription Identifiers are accepted: a server sends them to clients,
    /// and our test clients and bench decode with this codec. A client must
    /// not send them (5.0 section 3.3.4, "A PUBLISH packet sent from a Client
    /// to a Server MUST NOT contain a Subscription Identifier"): the session
    /// rejects those with a Protocol Error, since only it knows the direction.
    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        const ALLOWED: &[u8] = &[
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            TOPIC_ALIAS,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            USER_PROPERTY,
            SUBSCRIPTION_IDENTIFIER,
            CONTENT_TYPE,
        ];
        let mut props =
            PropertyReader::open(r, ALLOWED, &[USER_PROPERTY, SUBSCRIPTION_IDENTIFIER])?;
        let mut p = PublishProperties::default();
        while let Some((id, name, value)) = props.next()? {
            match (id, value) {
                (PAYLOAD_FORMAT_INDICATOR, Value::Byte(v)) => {
                    p.payload_format_indicator = Some(props.flag(name, v)?)
                }
                (MESSAGE_EXPIRY_INTERVAL, Value::Four(v)) => p.message_expiry_interval = Some(v),
                // 5.0 section 3.3.2.3.4: "A Topic Alias of 0 is not permitted"
                (TOPIC_ALIAS, Value::Two(v)) => p.topic_alias = Some(props.non_zero_u16(name, v)?),
                (RESPONSE_TOPIC, Value::String(v)) => {
                    p.response_topic = Some(props.topic(name, v)?)
                }
                (CORRELATION_DATA, Value::Binary(v)) => p.correlation_data = Some(v),
                (USER_PROPERTY, Value::Pair(k, v)) => p.user_properties.push((k, v)),
                // 5.0 section 3.3.2.3.8: 0 is a Protocol Error
                (SUBSCRIPTION_IDENTIFIER, Value::Variable(v)) => p
                    .subscription_identifiers
                    .push(props.non_zero_u32(name, v)?),
                (CONTENT_TYPE, Value::String(v)) => p.content_type = Some(v),
                _ => return Err(props.mismatch(name)),
            }
        }
        Ok(p)
    }

    /// A copy without the values that cannot be encoded (strings or binary
    /// over 65,535 bytes or with U+0000, Topic Alias 0, Subscription
    /// Identifiers outside 1..=268,435,455).
    fn encodable(&self) -> PublishProperties {
        let fits = |s: &[u8]| s.len() <= u16::MAX as usize;
        let string_ok = |s: &ByteString| fits(s.as_bytes()) && !s.as_bytes().contains(&0);
        PublishProperties {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval: self.message_expiry_interval,
            topic_alias: self.topic_alias.filter(|&a| a != 0),
            response_topic: self.response_topic.clone().filter(string_ok),
            correlation_data: self.correlation_data.clone().filter(|d| fits(d)),
            user_properties: self
                .user_properties
                .iter()
                .filter(|(k, v)| string_ok(k) && string_ok(v))
                .cloned()
                .collect(),
            subscription_identifiers: self
                .subscription_identifiers
                .iter()
                .copied()
                .filter(|&id| id != 0 && id <= MAX_VARIABLE_BYTE_INTEGER)
                .collect(),
            content_type: self.content_type.clone().filter(string_ok),
        }
    }
}

/// Appends the Property Length and the properties of a 5.0 PUBLISH to `buf`,
/// exactly as they appear in the packet, so that storage can keep them as
/// opaque bytes and [`decode_publish_properties`] can read them back.
///
/// Properties decoded from a packet always encode. A value built by hand that
/// cannot be encoded (a string or binary over 65,535 bytes or holding U+0000,
/// Topic Alias 0, a Subscription Identifier outside 1..=268,435,455) is left
/// out rather than written wrong.
pub fn encode_publish_properties(props: &PublishProperties, buf: &mut BytesMut) {
    let start = buf.len();
    let mut w = Writer::new(buf, PacketType::Publish);
    if write_properties(props, &mut w).is_ok() {
        return;
    }
    buf.truncate(start);
    let mut w = Writer::new(buf, PacketType::Publish);
    if write_properties(&props.encodable(), &mut w).is_err() {
        // Only a property block over 268,435,455 bytes gets here: no PUBLISH
        // could carry it, so write none.
        buf.truncate(start);
        buf.extend_from_slice(&[0]);
    }
}

/// Reads what [`encode_publish_properties`] wrote (a Property Length, then the
/// properties) from the front of `buf`, and advances `buf` past it. On error
/// `buf` is left as it was.
pub fn decode_publish_properties(buf: &mut Bytes) -> Result<PublishProperties, DecodeError> {
    let mut r = Reader::new(buf.clone(), PacketType::Publish);
    let props = PublishProperties::decode(&mut r)?;
    *buf = r.into_rest();
    Ok(props)
}
