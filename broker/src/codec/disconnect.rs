//! DISCONNECT (3.1.1 section 3.14; 5.0 section 3.14) and its properties.
//!
//! Before 5.0 DISCONNECT has no body (checked in `header`). In 5.0 a remaining
//! length of 0 means Normal disconnection without properties, and of 1 a
//! reason code without properties (5.0 sections 3.14.2.1, 3.14.2.2.1).
//! Left to the session: Session Expiry Interval sent by the server, or sent
//! by a client that connected with 0 (5.0 section 3.14.2.2.2), and Server
//! Reference sent by a client.

use super::primitives::{Reader, Sink, Writer};
use super::properties::*;
use super::reason::{check_reason_code, read_reason_code};
use super::{DecodeError, EncodeError, ProtocolVersion, ReasonCode};

/// DISCONNECT. For 3.1 / 3.1.1 it has no body and is only sent by clients; the
/// reason is always NormalDisconnection (Success).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    pub reason_code: ReasonCode,
    pub properties: DisconnectProperties,
}

impl Disconnect {
    pub(super) fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Disconnect, DecodeError> {
        if !version.is_v5() || r.is_empty() {
            return Ok(Disconnect::default());
        }
        let reason_code = read_reason_code(r, "reason code")?;
        let properties = if r.is_empty() {
            DisconnectProperties::default()
        } else {
            DisconnectProperties::decode(r)?
        };
        Ok(Disconnect {
            reason_code,
            properties,
        })
    }

    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        w: &mut Writer<'_, S>,
    ) -> Result<(), EncodeError> {
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

impl Properties for DisconnectProperties {
    fn write<S: Sink>(&self, w: &mut Writer<'_, S>) -> Result<(), EncodeError> {
        put_four(w, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_string(w, REASON_STRING, &self.reason_string)?;
        put_string(w, SERVER_REFERENCE, &self.server_reference)?;
        self.user_properties.write(w)
    }
}

impl DisconnectProperties {
    /// True when there is nothing to encode.
    pub fn is_empty(&self) -> bool {
        *self == DisconnectProperties::default()
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        const ALLOWED: &[u8] = &[
            SESSION_EXPIRY_INTERVAL,
            REASON_STRING,
            USER_PROPERTY,
            SERVER_REFERENCE,
        ];
        let mut props = PropertyReader::open(r, ALLOWED, &[USER_PROPERTY])?;
        let mut p = DisconnectProperties::default();
        while let Some((id, name, value)) = props.next()? {
            match (id, value) {
                (SESSION_EXPIRY_INTERVAL, Value::Four(v)) => p.session_expiry_interval = Some(v),
                (REASON_STRING, Value::String(v)) => p.reason_string = Some(v),
                (USER_PROPERTY, Value::Pair(k, v)) => p.user_properties.push((k, v)),
                (SERVER_REFERENCE, Value::String(v)) => p.server_reference = Some(v),
                _ => return Err(props.mismatch(name)),
            }
        }
        Ok(p)
    }
}
