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
        let client_id = ByteString::from(client_id);
        let session = Session::start_restored(
            state.clone(),
            client_id.clone(),
            restored,
            state.next_worker(),
        );
        state.registry().insert(client_id, session);
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
