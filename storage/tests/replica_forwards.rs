//! Copies other nodes keep for their peers, replicated here
//! (`replica_forwards`, issue 12) over real sled files: puts, deletes and
//! drops through the writer read back with `load_replica_forwards` and
//! `load_replica_forward_origins`; `DropReplicaForwards` leaves other
//! origins and this node's own `forwards` alone, and `PutForward` /
//! `DeleteForward` leave `replica_forwards` alone; everything survives a
//! close and reopen.

mod common;

use bytes::Bytes;
use common::*;
use storage::{Store, WriteOp};

fn copy(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

fn put(origin: u64, node: u64, seq: u64, text: &'static str) -> WriteOp {
    WriteOp::PutReplicaForward {
        origin,
        node,
        seq,
        copy: copy(text),
    }
}

fn delete(origin: u64, node: u64, seq: u64) -> WriteOp {
    WriteOp::DeleteReplicaForward { origin, node, seq }
}

fn drop_origin(origin: u64) -> WriteOp {
    WriteOp::DropReplicaForwards { origin }
}

/// Two copies for each of nodes 4 and 5 from each of origins 1, 2 and 3,
/// and this node's own copies for nodes 2 and 4 under the same numbers.
fn put_all() -> Vec<WriteOp> {
    let mut ops = Vec::new();
    for origin in [1, 2, 3] {
        for node in [4, 5] {
            for seq in [1, 2] {
                ops.push(put(origin, node, seq, "replica"));
            }
        }
    }
    for (node, seq) in [(2, 1), (4, 1)] {
        ops.push(WriteOp::PutForward {
            node,
            seq,
            copy: copy("own"),
        });
    }
    ops
}

fn expected_origin() -> Vec<(u64, u64, Bytes)> {
    [(4, 1), (4, 2), (5, 1), (5, 2)]
        .map(|(node, seq)| (node, seq, copy("replica")))
        .to_vec()
}

fn expected_own() -> Vec<(u64, u64, Bytes)> {
    vec![(2, 1, copy("own")), (4, 1, copy("own"))]
}

#[test]
fn replica_forward_puts_and_deletes_read_back_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let writer = store.writer();
    // submitted out of order: read back by node then seq, origins ascending
    let ops = vec![
        put(7, 3, 256, "c"),
        put(7, 3, 1, "a"),
        put(7, 1, 9, "first node"),
        put(7, 3, 2, "b"),
        put(2, 3, 1, "other origin"),
        put(256, 1, 1, "big origin"),
    ];
    submit_durable(&writer, ops).unwrap();
    assert_eq!(
        store.load_replica_forwards(7).unwrap(),
        [
            (1, 9, copy("first node")),
            (3, 1, copy("a")),
            (3, 2, copy("b")),
            (3, 256, copy("c")),
        ]
    );
    assert_eq!(
        store.load_replica_forwards(2).unwrap(),
        [(3, 1, copy("other origin"))]
    );
    assert!(store.load_replica_forwards(3).unwrap().is_empty());
    assert_eq!(store.load_replica_forward_origins().unwrap(), [2, 7, 256]);

    // acknowledged by node 3, replaced, and one never stored
    let ops = vec![
        delete(7, 3, 2),
        put(7, 3, 256, "c again"),
        delete(7, 4, 1),
        delete(2, 3, 1),
    ];
    submit_durable(&writer, ops).unwrap();
    assert_eq!(
        store.load_replica_forwards(7).unwrap(),
        [
            (1, 9, copy("first node")),
            (3, 1, copy("a")),
            (3, 256, copy("c again")),
        ]
    );
    assert!(store.load_replica_forwards(2).unwrap().is_empty());
    assert_eq!(store.load_replica_forward_origins().unwrap(), [7, 256]);
    // none of it is this node's own
    assert!(store.load_forwards().unwrap().is_empty());
}

#[test]
fn replica_forward_origins_at_the_ends_of_the_range_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.load_replica_forward_origins().unwrap().is_empty());
    let ops = vec![
        put(0, 0, 0, "zero"),
        put(0, u64::MAX, u64::MAX, "zero, last"),
        put(u64::MAX, 0, 0, "max"),
        put(u64::MAX, u64::MAX, u64::MAX, "max, last"),
        put(1 << 32, 1, 1, "middle"),
    ];
    submit_durable(&store.writer(), ops).unwrap();
    assert_eq!(
        store.load_replica_forward_origins().unwrap(),
        [0, 1 << 32, u64::MAX]
    );
    assert_eq!(
        store.load_replica_forwards(u64::MAX).unwrap(),
        [(0, 0, copy("max")), (u64::MAX, u64::MAX, copy("max, last"))]
    );
    assert_eq!(store.load_replica_forwards(0).unwrap().len(), 2);
}

#[test]
fn drop_replica_forwards_leaves_other_origins_and_the_nodes_own_forwards() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let writer = store.writer();
    submit_durable(&writer, put_all()).unwrap();

    submit_durable(&writer, vec![drop_origin(2)]).unwrap();
    assert!(store.load_replica_forwards(2).unwrap().is_empty());
    assert_eq!(store.load_replica_forwards(1).unwrap(), expected_origin());
    assert_eq!(store.load_replica_forwards(3).unwrap(), expected_origin());
    assert_eq!(store.load_replica_forward_origins().unwrap(), [1, 3]);
    assert_eq!(store.load_forwards().unwrap(), expected_own());
    // nothing left to drop: nothing happens
    submit_durable(&writer, vec![drop_origin(2), drop_origin(9)]).unwrap();
    assert_eq!(store.load_replica_forward_origins().unwrap(), [1, 3]);
}

#[test]
fn own_forward_ops_leave_replica_forwards_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let writer = store.writer();
    submit_durable(&writer, put_all()).unwrap();

    // the numbers of the replicated copies, as this node's own
    let mut ops = Vec::new();
    for node in [1, 2, 3, 4, 5] {
        for seq in [1, 2] {
            ops.push(WriteOp::DeleteForward { node, seq });
        }
    }
    ops.push(WriteOp::PutForward {
        node: 1,
        seq: 4,
        copy: copy("own, new"),
    });
    submit_durable(&writer, ops).unwrap();
    assert_eq!(store.load_forwards().unwrap(), [(1, 4, copy("own, new"))]);
    for origin in [1, 2, 3] {
        assert_eq!(
            store.load_replica_forwards(origin).unwrap(),
            expected_origin()
        );
    }
    assert_eq!(store.load_replica_forward_origins().unwrap(), [1, 2, 3]);
}

#[test]
fn replica_forward_ops_in_one_group_apply_in_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut committer) = Store::open_with_committer(&config(dir.path())).unwrap();
    let writer = store.writer();
    writer.submit(vec![put(3, 1, 1, "old")], None);
    assert_eq!(committer.step(), 1);

    // five requests, one group
    writer.submit(vec![put(1, 1, 1, "put then delete")], None);
    writer.submit(vec![delete(1, 1, 1), delete(1, 1, 2)], None);
    writer.submit(vec![put(1, 1, 2, "delete then put")], None);
    writer.submit(vec![put(3, 1, 2, "new"), drop_origin(3)], None);
    writer.submit(vec![put(3, 2, 1, "after the drop")], None);
    assert_eq!(committer.step(), 5);
    assert_eq!(
        store.load_replica_forwards(1).unwrap(),
        [(1, 2, copy("delete then put"))]
    );
    assert_eq!(
        store.load_replica_forwards(3).unwrap(),
        [(2, 1, copy("after the drop"))]
    );
    assert_eq!(store.load_replica_forward_origins().unwrap(), [1, 3]);
}

#[test]
fn replica_forwards_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut ops = put_all();
    ops.extend([drop_origin(2), delete(3, 5, 2), put(3, 5, 3, "last")]);
    submit_durable(&store.writer(), ops).unwrap();
    store.close().unwrap();

    let store = open(dir.path());
    assert_eq!(store.load_replica_forwards(1).unwrap(), expected_origin());
    assert!(store.load_replica_forwards(2).unwrap().is_empty());
    let mut origin3 = expected_origin();
    origin3[3] = (5, 3, copy("last"));
    assert_eq!(store.load_replica_forwards(3).unwrap(), origin3);
    assert_eq!(store.load_replica_forward_origins().unwrap(), [1, 3]);
    assert_eq!(store.load_forwards().unwrap(), expected_own());
}
