//! PUBLISH with QoS 0, 1 and 2 in both directions, acknowledgement flows,
//! packet ids, retransmission on reconnect, ordering and overlapping
//! subscriptions, over raw TCP. Each behaviour shared by 3.1 and 3.1.1 runs
//! for both (levels 3 and 4).

mod common;

use common::{build, Raw, TestBroker};

async fn subscriber(
    broker: &TestBroker,
    id: &str,
    clean: bool,
    level: u8,
    filters: &[(&str, u8)],
) -> Raw {
    let mut s = Raw::mqtt_level(broker.addr, id, clean, level).await;
    s.send(&build::subscribe(1, filters)).await;
    let granted: Vec<u8> = filters.iter().map(|(_, q)| *q).collect();
    assert_eq!(s.recv_bytes().await.unwrap(), build::suback(1, &granted));
    s
}

async fn qos0_reaches_subscriber(level: u8) {
    let broker = TestBroker::start();
    let mut s = subscriber(&broker, "s", true, level, &[("a/b", 0)]).await;
    let mut p = Raw::mqtt_level(broker.addr, "p", true, level).await;
    p.send(&build::publish("a/b", 0, false, false, 0, b"hello"))
        .await;
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("a/b", 0, false, false, 0, b"hello")
    );
    p.expect_silence().await;
}

#[tokio::test]
async fn qos0_publish_reaches_subscriber_v311() {
    qos0_reaches_subscriber(4).await;
}

#[tokio::test]
async fn qos0_publish_reaches_subscriber_v31() {
    qos0_reaches_subscriber(3).await;
}

async fn qos1_flow(level: u8) {
    let broker = TestBroker::start();
    let mut s = subscriber(&broker, "s", true, level, &[("q/1", 1)]).await;
    let mut p = Raw::mqtt_level(broker.addr, "p", true, level).await;
    p.send(&build::publish("q/1", 1, false, false, 77, b"one"))
        .await;
    // [MQTT-4.3.2-2] PUBACK with the publisher's packet id
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(77));
    // The broker picks its own packet id for the subscriber [MQTT-2.3.1-2].
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("q/1", 1, false, false, 1, b"one")
    );
    s.send(&build::puback(1)).await;
    s.expect_silence().await;
}

#[tokio::test]
async fn qos1_publish_is_acknowledged_and_delivered_v311() {
    qos1_flow(4).await;
}

#[tokio::test]
async fn qos1_publish_is_acknowledged_and_delivered_v31() {
    qos1_flow(3).await;
}

async fn qos2_flow(level: u8) {
    let broker = TestBroker::start();
    let mut s = subscriber(&broker, "s", true, level, &[("q/2", 2)]).await;
    let mut p = Raw::mqtt_level(broker.addr, "p", true, level).await;
    p.send(&build::publish("q/2", 2, false, false, 9, b"two"))
        .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::pubrec(9));
    // Method B: delivered on receipt; a resend before PUBREL is not delivered again.
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("q/2", 2, false, false, 1, b"two")
    );
    p.send(&build::publish("q/2", 2, false, true, 9, b"two"))
        .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::pubrec(9));
    p.send(&build::pubrel(9)).await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::pubcomp(9));
    // Outbound flow to the subscriber.
    s.send(&build::pubrec(1)).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::pubrel(1));
    s.send(&build::pubcomp(1)).await;
    s.expect_silence().await;
    // After PUBREL the same packet id starts a new message [MQTT-4.3.3-2].
    p.send(&build::publish("q/2", 2, false, false, 9, b"again"))
        .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::pubrec(9));
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("q/2", 2, false, false, 2, b"again")
    );
}

#[tokio::test]
async fn qos2_flow_in_both_directions_delivers_once_v311() {
    qos2_flow(4).await;
}

#[tokio::test]
async fn qos2_flow_in_both_directions_delivers_once_v31() {
    qos2_flow(3).await;
}

#[tokio::test]
async fn delivery_qos_is_the_lower_of_publish_and_subscription() {
    let broker = TestBroker::start();
    let mut s0 = subscriber(&broker, "s0", true, 4, &[("d", 0)]).await;
    let mut s1 = subscriber(&broker, "s1", true, 4, &[("d", 1)]).await;
    let mut s2 = subscriber(&broker, "s2", true, 4, &[("d", 2)]).await;
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    p.send(&build::publish("d", 2, false, false, 1, b"x")).await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::pubrec(1));
    assert_eq!(
        s0.recv_bytes().await.unwrap(),
        build::publish("d", 0, false, false, 0, b"x")
    );
    assert_eq!(
        s1.recv_bytes().await.unwrap(),
        build::publish("d", 1, false, false, 1, b"x")
    );
    assert_eq!(
        s2.recv_bytes().await.unwrap(),
        build::publish("d", 2, false, false, 1, b"x")
    );
    p.send(&build::publish("d", 1, false, false, 2, b"y")).await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(2));
    assert_eq!(
        s2.recv_bytes().await.unwrap(),
        build::publish("d", 1, false, false, 2, b"y")
    );
}

#[tokio::test]
async fn messages_from_one_publisher_arrive_in_order_mqtt_4_6_0_6() {
    let broker = TestBroker::start();
    let mut s = subscriber(&broker, "s", true, 4, &[("order", 1)]).await;
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    for i in 1..=200u16 {
        let qos = (i % 2) as u8;
        p.send(&build::publish(
            "order",
            qos,
            false,
            false,
            i,
            &i.to_be_bytes(),
        ))
        .await;
    }
    let mut expected_id = 1;
    for i in 1..=200u16 {
        let got = s.recv_bytes().await.unwrap();
        if i % 2 == 1 {
            assert_eq!(
                got,
                build::publish("order", 1, false, false, expected_id, &i.to_be_bytes())
            );
            s.send(&build::puback(expected_id)).await;
            expected_id += 1;
        } else {
            assert_eq!(
                got,
                build::publish("order", 0, false, false, 0, &i.to_be_bytes())
            );
        }
    }
    // PUBACKs come back in the order of the PUBLISH packets [MQTT-4.6.0-2].
    for i in (1..=200u16).filter(|i| i % 2 == 1) {
        assert_eq!(p.recv_bytes().await.unwrap(), build::puback(i));
    }
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    let broker = TestBroker::start();
    let mut s = subscriber(&broker, "s", true, 4, &[("o/#", 0), ("o/+", 2), ("o/x", 1)]).await;
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    p.send(&build::publish("o/x", 2, false, false, 5, b"m"))
        .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::pubrec(5));
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("o/x", 2, false, false, 1, b"m")
    );
    s.expect_silence().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_mqtt_3_10_4_1() {
    let broker = TestBroker::start();
    let mut s = subscriber(&broker, "s", true, 4, &[("u/1", 0), ("u/2", 0)]).await;
    s.send(&build::unsubscribe(2, &["u/1"])).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::unsuback(2));
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    p.send(&build::publish("u/1", 0, false, false, 0, b"gone"))
        .await;
    p.send(&build::publish("u/2", 0, false, false, 0, b"kept"))
        .await;
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("u/2", 0, false, false, 0, b"kept")
    );
    s.expect_silence().await;
}

#[tokio::test]
async fn unacknowledged_qos1_is_resent_with_dup_on_reconnect_mqtt_4_4_0_1() {
    let broker = TestBroker::start();
    let mut s = subscriber(&broker, "s", false, 4, &[("r", 1)]).await;
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    p.send(&build::publish("r", 1, false, false, 3, b"again"))
        .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(3));
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("r", 1, false, false, 1, b"again")
    );
    drop(s); // no PUBACK

    let mut s = Raw::connect(broker.addr).await;
    s.send(&build::connect(4, "s", false, 60)).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::connack(true, 0));
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("r", 1, false, true, 1, b"again")
    );
    s.send(&build::puback(1)).await;
    s.expect_silence().await;
}

#[tokio::test]
async fn qos2_pubrel_is_resent_on_reconnect_after_pubrec() {
    let broker = TestBroker::start();
    let mut s = subscriber(&broker, "s", false, 4, &[("r2", 2)]).await;
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    p.send(&build::publish("r2", 2, false, false, 3, b"x"))
        .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::pubrec(3));
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("r2", 2, false, false, 1, b"x")
    );
    s.send(&build::pubrec(1)).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::pubrel(1));
    drop(s); // no PUBCOMP

    let mut s = Raw::connect(broker.addr).await;
    s.send(&build::connect(4, "s", false, 60)).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::connack(true, 0));
    assert_eq!(s.recv_bytes().await.unwrap(), build::pubrel(1));
    s.send(&build::pubcomp(1)).await;
    s.expect_silence().await;
}

#[tokio::test]
async fn offline_persistent_session_gets_queued_messages_in_order() {
    let broker = TestBroker::start();
    let mut s = subscriber(&broker, "s", false, 4, &[("off/+", 2)]).await;
    s.send(&build::disconnect()).await;
    s.expect_closed().await;
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    for i in 1..=10u16 {
        p.send(&build::publish(
            "off/x",
            (i % 3) as u8,
            false,
            false,
            i,
            &i.to_be_bytes(),
        ))
        .await;
    }
    p.send(&build::pingreq()).await;
    loop {
        if p.recv_bytes().await.unwrap() == build::pingresp() {
            break;
        }
    }
    let mut s = Raw::connect(broker.addr).await;
    s.send(&build::connect(4, "s", false, 60)).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::connack(true, 0));
    // QoS 0 messages are not queued for offline sessions; QoS 1 and 2 are, in order.
    for (packet_id, i) in (1..).zip((1..=10u16).filter(|i| i % 3 != 0)) {
        let qos = (i % 3) as u8;
        assert_eq!(
            s.recv_bytes().await.unwrap(),
            build::publish("off/x", qos, false, false, packet_id, &i.to_be_bytes())
        );
    }
}

#[tokio::test]
async fn full_queue_keeps_the_oldest_messages_and_drops_new_ones() {
    let broker = TestBroker::start_with(|c| c.mqtt.max_queued_messages = 3);
    let mut s = subscriber(&broker, "s", false, 4, &[("full", 1)]).await;
    s.send(&build::disconnect()).await;
    s.expect_closed().await;
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    for i in 1..=6u16 {
        p.send(&build::publish("full", 1, false, false, i, &[i as u8]))
            .await;
        // Publishers are acknowledged whatever the queue of a subscriber.
        assert_eq!(p.recv_bytes().await.unwrap(), build::puback(i));
    }
    let mut s = Raw::connect(broker.addr).await;
    s.send(&build::connect(4, "s", false, 60)).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::connack(true, 0));
    for i in 1..=3u16 {
        assert_eq!(
            s.recv_bytes().await.unwrap(),
            build::publish("full", 1, false, false, i, &[i as u8])
        );
    }
    s.expect_silence().await;
}

#[tokio::test]
async fn inflight_window_limits_unacknowledged_messages_to_a_client() {
    let broker = TestBroker::start_with(|c| c.mqtt.max_inflight = 2);
    let mut s = subscriber(&broker, "s", true, 4, &[("w", 1)]).await;
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    for i in 1..=4u16 {
        p.send(&build::publish("w", 1, false, false, i, &[i as u8]))
            .await;
    }
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("w", 1, false, false, 1, &[1])
    );
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("w", 1, false, false, 2, &[2])
    );
    s.expect_silence().await;
    s.send(&build::puback(1)).await;
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("w", 1, false, false, 3, &[3])
    );
    s.send(&build::puback(2)).await;
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("w", 1, false, false, 4, &[4])
    );
}
