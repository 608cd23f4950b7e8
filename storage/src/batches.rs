//! Outgoing messages stored in batches: format version 3 of a client's
//! queued and in-flight QoS 1/2 messages.
//!
//! Owns the layout of the `outgoing_batches` tree, the writer's index of
//! where each `(client_id, seq)` lives, and the read that merges batches with
//! the per-message records of older builds. It never decides what is stored:
//! [`WriteOp::PutOutgoing`] and [`WriteOp::DeleteOutgoing`] keep their
//! meaning, and [`Store::load_outgoing`] returns the same logical set of
//! `(seq, OutgoingRecord)` as when every message was one key.
//!
//! # Why batches
//! An offline persistent session's queue fills at the rate sled inserts keys:
//! with one key per message the broker was CPU-bound in sled's insert path
//! (`Tree::insert_inner`, node splits), 17 to 25 µs per message. Here the
//! puts of one client in one committed group (see `writer.rs`) become one
//! sled value, so a group of many queued copies costs a few inserts.
//!
//! # Layout
//! Key `client_id \0 batch_id:u64 BE kind:u8`; `batch_id` counts up per
//! client (the largest on disk plus one), so a prefix scan returns a client's
//! batches in the order they were written, each followed by its acks:
//! - kind 0, messages: `03 count:u32 seq:u64 * count record * count`, seqs
//!   strictly ascending, `record` = `released:bool uid:u64 message` (the
//!   `outgoing` value of version 2 without its version byte);
//! - kind 1, acks: `03 acked:bytes`, a bitmap of `ceil(count / 8)` bytes, bit
//!   `i % 8` (least significant first) of byte `i / 8` set when entry `i` is
//!   acknowledged (`DeleteOutgoing`) or replaced by a later `PutOutgoing` of
//!   its seq. Absent while nothing is acknowledged.
//!
//! # Rules the writer keeps
//! - Each live `(client_id, seq)` is in exactly one place: one per-message
//!   key of `outgoing` (written by an older build) or one clear bit of one
//!   batch. A put of a seq that lives elsewhere removes the old key or sets
//!   the old batch's bit in the same group; so does a delete.
//! - A put never rewrites a batch: a QoS 2 copy that becomes Released goes
//!   into the group's new batch and shadows its older entry (bit set). A
//!   rewrite would copy every other message of the batch per state change.
//! - An acknowledgement rewrites the acks value only, once per batch per
//!   group however many of its messages were acknowledged (a bitmap of
//!   `count / 8` bytes, not the messages). When the last bit is set, the
//!   batch and its acks are removed together.
//! - A batch value stays under [`MAX_BATCH_BYTES`] (a larger group makes
//!   several batches; one message larger than that is a batch of its own).
//!   sled 0.34 writes a log item above 128 KiB to a blob file it never
//!   fsyncs (see the crate's known issues), and a leaf node holds up to 17
//!   items when it is rewritten whole: 17 x 6 KiB stays under that.
//! - Everything a group changes, batches and acks and removals, is in the
//!   group's one atomic sled batch or transaction, so recovery after
//!   `kill -9` sees a prefix of groups: an acknowledgement is never lost
//!   while a later write survives, and a batch never survives without the
//!   acks written with or before it. A restore therefore neither brings back
//!   an acknowledged message nor loses an unacknowledged one.
//!
//! # Readers
//! [`load`] reads the per-message records of `outgoing` (format versions 1
//! and 2, written before batches) and then the batches in id order, skipping
//! acknowledged entries; a later batch wins a seq present twice (which the
//! rules above never write). It is the only reader: `Store::load_outgoing`,
//! used by restore at startup and so by the session export of a cluster move.
//!
//! # The writer's index
//! To find the batch of a seq without reading batches back, the writer keeps
//! [`OutgoingIndex`]: per client with messages stored, seq -> location, and
//! per batch its acks bitmap and live count (about 40 bytes per stored
//! message). A client's entry is loaded from disk the first time a group
//! touches it (keys of `outgoing`, the seq lists at the head of its batches,
//! its acks) and dropped when the client has nothing stored. The index is
//! cleared after a failed group, since sled is reopened then.
//!
//! # Migration
//! None to run: a store written before batches reads as it did, and each old
//! record moves out of `outgoing` the first time it changes (deleted, or
//! rewritten into a batch). A build from before batches cannot read a store
//! written by this one (it does not know `outgoing_batches`).
//!
//! [`WriteOp::PutOutgoing`]: crate::WriteOp::PutOutgoing
//! [`WriteOp::DeleteOutgoing`]: crate::WriteOp::DeleteOutgoing
//! [`Store::load_outgoing`]: crate::Store::load_outgoing

use std::collections::{BTreeMap, HashMap};

use crate::{
    error::{Error, Result},
    keys::{self, BatchKind, TreeId},
    records::{DecodeError, DecodeResult, OutgoingRecord, Reader, Writer},
    store::Handles,
};

/// The format version of `outgoing_batches` values.
pub const BATCH_FORMAT_VERSION: u8 = 3;

/// A batch value is closed before it would pass this many bytes (see
/// "Rules the writer keeps").
pub const MAX_BATCH_BYTES: usize = 6 * 1024;

/// Bytes of a batch value before its entries: version and count.
const BATCH_HEADER: usize = 1 + 4;

/// Bytes entry `(seq, record)` adds to a batch value.
fn entry_len(record: &OutgoingRecord) -> usize {
    let m = &record.message;
    let expires = if m.expires_at_ms.is_some() { 9 } else { 1 };
    8 + 1 + 8 + (4 + m.topic.len()) + (4 + m.payload.len()) + 2 + (4 + m.properties.len()) + expires
}

/// Encodes a batch value; `entries` ascending by seq.
pub(crate) fn encode_batch(entries: &[(u64, &OutgoingRecord)]) -> Vec<u8> {
    let mut w = Writer::version(BATCH_FORMAT_VERSION);
    // `split_batches` bounds a batch by bytes, far below u32::MAX entries.
    w.u32(entries.len() as u32);
    for (seq, _) in entries {
        w.u64(*seq);
    }
    for (_, record) in entries {
        w.bool(record.released);
        w.u64(record.uid);
        w.message(&record.message);
    }
    w.0
}

/// Reads a batch value's version, count and seqs, leaving the reader at
/// the first record.
fn batch_head(value: &[u8]) -> DecodeResult<(Reader<'_>, Vec<u64>)> {
    let mut r = Reader::exact(value, BATCH_FORMAT_VERSION, "outgoing batches")?;
    let count = r.u32("count")? as usize;
    if count == 0 {
        return Err(DecodeError(
            "count: a batch holds at least one entry".into(),
        ));
    }
    // Checked before allocating: a damaged count must not reserve gigabytes.
    if count > r.left() / 8 {
        return Err(DecodeError(format!(
            "truncated: seqs need {} bytes, {} left",
            count.saturating_mul(8),
            r.left()
        )));
    }
    let mut seqs = Vec::with_capacity(count);
    for _ in 0..count {
        let seq = r.u64("seq")?;
        if seqs.last().is_some_and(|&last| last >= seq) {
            return Err(DecodeError(format!(
                "seq {seq}: seqs are not strictly ascending"
            )));
        }
        seqs.push(seq);
    }
    Ok((r, seqs))
}

/// Decodes a batch value: its entries, ascending by seq.
pub(crate) fn decode_batch(value: &[u8]) -> DecodeResult<Vec<(u64, OutgoingRecord)>> {
    let (mut r, seqs) = batch_head(value)?;
    let mut entries = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let record = OutgoingRecord {
            released: r.bool("released")?,
            uid: r.u64("uid")?,
            message: r.message()?,
        };
        entries.push((seq, record));
    }
    r.finish()?;
    Ok(entries)
}

/// The bytes of the acks bitmap of a batch of `count` entries.
fn bitmap_len(count: usize) -> usize {
    count.div_ceil(8)
}

/// Encodes an acks value.
pub(crate) fn encode_acks(bitmap: &[u8]) -> Vec<u8> {
    let mut w = Writer::version(BATCH_FORMAT_VERSION);
    w.bytes(bitmap);
    w.0
}

/// Decodes the acks value of a batch of `count` entries.
pub(crate) fn decode_acks(value: &[u8], count: usize) -> DecodeResult<Vec<u8>> {
    let mut r = Reader::exact(value, BATCH_FORMAT_VERSION, "outgoing batches")?;
    let bitmap = r.bytes("acked")?;
    r.finish()?;
    if bitmap.len() != bitmap_len(count) {
        return Err(DecodeError(format!(
            "acked: {} bytes for a batch of {count} entries, expected {}",
            bitmap.len(),
            bitmap_len(count)
        )));
    }
    if !count.is_multiple_of(8) && bitmap[count / 8] >> (count % 8) != 0 {
        return Err(DecodeError(format!(
            "acked: bits set past the batch's {count} entries"
        )));
    }
    Ok(bitmap.to_vec())
}

fn is_set(bitmap: &[u8], i: usize) -> bool {
    bitmap[i / 8] & (1 << (i % 8)) != 0
}

/// The client's outgoing messages in `seq` order: the per-message records
/// of older builds, then the live entries of its batches (see "Readers").
pub(crate) fn load(handles: &Handles, client_id: &str) -> Result<Vec<(u64, OutgoingRecord)>> {
    let prefix = keys::client_prefix(client_id);
    let mut out = BTreeMap::new();
    let tree = TreeId::Outgoing;
    for entry in handles.tree(tree).scan_prefix(&prefix) {
        let (key, value) = entry.map_err(|e| Error::from_sled("reading a client's records", e))?;
        let seq = keys::decode_outgoing_seq(&prefix, &key)?;
        let record =
            OutgoingRecord::decode(&value).map_err(|e| Error::corrupt(tree.name(), &key, e.0))?;
        out.insert(seq, record);
    }

    let tree = TreeId::OutgoingBatches;
    let corrupt = |key: &[u8], e: DecodeError| Error::corrupt(tree.name(), key, e.0);
    // The batch read last, until the next one: its acks follow it.
    let mut batch: Option<(u64, Vec<(u64, OutgoingRecord)>)> = None;
    for entry in handles.tree(tree).scan_prefix(&prefix) {
        let (key, value) = entry.map_err(|e| Error::from_sled("reading a client's batches", e))?;
        match keys::decode_outgoing_batch(&prefix, &key)? {
            (id, BatchKind::Messages) => {
                out.extend(batch.take().into_iter().flat_map(|(_, entries)| entries));
                let entries = decode_batch(&value).map_err(|e| corrupt(&key, e))?;
                batch = Some((id, entries));
            }
            (id, BatchKind::Acks) => {
                let Some((_, entries)) = batch.as_mut().filter(|(batch_id, _)| *batch_id == id)
                else {
                    return Err(corrupt(
                        &key,
                        DecodeError("acks without their batch".into()),
                    ));
                };
                let bitmap = decode_acks(&value, entries.len()).map_err(|e| corrupt(&key, e))?;
                let mut i = 0;
                entries.retain(|_| {
                    i += 1;
                    !is_set(&bitmap, i - 1)
                });
            }
        }
    }
    out.extend(batch.into_iter().flat_map(|(_, entries)| entries));
    Ok(out.into_iter().collect())
}

/// Where one live `(client_id, seq)` is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    /// Its own key in `outgoing` (written by a build before batches).
    Legacy,
    /// Entry `pos` of batch `id`.
    Batch { id: u64, pos: u32 },
}

/// A batch on disk, as the writer tracks it.
#[derive(Debug)]
struct BatchState {
    /// The acks bitmap as on disk (all clear when there is no acks value).
    acked: Vec<u8>,
    /// Entries not acknowledged.
    live: u32,
}

/// One client's stored messages, as the writer tracks them.
#[derive(Debug, Default)]
struct ClientIndex {
    seqs: BTreeMap<u64, Loc>,
    batches: BTreeMap<u64, BatchState>,
    /// The id of the client's next batch: above every id on disk.
    next_batch: u64,
}

impl ClientIndex {
    /// Reads where the client's messages are: the keys of `outgoing`, the
    /// seq lists of its batches and their acks. A record it cannot decode is
    /// logged and left alone (the reader reports it): writes for the client
    /// go on.
    fn load(handles: &Handles, client_id: &str) -> Result<ClientIndex> {
        let prefix = keys::client_prefix(client_id);
        let mut index = ClientIndex::default();
        for key in handles.tree(TreeId::Outgoing).scan_prefix(&prefix).keys() {
            let key = key.map_err(|e| Error::from_sled("indexing a client's records", e))?;
            match keys::decode_outgoing_seq(&prefix, &key) {
                Ok(seq) => {
                    index.seqs.insert(seq, Loc::Legacy);
                }
                Err(e) => tracing::warn!(error = %e, "not indexed"),
            }
        }
        let mut seqs_of: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for entry in handles.tree(TreeId::OutgoingBatches).scan_prefix(&prefix) {
            let (key, value) =
                entry.map_err(|e| Error::from_sled("indexing a client's batches", e))?;
            let decoded = keys::decode_outgoing_batch(&prefix, &key).and_then(|(id, kind)| {
                index.next_batch = index.next_batch.max(id.saturating_add(1));
                let corrupt = |e: DecodeError| Error::corrupt("outgoing_batches", &key, e.0);
                match kind {
                    BatchKind::Messages => {
                        let (_, seqs) = batch_head(&value).map_err(corrupt)?;
                        index.batches.insert(
                            id,
                            BatchState {
                                acked: vec![0; bitmap_len(seqs.len())],
                                live: seqs.len() as u32,
                            },
                        );
                        seqs_of.insert(id, seqs);
                    }
                    BatchKind::Acks => {
                        let count = seqs_of.get(&id).map_or(0, Vec::len);
                        let acked = decode_acks(&value, count).map_err(corrupt)?;
                        let live = (0..count).filter(|&i| !is_set(&acked, i)).count();
                        if let Some(batch) = index.batches.get_mut(&id) {
                            *batch = BatchState {
                                acked,
                                live: live as u32,
                            };
                        }
                    }
                }
                Ok(())
            });
            if let Err(e) = decoded {
                tracing::warn!(error = %e, "not indexed");
            }
        }
        for (id, seqs) in seqs_of {
            let batch = &index.batches[&id];
            for (pos, seq) in seqs.into_iter().enumerate() {
                if !is_set(&batch.acked, pos) {
                    index.seqs.insert(
                        seq,
                        Loc::Batch {
                            id,
                            pos: pos as u32,
                        },
                    );
                }
            }
        }
        Ok(index)
    }

    fn is_empty(&self) -> bool {
        self.seqs.is_empty() && self.batches.is_empty()
    }
}

/// A change to `outgoing` or `outgoing_batches` the group must make:
/// `(tree, key, value)`, `None` removing the key.
pub(crate) type Change = (TreeId, Vec<u8>, Option<Vec<u8>>);

/// The writer's index of where each stored outgoing message is (see "The
/// writer's index"). Owned by the group-commit writer.
#[derive(Debug, Default)]
pub(crate) struct OutgoingIndex {
    clients: HashMap<String, ClientIndex>,
}

impl OutgoingIndex {
    /// Forgets everything: after a failed group, whose changes may or may
    /// not be on disk.
    pub(crate) fn clear(&mut self) {
        self.clients.clear();
    }

    fn client(&mut self, handles: &Handles, client_id: &str) -> Result<&mut ClientIndex> {
        if !self.clients.contains_key(client_id) {
            let index = ClientIndex::load(handles, client_id)?;
            self.clients.insert(client_id.to_owned(), index);
        }
        Ok(self
            .clients
            .get_mut(client_id)
            .expect("inserted just above"))
    }

    /// The client's records are all being removed (`DeleteSession`): it
    /// holds nothing once the group commits. Batch ids keep counting up.
    pub(crate) fn reset(&mut self, handles: &Handles, client_id: &str) -> Result<()> {
        let index = self.client(handles, client_id)?;
        index.seqs.clear();
        index.batches.clear();
        Ok(())
    }

    /// Drops the client's entry if it tracks nothing.
    pub(crate) fn forget_if_empty(&mut self, client_id: &str) {
        if self
            .clients
            .get(client_id)
            .is_some_and(ClientIndex::is_empty)
        {
            self.clients.remove(client_id);
        }
    }

    /// The changes that apply a group's net outgoing ops for one client
    /// (`seq -> Some(record)` put, `None` delete), updating the index as if
    /// they were committed.
    pub(crate) fn apply(
        &mut self,
        handles: &Handles,
        client_id: &str,
        ops: &BTreeMap<u64, Option<&OutgoingRecord>>,
    ) -> Result<Vec<Change>> {
        let index = self.client(handles, client_id)?;
        let mut changes = Vec::new();
        let mut touched = Vec::new();
        let mut puts = Vec::new();
        for (&seq, op) in ops {
            match index.seqs.remove(&seq) {
                Some(Loc::Legacy) => {
                    changes.push((TreeId::Outgoing, keys::outgoing(client_id, seq), None));
                }
                Some(Loc::Batch { id, pos }) => {
                    if let Some(batch) = index.batches.get_mut(&id) {
                        let (byte, bit) = (pos as usize / 8, 1u8 << (pos % 8));
                        if batch.acked[byte] & bit == 0 {
                            batch.acked[byte] |= bit;
                            batch.live -= 1;
                        }
                        touched.push(id);
                    }
                }
                None => {}
            }
            if let Some(record) = op {
                puts.push((seq, *record));
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            let messages = keys::outgoing_batch(client_id, id, BatchKind::Messages);
            let acks = keys::outgoing_batch(client_id, id, BatchKind::Acks);
            let batch = &index.batches[&id];
            if batch.live == 0 {
                index.batches.remove(&id);
                changes.push((TreeId::OutgoingBatches, messages, None));
                changes.push((TreeId::OutgoingBatches, acks, None));
            } else {
                changes.push((
                    TreeId::OutgoingBatches,
                    acks,
                    Some(encode_acks(&batch.acked)),
                ));
            }
        }
        for chunk in split_batches(&puts) {
            let id = index.next_batch;
            index.next_batch += 1;
            for (pos, (seq, _)) in chunk.iter().enumerate() {
                index.seqs.insert(
                    *seq,
                    Loc::Batch {
                        id,
                        pos: pos as u32,
                    },
                );
            }
            index.batches.insert(
                id,
                BatchState {
                    acked: vec![0; bitmap_len(chunk.len())],
                    live: chunk.len() as u32,
                },
            );
            changes.push((
                TreeId::OutgoingBatches,
                keys::outgoing_batch(client_id, id, BatchKind::Messages),
                Some(encode_batch(chunk)),
            ));
        }
        if index.is_empty() {
            self.clients.remove(client_id);
        }
        Ok(changes)
    }

    /// Clients indexed now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.clients.len()
    }
}

/// Cuts `puts` (ascending by seq) into batches of at most
/// [`MAX_BATCH_BYTES`], each of at least one entry.
fn split_batches<'r>(
    puts: &'r [(u64, &'r OutgoingRecord)],
) -> Vec<&'r [(u64, &'r OutgoingRecord)]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, BATCH_HEADER);
    for (i, (_, record)) in puts.iter().enumerate() {
        let len = entry_len(record);
        if i > start && bytes + len > MAX_BATCH_BYTES {
            chunks.push(&puts[start..i]);
            (start, bytes) = (i, BATCH_HEADER);
        }
        bytes += len;
    }
    if start < puts.len() {
        chunks.push(&puts[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::records::StoredMessage;

    fn record(seq: u64, payload: usize) -> OutgoingRecord {
        OutgoingRecord {
            released: seq.is_multiple_of(2),
            uid: seq * 10,
            message: StoredMessage {
                topic: "q/t".into(),
                payload: Bytes::from(vec![seq as u8; payload]),
                qos: 1,
                retain: false,
                properties: Bytes::new(),
                expires_at_ms: seq.is_multiple_of(3).then_some(seq),
            },
        }
    }

    #[test]
    fn a_batch_round_trips_and_entry_len_is_exact() {
        let records: Vec<_> = (5..9).map(|s| record(s, 3)).collect();
        let entries: Vec<_> = (5..9).zip(&records).collect();
        let value = encode_batch(&entries);
        let expected = BATCH_HEADER + records.iter().map(entry_len).sum::<usize>();
        assert_eq!(value.len(), expected);
        let decoded = decode_batch(&value).unwrap();
        assert_eq!(decoded, (5..9).zip(records).collect::<Vec<_>>());
    }

    #[test]
    fn every_truncation_of_a_batch_is_rejected() {
        let records: Vec<_> = (1..3).map(|s| record(s, 2)).collect();
        let value = encode_batch(&[(1, &records[0]), (2, &records[1])]);
        for len in 0..value.len() {
            let err = decode_batch(&value[..len]).unwrap_err();
            assert!(
                err.0.contains("truncated") || err.0.contains("empty value"),
                "len {len}: {err}"
            );
        }
    }

    #[test]
    fn a_batch_with_seqs_out_of_order_or_no_entry_is_rejected() {
        let r = record(1, 1);
        let mut value = encode_batch(&[(1, &r), (2, &r)]);
        value[5..13].copy_from_slice(&2u64.to_be_bytes());
        let err = decode_batch(&value).unwrap_err();
        assert_eq!(err.0, "seq 2: seqs are not strictly ascending");
        let err = decode_batch(&[3, 0, 0, 0, 0]).unwrap_err();
        assert!(err.0.starts_with("count:"), "{err}");
        // a count far above what the value holds: refused before allocating
        let err = decode_batch(&[3, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(err.0.starts_with("truncated: seqs"), "{err}");
        let err = decode_batch(&[2, 0, 0, 0, 1]).unwrap_err();
        assert!(err.0.contains("unknown format version 2"), "{err}");
    }

    #[test]
    fn acks_must_fit_their_batch() {
        assert_eq!(decode_acks(&encode_acks(&[0b101]), 3).unwrap(), [0b101]);
        assert!(decode_acks(&encode_acks(&[0b1000]), 3)
            .unwrap_err()
            .0
            .contains("bits set past"));
        assert!(decode_acks(&encode_acks(&[0, 0]), 3)
            .unwrap_err()
            .0
            .contains("expected 1"));
        assert_eq!(decode_acks(&encode_acks(&[0xff]), 8).unwrap(), [0xff]);
    }

    #[test]
    fn puts_are_cut_into_batches_under_the_size_limit() {
        let big: Vec<_> = (0..10).map(|s| record(s, 1500)).collect();
        let puts: Vec<_> = (0..10).zip(&big).collect();
        let chunks = split_batches(&puts);
        assert!(chunks.len() > 1);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
        for chunk in &chunks {
            assert!(encode_batch(chunk).len() <= MAX_BATCH_BYTES);
        }
        let huge = record(0, MAX_BATCH_BYTES * 2);
        let puts = [(0, &huge), (1, &big[1])];
        assert_eq!(split_batches(&puts).len(), 2);
        assert!(split_batches(&[]).is_empty());
    }

    #[test]
    fn an_empty_client_leaves_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::StoreConfig {
            flush_every_ms: None,
            ..crate::StoreConfig::new(dir.path())
        };
        let (store, _committer) = crate::Store::open_with_committer(&config).unwrap();
        store
            .shared()
            .with_handles(|h| {
                let mut index = OutgoingIndex::default();
                let r = record(1, 1);
                let put = BTreeMap::from([(1, Some(&r)), (2, Some(&r))]);
                let changes = index.apply(h, "c", &put)?;
                assert_eq!(changes.len(), 1);
                assert_eq!(index.len(), 1);
                let ack = BTreeMap::from([(1, None)]);
                let changes = index.apply(h, "c", &ack)?;
                assert_eq!(changes[0].2, Some(encode_acks(&[0b01])));
                let ack = BTreeMap::from([(2, None)]);
                let changes = index.apply(h, "c", &ack)?;
                // the batch and its acks go
                assert_eq!(changes.len(), 2);
                assert!(changes.iter().all(|c| c.2.is_none()));
                assert_eq!(index.len(), 0);
                Ok(())
            })
            .unwrap();
    }
}
