//! Crash tests: a `tern` process is killed with SIGKILL while QoS 1 and QoS 2
//! messages flow to a persistent subscriber. After a restart on the same data
//! directory the subscriber, reconnecting without subscribing again, gets
//! every message whose PUBACK / PUBREC the publisher received: QoS 1 at least
//! once, QoS 2 exactly once.

mod common;

use std::time::Duration;

use broker::codec::Packet;
use common::flow::{check, publish_until_broken, Acked, App};
use common::process::{free_port, TernProcess};
use common::{build, Raw};
use rand::Rng;

async fn crash_cycles(subscriber_online: bool) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let broker = TernProcess::start(&data, port, &[]);
    let addr = broker.addr;

    let mut s = App::connect(addr, "crash-sub", false).await;
    s.send(&build::subscribe(1, &[("crash/q1", 1), ("crash/q2", 2)]))
        .await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::suback(1, &[1, 2]));
    let mut app = App::default();
    let mut all = Acked::default();
    let mut broker = Some(broker);
    let mut rng = rand::thread_rng();
    let mut subscriber = if subscriber_online {
        Some(s)
    } else {
        s.send(&build::disconnect()).await;
        s.expect_closed().await;
        None
    };

    for cycle in 0..3u32 {
        let kill_after = Duration::from_millis(rng.gen_range(150..700));
        let publisher = tokio::spawn(publish_until_broken(
            addr,
            "crash-pub",
            "crash",
            cycle * 1_000_000,
            200_000,
        ));
        if let Some(s) = subscriber.as_mut() {
            let _ = tokio::time::timeout(kill_after, app.drain(s, kill_after)).await;
        } else {
            tokio::time::sleep(kill_after).await;
        }
        broker.take().unwrap().kill9();
        let acked = publisher.await.unwrap();
        assert!(acked.sent > 0, "cycle {cycle}: publisher sent nothing");
        if let Some(mut s) = subscriber.take() {
            app.drain(&mut s, Duration::from_millis(200)).await;
        }
        all.qos1.extend(acked.qos1);
        all.qos2.extend(acked.qos2);
        all.sent += acked.sent;

        broker = Some(TernProcess::start(&data, port, &[]));
        // The session and its subscriptions survived: no SUBSCRIBE again.
        let mut s = App::connect(addr, "crash-sub", true).await;
        app.drain(&mut s, Duration::from_millis(1500)).await;
        check(&app, &all);
        if subscriber_online {
            subscriber = Some(s);
        } else {
            s.send(&build::disconnect()).await;
            s.expect_closed().await;
        }
    }
    assert!(
        !all.qos1.is_empty() && !all.qos2.is_empty(),
        "the workload acknowledged messages before the kills: {all:?}"
    );

    // Subscriptions are intact: a new message arrives without resubscribing.
    let mut s = match subscriber.take() {
        Some(s) => s,
        None => App::connect(addr, "crash-sub", true).await,
    };
    let mut p = Raw::mqtt(addr, "after", true).await;
    p.send(&build::publish(
        "crash/q1",
        1,
        false,
        false,
        1,
        &u32::MAX.to_be_bytes(),
    ))
    .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(1));
    app.drain(&mut s, Duration::from_millis(500)).await;
    assert!(app.qos1.contains_key(&u32::MAX));
    eprintln!(
        "crash test: {} sent, {} QoS 1 and {} QoS 2 acknowledged, all delivered; {} QoS 1 duplicates",
        all.sent,
        all.qos1.len(),
        all.qos2.len(),
        app.qos1.values().filter(|n| **n > 1).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_offline_persistent_subscriber_loses_no_acknowledged_message() {
    crash_cycles(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_online_persistent_subscriber_loses_nothing_and_duplicates_no_qos2() {
    crash_cycles(true).await;
}

/// `tern` is killed right after each SUBACK of a persistent session; after a
/// restart on the same data directory, a QoS 1 message published to the
/// filter reaches the subscriber when it reconnects without subscribing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_suback_before_subscription_on_disk() {
    // postmortem: SUBSCRIBE of a persistent session submitted its
    // PutSubscription (and the CONNECT its PutSession) to the group-commit
    // writer without a durability callback and sent SUBACK at once. The
    // write reached the disk with the next fsync of someone else or sled's
    // 500 ms background flush, so a crash just after the SUBACK lost the
    // subscription the client was told it had, and the messages published
    // to it later. The SUBACK now waits for the fsync of its subscriptions.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    for round in 0..5 {
        let client_id = format!("suback-{round}");
        let topic = format!("suback/{round}");
        let broker = TernProcess::start(&data, port, &[]);
        let mut s = App::connect(broker.addr, &client_id, false).await;
        s.send(&build::subscribe(1, &[(&topic, 1)])).await;
        assert_eq!(s.recv_bytes().await.unwrap(), build::suback(1, &[1]));
        broker.kill9();
        drop(s);

        let broker = TernProcess::start(&data, port, &[]);
        let mut p = Raw::mqtt(broker.addr, &format!("pub-{round}"), true).await;
        p.send(&build::publish(&topic, 1, false, false, 1, b"after crash"))
            .await;
        assert_eq!(p.recv_bytes().await.unwrap(), build::puback(1));

        let mut s = Raw::connect(broker.addr).await;
        s.send(&build::connect(4, &client_id, false, 60)).await;
        assert_eq!(
            s.recv_bytes().await.unwrap(),
            build::connack(true, 0),
            "round {round}: the session acknowledged by SUBACK survives the crash"
        );
        match s.recv().await {
            Some(Packet::Publish(got)) => {
                assert_eq!(&got.topic[..], topic.as_str(), "round {round}");
                assert_eq!(&got.payload[..], b"after crash", "round {round}");
            }
            other => panic!("round {round}: expected the queued PUBLISH, got {other:?}"),
        }
        broker.kill9();
    }
}
