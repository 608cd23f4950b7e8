//! A full disk under a running broker: what publishers and subscribers see
//! when a copy for a persistent session cannot be stored. Needs root to
//! mount a tmpfs (CI runs as root); skipped with a message otherwise.

mod common;

use std::path::Path;
use std::process::Command;

use broker::codec::Packet;
use common::flow::App;
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
