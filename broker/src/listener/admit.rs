//! What the listener asks once a CONNECT is decoded: may this client connect?
//! Authentication (the chain of [`Authentication`]), then its Will: the topic
//! within `[limits]` and writable under the ACL.
//!
//! [`decide`] is the pure, synchronous form (the fuzz target drives it);
//! [`admit`] is what `listener::bootstrap` awaits, with expensive checks off
//! the arbiter, counters and logs.

use std::net::SocketAddr;

use bytestring::ByteString;

use crate::acl::{Access, Acl, Subject};
use crate::auth::{AuthRequest, Authentication, Failure, Principal};
use crate::codec::{Connect, ReasonCode};
use crate::counters::Metrics;
use crate::hub::events::Severity;
use crate::limits::Limits;
use crate::state::BrokerState;

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Authentication failed.
    Auth(Failure),
    /// The will topic exceeds `limits.max_topic_levels` / `_length` (5.0
    /// 0x90; 3.1.1 return code 3, the closest).
    WillTopicTooLong,
    /// The ACL does not let the client write its will topic (5.0 0x87,
    /// 3.1.1 return code 5).
    WillNotAuthorized,
}

impl Refusal {
    /// The CONNACK reason code (3.1.1 return codes follow from it).
    pub fn reason_code(self) -> ReasonCode {
        match self {
            Refusal::Auth(f) => f.reason_code(),
            Refusal::WillTopicTooLong => ReasonCode::TopicNameInvalid,
            Refusal::WillNotAuthorized => ReasonCode::NotAuthorized,
        }
    }

    /// Category for logs: never which credential was wrong.
    pub fn category(self) -> &'static str {
        match self {
            Refusal::Auth(Failure::BadCredentials) => "bad credentials",
            Refusal::Auth(Failure::NotAuthorized) => "anonymous not allowed",
            Refusal::Auth(Failure::BadAuthenticationMethod) => "unsupported auth method",
            Refusal::Auth(Failure::Unavailable) => "authentication unavailable",
            Refusal::WillTopicTooLong => "will topic over limits",
            Refusal::WillNotAuthorized => "will topic not authorized",
        }
    }
}

/// Checks the will of an authenticated client.
pub fn check_will(
    acl: &Acl,
    limits: &Limits,
    connect: &Connect,
    client_id: &str,
    principal: &Principal,
) -> Result<(), Refusal> {
    let Some(will) = &connect.will else {
        return Ok(());
    };
    if limits.topic_violation(&will.topic).is_some() {
        return Err(Refusal::WillTopicTooLong);
    }
    let subject = Subject::new(client_id, principal);
    if !acl.check_topic(&subject, &will.topic, Access::Write) {
        return Err(Refusal::WillNotAuthorized);
    }
    Ok(())
}

/// The whole decision, synchronously (may block for a password hash).
pub fn decide(
    auth: &Authentication,
    acl: &Acl,
    limits: &Limits,
    connect: &Connect,
    client_id: &ByteString,
    peer: SocketAddr,
    certificate_identity: Option<String>,
) -> Result<Principal, Refusal> {
    let request = AuthRequest::from_connect(connect, client_id.clone(), peer, certificate_identity);
    let principal = auth.decide(&request).map_err(Refusal::Auth)?;
    check_will(acl, limits, connect, client_id, &principal)?;
    Ok(principal)
}

/// The decision for `listener::bootstrap`: authentication runs off the
/// arbiter when it is expensive; refusals are counted and logged (client id,
/// peer, category).
///
/// `enhanced`: the user name a 5.0 enhanced authentication exchange
/// (`crate::enhanced_auth`) already established; then the credential chain
/// is not asked, only the will is checked.
pub async fn admit(
    state: &BrokerState,
    connect: &Connect,
    client_id: &ByteString,
    peer: SocketAddr,
    certificate_identity: Option<String>,
    enhanced: Option<&str>,
) -> Result<Principal, Refusal> {
    let authenticated = match enhanced {
        Some(username) => Ok(Principal {
            username: Some(username.into()),
            certificate_identity,
        }),
        None => {
            let request =
                AuthRequest::from_connect(connect, client_id.clone(), peer, certificate_identity);
            state.auth().authenticate(request).await
        }
    };
    let result = match authenticated {
        Ok(principal) => check_will(state.acl(), state.limits(), connect, client_id, &principal)
            .map(|()| principal),
        Err(f) => Err(Refusal::Auth(f)),
    };
    match result {
        Ok(principal) => Ok(principal),
        Err(refusal) => {
            let counter = match refusal {
                Refusal::Auth(_) => &state.metrics().auth_failures,
                Refusal::WillTopicTooLong => &state.metrics().topic_limit_refused,
                Refusal::WillNotAuthorized => &state.metrics().acl_denied_publish,
            };
            Metrics::add(counter, 1);
            Metrics::add(&state.metrics().connections_refused, 1);
            tracing::info!(%client_id, %peer, reason = refusal.category(), "connection refused");
            state.hub().events().emit(
                Severity::Warning,
                "client",
                client_id,
                "connection refused",
                serde_json::json!({
                    "reason": refusal.category(),
                    "reason_code": refusal.reason_code() as u8,
                    "peer": peer.to_string(),
                }),
            );
            Err(refusal)
        }
    }
}
