//! Topic-filter trie: which subscriptions match a topic name.
//!
//! This module owns [`SubscriptionTable`], a map from topic filters to
//! subscribers that answers "who gets a PUBLISH to this topic". It is generic
//! over the subscriber's identity `K` and the subscription's data `V`: the
//! broker keys it by session, the cluster by node id. It never touches
//! sessions, sockets or the clock, never validates filters (the codec does,
//! with [`crate::codec::topic`]) and never merges the deliveries of
//! overlapping filters (the caller does, 3.1.1 section 3.3.5, 5.0 section
//! 3.3.4).
//!
//! Specifications: topic matching, 3.1.1 and 5.0 section 4.7 (see the note in
//! [`crate::codec::topic`], whose [`matches`](crate::codec::topic::matches)
//! this table agrees with); shared subscriptions, 5.0 section 4.8.2.
//!
//! # Design
//!
//! A trie over topic levels, as nats-server's `sublist.go` and mosquitto's
//! `subs.c`: each node has its literal children by level, a dedicated `+`
//! child, and the subscribers of the filters that end at it, with those that
//! end in `#` kept apart. Matching a topic walks its levels once, following
//! the literal child and, where there is one, the `+` child, so its cost
//! grows with the depth of the topic and the number of `+` branches that
//! match it, not with the number of subscriptions. Topics are split lazily,
//! so matching allocates nothing per level. Nodes left empty by an
//! unsubscribe are removed. There is no match cache: the walk is a few
//! lookups per level, and a cache would need a lock of its own on the read
//! path and invalidation on every subscribe.
//!
//! Plain and shared filters live in two tries of the same shape; publishing
//! to a topic nobody shares costs the shared trie one root lookup.
//!
//! The layout is tuned for the cache: a node's children sit in a vector
//! searched in order, and past 8 in a hash map (foldhash); levels of up to
//! 22 bytes are stored inside the child entry; the subscribers of a filter
//! sit in one vector, indexed by key past 16 of them, except a filter's
//! only subscriber, held in its node; a node's `#` subscribers are boxed,
//! and only while there are some. `benches/router.rs`
//! measures it; the commit log has the numbers that chose it.
//!
//! # Shared subscriptions
//!
//! `$share/{group}/{filter}` is stored at `filter`, in group `group`. Each
//! (group, filter) pair is one shared subscription (5.0 section 4.8.2): a
//! message matching it goes to one of its members, so a group with two
//! filters matching a topic delivers twice, once per filter, as plain
//! overlapping filters do. [`SubscriptionTable::match_shared`] picks the
//! member:
//!
//! - round robin: a per-(group, filter) atomic cursor walks the members in
//!   order, each message starting at the next one;
//! - among the members the caller's `available` predicate accepts (online
//!   sessions, say); members it rejects are skipped and the cursor moves past
//!   the chosen one, so every available member gets the same share;
//! - if no member is available, the member whose turn it is, so the message
//!   is queued in an offline session rather than lost.
//!
//! Member order is the order of subscription, except that an unsubscribe
//! moves the last member into the leaver's place.
//!
//! # Locking
//!
//! The table has no lock of its own. The broker wraps it in a
//! `parking_lot::RwLock`: publishes take the read lock and call
//! [`matches`](SubscriptionTable::matches) and
//! [`match_shared`](SubscriptionTable::match_shared), which take `&self`
//! (the shared cursors are atomics, so picking needs no write access);
//! SUBSCRIBE and UNSUBSCRIBE take the write lock. The callbacks run with the
//! lock held: they should copy what they need (a session address, the
//! subscription options) and send after the lock is released.
//!
//! # Known issues
//!
//! - Filters are not validated here; an invalid one is stored and matches
//!   whatever its levels spell (`a/#/b` treats the `#` as a literal level).
//! - Nothing limits depth: the trie does not recurse, so 32,768-level topics
//!   are safe, but each level of a filter is a node. The broker may cap the
//!   number of levels, as mosquitto does (200).
//! - Levels and keys are hashed with foldhash, randomly seeded per process
//!   and per table. It is fast but only "minimally DoS-resistant" in its
//!   authors' words: a client able to learn the seed (by timing its own
//!   SUBSCRIBEs, say) could craft levels that collide under one node and make
//!   lookups there scan. SipHash would close that for about 20 ns per hashed
//!   level.
//! - Every shared pick increments its group's cursor, one cache line written
//!   by every publishing thread: under two threads the shared-match bench
//!   costs more per match than under one. Per-thread cursors would fix it at
//!   the cost of strict round robin.
//! - No match cache (see Design). Matching a topic with many `+` branches
//!   walks each; a cache keyed by topic name, as nats-server's, would help
//!   workloads that publish to few topics very often.

pub(crate) mod children;
mod subscribers;
mod trie;

use std::fmt;
use std::hash::Hash;

use crate::codec::topic;
use subscribers::{Groups, Subscribers};
use trie::{Payload, Trie};

impl<K, V> Payload for Subscribers<K, V> {
    fn is_empty(&self) -> bool {
        Subscribers::is_empty(self)
    }
}

impl<K, V> Payload for Groups<K, V> {
    fn is_empty(&self) -> bool {
        Groups::is_empty(self)
    }
}

/// Subscriptions by topic filter, for matching topic names to subscribers.
///
/// `K` identifies a subscriber (a session, a cluster node); `V` is the
/// subscription's data (options, subscription identifier). A key has at most
/// one subscription per filter; two keys on one filter are two entries.
/// Read-mostly: wrap it in a `parking_lot::RwLock`, match under the read
/// lock, subscribe and unsubscribe under the write lock (see the
/// [module documentation](self)).
pub struct SubscriptionTable<K, V> {
    plain: Trie<Subscribers<K, V>>,
    shared: Trie<Groups<K, V>>,
    /// Subscriptions in both tries.
    len: usize,
}

impl<K: Clone + Eq + Hash, V> Default for SubscriptionTable<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for SubscriptionTable<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTable")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<K: Clone + Eq + Hash, V> SubscriptionTable<K, V> {
    pub fn new() -> Self {
        SubscriptionTable {
            plain: Trie::default(),
            shared: Trie::default(),
            len: 0,
        }
    }

    /// Subscribes `key` to `filter` with `value`, replacing the value of an
    /// existing subscription of `key` to `filter` and returning it.
    ///
    /// `filter` has been validated. A shared filter `$share/{group}/{f}` is
    /// stored in group `group` at `f`.
    pub fn subscribe(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let previous = match shared(filter) {
            Some((group, filter)) => self.shared.payload_mut(filter).insert(group, key, value),
            None => self.plain.payload_mut(filter).insert(key, value),
        };
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes the subscription of `key` to `filter` and returns its value.
    /// Nodes left empty are removed.
    pub fn unsubscribe(&mut self, filter: &str, key: &K) -> Option<V> {
        let removed = match shared(filter) {
            Some((group, filter)) => self.shared.update(filter, |g| g.remove(group, key)),
            None => self.plain.update(filter, |s| s.remove(key)),
        }
        .flatten();
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Calls `visit(key, value)` for every plain (not shared) subscription
    /// whose filter matches the topic name `topic`: once per matching
    /// (filter, key) pair, so a key with overlapping filters is visited once
    /// per filter and the caller merges. Order is unspecified.
    ///
    /// [MQTT-4.7.2-1] a topic starting with `$` is not matched by a filter
    /// starting with `+` or `#`.
    pub fn matches<'a>(&'a self, topic: &str, mut visit: impl FnMut(&'a K, &'a V)) {
        self.plain.for_each_match(topic, |subscribers| {
            for (key, value) in subscribers.entries() {
                visit(key, value);
            }
        });
    }

    /// Picks one member of every shared subscription whose filter matches the
    /// topic name `topic`, and calls `visit(group, key, value)` with it: once
    /// per matching (group, filter) pair.
    ///
    /// Members are taken in round-robin order, skipping those for which
    /// `available(key, value)` is false; if none is available, the member
    /// whose turn it is is picked anyway (see the
    /// [module documentation](self#shared-subscriptions)). Takes `&self`: the
    /// cursors are atomics, so this runs under a read lock.
    pub fn match_shared<'a>(
        &'a self,
        topic: &str,
        mut available: impl FnMut(&K, &V) -> bool,
        mut visit: impl FnMut(&'a str, &'a K, &'a V),
    ) {
        self.shared.for_each_match(topic, |groups| {
            for group in groups.iter() {
                if let Some((key, value)) = group.pick(&mut available) {
                    visit(&group.name, key, value);
                }
            }
        });
    }

    /// Picks one member of the shared subscription `shared_filter`
    /// (`$share/{group}/{filter}`), as [`match_shared`](Self::match_shared)
    /// does for one group: to hand a message over to another member when the
    /// one it was given to goes away. `None` if the group has no member (or
    /// `shared_filter` is not shared).
    pub fn pick_shared(
        &self,
        shared_filter: &str,
        available: impl FnMut(&K, &V) -> bool,
    ) -> Option<(&K, &V)> {
        let (group, filter) = shared(shared_filter)?;
        let (key, value) = self.shared.get(filter)?.get(group)?.pick(available)?;
        Some((key, value))
    }

    /// Number of subscriptions, plain and shared.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of trie nodes, for tests of pruning.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.plain.node_count() + self.shared.node_count()
    }
}

/// The group and inner filter of a shared filter. An invalid shared filter
/// (`$share/g`) is treated as a plain one: the caller validates filters.
fn shared(filter: &str) -> Option<(&str, &str)> {
    topic::split_shared(filter).ok().flatten()
}

#[cfg(test)]
mod tests;
