//! The chaos workload: MQTT clients that keep working while nodes fail,
//! and record what they see into the [`History`].
//!
//! - Publishers (QoS 1 and QoS 2, 3.1.1 and 5.0, clean sessions) send
//!   stamped payloads (publisher, sequence) one at a time to a random
//!   node and record each outcome. After an error they reconnect to
//!   another random node, as client libraries do with a list of brokers,
//!   and go on with the next sequence number: a message without an
//!   acknowledgement is never sent again, so it is `Unknown`, not a
//!   duplicate in the making.
//! - Persistent subscribers (3.1.1 Clean Session 0, 5.0 Session Expiry
//!   Interval 1 day) and two members of a shared subscription stay
//!   connected 2-10 s, disconnect (cleanly or by dropping the socket),
//!   stay away up to 2 s and resume their session on a random node. They
//!   keep the QoS 2 packet ids they acknowledged until PUBREL across
//!   reconnects (the receiver's side of 4.3.3), so a resent PUBLISH with
//!   a known id is not delivered twice.
//! - Retained writers overwrite one topic each (QoS 1); a retained reader
//!   subscribes from time to time on a random node.
//!
//! Every wait has a timeout; publishers and writers stop at
//! [`Workload::stop_publishing`], subscribers after their final drain.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use broker::codec::{Packet, ProtocolVersion, Publish, QoS};
use bytes::BytesMut;
use bytestring::ByteString;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use super::history::{Event, History, Outcome};
use crate::workload::client::{response, Client, ClientOptions, PacketReader, PacketWriter};
use crate::workload::payload::{self, Header};

/// Publisher numbers of the retained writers start here.
pub const RETAINED_BASE: u32 = 1000;

/// A 5.0 persistent session's expiry: longer than any run and any clock
/// jump the nemesis makes.
const SESSION_EXPIRY: u32 = 86_400;

/// How long a publisher waits for an acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);

/// What the workload is made of.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub publishers: u32,
    /// Messages per second of each publisher.
    pub rate: f64,
    /// Plain persistent subscribers (half 3.1.1, half 5.0).
    pub subscribers: u32,
    /// Members of the one shared subscription (5.0).
    pub shared: u32,
    pub retained_writers: u32,
    pub seed: u64,
    /// Makes topics and client ids unique to the run.
    pub tag: String,
}

/// Nodes clients may connect to.
#[derive(Clone, Default)]
pub struct Targets(Arc<Mutex<Vec<(u64, SocketAddr, bool)>>>);

impl Targets {
    /// Replaces the list: (node id, MQTT address, up).
    pub fn set(&self, nodes: Vec<(u64, SocketAddr, bool)>) {
        *self.0.lock() = nodes;
    }

    /// A random node, among the up ones if `up_only`.
    fn pick(&self, rng: &mut StdRng, up_only: bool) -> Option<(u64, SocketAddr)> {
        let nodes: Vec<_> = self
            .0
            .lock()
            .iter()
            .filter(|n| n.2 || !up_only)
            .map(|n| (n.0, n.1))
            .collect();
        if nodes.is_empty() {
            return None;
        }
        Some(nodes[rng.gen_range(0..nodes.len())])
    }

    pub fn up(&self) -> Vec<(u64, SocketAddr)> {
        self.0
            .lock()
            .iter()
            .filter(|n| n.2)
            .map(|n| (n.0, n.1))
            .collect()
    }
}

/// State shared by the clients and the runner.
struct Shared {
    history: History,
    targets: Targets,
    stop_publishing: AtomicBool,
    drain: AtomicBool,
    /// When the final drain must end, whatever happens.
    drain_deadline: Mutex<Option<Instant>>,
    /// The node each persistent subscriber last connected to.
    owners: Mutex<HashMap<String, u64>>,
}

/// The running workload.
pub struct Workload {
    shared: Arc<Shared>,
    publishers: Vec<JoinHandle<()>>,
    subscribers: Vec<JoinHandle<()>>,
    pub spec: WorkloadSpec,
}

impl Workload {
    pub fn start(spec: WorkloadSpec, history: History, targets: Targets) -> Workload {
        let shared = Arc::new(Shared {
            history,
            targets,
            stop_publishing: AtomicBool::new(false),
            drain: AtomicBool::new(false),
            drain_deadline: Mutex::new(None),
            owners: Mutex::new(HashMap::new()),
        });
        let tag = &spec.tag;
        let rng = |k: u64| StdRng::seed_from_u64(spec.seed.wrapping_mul(1_000_003).wrapping_add(k));
        let mut subscribers = Vec::new();
        for i in 0..spec.subscribers {
            let version = if i % 2 == 0 {
                ProtocolVersion::V311
            } else {
                ProtocolVersion::V5
            };
            let name = format!("sub{i}-{}", if version.is_v5() { "v5" } else { "v311" });
            let s = Arc::clone(&shared);
            let filter = format!("chaos/{tag}/p/#");
            let client_id = format!("{tag}-{name}");
            subscribers.push(tokio::spawn(subscriber(
                s,
                name,
                client_id,
                version,
                filter,
                rng(100 + i as u64),
            )));
        }
        for i in 0..spec.shared {
            let name = format!("shared{i}-v5");
            let s = Arc::clone(&shared);
            let filter = format!("$share/g{tag}/chaos/{tag}/p/#");
            let client_id = format!("{tag}-{name}");
            subscribers.push(tokio::spawn(subscriber(
                s,
                name,
                client_id,
                ProtocolVersion::V5,
                filter,
                rng(200 + i as u64),
            )));
        }
        let mut publishers = Vec::new();
        let interval = Duration::from_secs_f64(1.0 / spec.rate.max(0.1));
        for p in 0..spec.publishers {
            let qos = if p % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            let version = if p % 4 < 2 {
                ProtocolVersion::V311
            } else {
                ProtocolVersion::V5
            };
            let job = PublishJob {
                publisher: p,
                client_id: format!("{tag}-pub{p}"),
                topic: format!("chaos/{tag}/p/{p}"),
                qos,
                version,
                retain: false,
                interval,
            };
            publishers.push(tokio::spawn(publisher(
                Arc::clone(&shared),
                job,
                rng(p as u64),
            )));
        }
        for w in 0..spec.retained_writers {
            let job = PublishJob {
                publisher: RETAINED_BASE + w,
                client_id: format!("{tag}-retain{w}"),
                topic: format!("chaos/{tag}/retained/{w}"),
                qos: QoS::AtLeastOnce,
                version: if w % 2 == 0 {
                    ProtocolVersion::V311
                } else {
                    ProtocolVersion::V5
                },
                retain: true,
                interval: Duration::from_millis(500),
            };
            publishers.push(tokio::spawn(publisher(
                Arc::clone(&shared),
                job,
                rng(300 + w as u64),
            )));
        }
        if spec.retained_writers > 0 {
            let s = Arc::clone(&shared);
            let filter = format!("chaos/{tag}/retained/#");
            publishers.push(tokio::spawn(retained_reader(s, filter, rng(400))));
        }
        Workload {
            shared,
            publishers,
            subscribers,
            spec,
        }
    }

    /// The node persistent subscriber `name` last connected to.
    pub fn owner_of(&self, pick: u64) -> Option<u64> {
        let owners = self.shared.owners.lock();
        let mut names: Vec<_> = owners.keys().cloned().collect();
        names.sort();
        let name = names.get((pick % names.len().max(1) as u64) as usize)?;
        owners.get(name).copied()
    }

    /// Stops publishers, writers and the reader; waits for them (each
    /// finishes its current wait, at most [`ACK_TIMEOUT`] and a connect).
    pub async fn stop_publishing(&mut self) {
        self.shared.stop_publishing.store(true, Ordering::SeqCst);
        for h in self.publishers.drain(..) {
            let abort = h.abort_handle();
            if tokio::time::timeout(ACK_TIMEOUT * 2, h).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Every subscriber resumes its session once more on an up node and
    /// reads until nothing came for `DRAIN_QUIET`, all within `bound`.
    pub async fn drain(&mut self, bound: Duration) {
        *self.shared.drain_deadline.lock() = Some(Instant::now() + bound);
        self.shared.drain.store(true, Ordering::SeqCst);
        for h in self.subscribers.drain(..) {
            let abort = h.abort_handle();
            if tokio::time::timeout(bound + Duration::from_secs(10), h)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Reads the retained messages of every up node (the final check).
    pub async fn read_retained_everywhere(&self) {
        let filter = format!("chaos/{}/retained/#", self.spec.tag);
        for (node, addr) in self.shared.targets.up() {
            let mut seen = HashSet::new();
            for attempt in 0..5 {
                match read_retained(
                    &self.shared,
                    node,
                    addr,
                    &filter,
                    &format!("{}-final{node}-{attempt}", self.spec.tag),
                )
                .await
                {
                    Ok(got) => {
                        for (publisher, seq) in got {
                            seen.insert(publisher);
                            self.shared.history.record(Event::RetainedRead {
                                node,
                                publisher,
                                seq: Some(seq),
                                last: true,
                            });
                        }
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
            for w in 0..self.spec.retained_writers {
                if !seen.contains(&(RETAINED_BASE + w)) {
                    self.shared.history.record(Event::RetainedRead {
                        node,
                        publisher: RETAINED_BASE + w,
                        seq: None,
                        last: true,
                    });
                }
            }
        }
    }
}

const DRAIN_QUIET: Duration = Duration::from_secs(6);

struct PublishJob {
    publisher: u32,
    client_id: String,
    topic: String,
    qos: QoS,
    version: ProtocolVersion,
    retain: bool,
    interval: Duration,
}

/// How long a client waits for its CONNACK: longer than the cluster's
/// forward timeout (10 s), within which a node answers a CONNECT even when
/// the session's owner cannot be reached. (A client that gives up sooner
/// leaves a CONNECT behind that may still take its session over later;
/// README, Cluster, "Sessions".)
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

fn options(version: ProtocolVersion, client_id: &str) -> ClientOptions {
    let mut o = ClientOptions::new(version, client_id);
    o.timeout = CONNECT_TIMEOUT;
    o
}

async fn publisher(s: Arc<Shared>, job: PublishJob, mut rng: StdRng) {
    let mut seq = 0u64;
    let mut connection = 0u64;
    let mut scratch = BytesMut::new();
    while !s.stop_publishing.load(Ordering::SeqCst) {
        let Some((node, addr)) = s.targets.pick(&mut rng, false) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let connect_ms = s.history.now_ms();
        let client = match Client::connect(addr, &options(job.version, &job.client_id)).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(100..500))).await;
                continue;
            }
        };
        connection += 1;
        s.history.record(Event::Connected {
            client: job.client_id.clone(),
            node,
            connect_ms,
            resume: false,
            session_present: client.session_present,
        });
        let Client {
            mut reader,
            mut writer,
            ..
        } = client;
        let reason = loop {
            if s.stop_publishing.load(Ordering::SeqCst) {
                let _ = writer.disconnect().await;
                break "stopped".to_owned();
            }
            tokio::time::sleep(job.interval).await;
            let sent_ns = payload::now_ns();
            let header = Header {
                publisher: job.publisher,
                seq,
                sent_ns,
            };
            let packet_id = (seq % 65_535) as u16 + 1;
            let sent_ms = s.history.now_ms();
            let sent = Instant::now();
            let result = publish_once(
                &mut reader,
                &mut writer,
                &job,
                packet_id,
                payload::encode(header, 64, &mut scratch),
            )
            .await;
            let (outcome, error) = match result {
                Ok(true) => (Outcome::Acked, None),
                Ok(false) => (Outcome::Refused, None),
                Err(Step::BeforeAck(e)) => (Outcome::Unknown, Some(e)),
                Err(Step::AfterAck(e)) => (Outcome::Acked, Some(e)),
            };
            s.history.record(Event::Publish {
                publisher: job.publisher,
                seq,
                qos: job.qos as u8,
                retain: job.retain,
                node,
                connection,
                outcome,
                sent_ms,
                latency_ms: (outcome != Outcome::Unknown)
                    .then(|| sent.elapsed().as_millis() as u64),
            });
            seq += 1;
            if let Some(e) = error {
                break e.to_string();
            }
            if outcome == Outcome::Refused {
                break "refused".to_owned();
            }
        };
        s.history.record(Event::Disconnected {
            client: job.client_id.clone(),
            node,
            reason,
        });
    }
}

/// Where a publish failed: before its PUBACK / PUBREC, or after (QoS 2,
/// waiting for PUBCOMP).
enum Step {
    BeforeAck(anyhow::Error),
    AfterAck(anyhow::Error),
}

/// Sends one PUBLISH and waits for its acknowledgement (QoS 2: the whole
/// exchange). `Ok(false)`: a failure reason code.
async fn publish_once(
    reader: &mut PacketReader,
    writer: &mut PacketWriter,
    job: &PublishJob,
    packet_id: u16,
    body: bytes::Bytes,
) -> Result<bool, Step> {
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: job.qos,
        retain: job.retain,
        topic: ByteString::from(job.topic.as_str()),
        packet_id: Some(packet_id),
        payload: body,
        properties: Default::default(),
    });
    writer.send(&publish).await.map_err(Step::BeforeAck)?;
    let ack = wait_for(reader, packet_id, |p| {
        matches!(p, Packet::PubAck(_) | Packet::PubRec(_))
    })
    .await
    .map_err(Step::BeforeAck)?;
    let code = match &ack {
        Packet::PubAck(r) | Packet::PubRec(r) => r.reason_code,
        _ => unreachable!("wait_for returns a packet `matches` accepted"),
    };
    if code as u8 >= 0x80 {
        return Ok(false);
    }
    if job.qos == QoS::ExactlyOnce {
        writer
            .send(&response(Packet::PubRel, packet_id))
            .await
            .map_err(Step::AfterAck)?;
        wait_for(reader, packet_id, |p| matches!(p, Packet::PubComp(_)))
            .await
            .map_err(Step::AfterAck)?;
    }
    Ok(true)
}

/// The next packet for `packet_id` that `matches` accepts, within
/// [`ACK_TIMEOUT`]; DISCONNECT or EOF is an error.
async fn wait_for(
    reader: &mut PacketReader,
    packet_id: u16,
    matches: impl Fn(&Packet) -> bool,
) -> anyhow::Result<Packet> {
    let end = Instant::now() + ACK_TIMEOUT;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let packet = tokio::time::timeout(left, reader.next())
            .await
            .map_err(|_| anyhow!("no acknowledgement within {ACK_TIMEOUT:?}"))??;
        match packet {
            Some(p) if matches(&p) => {
                let id = match &p {
                    Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubComp(r) => r.packet_id,
                    _ => packet_id,
                };
                if id == packet_id {
                    return Ok(p);
                }
            }
            Some(Packet::Disconnect(d)) => bail!("DISCONNECT {:?}", d.reason_code),
            Some(_) => {}
            None => bail!("connection closed"),
        }
    }
}

async fn subscriber(
    s: Arc<Shared>,
    name: String,
    client_id: String,
    version: ProtocolVersion,
    filter: String,
    mut rng: StdRng,
) {
    let mut subscribed = false;
    let mut connection = 0u64;
    // QoS 2 packet ids delivered and acknowledged, not yet released.
    let mut unreleased: HashSet<u16> = HashSet::new();
    loop {
        let draining = s.drain.load(Ordering::SeqCst);
        if draining && s.drain_deadline.lock().is_some_and(|d| Instant::now() > d) {
            return;
        }
        let Some((node, addr)) = s.targets.pick(&mut rng, draining) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut opts = options(version, &client_id);
        if version.is_v5() {
            // a new session at first, with an expiry: persistent
            opts.clean_start = !subscribed;
            opts.session_expiry_interval = Some(SESSION_EXPIRY);
        } else {
            // 3.1.1: Clean Session 0 is what makes the session persistent
            // (client ids are new to the cluster at the first connect)
            opts.clean_start = false;
        }
        let connect_ms = s.history.now_ms();
        let mut client = match Client::connect(addr, &opts).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(100..500))).await;
                continue;
            }
        };
        connection += 1;
        s.history.record(Event::Connected {
            client: name.clone(),
            node,
            connect_ms,
            resume: subscribed,
            session_present: client.session_present,
        });
        if !client.session_present {
            unreleased.clear();
            let ok = tokio::time::timeout(
                Duration::from_secs(15),
                client.subscribe(&filter, QoS::ExactlyOnce),
            )
            .await;
            if !matches!(ok, Ok(Ok(()))) {
                s.history.record(Event::Disconnected {
                    client: name.clone(),
                    node,
                    reason: "SUBSCRIBE failed".into(),
                });
                continue;
            }
            subscribed = true;
            s.history.record(Event::Subscribed {
                client: name.clone(),
                node,
            });
        }
        s.owners.lock().insert(name.clone(), node);
        let Client {
            mut reader,
            mut writer,
            ..
        } = client;
        let stay = Duration::from_millis(rng.gen_range(2_000..10_000));
        let until = Instant::now() + stay;
        let mut last_message = Instant::now();
        let mut was_draining = s.drain.load(Ordering::SeqCst);
        let reason = loop {
            let draining = s.drain.load(Ordering::SeqCst);
            if draining && !was_draining {
                // The drain's quiet time counts from its start.
                was_draining = true;
                last_message = Instant::now();
            }
            if draining && last_message.elapsed() > DRAIN_QUIET {
                break Ok("drained".to_owned());
            }
            if draining && s.drain_deadline.lock().is_some_and(|d| Instant::now() > d) {
                break Ok("drain deadline".to_owned());
            }
            if !draining && Instant::now() > until {
                break Ok("planned".to_owned());
            }
            let packet = match tokio::time::timeout(Duration::from_millis(500), reader.next()).await
            {
                Err(_) => continue,
                Ok(Err(e)) => break Err(e.to_string()),
                Ok(Ok(None)) => break Err("closed by the broker".to_owned()),
                Ok(Ok(Some(p))) => p,
            };
            let reply = match packet {
                Packet::Publish(p) => {
                    last_message = Instant::now();
                    let fresh = match (p.qos, p.packet_id) {
                        (QoS::ExactlyOnce, Some(id)) => unreleased.insert(id),
                        _ => true,
                    };
                    if fresh {
                        if let Some(h) = payload::decode(&p.payload) {
                            s.history.record(Event::Deliver {
                                subscriber: name.clone(),
                                publisher: h.publisher,
                                seq: h.seq,
                                qos: p.qos as u8,
                                dup: p.dup,
                                retain: p.retain,
                                packet_id: p.packet_id,
                                connection,
                                node,
                            });
                        }
                    }
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => Some(response(Packet::PubAck, id)),
                        (QoS::ExactlyOnce, Some(id)) => Some(response(Packet::PubRec, id)),
                        _ => None,
                    }
                }
                Packet::PubRel(r) => {
                    unreleased.remove(&r.packet_id);
                    Some(response(Packet::PubComp, r.packet_id))
                }
                Packet::Disconnect(d) => break Err(format!("DISCONNECT {:?}", d.reason_code)),
                _ => None,
            };
            if let Some(reply) = reply {
                if let Err(e) = writer.send(&reply).await {
                    break Err(e.to_string());
                }
            }
        };
        let finished = matches!(&reason, Ok(r) if r != "planned");
        let reason = match reason {
            Ok(r) => {
                if finished || rng.gen_bool(0.5) {
                    let _ = tokio::time::timeout(Duration::from_secs(2), writer.disconnect()).await;
                    r
                } else {
                    drop((reader, writer));
                    format!("{r}, socket dropped")
                }
            }
            Err(e) => e,
        };
        s.history.record(Event::Disconnected {
            client: name.clone(),
            node,
            reason,
        });
        if finished {
            return;
        }
        if !s.drain.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..2_000))).await;
        }
    }
}

/// Subscribes with a clean session and collects retained messages for a
/// second: (publisher, seq) of each.
async fn read_retained(
    s: &Shared,
    node: u64,
    addr: SocketAddr,
    filter: &str,
    client_id: &str,
) -> anyhow::Result<Vec<(u32, u64)>> {
    let _ = s;
    let mut client = Client::connect(addr, &options(ProtocolVersion::V311, client_id)).await?;
    tokio::time::timeout(
        Duration::from_secs(10),
        client.subscribe(filter, QoS::AtLeastOnce),
    )
    .await
    .map_err(|_| anyhow!("no SUBACK from node {node}"))??;
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(1);
    while let Ok(next) = tokio::time::timeout(
        end.saturating_duration_since(Instant::now()),
        client.reader.next(),
    )
    .await
    {
        match next? {
            Some(Packet::Publish(p)) => {
                if let (Some(h), true) = (payload::decode(&p.payload), p.retain) {
                    got.push((h.publisher, h.seq));
                }
                if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id) {
                    client.writer.send(&response(Packet::PubAck, id)).await?;
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    let _ = client.writer.disconnect().await;
    Ok(got)
}

async fn retained_reader(s: Arc<Shared>, filter: String, mut rng: StdRng) {
    let mut n = 0u64;
    while !s.stop_publishing.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1_000..3_000))).await;
        let Some((node, addr)) = s.targets.pick(&mut rng, false) else {
            continue;
        };
        n += 1;
        let read = tokio::time::timeout(
            Duration::from_secs(15),
            read_retained(
                &s,
                node,
                addr,
                &filter,
                &format!("{filter}-reader{n}").replace(['/', '#'], "_"),
            ),
        )
        .await;
        if let Ok(Ok(got)) = read {
            for (publisher, seq) in got {
                s.history.record(Event::RetainedRead {
                    node,
                    publisher,
                    seq: Some(seq),
                    last: false,
                });
            }
        }
    }
}
