//! The group-commit writer: the single owner of every write to sled.
//!
//! Submitters send requests (a list of ops and an optional durability
//! callback) over one FIFO channel. The writer takes a group: the first
//! request plus whatever else is already queued, up to [`MAX_GROUP`]. It
//! applies the whole group as one sled transaction over all trees, in
//! submission order, calls sled's flush (plus an fdatasync) once if any
//! request of the group asked for durability, then runs the group's callbacks.
//! Requests that arrive meanwhile form the next group, so many sessions'
//! writes share one fsync.
//!
//! Lifecycle:
//! 1. `Store::open` spawns the thread running [`GroupCommitter::run_until_closed`]
//!    (or `Store::open_with_committer` hands the committer to a test, which
//!    drives it with [`GroupCommitter::step`]).
//! 2. Each loop: block for one request, drain the queue, commit the group.
//! 3. A write error fails every callback of its group; the writer then drops
//!    and reopens sled before the next group, because sled 0.34 refuses every
//!    write after its first I/O error. If the reopen fails (disk still full),
//!    that group fails too and the next one retries.
//! 4. `Store::close` queues a close marker: the writer finishes the groups
//!    before it, flushes and exits. Dropping every `Store` and `Writer`
//!    disconnects the channel, with the same effect.
//! 5. A request still queued when the writer exits is dropped; dropping it
//!    calls its callback with `Error::Closed`. So every callback runs once.

use std::{
    collections::{BTreeMap, BTreeSet},
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{atomic::Ordering, Arc},
};

use crossbeam_channel::{Receiver, Sender};
use sled::{
    transaction::{TransactionError, Transactional},
    IVec,
};

use crate::{
    batch_index::OutgoingIndex,
    error::{Error, Result},
    keys::{self, TreeId},
    ops::WriteOp,
    records::{self, OutgoingRecord},
    store::{Handles, Shared},
};

/// Most requests in one group. Bounds the transaction's size and how long the
/// first callback of a group waits for the last op of it.
pub const MAX_GROUP: usize = 4096;

/// Called once with the outcome: `Ok` when the request's ops are on disk,
/// `Err` if they failed or the store closed first. Runs on the writer thread:
/// it must not block (send a message, complete a oneshot, ...).
pub type Durable = Box<dyn FnOnce(Result<()>) + Send + 'static>;

/// What travels on the writer's channel.
pub(crate) enum Msg {
    Write(Request),
    /// Sent by `Store::close`: finish what is before it, then stop.
    Close,
}

pub(crate) struct Request {
    ops: Vec<WriteOp>,
    ack: Ack,
}

/// The durability callback, called exactly once: by `complete`, or with
/// `Error::Closed` when dropped uncalled (store closed, writer gone).
struct Ack(Option<Durable>);

impl Ack {
    fn wants_durability(&self) -> bool {
        self.0.is_some()
    }

    fn complete(mut self, result: Result<()>) {
        if let Some(callback) = self.0.take() {
            // A panicking callback must not take the writer down with it.
            if catch_unwind(AssertUnwindSafe(|| callback(result))).is_err() {
                tracing::error!("a storage durability callback panicked");
            }
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(callback) = self.0.take() {
            let _ = catch_unwind(AssertUnwindSafe(|| callback(Err(Error::Closed))));
        }
    }
}

/// Submits writes to the group-commit writer. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: Sender<Msg>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    pub(crate) fn new(tx: Sender<Msg>) -> Writer {
        Writer { tx }
    }

    /// Queues ops; they are applied in submission order (across all
    /// submitters, in the order `submit` calls returned).
    ///
    /// If `on_durable` is `Some`, it is called once the ops are fsynced to
    /// disk (`Ok`) or failed (`Err`); never twice, never dropped uncalled. If
    /// the store is already closed it is called with `Error::Closed` before
    /// `submit` returns; otherwise it runs on the writer thread. The ops of one
    /// submit are applied all or none; an invalid op (see
    /// `Error::InvalidWrite`) refuses its whole submit.
    pub fn submit(&self, ops: Vec<WriteOp>, on_durable: Option<Durable>) {
        let request = Request {
            ops,
            ack: Ack(on_durable),
        };
        // On failure the request comes back and is dropped here, which calls
        // the callback with `Error::Closed`.
        let _ = self.tx.send(Msg::Write(request));
    }
}

/// The writer's core: owns applying and flushing. `Store::open` runs it on a
/// thread; tests drive it with `step`.
pub struct GroupCommitter {
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    /// A close marker was received: nothing more is applied.
    closed: bool,
    /// The last group failed: sled must be reopened before the next one.
    needs_reopen: bool,
    /// Where each stored outgoing message is, to acknowledge one inside its
    /// batch (see `batches.rs`). Cleared when a group fails.
    index: OutgoingIndex,
}

impl std::fmt::Debug for GroupCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitter")
            .field("closed", &self.closed)
            .field("needs_reopen", &self.needs_reopen)
            .finish_non_exhaustive()
    }
}

impl GroupCommitter {
    pub(crate) fn new(rx: Receiver<Msg>, shared: Arc<Shared>) -> GroupCommitter {
        GroupCommitter {
            rx,
            shared,
            closed: false,
            needs_reopen: false,
            index: OutgoingIndex::default(),
        }
    }

    /// Commits one group from what is queued now, without blocking. Returns
    /// how many requests the group held (0 if none was queued). Once it has
    /// taken the close marker it applies nothing: it completes what is queued
    /// with `Error::Closed` and returns 0.
    pub fn step(&mut self) -> usize {
        let group = self.take_group(None);
        let n = group.len();
        if n > 0 {
            self.commit(group);
        }
        n
    }

    /// Steps up to `groups` times, stopping early when the queue is empty.
    /// Returns how many requests were completed.
    pub fn run(&mut self, groups: usize) -> usize {
        let mut done = 0;
        for _ in 0..groups {
            match self.step() {
                0 => break,
                n => done += n,
            }
        }
        done
    }

    /// The writer thread's loop: until closed or every sender is gone.
    pub(crate) fn run_until_closed(mut self) {
        while !self.closed {
            let Ok(first) = self.rx.recv() else { break };
            let group = self.take_group(Some(first));
            if !group.is_empty() {
                self.commit(group);
            }
        }
        if let Err(e) = self.shared.with_handles(Handles::flush) {
            if !matches!(e, Error::Closed) {
                tracing::error!(error = %e, "final flush of the store failed");
            }
        }
    }

    /// `first` plus what is queued, up to `MAX_GROUP` requests, stopping at a
    /// close marker.
    fn take_group(&mut self, mut first: Option<Msg>) -> Vec<Request> {
        let mut group = Vec::new();
        while group.len() < MAX_GROUP {
            let msg = match first.take() {
                Some(msg) => msg,
                None => match self.rx.try_recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                },
            };
            match msg {
                Msg::Write(request) if self.closed => {
                    request.ack.complete(Err(Error::Closed));
                }
                Msg::Write(request) => group.push(request),
                Msg::Close => {
                    self.closed = true;
                    break;
                }
            }
        }
        group
    }

    fn commit(&mut self, group: Vec<Request>) {
        let stats = Arc::clone(&self.shared);
        let stats = &stats.stats;
        stats.group(group.len(), group.iter().map(|r| r.ops.len()).sum());

        let mut valid = Vec::with_capacity(group.len());
        for request in group {
            match request.ops.iter().try_for_each(WriteOp::validate) {
                Ok(()) => valid.push(request),
                Err(e) => {
                    stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                    request.ack.complete(Err(e));
                }
            }
        }
        let durable = valid.iter().any(|r| r.ack.wants_durability());
        let result = self.apply(&valid, durable);
        if let Err(e) = &result {
            // The group may be on disk in part or not at all: the index is
            // read again from what sled holds after the reopen.
            self.index.clear();
            stats.failed_groups.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, requests = valid.len(), "storage write failed");
            self.needs_reopen = !matches!(e, Error::Closed);
            if self.needs_reopen {
                stats
                    .failed_requests
                    .fetch_add(valid.len() as u64, Ordering::Relaxed);
            }
        }
        for request in valid {
            request.ack.complete(result.clone());
        }
    }

    fn apply(&mut self, group: &[Request], durable: bool) -> Result<()> {
        if self.needs_reopen {
            self.shared.reopen()?;
            self.needs_reopen = false;
        }
        let index = &mut self.index;
        self.shared.with_handles(|handles| {
            let mut overlay = Overlay::default();
            for op in group.iter().flat_map(|r| &r.ops) {
                overlay.add(handles, op)?;
            }
            overlay.add_outgoing(handles, index)?;
            overlay.commit(handles)?;
            if durable {
                let started = std::time::Instant::now();
                handles.flush()?;
                self.shared.stats.flushed(started.elapsed());
            }
            Ok(())
        })
    }
}

/// The net effect of a group's ops per tree: the last write to each key wins,
/// which is what applying them one by one in order would leave.
#[derive(Default)]
struct Overlay<'a> {
    /// Indexed by `TreeId::index`; `None` deletes the key.
    trees: [BTreeMap<Vec<u8>, Option<Vec<u8>>>; TreeId::ALL.len()],
    /// The group's net outgoing ops per client, `seq -> Some(record)` put or
    /// `None` delete; turned into batches and acks by `add_outgoing`.
    outgoing: BTreeMap<&'a str, BTreeMap<u64, Option<&'a OutgoingRecord>>>,
    /// Clients whose session was deleted in this group, before the ops of
    /// theirs left in `outgoing`.
    deleted: BTreeSet<&'a str>,
}

impl<'a> Overlay<'a> {
    fn put(&mut self, tree: TreeId, key: Vec<u8>, value: Vec<u8>) {
        self.trees[tree.index()].insert(key, Some(value));
    }

    fn remove(&mut self, tree: TreeId, key: Vec<u8>) {
        self.trees[tree.index()].insert(key, None);
    }

    fn add(&mut self, handles: &Handles, op: &'a WriteOp) -> Result<()> {
        match op {
            WriteOp::PutSession { client_id, record } => {
                self.put(TreeId::Sessions, keys::session(client_id), record.encode())
            }
            WriteOp::DeleteSession { client_id } => {
                self.remove_client(handles, client_id)?;
                self.outgoing.remove(client_id.as_str());
                self.deleted.insert(client_id.as_str());
            }
            WriteOp::PutSubscription { client_id, record } => self.put(
                TreeId::Subscriptions,
                keys::subscription(client_id, &record.filter),
                record.encode(),
            ),
            WriteOp::DeleteSubscription { client_id, filter } => {
                self.remove(TreeId::Subscriptions, keys::subscription(client_id, filter))
            }
            WriteOp::PutOutgoing {
                client_id,
                seq,
                record,
            } => {
                self.outgoing
                    .entry(client_id.as_str())
                    .or_default()
                    .insert(*seq, Some(record));
            }
            WriteOp::DeleteOutgoing { client_id, seq } => {
                self.outgoing
                    .entry(client_id.as_str())
                    .or_default()
                    .insert(*seq, None);
            }
            WriteOp::PutIncomingQos2 {
                client_id,
                packet_id,
            } => self.put(
                TreeId::IncomingQos2,
                keys::incoming_qos2(client_id, *packet_id),
                records::encode_incoming_qos2(),
            ),
            WriteOp::DeleteIncomingQos2 {
                client_id,
                packet_id,
            } => self.remove(
                TreeId::IncomingQos2,
                keys::incoming_qos2(client_id, *packet_id),
            ),
            WriteOp::PutRetained { message } => self.put(
                TreeId::Retained,
                keys::retained(&message.topic),
                message.encode(),
            ),
            WriteOp::DeleteRetained { topic } => {
                self.remove(TreeId::Retained, keys::retained(topic))
            }
            WriteOp::PutRouteMessage { route, seq, record } => self.put(
                TreeId::RouteQueue,
                keys::route_queue(route, *seq),
                record.encode(),
            ),
            WriteOp::DeleteRouteMessage { route, seq } => {
                self.remove(TreeId::RouteQueue, keys::route_queue(route, *seq))
            }
            WriteOp::DeleteRouteQueue { route } => self.remove_route(handles, route)?,
            WriteOp::PutHubRoute { route, definition } => self.put(
                TreeId::HubRoutes,
                route.as_bytes().to_vec(),
                records::encode_hub_route(definition),
            ),
            WriteOp::DeleteHubRoute { route } => {
                self.remove(TreeId::HubRoutes, route.as_bytes().to_vec())
            }
            WriteOp::PutForward { node, seq, copy } => self.put(
                TreeId::Forwards,
                keys::forward(*node, *seq),
                records::encode_forward(copy),
            ),
            WriteOp::DeleteForward { node, seq } => {
                self.remove(TreeId::Forwards, keys::forward(*node, *seq))
            }
            WriteOp::PutReplicaOutgoing {
                client_id,
                seq,
                record,
            } => self.put(
                TreeId::ReplicaOutgoing,
                keys::outgoing(client_id, *seq),
                record.encode(),
            ),
            WriteOp::DeleteReplicaOutgoing { client_id, seq } => {
                self.remove(TreeId::ReplicaOutgoing, keys::outgoing(client_id, *seq))
            }
            WriteOp::PutReplicaIncoming {
                client_id,
                packet_id,
            } => self.put(
                TreeId::ReplicaIncoming,
                keys::incoming_qos2(client_id, *packet_id),
                records::encode_incoming_qos2(),
            ),
            WriteOp::DeleteReplicaIncoming {
                client_id,
                packet_id,
            } => self.remove(
                TreeId::ReplicaIncoming,
                keys::incoming_qos2(client_id, *packet_id),
            ),
            WriteOp::PutReplicaMeta { client_id, meta } => self.put(
                TreeId::ReplicaMeta,
                keys::replica_meta(client_id),
                meta.encode(),
            ),
            WriteOp::DropReplica { client_id } => self.drop_replica(handles, client_id)?,
            WriteOp::DropReplicaOf { client_id, owner } => {
                if self.replica_owner(handles, client_id)? == Some(*owner) {
                    self.drop_replica(handles, client_id)?;
                }
            }
            WriteOp::PutReplicaForward {
                origin,
                node,
                seq,
                copy,
            } => self.put(
                TreeId::ReplicaForwards,
                keys::replica_forward(*origin, *node, *seq),
                records::encode_forward(copy),
            ),
            WriteOp::DeleteReplicaForward { origin, node, seq } => self.remove(
                TreeId::ReplicaForwards,
                keys::replica_forward(*origin, *node, *seq),
            ),
            WriteOp::DropReplicaForwards { origin } => self.remove_prefix(
                handles,
                TreeId::ReplicaForwards,
                &keys::replica_forward_prefix(*origin),
                "scanning dropped replica forwards",
            )?,
        }
        Ok(())
    }

    fn drop_replica(&mut self, handles: &Handles, client_id: &str) -> Result<()> {
        self.remove(TreeId::ReplicaMeta, keys::replica_meta(client_id));
        let prefix = keys::client_prefix(client_id);
        for tree in TreeId::REPLICA_PER_CLIENT {
            self.remove_prefix(handles, tree, &prefix, "scanning a dropped replica")?;
        }
        Ok(())
    }

    /// The owner the client's replica meta names, as of the ops added so
    /// far (this group's first, then the tree).
    fn replica_owner(&self, handles: &Handles, client_id: &str) -> Result<Option<u64>> {
        let key = keys::replica_meta(client_id);
        let value = match self.trees[TreeId::ReplicaMeta.index()].get(&key) {
            Some(pending) => pending.clone(),
            None => handles
                .tree(TreeId::ReplicaMeta)
                .get(&key)
                .map_err(|e| Error::from_sled("reading a replica's owner", e))?
                .map(|v| v.to_vec()),
        };
        // an unreadable meta is left for `load_replica` to report
        Ok(value
            .and_then(|v| crate::replica::ReplicaMeta::decode(&v).ok())
            .map(|m| m.owner))
    }

    /// Turns the group's outgoing ops into batch and acks changes (see
    /// `batches.rs`): one batch per client per group, split by size.
    fn add_outgoing(&mut self, handles: &Handles, index: &mut OutgoingIndex) -> Result<()> {
        for client_id in &self.deleted {
            index.reset(handles, client_id)?;
        }
        for (client_id, ops) in std::mem::take(&mut self.outgoing) {
            for (tree, key, value) in index.apply(handles, client_id, &ops)? {
                match value {
                    Some(value) => self.put(tree, key, value),
                    None => self.remove(tree, key),
                }
            }
        }
        for client_id in std::mem::take(&mut self.deleted) {
            index.forget_if_empty(client_id);
        }
        Ok(())
    }

    /// Deletes every message of a route's queue.
    fn remove_route(&mut self, handles: &Handles, route: &str) -> Result<()> {
        let prefix = keys::route_prefix(route);
        let context = "scanning a deleted route queue";
        self.remove_prefix(handles, TreeId::RouteQueue, &prefix, context)
    }

    /// Deletes the session and every key of its own per-client trees
    /// (`TreeId::PER_CLIENT`; a replica under the same client id stays).
    fn remove_client(&mut self, handles: &Handles, client_id: &str) -> Result<()> {
        self.remove(TreeId::Sessions, keys::session(client_id));
        let prefix = keys::client_prefix(client_id);
        for tree in TreeId::PER_CLIENT {
            self.remove_prefix(handles, tree, &prefix, "scanning a deleted session")?;
        }
        Ok(())
    }

    /// Deletes every key of `tree` that starts with `prefix`: those on disk
    /// (the writer is the only one who writes, so a scan sees every earlier
    /// group) and those put earlier in this group.
    fn remove_prefix(
        &mut self,
        handles: &Handles,
        tree: TreeId,
        prefix: &[u8],
        context: &'static str,
    ) -> Result<()> {
        for key in handles.tree(tree).scan_prefix(prefix).keys() {
            let key = key.map_err(|e| Error::from_sled(context, e))?;
            self.remove(tree, key.to_vec());
        }
        self.trees[tree.index()]
            .range_mut(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .for_each(|(_, value)| *value = None);
        Ok(())
    }

    /// Applies the overlay atomically: sled makes a batch on one tree, and a
    /// transaction over several, atomic on recovery, so a crash never leaves
    /// part of a group on disk. Most groups touch one tree (queued messages
    /// for persistent sessions); a batch costs far less than a transaction.
    fn commit(self, handles: &Handles) -> Result<()> {
        let mut touched = self.trees.iter().enumerate().filter(|(_, t)| !t.is_empty());
        let (first, second) = (touched.next(), touched.next());
        match (first, second) {
            (None, _) => return Ok(()),
            (Some((index, _)), None) => {
                let tree = &handles.trees()[index];
                let mut batch = sled::Batch::default();
                for (key, value) in self.trees.into_iter().nth(index).unwrap_or_default() {
                    match value {
                        Some(value) => batch.insert(key, value),
                        None => batch.remove(key),
                    }
                }
                return tree
                    .apply_batch(batch)
                    .map_err(|e| Error::from_sled("writing to the store", e));
            }
            (Some(_), Some(_)) => {}
        }
        let writes: Vec<Vec<(IVec, Option<IVec>)>> = self
            .trees
            .into_iter()
            .map(|tree| {
                tree.into_iter()
                    .map(|(k, v)| (IVec::from(k), v.map(IVec::from)))
                    .collect()
            })
            .collect();
        let result: Result<(), TransactionError<()>> = handles.trees().transaction(|views| {
            for (view, tree_writes) in views.iter().zip(&writes) {
                for (key, value) in tree_writes {
                    match value {
                        Some(value) => view.insert(key.clone(), value.clone())?,
                        None => view.remove(key.clone())?,
                    };
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(Error::from_sled("writing to the store", e)),
            // The closure above never aborts.
            Err(TransactionError::Abort(())) => Ok(()),
        }
    }
}
