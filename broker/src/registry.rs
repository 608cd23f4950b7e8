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
//!
//! The table holds the sessions alone, each found by the client id its
//! handle carries: a map keyed by a copy of the id cost a connection about
//! 70 B more (the key, and the header `bytes` adds to an id it shares).

use std::collections::HashMap;
use std::hash::BuildHasher;

use bytestring::ByteString;
use hashbrown::HashTable;
use parking_lot::Mutex;

use crate::handle::SessionRef;

#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashTable<SessionRef>>,
    /// Hashes client ids, which clients choose: SipHash, randomly keyed.
    hasher: std::hash::RandomState,
    /// Sessions that moved to another node and still forward there what
    /// arrives for them (by session id), with that node; out of `sessions`.
    moved: Mutex<HashMap<u64, (SessionRef, u64)>>,
    /// Copies those are forwarding now.
    forwarding: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sessions", &self.len())
            .field("moved", &self.moved.lock().len())
            .finish()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    fn hash(&self, client_id: &str) -> u64 {
        self.hasher.hash_one(client_id)
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
            .filter(|(s, _)| s.client_id() == client_id)
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
        let sessions = self.sessions.lock();
        sessions
            .find(self.hash(client_id), |s| s.client_id() == client_id)
            .cloned()
    }

    /// The running session of `client_id`, or the one `start` creates
    /// (replacing an entry whose actor has stopped); `start` must give a
    /// session of `client_id`.
    pub fn find_or_start(&self, client_id: &str, start: impl FnOnce() -> SessionRef) -> SessionRef {
        let hash = self.hash(client_id);
        let mut sessions = self.sessions.lock();
        let entry = sessions.entry(
            hash,
            |s| s.client_id() == client_id,
            |s| self.hash(s.client_id()),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                if o.get().is_alive() {
                    return o.get().clone();
                }
                let session = start();
                debug_assert_eq!(session.client_id(), client_id);
                *o.get_mut() = session.clone();
                session
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                let session = start();
                debug_assert_eq!(session.client_id(), client_id);
                v.insert(session.clone());
                session
            }
        }
    }

    /// Adds a session started outside [`find_or_start`](Self::find_or_start)
    /// (a stored session at startup), replacing any of its client id.
    pub fn insert(&self, session: SessionRef) {
        self.put(session, true);
    }

    /// Adds `session` unless its client id has a running session; true if
    /// added.
    pub fn insert_if_absent(&self, session: SessionRef) -> bool {
        self.put(session, false)
    }

    /// Adds `session`, replacing the entry of its client id if there is
    /// one, unless that entry's session runs and `over_running` is false;
    /// true if added.
    fn put(&self, session: SessionRef, over_running: bool) -> bool {
        let hash = self.hash(session.client_id());
        let mut sessions = self.sessions.lock();
        match sessions.entry(
            hash,
            |s| s.client_id() == session.client_id(),
            |s| self.hash(s.client_id()),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                if !over_running && o.get().is_alive() {
                    return false;
                }
                *o.get_mut() = session;
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(session);
            }
        }
        true
    }

    /// Removes `client_id`'s entry if it is still `session`; true if it was.
    pub fn remove_if_same(&self, client_id: &str, session: &SessionRef) -> bool {
        let mut sessions = self.sessions.lock();
        match sessions.find_entry(self.hash(client_id), |s| s.client_id() == client_id) {
            Ok(o) if o.get() == session => {
                o.remove();
                true
            }
            _ => false,
        }
    }

    /// Every session with its client id, in no order, copied out of the lock.
    pub fn snapshot(&self) -> Vec<(ByteString, SessionRef)> {
        let sessions = self.sessions.lock();
        sessions
            .iter()
            .map(|s| (ByteString::from(s.client_id()), s.clone()))
            .collect()
    }

    /// Calls `f` for every session under the lock: `f` must not send to a
    /// session or take another of the broker's locks.
    pub fn for_each(&self, mut f: impl FnMut(&SessionRef)) {
        for session in self.sessions.lock().iter() {
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
