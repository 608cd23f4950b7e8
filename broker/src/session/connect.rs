//! Connection lifecycle of a session: attaching a connection (CONNECT,
//! CONNACK, takeover, resuming a stored session), keep alive, the Will
//! Message, going offline, session expiry and the end of a session.
//!
//! 3.1.1 sections 3.1.2.4 (Clean Session), 3.1.2.5 (Will), 3.1.2.10 (Keep
//! Alive), 3.1.4 (takeover); 5.0 sections 3.1.2.4, 3.1.2.5, 3.1.2.10, 3.1.2.11.2
//! (Session Expiry Interval), 4.1 (Session State).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;

use super::alias::TopicAliases;
use super::connection::Connection;
use super::error::{CloseReason, SessionError};
use super::keep_alive;
use super::{core, Session};
use crate::codec::{Disconnect, LastWill, Packet};
use crate::counters::{DropReason, Metrics};
use crate::handle::{Attach, KeepAliveExpired, Shutdown, WriterEvent};
use crate::message::{unix_ms, Message};
use crate::nodes::Proposal;
use crate::transport::{Inbound, InboundEvent};

impl Handler<Attach> for Session {
    type Result = ();

    fn handle(&mut self, msg: Attach, ctx: &mut Context<Self>) {
        let Some(new) = msg.0.lock().take() else {
            return;
        };
        if self.is_ended() {
            // Unreachable in practice: an ended session has left the registry
            // and stops before it handles more messages. Put it back for retry.
            *msg.0.lock() = Some(new);
            return;
        }
        if let Some(old) = self.conn.take() {
            tracing::info!(client_id = %self.client_id(), old_peer = %old.peer, new_peer = %new.peer, "session taken over");
            self.close_connection(*old, CloseReason::TakenOver, ctx);
            if let Some(will) = self.will.take() {
                self.will_due(will, true, ctx);
            }
        }
        if let Some(timer) = self.expiry_timer.take() {
            ctx.cancel_future(timer);
        }
        let connect = new.connect;
        let plan = core::plan_attach(
            self.is_persistent(),
            connect.clean_start,
            new.imported.is_some(),
            self.pending_will.is_some(),
        );
        if let Some(imported) = new.imported {
            // The session comes from another node of the cluster: it
            // replaces whatever this node had under the client id.
            self.discard_state();
            self.import(imported);
        }
        if let Some((will, timer)) = self.pending_will.take() {
            ctx.cancel_future(timer);
            if plan.pending_will == core::PendingWill::PublishNow {
                self.publish_will(will);
            }
        }
        if plan.discard {
            self.discard_state();
        }
        let resume = plan.resume;
        self.protocol = connect.protocol;
        let terms = core::plan_connection(
            &connect,
            &self.state.config().mqtt,
            self.client_id(),
            new.assigned_client_id,
            new.authenticated.as_ref(),
            resume,
        );
        self.set_session_expiry(terms.session_expiry_interval);
        self.will = connect.will.as_ref().map(|w| Box::new(w.detached()));
        self.auth = new.authenticated.as_ref().map(|a| {
            Box::new(super::EnhancedAuth {
                // Copied: a slice of the CONNECT's buffer otherwise.
                method: ByteString::from(String::from(&*a.method)),
                exchange: None,
            })
        });
        self.set_acl_subject(&new.principal);

        let generation = self.next_generation;
        self.next_generation += 1;
        let mut conn = Connection::open(
            new.transport,
            new.read_buf,
            generation,
            connect.protocol,
            new.peer,
            self.state.clone(),
            &self.handle,
            ctx,
        );
        conn.peer_identity = new.peer_identity.map(Box::new);
        conn.trace =
            crate::telemetry::connection_span(self.client_id(), connect.protocol, new.peer);
        conn.client_max_packet_size = terms.client_max_packet_size;
        if let Some((inbound, outbound)) = terms.topic_aliases {
            conn.set_aliases(TopicAliases::new(inbound, outbound));
        }
        conn.problem_information = terms.problem_information;
        self.outgoing.max_inflight = terms.send_window;
        conn.send(&Packet::ConnAck(terms.connack));
        let keep_alive = terms.keep_alive;
        let hibernate_after = match conn.plain_tcp {
            true => self.state.config().mqtt.hibernate_after_secs,
            false => 0,
        };
        if keep_alive > 0 || hibernate_after > 0 {
            conn.keep_alive_watch = Some(keep_alive::watch(
                &self.handle,
                generation,
                keep_alive,
                hibernate_after,
            ));
        }
        self.conn = Some(Box::new(conn));
        self.lifecycle = core::Lifecycle::Online;
        self.handle.0.online.store(true, Ordering::Relaxed);
        Metrics::add(&self.state.metrics().connections_current, 1);
        Metrics::add(&self.state.metrics().connections_total, 1);
        let cert_identity = self.conn.as_ref().and_then(|c| c.peer_identity.as_deref());
        tracing::debug!(client_id = %self.client_id(), peer = %new.peer, protocol = %connect.protocol,
            clean_start = connect.clean_start, session_present = resume,
            cert_identity = ?cert_identity.map(|i| &i.name), "client connected");

        if self.is_persistent() {
            self.store_session_record(None);
        }
        self.claim();
        if resume {
            self.resend_inflight();
        }
        self.pump();
        if !terms.connack_fits {
            let max = self.conn.as_ref().map_or(0, |c| c.client_max_packet_size);
            self.protocol_error(SessionError::ConnAckTooLarge(max), ctx);
        }
    }
}

impl StreamHandler<Inbound> for Session {
    fn handle(&mut self, item: Inbound, ctx: &mut Context<Self>) {
        let Some(conn) = &mut self.conn else { return };
        if conn.generation != item.generation {
            return;
        }
        // log lines about this connection's packets carry its trace id
        let span = conn.trace.as_ref().map(|t| t.span.clone());
        let _entered = span.as_ref().map(tracing::Span::enter);
        match item.event {
            InboundEvent::Packet(packet) => {
                if conn.keep_alive_watch.is_some() {
                    let now = keep_alive::monotonic_ms();
                    self.handle.0.last_packet_ms.store(now, Ordering::Relaxed);
                }
                self.handle_packet(packet, ctx);
            }
            InboundEvent::Error(e) => {
                let reason = match &e {
                    crate::transport::ReadError::Decode(d) => {
                        Metrics::add(&self.state.metrics().protocol_errors, 1);
                        CloseReason::Violation(SessionError::from(d))
                    }
                    crate::transport::ReadError::Io(io) => {
                        CloseReason::ConnectionLost(io.to_string())
                    }
                };
                self.connection_lost(reason, ctx);
            }
            InboundEvent::Closed => {
                self.connection_lost(CloseReason::ConnectionLost("closed by client".into()), ctx)
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // Each stream ends with an `InboundEvent::Closed` item; the actor must
        // not stop when one connection's stream ends.
    }
}

impl Handler<WriterEvent> for Session {
    type Result = ();

    fn handle(&mut self, msg: WriterEvent, ctx: &mut Context<Self>) {
        match msg {
            WriterEvent::Drained { generation } => {
                if self
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.generation == generation)
                {
                    self.pump();
                }
            }
            WriterEvent::Failed { generation, error } => {
                if self
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.generation == generation)
                {
                    self.connection_lost(CloseReason::ConnectionLost(error.to_string()), ctx);
                }
            }
        }
    }
}

impl Handler<KeepAliveExpired> for Session {
    type Result = ();

    /// [MQTT-3.1.2-24] (5.0 [MQTT-3.1.2-22]): nothing arrived for 1.5 times
    /// the Keep Alive.
    fn handle(&mut self, msg: KeepAliveExpired, ctx: &mut Context<Self>) {
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.generation == msg.generation)
        {
            self.connection_lost(CloseReason::KeepAliveTimeout, ctx);
        }
    }
}

impl Handler<Shutdown> for Session {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        if self.conn.is_some() {
            self.connection_lost(CloseReason::ServerShutdown, ctx);
        }
    }
}

impl Session {
    /// Ends the current connection for `reason`: tells the client (5.0),
    /// publishes the will if due, and ends or parks the session.
    pub(super) fn connection_lost(&mut self, reason: CloseReason, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.take() else { return };
        match &reason {
            CloseReason::ClientDisconnect(_)
            | CloseReason::ServerShutdown
            | CloseReason::UseAnotherServer(_) => {
                tracing::debug!(client_id = %self.client_id(), reason = ?reason, "client disconnected")
            }
            _ => {
                tracing::info!(client_id = %self.client_id(), peer = %conn.peer, reason = ?reason, "connection closed")
            }
        }
        self.close_connection(*conn, reason.clone(), ctx);
        let now = unix_ms();
        let will_delay = self
            .will
            .as_ref()
            .map(|w| w.properties.will_delay_interval.unwrap_or(0));
        let actions = core::on_connection_lost(
            now,
            self.session_expiry_interval,
            will_delay,
            reason.publishes_will(),
        );
        // A will that is not due goes with the connection.
        let mut will = self.will.take();
        for action in actions {
            match action {
                core::LostAction::PublishWill => {
                    if let Some(will) = will.take() {
                        self.publish_will(will);
                    }
                }
                core::LostAction::ArmWill { at_ms } => {
                    if let Some(will) = will.take() {
                        self.arm_will(will, at_ms.saturating_sub(now), ctx);
                    }
                }
                core::LostAction::RedistributeShared => {
                    let shared = self.outgoing.take_shared(false);
                    for m in self.redistribute_shared(shared) {
                        self.outgoing.restore(m);
                    }
                }
                core::LostAction::GoOffline { since_ms } => {
                    self.lifecycle = core::Lifecycle::Offline {
                        since_ms: Some(since_ms),
                    };
                    self.store_session_record(Some(since_ms));
                    self.update_record();
                }
                core::LostAction::ArmExpiry { at_ms } => {
                    self.arm_expiry(at_ms.saturating_sub(now), ctx)
                }
                core::LostAction::End => self.end_session(ctx),
            }
        }
    }

    /// Closes a connection (the current one or one being replaced).
    pub(super) fn close_connection(
        &mut self,
        conn: Connection,
        reason: CloseReason,
        ctx: &mut Context<Self>,
    ) {
        if conn.protocol.is_v5() {
            if let Some(code) = reason.server_disconnect() {
                let mut disconnect = Disconnect {
                    reason_code: code,
                    ..Default::default()
                };
                if let CloseReason::Violation(e) = &reason {
                    disconnect.properties.reason_string = Some(e.to_string().into());
                }
                if let CloseReason::UseAnotherServer(Some(reference)) = &reason {
                    disconnect.properties.server_reference = Some(reference.clone());
                }
                if !conn.send(&Packet::Disconnect(disconnect.clone())) {
                    // Too large for the client with its Reason String: the
                    // code alone (5.0 [MQTT-3.14.2-3]).
                    disconnect.properties = Default::default();
                    conn.send(&Packet::Disconnect(disconnect));
                }
            }
        }
        conn.close(ctx);
        self.incoming.clear_pending();
        self.handle.0.online.store(false, Ordering::Relaxed);
        // Nothing is sent to this session now: publishers are not held back.
        self.outgoing.release_holds(u64::MAX);
        self.update_congestion();
        self.state
            .metrics()
            .connections_current
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// The connection of `will` ended without DISCONNECT: publish it now, or
    /// after its Will Delay Interval if the session outlives the connection
    /// (5.0 section 3.1.3.2.2: whichever comes first of the delay and the end
    /// of the session).
    fn will_due(&mut self, will: Box<LastWill>, publishes: bool, ctx: &mut Context<Self>) {
        let now = unix_ms();
        let at = match core::will_fate(
            now,
            true,
            publishes,
            will.properties.will_delay_interval.unwrap_or(0),
            self.session_expiry_interval,
        ) {
            core::WillFate::Dropped => return,
            core::WillFate::Now => return self.publish_will(will),
            core::WillFate::At(at) => at,
        };
        self.arm_will(will, at - now, ctx);
    }

    /// Publishes `will` in `after_ms` unless a connection resumes the
    /// session first (`Attach` cancels it) or the session ends (it goes then).
    fn arm_will(&mut self, will: Box<LastWill>, after_ms: u64, ctx: &mut Context<Self>) {
        let timer = ctx.run_later(Duration::from_millis(after_ms), |session, _ctx| {
            if let Some((will, _)) = session.pending_will.take() {
                session.publish_will(will);
            }
        });
        self.pending_will = Some((will, timer));
    }

    /// Publishes a Will Message as if its client had published it.
    pub(super) fn publish_will(&mut self, will: Box<LastWill>) {
        let will = *will;
        let now = unix_ms();
        let mut properties = crate::codec::PublishProperties {
            payload_format_indicator: will.properties.payload_format_indicator,
            message_expiry_interval: will.properties.message_expiry_interval,
            content_type: will.properties.content_type,
            response_topic: will.properties.response_topic,
            correlation_data: will.properties.correlation_data,
            user_properties: will.properties.user_properties,
            ..Default::default()
        };
        properties.topic_alias = None;
        let expires_at_ms = properties
            .message_expiry_interval
            .map(|s| now + u64::from(s) * 1000);
        let message = Arc::new(Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties,
            expires_at_ms,
            origin: self.handle.0.id,
            received_at: None,
            uid: crate::message::next_uid(),
        });
        tracing::debug!(client_id = %self.client_id(), topic = %message.topic, "publishing will");
        self.publish_message(message, None);
    }

    /// Starts the countdown of an offline session's expiry.
    pub(super) fn start_expiry_timer(&mut self, ctx: &mut Context<Self>) {
        if self.conn.is_some() {
            return;
        }
        let now = unix_ms();
        let Some(expires_at) =
            core::expires_at(now, self.offline_since(), self.session_expiry_interval)
        else {
            return;
        };
        self.arm_expiry(expires_at.saturating_sub(now), ctx);
    }

    /// Ends the session in `after_ms` if it is still offline then.
    fn arm_expiry(&mut self, after_ms: u64, ctx: &mut Context<Self>) {
        if let Some(t) = self.expiry_timer.take() {
            ctx.cancel_future(t);
        }
        let delay = Duration::from_millis(after_ms);
        self.expiry_timer = Some(ctx.run_later(delay, |session, ctx| {
            let now = unix_ms();
            if core::expiry_due(now, session.lifecycle, session.session_expiry_interval) {
                tracing::debug!(client_id = %session.client_id(), "session expired");
                session.end_session(ctx);
            } else {
                // early by the wall clock (it was set back): count again
                session.expiry_timer = None;
                session.start_expiry_timer(ctx);
            }
        }));
    }

    /// Forgets everything of the session (Clean Start or end): subscriptions
    /// in the router, queued and in-flight messages, stored records.
    pub(super) fn discard_state(&mut self) {
        let retired = matches!(self.lifecycle, core::Lifecycle::Moved { retired: true, .. });
        if !self.subscriptions.is_empty() {
            let mut router = self.state.router().write();
            let me = self.subscriber();
            for filter in self.subscriptions.keys() {
                router.unsubscribe(filter, &me);
                if !retired {
                    self.state
                        .cluster()
                        .propose(Proposal::RemoveRoute(filter.to_string()));
                }
            }
        }
        self.subscriptions.clear();
        self.outgoing.clear();
        self.incoming.clear();
        self.drop_replica();
        if self.stored {
            self.state.writer().submit(
                vec![storage::WriteOp::DeleteSession {
                    client_id: self.client_id().to_string(),
                }],
                None,
            );
            self.stored = false;
        }
    }

    /// The session is over: forget it and stop the actor.
    pub(super) fn end_session(&mut self, ctx: &mut Context<Self>) {
        self.finish(false, ctx);
    }

    /// Ends the session; `moved`: it goes on at another node of the cluster
    /// (its messages went with it, it is not released).
    pub(super) fn finish(&mut self, moved: bool, ctx: &mut Context<Self>) {
        if let Some((will, timer)) = self.pending_will.take() {
            ctx.cancel_future(timer);
            self.publish_will(will);
        }
        if moved {
            // Its messages went with it to another node.
            self.discard_state();
            self.lifecycle = core::Lifecycle::Ended;
            self.state.registry().remove_moved(&self.handle);
        } else {
            self.lifecycle = core::Lifecycle::Ended;
            let shared = self.outgoing.take_shared(true);
            self.discard_state();
            let lost = self.redistribute_shared(shared).len();
            self.state
                .metrics()
                .dropped(DropReason::NoSubscriber, lost as u64);
            self.propose(|s| Proposal::Release(s.client_id().to_string()));
        }
        self.state
            .registry()
            .remove_if_same(self.client_id(), &self.handle);
        ctx.stop();
    }

    /// Writes the session record (connected when `disconnected_at_ms` is None).
    pub(super) fn store_session_record(&mut self, disconnected_at_ms: Option<u64>) {
        self.stored = true;
        self.state.writer().submit(
            vec![storage::WriteOp::PutSession {
                client_id: self.client_id().to_string(),
                record: storage::SessionRecord {
                    protocol_level: self.protocol.level(),
                    session_expiry_interval: self.session_expiry_interval,
                    disconnected_at_ms,
                },
            }],
            None,
        );
    }

    /// Disconnects the client for a protocol violation.
    pub(super) fn protocol_error(&mut self, error: SessionError, ctx: &mut Context<Self>) {
        if error.is_protocol_error() {
            Metrics::add(&self.state.metrics().protocol_errors, 1);
            self.state.hub().events().emit(
                crate::hub::events::Severity::Warning,
                "client",
                self.client_id(),
                "client disconnected for a protocol error",
                serde_json::json!({
                    "reason": error.to_string(),
                    "reason_code": error.reason_code() as u8,
                }),
            );
        }
        tracing::info!(client_id = %self.client_id(), reason = %error, "protocol violation");
        self.connection_lost(CloseReason::Violation(error), ctx);
    }

    /// DISCONNECT from the client: `core::disconnect` checks it and says
    /// how the connection ends.
    pub(super) fn handle_disconnect(&mut self, d: Disconnect, ctx: &mut Context<Self>) {
        match core::disconnect::plan_disconnect(self.session_expiry_interval, &d) {
            core::disconnect::DisconnectPlan::Violation(e) => self.protocol_error(e, ctx),
            core::disconnect::DisconnectPlan::Close {
                session_expiry_interval,
                reason_code,
            } => {
                if let Some(expiry) = session_expiry_interval {
                    self.set_session_expiry(expiry);
                }
                self.connection_lost(CloseReason::ClientDisconnect(reason_code), ctx);
            }
        }
    }
}
