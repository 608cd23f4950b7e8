//! Shipping this session's stored messages to its replica on another node
//! (issue 12; `cluster_bridge/replicas.rs` has the links and the reasons):
//! every store write about its queued and in-flight copies and received
//! QoS 2 ids goes to the replica too, and what waits for the write (a
//! publisher's acknowledgement, a PUBREC, a PUBREL) waits for both.

use std::sync::Arc;

use parking_lot::Mutex;

use super::outgoing::OutState;
use super::Session;
use crate::codec::QoS;

/// Where this session's replica is, and how the session came here.
#[derive(Debug, Default)]
pub(super) struct ReplicaLink {
    /// The node holding the replica, as of the last change shipped.
    node: Option<u64>,
    /// Taken from a replica of its unreachable owner: the next claim says
    /// so (`cluster::FailedOver`), so that owner, back, does not hand over
    /// its stale copies.
    pub(super) failed_over: Option<cluster::FailedOver>,
}

impl Session {
    /// Ships `change` to the session's replica (a persistent session in a
    /// cluster with `session_replicas` 2), first with the whole state if
    /// the replica is on a node it was not on before (new, or its node
    /// failed). Returns the callback for the owner's own write of the same
    /// change: with a replica, `durable` runs once both are done, with the
    /// owner's result (a replica that failed is counted and left behind,
    /// see `replicas.rs`).
    pub(super) fn replicate(
        &mut self,
        mut change: cluster::ReplicaUpdate,
        durable: Option<storage::Durable>,
    ) -> Option<storage::Durable> {
        if !self.is_persistent() {
            return durable;
        }
        let Some(node) = self.replica_node() else {
            return durable;
        };
        change.client_id = self.client_id().to_string();
        let highest_put = change.put_outgoing.iter().map(|(seq, _)| *seq).max();
        change.max_seq = self.shipped_max_seq(highest_put);
        let cluster = self.state.cluster();
        match durable {
            None => {
                cluster.replicate(node, change, None);
                None
            }
            Some(durable) => {
                let (local, replica) = join(durable);
                cluster.replicate(node, change, Some(replica));
                Some(local)
            }
        }
    }

    /// The node to ship to now; sends the whole state first if it is not
    /// the node shipped to before. `None`: no replica (a node alone, or no
    /// other member up), and `durable` goes to the owner's write alone.
    fn replica_node(&mut self) -> Option<u64> {
        let target = self.state.cluster().replica_target(self.client_id());
        let shipped_to = self.replica.as_ref().and_then(|r| r.node);
        if target != shipped_to {
            if let Some(old) = shipped_to {
                // best effort: a node that failed a request may not hear it
                self.state
                    .cluster()
                    .replicate(old, self.replica_drop(), None);
            }
            if let Some(node) = target {
                let snapshot = self.replica_snapshot();
                tracing::debug!(client_id = %self.client_id(), node, from = ?shipped_to, messages = snapshot.put_outgoing.len(), "session replica placed");
                self.state.cluster().replicate(node, snapshot, None);
            }
            self.replica.get_or_insert_with(Box::default).node = target;
        }
        target
    }

    /// Ships the whole state to the replica node now (after an import, or
    /// when the replica's node changed), if there is one.
    pub(super) fn replicate_all(&mut self) {
        if let Some(link) = self.replica.as_mut() {
            link.node = None;
        }
        if self.is_persistent() {
            self.replica_node();
        }
    }

    /// The session ended: its replica goes too.
    pub(super) fn drop_replica(&mut self) {
        let Some(node) = self.replica.as_mut().and_then(|r| r.node.take()) else {
            return;
        };
        self.state
            .cluster()
            .replicate(node, self.replica_drop(), None);
    }

    fn replica_drop(&self) -> cluster::ReplicaUpdate {
        cluster::ReplicaUpdate {
            client_id: self.client_id().to_string(),
            drop: true,
            ..Default::default()
        }
    }

    /// The members, or which are up, changed: a session owned here that
    /// holds stored messages places its replica again where it is to be
    /// now (a replica's node went down or left: the replica count is
    /// restored at once, not at the session's next change).
    pub(super) fn replace_replica(&mut self) {
        let owned_here = matches!(
            self.lifecycle,
            super::core::Lifecycle::Online | super::core::Lifecycle::Offline { .. }
        );
        let cluster = self.state.cluster();
        let owner = cluster.session_owner(self.client_id());
        if owned_here && owner == Some(cluster.node_id()) && self.stored && self.is_persistent() {
            self.replica_node();
        }
    }

    /// The session moved to another node, which places its own replica:
    /// nothing more is shipped from here.
    pub(super) fn stop_replicating(&mut self) {
        if let Some(link) = self.replica.as_mut() {
            link.node = None;
        }
    }

    /// Every stored copy and received QoS 2 id of the session, as one
    /// change that replaces what the replica held.
    fn replica_snapshot(&self) -> cluster::ReplicaUpdate {
        let put_outgoing: Vec<(u64, storage::OutgoingRecord)> = self
            .outgoing
            .iter()
            .filter(|m| m.qos != QoS::AtMostOnce)
            .map(|m| {
                (
                    m.seq,
                    storage::OutgoingRecord {
                        released: m.state == OutState::Released,
                        uid: m.message.uid,
                        message: m.message.to_stored(m.qos, m.retain, &m.subscription_ids),
                    },
                )
            })
            .collect();
        let highest = put_outgoing.iter().map(|(seq, _)| *seq).max();
        cluster::ReplicaUpdate {
            client_id: self.client_id().to_string(),
            reset: true,
            put_outgoing,
            put_incoming_qos2: self.incoming.qos2_ids(),
            max_seq: self.shipped_max_seq(highest),
            ..Default::default()
        }
    }

    /// The highest seq given a copy so far, `put` included.
    fn shipped_max_seq(&self, put: Option<u64>) -> u64 {
        self.outgoing
            .next_seq()
            .saturating_sub(1)
            .max(put.unwrap_or(0))
    }
}

/// Splits `durable` in two: it runs once both parts have, with the first
/// part's result (the owner's write); the second part (the replica) only
/// says when.
fn join(durable: storage::Durable) -> (storage::Durable, crate::cluster_bridge::ReplicaDone) {
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

#[cfg(test)]
mod tests {
    use super::join;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_joined_callback_runs_once_after_both_parts_with_the_owners_result() {
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
