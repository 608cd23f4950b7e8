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
//!   Checked once by hand: 20,000 puts for one client in groups of 500 left
//!   no file in `blobs/` with 64, 1,000 and 5,000-byte payloads, and 1,815
//!   with 20,000-byte ones (a batch of one message each, then); the build
//!   before batches, one key per message, left 0 and 1,801 in the same
//!   check.
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
//! an `OutgoingIndex` (`batch_index.rs`): per client with messages stored, seq -> location, and
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

use std::collections::BTreeMap;

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
pub(crate) const BATCH_HEADER: usize = 1 + 4;

/// Bytes entry `(seq, record)` adds to a batch value.
pub(crate) fn entry_len(record: &OutgoingRecord) -> usize {
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
pub(crate) fn batch_head(value: &[u8]) -> DecodeResult<(Reader<'_>, Vec<u64>)> {
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
pub(crate) fn bitmap_len(count: usize) -> usize {
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

pub(crate) fn is_set(bitmap: &[u8], i: usize) -> bool {
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

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::records::StoredMessage;

    /// A record whose fields vary with `seq` (also used by `batch_index`).
    pub(crate) fn record(seq: u64, payload: usize) -> OutgoingRecord {
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
}
