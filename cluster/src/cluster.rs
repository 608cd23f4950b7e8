//! `Cluster`: the handle the broker holds.
//!
//! It owns the node's moving parts (raft driver thread, gRPC server, peer
//! links, background membership tasks) and exposes them as the API in the
//! crate docs. It never blocks an async task: proposals are channel sends
//! and awaits; the only blocking work (opening and replaying the raft log)
//! runs in `spawn_blocking`.
//!
//! # Lifecycle
//! 1. `start`: validate the config, bind, open and replay the raft log
//!    (founding a cluster of one if there are no other seeds), start the
//!    driver thread, the gRPC server and the membership task.
//! 2. Running: proposals go to the driver and resolve when applied here;
//!    reads take the state's read lock; forwarding and takeover go straight
//!    to peers.
//! 3. `shutdown`: cancel the token (server, links, membership stop), tell
//!    the driver to stop, join it. The store stays open for the caller.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use crossbeam_channel::Sender;
use proto::proposal::Command;
use storage::{RaftStorage, Store};
use tokio::sync::{mpsc::UnboundedSender, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    config::ClusterConfig,
    driver::{self, Driver, Input, Shared},
    error::{Error, Result},
    events::{ClusterEvent, ClusterStatus, PeerStatus},
    forward::{Forwarder, Receiver},
    membership,
    node::{MemberChange, NodeConfig},
    service,
    state::{ClusterState, Outcome},
    transport::Peers,
    types::{
        FailedOver, ForwardedPublish, Member, ReplicaBatch, RetainedMessage, SessionInfo,
        SessionReplica, SessionState,
    },
};

/// The cluster handle; cheap to clone. See the crate docs for the API.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.inner.config.node_id)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) config: ClusterConfig,
    /// The address other nodes reach this one at.
    pub(crate) advertise: String,
    pub(crate) driver: Sender<Input>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) peers: Arc<Peers>,
    pub(crate) forwarder: Forwarder,
    pub(crate) receiver: Arc<Receiver>,
    pub(crate) events: UnboundedSender<ClusterEvent>,
    /// This node's subscriber count per filter (see `add_route`).
    routes: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<usize>>>>,
    pub(crate) shutdown: CancellationToken,
    threads: parking_lot::Mutex<Vec<std::thread::JoinHandle<()>>>,
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Cluster {
    /// Starts this node: binds `config.listen`, then see
    /// [`Cluster::start_with_listener`].
    pub async fn start(
        config: ClusterConfig,
        store: Store,
        events: UnboundedSender<ClusterEvent>,
    ) -> Result<Cluster> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::Bind {
                addr: config.listen,
                source: Arc::new(e),
            })?;
        Cluster::start_with_listener(config, listener, store, events).await
    }

    /// Starts this node on a listener already bound (tests bind port 0).
    ///
    /// Returns once the raft log on disk is replayed: `routes()`,
    /// `sessions()`, `retained()` and `members()` then show the state as of
    /// the last start, and events report changes after it. A node that is
    /// not yet part of a cluster contacts the seeds in the background;
    /// [`ClusterEvent::BecameReady`] tells when proposals can complete.
    pub async fn start_with_listener(
        config: ClusterConfig,
        listener: tokio::net::TcpListener,
        store: Store,
        events: UnboundedSender<ClusterEvent>,
    ) -> Result<Cluster> {
        config.validate()?;
        let local = listener.local_addr().map_err(|e| Error::Bind {
            addr: config.listen,
            source: Arc::new(e),
        })?;
        let advertise = if config.advertise.is_empty() {
            local.to_string()
        } else {
            config.advertise.clone()
        };
        let node_config = NodeConfig {
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            retry_ticks: 2 * config.election_ticks as u64,
            snapshot_threshold: config.snapshot_threshold,
            log_keep: config.log_keep,
            ..NodeConfig::new(config.node_id)
        };
        let shared = Arc::new(Shared {
            state: Arc::default(),
            status: parking_lot::Mutex::default(),
            failed: parking_lot::Mutex::default(),
        });
        let single = config.is_single_node();
        let (storage, node, messages) = {
            let (node_config, state) = (node_config.clone(), Arc::clone(&shared.state));
            let id = config.node_id;
            tokio::task::spawn_blocking(move || -> Result<_> {
                let storage = RaftStorage::open(&store)?;
                if single && !storage.is_initialized() {
                    storage.bootstrap(raft::eraftpb::ConfState {
                        voters: vec![id],
                        ..Default::default()
                    })?;
                }
                let (node, messages) = driver::replay(node_config, storage.clone(), state)?;
                Ok((storage, node, messages))
            })
            .await
            .map_err(|e| Error::Stopped(format!("opening the raft log: {e}")))??
        };
        *shared.status.lock() = node.status();
        let shutdown = CancellationToken::new();
        let (driver_tx, driver_rx) = crossbeam_channel::unbounded();
        let bind_outgoing = config
            .bind_outgoing
            .or_else(|| Some(local.ip()).filter(|ip| !ip.is_unspecified()));
        let peers = Arc::new(Peers::new(
            config.node_id,
            config.rpc_timeout,
            bind_outgoing,
            Arc::clone(&shared.state),
            &config.seeds,
            driver_tx.clone(),
            shutdown.clone(),
        ));
        peers.send(messages);
        let driver = Driver {
            node,
            config: node_config,
            storage,
            tick: config.tick,
            inputs: driver_rx,
            peers: Arc::clone(&peers),
            events: events.clone(),
            shared: Arc::clone(&shared),
        };
        let thread = std::thread::Builder::new()
            .name(format!("tern-raft-{}", config.node_id))
            .spawn(move || driver.run())
            .map_err(|e| Error::Stopped(format!("starting the raft driver thread: {e}")))?;
        let forwarder = Forwarder::new(
            Arc::clone(&peers),
            config.forward_batch,
            config.forward_window,
            config.forward_queue_limit,
            shutdown.clone(),
        );
        let cluster = Cluster {
            inner: Arc::new(Inner {
                advertise,
                driver: driver_tx,
                shared,
                peers,
                forwarder,
                receiver: Arc::new(Receiver::new(events.clone(), shutdown.clone())),
                events,
                routes: parking_lot::Mutex::default(),
                shutdown,
                threads: parking_lot::Mutex::new(vec![thread]),
                tasks: parking_lot::Mutex::default(),
                config,
            }),
        };
        let server = tokio::spawn(service::serve(cluster.clone(), listener));
        let membership = tokio::spawn(membership::run(cluster.clone()));
        let probe =
            tokio::spawn(Arc::clone(&cluster.inner.peers).probe(cluster.inner.shutdown.clone()));
        cluster
            .inner
            .tasks
            .lock()
            .extend([server, membership, probe]);
        Ok(cluster)
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.inner.config.node_id
    }

    fn stopped(&self) -> Error {
        match &*self.inner.shared.failed.lock() {
            Some(reason) => Error::Stopped(reason.clone()),
            None => Error::Stopped("shut down".into()),
        }
    }

    /// Sends an input to the driver and waits for the outcome, at most the
    /// proposal timeout.
    async fn submit(
        &self,
        what: &'static str,
        make: impl FnOnce(oneshot::Sender<Result<Outcome>>) -> Input,
    ) -> Result<Outcome> {
        let (tx, rx) = oneshot::channel();
        if self.inner.driver.send(make(tx)).is_err() {
            return Err(self.stopped());
        }
        let after = self.inner.config.proposal_timeout;
        match tokio::time::timeout(after, rx).await {
            Err(_) => Err(Error::Timeout { what, after }),
            Ok(Err(_)) => Err(self.stopped()),
            Ok(Ok(result)) => result,
        }
    }

    /// Proposes `command`; resolves once applied on this node.
    pub(crate) async fn propose(&self, what: &'static str, command: Command) -> Result<Outcome> {
        let outcome = self
            .submit(what, |waiter| Input::Propose {
                command,
                waiter: Some(waiter),
            })
            .await?;
        match outcome {
            Outcome::Invalid(reason) => Err(Error::Invalid { what, reason }),
            other => Ok(other),
        }
    }

    /// Proposes a membership change; resolves once applied on this node.
    pub(crate) async fn change_members(&self, change: MemberChange) -> Result<()> {
        let outcome = self
            .submit("membership change", |waiter| Input::MemberChange {
                change,
                waiter: Some(waiter),
            })
            .await?;
        match outcome {
            Outcome::Invalid(reason) => Err(Error::Raft(reason)),
            _ => Ok(()),
        }
    }

    fn route_slot(&self, filter: &str) -> Arc<tokio::sync::Mutex<usize>> {
        let mut routes = self.inner.routes.lock();
        Arc::clone(routes.entry(filter.to_owned()).or_default())
    }

    /// Drops the slot of `filter` if no one else holds it and it counts 0.
    fn release_slot(&self, filter: &str, slot: Arc<tokio::sync::Mutex<usize>>) {
        let mut routes = self.inner.routes.lock();
        // Two holders: the map and `slot`; nobody else can take it while
        // the map is locked.
        if Arc::strong_count(&slot) == 2 && slot.try_lock().is_ok_and(|c| *c == 0) {
            routes.remove(filter);
        }
    }

    /// One more local subscriber to `filter`. The first one proposes the
    /// route (this node into the filter's node set) and resolves once it is
    /// applied here; later ones resolve at once. Calls for one filter are
    /// serialized, so the replicated set follows the local count.
    pub async fn add_route(&self, filter: String) -> Result<()> {
        let slot = self.route_slot(&filter);
        let result = {
            let mut count = slot.lock().await;
            *count += 1;
            let me = self.node_id();
            let present = self.inner.shared.state.read().has_route(&filter, me);
            if *count == 1 && !present {
                let command = Command::AddRoute(proto::AddRoute {
                    filter: filter.clone(),
                    node: me,
                });
                let result = self.propose("route", command).await.map(drop);
                if result.is_err() {
                    *count -= 1;
                }
                result
            } else {
                Ok(())
            }
        };
        self.release_slot(&filter, slot);
        result
    }

    /// One local subscriber to `filter` fewer; the last one proposes the
    /// route's removal and resolves once applied here.
    pub async fn remove_route(&self, filter: String) -> Result<()> {
        let slot = self.route_slot(&filter);
        let result = {
            let mut count = slot.lock().await;
            *count = count.saturating_sub(1);
            let me = self.node_id();
            let present = self.inner.shared.state.read().has_route(&filter, me);
            if *count == 0 && present {
                let command = Command::RemoveRoute(proto::RemoveRoute {
                    filter: filter.clone(),
                    node: me,
                });
                self.propose("route", command).await.map(drop)
            } else {
                Ok(())
            }
        };
        self.release_slot(&filter, slot);
        result
    }

    /// Removes this node's routes that no local subscriber counts. Call it
    /// after restart once every local subscription was re-added with
    /// `add_route`, to drop routes of sessions that ended while down.
    pub async fn prune_routes(&self) -> Result<()> {
        let me = self.node_id();
        let filters: Vec<String> = self
            .inner
            .shared
            .state
            .read()
            .routes()
            .iter()
            .filter(|(_, nodes)| nodes.contains(&me))
            .map(|(f, _)| f.clone())
            .collect();
        for filter in filters {
            if !self.inner.routes.lock().contains_key(&filter) {
                self.remove_route(filter).await?;
            }
        }
        Ok(())
    }

    /// This node takes the session over from `seen`, the owner it saw when
    /// the client connected (`None`: no owner); returns the previous owner
    /// (`None` if the session was new; this node's id if it already owned
    /// it). `Error::NotOwner` with the current owner if another node
    /// claimed it since (or it was released). `failed_over`: this node took
    /// the session from a replica of `seen` holding its copies through that
    /// seq (see `ClaimSession.failed_over_from`).
    pub async fn claim_session(
        &self,
        client_id: String,
        record: SessionInfo,
        seen: Option<u64>,
        failed_over: Option<FailedOver>,
    ) -> Result<Option<u64>> {
        let command = Command::ClaimSession(proto::ClaimSession {
            client_id: client_id.clone(),
            node: self.node_id(),
            info: Some((&record).into()),
            expected_owner: Some(seen.unwrap_or(0)),
            failed_over_from: failed_over.map_or(0, |f| f.from),
            through_seq: failed_over.map_or(0, |f| f.through_seq),
        });
        match self.propose("session claim", command).await? {
            Outcome::Claimed(previous) => Ok(previous),
            Outcome::NotOwner(owner) => Err(Error::NotOwner { client_id, owner }),
            other => Err(Error::Raft(format!(
                "unexpected outcome of a claim: {other:?}"
            ))),
        }
    }

    /// Replaces the session's replicated record; `Error::NotOwner` if this
    /// node does not own it.
    pub async fn update_session(&self, client_id: String, record: SessionInfo) -> Result<()> {
        let command = Command::UpdateSession(proto::UpdateSession {
            client_id: client_id.clone(),
            node: self.node_id(),
            info: Some((&record).into()),
        });
        match self.propose("session update", command).await? {
            Outcome::NotOwner(owner) => Err(Error::NotOwner { client_id, owner }),
            _ => Ok(()),
        }
    }

    /// Deletes the session; `Ok` if it does not exist, `Error::NotOwner` if
    /// another node owns it.
    pub async fn release_session(&self, client_id: String) -> Result<()> {
        let command = Command::ReleaseSession(proto::ReleaseSession {
            client_id: client_id.clone(),
            node: self.node_id(),
        });
        match self.propose("session release", command).await? {
            Outcome::NotOwner(Some(owner)) => Err(Error::NotOwner {
                client_id,
                owner: Some(owner),
            }),
            _ => Ok(()),
        }
    }

    /// Sets (or, with an empty payload, deletes) a retained message.
    pub async fn set_retained(&self, msg: RetainedMessage) -> Result<()> {
        let command = Command::SetRetained(proto::SetRetained {
            message: Some(crate::types::message_to_proto(&msg)),
        });
        self.propose("retained message", command).await.map(drop)
    }

    /// Creates or replaces (`Some` definition) or deletes (`None`) a hub
    /// route made through the admin API, on every node; returns once applied
    /// on this one.
    pub async fn set_hub_route(&self, name: &str, definition: Option<String>) -> Result<()> {
        let command = match definition {
            Some(definition) => Command::SetHubRoute(proto::SetHubRoute {
                name: name.to_owned(),
                definition,
            }),
            None => Command::DeleteHubRoute(proto::DeleteHubRoute {
                name: name.to_owned(),
            }),
        };
        self.propose("hub route", command).await.map(drop)
    }

    /// Hub routes made through the admin API: (name, definition), by name.
    pub fn hub_routes(&self) -> Vec<(String, String)> {
        let state = self.inner.shared.state.read();
        state
            .hub_routes()
            .iter()
            .map(|(n, d)| (n.clone(), d.clone()))
            .collect()
    }

    /// Every route: filter and the nodes with subscribers to it (applied
    /// state, no I/O).
    pub fn routes(&self) -> BTreeMap<String, BTreeSet<u64>> {
        self.inner.shared.state.read().routes().clone()
    }

    /// The owner of a session.
    pub fn session_owner(&self, client_id: &str) -> Option<u64> {
        self.inner
            .shared
            .state
            .read()
            .session(client_id)
            .map(|s| s.owner)
    }

    /// A session's replicated record.
    pub fn session(&self, client_id: &str) -> Option<SessionInfo> {
        self.inner
            .shared
            .state
            .read()
            .session(client_id)
            .map(|s| s.info.clone())
    }

    /// Every session: client id, owner, record.
    pub fn sessions(&self) -> Vec<(String, u64, SessionInfo)> {
        let state = self.inner.shared.state.read();
        state
            .sessions()
            .iter()
            .map(|(id, s)| (id.clone(), s.owner, s.info.clone()))
            .collect()
    }

    /// Every retained message.
    pub fn retained(&self) -> Vec<RetainedMessage> {
        self.inner
            .shared
            .state
            .read()
            .retained()
            .values()
            .cloned()
            .collect()
    }

    /// Members and their addresses, by id.
    pub fn members(&self) -> Vec<Member> {
        self.inner.shared.state.read().members().cloned().collect()
    }

    /// A read of the whole applied state.
    pub fn with_state<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        f(&self.inner.shared.state.read())
    }

    /// Forwards a publish to `node`; resolves with that node's broker's
    /// answer (see `forward.rs` for the guarantee). No timeout: wrap it.
    pub async fn forward(&self, node: u64, mut msg: ForwardedPublish) -> Result<()> {
        msg.origin_node = self.node_id();
        self.inner.forwarder.forward(node, msg).await
    }

    /// Like [`forward`](Self::forward), but queues the message before it
    /// returns (from any thread or runtime): messages queued one after the
    /// other reach the peer in that order. The future resolves with the
    /// peer broker's answer.
    pub fn forward_in_order(
        &self,
        node: u64,
        mut msg: ForwardedPublish,
    ) -> Result<impl std::future::Future<Output = Result<()>> + Send + 'static> {
        msg.origin_node = self.node_id();
        self.inner.forwarder.enqueue(node, msg)
    }

    /// Asks `owner` to hand the session over (it disconnects the client).
    pub async fn take_over(&self, owner: u64, client_id: String) -> Result<SessionState> {
        let channel = self.inner.peers.channel(owner)?;
        let mut client = proto::sessions_client::SessionsClient::new(channel)
            .max_decoding_message_size(crate::transport::MAX_GRPC_MESSAGE);
        let mut request = tonic::Request::new(proto::TakeoverRequest {
            client_id: client_id.clone(),
            requester: self.node_id(),
        });
        request.set_timeout(self.inner.config.takeover_timeout + self.inner.config.rpc_timeout);
        let reply = client
            .takeover(request)
            .await
            .map_err(|s| Error::peer(owner, &s))?
            .into_inner();
        match reply.state {
            Some(state) => crate::types::session_state_from_proto(state),
            None => Err(Error::SessionNotFound {
                node: owner,
                client_id,
            }),
        }
    }

    /// Ships changes of sessions this node owns to their replica on
    /// `node`; resolves once `node` stored them durably. No timeout: wrap
    /// it.
    pub async fn replicate(&self, node: u64, batch: ReplicaBatch) -> Result<()> {
        let channel = self.inner.peers.channel(node)?;
        let mut client = proto::replicas_client::ReplicasClient::new(channel)
            .max_encoding_message_size(crate::transport::MAX_GRPC_MESSAGE);
        let request = proto::ReplicateRequest {
            owner: self.node_id(),
            updates: batch.updates.iter().map(Into::into).collect(),
            keep: batch
                .keep
                .into_iter()
                .map(|k| proto::KeptCopy {
                    node: k.node,
                    seq: k.seq,
                    copy: k.copy,
                })
                .collect(),
            forget: batch
                .forget
                .into_iter()
                .map(|(node, seq)| proto::KeptKey { node, seq })
                .collect(),
        };
        client
            .replicate(request)
            .await
            .map_err(|s| Error::peer(node, &s))?;
        Ok(())
    }

    /// The copies `node` keeps for nodes that are down, as `(node, seq)`,
    /// and the seq its next kept copy will have at least.
    pub async fn kept_copies(&self, node: u64) -> Result<(Vec<(u64, u64)>, u64)> {
        let channel = self.inner.peers.channel(node)?;
        let mut client = proto::replicas_client::ReplicasClient::new(channel)
            .max_decoding_message_size(crate::transport::MAX_GRPC_MESSAGE);
        let mut request = tonic::Request::new(proto::KeptCopiesRequest {});
        request.set_timeout(self.inner.config.takeover_timeout + self.inner.config.rpc_timeout);
        let reply = client
            .kept_copies(request)
            .await
            .map_err(|s| Error::peer(node, &s))?
            .into_inner();
        Ok((
            reply.kept.into_iter().map(|k| (k.node, k.seq)).collect(),
            reply.next_seq,
        ))
    }

    /// The replica of `client_id`'s session that `node` holds, if any.
    pub async fn fetch_replica(
        &self,
        node: u64,
        client_id: String,
    ) -> Result<Option<SessionReplica>> {
        let channel = self.inner.peers.channel(node)?;
        let mut client = proto::replicas_client::ReplicasClient::new(channel)
            .max_decoding_message_size(crate::transport::MAX_GRPC_MESSAGE);
        let mut request = tonic::Request::new(proto::FetchReplicaRequest { client_id });
        request.set_timeout(self.inner.config.takeover_timeout + self.inner.config.rpc_timeout);
        let reply = client
            .fetch(request)
            .await
            .map_err(|s| Error::peer(node, &s))?
            .into_inner();
        reply
            .replica
            .map(crate::types::replica_from_proto)
            .transpose()
    }

    /// The seq through which `node`'s own copy of `client_id`'s session was
    /// superseded by a fail-over (`Session::superseded`), if it was.
    pub fn superseded_through(&self, client_id: &str, node: u64) -> Option<u64> {
        self.with_state(|s| {
            s.session(client_id)
                .and_then(|s| s.superseded.get(&node).copied())
        })
    }

    /// Asks `node` to adopt the session `client_id` this node holds (a
    /// drain): it takes the session over from here, stores and claims it.
    pub async fn adopt(&self, node: u64, client_id: String) -> Result<()> {
        let channel = self.inner.peers.channel(node)?;
        let mut client = proto::sessions_client::SessionsClient::new(channel);
        let mut request = tonic::Request::new(proto::AdoptRequest {
            client_id,
            from: self.node_id(),
        });
        request.set_timeout(self.inner.config.takeover_timeout * 2 + self.inner.config.rpc_timeout);
        client
            .adopt(request)
            .await
            .map_err(|s| Error::peer(node, &s))?;
        Ok(())
    }

    /// If this node leads, asks raft to hand leadership to the most
    /// up-to-date other voter (a drain, before the node stops). Returns at
    /// once; `status().leader` tells when it happened.
    pub fn step_down(&self) {
        let _ = self.inner.driver.send(Input::StepDown);
    }

    /// Removes a node from the cluster (a configuration change). Removing
    /// this node makes it leave; the others go on without it.
    pub async fn remove_member(&self, id: u64) -> Result<()> {
        self.change_members(MemberChange::Remove(id)).await
    }

    /// What each link to another node has carried (links start with the
    /// first message to their node).
    pub fn forward_stats(&self) -> Vec<crate::forward::ForwardStats> {
        self.inner.forwarder.stats()
    }

    /// True when the cluster confirmed this node's role (leader or
    /// follower of the current term, see `NodeStatus::confirmed_at`)
    /// within twice the election timeout: longer than that, an election has
    /// started elsewhere and this node's view may be stale (it was paused,
    /// or cut off), even if it still believes it leads.
    pub fn in_contact(&self) -> bool {
        let window = self.inner.config.tick * (2 * self.inner.config.election_ticks) as u32;
        self.inner
            .shared
            .status
            .lock()
            .confirmed_at
            .is_some_and(|at| at.elapsed() <= window)
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let node = self.inner.shared.status.lock().clone();
        let members = self.members();
        let peers = members
            .iter()
            .filter(|m| m.id != node.id)
            .map(|m| PeerStatus {
                id: m.id,
                address: self.inner.peers.address(m.id).unwrap_or_default(),
                last_contact: self.inner.peers.last_contact(m.id),
                matched: node.matched.get(&m.id).copied().unwrap_or(0),
            })
            .collect();
        ClusterStatus {
            node_id: node.id,
            leader: node.leader,
            term: node.term,
            commit_index: node.commit_index,
            applied_index: node.applied_index,
            role: node.role,
            ready: node.ready,
            initialized: node.initialized,
            removed: node.removed,
            failed: self.inner.shared.failed.lock().clone(),
            members,
            voters: node.voters,
            learners: node.learners,
            peers,
        }
    }

    /// Stops this node: the server, the links, the raft driver (its thread
    /// is joined). The store stays open, for the caller to close.
    pub async fn shutdown(self) {
        self.inner.shutdown.cancel();
        let _ = self.inner.driver.send(Input::Shutdown);
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let threads = std::mem::take(&mut *self.inner.threads.lock());
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}
