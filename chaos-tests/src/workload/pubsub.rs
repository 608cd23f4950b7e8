//! The two loops every scenario is made of: a publisher sending numbered,
//! timestamped messages (at a rate, or as fast as its inflight window
//! allows), and a subscriber counting what arrives and acknowledging it.
//!
//! A publisher batches: it encodes as many PUBLISH packets as are due (or a
//! batch of [`BATCH`] when unpaced) and writes them with one call. A
//! subscriber decodes everything one read brought and answers the
//! acknowledgements with one write. So the load generator spends its CPU on
//! the protocol, not on syscalls, and the broker is what saturates first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::codec::{Packet, Publish, PublishProperties, QoS};
use bytes::BytesMut;
use bytestring::ByteString;
use tokio::sync::{mpsc, watch, Semaphore};

use super::client::{ack_for, response, Client, PacketWriter, FLUSH_AT};
use super::payload::{self, Header};
use super::stats::Received;

/// How long a client may take to send DISCONNECT: a broker busy with a
/// backlog may not read it, and a run must end anyway.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Messages encoded per write when publishing as fast as possible.
pub const BATCH: u64 = 64;

/// What one publisher does.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    /// Index carried in every payload header.
    pub index: u32,
    /// Topic of every message, or with `topic_per_message` the prefix of
    /// `{topic}/{seq}`.
    pub topic: String,
    pub topic_per_message: bool,
    pub qos: QoS,
    pub retain: bool,
    pub payload: usize,
    /// Messages per second for this publisher; `None`: unpaced.
    pub rate: Option<f64>,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Stop publishing at this instant (always set: runs are bounded).
    pub deadline: Instant,
    /// Most QoS 1/2 messages unacknowledged at once.
    pub inflight: usize,
    /// After the last PUBLISH, how long to wait for outstanding acks.
    pub ack_timeout: Duration,
}

/// What one publisher did.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub sent: u64,
    pub acked: u64,
    /// Unix ns of the first and last PUBLISH.
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    pub error: Option<String>,
}

/// Writes what is queued unless `deadline` passes first: a broker that
/// stops reading (busy with a backlog) must not hold the run past its end.
/// `Ok(false)` when the deadline cut the write short.
async fn flush_by(writer: &mut PacketWriter, deadline: Instant) -> anyhow::Result<bool> {
    match tokio::time::timeout_at(deadline.into(), writer.flush()).await {
        Ok(r) => r.map(|()| true),
        Err(_) => Ok(false),
    }
}

/// Runs `plan` on `client`, then disconnects.
pub async fn publish(client: Client, plan: PublishPlan) -> Published {
    let Client {
        mut reader,
        mut writer,
        ..
    } = client;
    let window = Arc::new(Semaphore::new(plan.inflight.max(1)));
    let acked = Arc::new(AtomicU64::new(0));
    let (rel_tx, mut rel_rx) = mpsc::unbounded_channel::<u16>();
    // The ack reader: PUBACK / PUBCOMP free a window slot; PUBREC asks the
    // writer for a PUBREL.
    let ack_task = {
        let window = window.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            loop {
                match reader.next().await {
                    Ok(Some(Packet::PubAck(_) | Packet::PubComp(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                        window.add_permits(1);
                    }
                    Ok(Some(Packet::PubRec(r))) => {
                        if rel_tx.send(r.packet_id).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })
    };

    let mut out = Published::default();
    let result: anyhow::Result<()> = async {
        let mut scratch = BytesMut::new();
        let mut packet_id: u16 = 0;
        let start = Instant::now();
        let limit = plan.count.unwrap_or(u64::MAX);
        let base_topic = ByteString::from(plan.topic.as_str());
        'publishing: while out.sent < limit {
            let now = Instant::now();
            if now >= plan.deadline {
                break;
            }
            let due = match plan.rate {
                None => BATCH,
                Some(rate) => {
                    let target = (now.duration_since(start).as_secs_f64() * rate) as u64 + 1;
                    if target <= out.sent {
                        let next = start
                            + Duration::from_secs_f64((out.sent as f64) / rate)
                                .max(Duration::from_micros(200));
                        tokio::select! {
                            _ = tokio::time::sleep_until(next.min(plan.deadline).into()) => {}
                            Some(id) = rel_rx.recv() => {
                                writer.queue(&response(Packet::PubRel, id))?;
                                if !flush_by(&mut writer, plan.deadline).await? {
                                    break 'publishing;
                                }
                            }
                        }
                        continue;
                    }
                    (target - out.sent).min(1024)
                }
            };
            while let Ok(id) = rel_rx.try_recv() {
                writer.queue(&response(Packet::PubRel, id))?;
            }
            for _ in 0..due.min(limit - out.sent) {
                if plan.qos != QoS::AtMostOnce {
                    match window.try_acquire() {
                        Ok(p) => p.forget(),
                        Err(_) => {
                            if !flush_by(&mut writer, plan.deadline).await? {
                                break 'publishing;
                            }
                            loop {
                                tokio::select! {
                                    p = window.acquire() => {
                                        p.expect("the window semaphore is never closed").forget();
                                        break;
                                    }
                                    Some(id) = rel_rx.recv() => {
                                        writer.queue(&response(Packet::PubRel, id))?;
                                        if !flush_by(&mut writer, plan.deadline).await? {
                                            break 'publishing;
                                        }
                                    }
                                    _ = tokio::time::sleep_until(plan.deadline.into()) => break 'publishing,
                                }
                            }
                        }
                    }
                }
                let sent_ns = payload::now_ns();
                let header = Header {
                    publisher: plan.index,
                    seq: out.sent,
                    sent_ns,
                };
                let topic = if plan.topic_per_message {
                    ByteString::from(format!("{}/{}", plan.topic, out.sent))
                } else {
                    base_topic.clone()
                };
                let packet_id = (plan.qos != QoS::AtMostOnce).then(|| {
                    packet_id = packet_id % u16::MAX + 1;
                    packet_id
                });
                writer.queue(&Packet::Publish(Publish {
                    dup: false,
                    qos: plan.qos,
                    retain: plan.retain,
                    topic,
                    packet_id,
                    payload: payload::encode(header, plan.payload, &mut scratch),
                    properties: PublishProperties::default(),
                }))?;
                out.first_ns.get_or_insert(sent_ns);
                out.last_ns = Some(sent_ns);
                out.sent += 1;
                if writer.buffered() >= FLUSH_AT && !flush_by(&mut writer, plan.deadline).await? {
                    break 'publishing;
                }
            }
            if !flush_by(&mut writer, plan.deadline).await? {
                break;
            }
        }
        // Wait for the acknowledgements of what is in flight (not when a
        // write was cut short: the broker is not keeping up).
        if plan.qos != QoS::AtMostOnce && writer.buffered() == 0 {
            let until = Instant::now() + plan.ack_timeout;
            while acked.load(Ordering::Relaxed) < out.sent {
                tokio::select! {
                    Some(id) = rel_rx.recv() => {
                        writer.queue(&response(Packet::PubRel, id))?;
                        if !flush_by(&mut writer, until).await? {
                            break;
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = tokio::time::sleep_until(until.into()) => break,
                }
            }
        }
        Ok(())
    }
    .await;
    out.acked = acked.load(Ordering::Relaxed);
    if let Err(e) = result {
        out.error = Some(format!("publisher {}: {e:#}", plan.index));
    }
    // After a cut-short write the stream ends mid-packet: just close it.
    if writer.buffered() == 0 {
        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, writer.disconnect()).await;
    }
    ack_task.abort();
    out
}

/// Counts what arrives at `client` until `stop` turns true or the
/// connection closes; `progress` follows the number of distinct messages.
pub async fn subscribe(
    client: Client,
    mut stop: watch::Receiver<bool>,
    progress: Arc<AtomicU64>,
) -> (Received, Option<String>) {
    let Client {
        mut reader,
        mut writer,
        ..
    } = client;
    let mut received = Received::default();
    let result: anyhow::Result<()> = async {
        loop {
            let now = payload::now_ns();
            while let Some(packet) = reader.try_next()? {
                match packet {
                    Packet::Publish(p) => {
                        match payload::decode(&p.payload) {
                            Some(h) => received.record(h, now),
                            None => received.malformed += 1,
                        }
                        if let Some(ack) = ack_for(p.qos, p.packet_id) {
                            writer.queue(&ack)?;
                        }
                    }
                    Packet::PubRel(r) => writer.queue(&response(Packet::PubComp, r.packet_id))?,
                    _ => {}
                }
                if writer.buffered() >= FLUSH_AT {
                    tokio::select! {
                        r = writer.flush() => r?,
                        _ = stop.changed() => return Ok(()),
                    }
                }
            }
            tokio::select! {
                r = writer.flush() => r?,
                _ = stop.changed() => return Ok(()),
            }
            progress.store(received.unique, Ordering::Relaxed);
            if *stop.borrow() {
                return Ok(());
            }
            tokio::select! {
                more = reader.fill() => if !more? { return Ok(()) },
                _ = stop.changed() => return Ok(()),
            }
        }
    }
    .await;
    if writer.buffered() == 0 {
        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, writer.disconnect()).await;
    }
    (received, result.err().map(|e| format!("subscriber: {e:#}")))
}
