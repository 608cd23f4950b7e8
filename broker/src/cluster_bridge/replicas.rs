//! Replicated session queues (issue 12; ARCHITECTURE section 5.6).
//!
//! The owner of a persistent session ships every change of its stored
//! messages (queued and in-flight copies, QoS 2 flow states, received QoS 2
//! ids) to one other node, the session's *replica*, which stores them in its
//! `replica_*` trees. A copy's publisher is answered once both the owner's
//! and the replica's fsync are done (the session joins the two, see
//! `session/replica.rs`), so a node that takes the session over while its
//! owner is unreachable fetches every acknowledged message from the replica
//! (`fetch`), not only the subscriptions of the replicated record.
//!
//! - Which node: rendezvous hashing of the client id over the members but
//!   the owner, skipping nodes that are down or failed a shipment in the
//!   last [`FAILED_FOR`] — the node that would take the session in if the
//!   owner were removed for good (`rehome_pick`), so re-homing finds the
//!   messages on its own disk.
//! - Order: one link per replica node, one request in flight at a time, so
//!   a session's changes are stored in the order the session made them;
//!   changes queued while a request is out go together in the next one (a
//!   group commit across sessions).
//! - A replica that fails a request: the copies waiting for it are answered
//!   from the owner's fsync alone (availability over a second copy: the
//!   node stays writable with one node left), the node is skipped for
//!   [`FAILED_FOR`], and each session re-sends its whole state to the next
//!   node at its next change (`Session::replicate`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::ClusterBridge;
use crate::nodes::{ReplicaDone, ReplicaStats};

/// How long a replica that failed a request is not picked again.
pub const FAILED_FOR: Duration = Duration::from_secs(5);

/// Most updates in one request.
const MAX_UPDATES: usize = 1024;

/// What goes to a replica node: a session's change, or a copy this node
/// keeps for a node that is down (`kept.rs`), or the end of one.
pub(super) enum Item {
    Update(cluster::ReplicaUpdate),
    Keep(cluster::KeptCopy),
    Forget { node: u64, seq: u64 },
}

struct Ship {
    item: Item,
    done: Option<ReplicaDone>,
}

/// What this node ships to its replicas, and how that went.
#[derive(Default)]
pub struct Replicas {
    /// Replicas per session, the owner's copy included (`cluster.session_replicas`).
    copies: usize,
    links: Mutex<HashMap<u64, mpsc::UnboundedSender<Ship>>>,
    failed: Arc<Mutex<HashMap<u64, Instant>>>,
    stats: Arc<ReplicaStats>,
}

impl Replicas {
    pub fn new(copies: usize) -> Replicas {
        Replicas {
            copies,
            ..Default::default()
        }
    }

    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// `cluster.session_replicas`.
    pub fn copies(&self) -> usize {
        self.copies
    }

    pub(super) fn recently_failed(&self, node: u64) -> bool {
        let mut failed = self.failed.lock();
        match failed.get(&node) {
            Some(at) if at.elapsed() < FAILED_FOR => true,
            Some(_) => {
                failed.remove(&node);
                false
            }
            None => false,
        }
    }
}

impl ClusterBridge {
    /// The node that holds (or is to hold) the replica of `client_id`'s
    /// session owned here; `None` without replicas (`session_replicas` 1)
    /// or with no other member up.
    pub fn replica_target(&self, client_id: &str) -> Option<u64> {
        if self.replicas.copies < 2 {
            return None;
        }
        let me = self.node_id;
        let candidates: Vec<u64> = {
            let down = self.down.read();
            self.cluster
                .members()
                .into_iter()
                .map(|m| m.id)
                .filter(|id| *id != me && !down.contains(id) && !self.replicas.recently_failed(*id))
                .collect()
        };
        super::rehome::rehome_pick(client_id, &candidates)
    }

    /// Queues `update` for the replica on `node`; `done` hears whether the
    /// replica stored it durably. Changes queued one after the other are
    /// stored in that order.
    pub fn replicate(&self, node: u64, update: cluster::ReplicaUpdate, done: Option<ReplicaDone>) {
        self.ship(node, Item::Update(update), done);
    }

    /// Queues `item` on the link to `node`, behind what is queued there.
    pub(super) fn ship(&self, node: u64, item: Item, done: Option<ReplicaDone>) {
        let mut links = self.replicas.links.lock();
        let link = links.entry(node).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.runtime.spawn(run_link(
                self.cluster.clone(),
                node,
                rx,
                self.forward_timeout,
                Arc::clone(&self.replicas.failed),
                Arc::clone(&self.replicas.stats),
            ));
            tx
        });
        if let Err(mpsc::error::SendError(ship)) = link.send(Ship { item, done }) {
            // the runtime is shutting down
            if let Some(done) = ship.done {
                done(false);
            }
        }
    }

    /// Replication counters.
    pub fn replica_stats(&self) -> &ReplicaStats {
        self.replicas.stats()
    }

    /// The replica of `client_id`'s session that was shipped by `owner`,
    /// from this node's store or another member's (every member but
    /// `owner` is asked, at once); the most recent when several have one
    /// ([`newer`]: one left behind on a node that failed a request and
    /// missed its drop).
    pub async fn fetch_replica(
        &self,
        client_id: &str,
        owner: u64,
    ) -> Option<cluster::SessionReplica> {
        let mut best = match self.store.load_replica(client_id) {
            Ok(found) => found
                .map(super::replica_from_store)
                .filter(|r| r.owner == owner),
            Err(e) => {
                tracing::error!(%client_id, error = %e, "unreadable session replica");
                None
            }
        };
        let asks: Vec<_> = self
            .cluster
            .members()
            .into_iter()
            .map(|m| m.id)
            .filter(|id| *id != owner && *id != self.node_id)
            .map(|node| {
                let cluster = self.cluster.clone();
                let client_id = client_id.to_owned();
                let timeout = self.forward_timeout / 2;
                self.runtime.spawn(async move {
                    let asked =
                        tokio::time::timeout(timeout, cluster.fetch_replica(node, client_id));
                    (node, asked.await)
                })
            })
            .collect();
        for ask in asks {
            match ask.await {
                Ok((_, Ok(Ok(Some(r))))) if r.owner == owner => {
                    if best.as_ref().is_none_or(|b| newer(&r, b)) {
                        best = Some(r);
                    }
                }
                Ok((_, Ok(Ok(_)))) => {}
                Ok((node, Ok(Err(e)))) => {
                    tracing::info!(%client_id, node, error = %e, "replica fetch failed")
                }
                Ok((node, Err(_))) => tracing::info!(%client_id, node, "replica fetch timed out"),
                Err(_) => {}
            }
        }
        best
    }
}

/// Splits `durable` in two: it runs once both parts have, with the first
/// part's result (this node's write); the second part (a replica) only
/// says when: a replica that failed is counted by its link and left
/// behind.
pub fn join(durable: storage::Durable) -> (storage::Durable, ReplicaDone) {
    struct Join {
        left: u8,
        result: Option<storage::Result<()>>,
        durable: Option<storage::Durable>,
    }
    fn arrive(join: &Mutex<Join>, result: Option<storage::Result<()>>) {
        let mut j = join.lock();
        if let Some(result) = result {
            j.result = Some(result);
        }
        j.left -= 1;
        if j.left == 0 {
            let durable = j.durable.take();
            let result = j.result.take().unwrap_or(Ok(()));
            drop(j);
            if let Some(durable) = durable {
                durable(result);
            }
        }
    }
    let join = Arc::new(Mutex::new(Join {
        left: 2,
        result: None,
        durable: Some(durable),
    }));
    let other = Arc::clone(&join);
    (
        Box::new(move |result| arrive(&join, Some(result))),
        Box::new(move |_stored| arrive(&other, None)),
    )
}

/// True if `a` is a later state of one owner's session than `b`. A
/// replica left behind holds a prefix of the owner's changes (`run_link`
/// sends nothing after a failed request), and the owner placed the newer
/// one with its whole state: so a higher seq is newer; at the same seq
/// (no copy given since), the newer one has had more copies completed
/// (fewer left) or released.
fn newer(a: &cluster::SessionReplica, b: &cluster::SessionReplica) -> bool {
    let released =
        |r: &cluster::SessionReplica| r.outgoing.iter().filter(|(_, o)| o.released).count();
    (a.max_seq, std::cmp::Reverse(a.outgoing.len()), released(a))
        > (b.max_seq, std::cmp::Reverse(b.outgoing.len()), released(b))
}

/// Sends the changes queued for the replica on `node`, one request at a
/// time, and answers each change's `done`.
async fn run_link(
    cluster: cluster::Cluster,
    node: u64,
    mut rx: mpsc::UnboundedReceiver<Ship>,
    timeout: Duration,
    failed: Arc<Mutex<HashMap<u64, Instant>>>,
    stats: Arc<ReplicaStats>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_UPDATES {
            match rx.try_recv() {
                Ok(ship) => batch.push(ship),
                Err(_) => break,
            }
        }
        let mut request = cluster::ReplicaBatch::default();
        let mut dones = Vec::with_capacity(batch.len());
        for ship in batch {
            match ship.item {
                Item::Update(u) => request.updates.push(u),
                Item::Keep(k) => request.keep.push(k),
                Item::Forget { node, seq } => request.forget.push((node, seq)),
            }
            dones.push(ship.done);
        }
        let skipped = super::replica_records::skip_completed_puts(&mut request.updates);
        let count = request.len() as u64;
        let stored = match tokio::time::timeout(timeout, cluster.replicate(node, request)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(node, error = %e, "session replica request failed; sessions move their replica to another node");
                false
            }
            Err(_) => {
                tracing::warn!(node, ?timeout, "session replica request timed out; sessions move their replica to another node");
                false
            }
        };
        if stored {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            stats.updates.fetch_add(count, Ordering::Relaxed);
            stats
                .puts_skipped
                .fetch_add(skipped as u64, Ordering::Relaxed);
        } else {
            stats.failed_requests.fetch_add(1, Ordering::Relaxed);
            failed.lock().insert(node, Instant::now());
            // What was queued behind the failed request is not sent: the
            // replica keeps a prefix of its sessions' changes, with no gap
            // (sessions place their replica elsewhere from now on).
            while let Ok(ship) = rx.try_recv() {
                dones.push(ship.done);
            }
        }
        for done in dones.into_iter().flatten() {
            done(stored);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_bridge::replica_records::tests::replica;

    #[test]
    fn the_newer_replica_has_the_higher_seq_then_fewer_copies_then_more_released() {
        let left_behind = replica(5, &[(4, false), (5, false)]);
        assert!(newer(
            &replica(6, &[(4, false), (5, false), (6, false)]),
            &left_behind
        ));
        assert!(
            newer(&replica(5, &[(5, false)]), &left_behind),
            "4 completed since"
        );
        assert!(
            newer(&replica(5, &[(4, true), (5, false)]), &left_behind),
            "4 released since"
        );
        assert!(!newer(&left_behind, &left_behind));
        assert!(!newer(&left_behind, &replica(5, &[(5, false)])));
    }

    #[test]
    fn a_joined_callback_runs_once_after_both_parts_with_the_owners_result() {
        use std::sync::atomic::AtomicU8;
        for replica_first in [false, true] {
            for owner_ok in [false, true] {
                let calls = Arc::new(AtomicU8::new(0));
                let seen = Arc::clone(&calls);
                let (local, replica) = join(Box::new(move |result| {
                    assert_eq!(result.is_ok(), owner_ok);
                    seen.fetch_add(1, Ordering::SeqCst);
                }));
                let owner_result = if owner_ok {
                    Ok(())
                } else {
                    Err(storage::Error::Closed)
                };
                if replica_first {
                    replica(false);
                    assert_eq!(calls.load(Ordering::SeqCst), 0, "waits for the owner");
                    local(owner_result);
                } else {
                    local(owner_result);
                    assert_eq!(calls.load(Ordering::SeqCst), 0, "waits for the replica");
                    replica(true);
                }
                assert_eq!(calls.load(Ordering::SeqCst), 1);
            }
        }
    }
}
