//! Abuse tests: many connections from one address, and subscribers that stop
//! reading while QoS 0 floods them. They take tens of seconds each, so they
//! are `#[ignore]`d and run by the `stress` step of `scripts/test.sh`:
//! `cargo test -p broker --test stress -- --ignored --test-threads=1`
//! (one at a time: the memory test reads this process's RSS).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{build, Raw, TestBroker, PATIENCE};
use tokio::io::AsyncReadExt;

/// Connection attempts in this file.
const ATTEMPTS: usize = 10_000;
/// Attempts in progress at once (the listen backlog is 1024).
const CONCURRENCY: usize = 500;
/// How long one attempt may take before the test calls it hung.
const ATTEMPT_PATIENCE: Duration = Duration::from_secs(60);

/// Descriptors the tests hold at most: both ends of the attempts in progress
/// and of the connections kept (at most a few thousand), and slack.
fn raise_fd_limit() {
    let want = 8_192;
    let got = rlimit::increase_nofile_limit(want).expect("raise RLIMIT_NOFILE");
    assert!(got >= want, "RLIMIT_NOFILE is {got}, the test needs {want}");
}

/// How one attempt ended.
enum Outcome {
    /// CONNACK 0: the connection is kept open.
    Accepted(Raw),
    /// Closed by the broker before any CONNACK.
    Closed,
}

/// Connects from `source`, sends CONNECT and waits for CONNACK or the end.
async fn attempt(addr: SocketAddr, source: IpAddr, id: String) -> Outcome {
    let Ok(mut c) = Raw::connect_from(addr, source, None).await else {
        return Outcome::Closed;
    };
    if !c.try_send(&build::connect(4, &id, true, 0)).await {
        return Outcome::Closed;
    }
    match c.recv_bytes_within(ATTEMPT_PATIENCE).await {
        Some(b) if b == build::connack(false, 0) => Outcome::Accepted(c),
        Some(b) => panic!("unexpected answer {b:02x?}"),
        None => Outcome::Closed,
    }
}

/// Runs `ATTEMPTS` attempts from `source`, `CONCURRENCY` at a time; returns
/// the accepted connections (still open) and the number closed.
async fn flood_connects(addr: SocketAddr, source: IpAddr) -> (Vec<Raw>, usize) {
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(ATTEMPTS);
    for i in 0..ATTEMPTS {
        let permit = permits.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let outcome = tokio::time::timeout(
                ATTEMPT_PATIENCE,
                attempt(addr, source, format!("flood-{i}")),
            )
            .await
            .expect("an attempt neither got CONNACK nor was closed");
            drop(permit);
            outcome
        }));
    }
    let mut accepted = Vec::new();
    let mut closed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Outcome::Accepted(c) => accepted.push(c),
            Outcome::Closed => closed += 1,
        }
    }
    (accepted, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress: 10k connections"]
async fn stress_10k_connections_from_one_address_hit_the_listener_limit_cleanly() {
    raise_fd_limit();
    const MAX: usize = 1_000;
    let broker = TestBroker::start_with(|c| c.listeners[0].max_connections = MAX);
    let start = Instant::now();
    let (accepted, closed) = flood_connects(broker.addr, "127.0.0.1".parse().unwrap()).await;
    eprintln!(
        "{} accepted, {closed} closed at accept, in {:?}",
        accepted.len(),
        start.elapsed()
    );
    assert_eq!(accepted.len(), MAX, "exactly the limit is accepted");
    assert_eq!(closed, ATTEMPTS - MAX);
    // The accepted connections all work.
    let mut accepted = accepted;
    for c in accepted.iter_mut().step_by(100) {
        c.send(&build::pingreq()).await;
        assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());
    }
    // Closing some makes room again.
    accepted.truncate(MAX - 10);
    let end = Instant::now() + PATIENCE;
    loop {
        let mut c = Raw::connect(broker.addr).await;
        c.send(&build::connect(4, "late", true, 0)).await;
        if c.recv_bytes().await == Some(build::connack(false, 0)) {
            break;
        }
        assert!(Instant::now() < end, "no room after closing connections");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress: 10k connections"]
async fn stress_10k_connects_from_one_address_are_cut_by_the_connect_rate() {
    raise_fd_limit();
    const RATE: u32 = 200;
    let broker = TestBroker::start_with(|c| {
        c.limits.max_connect_rate = RATE;
        c.limits.connect_burst = RATE;
    });
    let start = Instant::now();
    let (accepted, closed) = flood_connects(broker.addr, "127.0.0.1".parse().unwrap()).await;
    let elapsed = start.elapsed();
    eprintln!(
        "{} accepted, {closed} closed by the connect rate, in {elapsed:?}",
        accepted.len()
    );
    // at most the burst plus the rate over the time it took
    let ceiling = (RATE as f64 * (1.0 + elapsed.as_secs_f64())) as usize;
    assert!(accepted.len() >= RATE as usize, "{}", accepted.len());
    assert!(accepted.len() <= ceiling, "{} > {ceiling}", accepted.len());
    assert_eq!(accepted.len() + closed, ATTEMPTS);
    // another address is not affected
    let other = attempt(broker.addr, "127.0.0.2".parse().unwrap(), "other".into()).await;
    assert!(matches!(other, Outcome::Accepted(_)));
}

/// This process's resident set size, from /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// Non-reading subscribers.
const STUCK: usize = 10;
/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(12);
/// Slow consumer timeout in this test.
const SLOW_CONSUMER_SECS: u64 = 6;
/// RSS growth allowed during the flood. Each stuck subscriber may hold up to
/// two write buffers (1 MiB each, default) until it is cut off: 20 MiB, plus
/// allocator slack and the mailboxes of busy sessions.
const RSS_BOUND: u64 = 96 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress: memory under a QoS 0 flood"]
async fn stress_non_reading_subscribers_flooded_with_qos0_keep_memory_bounded() {
    let broker = TestBroker::start_with(|c| {
        c.limits.slow_consumer_timeout_secs = SLOW_CONSUMER_SECS;
    });
    let addr = broker.addr;
    let mut stuck = Vec::new();
    for i in 0..STUCK {
        let mut c = Raw::connect_from(addr, "127.0.0.1".parse().unwrap(), Some(4096))
            .await
            .unwrap();
        c.send(&build::connect(4, &format!("stuck-{i}"), true, 0))
            .await;
        assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
        c.send(&build::subscribe(1, &[("flood/#", 0)])).await;
        assert_eq!(c.recv_bytes().await.unwrap(), build::suback(1, &[0]));
        stuck.push(c);
    }
    let mut healthy = Raw::mqtt(addr, "healthy", true).await;
    healthy.send(&build::subscribe(1, &[("flood/#", 0)])).await;
    assert_eq!(healthy.recv_bytes().await.unwrap(), build::suback(1, &[0]));
    let baseline = rss_bytes();

    let publisher = tokio::spawn(async move {
        let mut p = Raw::mqtt(addr, "publisher", true).await;
        let packet = build::publish("flood/x", 0, false, false, 0, &vec![0x5a; 16 * 1024]);
        let mut sent: u64 = 0;
        let end = Instant::now() + FLOOD;
        while Instant::now() < end {
            for _ in 0..16 {
                p.send(&packet).await;
                sent += packet.len() as u64;
            }
            tokio::task::yield_now().await;
        }
        sent
    });
    let start = Instant::now();
    let mut peak = baseline;
    let mut received_by_second = vec![0u64; FLOOD.as_secs() as usize + 1];
    let mut chunk = vec![0u8; 256 * 1024];
    while !publisher.is_finished() {
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), healthy.stream.read(&mut chunk)).await
        {
            assert!(n > 0, "the healthy subscriber was disconnected");
            let second = (start.elapsed().as_secs() as usize).min(received_by_second.len() - 1);
            received_by_second[second] += n as u64;
        }
        peak = peak.max(rss_bytes());
    }
    let published = publisher.await.unwrap();
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "published {} MiB in {FLOOD:?}; RSS baseline {} MiB, peak {} MiB, growth {} MiB (bound {} MiB); \
         healthy subscriber got per second (KiB): {:?}",
        published >> 20,
        baseline >> 20,
        peak >> 20,
        growth >> 20,
        RSS_BOUND >> 20,
        received_by_second.iter().map(|b| b >> 10).collect::<Vec<_>>()
    );
    assert!(
        published > 4 * RSS_BOUND,
        "the flood was too small to prove anything: {published} bytes"
    );
    assert!(growth < RSS_BOUND, "RSS grew by {growth} bytes");
    // the healthy subscriber got messages in every two-second window of the
    // flood (windows, not seconds: other tests may share the CPU)
    let full_seconds = &received_by_second[..FLOOD.as_secs() as usize];
    assert!(
        full_seconds.chunks(2).all(|w| w.iter().sum::<u64>() > 0),
        "{received_by_second:?}"
    );
    // every stuck subscriber was disconnected as a slow consumer
    for (i, c) in stuck.iter_mut().enumerate() {
        let end = Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout(Duration::from_secs(2), c.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => panic!("stuck subscriber {i} is still connected"),
            }
            assert!(Instant::now() < end, "stuck subscriber {i} still sends");
        }
    }
}
