//! Topic wildcards and `$` topics (section 4.7), retained messages (3.3.1.3)
//! and the Last Will (3.1.2.5), over raw TCP, for 3.1 and 3.1.1.

mod common;

use common::{build, Raw, TestBroker};

async fn subscribe(c: &mut Raw, filters: &[(&str, u8)]) {
    c.send(&build::subscribe(1, filters)).await;
    let granted: Vec<u8> = filters.iter().map(|(_, q)| *q).collect();
    assert_eq!(c.recv_bytes().await.unwrap(), build::suback(1, &granted));
}

#[tokio::test]
async fn wildcards_match_per_section_4_7() {
    let broker = TestBroker::start();
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "sport/tennis/player1/#",
            &["sport/tennis/player1", "sport/tennis/player1/ranking"],
            &["sport/tennis/player2"],
        ),
        ("sport/+", &["sport/", "sport/x"], &["sport", "sport/x/y"]),
        ("+/+", &["/finance", "a/b"], &["a", "a/b/c"]),
        ("#", &["a", "a/b/c", "/"], &["$SYS/x", "$other"]),
        ("+/monitor", &["a/monitor"], &["$SYS/monitor"]),
        ("$SYS/#", &["$SYS/x", "$SYS"], &["SYS/x"]),
        ("a//c", &["a//c"], &["a/b/c"]),
    ];
    let mut p = Raw::mqtt(broker.addr, "pub", true).await;
    for (n, (filter, hits, misses)) in cases.iter().enumerate() {
        let mut s = Raw::mqtt(broker.addr, &format!("s{n}"), true).await;
        subscribe(&mut s, &[(filter, 0)]).await;
        for topic in misses.iter().chain(hits.iter()) {
            p.send(&build::publish(topic, 0, false, false, 0, topic.as_bytes()))
                .await;
        }
        for topic in hits.iter() {
            assert_eq!(
                s.recv_bytes().await.unwrap(),
                build::publish(topic, 0, false, false, 0, topic.as_bytes()),
                "{filter} should match {topic}"
            );
        }
        s.expect_silence().await;
    }
}

async fn retained_lifecycle(level: u8) {
    let broker = TestBroker::start();
    let mut p = Raw::mqtt_level(broker.addr, "p", true, level).await;
    p.send(&build::publish("r/a", 1, true, false, 1, b"first"))
        .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(1));
    p.send(&build::publish("r/a", 1, true, false, 2, b"second"))
        .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(2));
    p.send(&build::publish("r/b", 0, true, false, 0, b"b"))
        .await;
    // QoS 0 has no acknowledgement: a ping answered means it was handled.
    p.send(&build::pingreq()).await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::pingresp());

    // A new subscriber gets the latest retained message, RETAIN set [MQTT-3.3.1-8].
    let mut s = Raw::mqtt_level(broker.addr, "s", true, level).await;
    subscribe(&mut s, &[("r/a", 1)]).await;
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("r/a", 1, true, false, 1, b"second")
    );
    s.send(&build::puback(1)).await;
    // A live message to an existing subscription has RETAIN 0 [MQTT-3.3.1-9].
    p.send(&build::publish("r/a", 0, true, false, 0, b"third"))
        .await;
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("r/a", 0, false, false, 0, b"third")
    );

    // An empty retained payload deletes it [MQTT-3.3.1-10] and is delivered as usual.
    p.send(&build::publish("r/a", 0, true, false, 0, b"")).await;
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("r/a", 0, false, false, 0, b"")
    );
    let mut s2 = Raw::mqtt_level(broker.addr, "s2", true, level).await;
    subscribe(&mut s2, &[("r/#", 0)]).await;
    assert_eq!(
        s2.recv_bytes().await.unwrap(),
        build::publish("r/b", 0, true, false, 0, b"b")
    );
    s2.expect_silence().await;
}

#[tokio::test]
async fn retained_messages_are_stored_replaced_deleted_and_sent_on_subscribe_v311() {
    retained_lifecycle(4).await;
}

#[tokio::test]
async fn retained_messages_are_stored_replaced_deleted_and_sent_on_subscribe_v31() {
    retained_lifecycle(3).await;
}

#[tokio::test]
async fn retained_message_is_sent_again_when_a_subscription_is_replaced_mqtt_3_8_4_3() {
    let broker = TestBroker::start();
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    p.send(&build::publish("rr", 0, true, false, 0, b"v")).await;
    // QoS 0 has no acknowledgement: a ping answered means it was handled.
    p.send(&build::pingreq()).await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::pingresp());
    let mut s = Raw::mqtt(broker.addr, "s", true).await;
    subscribe(&mut s, &[("rr", 0)]).await;
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("rr", 0, true, false, 0, b"v")
    );
    subscribe(&mut s, &[("rr", 0)]).await;
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("rr", 0, true, false, 0, b"v")
    );
}

#[tokio::test]
async fn retained_messages_survive_a_restart() {
    let mut broker = TestBroker::start();
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    p.send(&build::publish("keep/me", 1, true, false, 1, b"kept"))
        .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(1));
    drop(p);
    broker.restart();
    let mut s = Raw::mqtt(broker.addr, "s", true).await;
    subscribe(&mut s, &[("keep/#", 1)]).await;
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("keep/me", 1, true, false, 1, b"kept")
    );
}

async fn client_with_will(broker: &TestBroker, id: &str, level: u8, qos: u8, retain: bool) -> Raw {
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect_full(
        level,
        id,
        true,
        60,
        Some(("will/t", b"gone", qos, retain)),
        None,
        None,
    ))
    .await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
    c
}

async fn will_on_abnormal_close(level: u8) {
    let broker = TestBroker::start();
    let mut s = Raw::mqtt_level(broker.addr, "s", true, level).await;
    subscribe(&mut s, &[("will/#", 2)]).await;

    // Socket closed without DISCONNECT [MQTT-3.1.2-8].
    let c = client_with_will(&broker, "w1", level, 1, false).await;
    drop(c);
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("will/t", 1, false, false, 1, b"gone")
    );
    s.send(&build::puback(1)).await;

    // Protocol error: a PUBLISH with a wildcard topic.
    let mut c = client_with_will(&broker, "w2", level, 0, false).await;
    c.send(&build::publish("bad/#", 0, false, false, 0, b""))
        .await;
    c.expect_closed().await;
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("will/t", 0, false, false, 0, b"gone")
    );

    // DISCONNECT: no will [MQTT-3.14.4-3].
    let mut c = client_with_will(&broker, "w3", level, 0, false).await;
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    s.expect_silence().await;
}

#[tokio::test]
async fn will_is_published_on_abnormal_close_not_after_disconnect_v311() {
    will_on_abnormal_close(4).await;
}

#[tokio::test]
async fn will_is_published_on_abnormal_close_not_after_disconnect_v31() {
    will_on_abnormal_close(3).await;
}

#[tokio::test]
async fn will_is_published_on_keep_alive_timeout() {
    let broker = TestBroker::start();
    let mut s = Raw::mqtt(broker.addr, "s", true).await;
    subscribe(&mut s, &[("will/#", 0)]).await;
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect_full(
        4,
        "silent",
        true,
        1,
        Some(("will/t", b"timeout", 0, false)),
        None,
        None,
    ))
    .await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("will/t", 0, false, false, 0, b"timeout")
    );
    c.expect_closed().await;
}

#[tokio::test]
async fn retained_will_is_stored_as_retained_mqtt_3_1_2_17() {
    let broker = TestBroker::start();
    let mut watcher = Raw::mqtt(broker.addr, "watch", true).await;
    subscribe(&mut watcher, &[("will/t", 0)]).await;
    let c = client_with_will(&broker, "w", 4, 2, true).await;
    drop(c);
    assert_eq!(
        watcher.recv_bytes().await.unwrap(),
        build::publish("will/t", 0, false, false, 0, b"gone")
    );
    let mut s = Raw::mqtt(broker.addr, "s", true).await;
    subscribe(&mut s, &[("will/t", 2)]).await;
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("will/t", 2, true, false, 1, b"gone")
    );
}
