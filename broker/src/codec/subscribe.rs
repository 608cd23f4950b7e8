//! SUBSCRIBE, SUBACK and UNSUBSCRIBE (3.1.1 sections 3.8-3.10; 5.0 sections
//! 3.8-3.10), and the properties of SUBSCRIBE.
//!
//! Topic filters are checked with [`topic::validate_topic_filter`]: an invalid
//! filter fails the whole packet (Malformed Packet) rather than earning a
//! per-filter failure code. Left to the session: packet identifiers in use,
//! whether wildcard, shared or identified subscriptions are supported (SUBACK
//! 0xA2, 0x9E, 0xA1), and authorization.

use bytestring::ByteString;

use super::primitives::{Reader, Sink, Writer};
use super::properties::*;
use super::reason::{check_reason_code, read_reason_code};
use super::{topic, DecodeError, EncodeError, ProtocolVersion, QoS, ReasonCode};

/// 5.0 Retain Handling subscription option (5.0 section 3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe,
    /// 1: send retained messages only if the subscription did not exist.
    SendAtSubscribeIfNew,
    /// 2: do not send retained messages.
    DoNotSend,
}

/// Options of one topic filter in SUBSCRIBE. For 3.1 / 3.1.1 only `qos` is on
/// the wire; the others keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    /// At least one [MQTT-3.8.3-3]. Filters are checked for UTF-8 and for the
    /// wildcard rules of `topic::validate_topic_filter`.
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
    pub properties: SubscribeProperties,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    /// One per filter. For 3.1.1 GrantedQoS0/1/2 (0x00-0x02) or any failure,
    /// encoded as 0x80; 3.1 has no failure code.
    pub reason_codes: Vec<ReasonCode>,
    pub properties: AckProperties,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    /// At least one [MQTT-3.10.3-2].
    pub filters: Vec<ByteString>,
    pub user_properties: UserProperties,
}

const NO_LOCAL: u8 = 0x04;
const RETAIN_AS_PUBLISHED: u8 = 0x08;

impl RetainHandling {
    /// The option's value as the SUBSCRIBE options byte carries it (bits 4-5)
    /// and as records store it: 0, 1 or 2; `None` for 3.
    pub fn from_u8(bits: u8) -> Option<RetainHandling> {
        match bits {
            0 => Some(RetainHandling::SendAtSubscribe),
            1 => Some(RetainHandling::SendAtSubscribeIfNew),
            2 => Some(RetainHandling::DoNotSend),
            _ => None,
        }
    }
}

impl SubscriptionOptions {
    /// Reads the Requested QoS byte (3.1, 3.1.1) or Subscription Options
    /// byte (5.0 section 3.8.3.1) that follows `filter`.
    fn decode(r: &mut Reader, filter: &str, version: ProtocolVersion) -> Result<Self, DecodeError> {
        const FIELD: &str = "subscription options";
        let byte = r.u8(FIELD)?;
        if !version.is_v5() {
            // [MQTT-3-8.3-4] bits 7-2 reserved, QoS 0, 1 or 2
            if byte & 0xFC != 0 || byte == 3 {
                return Err(r.malformed(
                    FIELD,
                    format!("[MQTT-3-8.3-4] `{filter}`: must be QoS 0, 1 or 2 with bits 7-2 at 0, got 0x{byte:02X}"),
                ));
            }
            let qos = QoS::from_u8(byte).ok_or_else(|| r.malformed(FIELD, "QoS 3"))?;
            return Ok(SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            });
        }
        // 5.0 [MQTT-3.8.3-5] bits 6-7 are reserved
        if byte & 0xC0 != 0 {
            return Err(r.malformed(
                FIELD,
                format!(
                    "5.0 [MQTT-3.8.3-5] `{filter}`: reserved bits 7-6 must be 0, got 0x{byte:02X}"
                ),
            ));
        }
        // 5.0 section 3.8.3.1: Maximum QoS 3 is a Protocol Error
        let Some(qos) = QoS::from_u8(byte & 0x03) else {
            return Err(r.protocol(
                FIELD,
                format!("`{filter}`: maximum QoS 3, got 0x{byte:02X}"),
            ));
        };
        // 5.0 section 3.8.3.1: Retain Handling 3 is a Protocol Error
        let Some(retain_handling) = RetainHandling::from_u8((byte >> 4) & 0x03) else {
            return Err(r.protocol(
                FIELD,
                format!("`{filter}`: retain handling 3, got 0x{byte:02X}"),
            ));
        };
        let no_local = byte & NO_LOCAL != 0;
        // 5.0 [MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error
        if no_local && filter.starts_with(topic::SHARED_PREFIX) {
            return Err(r.protocol(
                FIELD,
                format!("5.0 [MQTT-3.8.3-4] `{filter}`: No Local is not allowed on a shared subscription"),
            ));
        }
        Ok(SubscriptionOptions {
            qos,
            no_local,
            retain_as_published: byte & RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        })
    }

    fn to_byte(self, version: ProtocolVersion) -> u8 {
        let mut byte = self.qos as u8;
        if version.is_v5() {
            if self.no_local {
                byte |= NO_LOCAL;
            }
            if self.retain_as_published {
                byte |= RETAIN_AS_PUBLISHED;
            }
            byte |= (self.retain_handling as u8) << 4;
        }
        byte
    }
}

/// Reads a topic filter and checks it against section 4.7.
fn read_filter(r: &mut Reader) -> Result<ByteString, DecodeError> {
    // [MQTT-3.8.3-1] [MQTT-3.10.3-1] UTF-8 strings
    let filter = r.name("topic filter")?;
    topic::validate_topic_filter(&filter).map_err(|error| DecodeError::InvalidTopic {
        packet: r.packet(),
        field: "topic filter",
        error,
    })?;
    Ok(filter)
}

impl Subscribe {
    pub(super) fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Subscribe, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = if version.is_v5() {
            SubscribeProperties::decode(r)?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = read_filter(r)?;
            let options = SubscriptionOptions::decode(r, &filter, version)?;
            filters.push((filter, options));
        }
        // [MQTT-3.8.3-3] (5.0 [MQTT-3.8.3-2]) at least one filter
        if filters.is_empty() {
            return Err(r.protocol(
                "topic filters",
                "[MQTT-3.8.3-3] SUBSCRIBE has no topic filter",
            ));
        }
        Ok(Subscribe {
            packet_id,
            filters,
            properties,
        })
    }

    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        w: &mut Writer<'_, S>,
    ) -> Result<(), EncodeError> {
        w.packet_id(self.packet_id)?;
        if self.filters.is_empty() {
            return Err(w.invalid(
                "topic filters",
                "[MQTT-3.8.3-3] SUBSCRIBE needs at least one",
            ));
        }
        if version.is_v5() {
            write_properties(&self.properties, w)?;
        }
        for (filter, options) in &self.filters {
            w.string("topic filter", filter)?;
            w.u8(options.to_byte(version));
        }
        Ok(())
    }
}

impl SubAck {
    pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = if version.is_v5() {
            AckProperties::decode(r)?
        } else {
            AckProperties::default()
        };
        // One byte per code: the capacity is bounded by the bytes present.
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let code = if version.is_v5() {
                read_reason_code(r, "reason code")?
            } else {
                let byte = r.u8("return code")?;
                // 3.1.1 section 3.9.3: 0x00-0x02 and 0x80; others are reserved.
                // 3.1 defines no failure code, but brokers send 0x80 anyway.
                ReasonCode::from_suback_return_code(byte).ok_or_else(|| {
                    r.malformed("return code", format!("0x{byte:02X} is reserved"))
                })?
            };
            reason_codes.push(code);
        }
        // [MQTT-3.9.3-1] (5.0 section 3.9.3) one code per topic filter, and a
        // SUBSCRIBE has at least one
        if reason_codes.is_empty() {
            return Err(r.protocol("reason codes", "SUBACK has no reason code"));
        }
        Ok(SubAck {
            packet_id,
            reason_codes,
            properties,
        })
    }

    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        w: &mut Writer<'_, S>,
    ) -> Result<(), EncodeError> {
        w.packet_id(self.packet_id)?;
        if self.reason_codes.is_empty() {
            return Err(w.invalid("reason codes", "SUBACK needs one per topic filter"));
        }
        if version.is_v5() {
            write_properties(&self.properties, w)?;
        }
        for &code in &self.reason_codes {
            check_reason_code(w, code)?;
            if version.is_v5() {
                w.u8(code.as_u8());
            } else {
                // valid SUBACK codes are grants or failures, so this is Some
                w.u8(code.suback_return_code().unwrap_or(0x80));
            }
        }
        Ok(())
    }
}

impl Unsubscribe {
    pub(super) fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Unsubscribe, DecodeError> {
        let packet_id = r.packet_id()?;
        let user_properties = if version.is_v5() {
            decode_user_properties(r)?
        } else {
            UserProperties::new()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(read_filter(r)?);
        }
        // [MQTT-3.10.3-2] (5.0 the same) at least one filter
        if filters.is_empty() {
            return Err(r.protocol(
                "topic filters",
                "[MQTT-3.10.3-2] UNSUBSCRIBE has no topic filter",
            ));
        }
        Ok(Unsubscribe {
            packet_id,
            filters,
            user_properties,
        })
    }

    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        w: &mut Writer<'_, S>,
    ) -> Result<(), EncodeError> {
        w.packet_id(self.packet_id)?;
        if self.filters.is_empty() {
            return Err(w.invalid(
                "topic filters",
                "[MQTT-3.10.3-2] UNSUBSCRIBE needs at least one",
            ));
        }
        if version.is_v5() {
            write_properties(&self.user_properties, w)?;
        }
        for filter in &self.filters {
            w.string("topic filter", filter)?;
        }
        Ok(())
    }
}

impl Properties for SubscribeProperties {
    fn write<S: Sink>(&self, w: &mut Writer<'_, S>) -> Result<(), EncodeError> {
        if let Some(id) = self.subscription_identifier {
            put_subscription_identifier(w, id)?;
        }
        self.user_properties.write(w)
    }
}

impl SubscribeProperties {
    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut props = PropertyReader::open(
            r,
            &[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY],
            &[USER_PROPERTY],
        )?;
        let mut p = SubscribeProperties::default();
        while let Some((id, name, value)) = props.next()? {
            match (id, value) {
                // 5.0 section 3.8.2.1.2: a Subscription Identifier of 0 is a
                // Protocol Error
                (SUBSCRIPTION_IDENTIFIER, Value::Variable(v)) => {
                    p.subscription_identifier = Some(props.non_zero_u32(name, v)?)
                }
                (USER_PROPERTY, Value::Pair(k, v)) => p.user_properties.push((k, v)),
                _ => return Err(props.mismatch(name)),
            }
        }
        Ok(p)
    }
}
