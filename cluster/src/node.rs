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

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use parking_lot::RwLock;
use prost::Message as _;
use protobuf::Message as _;
use raft::{
    eraftpb::{
        ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
        Message, Snapshot,
    },
    RawNode, SnapshotStatus, StateRole, Storage as _,
};
use storage::RaftStorage;
use tokio::sync::oneshot;

use crate::{
    error::{Error, Result},
    logger::raft_logger,
    state::{Change, ClusterState, Outcome},
    types::{member_from_proto, Member},
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
        Ok(RaftNode {
            member_seen,
            snapshot_due: false,
            next_request_id: rand::random::<u64>() >> 1,
            config,
            raw,
            storage,
            state: Arc::new(RwLock::new(state)),
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
        if let Err(e) = self.raw.step(message) {
            tracing::debug!(node = self.config.id, error = %e, "raft dropped a message");
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

    fn next_request_id(&mut self) -> u64 {
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        self.next_request_id
    }

    /// Queues a command; `waiter` gets its outcome once applied here.
    pub fn propose(&mut self, command: proto::proposal::Command, waiter: Option<Waiter>) {
        if self.removed {
            if let Some(w) = waiter {
                let _ = w.send(Err(Error::Removed));
            }
            return;
        }
        let request_id = self.next_request_id();
        let proposal = proto::Proposal {
            origin: self.config.id,
            request_id,
            command: Some(command),
        };
        self.pending.insert(
            request_id,
            Pending {
                proposal,
                waiter,
                proposed: false,
                retry_at: 0,
            },
        );
    }

    /// Queues a configuration change; `waiter` gets `Outcome::Done` once it
    /// is applied here, or `Outcome::Invalid` if raft-rs refused it.
    pub fn propose_member_change(&mut self, change: MemberChange, waiter: Option<Waiter>) {
        if self.removed {
            if let Some(w) = waiter {
                let _ = w.send(Err(Error::Removed));
            }
            return;
        }
        let request_id = self.next_request_id();
        self.pending_conf.insert(
            request_id,
            PendingConf {
                change,
                waiter,
                proposed: false,
                retry_at: 0,
            },
        );
    }

    /// Asks raft to hand leadership to `to` (a no-op unless this node leads).
    pub fn transfer_leader(&mut self, to: u64) {
        self.raw.transfer_leader(to);
    }

    /// Hands queued proposals to raft-rs, batched into entries.
    fn flush_proposals(&mut self) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return; // raft-rs would drop them; retried when a leader is known
        }
        let retry_at = self.ticks + self.config.retry_ticks;
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.proposed)
            .map(|(id, _)| *id)
            .collect();
        for chunk in ids.chunks(self.config.max_batch_proposals.max(1)) {
            let mut batch = proto::EntryBatch::default();
            let mut size = 0;
            let mut in_batch = Vec::new();
            for id in chunk {
                let Some(p) = self.pending.get(id) else {
                    continue;
                };
                let proposal = p.proposal.clone();
                let len = proposal.encoded_len();
                if !batch.proposals.is_empty() && size + len > self.config.max_batch_bytes {
                    self.propose_batch(std::mem::take(&mut batch), &in_batch, retry_at);
                    in_batch.clear();
                    size = 0;
                }
                size += len;
                batch.proposals.push(proposal);
                in_batch.push(*id);
            }
            if !batch.proposals.is_empty() {
                self.propose_batch(batch, &in_batch, retry_at);
            }
        }
        self.flush_member_changes(retry_at);
    }

    fn propose_batch(&mut self, batch: proto::EntryBatch, ids: &[u64], retry_at: u64) {
        if let Err(e) = self.raw.propose(Vec::new(), batch.encode_to_vec()) {
            tracing::debug!(node = self.config.id, error = %e, "proposal dropped; will retry");
        }
        // Even if dropped now: retried at `retry_at`, not in a tight loop.
        for id in ids {
            if let Some(p) = self.pending.get_mut(id) {
                p.proposed = true;
                p.retry_at = retry_at;
            }
        }
    }

    fn flush_member_changes(&mut self, retry_at: u64) {
        let id = self.config.id;
        let ids: Vec<u64> = self
            .pending_conf
            .iter()
            .filter(|(_, p)| !p.proposed)
            .map(|(id, _)| *id)
            .collect();
        for request_id in ids {
            let Some(p) = self.pending_conf.get_mut(&request_id) else {
                continue;
            };
            p.proposed = true;
            p.retry_at = retry_at;
            let change = p.change.clone();
            if change == MemberChange::Remove(id) && self.raw.raft.state == StateRole::Leader {
                // A leader that removes itself keeps leading (raft-rs leaves
                // that branch untested): hand leadership over first; the
                // retry reaches the new leader.
                if let Some(to) = self.best_other_voter() {
                    self.raw.transfer_leader(to);
                    continue;
                }
            }
            let (change_type, node, member) = match &change {
                MemberChange::Add(m) => (ConfChangeType::AddNode, m.id, Some(m.into())),
                MemberChange::Remove(n) => (
                    ConfChangeType::RemoveNode,
                    *n,
                    Some(proto::MemberInfo {
                        id: *n,
                        ..Default::default()
                    }),
                ),
            };
            let context = proto::ConfChangeContext {
                origin: id,
                request_id,
                member,
            };
            let mut cc = ConfChangeV2::default();
            cc.mut_changes().push(ConfChangeSingle {
                change_type,
                node_id: node,
                ..Default::default()
            });
            if let Err(e) = self.raw.propose_conf_change(context.encode_to_vec(), cc) {
                tracing::debug!(node = id, error = %e, "configuration change dropped; will retry");
            }
        }
    }

    /// The voter other than this node with the most replicated log.
    fn best_other_voter(&self) -> Option<u64> {
        let id = self.config.id;
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(peer, _)| **peer != id && self.conf_state.voters.contains(peer))
            .max_by_key(|(_, pr)| pr.matched)
            .map(|(peer, _)| *peer)
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

    fn apply_snapshot(&mut self, snapshot: &Snapshot, out: &mut Output) -> Result<()> {
        self.storage.apply_snapshot(snapshot)?;
        let meta = snapshot.get_metadata();
        let mut new = ClusterState::restore(snapshot.get_data())?;
        self.conf_state = meta.get_conf_state().clone();
        new.set_config(&in_config(&self.conf_state));
        let mut state = self.state.write();
        if meta.index > self.replay_until {
            out.changes.extend(state.diff(&new));
        }
        *state = new;
        self.applied = meta.index;
        // Our proposals that the snapshot already contains.
        let id = self.config.id;
        let done: Vec<(u64, Outcome)> = self
            .pending
            .keys()
            .filter_map(|rid| state.recent_outcome(id, *rid).map(|o| (*rid, o.clone())))
            .collect();
        drop(state);
        for (rid, outcome) in done {
            if let Some(Pending {
                waiter: Some(w), ..
            }) = self.pending.remove(&rid)
            {
                let _ = w.send(Ok(outcome));
            }
        }
        self.check_removed(out);
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, out: &mut Output) -> Result<()> {
        for entry in entries {
            self.applied = entry.index;
            let report = entry.index > self.replay_until;
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&entry, report, out),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_entry(&entry, report, out)
                }
            }
        }
        Ok(())
    }

    fn apply_normal(&mut self, entry: &Entry, report: bool, out: &mut Output) {
        if entry.data.is_empty() {
            return; // a new leader's empty entry
        }
        let batch = match proto::EntryBatch::decode(entry.get_data()) {
            Ok(batch) => batch,
            Err(e) => {
                // Every node skips it the same way: the state stays identical.
                tracing::error!(node = self.config.id, index = entry.index, error = %e,
                    "skipping a log entry that does not decode");
                return;
            }
        };
        let mut state = self.state.write();
        for proposal in batch.proposals {
            let (origin, request_id) = (proposal.origin, proposal.request_id);
            let (outcome, changes) = state.apply(proposal);
            if report {
                out.changes.extend(changes);
            }
            if origin == self.config.id {
                if let Some(Pending {
                    waiter: Some(w), ..
                }) = self.pending.remove(&request_id)
                {
                    let _ = w.send(Ok(outcome));
                }
            }
        }
    }

    fn apply_conf_entry(&mut self, entry: &Entry, report: bool, out: &mut Output) {
        let context = proto::ConfChangeContext::decode(entry.get_context()).unwrap_or_default();
        let applied = if entry.get_entry_type() == EntryType::EntryConfChange {
            ConfChange::parse_from_bytes(entry.get_data())
                .map_err(|e| e.to_string())
                .and_then(|cc| self.raw.apply_conf_change(&cc).map_err(|e| e.to_string()))
        } else {
            ConfChangeV2::parse_from_bytes(entry.get_data())
                .map_err(|e| e.to_string())
                .and_then(|cc| {
                    let duplicate = context.request_id != 0
                        && self
                            .state
                            .read()
                            .recent_outcome(context.origin, context.request_id)
                            .is_some();
                    if duplicate {
                        return Err("duplicate of an applied change".into());
                    }
                    self.raw.apply_conf_change(&cc).map_err(|e| e.to_string())
                })
        };
        let outcome = match applied {
            Ok(cs) => {
                self.conf_state = cs;
                let added = context
                    .member
                    .clone()
                    .and_then(|m| member_from_proto(m).ok());
                self.snapshot_due |= added.is_some();
                let changes = self.state.write().apply_conf_change(
                    context.origin,
                    context.request_id,
                    &in_config(&self.conf_state),
                    added.filter(|m| !m.address.is_empty()),
                );
                if report {
                    out.changes.extend(changes);
                }
                self.check_removed(out);
                Outcome::Done
            }
            Err(reason) => {
                tracing::warn!(node = self.config.id, index = entry.index, %reason,
                    "configuration change not applied");
                Outcome::Invalid(reason)
            }
        };
        if context.origin == self.config.id {
            if let Some(PendingConf {
                waiter: Some(w), ..
            }) = self.pending_conf.remove(&context.request_id)
            {
                let _ = w.send(Ok(outcome));
            }
        }
    }

    /// Notices this node's removal from the configuration.
    fn check_removed(&mut self, out: &mut Output) {
        let id = self.config.id;
        let member = in_config(&self.conf_state).contains(&id);
        self.member_seen |= member;
        if !member && self.member_seen && !self.removed {
            self.removed = true;
            out.removed = true;
            for (_, p) in std::mem::take(&mut self.pending) {
                if let Some(w) = p.waiter {
                    let _ = w.send(Err(Error::Removed));
                }
            }
            for (_, p) in std::mem::take(&mut self.pending_conf) {
                if let Some(w) = p.waiter {
                    let _ = w.send(Err(Error::Removed));
                }
            }
        } else if !self.conf_state.voters.contains(&id) && self.raw.raft.state == StateRole::Leader
        {
            if let Some(to) = self.best_other_voter() {
                self.raw.transfer_leader(to);
            }
        }
    }

    /// Saves a snapshot and compacts once `snapshot_threshold` entries were
    /// applied since the last one; saves one without compacting after a node
    /// was added.
    fn maybe_compact(&mut self) -> Result<()> {
        let snapshot_index = self.storage.snapshot_metadata().index;
        let compact = self.applied >= snapshot_index + self.config.snapshot_threshold.max(1);
        let due = std::mem::take(&mut self.snapshot_due) && self.applied > snapshot_index;
        if !compact && !due {
            return Ok(());
        }
        let term = self.storage.term(self.applied).map_err(raft_err)?;
        let mut snapshot = Snapshot::default();
        snapshot.set_data(self.state.read().snapshot().into());
        let meta = snapshot.mut_metadata();
        meta.index = self.applied;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        self.storage.save_snapshot(&snapshot)?;
        if !compact {
            return Ok(());
        }
        let compact_to = (self.applied + 1).saturating_sub(self.config.log_keep);
        self.storage.compact(compact_to)?;
        tracing::debug!(
            node = self.config.id,
            index = self.applied,
            "saved a snapshot and compacted the raft log"
        );
        Ok(())
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
        }
    }
}
