//! The HTTP endpoint of a single node: Prometheus metrics checked against
//! real MQTT traffic (exact deltas), health checks, and the `$SYS` topics
//! read by Debian's `mosquitto_sub`, ACL included. The admin API and CLI are
//! in `admin_api.rs`, the cluster's readiness in `observability_cluster.rs`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use broker::codec::Packet;
use common::http::{eventually, get, json, scrape};
use common::{build, check_for, with_http, Raw, TestBroker, PATIENCE};

/// Reads `n` PUBLISHes, acknowledging the QoS 1 ones.
async fn receive(c: &mut Raw, n: usize) {
    for i in 0..n {
        match c.recv().await {
            Some(Packet::Publish(p)) => {
                if let Some(id) = p.packet_id {
                    c.send(&build::puback(id)).await;
                }
            }
            other => panic!("PUBLISH {i} of {n} expected, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn metrics_count_publishes_by_qos_exactly() {
    // (no $SYS in tests: its retained messages would count too)
    let broker = TestBroker::start_with(with_http);
    let http = broker.http_addr();
    // a persistent subscriber: its QoS 1 copies are stored (and fsynced)
    let mut sub = Raw::mqtt(broker.addr, "metrics-sub", false).await;
    sub.send(&build::subscribe(1, &[("m/#", 1)])).await;
    assert_eq!(sub.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    let mut publisher = Raw::mqtt(broker.addr, "metrics-pub", true).await;
    let before = scrape(http).await;

    for i in 1..=100u16 {
        publisher
            .send(&build::publish("m/one", 1, false, false, i, b"x"))
            .await;
    }
    for i in 1..=100u16 {
        assert_eq!(publisher.recv_bytes().await.unwrap(), build::puback(i));
    }
    receive(&mut sub, 100).await;
    for _ in 0..7 {
        publisher
            .send(&build::publish("m/zero", 0, false, false, 0, b"y"))
            .await;
    }
    receive(&mut sub, 7).await;
    // a QoS 0 message nobody reads is not a drop; one retained is counted
    publisher
        .send(&build::publish("kept/a", 0, true, false, 0, b"r"))
        .await;
    eventually(|| async { scrape(http).await.value("tern_retained_messages", &[]) == 1.0 }).await;

    let after = scrape(http).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.find(name, labels).unwrap_or(0.0)
    };
    assert_eq!(
        delta("tern_messages_received_total", &[("qos", "1")]),
        100.0
    );
    assert_eq!(delta("tern_messages_received_total", &[("qos", "0")]), 8.0);
    assert_eq!(delta("tern_messages_received_total", &[("qos", "2")]), 0.0);
    assert_eq!(delta("tern_messages_sent_total", &[("qos", "1")]), 100.0);
    assert_eq!(delta("tern_messages_sent_total", &[("qos", "0")]), 7.0);
    for reason in [
        "expired",
        "queue_full",
        "client_unavailable",
        "too_large",
        "overload",
        "no_subscriber",
        "session_gone",
        "store_failed",
    ] {
        assert_eq!(
            after.value("tern_messages_dropped_total", &[("reason", reason)]),
            0.0
        );
    }
    assert_eq!(after.value("tern_connections", &[]), 2.0);
    assert_eq!(after.value("tern_connections_total", &[]), 2.0);
    assert_eq!(after.value("tern_sessions", &[("state", "online")]), 2.0);
    assert_eq!(after.value("tern_sessions", &[("state", "offline")]), 0.0);
    assert_eq!(after.value("tern_subscriptions", &[]), 1.0);
    assert_eq!(after.value("tern_retained_messages", &[]), 1.0);
    assert_eq!(after.value("tern_queued_messages", &[]), 0.0);
    let listener = broker.addr.to_string();
    assert_eq!(
        after.value(
            "tern_listener_connections",
            &[("protocol", "tcp"), ("listener", listener.as_str())]
        ),
        2.0
    );
    // 100 publishes of 2 + 6 + 1 bytes of header, topic and payload, more
    // for the CONNECTs and SUBSCRIBE before; the exact count is the sum of
    // what the clients wrote
    assert!(delta("tern_bytes_received_total", &[]) >= 100.0 * 12.0);
    assert!(delta("tern_bytes_sent_total", &[]) >= 107.0 * 10.0);
    // the persistent subscriber's copies went through the group-commit writer
    assert!(delta("tern_store_writes_total", &[]) >= 100.0);
    let fsyncs = after.value("tern_store_fsyncs_total", &[]);
    assert!(fsyncs >= 1.0);
    let buckets = after.buckets("tern_store_fsync_duration_seconds");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, fsyncs));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(
        after.value("tern_store_fsync_duration_seconds_count", &[]),
        fsyncs
    );
    let groups = after.value("tern_store_groups_total", &[]);
    assert_eq!(
        after.buckets("tern_store_group_size").last().unwrap().1,
        groups
    );
    assert_eq!(after.value("tern_inflight_messages", &[]), 0.0);
    // one publish-to-deliver latency per copy written: 100 QoS 1, 7 QoS 0
    assert_eq!(delta("tern_publish_to_deliver_seconds_count", &[]), 107.0);
    let latency = after.buckets("tern_publish_to_deliver_seconds");
    assert!(latency.windows(2).all(|w| w[0].1 <= w[1].1), "{latency:?}");
    assert!(after.value("tern_publish_to_deliver_seconds_sum", &[]) > 0.0);
    assert_eq!(after.value("tern_store_failed_writes_total", &[]), 0.0);
}

#[tokio::test]
async fn metrics_tell_queued_from_in_flight_messages() {
    let broker = TestBroker::start_with(|c| {
        with_http(c);
        c.mqtt.max_inflight = 2;
    });
    let http = broker.http_addr();
    // a subscriber that reads but never acknowledges: two in its window,
    // the rest queued behind them
    let mut lazy = Raw::mqtt(broker.addr, "lazy", true).await;
    lazy.send(&build::subscribe(1, &[("lazy/#", 1)])).await;
    assert_eq!(lazy.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    let mut publisher = Raw::mqtt(broker.addr, "busy", true).await;
    for i in 1..=5u16 {
        publisher
            .send(&build::publish("lazy/x", 1, false, false, i, b"m"))
            .await;
        assert_eq!(publisher.recv_bytes().await.unwrap(), build::puback(i));
    }
    for _ in 0..2 {
        assert!(matches!(lazy.recv().await, Some(Packet::Publish(_))));
    }
    eventually(|| async {
        let s = scrape(http).await;
        s.value("tern_inflight_messages", &[]) == 2.0 && s.value("tern_queued_messages", &[]) == 3.0
    })
    .await;
    // its clean session ends with the connection: nothing is held any more
    lazy.send(&build::disconnect()).await;
    eventually(|| async {
        let s = scrape(http).await;
        s.value("tern_inflight_messages", &[]) == 0.0
            && s.value("tern_queued_messages", &[]) == 0.0
            && s.value("tern_queued_bytes", &[]) == 0.0
    })
    .await;
}

#[tokio::test]
async fn metrics_expose_every_documented_family() {
    let broker = TestBroker::start_with(|c| {
        with_http(c);
        c.sys_interval_secs = 10;
    });
    let s = scrape(broker.http_addr()).await;
    for family in [
        "tern_build_info",
        "tern_uptime_seconds",
        "tern_connections",
        "tern_listener_connections",
        "tern_connections_total",
        "tern_connections_refused_total",
        "tern_sessions",
        "tern_subscriptions",
        "tern_retained_messages",
        "tern_messages_received_total",
        "tern_messages_sent_total",
        "tern_messages_dropped_total",
        "tern_bytes_received_total",
        "tern_bytes_sent_total",
        "tern_queued_messages",
        "tern_inflight_messages",
        "tern_queued_bytes",
        "tern_auth_failures_total",
        "tern_connect_rate_refused_total",
        "tern_acl_denied_total",
        "tern_topic_limit_refused_total",
        "tern_publish_throttled_total",
        "tern_overload_dropped_total",
        "tern_slow_consumers_disconnected_total",
        "tern_backpressure_stalls_total",
        "tern_protocol_errors_total",
        "tern_publish_to_deliver_seconds",
        "tern_store_writes_total",
        "tern_store_requests_total",
        "tern_store_groups_total",
        "tern_store_fsyncs_total",
        "tern_store_failed_groups_total",
        "tern_store_failed_writes_total",
        "tern_store_fsync_duration_seconds",
        "tern_store_group_size",
    ] {
        assert!(s.has_family(family), "no family {family}");
    }
    // single node: no cluster families
    assert!(!s.has_family("tern_cluster_term"));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(s.value("tern_build_info", &[("version", version)]), 1.0);
}

#[tokio::test]
async fn refusals_are_counted_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite open/#\n").unwrap();
    let broker = TestBroker::start_with(|c| {
        with_http(c);
        c.acl.file = Some(acl.clone());
        c.limits.max_topic_levels = 4;
    });
    let http = broker.http_addr();
    let mut c = Raw::mqtt(broker.addr, "refused", true).await;
    // a filter the ACL does not cover, one over the level limit
    c.send(&build::subscribe(
        1,
        &[("closed/#", 0), ("open/a/b/c/d", 0)],
    ))
    .await;
    assert_eq!(
        c.recv_bytes().await.unwrap(),
        build::suback(1, &[0x80, 0x80])
    );
    c.send(&build::publish("closed/x", 0, false, false, 0, b""))
        .await;
    c.send(&build::publish("closed/y", 0, false, false, 0, b""))
        .await;
    let end = tokio::time::Instant::now() + PATIENCE;
    loop {
        let s = scrape(http).await;
        let publish = s.value("tern_acl_denied_total", &[("action", "publish")]);
        if publish == 2.0 {
            assert_eq!(
                s.value("tern_acl_denied_total", &[("action", "subscribe")]),
                1.0
            );
            assert_eq!(s.value("tern_topic_limit_refused_total", &[]), 1.0);
            assert_eq!(
                s.value("tern_acl_denied_total", &[("action", "delivery")]),
                0.0
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "acl publish denials: {publish}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_on_a_running_single_node() {
    let broker = TestBroker::start_with(with_http);
    let http = broker.http_addr();
    let health = get(http, "/healthz").await;
    assert_eq!(health.status, 200);
    let ready = get(http, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(json(&ready)["ready"], true);
    assert_eq!(get(http, "/nothing-here").await.status, 404);
    // the cluster status of a single node is a clear 404
    let status = get(http, "/api/v1/cluster/status").await;
    assert_eq!(status.status, 404);
    assert!(json(&status)["error"]
        .as_str()
        .unwrap()
        .contains("without a cluster"));
}

/// A running `mosquitto_sub -t '$SYS/#' -v`, its lines read on a thread.
struct SysReader {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
}

impl SysReader {
    fn start(broker: &TestBroker, client_id: &str) -> SysReader {
        // stdbuf: mosquitto_sub buffers stdout when it is a pipe
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p"])
            .arg(broker.addr.port().to_string())
            .args(["-i", client_id, "-t", "$SYS/#", "-v"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub runs (Debian's mosquitto-clients)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        SysReader {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until `done(lines so far)` holds; panics after PATIENCE.
    fn until(&mut self, mut done: impl FnMut(&[String]) -> bool) {
        let end = Instant::now() + PATIENCE;
        while !done(&self.seen) {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("$SYS lines so far: {:?}", self.seen),
            }
        }
    }

    /// The values published on `topic` so far.
    fn values(&self, topic: &str) -> Vec<&str> {
        value_of(&self.seen, topic)
    }
}

impl Drop for SysReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value_of<'a>(lines: &'a [String], topic: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(topic)?.strip_prefix(' '))
        .collect()
}

#[tokio::test]
async fn sys_topics_are_published_retained_and_updated() {
    let broker = TestBroker::start_with(|c| c.sys_interval_secs = 1);
    let _other = Raw::mqtt(broker.addr, "someone", true).await;
    let mut sys = SysReader::start(&broker, "sys-reader");
    // the retained values at subscribe time, then updates every second:
    // `someone` and mosquitto_sub itself are connected, uptime goes on
    sys.until(|lines| {
        value_of(lines, "$SYS/broker/uptime").len() >= 2
            && value_of(lines, "$SYS/broker/clients/connected").last() == Some(&"2")
    });
    let version = format!("tern {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(sys.values("$SYS/broker/version"), [version.as_str()]);
    let uptimes = sys.values("$SYS/broker/uptime");
    assert!(
        uptimes.iter().all(|u| u.ends_with(" seconds")),
        "{uptimes:?}"
    );
    for topic in [
        "$SYS/broker/clients/total",
        "$SYS/broker/clients/disconnected",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/retained messages/count",
        "$SYS/broker/bytes/received",
        "$SYS/broker/bytes/sent",
        "$SYS/broker/store/messages/count",
        "$SYS/broker/load/messages/received/1min",
        "$SYS/broker/load/messages/sent/15min",
        "$SYS/broker/load/bytes/received/5min",
    ] {
        assert!(!sys.values(topic).is_empty(), "no {topic}: {:?}", sys.seen);
    }
    // a single node has no cluster topics
    assert!(!sys.seen.iter().any(|l| l.starts_with("$SYS/cluster/")));
}

#[tokio::test]
async fn sys_topics_follow_the_acl() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic read $SYS/#\ntopic deny $SYS/broker/uptime\n").unwrap();
    let broker = TestBroker::start_with(|c| {
        c.sys_interval_secs = 1;
        c.acl.file = Some(acl.clone());
    });
    let mut sys = SysReader::start(&broker, "sys-acl");
    // bytes/sent grows with every tick (the $SYS messages sent to this
    // reader): two values of it span a tick, at which uptime changed too
    sys.until(|lines| value_of(lines, "$SYS/broker/bytes/sent").len() >= 2);
    assert!(!sys.values("$SYS/broker/version").is_empty());
    assert!(
        sys.values("$SYS/broker/uptime").is_empty(),
        "{:?}",
        sys.seen
    );
    drop(sys);
    // without a read rule for $SYS, the subscription is refused and
    // nothing arrives (the ACL file is re-read when it changes)
    std::fs::write(&acl, "topic read other/#\n").unwrap();
    let refused = check_for(PATIENCE, Duration::from_millis(100), || {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.addr.port().to_string()])
            .args([
                "-i",
                "sys-acl-2",
                "-t",
                "$SYS/#",
                "-v",
                "-C",
                "1",
                "-W",
                "2",
            ])
            .output()
            .expect("mosquitto_sub runs");
        out.stdout.is_empty()
    })
    .await;
    assert!(refused, "$SYS still delivered after the ACL lost its rule");
}

#[tokio::test]
async fn a_cluster_of_one_is_ready_and_scraped_without_peers() {
    let port = common::process::free_port();
    let broker = TestBroker::start_with(|c| {
        with_http(c);
        c.cluster.node_id = 1;
        c.cluster.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.cluster.tick_ms = 20;
    });
    let http = broker.http_addr();
    eventually(|| async { get(http, "/readyz").await.status == 200 }).await;
    let s = scrape(http).await;
    assert_eq!(s.value("tern_cluster_members", &[]), 1.0);
    assert_eq!(s.value("tern_cluster_is_leader", &[]), 1.0);
    assert_eq!(s.value("tern_cluster_leader", &[]), 1.0);
    // no peers: those families have no samples and are left out
    assert!(!s.has_family("tern_cluster_peer_up"));
    assert!(!s.has_family("tern_cluster_forwarded_total"));
    let status = json(&get(http, "/api/v1/cluster/status").await);
    assert_eq!(
        (status["node_id"].as_u64(), status["role"].as_str()),
        (Some(1), Some("leader"))
    );
}
