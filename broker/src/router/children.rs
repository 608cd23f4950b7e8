//! Topic levels and the children of a trie node keyed by them: shared by
//! the subscription trie and the retained index.
//!
//! Most nodes of a topic tree have one or a few children (`telemetry` under
//! each device), a few have thousands (`site/{n}`). Up to [`SMALL_MAX`]
//! children are kept in a vector searched by comparing the level, which is
//! smaller than a hash table and as fast at that size; past it they move to a
//! hash map, and back to the vector once they shrink to [`SMALL_MIN`].
//!
//! Matching a large table is bound by cache misses, one per pointer it
//! follows, so children are stored in place (not boxed) next to their level,
//! and a level of up to [`INLINE`] bytes is stored in place too: a step down
//! the tree reads the parent's vector or map and nothing else.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

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
    match find_slash(topic.as_bytes()) {
        // `/` is ASCII, so both sides are on character boundaries.
        Some(i) => (&topic[..i], Some(&topic[i + 1..])),
        None => (topic, None),
    }
}

/// Position of the first `/` in `bytes`, eight bytes at a time.
///
/// Levels are short (`site`, `42`, `telemetry`), so `memchr`'s setup, which
/// `str::split_once` goes through, costs more than the search, and a byte loop
/// costs a few instructions per byte. This tests a word at a time: the bytes
/// of `word ^ SLASHES` are zero where `word` has a `/`, and
/// `(x - 0x01..) & !x & 0x80..` flags the lowest zero byte of `x` exactly
/// (higher ones may be flagged falsely, which the lowest never is).
#[inline]
fn find_slash(bytes: &[u8]) -> Option<usize> {
    const SLASHES: u64 = u64::from_le_bytes([b'/'; 8]);
    const LOW_BITS: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        // `chunks_exact(8)` yields 8-byte chunks: the conversion never fails.
        let word = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
        let x = word ^ SLASHES;
        let found = x.wrapping_sub(LOW_BITS) & !x & HIGH_BITS;
        if found != 0 {
            return Some(offset + found.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'/')
        .map(|i| offset + i)
}

/// Longest level stored in place; longer ones get an allocation.
const INLINE: usize = 22;

/// A topic level, as bytes: levels are compared and hashed, and only the
/// retained index reads them back as text.
#[derive(Clone)]
pub(crate) enum Level {
    /// A level of up to [`INLINE`] bytes: most are (`telemetry`, `42`).
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(Box<[u8]>),
}

impl Level {
    fn new(level: &str) -> Self {
        let bytes = level.as_bytes();
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut inline = [0; INLINE];
                inline[..bytes.len()].copy_from_slice(bytes);
                Level::Inline { len, bytes: inline }
            }
            _ => Level::Heap(bytes.into()),
        }
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Level::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Level::Heap(bytes) => bytes,
        }
    }
}

// Hash, Eq and Borrow all go through `as_bytes`, as `HashMap` lookups by
// `&[u8]` require.
impl Hash for Level {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl PartialEq for Level {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Level {}

impl Borrow<[u8]> for Level {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Most children kept in the vector before moving to a hash map.
const SMALL_MAX: usize = 8;
/// A hash map that shrinks to this many children moves back to a vector.
const SMALL_MIN: usize = 4;

/// The children of a node `N`, by level.
pub(crate) enum Children<N> {
    /// Up to [`SMALL_MAX`] children, searched in order.
    Small(Vec<(Level, Box<N>)>),
    /// More children. Boxed so that nodes, most of which have a few
    /// children, do not carry the map's size.
    #[allow(clippy::box_collection)]
    Map(Box<HashMap<Level, Box<N>, RandomState>>),
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
        let level = level.as_bytes();
        match self {
            Children::Small(v) => v
                .iter()
                .find(|(l, _)| l.as_bytes() == level)
                .map(|(_, n)| &**n),
            Children::Map(m) => m.get(level).map(|n| &**n),
        }
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        let level = level.as_bytes();
        match self {
            Children::Small(v) => v
                .iter_mut()
                .find(|(l, _)| l.as_bytes() == level)
                .map(|(_, n)| &mut **n),
            Children::Map(m) => m.get_mut(level).map(|n| &mut **n),
        }
    }

    /// The child at `level`, created with `N::default()` if missing.
    pub(crate) fn get_or_insert(&mut self, level: &str) -> &mut N
    where
        N: Default,
    {
        let bytes = level.as_bytes();
        if let Children::Small(v) = self {
            if v.len() >= SMALL_MAX && !v.iter().any(|(l, _)| l.as_bytes() == bytes) {
                let mut map =
                    HashMap::with_capacity_and_hasher(v.len() + 1, RandomState::default());
                map.extend(v.drain(..));
                *self = Children::Map(Box::new(map));
            }
        }
        match self {
            Children::Small(v) => {
                let i = match v.iter().position(|(l, _)| l.as_bytes() == bytes) {
                    Some(i) => i,
                    None => {
                        // Grow one at a time: most nodes keep one child.
                        v.reserve_exact(1);
                        v.push((Level::new(level), Box::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Children::Map(m) => {
                if m.contains_key(bytes) {
                    m.get_mut(bytes)
                        .map(|n| &mut **n)
                        .unwrap_or_else(|| unreachable!("`{level}` is a key: checked just above"))
                } else {
                    m.entry(Level::new(level)).or_default()
                }
            }
        }
    }

    /// Removes the child at `level` and returns it.
    pub(crate) fn remove(&mut self, level: &str) -> Option<Box<N>> {
        let level = level.as_bytes();
        match self {
            Children::Small(v) => {
                let i = v.iter().position(|(l, _)| l.as_bytes() == level)?;
                let removed = v.swap_remove(i).1;
                if v.is_empty() {
                    *v = Vec::new();
                }
                Some(removed)
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

    /// The children in no particular order, with their levels as bytes.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &N)> {
        let (small, map) = match self {
            Children::Small(v) => (Some(v.iter().map(|(l, n)| (l.as_bytes(), &**n))), None),
            Children::Map(m) => (None, Some(m.iter().map(|(l, n)| (l.as_bytes(), &**n)))),
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
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn levels_compare_and_hash_as_their_bytes_inline_or_not() {
        let long = "l".repeat(INLINE + 1);
        for level in ["", "a", "telemetry", &"x".repeat(INLINE), &long] {
            let stored = Level::new(level);
            assert_eq!(stored.as_bytes(), level.as_bytes());
            assert_eq!(
                matches!(stored, Level::Inline { .. }),
                level.len() <= INLINE,
                "{level}"
            );
            let hasher = RandomState::default();
            assert_eq!(hasher.hash_one(&stored), hasher.hash_one(level.as_bytes()));
        }
    }

    #[test]
    fn children_move_between_vector_and_map() {
        let mut children: Children<u32> = Children::default();
        for i in 0..20u32 {
            *children.get_or_insert(&i.to_string()) = i;
            let is_map = matches!(children, Children::Map(_));
            assert_eq!(is_map, i as usize >= SMALL_MAX, "after {i}");
        }
        assert_eq!(children.get("13"), Some(&13));
        for i in 0..16u32 {
            assert_eq!(children.remove(&i.to_string()).map(|n| *n), Some(i));
        }
        assert!(matches!(children, Children::Small(_)));
        let mut left: Vec<u32> = children.iter().map(|(_, n)| *n).collect();
        left.sort();
        assert_eq!(left, [16, 17, 18, 19]);
    }

    #[test]
    fn find_slash_agrees_with_a_byte_scan() {
        let samples = [
            "",
            "/",
            "a",
            "abcdefg/",
            "abcdefgh/",
            "abcdefghijklmnop",
            "////////",
            "é/ü",
            "\u{2f2f}",
        ];
        for base in samples {
            for prefix in 0..10 {
                let s = format!("{}{base}x/y", "z".repeat(prefix));
                assert_eq!(find_slash(s.as_bytes()), s.find('/'), "{s:?}");
            }
            assert_eq!(find_slash(base.as_bytes()), base.find('/'), "{base:?}");
        }
        // Bytes that differ from `/` (0x2f) by one bit or by a borrow.
        for b in 0..=255u8 {
            let bytes = [b, b, b, b, b, b, b, b, b, b'/'];
            let expected = if b == b'/' { 0 } else { 9 };
            assert_eq!(find_slash(&bytes), Some(expected), "{b:#x}");
        }
    }

    #[test]
    fn topics_split_one_level_at_a_time() {
        assert_eq!(split_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_level("a"), ("a", None));
        assert_eq!(split_level("a/"), ("a", Some("")));
        assert_eq!(split_level("/a"), ("", Some("a")));
    }
}
