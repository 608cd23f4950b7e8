//! Why a session ends its client's connection: [`CloseReason`], and for a
//! protocol violation the [`SessionError`] that knows its reason code and
//! its text in one place (`reason_code()`, `Display`). The DISCONNECT a 5.0
//! client gets carries both; the log line and the `protocol_errors` counter
//! come from the same value.

use bytestring::ByteString;

use super::alias::AliasError;
use super::core::disconnect::disconnect_publishes_will;
use super::outgoing::AckError;
use crate::codec::{DecodeError, PacketType, ReasonCode};

/// A client broke the protocol (or a rule the broker enforces on it); the
/// connection is closed with [`reason_code`](SessionError::reason_code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The bytes read are not a valid packet (the codec's error, by value).
    #[error("{text}")]
    Malformed { code: ReasonCode, text: String },
    /// [MQTT-3.1.0-2] CONNECT is sent once per connection.
    #[error("second CONNECT on a connection [MQTT-3.1.0-2]")]
    SecondConnect,
    /// CONNACK, SUBACK, PINGRESP ... from a client.
    #[error("{0} is sent by servers, not clients")]
    ServerPacket(PacketType),
    /// A Topic Alias over the maximum (0x94) or used before it was set.
    #[error(transparent)]
    TopicAlias(#[from] AliasError),
    /// 5.0 [MQTT-3.3.4-6] a client must not send Subscription Identifiers.
    #[error("PUBLISH from a client carries a Subscription Identifier")]
    SubscriptionIdFromClient,
    /// More QoS 1/2 PUBLISH packets unacknowledged than the broker's Receive
    /// Maximum.
    #[error("more than {0} unacknowledged QoS 1/2 PUBLISH packets")]
    ReceiveMaximumExceeded(usize),
    /// An acknowledgement that does not fit its message's flow.
    #[error(transparent)]
    Ack(#[from] AckError),
    /// A QoS 1/2 message whose copies could not be stored: 3.1.1 has no
    /// negative acknowledgement, so the connection closes and the client
    /// sends the message again.
    #[error("message {0} could not be stored")]
    MessageNotStored(u16),
    /// 5.0 [MQTT-3.8.3-4] No Local on a shared subscription.
    #[error("No Local set on shared subscription `{0}`")]
    NoLocalOnShared(ByteString),
    /// A SUBSCRIBE or UNSUBSCRIBE of a persistent session could not be
    /// stored (3.1.1 cannot refuse an UNSUBSCRIBE).
    #[error("{what} could not be stored: {reason}")]
    NotStored { what: &'static str, reason: String },
    /// 5.0 [MQTT-3.14.2-2] a Session Expiry Interval of 0 at CONNECT cannot
    /// be raised at DISCONNECT.
    #[error("DISCONNECT sets a Session Expiry Interval after CONNECT had 0")]
    ExpiryRaisedAtDisconnect,
    /// AUTH on a connection that did not use enhanced authentication.
    #[error("AUTH without an Authentication Method in CONNECT")]
    AuthWithoutMethod,
    /// [MQTT-4.12.1-1] re-authentication uses the method of the CONNECT.
    #[error("AUTH must use Authentication Method `{0}`")]
    AuthMethodChanged(ByteString),
    /// The method was removed from the configuration since CONNECT.
    #[error("Authentication Method `{0}` is no longer offered")]
    AuthMethodWithdrawn(ByteString),
    /// An AUTH reason code out of place in the exchange.
    #[error("AUTH with reason {0:#04x} does not fit the exchange")]
    AuthOutOfPlace(u8),
    /// Re-authentication failed (`code`: 0x8C Bad authentication method,
    /// else 0x87 Not authorized: DISCONNECT has no 0x86).
    #[error("re-authentication failed")]
    ReauthenticationFailed { code: ReasonCode },
    /// 5.0 [MQTT-3.1.2-24] even without its optional properties, CONNACK is
    /// larger than the client's Maximum Packet Size.
    #[error("no CONNACK fits the client's Maximum Packet Size of {0} bytes")]
    ConnAckTooLarge(u32),
}

impl SessionError {
    /// The reason code of the DISCONNECT (5.0) that closes the connection.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            SessionError::Malformed { code, .. } => *code,
            SessionError::TopicAlias(AliasError::OutOfRange { .. }) => {
                ReasonCode::TopicAliasInvalid
            }
            SessionError::ReceiveMaximumExceeded(_) => ReasonCode::ReceiveMaximumExceeded,
            SessionError::MessageNotStored(_) | SessionError::NotStored { .. } => {
                ReasonCode::UnspecifiedError
            }
            SessionError::AuthMethodWithdrawn(_) => ReasonCode::BadAuthenticationMethod,
            SessionError::ReauthenticationFailed { code } => *code,
            SessionError::ConnAckTooLarge(_) => ReasonCode::PacketTooLarge,
            SessionError::SecondConnect
            | SessionError::ServerPacket(_)
            | SessionError::TopicAlias(AliasError::Unknown(_))
            | SessionError::SubscriptionIdFromClient
            | SessionError::Ack(_)
            | SessionError::NoLocalOnShared(_)
            | SessionError::ExpiryRaisedAtDisconnect
            | SessionError::AuthWithoutMethod
            | SessionError::AuthMethodChanged(_)
            | SessionError::AuthOutOfPlace(_) => ReasonCode::ProtocolError,
        }
    }

    /// True for errors counted in `tern_protocol_errors_total`: all but a
    /// failed re-authentication (counted as an authentication outcome).
    pub fn is_protocol_error(&self) -> bool {
        !matches!(self, SessionError::ReauthenticationFailed { .. })
    }
}

impl From<&DecodeError> for SessionError {
    fn from(e: &DecodeError) -> SessionError {
        SessionError::Malformed {
            code: e.reason_code(),
            text: e.to_string(),
        }
    }
}

/// Why a connection ended, as far as the will and logs care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CloseReason {
    /// DISCONNECT from the client (5.0: with this reason code).
    ClientDisconnect(ReasonCode),
    /// The socket closed or failed without DISCONNECT.
    ConnectionLost(String),
    /// The client broke the protocol; a 5.0 client is told why.
    Violation(SessionError),
    /// Nothing received for 1.5 times the keep alive.
    KeepAliveTimeout,
    /// Another connection with the same client id took the session.
    TakenOver,
    /// The broker is stopping.
    ServerShutdown,
    /// The node drains: the client should use the server at this reference
    /// (5.0 Server Reference), where its session goes.
    UseAnotherServer(Option<ByteString>),
    /// An operator asked for it (admin API: kick, delete session).
    Administrative,
}

impl CloseReason {
    /// The reason code of the DISCONNECT the server sends (5.0), if any.
    pub(super) fn server_disconnect(&self) -> Option<ReasonCode> {
        match self {
            CloseReason::Violation(e) => Some(e.reason_code()),
            CloseReason::KeepAliveTimeout => Some(ReasonCode::KeepAliveTimeout),
            CloseReason::TakenOver => Some(ReasonCode::SessionTakenOver),
            CloseReason::ServerShutdown => Some(ReasonCode::ServerShuttingDown),
            CloseReason::UseAnotherServer(_) => Some(ReasonCode::UseAnotherServer),
            CloseReason::Administrative => Some(ReasonCode::AdministrativeAction),
            CloseReason::ClientDisconnect(_) | CloseReason::ConnectionLost(_) => None,
        }
    }

    /// The will is published unless the client disconnected normally
    /// [MQTT-3.1.2-8] [MQTT-3.14.4-3] (`core::disconnect`: a DISCONNECT
    /// publishes it only with 0x04).
    ///
    /// A drain (`UseAnotherServer`) does not publish it: the client is told
    /// where to reconnect and its session goes on there.
    pub(super) fn publishes_will(&self) -> bool {
        match self {
            CloseReason::ClientDisconnect(code) => disconnect_publishes_will(*code),
            CloseReason::UseAnotherServer(_) => false,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_reason_code_and_text() {
        let cases = [
            (SessionError::SecondConnect, ReasonCode::ProtocolError),
            (
                SessionError::TopicAlias(AliasError::OutOfRange { alias: 9, max: 4 }),
                ReasonCode::TopicAliasInvalid,
            ),
            (
                SessionError::TopicAlias(AliasError::Unknown(3)),
                ReasonCode::ProtocolError,
            ),
            (
                SessionError::ReceiveMaximumExceeded(16),
                ReasonCode::ReceiveMaximumExceeded,
            ),
            (
                SessionError::MessageNotStored(7),
                ReasonCode::UnspecifiedError,
            ),
            (
                SessionError::AuthMethodWithdrawn("SCRAM-SHA-256".into()),
                ReasonCode::BadAuthenticationMethod,
            ),
            (
                SessionError::ConnAckTooLarge(20),
                ReasonCode::PacketTooLarge,
            ),
            (
                SessionError::ReauthenticationFailed {
                    code: ReasonCode::NotAuthorized,
                },
                ReasonCode::NotAuthorized,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.reason_code(), code, "{error}");
        }
        assert_eq!(
            SessionError::ReceiveMaximumExceeded(16).to_string(),
            "more than 16 unacknowledged QoS 1/2 PUBLISH packets"
        );
        assert_eq!(
            SessionError::NoLocalOnShared("$share/g/a".into()).to_string(),
            "No Local set on shared subscription `$share/g/a`"
        );
    }

    #[test]
    fn a_malformed_packet_keeps_the_codecs_code_and_text() {
        let e = DecodeError::PacketTooLarge {
            packet: 3,
            size: 300,
            max: 256,
        };
        let s = SessionError::from(&e);
        assert_eq!(s.reason_code(), ReasonCode::PacketTooLarge);
        assert_eq!(s.to_string(), e.to_string());
        assert!(s.is_protocol_error());
        assert!(!SessionError::ReauthenticationFailed {
            code: ReasonCode::NotAuthorized
        }
        .is_protocol_error());
    }

    #[test]
    fn a_violation_is_told_and_publishes_the_will() {
        let r = CloseReason::Violation(SessionError::SecondConnect);
        assert_eq!(r.server_disconnect(), Some(ReasonCode::ProtocolError));
        assert!(r.publishes_will());
        assert!(!CloseReason::ClientDisconnect(ReasonCode::Success).publishes_will());
        assert!(
            CloseReason::ClientDisconnect(ReasonCode::DisconnectWithWillMessage).publishes_will()
        );
    }
}
