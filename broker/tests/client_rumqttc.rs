//! Tern with a real MQTT client library (rumqttc), MQTT 3.1.1 and 5.0.

mod common;

use std::time::Duration;

use common::{TestBroker, PATIENCE};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

type Received = (String, Vec<u8>, QoS, bool);

/// A connected client whose received PUBLISH packets arrive on a channel;
/// a SUBACK arrives as an empty topic.
async fn client(
    broker: &TestBroker,
    id: &str,
    clean: bool,
) -> (AsyncClient, mpsc::UnboundedReceiver<Received>) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", broker.addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_clean_session(clean);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let (tx, rx) = mpsc::unbounded_channel();
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut connected = Some(connected_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(c) = connected.take() {
                        let _ = c.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec(), p.qos, p.retain));
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = tx.send((String::new(), Vec::new(), QoS::AtMostOnce, false));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    tokio::time::timeout(PATIENCE, connected_rx)
        .await
        .unwrap()
        .unwrap();
    (client, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    loop {
        let got = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("message within patience")
            .unwrap();
        if !got.0.is_empty() {
            return got;
        }
    }
}

/// Waits for the SUBACK of the last subscribe.
async fn subscribed(rx: &mut mpsc::UnboundedReceiver<Received>) {
    let got = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("SUBACK within patience")
        .unwrap();
    assert!(got.0.is_empty(), "SUBACK expected first, got {got:?}");
}

#[tokio::test]
async fn rumqttc_clients_exchange_qos_0_1_2() {
    let broker = TestBroker::start();
    let (sub, mut rx) = client(&broker, "rq-sub", true).await;
    sub.subscribe("rq/#", QoS::ExactlyOnce).await.unwrap();
    subscribed(&mut rx).await;
    let (publisher, _prx) = client(&broker, "rq-pub", true).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .publish(format!("rq/{i}"), qos, false, vec![i as u8; 100])
            .await
            .unwrap();
        let (topic, payload, got_qos, retain) = next(&mut rx).await;
        assert_eq!(
            (topic, payload, got_qos, retain),
            (format!("rq/{i}"), vec![i as u8; 100], qos, false)
        );
    }
}

#[tokio::test]
async fn rumqttc_many_messages_arrive_complete_and_in_order() {
    let broker = TestBroker::start();
    let (sub, mut rx) = client(&broker, "many-sub", true).await;
    sub.subscribe("many", QoS::AtLeastOnce).await.unwrap();
    subscribed(&mut rx).await;
    let (publisher, _prx) = client(&broker, "many-pub", true).await;
    let n = 2000u32;
    let p = tokio::spawn(async move {
        for i in 0..n {
            publisher
                .publish("many", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
                .await
                .unwrap();
        }
        publisher
    });
    for i in 0..n {
        let (_, payload, _, _) = next(&mut rx).await;
        assert_eq!(payload, i.to_be_bytes().to_vec());
    }
    p.await.unwrap();
}

#[tokio::test]
async fn rumqttc_persistent_session_receives_what_was_published_while_offline() {
    let broker = TestBroker::start();
    let (sub, mut rx) = client(&broker, "persist-sub", false).await;
    sub.subscribe("persist", QoS::AtLeastOnce).await.unwrap();
    subscribed(&mut rx).await;
    sub.disconnect().await.unwrap();
    drop(rx);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (publisher, _prx) = client(&broker, "persist-pub", true).await;
    for i in 0..10u8 {
        publisher
            .publish("persist", QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_sub, mut rx) = client(&broker, "persist-sub", false).await;
    for i in 0..10u8 {
        assert_eq!(next(&mut rx).await.1, vec![i]);
    }
}

#[tokio::test]
async fn rumqttc_v5_and_v311_clients_see_each_others_messages() {
    use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    let broker = TestBroker::start();
    let (sub311, mut rx311) = client(&broker, "v311", true).await;
    sub311.subscribe("mix/#", QoS::AtLeastOnce).await.unwrap();
    subscribed(&mut rx311).await;

    let opts = rumqttc::v5::MqttOptions::new("v5", "127.0.0.1", broker.addr.port());
    let (c5, mut el5) = rumqttc::v5::AsyncClient::new(opts, 100);
    let (tx5, mut rx5) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = el5.poll().await {
            match event {
                rumqttc::v5::Event::Incoming(Packet5::Publish(p)) => {
                    let _ = tx5.send((p.topic.to_vec(), p.payload.to_vec()));
                }
                rumqttc::v5::Event::Incoming(Packet5::SubAck(_)) => {
                    let _ = tx5.send((Vec::new(), Vec::new()));
                }
                _ => {}
            }
        }
    });
    c5.subscribe("mix/#", QoS5::AtLeastOnce).await.unwrap();
    let suback = tokio::time::timeout(PATIENCE, rx5.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(suback.0.is_empty(), "SUBACK first");

    c5.publish("mix/from5", QoS5::AtLeastOnce, false, b"five".to_vec())
        .await
        .unwrap();
    assert_eq!(next(&mut rx311).await.1, b"five".to_vec());
    let got5 = tokio::time::timeout(PATIENCE, rx5.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got5, (b"mix/from5".to_vec(), b"five".to_vec()));

    sub311
        .publish("mix/from311", QoS::AtLeastOnce, false, b"three".to_vec())
        .await
        .unwrap();
    assert_eq!(next(&mut rx311).await.1, b"three".to_vec());
    let got5 = tokio::time::timeout(PATIENCE, rx5.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got5, (b"mix/from311".to_vec(), b"three".to_vec()));
}
