//! Shipping this session's stored messages to its replica on another node
//! (issue 12; `cluster_bridge/replicas.rs` has the links and the reasons):
//! every store write about its queued and in-flight copies and received
//! QoS 2 ids goes to the replica too, and what waits for the write (a
//! publisher's acknowledgement, a PUBREC, a PUBREL) waits for both.

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
                let (local, replica) = crate::cluster_bridge::join(durable);
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
                let messages = snapshot.put_outgoing.len();
                match shipped_to {
                    Some(from) => {
                        tracing::info!(client_id = %self.client_id(), from, to = node, messages, "session replica moved to another node")
                    }
                    None => {
                        tracing::debug!(client_id = %self.client_id(), node, messages, "session replica placed")
                    }
                }
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

    /// The node the session's replica was last shipped to.
    pub(super) fn replica_placed_on(&self) -> Option<u64> {
        self.replica.as_ref().and_then(|r| r.node)
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
