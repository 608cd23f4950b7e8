//! What an operator may ask of a session (the HTTP admin API): describe it,
//! disconnect its client, end it. Each is a message to the session actor, so
//! it goes through the same paths as the protocol: `Kick` closes the
//! connection like a takeover does (5.0 clients get DISCONNECT 0x98
//! Administrative action, the will is published), `Discard` then ends the
//! session like an expiry (subscriptions, queue and stored records go, the
//! cluster releases it).

use actix::prelude::*;

use super::error::CloseReason;
use super::Session;
use crate::handle::{Describe, Discard, Kick, SessionDetails, SubscriptionDetails};

impl Handler<Describe> for Session {
    type Result = Option<SessionDetails>;

    fn handle(&mut self, _: Describe, _: &mut Context<Self>) -> Self::Result {
        if self.is_ended() {
            return None;
        }
        let mut subscriptions: Vec<SubscriptionDetails> = self
            .subscriptions
            .iter()
            .map(|(filter, entry)| SubscriptionDetails {
                filter: filter.to_string(),
                qos: entry.options.qos as u8,
                no_local: entry.options.no_local,
                retain_as_published: entry.options.retain_as_published,
                retain_handling: entry.options.retain_handling as u8,
                subscription_identifier: entry.subscription_id,
            })
            .collect();
        subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
        Some(SessionDetails {
            client_id: self.client_id().to_string(),
            online: self.conn.is_some(),
            persistent: self.is_persistent(),
            protocol: self.protocol.to_string(),
            peer: self.conn.as_ref().map(|c| c.peer),
            session_expiry_interval: self.session_expiry_interval,
            offline_since_ms: self.offline_since(),
            subscriptions,
            queued_messages: self.outgoing.queued_len(),
            inflight_messages: self.outgoing.inflight_len(),
            replica_node: self.replica_placed_on(),
        })
    }
}

impl Handler<Kick> for Session {
    type Result = bool;

    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) -> bool {
        if self.is_ended() || self.conn.is_none() {
            return false;
        }
        tracing::info!(client_id = %self.client_id(), "client disconnected by an operator");
        self.connection_lost(CloseReason::Administrative, ctx);
        true
    }
}

impl Handler<Discard> for Session {
    type Result = bool;

    fn handle(&mut self, _: Discard, ctx: &mut Context<Self>) -> bool {
        if self.is_ended() {
            return false;
        }
        tracing::info!(client_id = %self.client_id(), "session deleted by an operator");
        // A clean session ends with its connection; a persistent one is
        // parked by it and ended here.
        self.connection_lost(CloseReason::Administrative, ctx);
        if !self.is_ended() {
            self.end_session(ctx);
        }
        true
    }
}
