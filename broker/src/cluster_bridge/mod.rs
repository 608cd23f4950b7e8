//! The broker's side of the cluster: what a node tells the others and does
//! on their behalf. The `cluster` crate replicates state and carries
//! messages; this module decides what to replicate and what to do with what
//! arrives.
//!
//! - Routes: every local subscription is counted into the replicated
//!   `filter -> nodes` map; other nodes' routes are entries
//!   `Subscriber::Node(id)` in this node's router, so one trie match finds
//!   local sessions and the nodes to forward to. A shared group's members on
//!   other nodes are nodes in the group: the round robin spans the cluster.
//! - Publishing: a message goes once to each other node with matching
//!   subscribers (`forward`), which delivers to its own sessions. For QoS
//!   1/2 the publisher's acknowledgement waits for the answer of every such
//!   node that is up (that node answers once its copies for persistent
//!   sessions are stored); a node that is down gets the message when its
//!   link reconnects, but the publisher does not wait for it.
//! - Sessions: each node claims the sessions of the clients connected to it
//!   (ownership, subscriptions and expiry are replicated). A client that
//!   connects to another node makes that node take the session over from its
//!   owner (state and queued messages move over gRPC), or, if the owner is
//!   down, resume it from the replicated subscriptions at once; the old
//!   owner hands what it still holds to the new one when it learns of the
//!   move (`OwnerMoved`).
//! - Retained messages are replicated.
//!
//! Proposals about one client or one filter are applied in the order they
//! were made: they go through one of `WORKERS` (16) sequential queues,
//! chosen by a hash of the client id or filter.
//!
//! Lifecycle: `server::start_cluster` runs the cluster on a runtime of its
//! own, [`load`] puts the replicated routes and retained messages into the
//! router; [`run_events`] then applies the cluster's events until shutdown;
//! [`ClusterBridge::stop`].

mod events;
mod kept;
mod placement;
mod rehome;
mod replica_records;
mod replicas;
mod takeover;

pub use crate::nodes::{ReplicaDone, ReplicaStats};
pub use placement::keep_replicas_placed;
pub use replica_records::{replica_from_store, replica_ops, state_from_replica};
pub use replicas::join;
pub use takeover::{AdoptingGuard, TakeOverError};

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::RwLock;
use tokio::sync::mpsc;

pub use events::{load, run_events, AdoptFn};
pub use kept::regroup_refused;

use crate::codec;
use crate::handle::{hold_until_durable, AckGuard, Imported, LazyGuard};
use crate::message::Message;
use crate::nodes::{BoxFuture, Cluster, NotReady, Proposal, RemoteTarget};

/// Sequential queues of proposals.
const WORKERS: usize = 16;

/// This node's handle on the cluster. Chosen once at startup.
pub struct ClusterBridge {
    cluster: cluster::Cluster,
    node_id: u64,
    /// The runtime the cluster runs on; cluster calls are spawned there.
    runtime: tokio::runtime::Handle,
    /// How long a publisher's acknowledgement waits for another node.
    forward_timeout: Duration,
    /// Nodes not heard from recently: the publisher does not wait for them.
    down: RwLock<HashSet<u64>>,
    workers: Vec<mpsc::UnboundedSender<Proposal>>,
    hasher: foldhash::fast::RandomState,
    /// Sessions being adopted from a draining node: a client connecting
    /// for one of them waits until it is here (`take_session`).
    adopting: Arc<parking_lot::Mutex<HashSet<String>>>,
    /// When this node's cluster started: a peer never heard from since
    /// has been out of contact at least this long.
    started: std::time::Instant,
    /// Set once this node was ready and in contact with the cluster after
    /// it started: before, it takes no client (`take_session`).
    caught_up_once: std::sync::atomic::AtomicBool,
    /// Copies for nodes that are down, on disk (`kept.rs`).
    kept: Arc<kept::Kept>,
    /// Where kept copies that their node refused for shared groups go, to
    /// be given to another member (`regroup_refused`).
    refused_groups: std::sync::OnceLock<mpsc::UnboundedSender<(cluster::ForwardedPublish, u64)>>,
    /// Sessions this node took over from another node (by client id: that
    /// node, and when), until its claim is seen in or the entry ages out:
    /// while the replicated owner is still that node, the session live here
    /// is newer than the copy it kept (`takeover::go_on_with_live`).
    taken_from: parking_lot::Mutex<HashMap<String, (u64, std::time::Instant)>>,
    /// Where the sessions owned here ship their stored messages
    /// (`replicas.rs`).
    replicas: replicas::Replicas,
    /// This node's store: the replicas it holds are read from it.
    store: storage::Store,
    /// This bridge, for tasks that outlive a call.
    me: std::sync::Weak<ClusterBridge>,
}

impl std::fmt::Debug for ClusterBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBridge")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// How long without contact makes a peer count as down.
const DOWN_AFTER: Duration = Duration::from_secs(3);

impl ClusterBridge {
    /// Wraps a started cluster.
    pub fn new(
        cluster: cluster::Cluster,
        runtime: tokio::runtime::Handle,
        forward_timeout: Duration,
        store: storage::Store,
        session_replicas: usize,
    ) -> Arc<ClusterBridge> {
        let writer = store.writer();
        let mut workers = Vec::with_capacity(WORKERS);
        for _ in 0..WORKERS {
            let (tx, rx) = mpsc::unbounded_channel();
            runtime.spawn(propose_in_order(cluster.clone(), rx));
            workers.push(tx);
        }
        let bridge = Arc::new_cyclic(|me| ClusterBridge {
            kept: Arc::new(kept::Kept::new(writer)),
            refused_groups: std::sync::OnceLock::new(),
            me: me.clone(),
            node_id: cluster.node_id(),
            cluster,
            runtime,
            forward_timeout,
            down: RwLock::new(HashSet::new()),
            workers,
            hasher: foldhash::fast::RandomState::default(),
            adopting: Arc::default(),
            started: std::time::Instant::now(),
            caught_up_once: std::sync::atomic::AtomicBool::new(false),
            taken_from: parking_lot::Mutex::default(),
            replicas: replicas::Replicas::new(session_replicas),
            store,
        });
        bridge.runtime.spawn(watch_health(Arc::downgrade(&bridge)));
        bridge
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The cluster handle, for reads of the replicated state.
    pub fn cluster(&self) -> &cluster::Cluster {
        &self.cluster
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Queues a proposal behind the earlier ones about the same client or
    /// filter.
    pub fn propose(&self, proposal: Proposal) {
        let i = self.worker_of(&proposal);
        // The workers live as long as the runtime; a send fails only at shutdown.
        let _ = self.workers[i].send(proposal);
    }

    /// Queues `proposal` like [`propose`](Self::propose); the receiver
    /// resolves once it was made (applied here, or failed).
    pub fn propose_applied(&self, proposal: Proposal) -> tokio::sync::oneshot::Receiver<()> {
        let i = self.worker_of(&proposal);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.workers[i].send(proposal);
        let _ = self.workers[i].send(Proposal::Barrier(tx));
        rx
    }

    /// The queue of proposals about `proposal`'s client or filter.
    fn worker_of(&self, proposal: &Proposal) -> usize {
        let key = match proposal {
            Proposal::AddRoute(f) | Proposal::RemoveRoute(f) => f,
            Proposal::Claim(c, ..) | Proposal::Update(c, _) | Proposal::Release(c) => c,
            Proposal::Barrier(_) => "",
        };
        (self.hasher.hash_one(key) as usize) % WORKERS
    }

    /// Waits until every proposal queued so far was made.
    pub async fn settled(&self) {
        let mut waits = Vec::new();
        for worker in &self.workers {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = worker.send(Proposal::Barrier(tx));
            waits.push(rx);
        }
        for w in waits {
            let _ = w.await;
        }
    }

    /// Sends `message` to `node` for its subscribers (`target`). For QoS 1/2
    /// to a node that is up, the message's guard waits for its answer.
    pub fn forward(
        &self,
        node: u64,
        message: &Arc<Message>,
        target: RemoteTarget,
        guard: &mut LazyGuard,
    ) {
        let for_target = |message: &Message, target: RemoteTarget| cluster::ForwardedPublish {
            no_plain_match: !target.plain,
            shared_filters: target.shared,
            ..forwarded_publish(message)
        };
        if message.qos == codec::QoS::AtMostOnce {
            let no_wait: Option<(AckGuard, fn() -> cluster::ForwardedPublish)> = None;
            return self.send(node, for_target(message, target), no_wait);
        }
        if self.down.read().contains(&node) {
            // the publisher waits for this node's disk, not for the peer
            return self.keep(node, for_target(message, target), guard.get());
        }
        // Should the peer go down before it answers, the copy is kept on
        // disk then, built again from the message (not encoded up front:
        // most answers come).
        let again = (message.clone(), target.clone());
        let rebuild = move || for_target(&again.0, again.1);
        self.send(
            node,
            for_target(message, target),
            guard.get().map(|g| (g, rebuild)),
        );
    }

    /// Sends a message a session held to the node that owns the session now.
    /// Resolves to whether that node stored it.
    pub fn forward_to_session(
        &self,
        node: u64,
        client_id: &str,
        message: &Message,
        (qos, retain): (codec::QoS, bool),
        subscription_ids: &[u32],
        flow: Option<cluster::OpenFlow>,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let forwarded = cluster::ForwardedPublish {
            qos: qos as u8,
            retain,
            no_plain_match: true,
            target_client: Some(client_id.to_owned()),
            subscription_ids: subscription_ids.to_vec(),
            flow,
            ..forwarded_publish(message)
        };
        let timeout = self.forward_timeout;
        // queued now: a session's messages reach the owner in order
        let answer = self.cluster.forward_in_order(node, forwarded);
        let task = self.runtime.spawn(async move {
            match answer {
                Ok(answer) => matches!(tokio::time::timeout(timeout, answer).await, Ok(Ok(()))),
                Err(_) => false,
            }
        });
        async move { task.await.unwrap_or(false) }
    }

    /// Queues `forwarded` on the link to `node`. With `waiting` (QoS 1/2),
    /// the publisher's guard waits for the answer; if the node goes down
    /// before it comes, the copy (built again by the closure) is kept on
    /// disk and the guard waits for that instead (`kept.rs`).
    fn send<F>(
        self: &ClusterBridge,
        node: u64,
        mut forwarded: cluster::ForwardedPublish,
        waiting: Option<(AckGuard, F)>,
    ) where
        F: FnOnce() -> cluster::ForwardedPublish + Send + 'static,
    {
        let cluster = self.cluster.clone();
        let timeout = self.forward_timeout;
        // `cluster.forward` lasts until the answer; the other node's
        // `cluster.apply` is its child
        let (span, traceparent) = crate::telemetry::forward_span(node);
        forwarded.traceparent = traceparent;
        // Queued here, in the publisher's order; only the answer is awaited
        // on the cluster's runtime.
        let answer = self.cluster.forward_in_order(node, forwarded);
        let Some((guard, rebuild)) = waiting else {
            self.runtime.spawn(async move {
                if let Ok(answer) = answer {
                    if let Err(e) = answer.await {
                        tracing::debug!(node, error = %e, "forwarded message not delivered");
                    }
                }
                drop(span);
            });
            return;
        };
        let bridge = self.me.clone();
        self.runtime.spawn(async move {
            let mut answer = match answer {
                Ok(answer) => Box::pin(answer),
                Err(e) => {
                    tracing::warn!(node, error = %e, "forwarded message refused");
                    return guard.fail();
                }
            };
            match tokio::time::timeout(timeout, &mut answer).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(node, error = %e, "forwarded message refused");
                    guard.fail();
                }
                Err(_) => match bridge.upgrade() {
                    Some(bridge) if peer_is_down(&cluster, node) => {
                        // The node died meanwhile: the copy stays queued on
                        // the link, and is kept on disk until it answers.
                        tracing::warn!(node, "forwarded message kept for a node that is down");
                        bridge.keep_until_answered(node, rebuild(), Some(guard), answer);
                    }
                    _ => {
                        tracing::warn!(node, "forwarded message not acknowledged in time");
                        guard.fail();
                    }
                },
            }
            drop(span);
        });
    }

    /// Replicates a retained message (an empty payload deletes it); `guard`
    /// waits until it is applied.
    pub fn set_retained(&self, message: &Arc<Message>, guard: Option<AckGuard>) {
        let stored = message.to_stored(message.qos, true, &[]);
        let cluster = self.cluster.clone();
        let durable = hold_until_durable(guard);
        self.runtime.spawn(async move {
            let result = cluster.set_retained(stored).await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "retained message not replicated");
            }
            if let Some(durable) = durable {
                durable(result.map_err(|e| storage::Error::Unavailable {
                    reason: e.to_string(),
                }));
            }
        });
    }

    /// The node owning `client_id`'s session, if any.
    pub fn session_owner(&self, client_id: &str) -> Option<u64> {
        self.cluster.session_owner(client_id)
    }

    /// True if `node` was heard from recently.
    pub fn is_up(&self, node: u64) -> bool {
        !self.down.read().contains(&node)
    }

    /// Stops the cluster node (server, links, raft driver).
    pub async fn stop(&self) {
        let cluster = self.cluster.clone();
        let _ = self
            .runtime
            .spawn(async move { cluster.shutdown().await })
            .await;
    }
}

impl Cluster for ClusterBridge {
    fn node_id(&self) -> u64 {
        self.node_id
    }

    fn propose(&self, proposal: Proposal) {
        ClusterBridge::propose(self, proposal)
    }

    fn propose_applied(&self, proposal: Proposal) -> Option<tokio::sync::oneshot::Receiver<()>> {
        Some(ClusterBridge::propose_applied(self, proposal))
    }

    fn forward(
        &self,
        node: u64,
        message: &Arc<Message>,
        target: RemoteTarget,
        guard: &mut LazyGuard,
    ) {
        ClusterBridge::forward(self, node, message, target, guard)
    }

    fn forward_to_session(
        &self,
        node: u64,
        client_id: &str,
        message: &Message,
        delivery: (codec::QoS, bool),
        subscription_ids: &[u32],
        flow: Option<cluster::OpenFlow>,
    ) -> BoxFuture<'static, bool> {
        Box::pin(ClusterBridge::forward_to_session(
            self,
            node,
            client_id,
            message,
            delivery,
            subscription_ids,
            flow,
        ))
    }

    fn store_retained(&self, message: &Arc<Message>, guard: Option<AckGuard>) {
        self.set_retained(message, guard)
    }

    fn load_retained(&self, _: &storage::Store) -> storage::Result<Vec<storage::StoredMessage>> {
        // The replicated retained messages are the truth (`load`).
        Ok(Vec::new())
    }

    fn set_hub_route(
        &self,
        name: &str,
        definition: Option<String>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let cluster = self.cluster.clone();
        let name = name.to_owned();
        let task = self
            .runtime
            .spawn(async move { cluster.set_hub_route(&name, definition).await });
        Box::pin(async move {
            match task.await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(e) => Err(format!("the proposal task failed: {e}")),
            }
        })
    }

    fn load_hub_routes(&self, _: &storage::Store) -> storage::Result<Vec<(String, String)>> {
        // The replicated state is the truth.
        Ok(self.cluster.hub_routes())
    }

    fn take_session<'a>(
        &'a self,
        client_id: &'a str,
        clean_start: bool,
        here: crate::nodes::SessionHere,
    ) -> BoxFuture<'a, Result<Option<Imported>, NotReady>> {
        Box::pin(ClusterBridge::take_session(
            self,
            client_id,
            clean_start,
            here,
        ))
    }

    fn is_up(&self, node: u64) -> bool {
        ClusterBridge::is_up(self, node)
    }

    fn replica_target(&self, client_id: &str) -> Option<u64> {
        ClusterBridge::replica_target(self, client_id)
    }

    fn replicate(&self, node: u64, update: cluster::ReplicaUpdate, done: Option<ReplicaDone>) {
        ClusterBridge::replicate(self, node, update, done);
    }

    fn superseded_through(&self, client_id: &str) -> Option<u64> {
        self.cluster.superseded_through(client_id, self.node_id)
    }

    fn kept_next_seq(&self) -> u64 {
        ClusterBridge::kept_next_seq(self)
    }

    fn replica_stats(&self) -> Option<&ReplicaStats> {
        Some(ClusterBridge::replica_stats(self))
    }

    fn session_owner(&self, client_id: &str) -> Option<u64> {
        ClusterBridge::session_owner(self, client_id)
    }

    fn redirect(&self, client_id: &str) -> Option<String> {
        ClusterBridge::redirect(self, client_id).map(|(_, address)| address)
    }

    fn raft(&self) -> Option<&cluster::Cluster> {
        Some(&self.cluster)
    }
}

/// The forwarded form of a message.
fn forwarded_publish(message: &Message) -> cluster::ForwardedPublish {
    let mut properties = BytesMut::new();
    codec::encode_publish_properties(&message.properties, &mut properties);
    cluster::ForwardedPublish {
        topic: message.topic.to_string(),
        payload: message.payload.clone(),
        qos: message.qos as u8,
        retain: message.retain,
        properties: properties.freeze(),
        expires_at_ms: message.expires_at_ms,
        uid: message.uid,
        ..Default::default()
    }
}

/// One sequential queue of proposals: each is applied before the next is
/// made, so proposals about one key keep their order.
async fn propose_in_order(cluster: cluster::Cluster, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    while let Some(proposal) = rx.recv().await {
        let result = match &proposal {
            Proposal::AddRoute(f) => cluster.add_route(f.clone()).await,
            Proposal::RemoveRoute(f) => cluster.remove_route(f.clone()).await,
            Proposal::Claim(c, info, seen, failed_over) => {
                claim(&cluster, c, info, *seen, *failed_over).await
            }
            Proposal::Update(c, info) => cluster.update_session(c.clone(), info.clone()).await,
            Proposal::Release(c) => cluster.release_session(c.clone()).await,
            Proposal::Barrier(_) => Ok(()),
        };
        if let Proposal::Barrier(done) = proposal {
            let _ = done.send(());
            continue;
        }
        if let Err(e) = result {
            tracing::warn!(?proposal, error = %e, "cluster proposal failed");
        }
    }
}

/// Claims `client_id` for this node from `seen`. Refused because another
/// node claimed it since: that node keeps it (this node's copy, if still
/// here, leaves on the `SessionOwnerChanged` of that claim). Refused because
/// it was released since (ended, expired): claimed as a new session.
async fn claim(
    cluster: &cluster::Cluster,
    client_id: &str,
    info: &cluster::SessionInfo,
    seen: Option<u64>,
    failed_over: Option<cluster::FailedOver>,
) -> cluster::Result<()> {
    match cluster
        .claim_session(client_id.to_owned(), info.clone(), seen, failed_over)
        .await
    {
        Ok(_) => Ok(()),
        Err(cluster::Error::NotOwner { owner: None, .. }) => cluster
            .claim_session(client_id.to_owned(), info.clone(), None, None)
            .await
            .map(drop),
        Err(cluster::Error::NotOwner {
            owner: Some(owner), ..
        }) => {
            tracing::info!(%client_id, ?seen, owner, "session claim refused: another node claimed the session since");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// True if `node` was not heard from in [`DOWN_AFTER`].
fn peer_is_down(cluster: &cluster::Cluster, node: u64) -> bool {
    cluster
        .status()
        .peers
        .iter()
        .any(|p| p.id == node && p.last_contact.is_none_or(|t| t > DOWN_AFTER))
}

/// Keeps the set of peers not heard from in [`DOWN_AFTER`].
async fn watch_health(bridge: std::sync::Weak<ClusterBridge>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let started = std::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        let status = bridge.cluster.status();
        // A peer not contacted yet is down only once it had DOWN_AFTER to
        // answer: counted down at startup, it would not be waited for.
        let down: HashSet<u64> = status
            .peers
            .iter()
            .filter(|p| {
                p.last_contact
                    .map_or(started.elapsed() > DOWN_AFTER, |t| t > DOWN_AFTER)
            })
            .map(|p| p.id)
            .collect();
        let mut current = bridge.down.write();
        if *current != down {
            tracing::info!(down = ?down, "cluster peers reachability changed");
            *current = down;
        }
    }
}
