//! A session in a cluster: telling the cluster about it (ownership,
//! subscriptions, routes), and leaving this node when another one takes it
//! (`HandOver`, asked by that node) or owns it now (`OwnerMoved`, learned
//! from the replicated state).

use actix::prelude::*;

use super::error::CloseReason;
use super::outgoing::OutState;
use super::{Restored, Session};
use crate::handle::Imported;
use crate::handle::{HandOver, OwnerMoved};
use crate::nodes::Proposal;
use crate::records;

impl Session {
    /// The session as the replicated state keeps it.
    pub(super) fn session_info(&self) -> cluster::SessionInfo {
        cluster::SessionInfo {
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(filter, entry)| records::to_replicated(filter, entry))
                .collect(),
            session_expiry_interval: self.session_expiry_interval,
            disconnected_at_ms: self.offline_since(),
        }
    }

    /// Proposes a change about this session to the cluster.
    pub(super) fn propose(&self, proposal: impl Fn(&Session) -> Proposal) {
        self.state.cluster().propose_with(&mut || proposal(self));
    }

    /// Claims the session for this node (at each connection).
    pub(super) fn claim(&self) {
        self.propose(|s| Proposal::Claim(s.client_id().to_string(), s.session_info()));
    }

    /// Tells the cluster the session's record changed (subscriptions,
    /// expiry, offline time).
    pub(super) fn update_record(&self) {
        self.propose(|s| Proposal::Update(s.client_id().to_string(), s.session_info()));
    }

    /// Loads a session taken over from another node (or resumed from the
    /// replicated record when its owner is down), and stores it here.
    pub(super) fn import(&mut self, imported: Imported) {
        let restored = Restored::from_imported(self.state.limits(), imported);
        if let Some(protocol) = restored.protocol {
            self.protocol = protocol;
        }
        self.set_session_expiry(restored.session_expiry_interval);
        let mut ops = Vec::new();
        {
            let mut router = self.state.router().write();
            let me = self.subscriber();
            for (filter, entry) in restored.subscriptions {
                router.subscribe(&filter, me.clone(), entry.clone());
                self.propose(|_| Proposal::AddRoute(filter.to_string()));
                ops.push(storage::WriteOp::PutSubscription {
                    client_id: self.client_id().to_string(),
                    record: records::to_record(&filter, &entry),
                });
                self.subscriptions.insert(filter, entry);
            }
        }
        for m in restored.outgoing {
            ops.push(storage::WriteOp::PutOutgoing {
                client_id: self.client_id().to_string(),
                seq: m.seq,
                record: storage::OutgoingRecord {
                    released: m.state == OutState::Released,
                    message: m.message.to_stored(m.qos, m.retain, &m.subscription_ids),
                },
            });
            self.outgoing.restore(m);
        }
        for packet_id in restored.incoming_qos2 {
            ops.push(storage::WriteOp::PutIncomingQos2 {
                client_id: self.client_id().to_string(),
                packet_id,
            });
            self.incoming.insert_qos2(packet_id);
        }
        if self.is_persistent() && !ops.is_empty() {
            self.stored = true;
            self.state.writer().submit(ops, None);
        }
    }

    /// Ends the session here because another node has it now. Local store
    /// records go unless `keep_stored` (then the caller deletes them once the
    /// messages they hold have reached the new owner).
    fn leave(&mut self, keep_stored: bool, ctx: &mut Context<Self>) {
        if let Some(conn) = self.conn.take() {
            self.close_connection(conn, CloseReason::TakenOver, ctx);
        }
        // The session goes on elsewhere: a delayed will is not due (5.0
        // [MQTT-3.1.3-9]); an immediate one is, as on any takeover.
        if let Some(will) = self.will.take() {
            if will.properties.will_delay_interval.unwrap_or(0) == 0 {
                self.publish_will(will);
            }
        }
        if let Some((_, timer)) = self.pending_will.take() {
            ctx.cancel_future(timer);
        }
        if keep_stored {
            self.stored = false;
        }
        self.finish(true, ctx);
    }
}

impl Session {
    /// The node drains: close the connection, telling a 5.0 client where
    /// to reconnect; a persistent session stays here, offline, until
    /// another node adopts it.
    pub(super) fn drain(
        &mut self,
        reference: Option<bytestring::ByteString>,
        ctx: &mut Context<Self>,
    ) {
        if self.conn.is_some() {
            self.connection_lost(CloseReason::UseAnotherServer(reference), ctx);
        }
    }

    /// Takes on a session a draining node handed over: it replaces what
    /// this one held, is stored, and waits offline for its client (its
    /// expiry counts from when it went offline there). A client that
    /// connected here meanwhile took the session over itself: nothing to
    /// do. Returns the record to claim.
    pub(super) fn adopt(
        &mut self,
        imported: Imported,
        ctx: &mut Context<Self>,
    ) -> Option<cluster::SessionInfo> {
        if self.is_ended() {
            return None;
        }
        if self.conn.is_none() {
            let since = match &imported {
                Imported::State(s) => s.info.disconnected_at_ms,
                Imported::Record(info) => info.disconnected_at_ms,
            }
            .unwrap_or_else(crate::message::unix_ms);
            self.discard_state();
            self.import(imported);
            self.lifecycle = super::core::Lifecycle::Offline {
                since_ms: Some(since),
            };
            self.store_session_record(Some(since));
            self.start_expiry_timer(ctx);
        }
        Some(self.session_info())
    }
}

impl Handler<HandOver> for Session {
    type Result = Option<cluster::SessionState>;

    fn handle(&mut self, msg: HandOver, ctx: &mut Context<Self>) -> Self::Result {
        if self.is_ended() {
            return None;
        }
        tracing::info!(client_id = %self.client_id(), to = msg.to, "session handed over to another node");
        let state = cluster::SessionState {
            client_id: self.client_id().to_string(),
            info: self.session_info(),
            protocol_level: self.protocol.level(),
            outgoing: self
                .outgoing
                .iter()
                .map(|m| {
                    (
                        m.seq,
                        storage::OutgoingRecord {
                            released: m.state == OutState::Released,
                            message: m.message.to_stored(m.qos, m.retain, &m.subscription_ids),
                        },
                    )
                })
                .collect(),
            incoming_qos2: self.incoming.qos2_ids(),
        };
        self.leave(false, ctx);
        Some(state)
    }
}

impl Handler<OwnerMoved> for Session {
    type Result = ();

    fn handle(&mut self, msg: OwnerMoved, ctx: &mut Context<Self>) {
        if self.is_ended() {
            return;
        }
        let cluster = self.state.cluster().clone();
        tracing::info!(client_id = %self.client_id(), owner = msg.owner, "session owned by another node now");
        // Messages the client has not received yet go to the new owner, in
        // order; the local copies are deleted once all have arrived.
        let sends: Vec<_> = self
            .outgoing
            .iter()
            .filter(|m| m.state != OutState::Released)
            .map(|m| {
                cluster.forward_to_session(
                    msg.owner,
                    self.client_id(),
                    &m.message,
                    (m.qos, m.retain),
                    &m.subscription_ids,
                )
            })
            .collect();
        let keep_stored = self.stored;
        let client_id = self.client_id().to_string();
        let writer = self.state.writer().clone();
        self.leave(keep_stored, ctx);
        if keep_stored {
            actix_rt::spawn(async move {
                let mut all = true;
                for send in sends {
                    all &= send.await;
                }
                if all {
                    writer.submit(vec![storage::WriteOp::DeleteSession { client_id }], None);
                } else {
                    tracing::warn!(%client_id, "some messages did not reach the session's new owner; kept for the next restart");
                }
            });
        }
    }
}
