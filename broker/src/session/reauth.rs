//! 5.0 re-authentication (section 4.12.1): AUTH on a live connection,
//! with the method the CONNECT used. `core::disconnect` decides
//! ([`plan_auth`], [`answer_auth_step`]); this runs the mechanism and
//! carries out the answer.

use actix::prelude::*;

use super::core::disconnect::{answer_auth_step, plan_auth, AuthAnswer, AuthPlan};
use super::error::CloseReason;
use super::Session;
use crate::codec::{Packet, ReasonCode};

impl Session {
    /// AUTH on a live connection: 5.0 re-authentication (section 4.12.1).
    /// The client starts it with reason 0x19 and the method of its CONNECT;
    /// packets keep flowing meanwhile. Success ends with AUTH 0x00; failure
    /// closes the connection.
    pub(super) fn handle_auth(&mut self, auth: crate::codec::Auth, ctx: &mut Context<Self>) {
        let connect_method = self.auth.as_ref().map(|a| a.method.clone());
        let offered = connect_method
            .as_ref()
            .and_then(|name| self.state.auth_methods().get(name).cloned());
        let in_exchange = self.auth.as_ref().is_some_and(|a| a.exchange.is_some());
        let plan = match plan_auth(&auth, connect_method.as_ref(), in_exchange, offered) {
            Ok(plan) => plan,
            Err(e) => return self.protocol_error(e, ctx),
        };
        let Some(session_auth) = self.auth.as_mut() else {
            return; // plan_auth refuses a connection without a method
        };
        let method_name = session_auth.method.clone();
        let data = auth.properties.authentication_data.unwrap_or_default();
        let step = match (plan, session_auth.exchange.as_mut()) {
            (AuthPlan::Start(method), _) => {
                let (exchange, step) = method.start(&data);
                session_auth.exchange = Some(exchange);
                step
            }
            (AuthPlan::Continue, Some(exchange)) => exchange.step(&data),
            (AuthPlan::Continue, None) => return, // plan_auth: only in an exchange
        };
        let (reason_code, data) = match answer_auth_step(step) {
            AuthAnswer::Challenge(challenge) => {
                (ReasonCode::ContinueAuthentication, Some(challenge))
            }
            AuthAnswer::Success { username, data } => {
                tracing::debug!(client_id = %self.client_id(), %username, "re-authenticated");
                self.end_reauth();
                (ReasonCode::Success, data)
            }
            AuthAnswer::Failure { error, why } => {
                self.end_reauth();
                tracing::info!(client_id = %self.client_id(), reason = %why, "re-authentication failed");
                return self.connection_lost(CloseReason::Violation(error), ctx);
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
