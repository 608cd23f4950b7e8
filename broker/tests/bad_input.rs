//! Bad input: every offender is disconnected per the specification, other
//! clients keep working, and nothing stored is lost.

mod common;

use common::{build, Raw, TestBroker};

/// A persistent subscriber with one queued QoS 1 message, offline: the
/// stored data that bad input must not damage.
async fn park_a_queued_message(broker: &TestBroker) {
    let mut s = Raw::mqtt(broker.addr, "parked", false).await;
    s.send(&build::subscribe(1, &[("parked/t", 1)])).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    s.send(&build::disconnect()).await;
    s.expect_closed().await;
    let mut p = Raw::mqtt(broker.addr, "parker", true).await;
    p.send(&build::publish("parked/t", 1, false, false, 1, b"safe"))
        .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(1));
}

/// Other clients are served, and the parked message is still there.
async fn broker_is_healthy(broker: &TestBroker, bystander: &mut Raw) {
    let mut p = Raw::mqtt(broker.addr, "healthy-pub", true).await;
    p.send(&build::publish(
        "bystander",
        1,
        false,
        false,
        1,
        b"still here",
    ))
    .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(1));
    let got = bystander
        .recv_bytes()
        .await
        .expect("bystander still connected");
    assert_eq!(
        got,
        build::publish("bystander", 0, false, false, 0, b"still here")
    );

    let mut s = Raw::connect(broker.addr).await;
    s.send(&build::connect(4, "parked", false, 60)).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::connack(true, 0));
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("parked/t", 1, false, false, 1, b"safe")
    );
    // Not acknowledged: it stays queued for the next case.
}

async fn bystander(broker: &TestBroker) -> Raw {
    let mut b = Raw::mqtt(broker.addr, "bystander", true).await;
    b.send(&build::subscribe(1, &[("bystander", 0)])).await;
    assert_eq!(b.recv_bytes().await.unwrap(), build::suback(1, &[0]));
    b
}

/// Sends `bad` after a good CONNECT and expects the connection closed with
/// nothing sent back.
async fn after_connect_closes(broker: &TestBroker, name: &str, bad: &[u8]) {
    let mut c = Raw::mqtt(broker.addr, name, true).await;
    c.send(bad).await;
    let got = c.expect_closed().await;
    assert!(got.is_empty(), "{name}: got {got:02x?}");
}

#[tokio::test]
async fn malformed_packets_disconnect_only_the_offender() {
    let broker = TestBroker::start_with(|c| c.mqtt.max_packet_size = 1024);
    park_a_queued_message(&broker).await;
    let mut b = bystander(&broker).await;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", vec![0x00, 0xff, 0x13, 0x37, 0x00, 0x00]),
        // [MQTT-2.2.3] remaining length of more than four bytes
        (
            "remaining_length_over_four_bytes",
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ),
        // Announced size over max_packet_size: refused before the body arrives.
        ("announced_size_over_limit", {
            let mut v = vec![0x30];
            v.extend(build::varint(5000));
            v.extend_from_slice(b"\x00\x01a");
            v
        }),
        (
            "oversized_packet",
            build::publish("big", 0, false, false, 0, &[7u8; 2000]),
        ),
        // [MQTT-1.5.3-1] ill-formed UTF-8 in a topic
        ("invalid_utf8_topic", {
            let mut body = vec![0x00, 0x02, 0xc3, 0x28];
            body.extend_from_slice(b"payload");
            build::packet(0x30, &body)
        }),
        // [MQTT-1.5.3-2] U+0000 in a topic
        (
            "null_in_topic",
            build::publish("a\0b", 0, false, false, 0, b"x"),
        ),
        // [MQTT-3.3.2-2] wildcards in a PUBLISH topic
        (
            "wildcard_plus_in_publish_topic",
            build::publish("a/+/b", 0, false, false, 0, b"x"),
        ),
        (
            "wildcard_hash_in_publish_topic",
            build::publish("a/#", 1, false, false, 1, b"x"),
        ),
        // [MQTT-2.3.1-1] packet id 0
        (
            "publish_packet_id_zero",
            build::publish("a", 1, false, false, 0, b"x"),
        ),
        ("subscribe_packet_id_zero", build::subscribe(0, &[("a", 0)])),
        // [MQTT-3.3.1-4] QoS 3
        (
            "publish_qos_3",
            build::publish("a", 3, false, false, 1, b"x"),
        ),
        // [MQTT-4.7.1-2] `#` not last
        ("invalid_topic_filter", build::subscribe(1, &[("a/#/b", 0)])),
        // [MQTT-3.8.1-1] SUBSCRIBE reserved flags must be 0010
        ("subscribe_bad_flags", {
            let mut v = build::subscribe(1, &[("a", 0)]);
            v[0] = 0x80;
            v
        }),
        // [MQTT-3.6.1-1] PUBREL reserved flags must be 0010
        ("pubrel_bad_flags", vec![0x60, 0x02, 0x00, 0x01]),
        // [MQTT-3.8.3-4] requested QoS 3
        ("subscribe_qos_3", build::subscribe(1, &[("a", 3)])),
        // [MQTT-3.8.3-3] SUBSCRIBE without filters
        ("subscribe_no_filters", build::packet(0x82, &[0x00, 0x01])),
        // Packet type 15 (AUTH) does not exist in 3.1.1; type 0 is reserved.
        ("reserved_packet_type_0", vec![0x00, 0x00]),
        ("auth_in_v311", vec![0xF0, 0x00]),
        // [MQTT-3.14.1-1] DISCONNECT with flags
        ("disconnect_bad_flags", vec![0xE1, 0x00]),
        // Remaining length shorter than the fields inside.
        ("truncated_fields", build::packet(0x30, &[0x00, 0x09, b'a'])),
    ];
    for (name, bad) in &cases {
        after_connect_closes(&broker, name, bad).await;
    }
    broker_is_healthy(&broker, &mut b).await;
}

#[tokio::test]
async fn garbage_before_connect_closes_without_reply() {
    let broker = TestBroker::start();
    let mut b = bystander(&broker).await;
    park_a_queued_message(&broker).await;
    for bad in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x01],
        build::packet(0x10, b"\x00\x04MQTT\x04\x01\x00\x3c\x00\x00"), // reserved flag set [MQTT-3.1.2-3]
        build::packet(0x10, b"\x00\x04MQTX\x04\x02\x00\x3c\x00\x01a"), // wrong protocol name
    ] {
        let mut c = Raw::connect(broker.addr).await;
        c.send(&bad).await;
        let got = c.expect_closed().await;
        // A wrong protocol name may be answered with CONNACK 0x01 before closing.
        assert!(
            got.is_empty() || got == vec![build::connack(false, 1)],
            "{bad:02x?}: {got:02x?}"
        );
    }
    broker_is_healthy(&broker, &mut b).await;
}

#[tokio::test]
async fn truncated_packet_then_close_is_an_abnormal_disconnect() {
    let broker = TestBroker::start();
    let mut watcher = Raw::mqtt(broker.addr, "watcher", true).await;
    watcher.send(&build::subscribe(1, &[("will/#", 0)])).await;
    assert_eq!(watcher.recv_bytes().await.unwrap(), build::suback(1, &[0]));
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect_full(
        4,
        "trunc",
        true,
        60,
        Some(("will/trunc", b"w", 0, false)),
        None,
        None,
    ))
    .await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
    let publish = build::publish("t", 0, false, false, 0, b"0123456789");
    c.send(&publish[..6]).await;
    drop(c);
    assert_eq!(
        watcher.recv_bytes().await.unwrap(),
        build::publish("will/trunc", 0, false, false, 0, b"w")
    );
}

#[tokio::test]
async fn many_bad_clients_at_once_leave_the_broker_serving() {
    let broker = TestBroker::start();
    let mut b = bystander(&broker).await;
    park_a_queued_message(&broker).await;
    let mut tasks = Vec::new();
    for i in 0..40u8 {
        let addr = broker.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await;
            if i % 2 == 0 {
                c.send(&build::connect(4, &format!("bad{i}"), true, 60))
                    .await;
                let _ = c.recv_bytes().await;
            }
            c.send(&[i, 0xff, 0xff, 0xff, 0xff, 0xff, i]).await;
            c.expect_closed().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    broker_is_healthy(&broker, &mut b).await;
}
