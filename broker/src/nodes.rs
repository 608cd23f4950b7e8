//! What a node asks of the other nodes of its cluster, as one trait the rest
//! of the broker calls without knowing whether there are other nodes:
//! [`Cluster`]. A node alone runs [`SingleNode`]; a clustered node runs
//! `crate::cluster_bridge::ClusterBridge`. Chosen once at startup
//! (`crate::server`).
//!
//! The broker never branches on "clustered or not": a session proposes its
//! routes and ownership (a node alone has nobody to tell), routing forwards
//! to the nodes its router names (a node alone has none), a retained message
//! is stored where this node's retained messages live (its store, or the
//! replicated state), a connecting client's session is taken from the node
//! that owns it (a node alone owns them all).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::handle::{hold_until_durable, AckGuard, Imported, LazyGuard};
use crate::message::Message;

/// A future the trait's callers await, on any runtime.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A replicated-state change to propose.
#[derive(Debug)]
pub enum Proposal {
    AddRoute(String),
    RemoveRoute(String),
    /// This node takes the session; the owner it saw when the client
    /// connected (the claim is refused if another node claimed it since),
    /// and, for a session taken from a replica of that owner, what the
    /// replica held (`cluster::FailedOver`).
    Claim(
        String,
        cluster::SessionInfo,
        Option<u64>,
        Option<cluster::FailedOver>,
    ),
    Update(String, cluster::SessionInfo),
    Release(String),
    /// Answered once every proposal queued before it was made.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// What another node gets of one message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemoteTarget {
    /// Its plain subscriptions match.
    pub plain: bool,
    /// Shared groups for which it was picked.
    pub shared: Vec<String>,
}

/// This node is not caught up with the cluster (no leader known, or
/// committed entries not applied yet): it cannot tell who owns a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReady;

/// What this node's registry knows of a client's session when it connects
/// (`Registry::handed_to`, `Registry::get`), for [`Cluster::take_session`].
#[derive(Debug, Clone, Default)]
pub struct SessionHere {
    /// The node this node handed the session to lately.
    pub handed_to: Option<u64>,
    /// This node runs the session (online or offline).
    pub live: bool,
    /// The actor of the session that moved from here lately
    /// (`Registry::moved_for`): it may have kept the session after
    /// handing it over, to go on with should its taker have failed.
    pub moved: Option<crate::handle::SessionRef>,
}

/// The other nodes, as this node sees them.
pub trait Cluster: Send + Sync + std::fmt::Debug {
    /// This node's id; 0 for a node alone.
    fn node_id(&self) -> u64;

    /// Queues a replicated-state change behind the earlier ones about the
    /// same client or filter.
    fn propose(&self, proposal: Proposal);

    /// [`propose`](Self::propose)s what `make` builds, if anyone is told:
    /// a node alone never builds it (a session's record costs allocations).
    fn propose_with(&self, make: &mut dyn FnMut() -> Proposal) {
        self.propose(make());
    }

    /// Like [`propose`](Self::propose); the receiver resolves once the
    /// change was made (applied here, or failed). `None`: made already
    /// (there is nobody else to tell).
    fn propose_applied(&self, proposal: Proposal) -> Option<tokio::sync::oneshot::Receiver<()>>;

    /// Sends `message` to `node` for its subscribers (`target`). For QoS
    /// 1/2 to a node that is up, the message's guard waits for its answer.
    fn forward(
        &self,
        node: u64,
        message: &Arc<Message>,
        target: RemoteTarget,
        guard: &mut LazyGuard,
    );

    /// Sends a message a session held to the node that owns the session
    /// now, with the QoS 2 flow it had open with the client, if any.
    /// Resolves to whether that node stored it.
    fn forward_to_session(
        &self,
        node: u64,
        client_id: &str,
        message: &Message,
        delivery: (crate::codec::QoS, bool),
        subscription_ids: &[u32],
        flow: Option<cluster::OpenFlow>,
    ) -> BoxFuture<'static, bool>;

    /// Stores the retained message of `message`'s topic (an empty payload
    /// deletes it) where this node's retained messages live; `guard` is
    /// held until it is durable.
    fn store_retained(&self, message: &Arc<Message>, guard: Option<AckGuard>);

    /// The retained messages this node restores from its own store at
    /// startup (a cluster restores them from the replicated state instead).
    fn load_retained(&self, store: &storage::Store)
        -> storage::Result<Vec<storage::StoredMessage>>;

    /// Creates or replaces (`Some` definition, JSON) or deletes (`None`) a
    /// hub route made through the admin API, where such routes live: the
    /// store of a node alone, the replicated state of a cluster (every node
    /// then hears `ClusterEvent::HubRouteChanged`). Resolves once durable
    /// (alone) or applied on this node (cluster); the error says why not.
    fn set_hub_route(
        &self,
        name: &str,
        definition: Option<String>,
    ) -> BoxFuture<'static, Result<(), String>>;

    /// The hub routes made through the admin API, started at startup.
    fn load_hub_routes(&self, store: &storage::Store) -> storage::Result<Vec<(String, String)>>;

    /// Before a client's connection is attached here: if another node owns
    /// its session, takes it over; `None` when there is nothing to import
    /// (no other owner, or Clean Start). `Err(NotReady)`: this node is not
    /// caught up with the cluster and cannot tell who owns the session (the
    /// CONNECT is refused with Server Unavailable; the client tries again).
    fn take_session<'a>(
        &'a self,
        client_id: &'a str,
        clean_start: bool,
        here: SessionHere,
    ) -> BoxFuture<'a, Result<Option<Imported>, NotReady>>;

    /// True if `node` was heard from recently (a node alone has no other).
    fn is_up(&self, node: u64) -> bool;

    /// The node to hold the replica of `client_id`'s session owned here
    /// (issue 12): `None` for a node alone, with `cluster.session_replicas`
    /// 1, or with no other member up.
    fn replica_target(&self, _client_id: &str) -> Option<u64> {
        None
    }

    /// Ships a change of a session owned here to its replica on `node`;
    /// `done` hears whether the replica stored it durably. Changes shipped
    /// one after the other are stored in that order.
    fn replicate(&self, _node: u64, _update: cluster::ReplicaUpdate, done: Option<ReplicaDone>) {
        if let Some(done) = done {
            done(false);
        }
    }

    /// The seq through which this node's own copy of `client_id`'s
    /// session was superseded by a fail-over to a replica while this node
    /// was unreachable (its copies up to there are stale); `None` if not.
    fn superseded_through(&self, _client_id: &str) -> Option<u64> {
        None
    }

    /// The node that owns `client_id`'s session in the replicated state
    /// (`None`: no such session, or a node alone).
    fn session_owner(&self, _client_id: &str) -> Option<u64> {
        None
    }

    /// The MQTT address of another live node for `client_id` (5.0 Server
    /// Reference when this node drains or is not ready); `None` for a node
    /// alone or when no other node is up.
    fn redirect(&self, _client_id: &str) -> Option<String> {
        None
    }

    /// The seq the next copy kept for a node that is down will have at
    /// least (`kept.rs`; 0 for a node alone).
    fn kept_next_seq(&self) -> u64 {
        0
    }

    /// Counters of the session replicas this node ships (`None`: a node
    /// alone), for `/metrics`.
    fn replica_stats(&self) -> Option<&ReplicaStats> {
        None
    }

    /// The raft group, for reports (status, metrics, `$SYS`); `None` for a
    /// node alone.
    fn raft(&self) -> Option<&cluster::Cluster>;
}

/// Told whether a shipped change was stored by the replica.
pub type ReplicaDone = Box<dyn FnOnce(bool) + Send>;

/// Counters of the session replication, for `/metrics`.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Requests a replica stored.
    pub requests: AtomicU64,
    /// Session changes in them.
    pub updates: AtomicU64,
    /// Puts of copies left out of a request because a later change in it
    /// deletes them (the client completed them meanwhile).
    pub puts_skipped: AtomicU64,
    /// Requests that failed (replica down, refused, timed out).
    pub failed_requests: AtomicU64,
    /// Sessions taken over from a replica (fail-over).
    pub fail_overs: AtomicU64,
}

/// A node without a cluster: its store holds its retained messages, it owns
/// every session, and there is nobody to propose to or forward to.
#[derive(Debug)]
pub struct SingleNode {
    writer: storage::Writer,
}

impl SingleNode {
    pub fn new(writer: storage::Writer) -> SingleNode {
        SingleNode { writer }
    }
}

impl Cluster for SingleNode {
    fn node_id(&self) -> u64 {
        0
    }

    fn propose(&self, proposal: Proposal) {
        if let Proposal::Barrier(done) = proposal {
            let _ = done.send(());
        }
    }

    fn propose_with(&self, _: &mut dyn FnMut() -> Proposal) {}

    fn propose_applied(&self, _: Proposal) -> Option<tokio::sync::oneshot::Receiver<()>> {
        None
    }

    fn forward(&self, _: u64, _: &Arc<Message>, _: RemoteTarget, _: &mut LazyGuard) {
        // A node alone has no `Subscriber::Node` in its router.
    }

    fn forward_to_session(
        &self,
        _: u64,
        _: &str,
        _: &Message,
        _: (crate::codec::QoS, bool),
        _: &[u32],
        _: Option<cluster::OpenFlow>,
    ) -> BoxFuture<'static, bool> {
        Box::pin(std::future::ready(false))
    }

    fn store_retained(&self, message: &Arc<Message>, guard: Option<AckGuard>) {
        let op = if message.payload.is_empty() {
            storage::WriteOp::DeleteRetained {
                topic: message.topic.to_string(),
            }
        } else {
            storage::WriteOp::PutRetained {
                message: message.to_stored(message.qos, true, &[]),
            }
        };
        self.writer.submit(vec![op], hold_until_durable(guard));
    }

    fn load_retained(
        &self,
        store: &storage::Store,
    ) -> storage::Result<Vec<storage::StoredMessage>> {
        store.load_retained()
    }

    fn set_hub_route(
        &self,
        name: &str,
        definition: Option<String>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let route = name.to_owned();
        let op = match definition {
            Some(definition) => storage::WriteOp::PutHubRoute { route, definition },
            None => storage::WriteOp::DeleteHubRoute { route },
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writer.submit(
            vec![op],
            Some(Box::new(move |result: storage::Result<()>| {
                let _ = tx.send(result.map_err(|e| e.to_string()));
            })),
        );
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("the store closed before the write".into()))
        })
    }

    fn load_hub_routes(&self, store: &storage::Store) -> storage::Result<Vec<(String, String)>> {
        store.load_hub_routes()
    }

    fn take_session<'a>(
        &'a self,
        _: &'a str,
        _: bool,
        _: SessionHere,
    ) -> BoxFuture<'a, Result<Option<Imported>, NotReady>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn is_up(&self, _: u64) -> bool {
        true
    }

    fn raft(&self) -> Option<&cluster::Cluster> {
        None
    }
}
