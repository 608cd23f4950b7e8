//! MQTT 5.0 session features, each with a real MQTT 5 client (rumqttc v5)
//! and raw packets for the error cases: Clean Start and Session Expiry,
//! Message Expiry, Topic Aliases, Receive Maximum, Maximum Packet Size,
//! Request Response Information, Will Delay, and the passing through of
//! user properties and the other application properties.

mod common;

use std::time::Duration;

use broker::codec::{Packet, ReasonCode};
use bytes::Bytes;
use common::build::{self, prop};
use common::client5::Client5;
use common::{Raw, TestBroker, PATIENCE};
use rumqttc::v5::mqttbytes::v5::{
    ConnectProperties, LastWill, LastWillProperties, PublishProperties,
};
use rumqttc::v5::mqttbytes::QoS;

fn expiry(secs: u32) -> impl FnOnce(&mut rumqttc::v5::MqttOptions) {
    move |o| {
        o.set_clean_start(false);
        let mut p = ConnectProperties::new();
        p.session_expiry_interval = Some(secs);
        o.set_connect_properties(p);
    }
}

#[tokio::test]
async fn session_expiry_keeps_an_offline_session_for_its_interval_then_deletes_it() {
    let mut broker = TestBroker::start();
    let (mut s, ack) = Client5::connect(&broker, "exp", expiry(2)).await;
    assert!(!ack.session_present);
    s.client.subscribe("exp/t", QoS::AtLeastOnce).await.unwrap();
    s.suback().await;
    s.client.disconnect().await.unwrap();

    let (p, _) = Client5::connect(&broker, "exp-pub", |_| {}).await;
    p.client
        .publish("exp/t", QoS::AtLeastOnce, false, "while away")
        .await
        .unwrap();
    let (mut s, ack) = Client5::connect(&broker, "exp", expiry(2)).await;
    assert!(ack.session_present, "within its expiry the session is kept");
    assert_eq!(s.next_publish().await.payload, Bytes::from("while away"));
    s.client.disconnect().await.unwrap();

    // Past the interval the session is gone, from memory and from the store.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    broker.restart();
    let (_s, ack) = Client5::connect(&broker, "exp", expiry(2)).await;
    assert!(
        !ack.session_present,
        "expired session deleted from the store"
    );
}

#[tokio::test]
async fn session_expiry_set_at_disconnect_applies_and_cannot_rise_from_zero_mqtt_3_14_2_2() {
    let broker = TestBroker::start();
    // 60 s at CONNECT, 0 at DISCONNECT: the session ends with the connection.
    let mut c = Raw::mqtt5(
        broker.addr,
        "d0",
        false,
        &prop::u32(prop::SESSION_EXPIRY, 60),
    )
    .await;
    c.send(&build::disconnect5(0, &prop::u32(prop::SESSION_EXPIRY, 0)))
        .await;
    c.expect_closed().await;
    let mut c = Raw::connect(broker.addr).await;
    c.version = broker::codec::ProtocolVersion::V5;
    c.send(&build::connect5(
        "d0",
        false,
        60,
        &prop::u32(prop::SESSION_EXPIRY, 60),
    ))
    .await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => assert!(!ack.session_present),
        other => panic!("{other:?}"),
    }
    // 0 at CONNECT, then a non-zero value at DISCONNECT: protocol error.
    let mut c = Raw::mqtt5(broker.addr, "d1", true, &[]).await;
    c.send(&build::disconnect5(0, &prop::u32(prop::SESSION_EXPIRY, 30)))
        .await;
    let got = c.expect_closed().await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        &got[0][..3],
        &[0xE0, got[0][1], 0x82],
        "DISCONNECT 0x82: {got:02x?}"
    );
}

#[tokio::test]
async fn session_expiry_is_capped_by_the_server_maximum_and_connack_says_so() {
    let broker = TestBroker::start_with(|c| c.mqtt.max_session_expiry_secs = 5);
    let (_c, ack) = Client5::connect(&broker, "cap", expiry(3600)).await;
    assert_eq!(ack.properties.unwrap().session_expiry_interval, Some(5));
    let (_c, ack) = Client5::connect(&broker, "nocap", expiry(4)).await;
    assert_eq!(ack.properties.unwrap().session_expiry_interval, None);
}

#[tokio::test]
async fn clean_start_discards_the_stored_session() {
    let broker = TestBroker::start();
    let (s, _) = Client5::connect(&broker, "cs", expiry(60)).await;
    s.client.subscribe("cs/t", QoS::AtLeastOnce).await.unwrap();
    drop(s);
    let (mut s, ack) = Client5::connect(&broker, "cs", |o| {
        o.set_clean_start(true);
        let mut p = ConnectProperties::new();
        p.session_expiry_interval = Some(60);
        o.set_connect_properties(p);
    })
    .await;
    assert!(!ack.session_present);
    let (p, _) = Client5::connect(&broker, "cs-pub", |_| {}).await;
    p.client
        .publish("cs/t", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    s.no_publish().await;
}

#[tokio::test]
async fn message_expiry_drops_expired_queued_and_retained_messages_and_counts_down() {
    let broker = TestBroker::start();
    let (mut s, _) = Client5::connect(&broker, "mx", expiry(60)).await;
    s.client.subscribe("mx/#", QoS::AtLeastOnce).await.unwrap();
    s.suback().await;
    s.client.disconnect().await.unwrap();
    let (p, _) = Client5::connect(&broker, "mx-pub", |_| {}).await;
    let with_expiry = |secs| PublishProperties {
        message_expiry_interval: Some(secs),
        ..Default::default()
    };
    p.client
        .publish_with_properties("mx/short", QoS::AtLeastOnce, false, "short", with_expiry(1))
        .await
        .unwrap();
    p.client
        .publish_with_properties("mx/long", QoS::AtLeastOnce, false, "long", with_expiry(100))
        .await
        .unwrap();
    p.client
        .publish_with_properties("mx/ret", QoS::AtLeastOnce, true, "ret", with_expiry(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let (mut s, _) = Client5::connect(&broker, "mx", expiry(60)).await;
    let got = s.next_publish().await;
    assert_eq!(
        got.payload,
        Bytes::from("long"),
        "expired messages are not delivered"
    );
    let left = got.properties.unwrap().message_expiry_interval.unwrap();
    assert!(
        (97..100).contains(&left),
        "interval counts the time waited: {left}"
    );
    s.no_publish().await;

    let (mut late, _) = Client5::connect(&broker, "mx-late", |_| {}).await;
    late.client
        .subscribe("mx/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    late.suback().await;
    late.no_publish().await;
}

#[tokio::test]
async fn topic_alias_from_the_client_sets_and_uses_aliases() {
    let broker = TestBroker::start();
    let (mut s, _) = Client5::connect(&broker, "ta-sub", |_| {}).await;
    s.client.subscribe("ta/#", QoS::AtMostOnce).await.unwrap();
    s.suback().await;
    let mut p = Raw::mqtt5(broker.addr, "ta-pub", true, &[]).await;
    p.send(&build::publish5(
        "ta/one",
        0,
        false,
        0,
        &prop::u16(prop::TOPIC_ALIAS, 1),
        b"set",
    ))
    .await;
    p.send(&build::publish5(
        "",
        0,
        false,
        0,
        &prop::u16(prop::TOPIC_ALIAS, 1),
        b"use",
    ))
    .await;
    for payload in ["set", "use"] {
        let got = s.next_publish().await;
        assert_eq!(
            (got.topic, got.payload),
            (Bytes::from("ta/one"), Bytes::from(payload))
        );
    }
}

#[tokio::test]
async fn topic_alias_errors_disconnect_with_0x94_or_0x82() {
    let broker = TestBroker::start_with(|c| c.mqtt.max_topic_alias = 4);
    let mut p = Raw::mqtt5(broker.addr, "ta-bad", true, &[]).await;
    p.send(&build::publish5(
        "t",
        0,
        false,
        0,
        &prop::u16(prop::TOPIC_ALIAS, 5),
        b"x",
    ))
    .await;
    let got = p.expect_closed().await;
    assert_eq!(got[0][2], 0x94, "{got:02x?}");
    let mut p = Raw::mqtt5(broker.addr, "ta-unset", true, &[]).await;
    p.send(&build::publish5(
        "",
        0,
        false,
        0,
        &prop::u16(prop::TOPIC_ALIAS, 2),
        b"x",
    ))
    .await;
    let got = p.expect_closed().await;
    assert_eq!(got[0][2], 0x82, "{got:02x?}");
}

#[tokio::test]
async fn topic_alias_to_the_client_replaces_repeated_topics() {
    let broker = TestBroker::start();
    let mut s = Raw::mqtt5(
        broker.addr,
        "tao",
        true,
        &prop::u16(prop::TOPIC_ALIAS_MAXIMUM, 1),
    )
    .await;
    s.send(&build::subscribe5(1, &[], &[("tao/#", 0)])).await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    let mut p = Raw::mqtt(broker.addr, "tao-pub", true).await;
    for topic in ["tao/a", "tao/a", "tao/b", "tao/b"] {
        p.send(&build::publish(topic, 0, false, false, 0, b"m"))
            .await;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        match s.recv().await {
            Some(Packet::Publish(p)) => seen.push((p.topic.to_string(), p.properties.topic_alias)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            ("tao/a".into(), Some(1)),
            ("".into(), Some(1)),
            ("tao/b".into(), Some(1)),
            ("".into(), Some(1)),
        ]
    );
}

#[tokio::test]
async fn receive_maximum_of_the_client_limits_messages_in_flight_to_it() {
    let broker = TestBroker::start();
    let mut s = Raw::mqtt5(
        broker.addr,
        "rm",
        true,
        &prop::u16(prop::RECEIVE_MAXIMUM, 2),
    )
    .await;
    s.send(&build::subscribe5(1, &[], &[("rm", 1)])).await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    let (p, _) = Client5::connect(&broker, "rm-pub", |_| {}).await;
    for i in 0..4u8 {
        p.client
            .publish("rm", QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for _ in 0..2 {
        match s.recv().await {
            Some(Packet::Publish(p)) => ids.push(p.packet_id.unwrap()),
            other => panic!("{other:?}"),
        }
    }
    s.expect_silence().await;
    s.send(&build::puback(ids[0])).await;
    assert!(matches!(s.recv().await, Some(Packet::Publish(_))));
    s.expect_silence().await;
}

#[tokio::test]
async fn receive_maximum_of_the_broker_exceeded_disconnects_with_0x93() {
    let broker = TestBroker::start_with(|c| c.mqtt.max_inflight = 2);
    let (_c, ack) = Client5::connect(&broker, "rm-probe", |_| {}).await;
    assert_eq!(ack.properties.unwrap().receive_max, Some(2));
    let mut p = Raw::mqtt5(broker.addr, "rmx", true, &[]).await;
    // QoS 2 messages never released stay counted.
    for id in 1..=3u16 {
        p.send(&build::publish5("rmx", 2, false, id, &[], b"x"))
            .await;
    }
    let got = p.expect_closed().await;
    assert_eq!(
        got.last().unwrap()[..3],
        [0xE0, got.last().unwrap()[1], 0x93],
        "{got:02x?}"
    );
}

#[tokio::test]
async fn maximum_packet_size_from_the_client_is_refused_with_0x95() {
    let broker = TestBroker::start_with(|c| c.mqtt.max_packet_size = 512);
    let (_c, ack) = Client5::connect(&broker, "mps-probe", |_| {}).await;
    assert_eq!(ack.properties.unwrap().max_packet_size, Some(512));
    let mut p = Raw::mqtt5(broker.addr, "mps", true, &[]).await;
    p.send(&build::publish5("big", 0, false, 0, &[], &[0u8; 600]))
        .await;
    let got = p.expect_closed().await;
    assert_eq!(got.len(), 1, "one DISCONNECT: {got:02x?}");
    assert_eq!(
        (got[0][0], got[0][2]),
        (0xE0, 0x95),
        "DISCONNECT 0x95: {got:02x?}"
    );
}

#[tokio::test]
async fn maximum_packet_size_of_the_client_skips_messages_too_large_for_it() {
    let broker = TestBroker::start();
    let mut s = Raw::mqtt5(
        broker.addr,
        "small",
        true,
        &prop::u32(prop::MAXIMUM_PACKET_SIZE, 100),
    )
    .await;
    s.send(&build::subscribe5(1, &[], &[("mps/#", 1)])).await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    let (p, _) = Client5::connect(&broker, "mps-pub", |_| {}).await;
    p.client
        .publish("mps/big", QoS::AtLeastOnce, false, vec![1u8; 200])
        .await
        .unwrap();
    p.client
        .publish("mps/small", QoS::AtLeastOnce, false, vec![2u8; 10])
        .await
        .unwrap();
    match s.recv().await {
        // [MQTT-3.1.2-25] the large one is discarded as if delivered
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "mps/small");
            assert_eq!(
                p.packet_id,
                Some(2),
                "the large message consumed id 1 and was completed"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn request_response_information_is_answered_with_response_information() {
    let broker = TestBroker::start();
    let (_c, ack) = Client5::connect(&broker, "rri", |o| {
        o.set_request_response_info(Some(1));
    })
    .await;
    assert_eq!(
        ack.properties.unwrap().response_information.as_deref(),
        Some("response/rri")
    );
    let (_c, ack) = Client5::connect(&broker, "rri0", |_| {}).await;
    assert_eq!(ack.properties.unwrap().response_information, None);
}

#[tokio::test]
async fn user_properties_content_type_response_topic_correlation_data_pass_through() {
    let broker = TestBroker::start();
    let (mut s, _) = Client5::connect(&broker, "pp-sub", |_| {}).await;
    s.client.subscribe("pp", QoS::AtLeastOnce).await.unwrap();
    s.suback().await;
    let (p, _) = Client5::connect(&broker, "pp-pub", |_| {}).await;
    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("pp/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![
            ("k".into(), "v1".into()),
            ("k".into(), "v2".into()),
            ("x".into(), "y".into()),
        ],
        ..Default::default()
    };
    p.client
        .publish_with_properties("pp", QoS::AtLeastOnce, false, "{}", sent.clone())
        .await
        .unwrap();
    let got = s.next_publish().await.properties.unwrap();
    assert_eq!(got.payload_format_indicator, sent.payload_format_indicator);
    assert_eq!(got.content_type, sent.content_type);
    assert_eq!(got.response_topic, sent.response_topic);
    assert_eq!(got.correlation_data, sent.correlation_data);
    assert_eq!(
        got.user_properties, sent.user_properties,
        "order and duplicates kept"
    );
}

#[tokio::test]
async fn payload_format_indicator_with_invalid_utf8_is_refused_with_0x99() {
    let broker = TestBroker::start();
    let mut p = Raw::mqtt5(broker.addr, "pfi", true, &[]).await;
    p.send(&build::publish5(
        "pfi",
        1,
        false,
        7,
        &prop::byte(prop::PAYLOAD_FORMAT, 1),
        &[0xff, 0xfe],
    ))
    .await;
    match p.recv().await {
        Some(Packet::PubAck(ack)) => {
            assert_eq!(
                (ack.packet_id, ack.reason_code),
                (7, ReasonCode::PayloadFormatInvalid)
            );
            assert!(
                ack.properties.reason_string.is_some(),
                "a reason string says why"
            );
        }
        other => panic!("{other:?}"),
    }
    // Request Problem Information 0: no reason string [MQTT-3.1.2-29].
    let mut p = Raw::mqtt5(
        broker.addr,
        "pfi0",
        true,
        &prop::byte(prop::REQUEST_PROBLEM_INFO, 0),
    )
    .await;
    p.send(&build::publish5(
        "pfi",
        1,
        false,
        8,
        &prop::byte(prop::PAYLOAD_FORMAT, 1),
        &[0xff],
    ))
    .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::ack5(0x40, 8, 0x99));
}

fn will(delay: u32) -> impl FnOnce(&mut rumqttc::v5::MqttOptions) {
    move |o| {
        o.set_clean_start(false);
        let mut p = ConnectProperties::new();
        p.session_expiry_interval = Some(30);
        o.set_connect_properties(p);
        let props = LastWillProperties {
            delay_interval: Some(delay),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        };
        o.set_last_will(LastWill::new(
            "wd/will",
            "gone",
            QoS::AtLeastOnce,
            false,
            Some(props),
        ));
    }
}

async fn watcher(broker: &TestBroker) -> Client5 {
    let (mut w, _) = Client5::connect(broker, "wd-watch", |_| {}).await;
    w.client
        .subscribe("wd/will", QoS::AtLeastOnce)
        .await
        .unwrap();
    w.suback().await;
    w
}

/// Drops a raw connection made with a will, without DISCONNECT.
async fn die_with_will(broker: &TestBroker, id: &str, delay: u32, session_expiry: u32) {
    let mut c = Raw::connect(broker.addr).await;
    c.version = broker::codec::ProtocolVersion::V5;
    c.send(&build::connect5_will(
        id,
        false,
        60,
        &prop::u32(prop::SESSION_EXPIRY, session_expiry),
        ("wd/will", b"gone", 1, false),
        &prop::u32(prop::WILL_DELAY, delay),
    ))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
}

#[tokio::test]
async fn will_delay_publishes_the_will_after_the_delay() {
    let broker = TestBroker::start();
    let mut w = watcher(&broker).await;
    die_with_will(&broker, "wd1", 1, 30).await;
    w.no_publish().await;
    let got = w.next_publish().await;
    assert_eq!(got.payload, Bytes::from("gone"));
}

#[tokio::test]
async fn will_delay_is_cancelled_when_the_client_reconnects_in_time_mqtt_3_1_3_9() {
    let broker = TestBroker::start();
    let mut w = watcher(&broker).await;
    die_with_will(&broker, "wd2", 2, 30).await;
    let (_c, ack) = Client5::connect(&broker, "wd2", will(2)).await;
    assert!(ack.session_present);
    let end = tokio::time::Instant::now() + Duration::from_millis(2600);
    while let Ok(Some(p)) = tokio::time::timeout_at(end, w.rx.recv()).await {
        assert!(
            !matches!(p, rumqttc::v5::mqttbytes::v5::Packet::Publish(_)),
            "will must not be sent: {p:?}"
        );
    }
}

#[tokio::test]
async fn will_is_published_when_the_session_expires_before_the_delay() {
    let broker = TestBroker::start();
    let mut w = watcher(&broker).await;
    die_with_will(&broker, "wd3", 3600, 1).await;
    let got = tokio::time::timeout(PATIENCE, w.next_publish())
        .await
        .unwrap();
    assert_eq!(got.payload, Bytes::from("gone"));
}

#[tokio::test]
async fn will_is_published_at_once_when_a_clean_start_ends_the_delayed_session() {
    let broker = TestBroker::start();
    let mut w = watcher(&broker).await;
    die_with_will(&broker, "wd4", 3600, 600).await;
    w.no_publish().await;
    let _c = Raw::mqtt5(broker.addr, "wd4", true, &[]).await;
    assert_eq!(w.next_publish().await.payload, Bytes::from("gone"));
}

#[tokio::test]
async fn v5_properties_are_dropped_for_v311_receivers() {
    let broker = TestBroker::start();
    let mut old = Raw::mqtt(broker.addr, "old", true).await;
    old.send(&build::subscribe(1, &[("mix", 1)])).await;
    assert_eq!(old.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    let (p, _) = Client5::connect(&broker, "new", |_| {}).await;
    let props = PublishProperties {
        user_properties: vec![("a".into(), "b".into())],
        content_type: Some("text/plain".into()),
        message_expiry_interval: Some(60),
        ..Default::default()
    };
    p.client
        .publish_with_properties("mix", QoS::AtLeastOnce, false, "hi", props)
        .await
        .unwrap();
    assert_eq!(
        old.recv_bytes().await.unwrap(),
        build::publish("mix", 1, false, false, 1, b"hi")
    );
}
