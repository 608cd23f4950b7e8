//! CONNECT / CONNACK, client identifiers, keep alive, session present and
//! takeover, over real TCP with raw packets (3.1.1 section 3.1, 3.2; 3.1).

mod common;

use std::time::Duration;

use broker::codec::{Packet, ReasonCode};
use common::{build, Raw, TestBroker};

/// One body for 3.1 (level 3) and 3.1.1 (level 4).
async fn connect_is_accepted(level: u8) {
    let broker = TestBroker::start();
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect(level, "client-a", true, 60)).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
    c.send(&build::pingreq()).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());
}

#[tokio::test]
async fn connect_v311_is_accepted_with_return_code_0() {
    connect_is_accepted(4).await;
}

#[tokio::test]
async fn connect_v31_mqisdp_is_accepted_with_return_code_0() {
    connect_is_accepted(3).await;
}

#[tokio::test]
async fn connect_with_unsupported_level_gets_return_code_1_mqtt_3_1_2_2() {
    let broker = TestBroker::start();
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect(6, "client-a", true, 60)).await;
    assert_eq!(c.expect_closed().await, vec![build::connack(false, 1)]);
}

#[tokio::test]
async fn connect_with_empty_client_id_and_clean_session_gets_an_id_mqtt_3_1_3_6() {
    let broker = TestBroker::start();
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect(4, "", true, 60)).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
    // It works like any session: subscribe and receive.
    c.send(&build::subscribe(1, &[("t", 0)])).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::suback(1, &[0]));
    c.send(&build::publish("t", 0, false, false, 0, b"x")).await;
    assert_eq!(
        c.recv_bytes().await.unwrap(),
        build::publish("t", 0, false, false, 0, b"x")
    );
}

#[tokio::test]
async fn connect_v5_with_empty_client_id_gets_assigned_client_identifier() {
    let broker = TestBroker::start();
    let mut c = Raw::connect(broker.addr).await;
    c.version = broker::codec::ProtocolVersion::V5;
    c.send(&build::connect5("", true, 60, &[])).await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.reason_code, ReasonCode::Success);
            let id = ack
                .properties
                .assigned_client_identifier
                .expect("assigned id");
            assert!(id.starts_with("tern-") && id.len() > 5, "{id}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn connect_with_empty_client_id_without_clean_session_is_refused_mqtt_3_1_3_8() {
    let broker = TestBroker::start();
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect(4, "", false, 60)).await;
    assert_eq!(c.expect_closed().await, vec![build::connack(false, 2)]);
}

#[tokio::test]
async fn connect_v31_with_empty_client_id_or_long_one_when_strict_is_refused() {
    // Ids over 23 characters are refused only with strict_v31_client_id
    // (accepted by default: conformance::mqtt_3_1_client_ids_over_23_...).
    let broker = TestBroker::start_with(|c| c.mqtt.strict_v31_client_id = true);
    for id in ["", "abcdefghijklmnopqrstuvwx"] {
        let mut c = Raw::connect(broker.addr).await;
        c.send(&build::connect(3, id, true, 60)).await;
        assert_eq!(
            c.expect_closed().await,
            vec![build::connack(false, 2)],
            "id {id:?}"
        );
    }
}

#[tokio::test]
async fn first_packet_other_than_connect_closes_the_connection_mqtt_3_1_0_1() {
    let broker = TestBroker::start();
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::pingreq()).await;
    assert!(c.expect_closed().await.is_empty());
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::subscribe(1, &[("a", 0)])).await;
    assert!(c.expect_closed().await.is_empty());
}

#[tokio::test]
async fn second_connect_closes_the_connection_mqtt_3_1_0_2() {
    let broker = TestBroker::start();
    let mut c = Raw::mqtt(broker.addr, "twice", true).await;
    c.send(&build::connect(4, "twice", true, 60)).await;
    assert!(c.expect_closed().await.is_empty());
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_connect_timeout() {
    let broker = TestBroker::start_with(|c| c.mqtt.connect_timeout_secs = 1);
    let mut c = Raw::connect(broker.addr).await;
    assert!(c.expect_closed().await.is_empty());
}

#[tokio::test]
async fn keep_alive_closes_a_silent_client_and_pings_keep_it_mqtt_3_1_2_24() {
    let broker = TestBroker::start();
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect(4, "ka", true, 1)).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
    // Pinging every half interval keeps the connection for several intervals.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.send(&build::pingreq()).await;
        assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());
    }
    // Silence: the broker closes it.
    assert!(c.expect_closed().await.is_empty());
}

#[tokio::test]
async fn keep_alive_watches_each_connection_on_its_own_mqtt_3_1_2_24() {
    // Connections share their worker's keep-alive sweep: a silent one is
    // closed while a pinging one, one without Keep Alive and the new
    // connection of a taken-over session stay.
    let broker = TestBroker::start();
    let mut silent = Raw::connect(broker.addr).await;
    silent.send(&build::connect(4, "silent", true, 1)).await;
    let mut pinging = Raw::connect(broker.addr).await;
    pinging.send(&build::connect(4, "pinging", true, 1)).await;
    let mut unwatched = Raw::connect(broker.addr).await;
    unwatched
        .send(&build::connect(4, "unwatched", true, 0))
        .await;
    let mut old = Raw::connect(broker.addr).await;
    old.send(&build::connect(4, "moved", false, 1)).await;
    for c in [&mut silent, &mut pinging, &mut unwatched, &mut old] {
        assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
    }
    // The session of "moved" gets a new connection; the old one's watch
    // goes with it and must not close the new one.
    let mut new = Raw::connect(broker.addr).await;
    new.send(&build::connect(4, "moved", false, 1)).await;
    assert_eq!(new.recv_bytes().await.unwrap(), build::connack(true, 0));
    assert!(old.expect_closed().await.is_empty());
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for c in [&mut pinging, &mut new] {
            c.send(&build::pingreq()).await;
            assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());
        }
    }
    // Three seconds of silence is past 1.5 x 1 s.
    assert!(silent.expect_closed().await.is_empty());
    unwatched.send(&build::pingreq()).await;
    assert_eq!(unwatched.recv_bytes().await.unwrap(), build::pingresp());
}

#[tokio::test]
async fn session_present_reflects_a_stored_session_mqtt_3_2_2_2() {
    let broker = TestBroker::start();
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect(4, "sp", false, 60)).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
    c.send(&build::disconnect()).await;
    c.expect_closed().await;

    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect(4, "sp", false, 60)).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::connack(true, 0));
    c.send(&build::disconnect()).await;
    c.expect_closed().await;

    // Clean session discards it [MQTT-3.2.2-1].
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect(4, "sp", true, 60)).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
    c.send(&build::disconnect()).await;
    c.expect_closed().await;

    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect(4, "sp", false, 60)).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
}

#[tokio::test]
async fn second_client_with_same_id_takes_the_session_over_mqtt_3_1_4_2() {
    let broker = TestBroker::start();
    let mut first = Raw::mqtt(broker.addr, "same", false).await;
    first.send(&build::subscribe(1, &[("take/over", 1)])).await;
    assert_eq!(first.recv_bytes().await.unwrap(), build::suback(1, &[1]));

    let mut second = Raw::connect(broker.addr).await;
    second.send(&build::connect(4, "same", false, 60)).await;
    assert_eq!(second.recv_bytes().await.unwrap(), build::connack(true, 0));
    assert!(first.expect_closed().await.is_empty());

    // The new connection has the session's subscription.
    let mut publisher = Raw::mqtt(broker.addr, "pub", true).await;
    publisher
        .send(&build::publish("take/over", 0, false, false, 0, b"hi"))
        .await;
    assert_eq!(
        second.recv_bytes().await.unwrap(),
        build::publish("take/over", 0, false, false, 0, b"hi")
    );
}

#[tokio::test]
async fn takeover_of_a_v5_session_sends_disconnect_session_taken_over() {
    let broker = TestBroker::start();
    let mut first = Raw::mqtt5(broker.addr, "same5", true, &[]).await;
    let _second = Raw::mqtt5(broker.addr, "same5", true, &[]).await;
    let got = first.expect_closed().await;
    assert_eq!(
        got,
        vec![vec![0xE0, 0x01, 0x8E]],
        "DISCONNECT 0x8E then close"
    );
}

#[tokio::test]
async fn many_clients_connect_and_disconnect_and_the_broker_keeps_serving() {
    let broker = TestBroker::start();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let addr = broker.addr;
        tasks.push(tokio::spawn(async move {
            let id = format!("c{i}");
            let mut c = Raw::mqtt(addr, &id, i % 2 == 0).await;
            c.send(&build::pingreq()).await;
            assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());
            c.send(&build::disconnect()).await;
            c.expect_closed().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = Raw::mqtt(broker.addr, "after", true).await;
    c.send(&build::pingreq()).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());
}
