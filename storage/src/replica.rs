//! Replicas of other nodes' persistent sessions and kept forwards (issue
//! 12: replicated session queues, durable forwards on a second disk).
//!
//! The owner of a persistent session ships the session's queued and
//! in-flight outgoing messages and its received QoS 2 packet ids to one
//! replica node, so that the client can fail over to another node while the
//! owner is down. A node that keeps a copy for a peer that is down (its own
//! `forwards` tree) ships the copy to a third node, so that the copy
//! survives the loss of the keeping node's disk. This module owns how the
//! replica node stores them: the layout of the four replica trees, the
//! [`ReplicaMeta`] record, and the reads [`Store::load_replica`],
//! [`Store::load_replica_clients`], [`Store::load_replica_forwards`] and
//! [`Store::load_replica_forward_origins`]. It never decides what is
//! shipped, to which node or when (the cluster does), and it never touches
//! this node's own trees: a node can own some sessions and keep replicas of
//! others, so `DeleteSession` leaves the replica trees alone and
//! `DropReplica` leaves the session's own trees alone, even for the same
//! client id; likewise `DeleteForward` leaves `replica_forwards` alone and
//! `DropReplicaForwards` leaves `forwards` alone.
//!
//! # Layout
//! | tree               | key                               | value                                  |
//! |--------------------|-----------------------------------|----------------------------------------|
//! | `replica_outgoing` | `client_id \0 seq` (u64 BE)       | [`OutgoingRecord`], `outgoing`'s format version 2: `02 released:bool uid:u64 message` |
//! | `replica_incoming` | `client_id \0 packet_id` (u16 BE) | `01`, as in `incoming_qos2`            |
//! | `replica_meta`     | `client_id`                       | `01 owner:u64 max_seq:u64`             |
//! | `replica_forwards` | `origin node seq` (u64 BE each)   | `01 copy:bytes`, as in `forwards`      |
//!
//! The keys and values of `replica_outgoing` and `replica_incoming` are
//! those of `outgoing` (before batches) and `incoming_qos2`, written and read
//! by the same encoder and decoder (`keys.rs`, `records.rs`); the decoder
//! also reads version 1, which this tree never held. `replica_meta` is the
//! one new record type. A client's replica exists while its `replica_meta`
//! key does: records without one are not read.
//!
//! A `replica_forwards` key is a `forwards` key (`node seq`) behind the
//! `origin`, the node that keeps the copy for `node` under its own `seq`;
//! the value is the `forwards` value, with its encoder and decoder. There is
//! no meta: an origin's copies exist while their keys do.
//!
//! # The ops
//! - `PutReplicaMeta`: creates or replaces the meta (the owner, and the
//!   highest outgoing seq it has shipped).
//! - `PutReplicaOutgoing` / `DeleteReplicaOutgoing`: a message queued or
//!   changed (QoS 2 released) on the owner / acknowledged there.
//! - `PutReplicaIncoming` / `DeleteReplicaIncoming`: a QoS 2 packet id
//!   received / released on the owner.
//! - `DropReplica`: the client's keys in the three session replica trees,
//!   gone.
//! - `PutReplicaForward` / `DeleteReplicaForward`: a copy kept / forgotten
//!   (acknowledged by its node) on the origin.
//! - `DropReplicaForwards`: every key of the origin in `replica_forwards`,
//!   gone.
//!
//! They go through the group-commit writer like every other op: applied in
//! submission order, each group in one atomic sled batch or transaction,
//! durable when the callback gets `Ok` (see `writer.rs`).
//!
//! # Cost
//! One sled key per message: each shipped put or delete is one sled insert
//! or remove in the writer's group, with no batching as in
//! `outgoing_batches`. That is the insert path `batches.rs` moved a
//! session's own queue off (17 to 25 µs of CPU per message, measured there
//! for `outgoing`; not measured for these trees). `DropReplica` scans the
//! client's keys in the two keyed trees and removes each one;
//! `DropReplicaForwards` does the same for the origin's keys. A durable
//! group costs one fsync whatever it holds (see the crate's "Cost").
//! [`Store::load_replica_forward_origins`] seeks once per origin rather
//! than reading every key.
//!
//! # Known issues
//! - [`Store::load_replica`] reads the three trees one after the other, not
//!   as one snapshot: a group applied meanwhile can be seen in part. Read a
//!   client's replica when nothing is being shipped for it (at failover,
//!   its owner being down).
//! - [`Store::load_replica_forward_origins`] reads only the first key of
//!   each origin: a damaged key further into an origin's range is reported
//!   by [`Store::load_replica_forwards`] of that origin, not by it.
//! - A value above about 128 KiB goes to a sled blob file that sled 0.34
//!   does not fsync (see the crate's "Known issues"); a batch of the
//!   session's own queue is cut at 6 KiB for this reason, a replicated
//!   message or copy is stored whole.

use bytes::Bytes;

use crate::{
    error::{Error, Result},
    keys::{self, TreeId},
    records::{self, DecodeError, OutgoingRecord, Reader, Writer},
    store::{Handles, Store},
};

/// What a replica node keeps about a session replicated to it, beside the
/// session's records: the `replica_meta` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaMeta {
    /// Node id of the session's owner, the node that shipped the replica.
    pub owner: u64,
    /// The highest outgoing `seq` the owner has shipped for this session.
    /// The store keeps it as given: it is not checked against the
    /// `replica_outgoing` keys (acknowledged messages are deleted there).
    pub max_seq: u64,
}

/// A session's replica as stored on this node: what a node that takes the
/// session over resumes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// [`ReplicaMeta::owner`].
    pub owner: u64,
    /// [`ReplicaMeta::max_seq`].
    pub max_seq: u64,
    /// The queued and in-flight messages, in `seq` order.
    pub outgoing: Vec<(u64, OutgoingRecord)>,
    /// QoS 2 packet ids received and not yet released, ascending.
    pub incoming_qos2: Vec<u16>,
}

impl ReplicaMeta {
    /// Format version 1: `01 owner:u64 max_seq:u64`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.owner);
        w.u64(self.max_seq);
        w.0
    }

    pub(crate) fn decode(value: &[u8]) -> Result<ReplicaMeta, DecodeError> {
        let mut r = Reader::new(value)?;
        let meta = ReplicaMeta {
            owner: r.u64("owner")?,
            max_seq: r.u64("max_seq")?,
        };
        r.finish()?;
        Ok(meta)
    }
}

impl Store {
    /// The replica of another node's session kept here under `client_id`
    /// (see `replica.rs`), its outgoing messages in `seq` order; `None` when
    /// there is no `replica_meta` key for the client (records without one
    /// are not read). Not a snapshot: a group applied meanwhile can be seen
    /// in part.
    pub fn load_replica(&self, client_id: &str) -> Result<Option<Replica>> {
        keys::check_client_id(client_id)?;
        self.shared().with_handles(|h| load(h, client_id))
    }

    /// Every client with a replica here and its meta, by client id.
    pub fn load_replica_clients(&self) -> Result<Vec<(String, ReplicaMeta)>> {
        self.shared().with_handles(load_clients)
    }

    /// The copies node `origin` keeps for its peers and shipped here:
    /// `(node, seq, copy)`, by node then `seq`, as in `origin`'s own
    /// [`Store::load_forwards`].
    pub fn load_replica_forwards(&self, origin: u64) -> Result<Vec<(u64, u64, Bytes)>> {
        self.shared().with_handles(|h| load_forwards(h, origin))
    }

    /// Every origin with a copy in `replica_forwards`, ascending.
    pub fn load_replica_forward_origins(&self) -> Result<Vec<u64>> {
        self.shared().with_handles(load_forward_origins)
    }
}

/// The client's replica, `None` without a `replica_meta` key.
fn load(handles: &Handles, client_id: &str) -> Result<Option<Replica>> {
    let tree = TreeId::ReplicaMeta;
    let key = keys::replica_meta(client_id);
    let value = handles
        .tree(tree)
        .get(&key)
        .map_err(|e| Error::from_sled("reading a replica", e))?;
    let Some(value) = value else {
        return Ok(None);
    };
    let meta = ReplicaMeta::decode(&value).map_err(|e| Error::corrupt(tree.name(), &key, e.0))?;
    let outgoing = scan(
        handles,
        TreeId::ReplicaOutgoing,
        client_id,
        |prefix, key, value| {
            let seq = keys::decode_seq(TreeId::ReplicaOutgoing, prefix, key)?;
            let record = OutgoingRecord::decode(value)
                .map_err(|e| Error::corrupt(TreeId::ReplicaOutgoing.name(), key, e.0))?;
            Ok((seq, record))
        },
    )?;
    let incoming_qos2 = scan(
        handles,
        TreeId::ReplicaIncoming,
        client_id,
        |prefix, key, value| {
            let packet_id = keys::decode_packet_id(TreeId::ReplicaIncoming, prefix, key)?;
            records::decode_incoming_qos2(value)
                .map_err(|e| Error::corrupt(TreeId::ReplicaIncoming.name(), key, e.0))?;
            Ok(packet_id)
        },
    )?;
    Ok(Some(Replica {
        owner: meta.owner,
        max_seq: meta.max_seq,
        outgoing,
        incoming_qos2,
    }))
}

/// Every client with a `replica_meta` key, in key order.
fn load_clients(handles: &Handles) -> Result<Vec<(String, ReplicaMeta)>> {
    let tree = TreeId::ReplicaMeta;
    handles
        .tree(tree)
        .iter()
        .map(|entry| {
            let (key, value) = entry.map_err(|e| Error::from_sled("reading replicas", e))?;
            let client_id = keys::decode_client_id(tree, &key)?;
            let meta =
                ReplicaMeta::decode(&value).map_err(|e| Error::corrupt(tree.name(), &key, e.0))?;
            Ok((client_id, meta))
        })
        .collect()
}

/// `origin`'s copies in `replica_forwards`: `(node, seq, copy)` in key order.
fn load_forwards(handles: &Handles, origin: u64) -> Result<Vec<(u64, u64, Bytes)>> {
    let tree = TreeId::ReplicaForwards;
    handles
        .tree(tree)
        .scan_prefix(keys::replica_forward_prefix(origin))
        .map(|entry| {
            let (key, value) =
                entry.map_err(|e| Error::from_sled("reading replicated forwards", e))?;
            let (_, node, seq) = keys::decode_replica_forward(&key)?;
            let copy = records::decode_forward(&value)
                .map_err(|e| Error::corrupt(tree.name(), &key, e.0))?;
            Ok((node, seq, copy))
        })
        .collect()
}

/// The distinct origins in `replica_forwards`, ascending: one seek per
/// origin, to the first key at or after the next origin's prefix.
fn load_forward_origins(handles: &Handles) -> Result<Vec<u64>> {
    let tree = handles.tree(TreeId::ReplicaForwards);
    let mut origins = Vec::new();
    let mut from = keys::replica_forward_prefix(0);
    while let Some(entry) = tree.range(from..).next() {
        let (key, _) = entry.map_err(|e| Error::from_sled("reading replicated forwards", e))?;
        let (origin, _, _) = keys::decode_replica_forward(&key)?;
        origins.push(origin);
        match origin.checked_add(1) {
            Some(next) => from = keys::replica_forward_prefix(next),
            None => break,
        }
    }
    Ok(origins)
}

/// Scans `client_id \0` in `tree`, decoding each entry with
/// `decode(prefix, key, value)`.
fn scan<T>(
    handles: &Handles,
    tree: TreeId,
    client_id: &str,
    decode: impl Fn(&[u8], &[u8], &[u8]) -> Result<T>,
) -> Result<Vec<T>> {
    let prefix = keys::client_prefix(client_id);
    handles
        .tree(tree)
        .scan_prefix(&prefix)
        .map(|entry| {
            let (key, value) = entry.map_err(|e| Error::from_sled("reading a replica", e))?;
            decode(&prefix, &key, &value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_meta_round_trips() {
        for meta in [
            ReplicaMeta {
                owner: 0,
                max_seq: 0,
            },
            ReplicaMeta {
                owner: 3,
                max_seq: u64::MAX,
            },
        ] {
            let value = meta.encode();
            assert_eq!(value.len(), 17);
            assert_eq!(ReplicaMeta::decode(&value).unwrap(), meta);
        }
    }

    #[test]
    fn every_truncation_of_a_replica_meta_is_rejected() {
        let value = ReplicaMeta {
            owner: 2,
            max_seq: 9,
        }
        .encode();
        for len in 0..value.len() {
            let err = ReplicaMeta::decode(&value[..len]).unwrap_err();
            assert!(
                err.0.contains("truncated") || err.0.contains("empty value"),
                "len {len}: {err}"
            );
        }
    }
}
