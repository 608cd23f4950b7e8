//! Crash test: this test binary re-runs itself as a child that writes through
//! the group-commit writer; the parent SIGKILLs it at a random moment, reopens
//! the store and checks that
//! - every request whose callback reported `Ok` (the child prints `acked <j>`
//!   from the callback) is present, and
//! - the store holds exactly a prefix of the submitted requests (the prefix
//!   property the broker relies on: no op without every op submitted before it).
//!
//! The requests alternate between trees so that the prefix is checked across
//! trees: request `2i` puts incoming_qos2 id `i`, request `2i + 1` puts
//! outgoing `seq = i`, deletes the incoming_qos2 id of step `i - WINDOW`,
//! stores the Released state of outgoing `i - RELEASE_AFTER` and
//! acknowledges outgoing `i - ACK_AFTER`. A group holds up to `IN_FLIGHT`
//! requests, so the outgoing puts of one group are one batch (see
//! `src/batches.rs`), and the Released states and acknowledgements land
//! inside batches of earlier groups: a kill between a batch's write and an
//! ack of one of its messages must neither bring back the acknowledged
//! message nor lose the others, and a Released state must win over the
//! batched copy. After sled's `tests/test_crash_recovery.rs`.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::message;
use rand::Rng;
use storage::{OutgoingRecord, Store, StoreConfig, WriteOp};

/// Set in the child's environment to the data directory.
const CHILD_ENV: &str = "TERN_STORAGE_CRASH_CHILD";
/// Incoming ids older than this many steps are deleted again.
const WINDOW: u64 = 4;
/// Outgoing `i - RELEASE_AFTER` gets its Released state at step `i`.
const RELEASE_AFTER: u64 = 3;
/// Outgoing `i - ACK_AFTER` is acknowledged (deleted) at step `i`.
const ACK_AFTER: u64 = 70;
/// Requests in flight in the child, so that groups hold many of them.
const IN_FLIGHT: usize = 64;

fn config(path: &Path) -> StoreConfig {
    StoreConfig {
        path: path.to_owned(),
        cache_capacity_bytes: 16 * 1024 * 1024,
        // The background flush runs alongside the writer, as in production.
        flush_every_ms: Some(20),
    }
}

/// The incoming_qos2 key of step `i`: packet ids are u16, so the client id
/// carries the high bits.
fn incoming_key(step: u64) -> (String, u16) {
    (format!("in{}", step >> 16), (step & 0xffff) as u16)
}

fn request(j: u64) -> Vec<WriteOp> {
    let step = j / 2;
    if j.is_multiple_of(2) {
        let (client_id, packet_id) = incoming_key(step);
        return vec![WriteOp::PutIncomingQos2 {
            client_id,
            packet_id,
        }];
    }
    let mut ops = vec![WriteOp::PutOutgoing {
        client_id: "out".into(),
        seq: step,
        record: outgoing_record(step, false),
    }];
    if step >= RELEASE_AFTER {
        ops.push(WriteOp::PutOutgoing {
            client_id: "out".into(),
            seq: step - RELEASE_AFTER,
            record: outgoing_record(step - RELEASE_AFTER, true),
        });
    }
    if step >= ACK_AFTER {
        ops.push(WriteOp::DeleteOutgoing {
            client_id: "out".into(),
            seq: step - ACK_AFTER,
        });
    }
    if step >= WINDOW {
        let (client_id, packet_id) = incoming_key(step - WINDOW);
        ops.push(WriteOp::DeleteIncomingQos2 {
            client_id,
            packet_id,
        });
    }
    ops
}

fn outgoing_record(step: u64, released: bool) -> OutgoingRecord {
    let mut record = OutgoingRecord {
        released,
        uid: step,
        message: message("crash/test", b""),
    };
    record.message.payload = Bytes::copy_from_slice(&step.to_be_bytes());
    record
}

/// What the store holds: outgoing steps (with their Released state) and
/// incoming steps.
#[derive(Debug, PartialEq, Eq, Default)]
struct State {
    outgoing: BTreeMap<u64, bool>,
    incoming: BTreeSet<u64>,
}

impl State {
    fn load(store: &Store) -> State {
        let mut state = State::default();
        for (seq, record) in store.load_outgoing("out").expect("load outgoing") {
            assert_eq!(
                &record.message.payload[..],
                seq.to_be_bytes(),
                "outgoing {seq} payload"
            );
            assert_eq!(record.uid, seq, "outgoing {seq} uid");
            state.outgoing.insert(seq, record.released);
        }
        let last_step = state.outgoing.last_key_value().map_or(0, |(s, _)| s + 1);
        for high in 0..=(last_step >> 16) {
            for packet_id in store
                .load_incoming_qos2(&format!("in{high}"))
                .expect("load incoming")
            {
                state.incoming.insert((high << 16) | u64::from(packet_id));
            }
        }
        state
    }

    /// The state after the first `n` requests.
    fn after(n: u64) -> State {
        let mut state = State::default();
        for j in 0..n {
            let step = j / 2;
            if j % 2 == 0 {
                state.incoming.insert(step);
            } else {
                state.outgoing.insert(step, false);
                if step >= WINDOW {
                    state.incoming.remove(&(step - WINDOW));
                }
                if step >= RELEASE_AFTER {
                    state.outgoing.insert(step - RELEASE_AFTER, true);
                }
                if step >= ACK_AFTER {
                    state.outgoing.remove(&(step - ACK_AFTER));
                }
            }
        }
        state
    }
}

/// How many requests the recovered state holds, if it is a prefix of them.
fn recovered_prefix(state: &State) -> Result<u64, String> {
    let last_outgoing = state.outgoing.last_key_value().map(|(s, _)| s);
    let last_step = match (last_outgoing, state.incoming.last()) {
        (None, None) => return Ok(0),
        (o, i) => *o.max(i).expect("one is Some"),
    };
    // The last request present is one of the two of `last_step`.
    for n in [2 * last_step + 1, 2 * last_step + 2] {
        if State::after(n) == *state {
            return Ok(n);
        }
    }
    Err(format!(
        "not a prefix of the submitted requests: last step {last_step}, {} outgoing, incoming {:?}",
        state.outgoing.len(),
        state.incoming
    ))
}

/// The child: continue the request sequence where the store stands, until killed.
fn child(dir: &Path) {
    let store = Store::open(&config(dir)).expect("child: open store");
    let start = recovered_prefix(&State::load(&store)).expect("child: recovered state");
    println!("ready");
    let writer = store.writer();
    let (slots, freed) = crossbeam_channel::bounded::<()>(IN_FLIGHT);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut j = start;
    while Instant::now() < deadline {
        if slots.send_timeout((), Duration::from_secs(10)).is_err() {
            break; // the writer is stuck or gone
        }
        let freed = freed.clone();
        writer.submit(
            request(j),
            Some(Box::new(move |result| {
                result.expect("child: durable write");
                // Printed once durable, before the next callback runs. If the
                // parent is gone (closed pipe), there is nobody to report to.
                if writeln!(std::io::stdout(), "acked {j}").is_err() {
                    std::process::exit(0);
                }
                let _ = freed.try_recv();
            })),
        );
        j += 1;
    }
    // Not killed in time: the parent is gone or stuck; stop.
    std::process::exit(0);
}

/// Kills the child if the parent panics before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `rounds` child processes, each killed at a random moment.
fn crash_rounds(test_name: &str, rounds: usize) {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut total_acked = 0;
    let mut recovered = 0;
    for round in 0..rounds {
        let mut child = KillOnDrop(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    test_name,
                    "--nocapture",
                    "--test-threads=1",
                    "--include-ignored",
                ])
                .env(CHILD_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn child"),
        );
        let stdout = child.0.stdout.take().unwrap();
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        // A quarter of the kills land while the child starts up and recovers
        // (when sled writes a snapshot), the others while it writes.
        if rng.gen_bool(0.25) {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        } else {
            // libtest's own lines come first; "ready" may end the line of
            // its `test <name> ...` header.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let timeout = deadline.saturating_duration_since(Instant::now());
                match lines.recv_timeout(timeout) {
                    Ok(line) if line.ends_with("ready") => break,
                    Ok(_) => continue,
                    Err(e) => panic!("round {round}: child did not start: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(20..500)));
        }
        child.0.kill().expect("SIGKILL the child"); // std sends SIGKILL on Unix
        child.0.wait().unwrap();
        let max_acked = lines
            .iter()
            .filter_map(|line| line.strip_prefix("acked ")?.parse::<u64>().ok())
            .max();

        let store = Store::open(&config(dir.path())).expect("reopen after SIGKILL");
        let state = State::load(&store);
        store.close().unwrap();
        let n = recovered_prefix(&state).unwrap_or_else(|e| panic!("round {round}: {e}"));
        if let Some(max_acked) = max_acked {
            assert!(
                n > max_acked,
                "round {round}: request {max_acked} was acked but only {n} requests recovered"
            );
            total_acked += 1;
        }
        println!("round {round}: acked up to {max_acked:?}, recovered {n} requests");
        recovered = n;
    }
    assert!(
        total_acked > 0,
        "no child got a write acknowledged: the test checked nothing"
    );
    assert!(recovered > 0);
}

#[test]
fn crash_recovery_keeps_acked_writes_and_a_prefix() {
    crash_rounds("crash_recovery_keeps_acked_writes_and_a_prefix", 8);
}

#[test]
#[ignore = "stress: 60 kill rounds, run with -- --ignored stress"]
fn crash_recovery_stress() {
    crash_rounds("crash_recovery_stress", 60);
}
