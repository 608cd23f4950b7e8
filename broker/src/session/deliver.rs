//! Messages to the client: `Deliver`s from other sessions become queued or
//! sent PUBLISH packets (as `core::plan_copy` says), and the client's PUBACK /
//! PUBREC / PUBCOMP move them through their flow (as `core::ack` says)
//! (3.1.1 sections 4.3, 4.4; 5.0 sections 4.3, 4.4, 4.9).
//!
//! For a persistent session each QoS 1/2 copy is stored (`outgoing` tree)
//! when it arrives, its Released state before PUBREL is sent, and it is
//! deleted when its flow completes. QoS 0 messages are never queued: they
//! are written if the client is online and its write buffer has room, and
//! dropped otherwise.

use std::cmp::min;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;

use super::outgoing::{packet_id_of, Hold, OutMsg, OutState, Pushed, Resend, SendAction};
use super::{core, Session};
use crate::codec::{AckProperties, Packet, PubResponse, QoS, ReasonCode};
use crate::counters::{DropReason, Metrics};
use crate::fanout::traced_durable;
use crate::handle::{
    hold_until_durable, AckGuard, Backpressure, Deliver, Input, LazyGuard, Stored, Subscriber,
    NOT_HOLDING,
};
use crate::message::unix_ms;
use crate::nodes::RemoteTarget;
use crate::telemetry;

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, d: Deliver, ctx: &mut Context<Self>) {
        let counted = d.backpressure != Backpressure::Untracked;
        self.take_copy(d, ctx);
        if counted {
            // Only now, after the queue's new length is published
            // (`update_congestion`): a router that reads `in_mailbox` first
            // (Acquire, `SessionRef::is_congested`) and sees the copy gone
            // sees it in `queued`, never in neither.
            self.handle.0.in_mailbox.fetch_sub(1, Ordering::Release);
        }
    }
}

impl Session {
    /// A copy routed to the session (`Deliver`).
    fn take_copy(&mut self, d: Deliver, ctx: &mut Context<Self>) {
        if let core::Lifecycle::Moved { owner, .. } = self.lifecycle {
            return self.forward_moved(owner, d);
        }
        if self.is_ended() {
            // A group's copy reached a member that just ended: the group
            // did not get it, and whoever waits must hear so (a handed-on
            // copy then returns to the member that passed it on).
            if let (Some(group), Some(ack)) = (&d.shared_filter, &d.ack) {
                tracing::debug!(client_id = %self.client_id(), uid = d.message.uid, %group, "a group copy for an ended member refused");
                ack.fail();
            }
            return;
        }
        if d.message.uid != 0
            && (self.recent.is_some() || (d.qos == QoS::ExactlyOnce && self.is_persistent()))
        {
            let recent = self.recent.get_or_insert_with(Default::default);
            if !recent.first_time(unix_ms(), d.message.uid, d.qos) {
                // a copy this session got already (it moved between
                // nodes); its publisher is acknowledged: the session has it
                Metrics::add(&self.state.metrics().duplicates_dropped, 1);
                // Handed over with a flow the client may hold open: close
                // that flow, without sending the message again.
                if let Some(flow) = d.flow.filter(|_| d.qos == QoS::ExactlyOnce) {
                    self.adopt_released(d, flow.packet_id);
                }
                return;
            }
            if recent.is_empty() {
                self.recent = None;
            }
        }
        if let Some(flow) = d.flow.filter(|f| f.released && d.qos == QoS::ExactlyOnce) {
            return self.adopt_released(d, flow.packet_id);
        }
        if let Some(until_ms) = self.enqueue(d) {
            if !self.hold_timer {
                self.arm_hold_timer(until_ms, ctx);
            }
        }
    }
}

impl Handler<Stored> for Session {
    type Result = ();

    fn handle(&mut self, msg: Stored, _ctx: &mut Context<Self>) {
        match msg {
            Stored::Message { seq } => {
                self.outgoing.mark_durable(seq);
                self.pump();
            }
            Stored::Failed { seq } => {
                // The publisher is told the message failed (its guard
                // failed with this write) and sends it again: sending this
                // copy too would deliver it twice. It goes, unsent.
                let removed = self.outgoing.remove_queued_where(|m| m.seq == seq);
                if !removed.is_empty() {
                    self.state.metrics().dropped(DropReason::StoreFailed, 1);
                    tracing::warn!(client_id = %self.client_id(), seq, "QoS 2 copy not stored: dropped unsent");
                    // Nothing of the failed write is on disk; a later
                    // retry of it must not leave a record behind either.
                    self.delete_outgoing(seq);
                }
                self.pump();
            }
            Stored::Released { seq, generation } => {
                if self
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.generation == generation)
                    && self
                        .outgoing
                        .get(seq)
                        .is_some_and(|m| m.state == OutState::Released)
                {
                    self.send_pubrel(packet_id_of(seq));
                }
            }
        }
    }
}

impl Session {
    /// Takes a message for the client: QoS 0 is written or dropped; QoS 1/2
    /// is queued (and stored, for a persistent session) and sent when the
    /// window allows. Returns the deadline of the publisher's acknowledgement
    /// if it is held back (congested queue) until the copy is sent.
    pub(super) fn enqueue(&mut self, d: Deliver) -> Option<u64> {
        let Deliver {
            message,
            qos,
            retain,
            subscription_ids,
            shared_filter,
            ack,
            backpressure,
            flow,
            span,
        } = d;
        let span = telemetry::deliver_span(&span, self.client_id(), qos);
        let _entered = span.enter();
        let now = unix_ms();
        let metrics = &self.state.metrics();
        let expired = message.is_expired(now);
        // ACL read check and memory cap (session/checks.rs)
        if !expired && !self.may_take(&message.topic, qos) {
            return None;
        }
        let facts = core::CopyFacts {
            qos,
            expired,
            online: self.conn.is_some(),
            has_room: self.conn.as_ref().is_some_and(|c| c.has_room()),
            persistent: self.is_persistent(),
            queue_full: self.outgoing.is_full(),
            hold_ms: self.hold_wait(backpressure, ack.as_ref()),
        };
        let (persist, send_after_store, hold_until_ms) = match core::plan_copy(now, facts) {
            core::CopyPlan::Drop(reason) => {
                metrics.dropped(reason, 1);
                if reason == DropReason::QueueFull {
                    tracing::debug!(client_id = %self.client_id(), "queue full: message dropped");
                    self.state.hub().events().emit(
                        crate::hub::events::Severity::Warning,
                        "session",
                        self.client_id(),
                        "session queue full; message dropped",
                        serde_json::json!({
                            "topic": &*message.topic,
                            "max_queued_messages": self.state.config().mqtt.max_queued_messages,
                        }),
                    );
                }
                return None;
            }
            core::CopyPlan::Ignore => return None,
            core::CopyPlan::Write => {
                let conn = self
                    .conn
                    .as_mut()
                    .expect("Write is planned for an online session");
                let publish = message.to_publish(qos, retain, None, false, &subscription_ids, now);
                if conn.send_publish(publish) {
                    metrics.sent(QoS::AtMostOnce, message.received_at);
                } else {
                    metrics.dropped(DropReason::TooLarge, 1);
                }
                return None;
            }
            core::CopyPlan::Queue {
                store,
                send_after_store,
                hold_until_ms,
            } => (store, send_after_store, hold_until_ms),
        };
        // A copy the session's old owner had at QoS 2 keeps its packet id:
        // a client that got it answers PUBREC without taking it again. Not
        // if a message in flight here has that id: two flows cannot share
        // it (the old owner's copy then goes under a new id).
        if flow.is_some() {
            self.outgoing.continues_flow();
        }
        let seq = match flow
            .filter(|f| qos == QoS::ExactlyOnce && !self.outgoing.holds_packet_id(f.packet_id))
        {
            Some(flow) => self.outgoing.next_seq_with(flow.packet_id),
            None => self.outgoing.next_seq(),
        };
        // Congested when routed: the publisher waits until this copy is sent.
        let hold = hold_until_ms.and_then(|until_ms| {
            ack.clone()
                .filter(AckGuard::answers_publisher)
                .map(|guard| Hold { guard, until_ms })
        });
        let held_until = hold.as_ref().map(|h| h.until_ms);
        let durable = !send_after_store;
        if persist {
            self.stored = true;
            let record = storage::OutgoingRecord {
                released: false,
                uid: message.uid,
                message: message.to_stored(qos, retain, &subscription_ids),
            };
            let held = hold_until_durable(ack);
            let session = self.handle.clone();
            let on_durable: storage::Durable = Box::new(move |result| {
                // The session hears first, so the copy is settled before its
                // publisher is answered.
                if !durable {
                    session.send(if result.is_ok() {
                        Stored::Message { seq }
                    } else {
                        Stored::Failed { seq }
                    });
                }
                if let Some(held) = held {
                    held(result);
                }
            });
            let change = cluster::ReplicaUpdate {
                put_outgoing: vec![(seq, record.clone())],
                ..Default::default()
            };
            let on_durable = self.replicate(change, Some(on_durable));
            self.state.writer().submit(
                vec![storage::WriteOp::PutOutgoing {
                    client_id: self.client_id().to_string(),
                    seq,
                    record,
                }],
                traced_durable(telemetry::store_span(&span), on_durable),
            );
        }
        let charge =
            (self.state.limits()).charge((message.topic.len() + message.payload.len()) as u64);
        let pushed = self.outgoing.push(OutMsg {
            seq,
            qos,
            retain,
            message,
            subscription_ids,
            shared_filter,
            state: OutState::Queued,
            durable,
            charge,
            hold,
        });
        debug_assert_eq!(pushed, Pushed::Queued, "fullness checked above");
        self.pump();
        held_until.filter(|_| self.outgoing.queued_len() > 0)
    }

    /// How long a publisher's acknowledgement for a copy queued now may be
    /// held: `Some` if the router found the session congested, it has not
    /// stalled since, and the publisher waits for this copy.
    fn hold_wait(&self, backpressure: Backpressure, ack: Option<&AckGuard>) -> Option<u64> {
        let wait = self.state.config().backpressure_wait_ms()?;
        let holding = backpressure == Backpressure::Hold
            && !self.stalled
            && ack.is_some_and(AckGuard::answers_publisher);
        holding.then_some(wait)
    }

    /// Tells routers how many messages wait in the queue (they add the
    /// copies still in the mailbox, `SessionRef::is_congested`), or
    /// [`NOT_HOLDING`] when offline or stalled. A stalled session is held
    /// for again once its queue is below `limits.backpressure_queued`.
    pub(super) fn update_congestion(&mut self) {
        let threshold = self.state.config().limits.backpressure_queued;
        if threshold == 0 {
            return;
        }
        let queued = self.outgoing.queued_len();
        if queued < threshold {
            self.stalled = false;
        }
        let published = if self.conn.is_some() && !self.stalled {
            queued
        } else {
            NOT_HOLDING
        };
        let shared = &self.handle.0.queued;
        if shared.load(Ordering::Relaxed) != published {
            shared.store(published, Ordering::Relaxed);
        }
    }

    /// At the earliest deadline of the held acknowledgements: if one is
    /// due, the client has not taken `limits.backpressure_wait_secs` worth
    /// of messages; it is stalled, and every held acknowledgement goes.
    /// Deadlines within half a second count as due, so the timer fires at
    /// most twice a second.
    fn arm_hold_timer(&mut self, at_ms: u64, ctx: &mut Context<Self>) {
        self.hold_timer = true;
        let after = Duration::from_millis(at_ms.saturating_sub(unix_ms()));
        ctx.run_later(after, |session, ctx| {
            session.hold_timer = false;
            match session.outgoing.release_holds(unix_ms() + 500) {
                (0, Some(next)) => session.arm_hold_timer(next, ctx),
                (0, None) => {}
                (released, _) => {
                    tracing::debug!(
                        client_id = %session.client_id(),
                        released,
                        "subscriber stalled: publishers no longer held back for it"
                    );
                    Metrics::add(&session.state.metrics().backpressure_stalls, 1);
                    session.stalled = true;
                    session.outgoing.release_holds(u64::MAX);
                    session.update_congestion();
                }
            }
        });
    }

    /// Sends what the window and the write buffer allow.
    pub(super) fn pump(&mut self) {
        self.send_queued();
        self.update_congestion();
    }

    fn send_queued(&mut self) {
        let Some(conn) = &mut self.conn else { return };
        let room = if conn.has_room() { usize::MAX } else { 0 };
        let mut actions = Vec::new();
        self.outgoing.poll_send(unix_ms(), room, &mut actions);
        let mut done = Vec::new();
        for action in actions {
            match action {
                SendAction::Publish(publish, received_at) => {
                    let packet_id = publish.packet_id.unwrap_or(0);
                    let qos = publish.qos;
                    if conn.send_publish(publish) {
                        self.state.metrics().sent(qos, received_at);
                    } else {
                        // Too large for the client: discarded as if delivered
                        // 5.0 [MQTT-3.1.2-25]
                        self.state.metrics().dropped(DropReason::TooLarge, 1);
                        if let Ok(seq) = self.outgoing.remove(packet_id) {
                            done.push(seq);
                        }
                    }
                }
                SendAction::Expired(seq) => {
                    self.state.metrics().dropped(DropReason::Expired, 1);
                    done.push(seq);
                }
                SendAction::Release(packet_id) => {
                    conn.send(&Packet::PubRel(PubResponse {
                        packet_id,
                        reason_code: ReasonCode::Success,
                        properties: AckProperties::default(),
                    }));
                }
            }
        }
        for seq in done {
            self.delete_outgoing(seq);
        }
    }

    /// Hands messages that came through shared subscriptions to other
    /// members of their groups (5.0 section 4.8.2: a member that goes away
    /// should not strand them), preferring members that are online and
    /// never a node that is down. Returns the messages no other member
    /// could take.
    ///
    /// A handed-on copy stays stored here until the member's side answers
    /// that it has it ([`handed_on`](Self::handed_on)); refused or
    /// unanswered, it comes back into this session's queue.
    ///
    /// postmortem: long chaos run seed 22, 2026-12-06 (`shared-no-loss`, 2
    /// messages around an isolation and a clock skew): the copies of a
    /// member that disconnected were forwarded to another node's member
    /// without waiting for an answer and deleted here; the other node,
    /// whose member had moved on, refused them, and no member got them.
    pub(super) fn redistribute_shared(&mut self, messages: Vec<OutMsg>) -> Vec<OutMsg> {
        let mut kept = Vec::new();
        if messages.is_empty() {
            return kept;
        }
        let me = self.handle.0.id;
        let cluster = self.state.cluster().clone();
        let router = self.state.router().read();
        for m in messages {
            let not_me = |k: &Subscriber| !matches!(k, Subscriber::Local(s) if s.0.id == me);
            let reachable = |k: &Subscriber| match k {
                Subscriber::Node(node) => cluster.is_up(*node),
                Subscriber::Local(_) => true,
            };
            let picked = m.shared_filter.as_ref().and_then(|filter| {
                router
                    .pick_shared(filter, |k, _| not_me(k) && reachable(k) && k.is_available())
                    .filter(|(k, _)| not_me(k) && reachable(k))
                    .map(|(k, entry)| (filter, k, entry))
            });
            let Some((filter, subscriber, entry)) = picked else {
                kept.push(m);
                continue;
            };
            let (answer, waiting) = tokio::sync::oneshot::channel();
            let mut guard = LazyGuard::forwarded(answer, tracing::Span::none());
            match subscriber {
                Subscriber::Local(session) => session.send(Deliver {
                    message: m.message.clone(),
                    qos: min(m.message.qos, entry.options.qos),
                    retain: m.retain,
                    subscription_ids: entry.subscription_id.into_iter().collect(),
                    shared_filter: Some(filter.clone()),
                    ack: guard.get(),
                    backpressure: Backpressure::Untracked,
                    flow: None,
                    span: tracing::Span::none(),
                }),
                Subscriber::Node(node) => {
                    let target = RemoteTarget {
                        plain: false,
                        shared: vec![filter.to_string()],
                    };
                    cluster.forward(*node, &m.message, target, &mut guard);
                }
            }
            drop(guard);
            tracing::debug!(client_id = %self.client_id(), uid = m.message.uid, group = %filter, to = %subscriber.label(), "a shared copy handed on");
            // It may come back through `Deliver`: another node's stale
            // route for the group can lead to this session's old node,
            // whose moved actor forwards it here. Taken then, not dropped
            // as a copy this session has, while the other node answers
            // that it was stored and this session deletes its record.
            if let Some(recent) = self.recent.as_mut() {
                recent.forget(m.message.uid);
            }
            let back = Deliver {
                message: m.message.clone(),
                qos: m.qos,
                retain: m.retain,
                subscription_ids: m.subscription_ids.clone(),
                shared_filter: Some(filter.clone()),
                ack: None,
                backpressure: Backpressure::Untracked,
                flow: None,
                span: tracing::Span::none(),
            };
            let session = self.handle.clone();
            let state = self.state.clone();
            let seq = m.seq;
            let via = match subscriber {
                Subscriber::Node(node) => *node,
                Subscriber::Local(_) => 0,
            };
            actix_rt::spawn(async move {
                let answer = waiting.await;
                tracing::debug!(client_id = %session.client_id(), uid = back.message.uid, answer = ?answer, "answer for a shared copy handed on");
                let stored = matches!(answer, Ok(Ok(())));
                if stored || session.is_alive() {
                    session.send(Input::HandedOn(seq, (!stored).then_some(Box::new(back))));
                } else {
                    // the member ended meanwhile
                    to_another_member(&state, &back, via);
                }
            });
        }
        kept
    }

    /// The answer for the copy stored as `seq` that was handed on to
    /// another member of its group: the member has it, and the record here
    /// goes; or `back`, the copy returns to this session's queue (stored
    /// again, before the old record is deleted: the writer keeps order).
    pub(super) fn handed_on(
        &mut self,
        seq: u64,
        back: Option<Box<Deliver>>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(d) = back {
            tracing::debug!(client_id = %self.client_id(), uid = d.message.uid, topic = %d.message.topic, "a shared copy handed on was not taken: queued here again");
            // Not through `Handler<Deliver>`: its check of recent ids
            // would take this copy, the session's own, for a second one
            // and drop it while its record goes below.
            //
            // postmortem: long chaos run seed 25, 2026-12-07
            // (`shared-no-loss`, p3#3503): a member that lost its
            // connection handed its queued group copy on to the other
            // member's node while that member was moving; the copy came
            // back refused, was dropped as a duplicate (a QoS 2 copy's id
            // is in the ring of a persistent session) and its record was
            // deleted: no member got it.
            match self.lifecycle {
                core::Lifecycle::Moved { owner, .. } => self.forward_moved(owner, *d),
                core::Lifecycle::Ended => to_another_member(&self.state, &d, 0),
                _ => {
                    if let Some(until_ms) = self.enqueue(*d) {
                        if !self.hold_timer {
                            self.arm_hold_timer(until_ms, ctx);
                        }
                    }
                }
            }
        }
        // An ended session's records are gone, and one that moved without
        // keeping its own has none left (or a newer session's).
        if !matches!(
            self.lifecycle,
            core::Lifecycle::Ended | core::Lifecycle::Moved { kept: false, .. }
        ) {
            self.delete_outgoing(seq);
        }
    }

    /// Resends what was in flight when the previous connection ended.
    pub(super) fn resend_inflight(&mut self) {
        for packet_id in self.outgoing.releasing().to_vec() {
            self.send_pubrel(packet_id);
        }
        for resend in self.outgoing.resend(unix_ms()) {
            match resend {
                Resend::Publish(publish) => {
                    if let Some(conn) = &mut self.conn {
                        conn.send_publish(publish);
                    }
                }
                Resend::PubRel(packet_id) => self.send_pubrel(packet_id),
            }
        }
    }

    /// A QoS 2 flow the session's old owner left open after the client's
    /// PUBREC (it handed the session's messages on when it learnt that the
    /// session had moved while it was away): it goes on here under the same
    /// packet id, stored as `Released`, with a PUBREL now if the client is
    /// connected (else on its next connection, with the rest in flight).
    /// If this session has a message in flight with that id itself, the
    /// client's flow ends with that one.
    fn adopt_released(&mut self, d: Deliver, packet_id: u16) {
        if self.outgoing.holds_packet_id(packet_id) {
            tracing::debug!(client_id = %self.client_id(), packet_id, "handed-over QoS 2 flow: packet id in use here");
            return;
        }
        self.outgoing.continues_flow();
        let seq = self.outgoing.next_seq_with(packet_id);
        if self.is_persistent() {
            self.stored = true;
            let record = storage::OutgoingRecord {
                released: true,
                uid: d.message.uid,
                message: d.message.to_stored(d.qos, d.retain, &d.subscription_ids),
            };
            let change = cluster::ReplicaUpdate {
                put_outgoing: vec![(seq, record.clone())],
                ..Default::default()
            };
            let on_durable = self.replicate(change, hold_until_durable(d.ack));
            self.state.writer().submit(
                vec![storage::WriteOp::PutOutgoing {
                    client_id: self.client_id().to_string(),
                    seq,
                    record,
                }],
                on_durable,
            );
        }
        let size = (d.message.topic.len() + d.message.payload.len()) as u64;
        self.outgoing.restore(OutMsg {
            seq,
            qos: d.qos,
            retain: d.retain,
            message: d.message,
            subscription_ids: d.subscription_ids,
            shared_filter: None,
            state: OutState::Released,
            durable: true,
            charge: self.state.limits().charge(size),
            hold: None,
        });
        if self.conn.is_some() {
            self.send_pubrel(packet_id);
        }
    }

    pub(super) fn send_pubrel(&self, packet_id: u16) {
        self.send(&Packet::PubRel(PubResponse {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: AckProperties::default(),
        }));
    }

    pub(super) fn delete_outgoing(&mut self, seq: u64) {
        if self.stored {
            let change = cluster::ReplicaUpdate {
                delete_outgoing: vec![seq],
                ..Default::default()
            };
            self.replicate(change, None);
            self.state.writer().submit(
                vec![storage::WriteOp::DeleteOutgoing {
                    client_id: self.client_id().to_string(),
                    seq,
                }],
                None,
            );
        }
    }

    /// PUBACK, PUBREC or PUBCOMP from the client: `core::ack` moves the
    /// copy through its flow and says what follows; this carries it out.
    pub(super) fn handle_client_ack(
        &mut self,
        kind: core::ack::ClientAckKind,
        ack: PubResponse,
        ctx: &mut Context<Self>,
    ) {
        let facts = core::ack::AckFacts {
            protocol: self.protocol,
            stored: self.stored,
        };
        let ack = core::ack::ClientAck {
            kind,
            packet_id: ack.packet_id,
            reason_code: ack.reason_code,
        };
        match core::ack::handle_client_ack(&mut self.outgoing, ack, facts) {
            core::ack::AckAction::Complete { seq, delete_record } => {
                if delete_record {
                    self.delete_outgoing(seq);
                }
                self.pump();
            }
            core::ack::AckAction::Release { seq, persist } => {
                if persist {
                    self.store_released(seq);
                } else {
                    self.send_pubrel(ack.packet_id);
                }
            }
            core::ack::AckAction::PubRelUnknown {
                packet_id,
                reason_code,
            } => self.send(&Packet::PubRel(PubResponse {
                packet_id,
                reason_code,
                properties: self.ack_properties(reason_code),
            })),
            core::ack::AckAction::Unknown { packet_id } => {
                tracing::debug!(client_id = %self.client_id(), packet_id, "acknowledgement for unknown packet id");
                // a PUBCOMP for an id released as possibly open elsewhere
                // frees it for the message waiting on it
                self.pump();
            }
            core::ack::AckAction::Nothing => {}
            core::ack::AckAction::Close(e) => self.protocol_error(e, ctx),
        }
    }

    /// Stores the Released state of copy `seq`; PUBREL goes once it is
    /// durable (`Stored::Released`), on the same connection.
    fn store_released(&mut self, seq: u64) {
        let Some(msg) = self.outgoing.get(seq) else {
            return;
        };
        let record = storage::OutgoingRecord {
            released: true,
            uid: msg.message.uid,
            message: msg
                .message
                .to_stored(msg.qos, msg.retain, &msg.subscription_ids),
        };
        let session = self.handle.clone();
        let generation = self.conn.as_ref().map_or(0, |c| c.generation);
        let change = cluster::ReplicaUpdate {
            put_outgoing: vec![(seq, record.clone())],
            ..Default::default()
        };
        // PUBREL waits for the replica too: the client completes the flow
        // after it, and a fail-over must not send the message again.
        let on_durable = self.replicate(
            change,
            Some(Box::new(move |_| {
                session.send(Stored::Released { seq, generation })
            })),
        );
        self.state.writer().submit(
            vec![storage::WriteOp::PutOutgoing {
                client_id: self.client_id().to_string(),
                seq,
                record,
            }],
            on_durable,
        );
    }
}

/// A group's copy handed on by a member that has ended since (its records
/// are gone) and not taken by node `refused` (0, no node: by a member
/// here): one more member is tried, not on that node, with nobody waiting.
fn to_another_member(state: &crate::state::State, d: &Deliver, refused: u64) {
    let groups: Vec<String> = d.shared_filter.iter().map(|f| f.to_string()).collect();
    crate::fanout::route_groups(state, &d.message, &groups, refused);
}
