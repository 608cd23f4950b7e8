//! Retained messages, indexed by topic for matching against filters.
//!
//! This module owns [`RetainedIndex`]: at most one value per topic name (the
//! retained message, 3.1.1 section 3.3.1.3, 5.0 section 3.3.1.3), and the
//! query a SUBSCRIBE makes, "which retained topics match this filter". It
//! never decides what to retain (an empty retained payload deletes, the
//! session says so with [`RetainedIndex::remove`]), never validates topics or
//! filters, and never stores anything on disk: the broker fills it from
//! storage at startup.
//!
//! # Design
//!
//! A trie over topic levels, the mirror image of the router's: here the
//! stored keys are topic names, literal levels only, and the query is a
//! filter. A literal filter level is one child lookup, `+` visits every
//! child of its node, `#` every node below its node (and the node itself:
//! `a/#` matches `a`). So a query costs the part of the tree it matches plus
//! one lookup per literal level, not the whole tree. Topics are not stored:
//! the walk rebuilds each matching topic name from its levels in one reused
//! buffer. Nodes left empty by a removal are removed.
//!
//! Like the router, nothing recurses per level (see `router::trie`): walks
//! keep explicit stacks and `Drop` tears nodes down in a loop.
//!
//! # Locking
//!
//! No lock of its own: the broker wraps it in a lock, `get` and `matches`
//! take `&self` and run under a read lock, `insert` and `remove` take the
//! write lock. `matches` calls `visit` with the lock held.

use crate::router::children::{split_level, Children};

struct Node<V> {
    children: Children<Node<V>>,
    /// The retained value of the topic that ends at this node.
    value: Option<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            children: Children::default(),
            value: None,
        }
    }
}

impl<V> Drop for Node<V> {
    fn drop(&mut self) {
        // Each node is dropped childless, so the drop glue never recurses.
        let mut pending = Vec::new();
        self.children.drain_into(&mut pending);
        while let Some(mut node) = pending.pop() {
            node.children.drain_into(&mut pending);
        }
    }
}

/// Retained values by topic name, for matching topic filters.
///
/// Read-mostly: wrap it in a lock, match under the read lock (see the
/// [module documentation](self)).
pub struct RetainedIndex<V> {
    root: Node<V>,
    /// Topics with a value.
    len: usize,
}

impl<V> Default for RetainedIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> std::fmt::Debug for RetainedIndex<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetainedIndex")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A node waiting to be visited by [`RetainedIndex::matches`].
struct Frame<'t, 'f, V> {
    node: &'t Node<V>,
    /// The node's level.
    level: &'t [u8],
    /// Length of the parent's topic name in the walk's buffer.
    base: usize,
    /// True for the root, whose wildcards skip `$` topics.
    root: bool,
    /// True if a `/` goes between the parent's topic name and `level`: false
    /// for the root and its children, which start a topic name.
    separator: bool,
    /// The rest of the filter to match below the node: `None` when it ended
    /// at the node, `Some("#")` to take the node and everything below.
    rest: Option<&'f str>,
}

impl<V> RetainedIndex<V> {
    pub fn new() -> Self {
        RetainedIndex {
            root: Node::default(),
            len: 0,
        }
    }

    /// Retains `value` at `topic`, replacing and returning the previous value.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_or_insert(level);
        }
        let previous = node.value.replace(value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes and returns the value at `topic`. Nodes left empty are removed.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        // First walk: find the node, and the deepest node on the way (the
        // root at least) that holds something besides the path, below which
        // the branch can be cut once the value is gone.
        let mut node = &mut self.root;
        let mut cut = 0;
        for (depth, level) in topic.split('/').enumerate() {
            if node.children.len() > 1 || node.value.is_some() {
                cut = depth;
            }
            node = node.children.get_mut(level)?;
        }
        let removed = node.value.take()?;
        self.len -= 1;
        if node.children.is_empty() {
            // Second walk: the nodes below `cut` hold nothing but the path.
            let mut levels = topic.split('/');
            let mut node = &mut self.root;
            for level in levels.by_ref().take(cut) {
                match node.children.get_mut(level) {
                    Some(child) => node = child,
                    // The first walk went down this path.
                    None => return Some(removed),
                }
            }
            if let Some(level) = levels.next() {
                node.children.remove(level);
            }
        }
        Some(removed)
    }

    /// The value retained at `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.value.as_ref()
    }

    /// Calls `visit(topic, value)` for every retained topic that the topic
    /// filter `filter` (valid, not shared) matches, in no particular order.
    ///
    /// [MQTT-4.7.2-1] a filter starting with `+` or `#` does not match topics
    /// starting with `$`.
    pub fn matches(&self, filter: &str, mut visit: impl FnMut(&str, &V)) {
        let mut topic = Vec::new();
        let mut pending = vec![Frame {
            node: &self.root,
            level: b"",
            base: 0,
            root: true,
            separator: false,
            rest: Some(filter),
        }];
        while let Some(frame) = pending.pop() {
            let node = frame.node;
            topic.truncate(frame.base);
            if frame.separator {
                topic.push(b'/');
            }
            topic.extend_from_slice(frame.level);
            let (level, rest) = match frame.rest {
                None => {
                    emit(&topic, node.value.as_ref(), &mut visit);
                    continue;
                }
                Some(rest) => split_level(rest),
            };
            let base = topic.len();
            let children = || {
                // [MQTT-4.7.2-1] wildcards at the first level skip `$` topics.
                node.children
                    .iter()
                    .filter(move |(l, _)| !(frame.root && l.starts_with(b"$")))
            };
            let separator = !frame.root;
            let frame_of = |(level, node), rest| Frame {
                node,
                level,
                base,
                root: false,
                separator,
                rest,
            };
            match level {
                "#" => {
                    // `#` matches the parent level too: `a/#` matches `a`.
                    emit(&topic, node.value.as_ref(), &mut visit);
                    pending.extend(children().map(|c| frame_of(c, Some("#"))));
                }
                "+" => pending.extend(children().map(|c| frame_of(c, rest))),
                literal => {
                    if let Some(child) = node.children.get(literal) {
                        pending.push(frame_of((literal.as_bytes(), child), rest));
                    }
                }
            }
        }
    }

    /// Calls `visit(topic, value)` for every retained topic, `$` topics
    /// included, in no particular order.
    pub fn all(&self, mut visit: impl FnMut(&str, &V)) {
        for (level, _) in self.root.children.iter() {
            // Every level came from a `&str` (see `emit`).
            if let Ok(level) = std::str::from_utf8(level) {
                // `a/#` matches `a` itself and everything below it.
                self.matches(&format!("{level}/#"), &mut visit);
            }
        }
    }

    /// Number of retained topics.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of nodes below the root, for tests of pruning.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            count += node.children.len();
            pending.extend(node.children.iter().map(|(_, n)| n));
        }
        count
    }
}

/// Calls `visit` with the topic name rebuilt in `topic` if there is a value.
fn emit<V>(topic: &[u8], value: Option<&V>, visit: &mut impl FnMut(&str, &V)) {
    if let Some(value) = value {
        // Every level came from a `&str` and they are joined by `/`, so the
        // bytes are UTF-8 and this never skips.
        if let Ok(topic) = std::str::from_utf8(topic) {
            visit(topic, value);
        }
    }
}

#[cfg(test)]
mod tests;
