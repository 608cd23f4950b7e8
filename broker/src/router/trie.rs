//! A trie of topic filters, generic over what a filter holds.
//!
//! Each node is one level of a filter. Literal levels are `children`; `+` is
//! the dedicated `plus` child; a filter ending in `#` is held by the node of
//! its parent level, in `multi`, because `a/#` matches `a` itself and
//! everything below it (`#` alone is the root's `multi`). A filter ending in
//! a literal or `+` level is held in `exact`.
//!
//! Nothing here recurses: a topic may have 32,768 levels, and a walk that
//! recursed per level could overflow the stack (mosquitto's CVE-2019-11779).
//! Matching keeps an explicit stack of pending `+` branches, removal walks
//! down twice instead of unwinding, and `Drop` tears nodes down in a loop.

use super::children::{split_level, Children};

/// What a node holds for the filters ending at it.
pub(crate) trait Payload: Default {
    fn is_empty(&self) -> bool;
}

/// Which payload of its node a filter lives in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    /// The filter ends with a literal or `+` level.
    Exact,
    /// The filter ends with `#`.
    Multi,
}

/// One edge of the path from the root to a filter's node.
#[derive(Clone, Copy)]
enum Edge<'a> {
    Literal(&'a str),
    Plus,
}

/// The edges of `filter` and which payload it ends in. `filter` is a
/// plain (not shared) filter; if it is invalid it is stored as if `#` and `+`
/// were literals except in the two places that mean something here (a whole
/// last level `#`, a whole level `+`), and so never misbehaves.
fn path(filter: &str) -> (impl Iterator<Item = Edge<'_>> + Clone, End) {
    let (levels, end) = if filter == "#" {
        (None, End::Multi)
    } else if let Some(parent) = filter.strip_suffix("/#") {
        (Some(parent), End::Multi)
    } else {
        (Some(filter), End::Exact)
    };
    let edges = levels.into_iter().flat_map(|l| l.split('/')).map(|l| {
        if l == "+" {
            Edge::Plus
        } else {
            Edge::Literal(l)
        }
    });
    (edges, end)
}

pub(crate) struct Node<P> {
    children: Children<Node<P>>,
    plus: Option<Box<Node<P>>>,
    /// Filters ending at this node with a literal or `+` level.
    exact: P,
    /// Filters ending at this node's level followed by `#`; boxed, and
    /// only while it holds some: few nodes have any, and every filter of
    /// its own (a device's topic) is a node.
    multi: Option<Box<P>>,
}

impl<P: Default> Default for Node<P> {
    fn default() -> Self {
        Node {
            children: Children::default(),
            plus: None,
            exact: P::default(),
            multi: None,
        }
    }
}

impl<P> Drop for Node<P> {
    fn drop(&mut self) {
        // Unlink the subtree into a worklist, so that each node is dropped
        // without children and the drop glue never recurses.
        let mut pending = Vec::new();
        self.take_edges(&mut pending);
        while let Some(mut node) = pending.pop() {
            node.take_edges(&mut pending);
        }
    }
}

impl<P> Node<P> {
    fn take_edges(&mut self, out: &mut Vec<Box<Node<P>>>) {
        self.children.drain_into(out);
        out.extend(self.plus.take());
    }

    fn edge_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    fn child_mut(&mut self, edge: Edge<'_>) -> Option<&mut Node<P>> {
        match edge {
            Edge::Literal(level) => self.children.get_mut(level),
            Edge::Plus => self.plus.as_deref_mut(),
        }
    }
}

impl<P: Payload> Node<P> {
    fn payload_mut(&mut self, end: End) -> &mut P {
        match end {
            End::Exact => &mut self.exact,
            End::Multi => self.multi.get_or_insert_with(Box::default),
        }
    }

    fn multi_is_empty(&self) -> bool {
        self.multi.as_ref().is_none_or(|m| m.is_empty())
    }

    /// Drops the `#` payload if an update left it empty.
    fn tidy(&mut self) {
        if self.multi.as_ref().is_some_and(|m| m.is_empty()) {
            self.multi = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.edge_count() == 0 && self.exact.is_empty() && self.multi_is_empty()
    }
}

/// Pending `+` branches kept in place before [`Branches`] spills to the heap.
const INLINE_BRANCHES: usize = 8;

/// The stack of `+` branches a match has still to follow: the node and the
/// rest of the topic below it. Most matches have a few, so the first
/// [`INLINE_BRANCHES`] live on the caller's stack.
struct Branches<'n, 't, P> {
    inline: [Option<(&'n Node<P>, Option<&'t str>)>; INLINE_BRANCHES],
    len: usize,
    /// Branches past the inline ones; used only while `inline` is full, so
    /// popping it first keeps the order of a stack.
    spill: Vec<(&'n Node<P>, Option<&'t str>)>,
}

impl<'n, 't, P> Branches<'n, 't, P> {
    fn new() -> Self {
        Branches {
            inline: [None; INLINE_BRANCHES],
            len: 0,
            spill: Vec::new(),
        }
    }

    #[inline]
    fn push(&mut self, branch: (&'n Node<P>, Option<&'t str>)) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(branch);
                self.len += 1;
            }
            None => self.spill.push(branch),
        }
    }

    #[inline]
    fn pop(&mut self) -> Option<(&'n Node<P>, Option<&'t str>)> {
        if let Some(branch) = self.spill.pop() {
            return Some(branch);
        }
        self.len = self.len.checked_sub(1)?;
        self.inline[self.len].take()
    }
}

/// The trie: see the module documentation.
pub(crate) struct Trie<P> {
    root: Node<P>,
}

impl<P: Payload> Default for Trie<P> {
    fn default() -> Self {
        Trie {
            root: Node::default(),
        }
    }
}

impl<P: Payload> Trie<P> {
    /// The payload of `filter`, with the nodes of its path created.
    pub(crate) fn payload_mut(&mut self, filter: &str) -> &mut P {
        let (edges, end) = path(filter);
        let mut node = &mut self.root;
        for edge in edges {
            node = match edge {
                Edge::Literal(level) => node.children.get_or_insert(level),
                Edge::Plus => node.plus.get_or_insert_with(Box::default),
            };
        }
        node.payload_mut(end)
    }

    /// The payload of `filter` if its node exists (an exact lookup of the
    /// filter, not a match).
    pub(crate) fn get(&self, filter: &str) -> Option<&P> {
        let (edges, end) = path(filter);
        let mut node = &self.root;
        for edge in edges {
            node = match edge {
                Edge::Literal(level) => node.children.get(level)?,
                Edge::Plus => node.plus.as_deref()?,
            };
        }
        match end {
            End::Exact => Some(&node.exact),
            End::Multi => node.multi.as_deref(),
        }
    }

    /// Applies `update` to the payload of `filter` if its node exists, then
    /// prunes the nodes left empty. Returns what `update` returned.
    pub(crate) fn update<R>(
        &mut self,
        filter: &str,
        update: impl FnOnce(&mut P) -> R,
    ) -> Option<R> {
        let (edges, end) = path(filter);
        // First walk: find the node, and the deepest node on the way (the
        // root at least) that holds something besides the path, below which
        // the branch can be cut if the update empties the filter's node.
        let mut node = &mut self.root;
        let mut cut = 0;
        let mut depth = 0;
        for edge in edges.clone() {
            if node.edge_count() > 1 || !node.exact.is_empty() || !node.multi_is_empty() {
                cut = depth;
            }
            node = node.child_mut(edge)?;
            depth += 1;
        }
        let result = update(node.payload_mut(end));
        node.tidy();
        if depth == 0 || !node.is_empty() {
            return Some(result);
        }
        // Second walk: every node below `cut` has a single edge and nothing
        // else, so removing the edge leaving `cut` drops exactly the nodes
        // that became empty.
        let mut edges = edges;
        let mut node = &mut self.root;
        for _ in 0..cut {
            match edges.next().and_then(|edge| node.child_mut(edge)) {
                Some(child) => node = child,
                // The first walk went down this path.
                None => return Some(result),
            }
        }
        match edges.next() {
            Some(Edge::Literal(level)) => drop(node.children.remove(level)),
            Some(Edge::Plus) => node.plus = None,
            None => {}
        }
        Some(result)
    }

    /// Calls `visit` with every payload whose filter matches the topic name
    /// `topic`: the `exact` payload of the node where the topic ends, and the
    /// `multi` payload of every node on the way, on each path the topic
    /// takes through literal and `+` children. A payload can be empty.
    ///
    /// The cost is one child lookup per level per path, and a path branches
    /// only where a node has a `+` child. Pending `+` branches wait on a
    /// stack that allocates only past [`INLINE_BRANCHES`] of them.
    #[inline]
    pub(crate) fn for_each_match<'a>(&'a self, topic: &str, mut visit: impl FnMut(&'a P)) {
        let mut pending = Branches::new();
        let root = &self.root;
        let (level, rest) = split_level(topic);
        // [MQTT-4.7.2-1] a topic starting with `$` is not matched by a filter
        // starting with a wildcard.
        if !topic.starts_with('$') {
            if let Some(multi) = &root.multi {
                visit(multi);
            }
            if let Some(plus) = &root.plus {
                pending.push((plus, rest));
            }
        }
        let mut next = root.children.get(level).map(|child| (child, rest));
        loop {
            let (mut node, mut rest) = match next.take().or_else(|| pending.pop()) {
                Some(branch) => branch,
                None => return,
            };
            // Follow literal children in place; only `+` branches wait.
            loop {
                if let Some(multi) = &node.multi {
                    visit(multi);
                }
                let Some(topic) = rest else {
                    visit(&node.exact);
                    break;
                };
                let (level, after) = split_level(topic);
                if let Some(plus) = &node.plus {
                    pending.push((plus, after));
                }
                match node.children.get(level) {
                    Some(child) => {
                        node = child;
                        rest = after;
                    }
                    None => break,
                }
            }
        }
    }

    /// Number of nodes below the root.
    #[cfg(test)]
    pub(crate) fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            count += node.edge_count();
            pending.extend(node.children.iter().map(|(_, n)| n));
            pending.extend(node.plus.as_deref());
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_split_into_edges_and_an_end() {
        let show = |f| {
            let (edges, end) = path(f);
            let edges: Vec<String> = edges
                .map(|e| match e {
                    Edge::Literal(l) => format!("'{l}'"),
                    Edge::Plus => "+".into(),
                })
                .collect();
            (edges.join(" "), end)
        };
        assert_eq!(show("#"), (String::new(), End::Multi));
        assert_eq!(show("a/#"), ("'a'".into(), End::Multi));
        assert_eq!(show("/#"), ("''".into(), End::Multi));
        assert_eq!(show("+/a"), ("+ 'a'".into(), End::Exact));
        assert_eq!(show("a//"), ("'a' '' ''".into(), End::Exact));
        assert_eq!(show("+"), ("+".into(), End::Exact));
    }
}
