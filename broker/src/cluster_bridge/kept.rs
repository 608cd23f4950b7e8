//! Copies for a node that is down, kept on this node's disk until that node
//! acknowledges them (issue 12, "durable forwards").
//!
//! A QoS 1/2 message bound for a peer that is up waits for the peer's
//! answer, which comes once the copies its persistent sessions need are
//! stored there. A peer counted down (`DOWN_AFTER` without contact) cannot
//! answer, so the publisher is acknowledged once the copy is fsynced in this
//! node's `forwards` tree instead; the same holds for a copy whose peer went
//! down while its answer was awaited. The copy also waits in the link to
//! the peer, which sends it when the peer is back; its record goes when the
//! peer has answered. So a publishing node killed while a peer is down no
//! longer loses the copies it acknowledged: at startup
//! [`ClusterBridge::resend_kept`] queues every kept copy again, before
//! clients connect.
//!
//! Between nodes delivery stays at least once: a copy whose answer came
//! just before a kill, its record not yet deleted, goes again after the
//! restart (QoS 1 duplicates as the README allows; a QoS 2 copy reaching a
//! persistent session again is dropped by its ids of recent QoS 2 copies,
//! `session/recent.rs`). Copies for a node that is no longer a member are
//! dropped at startup: its sessions were taken in from their records by
//! the other nodes (ARCHITECTURE 5.5), and their queued messages went with
//! the node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::replicas::Item;
use super::ClusterBridge;
use crate::handle::{hold_until_durable, AckGuard};

/// The store side of kept copies: where they go, and the next key.
pub(super) struct Kept {
    writer: storage::Writer,
    /// The `seq` of the next copy kept (per node, unique across restarts:
    /// set past the largest one found at startup).
    next_seq: AtomicU64,
}

impl Kept {
    pub(super) fn new(writer: storage::Writer) -> Kept {
        // Above every seq of an earlier run (clock permitting), kept copies
        // left or not: another node's second copies are keyed by them
        // (`replicas.rs`, `reconcile_kept`).
        Kept {
            writer,
            next_seq: AtomicU64::new(crate::message::unix_ms() << 20),
        }
    }

    pub(super) fn writer(&self) -> &storage::Writer {
        &self.writer
    }
}

impl ClusterBridge {
    /// Stores `forwarded` for `node`, which is down, and queues it on the
    /// link to `node`; `guard` (the publisher's) waits for the fsync. If
    /// the link refuses it (its queue is full), the publisher is told the
    /// message could not be delivered.
    pub(super) fn keep(
        &self,
        node: u64,
        forwarded: cluster::ForwardedPublish,
        guard: Option<AckGuard>,
    ) {
        let copy = forwarded.clone();
        match self.cluster.forward_in_order(node, forwarded) {
            Ok(answer) => self.keep_until_answered(node, copy, guard, answer),
            Err(e) => {
                tracing::warn!(node, error = %e, "message for a node that is down refused");
                if let Some(guard) = guard {
                    guard.fail();
                }
            }
        }
    }

    /// Writes `copy`, queued on the link to `node`, to the `forwards`
    /// tree (`guard` waits for the fsync), and deletes it once `answer`
    /// comes.
    pub(super) fn keep_until_answered(
        &self,
        node: u64,
        mut copy: cluster::ForwardedPublish,
        guard: Option<AckGuard>,
        answer: impl std::future::Future<Output = cluster::Result<()>> + Send + 'static,
    ) {
        copy.origin_node = self.node_id;
        let seq = self.kept.next_seq.fetch_add(1, Ordering::Relaxed);
        let encoded = Bytes::from(cluster::encode_forwarded(&copy));
        // A second copy on another node (its `replica_forwards`): the
        // publisher's answer waits for both disks.
        let keeper = self.keeper_for(node);
        let mut durable = hold_until_durable(guard);
        if let Some(keeper) = keeper {
            let item = Item::Keep(cluster::KeptCopy {
                node,
                seq,
                copy: encoded.clone(),
            });
            let done = durable.take().map(|d| {
                let (local, remote) = super::replicas::join(d);
                durable = Some(local);
                remote
            });
            self.ship(keeper, item, done);
        }
        self.kept.writer.submit(
            vec![storage::WriteOp::PutForward {
                node,
                seq,
                copy: encoded,
            }],
            durable,
        );
        self.forget_kept_when_answered(node, seq, &copy, answer, keeper);
    }

    /// The node that holds the second copies of the copies kept here for
    /// `node` (one per node, so one asks about all of them: `reconcile`):
    /// rendezvous hashing over the members but this node and `node`,
    /// skipping those down; `None` with `session_replicas` 1 or no such
    /// member up.
    pub(super) fn keeper_for(&self, node: u64) -> Option<u64> {
        if self.replicas.copies() < 2 {
            return None;
        }
        let me = self.node_id;
        let candidates: Vec<u64> = {
            let down = self.down.read();
            self.cluster
                .members()
                .into_iter()
                .map(|m| m.id)
                .filter(|id| *id != me && *id != node && !down.contains(id))
                .collect()
        };
        super::rehome::rehome_pick(&format!("kept-for-{node}"), &candidates)
    }

    /// The seq the next copy kept here will have at least.
    pub fn kept_next_seq(&self) -> u64 {
        self.kept.next_seq.load(Ordering::Relaxed)
    }

    /// Forgets kept copy `seq` for `node` once `answer` comes (spawned).
    /// A copy for shared groups (`copy`) that the node refuses goes to
    /// another member ([`regroup_refused`]).
    /// `keeper`: the node holding its second copy, told when it goes
    /// (copies resent after a restart do not know it: the keeper asks,
    /// `reconcile_kept`).
    fn forget_kept_when_answered(
        &self,
        node: u64,
        seq: u64,
        copy: &cluster::ForwardedPublish,
        answer: impl std::future::Future<Output = cluster::Result<()>> + Send + 'static,
        keeper: Option<u64>,
    ) {
        let regroup = self
            .refused_groups
            .get()
            .filter(|_| !copy.shared_filters.is_empty())
            .map(|tx| (tx.clone(), copy.clone()));
        let bridge = self.me.clone();
        let tell_keeper = keeper.map(|keeper| {
            Box::new(move || {
                if let Some(bridge) = bridge.upgrade() {
                    bridge.ship(keeper, Item::Forget { node, seq }, None);
                }
            }) as Box<dyn FnOnce() + Send>
        });
        self.runtime.spawn(forget_when_answered(
            self.kept.clone(),
            node,
            seq,
            answer,
            regroup,
            tell_keeper,
        ));
    }

    /// The kept copies that their node refused for shared groups, with
    /// that node: the caller gives each to another member of its groups
    /// ([`regroup_refused`]). Once, at startup; `None` if taken already.
    pub fn refused_group_copies(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<(cluster::ForwardedPublish, u64)>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.refused_groups.set(tx).ok()?;
        Some(rx)
    }

    /// Queues again every copy kept before this node stopped (at startup,
    /// before clients connect). Returns how many were queued and how many
    /// were dropped (for nodes no longer members, or unreadable).
    pub fn resend_kept(&self, store: &storage::Store) -> storage::Result<(usize, usize)> {
        let kept = store.load_forwards()?;
        let next = kept.iter().map(|(_, seq, _)| seq + 1).max().unwrap_or(1);
        self.kept.next_seq.fetch_max(next, Ordering::Relaxed);
        let members: Vec<u64> = self.cluster.status().members.iter().map(|m| m.id).collect();
        let (mut queued, mut dropped) = (0, 0);
        for (node, seq, copy) in kept {
            let forwarded = match cluster::decode_forwarded(&copy) {
                Ok(f) if members.contains(&node) => f,
                Ok(_) => {
                    tracing::warn!(
                        node,
                        seq,
                        "kept copy for a node that is no longer a member dropped"
                    );
                    self.forget_kept(node, seq);
                    dropped += 1;
                    continue;
                }
                Err(e) => {
                    tracing::error!(node, seq, error = %e, "unreadable kept copy dropped");
                    self.forget_kept(node, seq);
                    dropped += 1;
                    continue;
                }
            };
            let copy = forwarded.clone();
            match self.cluster.forward_in_order(node, forwarded) {
                Ok(answer) => {
                    self.forget_kept_when_answered(node, seq, &copy, answer, None);
                    queued += 1;
                }
                // kept on disk: queued again at the next start
                Err(e) => tracing::warn!(node, seq, error = %e, "kept copy not queued"),
            }
        }
        Ok((queued, dropped))
    }

    fn forget_kept(&self, node: u64, seq: u64) {
        self.kept
            .writer
            .submit(vec![storage::WriteOp::DeleteForward { node, seq }], None);
    }
}

/// Deletes kept copy `seq` for `node` once the node has given its final
/// answer: stored (or delivered), or refused for good. A link stopped
/// before an answer (this node shutting down) leaves it for the next start.
///
/// postmortem: long chaos run seed 22, 2026-12-06 (`shared-no-loss`,
/// p1#541): node 3 routed a group's copy to node 1 by a stale route just
/// before a split cut it off; the copy was kept, sent again after the heal,
/// and refused by node 1, which had no member of the group: deleted here,
/// it reached nobody although its publisher had been acknowledged. A
/// refused copy for shared groups now goes to another member (`regroup`).
async fn forget_when_answered(
    kept: Arc<Kept>,
    node: u64,
    seq: u64,
    answer: impl std::future::Future<Output = cluster::Result<()>>,
    regroup: Option<(
        tokio::sync::mpsc::UnboundedSender<(cluster::ForwardedPublish, u64)>,
        cluster::ForwardedPublish,
    )>,
    tell_keeper: Option<Box<dyn FnOnce() + Send>>,
) {
    match answer.await {
        Ok(()) | Err(cluster::Error::UnknownNode(_)) => {
            kept.writer
                .submit(vec![storage::WriteOp::DeleteForward { node, seq }], None);
        }
        Err(e @ cluster::Error::Rejected { .. }) => {
            if let Some((tx, copy)) = regroup {
                tracing::warn!(node, seq, error = %e, groups = ?copy.shared_filters, "kept copy refused by its node: given to another member of its groups");
                let _ = tx.send((copy, node));
            }
            kept.writer
                .submit(vec![storage::WriteOp::DeleteForward { node, seq }], None);
        }
        Err(e) => {
            tracing::debug!(node, seq, error = %e, "kept copy stays on disk");
            return;
        }
    }
    if let Some(tell) = tell_keeper {
        tell();
    }
}

/// Gives each kept copy that its node refused for shared groups to
/// another member of those groups (`fanout::route_groups`), until the
/// bridge is gone.
pub async fn regroup_refused(
    state: crate::state::State,
    mut refused: tokio::sync::mpsc::UnboundedReceiver<(cluster::ForwardedPublish, u64)>,
) {
    while let Some((mut copy, node)) = refused.recv().await {
        let groups = std::mem::take(&mut copy.shared_filters);
        match super::events::forwarded_message(&mut copy) {
            Ok(message) => {
                crate::fanout::route_groups(&state, &message, &groups, node);
            }
            Err(e) => tracing::error!(node, error = ?e, "a refused kept copy does not decode"),
        }
    }
}
