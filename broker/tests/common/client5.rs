//! A real MQTT 5 client (rumqttc's v5 client) whose incoming packets arrive on
//! a channel, for feature tests.

use rumqttc::v5::mqttbytes::v5::{ConnAck, Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

use super::{TestBroker, PATIENCE, QUIET};

pub struct Client5 {
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<Packet>,
}

impl Client5 {
    /// Connects `id` with the options `tweak` sets; returns the CONNACK.
    pub async fn connect(
        broker: &TestBroker,
        id: &str,
        tweak: impl FnOnce(&mut MqttOptions),
    ) -> (Client5, ConnAck) {
        let mut opts = MqttOptions::new(id, "127.0.0.1", broker.addr.port());
        opts.set_keep_alive(std::time::Duration::from_secs(10));
        tweak(&mut opts);
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(packet) = event {
                    if tx.send(packet).is_err() {
                        break;
                    }
                }
            }
        });
        let mut c = Client5 { client, rx };
        match c.next().await {
            Packet::ConnAck(ack) => (c, ack),
            other => panic!("CONNACK expected, got {other:?}"),
        }
    }

    /// The next incoming packet.
    pub async fn next(&mut self) -> Packet {
        tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("a packet within the patience window")
            .expect("event loop alive")
    }

    /// The next PUBLISH, skipping acknowledgements.
    pub async fn next_publish(&mut self) -> Publish {
        loop {
            match self.next().await {
                Packet::Publish(p) => return p,
                Packet::PubAck(_)
                | Packet::PubRec(_)
                | Packet::PubComp(_)
                | Packet::PubRel(_)
                | Packet::PingResp(_) => {}
                other => panic!("PUBLISH expected, got {other:?}"),
            }
        }
    }

    /// Waits for the SUBACK of the last subscribe; returns its reason codes.
    pub async fn suback(&mut self) -> Vec<rumqttc::v5::mqttbytes::v5::SubscribeReasonCode> {
        loop {
            match self.next().await {
                Packet::SubAck(ack) => return ack.return_codes,
                Packet::PingResp(_) => {}
                other => panic!("SUBACK expected, got {other:?}"),
            }
        }
    }

    /// No PUBLISH arrives within QUIET.
    pub async fn no_publish(&mut self) {
        let end = tokio::time::Instant::now() + QUIET;
        while let Ok(Some(p)) = tokio::time::timeout_at(end, self.rx.recv()).await {
            if let Packet::Publish(p) = p {
                panic!("no PUBLISH expected, got {p:?}");
            }
        }
    }
}
