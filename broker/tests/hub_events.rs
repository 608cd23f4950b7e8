//! Hub events on one node, over real sockets: a client refused for bad
//! credentials, a publish and a subscription denied by the ACL, a publish
//! over the topic limits, a client disconnected for a protocol error (with
//! its reason code), a session queue full, store writes failing on a full
//! disk (a tmpfs: root only, skipped otherwise); the per-object rate limit;
//! the ACL applied to `$SYS/events`; and the hub's metrics (events and
//! routes).
//!
//! Route error and recovery events are in `routes.rs`; a raft leader change
//! in `routes_cluster.rs`.

mod common;

use std::path::{Path, PathBuf};

use broker::auth::password::{edit_file, PasswdAction};
use broker::config::Config;
use common::http::{eventually, scrape};
use common::hub::{next_json, publish_acked, rest_route, sys_subscriber, HttpTarget, POLL};
use common::{build, check_for, with_http, Raw, TestBroker, PATIENCE};

const ACL: &str = "\
user ops
topic read $SYS/events/#
topic readwrite #
user dev
topic readwrite dev/#
";

/// Users `ops` and `dev` (password `pw`), the ACL above, anonymous refused.
fn secured(dir: &Path) -> impl FnOnce(&mut Config) {
    let passwd: PathBuf = dir.join("passwd");
    for (i, user) in ["ops", "dev"].iter().enumerate() {
        edit_file(&passwd, user, PasswdAction::Set(b"pw".to_vec()), i == 0).unwrap();
    }
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).unwrap();
    move |c: &mut Config| {
        c.auth.password_file = Some(passwd);
        c.auth.allow_anonymous = false;
        c.acl.file = Some(acl);
        with_http(c);
    }
}

/// Logs in (3.1.1) and expects CONNACK 0.
async fn login(addr: std::net::SocketAddr, id: &str, user: &str, pw: &str) -> Raw {
    let mut c = Raw::connect(addr).await;
    c.send(&build::connect_full(
        4,
        id,
        true,
        60,
        None,
        Some(user),
        Some(pw.as_bytes()),
    ))
    .await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
    c
}

/// A logged-in client subscribed to `$SYS/events/#`.
async fn ops(addr: std::net::SocketAddr) -> Raw {
    let mut s = login(addr, "ops-1", "ops", "pw").await;
    s.send(&build::subscribe(1, &[("$SYS/events/#", 1)])).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    s
}

#[tokio::test]
async fn refused_and_denied_clients_raise_events_and_only_allowed_users_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(secured(dir.path()));
    let mut events = ops(broker.addr).await;

    // ACL on $SYS/events: dev may not subscribe (3.1.1 SUBACK 0x80)
    let mut dev = login(broker.addr, "dev-1", "dev", "pw").await;
    dev.send(&build::subscribe(1, &[("$SYS/events/#", 0)]))
        .await;
    assert_eq!(dev.recv_bytes().await.unwrap(), build::suback(1, &[0x80]));
    let (topic, event) = next_json(&mut events, "$SYS/events/warning/client/dev-1").await;
    assert_eq!(topic, "$SYS/events/warning/client/dev-1");
    assert_eq!(event["msg"], "subscription denied by the ACL");
    assert_eq!(event["details"]["topic_filter"], "$SYS/events/#");

    // bad credentials: CONNACK 4 (3.1.1) and an event naming the client
    let mut bad = Raw::connect(broker.addr).await;
    bad.send(&build::connect_full(
        4,
        "intruder",
        true,
        60,
        None,
        Some("dev"),
        Some(b"nope"),
    ))
    .await;
    assert_eq!(bad.recv_bytes().await.unwrap(), build::connack(false, 4));
    let (topic, event) = next_json(&mut events, "$SYS/events/warning/client/intruder").await;
    assert_eq!(topic, "$SYS/events/warning/client/intruder");
    assert_eq!(event["object_type"], "client");
    assert_eq!(event["object_id"], "intruder");
    assert_eq!(event["details"]["reason"], "bad credentials");
    assert_eq!(event["details"]["reason_code"], 0x86);
    assert!(event["time"].as_str().unwrap().ends_with('Z'));

    // ACL denial of a publish
    dev.send(&build::publish("secret/x", 0, false, false, 0, b"x"))
        .await;
    let (_, event) = next_json(&mut events, "$SYS/events/warning/client/dev-1").await;
    assert_eq!(event["msg"], "publish denied by the ACL");
    assert_eq!(event["details"]["topic"], "secret/x");

    let metrics = scrape(broker.http_addr()).await;
    let warnings = metrics.value(
        "tern_hub_events_total",
        &[("severity", "warning"), ("object_type", "client")],
    );
    assert!(warnings >= 3.0, "{warnings}");
}

#[tokio::test]
async fn a_protocol_error_and_a_topic_over_the_limits_raise_client_events() {
    let broker = TestBroker::start_with(|c| c.limits.max_topic_levels = 3);
    let mut events = sys_subscriber(broker.addr, "ops", &["$SYS/events/#"]).await;

    let mut deep = Raw::mqtt(broker.addr, "deep", true).await;
    deep.send(&build::publish("a/b/c/d", 0, false, false, 0, b"x"))
        .await;
    let (topic, event) = next_json(&mut events, "$SYS/events/warning/client/deep").await;
    assert_eq!(topic, "$SYS/events/warning/client/deep");
    assert_eq!(event["details"]["reason"], "limits");

    // [MQTT-3.1.0-2] a second CONNECT is a protocol violation
    let mut twice = Raw::mqtt(broker.addr, "twice", true).await;
    twice.send(&build::connect(4, "twice", true, 60)).await;
    twice.expect_closed().await;
    let (_, event) = next_json(&mut events, "$SYS/events/warning/client/twice").await;
    assert_eq!(event["msg"], "client disconnected for a protocol error");
    assert_eq!(event["details"]["reason_code"], 0x82, "{event}");
}

#[tokio::test]
async fn a_full_session_queue_raises_a_session_event() {
    let broker = TestBroker::start_with(|c| c.mqtt.max_queued_messages = 1);
    let mut events = sys_subscriber(broker.addr, "ops", &["$SYS/events/warning/session/#"]).await;
    // a persistent session, offline
    let mut away = Raw::mqtt(broker.addr, "away", false).await;
    away.send(&build::subscribe(1, &[("q/#", 1)])).await;
    assert_eq!(away.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    away.send(&build::disconnect()).await;
    // closed by the broker once the session handled the DISCONNECT
    away.expect_closed().await;
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    // the first fills the offline session's queue, the second finds it full
    publish_acked(&mut p, "q/1", 1, b"x").await;
    publish_acked(&mut p, "q/1", 2, b"y").await;
    let (topic, event) = next_json(&mut events, "$SYS/events/warning/session/").await;
    assert_eq!(topic, "$SYS/events/warning/session/away");
    assert_eq!(event["object_type"], "session");
    assert_eq!(event["details"]["max_queued_messages"], 1);
}

#[tokio::test]
async fn events_of_one_object_are_rate_limited_and_the_suppressed_are_counted() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_topic_levels = 3;
        with_http(c);
    });
    let mut events = sys_subscriber(broker.addr, "ops", &["$SYS/events/#"]).await;
    let mut flood = Raw::mqtt(broker.addr, "flood", true).await;
    let sent = 40;
    for _ in 0..sent {
        flood
            .send(&build::publish("a/b/c/d", 0, false, false, 0, b"x"))
            .await;
    }
    // a ping answered: every publish before it was handled
    flood.send(&build::pingreq()).await;
    assert_eq!(flood.recv_bytes().await.unwrap(), build::pingresp());
    let metrics = scrape(broker.http_addr()).await;
    let published = metrics.value(
        "tern_hub_events_total",
        &[("severity", "warning"), ("object_type", "client")],
    );
    let suppressed = metrics.value("tern_hub_events_suppressed_total", &[]);
    assert_eq!(
        published + suppressed,
        f64::from(sent),
        "every event counted once"
    );
    assert!(
        published <= 10.0,
        "{published} published: the bucket did not hold"
    );
    // another object is not affected by flood's bucket
    let mut other = Raw::mqtt(broker.addr, "other", true).await;
    other
        .send(&build::publish("c/d/e/f", 0, false, false, 0, b"x"))
        .await;
    let mut got_other = false;
    let mut flood_events = 0;
    while !got_other {
        let (topic, _) = next_json(&mut events, "$SYS/events/").await;
        got_other = topic.ends_with("/other");
        flood_events += usize::from(topic.ends_with("/flood"));
    }
    assert_eq!(flood_events as f64, published);
    // once the bucket refills, the next event says how many were suppressed
    let mut reported = None;
    let found = common::poll_until(PATIENCE, POLL, async || {
        flood
            .send(&build::publish("e/f/g/h", 0, false, false, 0, b"x"))
            .await;
        let Ok((_, event)) = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            next_json(&mut events, "$SYS/events/warning/client/flood"),
        )
        .await
        else {
            return false;
        };
        reported = event["details"]["suppressed"].as_u64();
        reported.is_some()
    })
    .await;
    assert!(found, "no event reported the suppressed ones");
    assert!(reported.unwrap() >= suppressed as u64, "{reported:?}");
}

#[tokio::test]
async fn route_metrics_count_queued_delivered_and_dead_lettered_messages() {
    let mut target = HttpTarget::start().await;
    let ok = rest_route("ok", "m/ok", &target.url("/"), serde_json::json!({}));
    let bad = rest_route(
        "bad",
        "m/bad",
        &target.url("/"),
        serde_json::json!({ "max_attempts": 1 }),
    );
    let broker = TestBroker::start_with(|c| {
        c.routes = vec![ok, bad];
        with_http(c);
    });
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    for i in 1..=5 {
        publish_acked(&mut p, "m/ok", i, b"fine").await;
    }
    let http = broker.http_addr();
    eventually(async || {
        scrape(http)
            .await
            .value("tern_route_delivered_total", &[("route", "ok")])
            == 5.0
    })
    .await;
    let m = scrape(http).await;
    assert_eq!(m.value("tern_route_queued", &[("route", "ok")]), 0.0);
    let count = m.value("tern_route_delivery_seconds", &[("route", "ok")]);
    assert_eq!(count, 5.0, "latency histogram count");

    // a target that is down: queued grows, retries count
    target.stop().await;
    for i in 6..=8 {
        publish_acked(&mut p, "m/ok", i, b"later").await;
    }
    eventually(async || {
        let m = scrape(http).await;
        m.value("tern_route_queued", &[("route", "ok")]) == 3.0
            && m.value("tern_route_retried_total", &[("route", "ok")]) >= 1.0
    })
    .await;
    // one try only, then the dead letter
    publish_acked(&mut p, "m/bad", 9, b"lost").await;
    eventually(async || {
        scrape(http)
            .await
            .value("tern_route_dead_lettered_total", &[("route", "bad")])
            == 1.0
    })
    .await;
    target.resume().await;
    let drained = check_for(PATIENCE, POLL, || target.received().len() == 8).await;
    assert!(drained, "{:?}", target.bodies());
}

/// A small tmpfs (needs root), unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed ({status}); it needs root"));
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_store_writes_raise_a_store_error_event() {
    let tmpfs = match Tmpfs::mount("16m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let data = tmpfs.0.path().join("data");
    let tern = common::process::TernProcess::start(&data, common::process::free_port(), &[]);
    let mut events = sys_subscriber(tern.addr, "ops", &["$SYS/events/error/store/#"]).await;
    // a persistent subscriber: its copies are written to the store
    let mut s = Raw::mqtt(tern.addr, "keeper", false).await;
    s.send(&build::subscribe(1, &[("full/q", 1)])).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(tmpfs.0.path().join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while filler.write_all(&chunk).is_ok() {}
    }
    let mut p = Raw::mqtt5(tern.addr, "pub", true, &[]).await;
    p.send(&build::publish5(
        "full/q",
        1,
        false,
        1,
        &[],
        &vec![7u8; 256 * 1024],
    ))
    .await;
    let (topic, event) = next_json(&mut events, "$SYS/events/error/store/").await;
    assert_eq!(topic, "$SYS/events/error/store/store");
    assert_eq!(event["msg"], "store writes failed");
    assert!(
        event["details"]["failed_writes"].as_u64().unwrap() >= 1,
        "{event}"
    );
    tern.kill9();
}

#[tokio::test]
async fn a_connection_over_the_connect_rate_raises_an_event_naming_the_address() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_connect_rate = 1;
        c.limits.connect_burst = 1;
    });
    // the subscriber's own connection takes the one token
    let mut events = sys_subscriber(broker.addr, "ops", &["$SYS/events/warning/client/#"]).await;
    // one a second: of these quick attempts, all but maybe one are refused
    let mut attempts = Vec::new();
    for i in 0..3 {
        let mut c = Raw::connect(broker.addr).await;
        c.send(&build::connect(4, &format!("late-{i}"), true, 60))
            .await;
        attempts.push(c);
    }
    let (topic, event) = next_json(&mut events, "$SYS/events/warning/client/").await;
    assert_eq!(topic, "$SYS/events/warning/client/127.0.0.1");
    assert_eq!(event["details"]["reason"], "connect rate");
}
