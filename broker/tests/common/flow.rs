//! A QoS 1/2 workload for tests that kill brokers: a publisher that counts
//! what was acknowledged, and a subscribing application that counts what it
//! got, so a test can check that nothing acknowledged was lost and no QoS 2
//! message arrived twice.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use super::{build, Raw};

/// What the publisher saw acknowledged.
#[derive(Default, Debug)]
pub struct Acked {
    pub qos1: BTreeSet<u32>,
    pub qos2: BTreeSet<u32>,
    pub sent: u32,
}

/// Publishes QoS 1 and 2 messages to `{prefix}/q1` and `{prefix}/q2`
/// (payload: 4-byte sequence number; even ones QoS 1, odd ones QoS 2) with up
/// to 32 in flight until the connection breaks or `count` are acknowledged.
pub async fn publish_until_broken(
    addr: SocketAddr,
    client_id: &str,
    prefix: &str,
    first_seq: u32,
    count: u32,
) -> Acked {
    let p = Raw::mqtt(addr, client_id, true).await;
    publish_on(p, prefix, first_seq, count).await
}

/// As [`publish_until_broken`], for a node that may be down or refuse the
/// connection: then nothing is sent.
pub async fn publish_rounds(
    addr: SocketAddr,
    client_id: &str,
    prefix: &str,
    first_seq: u32,
    count: u32,
) -> Acked {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return Acked::default();
    };
    let mut p = Raw::over(stream);
    if !p.try_send(&build::connect(4, client_id, true, 60)).await {
        return Acked::default();
    }
    match p.recv_bytes_within(Duration::from_secs(10)).await {
        Some(connack) if connack == build::connack(false, 0) => {
            publish_on(p, prefix, first_seq, count).await
        }
        _ => Acked::default(),
    }
}

async fn publish_on(mut p: Raw, prefix: &str, first_seq: u32, count: u32) -> Acked {
    let mut acked = Acked::default();
    let (q1, q2) = (format!("{prefix}/q1"), format!("{prefix}/q2"));
    let mut in_flight: HashMap<u16, (u32, u8)> = HashMap::new();
    let mut seq = first_seq;
    let mut next_id: u16 = 1;
    loop {
        while in_flight.len() < 32 && seq < first_seq + count {
            let qos = if seq.is_multiple_of(2) { 1 } else { 2 };
            let topic = if qos == 1 { &q1 } else { &q2 };
            let id = next_id;
            next_id = next_id % 60_000 + 1;
            let bytes = build::publish(topic, qos, false, false, id, &seq.to_be_bytes());
            if tokio::io::AsyncWriteExt::write_all(&mut p.stream, &bytes)
                .await
                .is_err()
            {
                return acked;
            }
            in_flight.insert(id, (seq, qos));
            seq += 1;
            acked.sent += 1;
        }
        if in_flight.is_empty() {
            return acked;
        }
        let Some(packet) = p.recv_bytes_within(Duration::from_secs(5)).await else {
            return acked;
        };
        let id = u16::from_be_bytes([packet[2], packet[3]]);
        match packet[0] {
            0x40 => {
                if let Some((s, 1)) = in_flight.remove(&id) {
                    acked.qos1.insert(s);
                }
            }
            0x50 => {
                if let Some((s, 2)) = in_flight.get(&id).copied() {
                    acked.qos2.insert(s);
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut p.stream, &build::pubrel(id))
                        .await;
                }
            }
            0x70 => {
                in_flight.remove(&id);
            }
            other => panic!("unexpected packet {other:02x}"),
        }
    }
}

/// The subscribing application: acknowledges what it gets, keeps QoS 2
/// packet ids until PUBREL (method B) so a resend is not delivered twice,
/// and counts deliveries per sequence number.
#[derive(Default)]
pub struct App {
    pub qos1: HashMap<u32, u32>,
    pub qos2: HashMap<u32, u32>,
    unreleased: HashSet<u16>,
}

impl App {
    /// Connects `client_id` with a persistent session (3.1.1).
    pub async fn connect(addr: SocketAddr, client_id: &str, expect_session: bool) -> Raw {
        let mut s = Raw::connect(addr).await;
        s.send(&build::connect(4, client_id, false, 60)).await;
        let connack = s.recv_bytes().await.expect("CONNACK");
        assert_eq!(connack, build::connack(expect_session, 0));
        s
    }

    /// Reads until `quiet` passes without a packet or the connection closes.
    pub async fn drain(&mut self, s: &mut Raw, quiet: Duration) {
        while let Some(packet) = s.recv_bytes_within(quiet).await {
            self.handle(s, &packet).await;
        }
    }

    /// Handles one packet of a 3.1.1 connection (PUBLISH or PUBREL).
    pub async fn handle_packet(&mut self, s: &mut Raw, packet: &[u8]) {
        self.handle(s, packet).await
    }

    /// Handles one packet of an MQTT 5 connection (PUBLISH or PUBREL).
    pub async fn handle5(&mut self, s: &mut Raw, packet: &[u8]) {
        self.handle_version(s, packet, true).await
    }

    async fn handle(&mut self, s: &mut Raw, packet: &[u8]) {
        self.handle_version(s, packet, false).await
    }

    async fn handle_version(&mut self, s: &mut Raw, packet: &[u8], v5: bool) {
        let kind = packet[0] >> 4;
        let qos = (packet[0] >> 1) & 3;
        match kind {
            3 => {
                // Skip remaining length, then topic.
                let mut i = 1;
                while packet[i] & 0x80 != 0 {
                    i += 1;
                }
                i += 1;
                let topic_len = u16::from_be_bytes([packet[i], packet[i + 1]]) as usize;
                i += 2 + topic_len;
                let id = u16::from_be_bytes([packet[i], packet[i + 1]]);
                i += 2;
                if v5 {
                    // properties: a variable byte integer length, then them
                    let (mut len, mut shift) = (0usize, 0);
                    loop {
                        let b = packet[i];
                        i += 1;
                        len |= usize::from(b & 0x7f) << shift;
                        shift += 7;
                        if b & 0x80 == 0 {
                            break;
                        }
                    }
                    i += len;
                }
                let seq = u32::from_be_bytes(packet[i..i + 4].try_into().unwrap());
                if qos == 1 {
                    *self.qos1.entry(seq).or_default() += 1;
                    s.try_send(&build::puback(id)).await;
                } else {
                    assert_eq!(qos, 2, "delivered at the subscribed QoS");
                    if self.unreleased.insert(id) {
                        *self.qos2.entry(seq).or_default() += 1;
                    }
                    s.try_send(&build::pubrec(id)).await;
                }
            }
            6 => {
                let id = u16::from_be_bytes([packet[2], packet[3]]);
                self.unreleased.remove(&id);
                s.try_send(&build::pubcomp(id)).await;
            }
            _ => panic!("unexpected packet {packet:02x?}"),
        }
    }
}

/// Every acknowledged message arrived; no QoS 2 message arrived twice.
pub fn check(app: &App, acked: &Acked) {
    for seq in &acked.qos1 {
        assert!(
            app.qos1.contains_key(seq),
            "acknowledged QoS 1 message {seq} lost"
        );
    }
    for seq in &acked.qos2 {
        assert!(
            app.qos2.contains_key(seq),
            "acknowledged QoS 2 message {seq} lost"
        );
    }
    for (seq, n) in &app.qos2 {
        assert_eq!(*n, 1, "QoS 2 message {seq} delivered {n} times");
    }
}
