//! Golden values of every on-disk format version (`tests/golden/v1/`, `v2/`
//! and `v3/`, made by `make.py` independently of the encoder): each must decode
//! to the expected record (a value of an older version is how a store written
//! before an upgrade reads), the encoder must still write exactly the bytes
//! of the version it writes, and the damaged ones must be rejected with an
//! error naming the tree and key. The replica trees' values are checked in
//! `replica_golden.rs`, the raft trees' in `raft_golden.rs`.

mod common;

use bytes::Bytes;
use common::*;
use storage::{
    Error, OutgoingRecord, RouteRecord, SessionRecord, Store, StoredMessage, SubscriptionRecord,
    WriteOp,
};

const CLIENT: &str = "dev-1";

fn client_key(suffix: &[u8]) -> Vec<u8> {
    let mut key = format!("{CLIENT}\0").into_bytes();
    key.extend_from_slice(suffix);
    key
}

/// (tree, key, golden file) for each record type.
fn layout() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    vec![
        ("sessions", CLIENT.as_bytes().to_vec(), "session"),
        ("subscriptions", client_key(b"sport/+/#"), "subscription"),
        ("outgoing", client_key(&42u64.to_be_bytes()), "outgoing"),
        (
            "incoming_qos2",
            client_key(&7u16.to_be_bytes()),
            "incoming_qos2",
        ),
        ("retained", b"home/temp".to_vec(), "retained"),
        ("route_queue", route_key(&9u64.to_be_bytes()), "route_queue"),
        ("hub_routes", b"r".to_vec(), "hub_route"),
        ("forwards", forward_key(2, 9), "forward"),
    ]
}

const ROUTE: &str = "to-rest";

/// The copy in `v1/forward.bin`: opaque bytes to the store.
const FORWARD_COPY: &[u8] = b"\x12\x03a/b\x1a\x02hi";

fn forward_key(node: u64, seq: u64) -> Vec<u8> {
    [node.to_be_bytes(), seq.to_be_bytes()].concat()
}

fn route_key(suffix: &[u8]) -> Vec<u8> {
    let mut key = format!("{ROUTE}\0").into_bytes();
    key.extend_from_slice(suffix);
    key
}

fn expected_route_record() -> RouteRecord {
    RouteRecord {
        uid: 0x0102_0304_0506_0708,
        client_id: "sensor-7".into(),
        received_at_ms: 1_700_000_123_456,
        message: StoredMessage {
            topic: "plant/a/temp".into(),
            payload: Bytes::from_static(b"{\"t\":21}"),
            qos: 1,
            retain: false,
            properties: Bytes::new(),
            expires_at_ms: None,
        },
    }
}

fn expected_session() -> SessionRecord {
    SessionRecord {
        protocol_level: 5,
        session_expiry_interval: 3600,
        disconnected_at_ms: Some(1_700_000_000_000),
    }
}

fn expected_subscription() -> SubscriptionRecord {
    SubscriptionRecord {
        filter: "sport/+/#".into(),
        qos: 2,
        no_local: true,
        retain_as_published: false,
        retain_handling: 1,
        subscription_identifier: Some(268_435_455),
    }
}

/// `v1/outgoing.bin`: format version 1 has no uid, it reads as 0.
fn expected_outgoing() -> OutgoingRecord {
    OutgoingRecord {
        released: true,
        uid: 0,
        message: StoredMessage {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hi"),
            qos: 2,
            retain: false,
            properties: Bytes::from_static(&[0x01, 0x01]),
            expires_at_ms: Some(1_700_000_060_000),
        },
    }
}

/// `v2/outgoing.bin`.
fn expected_outgoing_v2() -> OutgoingRecord {
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

fn expected_retained() -> StoredMessage {
    StoredMessage {
        topic: "home/temp".into(),
        payload: Bytes::from_static(b"21.5"),
        qos: 1,
        retain: true,
        properties: Bytes::new(),
        expires_at_ms: None,
    }
}

#[test]
fn golden_v1_values_decode() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<_> = layout()
        .into_iter()
        .map(|(tree, key, name)| (tree, key, golden(&format!("{name}.bin"))))
        .collect();
    write_raw(dir.path(), &entries);

    let store = open(dir.path());
    assert_eq!(
        store.load_sessions().unwrap(),
        [(CLIENT.to_owned(), expected_session())]
    );
    assert_eq!(
        store.load_subscriptions(CLIENT).unwrap(),
        [expected_subscription()]
    );
    assert_eq!(
        store.load_outgoing(CLIENT).unwrap(),
        [(42, expected_outgoing())]
    );
    assert_eq!(store.load_incoming_qos2(CLIENT).unwrap(), [7]);
    assert_eq!(store.load_retained().unwrap(), [expected_retained()]);
    assert_eq!(
        store.load_route_queue(ROUTE).unwrap(),
        [(9, expected_route_record())]
    );
    assert_eq!(
        store.load_hub_routes().unwrap(),
        [("r".to_owned(), HUB_ROUTE.to_owned())]
    );
    assert_eq!(
        store.load_forwards().unwrap(),
        [(2, 9, Bytes::from_static(FORWARD_COPY))]
    );
}

const HUB_ROUTE: &str = r#"{"name":"r","topic":"t","type":"rest","url":"http://h/"}"#;

/// The golden file the encoder's value for `name` must equal: the version
/// this build writes for it.
fn current_golden(name: &str) -> Vec<u8> {
    match name {
        "outgoing" => golden_of(2, "outgoing.bin"),
        _ => golden(&format!("{name}.bin")),
    }
}

#[test]
fn golden_v2_outgoing_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let key = client_key(&43u64.to_be_bytes());
    write_raw(
        dir.path(),
        &[
            ("outgoing", key, golden_of(2, "outgoing.bin")),
            // a store written before the upgrade holds version 1 values
            // next to version 2 ones: both read
            (
                "outgoing",
                client_key(&42u64.to_be_bytes()),
                golden("outgoing.bin"),
            ),
        ],
    );
    let store = open(dir.path());
    assert_eq!(
        store.load_outgoing(CLIENT).unwrap(),
        [(42, expected_outgoing()), (43, expected_outgoing_v2())]
    );
}

#[test]
fn encoder_writes_the_golden_bytes_of_the_current_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ops = vec![
        WriteOp::PutSession {
            client_id: CLIENT.into(),
            record: expected_session(),
        },
        WriteOp::PutSubscription {
            client_id: CLIENT.into(),
            record: expected_subscription(),
        },
        WriteOp::PutOutgoing {
            client_id: CLIENT.into(),
            seq: 42,
            record: expected_outgoing_v2(),
        },
        WriteOp::PutIncomingQos2 {
            client_id: CLIENT.into(),
            packet_id: 7,
        },
        WriteOp::PutRetained {
            message: expected_retained(),
        },
        WriteOp::PutRouteMessage {
            route: ROUTE.into(),
            seq: 9,
            record: expected_route_record(),
        },
        WriteOp::PutHubRoute {
            route: "r".into(),
            definition: HUB_ROUTE.into(),
        },
        WriteOp::PutForward {
            node: 2,
            seq: 9,
            copy: Bytes::from_static(FORWARD_COPY),
        },
    ];
    submit_durable(&store.writer(), ops).unwrap();
    store.close().unwrap();

    let db = sled_open(dir.path());
    // Outgoing messages go to batches (format version 3): this one is a
    // batch of one, whose record is the version 2 value after its version
    // byte.
    let batch = db
        .open_tree("outgoing_batches")
        .unwrap()
        .get(batch_key(0, 0))
        .unwrap()
        .expect("outgoing_batches: key missing");
    let mut expected = vec![3, 0, 0, 0, 1];
    expected.extend_from_slice(&42u64.to_be_bytes());
    expected.extend_from_slice(&golden_of(2, "outgoing.bin")[1..]);
    assert_eq!(&*batch, expected.as_slice());
    for (tree, key, name) in layout() {
        if tree == "outgoing" {
            assert!(db.open_tree(tree).unwrap().is_empty(), "{tree}");
            continue;
        }
        let value = db.open_tree(tree).unwrap().get(&key).unwrap();
        let value = value.unwrap_or_else(|| panic!("{tree}: key missing"));
        assert_eq!(&*value, current_golden(name).as_slice(), "{tree}");
    }
}

/// Loads the tree `tree` the way the broker would.
fn load(store: &Store, tree: &str) -> Result<(), Error> {
    match tree {
        "sessions" => store.load_sessions().map(drop),
        "subscriptions" => store.load_subscriptions(CLIENT).map(drop),
        "outgoing" | "outgoing_batches" => store.load_outgoing(CLIENT).map(drop),
        "incoming_qos2" => store.load_incoming_qos2(CLIENT).map(drop),
        "retained" => store.load_retained().map(drop),
        "route_queue" => store.load_route_queue(ROUTE).map(drop),
        "hub_routes" => store.load_hub_routes().map(drop),
        "forwards" => store.load_forwards().map(drop),
        other => panic!("no loader for {other}"),
    }
}

fn assert_rejected(tree: &str, key: &[u8], value: Vec<u8>, reason: &str) {
    assert_rejected_beside(&[], tree, key, value, reason)
}

/// As `assert_rejected`, with `others` (valid values) in the store too.
fn assert_rejected_beside(
    others: &[(&str, Vec<u8>, Vec<u8>)],
    tree: &str,
    key: &[u8],
    value: Vec<u8>,
    reason: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = others.to_vec();
    entries.push((tree, key.to_vec(), value));
    write_raw(dir.path(), &entries);
    let store = open(dir.path());
    let err = load(&store, tree).unwrap_err();
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
fn damaged_golden_v1_values_are_rejected_naming_the_tree() {
    let cases = [
        ("session.unknown-version.bin", "unknown format version 2"),
        ("subscription.bad-bool.bin", "no_local: invalid bool byte 2"),
        ("outgoing.truncated.bin", "truncated: payload"),
        ("retained.trailing-byte.bin", "1 trailing bytes"),
        ("incoming_qos2.empty.bin", "empty value"),
        ("route_queue.truncated.bin", "truncated: client_id"),
        ("forward.trailing-byte.bin", "1 trailing bytes"),
    ];
    for (file, reason) in cases {
        let (tree, key, _) = layout()
            .into_iter()
            .find(|(_, _, name)| file.starts_with(&format!("{name}.")))
            .unwrap();
        assert_rejected(tree, &key, golden(file), reason);
    }
}

#[test]
fn damaged_golden_v2_values_are_rejected_naming_the_tree() {
    let key = client_key(&42u64.to_be_bytes());
    let cases = [
        ("outgoing.truncated.bin", "truncated: uid"),
        (
            "outgoing.unknown-version.bin",
            "unknown format version 3 (this build reads versions 1 to 2)",
        ),
    ];
    for (file, reason) in cases {
        assert_rejected("outgoing", &key, golden_of(2, file), reason);
    }
}

#[test]
fn truncations_of_every_golden_value_are_rejected() {
    // Every length is covered by the decoder's unit test; here the store path
    // is checked for the first, middle and last ones. One store for all cases:
    // each value is written, loaded, then deleted.
    let dir = tempfile::tempdir().unwrap();
    for (tree, key, name) in layout() {
        let value = current_golden(name);
        let mut lengths = vec![0, 1, value.len() / 2, value.len() - 1];
        lengths.retain(|&len| len < value.len());
        lengths.sort_unstable();
        lengths.dedup();
        for len in lengths {
            {
                let db = sled_open(dir.path());
                db.open_tree(tree)
                    .unwrap()
                    .insert(key.as_slice(), &value[..len])
                    .unwrap();
                db.flush().unwrap();
            }
            let store = open(dir.path());
            let err = load(&store, tree).unwrap_err();
            assert!(err.to_string().contains(&format!("tree `{tree}`")), "{err}");
            store.close().unwrap();
            sled_open(dir.path())
                .open_tree(tree)
                .unwrap()
                .clear()
                .unwrap();
        }
    }
}

#[test]
fn a_key_of_the_wrong_length_is_rejected_naming_the_tree() {
    let value = golden("outgoing.bin");
    assert_rejected("outgoing", &client_key(&[0, 42]), value, "8-byte suffix");
    let value = golden("route_queue.bin");
    assert_rejected("route_queue", &route_key(&[9]), value, "8-byte suffix");
    let value = golden("forward.bin");
    assert_rejected("forwards", &[0, 2, 9], value, "16-byte node and seq");
    let mut value = golden("subscription.bin");
    value[5] = b'X'; // filter in the value no longer matches the key
    assert_rejected(
        "subscriptions",
        &client_key(b"sport/+/#"),
        value,
        "does not match the key",
    );
}

/// Key in `outgoing_batches` of `CLIENT`'s batch `id`: kind 0 messages, 1
/// acks.
fn batch_key(id: u64, kind: u8) -> Vec<u8> {
    let mut key = id.to_be_bytes().to_vec();
    key.push(kind);
    client_key(&key)
}

/// The entries of `v3/outgoing_batch.bin`: seqs 42, 43 and 50.
fn expected_batch() -> Vec<(u64, OutgoingRecord)> {
    vec![
        (42, expected_outgoing_v2()),
        (
            43,
            OutgoingRecord {
                released: true,
                uid: 0x0102_0304_0506_0708,
                message: StoredMessage {
                    topic: "a/b".into(),
                    payload: Bytes::new(),
                    qos: 2,
                    retain: false,
                    properties: Bytes::from_static(&[0x01, 0x01]),
                    expires_at_ms: Some(1_700_000_060_000),
                },
            },
        ),
        (
            50,
            OutgoingRecord {
                released: false,
                uid: 0,
                message: StoredMessage {
                    topic: "c".into(),
                    payload: Bytes::from_static(b"\x00\xff"),
                    qos: 1,
                    retain: false,
                    properties: Bytes::new(),
                    expires_at_ms: None,
                },
            },
        ),
    ]
}

#[test]
fn golden_v3_batches_decode_beside_per_message_records() {
    let dir = tempfile::tempdir().unwrap();
    write_raw(
        dir.path(),
        &[
            // records of versions 1 and 2 written before batches
            (
                "outgoing",
                client_key(&40u64.to_be_bytes()),
                golden("outgoing.bin"),
            ),
            (
                "outgoing",
                client_key(&41u64.to_be_bytes()),
                golden_of(2, "outgoing.bin"),
            ),
            (
                "outgoing_batches",
                batch_key(0, 0),
                golden_of(3, "outgoing_batch.bin"),
            ),
        ],
    );
    let store = open(dir.path());
    let mut expected = vec![(40, expected_outgoing()), (41, expected_outgoing_v2())];
    expected.extend(expected_batch());
    assert_eq!(store.load_outgoing(CLIENT).unwrap(), expected);
    store.close().unwrap();

    // with its acks: seq 43 acknowledged
    write_raw(
        dir.path(),
        &[(
            "outgoing_batches",
            batch_key(0, 1),
            golden_of(3, "outgoing_acks.bin"),
        )],
    );
    let store = open(dir.path());
    expected.remove(3);
    assert_eq!(store.load_outgoing(CLIENT).unwrap(), expected);
}

#[test]
fn encoder_writes_the_golden_bytes_of_a_batch_and_its_acks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ops = expected_batch()
        .into_iter()
        .map(|(seq, record)| WriteOp::PutOutgoing {
            client_id: CLIENT.into(),
            seq,
            record,
        })
        .collect();
    submit_durable(&store.writer(), ops).unwrap();
    let ack = WriteOp::DeleteOutgoing {
        client_id: CLIENT.into(),
        seq: 43,
    };
    submit_durable(&store.writer(), vec![ack]).unwrap();
    store.close().unwrap();

    let db = sled_open(dir.path());
    let tree = db.open_tree("outgoing_batches").unwrap();
    let value = |key| tree.get(key).unwrap().expect("key present").to_vec();
    assert_eq!(value(batch_key(0, 0)), golden_of(3, "outgoing_batch.bin"));
    assert_eq!(value(batch_key(0, 1)), golden_of(3, "outgoing_acks.bin"));
    assert_eq!(tree.len(), 2);
}

#[test]
fn damaged_golden_v3_values_are_rejected_naming_the_tree() {
    let batch = [(
        "outgoing_batches",
        batch_key(0, 0),
        golden_of(3, "outgoing_batch.bin"),
    )];
    let cases: [(&[_], _, _, _); 7] = [
        (
            &[],
            batch_key(0, 0),
            "outgoing_batch.truncated.bin",
            "truncated: seqs",
        ),
        (
            &[],
            batch_key(0, 0),
            "outgoing_batch.unordered.bin",
            "seq 42: seqs are not strictly ascending",
        ),
        (
            &[],
            batch_key(0, 0),
            "outgoing_batch.unknown-version.bin",
            "unknown format version 4 (this build reads version 3 of outgoing batches)",
        ),
        (
            &batch,
            batch_key(0, 1),
            "outgoing_acks.wrong-length.bin",
            "acked: 2 bytes for a batch of 3 entries, expected 1",
        ),
        (
            &batch,
            batch_key(0, 1),
            "outgoing_acks.bit-past-end.bin",
            "acked: bits set past the batch's 3 entries",
        ),
        // acks whose batch is missing
        (
            &[],
            batch_key(0, 1),
            "outgoing_acks.bin",
            "acks without their batch",
        ),
        // a key of the wrong kind
        (
            &[],
            batch_key(0, 2),
            "outgoing_batch.bin",
            "unknown batch record kind 2",
        ),
    ];
    for (others, key, file, reason) in cases {
        assert_rejected_beside(others, "outgoing_batches", &key, golden_of(3, file), reason);
    }
}
