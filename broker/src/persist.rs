//! Startup: rebuilds the node's sessions and retained messages from the store.
//!
//! Every stored session comes back as an offline session actor with its
//! subscriptions in the router, its queued and in-flight messages and its
//! received QoS 2 ids; sessions whose expiry passed while the broker was down
//! are deleted instead. A record that cannot be read (a corrupt store) is
//! logged and skipped, never a panic; the rest of the store still loads.

use std::sync::Arc;

use bytestring::ByteString;

use crate::codec::{QoS, RetainHandling, SubscriptionOptions};
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
            protocol: match record.protocol_level {
                3 => Some(crate::codec::ProtocolVersion::V31),
                5 => Some(crate::codec::ProtocolVersion::V5),
                _ => Some(crate::codec::ProtocolVersion::V311),
            },
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
            restored.subscriptions.push((
                ByteString::from(sub.filter),
                SubscriptionEntry {
                    options: SubscriptionOptions {
                        qos,
                        no_local: sub.no_local,
                        retain_as_published: sub.retain_as_published,
                        retain_handling: retain_handling(sub.retain_handling),
                    },
                    subscription_id: sub.subscription_identifier,
                },
            ));
        }
        for (seq, out) in state.store.load_outgoing(&client_id)? {
            let qos = QoS::from_u8(out.message.qos);
            let retain = out.message.retain;
            match (qos, Message::from_stored(out.message)) {
                (Some(qos), Ok((message, subscription_ids))) if qos > QoS::AtMostOnce => {
                    let charge = state
                        .limits
                        .charge((message.topic.len() + message.payload.len()) as u64);
                    restored.outgoing.push(OutMsg {
                        seq,
                        qos,
                        retain,
                        message: Arc::new(message),
                        subscription_ids,
                        state: if out.released {
                            OutState::Released
                        } else {
                            OutState::Queued
                        },
                        durable: true,
                        charge,
                    });
                    loaded.messages += 1;
                }
                _ => {
                    tracing::error!(%client_id, seq, "unreadable queued message skipped");
                    loaded.unreadable_records += 1;
                }
            }
        }
        restored.incoming_qos2 = state.store.load_incoming_qos2(&client_id)?;
        let client_id = ByteString::from(client_id);
        let addr = Session::start_restored(
            state.clone(),
            client_id.clone(),
            restored,
            state.next_worker(),
        );
        state.registry.lock().insert(client_id, addr);
        loaded.sessions += 1;
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
