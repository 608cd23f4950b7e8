//! S3 routes end to end: messages published over MQTT to a real `tern`
//! become objects in a real S3-compatible server (moto, `common::s3`):
//! both strategies' keys and contents; the store down for a while (error
//! event, messages wait, none lost), `kill -9` of tern with a backlog, and
//! a message whose key S3 cannot take in the dead letter topic.

mod common;

use std::collections::BTreeSet;

use common::hub::{next_json, publish_acked, sys_subscriber, POLL};
use common::process::{free_port, TernProcess};
use common::s3::{s3_route, S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use common::{poll_until, Raw, TestBroker, PATIENCE};

/// The contents of every object under `prefix`.
async fn contents(server: &S3Server, bucket: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for key in server.keys(bucket, prefix).await {
        let body = server.get(bucket, &key).await.unwrap_or_default();
        out.insert(String::from_utf8(body).unwrap());
    }
    out
}

async fn wait_for_objects(server: &S3Server, bucket: &str, prefix: &str, n: usize) -> bool {
    poll_until(PATIENCE, POLL, async || {
        server
            .try_keys(bucket, prefix)
            .await
            .is_some_and(|k| k.len() >= n)
    })
    .await
}

#[tokio::test]
async fn published_messages_become_objects_per_topic_and_per_message() {
    let server = S3Server::start();
    server.create_bucket("hub").await;
    let latest = s3_route("latest", "plant/#", &server, "hub", "latest/", "per_topic");
    let archive = s3_route(
        "archive",
        "plant/#",
        &server,
        "hub",
        "archive/",
        "per_message",
    );
    let broker = TestBroker::start_with(|c| c.routes = vec![latest, archive]);

    let mut p = Raw::mqtt(broker.addr, "sensor-1", true).await;
    for (i, (topic, payload)) in [
        ("plant/a/temp", "20.5"),
        ("plant/b/temp", "18"),
        ("plant/a/temp", "21.0"),
        ("other/x", "not routed"),
    ]
    .iter()
    .enumerate()
    {
        publish_acked(&mut p, topic, i as u16 + 1, payload.as_bytes()).await;
    }

    assert!(wait_for_objects(&server, "hub", "archive/", 3).await);
    let keys = server.keys("hub", "archive/").await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    let a: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("archive/plant/a/temp/"))
        .collect();
    assert_eq!(a.len(), 2, "{keys:?}");
    for key in &keys {
        // archive/<topic>/<yyyymmddThhmmss.mmmZ>-<32 hex digits>
        let name = key.rsplit('/').next().unwrap();
        let (time, suffix) = name.split_once('-').unwrap();
        assert_eq!(time.len(), 20, "{key}");
        assert!(
            time.starts_with("20") && time.as_bytes()[8] == b'T' && time.ends_with('Z'),
            "{key}"
        );
        assert_eq!(suffix.len(), 32, "{key}");
        assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
    }
    // Keys of one topic sort in publish order.
    assert_eq!(server.get("hub", a[0]).await.unwrap(), b"20.5");
    assert_eq!(server.get("hub", a[1]).await.unwrap(), b"21.0");

    let latest_done = poll_until(PATIENCE, POLL, async || {
        server.get("hub", "latest/plant/a/temp").await.as_deref() == Some(b"21.0".as_slice())
    })
    .await;
    assert!(latest_done, "{:?}", server.keys("hub", "latest/").await);
    assert_eq!(
        server.get("hub", "latest/plant/b/temp").await.unwrap(),
        b"18"
    );
    assert_eq!(server.keys("hub", "latest/").await.len(), 2);
}

#[tokio::test]
async fn store_down_messages_wait_with_an_error_event_and_none_is_lost() {
    let mut server = S3Server::start();
    server.create_bucket("hub").await;
    let route = s3_route("s3-down", "d/#", &server, "hub", "", "per_message");
    let broker = TestBroker::start_with(|c| c.routes = vec![route]);
    let mut events = sys_subscriber(broker.addr, "ops", &["$SYS/events/#"]).await;
    server.stop();

    let mut p = Raw::mqtt(broker.addr, "dev", true).await;
    let n = 30u16;
    for i in 1..=n {
        publish_acked(
            &mut p,
            &format!("d/{}", i % 3),
            i,
            format!("m{i}").as_bytes(),
        )
        .await;
    }
    let (topic, error) = next_json(&mut events, "$SYS/events/error/route/").await;
    assert_eq!(topic, "$SYS/events/error/route/s3-down");
    let text = error["details"]["error"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("127.0.0.1:{}", server.port)),
        "{error}"
    );

    // moto comes back empty: the bucket is made again.
    server.start_again();
    server.create_bucket("hub").await;
    assert!(wait_for_objects(&server, "hub", "d/", n as usize).await);
    let expected: BTreeSet<String> = (1..=n).map(|i| format!("m{i}")).collect();
    assert_eq!(contents(&server, "hub", "d/").await, expected);
    assert_eq!(
        server.keys("hub", "d/").await.len(),
        n as usize,
        "one object per message"
    );
    let (topic, _) = next_json(&mut events, "$SYS/events/info/route/").await;
    assert_eq!(topic, "$SYS/events/info/route/s3-down");
}

#[tokio::test]
async fn a_backlog_survives_kill_9_and_reaches_the_store_after_restart() {
    let mut server = S3Server::start();
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[[routes]]\nname = \"s3-backlog\"\ntopic = \"k/#\"\ntype = \"s3\"\n\
             bucket = \"hub\"\nendpoint = {:?}\nstrategy = \"per_message\"\n\
             access_key_id = {ACCESS_KEY_ID:?}\nsecret_access_key = {SECRET_ACCESS_KEY:?}\n\
             backoff_initial_ms = 20\nbackoff_max_ms = 200\nmax_attempts = 100000\n",
            server.endpoint()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let port = free_port();
    let tern = TernProcess::start(&data, port, &["--config", &config]);
    let mut p = Raw::mqtt(tern.addr, "pub", true).await;
    let n = 40u16;
    for i in 1..=n {
        publish_acked(
            &mut p,
            &format!("k/{}", i % 4),
            i,
            format!("b{i}").as_bytes(),
        )
        .await;
    }
    tern.kill9();

    server.start_again();
    server.create_bucket("hub").await;
    let tern = TernProcess::start(&data, port, &["--config", &config]);
    let all = wait_for_objects(&server, "hub", "k/", n as usize).await;
    let expected: BTreeSet<String> = (1..=n).map(|i| format!("b{i}")).collect();
    let got = contents(&server, "hub", "k/").await;
    assert!(
        all && got == expected,
        "got {got:?}\nlog:\n{}",
        tern.log_text()
    );
    tern.kill9();
}

#[tokio::test]
async fn a_message_whose_key_s3_cannot_take_goes_to_the_dead_letter_topic() {
    let server = S3Server::start();
    server.create_bucket("hub").await;
    let route = s3_route("keys", "long/#", &server, "hub", "", "per_topic");
    let broker = TestBroker::start_with(|c| c.routes = vec![route]);
    let mut dead = sys_subscriber(broker.addr, "ops", &["$SYS/routes/+/dead"]).await;
    let mut p = Raw::mqtt(broker.addr, "dev", true).await;
    let long = format!("long/{}", "x".repeat(1100));
    publish_acked(&mut p, &long, 1, b"too long a key").await;
    publish_acked(&mut p, "long/ok", 2, b"fine").await;

    let (topic, letter) = next_json(&mut dead, "$SYS/routes/").await;
    assert_eq!(topic, "$SYS/routes/keys/dead");
    assert_eq!(letter["topic"], long.as_str());
    assert_eq!(letter["attempts"], 1);
    assert!(
        letter["error"]
            .as_str()
            .unwrap()
            .contains("at most 1024 bytes"),
        "{letter}"
    );
    let stored = poll_until(PATIENCE, POLL, async || {
        server.get("hub", "long/ok").await.as_deref() == Some(b"fine".as_slice())
    })
    .await;
    assert!(stored);
}
