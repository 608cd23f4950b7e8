//! Helpers shared by the storage integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use std::{path::Path, sync::mpsc, time::Duration};

use bytes::Bytes;
use storage::{
    OutgoingRecord, SessionRecord, Store, StoreConfig, StoredMessage, SubscriptionRecord, WriteOp,
    Writer,
};

/// A config with a small cache and sled's background flush off, so that only
/// durable submits flush (tests that count flushes rely on it).
pub fn config(path: &Path) -> StoreConfig {
    StoreConfig {
        path: path.to_owned(),
        cache_capacity_bytes: 8 * 1024 * 1024,
        flush_every_ms: None,
    }
}

pub fn open(path: &Path) -> Store {
    Store::open(&config(path)).expect("open store")
}

/// Opens `path` with sled directly, as an older build or another tool
/// would. sled's background threads release its file lock a little after
/// the last handle of a closed store is dropped, so the lock is waited for
/// (at most 5 s, as `Store::open` does) instead of failing the test.
pub fn sled_open(path: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.expect("open sled"),
        }
    }
}

/// Writes raw `(tree, key, value)`s with sled directly, as an older build
/// (or a damaged disk) would have.
pub fn write_raw(path: &Path, entries: &[(&str, Vec<u8>, Vec<u8>)]) {
    let db = sled_open(path);
    for (tree, key, value) in entries {
        db.open_tree(tree)
            .unwrap()
            .insert(key.as_slice(), value.as_slice())
            .unwrap();
    }
    db.flush().unwrap();
}

/// Submits `ops` with a callback and waits for it.
pub fn submit_durable(writer: &Writer, ops: Vec<WriteOp>) -> storage::Result<()> {
    let (tx, rx) = mpsc::channel();
    writer.submit(
        ops,
        Some(Box::new(move |result| {
            let _ = tx.send(result);
        })),
    );
    rx.recv_timeout(Duration::from_secs(30))
        .expect("durability callback within 30 s")
}

pub fn session(expiry: u32) -> SessionRecord {
    SessionRecord {
        protocol_level: 5,
        session_expiry_interval: expiry,
        disconnected_at_ms: None,
    }
}

pub fn subscription(filter: &str) -> SubscriptionRecord {
    SubscriptionRecord {
        filter: filter.to_owned(),
        qos: 1,
        no_local: false,
        retain_as_published: true,
        retain_handling: 0,
        subscription_identifier: Some(7),
    }
}

pub fn message(topic: &str, payload: &'static [u8]) -> StoredMessage {
    StoredMessage {
        topic: topic.to_owned(),
        payload: Bytes::from_static(payload),
        qos: 1,
        retain: false,
        properties: Bytes::new(),
        expires_at_ms: None,
    }
}

pub fn outgoing(topic: &str, payload: &'static [u8]) -> OutgoingRecord {
    OutgoingRecord {
        released: false,
        uid: 0,
        message: message(topic, payload),
    }
}

/// A golden file of `tests/golden/v1`.
pub fn golden(name: &str) -> Vec<u8> {
    golden_of(1, name)
}

/// A golden file of `tests/golden/v{version}`. The directory is the run-time
/// `CARGO_MANIFEST_DIR` (cargo test sets it): the one baked in at build time
/// is stale when a cached build of an unchanged crate is reused from another
/// checkout path.
pub fn golden_of(version: u8, name: &str) -> Vec<u8> {
    let path = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join(format!("tests/golden/v{version}"))
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
