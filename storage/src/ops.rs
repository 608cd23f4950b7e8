//! [`WriteOp`]: the changes the group-commit writer applies, and the check
//! that refuses one the store could not read back. How they are applied is
//! `writer.rs`; what each tree holds is in the crate docs' "Trees".

use bytes::Bytes;

use crate::{
    error::{Error, Result},
    keys,
    records::{
        self, OutgoingRecord, RouteRecord, SessionRecord, StoredMessage, SubscriptionRecord,
    },
    replica::ReplicaMeta,
};

/// One change to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Creates or replaces a session.
    PutSession {
        client_id: String,
        record: SessionRecord,
    },
    /// Deletes the session and all of its subscriptions, outgoing and
    /// incoming_qos2 records (not a replica kept under the same client id).
    DeleteSession { client_id: String },
    /// Creates or replaces the subscription keyed by `record.filter`.
    PutSubscription {
        client_id: String,
        record: SubscriptionRecord,
    },
    /// Deletes one subscription.
    DeleteSubscription { client_id: String, filter: String },
    /// Creates or replaces outgoing message `seq`.
    PutOutgoing {
        client_id: String,
        seq: u64,
        record: OutgoingRecord,
    },
    /// Deletes outgoing message `seq`.
    DeleteOutgoing { client_id: String, seq: u64 },
    /// Records a QoS 2 packet id received and not yet released.
    PutIncomingQos2 { client_id: String, packet_id: u16 },
    /// Forgets a released QoS 2 packet id.
    DeleteIncomingQos2 { client_id: String, packet_id: u16 },
    /// Creates or replaces the retained message of `message.topic`.
    PutRetained { message: StoredMessage },
    /// Deletes the retained message of `topic`.
    DeleteRetained { topic: String },
    /// Appends (or replaces) message `seq` of a hub route's queue.
    PutRouteMessage {
        route: String,
        seq: u64,
        record: RouteRecord,
    },
    /// Removes message `seq` from a hub route's queue.
    DeleteRouteMessage { route: String, seq: u64 },
    /// Drops a hub route's whole queue.
    DeleteRouteQueue { route: String },
    /// Creates or replaces the definition (JSON) of a hub route made
    /// through the admin API.
    PutHubRoute { route: String, definition: String },
    /// Deletes the definition of a hub route.
    DeleteHubRoute { route: String },
    /// Keeps copy `seq` of a message forwarded to peer `node` while that
    /// node is down (`copy`: opaque bytes, the cluster's wire form).
    PutForward { node: u64, seq: u64, copy: Bytes },
    /// Forgets copy `seq` for `node`: the node has acknowledged it.
    DeleteForward { node: u64, seq: u64 },
    /// Creates or replaces message `seq` of the replica of another node's
    /// session (`replica.rs`).
    PutReplicaOutgoing {
        client_id: String,
        seq: u64,
        record: OutgoingRecord,
    },
    /// Deletes message `seq` of a replica.
    DeleteReplicaOutgoing { client_id: String, seq: u64 },
    /// Records a QoS 2 packet id the replicated session received.
    PutReplicaIncoming { client_id: String, packet_id: u16 },
    /// Forgets a QoS 2 packet id the replicated session released.
    DeleteReplicaIncoming { client_id: String, packet_id: u16 },
    /// Creates or replaces a replica's owner and highest shipped seq.
    PutReplicaMeta {
        client_id: String,
        meta: ReplicaMeta,
    },
    /// Deletes the client's replica: its meta and all of its
    /// `replica_outgoing` and `replica_incoming` records, not the
    /// session's own records.
    DropReplica { client_id: String },
    /// [`WriteOp::DropReplica`] if the replica was shipped by `owner` (its
    /// meta, as of this op in its group, names it): a node cleaning up a
    /// replica left behind by a former owner never drops the one the
    /// session's new owner has just placed here.
    DropReplicaOf { client_id: String, owner: u64 },
    /// Keeps here copy `seq` that node `origin` keeps for peer `node` (its
    /// [`WriteOp::PutForward`]), so that the copy survives the loss of
    /// `origin`'s disk (`replica.rs`).
    PutReplicaForward {
        origin: u64,
        node: u64,
        seq: u64,
        copy: Bytes,
    },
    /// Forgets copy `seq` that `origin` kept for `node`: `node` has
    /// acknowledged it.
    DeleteReplicaForward { origin: u64, node: u64, seq: u64 },
    /// Forgets every copy `origin` kept here, for every node (not this
    /// node's own `forwards`).
    DropReplicaForwards { origin: u64 },
}

impl WriteOp {
    /// Refuses an op whose record the store could not read back.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Error::InvalidWrite { reason };
        match self {
            WriteOp::PutSession { client_id, .. }
            | WriteOp::DeleteSession { client_id }
            | WriteOp::DeleteSubscription { client_id, .. }
            | WriteOp::DeleteOutgoing { client_id, .. }
            | WriteOp::PutIncomingQos2 { client_id, .. }
            | WriteOp::DeleteIncomingQos2 { client_id, .. }
            | WriteOp::DeleteReplicaOutgoing { client_id, .. }
            | WriteOp::PutReplicaIncoming { client_id, .. }
            | WriteOp::DeleteReplicaIncoming { client_id, .. }
            | WriteOp::PutReplicaMeta { client_id, .. }
            | WriteOp::DropReplica { client_id }
            | WriteOp::DropReplicaOf { client_id, .. } => keys::check_client_id(client_id),
            WriteOp::PutSubscription { client_id, record } => {
                keys::check_client_id(client_id)?;
                records::validate_subscription(record).map_err(invalid)
            }
            WriteOp::PutOutgoing {
                client_id, record, ..
            }
            | WriteOp::PutReplicaOutgoing {
                client_id, record, ..
            } => {
                keys::check_client_id(client_id)?;
                records::validate_message(&record.message).map_err(invalid)
            }
            WriteOp::PutRetained { message } => records::validate_message(message).map_err(invalid),
            WriteOp::DeleteRetained { .. } => Ok(()),
            WriteOp::PutRouteMessage { route, record, .. } => {
                keys::check_route(route)?;
                records::validate_route_record(record).map_err(invalid)
            }
            WriteOp::DeleteRouteMessage { route, .. }
            | WriteOp::DeleteRouteQueue { route }
            | WriteOp::PutHubRoute { route, .. }
            | WriteOp::DeleteHubRoute { route } => keys::check_route(route),
            WriteOp::PutForward { copy, .. } | WriteOp::PutReplicaForward { copy, .. }
                if copy.len() > u32::MAX as usize =>
            {
                Err(invalid(
                    "forwarded copy is longer than 4294967295 bytes".into(),
                ))
            }
            WriteOp::PutForward { .. }
            | WriteOp::DeleteForward { .. }
            | WriteOp::PutReplicaForward { .. }
            | WriteOp::DeleteReplicaForward { .. }
            | WriteOp::DropReplicaForwards { .. } => Ok(()),
        }
    }
}
