//! Benchmark (ignored by default): messages per second through a REST
//! route, a PostgreSQL route batching up to 100 messages per transaction
//! and one with `max_batch = 1`, against plain delivery to a subscriber,
//! in the same run of one `tern` process. The targets are real: the
//! PostgreSQL 15 of `common::pg` and the HTTP server of `common::hub`.
//!
//! ```sh
//! cargo test --release -p broker --test bench_routes -- --ignored --nocapture
//! ```
//!
//! Each scenario: one MQTT 3.1.1 client publishes `MESSAGES` QoS 1
//! messages of 64 bytes over 10 topics (or 1000), `WINDOW` unacknowledged
//! at a time;
//! the clock runs from the first PUBLISH to the last message counted at
//! the target (rows in the table, requests received, copies received).
//! It prints a table for BENCHMARKS.md; the only assertion is that every
//! message arrived.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::codec::Packet;
use common::hub::HttpTarget;
use common::pg::{PgServer, PASSWORD};
use common::process::{free_port, TernProcess};
use common::{build, poll_until, Raw};

const MESSAGES: usize = 50_000;
const WINDOW: usize = 64;
/// Guard against a hung run (not a performance bound).
const LIMIT: Duration = Duration::from_secs(300);

/// Publishes `MESSAGES` under `prefix` over `topics` topics; returns when
/// every PUBACK came.
async fn publish(addr: std::net::SocketAddr, prefix: &str, topics: usize) {
    let mut p = Raw::mqtt(addr, &format!("bench-{}", prefix.replace('/', "-")), true).await;
    let payload = [b'x'; 64];
    let mut in_flight = 0usize;
    for i in 0..MESSAGES {
        if in_flight == WINDOW {
            let ack = p.recv_bytes().await.expect("PUBACK");
            assert_eq!(ack[0], 0x40, "PUBACK expected");
            in_flight -= 1;
        }
        let packet_id = (i % 65_535 + 1) as u16;
        let topic = format!("{prefix}/{}", i % topics);
        p.send(&build::publish(
            &topic, 1, false, false, packet_id, &payload,
        ))
        .await;
        in_flight += 1;
    }
    while in_flight > 0 {
        let ack = p.recv_bytes().await.expect("PUBACK");
        assert_eq!(ack[0], 0x40, "PUBACK expected");
        in_flight -= 1;
    }
}

struct Figure {
    scenario: &'static str,
    topics: usize,
    /// Messages acknowledged to the publisher per second.
    acked: f64,
    /// Messages at the target per second, first PUBLISH to last arrival.
    delivered: f64,
}

/// Runs one scenario: publishes, then waits until `arrived` (a running
/// total) has grown by `MESSAGES`.
async fn measure(
    scenario: &'static str,
    topics: usize,
    addr: std::net::SocketAddr,
    prefix: &str,
    mut arrived: impl AsyncFnMut() -> usize,
) -> Figure {
    let before = arrived().await;
    let start = Instant::now();
    publish(addr, prefix, topics).await;
    let acked = start.elapsed();
    let all = poll_until(LIMIT, Duration::from_millis(10), async || {
        arrived().await - before >= MESSAGES
    })
    .await;
    let delivered = start.elapsed();
    assert!(
        all,
        "{scenario}: {} of {MESSAGES} arrived",
        arrived().await - before
    );
    let figure = Figure {
        scenario,
        topics,
        acked: MESSAGES as f64 / acked.as_secs_f64(),
        delivered: MESSAGES as f64 / delivered.as_secs_f64(),
    };
    eprintln!(
        "{scenario}, {topics} topics: {:.0} msg/s acknowledged, {:.0} msg/s delivered",
        figure.acked, figure.delivered
    );
    figure
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
async fn routes_throughput_against_plain_delivery() {
    let pg = PgServer::start();
    let db = pg.client().await;
    for table in ["batched", "single"] {
        db.batch_execute(&format!(
            "CREATE TABLE {table} (uid bigint, seq bigint, topic text, payload bytea, \
             qos smallint, at timestamptz, UNIQUE (uid, seq))"
        ))
        .await
        .unwrap();
    }
    let target = HttpTarget::start().await;
    let insert = |table: &str| {
        format!(
            "INSERT INTO {table} VALUES ($UID, $SEQ, $TOPIC, $PAYLOAD, $QOS, $TIMESTAMP) \
             ON CONFLICT (uid, seq) DO NOTHING"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[[routes]]\nname = \"rest\"\ntopic = \"bench/rest/#\"\ntype = \"rest\"\nurl = {:?}\n\n\
             [[routes]]\nname = \"pg-batched\"\ntopic = \"bench/pg-batched/#\"\ntype = \"postgres\"\n\
             url = {:?}\npassword = {PASSWORD:?}\nquery = {:?}\nmax_batch = 100\n\n\
             [[routes]]\nname = \"pg-single\"\ntopic = \"bench/pg-single/#\"\ntype = \"postgres\"\n\
             url = {:?}\npassword = {PASSWORD:?}\nquery = {:?}\nmax_batch = 1\n",
            target.url("/ingest"),
            pg.url(),
            insert("batched"),
            pg.url(),
            insert("single"),
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let tern = TernProcess::start(
        &dir.path().join("data"),
        free_port(),
        &["--config", &config, "--log-level", "warn"],
    );

    // Plain delivery: a QoS 1 subscriber of the topics, acknowledging.
    let copies = Arc::new(AtomicUsize::new(0));
    let mut sub = Raw::mqtt(tern.addr, "bench-sub", true).await;
    sub.send(&build::subscribe(1, &[("bench/plain/#", 1)]))
        .await;
    assert_eq!(sub.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    let counter = copies.clone();
    let reader = tokio::spawn(async move {
        while let Some(packet) = sub.recv().await {
            if let Packet::Publish(p) = packet {
                if let Some(id) = p.packet_id {
                    sub.send(&build::puback(id)).await;
                }
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    let count_rows = |table: &'static str| {
        let db = &db;
        async move || -> usize {
            let row = db
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap();
            row.get::<_, i64>(0) as usize
        }
    };
    let mut figures = Vec::new();
    for topics in [10, 1000] {
        figures.push(
            measure(
                "plain delivery to a subscriber",
                topics,
                tern.addr,
                "bench/plain",
                async || copies.load(Ordering::Relaxed),
            )
            .await,
        );
        figures.push(
            measure("REST route", topics, tern.addr, "bench/rest", async || {
                target.received_count()
            })
            .await,
        );
        figures.push(
            measure(
                "PostgreSQL route, max_batch 100",
                topics,
                tern.addr,
                "bench/pg-batched",
                count_rows("batched"),
            )
            .await,
        );
        figures.push(
            measure(
                "PostgreSQL route, max_batch 1",
                topics,
                tern.addr,
                "bench/pg-single",
                count_rows("single"),
            )
            .await,
        );
    }
    reader.abort();

    println!(
        "\n| scenario | topics | acknowledged (msg/s) | delivered (msg/s) | vs plain delivery |"
    );
    println!("|---|---:|---:|---:|---:|");
    for f in &figures {
        let plain = figures
            .iter()
            .find(|p| p.topics == f.topics)
            .map_or(f.delivered, |p| p.delivered);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} |",
            f.scenario,
            f.topics,
            f.acked,
            f.delivered,
            f.delivered / plain
        );
    }
    tern.kill9();
}
