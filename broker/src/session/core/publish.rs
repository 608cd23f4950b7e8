//! Inbound PUBLISH, the acknowledgements owed for it, and PUBREL, without
//! I/O (3.1.1 sections 3.3, 3.6, 4.3; 5.0 sections 3.3, 3.6, 4.3, 4.9).
//!
//! The actor (`session/publish.rs`) gathers the facts ([`PublishFacts`]:
//! the alias result, the receive window, the QoS 2 id held, the verdict of
//! the topic limits, ACL and held-bytes cap), asks [`plan_publish`], and
//! carries out the one [`PublishPlan`] it gets: close the connection, answer
//! at once without routing, or route (owing an acknowledgement, holding and
//! storing a QoS 2 id). A single enum rather than a list of actions: inbound
//! PUBLISH is the hot path and this allocates nothing. [`plan_ack`] says what
//! becomes of each acknowledgement once ready, [`pubcomp_code`] answers a
//! PUBREL.

use crate::codec::{ProtocolVersion, Publish, QoS, ReasonCode};
use crate::session::alias::AliasError;
use crate::session::incoming::{AckKind, ReadyAck};
use crate::session::SessionError;

/// What the session knows when a PUBLISH arrives from its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishFacts {
    /// Version of the connection.
    pub protocol: ProtocolVersion,
    /// Resolving its Topic Alias (5.0; `Ok` without one). The topic the
    /// other facts were found for is the resolved one.
    pub alias: Result<(), AliasError>,
    /// QoS 1/2 PUBLISH packets not acknowledged yet: acknowledgements owed
    /// plus QoS 2 ids held until PUBREL.
    pub in_flight: usize,
    /// The Receive Maximum the broker announced (`mqtt.max_inflight`).
    pub receive_maximum: u16,
    /// A QoS 2 message with this packet id was received and not released.
    pub qos2_held: bool,
    /// A PUBREC for this packet id is owed already (looked up only for a
    /// QoS 2 PUBLISH whose id is held).
    pub pubrec_owed: bool,
    /// The code the topic limits (0x90), the ACL (0x87) or the held-bytes
    /// cap (0x97) refuse the message with (`session/checks.rs`), if they do.
    pub refusal: Option<ReasonCode>,
    /// The session outlives its connection: a QoS 2 id is stored.
    pub persistent: bool,
}

/// Why a PUBLISH is answered without being routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedBy {
    /// 5.0 [MQTT-3.3.2-4]: announced as UTF-8, and it is not.
    PayloadFormat,
    /// The topic limits, the ACL or the held-bytes cap (`refusal` of the
    /// facts); counted and reported as such.
    Checks,
}

/// What the session does with a PUBLISH from its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishPlan {
    /// The client broke the protocol: close the connection.
    Disconnect(SessionError),
    /// Not routed. `ack`: the acknowledgement that goes once those before
    /// it have (none for QoS 0, which is dropped unanswered).
    Refuse {
        ack: Option<ReadyAck>,
        by: RefusedBy,
    },
    /// A resend of a QoS 2 message whose id is held: not routed again
    /// (method B, 3.1.1 figure 4.3), acknowledged again unless a PUBREC for
    /// it is owed already.
    Duplicate { ack: Option<ReadyAck> },
    /// Route the message (stored as retained first if flagged).
    Route {
        /// The acknowledgement owed, written once every copy bound for a
        /// persistent session is on disk (none for QoS 0).
        ack: Option<(AckKind, u16)>,
        /// QoS 2: hold the packet id until PUBREL, so a resend is not
        /// routed twice.
        hold_qos2: bool,
        /// Store the held id before the PUBREC goes (persistent session).
        store_qos2: bool,
    },
}

/// The plan for one PUBLISH. In order: 5.0 protocol rules (topic alias,
/// Subscription Identifier from a client, Receive Maximum, then Payload
/// Format Indicator), then the refusal of the checks, then the QoS flow.
pub fn plan_publish(publish: &Publish, f: &PublishFacts) -> PublishPlan {
    let v5 = f.protocol.is_v5();
    let packet_id = publish.packet_id.unwrap_or(0);
    if v5 {
        // 5.0 [MQTT-3.3.2-9] [MQTT-3.3.2-10]
        if let Err(e) = f.alias {
            return PublishPlan::Disconnect(e.into());
        }
        if !publish.properties.subscription_identifiers.is_empty() {
            // 5.0 [MQTT-3.3.4-6] a client must not send Subscription Identifiers
            return PublishPlan::Disconnect(SessionError::SubscriptionIdFromClient);
        }
        if publish.qos > QoS::AtMostOnce
            && f.in_flight >= usize::from(f.receive_maximum)
            && !f.qos2_held
        {
            // 5.0 [MQTT-3.3.4-9] more unacknowledged QoS > 0 PUBLISH packets
            // than the Receive Maximum we announced
            return PublishPlan::Disconnect(SessionError::ReceiveMaximumExceeded(f.in_flight));
        }
        if publish.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            // 5.0 [MQTT-3.3.2-4] payload announced as UTF-8 but is not
            return PublishPlan::Refuse {
                ack: ack_of(publish.qos, packet_id, ReasonCode::PayloadFormatInvalid),
                by: RefusedBy::PayloadFormat,
            };
        }
    }
    if let Some(code) = f.refusal {
        // 3.1.1 has no way to refuse: acknowledged as usual, and dropped
        let code = if v5 { code } else { ReasonCode::Success };
        return PublishPlan::Refuse {
            ack: ack_of(publish.qos, packet_id, code),
            by: RefusedBy::Checks,
        };
    }
    match publish.qos {
        QoS::AtMostOnce => PublishPlan::Route {
            ack: None,
            hold_qos2: false,
            store_qos2: false,
        },
        QoS::AtLeastOnce => PublishPlan::Route {
            ack: Some((AckKind::PubAck, packet_id)),
            hold_qos2: false,
            store_qos2: false,
        },
        QoS::ExactlyOnce if f.qos2_held => PublishPlan::Duplicate {
            ack: (!f.pubrec_owed).then_some(ReadyAck {
                kind: AckKind::PubRec,
                packet_id,
                reason_code: ReasonCode::Success,
            }),
        },
        QoS::ExactlyOnce => PublishPlan::Route {
            ack: Some((AckKind::PubRec, packet_id)),
            hold_qos2: true,
            store_qos2: f.persistent,
        },
    }
}

/// The acknowledgement of a PUBLISH at `qos` answered at once with `code`.
fn ack_of(qos: QoS, packet_id: u16, reason_code: ReasonCode) -> Option<ReadyAck> {
    let kind = match qos {
        QoS::AtMostOnce => return None,
        QoS::AtLeastOnce => AckKind::PubAck,
        QoS::ExactlyOnce => AckKind::PubRec,
    };
    Some(ReadyAck {
        kind,
        packet_id,
        reason_code,
    })
}

/// The acknowledgement code of a routed message: 5.0 0x10 No matching
/// subscribers when nobody received it (3.1.1 encodes every success as 0).
pub fn accepted(receivers: usize) -> ReasonCode {
    if receivers == 0 {
        ReasonCode::NoMatchingSubscribers
    } else {
        ReasonCode::Success
    }
}

/// What becomes of an acknowledgement that is ready ([`plan_ack`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckPlan {
    /// A PUBREC that refuses: forget the QoS 2 id (here and in the store),
    /// so a resend is a new message to route, not a duplicate.
    pub forget_qos2: bool,
    pub outcome: AckOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// Write this acknowledgement.
    Send(ReadyAck),
    /// 3.1.1 cannot say a message was not accepted: close without
    /// acknowledging (the acknowledgements after it stay unsent), so the
    /// client sends it again.
    Disconnect(SessionError),
}

/// An acknowledgement is ready: written with its code (5.0) or with
/// Success (3.1.1), unless it says the message failed and the client
/// speaks 3.1.1.
pub fn plan_ack(protocol: ProtocolVersion, mut ack: ReadyAck) -> AckPlan {
    let failed = ack.reason_code.is_error();
    let forget_qos2 = ack.kind == AckKind::PubRec && failed;
    let outcome = if protocol.is_v5() {
        AckOutcome::Send(ack)
    } else if failed {
        AckOutcome::Disconnect(SessionError::MessageNotStored(ack.packet_id))
    } else {
        ack.reason_code = ReasonCode::Success;
        AckOutcome::Send(ack)
    };
    AckPlan {
        forget_qos2,
        outcome,
    }
}

/// The PUBCOMP code answering a PUBREL: 5.0 0x92 if the id was not held
/// (`known`), 3.1.1 always Success.
pub fn pubcomp_code(protocol: ProtocolVersion, known: bool) -> ReasonCode {
    if known || !protocol.is_v5() {
        ReasonCode::Success
    } else {
        ReasonCode::PacketIdentifierNotFound
    }
}

/// A human explanation of a failure code, for Reason Strings.
pub fn reason_text(code: ReasonCode) -> Option<&'static str> {
    Some(match code {
        ReasonCode::UnspecifiedError => "the message could not be stored; send it again",
        ReasonCode::PayloadFormatInvalid => {
            "the payload is not valid UTF-8 but its Payload Format Indicator says it is"
        }
        ReasonCode::NotAuthorized => "not authorized",
        ReasonCode::QuotaExceeded => "a quota of the broker is exceeded",
        ReasonCode::PacketIdentifierNotFound => {
            "no QoS 2 message with this packet id is waiting for PUBREL"
        }
        ReasonCode::TopicFilterInvalid => "the topic filter is not valid",
        ReasonCode::ImplementationSpecificError => "the broker refused the request",
        _ => return None,
    })
}

/// The Reason String of an acknowledgement: why it failed, unless the
/// client asked for no problem information (`wanted`: 5.0 [MQTT-3.1.2-29]).
pub fn reason_string(wanted: bool, code: ReasonCode) -> Option<&'static str> {
    (wanted && code.is_error())
        .then(|| reason_text(code))
        .flatten()
}

#[cfg(test)]
mod tests;
