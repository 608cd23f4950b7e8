//! 5.0 re-authentication (section 4.12.1): AUTH on a live connection,
//! with the method the CONNECT used.

use actix::prelude::*;

use super::error::{CloseReason, SessionError};
use super::Session;
use crate::codec::{Packet, ReasonCode};
use crate::enhanced_auth::AuthStep;

impl Session {
    /// AUTH on a live connection: 5.0 re-authentication (section 4.12.1).
    /// The client starts it with reason 0x19 and the method of its CONNECT;
    /// packets keep flowing meanwhile. Success ends with AUTH 0x00; failure
    /// closes the connection.
    pub(super) fn handle_auth(&mut self, auth: crate::codec::Auth, ctx: &mut Context<Self>) {
        let Some(method_name) = self.auth.as_ref().map(|a| a.method.clone()) else {
            return self.protocol_error(SessionError::AuthWithoutMethod, ctx);
        };
        // [MQTT-4.12.1-1] re-authentication uses the method of the CONNECT
        if auth.properties.authentication_method.as_ref() != Some(&method_name) {
            return self.protocol_error(SessionError::AuthMethodChanged(method_name), ctx);
        }
        let data = auth.properties.authentication_data.unwrap_or_default();
        let exchange = self.auth.as_mut().and_then(|a| a.exchange.as_mut());
        let step = match (auth.reason_code, exchange) {
            (ReasonCode::ReAuthenticate, None) => {
                let Some(method) = self.state.auth_methods().get(&method_name).cloned() else {
                    return self
                        .protocol_error(SessionError::AuthMethodWithdrawn(method_name), ctx);
                };
                let (exchange, step) = method.start(&data);
                if let Some(auth) = self.auth.as_mut() {
                    auth.exchange = Some(exchange);
                }
                step
            }
            (ReasonCode::ContinueAuthentication, Some(exchange)) => exchange.step(&data),
            (code, _) => {
                return self.protocol_error(SessionError::AuthOutOfPlace(code.as_u8()), ctx)
            }
        };
        let (reason_code, data) = match step {
            AuthStep::Continue(challenge) => (ReasonCode::ContinueAuthentication, Some(challenge)),
            AuthStep::Success { data, username } => {
                tracing::debug!(client_id = %self.client_id(), %username, "re-authenticated");
                self.end_reauth();
                (ReasonCode::Success, data)
            }
            AuthStep::Failure { code, why } => {
                self.end_reauth();
                tracing::info!(client_id = %self.client_id(), reason = %why, "re-authentication failed");
                // DISCONNECT has no 0x86: a wrong secret is Not authorized.
                let code = match code {
                    ReasonCode::BadAuthenticationMethod => code,
                    _ => ReasonCode::NotAuthorized,
                };
                return self.connection_lost(
                    CloseReason::Violation(SessionError::ReauthenticationFailed { code }),
                    ctx,
                );
            }
        };
        self.send(&Packet::Auth(crate::codec::Auth {
            reason_code,
            properties: crate::codec::AuthProperties {
                authentication_method: Some(method_name),
                authentication_data: data,
                ..Default::default()
            },
        }));
    }
}
