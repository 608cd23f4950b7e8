//! `RaftStorage` against the semantics of raft-rs's `MemStorage` test suite
//! (`src/storage.rs`: term, entries, first/last index, compact, snapshot),
//! plus what only a persistent store has: reopen, conflicting suffixes,
//! bootstrap, chunked snapshots.

mod common;

use common::*;
use raft::{
    eraftpb::{ConfState, Entry, HardState, Snapshot},
    GetEntriesContext, Storage, StorageError,
};
use storage::{RaftStorage, Store, BOOTSTRAP_INDEX, BOOTSTRAP_TERM, SNAPSHOT_CHUNK};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        ..Default::default()
    }
}

fn snapshot(index: u64, term: u64, voters: Vec<u64>, data: Vec<u8>) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().mut_conf_state().voters = voters;
    s.set_data(data.into());
    s
}

fn size_of(e: &Entry) -> u64 {
    u64::from(protobuf::Message::compute_size(e))
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

/// A storage whose log holds entries 3, 4, 5 (terms 3, 4, 5) after a
/// snapshot at (2, 2): raft-rs's tests' `[3, 4, 5]` with 3 as the first
/// available entry.
fn three_four_five(store: &Store) -> RaftStorage {
    let raft = RaftStorage::open(store).unwrap();
    raft.apply_snapshot(&snapshot(2, 2, vec![1], vec![]))
        .unwrap();
    raft.append(&[entry(3, 3), entry(4, 4), entry(5, 5)], None)
        .unwrap();
    raft
}

fn store_error<T: std::fmt::Debug>(result: raft::Result<T>) -> StorageError {
    match result {
        Err(raft::Error::Store(e)) => e,
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[test]
fn new_store_is_uninitialized_with_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let raft = RaftStorage::open(&open(dir.path())).unwrap();
    assert!(!raft.is_initialized());
    assert_eq!(raft.first_index().unwrap(), 1);
    assert_eq!(raft.last_index().unwrap(), 0);
    assert_eq!(raft.term(0).unwrap(), 0);
    let state = raft.initial_state().unwrap();
    assert!(!state.initialized());
    assert_eq!(
        store_error(raft.snapshot(0, 2)),
        StorageError::SnapshotTemporarilyUnavailable
    );
}

#[test]
fn term_of_each_index() {
    let dir = tempfile::tempdir().unwrap();
    let raft = three_four_five(&open(dir.path()));
    assert_eq!(store_error(raft.term(1)), StorageError::Compacted);
    assert_eq!(
        raft.term(2).unwrap(),
        2,
        "the truncated entry keeps its term"
    );
    for i in 3..=5 {
        assert_eq!(raft.term(i).unwrap(), i);
    }
    assert_eq!(store_error(raft.term(6)), StorageError::Unavailable);
}

#[test]
fn entries_by_range_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let raft = three_four_five(&open(dir.path()));
    raft.append(&[entry(6, 6)], None).unwrap();
    let ents = [entry(3, 3), entry(4, 4), entry(5, 5), entry(6, 6)];
    let max = u64::MAX;
    assert_eq!(
        store_error(raft.entries(2, 6, max, ctx())),
        StorageError::Compacted
    );
    let cases: Vec<(u64, u64, u64, &[Entry])> = vec![
        (3, 4, max, &ents[0..1]),
        (4, 5, max, &ents[1..2]),
        (4, 6, max, &ents[1..3]),
        (4, 7, max, &ents[1..4]),
        // even if max size is zero, the first entry is returned
        (4, 7, 0, &ents[1..2]),
        (4, 7, size_of(&ents[1]) + size_of(&ents[2]), &ents[1..3]),
        (
            4,
            7,
            size_of(&ents[1]) + size_of(&ents[2]) + size_of(&ents[3]) / 2,
            &ents[1..3],
        ),
        (
            4,
            7,
            size_of(&ents[1]) + size_of(&ents[2]) + size_of(&ents[3]) - 1,
            &ents[1..3],
        ),
        (
            4,
            7,
            size_of(&ents[1]) + size_of(&ents[2]) + size_of(&ents[3]),
            &ents[1..4],
        ),
    ];
    for (i, (lo, hi, max_size, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            raft.entries(lo, hi, max_size, ctx()).unwrap(),
            want,
            "case {i}: {lo}..{hi} max {max_size}"
        );
    }
    // Past the end: an error, not raft-rs's permitted panic.
    assert_eq!(
        store_error(raft.entries(4, 8, max, ctx())),
        StorageError::Unavailable
    );
}

#[test]
fn first_and_last_index_follow_append_and_compact() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let raft = three_four_five(&store);
    assert_eq!(raft.last_index().unwrap(), 5);
    raft.append(&[entry(6, 5)], None).unwrap();
    assert_eq!(raft.last_index().unwrap(), 6);
    assert_eq!(raft.first_index().unwrap(), 3);
    raft.save_snapshot(&snapshot(5, 5, vec![1], vec![]))
        .unwrap();
    raft.compact(4).unwrap();
    assert_eq!(raft.first_index().unwrap(), 4);
    assert_eq!(raft.term(3).unwrap(), 3, "the last compacted entry's term");
}

#[test]
fn compact_drops_entries_before_the_index() {
    // (compact index, first index after, its term, entries left)
    for (idx, want_first, want_term, want_len) in
        [(2, 3, 3, 3), (3, 3, 3, 3), (4, 4, 4, 2), (5, 5, 5, 1)]
    {
        let dir = tempfile::tempdir().unwrap();
        let raft = three_four_five(&open(dir.path()));
        raft.save_snapshot(&snapshot(5, 5, vec![1], vec![]))
            .unwrap();
        raft.compact(idx).unwrap();
        let first = raft.first_index().unwrap();
        assert_eq!(first, want_first, "compact {idx}");
        let ents = raft.entries(first, 6, u64::MAX, ctx()).unwrap();
        assert_eq!(ents[0].term, want_term, "compact {idx}");
        assert_eq!(ents.len(), want_len, "compact {idx}");
    }
}

#[test]
fn compact_past_the_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raft = three_four_five(&open(dir.path()));
    let err = raft.compact(5).unwrap_err();
    assert!(err.to_string().contains("past the snapshot at 2"), "{err}");
    assert_eq!(raft.first_index().unwrap(), 3);
}

#[test]
fn snapshot_returns_the_saved_one_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let raft = three_four_five(&open(dir.path()));
    let saved = snapshot(4, 4, vec![1, 2, 3], b"state machine".to_vec());
    raft.save_snapshot(&saved).unwrap();
    assert_eq!(raft.snapshot(0, 2).unwrap(), saved);
    assert_eq!(raft.snapshot(4, 2).unwrap(), saved);
    assert_eq!(
        store_error(raft.snapshot(5, 2)),
        StorageError::SnapshotTemporarilyUnavailable
    );
    // Saving does not compact: raft-rs still reads the entries after it.
    assert_eq!(raft.first_index().unwrap(), 3);
    let err = raft
        .save_snapshot(&snapshot(9, 5, vec![1], vec![]))
        .unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
}

#[test]
fn append_replaces_a_conflicting_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let raft = three_four_five(&store);
    // A new leader's log diverges at 4 and is shorter.
    raft.append(&[entry(4, 6)], None).unwrap();
    assert_eq!(raft.last_index().unwrap(), 4);
    assert_eq!(raft.term(4).unwrap(), 6);
    assert_eq!(store_error(raft.term(5)), StorageError::Unavailable);
    drop(raft);
    let raft = RaftStorage::open(&store).unwrap();
    assert_eq!(raft.last_index().unwrap(), 4, "entry 5 is gone on disk too");
}

#[test]
fn append_with_a_gap_or_before_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raft = three_four_five(&open(dir.path()));
    assert!(raft.append(&[entry(7, 5)], None).is_err());
    assert!(raft.append(&[entry(2, 5)], None).is_err());
    assert!(raft.append(&[entry(6, 5), entry(8, 5)], None).is_err());
    assert_eq!(raft.last_index().unwrap(), 5);
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut hs = HardState {
        term: 5,
        vote: 2,
        commit: 4,
        ..Default::default()
    };
    let saved = snapshot(4, 4, vec![1, 2], b"data".to_vec());
    {
        let store = open(dir.path());
        let raft = three_four_five(&store);
        raft.append(&[entry(6, 5)], Some(&hs)).unwrap();
        raft.save_snapshot(&saved).unwrap();
        raft.compact(4).unwrap();
        raft.set_commit(5).unwrap();
        store.close().unwrap();
    }
    let store = open(dir.path());
    let raft = RaftStorage::open(&store).unwrap();
    assert!(raft.is_initialized());
    let state = raft.initial_state().unwrap();
    hs.commit = 5;
    assert_eq!(state.hard_state, hs);
    assert_eq!(state.conf_state.voters, [1, 2], "from the snapshot");
    assert_eq!(raft.first_index().unwrap(), 4);
    assert_eq!(raft.last_index().unwrap(), 6);
    assert_eq!(raft.term(3).unwrap(), 3);
    assert_eq!(raft.snapshot(0, 1).unwrap(), saved);
    assert_eq!(
        raft.entries(4, 7, u64::MAX, ctx()).unwrap(),
        [entry(4, 4), entry(5, 5), entry(6, 5)]
    );
}

#[test]
fn apply_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let raft = three_four_five(&store);
    let received = snapshot(10, 7, vec![1, 2, 3], b"leader's state".to_vec());
    raft.apply_snapshot(&received).unwrap();
    assert_eq!(raft.first_index().unwrap(), 11);
    assert_eq!(raft.last_index().unwrap(), 10);
    assert_eq!(raft.term(10).unwrap(), 7);
    assert_eq!(raft.hard_state().commit, 10);
    assert_eq!(raft.hard_state().term, 7);
    assert_eq!(raft.initial_state().unwrap().conf_state.voters, [1, 2, 3]);
    raft.append(&[entry(11, 7)], None).unwrap();
    drop(raft);
    let raft = RaftStorage::open(&store).unwrap();
    assert_eq!(raft.snapshot(0, 1).unwrap(), received);
    assert_eq!(
        (raft.first_index().unwrap(), raft.last_index().unwrap()),
        (11, 11)
    );
    // An older snapshot than the stored one is refused.
    assert!(raft
        .apply_snapshot(&snapshot(8, 7, vec![1], vec![]))
        .is_err());
}

#[test]
fn bootstrap_writes_the_founding_snapshot_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let raft = RaftStorage::open(&store).unwrap();
    let cs = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    raft.bootstrap(cs.clone()).unwrap();
    assert!(raft.is_initialized());
    assert_eq!(raft.first_index().unwrap(), BOOTSTRAP_INDEX + 1);
    assert_eq!(raft.term(BOOTSTRAP_INDEX).unwrap(), BOOTSTRAP_TERM);
    let snap = raft.snapshot(0, 2).unwrap();
    assert_eq!(snap.get_metadata().get_conf_state(), &cs);
    assert!(snap.get_data().is_empty());
    assert!(raft.bootstrap(cs).is_err(), "a second bootstrap is refused");
}

#[test]
fn large_snapshots_are_stored_in_chunks_and_shrink_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let raft = three_four_five(&store);
    let big: Vec<u8> = (0..SNAPSHOT_CHUNK * 3 + 17).map(|i| i as u8).collect();
    raft.save_snapshot(&snapshot(3, 3, vec![1], big.clone()))
        .unwrap();
    assert_eq!(raft.snapshot(0, 1).unwrap().get_data(), &big[..]);
    let small = snapshot(4, 4, vec![1], b"small".to_vec());
    raft.save_snapshot(&small).unwrap();
    drop(raft);
    let raft = RaftStorage::open(&store).unwrap();
    assert_eq!(raft.snapshot(0, 1).unwrap(), small);
}
