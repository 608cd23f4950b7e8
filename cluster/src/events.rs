//! What the cluster tells the embedding broker: events and status.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::{
    state::Change,
    types::{
        ForwardedPublish, Member, ReplicaBatch, RetainedMessage, SessionReplica, SessionState,
    },
};

/// Sent to the broker on the channel given to `Cluster::start`.
///
/// Order: the state events (routes, sessions, retained, members) are sent by
/// the raft driver in log order, after the change is applied, so a
/// `Cluster` read made after receiving one sees at least that change. The
/// data-plane events (`Forwarded`, `TakeoverRequested`) come from gRPC tasks
/// and interleave with them in no particular order.
#[derive(Debug)]
pub enum ClusterEvent {
    /// `node` has subscribers to `filter` now: forward matching publishes.
    RouteAdded { filter: String, node: u64 },
    /// `node` has no subscriber to `filter` any more.
    RouteRemoved { filter: String, node: u64 },
    /// The session `client_id` is owned by `owner` now. If this node held
    /// it, it must disconnect the client and hand over what it still has.
    SessionOwnerChanged { client_id: String, owner: u64 },
    /// The session ended (its owner released it).
    SessionReleased { client_id: String },
    /// A retained message was set; an empty payload means deleted.
    RetainedChanged { message: RetainedMessage },
    /// A publish forwarded by another node. Deliver it to local sessions,
    /// then answer on `ack`: `Ok` once handled (for a persistent session,
    /// once stored), `Err(reason)` to refuse it. The sender's `forward`
    /// resolves with that answer; without it, the peer sends it again after
    /// the link reconnects.
    Forwarded {
        msg: ForwardedPublish,
        ack: oneshot::Sender<Result<(), ForwardRefusal>>,
    },
    /// Node `requester` takes the session `client_id` over: disconnect the
    /// client and answer with its state (`None`: no such session here).
    TakeoverRequested {
        client_id: String,
        requester: u64,
        reply: oneshot::Sender<Option<SessionState>>,
    },
    /// Node `from` (draining) asks this node to adopt the session
    /// `client_id`: take it over from `from`, store it, claim it, then
    /// answer `Ok` (`Err(reason)` if it could not).
    AdoptRequested {
        client_id: String,
        from: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Node `owner` ships changes of sessions it owns to their replica
    /// here, and copies it keeps for nodes that are down: store them in
    /// order, then answer `Ok` once durable (`Err(reason)` if they could
    /// not be stored).
    Replicate {
        owner: u64,
        batch: ReplicaBatch,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Another node holding second copies of this node's kept copies asks
    /// which it still keeps: answer `(node, seq)` of each, and the seq the
    /// next kept copy will have at least.
    KeptCopies {
        reply: oneshot::Sender<(Vec<(u64, u64)>, u64)>,
    },
    /// Another node takes the session `client_id` over while its owner is
    /// unreachable: answer with the replica held here, if any.
    FetchReplica {
        client_id: String,
        reply: oneshot::Sender<Option<SessionReplica>>,
    },
    /// The member list or an address changed; the list after the change.
    MembersChanged { members: Vec<Member> },
    /// A hub route made through the admin API was set (`Some` definition,
    /// JSON) or deleted (`None`): every node starts, changes or stops it.
    HubRouteChanged {
        name: String,
        definition: Option<String>,
    },
    /// This node has a leader and has applied the log it knew of: proposals
    /// now complete. Sent once.
    BecameReady,
    /// This node was removed from the cluster: proposals fail from now on.
    Removed,
    /// The raft driver stopped on a fatal error (storage): the node no
    /// longer takes part in the cluster. The broker should stop.
    Failed { reason: String },
}

/// Why a node refused a forwarded publish; the forwarding node gets its
/// text and fails the publisher's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardRefusal {
    /// A copy for a persistent session could not be stored.
    #[error("a copy could not be stored")]
    NotStored,
    /// The message does not decode here (properties, QoS): the field and why.
    #[error("{0}")]
    Invalid(String),
}

impl ClusterEvent {
    /// The event for a state change; members are read when the change is
    /// reported.
    pub(crate) fn from_change(
        change: Change,
        members: impl FnOnce() -> Vec<Member>,
    ) -> ClusterEvent {
        match change {
            Change::RouteAdded { filter, node } => ClusterEvent::RouteAdded { filter, node },
            Change::RouteRemoved { filter, node } => ClusterEvent::RouteRemoved { filter, node },
            Change::SessionOwnerChanged { client_id, owner } => {
                ClusterEvent::SessionOwnerChanged { client_id, owner }
            }
            Change::SessionReleased { client_id } => ClusterEvent::SessionReleased { client_id },
            Change::RetainedChanged(message) => ClusterEvent::RetainedChanged { message },
            Change::MembersChanged => ClusterEvent::MembersChanged { members: members() },
            Change::HubRouteChanged { name, definition } => {
                ClusterEvent::HubRouteChanged { name, definition }
            }
        }
    }
}

/// One peer in [`ClusterStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its node id.
    pub id: u64,
    /// Its gRPC address, as this node knows it.
    pub address: String,
    /// Time since a message was last received from it or delivered to it.
    pub last_contact: Option<Duration>,
    /// Highest log index known replicated on it (on the leader; else 0).
    pub matched: u64,
}

/// This node's view of the cluster, for `tern cluster status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node.
    pub node_id: u64,
    /// The leader, if known.
    pub leader: Option<u64>,
    /// Current raft term.
    pub term: u64,
    /// Highest log index known committed.
    pub commit_index: u64,
    /// Highest log index applied to the state machine.
    pub applied_index: u64,
    /// "leader", "follower", "candidate" or "pre-candidate".
    pub role: &'static str,
    /// See [`ClusterEvent::BecameReady`].
    pub ready: bool,
    /// The raft configuration holds a voter (false while joining).
    pub initialized: bool,
    /// This node was removed from the cluster.
    pub removed: bool,
    /// Why the raft driver stopped, if it did.
    pub failed: Option<String>,
    /// Members with their addresses.
    pub members: Vec<Member>,
    /// Voters of the raft configuration.
    pub voters: Vec<u64>,
    /// Learners of the raft configuration.
    pub learners: Vec<u64>,
    /// Every other member.
    pub peers: Vec<PeerStatus>,
}
