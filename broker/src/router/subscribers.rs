//! What a trie node holds: the subscribers of one filter, and the shared
//! groups of one filter with their round-robin cursors.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::children::RandomState;

/// A set of subscribers with more entries than this gets a key index.
const INDEX_ABOVE: usize = 16;
/// An indexed set that shrinks below this many entries drops its index.
const UNINDEX_BELOW: usize = 8;

/// The subscribers of one filter: `(key, value)` pairs, one per key.
///
/// Most filters have one subscriber (a device's own topic): that one is
/// held in place, with no allocation of its own; an idle hub holds one such
/// filter per connection. More sit in a vector so that matching reads them
/// in one sweep. A popular filter (`#` on a monitoring topic) can have
/// thousands, so past [`INDEX_ABOVE`] entries an index from key to position
/// keeps subscribe and unsubscribe from scanning them all.
pub(crate) enum Subscribers<K, V> {
    Empty,
    One((K, V)),
    Many {
        /// Two or more.
        entries: Vec<(K, V)>,
        /// Position of each key in `entries`; kept in step by `insert` and
        /// the `swap_remove` in `remove`. Boxed so that the unindexed set
        /// stays small.
        #[allow(clippy::box_collection)]
        index: Option<Box<HashMap<K, usize, RandomState>>>,
    },
}

// Not derived: the derive would require `K: Default` and `V: Default`.
#[allow(clippy::derivable_impls)]
impl<K, V> Default for Subscribers<K, V> {
    fn default() -> Self {
        Subscribers::Empty
    }
}

impl<K, V> Subscribers<K, V> {
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Subscribers::Empty)
    }

    #[inline]
    pub(crate) fn entries(&self) -> &[(K, V)] {
        match self {
            Subscribers::Empty => &[],
            Subscribers::One(entry) => std::slice::from_ref(entry),
            Subscribers::Many { entries, .. } => entries,
        }
    }
}

impl<K: Clone + Eq + Hash, V> Subscribers<K, V> {
    /// Adds `key`, or replaces its value and returns the previous one.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Subscribers::Empty => {
                *self = Subscribers::One((key, value));
                None
            }
            Subscribers::One(entry) if entry.0 == key => {
                Some(std::mem::replace(&mut entry.1, value))
            }
            Subscribers::One(_) => {
                let Subscribers::One(first) = std::mem::take(self) else {
                    unreachable!("matched just above")
                };
                let entries = vec![first, (key, value)];
                *self = Subscribers::Many {
                    entries,
                    index: None,
                };
                None
            }
            Subscribers::Many { entries, index } => {
                let found = match index {
                    Some(index) => index.get(&key).copied(),
                    None => entries.iter().position(|(k, _)| *k == key),
                };
                if let Some(i) = found {
                    return Some(std::mem::replace(&mut entries[i].1, value));
                }
                if let Some(index) = index {
                    index.insert(key.clone(), entries.len());
                }
                entries.push((key, value));
                if index.is_none() && entries.len() > INDEX_ABOVE {
                    let mut built =
                        HashMap::with_capacity_and_hasher(entries.len(), RandomState::default());
                    built.extend(entries.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)));
                    *index = Some(Box::new(built));
                }
                None
            }
        }
    }

    /// Removes `key` and returns its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            Subscribers::Empty => None,
            Subscribers::One(entry) if entry.0 == *key => match std::mem::take(self) {
                Subscribers::One((_, value)) => Some(value),
                _ => unreachable!("matched just above"),
            },
            Subscribers::One(_) => None,
            Subscribers::Many { entries, index } => {
                let i = match index {
                    Some(index) => index.get(key).copied(),
                    None => entries.iter().position(|(k, _)| k == key),
                }?;
                let (_, value) = entries.swap_remove(i);
                if let Some(map) = index {
                    map.remove(key);
                    if let Some((moved, _)) = entries.get(i) {
                        map.insert(moved.clone(), i);
                    }
                    if entries.len() < UNINDEX_BELOW {
                        *index = None;
                    }
                }
                if entries.len() == 1 {
                    // Back in place: the vector's memory goes back.
                    if let Some(last) = entries.pop() {
                        *self = Subscribers::One(last);
                    }
                }
                Some(value)
            }
        }
    }
}

/// One shared subscription `$share/{name}/{filter}`: its members and the
/// round-robin cursor that picks one of them per message.
pub(crate) struct Group<K, V> {
    pub(crate) name: Box<str>,
    pub(crate) members: Subscribers<K, V>,
    /// Count of picks, plus the members skipped as unavailable; the next pick
    /// starts at `cursor % members.len()`. Atomic so that picking works
    /// under the table's read lock.
    cursor: AtomicUsize,
}

impl<K: Clone + Eq + Hash, V> Group<K, V> {
    fn new(name: &str) -> Self {
        Group {
            name: name.into(),
            members: Subscribers::default(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Picks the next member in round-robin order for which `available` is
    /// true, or, if none is, the member whose turn it is.
    ///
    /// Each pick claims a start position with `fetch_add`, so concurrent
    /// readers start at different members; a pick that skips `d`
    /// unavailable members then moves the cursor past the chosen one, so the
    /// next pick does not land on it again. The cursor is a counter that
    /// only grows (`fetch_max`), modulo the member count.
    pub(crate) fn pick(&self, mut available: impl FnMut(&K, &V) -> bool) -> Option<&(K, V)> {
        let members = self.members.entries();
        let n = members.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        for d in 0..n {
            let entry = &members[start.wrapping_add(d) % n];
            if available(&entry.0, &entry.1) {
                if d > 0 {
                    self.cursor
                        .fetch_max(start.wrapping_add(d + 1), Ordering::Relaxed);
                }
                return Some(entry);
            }
        }
        // No member is available: deliver to the one whose turn it is, which
        // queues the message in its session.
        Some(&members[start % n])
    }
}

/// The shared groups subscribed to one filter, searched by name (a filter
/// rarely has more than a few groups).
pub(crate) struct Groups<K, V>(Vec<Group<K, V>>);

impl<K, V> Default for Groups<K, V> {
    fn default() -> Self {
        Groups(Vec::new())
    }
}

impl<K, V> Groups<K, V> {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Group<K, V>> {
        self.0.iter().find(|g| &*g.name == name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Group<K, V>> {
        self.0.iter()
    }
}

impl<K: Clone + Eq + Hash, V> Groups<K, V> {
    pub(crate) fn insert(&mut self, group: &str, key: K, value: V) -> Option<V> {
        let i = match self.0.iter().position(|g| &*g.name == group) {
            Some(i) => i,
            None => {
                self.0.push(Group::new(group));
                self.0.len() - 1
            }
        };
        self.0[i].members.insert(key, value)
    }

    pub(crate) fn remove(&mut self, group: &str, key: &K) -> Option<V> {
        let i = self.0.iter().position(|g| &*g.name == group)?;
        let removed = self.0[i].members.remove(key);
        if self.0[i].members.is_empty() {
            self.0.swap_remove(i);
        }
        removed
    }
}
