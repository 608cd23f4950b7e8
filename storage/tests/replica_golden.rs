//! Golden values of the replica trees: `v1/replica_meta*.bin` (made by
//! `make.py` independently of the encoder), and in `replica_outgoing`,
//! `replica_incoming` and `replica_forwards` the golden values of
//! `outgoing` (`v2/`), `incoming_qos2` and `forwards` (`v1/`), which they
//! share. Each must decode to the expected replica, the encoder must write
//! exactly these bytes at keys built here, and the damaged ones must be
//! rejected with an error naming the tree and key.

mod common;

use bytes::Bytes;
use common::*;
use storage::{Error, OutgoingRecord, Replica, ReplicaMeta, Store, StoredMessage, WriteOp};

const CLIENT: &str = "dev-1";

fn client_key(suffix: &[u8]) -> Vec<u8> {
    let mut key = format!("{CLIENT}\0").into_bytes();
    key.extend_from_slice(suffix);
    key
}

/// (tree, key, golden value) of a replica of `CLIENT`: its meta, message
/// 42 and QoS 2 packet id 7.
fn layout() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    vec![
        (
            "replica_meta",
            CLIENT.as_bytes().to_vec(),
            golden("replica_meta.bin"),
        ),
        (
            "replica_outgoing",
            client_key(&42u64.to_be_bytes()),
            golden_of(2, "outgoing.bin"),
        ),
        (
            "replica_incoming",
            client_key(&7u16.to_be_bytes()),
            golden("incoming_qos2.bin"),
        ),
    ]
}

/// `v1/replica_meta.bin`.
fn expected_meta() -> ReplicaMeta {
    ReplicaMeta {
        owner: 3,
        max_seq: 0x0102_0304_0506_0708,
    }
}

/// `v2/outgoing.bin`.
fn expected_outgoing() -> OutgoingRecord {
    OutgoingRecord {
        released: false,
        uid: 0x1122_3344_5566_7788,
        message: StoredMessage {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hi"),
            qos: 1,
            retain: true,
            properties: Bytes::new(),
            expires_at_ms: None,
        },
    }
}

#[test]
fn golden_replica_values_decode() {
    let dir = tempfile::tempdir().unwrap();
    write_raw(dir.path(), &layout());
    let store = open(dir.path());
    assert_eq!(
        store.load_replica(CLIENT).unwrap(),
        Some(Replica {
            owner: 3,
            max_seq: 0x0102_0304_0506_0708,
            outgoing: vec![(42, expected_outgoing())],
            incoming_qos2: vec![7],
        })
    );
    assert_eq!(
        store.load_replica_clients().unwrap(),
        [(CLIENT.to_owned(), expected_meta())]
    );
}

#[test]
fn encoder_writes_the_golden_bytes_of_a_replica() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ops = vec![
        WriteOp::PutReplicaMeta {
            client_id: CLIENT.into(),
            meta: expected_meta(),
        },
        WriteOp::PutReplicaOutgoing {
            client_id: CLIENT.into(),
            seq: 42,
            record: expected_outgoing(),
        },
        WriteOp::PutReplicaIncoming {
            client_id: CLIENT.into(),
            packet_id: 7,
        },
    ];
    submit_durable(&store.writer(), ops).unwrap();
    store.close().unwrap();

    let db = sled_open(dir.path());
    for (tree, key, golden) in layout() {
        let tree = db.open_tree(tree).unwrap();
        let value = tree.get(&key).unwrap().expect("key present");
        assert_eq!(&*value, golden.as_slice());
        assert_eq!(tree.len(), 1);
    }
}

/// Loads the replica trees with both readers; the error of the first that
/// fails.
fn load(store: &Store) -> Result<(), Error> {
    store.load_replica(CLIENT)?;
    store.load_replica_clients().map(drop)
}

/// Writes the golden replica with `tree`'s value at `key` replaced by
/// `value` and checks that loading it fails naming `tree`, `key` and
/// `reason`.
fn assert_rejected(tree: &str, key: Vec<u8>, value: Vec<u8>, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut entries: Vec<_> = layout().into_iter().filter(|(t, ..)| *t != tree).collect();
    entries.push((tree, key.clone(), value));
    write_raw(dir.path(), &entries);
    let store = open(dir.path());
    let err = load(&store).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Corrupt { .. }), "{tree}: {err:?}");
    assert!(message.contains(&format!("tree `{tree}`")), "{message}");
    assert!(
        message.contains(&key.escape_ascii().to_string()),
        "{message}"
    );
    assert!(message.contains(reason), "{tree}: {message}");
}

#[test]
fn damaged_golden_replica_meta_is_rejected_naming_the_tree() {
    let cases = [
        ("replica_meta.truncated.bin", "truncated: max_seq"),
        ("replica_meta.trailing-byte.bin", "1 trailing bytes"),
        (
            "replica_meta.unknown-version.bin",
            "unknown format version 2 (this build reads version 1)",
        ),
    ];
    for (file, reason) in cases {
        let key = CLIENT.as_bytes().to_vec();
        assert_rejected("replica_meta", key, golden(file), reason);
    }
    // read by `load_replica_clients` too, which names the key it found
    let dir = tempfile::tempdir().unwrap();
    let damaged = golden("replica_meta.truncated.bin");
    write_raw(dir.path(), &[("replica_meta", b"other".to_vec(), damaged)]);
    let err = open(dir.path()).load_replica_clients().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("tree `replica_meta`, key `other`"),
        "{err}"
    );
}

#[test]
fn damaged_replica_records_are_rejected_naming_the_tree() {
    let seq42 = client_key(&42u64.to_be_bytes());
    let id7 = client_key(&7u16.to_be_bytes());
    let cases = [
        (
            "replica_outgoing",
            seq42.clone(),
            golden_of(2, "outgoing.truncated.bin"),
            "truncated: uid",
        ),
        (
            "replica_outgoing",
            seq42,
            golden_of(2, "outgoing.unknown-version.bin"),
            "unknown format version 3",
        ),
        (
            "replica_outgoing",
            client_key(&[0, 42]),
            golden_of(2, "outgoing.bin"),
            "8-byte suffix",
        ),
        (
            "replica_incoming",
            id7,
            golden("incoming_qos2.empty.bin"),
            "empty value",
        ),
        (
            "replica_incoming",
            client_key(&[7]),
            golden("incoming_qos2.bin"),
            "2-byte suffix",
        ),
    ];
    for (tree, key, value, reason) in cases {
        assert_rejected(tree, key, value, reason);
    }
}

#[test]
fn truncations_of_the_golden_replica_meta_are_rejected() {
    let value = golden("replica_meta.bin");
    for len in [0, 1, 8, 9, value.len() - 1] {
        let key = CLIENT.as_bytes().to_vec();
        let reason = if len == 0 { "empty value" } else { "truncated" };
        assert_rejected("replica_meta", key, value[..len].to_vec(), reason);
    }
}

/// The copy in `v1/forward.bin`: opaque bytes to the store.
const FORWARD_COPY: &[u8] = b"\x12\x03a/b\x1a\x02hi";

/// Key in `replica_forwards`: `origin node seq`, each u64 big-endian.
fn replica_forward_key(origin: u64, node: u64, seq: u64) -> Vec<u8> {
    [origin.to_be_bytes(), node.to_be_bytes(), seq.to_be_bytes()].concat()
}

#[test]
fn golden_replica_forward_decodes_at_its_big_endian_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = replica_forward_key(3, 2, 0x0102_0304_0506_0708);
    write_raw(
        dir.path(),
        &[("replica_forwards", key, golden("forward.bin"))],
    );
    let store = open(dir.path());
    assert_eq!(
        store.load_replica_forwards(3).unwrap(),
        [(2, 0x0102_0304_0506_0708, Bytes::from_static(FORWARD_COPY))]
    );
    assert_eq!(store.load_replica_forward_origins().unwrap(), [3]);
    // the store's own forwards are another tree
    assert!(store.load_forwards().unwrap().is_empty());
}

#[test]
fn encoder_writes_the_golden_bytes_of_a_replica_forward_at_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let op = WriteOp::PutReplicaForward {
        origin: 3,
        node: 2,
        seq: 9,
        copy: Bytes::from_static(FORWARD_COPY),
    };
    submit_durable(&store.writer(), vec![op]).unwrap();
    store.close().unwrap();

    let db = sled_open(dir.path());
    let tree = db.open_tree("replica_forwards").unwrap();
    let (key, value) = tree.first().unwrap().expect("one key");
    assert_eq!(&*key, replica_forward_key(3, 2, 9).as_slice());
    assert_eq!(&*value, golden("forward.bin").as_slice());
    assert_eq!(tree.len(), 1);
    assert!(db.open_tree("forwards").unwrap().is_empty());
}

#[test]
fn damaged_replica_forwards_are_rejected_naming_the_tree() {
    let origin3 = |rest: &[u8]| [&3u64.to_be_bytes()[..], rest].concat();
    let cases = [
        (
            replica_forward_key(3, 2, 9),
            golden("forward.trailing-byte.bin"),
            "1 trailing bytes",
        ),
        (replica_forward_key(3, 2, 9), Vec::new(), "empty value"),
        (
            origin3(&9u64.to_be_bytes()),
            golden("forward.bin"),
            "24-byte origin, node and seq",
        ),
        (
            origin3(&[0; 17]),
            golden("forward.bin"),
            "24-byte origin, node and seq",
        ),
    ];
    for (key, value, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_raw(dir.path(), &[("replica_forwards", key.clone(), value)]);
        let store = open(dir.path());
        let mut errors = vec![store.load_replica_forwards(3).unwrap_err()];
        if reason.contains("24-byte") {
            errors.push(store.load_replica_forward_origins().unwrap_err());
        }
        for err in errors {
            let message = err.to_string();
            assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
            assert!(message.contains("tree `replica_forwards`"), "{message}");
            assert!(
                message.contains(&key.escape_ascii().to_string()),
                "{message}"
            );
            assert!(message.contains(reason), "{message}");
        }
    }
}
