//! Group commit throughput: durable submits from 1, 8 and 64 concurrent
//! submitters, each waiting for its callback before the next submit (as a
//! session waits before sending PUBACK). Criterion reports ops/s; after each
//! case this prints fsyncs/s and requests per fsync from the writer's stats.
//! Runs on a real file system under the system temp dir.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use storage::{OutgoingRecord, Store, StoreConfig, StoredMessage, WriteOp};

fn op(client: usize, seq: u64) -> WriteOp {
    WriteOp::PutOutgoing {
        client_id: format!("bench-{client}"),
        seq,
        record: OutgoingRecord {
            released: false,
            uid: seq,
            message: StoredMessage {
                topic: "bench/group/commit".into(),
                payload: Bytes::from_static(&[0x5a; 64]),
                qos: 1,
                retain: false,
                properties: Bytes::new(),
                expires_at_ms: None,
            },
        },
    }
}

/// `ops` durable submits spread over `submitters` threads; returns the time taken.
fn run(store: &Store, submitters: usize, ops: u64, next_seq: &mut u64) -> Duration {
    let per_submitter = ops.div_ceil(submitters as u64);
    let base = *next_seq;
    *next_seq += per_submitter;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..submitters {
            let writer = store.writer();
            scope.spawn(move || {
                let (tx, rx) = mpsc::channel();
                for seq in base..base + per_submitter {
                    let tx = tx.clone();
                    writer.submit(
                        vec![op(client, seq)],
                        Some(Box::new(move |result| {
                            let _ = tx.send(result);
                        })),
                    );
                    rx.recv().expect("callback").expect("durable write");
                }
            });
        }
    });
    start.elapsed()
}

fn group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&StoreConfig {
        path: dir.path().to_owned(),
        cache_capacity_bytes: 64 * 1024 * 1024,
        flush_every_ms: Some(500),
    })
    .expect("open store");
    let mut next_seq = 0;

    let mut group = c.benchmark_group("durable_submit");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for submitters in [1usize, 8, 64] {
        group.throughput(Throughput::Elements(1));
        let before = store.writer_stats();
        let mut elapsed = Duration::ZERO;
        let mut done = 0;
        group.bench_with_input(
            BenchmarkId::new("submitters", submitters),
            &submitters,
            |b, &submitters| {
                b.iter_custom(|iters| {
                    // Every submitter does at least one op.
                    let ops = iters.max(submitters as u64);
                    let took = run(&store, submitters, ops, &mut next_seq);
                    elapsed += took;
                    done += ops.div_ceil(submitters as u64) * submitters as u64;
                    // Criterion divides by `iters`: report the time per op.
                    took.mul_f64(iters as f64 / ops as f64)
                })
            },
        );
        let after = store.writer_stats();
        let secs = elapsed.as_secs_f64().max(f64::EPSILON);
        let flushes = after.flushes - before.flushes;
        println!(
            "durable_submit/submitters/{submitters}: {:.0} ops/s, {:.0} fsyncs/s, {:.1} requests per fsync",
            done as f64 / secs,
            flushes as f64 / secs,
            (after.requests - before.requests) as f64 / flushes.max(1) as f64,
        );
    }
    group.finish();
    store.close().expect("close store");
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
