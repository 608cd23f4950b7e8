//! An in-process network of `RaftNode`s for logic tests, after raft-rs's
//! `harness/src/network.rs`: messages are delivered synchronously, and links
//! can be dropped, cut, isolated and recovered. Each node has a real store
//! (sled in a temp directory), so restarts replay from disk.
//!
//! Time is ticks: nothing sleeps, and a "deadline" is a number of ticks.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use cluster::{
    node::{MemberChange, NodeConfig, Output, RaftNode},
    state::{Change, Outcome},
    Member, Result,
};
use proto::proposal::Command;
use raft::eraftpb::{ConfState, Message, MessageType};
use rand::Rng;
use storage::{RaftStorage, Store, StoreConfig};
use tempfile::TempDir;
use tokio::sync::oneshot;

/// One node: its raft core, its store and the changes it reported.
pub struct TestNode {
    pub node: Option<RaftNode>,
    pub store: Option<Store>,
    pub dir: TempDir,
    pub changes: Vec<Change>,
    pub became_ready: bool,
    pub removed: bool,
}

pub struct Network {
    pub nodes: BTreeMap<u64, TestNode>,
    config: fn(u64) -> NodeConfig,
    /// Links (from, to) whose messages are all dropped.
    cut: HashSet<(u64, u64)>,
    /// Links (from, to) whose messages are dropped with this probability.
    lossy: HashMap<(u64, u64), f64>,
    queue: VecDeque<Message>,
}

pub fn store_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        path: dir.to_owned(),
        cache_capacity_bytes: 8 * 1024 * 1024,
        flush_every_ms: None,
    }
}

/// Small timings so that tests run in few ticks.
pub fn test_config(id: u64) -> NodeConfig {
    NodeConfig {
        election_tick: 10,
        heartbeat_tick: 2,
        retry_ticks: 15,
        ..NodeConfig::new(id)
    }
}

impl Network {
    /// A cluster of `ids`, all bootstrapped with the same voters.
    pub fn new(ids: &[u64], config: fn(u64) -> NodeConfig) -> Network {
        let mut net = Network {
            nodes: BTreeMap::new(),
            config,
            cut: HashSet::new(),
            lossy: HashMap::new(),
            queue: VecDeque::new(),
        };
        for &id in ids {
            let voters = ConfState {
                voters: ids.to_vec(),
                ..Default::default()
            };
            net.add(id, Some(voters));
        }
        net
    }

    /// Adds node `id`: bootstrapped with `voters`, or uninitialized (a node
    /// waiting to be added by a configuration change) with `None`.
    pub fn add(&mut self, id: u64, voters: Option<ConfState>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&store_config(dir.path())).unwrap();
        let storage = RaftStorage::open(&store).unwrap();
        if let Some(voters) = voters {
            storage.bootstrap(voters).unwrap();
        }
        let node = RaftNode::open((self.config)(id), storage).unwrap();
        self.nodes.insert(
            id,
            TestNode {
                node: Some(node),
                store: Some(store),
                dir,
                changes: Vec::new(),
                became_ready: false,
                removed: false,
            },
        );
    }

    pub fn node(&self, id: u64) -> &RaftNode {
        self.nodes[&id].node.as_ref().expect("node is running")
    }

    pub fn node_mut(&mut self, id: u64) -> &mut RaftNode {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.node.as_mut())
            .expect("node is running")
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.node.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Stops a node (as a crash would: nothing more is processed) and
    /// closes its store.
    pub fn stop(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).unwrap();
        n.node = None;
        n.store.take().unwrap().close().unwrap();
    }

    /// Restarts a stopped node on its data directory.
    pub fn restart(&mut self, id: u64) {
        let config = (self.config)(id);
        let n = self.nodes.get_mut(&id).unwrap();
        let store = Store::open(&store_config(n.dir.path())).unwrap();
        let storage = RaftStorage::open(&store).unwrap();
        n.node = Some(RaftNode::open(config, storage).unwrap());
        n.store = Some(store);
    }

    /// Drops every message from `a` to `b` and from `b` to `a`.
    pub fn cut(&mut self, a: u64, b: u64) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts every link of `id`.
    pub fn isolate(&mut self, id: u64) {
        for other in self.nodes.keys().copied().collect::<Vec<_>>() {
            if other != id {
                self.cut(id, other);
            }
        }
    }

    /// Drops messages from `from` to `to` with probability `p`.
    pub fn drop(&mut self, from: u64, to: u64, p: f64) {
        self.lossy.insert((from, to), p);
    }

    /// Heals every link.
    pub fn recover(&mut self) {
        self.cut.clear();
        self.lossy.clear();
    }

    fn take_output(&mut self, id: u64, out: Output) {
        let n = self.nodes.get_mut(&id).unwrap();
        n.changes.extend(out.changes);
        n.became_ready |= out.became_ready;
        n.removed |= out.removed;
        self.queue.extend(out.messages);
    }

    /// Runs every node's ready loop and delivers messages until nothing is
    /// left to do (bounded).
    pub fn deliver(&mut self) {
        for _ in 0..1000 {
            for id in self.running() {
                let out = self.node_mut(id).handle_ready().expect("ready loop");
                self.take_output(id, out);
            }
            if self.queue.is_empty() {
                return;
            }
            let mut rng = rand::thread_rng();
            while let Some(m) = self.queue.pop_front() {
                let link = (m.from, m.to);
                let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
                let lost = self.cut.contains(&link)
                    || self.lossy.get(&link).is_some_and(|p| rng.gen_bool(*p));
                let target = self.nodes.get_mut(&m.to).and_then(|n| n.node.as_mut());
                let delivered = match (lost, target) {
                    (false, Some(node)) => {
                        node.step(m);
                        true
                    }
                    _ => false,
                };
                // As the gRPC transport does: tell the leader whether its
                // snapshot arrived.
                if is_snapshot {
                    if let Some(Some(from)) = self.nodes.get_mut(&link.0).map(|n| n.node.as_mut()) {
                        from.report_snapshot(link.1, delivered);
                    }
                }
            }
        }
        panic!("the network did not quiesce in 1000 rounds");
    }

    /// One tick on every running node, then delivery.
    pub fn tick(&mut self) {
        for id in self.running() {
            self.node_mut(id).tick();
        }
        self.deliver();
    }

    /// Ticks until `done` holds; false if it did not within `max_ticks`.
    pub fn run_until(
        &mut self,
        max_ticks: usize,
        mut done: impl FnMut(&mut Network) -> bool,
    ) -> bool {
        self.deliver();
        for _ in 0..max_ticks {
            if done(self) {
                return true;
            }
            self.tick();
        }
        done(self)
    }

    /// The leader that a majority of running nodes agree on, if any.
    pub fn leader(&self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for id in self.running() {
            if let Some(l) = self.node(id).status().leader {
                *votes.entry(l).or_default() += 1;
            }
        }
        let quorum = self.running().len() / 2 + 1;
        votes
            .into_iter()
            .find(|(l, n)| *n >= quorum && self.node_is_leader(*l))
            .map(|(l, _)| l)
    }

    fn node_is_leader(&self, id: u64) -> bool {
        self.nodes[&id]
            .node
            .as_ref()
            .is_some_and(|n| n.status().role == "leader")
    }

    /// Running nodes other than the leader.
    pub fn followers(&self) -> Vec<u64> {
        let leader = self.leader();
        self.running()
            .into_iter()
            .filter(|id| Some(*id) != leader)
            .collect()
    }

    /// Ticks until a leader is agreed on; panics after `max_ticks`.
    pub fn wait_for_leader(&mut self, max_ticks: usize) -> u64 {
        assert!(
            self.run_until(max_ticks, |net| net.leader().is_some()),
            "no leader within {max_ticks} ticks"
        );
        self.leader().unwrap()
    }

    /// Proposes on node `id`; the receiver gets the outcome once applied there.
    pub fn propose(&mut self, id: u64, command: Command) -> oneshot::Receiver<Result<Outcome>> {
        let (tx, rx) = oneshot::channel();
        self.node_mut(id).propose(command, Some(tx));
        rx
    }

    pub fn propose_member_change(
        &mut self,
        id: u64,
        change: MemberChange,
    ) -> oneshot::Receiver<Result<Outcome>> {
        let (tx, rx) = oneshot::channel();
        self.node_mut(id).propose_member_change(change, Some(tx));
        rx
    }

    /// Ticks until the proposal's outcome arrives; panics after `max_ticks`.
    pub fn wait_outcome(
        &mut self,
        rx: &mut oneshot::Receiver<Result<Outcome>>,
        max_ticks: usize,
    ) -> Outcome {
        let mut outcome = None;
        let done = self.run_until(max_ticks, |_| match rx.try_recv() {
            Ok(result) => {
                outcome = Some(result.expect("proposal succeeded"));
                true
            }
            Err(_) => false,
        });
        assert!(done, "proposal not applied within {max_ticks} ticks");
        outcome.unwrap()
    }
}

pub fn add_route(filter: &str, node: u64) -> Command {
    Command::AddRoute(proto::AddRoute {
        filter: filter.into(),
        node,
    })
}

pub fn member(id: u64) -> Member {
    Member {
        id,
        address: format!("node-{id}:7000"),
        mqtt_address: format!("node-{id}:1883"),
    }
}
