//! Topic levels and the children of a trie node keyed by them: shared by
//! the subscription trie and the retained index.
//!
//! Most nodes of a topic tree have one or a few children (`telemetry` under
//! each device), a few have thousands (`site/{n}`). Up to [`SMALL_MAX`]
//! children are kept in a vector searched by comparing the level, which is
//! smaller than a hash table and as fast at that size; past it they move to a
//! hash map, and back to the vector once they shrink to [`SMALL_MIN`].

use std::collections::HashMap;

/// Hasher of the tables keyed by topic levels and subscriber keys.
///
/// foldhash hashes a short level in a few nanoseconds, where std's SipHash
/// takes about twenty, and matching hashes one level per wide node. Levels
/// come from clients, so the hasher is randomly seeded (per process and per
/// table): crafting colliding levels needs the seed. foldhash calls this
/// "minimally DoS-resistant"; see Known issues in the router's docs.
pub(crate) type RandomState = foldhash::fast::RandomState;

/// Splits the first level off a topic name: `a/b/c` gives `a` and `b/c`,
/// `a` gives `a` and nothing, `a/` gives `a` and the empty level.
#[inline]
pub(crate) fn split_level(topic: &str) -> (&str, Option<&str>) {
    match topic.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (topic, None),
    }
}

/// Most children kept in the vector before moving to a hash map.
const SMALL_MAX: usize = 8;
/// A hash map that shrinks to this many children moves back to a vector.
const SMALL_MIN: usize = 4;

/// The children of a node `N`, by level.
pub(crate) enum Children<N> {
    /// Up to [`SMALL_MAX`] children, searched in order.
    Small(Vec<(Box<str>, Box<N>)>),
    /// More children. Boxed so that nodes, most of which have a few
    /// children, do not carry the map's size.
    #[allow(clippy::box_collection)]
    Map(Box<HashMap<Box<str>, Box<N>, RandomState>>),
}

impl<N> Default for Children<N> {
    fn default() -> Self {
        Children::Small(Vec::new())
    }
}

impl<N> Children<N> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Children::Small(v) => v.len(),
            Children::Map(m) => m.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        match self {
            Children::Small(v) => v.iter().find(|(l, _)| &**l == level).map(|(_, n)| &**n),
            Children::Map(m) => m.get(level).map(|n| &**n),
        }
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        match self {
            Children::Small(v) => v
                .iter_mut()
                .find(|(l, _)| &**l == level)
                .map(|(_, n)| &mut **n),
            Children::Map(m) => m.get_mut(level).map(|n| &mut **n),
        }
    }

    /// The child at `level`, created with `N::default()` if missing.
    pub(crate) fn get_or_insert(&mut self, level: &str) -> &mut N
    where
        N: Default,
    {
        if let Children::Small(v) = self {
            if v.len() >= SMALL_MAX && !v.iter().any(|(l, _)| &**l == level) {
                let mut map = HashMap::with_capacity_and_hasher(v.len() + 1, RandomState::default());
                map.extend(v.drain(..));
                *self = Children::Map(Box::new(map));
            }
        }
        match self {
            Children::Small(v) => {
                let i = match v.iter().position(|(l, _)| &**l == level) {
                    Some(i) => i,
                    None => {
                        v.push((level.into(), Box::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Children::Map(m) => {
                // Look up first so that an existing level costs no allocation.
                if m.contains_key(level) {
                    m.get_mut(level)
                        .map(|n| &mut **n)
                        .unwrap_or_else(|| unreachable!("`{level}` is a key: checked just above"))
                } else {
                    m.entry(level.into()).or_default()
                }
            }
        }
    }

    /// Removes the child at `level` and returns it.
    pub(crate) fn remove(&mut self, level: &str) -> Option<Box<N>> {
        match self {
            Children::Small(v) => {
                let i = v.iter().position(|(l, _)| &**l == level)?;
                Some(v.swap_remove(i).1)
            }
            Children::Map(m) => {
                let removed = m.remove(level);
                if m.len() <= SMALL_MIN {
                    *self = Children::Small(m.drain().collect());
                }
                removed
            }
        }
    }

    /// The children in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &N)> {
        let (small, map) = match self {
            Children::Small(v) => (Some(v.iter().map(|(l, n)| (&**l, &**n))), None),
            Children::Map(m) => (None, Some(m.iter().map(|(l, n)| (&**l, &**n)))),
        };
        small.into_iter().flatten().chain(map.into_iter().flatten())
    }

    /// Moves every child into `out`, leaving this empty. Used by the
    /// iterative `Drop` of the tries.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<Box<N>>) {
        match std::mem::take(self) {
            Children::Small(v) => out.extend(v.into_iter().map(|(_, n)| n)),
            Children::Map(m) => out.extend(m.into_values()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_split_one_level_at_a_time() {
        assert_eq!(split_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_level("a"), ("a", None));
        assert_eq!(split_level("a/"), ("a", Some("")));
        assert_eq!(split_level("/a"), ("", Some("a")));
    }
}
