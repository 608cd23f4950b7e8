//! Replicas of other nodes' sessions (`replica_*` trees, issue 12) over real
//! sled files: puts, deletes and drops through the writer read back with
//! `load_replica`; `DropReplica` and `DeleteSession` leave each other's
//! trees alone; everything survives a close and reopen.

mod common;

use common::*;
use storage::{Error, OutgoingRecord, Replica, ReplicaMeta, Store, WriteOp};

fn meta(owner: u64, max_seq: u64) -> ReplicaMeta {
    ReplicaMeta { owner, max_seq }
}

fn put_meta(client_id: &str, meta: ReplicaMeta) -> WriteOp {
    WriteOp::PutReplicaMeta {
        client_id: client_id.into(),
        meta,
    }
}

fn put_outgoing(client_id: &str, seq: u64, record: OutgoingRecord) -> WriteOp {
    WriteOp::PutReplicaOutgoing {
        client_id: client_id.into(),
        seq,
        record,
    }
}

fn put_incoming(client_id: &str, packet_id: u16) -> WriteOp {
    WriteOp::PutReplicaIncoming {
        client_id: client_id.into(),
        packet_id,
    }
}

fn drop_replica(client_id: &str) -> WriteOp {
    WriteOp::DropReplica {
        client_id: client_id.into(),
    }
}

/// A replica of `client_id` from node 2: meta, messages 1 and 2, QoS 2 id 7.
fn put_replica(client_id: &str) -> Vec<WriteOp> {
    vec![
        put_meta(client_id, meta(2, 2)),
        put_outgoing(client_id, 1, outgoing("r/1", b"one")),
        put_outgoing(client_id, 2, outgoing("r/2", b"two")),
        put_incoming(client_id, 7),
    ]
}

fn expected_replica() -> Replica {
    Replica {
        owner: 2,
        max_seq: 2,
        outgoing: vec![(1, outgoing("r/1", b"one")), (2, outgoing("r/2", b"two"))],
        incoming_qos2: vec![7],
    }
}

/// The session's own records of `client_id`, one in each of its trees.
fn put_session(client_id: &str) -> Vec<WriteOp> {
    vec![
        WriteOp::PutSession {
            client_id: client_id.into(),
            record: session(60),
        },
        WriteOp::PutSubscription {
            client_id: client_id.into(),
            record: subscription("own/#"),
        },
        WriteOp::PutOutgoing {
            client_id: client_id.into(),
            seq: 1,
            record: outgoing("own", b"mine"),
        },
        WriteOp::PutIncomingQos2 {
            client_id: client_id.into(),
            packet_id: 9,
        },
    ]
}

fn assert_session_intact(store: &Store, client_id: &str) {
    assert_eq!(
        store.load_sessions().unwrap(),
        [(client_id.to_owned(), session(60))]
    );
    assert_eq!(
        store.load_subscriptions(client_id).unwrap(),
        [subscription("own/#")]
    );
    assert_eq!(
        store.load_outgoing(client_id).unwrap(),
        [(1, outgoing("own", b"mine"))]
    );
    assert_eq!(store.load_incoming_qos2(client_id).unwrap(), [9]);
}

#[test]
fn replica_puts_and_deletes_read_back_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let writer = store.writer();
    // submitted out of order: read back by seq and packet id
    let mut ops = vec![put_incoming("c", 300), put_incoming("c", 5)];
    ops.extend([3, 1, 256, 2].map(|seq| put_outgoing("c", seq, outgoing("t", b"x"))));
    ops.push(put_meta("c", meta(4, 256)));
    submit_durable(&writer, ops).unwrap();
    let replica = store.load_replica("c").unwrap().unwrap();
    assert_eq!((replica.owner, replica.max_seq), (4, 256));
    let seqs: Vec<_> = replica.outgoing.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 2, 3, 256]);
    assert_eq!(replica.incoming_qos2, [5, 300]);

    // acknowledged, released, a new owner
    let mut released = outgoing("t", b"x");
    released.released = true;
    let ops = vec![
        WriteOp::DeleteReplicaOutgoing {
            client_id: "c".into(),
            seq: 2,
        },
        put_outgoing("c", 3, released.clone()),
        WriteOp::DeleteReplicaIncoming {
            client_id: "c".into(),
            packet_id: 300,
        },
        put_meta("c", meta(5, 257)),
    ];
    submit_durable(&writer, ops).unwrap();
    assert_eq!(
        store.load_replica("c").unwrap(),
        Some(Replica {
            owner: 5,
            max_seq: 257,
            outgoing: vec![
                (1, outgoing("t", b"x")),
                (3, released),
                (256, outgoing("t", b"x")),
            ],
            incoming_qos2: vec![5],
        })
    );
    assert_eq!(
        store.load_replica_clients().unwrap(),
        [("c".to_owned(), meta(5, 257))]
    );
}

#[test]
fn replica_without_meta_reads_as_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ops = vec![
        put_outgoing("c", 1, outgoing("t", b"x")),
        put_incoming("c", 1),
    ];
    submit_durable(&store.writer(), ops).unwrap();
    assert_eq!(store.load_replica("c").unwrap(), None);
    assert_eq!(store.load_replica("other").unwrap(), None);
    assert!(store.load_replica_clients().unwrap().is_empty());
    // and the records are not the session's own
    assert!(store.load_outgoing("c").unwrap().is_empty());
    assert!(store.load_incoming_qos2("c").unwrap().is_empty());
}

#[test]
fn drop_replica_leaves_the_sessions_own_trees_and_a_longer_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let writer = store.writer();
    let mut ops = put_session("ab");
    ops.extend(put_replica("ab"));
    ops.extend(put_replica("abc"));
    submit_durable(&writer, ops).unwrap();

    submit_durable(&writer, vec![drop_replica("ab")]).unwrap();
    assert_eq!(store.load_replica("ab").unwrap(), None);
    assert_eq!(store.load_replica("abc").unwrap(), Some(expected_replica()));
    assert_eq!(
        store.load_replica_clients().unwrap(),
        [("abc".to_owned(), meta(2, 2))]
    );
    assert_session_intact(&store, "ab");
    // a new meta finds no record left of the dropped replica
    submit_durable(&writer, vec![put_meta("ab", meta(3, 0))]).unwrap();
    assert_eq!(
        store.load_replica("ab").unwrap(),
        Some(Replica {
            owner: 3,
            max_seq: 0,
            outgoing: vec![],
            incoming_qos2: vec![],
        })
    );
}

#[test]
fn delete_session_leaves_the_replica_trees() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let writer = store.writer();
    let mut ops = put_session("c");
    ops.extend(put_replica("c"));
    submit_durable(&writer, ops).unwrap();

    let delete = WriteOp::DeleteSession {
        client_id: "c".into(),
    };
    submit_durable(&writer, vec![delete]).unwrap();
    assert!(store.load_sessions().unwrap().is_empty());
    assert!(store.load_outgoing("c").unwrap().is_empty());
    assert!(store.load_incoming_qos2("c").unwrap().is_empty());
    assert_eq!(store.load_replica("c").unwrap(), Some(expected_replica()));
}

#[test]
fn drop_replica_in_one_group_applies_in_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut committer) = Store::open_with_committer(&config(dir.path())).unwrap();
    let writer = store.writer();
    // three requests, one group: puts, the drop, then a put after it
    writer.submit(put_replica("c"), None);
    writer.submit(vec![drop_replica("c")], None);
    writer.submit(
        vec![
            put_meta("c", meta(6, 9)),
            put_outgoing("c", 9, outgoing("t", b"after")),
        ],
        None,
    );
    assert_eq!(committer.step(), 3);
    assert_eq!(
        store.load_replica("c").unwrap(),
        Some(Replica {
            owner: 6,
            max_seq: 9,
            outgoing: vec![(9, outgoing("t", b"after"))],
            incoming_qos2: vec![],
        })
    );
}

#[test]
fn replica_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut ops = put_replica("c");
    ops.extend(put_replica("d"));
    ops.push(drop_replica("d"));
    submit_durable(&store.writer(), ops).unwrap();
    store.close().unwrap();

    let store = open(dir.path());
    assert_eq!(store.load_replica("c").unwrap(), Some(expected_replica()));
    assert_eq!(store.load_replica("d").unwrap(), None);
    assert_eq!(
        store.load_replica_clients().unwrap(),
        [("c".to_owned(), meta(2, 2))]
    );
}

#[test]
fn replica_op_with_a_nul_client_id_or_a_bad_qos_is_refused_mqtt_1_5_4_2() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut bad_qos = outgoing("t", b"x");
    bad_qos.message.qos = 3;
    let refused = [
        put_meta("a\0b", meta(1, 1)),
        put_incoming("a\0b", 1),
        drop_replica("a\0b"),
        put_outgoing("c", 1, bad_qos),
    ];
    for op in refused {
        // with a valid op in the same submit: the whole submit is refused
        let ops = vec![put_meta("c", meta(1, 1)), op.clone()];
        let err = submit_durable(&store.writer(), ops).unwrap_err();
        assert!(matches!(err, Error::InvalidWrite { .. }), "{op:?}: {err:?}");
    }
    assert!(store.load_replica_clients().unwrap().is_empty());
    let err = store.load_replica("a\0b").unwrap_err();
    assert!(matches!(err, Error::InvalidWrite { .. }), "{err:?}");
}

#[test]
fn drop_replica_of_drops_only_the_named_owners_replica() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let writer = store.writer();
    submit_durable(&writer, put_replica("c")).unwrap();
    let drop_of = |owner| WriteOp::DropReplicaOf {
        client_id: "c".into(),
        owner,
    };
    // shipped by node 2, not 3: kept
    submit_durable(&writer, vec![drop_of(3)]).unwrap();
    assert_eq!(store.load_replica("c").unwrap(), Some(expected_replica()));
    // a new owner's reset in the same group comes first: kept as its
    let mut ops = vec![drop_replica("c"), put_meta("c", meta(3, 9))];
    ops.push(drop_of(2));
    submit_durable(&writer, ops).unwrap();
    assert_eq!(
        store.load_replica("c").unwrap().map(|r| r.owner),
        Some(3),
        "the new owner's replica stays"
    );
    submit_durable(&writer, vec![drop_of(3)]).unwrap();
    assert_eq!(store.load_replica("c").unwrap(), None);
    assert!(store.load_replica_clients().unwrap().is_empty());
    // nothing to drop: nothing happens
    submit_durable(&writer, vec![drop_of(3)]).unwrap();
}
