//! Tern's persistent store: the only crate that touches sled.
//!
//! It owns the on-disk layout of what a persistent MQTT session needs across a
//! restart (sessions, subscriptions, outgoing QoS 1/2 messages, received QoS 2
//! packet ids) and of retained messages, and the group-commit writer that makes
//! them durable. It never sees a socket, a packet or the codec: it knows the
//! shape of stored MQTT data, not how it travels. Dependencies go
//! `broker -> cluster -> storage`, never back.
//!
//! # Trees
//! One sled tree per kind, keys byte-ordered so one client's records are one
//! prefix scan (see `keys.rs` for "A note on key order"):
//!
//! | tree            | key                               | value                      |
//! |-----------------|-----------------------------------|----------------------------|
//! | `sessions`      | `client_id`                       | [`SessionRecord`]          |
//! | `subscriptions` | `client_id \0 filter`             | [`SubscriptionRecord`]     |
//! | `outgoing`      | `client_id \0 seq` (u64 BE)       | [`OutgoingRecord`] (older builds) |
//! | `outgoing_batches` | `client_id \0 batch_id kind`   | a batch of [`OutgoingRecord`]s, or its acks |
//! | `incoming_qos2` | `client_id \0 packet_id` (u16 BE) | version byte only          |
//! | `retained`      | `topic`                           | [`StoredMessage`]          |
//! | `route_queue`   | `route \0 seq` (u64 BE)           | [`RouteRecord`]            |
//! | `hub_routes`    | `route`                           | route definition (JSON)    |
//! | `forwards`      | `node seq` (u64 BE each)          | a copy for a down peer     |
//! | `replica_outgoing` | `client_id \0 seq` (u64 BE)    | [`OutgoingRecord`], as in `outgoing` (version 2) |
//! | `replica_incoming` | `client_id \0 packet_id` (u16 BE) | version byte only, as in `incoming_qos2` |
//! | `replica_meta`  | `client_id`                       | [`ReplicaMeta`]            |
//! | `replica_forwards` | `origin node seq` (u64 BE each) | another node's kept copy, as in `forwards` |
//! | `raft_log`      | `index` (u64 BE)                  | raft-rs `Entry`            |
//! | `raft_state`    | `hard_state`, `truncated`, ...    | see `raft_records.rs`      |
//!
//! `outgoing` and `outgoing_batches` hold the queued and in-flight messages
//! bound for a client: this build writes the messages one client gets in one
//! committed group as one `outgoing_batches` value and acknowledges them in a
//! small acks value beside it (format version 3, `batches.rs`), and still
//! reads the one-key-per-message records of `outgoing` that older builds
//! wrote (format versions 1 and 2).
//! The `replica_outgoing`, `replica_incoming` and `replica_meta` trees hold
//! what other nodes ship of the persistent sessions they own, so that a
//! client can fail over here while its owner is down (issue 12,
//! `replica.rs`): one key per message, written and read with the encoders of
//! `outgoing` and `incoming_qos2`, read back with [`Store::load_replica`].
//! They are independent of the session trees: `DeleteSession` leaves them
//! alone and `DropReplica` touches nothing else. `replica_forwards` holds
//! the copies another node (the origin) keeps in its `forwards` tree for a
//! peer that is down, so that they survive the loss of the origin's disk:
//! the `forwards` key behind the origin's id, the `forwards` value, read
//! back with [`Store::load_replica_forwards`]. It is independent of this
//! node's own `forwards`: `DeleteForward` leaves it alone and
//! `DropReplicaForwards` touches nothing else.
//! Every value starts with a format-version byte (see `records.rs`: 3 for
//! `outgoing_batches`, 2 for `outgoing` and `replica_outgoing`, which gained
//! the message's cluster-wide id, 1 elsewhere); an
//! unknown version or a damaged value is an [`Error::Corrupt`] naming the tree
//! and key. The raft trees belong to [`RaftStorage`] (raft-rs's `Storage` for
//! the cluster crate), which writes them itself rather than through the writer.
//!
//! # Lifecycle
//! 1. [`Store::open`] takes an exclusive `flock` on `tern.lock` in the data
//!    directory (a second process gets [`Error::Locked`]), removes snapshot
//!    files sled left unfinished (see `store.rs`), lets sled recover, and
//!    starts the writer thread.
//! 2. At startup the broker reads everything back with the `load_*` methods.
//! 3. While running, every change goes through [`Writer::submit`]; a submit
//!    with an `on_durable` callback is acknowledged once fsynced, together with
//!    every other request of its group (see `writer.rs`).
//! 4. [`Store::close`] finishes queued writes, flushes, stops the writer thread
//!    and releases the directory. Dropping every `Store` and `Writer` also
//!    stops the thread after the queued work, but does not wait for it.
//!
//! # Durability and order
//! - A request whose callback got `Ok` survives a process crash (`kill -9`) and,
//!   as far as the file system and drive honour `fdatasync`, a power loss.
//! - Requests are applied in submission order. Crash recovery returns a
//!   prefix: if an op is present after recovery, every op submitted before it is
//!   present too. This rests on two sled properties: sled recovers a prefix of
//!   its log when, as here, one thread writes in order; and a sled transaction
//!   is recovered all or nothing, which is why each group is one transaction
//!   over all trees (one batch per tree could lose a group's earlier batch and
//!   keep a later one). `tests/crash.rs` checks both with SIGKILL.
//! - Requests without a callback are made durable by the next durable group or
//!   by sled's background flush (`StoreConfig::flush_every_ms`).
//!
//! # Cost
//! A durable group costs one sled flush plus one `fdatasync`: about 1 to 1.5 ms
//! on the development VM, so one submitter waiting for each ack gets about
//! 650 to 950 ops/s, while 64 concurrent submitters share fsyncs (about 50
//! requests per fsync) for about 18 000 to 20 000 ops/s
//! (`benches/group_commit.rs`). Callbacks run on the writer thread.
//! Within a group, each op costs its sled inserts: a client's outgoing
//! messages of one group share one `outgoing_batches` value, while each
//! replicated message (`PutReplicaOutgoing`, `DeleteReplicaOutgoing`) or
//! copy (`PutReplicaForward`, `DeleteReplicaForward`) is one sled insert or
//! remove of its own key, not batched.
//!
//! # Known issues
//! - After a write error (disk full) sled refuses all writes until reopened, so
//!   the writer reopens it before the next group. Writes applied in memory but
//!   not yet flushed when the error hit are lost at that reopen, while later
//!   groups are applied on top: only requests acknowledged `Ok` are certain.
//! - sled writes while it recovers, so a completely full disk cannot be opened
//!   ([`Error::Open`] with "No space left on device"): free space first.
//! - With sled's background flush on (`StoreConfig::flush_every_ms`, as the
//!   broker runs it), dropping the handles for that reopen can block for
//!   good: sled's `Tree` drop flushes and waits in `make_stable` for a log
//!   buffer whose write failed (seen with gdb on a full tmpfs,
//!   `broker/tests/disk_full.rs`). The writer thread then stays in
//!   `reopen`, later requests wait, and freeing space does not help: the
//!   process must be restarted. [`Store::health`] does not wait for it and
//!   says `Unavailable` (the broker's `/readyz` answers 503).
//! - sled 0.34 writes values larger than about 128 KiB to separate blob files
//!   without fsyncing them; they survive a process crash but a power loss may
//!   lose them even after `Ok`.
//! - A store written by this build cannot be read by a build from before
//!   `outgoing_batches` (it would not see the messages stored there).
//! - If fsync fails while the last handle is dropped, sled 0.34 panics in
//!   its `Drop` (`Log::drop` unwraps `sync_all`).

mod batch_index;
mod batches;
mod error;
mod keys;
mod ops;
mod raft;
mod raft_records;
mod raft_trait;
mod records;
mod replica;
mod stats;
mod store;
mod writer;

pub use batches::{BATCH_FORMAT_VERSION, MAX_BATCH_BYTES};
pub use error::{Error, Result};
pub use ops::WriteOp;
pub use raft::{RaftStorage, BOOTSTRAP_INDEX, BOOTSTRAP_TERM};
pub use raft_records::SNAPSHOT_CHUNK;
pub use records::{
    OutgoingRecord, RouteRecord, SessionRecord, StoredMessage, SubscriptionRecord, FORMAT_VERSION,
    OUTGOING_FORMAT_VERSION,
};
pub use replica::{Replica, ReplicaMeta};
pub use stats::{
    LatencyHistogram, LatencySnapshot, WriterStats, FLUSH_SECONDS_BUCKETS, GROUP_SIZE_BUCKETS,
    LATENCY_SECONDS_BUCKETS,
};
pub use store::{Store, StoreConfig};
pub use writer::{Durable, GroupCommitter, Writer, MAX_GROUP};
