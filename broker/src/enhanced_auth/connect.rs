//! The enhanced authentication exchange that starts with CONNECT, run by the
//! listener before the connection is given to a session (5.0 section 4.12).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{AuthFailure, AuthMethods, AuthStep};
use crate::codec::{Auth, AuthProperties, Connect, Packet, ProtocolVersion, ReasonCode};
use crate::transport::{PacketStream, Transport};

/// A successful exchange: what CONNACK must carry and who the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub method: ByteString,
    /// Authentication Data for the CONNACK (SCRAM's server-final message).
    pub data: Option<Bytes>,
    pub username: String,
}

/// Why an exchange at CONNECT did not authenticate the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// [MQTT-4.12.0-1] a method the broker does not offer (0x8C).
    #[error("unsupported authentication method `{0}`")]
    UnsupportedMethod(ByteString),
    /// The mechanism refused the client, with this code; `why` is for the
    /// log only (the client is not told which part was wrong).
    #[error("enhanced authentication failed: {why}")]
    Refused { code: ReasonCode, why: AuthFailure },
    /// [MQTT-4.12.0-2] the client's answer is not AUTH 0x18 with the
    /// method of the CONNECT (0x82).
    #[error("AUTH answer without reason 0x18 and method `{0}`")]
    BadAnswer(ByteString),
    /// The client closed, sent something else or nothing within the
    /// timeout, or the challenge could not be written: no CONNACK.
    #[error("connection lost during the exchange")]
    Gone,
}

impl ExchangeError {
    /// The reason code of the CONNACK that refuses the client; `None`:
    /// close without answer.
    pub fn reason_code(&self) -> Option<ReasonCode> {
        match self {
            ExchangeError::UnsupportedMethod(_) => Some(ReasonCode::BadAuthenticationMethod),
            ExchangeError::Refused { code, .. } => Some(*code),
            ExchangeError::BadAnswer(_) => Some(ReasonCode::ProtocolError),
            ExchangeError::Gone => None,
        }
    }
}

/// Runs the exchange if the CONNECT names an Authentication Method.
/// `Ok(None)`: no enhanced authentication asked.
pub async fn authenticate(
    packets: &mut PacketStream<Box<dyn Transport>>,
    connect: &Connect,
    methods: &AuthMethods,
    timeout: Duration,
) -> Result<Option<Authenticated>, ExchangeError> {
    let Some(method_name) = &connect.properties.authentication_method else {
        return Ok(None);
    };
    let Some(method) = methods.get(method_name) else {
        return Err(ExchangeError::UnsupportedMethod(method_name.clone()));
    };
    packets.limits.version = ProtocolVersion::V5;
    let first = connect
        .properties
        .authentication_data
        .clone()
        .unwrap_or_default();
    let (mut exchange, mut step) = method.start(&first);
    loop {
        match step {
            AuthStep::Success { username, data } => {
                return Ok(Some(Authenticated {
                    method: method_name.clone(),
                    data,
                    username,
                }))
            }
            AuthStep::Failure { code, why } => return Err(ExchangeError::Refused { code, why }),
            AuthStep::Continue(challenge) => {
                let auth = Packet::Auth(Auth {
                    reason_code: ReasonCode::ContinueAuthentication,
                    properties: AuthProperties {
                        authentication_method: Some(method_name.clone()),
                        authentication_data: Some(challenge),
                        ..Default::default()
                    },
                });
                let mut buf = BytesMut::new();
                auth.encode(ProtocolVersion::V5, &mut buf)
                    .map_err(|_| ExchangeError::Gone)?;
                packets
                    .get_mut()
                    .write_all(&buf)
                    .await
                    .map_err(|_| ExchangeError::Gone)?;
                let answer = match tokio::time::timeout(timeout, packets.next()).await {
                    Ok(Some(Ok(Packet::Auth(answer)))) => answer,
                    _ => return Err(ExchangeError::Gone),
                };
                // [MQTT-4.12.0-2] the client answers with 0x18 and the same method
                if answer.reason_code != ReasonCode::ContinueAuthentication
                    || answer.properties.authentication_method.as_ref() != Some(method_name)
                {
                    return Err(ExchangeError::BadAnswer(method_name.clone()));
                }
                step = exchange.step(&answer.properties.authentication_data.unwrap_or_default());
            }
        }
    }
}
