//! The raft driver: one OS thread that owns the [`RaftNode`].
//!
//! It owns the node's clock (ticks), the order in which inputs reach raft,
//! and the dispatch of raft's outputs: messages to [`Peers`], state changes
//! to the broker's event channel, a status copy for readers. It blocks on
//! purpose: the ready loop fsyncs the raft log (`RaftStorage::append`), which
//! must not happen on an async task. Applying entries is in-memory and never
//! waits on anything.
//!
//! # Lifecycle
//! 1. `Cluster::start` opens the node, replays the committed log
//!    ([`replay`]) and spawns [`run`] on a thread named `tern-raft-<id>`.
//! 2. Each loop: wait for an input or the next tick, take every input
//!    queued, tick if due, run the ready loop once, dispatch, publish status.
//! 3. [`Input::Shutdown`] (or every sender dropped) ends the loop; a storage
//!    error or a panic in raft-rs ends it too, as fatal: the reason is kept
//!    in [`Shared::failed`], sent as `ClusterEvent::Failed`, and every
//!    pending proposal fails when the node is dropped.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::{Mutex, RwLock};
use raft::eraftpb::{ConfState, Message};
use storage::RaftStorage;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use crate::{
    error::{Error, Result},
    events::ClusterEvent,
    node::{MemberChange, NodeConfig, NodeStatus, Output, RaftNode, Waiter},
    state::ClusterState,
    transport::Peers,
};

/// What other threads and tasks send to the driver.
pub(crate) enum Input {
    /// Messages from a peer.
    Raft(Vec<Message>),
    /// A command to propose.
    Propose {
        command: proto::proposal::Command,
        waiter: Option<Waiter>,
    },
    /// A membership change to propose.
    MemberChange {
        change: MemberChange,
        waiter: Option<Waiter>,
    },
    /// Sending to this peer failed.
    Unreachable(u64),
    /// A snapshot reached its peer, or not.
    SnapshotStatus { to: u64, delivered: bool },
    /// Found the cluster with these voters (the storage was uninitialized).
    Bootstrap {
        voters: Vec<u64>,
        done: oneshot::Sender<Result<()>>,
    },
    /// Hand leadership to another voter if this node leads.
    StepDown,
    /// Stop the loop.
    Shutdown,
}

/// What the driver shares with the `Cluster` handle.
pub(crate) struct Shared {
    /// The applied state (the node writes it, readers read it).
    pub(crate) state: Arc<RwLock<ClusterState>>,
    /// A copy of the node's status, refreshed after every loop.
    pub(crate) status: Mutex<NodeStatus>,
    /// Why the driver stopped on a fatal error.
    pub(crate) failed: Mutex<Option<String>>,
}

/// Opens the node on `storage` and applies the committed log it holds,
/// before anything else reaches it. Blocking (reads the store).
pub(crate) fn replay(
    config: NodeConfig,
    storage: RaftStorage,
    state: Arc<RwLock<ClusterState>>,
) -> Result<(RaftNode, Vec<Message>)> {
    let mut node = RaftNode::open_shared(config, storage.clone(), state)?;
    let commit = storage.hard_state().commit;
    let mut messages = Vec::new();
    // Each round applies what raft-rs hands out; bounded by the log length.
    for _ in 0..1_000_000 {
        if node.status().applied_index >= commit {
            break;
        }
        let out = node.handle_ready()?;
        messages.extend(out.messages);
        if !node.has_ready() && node.status().applied_index < commit {
            return Err(Error::Raft(format!(
                "replay stopped at {} before the commit index {commit}",
                node.status().applied_index
            )));
        }
    }
    Ok((node, messages))
}

/// The driver's thread body; see the module docs.
pub(crate) struct Driver {
    pub(crate) node: RaftNode,
    pub(crate) config: NodeConfig,
    pub(crate) storage: RaftStorage,
    pub(crate) tick: Duration,
    pub(crate) inputs: Receiver<Input>,
    pub(crate) peers: Arc<Peers>,
    pub(crate) events: UnboundedSender<ClusterEvent>,
    pub(crate) shared: Arc<Shared>,
}

/// Most inputs taken before the ready loop runs.
const MAX_INPUTS: usize = 4096;

impl Driver {
    /// Runs until shutdown or a fatal error.
    pub(crate) fn run(mut self) {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            let result = catch_unwind(AssertUnwindSafe(|| self.step(&mut next_tick)));
            let reason = match result {
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => return,
                Ok(Err(e)) => e.to_string(),
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    format!("raft panicked: {what}")
                }
            };
            tracing::error!(node = self.config.id, %reason, "raft driver stopped");
            *self.shared.failed.lock() = Some(reason.clone());
            let _ = self.events.send(ClusterEvent::Failed { reason });
            return;
        }
    }

    /// One loop; `Ok(false)` to stop.
    fn step(&mut self, next_tick: &mut Instant) -> Result<bool> {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        match self.inputs.recv_timeout(timeout) {
            Ok(input) => {
                if !self.handle(input)? {
                    return Ok(false);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(false),
        }
        for _ in 0..MAX_INPUTS {
            match self.inputs.try_recv() {
                Ok(input) => {
                    if !self.handle(input)? {
                        return Ok(false);
                    }
                }
                Err(_) => break,
            }
        }
        let now = Instant::now();
        if now >= *next_tick {
            self.node.tick();
            *next_tick += self.tick;
            if *next_tick < now {
                // The loop fell behind (a long fsync): do not tick in a burst.
                *next_tick = now + self.tick;
            }
        }
        let out = self.node.handle_ready()?;
        self.dispatch(out);
        *self.shared.status.lock() = self.node.status();
        Ok(true)
    }

    /// Hands one input to the node; `Ok(false)` to stop.
    fn handle(&mut self, input: Input) -> Result<bool> {
        match input {
            Input::Raft(messages) => messages.into_iter().for_each(|m| self.node.step(m)),
            Input::Propose { command, waiter } => self.node.propose(command, waiter),
            Input::MemberChange { change, waiter } => {
                self.node.propose_member_change(change, waiter)
            }
            Input::Unreachable(to) => self.node.report_unreachable(to),
            Input::SnapshotStatus { to, delivered } => self.node.report_snapshot(to, delivered),
            Input::Bootstrap { voters, done } => {
                let _ = done.send(self.bootstrap(voters));
            }
            Input::StepDown => self.node.step_down(),
            Input::Shutdown => return Ok(false),
        }
        Ok(true)
    }

    /// Founds the cluster on an uninitialized node: the storage gets the
    /// founding snapshot and the node is reopened on it.
    fn bootstrap(&mut self, voters: Vec<u64>) -> Result<()> {
        if self.storage.is_initialized() {
            return Ok(()); // a leader's snapshot arrived first
        }
        self.storage.bootstrap(ConfState {
            voters,
            ..Default::default()
        })?;
        let state = Arc::clone(&self.shared.state);
        let (node, messages) = replay(self.config.clone(), self.storage.clone(), state)?;
        self.node = node;
        self.peers.send(messages);
        Ok(())
    }

    fn dispatch(&mut self, out: Output) {
        if !out.messages.is_empty() {
            self.peers.send(out.messages);
        }
        let state = &self.shared.state;
        for change in out.changes {
            let members = || state.read().members().cloned().collect();
            let _ = self.events.send(ClusterEvent::from_change(change, members));
        }
        if out.became_ready {
            let _ = self.events.send(ClusterEvent::BecameReady);
        }
        if out.removed {
            let _ = self.events.send(ClusterEvent::Removed);
        }
    }
}
