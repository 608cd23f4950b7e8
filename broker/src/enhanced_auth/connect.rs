//! The enhanced authentication exchange that starts with CONNECT, run by the
//! listener before the connection is given to a session (5.0 section 4.12).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{AuthMethods, AuthStep};
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

/// Runs the exchange if the CONNECT names an Authentication Method.
/// `Ok(None)`: no enhanced authentication asked. `Err(Some(code))`: refuse
/// with CONNACK `code`; `Err(None)`: the client went away or broke the
/// protocol; close without answer.
pub async fn authenticate(
    packets: &mut PacketStream<Box<dyn Transport>>,
    connect: &Connect,
    methods: &AuthMethods,
    timeout: Duration,
) -> Result<Option<Authenticated>, Option<ReasonCode>> {
    let Some(method_name) = &connect.properties.authentication_method else {
        return Ok(None);
    };
    // [MQTT-4.12.0-1] an unsupported method is refused with 0x8C
    let Some(method) = methods.get(method_name) else {
        tracing::info!(method = %method_name, "unsupported authentication method");
        return Err(Some(ReasonCode::BadAuthenticationMethod));
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
            AuthStep::Failure { code, why } => {
                tracing::info!(client_id = %connect.client_id, reason = %why, "enhanced authentication failed");
                return Err(Some(code));
            }
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
                    .map_err(|_| None)?;
                packets.get_mut().write_all(&buf).await.map_err(|_| None)?;
                let answer = match tokio::time::timeout(timeout, packets.next()).await {
                    Ok(Some(Ok(Packet::Auth(answer)))) => answer,
                    _ => return Err(None),
                };
                // [MQTT-4.12.0-2] the client answers with 0x18 and the same method
                if answer.reason_code != ReasonCode::ContinueAuthentication
                    || answer.properties.authentication_method.as_ref() != Some(method_name)
                {
                    return Err(Some(ReasonCode::ProtocolError));
                }
                step = exchange.step(&answer.properties.authentication_data.unwrap_or_default());
            }
        }
    }
}
