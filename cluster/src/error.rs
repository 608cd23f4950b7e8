//! The cluster crate's one error type.

use std::{net::SocketAddr, sync::Arc, time::Duration};

/// `Result` with the cluster [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the cluster API can fail with. `Clone`, because one fatal
/// storage error is handed to every waiting caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable (node id 0, a seed that does not parse,
    /// ...). Returned by `Cluster::start` only.
    #[error("cluster configuration: {0}")]
    Config(String),

    /// The gRPC listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// What the operating system said.
        source: Arc<std::io::Error>,
    },

    /// Reading or writing the raft log failed. Fatal: the node stops taking
    /// part in the cluster (raft-rs: the node is "inoperable"), every later
    /// call fails with [`Error::Stopped`] carrying this message.
    #[error("raft storage: {0}")]
    Storage(#[from] storage::Error),

    /// raft-rs refused an operation (invalid raft configuration at start,
    /// a configuration change that would leave no voter, ...).
    #[error("raft: {0}")]
    Raft(String),

    /// A proposal was not applied on this node within the proposal timeout:
    /// no leader, no quorum, or this node cannot reach them. It may still be
    /// applied later.
    #[error("{what} not applied within {after:?} (no leader or no quorum reachable)")]
    Timeout {
        /// What was proposed.
        what: &'static str,
        /// The timeout that passed.
        after: Duration,
    },

    /// `update_session` or `release_session` by a node that does not own the
    /// session (another node claimed it meanwhile), or `claim_session` for a
    /// session another node claimed after the owner the claimant saw.
    #[error("session `{client_id}` is owned by node {owner:?}, not by this node")]
    NotOwner {
        /// The session's client id.
        client_id: String,
        /// Its owner, `None` if the session does not exist.
        owner: Option<u64>,
    },

    /// A proposal the state machine refused as invalid (QoS above 2, empty
    /// topic, ...): nothing changed.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was refused.
        what: &'static str,
        /// Which field and why.
        reason: String,
    },

    /// The node id is not a member of the cluster (or has no address yet).
    #[error("node {0} is not a member of the cluster")]
    UnknownNode(u64),

    /// A peer could not be reached or answered with an error.
    #[error("node {node}: {reason}")]
    Peer {
        /// The peer's node id.
        node: u64,
        /// What went wrong, with the gRPC status if there is one.
        reason: String,
    },

    /// Too many forwarded messages already wait for this peer
    /// (`forward_queue_limit`): the message was not queued.
    #[error("node {node}: {queued} forwarded messages already wait for it")]
    Backlog {
        /// The peer's node id.
        node: u64,
        /// How many wait.
        queued: usize,
    },

    /// The receiving node's broker refused a forwarded message (not retried).
    #[error("node {node} refused forwarded message: {reason}")]
    Rejected {
        /// The peer's node id.
        node: u64,
        /// The broker's reason.
        reason: String,
    },

    /// `take_over`: the owner has no such session.
    #[error("node {node} has no session `{client_id}`")]
    SessionNotFound {
        /// The node asked.
        node: u64,
        /// The client id.
        client_id: String,
    },

    /// Bytes from a peer or from the raft log could not be decoded.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Which field and why.
        reason: String,
    },

    /// This node was removed from the cluster by a configuration change.
    #[error("this node was removed from the cluster")]
    Removed,

    /// The cluster was shut down, or its raft driver stopped on a fatal
    /// error (the reason).
    #[error("cluster stopped: {0}")]
    Stopped(String),
}

impl Error {
    /// An [`Error::Decode`].
    pub(crate) fn decode(what: &'static str, reason: impl std::fmt::Display) -> Error {
        Error::Decode {
            what,
            reason: reason.to_string(),
        }
    }

    /// An [`Error::Peer`] from a gRPC status.
    pub(crate) fn peer(node: u64, status: &tonic::Status) -> Error {
        Error::Peer {
            node,
            reason: format!("{:?}: {}", status.code(), status.message()),
        }
    }
}
