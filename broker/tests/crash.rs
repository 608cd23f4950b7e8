//! Crash tests: a `tern` process is killed with SIGKILL while QoS 1 and QoS 2
//! messages flow to a persistent subscriber. After a restart on the same data
//! directory the subscriber, reconnecting without subscribing again, gets
//! every message whose PUBACK / PUBREC the publisher received: QoS 1 at least
//! once, QoS 2 exactly once.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use common::process::{free_port, TernProcess};
use common::{build, Raw};
use rand::Rng;

/// What the publisher saw acknowledged.
#[derive(Default, Debug)]
struct Acked {
    qos1: BTreeSet<u32>,
    qos2: BTreeSet<u32>,
    sent: u32,
}

/// Publishes QoS 1 and 2 messages (payload: 4-byte sequence number) with up
/// to 32 in flight until the connection breaks or `count` are acknowledged.
async fn publish_until_broken(addr: std::net::SocketAddr, first_seq: u32, count: u32) -> Acked {
    let mut acked = Acked::default();
    let mut p = Raw::mqtt(addr, "crash-pub", true).await;
    let mut in_flight: HashMap<u16, (u32, u8)> = HashMap::new();
    let mut seq = first_seq;
    let mut next_id: u16 = 1;
    loop {
        while in_flight.len() < 32 && seq < first_seq + count {
            let qos = if seq.is_multiple_of(2) { 1 } else { 2 };
            let topic = if qos == 1 { "crash/q1" } else { "crash/q2" };
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
struct App {
    qos1: HashMap<u32, u32>,
    qos2: HashMap<u32, u32>,
    unreleased: HashSet<u16>,
}

impl App {
    async fn connect(addr: std::net::SocketAddr, expect_session: bool) -> Raw {
        let mut s = Raw::connect(addr).await;
        s.send(&build::connect(4, "crash-sub", false, 60)).await;
        let connack = s.recv_bytes().await.expect("CONNACK");
        assert_eq!(connack, build::connack(expect_session, 0));
        s
    }

    /// Reads until `quiet` passes without a packet or the connection closes.
    async fn drain(&mut self, s: &mut Raw, quiet: Duration) {
        while let Some(packet) = s.recv_bytes_within(quiet).await {
            self.handle(s, &packet).await;
        }
    }

    async fn handle(&mut self, s: &mut Raw, packet: &[u8]) {
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

fn check(app: &App, acked: &Acked) {
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

async fn crash_cycles(subscriber_online: bool) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let broker = TernProcess::start(&data, port, &[]);
    let addr = broker.addr;

    let mut s = App::connect(addr, false).await;
    s.send(&build::subscribe(1, &[("crash/q1", 1), ("crash/q2", 2)]))
        .await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::suback(1, &[1, 2]));
    let mut app = App::default();
    let mut all = Acked::default();
    let mut broker = Some(broker);
    let mut rng = rand::thread_rng();
    let mut subscriber = if subscriber_online {
        Some(s)
    } else {
        s.send(&build::disconnect()).await;
        s.expect_closed().await;
        None
    };

    for cycle in 0..3u32 {
        let kill_after = Duration::from_millis(rng.gen_range(150..700));
        let publisher = tokio::spawn(publish_until_broken(addr, cycle * 1_000_000, 200_000));
        if let Some(s) = subscriber.as_mut() {
            let _ = tokio::time::timeout(kill_after, app.drain(s, kill_after)).await;
        } else {
            tokio::time::sleep(kill_after).await;
        }
        broker.take().unwrap().kill9();
        let acked = publisher.await.unwrap();
        assert!(acked.sent > 0, "cycle {cycle}: publisher sent nothing");
        if let Some(mut s) = subscriber.take() {
            app.drain(&mut s, Duration::from_millis(200)).await;
        }
        all.qos1.extend(acked.qos1);
        all.qos2.extend(acked.qos2);
        all.sent += acked.sent;

        broker = Some(TernProcess::start(&data, port, &[]));
        // The session and its subscriptions survived: no SUBSCRIBE again.
        let mut s = App::connect(addr, true).await;
        app.drain(&mut s, Duration::from_millis(1500)).await;
        check(&app, &all);
        if subscriber_online {
            subscriber = Some(s);
        } else {
            s.send(&build::disconnect()).await;
            s.expect_closed().await;
        }
    }
    assert!(
        !all.qos1.is_empty() && !all.qos2.is_empty(),
        "the workload acknowledged messages before the kills: {all:?}"
    );

    // Subscriptions are intact: a new message arrives without resubscribing.
    let mut s = match subscriber.take() {
        Some(s) => s,
        None => App::connect(addr, true).await,
    };
    let mut p = Raw::mqtt(addr, "after", true).await;
    p.send(&build::publish(
        "crash/q1",
        1,
        false,
        false,
        1,
        &u32::MAX.to_be_bytes(),
    ))
    .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(1));
    app.drain(&mut s, Duration::from_millis(500)).await;
    assert!(app.qos1.contains_key(&u32::MAX));
    eprintln!(
        "crash test: {} sent, {} QoS 1 and {} QoS 2 acknowledged, all delivered; {} QoS 1 duplicates",
        all.sent,
        all.qos1.len(),
        all.qos2.len(),
        app.qos1.values().filter(|n| **n > 1).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_offline_persistent_subscriber_loses_no_acknowledged_message() {
    crash_cycles(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_online_persistent_subscriber_loses_nothing_and_duplicates_no_qos2() {
    crash_cycles(true).await;
}
