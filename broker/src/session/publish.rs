//! Packets from the client: the dispatcher, inbound PUBLISH (QoS 0/1/2 with
//! the acknowledgement owed in order) and PUBREL. Routing is in `route`.
//!
//! 3.1.1 sections 3.3, 3.6, 4.3, 4.6; 5.0 sections 3.3, 3.6, 4.3, 4.6.
//!
//! A PUBACK / PUBREC is written only after every copy of the message bound
//! for a persistent session (and the retained copy, and the publisher's own
//! QoS 2 state) is on disk: each such copy holds a clone of the message's
//! [`AckGuard`], and the guard's last drop brings `AckDone` back here.
//!
//! The policy is in `core::publish` (sans-IO): `plan_publish` decides what a
//! PUBLISH gets, `plan_ack` what becomes of an acknowledgement once ready,
//! `pubcomp_code` the answer to PUBREL. This file gathers their facts and
//! carries out their answers: the topic alias, the trace span, the message,
//! the store write of a QoS 2 id, routing, the packets written.

use std::sync::Arc;

use actix::prelude::*;

use super::core::ack::ClientAckKind;
use super::core::publish::{
    accepted, plan_ack, plan_publish, pubcomp_code, reason_string, AckOutcome, PublishFacts,
    PublishPlan, RefusedBy,
};
use super::error::SessionError;
use super::incoming::{AckKind, ReadyAck};
use super::Session;
use crate::codec::{AckProperties, Packet, PubResponse, Publish, QoS, ReasonCode};
use crate::fanout::{route, store_retained, traced_durable, Scope};
use crate::handle::{hold_until_durable, AckDone, LazyGuard};
use crate::message::{unix_ms, Message};
use crate::telemetry;

impl Session {
    /// Handles one packet from the client.
    pub(super) fn handle_packet(&mut self, packet: Packet, ctx: &mut Context<Self>) {
        match packet {
            Packet::Publish(p) => self.handle_publish(p, ctx),
            Packet::PubAck(a) => self.handle_client_ack(ClientAckKind::PubAck, a, ctx),
            Packet::PubRec(a) => self.handle_client_ack(ClientAckKind::PubRec, a, ctx),
            Packet::PubRel(a) => self.handle_pubrel(a),
            Packet::PubComp(a) => self.handle_client_ack(ClientAckKind::PubComp, a, ctx),
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

    /// Inbound PUBLISH: gathers the facts, asks `core::publish`, carries
    /// out its plan.
    fn handle_publish(&mut self, mut publish: Publish, ctx: &mut Context<Self>) {
        self.state.metrics().received(publish.qos);
        let alias = if self.protocol.is_v5() {
            let Some(conn) = &mut self.conn else { return };
            conn.aliases().resolve_inbound(&mut publish)
        } else {
            Ok(())
        };
        let packet_id = publish.packet_id.unwrap_or(0);
        let qos2_held = self.incoming.has_qos2(packet_id);
        // topic limits, ACL, memory cap (session/checks.rs), on the resolved
        // topic name; counted only if the plan refuses for it
        let refusal = self.publish_refusal(&publish);
        let facts = PublishFacts {
            protocol: self.protocol,
            alias,
            in_flight: self.incoming.pending_len() + self.incoming.qos2_len(),
            receive_maximum: self.state.config().mqtt.max_inflight,
            qos2_held,
            pubrec_owed: qos2_held
                && publish.qos == QoS::ExactlyOnce
                && self.incoming.is_pending(AckKind::PubRec, packet_id),
            refusal: refusal.as_ref().map(|r| r.reason_code()),
            persistent: self.is_persistent(),
        };
        match plan_publish(&publish, &facts) {
            PublishPlan::Disconnect(e) => self.protocol_error(e, ctx),
            PublishPlan::Refuse { ack, by } => {
                if let (RefusedBy::Checks, Some(refusal)) = (by, &refusal) {
                    self.count_publish_refusal(&publish, refusal);
                }
                // QoS 0: dropped, nothing owed
                if let Some(ack) = ack {
                    self.owe_now(ack);
                    self.flush_acks(ctx);
                }
            }
            PublishPlan::Duplicate { ack } => {
                if let Some(ack) = ack {
                    self.owe_now(ack);
                }
                self.flush_acks(ctx);
            }
            PublishPlan::Route {
                ack,
                hold_qos2,
                store_qos2,
            } => {
                self.route_publish(publish, ack, hold_qos2, store_qos2);
                self.flush_acks(ctx);
            }
        }
    }

    /// Owes an acknowledgement that goes as soon as those before it have.
    fn owe_now(&mut self, ack: ReadyAck) {
        self.incoming
            .push_ready(ack.kind, ack.packet_id, ack.reason_code);
    }

    /// Routes an accepted PUBLISH ([`PublishPlan::Route`]): its trace span,
    /// the message, the QoS 2 id held (and stored), the acknowledgement
    /// owed, completed at once unless a copy must be stored first.
    fn route_publish(
        &mut self,
        mut publish: Publish,
        ack: Option<(AckKind, u16)>,
        hold_qos2: bool,
        store_qos2: bool,
    ) {
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
        let message = Arc::new(Message::from_publish(
            publish,
            self.handle.0.id,
            unix_ms(),
            std::time::Instant::now(),
        ));
        // trace level only: the payload's first bytes (hex) tie a message
        // of a test run (chaos histories name messages by payload) to its uid
        tracing::trace!(client_id = %self.client_id(), uid = message.uid, payload = %message.payload[..message.payload.len().min(16)].iter().map(|b| format!("{b:02x}")).collect::<String>(), "message published");
        let Some((kind, packet_id)) = ack else {
            self.publish_message(message, None);
            return;
        };
        if hold_qos2 {
            self.incoming.insert_qos2(packet_id);
        }
        let token = self.incoming.begin(kind, packet_id);
        let mut guard = LazyGuard::publisher(self.handle.clone(), token, generation, span.clone());
        if store_qos2 {
            self.stored = true;
            let change = cluster::ReplicaUpdate {
                put_incoming_qos2: vec![packet_id],
                ..Default::default()
            };
            let on_durable = self.replicate(change, hold_until_durable(guard.get()));
            self.state.writer().submit(
                vec![storage::WriteOp::PutIncomingQos2 {
                    client_id: self.client_id().to_string(),
                    packet_id,
                }],
                traced_durable(telemetry::store_span(&span), on_durable),
            );
        }
        let receivers = self.publish_message(message, Some(&mut guard));
        if !guard.created() {
            self.incoming.complete(token, accepted(receivers));
        }
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
        // (and its will)
        let hub = self.state.hub().admit(&message, self.client_id(), guard);
        routed + hub + usize::from(retained)
    }

    /// Writes the acknowledgements that are ready, in order
    /// (`core::publish::plan_ack`).
    pub(super) fn flush_acks(&mut self, ctx: &mut Context<Self>) {
        let mut ready: Vec<ReadyAck> = Vec::new();
        self.incoming.poll_ready(&mut ready);
        for ack in ready {
            let plan = plan_ack(self.protocol, ack);
            if plan.forget_qos2 {
                self.forget_qos2(ack.packet_id);
            }
            let ack = match plan.outcome {
                AckOutcome::Send(ack) => ack,
                AckOutcome::Disconnect(e) => return self.protocol_error(e, ctx),
            };
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
            reason_string: reason_string(wanted, code).map(Into::into),
            user_properties: Vec::new(),
        }
    }

    /// Forgets a received QoS 2 id, here and in the store; false if it was
    /// not known.
    fn forget_qos2(&mut self, packet_id: u16) -> bool {
        let known = self.incoming.release_qos2(packet_id);
        if known && self.stored {
            let change = cluster::ReplicaUpdate {
                delete_incoming_qos2: vec![packet_id],
                ..Default::default()
            };
            self.replicate(change, None);
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
        let reason_code = pubcomp_code(self.protocol, known);
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
