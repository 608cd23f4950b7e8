//! MQTT over WebSocket with a tokio-tungstenite client: the upgrade (path,
//! `mqtt` subprotocol), packets split across and batched in binary
//! messages, text messages, pings, the handshake timeout and the
//! connection limit. (MQTT.js from Node and from Chromium: `websocket_js.rs`.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use broker::config::ListenerProtocol;
use bytes::Bytes;
use common::{build, listener, Raw, TestBroker, PATIENCE};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A broker with a TCP listener (`addrs()[0]`) and a WebSocket listener
/// (`addrs()[1]`).
fn broker_with_ws(tweak: impl FnOnce(&mut broker::config::Config)) -> (TestBroker, SocketAddr) {
    let broker = TestBroker::start_with(|c| {
        c.listeners.push(listener(ListenerProtocol::Ws, None));
        tweak(c);
    });
    let ws = broker.addrs()[1];
    (broker, ws)
}

/// Reads binary messages until `want` bytes arrived; fails on anything else.
async fn read_bytes(ws: &mut WebSocketStream<TcpStream>, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => got.extend_from_slice(&b),
            other => panic!("expected binary data, got {other:?} after {got:02x?}"),
        }
    }
    got
}

/// True if the server ends the connection (Close, EOF or reset) within PATIENCE.
async fn closed_by_server(ws: &mut WebSocketStream<TcpStream>) -> bool {
    let end = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(end, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test]
async fn websocket_client_exchanges_messages_with_a_tcp_client() {
    let (broker, ws_addr) = broker_with_ws(|_| {});
    let mut ws = common::ws::mqtt(ws_addr, "ws-client").await;
    ws.send(&build::subscribe(1, &[("to-ws", 1)])).await;
    assert_eq!(ws.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    let mut tcp = Raw::mqtt(broker.addr, "tcp-client", true).await;
    tcp.send(&build::subscribe(1, &[("to-tcp", 0)])).await;
    assert_eq!(tcp.recv_bytes().await.unwrap(), build::suback(1, &[0]));

    tcp.send(&build::publish("to-ws", 1, false, false, 3, b"over tcp"))
        .await;
    assert_eq!(tcp.recv_bytes().await.unwrap(), build::puback(3));
    assert_eq!(
        ws.recv_bytes().await.unwrap(),
        build::publish("to-ws", 1, false, false, 1, b"over tcp")
    );
    ws.send(&build::puback(1)).await;
    ws.send(&build::publish("to-tcp", 0, false, false, 0, b"over ws"))
        .await;
    assert_eq!(
        tcp.recv_bytes().await.unwrap(),
        build::publish("to-tcp", 0, false, false, 0, b"over ws")
    );
    ws.send(&build::disconnect()).await;
    ws.expect_closed().await;
}

#[tokio::test]
async fn packets_split_across_messages_or_batched_in_one_are_decoded_mqtt_6_0_0_2() {
    let (_broker, ws_addr) = broker_with_ws(|_| {});
    let (mut ws, _) = common::ws::connect(ws_addr, "/mqtt", &["mqtt"])
        .await
        .unwrap();
    // CONNECT in three binary messages, cut inside the fixed header and
    // inside the client id.
    let connect = build::connect(4, "split-client", true, 60);
    for part in [&connect[..1], &connect[1..6], &connect[6..]] {
        ws.send(Message::Binary(Bytes::copy_from_slice(part)))
            .await
            .unwrap();
    }
    assert_eq!(read_bytes(&mut ws, 4).await, build::connack(false, 0));

    // SUBSCRIBE, a PUBLISH to that topic and PINGREQ in one message.
    let mut batch = build::subscribe(1, &[("echo", 1)]);
    batch.extend(build::publish("echo", 1, false, false, 9, b"batched"));
    batch.extend(build::pingreq());
    ws.send(Message::Binary(batch.into())).await.unwrap();
    let suback = build::suback(1, &[1]);
    let puback = build::puback(9);
    let publish = build::publish("echo", 1, false, false, 1, b"batched");
    let pingresp = build::pingresp();
    let got = read_bytes(
        &mut ws,
        suback.len() + puback.len() + publish.len() + pingresp.len(),
    )
    .await;
    // SUBACK first; the others come from different turns of the session,
    // in an order that is not part of this test.
    let mut packets = split_packets(&got);
    assert_eq!(packets.remove(0), suback);
    packets.sort();
    let mut expected = vec![puback, publish, pingresp];
    expected.sort();
    assert_eq!(packets, expected);
}

/// Cuts a byte stream into packets by their fixed headers.
fn split_packets(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    while !bytes.is_empty() {
        let (mut len, mut i, mut shift) = (0usize, 1, 0);
        loop {
            let b = bytes[i];
            len |= ((b & 0x7f) as usize) << shift;
            i += 1;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        packets.push(bytes[..i + len].to_vec());
        bytes = &bytes[i + len..];
    }
    packets
}

#[tokio::test]
async fn upgrade_to_another_path_gets_404_and_a_configured_path_works() {
    let (_broker, ws_addr) = broker_with_ws(|c| c.listeners[1].path = "/ws".into());
    match common::ws::connect(ws_addr, "/mqtt", &["mqtt"]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
    let (ws, _) = common::ws::connect(ws_addr, "/ws", &["mqtt"])
        .await
        .expect("configured path upgrades");
    let mut raw = Raw::over(broker::listener::ws::WsTransport::new(ws));
    assert_eq!(raw.try_connect_mqtt("on-ws-path").await, Some(0));
}

#[tokio::test]
async fn upgrade_needs_the_mqtt_subprotocol_mqtt_6_0_0_3() {
    let (_broker, ws_addr) = broker_with_ws(|_| {});
    for offered in [&[][..], &["chat"][..]] {
        match common::ws::connect(ws_addr, "/mqtt", offered).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 400),
            other => panic!("offering {offered:?}: expected 400, got {other:?}"),
        }
    }
    // The chosen subprotocol is named in the response [MQTT-6.0.0-4].
    for (offered, chosen) in [
        (&["chat", "mqtt"][..], "mqtt"),
        (&["mqttv3.1"][..], "mqttv3.1"),
    ] {
        let (_, response) = common::ws::connect(ws_addr, "/mqtt", offered)
            .await
            .unwrap();
        assert_eq!(
            response.headers().get("Sec-WebSocket-Protocol").unwrap(),
            chosen
        );
    }
}

#[tokio::test]
async fn text_message_closes_the_connection_mqtt_6_0_0_1() {
    let (_broker, ws_addr) = broker_with_ws(|_| {});
    let (mut ws, _) = common::ws::connect(ws_addr, "/mqtt", &["mqtt"])
        .await
        .unwrap();
    ws.send(Message::Binary(
        build::connect(4, "texter", true, 60).into(),
    ))
    .await
    .unwrap();
    assert_eq!(read_bytes(&mut ws, 4).await, build::connack(false, 0));
    ws.send(Message::Text("PINGREQ".into())).await.unwrap();
    assert!(closed_by_server(&mut ws).await, "connection still open");
}

#[tokio::test]
async fn websocket_ping_is_answered_with_pong() {
    let (_broker, ws_addr) = broker_with_ws(|_| {});
    let (mut ws, _) = common::ws::connect(ws_addr, "/mqtt", &["mqtt"])
        .await
        .unwrap();
    ws.send(Message::Binary(
        build::connect(4, "pinger", true, 60).into(),
    ))
    .await
    .unwrap();
    assert_eq!(read_bytes(&mut ws, 4).await, build::connack(false, 0));
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    match tokio::time::timeout(PATIENCE, ws.next()).await {
        Ok(Some(Ok(Message::Pong(p)))) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected Pong, got {other:?}"),
    }
}

#[tokio::test]
async fn stalled_websocket_upgrade_is_closed_after_the_connect_timeout() {
    let (_broker, ws_addr) = broker_with_ws(|c| c.mqtt.connect_timeout_secs = 1);
    let mut silent = Raw::connect(ws_addr).await;
    let mut partial = Raw::connect(ws_addr).await;
    partial
        .send(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
        .await;
    assert!(silent.expect_closed().await.is_empty());
    assert!(partial.expect_closed().await.is_empty());
}

#[tokio::test]
async fn connection_limit_applies_to_websocket_listeners() {
    let (_broker, ws_addr) = broker_with_ws(|c| c.listeners[1].max_connections = 1);
    let first = common::ws::mqtt(ws_addr, "first").await;
    // The second is closed at accept: the upgrade fails.
    assert!(
        common::ws::connect(ws_addr, "/mqtt", &["mqtt"])
            .await
            .is_err(),
        "second connection over the limit accepted"
    );
    drop(first);
    let end = std::time::Instant::now() + PATIENCE;
    loop {
        if common::ws::connect(ws_addr, "/mqtt", &["mqtt"])
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "no connection admitted after the first closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn oversized_websocket_message_closes_the_connection() {
    let (_broker, ws_addr) = broker_with_ws(|c| c.mqtt.max_packet_size = 1024);
    let (mut ws, _) = common::ws::connect(ws_addr, "/mqtt", &["mqtt"])
        .await
        .unwrap();
    ws.send(Message::Binary(build::connect(4, "big", true, 60).into()))
        .await
        .unwrap();
    assert_eq!(read_bytes(&mut ws, 4).await, build::connack(false, 0));
    // Larger than max_packet_size + 64 KiB: refused before it is buffered.
    let _ = ws
        .send(Message::Binary(vec![0u8; 1024 + 65 * 1024].into()))
        .await;
    assert!(closed_by_server(&mut ws).await, "connection still open");
}
