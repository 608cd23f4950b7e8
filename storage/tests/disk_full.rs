//! Disk full: on a small tmpfs filled up by writes, the write error reaches
//! every callback of the failing group, the writer keeps going, a later group
//! succeeds once space is freed, and everything acknowledged before is still
//! there after a reopen. Needs root to mount; skipped with a message otherwise.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
};

use bytes::Bytes;
use common::{config, message};
use storage::{Error, GroupCommitter, OutgoingRecord, Store, WriteOp};

/// Unmounts on drop, so a failing assertion does not leave the mount behind.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed ({status}); it needs root"));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

const GROUP: usize = 8;

fn put(seq: u64) -> WriteOp {
    let mut record = OutgoingRecord {
        released: false,
        uid: seq,
        message: message("full/disk", b""),
    };
    record.message.payload = Bytes::from(vec![(seq % 251) as u8; 4096]);
    WriteOp::PutOutgoing {
        client_id: "c".into(),
        seq,
        record,
    }
}

/// Submits `GROUP` durable requests starting at `first`, commits them as one
/// group, and returns every callback's result.
fn group(store: &Store, committer: &mut GroupCommitter, first: u64) -> Vec<storage::Result<()>> {
    let (tx, rx) = mpsc::channel();
    for seq in first..first + GROUP as u64 {
        let tx = tx.clone();
        store
            .writer()
            .submit(vec![put(seq)], Some(Box::new(move |r| tx.send(r).unwrap())));
    }
    assert_eq!(committer.step(), GROUP);
    rx.try_iter().collect()
}

#[test]
fn disk_full_fails_the_group_and_the_writer_recovers_when_space_is_freed() {
    // sled needs a few 512 KiB segments, so 1 MiB is too small to even open.
    let tmpfs = match Tmpfs::mount("8m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let filler: PathBuf = tmpfs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 5 * 1024 * 1024]).unwrap();
    let data = tmpfs.path().join("data");
    let (store, mut committer) = Store::open_with_committer(&config(&data)).unwrap();

    let mut acked = Vec::new();
    let mut next = 0;
    let error = loop {
        assert!(next < 100_000, "the 8 MiB tmpfs never filled up");
        let results = group(&store, &mut committer, next);
        if results.iter().all(Result::is_ok) {
            acked.extend(next..next + GROUP as u64);
            next += GROUP as u64;
            continue;
        }
        // One group, one outcome: every callback got the same error.
        assert!(results.iter().all(Result::is_err), "{results:?}");
        break results[0].clone().unwrap_err();
    };
    println!("{} writes acked before: {error}", acked.len());
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(
        error.to_string().contains("No space left on device"),
        "{error}"
    );

    assert!(store.health().is_ok(), "sled is still open");
    assert_eq!(store.writer_stats().failed_requests, GROUP as u64);

    // The writer keeps going: still full, so the next group fails too, at
    // the reopen (sled writes while it opens): the store is unavailable
    // until a reopen works.
    let results = group(&store, &mut committer, next);
    assert!(results.iter().all(Result::is_err), "{results:?}");
    assert!(
        matches!(store.health(), Err(Error::Unavailable { .. })),
        "{:?}",
        store.health()
    );
    assert_eq!(store.writer_stats().failed_requests, 2 * GROUP as u64);

    // Space freed: the writer reopens sled and the next group succeeds.
    std::fs::remove_file(&filler).unwrap();
    let results = group(&store, &mut committer, next);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(store.health().is_ok());
    acked.extend(next..next + GROUP as u64);

    store.close().unwrap();
    drop(committer);

    // sled writes while recovering, so a full disk cannot be opened; the
    // error says why.
    fill(&filler);
    let err = Store::open(&config(&data)).unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    std::fs::remove_file(&filler).unwrap();

    let store = Store::open(&config(&data)).unwrap();
    let present: Vec<u64> = store
        .load_outgoing("c")
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    for seq in &acked {
        assert!(present.binary_search(seq).is_ok(), "acked write {seq} lost");
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.write_all(&chunk[..1]);
}
