//! PUBACK, PUBREC, PUBREL, PUBCOMP (3.1.1 sections 3.4-3.7; 5.0 sections 3.4-3.7)
//! and UNSUBACK (3.1.1 section 3.11; 5.0 section 3.11), and the properties
//! they share with SUBACK.
//!
//! Before 5.0 these are two bytes, the packet identifier (the remaining length
//! is checked in `header`). In 5.0 PUBACK-PUBCOMP have short forms: remaining
//! length 2 means Success without properties, 3 a reason code without
//! properties (5.0 sections 3.4.2.1, 3.4.2.2.1). The encoder uses them.
//! Left to the session: whether the packet identifier is one in flight.

use super::primitives::{Reader, Sink, Writer};
use super::properties::*;
use super::reason::{check_reason_code, read_reason_code};
use super::{AckProperties, DecodeError, EncodeError, ProtocolVersion, ReasonCode};

/// PUBACK, PUBREC, PUBREL or PUBCOMP: which one is the `Packet` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    pub packet_id: u16,
    /// Always Success for 3.1 / 3.1.1. In 5.0 a Success code with no properties
    /// is encoded in the short form (remaining length 2).
    pub reason_code: ReasonCode,
    pub properties: AckProperties,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    /// One per filter of the UNSUBSCRIBE in 5.0; empty for 3.1 / 3.1.1.
    pub reason_codes: Vec<ReasonCode>,
    pub properties: AckProperties,
}

impl PubResponse {
    /// A 3.1.1-style acknowledgement: Success, no properties.
    pub fn new(packet_id: u16) -> PubResponse {
        PubResponse {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }

    pub(super) fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<PubResponse, DecodeError> {
        let packet_id = r.packet_id()?;
        if !version.is_v5() || r.is_empty() {
            return Ok(PubResponse::new(packet_id));
        }
        let reason_code = read_reason_code(r, "reason code")?;
        // 5.0 section 3.4.2.2.1: no Property Length when the remaining length is 3
        let properties = if r.is_empty() {
            AckProperties::default()
        } else {
            AckProperties::decode(r)?
        };
        Ok(PubResponse {
            packet_id,
            reason_code,
            properties,
        })
    }

    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        w: &mut Writer<'_, S>,
    ) -> Result<(), EncodeError> {
        w.packet_id(self.packet_id)?;
        if !version.is_v5() {
            return Ok(());
        }
        check_reason_code(w, self.reason_code)?;
        if self.reason_code == ReasonCode::Success && self.properties.is_empty() {
            return Ok(());
        }
        w.u8(self.reason_code.as_u8());
        if !self.properties.is_empty() {
            write_properties(&self.properties, w)?;
        }
        Ok(())
    }
}

impl UnsubAck {
    pub(super) fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<UnsubAck, DecodeError> {
        let packet_id = r.packet_id()?;
        if !version.is_v5() {
            return Ok(UnsubAck {
                packet_id,
                reason_codes: Vec::new(),
                properties: AckProperties::default(),
            });
        }
        let properties = AckProperties::decode(r)?;
        // One byte per code: the capacity is bounded by the bytes present.
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            reason_codes.push(read_reason_code(r, "reason code")?);
        }
        // 5.0 section 3.11.3: one reason code per topic filter, and an
        // UNSUBSCRIBE has at least one
        if reason_codes.is_empty() {
            return Err(r.protocol("reason codes", "UNSUBACK has no reason code"));
        }
        Ok(UnsubAck {
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
        if !version.is_v5() {
            return Ok(());
        }
        if self.reason_codes.is_empty() {
            return Err(w.invalid("reason codes", "a 5.0 UNSUBACK needs one per topic filter"));
        }
        write_properties(&self.properties, w)?;
        for &code in &self.reason_codes {
            check_reason_code(w, code)?;
            w.u8(code.as_u8());
        }
        Ok(())
    }
}

impl Properties for AckProperties {
    fn write<S: Sink>(&self, w: &mut Writer<'_, S>) -> Result<(), EncodeError> {
        put_string(w, REASON_STRING, &self.reason_string)?;
        self.user_properties.write(w)
    }
}

impl AckProperties {
    /// True when there is nothing to encode (the short forms of 5.0 acks).
    pub fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut props = PropertyReader::open(r, &[REASON_STRING, USER_PROPERTY], &[USER_PROPERTY])?;
        let mut p = AckProperties::default();
        while let Some((id, name, value)) = props.next()? {
            match (id, value) {
                (REASON_STRING, Value::String(v)) => p.reason_string = Some(v),
                (USER_PROPERTY, Value::Pair(k, v)) => p.user_properties.push((k, v)),
                _ => return Err(props.mismatch(name)),
            }
        }
        Ok(p)
    }
}
