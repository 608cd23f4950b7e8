//! The client's acknowledgements of the copies it was sent, as policy:
//! PUBACK (QoS 1), PUBREC and PUBCOMP (QoS 2) (3.1.1 sections 3.4, 3.5,
//! 3.7, 4.3.2, 4.3.3; 5.0 sections 3.4, 3.5, 3.7, 4.3.2, 4.3.3, 4.9).
//!
//! [`handle_client_ack`] moves the copy through its flow in the session's
//! outgoing state machine (`session/outgoing/`, sans-IO itself: it knows
//! which packet id is in which state) and returns the one [`AckAction`]
//! `session/deliver.rs` carries out: delete the copy's record and send what
//! the freed window allows, store the Released state before PUBREL (or send
//! PUBREL at once), answer a PUBREC for an unknown packet id, or close the
//! connection. One enum, not a list: this runs once per QoS 1/2 copy
//! delivered and allocates nothing.
//!
//! Nothing here depends on time, so it takes no `now`: the window it frees
//! is filled by `Outgoing::poll_send`, which does (and drops the queued
//! copies that expired meanwhile); the tests drive both with a fake clock.
//!
//! Flows: QoS 1 `Sent` -PUBACK-> gone; QoS 2 `Sent` -PUBREC-> `Released`
//! -PUBCOMP-> gone. A PUBREC for a `Released` copy is answered again (the
//! PUBREL may have been lost); any other acknowledgement out of its flow
//! is a protocol error.

use crate::codec::{ProtocolVersion, ReasonCode};
use crate::session::outgoing::{AckError, Outgoing};
use crate::session::SessionError;

/// Which acknowledgement the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAckKind {
    /// QoS 1: the copy is received.
    PubAck,
    /// QoS 2, first step: the copy is received (5.0: or refused, with a
    /// reason code of 0x80 or more).
    PubRec,
    /// QoS 2, last step: the flow is complete.
    PubComp,
}

/// An acknowledgement from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAck {
    pub kind: ClientAckKind,
    pub packet_id: u16,
    /// 5.0; a 3.1.1 acknowledgement decodes as Success.
    pub reason_code: ReasonCode,
}

/// What the session knows besides its outgoing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckFacts {
    /// Version of the connection.
    pub protocol: ProtocolVersion,
    /// Something of the session is in the store: its copies are stored.
    pub stored: bool,
}

/// What the session does for one acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckAction {
    /// The flow of copy `seq` is over (PUBACK, PUBCOMP, or a 5.0 PUBREC
    /// refusing the message), and it has left the window: delete its
    /// record if `delete_record` (no wait), then send what the window
    /// allows now.
    Complete { seq: u64, delete_record: bool },
    /// PUBREC: copy `seq` is `Released`. With `persist`, its Released state
    /// is stored first and PUBREL goes once that is durable: after a crash
    /// the broker must resend PUBREL, not the PUBLISH, which the client
    /// would take as a new message once it has completed the flow. Without,
    /// PUBREL goes now.
    Release { seq: u64, persist: bool },
    /// PUBREC for a packet id with no QoS 2 copy in flight (its flow ended
    /// before, e.g. across a reconnect of a clean session): PUBREL anyway,
    /// with this code, so that a client still holding the id completes its
    /// flow and frees it, as Mosquitto and EMQX do. 5.0: 0x92 Packet
    /// Identifier not found (5.0 section 3.6.2.1); 3.1.1: Success, it has
    /// no reason code (3.1.1 section 4.3.3: the receiver of PUBREC sends
    /// PUBREL).
    PubRelUnknown {
        packet_id: u16,
        reason_code: ReasonCode,
    },
    /// PUBACK or PUBCOMP for a packet id with nothing in flight: late or
    /// repeated, harmless; nothing to do but a debug line.
    Unknown { packet_id: u16 },
    /// A 5.0 PUBREC refusing a copy that is not in flight (any more):
    /// nothing to do.
    Nothing,
    /// The acknowledgement does not fit the copy's flow (PUBACK for QoS 2,
    /// PUBCOMP before PUBREC ...): close the connection with this error
    /// (0x82 Protocol Error).
    Close(SessionError),
}

/// Applies one acknowledgement from the client to `outgoing` and says what
/// the session does next.
pub fn handle_client_ack(outgoing: &mut Outgoing, ack: ClientAck, facts: AckFacts) -> AckAction {
    let packet_id = ack.packet_id;
    let moved = match ack.kind {
        ClientAckKind::PubAck => outgoing.handle_puback(packet_id),
        ClientAckKind::PubRec if ack.reason_code.is_error() => {
            // 5.0: the client refused the message; its flow ends here
            return match outgoing.remove(packet_id) {
                Ok(seq) => AckAction::Complete {
                    seq,
                    delete_record: facts.stored,
                },
                Err(_) => AckAction::Nothing,
            };
        }
        ClientAckKind::PubRec => match outgoing.handle_pubrec(packet_id) {
            Ok(seq) => {
                return AckAction::Release {
                    seq,
                    persist: facts.stored,
                }
            }
            Err(AckError::UnknownPacketId(_)) => {
                return AckAction::PubRelUnknown {
                    packet_id,
                    reason_code: if facts.protocol.is_v5() {
                        ReasonCode::PacketIdentifierNotFound
                    } else {
                        ReasonCode::Success
                    },
                }
            }
            Err(e) => Err(e),
        },
        ClientAckKind::PubComp => outgoing.handle_pubcomp(packet_id),
    };
    match moved {
        Ok(seq) => AckAction::Complete {
            seq,
            delete_record: facts.stored,
        },
        Err(AckError::UnknownPacketId(packet_id)) => AckAction::Unknown { packet_id },
        Err(e @ AckError::WrongState { .. }) => AckAction::Close(SessionError::Ack(e)),
    }
}

#[cfg(test)]
mod tests;
