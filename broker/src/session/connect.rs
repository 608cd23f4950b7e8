//! Connection lifecycle of a session: attaching a connection (CONNECT,
//! CONNACK, takeover, resuming a stored session), keep alive, the Will
//! Message, going offline, session expiry and the end of a session.
//!
//! 3.1.1 sections 3.1.2.4 (Clean Session), 3.1.2.5 (Will), 3.1.2.10 (Keep
//! Alive), 3.1.4 (takeover); 5.0 sections 3.1.2.4, 3.1.2.5, 3.1.2.10, 3.1.2.11.2
//! (Session Expiry Interval), 4.1 (Session State).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::connection::{Connection, Inbound, InboundEvent, WriterEvent};
use super::{Attach, Session, Shutdown};
use crate::codec::{
    ConnAck, ConnAckProperties, Disconnect, LastWill, Packet, ProtocolVersion, ReasonCode,
};
use crate::message::{unix_ms, Message};
use crate::state::Metrics;

/// Why a connection ended, as far as the will and logs care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CloseReason {
    /// DISCONNECT from the client (5.0: with this reason code).
    ClientDisconnect(ReasonCode),
    /// The socket closed or failed without DISCONNECT.
    ConnectionLost(String),
    /// A protocol violation; the client is told `ReasonCode` (5.0).
    ProtocolViolation(ReasonCode, String),
    /// Nothing received for 1.5 times the keep alive.
    KeepAliveTimeout,
    /// Another connection with the same client id took the session.
    TakenOver,
    /// The broker is stopping.
    ServerShutdown,
}

impl CloseReason {
    /// The reason code of the DISCONNECT the server sends (5.0), if any.
    fn server_disconnect(&self) -> Option<ReasonCode> {
        match self {
            CloseReason::ProtocolViolation(code, _) => Some(*code),
            CloseReason::KeepAliveTimeout => Some(ReasonCode::KeepAliveTimeout),
            CloseReason::TakenOver => Some(ReasonCode::SessionTakenOver),
            CloseReason::ServerShutdown => Some(ReasonCode::ServerShuttingDown),
            CloseReason::ClientDisconnect(_) | CloseReason::ConnectionLost(_) => None,
        }
    }

    /// The will is published unless the client disconnected normally
    /// [MQTT-3.1.2-8] [MQTT-3.14.4-3] (5.0: unless reason 0x00).
    fn publishes_will(&self) -> bool {
        !matches!(self, CloseReason::ClientDisconnect(code) if *code != ReasonCode::DisconnectWithWillMessage)
    }
}

impl Handler<Attach> for Session {
    type Result = ();

    fn handle(&mut self, msg: Attach, ctx: &mut Context<Self>) {
        let Some(new) = msg.0.lock().take() else {
            return;
        };
        if self.ended {
            // Unreachable in practice: an ended session has left the registry
            // and stops before it handles more messages. Put it back for retry.
            *msg.0.lock() = Some(new);
            return;
        }
        if let Some(old) = self.conn.take() {
            tracing::info!(client_id = %self.client_id, old_peer = %old.peer, new_peer = %new.peer, "session taken over");
            self.close_connection(old, CloseReason::TakenOver, ctx);
        }
        if let Some(timer) = self.expiry_timer.take() {
            ctx.cancel_future(timer);
        }
        self.offline_since_ms = None;
        let connect = new.connect;
        // [MQTT-3.1.2-6] Clean Session discards the previous session; 5.0
        // [MQTT-3.1.2-4] Clean Start likewise. A session that was not
        // persistent ended with its connection.
        let resume = !connect.clean_start && self.is_persistent();
        if !resume {
            self.discard_state();
        }
        self.protocol = connect.protocol;
        let expiry = match connect.protocol {
            ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            _ if connect.clean_start => 0,
            _ => u32::MAX,
        };
        self.set_session_expiry(expiry);
        self.will = connect.will.clone();
        self.set_acl_subject(crate::acl::Subject::new(&self.client_id, &new.principal));

        let generation = self.next_generation;
        self.next_generation += 1;
        let mut conn = Connection::open(
            new.transport,
            new.read_buf,
            generation,
            connect.protocol,
            new.peer,
            self.state.clone(),
            ctx,
        );
        let mqtt = &self.state.config.mqtt;
        let mut keep_alive = connect.keep_alive;
        let mut properties = ConnAckProperties::default();
        if connect.protocol.is_v5() {
            if mqtt.max_keep_alive > 0 && (keep_alive == 0 || keep_alive > mqtt.max_keep_alive) {
                keep_alive = mqtt.max_keep_alive;
                properties.server_keep_alive = Some(keep_alive);
            }
            if let Some(max) = connect.properties.maximum_packet_size {
                conn.client_max_packet_size = max;
            }
            properties.receive_maximum = Some(mqtt.max_inflight);
            properties.maximum_packet_size = Some(mqtt.max_packet_size);
            properties.topic_alias_maximum = Some(0);
            properties.retain_available = Some(true);
            properties.wildcard_subscription_available = Some(true);
            properties.subscription_identifiers_available = Some(true);
            properties.shared_subscription_available = Some(true);
            if new.assigned_client_id {
                properties.assigned_client_identifier = Some(self.client_id.clone());
            }
        }
        let receive_maximum = connect
            .properties
            .receive_maximum
            .map_or(usize::from(mqtt.max_inflight), |r| {
                usize::from(r.min(mqtt.max_inflight))
            });
        self.outgoing.max_inflight = receive_maximum;
        conn.keep_alive = keep_alive;
        conn.send(&Packet::ConnAck(ConnAck {
            session_present: resume,
            reason_code: ReasonCode::Success,
            properties,
        }));
        if keep_alive > 0 {
            conn.keep_alive_timer = Some(self.start_keep_alive(keep_alive, generation, ctx));
        }
        self.conn = Some(conn);
        self.handle.0.online.store(true, Ordering::Relaxed);
        Metrics::add(&self.state.metrics.connections_current, 1);
        Metrics::add(&self.state.metrics.connections_total, 1);
        tracing::debug!(client_id = %self.client_id, peer = %new.peer, protocol = %connect.protocol,
            clean_start = connect.clean_start, session_present = resume, "client connected");

        if self.is_persistent() {
            self.store_session_record(None);
        }
        if resume {
            self.resend_inflight();
        }
        self.pump();
    }
}

impl StreamHandler<Inbound> for Session {
    fn handle(&mut self, item: Inbound, ctx: &mut Context<Self>) {
        let Some(conn) = &mut self.conn else { return };
        if conn.generation != item.generation {
            return;
        }
        match item.event {
            InboundEvent::Packet(packet) => {
                conn.last_packet_at = Instant::now();
                self.handle_packet(packet, ctx);
            }
            InboundEvent::Error(e) => {
                let reason = match &e {
                    super::ReadError::Decode(d) => {
                        Metrics::add(&self.state.metrics.protocol_errors, 1);
                        CloseReason::ProtocolViolation(d.reason_code(), d.to_string())
                    }
                    super::ReadError::Io(io) => CloseReason::ConnectionLost(io.to_string()),
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
                    self.connection_lost(CloseReason::ConnectionLost(error), ctx);
                }
            }
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
            CloseReason::ClientDisconnect(_) | CloseReason::ServerShutdown => {
                tracing::debug!(client_id = %self.client_id, reason = ?reason, "client disconnected")
            }
            _ => {
                tracing::info!(client_id = %self.client_id, peer = %conn.peer, reason = ?reason, "connection closed")
            }
        }
        self.close_connection(conn, reason.clone(), ctx);
        if reason.publishes_will() {
            if let Some(will) = self.will.take() {
                self.publish_will(will);
            }
        }
        self.will = None;
        if self.is_persistent() {
            let now = unix_ms();
            self.offline_since_ms = Some(now);
            self.store_session_record(Some(now));
            self.start_expiry_timer(ctx);
        } else {
            self.end_session(ctx);
        }
    }

    /// Closes a connection (the current one or one being replaced).
    fn close_connection(&mut self, conn: Connection, reason: CloseReason, ctx: &mut Context<Self>) {
        if conn.protocol.is_v5() {
            if let Some(code) = reason.server_disconnect() {
                let mut disconnect = Disconnect {
                    reason_code: code,
                    ..Default::default()
                };
                if let CloseReason::ProtocolViolation(_, text) = &reason {
                    disconnect.properties.reason_string = Some(text.as_str().into());
                }
                conn.send(&Packet::Disconnect(disconnect));
            }
        }
        if reason == CloseReason::TakenOver {
            if let Some(will) = self.will.take() {
                self.publish_will(will);
            }
        }
        conn.close(ctx);
        self.incoming.clear_pending();
        self.handle.0.online.store(false, Ordering::Relaxed);
        self.state
            .metrics
            .connections_current
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// Publishes a Will Message as if its client had published it.
    fn publish_will(&mut self, will: LastWill) {
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
        });
        tracing::debug!(client_id = %self.client_id, topic = %message.topic, "publishing will");
        self.publish_message(message, None);
    }

    /// Keep alive: the connection closes when nothing arrived for 1.5 times
    /// the interval [MQTT-3.1.2-24] (5.0 [MQTT-3.1.2-22]).
    fn start_keep_alive(
        &self,
        keep_alive: u16,
        generation: u64,
        ctx: &mut Context<Self>,
    ) -> SpawnHandle {
        let limit = Duration::from_millis(u64::from(keep_alive) * 1500);
        let period = Duration::from_millis((u64::from(keep_alive) * 250).max(100));
        ctx.run_interval(period, move |session, ctx| {
            let expired = session
                .conn
                .as_ref()
                .is_some_and(|c| c.generation == generation && c.last_packet_at.elapsed() > limit);
            if expired {
                session.connection_lost(CloseReason::KeepAliveTimeout, ctx);
            }
        })
    }

    /// Starts the countdown of an offline session's expiry.
    pub(super) fn start_expiry_timer(&mut self, ctx: &mut Context<Self>) {
        if self.session_expiry_interval == u32::MAX || self.conn.is_some() {
            return;
        }
        if let Some(t) = self.expiry_timer.take() {
            ctx.cancel_future(t);
        }
        let expires_at = self
            .offline_since_ms
            .unwrap_or_else(unix_ms)
            .saturating_add(u64::from(self.session_expiry_interval) * 1000);
        let delay = Duration::from_millis(expires_at.saturating_sub(unix_ms()));
        self.expiry_timer = Some(ctx.run_later(delay, |session, ctx| {
            if session.conn.is_none() {
                tracing::debug!(client_id = %session.client_id, "session expired");
                session.end_session(ctx);
            }
        }));
    }

    /// Forgets everything of the session (Clean Start or end): subscriptions
    /// in the router, queued and in-flight messages, stored records.
    fn discard_state(&mut self) {
        if !self.subscriptions.is_empty() {
            let mut router = self.state.router.write();
            for filter in self.subscriptions.keys() {
                router.unsubscribe(filter, &self.handle);
            }
        }
        self.subscriptions.clear();
        self.outgoing.clear();
        self.incoming.clear();
        if self.stored {
            self.state.writer.submit(
                vec![storage::WriteOp::DeleteSession {
                    client_id: self.client_id.to_string(),
                }],
                None,
            );
            self.stored = false;
        }
    }

    /// The session is over: forget it and stop the actor.
    pub(super) fn end_session(&mut self, ctx: &mut Context<Self>) {
        self.ended = true;
        self.discard_state();
        let mut registry = self.state.registry.lock();
        if registry
            .get(&self.client_id)
            .is_some_and(|addr| *addr == self.handle.0.addr)
        {
            registry.remove(&self.client_id);
        }
        drop(registry);
        ctx.stop();
    }

    /// Writes the session record (connected when `disconnected_at_ms` is None).
    fn store_session_record(&mut self, disconnected_at_ms: Option<u64>) {
        self.stored = true;
        self.state.writer.submit(
            vec![storage::WriteOp::PutSession {
                client_id: self.client_id.to_string(),
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
    pub(super) fn protocol_error(
        &mut self,
        code: ReasonCode,
        text: String,
        ctx: &mut Context<Self>,
    ) {
        Metrics::add(&self.state.metrics.protocol_errors, 1);
        tracing::info!(client_id = %self.client_id, reason = %text, "protocol violation");
        self.connection_lost(CloseReason::ProtocolViolation(code, text), ctx);
    }

    /// DISCONNECT from the client.
    pub(super) fn handle_disconnect(&mut self, d: Disconnect, ctx: &mut Context<Self>) {
        if let Some(expiry) = d.properties.session_expiry_interval {
            // 5.0 [MQTT-3.14.2-2] a session expiry of 0 at CONNECT cannot be
            // raised at DISCONNECT
            if self.session_expiry_interval == 0 && expiry != 0 {
                self.protocol_error(
                    ReasonCode::ProtocolError,
                    "DISCONNECT sets a Session Expiry Interval after CONNECT had 0".into(),
                    ctx,
                );
                return;
            }
            self.set_session_expiry(expiry);
        }
        self.connection_lost(CloseReason::ClientDisconnect(d.reason_code), ctx);
    }
}
