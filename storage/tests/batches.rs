//! Outgoing messages in batches (format version 3, `src/batches.rs`) over
//! real sled files: what the trees hold after puts, acknowledgements,
//! Released states and session deletes, and a store of per-message records
//! written before batches, read and then changed by this build.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::*;
use storage::{OutgoingRecord, Store, WriteOp, MAX_BATCH_BYTES};

fn record(seq: u64) -> OutgoingRecord {
    let mut record = outgoing("q/t", b"");
    record.uid = seq + 1000;
    record.message.payload = Bytes::from(seq.to_be_bytes().to_vec());
    record
}

fn put(client_id: &str, seq: u64, record: OutgoingRecord) -> WriteOp {
    WriteOp::PutOutgoing {
        client_id: client_id.into(),
        seq,
        record,
    }
}

fn ack(client_id: &str, seq: u64) -> WriteOp {
    WriteOp::DeleteOutgoing {
        client_id: client_id.into(),
        seq,
    }
}

/// The raw keys and values of a tree, read with sled after the store closed.
fn raw_tree(path: &Path, tree: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = sled_open(path);
    let tree = db.open_tree(tree).unwrap();
    tree.iter()
        .map(|e| e.unwrap())
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn batch_key(client_id: &str, id: u64, kind: u8) -> Vec<u8> {
    let mut key = format!("{client_id}\0").into_bytes();
    key.extend_from_slice(&id.to_be_bytes());
    key.push(kind);
    key
}

fn seqs(store: &Store, client_id: &str) -> Vec<u64> {
    let loaded = store.load_outgoing(client_id).unwrap();
    for (seq, r) in &loaded {
        assert_eq!(r.message.payload[..], seq.to_be_bytes(), "seq {seq}");
    }
    loaded.into_iter().map(|(seq, _)| seq).collect()
}

#[test]
fn the_puts_of_one_group_for_one_client_are_one_sled_value() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut committer) = Store::open_with_committer(&config(dir.path())).unwrap();
    let writer = store.writer();
    // one request per message, as sessions submit them, plus another client
    for seq in 0..50 {
        writer.submit(vec![put("c", seq, record(seq))], None);
        writer.submit(vec![put("d", seq, record(seq))], None);
    }
    assert_eq!(committer.step(), 100);
    assert_eq!(seqs(&store, "c"), (0..50).collect::<Vec<_>>());
    store.close().unwrap();
    drop(committer);
    let raw = raw_tree(dir.path(), "outgoing_batches");
    let keys: Vec<_> = raw.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, [batch_key("c", 0, 0), batch_key("d", 0, 0)]);
    assert!(raw_tree(dir.path(), "outgoing").is_empty());
}

#[test]
fn acks_inside_a_batch_survive_a_reopen_and_the_last_one_removes_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ops = (0..10).map(|seq| put("c", seq, record(seq))).collect();
    submit_durable(&store.writer(), ops).unwrap();
    submit_durable(&store.writer(), vec![ack("c", 3), ack("c", 0)]).unwrap();
    store.close().unwrap();

    let raw = raw_tree(dir.path(), "outgoing_batches");
    assert_eq!(raw.len(), 2);
    // acks: version 3, 2-byte bitmap with entries 0 and 3 set
    assert_eq!(raw[1].0, batch_key("c", 0, 1));
    assert_eq!(raw[1].1, [3, 0, 0, 0, 2, 0b1001, 0]);

    let store = open(dir.path());
    assert_eq!(seqs(&store, "c"), [1, 2, 4, 5, 6, 7, 8, 9]);
    // the reopened writer indexes the client from disk
    let rest = [1, 2, 4, 5, 6, 7, 8, 9].map(|seq| ack("c", seq)).to_vec();
    submit_durable(&store.writer(), rest).unwrap();
    assert!(seqs(&store, "c").is_empty());
    store.close().unwrap();
    assert!(raw_tree(dir.path(), "outgoing_batches").is_empty());
}

#[test]
fn a_released_state_overrides_the_batched_copy_qos_2() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ops = (0..4).map(|seq| put("c", seq, record(seq))).collect();
    submit_durable(&store.writer(), ops).unwrap();
    let mut released = record(2);
    released.released = true;
    submit_durable(&store.writer(), vec![put("c", 2, released.clone())]).unwrap();
    let loaded = store.load_outgoing("c").unwrap();
    assert_eq!(loaded.len(), 4);
    assert_eq!(loaded[2], (2, released.clone()));
    store.close().unwrap();

    let store = open(dir.path());
    assert_eq!(store.load_outgoing("c").unwrap()[2], (2, released));
    // PUBCOMP: the Released copy goes, its shadowed entry stays gone
    submit_durable(&store.writer(), vec![ack("c", 2)]).unwrap();
    assert_eq!(seqs(&store, "c"), [0, 1, 3]);
    store.close().unwrap();
    let keys: Vec<_> = raw_tree(dir.path(), "outgoing_batches")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // the first batch and its acks; the Released copy's batch is gone
    assert_eq!(keys, [batch_key("c", 0, 0), batch_key("c", 0, 1)]);
}

#[test]
fn delete_session_removes_batches_and_acks_and_later_puts_start_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let writer = store.writer();
    let ops = (0..6).map(|seq| put("c", seq, record(seq))).collect();
    submit_durable(&writer, ops).unwrap();
    submit_durable(&writer, vec![ack("c", 1), put("c", 9, record(9))]).unwrap();
    submit_durable(&writer, vec![put("cd", 1, record(1))]).unwrap();
    submit_durable(
        &writer,
        vec![
            put("c", 10, record(10)),
            WriteOp::DeleteSession {
                client_id: "c".into(),
            },
            put("c", 11, record(11)),
        ],
    )
    .unwrap();
    assert_eq!(seqs(&store, "c"), [11]);
    assert_eq!(seqs(&store, "cd"), [1]);
    submit_durable(
        &writer,
        vec![WriteOp::DeleteSession {
            client_id: "c".into(),
        }],
    )
    .unwrap();
    store.close().unwrap();
    let keys: Vec<_> = raw_tree(dir.path(), "outgoing_batches")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, [batch_key("cd", 0, 0)]);
}

#[test]
fn a_large_group_is_cut_into_batches_under_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ops = (0..400)
        .map(|seq| {
            let mut r = record(seq);
            let mut payload = seq.to_be_bytes().to_vec();
            payload.resize(200, b'x');
            r.message.payload = Bytes::from(payload);
            put("c", seq, r)
        })
        .collect();
    submit_durable(&store.writer(), ops).unwrap();
    assert_eq!(store.load_outgoing("c").unwrap().len(), 400);
    store.close().unwrap();
    let raw = raw_tree(dir.path(), "outgoing_batches");
    assert!(raw.len() >= 400 * 220 / MAX_BATCH_BYTES, "{}", raw.len());
    assert!(raw.iter().all(|(_, v)| v.len() <= MAX_BATCH_BYTES));
}

/// An `outgoing` value of format version 2, encoded by hand as a build
/// from before batches wrote it.
fn legacy_v2(r: &OutgoingRecord) -> Vec<u8> {
    let m = &r.message;
    let bytes = |v: &mut Vec<u8>, b: &[u8]| {
        v.extend_from_slice(&(b.len() as u32).to_be_bytes());
        v.extend_from_slice(b);
    };
    let mut v = vec![2, u8::from(r.released)];
    v.extend_from_slice(&r.uid.to_be_bytes());
    bytes(&mut v, m.topic.as_bytes());
    bytes(&mut v, &m.payload);
    v.push(m.qos);
    v.push(u8::from(m.retain));
    bytes(&mut v, &m.properties);
    match m.expires_at_ms {
        Some(t) => {
            v.push(1);
            v.extend_from_slice(&t.to_be_bytes());
        }
        None => v.push(0),
    }
    v
}

fn legacy_key(client_id: &str, seq: u64) -> Vec<u8> {
    let mut key = format!("{client_id}\0").into_bytes();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

#[test]
fn a_store_of_per_message_records_restores_every_message_and_migrates_as_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    {
        // as a build before batches left it: one key per message
        let db = sled_open(dir.path());
        let tree = db.open_tree("outgoing").unwrap();
        for seq in 0..1000 {
            tree.insert(legacy_key("old", seq), legacy_v2(&record(seq)))
                .unwrap();
        }
        tree.insert(legacy_key("old", 1000), golden("outgoing.bin"))
            .unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    let loaded = store.load_outgoing("old").unwrap();
    assert_eq!(loaded.len(), 1001);
    for (seq, r) in &loaded[..1000] {
        assert_eq!(*r, record(*seq));
    }
    // format version 1 reads with uid 0
    assert_eq!(loaded[1000].1.uid, 0);

    // acknowledge some, release one, queue new ones, in one group
    let mut released = record(7);
    released.released = true;
    let mut ops: Vec<_> = (0..500).map(|seq| ack("old", seq)).collect();
    ops.push(ack("old", 1000));
    ops.push(put("old", 700, released.clone()));
    ops.extend((1001..1010).map(|seq| put("old", seq, record(seq))));
    submit_durable(&store.writer(), ops).unwrap();
    store.close().unwrap();

    let store = open(dir.path());
    let loaded = store.load_outgoing("old").unwrap();
    let expected: Vec<u64> = (500..1000).chain(1001..1010).collect();
    assert_eq!(loaded.iter().map(|(s, _)| *s).collect::<Vec<_>>(), expected);
    assert_eq!(loaded[200], (700, released));
    store.close().unwrap();
    // acknowledged and rewritten records left `outgoing`
    assert_eq!(raw_tree(dir.path(), "outgoing").len(), 499);
}

#[test]
fn delete_session_after_a_reopen_keeps_batch_ids_counting_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for seq in 0..3 {
        submit_durable(&store.writer(), vec![put("c", seq, record(seq))]).unwrap();
    }
    store.close().unwrap();
    // the new writer has not indexed "c": the delete finds its last batch id
    let store = open(dir.path());
    let delete = WriteOp::DeleteSession {
        client_id: "c".into(),
    };
    submit_durable(&store.writer(), vec![delete, put("c", 7, record(7))]).unwrap();
    assert_eq!(seqs(&store, "c"), [7]);
    store.close().unwrap();
    let keys: Vec<_> = raw_tree(dir.path(), "outgoing_batches")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, [batch_key("c", 3, 0)]);
}
