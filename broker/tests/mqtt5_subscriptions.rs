//! MQTT 5.0 subscription features with a real MQTT 5 client (rumqttc v5)
//! and raw packets: Subscription Identifiers, No Local, Retain As
//! Published, Retain Handling, shared subscriptions; and the reason codes of
//! every acknowledgement, the CONNACK properties and server DISCONNECTs.

mod common;

use std::collections::HashMap;

use broker::codec::{Packet, ReasonCode};
use bytes::Bytes;
use common::build::{self, prop};
use common::client5::Client5;
use common::{Raw, TestBroker};
use rumqttc::v5::mqttbytes::v5::{
    Filter, RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;

fn filter(path: &str, qos: QoS) -> Filter {
    Filter::new(path, qos)
}

#[tokio::test]
async fn subscription_identifiers_come_back_with_every_matching_subscription() {
    let broker = TestBroker::start();
    let (mut s, _) = Client5::connect(&broker, "sid", |_| {}).await;
    for (id, path) in [(7usize, "sid/#"), (42, "sid/+/x")] {
        let props = SubscribeProperties {
            id: Some(id),
            user_properties: Vec::new(),
        };
        s.client
            .subscribe_with_properties(path, QoS::AtLeastOnce, props)
            .await
            .unwrap();
        s.suback().await;
    }
    let (p, _) = Client5::connect(&broker, "sid-pub", |_| {}).await;
    p.client
        .publish("sid/a/x", QoS::AtLeastOnce, false, "both")
        .await
        .unwrap();
    p.client
        .publish("sid/b", QoS::AtLeastOnce, false, "one")
        .await
        .unwrap();
    let mut ids = s
        .next_publish()
        .await
        .properties
        .unwrap()
        .subscription_identifiers;
    ids.sort();
    assert_eq!(
        ids,
        vec![7, 42],
        "one copy, both identifiers [MQTT-3.3.4-3]"
    );
    assert_eq!(
        s.next_publish()
            .await
            .properties
            .unwrap()
            .subscription_identifiers,
        vec![7]
    );
}

#[tokio::test]
async fn no_local_keeps_a_clients_own_messages_from_it_mqtt_3_8_3_3() {
    let broker = TestBroker::start();
    let (mut c, _) = Client5::connect(&broker, "nl", |_| {}).await;
    let mut f = filter("nl/#", QoS::AtLeastOnce);
    f.nolocal = true;
    c.client.subscribe_many(vec![f]).await.unwrap();
    c.suback().await;
    let (mut other, _) = Client5::connect(&broker, "nl-other", |_| {}).await;
    other
        .client
        .subscribe("nl/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    other.suback().await;
    c.client
        .publish("nl/mine", QoS::AtLeastOnce, false, "own")
        .await
        .unwrap();
    assert_eq!(other.next_publish().await.payload, Bytes::from("own"));
    c.no_publish().await;
    other
        .client
        .publish("nl/theirs", QoS::AtLeastOnce, false, "theirs")
        .await
        .unwrap();
    assert_eq!(c.next_publish().await.payload, Bytes::from("theirs"));
}

#[tokio::test]
async fn retain_as_published_keeps_the_retain_flag_on_live_messages() {
    let broker = TestBroker::start();
    let (mut keep, _) = Client5::connect(&broker, "rap", |_| {}).await;
    let mut f = filter("rap/t", QoS::AtMostOnce);
    f.preserve_retain = true;
    keep.client.subscribe_many(vec![f]).await.unwrap();
    keep.suback().await;
    let (mut plain, _) = Client5::connect(&broker, "rap-plain", |_| {}).await;
    plain
        .client
        .subscribe("rap/t", QoS::AtMostOnce)
        .await
        .unwrap();
    plain.suback().await;
    let (p, _) = Client5::connect(&broker, "rap-pub", |_| {}).await;
    p.client
        .publish("rap/t", QoS::AtMostOnce, true, "r")
        .await
        .unwrap();
    assert!(
        keep.next_publish().await.retain,
        "[MQTT-3.3.1-13] retain kept"
    );
    assert!(
        !plain.next_publish().await.retain,
        "[MQTT-3.3.1-12] retain cleared"
    );
}

#[tokio::test]
async fn retain_handling_0_1_2_controls_retained_messages_at_subscribe() {
    let broker = TestBroker::start();
    let (p, _) = Client5::connect(&broker, "rh-pub", |_| {}).await;
    p.client
        .publish("rh/t", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    let (mut s, _) = Client5::connect(&broker, "rh", |_| {}).await;
    let sub = |rule| {
        let mut f = filter("rh/t", QoS::AtLeastOnce);
        f.retain_forward_rule = rule;
        vec![f]
    };
    // 2: never.
    s.client
        .subscribe_many(sub(RetainForwardRule::Never))
        .await
        .unwrap();
    s.suback().await;
    s.no_publish().await;
    // 1: only if the subscription is new; it exists now.
    s.client
        .subscribe_many(sub(RetainForwardRule::OnNewSubscribe))
        .await
        .unwrap();
    s.suback().await;
    s.no_publish().await;
    // 0: on every subscribe.
    s.client
        .subscribe_many(sub(RetainForwardRule::OnEverySubscribe))
        .await
        .unwrap();
    s.suback().await;
    assert_eq!(s.next_publish().await.payload, Bytes::from("kept"));
    // 1 on a new subscription sends it.
    let (mut fresh, _) = Client5::connect(&broker, "rh-new", |_| {}).await;
    fresh
        .client
        .subscribe_many(sub(RetainForwardRule::OnNewSubscribe))
        .await
        .unwrap();
    fresh.suback().await;
    assert_eq!(fresh.next_publish().await.payload, Bytes::from("kept"));
}

#[tokio::test]
async fn shared_subscriptions_spread_messages_across_the_group_at_their_qos() {
    let broker = TestBroker::start();
    let mut members = Vec::new();
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let (mut m, _) = Client5::connect(&broker, &format!("sh{i}"), |_| {}).await;
        m.client.subscribe("$share/g/sh/#", qos).await.unwrap();
        assert_eq!(m.suback().await, vec![SubscribeReasonCode::Success(qos)]);
        members.push((m, qos));
    }
    let (mut plain, _) = Client5::connect(&broker, "sh-plain", |_| {}).await;
    plain
        .client
        .subscribe("sh/#", QoS::AtMostOnce)
        .await
        .unwrap();
    plain.suback().await;
    let (p, _) = Client5::connect(&broker, "sh-pub", |_| {}).await;
    for i in 0..30u8 {
        p.client
            .publish("sh/x", QoS::ExactlyOnce, false, vec![i])
            .await
            .unwrap();
    }
    let mut all = Vec::new();
    for (m, qos) in members.iter_mut() {
        for _ in 0..10 {
            let got = m.next_publish().await;
            assert_eq!(got.qos, *qos, "delivered at the member's QoS");
            all.push(got.payload[0]);
        }
        m.no_publish().await;
    }
    all.sort();
    assert_eq!(
        all,
        (0..30).collect::<Vec<u8>>(),
        "each message to exactly one member"
    );
    for i in 0..30u8 {
        assert_eq!(
            plain.next_publish().await.payload[0],
            i,
            "non-shared subscribers get all"
        );
    }
}

#[tokio::test]
async fn shared_subscription_member_that_goes_away_does_not_strand_messages() {
    let broker = TestBroker::start();
    // A member that never acknowledges and holds a small window, so messages
    // queue up in its session; then it disconnects.
    let mut slow = Raw::mqtt5(
        broker.addr,
        "slow",
        true,
        &prop::u16(prop::RECEIVE_MAXIMUM, 1),
    )
    .await;
    slow.send(&build::subscribe5(1, &[], &[("$share/g/strand", 1)]))
        .await;
    assert!(matches!(slow.recv().await, Some(Packet::SubAck(_))));
    let (mut steady, _) = Client5::connect(&broker, "steady", |_| {}).await;
    steady
        .client
        .subscribe("$share/g/strand", QoS::AtLeastOnce)
        .await
        .unwrap();
    steady.suback().await;
    let (p, _) = Client5::connect(&broker, "strand-pub", |_| {}).await;
    for i in 0..20u8 {
        p.client
            .publish("strand", QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
    }
    // The slow member got one in flight; the rest of its share waits.
    let first = match slow.recv().await {
        Some(Packet::Publish(p)) => p.payload[0],
        other => panic!("{other:?}"),
    };
    let mut got: HashMap<u8, u32> = HashMap::new();
    for _ in 0..10 {
        *got.entry(steady.next_publish().await.payload[0])
            .or_default() += 1;
    }
    drop(slow); // goes away: its session ends
    for _ in 0..9 {
        *got.entry(steady.next_publish().await.payload[0])
            .or_default() += 1;
    }
    // The unacknowledged in-flight one is handed over too (at least once).
    *got.entry(steady.next_publish().await.payload[0])
        .or_default() += 1;
    for i in 0..20u8 {
        assert!(
            got.contains_key(&i),
            "message {i} stranded; first to slow was {first}"
        );
    }
}

#[tokio::test]
async fn acknowledgements_carry_reason_codes() {
    let broker = TestBroker::start();
    let mut c = Raw::mqtt5(broker.addr, "rc", true, &[]).await;
    // PUBACK 0x10 No matching subscribers.
    c.send(&build::publish5("rc/none", 1, false, 1, &[], b"x"))
        .await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::ack5(0x40, 1, 0x10));
    // PUBREC 0x10 too, then PUBREL / PUBCOMP.
    c.send(&build::publish5("rc/none", 2, false, 2, &[], b"x"))
        .await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::ack5(0x50, 2, 0x10));
    c.send(&build::pubrel(2)).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::pubcomp(2));
    // PUBCOMP 0x92 for an unknown id.
    c.send(&build::pubrel(99)).await;
    match c.recv().await {
        Some(Packet::PubComp(a)) => assert_eq!(a.reason_code, ReasonCode::PacketIdentifierNotFound),
        other => panic!("{other:?}"),
    }
    // SUBACK granted QoS, UNSUBACK 0x00 and 0x11.
    c.send(&build::subscribe5(
        3,
        &[],
        &[("rc/a", 0), ("rc/b", 1), ("rc/c", 2)],
    ))
    .await;
    match c.recv().await {
        Some(Packet::SubAck(a)) => assert_eq!(
            a.reason_codes,
            vec![
                ReasonCode::Success,
                ReasonCode::GrantedQoS1,
                ReasonCode::GrantedQoS2
            ]
        ),
        other => panic!("{other:?}"),
    }
    c.send(&build::packet(
        0xA2,
        &[
            &[0, 4, 0][..],
            &build::string("rc/a"),
            &build::string("rc/zz"),
        ]
        .concat(),
    ))
    .await;
    match c.recv().await {
        Some(Packet::UnsubAck(a)) => {
            assert_eq!(
                a.reason_codes,
                vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
            )
        }
        other => panic!("{other:?}"),
    }
    // With a subscriber, PUBACK is plain success.
    c.send(&build::publish5("rc/b", 1, false, 5, &[], b"x"))
        .await;
    let mut saw_ack = false;
    for _ in 0..2 {
        match c.recv().await {
            Some(Packet::PubAck(a)) => {
                assert_eq!((a.packet_id, a.reason_code), (5, ReasonCode::Success));
                saw_ack = true;
            }
            Some(Packet::Publish(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_ack);
}

#[tokio::test]
async fn connack_announces_the_servers_capabilities_and_limits() {
    let broker = TestBroker::start_with(|c| {
        c.mqtt.max_keep_alive = 30;
        c.mqtt.max_inflight = 100;
        c.mqtt.max_packet_size = 65_536;
        c.mqtt.max_topic_alias = 16;
    });
    let mut c = Raw::connect(broker.addr).await;
    c.version = broker::codec::ProtocolVersion::V5;
    c.send(&build::connect5("caps", true, 0, &[])).await;
    let Some(Packet::ConnAck(ack)) = c.recv().await else {
        panic!("CONNACK")
    };
    let p = ack.properties;
    assert_eq!(
        p.server_keep_alive,
        Some(30),
        "keep alive 0 is raised to the server maximum"
    );
    assert_eq!(p.receive_maximum, Some(100));
    assert_eq!(p.maximum_packet_size, Some(65_536));
    assert_eq!(p.topic_alias_maximum, Some(16));
    assert_eq!(p.retain_available, Some(true));
    assert_eq!(p.wildcard_subscription_available, Some(true));
    assert_eq!(p.subscription_identifiers_available, Some(true));
    assert_eq!(p.shared_subscription_available, Some(true));
    assert_eq!(p.maximum_qos, None, "QoS 2 is supported: absent means 2");
}

#[tokio::test]
async fn server_disconnects_carry_their_reason_code() {
    let broker = TestBroker::start();
    // Second CONNECT: protocol error 0x82.
    let mut c = Raw::mqtt5(broker.addr, "dc1", true, &[]).await;
    c.send(&build::connect5("dc1", true, 60, &[])).await;
    let got = c.expect_closed().await;
    assert_eq!((got[0][0], got[0][2]), (0xE0, 0x82), "{got:02x?}");
    // Malformed packet: 0x81.
    let mut c = Raw::mqtt5(broker.addr, "dc2", true, &[]).await;
    c.send(&[0x30, 0x03, 0x00, 0x09, b'a']).await;
    let got = c.expect_closed().await;
    assert_eq!((got[0][0], got[0][2]), (0xE0, 0x81), "{got:02x?}");
    // Keep alive timeout: 0x8D.
    let mut c = Raw::connect(broker.addr).await;
    c.version = broker::codec::ProtocolVersion::V5;
    c.send(&build::connect5("dc3", true, 1, &[])).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(_))));
    let got = c.expect_closed().await;
    assert_eq!(got, vec![vec![0xE0, 0x01, 0x8D]]);
    // Wildcard in a PUBLISH topic: 0x90 Topic Name invalid.
    let mut c = Raw::mqtt5(broker.addr, "dc4", true, &[]).await;
    c.send(&build::publish5("a/+", 0, false, 0, &[], b"x"))
        .await;
    let got = c.expect_closed().await;
    assert_eq!((got[0][0], got[0][2]), (0xE0, 0x90), "{got:02x?}");
}
