//! The S3 sink against a real S3-compatible server started by the test
//! (moto, `common::s3`): keys and contents of both strategies, retries
//! rewriting the same keys, `Retry` while the server or the bucket is
//! missing, and a key too long rejected alone.

mod common;

use std::time::Duration;

use broker::hub::s3::{S3Route, S3Sink, S3Strategy};
use broker::hub::sink::{DeliveryError, Outcome, RoutedMessage, Secret, Sink};
use bytes::Bytes;
use common::s3::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use common::{poll_until, PATIENCE};

fn route(server: &S3Server, bucket: &str, prefix: &str, strategy: S3Strategy) -> S3Route {
    route_at(server.endpoint(), bucket, prefix, strategy)
}

fn route_at(endpoint: String, bucket: &str, prefix: &str, strategy: S3Strategy) -> S3Route {
    S3Route {
        bucket: bucket.into(),
        region: "eu-west-3".into(),
        endpoint: Some(endpoint),
        prefix: prefix.into(),
        strategy,
        access_key_id: Some(Secret::Plain(ACCESS_KEY_ID.into())),
        secret_access_key: Some(Secret::Plain(SECRET_ACCESS_KEY.into())),
        max_batch: 32,
        concurrency: 8,
        timeout_ms: 10_000,
    }
}

fn message(seq: u64, topic: &str, payload: &str) -> RoutedMessage {
    RoutedMessage {
        seq,
        uid: 0xabc0 + seq,
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: 1,
        retain: false,
        client_id: "dev-1".into(),
        // 2026-12-05T07:15:00.000Z, one second per message.
        timestamp_ms: 1_796_454_900_000 + seq * 1000,
    }
}

fn is_retry(outcome: &Outcome) -> bool {
    matches!(outcome, Err(DeliveryError::Retry(_)))
}

#[tokio::test]
async fn per_topic_keeps_the_latest_payload_of_each_topic() {
    let server = S3Server::start();
    server.create_bucket("latest").await;
    let sink = S3Sink::new(&route(&server, "latest", "devices/", S3Strategy::PerTopic)).unwrap();
    assert_eq!(sink.target(), "s3://latest/devices/");
    assert_eq!(sink.max_batch(), 32);

    let batch = [
        message(1, "site/a/temp", "20.5"),
        message(2, "site/b/temp", "18"),
        message(3, "site/a/temp", "21.0"),
        message(4, "site/a/hum", "{\"rh\": 40}"),
    ];
    assert_eq!(sink.deliver(&batch).await, vec![Ok(()); 4]);
    assert_eq!(
        server.keys("latest", "").await,
        [
            "devices/site/a/hum",
            "devices/site/a/temp",
            "devices/site/b/temp"
        ]
    );
    assert_eq!(
        server.get("latest", "devices/site/a/temp").await.unwrap(),
        b"21.0"
    );
    assert_eq!(
        server.get("latest", "devices/site/b/temp").await.unwrap(),
        b"18"
    );
    assert_eq!(
        server.get("latest", "devices/site/a/hum").await.unwrap(),
        b"{\"rh\": 40}"
    );

    // A later batch overwrites; an empty payload is an empty object.
    let later = [
        message(5, "site/a/temp", "22"),
        message(6, "site/b/temp", ""),
    ];
    assert_eq!(sink.deliver(&later).await, vec![Ok(()); 2]);
    assert_eq!(
        server.get("latest", "devices/site/a/temp").await.unwrap(),
        b"22"
    );
    assert_eq!(
        server.get("latest", "devices/site/b/temp").await.unwrap(),
        b""
    );
    assert_eq!(server.keys("latest", "").await.len(), 3);
}

#[tokio::test]
async fn per_message_writes_one_object_per_message_and_a_retry_rewrites_the_same_keys() {
    let server = S3Server::start();
    server.create_bucket("archive").await;
    let sink = S3Sink::new(&route(&server, "archive", "raw/", S3Strategy::PerMessage)).unwrap();
    // More messages than puts in flight (8), binary payloads included.
    let batch: Vec<RoutedMessage> = (1..=30)
        .map(|i| {
            message(
                i,
                if i % 2 == 0 { "a/even" } else { "a/odd" },
                &format!("payload {i}"),
            )
        })
        .collect();
    assert_eq!(sink.deliver(&batch).await, vec![Ok(()); 30]);

    let keys = server.keys("archive", "raw/a/even/").await;
    assert_eq!(keys.len(), 15);
    // Time (UTC, sortable), then the seq and uid in hex.
    assert_eq!(
        keys[0],
        "raw/a/even/20261205T071502.000Z-0000000000000002000000000000abc2"
    );
    assert_eq!(
        keys[14],
        "raw/a/even/20261205T071530.000Z-000000000000001e000000000000abde"
    );
    assert_eq!(
        server.get("archive", &keys[14]).await.unwrap(),
        b"payload 30"
    );
    for (i, key) in server
        .keys("archive", "raw/a/odd/")
        .await
        .iter()
        .enumerate()
    {
        let seq = 2 * i as u64 + 1;
        assert_eq!(key, &sink.key(&message(seq, "a/odd", "")));
        assert_eq!(
            server.get("archive", key).await.unwrap(),
            format!("payload {seq}").as_bytes()
        );
    }

    // Delivered again (its outcome was lost): no new object.
    assert_eq!(sink.deliver(&batch[10..20]).await, vec![Ok(()); 10]);
    assert_eq!(server.keys("archive", "").await.len(), 30);
}

#[tokio::test]
async fn a_stopped_server_and_a_missing_bucket_are_retry_until_they_are_back() {
    let mut server = S3Server::start();
    // Credentials from files, as in production.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("id"), format!("{ACCESS_KEY_ID}\n")).unwrap();
    std::fs::write(dir.path().join("secret"), SECRET_ACCESS_KEY).unwrap();
    let mut config = route(&server, "later", "", S3Strategy::PerMessage);
    config.access_key_id = Some(Secret::File {
        file: dir.path().join("id"),
    });
    config.secret_access_key = Some(Secret::File {
        file: dir.path().join("secret"),
    });
    let sink = S3Sink::new(&config).unwrap();
    let batch = [message(1, "t", "one"), message(2, "t", "two")];

    // NoSuchBucket concerns every message: Retry, not a dead letter.
    let outcomes = sink.deliver(&batch).await;
    match &outcomes[0] {
        Err(DeliveryError::Retry(e)) => assert!(e.contains("NoSuchBucket"), "{e}"),
        other => panic!("{other:?}"),
    }
    server.create_bucket("later").await;
    assert_eq!(sink.deliver(&batch[..1]).await, vec![Ok(())]);

    server.stop();
    let outcomes = sink.deliver(&batch).await;
    assert!(outcomes.iter().all(is_retry), "{outcomes:?}");

    // moto keeps nothing across a restart: the bucket is made again.
    server.start_again();
    server.create_bucket("later").await;
    let delivered = poll_until(PATIENCE, Duration::from_millis(100), async || {
        sink.deliver(&batch).await.iter().all(Result::is_ok)
    })
    .await;
    assert!(
        delivered,
        "not delivered after the restart: {}",
        server.log()
    );
    let keys = server.keys("later", "t/").await;
    assert_eq!(keys, [sink.key(&batch[0]), sink.key(&batch[1])]);
    assert_eq!(server.get("later", &keys[1]).await.unwrap(), b"two");
}

#[tokio::test]
async fn a_key_longer_than_s3_allows_is_rejected_alone() {
    let server = S3Server::start();
    server.create_bucket("bkt").await;
    let sink = S3Sink::new(&route(&server, "bkt", "", S3Strategy::PerTopic)).unwrap();
    let long_topic = format!("t/{}", "x".repeat(1100));
    let batch = [
        message(1, "t/ok", "1"),
        message(2, &long_topic, "2"),
        message(3, "t/ok2", "3"),
    ];
    let outcomes = sink.deliver(&batch).await;
    assert_eq!(outcomes[0], Ok(()));
    match &outcomes[1] {
        Err(DeliveryError::Reject(e)) => {
            assert!(e.contains("S3 keys are at most 1024 bytes"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(outcomes[2], Ok(()));
    assert_eq!(server.keys("bkt", "").await, ["t/ok", "t/ok2"]);

    // per_topic: a message superseded by a rejected one of its topic is
    // retried, not dead-lettered with the other's error.
    let superseded = [message(4, &long_topic, "4"), message(5, &long_topic, "5")];
    let outcomes = sink.deliver(&superseded).await;
    assert!(is_retry(&outcomes[0]), "{outcomes:?}");
    assert!(
        matches!(outcomes[1], Err(DeliveryError::Reject(_))),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retry() {
    let port = common::process::free_port();
    let config = route_at(
        format!("http://127.0.0.1:{port}"),
        "b",
        "",
        S3Strategy::PerTopic,
    );
    let sink = S3Sink::new(&config).unwrap();
    let outcomes = sink
        .deliver(&[message(1, "a", "x"), message(2, "b", "y")])
        .await;
    assert_eq!(outcomes.len(), 2);
    for outcome in &outcomes {
        match outcome {
            Err(DeliveryError::Retry(e)) => {
                assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
}
