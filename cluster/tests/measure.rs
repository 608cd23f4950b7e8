//! Numbers, not assertions: proposals per second on 3 local nodes,
//! forwarded messages per second between two, and the time to elect a new
//! leader after the leader stops. Run with
//! `cargo test --release -p cluster --test measure -- --ignored --nocapture`.

mod common {
    pub mod nodes;
    pub mod proxy;
}

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use cluster::{ForwardedPublish, SessionInfo};
use common::nodes::*;
use tokio::sync::Semaphore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run explicitly"]
async fn measure_proposals_forwarding_and_election() {
    init_tracing();
    let mut nodes = cluster_of(3, &[]).await;
    wait_until(Duration::from_secs(10), "a leader", || {
        agreed_leader(&nodes).is_some()
    })
    .await;
    let leader = agreed_leader(&nodes).unwrap();
    let follower = nodes.iter().position(|n| n.id != leader).unwrap();

    for (label, index) in [("leader", (leader - 1) as usize), ("follower", follower)] {
        let cluster = nodes[index].cluster().clone();
        let (total, concurrency) = (20_000u64, 256u64);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let cluster = cluster.clone();
            tasks.push(tokio::spawn(async move {
                for i in (t..total).step_by(concurrency as usize) {
                    cluster
                        .claim_session(format!("{label}-{i}"), SessionInfo::default(), None, None)
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "proposals on the {label}: {total} claims, {concurrency} concurrent callers: {:.0}/s",
            total as f64 / secs
        );
    }

    let sender = nodes[0].cluster().clone();
    let (total, in_flight) = (100_000u64, 2048);
    let window = Arc::new(Semaphore::new(in_flight));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..total {
        let permit = Arc::clone(&window).acquire_owned().await.unwrap();
        let sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let msg = ForwardedPublish {
                id: 0,
                topic: format!("t/{}", i % 100),
                payload: Bytes::from_static(&[0u8; 64]),
                qos: 1,
                retain: false,
                properties: Bytes::new(),
                expires_at_ms: None,
                origin_node: 0,
                ..Default::default()
            };
            sender.forward(2, msg).await.unwrap();
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "forwarding node 1 -> node 2: {total} messages of 64 bytes, {in_flight} in flight: {:.0}/s",
        total as f64 / secs
    );

    // Election after leader loss, with the test timings (20 ms ticks,
    // election timeout 10 to 20 ticks) and the defaults scaled (x5).
    let index = (leader - 1) as usize;
    let start = Instant::now();
    stop(&mut nodes[index]).await;
    wait_until(Duration::from_secs(20), "a new leader", || {
        agreed_leader(&nodes).is_some_and(|l| l != leader)
    })
    .await;
    println!(
        "election after the leader stopped (20 ms ticks, election timeout 200-400 ms): {} ms",
        start.elapsed().as_millis()
    );
    for mut node in nodes {
        stop(&mut node).await;
    }
}
