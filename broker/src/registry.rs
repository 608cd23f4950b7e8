//! The sessions of one node by client id, online or not: the one map every
//! path that finds, starts or ends a session goes through.
//!
//! A session's entry is added when its actor starts (a new client id at
//! CONNECT, or a stored session at startup) and removed by the session
//! itself when it ends, only if the entry is still that session
//! ([`Registry::remove_if_same`]): a new session for the same client id may
//! have replaced it meanwhile.
//!
//! Lock: one mutex, held for one map operation only, never across an
//! `.await` or while sending to a session (lock order in `crate::state`).

use std::collections::HashMap;

use bytestring::ByteString;
use parking_lot::Mutex;

use crate::handle::SessionRef;

#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<ByteString, SessionRef>>,
    /// Sessions that moved to another node and still forward there what
    /// arrives for them (by session id), with that node; out of `sessions`.
    moved: Mutex<HashMap<u64, (SessionRef, u64)>>,
    /// Copies those are forwarding now.
    forwarding: std::sync::atomic::AtomicUsize,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// `session` moved to node `owner` and forwards there for a while.
    pub fn add_moved(&self, session: SessionRef, owner: u64) {
        self.moved.lock().insert(session.0.id, (session, owner));
    }

    /// `session` stopped forwarding.
    pub fn remove_moved(&self, session: &SessionRef) {
        self.moved.lock().remove(&session.0.id);
    }

    /// Sessions that moved and still forward.
    pub fn moved(&self) -> Vec<SessionRef> {
        self.moved.lock().values().map(|(s, _)| s.clone()).collect()
    }

    /// The node this node last handed `client_id`'s session to, while that
    /// session still forwards from here (`MOVED_FORWARDS_FOR`, 20 s).
    pub fn handed_to(&self, client_id: &str) -> Option<u64> {
        self.latest_moved(client_id).map(|(_, owner)| owner)
    }

    /// The latest session of `client_id` that moved from here and still
    /// forwards (it may keep the session: `Input::Revive`).
    pub fn moved_for(&self, client_id: &str) -> Option<SessionRef> {
        self.latest_moved(client_id).map(|(session, _)| session)
    }

    /// The latest session of `client_id` that moved from here and still
    /// forwards, with the node it went to (it may keep the session until
    /// that node's claim is in).
    pub fn latest_moved(&self, client_id: &str) -> Option<(SessionRef, u64)> {
        self.moved
            .lock()
            .values()
            .filter(|(s, _)| s.0.client_id == client_id)
            .max_by_key(|(s, _)| s.0.id)
            .cloned()
    }

    /// Counts copies being forwarded for moved sessions (a drain waits
    /// until none is left).
    pub fn forwarding(&self) -> &std::sync::atomic::AtomicUsize {
        &self.forwarding
    }

    /// The session of `client_id`, if it has one.
    pub fn get(&self, client_id: &str) -> Option<SessionRef> {
        self.sessions.lock().get(client_id).cloned()
    }

    /// The running session of `client_id`, or the one `start` creates
    /// (replacing an entry whose actor has stopped).
    pub fn find_or_start(
        &self,
        client_id: &ByteString,
        start: impl FnOnce() -> SessionRef,
    ) -> SessionRef {
        let mut sessions = self.sessions.lock();
        match sessions.get(client_id) {
            Some(session) if session.is_alive() => session.clone(),
            _ => {
                let session = start();
                sessions.insert(client_id.clone(), session.clone());
                session
            }
        }
    }

    /// Adds a session started outside [`find_or_start`](Self::find_or_start)
    /// (a stored session at startup).
    pub fn insert(&self, client_id: ByteString, session: SessionRef) {
        self.sessions.lock().insert(client_id, session);
    }

    /// Adds `session` unless `client_id` has a running session; true if added.
    pub fn insert_if_absent(&self, client_id: ByteString, session: SessionRef) -> bool {
        let mut sessions = self.sessions.lock();
        if sessions.get(&client_id).is_some_and(|s| s.is_alive()) {
            return false;
        }
        sessions.insert(client_id, session);
        true
    }

    /// Removes `client_id`'s entry if it is still `session`; true if it was.
    pub fn remove_if_same(&self, client_id: &str, session: &SessionRef) -> bool {
        let mut sessions = self.sessions.lock();
        if sessions.get(client_id) == Some(session) {
            sessions.remove(client_id);
            true
        } else {
            false
        }
    }

    /// Every session with its client id, in no order, copied out of the lock.
    pub fn snapshot(&self) -> Vec<(ByteString, SessionRef)> {
        let sessions = self.sessions.lock();
        sessions
            .iter()
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect()
    }

    /// Calls `f` for every session under the lock: `f` must not send to a
    /// session or take another of the broker's locks.
    pub fn for_each(&self, mut f: impl FnMut(&SessionRef)) {
        for session in self.sessions.lock().values() {
            f(session);
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.lock().is_empty()
    }
}
