//! Packets from the client: the dispatcher, inbound PUBLISH (QoS 0/1/2 with
//! the acknowledgement owed in order) and PUBREL. Routing is in `route`.
//!
//! 3.1.1 sections 3.3, 3.6, 4.3, 4.6; 5.0 sections 3.3, 3.6, 4.3, 4.6.
//!
//! A PUBACK / PUBREC is written only after every copy of the message bound
//! for a persistent session (and the retained copy, and the publisher's own
//! QoS 2 state) is on disk: each such copy holds a clone of the message's
//! [`AckGuard`], and the guard's last drop brings `AckDone` back here.

use std::sync::Arc;

use actix::prelude::*;

use super::alias::AliasError;
use super::error::SessionError;
use super::incoming::{AckKind, ReadyAck};
use super::Session;
use crate::codec::{AckProperties, Packet, PubResponse, Publish, QoS, ReasonCode};
use crate::fanout::{route, store_retained, traced_durable, Scope};
use crate::handle::{hold_until_durable, AckDone, LazyGuard};
use crate::message::{unix_ms, Message};
use crate::telemetry;

/// The acknowledgement code of an accepted message: 5.0 0x10 No matching
/// subscribers when nobody received it (3.1.1 encodes every success as 0).
fn accepted(receivers: usize) -> ReasonCode {
    if receivers == 0 {
        ReasonCode::NoMatchingSubscribers
    } else {
        ReasonCode::Success
    }
}

/// A human explanation of a failure code, for Reason Strings.
pub(super) fn reason_text(code: ReasonCode) -> Option<&'static str> {
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

impl Session {
    /// Handles one packet from the client.
    pub(super) fn handle_packet(&mut self, packet: Packet, ctx: &mut Context<Self>) {
        match packet {
            Packet::Publish(p) => self.handle_publish(p, ctx),
            Packet::PubAck(a) => self.handle_puback(a, ctx),
            Packet::PubRec(a) => self.handle_pubrec(a, ctx),
            Packet::PubRel(a) => self.handle_pubrel(a),
            Packet::PubComp(a) => self.handle_pubcomp(a, ctx),
            Packet::Subscribe(s) => self.handle_subscribe(s, ctx),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(u, ctx),
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(d) => self.handle_disconnect(d, ctx),
            // [MQTT-3.1.0-2] a second CONNECT is a protocol violation
            Packet::Connect(_) => self.protocol_error(SessionError::SecondConnect, ctx),
            Packet::Auth(auth) => self.handle_auth(auth, ctx),
            other @ (Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => {
                self.protocol_error(SessionError::ServerPacket(other.packet_type()), ctx)
            }
        }
    }

    /// Writes a packet to the current connection, if any.
    pub(super) fn send(&self, packet: &Packet) {
        if let Some(conn) = &self.conn {
            conn.send(packet);
        }
    }

    fn handle_publish(&mut self, mut publish: Publish, ctx: &mut Context<Self>) {
        self.state.metrics().received(publish.qos);
        if self.protocol.is_v5() {
            let Some(conn) = &mut self.conn else { return };
            match conn.aliases().resolve_inbound(&mut publish) {
                Ok(()) => {}
                // 5.0 [MQTT-3.3.2-9] [MQTT-3.3.2-10]
                Err(e @ AliasError::OutOfRange { .. }) => {
                    return self.protocol_error(e.into(), ctx)
                }
                Err(e @ AliasError::Unknown(_)) => return self.protocol_error(e.into(), ctx),
            }
            if !publish.properties.subscription_identifiers.is_empty() {
                // 5.0 [MQTT-3.3.4-6] a client must not send Subscription Identifiers
                return self.protocol_error(SessionError::SubscriptionIdFromClient, ctx);
            }
            let in_flight = self.incoming.pending_len() + self.incoming.qos2_len();
            if publish.qos > QoS::AtMostOnce
                && in_flight >= usize::from(self.state.config().mqtt.max_inflight)
                && !self.incoming.has_qos2(publish.packet_id.unwrap_or(0))
            {
                // 5.0 [MQTT-3.3.4-9] more unacknowledged QoS > 0 PUBLISH
                // packets than the Receive Maximum we announced
                return self.protocol_error(SessionError::ReceiveMaximumExceeded(in_flight), ctx);
            }
            if publish.properties.payload_format_indicator == Some(true)
                && std::str::from_utf8(&publish.payload).is_err()
            {
                // 5.0 [MQTT-3.3.2-4] payload announced as UTF-8 but is not
                return self.refuse_publish(&publish, ReasonCode::PayloadFormatInvalid, ctx);
            }
        }
        // topic limits, ACL, memory cap (session/checks.rs); after the
        // protocol checks, on the resolved topic name
        if let Some(code) = self.publish_refusal(&publish) {
            return self.refuse_checked_publish(&publish, code, ctx);
        }
        let propagate = self.state.config().telemetry.propagate_user_property;
        let span = telemetry::publish_span(
            &publish,
            self.client_id(),
            self.conn.as_ref().and_then(|c| c.trace.as_deref()),
            propagate && self.protocol.is_v5(),
        );
        if propagate {
            telemetry::with_traceparent(&span, &mut publish.properties);
        }
        let _entered = span.enter();
        let generation = self.conn.as_ref().map_or(0, |c| c.generation);
        let packet_id = publish.packet_id.unwrap_or(0);
        let qos = publish.qos;
        let message = Arc::new(Message::from_publish(
            publish,
            self.handle.0.id,
            unix_ms(),
            std::time::Instant::now(),
        ));
        match qos {
            QoS::AtMostOnce => {
                self.publish_message(message, None);
            }
            QoS::AtLeastOnce => {
                let token = self.incoming.begin(AckKind::PubAck, packet_id);
                let mut guard =
                    LazyGuard::publisher(self.handle.clone(), token, generation, span.clone());
                let receivers = self.publish_message(message, Some(&mut guard));
                if !guard.created() {
                    self.incoming.complete(token, accepted(receivers));
                }
            }
            QoS::ExactlyOnce => {
                if self.incoming.has_qos2(packet_id) {
                    // A resend of a message already received: not delivered
                    // again (method B, 3.1.1 figure 4.3), just acknowledged.
                    if !self.incoming.is_pending(AckKind::PubRec, packet_id) {
                        self.incoming
                            .push_ready(AckKind::PubRec, packet_id, ReasonCode::Success);
                    }
                } else {
                    self.incoming.insert_qos2(packet_id);
                    let token = self.incoming.begin(AckKind::PubRec, packet_id);
                    let mut guard =
                        LazyGuard::publisher(self.handle.clone(), token, generation, span.clone());
                    if self.is_persistent() {
                        self.stored = true;
                        self.state.writer().submit(
                            vec![storage::WriteOp::PutIncomingQos2 {
                                client_id: self.client_id().to_string(),
                                packet_id,
                            }],
                            traced_durable(
                                telemetry::store_span(&span),
                                hold_until_durable(guard.get()),
                            ),
                        );
                    }
                    let receivers = self.publish_message(message, Some(&mut guard));
                    if !guard.created() {
                        self.incoming.complete(token, accepted(receivers));
                    }
                }
            }
        }
        self.flush_acks(ctx);
    }

    /// Refuses a QoS > 0 PUBLISH with a reason (5.0); QoS 0 ones are dropped.
    fn refuse_publish(&mut self, publish: &Publish, code: ReasonCode, ctx: &mut Context<Self>) {
        let kind = match publish.qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => AckKind::PubAck,
            QoS::ExactlyOnce => AckKind::PubRec,
        };
        self.incoming
            .push_ready(kind, publish.packet_id.unwrap_or(0), code);
        self.flush_acks(ctx);
    }

    /// Stores it as retained if flagged, then routes it. Returns how many
    /// sessions it went to (a retained copy counts as one).
    pub(super) fn publish_message(
        &mut self,
        message: Arc<Message>,
        guard: Option<&mut LazyGuard>,
    ) -> usize {
        let mut none = LazyGuard::none();
        let guard = guard.unwrap_or(&mut none);
        let retained = message.retain;
        if retained {
            store_retained(&self.state, &message, guard);
        }
        let routed = route(&self.state, &message, guard, Scope::Everywhere);
        // IoT hub routes: only here, for messages a client of this node sent
        let hub = self.state.hub().admit(&message, self.client_id(), guard);
        routed + hub + usize::from(retained)
    }

    /// Writes the acknowledgements that are ready, in order.
    pub(super) fn flush_acks(&mut self, ctx: &mut Context<Self>) {
        let mut ready: Vec<ReadyAck> = Vec::new();
        self.incoming.poll_ready(&mut ready);
        for mut ack in ready {
            if ack.kind == AckKind::PubRec && ack.reason_code.is_error() {
                // Not accepted: a resend of this id is a new message to
                // route, not a duplicate to acknowledge without routing.
                self.forget_qos2(ack.packet_id);
            }
            if ack.reason_code.is_error() && !self.protocol.is_v5() {
                // 3.1.1 cannot say a message was not accepted: close without
                // acknowledging, so the client sends it again.
                self.protocol_error(SessionError::MessageNotStored(ack.packet_id), ctx);
                return;
            }
            if !self.protocol.is_v5() {
                ack.reason_code = ReasonCode::Success;
            }
            let response = PubResponse {
                packet_id: ack.packet_id,
                reason_code: ack.reason_code,
                properties: self.ack_properties(ack.reason_code),
            };
            self.send(&match ack.kind {
                AckKind::PubAck => Packet::PubAck(response),
                AckKind::PubRec => Packet::PubRec(response),
            });
        }
    }

    /// Properties of an acknowledgement: a Reason String saying why, for a
    /// failure, unless the client asked for no problem information (5.0
    /// [MQTT-3.1.2-29]).
    pub(super) fn ack_properties(&self, code: ReasonCode) -> AckProperties {
        let wanted = self.conn.as_ref().is_some_and(|c| c.problem_information);
        AckProperties {
            reason_string: (wanted && code.is_error())
                .then(|| reason_text(code))
                .flatten()
                .map(Into::into),
            user_properties: Vec::new(),
        }
    }

    /// Forgets a received QoS 2 id, here and in the store; false if it was
    /// not known.
    fn forget_qos2(&mut self, packet_id: u16) -> bool {
        let known = self.incoming.release_qos2(packet_id);
        if known && self.stored {
            self.state.writer().submit(
                vec![storage::WriteOp::DeleteIncomingQos2 {
                    client_id: self.client_id().to_string(),
                    packet_id,
                }],
                None,
            );
        }
        known
    }

    /// PUBREL: the QoS 2 id is released; answer PUBCOMP.
    fn handle_pubrel(&mut self, pubrel: PubResponse) {
        let known = self.forget_qos2(pubrel.packet_id);
        // 5.0: 0x92 if the id was not known (3.1.1 always answers Success)
        let reason_code = if known || !self.protocol.is_v5() {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        self.send(&Packet::PubComp(PubResponse {
            packet_id: pubrel.packet_id,
            reason_code,
            properties: self.ack_properties(reason_code),
        }));
    }
}

impl Handler<AckDone> for Session {
    type Result = ();

    fn handle(&mut self, msg: AckDone, ctx: &mut Context<Self>) {
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.generation == msg.generation)
        {
            let code = if msg.ok {
                ReasonCode::Success
            } else {
                ReasonCode::UnspecifiedError
            };
            self.incoming.complete(msg.token, code);
            self.flush_acks(ctx);
        }
    }
}
