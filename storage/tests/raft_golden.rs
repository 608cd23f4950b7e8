//! Golden values of the raft trees (`tests/golden/v1/raft_*.bin`, made by
//! `make_raft.py` independently of the encoder): they must decode to the
//! expected state, the encoder must still write exactly these bytes, and the
//! damaged ones must be rejected with an error naming the tree.

mod common;

use common::*;
use raft::{
    eraftpb::{Entry, HardState, Snapshot},
    GetEntriesContext, Storage,
};
use storage::{Error, RaftStorage};

fn chunk_key(n: u32) -> Vec<u8> {
    let mut key = b"snapshot_data\0".to_vec();
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// (tree, key, golden file) of a consistent raft state: a snapshot at (5, 5)
/// and one entry at 6.
fn layout() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    vec![
        ("raft_state", b"hard_state".to_vec(), "raft_hard_state.bin"),
        ("raft_state", b"truncated".to_vec(), "raft_truncated.bin"),
        ("raft_state", b"snapshot".to_vec(), "raft_snapshot.bin"),
        ("raft_state", chunk_key(0), "raft_snapshot_chunk.bin"),
        ("raft_log", 6u64.to_be_bytes().to_vec(), "raft_entry.bin"),
    ]
}

fn expected_hard_state() -> HardState {
    HardState {
        term: 7,
        vote: 2,
        commit: 6,
        ..Default::default()
    }
}

fn expected_entry() -> Entry {
    Entry {
        term: 5,
        index: 6,
        data: b"batch".to_vec().into(),
        ..Default::default()
    }
}

fn expected_snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = 5;
    s.mut_metadata().term = 5;
    s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    s.set_data(b"state".to_vec().into());
    s
}

fn golden_layout() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    layout()
        .into_iter()
        .map(|(tree, key, name)| (tree, key, golden(name)))
        .collect()
}

#[test]
fn golden_v1_raft_values_decode() {
    let dir = tempfile::tempdir().unwrap();
    write_raw(dir.path(), &golden_layout());
    let store = open(dir.path());
    let raft = RaftStorage::open(&store).unwrap();
    let state = raft.initial_state().unwrap();
    assert_eq!(state.hard_state, expected_hard_state());
    assert_eq!(state.conf_state.voters, [1, 2, 3]);
    assert_eq!(
        (raft.first_index().unwrap(), raft.last_index().unwrap()),
        (6, 6)
    );
    assert_eq!(raft.term(5).unwrap(), 5);
    assert_eq!(raft.term(6).unwrap(), 5);
    assert_eq!(
        raft.entries(6, 7, None, GetEntriesContext::empty(false))
            .unwrap(),
        [expected_entry()]
    );
    assert_eq!(raft.snapshot(0, 2).unwrap(), expected_snapshot());
}

#[test]
fn packed_voters_decode_too() {
    let (_dir, result) = open_with("raft_state", b"snapshot", "raft_snapshot.packed.bin");
    assert_eq!(result.unwrap().snapshot(0, 2).unwrap(), expected_snapshot());
}

#[test]
fn encoder_writes_the_golden_v1_raft_bytes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let raft = RaftStorage::open(&store).unwrap();
        raft.apply_snapshot(&expected_snapshot()).unwrap();
        raft.append(&[expected_entry()], Some(&expected_hard_state()))
            .unwrap();
        store.close().unwrap();
    }
    let db = sled_open(dir.path());
    for (tree, key, name) in layout() {
        let value = db.open_tree(tree).unwrap().get(&key).unwrap();
        assert_eq!(
            value.as_deref(),
            Some(golden(name).as_slice()),
            "{tree} {}",
            key.escape_ascii()
        );
    }
}

/// Replaces one value of the golden layout with a damaged file.
fn open_with(
    tree: &str,
    key: &[u8],
    damaged: &str,
) -> (tempfile::TempDir, Result<RaftStorage, Error>) {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = golden_layout();
    for (t, k, v) in &mut entries {
        if *t == tree && k.as_slice() == key {
            *v = golden(damaged);
        }
    }
    write_raw(dir.path(), &entries);
    let store = open(dir.path());
    let result = RaftStorage::open(&store);
    (dir, result)
}

fn assert_corrupt(result: Result<impl std::fmt::Debug, Error>, tree: &str) {
    match result {
        Err(e @ Error::Corrupt { .. }) => {
            assert!(e.to_string().contains(&format!("tree `{tree}`")), "{e}")
        }
        other => panic!("expected Corrupt in {tree}, got {other:?}"),
    }
}

#[test]
fn damaged_raft_state_values_are_rejected_at_open() {
    for (key, damaged) in [
        (&b"hard_state"[..], "raft_hard_state.unknown-version.bin"),
        (b"truncated", "raft_truncated.short.bin"),
        (b"snapshot", "raft_snapshot.bad-protobuf.bin"),
    ] {
        let (_dir, result) = open_with("raft_state", key, damaged);
        assert_corrupt(result, "raft_state");
    }
}

#[test]
fn damaged_raft_entries_are_rejected_when_read() {
    for damaged in ["raft_entry.truncated.bin", "raft_entry.term-mismatch.bin"] {
        let (_dir, result) = open_with("raft_log", &6u64.to_be_bytes(), damaged);
        let raft = result.unwrap();
        let err = raft
            .entries(6, 7, None, GetEntriesContext::empty(false))
            .unwrap_err();
        assert!(
            err.to_string().contains("tree `raft_log`"),
            "{damaged}: {err}"
        );
    }
}

#[test]
fn a_gap_in_the_log_is_rejected_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = golden_layout();
    // Entry 8 without entry 7.
    let mut e8 = expected_entry();
    e8.index = 8;
    let mut value = vec![1];
    value.extend_from_slice(&5u64.to_be_bytes());
    value.extend_from_slice(&protobuf::Message::write_to_bytes(&e8).unwrap());
    entries.push(("raft_log", 8u64.to_be_bytes().to_vec(), value));
    write_raw(dir.path(), &entries);
    let store = open(dir.path());
    assert_corrupt(RaftStorage::open(&store), "raft_log");
}

#[test]
fn a_log_that_does_not_start_after_the_truncation_point_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = golden_layout();
    entries.retain(|(tree, _, _)| *tree != "raft_log");
    let mut e7 = expected_entry();
    e7.index = 7;
    let mut value = vec![1];
    value.extend_from_slice(&5u64.to_be_bytes());
    value.extend_from_slice(&protobuf::Message::write_to_bytes(&e7).unwrap());
    entries.push(("raft_log", 7u64.to_be_bytes().to_vec(), value));
    write_raw(dir.path(), &entries);
    let store = open(dir.path());
    assert_corrupt(RaftStorage::open(&store), "raft_log");
}
