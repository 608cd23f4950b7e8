//! Hibernating idle sessions (`session/hibernate.rs`, issue 15): a real
//! broker with `mqtt.hibernate_after_secs = 1`, raw clients over real
//! sockets, and the node's `/metrics` to see who sleeps. Each test lets
//! its sessions fall asleep, then wakes them every way a session can be
//! woken and checks that nothing is lost or changed: a message for it, a
//! packet from the client (also one split across the sleep), PINGREQ
//! (answered without waking), the client closing, a takeover, the
//! keep-alive running out.

mod common;

use broker::codec::Packet;
use common::http::{eventually, scrape};
use common::{build, build::prop, with_http, Raw, TestBroker};

fn hibernating_broker() -> TestBroker {
    TestBroker::start_with(|c| {
        with_http(c);
        c.mqtt.hibernate_after_secs = 1;
    })
}

async fn metric(broker: &TestBroker, name: &str) -> f64 {
    scrape(broker.http_addr()).await.value(name, &[])
}

/// Waits until `n` sessions hibernate.
async fn asleep(broker: &TestBroker, n: f64) {
    eventually(|| async { metric(broker, "tern_sessions_hibernating").await == n }).await;
}

/// Reads one PUBLISH and acknowledges it if QoS 1; returns its payload.
async fn receive(c: &mut Raw) -> Vec<u8> {
    match c.recv().await {
        Some(Packet::Publish(p)) => {
            if let Some(id) = p.packet_id {
                c.send(&build::puback(id)).await;
            }
            p.payload.to_vec()
        }
        other => panic!("PUBLISH expected, got {other:?}"),
    }
}

#[tokio::test]
async fn idle_sessions_sleep_answer_pingreq_asleep_and_wake_for_a_message() {
    let broker = hibernating_broker();
    let mut v3 = Raw::mqtt(broker.addr, "sleepy-v3", true).await;
    let mut v5 = Raw::mqtt5(broker.addr, "sleepy-v5", true, &[]).await;
    v3.send(&build::subscribe(1, &[("sleepy/+", 1)])).await;
    assert_eq!(v3.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    v5.send(&build::subscribe5(1, &[], &[("sleepy/+", 1)]))
        .await;
    assert!(matches!(v5.recv().await, Some(Packet::SubAck(_))));
    asleep(&broker, 2.0).await;
    assert_eq!(
        metric(&broker, "tern_session_hibernations_total").await,
        2.0
    );

    // PINGREQ is answered by the poller: the sessions stay asleep.
    for c in [&mut v3, &mut v5] {
        c.send(&build::pingreq()).await;
        assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());
    }
    assert_eq!(metric(&broker, "tern_hibernating_pings_total").await, 2.0);
    assert_eq!(metric(&broker, "tern_sessions_hibernating").await, 2.0);
    assert_eq!(metric(&broker, "tern_session_wakes_total").await, 0.0);

    // A message wakes them; both get it, then fall asleep again.
    let mut publisher = Raw::mqtt(broker.addr, "sleepy-pub", true).await;
    publisher
        .send(&build::publish("sleepy/a", 1, false, false, 1, b"wake up"))
        .await;
    assert_eq!(publisher.recv_bytes().await.unwrap(), build::puback(1));
    assert_eq!(receive(&mut v3).await, b"wake up");
    assert_eq!(receive(&mut v5).await, b"wake up");
    assert_eq!(metric(&broker, "tern_session_wakes_total").await, 2.0);
    // each wake's time on its worker is counted
    assert_eq!(
        metric(&broker, "tern_session_wake_seconds_count").await,
        2.0
    );
    assert!(metric(&broker, "tern_session_wake_seconds_sum").await > 0.0);
    // The publisher sleeps too now: three.
    asleep(&broker, 3.0).await;
    // QoS 0 wakes them as well, in order.
    for i in 0..2u8 {
        publisher
            .send(&build::publish("sleepy/b", 0, false, false, 0, &[i]))
            .await;
    }
    for c in [&mut v3, &mut v5] {
        assert_eq!(receive(c).await, [0]);
        assert_eq!(receive(c).await, [1]);
    }
    // Nothing else arrives, and the sessions are still subscribed.
    v3.expect_silence().await;
    v5.expect_silence().await;
}

#[tokio::test]
async fn a_packet_from_a_sleeping_client_wakes_it_even_split_across_the_sleep() {
    let broker = hibernating_broker();
    let mut c = Raw::mqtt(broker.addr, "split-pub", true).await;
    let mut watcher = Raw::mqtt(broker.addr, "split-watch", true).await;
    watcher.send(&build::subscribe(1, &[("split/#", 0)])).await;
    assert_eq!(watcher.recv_bytes().await.unwrap(), build::suback(1, &[0]));
    asleep(&broker, 2.0).await;
    // Half a PUBLISH (a PINGREQ first, answered asleep), then the rest.
    let publish = build::publish("split/t", 1, false, false, 7, b"in two parts");
    let (head, tail) = publish.split_at(5);
    let mut first = build::pingreq();
    first.extend_from_slice(head);
    c.send(&first).await;
    // The poller sees more than PINGREQ: the session wakes and answers it.
    assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());
    c.send(tail).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::puback(7));
    assert_eq!(receive(&mut watcher).await, b"in two parts");
}

#[tokio::test]
async fn a_client_closing_while_asleep_publishes_its_will_and_a_takeover_resumes_the_session() {
    let broker = hibernating_broker();
    let mut watcher = Raw::mqtt(broker.addr, "will-watch", true).await;
    watcher.send(&build::subscribe(1, &[("wills/#", 1)])).await;
    assert_eq!(watcher.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    let mut dying = Raw::connect(broker.addr).await;
    dying
        .send(&build::connect_full(
            4,
            "will-client",
            true,
            60,
            Some(("wills/gone", b"bye", 1, false)),
            None,
            None,
        ))
        .await;
    assert_eq!(dying.recv_bytes().await.unwrap(), build::connack(false, 0));
    // A persistent session, taken over while asleep.
    let mut first = Raw::mqtt(broker.addr, "taken-over", false).await;
    first.send(&build::subscribe(1, &[("taken/#", 1)])).await;
    assert_eq!(first.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    asleep(&broker, 3.0).await;

    drop(dying);
    assert_eq!(receive(&mut watcher).await, b"bye");

    let mut second = Raw::connect(broker.addr).await;
    second
        .send(&build::connect(4, "taken-over", false, 60))
        .await;
    assert_eq!(second.recv_bytes().await.unwrap(), build::connack(true, 0));
    first.expect_closed().await;
    let mut publisher = Raw::mqtt(broker.addr, "taken-pub", true).await;
    publisher
        .send(&build::publish(
            "taken/x",
            1,
            false,
            false,
            1,
            b"still subscribed",
        ))
        .await;
    assert_eq!(publisher.recv_bytes().await.unwrap(), build::puback(1));
    assert_eq!(receive(&mut second).await, b"still subscribed");
}

#[tokio::test]
async fn a_sleeping_persistent_session_queues_after_disconnect_and_keep_alive_still_expires() {
    let broker = hibernating_broker();
    let mut watcher = Raw::mqtt(broker.addr, "ka-watch", true).await;
    watcher.send(&build::subscribe(1, &[("ka/#", 1)])).await;
    assert_eq!(watcher.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    // Keep Alive 2 s: closed 3 s after its last packet, asleep or not.
    let mut silent = Raw::connect(broker.addr).await;
    silent
        .send(&build::connect_full(
            4,
            "ka-silent",
            true,
            2,
            Some(("ka/expired", b"timed out", 1, false)),
            None,
            None,
        ))
        .await;
    assert_eq!(silent.recv_bytes().await.unwrap(), build::connack(false, 0));
    let mut persistent = Raw::mqtt(broker.addr, "pq-sleeper", false).await;
    persistent.send(&build::subscribe(1, &[("pq/#", 1)])).await;
    assert_eq!(
        persistent.recv_bytes().await.unwrap(),
        build::suback(1, &[1])
    );
    asleep(&broker, 3.0).await;

    silent.expect_closed().await;
    assert_eq!(receive(&mut watcher).await, b"timed out");

    // DISCONNECT while asleep: the session goes offline and queues.
    persistent.send(&build::disconnect()).await;
    persistent.expect_closed().await;
    let mut publisher = Raw::mqtt(broker.addr, "pq-pub", true).await;
    for i in 1..=3u16 {
        publisher
            .send(&build::publish("pq/x", 1, false, false, i, &[i as u8]))
            .await;
        assert_eq!(publisher.recv_bytes().await.unwrap(), build::puback(i));
    }
    let mut back = Raw::connect(broker.addr).await;
    back.send(&build::connect(4, "pq-sleeper", false, 60)).await;
    assert_eq!(back.recv_bytes().await.unwrap(), build::connack(true, 0));
    for i in 1..=3u8 {
        assert_eq!(receive(&mut back).await, [i]);
    }
}

/// Publishes at QoS 1 with Topic Alias `alias` (and `topic`, empty to use
/// the alias alone); waits for the PUBACK.
async fn publish_aliased(c: &mut Raw, topic: &str, alias: u16, id: u16, payload: &[u8]) {
    let props = prop::u16(prop::TOPIC_ALIAS, alias);
    c.send(&build::publish5(topic, 1, false, id, &props, payload))
        .await;
    assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));
}

/// Reads one PUBLISH, acknowledges it if QoS 1; returns its topic and payload.
async fn receive_on(c: &mut Raw) -> (String, Vec<u8>) {
    match c.recv().await {
        Some(Packet::Publish(m)) => {
            if let Some(id) = m.packet_id {
                c.send(&build::puback(id)).await;
            }
            (m.topic.to_string(), m.payload.to_vec())
        }
        other => panic!("PUBLISH expected, got {other:?}"),
    }
}

/// What a sleeping session keeps outside its compact bed (the rarely set
/// fields, boxed together) comes back when it wakes: the topic aliases a
/// 5.0 client set, the broker's Topic Alias Maximum for one that set none
/// yet, and a will.
#[tokio::test]
async fn a_topic_alias_and_a_will_set_before_the_sleep_hold_after_it() {
    let broker = TestBroker::start_with(|c| {
        with_http(c);
        c.mqtt.hibernate_after_secs = 1;
        c.mqtt.max_topic_alias = 4;
    });
    let mut watcher = Raw::mqtt(broker.addr, "alias-watch", true).await;
    watcher.send(&build::subscribe(1, &[("alias/#", 1)])).await;
    assert_eq!(watcher.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    let mut p = Raw::connect(broker.addr).await;
    p.version = broker::codec::ProtocolVersion::V5;
    p.send(&build::connect5_will(
        "alias-pub",
        true,
        60,
        &[],
        ("alias/will", b"gone", 0, false),
        &[],
    ))
    .await;
    assert!(matches!(p.recv().await, Some(Packet::ConnAck(_))));
    // This one sets its first alias only after a sleep.
    let mut late = Raw::mqtt5(broker.addr, "alias-late", true, &[]).await;
    publish_aliased(&mut p, "alias/one", 1, 1, b"set").await;
    assert_eq!(receive(&mut watcher).await, b"set");
    asleep(&broker, 3.0).await;

    // The alias alone names the topic after the wake.
    publish_aliased(&mut p, "", 1, 2, b"use").await;
    assert_eq!(
        receive_on(&mut watcher).await,
        ("alias/one".into(), b"use".to_vec())
    );
    // The broker's Topic Alias Maximum still holds for a connection that
    // fell asleep before using an alias.
    publish_aliased(&mut late, "alias/late", 4, 1, b"late set").await;
    publish_aliased(&mut late, "", 4, 2, b"late use").await;
    for payload in [&b"late set"[..], b"late use"] {
        assert_eq!(
            receive_on(&mut watcher).await,
            ("alias/late".into(), payload.to_vec())
        );
    }
    // Asleep again, then closed without DISCONNECT: the will goes out.
    asleep(&broker, 3.0).await;
    drop(p);
    assert_eq!(
        receive_on(&mut watcher).await,
        ("alias/will".into(), b"gone".to_vec())
    );
}
