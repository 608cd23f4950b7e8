//! AUTH (5.0 section 3.15) and its properties. Not part of 3.1 / 3.1.1:
//! decoding packet type 15 for those versions is an error (`header`), and so
//! is encoding AUTH.
//!
//! A remaining length of 0 means Success without properties (5.0 section
//! 3.15.2.1); 1, a reason code without properties, is accepted as in
//! DISCONNECT. Left to the session: that the Authentication Method is present
//! and is the one of the CONNECT (5.0 [MQTT-4.12.0-5]).

use super::primitives::{Reader, Sink, Writer};
use super::properties::*;
use super::reason::{check_reason_code, read_reason_code};
use super::{DecodeError, EncodeError, ReasonCode};

/// AUTH: one step of enhanced authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, ContinueAuthentication or ReAuthenticate.
    pub reason_code: ReasonCode,
    pub properties: AuthProperties,
}

impl Auth {
    pub(super) fn decode(r: &mut Reader) -> Result<Auth, DecodeError> {
        if r.is_empty() {
            return Ok(Auth::default());
        }
        let reason_code = read_reason_code(r, "reason code")?;
        let properties = if r.is_empty() {
            AuthProperties::default()
        } else {
            AuthProperties::decode(r)?
        };
        Ok(Auth {
            reason_code,
            properties,
        })
    }

    pub(super) fn write<S: Sink>(&self, w: &mut Writer<'_, S>) -> Result<(), EncodeError> {
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

impl Properties for AuthProperties {
    fn write<S: Sink>(&self, w: &mut Writer<'_, S>) -> Result<(), EncodeError> {
        authentication(w, &self.authentication_method, &self.authentication_data)?;
        put_string(w, AUTHENTICATION_METHOD, &self.authentication_method)?;
        put_binary(w, AUTHENTICATION_DATA, &self.authentication_data)?;
        put_string(w, REASON_STRING, &self.reason_string)?;
        self.user_properties.write(w)
    }
}

impl AuthProperties {
    /// True when there is nothing to encode.
    pub fn is_empty(&self) -> bool {
        *self == AuthProperties::default()
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        const ALLOWED: &[u8] = &[
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
            REASON_STRING,
            USER_PROPERTY,
        ];
        let mut props = PropertyReader::open(r, ALLOWED, &[USER_PROPERTY])?;
        let mut p = AuthProperties::default();
        while let Some((id, name, value)) = props.next()? {
            match (id, value) {
                (AUTHENTICATION_METHOD, Value::String(v)) => p.authentication_method = Some(v),
                (AUTHENTICATION_DATA, Value::Binary(v)) => p.authentication_data = Some(v),
                (REASON_STRING, Value::String(v)) => p.reason_string = Some(v),
                (USER_PROPERTY, Value::Pair(k, v)) => p.user_properties.push((k, v)),
                _ => return Err(props.mismatch(name)),
            }
        }
        props.check_authentication(&p.authentication_method, &p.authentication_data)?;
        Ok(p)
    }
}
