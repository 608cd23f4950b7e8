//! Keys and values of the raft trees, `raft_log` and `raft_state`.
//!
//! Like every other value of the store, each starts with the format-version
//! byte ([`FORMAT_VERSION`], 1). raft-rs's own types (`Entry`, `HardState`,
//! `SnapshotMetadata`) are kept in raft-rs's protobuf encoding (rust-protobuf),
//! which is stable across raft-rs versions by the same field-number rule our
//! own `proto/` follows. Integers are big-endian.
//!
//! | tree         | key                              | value                                  |
//! |--------------|----------------------------------|----------------------------------------|
//! | `raft_log`   | `index:u64`                      | `01 term:u64 Entry`                    |
//! | `raft_state` | `hard_state`                     | `01 HardState`                         |
//! | `raft_state` | `truncated`                      | `01 index:u64 term:u64`                |
//! | `raft_state` | `snapshot`                       | `01 chunks:u32 SnapshotMetadata`       |
//! | `raft_state` | `snapshot_data \0 chunk:u32`     | `01 data bytes`                        |
//!
//! - The term is repeated in front of each entry so that `Storage::term`
//!   reads 9 bytes instead of decoding the entry (and the entry's own `index`
//!   and `term` are checked against the key and that prefix on every read).
//! - `truncated` is the index and term of the last entry removed from the log
//!   by compaction or replaced by a snapshot: the log holds exactly
//!   `truncated.index + 1 ..= last` with no gap.
//! - The snapshot's data is split into chunks of [`SNAPSHOT_CHUNK`] bytes:
//!   sled 0.34 writes values above about 128 KiB to blob files it does not
//!   fsync, and a snapshot is what remains of a compacted log.
//!
//! `storage/tests/golden/v1/raft_*.bin` hold exact bytes of each.

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, SnapshotMetadata};

use crate::records::{DecodeError, FORMAT_VERSION};

/// The two raft trees, opened with the others by `Store::open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RaftTree {
    /// `raft_log`: the entries.
    Log = 0,
    /// `raft_state`: hard state, truncation point, snapshot.
    State = 1,
}

impl RaftTree {
    /// Both, in the order of their indices.
    pub(crate) const ALL: [RaftTree; 2] = [RaftTree::Log, RaftTree::State];

    /// The sled tree name, also used in error messages.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            RaftTree::Log => "raft_log",
            RaftTree::State => "raft_state",
        }
    }
}

/// Key of the hard state in `raft_state`.
pub(crate) const HARD_STATE: &[u8] = b"hard_state";
/// Key of the truncated index and term in `raft_state`.
pub(crate) const TRUNCATED: &[u8] = b"truncated";
/// Key of the snapshot's metadata and chunk count in `raft_state`.
pub(crate) const SNAPSHOT: &[u8] = b"snapshot";
/// Prefix of the snapshot's data chunks in `raft_state`.
pub(crate) const SNAPSHOT_DATA: &[u8] = b"snapshot_data\0";
/// Bytes per snapshot data chunk.
pub const SNAPSHOT_CHUNK: usize = 64 * 1024;

/// Key of entry `index` in `raft_log`.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Decodes a `raft_log` key.
pub(crate) fn decode_log_key(key: &[u8]) -> Result<u64, DecodeError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| DecodeError(format!("log key of {} bytes, expected 8", key.len())))
}

/// Key of snapshot data chunk `n` in `raft_state`.
pub(crate) fn snapshot_chunk_key(n: u32) -> Vec<u8> {
    let mut key = SNAPSHOT_DATA.to_vec();
    key.extend_from_slice(&n.to_be_bytes());
    key
}

fn versioned(len: usize) -> Vec<u8> {
    let mut value = Vec::with_capacity(1 + len);
    value.push(FORMAT_VERSION);
    value
}

/// Checks the version byte and returns the rest.
fn body(value: &[u8]) -> Result<&[u8], DecodeError> {
    match value.split_first() {
        None => Err(DecodeError("empty value: no format version byte".into())),
        Some((&FORMAT_VERSION, rest)) => Ok(rest),
        Some((&v, _)) => Err(DecodeError(format!(
            "unknown format version {v} (this build reads version {FORMAT_VERSION})"
        ))),
    }
}

fn u64_at(bytes: &[u8], at: usize, field: &str) -> Result<u64, DecodeError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| DecodeError(format!("truncated: {field} needs 8 bytes")))
}

fn pb_error(what: &str, e: protobuf::ProtobufError) -> DecodeError {
    DecodeError(format!("{what}: {e}"))
}

/// Encodes a protobuf message; rust-protobuf only fails on messages with
/// unset required fields, which proto3 `eraftpb` does not have.
fn pb_bytes(message: &dyn protobuf::Message, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail for I/O reasons; see above for the rest.
    if let Err(e) = message.write_to_vec(out) {
        tracing::error!(error = %e, "encoding a raft-rs message failed");
    }
}

/// Encodes a `raft_log` value.
pub(crate) fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut value = versioned(9 + entry.compute_size() as usize);
    value.extend_from_slice(&entry.term.to_be_bytes());
    pb_bytes(entry, &mut value);
    value
}

/// The term prefix of a `raft_log` value, without decoding the entry.
pub(crate) fn decode_entry_term(value: &[u8]) -> Result<u64, DecodeError> {
    u64_at(body(value)?, 0, "term")
}

/// Decodes a `raft_log` value stored under `index`.
pub(crate) fn decode_entry(index: u64, value: &[u8]) -> Result<Entry, DecodeError> {
    let rest = body(value)?;
    let term = u64_at(rest, 0, "term")?;
    let entry = Entry::parse_from_bytes(&rest[8..]).map_err(|e| pb_error("entry", e))?;
    if entry.index != index {
        return Err(DecodeError(format!(
            "entry index {} does not match its key {index}",
            entry.index
        )));
    }
    if entry.term != term {
        return Err(DecodeError(format!(
            "entry term {} does not match the term prefix {term}",
            entry.term
        )));
    }
    Ok(entry)
}

/// Encodes the `hard_state` value.
pub(crate) fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut value = versioned(hs.compute_size() as usize);
    pb_bytes(hs, &mut value);
    value
}

/// Decodes the `hard_state` value.
pub(crate) fn decode_hard_state(value: &[u8]) -> Result<HardState, DecodeError> {
    HardState::parse_from_bytes(body(value)?).map_err(|e| pb_error("hard state", e))
}

/// Encodes the `truncated` value.
pub(crate) fn encode_truncated(index: u64, term: u64) -> Vec<u8> {
    let mut value = versioned(16);
    value.extend_from_slice(&index.to_be_bytes());
    value.extend_from_slice(&term.to_be_bytes());
    value
}

/// Decodes the `truncated` value into `(index, term)`.
pub(crate) fn decode_truncated(value: &[u8]) -> Result<(u64, u64), DecodeError> {
    let rest = body(value)?;
    if rest.len() != 16 {
        return Err(DecodeError(format!(
            "truncated: expected 16 bytes of index and term, found {}",
            rest.len()
        )));
    }
    Ok((u64_at(rest, 0, "index")?, u64_at(rest, 8, "term")?))
}

/// Encodes the `snapshot` value.
pub(crate) fn encode_snapshot_meta(meta: &SnapshotMetadata, chunks: u32) -> Vec<u8> {
    let mut value = versioned(4 + meta.compute_size() as usize);
    value.extend_from_slice(&chunks.to_be_bytes());
    pb_bytes(meta, &mut value);
    value
}

/// Decodes the `snapshot` value into the metadata and the chunk count.
pub(crate) fn decode_snapshot_meta(value: &[u8]) -> Result<(SnapshotMetadata, u32), DecodeError> {
    let rest = body(value)?;
    let chunks = rest
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| DecodeError("truncated: chunks needs 4 bytes".into()))?;
    let meta = SnapshotMetadata::parse_from_bytes(&rest[4..])
        .map_err(|e| pb_error("snapshot metadata", e))?;
    Ok((meta, chunks))
}

/// Encodes a snapshot data chunk.
pub(crate) fn encode_chunk(data: &[u8]) -> Vec<u8> {
    let mut value = versioned(data.len());
    value.extend_from_slice(data);
    value
}

/// Decodes a snapshot data chunk.
pub(crate) fn decode_chunk(value: &[u8]) -> Result<&[u8], DecodeError> {
    body(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn entry_round_trips_and_term_reads_the_prefix() {
        let e = entry(42, 7, b"batch");
        let value = encode_entry(&e);
        assert_eq!(value[0], FORMAT_VERSION);
        assert_eq!(decode_entry_term(&value).unwrap(), 7);
        assert_eq!(decode_entry(42, &value).unwrap(), e);
    }

    #[test]
    fn entry_under_the_wrong_key_or_term_is_rejected() {
        let value = encode_entry(&entry(42, 7, b""));
        let err = decode_entry(43, &value).unwrap_err();
        assert_eq!(err.0, "entry index 42 does not match its key 43");
        let mut value = value;
        value[8] = 8; // the term prefix's last byte
        let err = decode_entry(42, &value).unwrap_err();
        assert_eq!(err.0, "entry term 7 does not match the term prefix 8");
    }

    #[test]
    fn truncated_entries_are_rejected() {
        let value = encode_entry(&entry(1, 1, b"0123456789"));
        // version, term prefix (8), Entry: term (2), index (2), data (12).
        // Protobuf has no end marker: cut exactly before the data field, the
        // rest is a valid entry with empty data. Every other cut is caught,
        // by the length checks or by the index and term checks.
        let field_boundary = 1 + 8 + 2 + 2;
        for len in (0..value.len()).filter(|&len| len != field_boundary) {
            assert!(decode_entry(1, &value[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn hard_state_truncated_and_snapshot_round_trip() {
        let hs = HardState {
            term: 3,
            vote: 2,
            commit: 9,
            ..Default::default()
        };
        assert_eq!(decode_hard_state(&encode_hard_state(&hs)).unwrap(), hs);
        assert_eq!(decode_truncated(&encode_truncated(5, 6)).unwrap(), (5, 6));
        let mut meta = SnapshotMetadata {
            index: 10,
            term: 2,
            ..Default::default()
        };
        meta.mut_conf_state().voters = vec![1, 2, 3];
        assert_eq!(
            decode_snapshot_meta(&encode_snapshot_meta(&meta, 4)).unwrap(),
            (meta, 4)
        );
        assert_eq!(decode_chunk(&encode_chunk(b"abc")).unwrap(), b"abc");
    }

    #[test]
    fn unknown_version_and_bad_keys_are_rejected() {
        let mut value = encode_truncated(1, 1);
        value[0] = 2;
        let err = decode_truncated(&value).unwrap_err();
        assert!(err.0.starts_with("unknown format version 2"), "{err}");
        assert!(decode_log_key(&[0; 7]).is_err());
        assert_eq!(decode_log_key(&log_key(258)).unwrap(), 258);
        assert!(log_key(255) < log_key(256), "keys sort by index");
    }
}
