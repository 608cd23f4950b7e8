//! Load generation against any MQTT broker: the scenarios of `tern-bench`,
//! written as a library so that the chaos tests run the same workloads while
//! they break things.
//!
//! Every message carries a header (publisher, sequence number, send time,
//! see [`payload`]), so each run reports delivered messages per second,
//! loss, duplicates, reordering and end-to-end latency ([`Report`]).
//! Clients speak `broker::codec` over plain tokio sockets ([`client`]).
//!
//! Scenarios ([`Scenario`]):
//! - `fan-in`: many publishers, one wildcard subscriber;
//! - `fan-out`: one publisher, many subscribers of its topic;
//! - `pairs`: N publisher/subscriber pairs on distinct topics;
//! - `connections`: N idle connections spread over 127.0.0.x source
//!   addresses; connect rate and broker memory per connection;
//! - `persistent-queue`: an offline persistent subscriber gets messages
//!   queued, then reconnects and drains them;
//! - `retained`: messages retained on distinct topics, then a wildcard
//!   subscriber receives them all.
//!
//! Every run is bounded: publishing stops at `count` messages or after
//! `duration`, and every wait after that has a timeout.
//!
//! Lifecycle of a publish/subscribe run: connect and subscribe every
//! subscriber; connect every publisher; publish; wait for the acks, then for
//! the subscribers to receive what they should (or to go quiet); stop the
//! subscribers; report.

pub mod client;
pub mod payload;
pub mod pubsub;
pub mod report;
mod scenarios;
pub mod stats;
pub mod sys;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use broker::codec::{ProtocolVersion, QoS};

pub use report::Report;

/// Source ports the bench binds itself (below the usual ephemeral range,
/// 32768-60999, so that it does not compete with the kernel's choices).
pub const SOURCE_PORTS: std::ops::Range<u16> = 10_000..32_000;

/// What traffic to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    FanIn,
    FanOut,
    Pairs,
    Connections,
    PersistentQueue,
    Retained,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::FanIn,
        Scenario::FanOut,
        Scenario::Pairs,
        Scenario::Connections,
        Scenario::PersistentQueue,
        Scenario::Retained,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::FanIn => "fan-in",
            Scenario::FanOut => "fan-out",
            Scenario::Pairs => "pairs",
            Scenario::Connections => "connections",
            Scenario::PersistentQueue => "persistent-queue",
            Scenario::Retained => "retained",
        }
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario `{s}`; one of {}", names.join(", "))
            })
    }
}

/// One run's parameters. [`Spec::new`] gives each scenario its defaults.
#[derive(Debug, Clone)]
pub struct Spec {
    pub scenario: Scenario,
    /// The broker's MQTT address.
    pub addr: SocketAddr,
    /// Where the pub/sub scenarios' subscribers connect, when not `addr`:
    /// another node of a cluster, so every message crosses a forward link.
    pub sub_addr: Option<SocketAddr>,
    pub version: ProtocolVersion,
    pub qos: QoS,
    /// Payload bytes per message (at least the 20-byte header).
    pub payload: usize,
    pub publishers: usize,
    pub subscribers: usize,
    /// Messages per second over all publishers; `None`: as fast as the
    /// inflight window (QoS 1/2) or the socket (QoS 0) allows.
    pub rate: Option<f64>,
    /// QoS 1/2 messages each publisher may have unacknowledged.
    pub inflight: usize,
    /// Stop publishing after this long ...
    pub duration: Duration,
    /// ... or after this many messages over all publishers, whichever
    /// comes first.
    pub count: Option<u64>,
    /// Subscribers keep their session (3.1.1 Clean Session 0, 5.0 Session
    /// Expiry Interval 1 h), so QoS 1/2 copies for them are stored.
    pub persistent: bool,
    /// Connections to open (connections scenario).
    pub connections: usize,
    /// 127.0.0.x source addresses to spread connections over; 0 picks
    /// enough for the connection count (one per 20,000).
    pub source_addrs: u32,
    /// Connections opened at once.
    pub connect_concurrency: usize,
    /// How long the connections scenario holds the connections open.
    pub hold: Duration,
    /// Keep Alive of the connections scenario's clients, seconds: idle
    /// devices announce one (60 s is the common default of client
    /// libraries), and a broker may pay memory for its timer.
    pub keep_alive: u16,
    /// Each connection of the connections scenario subscribes to a topic of
    /// its own (QoS 1), as a device listening for commands does.
    pub subscribe: bool,
    /// After the hold, the connections scenario publishes one message to
    /// this many of its connections (spread over them), one at a time, and
    /// reports each one's latency: the first message to an idle
    /// connection (with `subscribe`).
    pub wake_sample: usize,
    /// The broker's HTTP address (`host:port`): after the wake sample, its
    /// `tern_session_wake_seconds` histogram is read into the report.
    pub broker_metrics: Option<String>,
    /// After publishing, how long to wait for the last copies; the wait
    /// also ends once nothing arrived for `quiet`.
    pub drain_timeout: Duration,
    pub quiet: Duration,
    /// Between the subscribers' SUBACKs and the first publish: a cluster
    /// node other than the subscribers' learns their routes at its next
    /// raft message, and what is published there before matches nobody.
    pub settle: Duration,
    /// Broker process to read memory and CPU time from.
    pub broker_pid: Option<u32>,
    /// Free text copied into the report.
    pub label: String,
    /// Makes client ids and topics of this run unique.
    pub run_id: String,
}

impl Spec {
    /// The defaults of `scenario`: fan-in 100 publishers -> 1 subscriber,
    /// fan-out 1 -> 100, pairs 1000, connections 10,000, persistent queue
    /// and retained 100,000 messages; QoS 0 for the first three, QoS 1 for
    /// the queue and retained scenarios; 64-byte payloads; 10 s.
    pub fn new(scenario: Scenario, addr: SocketAddr) -> Spec {
        let (publishers, subscribers) = match scenario {
            Scenario::FanIn => (100, 1),
            Scenario::FanOut => (1, 100),
            Scenario::Pairs => (1000, 1000),
            Scenario::Connections => (0, 0),
            Scenario::PersistentQueue | Scenario::Retained => (10, 1),
        };
        let queued = matches!(scenario, Scenario::PersistentQueue | Scenario::Retained);
        Spec {
            scenario,
            addr,
            sub_addr: None,
            version: ProtocolVersion::V311,
            qos: if queued {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
            payload: 64,
            publishers,
            subscribers,
            rate: None,
            inflight: 64,
            duration: Duration::from_secs(if queued { 60 } else { 10 }),
            count: queued.then_some(100_000),
            persistent: scenario == Scenario::PersistentQueue,
            connections: 10_000,
            source_addrs: 0,
            connect_concurrency: 256,
            hold: Duration::from_secs(0),
            keep_alive: 60,
            subscribe: false,
            wake_sample: 0,
            broker_metrics: None,
            drain_timeout: Duration::from_secs(if queued { 60 } else { 10 }),
            settle: Duration::ZERO,
            quiet: Duration::from_secs(2),
            broker_pid: None,
            label: String::new(),
            run_id: format!("{:x}", payload::now_ns() % 0xffff_ffff),
        }
    }

    /// The source address of connection `i` when the broker is on IPv4
    /// loopback (none otherwise): 127.0.0.1 .. 127.0.0.n in turn, each with
    /// ports counted up from a per-run offset within [`SOURCE_PORTS`], so
    /// n addresses give n times 22,000 connections.
    fn source_addr(&self, i: usize, n: u32) -> Option<SocketAddr> {
        match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() && n > 0 => {
                let n = n.min(254) as usize;
                let x = 1 + (i % n) as u8;
                let span = (SOURCE_PORTS.end - SOURCE_PORTS.start) as usize;
                let offset = self.run_id.bytes().map(usize::from).sum::<usize>() * 997;
                let port = SOURCE_PORTS.start + ((i / n + offset) % span) as u16;
                Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(127, 0, 0, x)),
                    port,
                ))
            }
            _ => None,
        }
    }

    /// Source addresses to use for `connections` connections.
    fn source_addr_count(&self, connections: usize) -> u32 {
        if self.source_addrs > 0 {
            self.source_addrs
        } else {
            (connections as u32).div_ceil(20_000).clamp(1, 254)
        }
    }
}

/// Runs one scenario and reports. Errors that stop a run early (the broker
/// refused every connection, say) are in `Report::errors`.
pub async fn run(spec: &Spec) -> Report {
    let cpu_before = spec.broker_pid.and_then(sys::cpu_seconds);
    let mut report = match spec.scenario {
        Scenario::FanIn | Scenario::FanOut | Scenario::Pairs => scenarios::pubsub(spec).await,
        Scenario::Connections => scenarios::connections(spec).await,
        Scenario::PersistentQueue => scenarios::persistent_queue(spec).await,
        Scenario::Retained => scenarios::retained(spec).await,
    };
    report.scenario = spec.scenario.name().to_owned();
    report.label = spec.label.clone();
    report.protocol = spec.version.to_string();
    report.qos = spec.qos as u8;
    report.payload = spec.payload.max(payload::HEADER_LEN);
    report.rate = spec.rate;
    report.inflight = spec.inflight;
    report.persistent = spec.persistent;
    if let (Some(pid), Some(before)) = (spec.broker_pid, cpu_before) {
        if let Some(after) = sys::cpu_seconds(pid) {
            let cpu = after - before;
            report.broker_cpu_seconds = Some(cpu);
            if report.received > 0 {
                report.broker_cpu_us_per_message = Some(cpu * 1e6 / report.received as f64);
            }
        }
        report.broker_peak_rss = sys::peak_rss_bytes(pid);
    }
    report.lost = report.expected.saturating_sub(report.unique);
    report.ok = report.errors.is_empty() && (spec.qos == QoS::AtMostOnce || report.lost == 0);
    report
}
