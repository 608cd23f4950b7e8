//! SUBSCRIBE and UNSUBSCRIBE (3.1.1 sections 3.8-3.11; 5.0 sections 3.8-3.11,
//! 4.8.2 for shared subscriptions).
//!
//! A subscription goes to the router and, for a persistent session, to the
//! store. Retained messages matching a new subscription follow its SUBACK
//! [MQTT-3.8.4-4], subject to 5.0 Retain Handling; shared subscriptions get no
//! retained messages (5.0 section 4.8.2).
//!
//! For a persistent session the SUBACK and UNSUBACK wait until the change is
//! on disk (submitted with a durability callback, as copies are before a
//! PUBACK): a client told it is subscribed keeps the subscription across a
//! crash. Every SUBSCRIBE and UNSUBSCRIBE of a persistent session goes
//! through the writer, even one that changes nothing on disk, so their
//! answers leave in the order the packets arrived (the writer runs
//! callbacks in submission order). A change that could not be stored is not
//! acknowledged: the connection is closed and the client subscribes again.
//!
//! The rules (No Local on shared subscriptions, the code of each filter,
//! Retain Handling, what an UNSUBSCRIBE withdraws) are in `core::subscribe`
//! (sans-IO); this file holds the router lock, the store writes, the
//! cluster proposals and the retained index lookups they call for.

use std::cmp::min;
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::oneshot;

use super::core::subscribe::{
    check_subscribe, plan_subscription, plan_unsubscription, unsuback_reason_codes, FilterPlan,
};
use super::error::SessionError;
use super::Session;
use crate::codec::{AckProperties, Packet, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe};
use crate::handle::{Backpressure, Deliver, SubscriptionEntry};
use crate::message::{unix_ms, Message};
use crate::nodes::Proposal;

impl Session {
    /// SUBSCRIBE: `core::subscribe` plans each filter; the router, the
    /// store, the cluster and the retained index carry it out.
    pub(super) fn handle_subscribe(&mut self, subscribe: Subscribe, ctx: &mut Context<Self>) {
        if let Err(e) = check_subscribe(self.protocol, &subscribe.filters) {
            return self.protocol_error(e, ctx);
        }
        // topic limits and ACL, per filter (session/checks.rs)
        let persistent = self.is_persistent();
        let plans: Vec<FilterPlan> = subscribe
            .filters
            .iter()
            .map(|(filter, options)| {
                plan_subscription(filter, options, self.subscribe_refusal(filter), persistent)
            })
            .collect();
        let subscription_id = subscribe.properties.subscription_identifier;
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        let mut ops = Vec::new();
        let mut retained: Vec<(Arc<Message>, QoS, Option<u32>)> = Vec::new();
        // In a cluster: the new routes, answered once applied on this node
        let mut route_applied = Vec::new();
        let now = unix_ms();
        {
            let mut router = self.state.router().write();
            for ((filter, options), plan) in subscribe.filters.into_iter().zip(plans) {
                let grant = match plan {
                    FilterPlan::Refuse(code) => {
                        reason_codes.push(code);
                        continue;
                    }
                    FilterPlan::Subscribe(grant) => grant,
                };
                // The decoded filter is a slice of the connection's read
                // buffer: kept in the session, it would keep the whole
                // buffer (8 KiB) alive for as long as the subscription.
                // Kept as long as the subscription: with the blocks idle
                // connections keep (`alloc_purge::Allocator`), as its
                // trie node and its entry in the session.
                let filter = alloc_purge::long_lived(|| ByteString::from(String::from(&*filter)));
                let entry = SubscriptionEntry {
                    options,
                    subscription_id,
                    shared_filter: grant.shared.then(|| Box::new(filter.clone())),
                };
                // [MQTT-3.8.4-3] a subscription to an existing filter replaces it
                let previous = alloc_purge::long_lived(|| {
                    router.subscribe(&filter, self.subscriber(), entry.clone())
                });
                let then = grant.on_subscribed(previous.is_none());
                if then.propose_route {
                    route_applied.extend(
                        self.state
                            .cluster()
                            .propose_applied(Proposal::AddRoute(filter.to_string())),
                    );
                }
                if then.send_retained {
                    self.state.retained().read().matches(&filter, |_, message| {
                        if !message.is_expired(now) {
                            retained.push((
                                message.clone(),
                                min(message.qos, options.qos),
                                subscription_id,
                            ));
                        }
                    });
                }
                if grant.store {
                    ops.push(storage::WriteOp::PutSubscription {
                        client_id: self.client_id().to_string(),
                        record: crate::records::to_record(&filter, &entry),
                    });
                }
                alloc_purge::long_lived(|| self.subscriptions.insert(filter, entry));
                reason_codes.push(grant.reason_code);
            }
        }
        if !ops.is_empty() {
            self.stored = true;
            self.update_record();
        }
        let durable = self.submit_durable(ops);
        let suback = Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            reason_codes,
            properties: AckProperties::default(),
        });
        if route_applied.is_empty() && durable.is_none() {
            self.send_suback(&suback, retained);
        } else {
            // In a cluster the SUBACK also waits until the other nodes route
            // matching messages here: a message published anywhere after
            // the SUBACK reaches the new subscription. The proposals end
            // (applied or failed) within the cluster's proposal timeout.
            let generation = self.generation();
            let applied = futures::future::join_all(route_applied);
            ctx.spawn(
                futures::future::join(applied, stored(durable))
                    .into_actor(self)
                    .map(move |(_, stored), session, ctx| {
                        if session.may_answer(generation, stored, "subscription", ctx) {
                            session.send_suback(&suback, retained);
                        }
                    }),
            );
        }
    }

    /// For a persistent session: submits `ops` (possibly none, to keep the
    /// answers in order) with a durability callback, and returns what the
    /// callback reports. `None` for a clean session, which stores nothing.
    fn submit_durable(
        &mut self,
        ops: Vec<storage::WriteOp>,
    ) -> Option<oneshot::Receiver<Durability>> {
        if !self.is_persistent() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.state.writer().submit(
            ops,
            Some(Box::new(move |result| {
                // The session may have ended: then nobody waits.
                let _ = tx.send(result.map_err(|e| e.to_string()));
            })),
        );
        Some(rx)
    }

    /// The generation of the current connection (0: offline).
    fn generation(&self) -> u64 {
        self.conn.as_ref().map_or(0, |c| c.generation)
    }

    /// True if the answer to a SUBSCRIBE or UNSUBSCRIBE of connection
    /// `generation` may go now: that connection is still the current one,
    /// and the change is on disk. If it could not be stored, the client is
    /// disconnected without an answer, so that it subscribes again.
    fn may_answer(
        &mut self,
        generation: u64,
        stored: Durability,
        what: &'static str,
        ctx: &mut Context<Self>,
    ) -> bool {
        if self.generation() != generation || self.conn.is_none() {
            return false;
        }
        match stored {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(client_id = %self.client_id(), error = %e, "{what} not stored: closing the connection unanswered");
                self.protocol_error(
                    SessionError::NotStored {
                        what,
                        reason: e.to_string(),
                    },
                    ctx,
                );
                false
            }
        }
    }

    /// Sends a SUBACK, then the retained messages the subscriptions get.
    fn send_suback(&mut self, suback: &Packet, retained: Vec<(Arc<Message>, QoS, Option<u32>)>) {
        self.send(suback);
        for (message, qos, subscription_id) in retained {
            // [MQTT-3.3.1-8] RETAIN is 1 on messages sent because of a new subscription
            self.enqueue(Deliver {
                message,
                qos,
                retain: true,
                subscription_ids: subscription_id.into_iter().collect(),
                shared_filter: None,
                ack: None,
                backpressure: Backpressure::Untracked,
                flow: None,
                span: tracing::Span::none(),
            });
        }
    }

    pub(super) fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe, ctx: &mut Context<Self>) {
        let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
        let mut ops = Vec::new();
        {
            let mut router = self.state.router().write();
            for filter in unsubscribe.filters {
                let existed = router.unsubscribe(&filter, &self.subscriber()).is_some();
                let plan = plan_unsubscription(existed, self.stored);
                if plan.withdraw_route {
                    self.propose(|_| Proposal::RemoveRoute(filter.to_string()));
                }
                self.subscriptions.remove(&filter);
                if plan.delete_stored {
                    ops.push(storage::WriteOp::DeleteSubscription {
                        client_id: self.client_id().to_string(),
                        filter: filter.to_string(),
                    });
                }
                reason_codes.push(plan.reason_code);
            }
        }
        if !ops.is_empty() {
            self.update_record();
        }
        let unsuback = Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            reason_codes: unsuback_reason_codes(self.protocol, reason_codes),
            properties: AckProperties::default(),
        });
        match self.submit_durable(ops) {
            None => self.send(&unsuback),
            Some(durable) => {
                // Answered once the deletes are on disk: a subscription the
                // client was told is gone does not come back after a crash.
                let generation = self.generation();
                ctx.spawn(stored(Some(durable)).into_actor(self).map(
                    move |stored, session, ctx| {
                        if session.may_answer(generation, stored, "unsubscription", ctx) {
                            session.send(&unsuback);
                        }
                    },
                ));
            }
        }
    }
}

/// What a durability callback reports: the write is on disk, or why not.
type Durability = Result<(), String>;

/// Waits for a durability callback's report (none to wait for: `Ok`).
async fn stored(durable: Option<oneshot::Receiver<Durability>>) -> Durability {
    match durable {
        None => Ok(()),
        // The writer calls every callback once; a dropped sender means it
        // is gone.
        Some(rx) => rx.await.unwrap_or_else(|_| Err("store closed".into())),
    }
}
