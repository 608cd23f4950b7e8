//! A full disk under a running broker: what publishers and subscribers see
//! when a copy for a persistent session cannot be stored, and what the
//! HTTP endpoint says (`tern_store_failed_writes_total`, `/readyz`). Needs
//! root to mount a tmpfs (CI runs as root); skipped with a message
//! otherwise.

mod common;

use std::path::Path;
use std::process::Command;

use broker::codec::Packet;
use common::flow::App;
use common::http::{eventually, get, json, scrape, Scrape};
use common::process::{free_port, TernProcess};
use common::{build, Raw, QUIET};

/// A small tmpfs, unmounted on drop so a failing assertion does not leave
/// the mount behind.
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

/// Writes to `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.write_all(&chunk[..1]);
}

/// The reason code of the PUBREC the publisher gets for `packet_id`.
async fn pubrec_code(p: &mut Raw, packet_id: u16) -> u8 {
    match p.recv().await {
        Some(Packet::PubRec(r)) if r.packet_id == packet_id => r.reason_code as u8,
        other => panic!("expected PUBREC {packet_id}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_qos2_copy_sent_although_its_store_failed() {
    // postmortem: the `PutOutgoing` callback of a QoS 2 copy for a
    // persistent session sent `Stored::Message` whatever the write's
    // result. A copy whose store failed was sent to the subscriber while
    // its publisher got PUBREC 0x80 (or, on 3.1.1, was disconnected) and
    // published it again: the subscriber got it twice, and a crash lost the
    // copy it held unstored. The copy is now dropped unsent
    // (`store_failed`), and the publisher's QoS 2 id is forgotten so that
    // its resend is routed as the message it is.
    let tmpfs = match Tmpfs::mount("16m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let data = tmpfs.path().join("data");
    let filler = tmpfs.path().join("filler");
    let broker = TernProcess::start(&data, free_port(), &[]);

    let mut s = App::connect(broker.addr, "full-sub", false).await;
    s.send(&build::subscribe(1, &[("full/q2", 2)])).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::suback(1, &[2]));
    let mut p = Raw::mqtt5(broker.addr, "full-pub", true, &[]).await;

    fill(&filler);
    let big = vec![7u8; 256 * 1024];
    p.send(&build::publish5("full/q2", 2, false, 1, &[], &big))
        .await;
    let code = pubrec_code(&mut p, 1).await;
    assert!(
        code >= 0x80,
        "the copy's store failed on a full disk: {code:#x}"
    );
    // The subscriber's session learns of the failure before the publisher
    // does: a copy sent anyway would be on its way already.
    if let Some(got) = s.recv_bytes_within(QUIET).await {
        panic!(
            "the copy whose store failed was sent: {} bytes, first {:02x?}",
            got.len(),
            &got[..got.len().min(16)]
        );
    }
    // A process, not an in-process broker: killed, it lets go of the mount.
    broker.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_store_writes_are_counted_and_readyz_says_the_store_is_not_open() {
    let tmpfs = match Tmpfs::mount("16m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let data = tmpfs.path().join("data");
    let filler = tmpfs.path().join("filler");
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let broker = TernProcess::start(&data, free_port(), &["--http-bind", &http.to_string()]);
    let failed = |s: &Scrape| s.value("tern_store_failed_writes_total", &[]);

    let mut s = App::connect(broker.addr, "errors-sub", false).await;
    s.send(&build::subscribe(1, &[("errors/q2", 2)])).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::suback(1, &[2]));
    let mut p = Raw::mqtt5(broker.addr, "errors-pub", true, &[]).await;
    let before = scrape(http).await;
    assert_eq!(failed(&before), 0.0);
    assert_eq!(before.value("tern_store_failed_groups_total", &[]), 0.0);
    eventually(|| async { get(http, "/readyz").await.status == 200 }).await;

    // full: the copy's write fails and is counted (before its publisher
    // hears of it); the writer reopens sled before its next group
    fill(&filler);
    let big = vec![7u8; 256 * 1024];
    p.send(&build::publish5("errors/q2", 2, false, 1, &[], &big))
        .await;
    assert!(pubrec_code(&mut p, 1).await >= 0x80);
    let after = scrape(http).await;
    assert!(failed(&after) >= 1.0, "{}", failed(&after));
    assert!(after.value("tern_store_failed_groups_total", &[]) >= 1.0);

    // still full: the next write (if none came since) makes the writer
    // reopen sled, which does not succeed (see storage's known issues): not
    // ready, alive all the same, and the endpoint answers while the writer
    // is stuck
    p.send(&build::publish5("errors/q2", 2, false, 2, &[], &big))
        .await;
    eventually(|| async { get(http, "/readyz").await.status == 503 }).await;
    let answer = get(http, "/readyz").await;
    let reason = json(&answer)["reason"].as_str().unwrap().to_owned();
    assert!(reason.starts_with("store not open: "), "{reason}");
    assert_eq!(get(http, "/healthz").await.status, 200);
    assert!(failed(&scrape(http).await) >= 1.0);
    broker.kill9();
}
