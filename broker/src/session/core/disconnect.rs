//! DISCONNECT and AUTH from the client, as policy (3.1.1 section 3.14; 5.0
//! sections 3.14, 3.15, 4.12.1).
//!
//! DISCONNECT: [`plan_disconnect`] checks a Session Expiry Interval the
//! client sends with it and says how the connection ends; whether the will
//! goes is [`disconnect_publishes_will`] (asked by `CloseReason`), and what
//! then happens to the will and the session is
//! [`on_connection_lost`](super::on_connection_lost), as for any end of a
//! connection. Asked by `session/connect.rs`.
//!
//! AUTH (5.0 re-authentication): [`plan_auth`] checks the packet against
//! the exchange in progress and says whether to start one or feed the one
//! running; [`answer_auth_step`] turns what the mechanism answered into the
//! AUTH to send or the DISCONNECT that ends the connection. The mechanisms
//! themselves (`enhanced_auth/`) are pure too. Asked by `session/reauth.rs`.
//!
//! Neither depends on time: no `now`.

use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::{Auth, Disconnect, ReasonCode};
use crate::enhanced_auth::{AuthFailure, AuthStep};
use crate::session::SessionError;

/// How a DISCONNECT from the client ends its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectPlan {
    /// The DISCONNECT breaks a rule: the connection closes for this
    /// violation (a 5.0 client is told; the will goes, as after any
    /// violation).
    Violation(SessionError),
    /// The client ends its connection.
    Close {
        /// 5.0: the Session Expiry Interval the session has from now on,
        /// if the DISCONNECT changes it (0: the session ends with the
        /// connection).
        session_expiry_interval: Option<u32>,
        /// The client's reason (3.1.1: Success); 0x04 publishes the will.
        reason_code: ReasonCode,
    },
}

/// DISCONNECT from a client whose session has `session_expiry_interval`:
/// 5.0 [MQTT-3.14.2-2] an interval of 0 set at CONNECT cannot be raised at
/// DISCONNECT; any other change is taken as sent.
pub fn plan_disconnect(session_expiry_interval: u32, d: &Disconnect) -> DisconnectPlan {
    let requested = d.properties.session_expiry_interval;
    if session_expiry_interval == 0 && requested.is_some_and(|e| e != 0) {
        return DisconnectPlan::Violation(SessionError::ExpiryRaisedAtDisconnect);
    }
    DisconnectPlan::Close {
        session_expiry_interval: requested,
        reason_code: d.reason_code,
    }
}

/// Whether a DISCONNECT with `reason_code` publishes the will: only 5.0
/// 0x04 Disconnect with Will Message does; a normal disconnect deletes it
/// (5.0 [MQTT-3.1.2-8] [MQTT-3.14.4-3]; 3.1.1 [MQTT-3.14.4-3]).
///
/// Stricter than 5.0, which deletes it only for 0x00: a DISCONNECT with
/// an error code (0x80 and up) should publish it too. Kept as it was here;
/// a known issue.
pub fn disconnect_publishes_will(reason_code: ReasonCode) -> bool {
    reason_code == ReasonCode::DisconnectWithWillMessage
}

/// What an AUTH from the client does ([`plan_auth`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPlan<M> {
    /// 0x19 Re-authenticate: start an exchange with this mechanism.
    Start(M),
    /// 0x18 Continue authentication: feed the exchange in progress.
    Continue,
}

/// AUTH on a live connection (5.0 section 4.12.1). `connect_method`: the
/// Authentication Method the CONNECT used, if any; `in_exchange`: a
/// re-authentication is in progress; `offered`: the mechanism of that name
/// the node still offers. In order: a connection without enhanced
/// authentication cannot re-authenticate; [MQTT-4.12.1-1] the method is
/// the CONNECT's; 0x19 starts an exchange (with a method still offered),
/// 0x18 continues one; any other code, or one out of place, is a protocol
/// error.
pub fn plan_auth<M>(
    auth: &Auth,
    connect_method: Option<&ByteString>,
    in_exchange: bool,
    offered: Option<M>,
) -> Result<AuthPlan<M>, SessionError> {
    let Some(method) = connect_method else {
        return Err(SessionError::AuthWithoutMethod);
    };
    // [MQTT-4.12.1-1] re-authentication uses the method of the CONNECT
    if auth.properties.authentication_method.as_ref() != Some(method) {
        return Err(SessionError::AuthMethodChanged(method.clone()));
    }
    match (auth.reason_code, in_exchange) {
        (ReasonCode::ReAuthenticate, false) => match offered {
            Some(m) => Ok(AuthPlan::Start(m)),
            None => Err(SessionError::AuthMethodWithdrawn(method.clone())),
        },
        (ReasonCode::ContinueAuthentication, true) => Ok(AuthPlan::Continue),
        (code, _) => Err(SessionError::AuthOutOfPlace(code.as_u8())),
    }
}

/// What the session answers to a step of a re-authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAnswer {
    /// Send AUTH 0x18 with this challenge; the exchange goes on.
    Challenge(Bytes),
    /// Send AUTH 0x00 with the mechanism's final data; the exchange is
    /// over and the connection goes on as `username`.
    Success {
        username: String,
        data: Option<Bytes>,
    },
    /// The exchange is over and the connection closes with `error`
    /// (`why` is for the log only).
    Failure {
        error: SessionError,
        why: AuthFailure,
    },
}

/// The answer to what the mechanism said. A refusal closes the connection
/// with 0x8C Bad authentication method, or else 0x87 Not authorized:
/// DISCONNECT has no 0x86 Bad user name or password (5.0 section 3.14.2.1).
pub fn answer_auth_step(step: AuthStep) -> AuthAnswer {
    match step {
        AuthStep::Continue(challenge) => AuthAnswer::Challenge(challenge),
        AuthStep::Success { username, data } => AuthAnswer::Success { username, data },
        AuthStep::Failure { code, why } => {
            let code = match code {
                ReasonCode::BadAuthenticationMethod => code,
                _ => ReasonCode::NotAuthorized,
            };
            AuthAnswer::Failure {
                error: SessionError::ReauthenticationFailed { code },
                why,
            }
        }
    }
}

#[cfg(test)]
mod tests;
