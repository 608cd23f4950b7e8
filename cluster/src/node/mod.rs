//! `RaftNode`: one raft-rs `RawNode` with its storage and state machine, and
//! no I/O of its own besides the store.
//!
//! It owns the raft group's consensus state, the proposals this node has made
//! and not yet seen applied, and the replicated [`ClusterState`] (shared for
//! reads). It never touches a socket, a timer or a thread: the caller feeds it
//! ticks and peers' messages, and sends the messages it returns. The driver
//! (`driver.rs`) does so on its own thread with gRPC; the logic tests do so
//! with an in-process network. Like quinn-proto, it is public for those tests.
//!
//! Proposals are batched: everything proposed since the last
//! [`RaftNode::handle_ready`] goes into one log entry (an `EntryBatch`). A
//! follower's proposal reaches the leader through raft-rs's own forwarding
//! (`MsgPropose`). raft-rs drops a proposal without telling when there is no
//! leader, or when the leader changes before it commits, so a proposal not
//! applied within `retry_ticks` is proposed again with the same request id;
//! the state machine applies a request id once (see `state.rs`).
//!
//! # Lifecycle
//! 1. [`RaftNode::open`] restores the state machine from the stored snapshot
//!    and creates the `RawNode` with `applied` = the snapshot's index. The
//!    first ready then replays the committed log after it (configuration
//!    changes included): those changes are not reported, the broker reads
//!    the state directly after start.
//! 2. Repeatedly: [`RaftNode::tick`] every tick, [`RaftNode::step`] for each
//!    message, [`RaftNode::propose`] / [`RaftNode::propose_member_change`],
//!    then [`RaftNode::handle_ready`], whose messages the caller sends.
//! 3. After enough applied entries, `handle_ready` saves a snapshot of the
//!    state machine and compacts the log (`snapshot_threshold`, `log_keep`).
//! 4. A node removed from the configuration reports it once
//!    ([`Output::removed`]) and fails later proposals with `Error::Removed`.

mod apply;
mod propose;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Instant,
};

use parking_lot::RwLock;
use raft::{
    eraftpb::{ConfState, Message, MessageType},
    RawNode, SnapshotStatus, StateRole, Storage as _,
};
use storage::RaftStorage;
use tokio::sync::oneshot;

use crate::{
    error::{Error, Result},
    logger::raft_logger,
    state::{Change, ClusterState, Outcome},
    types::Member,
};

/// Settings of one raft node. Times are in ticks.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Raft node id; not 0.
    pub id: u64,
    /// Ticks without a leader's message before a follower campaigns (raft-rs
    /// randomizes it in `[election_tick, 2 * election_tick)`).
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Ticks after which a proposal not yet applied is proposed again.
    pub retry_ticks: u64,
    /// Most proposals in one log entry.
    pub max_batch_proposals: usize,
    /// Most encoded bytes of proposals in one log entry (one proposal larger
    /// than this gets an entry of its own).
    pub max_batch_bytes: usize,
    /// Entries applied since the last snapshot before a new one is saved.
    pub snapshot_threshold: u64,
    /// Entries kept in the log before the snapshot, so that a follower a
    /// little behind catches up from the log rather than a snapshot.
    pub log_keep: u64,
    /// Most bytes of entries in one append message.
    pub max_size_per_msg: u64,
    /// Most append messages in flight to one follower.
    pub max_inflight_msgs: usize,
}

impl NodeConfig {
    /// Defaults for node `id`: elections after 10 to 20 ticks, heartbeats
    /// every 2, a snapshot every 10 000 entries.
    pub fn new(id: u64) -> NodeConfig {
        NodeConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            retry_ticks: 20,
            max_batch_proposals: 1024,
            max_batch_bytes: 1024 * 1024,
            snapshot_threshold: 10_000,
            log_keep: 1_000,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
        }
    }
}

/// Receives the outcome of a proposal once applied on this node.
pub type Waiter = oneshot::Sender<Result<Outcome>>;

/// A membership change to propose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Add the node as a voter, with its addresses.
    Add(Member),
    /// Remove the node.
    Remove(u64),
}

/// What one [`RaftNode::handle_ready`] produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Raft messages for the caller to send to their `to` node.
    pub messages: Vec<Message>,
    /// State changes applied, in log order (none during the start replay).
    pub changes: Vec<Change>,
    /// The node became ready for the first time: it has a leader and has
    /// applied everything it knows is committed.
    pub became_ready: bool,
    /// The node saw itself removed from the configuration (reported once).
    pub removed: bool,
}

/// A raft node's view, for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub id: u64,
    /// The leader, if one is known.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index applied to the state machine.
    pub applied_index: u64,
    /// Leader, follower, candidate or pre-candidate.
    pub role: &'static str,
    /// Voters of the configuration.
    pub voters: Vec<u64>,
    /// Learners of the configuration.
    pub learners: Vec<u64>,
    /// Leader only: highest index replicated on each node.
    pub matched: BTreeMap<u64, u64>,
    /// See [`Output::became_ready`].
    pub ready: bool,
    /// The configuration has a voter (false on a joining node).
    pub initialized: bool,
    /// This node was removed from the configuration.
    pub removed: bool,
    /// When the cluster last confirmed this node's role in the current
    /// term: for a leader, when a majority of voters had last answered its
    /// appends or heartbeats; for a follower, when its leader was last
    /// heard. A leader stopped (SIGSTOP) and resumed still believes it
    /// leads until it hears the new term; this tells it is behind.
    pub confirmed_at: Option<Instant>,
}

struct Pending {
    proposal: proto::Proposal,
    waiter: Option<Waiter>,
    /// Handed to raft-rs and waiting until this tick before a retry.
    proposed: bool,
    retry_at: u64,
}

struct PendingConf {
    change: MemberChange,
    waiter: Option<Waiter>,
    proposed: bool,
    retry_at: u64,
}

/// See the module docs.
pub struct RaftNode {
    config: NodeConfig,
    raw: RawNode<RaftStorage>,
    storage: RaftStorage,
    state: Arc<RwLock<ClusterState>>,
    /// The configuration as of `applied`.
    conf_state: ConfState,
    applied: u64,
    /// Changes of entries up to this index are not reported (start replay).
    replay_until: u64,
    ticks: u64,
    next_request_id: u64,
    pending: BTreeMap<u64, Pending>,
    pending_conf: BTreeMap<u64, PendingConf>,
    leader: u64,
    was_ready: bool,
    /// This node has been in the configuration: only such a node reports
    /// its removal (a joining node is not in it yet).
    member_seen: bool,
    removed: bool,
    /// A node was added: save a snapshot now. raft-rs refuses a snapshot
    /// whose configuration does not hold the receiving node, so the one
    /// stored before the change is useless to the new node.
    snapshot_due: bool,
    /// Per node: the term and time it last confirmed this node's role
    /// (see [`NodeStatus::confirmed_at`]).
    confirmed: HashMap<u64, (u64, Instant)>,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.config.id)
            .field("applied", &self.applied)
            .field("leader", &self.leader)
            .finish_non_exhaustive()
    }
}

fn raft_err(e: raft::Error) -> Error {
    match e {
        raft::Error::Store(raft::StorageError::Other(inner)) => {
            match inner.downcast::<storage::Error>() {
                Ok(e) => Error::Storage(*e),
                Err(other) => Error::Raft(other.to_string()),
            }
        }
        other => Error::Raft(other.to_string()),
    }
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

fn in_config(cs: &ConfState) -> BTreeSet<u64> {
    cs.voters.iter().chain(&cs.learners).copied().collect()
}

impl RaftNode {
    /// Opens the node on `storage` (see the lifecycle). `storage` must be
    /// bootstrapped, or be uninitialized for a node waiting to be added.
    pub fn open(config: NodeConfig, storage: RaftStorage) -> Result<RaftNode> {
        RaftNode::open_shared(config, storage, Arc::default())
    }

    /// [`RaftNode::open`], keeping the applied state in `shared` (its old
    /// content is replaced): readers keep their handle across a reopen.
    pub fn open_shared(
        config: NodeConfig,
        storage: RaftStorage,
        shared: Arc<RwLock<ClusterState>>,
    ) -> Result<RaftNode> {
        if config.id == 0 {
            return Err(Error::Config("node id must not be 0".into()));
        }
        let meta = storage.snapshot_metadata();
        let mut state = if meta.index > 0 {
            let snapshot = storage.snapshot(0, config.id).map_err(raft_err)?;
            ClusterState::restore(snapshot.get_data())?
        } else {
            ClusterState::default()
        };
        let conf_state = meta.get_conf_state().clone();
        state.set_config(&in_config(&conf_state));
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            applied: meta.index,
            max_size_per_msg: config.max_size_per_msg,
            max_inflight_msgs: config.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_config.validate().map_err(raft_err)?;
        let raw = RawNode::new(&raft_config, storage.clone(), &raft_logger(config.id))
            .map_err(raft_err)?;
        let replay_until = storage.hard_state().commit;
        let member_seen = in_config(&conf_state).contains(&config.id);
        *shared.write() = state;
        Ok(RaftNode {
            member_seen,
            snapshot_due: false,
            confirmed: HashMap::new(),
            next_request_id: rand::random::<u64>() >> 1,
            config,
            raw,
            storage,
            state: shared,
            conf_state,
            applied: meta.index,
            replay_until,
            ticks: 0,
            pending: BTreeMap::new(),
            pending_conf: BTreeMap::new(),
            leader: 0,
            was_ready: false,
            removed: false,
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// The applied state, shared with readers.
    pub fn state(&self) -> &Arc<RwLock<ClusterState>> {
        &self.state
    }

    /// The storage (for tests that inspect the log).
    pub fn storage(&self) -> &RaftStorage {
        &self.storage
    }

    /// Whether raft-rs has work for [`RaftNode::handle_ready`].
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Advances raft's clock by one tick, and re-proposes what is overdue.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        let now = self.ticks;
        self.pending.retain(|_, p| {
            if p.proposed && p.retry_at <= now {
                if p.waiter.as_ref().is_some_and(oneshot::Sender::is_closed) {
                    return false;
                }
                p.proposed = false;
            }
            true
        });
        self.pending_conf.retain(|_, p| {
            if p.proposed && p.retry_at <= now {
                if p.waiter.as_ref().is_some_and(oneshot::Sender::is_closed) {
                    return false;
                }
                p.proposed = false;
            }
            true
        });
    }

    /// Hands a peer's message to raft. Messages raft refuses (from a node it
    /// does not know, of a local-only type) are dropped.
    pub fn step(&mut self, message: Message) {
        let (from, term, kind) = (message.from, message.term, message.get_msg_type());
        if let Err(e) = self.raw.step(message) {
            tracing::debug!(node = self.config.id, error = %e, "raft dropped a message");
        }
        let raft = &self.raw.raft;
        let confirms = term == raft.term
            && match raft.state {
                StateRole::Leader => matches!(
                    kind,
                    MessageType::MsgAppendResponse | MessageType::MsgHeartbeatResponse
                ),
                StateRole::Follower => {
                    from == raft.leader_id
                        && matches!(
                            kind,
                            MessageType::MsgAppend
                                | MessageType::MsgHeartbeat
                                | MessageType::MsgSnapshot
                        )
                }
                _ => false,
            };
        if confirms {
            self.confirmed.insert(from, (term, Instant::now()));
        }
    }

    /// See [`NodeStatus::confirmed_at`].
    fn confirmed_at(&self) -> Option<Instant> {
        let raft = &self.raw.raft;
        let at = |id: u64| {
            self.confirmed
                .get(&id)
                .filter(|(term, _)| *term == raft.term)
                .map(|(_, at)| *at)
        };
        match raft.state {
            StateRole::Leader => {
                // besides this node, half of the voters make a majority
                let need = self.conf_state.voters.len() / 2;
                if need == 0 {
                    return Some(Instant::now());
                }
                let mut times: Vec<Instant> = self
                    .conf_state
                    .voters
                    .iter()
                    .filter(|v| **v != self.config.id)
                    .filter_map(|v| at(*v))
                    .collect();
                times.sort_unstable_by(|a, b| b.cmp(a));
                times.get(need - 1).copied()
            }
            StateRole::Follower => at(raft.leader_id),
            _ => None,
        }
    }

    /// Reports that sending to `to` failed (raft probes it again).
    pub fn report_unreachable(&mut self, to: u64) {
        self.raw.report_unreachable(to);
    }

    /// Reports whether a snapshot reached `to`.
    pub fn report_snapshot(&mut self, to: u64, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(to, status);
    }

    /// Processes raft-rs's `Ready` in the order its docs give ("Processing
    /// the Ready State", `src/lib.rs`), then compacts if due. The messages in
    /// the output must be sent by the caller; the changes are applied.
    pub fn handle_ready(&mut self) -> Result<Output> {
        let mut out = Output::default();
        self.flush_proposals();
        if !self.raw.has_ready() {
            self.update_ready(&mut out);
            return Ok(out);
        }
        let mut ready = self.raw.ready();

        // 1. Send messages that need nothing persisted first (a leader's
        //    appends go out while it writes them itself, Raft thesis 10.2.1).
        out.messages.extend(ready.take_messages());

        // 2. Apply the snapshot a leader sent: store it, replace the state.
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.apply_snapshot(&snapshot, &mut out)?;
        }

        // 3. Apply the entries committed (and persisted) since the last ready.
        self.apply_entries(ready.take_committed_entries(), &mut out)?;

        // 4. Append the new entries and 5. persist the hard state: one sled
        //    transaction, fsynced before anything below depends on it.
        self.storage.append(ready.entries(), ready.hs())?;
        if let Some(ss) = ready.ss() {
            self.on_leader(ss.leader_id);
        }

        // 6. Send the messages that had to wait for that write (votes,
        //    append responses).
        out.messages.extend(ready.take_persisted_messages());

        // 7. Tell raft-rs this ready is done.
        let mut light = self.raw.advance(ready);

        // 8. The light ready: a newer commit index, its messages and the
        //    entries that became committed meanwhile.
        if let Some(commit) = light.commit_index() {
            self.storage.set_commit(commit)?;
        }
        out.messages.extend(light.take_messages());
        self.apply_entries(light.take_committed_entries(), &mut out)?;

        // 9. Tell raft-rs what was applied.
        self.raw.advance_apply();

        self.maybe_compact()?;
        self.update_ready(&mut out);
        Ok(out)
    }

    /// A new leader: what it may have dropped is proposed again at once.
    fn on_leader(&mut self, leader: u64) {
        if leader != self.leader {
            self.leader = leader;
            self.pending.values_mut().for_each(|p| p.proposed = false);
            self.pending_conf
                .values_mut()
                .for_each(|p| p.proposed = false);
        }
    }

    fn update_ready(&mut self, out: &mut Output) {
        let ready = self.is_ready();
        if ready && !self.was_ready {
            self.was_ready = true;
            out.became_ready = true;
        }
    }

    fn is_ready(&self) -> bool {
        !self.removed
            && !self.conf_state.voters.is_empty()
            && self.raw.raft.leader_id != raft::INVALID_ID
            && self.applied >= self.raw.raft.raft_log.committed
    }

    /// The node's raft view.
    pub fn status(&self) -> NodeStatus {
        let raft = &self.raw.raft;
        let leader = (raft.leader_id != raft::INVALID_ID).then_some(raft.leader_id);
        let matched = if raft.state == StateRole::Leader {
            raft.prs()
                .iter()
                .map(|(id, pr)| (*id, pr.matched))
                .collect()
        } else {
            BTreeMap::new()
        };
        NodeStatus {
            id: self.config.id,
            leader,
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.applied,
            role: match raft.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate => "candidate",
                StateRole::PreCandidate => "pre-candidate",
            },
            voters: sorted(&self.conf_state.voters),
            learners: sorted(&self.conf_state.learners),
            matched,
            ready: self.is_ready(),
            initialized: !self.conf_state.voters.is_empty(),
            removed: self.removed,
            confirmed_at: self.confirmed_at(),
        }
    }
}
