//! Packets from the client: the dispatcher, inbound PUBLISH (QoS 0/1/2 with
//! the acknowledgement owed in order), PUBREL, and routing a message to the
//! sessions whose subscriptions match it.
//!
//! 3.1.1 sections 3.3, 3.6, 4.3, 4.6; 5.0 sections 3.3, 3.6, 4.3, 4.6.
//!
//! A PUBACK / PUBREC is written only after every copy of the message bound
//! for a persistent session (and the retained copy, and the publisher's own
//! QoS 2 state) is on disk: each such copy holds a clone of the message's
//! [`AckGuard`], and the guard's last drop brings `AckDone` back here.

use std::cmp::min;
use std::sync::Arc;

use actix::prelude::*;
use smallvec::SmallVec;

use super::incoming::{AckKind, ReadyAck};
use super::{AckDone, AckGuard, Deliver, Session, SessionRef};
use crate::codec::{AckProperties, Packet, PubResponse, Publish, QoS, ReasonCode};
use crate::message::{unix_ms, Message};
use crate::state::{BrokerState, Metrics};

/// Creates the publisher's [`AckGuard`] the first time a copy needs one.
pub(crate) struct LazyGuard {
    factory: Option<(Addr<Session>, u64, u64)>,
    guard: Option<AckGuard>,
}

impl LazyGuard {
    /// For messages nobody waits for (QoS 0, wills, retained on subscribe).
    pub(crate) fn none() -> LazyGuard {
        LazyGuard {
            factory: None,
            guard: None,
        }
    }

    fn new(publisher: Addr<Session>, token: u64, generation: u64) -> LazyGuard {
        LazyGuard {
            factory: Some((publisher, token, generation)),
            guard: None,
        }
    }

    /// A clone of the guard, created on first use; `None` if nobody waits.
    pub(crate) fn get(&mut self) -> Option<AckGuard> {
        let (publisher, token, generation) = self.factory.as_ref()?;
        Some(
            self.guard
                .get_or_insert_with(|| AckGuard::new(publisher.clone(), *token, *generation))
                .clone(),
        )
    }

    fn created(&self) -> bool {
        self.guard.is_some()
    }
}

/// One session a message goes to, after merging its overlapping subscriptions.
struct Target<'a> {
    session: &'a SessionRef,
    qos: QoS,
    retain: bool,
    subscription_ids: SmallVec<[u32; 2]>,
}

/// Sends `message` to every session with a matching subscription: once per
/// session, at the highest QoS of its matching subscriptions (3.1.1 section
/// 3.3.5, 5.0 [MQTT-3.3.4-2]) and with all their subscription identifiers
/// (5.0 [MQTT-3.3.4-3]); one member of each matching shared group. Returns
/// how many sessions it went to.
pub(crate) fn route(state: &BrokerState, message: &Arc<Message>, guard: &mut LazyGuard) -> usize {
    let router = state.router.read();
    let mut targets: SmallVec<[Target<'_>; 8]> = SmallVec::new();
    router.matches(&message.topic, |session, entry| {
        // 5.0 [MQTT-3.8.3-3] No Local: not to the publisher's own subscriptions
        if entry.options.no_local && session.0.id == message.origin {
            return;
        }
        targets.push(Target {
            session,
            qos: min(message.qos, entry.options.qos),
            // [MQTT-3.3.1-9] RETAIN is 0 on delivery to an established
            // subscription, unless 5.0 Retain As Published [MQTT-3.3.1-13]
            retain: message.retain && entry.options.retain_as_published,
            subscription_ids: entry.subscription_id.into_iter().collect(),
        });
    });
    router.match_shared(
        &message.topic,
        |session, _| session.is_online(),
        |_group, session, entry| {
            targets.push(Target {
                session,
                qos: min(message.qos, entry.options.qos),
                retain: message.retain && entry.options.retain_as_published,
                subscription_ids: entry.subscription_id.into_iter().collect(),
            });
        },
    );
    if targets.len() > 1 {
        targets.sort_unstable_by_key(|t| t.session.0.id);
        let mut merged: SmallVec<[Target<'_>; 8]> = SmallVec::with_capacity(targets.len());
        for t in targets {
            match merged.last_mut() {
                Some(last) if last.session.0.id == t.session.0.id => {
                    last.qos = last.qos.max(t.qos);
                    last.retain |= t.retain;
                    last.subscription_ids.extend(t.subscription_ids);
                }
                _ => merged.push(t),
            }
        }
        targets = merged;
    }
    let count = targets.len();
    for t in targets {
        let ack = if t.qos > QoS::AtMostOnce && t.session.is_persistent() {
            guard.get()
        } else {
            None
        };
        t.session.0.addr.do_send(Deliver {
            message: message.clone(),
            qos: t.qos,
            retain: t.retain,
            subscription_ids: t.subscription_ids,
            ack,
        });
    }
    count
}

/// Storage callback that holds `guard` until the write is durable.
pub(crate) fn hold_until_durable(guard: Option<AckGuard>) -> Option<storage::Durable> {
    let guard = guard?;
    Some(Box::new(move |result: storage::Result<()>| {
        if let Err(e) = result {
            tracing::error!(error = %e, "store write failed; publisher will not be acknowledged");
            guard.fail();
        }
    }))
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
            Packet::Unsubscribe(u) => self.handle_unsubscribe(u),
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(d) => self.handle_disconnect(d, ctx),
            // [MQTT-3.1.0-2] a second CONNECT is a protocol violation
            Packet::Connect(_) => self.protocol_error(
                ReasonCode::ProtocolError,
                "second CONNECT on a connection [MQTT-3.1.0-2]".into(),
                ctx,
            ),
            Packet::Auth(_) => self.protocol_error(
                ReasonCode::ProtocolError,
                "AUTH without an authentication method in CONNECT".into(),
                ctx,
            ),
            other @ (Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => self.protocol_error(
                ReasonCode::ProtocolError,
                format!("{} is sent by servers, not clients", other.packet_type()),
                ctx,
            ),
        }
    }

    /// Writes a packet to the current connection, if any.
    pub(super) fn send(&self, packet: &Packet) {
        if let Some(conn) = &self.conn {
            conn.send(packet);
        }
    }

    fn handle_publish(&mut self, publish: Publish, ctx: &mut Context<Self>) {
        Metrics::add(&self.state.metrics.messages_received, 1);
        if self.protocol.is_v5() {
            if publish.properties.topic_alias.is_some() {
                // CONNACK announced Topic Alias Maximum 0
                // 5.0 [MQTT-3.2.2-17] [MQTT-3.3.2-9]
                return self.protocol_error(
                    ReasonCode::TopicAliasInvalid,
                    "topic alias used but Topic Alias Maximum is 0".into(),
                    ctx,
                );
            }
            if !publish.properties.subscription_identifiers.is_empty() {
                // 5.0 [MQTT-3.3.4-6] a client must not send Subscription Identifiers
                return self.protocol_error(
                    ReasonCode::ProtocolError,
                    "PUBLISH from a client carries a Subscription Identifier".into(),
                    ctx,
                );
            }
            let in_flight = self.incoming.pending_len() + self.incoming.qos2_len();
            if publish.qos > QoS::AtMostOnce
                && in_flight >= usize::from(self.state.config.mqtt.max_inflight)
                && !self.incoming.has_qos2(publish.packet_id.unwrap_or(0))
            {
                // 5.0 [MQTT-3.3.4-9] more unacknowledged QoS > 0 PUBLISH
                // packets than the Receive Maximum we announced
                return self.protocol_error(
                    ReasonCode::ReceiveMaximumExceeded,
                    format!("more than {in_flight} unacknowledged QoS 1/2 PUBLISH packets"),
                    ctx,
                );
            }
            if publish.properties.payload_format_indicator == Some(true)
                && std::str::from_utf8(&publish.payload).is_err()
            {
                // 5.0 [MQTT-3.3.2-4] payload announced as UTF-8 but is not
                return self.refuse_publish(&publish, ReasonCode::PayloadFormatInvalid, ctx);
            }
        }
        // topic limits, ACL, memory cap (session/guard.rs); after the
        // protocol checks, on the resolved topic name
        if let Some(code) = self.publish_refusal(&publish) {
            return self.refuse_checked_publish(&publish, code, ctx);
        }
        let generation = self.conn.as_ref().map_or(0, |c| c.generation);
        let packet_id = publish.packet_id.unwrap_or(0);
        let qos = publish.qos;
        let message = Arc::new(Message::from_publish(publish, self.handle.0.id, unix_ms()));
        match qos {
            QoS::AtMostOnce => self.publish_message(message, None),
            QoS::AtLeastOnce => {
                let token = self.incoming.begin(AckKind::PubAck, packet_id);
                let mut guard = LazyGuard::new(self.handle.0.addr.clone(), token, generation);
                self.publish_message(message, Some(&mut guard));
                if !guard.created() {
                    self.incoming.complete(token, ReasonCode::Success);
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
                    let mut guard = LazyGuard::new(self.handle.0.addr.clone(), token, generation);
                    if self.is_persistent() {
                        self.stored = true;
                        self.state.writer.submit(
                            vec![storage::WriteOp::PutIncomingQos2 {
                                client_id: self.client_id.to_string(),
                                packet_id,
                            }],
                            hold_until_durable(guard.get()),
                        );
                    }
                    self.publish_message(message, Some(&mut guard));
                    if !guard.created() {
                        self.incoming.complete(token, ReasonCode::Success);
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

    /// Stores it as retained if flagged, then routes it.
    pub(super) fn publish_message(&mut self, message: Arc<Message>, guard: Option<&mut LazyGuard>) {
        let mut none = LazyGuard::none();
        let guard = guard.unwrap_or(&mut none);
        if message.retain {
            store_retained(&self.state, &message, guard);
        }
        route(&self.state, &message, guard);
    }

    /// Writes the acknowledgements that are ready, in order.
    pub(super) fn flush_acks(&mut self, ctx: &mut Context<Self>) {
        let mut ready: Vec<ReadyAck> = Vec::new();
        self.incoming.poll_ready(&mut ready);
        for ack in ready {
            if ack.reason_code != ReasonCode::Success && !self.protocol.is_v5() {
                // 3.1.1 cannot say a message was not accepted: close without
                // acknowledging, so the client sends it again.
                self.protocol_error(
                    ReasonCode::UnspecifiedError,
                    format!("message {} could not be stored", ack.packet_id),
                    ctx,
                );
                return;
            }
            if ack.kind == AckKind::PubRec && ack.reason_code != ReasonCode::Success {
                self.incoming.release_qos2(ack.packet_id);
            }
            let response = PubResponse {
                packet_id: ack.packet_id,
                reason_code: ack.reason_code,
                properties: AckProperties::default(),
            };
            self.send(&match ack.kind {
                AckKind::PubAck => Packet::PubAck(response),
                AckKind::PubRec => Packet::PubRec(response),
            });
        }
    }

    /// PUBREL: the QoS 2 id is released; answer PUBCOMP.
    fn handle_pubrel(&mut self, pubrel: PubResponse) {
        let known = self.incoming.release_qos2(pubrel.packet_id);
        if known && self.stored {
            self.state.writer.submit(
                vec![storage::WriteOp::DeleteIncomingQos2 {
                    client_id: self.client_id.to_string(),
                    packet_id: pubrel.packet_id,
                }],
                None,
            );
        }
        self.send(&Packet::PubComp(PubResponse {
            packet_id: pubrel.packet_id,
            // 5.0: 0x92 if the id was not known (3.1.1 always answers)
            reason_code: if known {
                ReasonCode::Success
            } else {
                ReasonCode::PacketIdentifierNotFound
            },
            properties: AckProperties::default(),
        }));
    }
}

/// Replaces, or deletes for an empty payload, the retained message of its
/// topic [MQTT-3.3.1-5] [MQTT-3.3.1-10] [MQTT-3.3.1-11], in memory and on disk.
pub(crate) fn store_retained(state: &BrokerState, message: &Arc<Message>, guard: &mut LazyGuard) {
    let op = if message.payload.is_empty() {
        state.retained.write().remove(&message.topic);
        storage::WriteOp::DeleteRetained {
            topic: message.topic.to_string(),
        }
    } else {
        state
            .retained
            .write()
            .insert(&message.topic, message.clone());
        storage::WriteOp::PutRetained {
            message: message.to_stored(message.qos, true, &[]),
        }
    };
    state
        .writer
        .submit(vec![op], hold_until_durable(guard.get()));
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
