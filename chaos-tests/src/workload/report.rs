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

/// Percentiles of signed differences, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Spread {
    pub p50: i64,
    pub p90: i64,
    pub p99: i64,
    pub max: i64,
}

impl Spread {
    /// Nearest-rank percentiles of `values` (sorted here); `None` if empty.
    pub fn of(values: &mut [i64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let at = |q: f64| {
            let rank = (q * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        };
        Some(Spread {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: values[values.len() - 1],
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
    /// `--wake-sample`: the second message's latency on each sampled
    /// connection, sent once the first was acknowledged (the session is
    /// awake by then); the first one's is the report's `latency_us`.
    pub second_latency_us: Option<Latency>,
    /// `--wake-sample`: per connection, the first message's latency minus
    /// the second's. On a hibernating broker this is the wake's cost plus
    /// whatever a first message after a long silence costs anyway (cold
    /// caches), which the same figure on a broker that does not hibernate
    /// shows alone.
    pub first_minus_second_us: Option<Spread>,
    /// `--broker-metrics`: the broker's own count of its wakes so far.
    pub broker_wakes: Option<WakeStats>,
}

/// What a Tern broker's `tern_session_wake_seconds` histogram says.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct WakeStats {
    pub wakes: u64,
    pub mean_us: f64,
    /// Upper bounds of the buckets holding the median and the 99th
    /// percentile (`None`: above the last bound).
    pub p50_le_us: Option<f64>,
    pub p99_le_us: Option<f64>,
    /// Share of the wakes within 50 us.
    pub within_50us: f64,
}

impl WakeStats {
    /// From the Prometheus text exposition of `/metrics`; `None` without
    /// the histogram or any wake.
    pub fn from_exposition(text: &str) -> Option<WakeStats> {
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        let (mut count, mut sum) = (0u64, 0f64);
        for line in text.lines() {
            let value = || line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if let Some(rest) = line.strip_prefix("tern_session_wake_seconds_bucket{") {
                let le = rest.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                buckets.push((le, value()? as u64));
            } else if line.starts_with("tern_session_wake_seconds_count") {
                count = value()? as u64;
            } else if line.starts_with("tern_session_wake_seconds_sum") {
                sum = value()?;
            }
        }
        if count == 0 {
            return None;
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let quantile = |q: f64| {
            let at = buckets
                .iter()
                .find(|(_, n)| *n as f64 >= q * count as f64)?;
            at.0.is_finite().then_some(at.0 * 1e6)
        };
        let within_50us = buckets
            .iter()
            .filter(|(le, _)| *le <= 50e-6 + 1e-12)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        Some(WakeStats {
            wakes: count,
            mean_us: sum / count as f64 * 1e6,
            p50_le_us: quantile(0.5),
            p99_le_us: quantile(0.99),
            within_50us: within_50us as f64 / count as f64,
        })
    }
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
            if let (Some(first), Some(second), Some(d)) = (
                self.latency_us,
                c.second_latency_us,
                c.first_minus_second_us,
            ) {
                s += &format!(
                    "  first message p50 {} us, p99 {} us; second p50 {} us, p99 {} us; first - second p50 {} us, p90 {} us, p99 {} us\n",
                    first.p50, first.p99, second.p50, second.p99, d.p50, d.p90, d.p99
                );
            }
            if let Some(w) = c.broker_wakes {
                s += &format!(
                    "  broker wakes: {}, mean {:.1} us, p99 <= {} us, {:.2}% within 50 us\n",
                    w.wakes,
                    w.mean_us,
                    w.p99_le_us.map_or("+Inf".into(), |v| format!("{v}")),
                    w.within_50us * 100.0
                );
            }
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

#[cfg(test)]
mod tests {
    use super::{Spread, WakeStats};

    #[test]
    fn wake_stats_read_the_brokers_histogram() {
        let text = "# TYPE tern_session_wake_seconds histogram
tern_session_wake_seconds_bucket{le=\"0.00001\"} 10
tern_session_wake_seconds_bucket{le=\"0.00005\"} 990
tern_session_wake_seconds_bucket{le=\"0.0001\"} 999
tern_session_wake_seconds_bucket{le=\"+Inf\"} 1000
tern_session_wake_seconds_sum 0.025
tern_session_wake_seconds_count 1000
";
        let w = WakeStats::from_exposition(text).expect("a histogram");
        assert_eq!(w.wakes, 1000);
        assert!((w.mean_us - 25.0).abs() < 1e-9);
        assert_eq!(w.p50_le_us, Some(50.0));
        assert_eq!(w.p99_le_us, Some(50.0));
        assert!((w.within_50us - 0.99).abs() < 1e-12);
        let none = "tern_session_wake_seconds_count 0\n";
        assert_eq!(WakeStats::from_exposition(none), None);
    }

    #[test]
    fn spread_takes_nearest_rank_percentiles_of_signed_values() {
        let mut values: Vec<i64> = (1..=100).map(|v| v - 11).collect();
        values.reverse();
        let s = Spread::of(&mut values).expect("not empty");
        assert_eq!(
            s,
            Spread {
                p50: 39,
                p90: 79,
                p99: 88,
                max: 89
            }
        );
        assert_eq!(Spread::of(&mut []), None);
        let one = Spread::of(&mut [-7]).expect("not empty");
        assert_eq!((one.p50, one.p99, one.max), (-7, -7, -7));
    }
}
