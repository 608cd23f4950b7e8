//! Startup: rebuilds the node's sessions and retained messages from the store
//! (the records are read into session state by `session::Restored`).
//!
//! Every stored session comes back as an offline session actor with its
//! subscriptions in the router, its queued and in-flight messages and its
//! received QoS 2 ids; sessions whose expiry passed while the broker was down
//! are deleted instead. A record that cannot be read (a corrupt store) is
//! logged and skipped, never a panic; the rest of the store still loads.

use std::sync::Arc;

use bytestring::ByteString;

use crate::message::{unix_ms, Message};
use crate::session::{Restored, Session};
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

/// Records which shared groups the stored copies of `restored` may have
/// come through (`crate::group_copies`).
fn remember_group_copies(state: &crate::state::BrokerState, now: u64, restored: &Restored) {
    let groups: Vec<&ByteString> = restored
        .subscriptions
        .iter()
        .filter_map(|(_, entry)| entry.shared_filter.as_deref())
        .collect();
    if groups.is_empty() {
        return;
    }
    for m in &restored.outgoing {
        state
            .group_copies()
            .add(now, m.message.uid, &m.message.topic, groups.iter().copied());
    }
}

/// Loads sessions and retained messages; call once, before listeners start.
pub fn restore(state: &State) -> storage::Result<Loaded> {
    let mut loaded = Loaded::default();
    let now = unix_ms();
    for (client_id, record) in state.store().load_sessions()? {
        if crate::session::core::expired_while_down(
            now,
            record.disconnected_at_ms,
            record.session_expiry_interval,
        ) {
            state
                .writer()
                .submit(vec![storage::WriteOp::DeleteSession { client_id }], None);
            loaded.expired_sessions += 1;
            continue;
        }
        let (restored, unreadable) =
            Restored::from_store(state.store(), state.limits(), &client_id, &record, now)?;
        loaded.messages += restored.outgoing.len();
        loaded.unreadable_records += unreadable;
        remember_group_copies(state, now, &restored);
        let client_id = ByteString::from(client_id);
        let session = Session::start_restored(
            state.clone(),
            client_id.clone(),
            restored,
            state.next_worker(),
        );
        state.registry().insert(session);
        loaded.sessions += 1;
    }
    let mut retained = state.retained().write();
    // In a cluster the replicated retained messages are the truth, loaded
    // with the replicated state (`clustering::load`): none come from here.
    for stored in state.cluster().load_retained(state.store())? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::BrokerState;

    fn durably(state: &BrokerState, ops: Vec<storage::WriteOp>) {
        let (tx, rx) = std::sync::mpsc::channel();
        state.writer().submit(
            ops,
            Some(Box::new(move |result| {
                let _ = tx.send(result);
            })),
        );
        rx.recv().unwrap().unwrap();
    }

    /// A session stored with a shared subscription and a QoS 2 copy that
    /// came through it, read back from a real store: the session knows the
    /// copy's id (not delivered again) and the node knows the group has its
    /// copy (`crate::group_copies`).
    #[test]
    fn stored_copies_come_back_with_their_ids_and_groups_issue_17() {
        let dir = tempfile::tempdir().unwrap();
        let state = BrokerState::for_tests(&dir.path().join("store"));
        let (_, entry) = crate::records::entry(
            "$share/g/a/#".into(),
            crate::codec::SubscriptionOptions {
                qos: crate::codec::QoS::ExactlyOnce,
                ..Default::default()
            },
            None,
        );
        let message = Message {
            topic: "a/x".into(),
            payload: bytes::Bytes::from_static(b"p"),
            qos: crate::codec::QoS::ExactlyOnce,
            retain: false,
            properties: Default::default(),
            expires_at_ms: None,
            origin: crate::message::BROKER_ORIGIN,
            received_at: None,
            uid: 42,
        };
        let client_id = "member-1".to_string();
        durably(
            &state,
            vec![
                storage::WriteOp::PutSession {
                    client_id: client_id.clone(),
                    record: storage::SessionRecord {
                        protocol_level: 5,
                        session_expiry_interval: 3600,
                        disconnected_at_ms: None,
                    },
                },
                storage::WriteOp::PutSubscription {
                    client_id: client_id.clone(),
                    record: crate::records::to_record("$share/g/a/#", &entry),
                },
                storage::WriteOp::PutOutgoing {
                    client_id: client_id.clone(),
                    seq: 1,
                    record: storage::OutgoingRecord {
                        released: false,
                        uid: message.uid,
                        message: message.to_stored(crate::codec::QoS::ExactlyOnce, false, &[]),
                    },
                },
            ],
        );
        let now = unix_ms();
        let (record_id, record) = state.store().load_sessions().unwrap().remove(0);
        assert_eq!(record_id, client_id);
        let (restored, unreadable) =
            Restored::from_store(state.store(), state.limits(), &client_id, &record, now).unwrap();
        assert_eq!(unreadable, 0);
        assert_eq!(restored.outgoing[0].message.uid, 42);
        assert_eq!(restored.recent_uids, [42]);

        assert!(!state.group_copies().contains(42, "$share/g/a/#"));
        remember_group_copies(&state, now, &restored);
        assert!(state.group_copies().contains(42, "$share/g/a/#"));
        assert!(!state.group_copies().contains(42, "$share/other/a/#"));
    }
}
