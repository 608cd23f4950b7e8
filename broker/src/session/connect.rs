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

use super::alias::TopicAliases;
use super::connection::{Connection, Inbound, InboundEvent, WriterEvent};
use super::keep_alive::{self, KeepAliveExpired};
use super::{Attach, Session, Shutdown};
use crate::clustering::Proposal;
use crate::codec::{
    ConnAck, ConnAckProperties, Disconnect, LastWill, Packet, ProtocolVersion, ReasonCode,
};
use crate::enhanced_auth::AuthStep;
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
    /// An operator asked for it (admin API: kick, delete session).
    Administrative,
}

impl CloseReason {
    /// The reason code of the DISCONNECT the server sends (5.0), if any.
    fn server_disconnect(&self) -> Option<ReasonCode> {
        match self {
            CloseReason::ProtocolViolation(code, _) => Some(*code),
            CloseReason::KeepAliveTimeout => Some(ReasonCode::KeepAliveTimeout),
            CloseReason::TakenOver => Some(ReasonCode::SessionTakenOver),
            CloseReason::ServerShutdown => Some(ReasonCode::ServerShuttingDown),
            CloseReason::Administrative => Some(ReasonCode::AdministrativeAction),
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
            tracing::info!(client_id = %self.client_id(), old_peer = %old.peer, new_peer = %new.peer, "session taken over");
            self.close_connection(old, CloseReason::TakenOver, ctx);
            if let Some(will) = self.will.take() {
                self.will_due(will, ctx);
            }
        }
        if let Some(timer) = self.expiry_timer.take() {
            ctx.cancel_future(timer);
        }
        self.offline_since_ms = None;
        let connect = new.connect;
        // [MQTT-3.1.2-6] Clean Session discards the previous session; 5.0
        // [MQTT-3.1.2-4] Clean Start likewise. A session that was not
        // persistent ended with its connection.
        let mut resume = !connect.clean_start && self.is_persistent();
        if let Some(imported) = new.imported {
            // The session comes from another node of the cluster: it
            // replaces whatever this node had under the client id.
            self.discard_state();
            self.import(imported);
            resume = !connect.clean_start;
        }
        if let Some((will, timer)) = self.pending_will.take() {
            ctx.cancel_future(timer);
            if !resume {
                // The old session ends here: its delayed will is due now
                // (5.0 section 3.1.3.2.2). A resumed session cancels it
                // [MQTT-3.1.3-9].
                self.publish_will(will);
            }
        }
        if !resume {
            self.discard_state();
        }
        self.protocol = connect.protocol;
        let mqtt = &self.state.config.mqtt;
        let requested_expiry = match connect.protocol {
            ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            _ if connect.clean_start => 0,
            _ => u32::MAX,
        };
        let expiry = requested_expiry.min(mqtt.max_session_expiry_secs);
        self.set_session_expiry(expiry);
        self.will = connect.will.clone().map(Box::new);
        self.auth = new.authenticated.as_ref().map(|a| {
            Box::new(super::EnhancedAuth {
                method: a.method.clone(),
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
            if expiry != requested_expiry {
                // 5.0 section 3.2.2.3.2: CONNACK carries the interval when the
                // server uses another than the client asked for
                properties.session_expiry_interval = Some(expiry);
            }
            let outbound_aliases = connect
                .properties
                .topic_alias_maximum
                .unwrap_or(0)
                .min(mqtt.max_outbound_topic_alias);
            conn.set_aliases(TopicAliases::new(mqtt.max_topic_alias, outbound_aliases));
            conn.problem_information =
                connect.properties.request_problem_information != Some(false);
            if connect.properties.request_response_information == Some(true) {
                properties.response_information =
                    Some(format!("{}{}", mqtt.response_topic_prefix, self.client_id()).into());
            }
            properties.receive_maximum = Some(mqtt.max_inflight);
            properties.maximum_packet_size = Some(mqtt.max_packet_size);
            properties.topic_alias_maximum = Some(mqtt.max_topic_alias);
            properties.retain_available = Some(true);
            properties.wildcard_subscription_available = Some(true);
            properties.subscription_identifiers_available = Some(true);
            properties.shared_subscription_available = Some(true);
            if new.assigned_client_id {
                properties.assigned_client_identifier = Some(self.client_id().clone());
            }
            if let Some(auth) = &new.authenticated {
                properties.authentication_method = Some(auth.method.clone());
                properties.authentication_data = auth.data.clone();
            }
        }
        let receive_maximum = connect
            .properties
            .receive_maximum
            .map_or(usize::from(mqtt.max_inflight), |r| {
                usize::from(r.min(mqtt.max_inflight))
            });
        self.outgoing.max_inflight = receive_maximum;
        let mut connack = ConnAck {
            session_present: resume,
            reason_code: ReasonCode::Success,
            properties,
        };
        // 5.0 [MQTT-3.1.2-24]: optional properties go rather than the CONNACK
        let connack_fits = !connect.protocol.is_v5()
            || super::connack::fit_connack(&mut connack, conn.client_max_packet_size);
        conn.send(&Packet::ConnAck(connack));
        if keep_alive > 0 {
            conn.keep_alive_watch = Some(keep_alive::watch(&self.handle, generation, keep_alive));
        }
        self.conn = Some(conn);
        self.handle.0.online.store(true, Ordering::Relaxed);
        Metrics::add(&self.state.metrics.connections_current, 1);
        Metrics::add(&self.state.metrics.connections_total, 1);
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
        if !connack_fits {
            let max = self.conn.as_ref().map_or(0, |c| c.client_max_packet_size);
            self.protocol_error(
                ReasonCode::PacketTooLarge,
                format!("no CONNACK fits the client's Maximum Packet Size of {max} bytes"),
                ctx,
            );
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
            CloseReason::ClientDisconnect(_) | CloseReason::ServerShutdown => {
                tracing::debug!(client_id = %self.client_id(), reason = ?reason, "client disconnected")
            }
            _ => {
                tracing::info!(client_id = %self.client_id(), peer = %conn.peer, reason = ?reason, "connection closed")
            }
        }
        self.close_connection(conn, reason.clone(), ctx);
        match self.will.take() {
            Some(will) if reason.publishes_will() => self.will_due(will, ctx),
            _ => {}
        }
        if self.is_persistent() {
            // Queued messages of shared subscriptions go to members that are
            // online; what is in flight waits for this client to come back.
            let shared = self.outgoing.take_shared(false);
            for m in self.redistribute_shared(shared) {
                self.outgoing.restore(m);
            }
            let now = unix_ms();
            self.offline_since_ms = Some(now);
            self.store_session_record(Some(now));
            self.update_record();
            self.start_expiry_timer(ctx);
        } else {
            self.end_session(ctx);
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
                if let CloseReason::ProtocolViolation(_, text) = &reason {
                    disconnect.properties.reason_string = Some(text.as_str().into());
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
            .metrics
            .connections_current
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// The connection of `will` ended without DISCONNECT: publish it now, or
    /// after its Will Delay Interval if the session outlives the connection
    /// (5.0 section 3.1.3.2.2: whichever comes first of the delay and the end
    /// of the session).
    fn will_due(&mut self, will: Box<LastWill>, ctx: &mut Context<Self>) {
        let delay = will.properties.will_delay_interval.unwrap_or(0);
        if delay == 0 || !self.is_persistent() {
            return self.publish_will(will);
        }
        let delay = Duration::from_secs(u64::from(delay.min(self.session_expiry_interval)));
        let timer = ctx.run_later(delay, |session, _ctx| {
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
        });
        tracing::debug!(client_id = %self.client_id(), topic = %message.topic, "publishing will");
        self.publish_message(message, None);
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
                tracing::debug!(client_id = %session.client_id(), "session expired");
                session.end_session(ctx);
            }
        }));
    }

    /// Forgets everything of the session (Clean Start or end): subscriptions
    /// in the router, queued and in-flight messages, stored records.
    fn discard_state(&mut self) {
        if !self.subscriptions.is_empty() {
            let mut router = self.state.router.write();
            let me = self.subscriber();
            for filter in self.subscriptions.keys() {
                router.unsubscribe(filter, &me);
                if let Some(cluster) = &self.state.cluster {
                    cluster.propose(Proposal::RemoveRoute(filter.to_string()));
                }
            }
        }
        self.subscriptions.clear();
        self.outgoing.clear();
        self.incoming.clear();
        if self.stored {
            self.state.writer.submit(
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
        if let Some((will, timer)) = self.pending_will.take() {
            ctx.cancel_future(timer);
            self.publish_will(will);
        }
        self.ended = true;
        if self.moved {
            // Its messages went with it to another node.
            self.discard_state();
        } else {
            let shared = self.outgoing.take_shared(true);
            self.discard_state();
            let lost = self.redistribute_shared(shared).len();
            self.state
                .metrics
                .dropped(crate::state::DropReason::NoSubscriber, lost as u64);
            self.propose(|s| Proposal::Release(s.client_id().to_string()));
        }
        let mut registry = self.state.registry.lock();
        if registry
            .get(self.client_id())
            .is_some_and(|session| *session == self.handle)
        {
            registry.remove(self.client_id());
        }
        drop(registry);
        ctx.stop();
    }

    /// Writes the session record (connected when `disconnected_at_ms` is None).
    fn store_session_record(&mut self, disconnected_at_ms: Option<u64>) {
        self.stored = true;
        self.state.writer.submit(
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
    pub(super) fn protocol_error(
        &mut self,
        code: ReasonCode,
        text: String,
        ctx: &mut Context<Self>,
    ) {
        Metrics::add(&self.state.metrics.protocol_errors, 1);
        tracing::info!(client_id = %self.client_id(), reason = %text, "protocol violation");
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

impl Session {
    /// AUTH on a live connection: 5.0 re-authentication (section 4.12.1).
    /// The client starts it with reason 0x19 and the method of its CONNECT;
    /// packets keep flowing meanwhile. Success ends with AUTH 0x00; failure
    /// closes the connection.
    pub(super) fn handle_auth(&mut self, auth: crate::codec::Auth, ctx: &mut Context<Self>) {
        let Some(method_name) = self.auth.as_ref().map(|a| a.method.clone()) else {
            return self.protocol_error(
                ReasonCode::ProtocolError,
                "AUTH without an Authentication Method in CONNECT".into(),
                ctx,
            );
        };
        // [MQTT-4.12.1-1] re-authentication uses the method of the CONNECT
        if auth.properties.authentication_method.as_ref() != Some(&method_name) {
            return self.protocol_error(
                ReasonCode::ProtocolError,
                format!("AUTH must use Authentication Method `{method_name}`"),
                ctx,
            );
        }
        let data = auth.properties.authentication_data.unwrap_or_default();
        let exchange = self.auth.as_mut().and_then(|a| a.exchange.as_mut());
        let step = match (auth.reason_code, exchange) {
            (ReasonCode::ReAuthenticate, None) => {
                let Some(method) = self.state.auth_methods.get(&method_name).cloned() else {
                    return self.protocol_error(
                        ReasonCode::BadAuthenticationMethod,
                        format!("Authentication Method `{method_name}` is no longer offered"),
                        ctx,
                    );
                };
                let (exchange, step) = method.start(&data);
                if let Some(auth) = self.auth.as_mut() {
                    auth.exchange = Some(exchange);
                }
                step
            }
            (ReasonCode::ContinueAuthentication, Some(exchange)) => exchange.step(&data),
            (code, _) => {
                return self.protocol_error(
                    ReasonCode::ProtocolError,
                    format!(
                        "AUTH with reason {:#04x} does not fit the exchange",
                        code.as_u8()
                    ),
                    ctx,
                )
            }
        };
        let (reason_code, data) = match step {
            AuthStep::Continue(challenge) => (ReasonCode::ContinueAuthentication, Some(challenge)),
            AuthStep::Success { data, username } => {
                tracing::debug!(client_id = %self.client_id(), %username, "re-authenticated");
                self.end_reauth();
                (ReasonCode::Success, data)
            }
            AuthStep::Failure { code, why } => {
                self.end_reauth();
                tracing::info!(client_id = %self.client_id(), reason = %why, "re-authentication failed");
                // DISCONNECT has no 0x86: a wrong secret is Not authorized.
                let code = match code {
                    ReasonCode::BadAuthenticationMethod => code,
                    _ => ReasonCode::NotAuthorized,
                };
                return self.connection_lost(
                    CloseReason::ProtocolViolation(code, "re-authentication failed".into()),
                    ctx,
                );
            }
        };
        self.send(&Packet::Auth(crate::codec::Auth {
            reason_code,
            properties: crate::codec::AuthProperties {
                authentication_method: Some(method_name),
                authentication_data: data,
                ..Default::default()
            },
        }));
    }
}
