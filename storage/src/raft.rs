//! `RaftStorage`: raft-rs's [`raft::Storage`] over the `raft_log` and
//! `raft_state` trees.
//!
//! It owns the raft log, the hard state, the truncation point and the latest
//! snapshot of one raft group. It never interprets entry or snapshot data (the
//! cluster crate's state machine does) and never decides when to compact (the
//! cluster driver does). The layout of each value is in `raft_records.rs`.
//!
//! The configuration (`ConfState`) is persisted only inside the snapshot's
//! metadata: after a restart raft-rs starts from the snapshot's configuration
//! and the driver re-applies the configuration changes of the log after it,
//! in log order, together with the normal entries it replays into the state
//! machine. Keeping a separately persisted "current" configuration would make
//! that replay start from the wrong one.
//!
//! # Lifecycle
//! 1. [`RaftStorage::open`] on an open [`Store`] reads the hard state, the
//!    truncation point and the snapshot metadata into memory and checks that
//!    the log is contiguous. A store that never held raft state is
//!    *uninitialized*: empty configuration, first index 1, last index 0.
//! 2. A node that founds a cluster calls [`RaftStorage::bootstrap`] once: an
//!    empty snapshot at [`BOOTSTRAP_INDEX`] holding the initial voters. A node
//!    that joins one stays uninitialized until the leader's snapshot arrives
//!    ([`RaftStorage::apply_snapshot`]), so every node's log starts with a
//!    snapshot and none replays a configuration it never had.
//! 3. Each ready: [`RaftStorage::append`] writes new entries and the hard
//!    state in one sled transaction and fsyncs; [`RaftStorage::set_commit`]
//!    records a newer commit index without fsync.
//! 4. The driver saves a snapshot of its state machine with
//!    [`RaftStorage::save_snapshot`] and drops old entries with
//!    [`RaftStorage::compact`].
//!
//! # Errors
//! Every write is durable only when it returns `Ok`. raft-rs's trait doc says a
//! node whose storage fails is "inoperable", so the driver treats any error as
//! fatal: it stops the node and reports it, it never retries silently.
//!
//! Writes go straight to sled from the raft driver's own thread (it blocks on
//! the fsync by design), not through the group-commit writer; both share the
//! sled instance and its reopen-after-error logic (`Shared::with_handles`).

use std::sync::Arc;

use parking_lot::RwLock;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::{
    error::{Error, Result},
    raft_records::{self as rec, RaftTree},
    store::{Handles, Shared},
    Store,
};

/// Index of the empty snapshot a founding node bootstraps with; its first log
/// entry is the next one.
pub const BOOTSTRAP_INDEX: u64 = 5;
/// Term of that snapshot.
pub const BOOTSTRAP_TERM: u64 = 5;

/// What is kept in memory, mirroring `raft_state`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cache {
    pub(crate) hard_state: HardState,
    /// Index and term of the last entry removed from the log.
    pub(crate) truncated: (u64, u64),
    /// Last index in the log; `truncated.0` if the log is empty.
    pub(crate) last_index: u64,
    /// Metadata of the stored snapshot; index 0 if none.
    pub(crate) snapshot: SnapshotMetadata,
    /// Chunks of the stored snapshot's data.
    pub(crate) snapshot_chunks: u32,
}

/// Raft log and state of one raft group, in the store. Cheap to clone; every
/// clone shares one in-memory cache, and only one clone (the driver's) writes.
#[derive(Clone)]
pub struct RaftStorage {
    shared: Arc<Shared>,
    pub(crate) cache: Arc<RwLock<Cache>>,
}

impl std::fmt::Debug for RaftStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cache = self.cache.read();
        f.debug_struct("RaftStorage")
            .field("truncated", &cache.truncated)
            .field("last_index", &cache.last_index)
            .field("commit", &cache.hard_state.commit)
            .finish_non_exhaustive()
    }
}

fn corrupt(tree: RaftTree, key: &[u8], e: impl std::fmt::Display) -> Error {
    Error::corrupt(tree.name(), key, e.to_string())
}

/// Turns a sled transaction error into ours.
fn tx_error(context: &'static str, e: TransactionError<Error>) -> Error {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => Error::from_sled(context, e),
    }
}

impl RaftStorage {
    /// Reads the raft state of `store` and checks it (see the lifecycle).
    pub fn open(store: &Store) -> Result<RaftStorage> {
        let shared = Arc::clone(store.shared());
        let cache = shared.with_handles(load)?;
        Ok(RaftStorage {
            shared,
            cache: Arc::new(RwLock::new(cache)),
        })
    }

    /// The configuration has at least one voter or learner: the store was
    /// bootstrapped or received a snapshot.
    pub fn is_initialized(&self) -> bool {
        let cache = self.cache.read();
        let cs = cache.snapshot.get_conf_state();
        !cs.voters.is_empty() || !cs.learners.is_empty()
    }

    /// The hard state last written.
    pub fn hard_state(&self) -> HardState {
        self.cache.read().hard_state.clone()
    }

    /// Metadata of the stored snapshot (index 0 if there is none).
    pub fn snapshot_metadata(&self) -> SnapshotMetadata {
        self.cache.read().snapshot.clone()
    }

    /// Index and term of the last entry compacted away or replaced by the
    /// snapshot.
    pub fn truncated(&self) -> (u64, u64) {
        self.cache.read().truncated
    }

    /// Founds a cluster: an empty snapshot at [`BOOTSTRAP_INDEX`] whose
    /// configuration is `conf_state`, and the matching hard state. Refused
    /// (`InvalidWrite`) on a store that is initialized or holds any entry.
    pub fn bootstrap(&self, conf_state: ConfState) -> Result<()> {
        if self.is_initialized() || self.cache.read().last_index != 0 {
            return Err(Error::InvalidWrite {
                reason: "raft storage is already initialized".into(),
            });
        }
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = BOOTSTRAP_INDEX;
        meta.term = BOOTSTRAP_TERM;
        meta.set_conf_state(conf_state);
        self.apply_snapshot(&snapshot)
    }

    /// Appends `entries` (replacing any conflicting suffix of the log) and
    /// writes `hard_state`, in one transaction, then fsyncs. Nothing to do
    /// if both are empty.
    pub fn append(&self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<()> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut cache = self.cache.write();
        let mut new_last = cache.last_index;
        if let Some(first) = entries.first() {
            let first_index = cache.truncated.0 + 1;
            if first.index < first_index || first.index > cache.last_index + 1 {
                return Err(Error::InvalidWrite {
                    reason: format!(
                        "appending entries from {} to a log holding {first_index}..={}",
                        first.index, cache.last_index
                    ),
                });
            }
            for (i, e) in entries.iter().enumerate() {
                if e.index != first.index + i as u64 {
                    return Err(Error::InvalidWrite {
                        reason: format!("entries are not contiguous at index {}", e.index),
                    });
                }
            }
            new_last = first.index + entries.len() as u64 - 1;
        }
        let old_last = cache.last_index;
        let encoded: Vec<_> = entries
            .iter()
            .map(|e| (rec::log_key(e.index), rec::encode_entry(e)))
            .collect();
        let hs = hard_state.map(rec::encode_hard_state);
        self.shared.with_handles(|h| {
            let (log, state) = (h.raft_tree(RaftTree::Log), h.raft_tree(RaftTree::State));
            (log, state)
                .transaction(|(log, state)| {
                    for (key, value) in &encoded {
                        log.insert(&key[..], value.as_slice())?;
                    }
                    // A leader change can replace a suffix of the log with a
                    // shorter one: drop what lies past the new end.
                    for index in new_last + 1..=old_last {
                        log.remove(&rec::log_key(index)[..])?;
                    }
                    if let Some(hs) = &hs {
                        state.insert(rec::HARD_STATE, hs.as_slice())?;
                    }
                    Ok::<_, ConflictableTransactionError<Error>>(())
                })
                .map_err(|e| tx_error("appending to the raft log", e))?;
            h.flush()
        })?;
        if !entries.is_empty() {
            cache.last_index = new_last;
        }
        if let Some(hs) = hard_state {
            cache.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Records a newer commit index (raft-rs's light ready), without fsync:
    /// the leader tells it again after a crash.
    pub fn set_commit(&self, commit: u64) -> Result<()> {
        let mut cache = self.cache.write();
        let mut hs = cache.hard_state.clone();
        hs.commit = commit;
        let value = rec::encode_hard_state(&hs);
        self.shared.with_handles(|h| {
            h.raft_tree(RaftTree::State)
                .insert(rec::HARD_STATE, value)
                .map_err(|e| Error::from_sled("writing the raft hard state", e))
        })?;
        cache.hard_state = hs;
        Ok(())
    }

    /// Replaces the whole log with `snapshot` (received from the leader, or the
    /// bootstrap one): the snapshot is stored, every entry dropped, the
    /// truncation point and commit index moved to its index. Fsyncs.
    pub fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let mut cache = self.cache.write();
        let meta = snapshot.get_metadata();
        if meta.index < cache.snapshot.index || meta.index < cache.truncated.0 {
            return Err(Error::InvalidWrite {
                reason: format!(
                    "snapshot at {} is older than the one stored at {}",
                    meta.index, cache.snapshot.index
                ),
            });
        }
        let mut hs = cache.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        let hs_value = rec::encode_hard_state(&hs);
        let (first, last) = (cache.truncated.0 + 1, cache.last_index);
        let old_chunks = cache.snapshot_chunks;
        let chunks = self.write_snapshot(snapshot, old_chunks, first..=last, Some(&hs_value))?;
        cache.hard_state = hs;
        cache.truncated = (meta.index, meta.term);
        cache.last_index = meta.index;
        cache.snapshot = meta.clone();
        cache.snapshot_chunks = chunks;
        self.shared.with_handles(Handles::flush)
    }

    /// Stores a snapshot the driver made of its state machine at an applied
    /// index, replacing the previous one. The log is not touched (see
    /// [`RaftStorage::compact`]); the snapshot must lie within it.
    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let mut cache = self.cache.write();
        let meta = snapshot.get_metadata();
        if meta.index < cache.snapshot.index || meta.index > cache.last_index {
            return Err(Error::InvalidWrite {
                reason: format!(
                    "snapshot at {} outside {}..={}",
                    meta.index, cache.snapshot.index, cache.last_index
                ),
            });
        }
        let old_chunks = cache.snapshot_chunks;
        #[allow(clippy::reversed_empty_ranges)] // an empty range: no entry removed
        let chunks = self.write_snapshot(snapshot, old_chunks, 1..=0, None)?;
        cache.snapshot = meta.clone();
        cache.snapshot_chunks = chunks;
        Ok(())
    }

    /// Writes the snapshot (metadata and data chunks) and removes the log
    /// entries `remove`, in one transaction. Returns the chunk count.
    fn write_snapshot(
        &self,
        snapshot: &Snapshot,
        old_chunks: u32,
        remove: std::ops::RangeInclusive<u64>,
        hard_state: Option<&Vec<u8>>,
    ) -> Result<u32> {
        let meta = snapshot.get_metadata();
        let chunks: Vec<Vec<u8>> = snapshot
            .get_data()
            .chunks(rec::SNAPSHOT_CHUNK)
            .map(rec::encode_chunk)
            .collect();
        let count = u32::try_from(chunks.len()).map_err(|_| Error::InvalidWrite {
            reason: "snapshot data of 256 TiB or more".into(),
        })?;
        let meta_value = rec::encode_snapshot_meta(meta, count);
        let truncated = rec::encode_truncated(meta.index, meta.term);
        let compacting = hard_state.is_some();
        self.shared.with_handles(|h| {
            let (log, state) = (h.raft_tree(RaftTree::Log), h.raft_tree(RaftTree::State));
            (log, state)
                .transaction(|(log, state)| {
                    for (n, chunk) in chunks.iter().enumerate() {
                        state.insert(rec::snapshot_chunk_key(n as u32), chunk.as_slice())?;
                    }
                    for n in count..old_chunks {
                        state.remove(rec::snapshot_chunk_key(n))?;
                    }
                    state.insert(rec::SNAPSHOT, meta_value.as_slice())?;
                    if compacting {
                        state.insert(rec::TRUNCATED, truncated.as_slice())?;
                    }
                    if let Some(hs) = hard_state {
                        state.insert(rec::HARD_STATE, hs.as_slice())?;
                    }
                    for index in remove.clone() {
                        log.remove(&rec::log_key(index)[..])?;
                    }
                    Ok::<_, ConflictableTransactionError<Error>>(())
                })
                .map_err(|e| tx_error("writing a raft snapshot", e))
        })?;
        Ok(count)
    }

    /// Drops the entries before `compact_index`, which must not lie past the
    /// stored snapshot (the entries after it are needed to catch up from it).
    /// No fsync: a crash may leave entries that were to be dropped.
    pub fn compact(&self, compact_index: u64) -> Result<()> {
        let mut cache = self.cache.write();
        let first = cache.truncated.0 + 1;
        if compact_index <= first {
            return Ok(());
        }
        if compact_index > cache.snapshot.index + 1 {
            return Err(Error::InvalidWrite {
                reason: format!(
                    "compacting to {compact_index} past the snapshot at {}",
                    cache.snapshot.index
                ),
            });
        }
        let last_removed = compact_index - 1;
        let term = self.read_term(last_removed)?;
        let truncated = rec::encode_truncated(last_removed, term);
        self.shared.with_handles(|h| {
            let (log, state) = (h.raft_tree(RaftTree::Log), h.raft_tree(RaftTree::State));
            (log, state)
                .transaction(|(log, state)| {
                    state.insert(rec::TRUNCATED, truncated.as_slice())?;
                    for index in first..compact_index {
                        log.remove(&rec::log_key(index)[..])?;
                    }
                    Ok::<_, ConflictableTransactionError<Error>>(())
                })
                .map_err(|e| tx_error("compacting the raft log", e))
        })?;
        cache.truncated = (last_removed, term);
        Ok(())
    }

    /// The term of the entry stored at `index`.
    pub(crate) fn read_term(&self, index: u64) -> Result<u64> {
        let key = rec::log_key(index);
        self.shared.with_handles(|h| {
            let value = h
                .raft_tree(RaftTree::Log)
                .get(key)
                .map_err(|e| Error::from_sled("reading the raft log", e))?
                .ok_or_else(|| corrupt(RaftTree::Log, &key, "entry missing inside the log"))?;
            rec::decode_entry_term(&value).map_err(|e| corrupt(RaftTree::Log, &key, e))
        })
    }

    /// Entries `low..high`, stopping past `max_size` bytes (at least one).
    pub(crate) fn read_entries(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>> {
        self.shared.with_handles(|h| {
            let mut entries = Vec::with_capacity((high - low).min(1024) as usize);
            let mut size = 0u64;
            for item in h
                .raft_tree(RaftTree::Log)
                .range(rec::log_key(low)..rec::log_key(high))
            {
                let (key, value) = item.map_err(|e| Error::from_sled("reading the raft log", e))?;
                let index =
                    rec::decode_log_key(&key).map_err(|e| corrupt(RaftTree::Log, &key, e))?;
                let expected = low + entries.len() as u64;
                if index != expected {
                    return Err(corrupt(
                        RaftTree::Log,
                        &key,
                        format!("gap in the raft log: expected entry {expected}"),
                    ));
                }
                let entry = rec::decode_entry(index, &value)
                    .map_err(|e| corrupt(RaftTree::Log, &key, e))?;
                size += protobuf::Message::compute_size(&entry) as u64;
                if !entries.is_empty() && max_size.is_some_and(|max| size > max) {
                    break;
                }
                entries.push(entry);
            }
            if entries.is_empty() && low < high {
                return Err(corrupt(
                    RaftTree::Log,
                    &rec::log_key(low),
                    "entry missing inside the log",
                ));
            }
            Ok(entries)
        })
    }

    /// The stored snapshot with its data.
    pub(crate) fn read_snapshot(&self) -> Result<Snapshot> {
        let cache = self.cache.read().clone();
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(cache.snapshot);
        let mut data = Vec::new();
        self.shared.with_handles(|h| {
            let state = h.raft_tree(RaftTree::State);
            for n in 0..cache.snapshot_chunks {
                let key = rec::snapshot_chunk_key(n);
                let value = state
                    .get(&key)
                    .map_err(|e| Error::from_sled("reading the raft snapshot", e))?
                    .ok_or_else(|| corrupt(RaftTree::State, &key, "snapshot chunk missing"))?;
                data.extend_from_slice(
                    rec::decode_chunk(&value).map_err(|e| corrupt(RaftTree::State, &key, e))?,
                );
            }
            Ok(())
        })?;
        snapshot.set_data(data.into());
        Ok(snapshot)
    }
}

/// Reads `raft_state` and the ends of `raft_log` (see `RaftStorage::open`).
fn load(h: &Handles) -> Result<Cache> {
    let state = h.raft_tree(RaftTree::State);
    let get = |key: &[u8]| {
        state
            .get(key)
            .map_err(|e| Error::from_sled("reading the raft state", e))
    };
    let mut cache = Cache::default();
    if let Some(v) = get(rec::HARD_STATE)? {
        cache.hard_state =
            rec::decode_hard_state(&v).map_err(|e| corrupt(RaftTree::State, rec::HARD_STATE, e))?;
    }
    if let Some(v) = get(rec::TRUNCATED)? {
        cache.truncated =
            rec::decode_truncated(&v).map_err(|e| corrupt(RaftTree::State, rec::TRUNCATED, e))?;
    }
    if let Some(v) = get(rec::SNAPSHOT)? {
        let (meta, chunks) = rec::decode_snapshot_meta(&v)
            .map_err(|e| corrupt(RaftTree::State, rec::SNAPSHOT, e))?;
        if meta.index < cache.truncated.0 {
            return Err(corrupt(
                RaftTree::State,
                rec::SNAPSHOT,
                format!(
                    "snapshot at {} is older than the log's start at {}",
                    meta.index,
                    cache.truncated.0 + 1
                ),
            ));
        }
        cache.snapshot = meta;
        cache.snapshot_chunks = chunks;
    }
    let log = h.raft_tree(RaftTree::Log);
    let read_key = |item: Option<sled::Result<(sled::IVec, sled::IVec)>>| -> Result<Option<u64>> {
        match item {
            None => Ok(None),
            Some(item) => {
                let (key, _) = item.map_err(|e| Error::from_sled("reading the raft log", e))?;
                rec::decode_log_key(&key)
                    .map(Some)
                    .map_err(|e| corrupt(RaftTree::Log, &key, e))
            }
        }
    };
    let first = read_key(log.iter().next())?;
    let last = read_key(log.iter().next_back())?;
    cache.last_index = cache.truncated.0;
    if let (Some(first), Some(last)) = (first, last) {
        let expected_first = cache.truncated.0 + 1;
        if first != expected_first {
            return Err(corrupt(
                RaftTree::Log,
                &rec::log_key(first),
                format!("raft log starts at {first}, expected {expected_first}"),
            ));
        }
        let len = log.len() as u64;
        if last - first + 1 != len {
            return Err(corrupt(
                RaftTree::Log,
                &rec::log_key(last),
                format!("gap in the raft log: {len} entries in {first}..={last}"),
            ));
        }
        cache.last_index = last;
    }
    if cache.snapshot.index > cache.last_index {
        return Err(corrupt(
            RaftTree::State,
            rec::SNAPSHOT,
            format!(
                "snapshot at {} is past the log's end at {}",
                cache.snapshot.index, cache.last_index
            ),
        ));
    }
    Ok(cache)
}
