//! SUBSCRIBE and UNSUBSCRIBE (3.1.1 sections 3.8-3.11; 5.0 sections 3.8-3.11,
//! 4.8.2 for shared subscriptions).
//!
//! A subscription goes to the router and, for a persistent session, to the
//! store. Retained messages matching a new subscription follow its SUBACK
//! [MQTT-3.8.4-4], subject to 5.0 Retain Handling; shared subscriptions get no
//! retained messages (5.0 section 4.8.2).

use std::cmp::min;
use std::sync::Arc;

use actix::prelude::*;

use super::{Backpressure, Deliver, Session, SubscriptionEntry};
use crate::clustering::Proposal;
use crate::codec::topic::split_shared;
use crate::codec::{
    AckProperties, Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck,
    Unsubscribe,
};
use crate::message::{unix_ms, Message};

/// The SUBACK code granting `qos`.
fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

impl Session {
    pub(super) fn handle_subscribe(&mut self, subscribe: Subscribe, ctx: &mut Context<Self>) {
        let v5 = self.protocol.is_v5();
        for (filter, options) in &subscribe.filters {
            // 5.0 [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error
            if v5 && options.no_local && matches!(split_shared(filter), Ok(Some(_))) {
                return self.protocol_error(
                    ReasonCode::ProtocolError,
                    format!("No Local set on shared subscription `{filter}`"),
                    ctx,
                );
            }
        }
        // topic limits and ACL, per filter (session/guard.rs)
        let refusals: Vec<Option<ReasonCode>> = subscribe
            .filters
            .iter()
            .map(|(filter, _)| self.subscribe_refusal(filter))
            .collect();
        let subscription_id = subscribe.properties.subscription_identifier;
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        let mut ops = Vec::new();
        let mut retained: Vec<(Arc<Message>, QoS, Option<u32>)> = Vec::new();
        // In a cluster: the new routes, answered once applied on this node
        let mut route_applied = Vec::new();
        let now = unix_ms();
        {
            let mut router = self.state.router.write();
            for ((filter, options), refusal) in subscribe.filters.into_iter().zip(refusals) {
                if let Some(code) = refusal {
                    reason_codes.push(code);
                    continue;
                }
                let shared = matches!(split_shared(&filter), Ok(Some(_)));
                let entry = SubscriptionEntry {
                    options,
                    subscription_id,
                    shared_filter: shared.then(|| filter.clone()),
                };
                // [MQTT-3.8.4-3] a subscription to an existing filter replaces it
                let previous = router.subscribe(&filter, self.subscriber(), entry.clone());
                if previous.is_none() {
                    if let Some(cluster) = &self.state.cluster {
                        route_applied
                            .push(cluster.propose_applied(Proposal::AddRoute(filter.to_string())));
                    }
                }
                let send_retained = !shared
                    && match options.retain_handling {
                        RetainHandling::SendAtSubscribe => true,
                        RetainHandling::SendAtSubscribeIfNew => previous.is_none(),
                        RetainHandling::DoNotSend => false,
                    };
                if send_retained {
                    self.state.retained.read().matches(&filter, |_, message| {
                        if !message.is_expired(now) {
                            retained.push((
                                message.clone(),
                                min(message.qos, options.qos),
                                subscription_id,
                            ));
                        }
                    });
                }
                if self.is_persistent() {
                    ops.push(storage::WriteOp::PutSubscription {
                        client_id: self.client_id().to_string(),
                        record: storage::SubscriptionRecord {
                            filter: filter.to_string(),
                            qos: options.qos as u8,
                            no_local: options.no_local,
                            retain_as_published: options.retain_as_published,
                            retain_handling: options.retain_handling as u8,
                            subscription_identifier: subscription_id,
                        },
                    });
                }
                self.subscriptions.insert(filter, entry);
                reason_codes.push(granted(options.qos));
            }
        }
        if !ops.is_empty() {
            self.stored = true;
            self.state.writer.submit(ops, None);
            self.update_record();
        }
        let suback = Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            reason_codes,
            properties: AckProperties::default(),
        });
        if route_applied.is_empty() {
            self.send_suback(&suback, retained);
        } else {
            // In a cluster the SUBACK waits until the other nodes route
            // matching messages here: a message published anywhere after
            // the SUBACK reaches the new subscription. The proposals end
            // (applied or failed) within the cluster's proposal timeout.
            let applied = futures::future::join_all(route_applied);
            ctx.spawn(
                applied
                    .into_actor(self)
                    .map(move |_, session, _| session.send_suback(&suback, retained)),
            );
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
                span: tracing::Span::none(),
            });
        }
    }

    pub(super) fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
        let mut ops = Vec::new();
        {
            let mut router = self.state.router.write();
            for filter in unsubscribe.filters {
                let existed = router.unsubscribe(&filter, &self.subscriber()).is_some();
                if existed {
                    self.propose(|_| Proposal::RemoveRoute(filter.to_string()));
                }
                self.subscriptions.remove(&filter);
                if existed && self.stored {
                    ops.push(storage::WriteOp::DeleteSubscription {
                        client_id: self.client_id().to_string(),
                        filter: filter.to_string(),
                    });
                }
                reason_codes.push(if existed {
                    ReasonCode::Success
                } else {
                    ReasonCode::NoSubscriptionExisted
                });
            }
        }
        if !ops.is_empty() {
            self.state.writer.submit(ops, None);
            self.update_record();
        }
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            reason_codes: if self.protocol.is_v5() {
                reason_codes
            } else {
                Vec::new()
            },
            properties: AckProperties::default(),
        }));
    }
}
