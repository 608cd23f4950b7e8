//! `Store`: opening the data directory, reads, flush, close.
//!
//! The sled handles live in [`Shared::state`] behind a `RwLock` so that the
//! writer can swap them: after a write error sled refuses every later write
//! (it keeps the first I/O error as a "global error" until it is reopened), so
//! the writer drops the handles and opens the directory again before its next
//! group. Reads and the writer take the lock shared; only that reopen and
//! `close` take it exclusively.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock, RwLockReadGuard},
    thread::JoinHandle,
};

use bytes::Bytes;
use crossbeam_channel::Sender;

use crate::{
    error::{Error, Result},
    keys::{self, TreeId},
    raft_records::RaftTree,
    records::{
        self, OutgoingRecord, RouteRecord, SessionRecord, StoredMessage, SubscriptionRecord,
    },
    stats::{Stats, WriterStats},
    writer::{GroupCommitter, Msg, Writer},
};

/// Where and how to open the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The data directory; created if missing.
    pub path: PathBuf,
    /// sled's page cache size in bytes.
    pub cache_capacity_bytes: u64,
    /// Period of sled's background flush, which makes writes submitted without
    /// a durability callback durable within about this many ms; `None` turns
    /// it off (then only durable submits, `Store::flush` and close flush).
    pub flush_every_ms: Option<u64>,
}

impl StoreConfig {
    /// A 256 MiB cache and sled's default background flush every 500 ms.
    pub fn new(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            cache_capacity_bytes: 256 * 1024 * 1024,
            flush_every_ms: Some(500),
        }
    }
}

/// The open sled database and its trees.
pub(crate) struct Handles {
    db: sled::Db,
    /// Indexed by `TreeId::index`.
    trees: Vec<sled::Tree>,
    /// `raft_log` and `raft_state`, indexed by `RaftTree`: written by
    /// `RaftStorage` only, never by the group-commit writer.
    raft_trees: Vec<sled::Tree>,
    /// sled's log file, opened a second time to `fdatasync` it: sled 0.34 on
    /// Linux ends a flush with `sync_file_range`, which neither flushes the
    /// drive's write cache nor commits the file's new size.
    log_file: fs::File,
    /// `tern.lock`, `flock`ed before sled opens and released after it closes
    /// (fields drop in order, this one last). Holding it first is what makes
    /// `remove_unfinished_snapshots` safe.
    _lock: fs::File,
}

impl Handles {
    fn open(config: &StoreConfig) -> Result<Handles> {
        let path = &config.path;
        let lock = lock_directory(path)?;
        remove_unfinished_snapshots(path)?;
        let db = open_sled(config)?;
        let trees = TreeId::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<sled::Result<Vec<_>>>()
            .map_err(|e| open_error(path, e))?;
        let raft_trees = RaftTree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<sled::Result<Vec<_>>>()
            .map_err(|e| open_error(path, e))?;
        // sled names its log file `db` inside the directory.
        let log_file = fs::File::open(path.join("db")).map_err(|e| Error::Open {
            path: path.clone(),
            message: format!("cannot open sled's log file for fdatasync: {e}"),
        })?;
        Ok(Handles {
            db,
            trees,
            raft_trees,
            log_file,
            _lock: lock,
        })
    }

    pub(crate) fn tree(&self, tree: TreeId) -> &sled::Tree {
        &self.trees[tree.index()]
    }

    pub(crate) fn raft_tree(&self, tree: RaftTree) -> &sled::Tree {
        &self.raft_trees[tree as usize]
    }

    pub(crate) fn trees(&self) -> &[sled::Tree] {
        &self.trees
    }

    /// Makes everything written so far durable: sled's flush, then fdatasync.
    pub(crate) fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map_err(|e| Error::from_sled("flushing the store", e))?;
        self.log_file
            .sync_data()
            .map_err(|e| Error::from_io("fsyncing the store's log file", e))
    }
}

/// Creates the directory and takes an exclusive `flock` on `tern.lock` in it.
/// Opening the lock file for writing also proves the directory is writable, so
/// a read-only or misplaced data directory is reported as such. An empty file
/// needs no data block: a full disk gets past this (and fails in sled).
fn lock_directory(path: &Path) -> Result<fs::File> {
    let not_writable = |e: io::Error| Error::NotWritable {
        path: path.to_owned(),
        source: Arc::new(e),
    };
    fs::create_dir_all(path).map_err(not_writable)?;
    let file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path.join("tern.lock"))
        .map_err(not_writable)?;
    match fs2::FileExt::try_lock_exclusive(&file) {
        Ok(()) => Ok(file),
        Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
            Err(Error::Locked {
                path: path.to_owned(),
            })
        }
        Err(e) => Err(Error::Open {
            path: path.to_owned(),
            message: format!("cannot lock tern.lock: {e}"),
        }),
    }
}

/// Removes `snap.*.generating` files left by an interrupted sled snapshot.
///
/// sled 0.34.7 writes a snapshot to `snap.<lsn>.generating` and renames it
/// when complete, but recovery only skips the old temporary suffix
/// `.in___motion`. After a crash or a disk full in the middle of a snapshot,
/// the leftover (often empty) file sorts last, is read as the newest snapshot,
/// and every later open fails with "Read corrupted data". Skipping it is what
/// sled means to do; the directory lock guarantees no sled instance of ours is
/// writing it.
fn remove_unfinished_snapshots(path: &Path) -> Result<()> {
    let open_error = |e: io::Error| Error::Open {
        path: path.to_owned(),
        message: format!("removing an unfinished sled snapshot: {e}"),
    };
    for entry in fs::read_dir(path).map_err(open_error)? {
        let name = entry.map_err(open_error)?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %name, "removing an unfinished sled snapshot");
            fs::remove_file(path.join(&*name)).map_err(open_error)?;
        }
    }
    Ok(())
}

/// How long `open` waits for sled's own file lock, which a closed sled
/// instance of this process can hold for a moment after it is dropped.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens sled, holding `tern.lock`. sled's background threads close its files
/// a little after the last handle is dropped (sled's own tests block on its
/// lock for this reason), so a store closed and reopened in one process can
/// find sled's lock still held. With `tern.lock` held, no other Store can be
/// the holder, so the lock is waited for, for a bounded time.
fn open_sled(config: &StoreConfig) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + SLED_LOCK_WAIT;
    loop {
        let opened = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity_bytes)
            .flush_every_ms(config.flush_every_ms)
            .open();
        match opened.map_err(|e| open_error(&config.path, e)) {
            Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn open_error(path: &Path, error: sled::Error) -> Error {
    // `tern.lock` keeps other Stores out; this catches another program that
    // opened the directory with sled directly. sled 0.34 reports its lock as
    // an `Other` I/O error with this text (`Config::try_lock`).
    if let sled::Error::Io(e) = &error {
        if e.to_string().contains("could not acquire lock") {
            return Error::Locked {
                path: path.to_owned(),
            };
        }
        if e.kind() == io::ErrorKind::PermissionDenied {
            return Error::NotWritable {
                path: path.to_owned(),
                source: Arc::new(io::Error::new(e.kind(), e.to_string())),
            };
        }
    }
    Error::Open {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

/// What `Shared::state` holds.
pub(crate) enum State {
    Open(Handles),
    /// A reopen after a write error failed, with the reason.
    Unavailable(String),
    Closed,
}

/// What the `Store` clones and the writer share.
pub(crate) struct Shared {
    pub(crate) config: StoreConfig,
    pub(crate) state: RwLock<State>,
    pub(crate) stats: Stats,
    /// The writer thread, joined by `close`. `None` with a manual committer.
    writer_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    /// Runs `f` on the open handles, holding the lock shared.
    pub(crate) fn with_handles<T>(&self, f: impl FnOnce(&Handles) -> Result<T>) -> Result<T> {
        let state = self.read_state();
        match &*state {
            State::Open(handles) => f(handles),
            State::Unavailable(reason) => Err(Error::Unavailable {
                reason: reason.clone(),
            }),
            State::Closed => Err(Error::Closed),
        }
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // A panic while the lock was held cannot leave `State` half-updated:
        // every write to it is a single assignment.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops the handles (releasing sled's directory lock) and opens them again.
    pub(crate) fn reopen(&self) -> Result<()> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let State::Closed = *state {
            return Err(Error::Closed);
        }
        *state = State::Unavailable("reopening".into());
        match Handles::open(&self.config) {
            Ok(handles) => {
                *state = State::Open(handles);
                tracing::info!(path = %self.config.path.display(), "store reopened after a write error");
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                *state = State::Unavailable(reason.clone());
                Err(Error::Unavailable { reason })
            }
        }
    }
}

/// The persistent store. Cheap to clone; every clone shares one sled database
/// and one writer thread.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.config.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store and starts its writer thread.
    pub fn open(config: &StoreConfig) -> Result<Store> {
        let (store, committer) = Store::open_with_committer(config)?;
        let thread = std::thread::Builder::new()
            .name("tern-storage-writer".into())
            .spawn(move || committer.run_until_closed())
            .map_err(|e| Error::from_io("starting the storage writer thread", e))?;
        *store
            .shared
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(store)
    }

    /// Opens the store without a writer thread: the caller drives the returned
    /// committer with `step`/`run`. For tests and benchmarks.
    pub fn open_with_committer(config: &StoreConfig) -> Result<(Store, GroupCommitter)> {
        let handles = Handles::open(config)?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            state: RwLock::new(State::Open(handles)),
            stats: Stats::default(),
            writer_thread: Mutex::new(None),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let committer = GroupCommitter::new(rx, Arc::clone(&shared));
        Ok((Store { shared, tx }, committer))
    }

    /// What every clone shares, for `RaftStorage`.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A handle to submit writes to the group-commit writer.
    pub fn writer(&self) -> Writer {
        Writer::new(self.tx.clone())
    }

    /// Counters of the group-commit writer since open.
    pub fn writer_stats(&self) -> WriterStats {
        self.shared.stats.snapshot()
    }

    /// Every stored session, ordered by client id.
    pub fn load_sessions(&self) -> Result<Vec<(String, SessionRecord)>> {
        self.shared.with_handles(|h| {
            let tree = TreeId::Sessions;
            h.tree(tree)
                .iter()
                .map(|entry| {
                    let (key, value) =
                        entry.map_err(|e| Error::from_sled("reading sessions", e))?;
                    let client_id = keys::decode_session(&key)?;
                    let record = SessionRecord::decode(&value)
                        .map_err(|e| Error::corrupt(tree.name(), &key, e.0))?;
                    Ok((client_id, record))
                })
                .collect()
        })
    }

    /// The client's subscriptions, ordered by filter bytes.
    pub fn load_subscriptions(&self, client_id: &str) -> Result<Vec<SubscriptionRecord>> {
        keys::check_client_id(client_id)?;
        let tree = TreeId::Subscriptions;
        self.scan_client(tree, client_id, |_, key, value| {
            let record = SubscriptionRecord::decode(value)
                .map_err(|e| Error::corrupt(tree.name(), key, e.0))?;
            if key != keys::subscription(client_id, &record.filter).as_slice() {
                return Err(Error::corrupt(
                    tree.name(),
                    key,
                    format!(
                        "filter {:?} in the value does not match the key",
                        record.filter
                    ),
                ));
            }
            Ok(record)
        })
    }

    /// The client's outgoing QoS 1/2 messages, in `seq` order: those of
    /// older builds, one per key, and the unacknowledged entries of the
    /// batches this one writes (see `batches.rs`).
    pub fn load_outgoing(&self, client_id: &str) -> Result<Vec<(u64, OutgoingRecord)>> {
        keys::check_client_id(client_id)?;
        self.shared
            .with_handles(|h| crate::batches::load(h, client_id))
    }

    /// QoS 2 packet ids received from the client and not yet released, ascending.
    pub fn load_incoming_qos2(&self, client_id: &str) -> Result<Vec<u16>> {
        keys::check_client_id(client_id)?;
        let tree = TreeId::IncomingQos2;
        self.scan_client(tree, client_id, |prefix, key, value| {
            let packet_id = keys::decode_incoming_packet_id(prefix, key)?;
            records::decode_incoming_qos2(value)
                .map_err(|e| Error::corrupt(tree.name(), key, e.0))?;
            Ok(packet_id)
        })
    }

    /// The hub routes made through the admin API: (name, definition), by
    /// name.
    pub fn load_hub_routes(&self) -> Result<Vec<(String, String)>> {
        let tree = TreeId::HubRoutes;
        self.shared.with_handles(|h| {
            h.tree(tree)
                .iter()
                .map(|entry| {
                    let (key, value) =
                        entry.map_err(|e| Error::from_sled("reading hub routes", e))?;
                    let name = String::from_utf8(key.to_vec())
                        .map_err(|_| Error::corrupt(tree.name(), &key, "name is not UTF-8"))?;
                    let definition = records::decode_hub_route(&value)
                        .map_err(|e| Error::corrupt(tree.name(), &key, e.0))?;
                    Ok((name, definition))
                })
                .collect()
        })
    }

    /// A hub route's queue, in `seq` order.
    pub fn load_route_queue(&self, route: &str) -> Result<Vec<(u64, RouteRecord)>> {
        keys::check_route(route)?;
        let tree = TreeId::RouteQueue;
        let prefix = keys::route_prefix(route);
        self.shared.with_handles(|h| {
            h.tree(tree)
                .scan_prefix(&prefix)
                .map(|entry| {
                    let (key, value) =
                        entry.map_err(|e| Error::from_sled("reading a route queue", e))?;
                    let seq = keys::decode_route_seq(&prefix, &key)?;
                    let record = RouteRecord::decode(&value)
                        .map_err(|e| Error::corrupt(tree.name(), &key, e.0))?;
                    Ok((seq, record))
                })
                .collect()
        })
    }

    /// Copies of messages forwarded to peers that were down and not yet
    /// acknowledged by them: `(node, seq, copy)`, by node then `seq`.
    pub fn load_forwards(&self) -> Result<Vec<(u64, u64, Bytes)>> {
        let tree = TreeId::Forwards;
        self.shared.with_handles(|h| {
            h.tree(tree)
                .iter()
                .map(|entry| {
                    let (key, value) =
                        entry.map_err(|e| Error::from_sled("reading forwarded copies", e))?;
                    let (node, seq) = keys::decode_forward(&key)?;
                    let copy = records::decode_forward(&value)
                        .map_err(|e| Error::corrupt(tree.name(), &key, e.0))?;
                    Ok((node, seq, copy))
                })
                .collect()
        })
    }

    /// Every retained message, ordered by topic bytes.
    pub fn load_retained(&self) -> Result<Vec<StoredMessage>> {
        self.shared.with_handles(|h| {
            let tree = TreeId::Retained;
            h.tree(tree)
                .iter()
                .map(|entry| {
                    let (key, value) =
                        entry.map_err(|e| Error::from_sled("reading retained messages", e))?;
                    let message = StoredMessage::decode(&value)
                        .map_err(|e| Error::corrupt(tree.name(), &key, e.0))?;
                    if *key != *message.topic.as_bytes() {
                        return Err(Error::corrupt(
                            tree.name(),
                            &key,
                            format!(
                                "topic {:?} in the value does not match the key",
                                message.topic
                            ),
                        ));
                    }
                    Ok(message)
                })
                .collect()
        })
    }

    /// Scans `client_id \0` in a per-client tree, decoding each entry with
    /// `decode(prefix, key, value)`.
    fn scan_client<T>(
        &self,
        tree: TreeId,
        client_id: &str,
        decode: impl Fn(&[u8], &[u8], &[u8]) -> Result<T>,
    ) -> Result<Vec<T>> {
        let prefix = keys::client_prefix(client_id);
        self.shared.with_handles(|h| {
            h.tree(tree)
                .scan_prefix(&prefix)
                .map(|entry| {
                    let (key, value) =
                        entry.map_err(|e| Error::from_sled("reading a client's records", e))?;
                    decode(&prefix, &key, &value)
                })
                .collect()
        })
    }

    /// Makes every write applied so far durable (sled flush, then fdatasync).
    /// Blocks: call it at shutdown, not on an arbiter thread.
    pub fn flush(&self) -> Result<()> {
        self.shared.with_handles(Handles::flush)
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.shared.with_handles(|h| {
            h.db.size_on_disk()
                .map_err(|e| Error::from_sled("measuring the store", e))
        })
    }

    /// Whether the store takes writes: `Ok` while sled is open and the
    /// writer thread runs. `Error::Unavailable` while the writer reopens
    /// sled after a write error, or when that reopen failed (a disk still
    /// full: the next write tries again); `Error::Closed` once the store was
    /// closed or its writer thread ended. Never blocks: no I/O, and it does
    /// not wait for the lock a reopen holds (which can take long, see
    /// "Known issues" in the crate docs).
    pub fn health(&self) -> Result<()> {
        let state = match self.shared.state.try_read() {
            Ok(state) => state,
            // every write to it is a single assignment (see `read_state`)
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(Error::Unavailable {
                    reason: "reopening the store".into(),
                })
            }
        };
        match &*state {
            State::Open(_) => {}
            State::Unavailable(reason) => {
                return Err(Error::Unavailable {
                    reason: reason.clone(),
                })
            }
            State::Closed => return Err(Error::Closed),
        }
        drop(state);
        let thread = self
            .shared
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if thread.as_ref().is_some_and(|t| t.is_finished()) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Closes the store for every clone: the writer finishes what was queued
    /// before this call, everything is flushed, and sled's files and directory
    /// lock are released when this returns. Later submits complete with
    /// `Error::Closed`, later reads return it.
    pub fn close(self) -> Result<()> {
        // If the send fails the writer is already gone; the join below and the
        // final flush still run.
        let _ = self.tx.send(Msg::Close);
        let thread = self
            .shared
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the storage writer thread panicked");
            }
        }
        let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *state, State::Closed) {
            State::Open(handles) => handles.flush(),
            State::Unavailable(_) | State::Closed => Ok(()),
        }
    }
}
