//! Startup: rebuilds the node's sessions and retained messages from the store.
//!
//! Every stored session comes back as an offline session actor with its
//! subscriptions in the router, its queued and in-flight messages and its
//! received QoS 2 ids; sessions whose expiry passed while the broker was down
//! are deleted instead. A record that cannot be read (a corrupt store) is
//! logged and skipped, never a panic; the rest of the store still loads.

use std::sync::Arc;

use bytestring::ByteString;

use crate::codec::topic::split_shared;
use crate::codec::{ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
use crate::limits::Limits;
use crate::message::{unix_ms, Message};
use crate::session::outgoing::{OutMsg, OutState};
use crate::session::{Restored, Session, SubscriptionEntry};
use crate::state::State;

/// What was loaded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub sessions: usize,
    pub expired_sessions: usize,
    pub messages: usize,
    pub retained: usize,
    pub unreadable_records: usize,
}

fn retain_handling(value: u8) -> RetainHandling {
    match value {
        1 => RetainHandling::SendAtSubscribeIfNew,
        2 => RetainHandling::DoNotSend,
        _ => RetainHandling::SendAtSubscribe,
    }
}

fn protocol_of(level: u8) -> ProtocolVersion {
    match level {
        3 => ProtocolVersion::V31,
        5 => ProtocolVersion::V5,
        _ => ProtocolVersion::V311,
    }
}

fn subscription(
    filter: String,
    options: SubscriptionOptions,
    subscription_id: Option<u32>,
) -> (ByteString, SubscriptionEntry) {
    let shared = matches!(split_shared(&filter), Ok(Some(_)));
    let filter = ByteString::from(filter);
    (
        filter.clone(),
        SubscriptionEntry {
            options,
            subscription_id,
            shared_filter: shared.then_some(filter),
        },
    )
}

/// A stored queued / in-flight message, counted against `limits`; `None`
/// if it cannot be read.
fn out_msg(limits: &Limits, seq: u64, out: storage::OutgoingRecord) -> Option<OutMsg> {
    let qos = QoS::from_u8(out.message.qos).filter(|q| *q > QoS::AtMostOnce)?;
    let retain = out.message.retain;
    let (message, subscription_ids) = Message::from_stored(out.message).ok()?;
    let charge = limits.charge((message.topic.len() + message.payload.len()) as u64);
    Some(OutMsg {
        charge,
        seq,
        qos,
        retain,
        message: Arc::new(message),
        subscription_ids,
        shared_filter: None,
        state: if out.released {
            OutState::Released
        } else {
            OutState::Queued
        },
        durable: true,
        hold: None,
    })
}

/// A session as the replicated state knows it (subscriptions and expiry,
/// no messages): what a node resumes when the session's owner is down.
pub fn from_cluster_info(info: &cluster::SessionInfo) -> Restored {
    let mut restored = Restored {
        protocol: None,
        session_expiry_interval: info.session_expiry_interval,
        disconnected_at_ms: info.disconnected_at_ms,
        ..Default::default()
    };
    for sub in &info.subscriptions {
        match crate::clustering::decode_options(&sub.options) {
            Some((options, id)) => {
                restored
                    .subscriptions
                    .push(subscription(sub.filter.clone(), options, id))
            }
            None => {
                tracing::error!(filter = %sub.filter, "unreadable replicated subscription skipped")
            }
        }
    }
    restored
}

/// A session handed over by its previous owner.
pub fn from_cluster_state(limits: &Limits, state: cluster::SessionState) -> Restored {
    let mut restored = from_cluster_info(&state.info);
    restored.protocol = Some(protocol_of(state.protocol_level));
    restored.outgoing = state
        .outgoing
        .into_iter()
        .filter_map(|(seq, out)| out_msg(limits, seq, out))
        .collect();
    restored.incoming_qos2 = state.incoming_qos2;
    restored
}

/// Loads sessions and retained messages; call once, before listeners start.
pub fn restore(state: &State) -> storage::Result<Loaded> {
    let mut loaded = Loaded::default();
    let now = unix_ms();
    for (client_id, record) in state.store.load_sessions()? {
        let expired = record.session_expiry_interval != u32::MAX
            && record.disconnected_at_ms.is_some_and(|at| {
                now >= at.saturating_add(u64::from(record.session_expiry_interval) * 1000)
            });
        if expired || record.session_expiry_interval == 0 {
            state
                .writer
                .submit(vec![storage::WriteOp::DeleteSession { client_id }], None);
            loaded.expired_sessions += 1;
            continue;
        }
        let mut restored = Restored {
            protocol: Some(protocol_of(record.protocol_level)),
            session_expiry_interval: record.session_expiry_interval,
            // A session that was connected when the broker stopped went
            // offline then.
            disconnected_at_ms: Some(record.disconnected_at_ms.unwrap_or(now)),
            ..Default::default()
        };
        for sub in state.store.load_subscriptions(&client_id)? {
            let Some(qos) = QoS::from_u8(sub.qos) else {
                loaded.unreadable_records += 1;
                continue;
            };
            let options = SubscriptionOptions {
                qos,
                no_local: sub.no_local,
                retain_as_published: sub.retain_as_published,
                retain_handling: retain_handling(sub.retain_handling),
            };
            restored.subscriptions.push(subscription(
                sub.filter,
                options,
                sub.subscription_identifier,
            ));
        }
        for (seq, out) in state.store.load_outgoing(&client_id)? {
            match out_msg(&state.limits, seq, out) {
                Some(m) => {
                    restored.outgoing.push(m);
                    loaded.messages += 1;
                }
                None => {
                    tracing::error!(%client_id, seq, "unreadable queued message skipped");
                    loaded.unreadable_records += 1;
                }
            }
        }
        restored.incoming_qos2 = state.store.load_incoming_qos2(&client_id)?;
        let client_id = ByteString::from(client_id);
        let session = Session::start_restored(
            state.clone(),
            client_id.clone(),
            restored,
            state.next_worker(),
        );
        state.registry.lock().insert(client_id, session);
        loaded.sessions += 1;
    }
    if state.cluster.is_some() {
        // In a cluster the replicated retained messages are the truth.
        return Ok(loaded);
    }
    let mut retained = state.retained.write();
    for stored in state.store.load_retained()? {
        let topic = stored.topic.clone();
        match Message::from_stored(stored) {
            Ok((message, _)) if !message.is_expired(now) => {
                retained.insert(&topic, Arc::new(message));
                loaded.retained += 1;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(%topic, error = %e, "unreadable retained message skipped");
                loaded.unreadable_records += 1;
            }
        }
    }
    Ok(loaded)
}
