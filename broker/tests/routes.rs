//! IoT hub routes end to end, with a real HTTP server as the REST target:
//! what arrives (body and headers), a target that is down (messages wait,
//! none is lost, route error and recovery events), a backlog that survives
//! `kill -9`, a rejected message in the dead letter topic, and the two
//! overflow policies.
//!
//! Helpers are in `common/hub.rs`, for the PostgreSQL and S3 tests too.

mod common;

use std::collections::BTreeSet;

use common::hub::{next_json, publish_acked, rest_route, sys_subscriber, HttpTarget, POLL};
use common::process::{free_port, TernProcess};
use common::{build, check_for, Raw, TestBroker, PATIENCE, QUIET};

#[tokio::test]
async fn rest_route_delivers_payload_and_headers_of_matching_messages() {
    let target = HttpTarget::start().await;
    let route = rest_route(
        "to-api",
        "plant/+/temp",
        &target.url("/ingest"),
        serde_json::json!({ "headers": { "Authorization": "Bearer t0ken" } }),
    );
    let broker = TestBroker::start_with(|c| c.routes = vec![route]);
    let mut p = Raw::mqtt(broker.addr, "sensor-1", true).await;
    publish_acked(&mut p, "plant/a/temp", 7, b"21.5").await;
    p.send(&build::publish(
        "plant/b/humidity",
        0,
        false,
        false,
        0,
        b"no",
    ))
    .await;
    p.send(&build::publish("plant/c/temp", 0, true, false, 0, b"q0"))
        .await;

    let arrived = check_for(PATIENCE, POLL, || target.received().len() >= 2).await;
    assert!(arrived, "received: {:?}", target.bodies());
    let got = target.received();
    let first = &got[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/ingest");
    assert_eq!(&first.body[..], b"21.5");
    assert_eq!(first.header("X-MQTT-Topic"), "plant/a/temp");
    assert_eq!(first.header("X-MQTT-QoS"), "1");
    assert_eq!(first.header("X-MQTT-Retain"), "0");
    assert_eq!(first.header("X-MQTT-Client-Id"), "sensor-1");
    assert_eq!(first.header("Authorization"), "Bearer t0ken");
    // Idempotency-Key: <node>-<route>-<seq>; node 0 when not clustered
    let key = first.header("Idempotency-Key");
    let seq = key.strip_prefix("0-to-api-").expect(key);
    assert!(seq.parse::<u64>().is_ok(), "{key}");
    let second = &got[1];
    assert_eq!(&second.body[..], b"q0");
    assert_eq!(second.header("X-MQTT-QoS"), "0");
    assert_eq!(second.header("X-MQTT-Retain"), "1");
    assert_ne!(second.header("Idempotency-Key"), key);
    // the humidity topic does not match: nothing more comes
    tokio::time::sleep(QUIET).await;
    assert_eq!(target.received().len(), 2, "{:?}", target.bodies());
}

#[tokio::test]
async fn target_down_messages_wait_none_is_lost_and_events_report_error_and_recovery() {
    let mut target = HttpTarget::start().await;
    let route = rest_route("r1", "d/#", &target.url("/"), serde_json::json!({}));
    let broker = TestBroker::start_with(|c| c.routes = vec![route]);
    let mut events = sys_subscriber(broker.addr, "ops", &["$SYS/events/#"]).await;
    target.stop().await;

    let mut p = Raw::mqtt(broker.addr, "dev", true).await;
    let n = 30u16;
    for i in 1..=n {
        let topic = format!("d/{}", i % 3);
        publish_acked(&mut p, &topic, i, format!("m{i}").as_bytes()).await;
    }
    let (topic, error) = next_json(&mut events, "$SYS/events/error/route/").await;
    assert_eq!(topic, "$SYS/events/error/route/r1");
    assert_eq!(error["severity"], "error");
    assert_eq!(error["object_type"], "route");
    assert_eq!(error["object_id"], "r1");
    assert!(error["time"].as_str().unwrap().ends_with('Z'), "{error}");
    let text = error["details"]["error"].as_str().unwrap();
    assert!(text.contains("connect"), "{error}");
    assert!(target.received().is_empty());

    target.resume().await;
    let all = check_for(PATIENCE, POLL, || target.received().len() >= n as usize).await;
    assert!(all, "only {:?}", target.bodies());
    let (topic, recovered) = next_json(&mut events, "$SYS/events/info/route/").await;
    assert_eq!(topic, "$SYS/events/info/route/r1");
    assert_eq!(recovered["severity"], "info");

    let bodies = target.bodies();
    let distinct: BTreeSet<_> = bodies.iter().cloned().collect();
    let expected: BTreeSet<_> = (1..=n).map(|i| format!("m{i}")).collect();
    assert_eq!(distinct, expected, "every message arrived");
    // per topic, in publish order
    for t in 0..3u16 {
        let topic = format!("d/{t}");
        let order: Vec<u16> = target
            .received()
            .iter()
            .filter(|r| r.header("X-MQTT-Topic") == topic)
            .map(|r| String::from_utf8_lossy(&r.body[1..]).parse().unwrap())
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let mut seen = order.clone();
        seen.dedup();
        assert_eq!(seen, sorted, "order of {topic}: {order:?}");
    }
}

#[tokio::test]
async fn a_backlog_survives_kill_9_and_is_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let target_port = free_port();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[[routes]]\nname = \"backlog\"\ntopic = \"k/#\"\ntype = \"rest\"\n\
             url = \"http://127.0.0.1:{target_port}/in\"\n\
             backoff_initial_ms = 20\nbackoff_max_ms = 200\nmax_attempts = 100000\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let port = free_port();
    // the target is down: everything stays queued
    let tern = TernProcess::start(&data, port, &["--config", &config]);
    let mut p = Raw::mqtt(tern.addr, "pub", true).await;
    let n = 50u16;
    for i in 1..=n {
        publish_acked(
            &mut p,
            &format!("k/{}", i % 5),
            i,
            format!("b{i}").as_bytes(),
        )
        .await;
    }
    tern.kill9();

    let target = HttpTarget::start_on(format!("127.0.0.1:{target_port}").parse().unwrap()).await;
    let tern = TernProcess::start(&data, port, &["--config", &config]);
    let all = check_for(PATIENCE, POLL, || target.received().len() >= n as usize).await;
    let distinct: BTreeSet<_> = target.bodies().into_iter().collect();
    let expected: BTreeSet<_> = (1..=n).map(|i| format!("b{i}")).collect();
    assert!(
        all && distinct == expected,
        "got {distinct:?}\nlog:\n{}",
        tern.log_text()
    );
    assert!(tern.log_text().contains("route backlog loaded"));
    tern.kill9();
}

#[tokio::test]
async fn a_message_the_target_rejects_goes_to_the_dead_letter_topic_with_the_error() {
    let target = HttpTarget::start().await;
    target.set_status(400);
    let route = rest_route("strict", "s/#", &target.url("/"), serde_json::json!({}));
    let broker = TestBroker::start_with(|c| c.routes = vec![route]);
    let mut dead = sys_subscriber(broker.addr, "ops", &["$SYS/routes/+/dead"]).await;
    let mut p = Raw::mqtt(broker.addr, "poison", true).await;
    publish_acked(&mut p, "s/1", 1, b"\x00bad").await;

    let (topic, letter) = next_json(&mut dead, "$SYS/routes/").await;
    assert_eq!(topic, "$SYS/routes/strict/dead");
    assert_eq!(letter["route"], "strict");
    assert_eq!(letter["topic"], "s/1");
    assert_eq!(letter["payload"], "AGJhZA==", "base64 of the payload");
    assert_eq!(letter["qos"], 1);
    assert_eq!(letter["client_id"], "poison");
    assert_eq!(letter["attempts"], 1, "a rejection is not retried");
    assert!(
        letter["error"].as_str().unwrap().contains("400"),
        "{letter}"
    );
    assert!(letter["timestamp"].as_str().unwrap().ends_with('Z'));
    // gone from the queue: once the target accepts again, nothing comes
    target.set_status(200);
    publish_acked(&mut p, "s/2", 2, b"good").await;
    let arrived = check_for(PATIENCE, POLL, || !target.received().is_empty()).await;
    assert!(arrived);
    assert_eq!(target.bodies(), ["good"]);
}

#[tokio::test]
async fn retries_end_in_the_dead_letter_topic_after_max_attempts() {
    let target = HttpTarget::start().await;
    target.set_status(503);
    let route = rest_route(
        "flaky",
        "f",
        &target.url("/"),
        serde_json::json!({ "max_attempts": 3 }),
    );
    let broker = TestBroker::start_with(|c| c.routes = vec![route]);
    let mut dead = sys_subscriber(broker.addr, "ops", &["$SYS/routes/flaky/dead"]).await;
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    publish_acked(&mut p, "f", 1, b"x").await;
    let (_, letter) = next_json(&mut dead, "$SYS/routes/flaky/dead").await;
    assert_eq!(letter["attempts"], 3);
    let error = letter["error"].as_str().unwrap();
    assert!(error.starts_with("after 3 attempts: HTTP 503"), "{error}");
}

#[tokio::test]
async fn overflow_drop_drops_past_max_queued_with_an_event() {
    let target = HttpTarget::start().await;
    let route = rest_route(
        "small",
        "o/#",
        &target.url("/"),
        serde_json::json!({ "max_queued": 2, "overflow": "drop", "paused": true }),
    );
    let broker = TestBroker::start_with(|c| c.routes = vec![route]);
    let mut events = sys_subscriber(broker.addr, "ops", &["$SYS/events/warning/route/#"]).await;
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    for i in 1..=3u16 {
        // acknowledged at once: a dropped message does not hold the publisher
        publish_acked(&mut p, "o/x", i, format!("{i}").as_bytes()).await;
    }
    let (topic, event) = next_json(&mut events, "$SYS/events/warning/route/").await;
    assert_eq!(topic, "$SYS/events/warning/route/small");
    assert_eq!(event["details"]["topic"], "o/x");
    assert_eq!(event["details"]["max_queued"], 2);
    assert!(target.received().is_empty(), "paused: nothing delivered");
}

#[tokio::test]
async fn overflow_backpressure_holds_the_publisher_until_the_queue_drains() {
    let mut target = HttpTarget::start().await;
    target.stop().await;
    let route = rest_route(
        "held",
        "h/#",
        &target.url("/"),
        serde_json::json!({ "max_queued": 1 }),
    );
    let broker = TestBroker::start_with(|c| {
        c.routes = vec![route];
        // long enough that only the drain can release the acknowledgement
        c.limits.backpressure_wait_secs = 600;
    });
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    publish_acked(&mut p, "h/1", 1, b"one").await;
    p.send(&build::publish("h/1", 1, false, false, 2, b"two"))
        .await;
    assert_eq!(
        p.recv_bytes_within(QUIET).await,
        None,
        "PUBACK held while the queue is full"
    );
    target.resume().await;
    let ack = p.recv_bytes().await.expect("PUBACK once the queue drains");
    assert_eq!(ack, build::puback(2));
    let all = check_for(PATIENCE, POLL, || target.received().len() == 2).await;
    assert!(all);
    assert_eq!(target.bodies(), ["one", "two"]);
}

#[test]
fn a_route_whose_target_cannot_be_built_stops_the_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.routes = vec![rest_route(
        "secret",
        "x",
        "http://127.0.0.1:9/",
        serde_json::json!({ "headers": { "Authorization": { "env": "TERN_TEST_UNSET_SECRET" } } }),
    )];
    let err = broker::server::start(config).err().expect("start-up fails");
    let text = format!("{err:#}");
    assert!(text.contains("route `secret`"), "{text}");
    assert!(text.contains("TERN_TEST_UNSET_SECRET"), "{text}");
}
