//! The result of one run: a struct that serializes to the one JSON line the
//! bench prints, and its human summary.

use serde::Serialize;

use super::stats::Histogram;

/// Latency quantiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram) -> Option<Latency> {
        Some(Latency {
            p50: h.quantile(0.5)?,
            p99: h.quantile(0.99)?,
            p999: h.quantile(0.999)?,
            max: h.max(),
        })
    }
}

/// The connections scenario's numbers.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ConnectionStats {
    pub requested: u64,
    pub connected: u64,
    pub failed: u64,
    /// Source addresses the connections were spread over.
    pub source_addrs: u32,
    /// Connections (TCP + CONNECT + CONNACK) per second.
    pub connect_rate: f64,
    pub broker_rss_before: Option<u64>,
    pub broker_rss_after: Option<u64>,
    /// (after - before) / connected, in bytes.
    pub broker_rss_per_connection: Option<f64>,
}

/// One run of a scenario.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub scenario: String,
    /// Free text from `--label` (the compare script puts the broker name).
    pub label: String,
    pub protocol: String,
    pub qos: u8,
    pub payload: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub persistent: bool,
    /// Messages per second asked for, over all publishers (`None`: as fast
    /// as the inflight window allows).
    pub rate: Option<f64>,
    pub inflight: usize,
    /// Seconds from the first to the last PUBLISH sent.
    pub publish_seconds: f64,
    pub sent: u64,
    /// PUBACK / PUBCOMP received by publishers (QoS 1 / 2).
    pub acked: u64,
    /// Copies the subscribers should get: sent messages times matching
    /// subscribers.
    pub expected: u64,
    /// Copies received, duplicates included.
    pub received: u64,
    pub unique: u64,
    /// expected - unique: copies not received by the end of the run. With
    /// a bounded drain (`--drain-timeout`) this includes copies a broker
    /// still had queued when the run ended, not only dropped ones.
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub malformed: u64,
    /// sent / publish_seconds.
    pub publish_rate: f64,
    /// Copies received per second, from the first PUBLISH sent to the last
    /// copy received (the headline throughput).
    pub delivered_rate: f64,
    /// End to end, from the send time in the payload to its arrival.
    pub latency_us: Option<Latency>,
    /// Persistent queue: QoS 1/2 messages acknowledged per second while the
    /// subscriber was offline. Retained: retained messages stored per second.
    pub fill_rate: Option<f64>,
    /// Persistent queue and retained: copies per second received by the
    /// subscriber that came (back) after the fill.
    pub drain_rate: Option<f64>,
    pub connections: Option<ConnectionStats>,
    /// CPU seconds the broker used during the run (`--broker-pid`).
    pub broker_cpu_seconds: Option<f64>,
    /// Broker CPU microseconds per copy received.
    pub broker_cpu_us_per_message: Option<f64>,
    /// Broker peak resident memory at the end of the run, bytes.
    pub broker_peak_rss: Option<u64>,
    /// Connection, protocol or timeout errors seen; a run with errors is
    /// still reported.
    pub errors: Vec<String>,
    /// No errors, and for QoS 1/2 no loss.
    pub ok: bool,
}

impl Report {
    /// The one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} [{}] MQTT {} QoS {} payload {} B, {} publisher(s), {} subscriber(s){}{}\n",
            self.scenario,
            self.label,
            self.protocol,
            self.qos,
            self.payload,
            self.publishers,
            self.subscribers,
            if self.persistent { ", persistent" } else { "" },
            match self.rate {
                Some(r) => format!(", rate {r:.0} msg/s"),
                None => format!(", as fast as possible (window {})", self.inflight),
            }
        );
        if let Some(c) = &self.connections {
            s += &format!(
                "  connections: {} of {} open ({} failed) over {} source address(es), {:.0} connects/s\n",
                c.connected, c.requested, c.failed, c.source_addrs, c.connect_rate
            );
            if let Some(per) = c.broker_rss_per_connection {
                s += &format!(
                    "  broker RSS: {:.1} MiB -> {:.1} MiB, {:.0} bytes per connection\n",
                    c.broker_rss_before.unwrap_or(0) as f64 / 1048576.0,
                    c.broker_rss_after.unwrap_or(0) as f64 / 1048576.0,
                    per
                );
            }
        } else {
            s += &format!(
                "  sent {} in {:.2} s ({:.0} msg/s), acked {}\n  delivered {:.0} msg/s: expected {}, received {}, not received {}, duplicates {}, out of order {}\n",
                self.sent,
                self.publish_seconds,
                self.publish_rate,
                self.acked,
                self.delivered_rate,
                self.expected,
                self.received,
                self.lost,
                self.duplicates,
                self.out_of_order
            );
            if let Some(l) = self.latency_us {
                s += &format!(
                    "  latency p50 {} us, p99 {} us, p999 {} us, max {} us\n",
                    l.p50, l.p99, l.p999, l.max
                );
            }
            if let (Some(f), Some(d)) = (self.fill_rate, self.drain_rate) {
                s += &format!("  fill {f:.0} msg/s, drain {d:.0} msg/s\n");
            }
        }
        if let (Some(cpu), Some(per)) = (self.broker_cpu_seconds, self.broker_cpu_us_per_message) {
            s += &format!("  broker CPU {cpu:.2} s, {per:.2} us per message\n");
        }
        for e in self.errors.iter().take(5) {
            s += &format!("  error: {e}\n");
        }
        if self.errors.len() > 5 {
            s += &format!("  ... and {} more errors\n", self.errors.len() - 5);
        }
        s += if self.ok { "  OK\n" } else { "  NOT OK\n" };
        s
    }
}
