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
        Kept {
            writer,
            next_seq: AtomicU64::new(1),
        }
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
        let copy = Bytes::from(cluster::encode_forwarded(&copy));
        let seq = self.kept.next_seq.fetch_add(1, Ordering::Relaxed);
        self.kept.writer.submit(
            vec![storage::WriteOp::PutForward { node, seq, copy }],
            hold_until_durable(guard),
        );
        self.forget_kept_when_answered(node, seq, answer);
    }

    /// Forgets kept copy `seq` for `node` once `answer` comes (spawned).
    fn forget_kept_when_answered(
        &self,
        node: u64,
        seq: u64,
        answer: impl std::future::Future<Output = cluster::Result<()>> + Send + 'static,
    ) {
        self.runtime
            .spawn(forget_when_answered(self.kept.clone(), node, seq, answer));
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
            match self.cluster.forward_in_order(node, forwarded) {
                Ok(answer) => {
                    self.forget_kept_when_answered(node, seq, answer);
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
async fn forget_when_answered(
    kept: Arc<Kept>,
    node: u64,
    seq: u64,
    answer: impl std::future::Future<Output = cluster::Result<()>>,
) {
    match answer.await {
        Ok(()) | Err(cluster::Error::Rejected { .. } | cluster::Error::UnknownNode(_)) => {
            kept.writer
                .submit(vec![storage::WriteOp::DeleteForward { node, seq }], None);
        }
        Err(e) => tracing::debug!(node, seq, error = %e, "kept copy stays on disk"),
    }
}
