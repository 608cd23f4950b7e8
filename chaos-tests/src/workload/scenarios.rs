//! The scenarios, built from the publisher and subscriber loops of
//! [`super::pubsub`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::codec::{Packet, Publish, QoS};
use bytes::BytesMut;
use bytestring::ByteString;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::client::{ack_for, Client, ClientOptions};
use super::payload::{self, now_ns};
use super::pubsub::{self, PublishPlan, Published};
use super::report::{ConnectionStats, Latency, Report, Spread, WakeStats};
use super::stats::Histogram;
use super::stats::Received;
use super::{sys, Scenario, Spec};

/// Connects `count` clients, `concurrency` at a time, with the options
/// `opts(i)`. Returns them in order (`Err` for those that failed).
async fn connect_many(
    spec: &Spec,
    addr: SocketAddr,
    count: usize,
    opts: impl Fn(usize) -> ClientOptions,
) -> Vec<anyhow::Result<Client>> {
    let limit = Arc::new(Semaphore::new(spec.connect_concurrency.max(1)));
    let mut set = JoinSet::new();
    for i in 0..count {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let o = opts(i);
        set.spawn(async move {
            let r = Client::connect(addr, &o).await;
            drop(permit);
            (i, r)
        });
    }
    let mut out: Vec<Option<anyhow::Result<Client>>> = (0..count).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("connect task failed"))))
        .collect()
}

fn options(
    spec: &Spec,
    client_id: String,
    persistent: bool,
    i: usize,
    addrs: u32,
) -> ClientOptions {
    let mut o = ClientOptions::new(spec.version, client_id);
    if persistent {
        o.clean_start = false;
        if spec.version.is_v5() {
            o.session_expiry_interval = Some(3600);
        }
    }
    o.local_addr = spec.source_addr(i, addrs);
    o
}

/// Splits `total` into `parts` nearly equal counts.
fn share(total: u64, parts: usize, i: usize) -> u64 {
    let parts = parts.max(1) as u64;
    total / parts + u64::from((i as u64) < total % parts)
}

/// Publisher plans of a run starting now.
fn plans(spec: &Spec, topic: impl Fn(usize) -> String, per_message: bool) -> Vec<PublishPlan> {
    let deadline = Instant::now() + spec.duration;
    (0..spec.publishers)
        .map(|i| PublishPlan {
            index: i as u32,
            topic: topic(i),
            topic_per_message: per_message,
            qos: spec.qos,
            retain: spec.scenario == Scenario::Retained,
            payload: spec.payload,
            rate: spec.rate.map(|r| r / spec.publishers.max(1) as f64),
            count: spec.count.map(|c| share(c, spec.publishers, i)),
            deadline,
            inflight: spec.inflight,
            ack_timeout: spec.drain_timeout,
        })
        .collect()
}

/// Connects the publishers and runs `plans`; returns what each did and the
/// errors.
async fn run_publishers(
    spec: &Spec,
    prefix: &str,
    plans: Vec<PublishPlan>,
    first_source: usize,
    addrs: u32,
    errors: &mut Vec<String>,
) -> Vec<Published> {
    let clients = connect_many(spec, spec.addr, plans.len(), |i| {
        options(
            spec,
            format!("{prefix}-p{i}"),
            false,
            first_source + i,
            addrs,
        )
    })
    .await;
    let mut set = JoinSet::new();
    for (client, plan) in clients.into_iter().zip(plans) {
        match client {
            Ok(c) => {
                set.spawn(pubsub::publish(c, plan));
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(p) => {
                if let Some(e) = &p.error {
                    errors.push(e.clone());
                }
                out.push(p);
            }
            Err(e) => errors.push(format!("publisher task: {e}")),
        }
    }
    out
}

/// Running subscribers.
struct Subscribers {
    stop: watch::Sender<bool>,
    progress: Vec<Arc<AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<(Received, Option<String>)>>,
}

impl Subscribers {
    fn start(clients: Vec<Client>) -> Subscribers {
        let (stop, rx) = watch::channel(false);
        let mut progress = Vec::new();
        let mut tasks = Vec::new();
        for c in clients {
            let p = Arc::new(AtomicU64::new(0));
            progress.push(p.clone());
            tasks.push(tokio::spawn(pubsub::subscribe(c, rx.clone(), p)));
        }
        Subscribers {
            stop,
            progress,
            tasks,
        }
    }

    fn unique(&self) -> u64 {
        self.progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until `expected` distinct copies arrived, nothing arrived for
    /// `quiet`, or `timeout` passed.
    async fn wait_for(&self, expected: u64, timeout: Duration, quiet: Duration) {
        let end = Instant::now() + timeout;
        let mut last = self.unique();
        let mut last_change = Instant::now();
        while Instant::now() < end {
            let now = self.unique();
            if now >= expected {
                return;
            }
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() >= quiet {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self, errors: &mut Vec<String>) -> Vec<Received> {
        let _ = self.stop.send(true);
        let mut out = Vec::new();
        // One deadline for all: a thousand subscribers must not wait in turn.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for mut t in self.tasks {
            match tokio::time::timeout_at(deadline, &mut t).await {
                Ok(Ok((r, e))) => {
                    errors.extend(e);
                    out.push(r);
                }
                Ok(Err(e)) => errors.push(format!("subscriber task: {e}")),
                Err(_) => {
                    t.abort();
                    errors.push("subscriber did not stop within 10 s".into());
                }
            }
        }
        out
    }
}

/// Fills the counting fields of `report` from what was published and
/// received. `expected` is the number of copies the subscribers should get.
fn tally(report: &mut Report, published: &[Published], received: &[Received], expected: u64) {
    report.sent = published.iter().map(|p| p.sent).sum();
    report.acked = published.iter().map(|p| p.acked).sum();
    report.expected = expected;
    let first = published.iter().filter_map(|p| p.first_ns).min();
    let last = published.iter().filter_map(|p| p.last_ns).max();
    if let (Some(first), Some(last)) = (first, last) {
        report.publish_seconds = (last - first) as f64 / 1e9;
        if last > first {
            report.publish_rate = report.sent as f64 / report.publish_seconds;
        }
    }
    let mut all = Received::default();
    for r in received {
        all.merge_totals(r);
    }
    report.received = all.total;
    report.unique = all.unique;
    report.duplicates = all.duplicates;
    report.out_of_order = all.out_of_order;
    report.malformed = all.malformed;
    report.latency_us = Latency::from_histogram(&all.latency_us);
    if let (Some(first), Some(last)) = (first, all.last_ns) {
        if last > first {
            report.delivered_rate = all.total as f64 * 1e9 / (last - first) as f64;
        }
    }
}

/// The filter or topic of client `i`.
type Naming<'a> = Box<dyn Fn(usize) -> String + 'a>;

/// fan-in, fan-out and pairs.
pub(super) async fn pubsub(spec: &Spec) -> Report {
    let mut report = Report {
        publishers: spec.publishers,
        subscribers: spec.subscribers,
        ..Report::default()
    };
    let run = &spec.run_id;
    let (filter, topic): (Naming<'_>, Naming<'_>) = match spec.scenario {
        Scenario::FanIn => (
            Box::new(move |_| format!("bench/{run}/fanin/#")),
            Box::new(move |i| format!("bench/{run}/fanin/{i}")),
        ),
        Scenario::FanOut => (
            Box::new(move |_| format!("bench/{run}/fanout")),
            Box::new(move |_| format!("bench/{run}/fanout")),
        ),
        _ => (
            Box::new(move |i| format!("bench/{run}/pairs/{i}")),
            Box::new(move |i| format!("bench/{run}/pairs/{i}")),
        ),
    };
    if spec.scenario == Scenario::Pairs && spec.publishers != spec.subscribers {
        report
            .errors
            .push("pairs needs as many publishers as subscribers".into());
        return report;
    }
    let addrs = spec.source_addr_count(spec.publishers + spec.subscribers);
    let prefix = format!("tb-{run}");
    let sub_addr = spec.sub_addr.unwrap_or(spec.addr);
    let clients = connect_many(spec, sub_addr, spec.subscribers, |i| {
        options(spec, format!("{prefix}-s{i}"), spec.persistent, i, addrs)
    })
    .await;
    let mut subscribed = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        match c {
            Ok(mut c) => match c.subscribe(&filter(i), spec.qos).await {
                Ok(()) => subscribed.push(c),
                Err(e) => report.errors.push(format!("subscriber {i}: {e:#}")),
            },
            Err(e) => report.errors.push(format!("{e:#}")),
        }
    }
    if subscribed.len() != spec.subscribers {
        return report;
    }
    let subs = Subscribers::start(subscribed);
    tokio::time::sleep(spec.settle).await;
    let published = run_publishers(
        spec,
        &prefix,
        plans(spec, topic, false),
        spec.subscribers,
        addrs,
        &mut report.errors,
    )
    .await;
    let sent: u64 = published.iter().map(|p| p.sent).sum();
    let expected = match spec.scenario {
        Scenario::Pairs => sent,
        _ => sent * spec.subscribers as u64,
    };
    subs.wait_for(expected, spec.drain_timeout, spec.quiet)
        .await;
    let received = subs.finish(&mut report.errors).await;
    if spec.scenario == Scenario::Pairs {
        // Each subscriber must have received from its own publisher only.
        for (i, r) in received.iter().enumerate() {
            if r.unique != r.unique_from(i as u32) {
                report
                    .errors
                    .push(format!("subscriber {i} received another pair's messages"));
                break;
            }
        }
    }
    tally(&mut report, &published, &received, expected);
    report
}

/// N idle connections; connect rate and broker memory per connection.
pub(super) async fn connections(spec: &Spec) -> Report {
    let mut report = Report::default();
    let n = spec.connections;
    let addrs = spec.source_addr_count(n);
    let rss_before = spec.broker_pid.and_then(sys::rss_bytes);
    let start = Instant::now();
    let prefix = format!("tb-{}-c", spec.run_id);
    let clients = connect_many(spec, spec.addr, n, |i| {
        let mut o = options(spec, format!("{prefix}{i}"), false, i, addrs);
        o.keep_alive = spec.keep_alive;
        o
    })
    .await;
    let took = start.elapsed();
    let mut open = Vec::with_capacity(n);
    let mut failed = 0u64;
    for (i, c) in clients.into_iter().enumerate() {
        match c {
            Ok(c) => open.push((i, c)),
            Err(e) => {
                failed += 1;
                if report.errors.len() < 20 {
                    report.errors.push(format!("{e:#}"));
                }
            }
        }
    }
    let topic = |i: usize| format!("bench/{}/c/{i}", spec.run_id);
    if spec.subscribe {
        for (i, c) in &mut open {
            if let Err(e) = c.subscribe(&topic(*i), QoS::AtLeastOnce).await {
                if report.errors.len() < 20 {
                    report.errors.push(format!("subscribe: {e:#}"));
                }
            }
        }
    }
    // Let the broker finish handing the connections to their sessions.
    tokio::time::sleep(Duration::from_secs(2).max(spec.hold)).await;
    let rss_after = spec.broker_pid.and_then(sys::rss_bytes);
    let mut second_latency_us = None;
    let mut first_minus_second_us = None;
    if spec.subscribe && spec.wake_sample > 0 && !open.is_empty() {
        match first_messages(spec, &mut open, &topic).await {
            Ok(mut w) => {
                report.latency_us = Latency::from_histogram(&w.first);
                second_latency_us = Latency::from_histogram(&w.second);
                first_minus_second_us = Spread::of(&mut w.differences);
            }
            Err(e) => report.errors.push(format!("wake sample: {e:#}")),
        }
    }
    // Before the connections close: closing wakes each of them too.
    let broker_wakes = match &spec.broker_metrics {
        Some(address) => {
            let got =
                broker::http::client::request(address, hyper::Method::GET, "/metrics", None).await;
            match got {
                Ok(answer) => WakeStats::from_exposition(&answer.body),
                Err(e) => {
                    report.errors.push(format!("broker metrics: {e}"));
                    None
                }
            }
        }
        None => None,
    };
    let connected = open.len() as u64;
    report.connections = Some(ConnectionStats {
        requested: n as u64,
        connected,
        failed,
        source_addrs: addrs,
        connect_rate: connected as f64 / took.as_secs_f64().max(1e-9),
        broker_rss_before: rss_before,
        broker_rss_after: rss_after,
        broker_rss_per_connection: match (rss_before, rss_after) {
            (Some(b), Some(a)) if connected > 0 => {
                Some(a.saturating_sub(b) as f64 / connected as f64)
            }
            _ => None,
        },
        second_latency_us,
        first_minus_second_us,
        broker_wakes,
    });
    drop(open);
    report
}

/// What `first_messages` measured, in microseconds.
struct WakeSample {
    first: Histogram,
    second: Histogram,
    /// Per connection, first minus second.
    differences: Vec<i64>,
}

/// Publishes two QoS 1 messages to each of `spec.wake_sample` of the held
/// connections (spread evenly), one connection at a time: the first finds
/// its session as the idle hold left it (asleep on a hibernating broker),
/// the second is published once the first was acknowledged, to the same
/// session awake. Records each one's latency from the PUBLISH sent to its
/// arrival: the pair, on one connection within a millisecond, gives the
/// wake's cost without the noise of comparing two runs.
async fn first_messages(
    spec: &Spec,
    open: &mut [(usize, Client)],
    topic: &impl Fn(usize) -> String,
) -> anyhow::Result<WakeSample> {
    let publisher_id = format!("tb-{}-wake-pub", spec.run_id);
    let mut o = options(spec, publisher_id, false, 0, 1);
    // Not from a held connection's source port.
    o.local_addr = None;
    let mut publisher = Client::connect(spec.addr, &o).await?;
    let mut sample = WakeSample {
        first: Histogram::default(),
        second: Histogram::default(),
        differences: Vec::with_capacity(spec.wake_sample),
    };
    let step = (open.len() / spec.wake_sample.min(open.len())).max(1);
    let mut scratch = BytesMut::new();
    let mut seq = 0u64;
    for (i, c) in open.iter_mut().step_by(step).take(spec.wake_sample) {
        let mut pair = [0u64; 2];
        for latency in &mut pair {
            let sent_ns = payload::now_ns();
            let header = payload::Header {
                publisher: 0,
                seq,
                sent_ns,
            };
            let packet_id = (seq % 65_000) as u16 + 1;
            seq += 1;
            publisher
                .writer
                .send(&Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: ByteString::from(topic(*i)),
                    packet_id: Some(packet_id),
                    payload: payload::encode(header, spec.payload, &mut scratch),
                    properties: Default::default(),
                }))
                .await?;
            let got = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match c.reader.next().await? {
                        Some(Packet::Publish(p)) => {
                            let at = payload::now_ns();
                            if let Some(ack) = ack_for(p.qos, p.packet_id) {
                                c.writer.send(&ack).await?;
                            }
                            return anyhow::Ok(at);
                        }
                        Some(_) => continue,
                        None => anyhow::bail!("connection {i} closed"),
                    }
                }
            })
            .await
            .map_err(|_| anyhow::anyhow!("connection {i}: no message within 10 s"))??;
            *latency = got.saturating_sub(sent_ns) / 1_000;
            // Its PUBACK, before the next one.
            loop {
                match publisher.reader.next().await? {
                    Some(Packet::PubAck(_)) => break,
                    Some(_) => continue,
                    None => anyhow::bail!("publisher closed"),
                }
            }
        }
        sample.first.record(pair[0]);
        sample.second.record(pair[1]);
        sample.differences.push(pair[0] as i64 - pair[1] as i64);
    }
    Ok(sample)
}

/// An offline persistent subscriber gets `count` messages queued, then
/// reconnects and drains them.
pub(super) async fn persistent_queue(spec: &Spec) -> Report {
    let mut report = Report {
        publishers: spec.publishers,
        subscribers: 1,
        ..Report::default()
    };
    let run = &spec.run_id;
    let sub = options(spec, format!("tb-{run}-pq-sub"), true, 0, 1);
    let filter = format!("bench/{run}/pq/#");
    // 1. The session and its subscription, then offline.
    let setup = async {
        let mut c = Client::connect(spec.addr, &sub).await?;
        c.subscribe(&filter, spec.qos).await?;
        c.writer.disconnect().await?;
        anyhow::Ok(())
    };
    if let Err(e) = setup.await {
        report.errors.push(format!("subscriber setup: {e:#}"));
        return report;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 2. Fill its queue.
    let published = run_publishers(
        spec,
        &format!("tb-{run}-pq"),
        plans(spec, |i| format!("bench/{run}/pq/{i}"), false),
        1,
        1,
        &mut report.errors,
    )
    .await;
    let first = published.iter().filter_map(|p| p.first_ns).min();
    let fill_end = now_ns();
    let acked: u64 = published.iter().map(|p| p.acked).sum();
    if let Some(first) = first {
        report.fill_rate =
            Some(acked as f64 * 1e9 / (fill_end.saturating_sub(first)).max(1) as f64);
    }
    // 3. Come back and drain.
    let drain_start = now_ns();
    let client = match Client::connect(spec.addr, &sub).await {
        Ok(c) => c,
        Err(e) => {
            report.errors.push(format!("subscriber reconnect: {e:#}"));
            return report;
        }
    };
    if !client.session_present {
        report
            .errors
            .push("session not present on reconnect".into());
    }
    let subs = Subscribers::start(vec![client]);
    // Only acknowledged messages are owed; QoS 0 ones are never queued.
    let expected = if spec.qos == broker::codec::QoS::AtMostOnce {
        0
    } else {
        acked
    };
    subs.wait_for(expected, spec.drain_timeout, spec.quiet)
        .await;
    let received = subs.finish(&mut report.errors).await;
    tally(&mut report, &published, &received, expected);
    if let Some(last) = received.first().and_then(|r| r.last_ns) {
        report.drain_rate =
            Some(report.received as f64 * 1e9 / (last.saturating_sub(drain_start)).max(1) as f64);
    }
    // Leave no session behind.
    let mut clean = sub.clone();
    clean.clean_start = true;
    clean.session_expiry_interval = None;
    if let Ok(c) = Client::connect(spec.addr, &clean).await {
        let _ = c.writer.disconnect().await;
    }
    report
}

/// `count` retained messages on distinct topics, then one `#` subscriber.
pub(super) async fn retained(spec: &Spec) -> Report {
    let mut report = Report {
        publishers: spec.publishers,
        subscribers: 1,
        ..Report::default()
    };
    let run = &spec.run_id;
    let published = run_publishers(
        spec,
        &format!("tb-{run}-ret"),
        plans(spec, |i| format!("bench/{run}/ret/{i}"), true),
        1,
        1,
        &mut report.errors,
    )
    .await;
    let first = published.iter().filter_map(|p| p.first_ns).min();
    let stored = if spec.qos == broker::codec::QoS::AtMostOnce {
        published.iter().map(|p| p.sent).sum()
    } else {
        published.iter().map(|p| p.acked).sum::<u64>()
    };
    if let Some(first) = first {
        report.fill_rate =
            Some(stored as f64 * 1e9 / (now_ns().saturating_sub(first)).max(1) as f64);
    }
    // QoS 0 publishes have no ack: give the broker a moment to store them.
    if spec.qos == broker::codec::QoS::AtMostOnce {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let start = now_ns();
    let sub = options(spec, format!("tb-{run}-ret-sub"), false, 0, 1);
    let mut client = match Client::connect(spec.addr, &sub).await {
        Ok(c) => c,
        Err(e) => {
            report.errors.push(format!("subscriber: {e:#}"));
            return report;
        }
    };
    // Subscribe without waiting for the SUBACK here: the retained messages
    // follow it on the same connection and the loop counts them.
    let filter = format!("bench/{run}/ret/#");
    let subscribe = broker::codec::Packet::Subscribe(broker::codec::Subscribe {
        packet_id: 1,
        filters: vec![(
            filter.as_str().into(),
            broker::codec::SubscriptionOptions {
                qos: spec.qos,
                ..Default::default()
            },
        )],
        properties: Default::default(),
    });
    if let Err(e) = client.writer.send(&subscribe).await {
        report.errors.push(format!("subscribe: {e:#}"));
        return report;
    }
    let subs = Subscribers::start(vec![client]);
    subs.wait_for(stored, spec.drain_timeout, spec.quiet).await;
    let received = subs.finish(&mut report.errors).await;
    tally(&mut report, &published, &received, stored);
    if let Some(last) = received.first().and_then(|r| r.last_ns) {
        report.drain_rate =
            Some(report.received as f64 * 1e9 / (last.saturating_sub(start)).max(1) as f64);
    }
    report
}
