//! Limits that protect the broker, over real sockets: connect rate per
//! source address, topic levels, publish rate, the CONNECT timeout against a
//! trickle of bytes, slow consumers, and backpressure from a congested
//! subscriber to its publishers. The 10k-connection and memory tests are in
//! `stress.rs`.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use broker::codec::{Packet, ReasonCode};
use common::{build, Raw, TestBroker, PATIENCE};
use tokio::io::AsyncWriteExt;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Tries an MQTT connection from `source`; true if CONNACK 0 came back.
async fn try_mqtt(addr: std::net::SocketAddr, source: IpAddr, id: &str) -> bool {
    let Ok(mut c) = Raw::connect_from(addr, source, None).await else {
        return false;
    };
    if !c.try_send(&build::connect(4, id, true, 60)).await {
        return false;
    }
    c.recv_bytes().await == Some(build::connack(false, 0))
}

#[tokio::test]
async fn connect_rate_per_address_closes_excess_connections_before_connect() {
    let broker = TestBroker::start_with(|c| {
        c.limits.max_connect_rate = 1;
        c.limits.connect_burst = 3;
    });
    let start = Instant::now();
    let mut accepted = 0u64;
    for i in 0..10 {
        if try_mqtt(broker.addr, ip("127.0.0.1"), &format!("c{i}")).await {
            accepted += 1;
        }
    }
    let elapsed = start.elapsed().as_secs();
    // the burst, plus one a second for the time the loop took
    assert!(accepted >= 3, "{accepted}");
    assert!(accepted <= 3 + elapsed + 1, "{accepted} in {elapsed}s");
    assert!(accepted < 10);
    // another source address has its own bucket
    assert!(try_mqtt(broker.addr, ip("127.0.0.2"), "other").await);
}

#[tokio::test]
async fn topics_over_max_topic_levels_are_refused_v5() {
    let broker = TestBroker::start_with(|c| c.limits.max_topic_levels = 4);
    let mut c = Raw::mqtt5(broker.addr, "t", true, &[]).await;
    c.send(&build::subscribe5(
        1,
        &[],
        &[("a/b/c/d", 1), ("a/b/c/d/#", 1)],
    ))
    .await;
    match c.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.reason_codes,
            vec![ReasonCode::GrantedQoS1, ReasonCode::TopicFilterInvalid]
        ),
        other => panic!("{other:?}"),
    }
    c.send(&build::publish5("a/b/c/d/e", 1, false, 5, &[], b"x"))
        .await;
    // PUBACK 0x90 Topic Name invalid
    assert_eq!(c.recv_bytes().await.unwrap(), vec![0x40, 3, 0, 5, 0x90]);
    c.send(&build::publish5("a/b/c/d", 1, false, 6, &[], b"y"))
        .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(c.recv().await.unwrap());
    }
    assert!(
        got.iter()
            .any(|p| matches!(p, Packet::Publish(p) if p.payload.as_ref() == b"y")),
        "{got:?}"
    );
}

#[tokio::test]
async fn topics_over_max_topic_length_get_suback_0x80_v311() {
    let broker = TestBroker::start_with(|c| c.limits.max_topic_length = 8);
    let mut c = Raw::mqtt(broker.addr, "t", true).await;
    c.send(&build::subscribe(1, &[("short", 0), ("much/too/long", 0)]))
        .await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::suback(1, &[0, 0x80]));
}

#[tokio::test]
async fn publish_rate_slows_the_reader_and_drops_nothing() {
    const RATE: u32 = 20;
    const BURST: u32 = 5;
    const COUNT: usize = 40;
    let broker = TestBroker::start_with(|c| {
        c.limits.max_publish_rate = RATE;
        c.limits.publish_burst = BURST;
    });
    let mut s = Raw::mqtt(broker.addr, "s", true).await;
    s.send(&build::subscribe(1, &[("r", 1)])).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    let start = Instant::now();
    for i in 0..COUNT {
        p.send(&build::publish(
            "r",
            0,
            false,
            false,
            0,
            format!("{i}").as_bytes(),
        ))
        .await;
    }
    for i in 0..COUNT {
        assert_eq!(
            s.recv_bytes().await.unwrap(),
            build::publish("r", 0, false, false, 0, format!("{i}").as_bytes()),
            "message {i}"
        );
    }
    // A token bucket cannot pass COUNT messages faster than this: a lower
    // bound that follows from the rate, not a performance threshold.
    let floor = Duration::from_secs_f64((COUNT as u32 - BURST) as f64 / RATE as f64 * 0.9);
    assert!(
        start.elapsed() >= floor,
        "{:?} < {floor:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn connect_trickled_byte_by_byte_is_closed_at_the_connect_timeout() {
    let broker = TestBroker::start_with(|c| c.mqtt.connect_timeout_secs = 1);
    let connect = build::connect(4, "slowloris-client-id", true, 60);
    let mut c = Raw::connect(broker.addr).await;
    let start = Instant::now();
    let per_byte = Duration::from_millis(150);
    let mut closed_after = None;
    for (i, byte) in connect.iter().enumerate() {
        if c.stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(i);
            break;
        }
        // a read returning EOF means the broker closed
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(
            per_byte,
            tokio::io::AsyncReadExt::read(&mut c.stream, &mut b),
        )
        .await
        {
            closed_after = Some(i + 1);
            break;
        }
    }
    let sent = closed_after.expect("the broker closed the connection before the CONNECT was whole");
    assert!(sent < connect.len(), "{sent} of {} bytes", connect.len());
    assert!(start.elapsed() < PATIENCE);
}

#[tokio::test]
async fn slow_consumer_is_disconnected_and_others_keep_receiving() {
    let broker = TestBroker::start_with(|c| {
        c.mqtt.max_write_buffer = 64 * 1024;
        c.limits.slow_consumer_timeout_secs = 1;
    });
    let addr = broker.addr;
    // a subscriber that never reads, with a small receive buffer
    let mut stuck = Raw::connect_from(addr, ip("127.0.0.1"), Some(4096))
        .await
        .unwrap();
    stuck.send(&build::connect(4, "stuck", true, 0)).await;
    assert_eq!(stuck.recv_bytes().await.unwrap(), build::connack(false, 0));
    stuck.send(&build::subscribe(1, &[("flood", 0)])).await;
    assert_eq!(stuck.recv_bytes().await.unwrap(), build::suback(1, &[0]));
    let mut healthy = Raw::mqtt(addr, "healthy", true).await;
    healthy.send(&build::subscribe(1, &[("flood", 0)])).await;
    assert_eq!(healthy.recv_bytes().await.unwrap(), build::suback(1, &[0]));

    let publisher = tokio::spawn(async move {
        let mut p = Raw::mqtt(addr, "p", true).await;
        let payload = vec![7u8; 1024];
        let packet = build::publish("flood", 0, false, false, 0, &payload);
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            for _ in 0..64 {
                p.send(&packet).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    // the healthy subscriber keeps getting messages during the flood
    let mut received = 0;
    while !publisher.is_finished() {
        if healthy
            .recv_bytes_within(Duration::from_millis(500))
            .await
            .is_some()
        {
            received += 1;
        }
    }
    publisher.await.unwrap();
    assert!(received > 100, "healthy subscriber got {received}");
    // the stuck one was cut off: reading now drains what the kernel holds,
    // then the connection ends
    let end = Instant::now() + PATIENCE;
    let mut ended = false;
    while Instant::now() < end {
        let mut chunk = vec![0u8; 64 * 1024];
        match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read(&mut stuck.stream, &mut chunk),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                ended = true;
                break;
            }
            Ok(Ok(_)) => {}
            Err(_) => break,
        }
    }
    assert!(ended, "the slow consumer was not disconnected");
    // and the broker still serves new clients
    let mut c = Raw::mqtt(addr, "after", true).await;
    c.send(&build::pingreq()).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());
}

#[tokio::test]
async fn max_queued_bytes_drops_qos0_then_refuses_qos1_and_recovers_when_drained() {
    const PAYLOAD: usize = 4 * 1024;
    let broker = TestBroker::start_with(|c| c.limits.max_queued_bytes = 64 * 1024);
    let addr = broker.addr;
    // a persistent session that goes offline: its QoS 1 copies queue up
    let mut offline = Raw::mqtt(addr, "offline", false).await;
    offline.send(&build::subscribe(1, &[("q/#", 1)])).await;
    assert_eq!(offline.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    offline.send(&build::disconnect()).await;
    assert!(offline.expect_closed().await.is_empty());
    // an online QoS 0 subscriber
    let mut live = Raw::mqtt(addr, "live", true).await;
    live.send(&build::subscribe(1, &[("z", 0)])).await;
    assert_eq!(live.recv_bytes().await.unwrap(), build::suback(1, &[0]));

    let mut p = Raw::mqtt5(addr, "p", true, &[]).await;
    let payload = vec![1u8; PAYLOAD];
    let mut accepted = Vec::new();
    let mut refused = 0;
    for id in 1..=40u16 {
        p.send(&build::publish5("q/x", 1, false, id, &[], &payload))
            .await;
        let ack = p.recv_bytes().await.unwrap();
        match ack.as_slice() {
            [0x40, 2, ..] => accepted.push(id),
            // 0x97 Quota exceeded, with a reason string
            [0x40, _, _, _, 0x97, ..] => refused += 1,
            other => panic!("unexpected {other:02x?}"),
        }
    }
    assert!(
        !accepted.is_empty() && refused > 0,
        "{accepted:?}, {refused} refused"
    );
    assert!(
        accepted.len() * PAYLOAD <= 64 * 1024 + PAYLOAD,
        "{accepted:?}"
    );
    // over 7/8 of the cap, QoS 0 is dropped
    p.send(&build::publish5("z", 0, false, 0, &[], b"dropped"))
        .await;
    live.expect_silence().await;

    // the offline session gets what was queued, in order; acknowledging it
    // frees the bytes
    let mut offline = Raw::connect(addr).await;
    offline.send(&build::connect(4, "offline", false, 60)).await;
    assert_eq!(offline.recv_bytes().await.unwrap(), build::connack(true, 0));
    for (i, _) in accepted.iter().enumerate() {
        let packet_id = i as u16 + 1;
        assert_eq!(
            offline.recv_bytes().await.unwrap(),
            build::publish("q/x", 1, false, false, packet_id, &payload)
        );
        offline.send(&build::puback(packet_id)).await;
    }
    offline.expect_silence().await;
    p.send(&build::publish5("z", 0, false, 0, &[], b"flows"))
        .await;
    assert_eq!(
        live.recv_bytes().await.unwrap(),
        build::publish("z", 0, false, false, 0, b"flows")
    );
}

/// Publishes `count` QoS 1 messages on `topic` (payload: the message's
/// number, from 1), with at most `window` unacknowledged; counts PUBACKs in
/// `acked`. Bounded by 60 s.
fn publish_qos1(
    addr: std::net::SocketAddr,
    topic: &'static str,
    count: u16,
    window: u16,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        let mut p = Raw::mqtt(addr, "publisher", true).await;
        let end = Instant::now() + Duration::from_secs(60);
        let (mut sent, mut done) = (0u16, 0u16);
        while done < count {
            assert!(
                Instant::now() < end,
                "{done} of {count} acknowledged in 60 s"
            );
            while sent < count && sent - done < window {
                sent += 1;
                let payload = sent.to_string();
                p.send(&build::publish(
                    topic,
                    1,
                    false,
                    false,
                    sent,
                    payload.as_bytes(),
                ))
                .await;
            }
            if let Some(ack) = p.recv_bytes_within(Duration::from_millis(100)).await {
                assert_eq!(ack[0], 0x40, "PUBACK expected, got {ack:02x?}");
                done += 1;
                acked.store(usize::from(done), Ordering::Relaxed);
            }
        }
    })
}

/// Reads `count` QoS 1 PUBLISH packets, acknowledging each; returns their
/// payloads as numbers, in arrival order.
async fn receive_qos1(sub: &mut Raw, count: usize) -> Vec<u16> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        match sub.recv().await {
            Some(Packet::Publish(p)) => {
                sub.send(&build::puback(p.packet_id.unwrap())).await;
                got.push(std::str::from_utf8(&p.payload).unwrap().parse().unwrap());
            }
            other => panic!("PUBLISH {} expected, got {other:?}", got.len() + 1),
        }
    }
    got
}

/// A broker with a 10-message window and a 200-message queue per client,
/// backpressure at `queued` messages for at most `wait_secs`, and a QoS 1
/// subscriber to `bp/#` (3.1.1, clean session).
async fn backpressure_broker(queued: usize, wait_secs: u64) -> (TestBroker, Raw) {
    let broker = TestBroker::start_with(|c| {
        c.mqtt.max_inflight = 10;
        c.mqtt.max_queued_messages = 200;
        c.limits.backpressure_queued = queued;
        c.limits.backpressure_wait_secs = wait_secs;
    });
    let mut sub = Raw::mqtt(broker.addr, "subscriber", true).await;
    sub.send(&build::subscribe(1, &[("bp/#", 1)])).await;
    assert_eq!(sub.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    (broker, sub)
}

#[tokio::test]
async fn a_congested_subscriber_slows_publishers_down_and_loses_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const COUNT: u16 = 1000;
    // The subscriber's queue holds 200 messages: without backpressure, 800
    // of the 1000 would be dropped while it does not acknowledge.
    let (broker, mut sub) = backpressure_broker(50, 60).await;
    let addr = broker.addr;

    let acked = std::sync::Arc::new(AtomicUsize::new(0));
    let publisher = publish_qos1(addr, "bp/x", COUNT, 20, acked.clone());
    // The subscriber acknowledges nothing for a second: the broker sends it
    // 10 (its window), queues 50 and then holds the publisher's PUBACKs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early = acked.load(Ordering::Relaxed);
    // Copies not held are in flight (at most 10, none acknowledged), queued
    // or still in the subscriber's mailbox; routers count the last two, so
    // the 61st copy finds 50 and is held: at most 60 acknowledged.
    assert!(
        early <= 60,
        "{early} acknowledged while the subscriber was stuck"
    );

    let got = receive_qos1(&mut sub, usize::from(COUNT)).await;
    assert_eq!(
        got,
        (1..=COUNT).collect::<Vec<_>>(),
        "every message, in order"
    );
    publisher.await.unwrap();
    assert_eq!(acked.load(Ordering::Relaxed), usize::from(COUNT));
    sub.expect_silence().await;
}

#[tokio::test]
async fn a_subscriber_that_takes_nothing_holds_publishers_back_only_until_the_wait() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const COUNT: u16 = 100;
    let (broker, mut sub) = backpressure_broker(5, 1).await;
    let addr = broker.addr;

    // A subscriber that never acknowledges holds the publisher's PUBACKs
    // back for a second; then it is given up on (stalled) and the publisher
    // is acknowledged at once: every message is acknowledged.
    let acked = std::sync::Arc::new(AtomicUsize::new(0));
    publish_qos1(addr, "bp/y", COUNT, 20, acked.clone())
        .await
        .unwrap();
    assert_eq!(acked.load(Ordering::Relaxed), usize::from(COUNT));
    // and the copies stayed queued (below max_queued_messages): all arrive
    let got = receive_qos1(&mut sub, usize::from(COUNT)).await;
    assert_eq!(got, (1..=COUNT).collect::<Vec<_>>());
}
