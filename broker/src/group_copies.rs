//! The shared-group copies this node had stored when it last started, so
//! that a group copy another node forwards again after a restart is not
//! given to a second member.
//!
//! Another node forwards a group's copy here (`fanout::Scope::Local`) and
//! resends it until this node acknowledges it (`cluster/src/forward.rs`);
//! the receiving side remembers what it answered in memory only. When this
//! node stores the copy for member M and is killed before its
//! acknowledgement leaves, the copy comes again once the node is back, and
//! a new pick could give it to another member — whose session may be
//! restored here and hand it to its owner: two members with one QoS 2
//! message (chaos seeds 5 and 7). Stored copies keep the message's uid
//! (`storage::OutgoingRecord::uid`), so at startup `restore` records, for
//! each restored copy of a session with shared subscriptions, the groups it
//! may have come through (those whose filter matches its topic). A
//! forwarded copy found here for its group is with a member already (who
//! keeps it when its session moves to another node) and is acknowledged
//! without a second pick.
//!
//! Bounded: entries come only from the store at startup (at most the
//! restored queued messages) and are all dropped [`KEEP_MS`] after it.
//! Links resend within seconds of reconnecting; a peer cut off from this
//! node for longer than that may still resend, and then a copy can reach a
//! second member (between nodes the guarantee is at least once).

use std::collections::HashMap;

use bytestring::ByteString;
use parking_lot::RwLock;
use smallvec::SmallVec;

use crate::codec::topic;

/// How long after startup the restored copies are remembered (10 minutes).
pub const KEEP_MS: u64 = 10 * 60 * 1000;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct GroupCopies {
    inner: RwLock<Option<Restored>>,
}

#[derive(Debug)]
struct Restored {
    /// Unix ms after which everything is forgotten.
    until_ms: u64,
    /// Message uid -> the shared filters (`$share/{group}/{filter}`) of the
    /// sessions that hold a stored copy of it.
    copies: HashMap<u64, SmallVec<[ByteString; 1]>>,
}

impl GroupCopies {
    /// Records a restored copy (`uid`, on `topic`) of a session with the
    /// shared subscriptions `shared_filters`; the groups whose filter
    /// matches `topic` are those it may have come through. Uid 0 (unknown:
    /// stored by an older build) is not recorded.
    pub fn add<'a>(
        &self,
        now_ms: u64,
        uid: u64,
        topic: &str,
        shared_filters: impl IntoIterator<Item = &'a ByteString>,
    ) {
        if uid == 0 {
            return;
        }
        let mut groups: SmallVec<[ByteString; 1]> = shared_filters
            .into_iter()
            .filter(|f| matches!(topic::split_shared(f), Ok(Some((_, inner))) if topic::matches(inner, topic)))
            .cloned()
            .collect();
        if groups.is_empty() {
            return;
        }
        let mut inner = self.inner.write();
        let restored = inner.get_or_insert_with(|| Restored {
            until_ms: now_ms + KEEP_MS,
            copies: HashMap::new(),
        });
        let entry = restored.copies.entry(uid).or_default();
        groups.retain(|g| !entry.contains(g));
        entry.extend(groups);
    }

    /// True if a copy of message `uid` for the group `shared_filter` was
    /// stored here before the node started. Reads the clock only while
    /// there is something to remember.
    pub fn contains(&self, uid: u64, shared_filter: &str) -> bool {
        if uid == 0 || self.inner.read().is_none() {
            return false;
        }
        self.contains_at(crate::message::unix_ms(), uid, shared_filter)
    }

    /// [`contains`](Self::contains) at `now_ms`; forgets everything once
    /// [`KEEP_MS`] have passed since startup.
    pub fn contains_at(&self, now_ms: u64, uid: u64, shared_filter: &str) -> bool {
        {
            let inner = self.inner.read();
            match &*inner {
                None => return false,
                Some(r) if now_ms < r.until_ms => {
                    return r
                        .copies
                        .get(&uid)
                        .is_some_and(|groups| groups.iter().any(|g| g == shared_filter));
                }
                Some(_) => {}
            }
        }
        *self.inner.write() = None;
        false
    }

    /// Number of messages remembered.
    pub fn len(&self) -> usize {
        self.inner.read().as_ref().map_or(0, |r| r.copies.len())
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(f: &[&str]) -> Vec<ByteString> {
        f.iter().map(|s| ByteString::from(*s)).collect()
    }

    #[test]
    fn a_copy_is_known_for_the_groups_whose_filter_matches_its_topic() {
        let copies = GroupCopies::default();
        let subs = filters(&["$share/g/a/#", "$share/h/b/#", "$share/k/+/x", "a/#"]);
        copies.add(1_000, 7, "a/x", &subs);
        assert!(copies.contains_at(1_001, 7, "$share/g/a/#"));
        assert!(copies.contains_at(1_001, 7, "$share/k/+/x"));
        // not through a group whose filter does not match, nor another uid
        assert!(!copies.contains_at(1_001, 7, "$share/h/b/#"));
        assert!(!copies.contains_at(1_001, 8, "$share/g/a/#"));
        assert_eq!(copies.len(), 1);
    }

    #[test]
    fn unknown_uids_and_sessions_without_groups_record_nothing() {
        let copies = GroupCopies::default();
        copies.add(1_000, 0, "a/x", &filters(&["$share/g/a/#"]));
        copies.add(1_000, 9, "a/x", &filters(&["a/#"]));
        assert!(copies.is_empty());
        assert!(!copies.contains(0, "$share/g/a/#"));
    }

    #[test]
    fn two_members_holding_one_message_are_one_entry() {
        let copies = GroupCopies::default();
        copies.add(1_000, 7, "a/x", &filters(&["$share/g/a/#"]));
        copies.add(1_000, 7, "a/x", &filters(&["$share/g/a/#", "$share/z/#"]));
        assert!(copies.contains_at(1_000, 7, "$share/z/#"));
        assert_eq!(copies.len(), 1);
    }

    #[test]
    fn everything_is_forgotten_after_keep_ms() {
        let copies = GroupCopies::default();
        copies.add(1_000, 7, "a/x", &filters(&["$share/g/a/#"]));
        assert!(copies.contains_at(1_000 + KEEP_MS - 1, 7, "$share/g/a/#"));
        assert!(!copies.contains_at(1_000 + KEEP_MS, 7, "$share/g/a/#"));
        assert!(copies.is_empty());
    }
}
