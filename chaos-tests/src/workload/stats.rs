//! What a subscriber counts: per publisher, which sequence numbers arrived
//! (so loss, duplicates and reordering are exact, not estimated), and a
//! latency histogram.
//!
//! The histogram is log-linear: exact below 128 µs, then 64 buckets per
//! power of two (about 1.6% relative error), from 1 µs to `u64::MAX`, in a
//! fixed array so that recording is an index and an increment.

use std::collections::HashMap;

use super::payload::Header;

/// Sub-buckets per power of two past the linear range.
const SUB: u64 = 64;
/// Values below this are their own bucket.
const LINEAR: u64 = 2 * SUB;
/// Buckets needed for any u64.
const BUCKETS: usize = ((64 - 7) * SUB + LINEAR) as usize;

/// Latencies in microseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("max", &self.max)
            .finish()
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - u64::from(v.leading_zeros()); // >= 7
    let shift = exp - 6;
    (shift * SUB + (v >> shift)) as usize
}

/// The lowest value of bucket `i`.
fn lower_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let shift = i / SUB - 1;
    (i - shift * SUB) << shift
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0.0..=1.0): the lower bound of the bucket
    /// holding it; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        if q >= 1.0 {
            return Some(self.max);
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(lower_bound(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// Sequence numbers received from one publisher.
#[derive(Debug, Default, Clone)]
struct Track {
    /// Bit `seq` is set once `seq` arrived.
    seen: Vec<u64>,
    /// Highest seq received, plus one (0: none yet).
    next: u64,
    unique: u64,
}

/// What one subscriber (or all of them, merged) received.
#[derive(Debug, Default, Clone)]
pub struct Received {
    tracks: HashMap<u32, Track>,
    /// Every PUBLISH carrying a header, duplicates included.
    pub total: u64,
    /// Distinct (publisher, seq) pairs.
    pub unique: u64,
    /// A (publisher, seq) seen before.
    pub duplicates: u64,
    /// A new seq lower than one already received from the same publisher.
    pub out_of_order: u64,
    /// PUBLISH packets whose payload had no header.
    pub malformed: u64,
    pub latency_us: Histogram,
    /// Unix ns of the first and last message received.
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
}

impl Received {
    /// Counts one message received at `now_ns`.
    pub fn record(&mut self, h: Header, now_ns: u64) {
        self.total += 1;
        self.first_ns.get_or_insert(now_ns);
        self.last_ns = Some(now_ns);
        let t = self.tracks.entry(h.publisher).or_default();
        let word = (h.seq / 64) as usize;
        let bit = 1u64 << (h.seq % 64);
        if t.seen.len() <= word {
            t.seen.resize(word + 1, 0);
        }
        if t.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        t.seen[word] |= bit;
        t.unique += 1;
        self.unique += 1;
        if h.seq + 1 < t.next {
            self.out_of_order += 1;
        }
        t.next = t.next.max(h.seq + 1);
        self.latency_us
            .record(now_ns.saturating_sub(h.sent_ns) / 1_000);
    }

    /// Distinct messages received from `publisher`.
    pub fn unique_from(&self, publisher: u32) -> u64 {
        self.tracks.get(&publisher).map_or(0, |t| t.unique)
    }

    /// Adds another subscriber's counts (its publishers stay apart: the
    /// merged value is for totals, not for per-publisher checks).
    pub fn merge_totals(&mut self, other: &Received) {
        self.total += other.total;
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.malformed += other.malformed;
        self.latency_us.merge(&other.latency_us);
        self.first_ns = match (self.first_ns, other.first_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_ns = self.last_ns.max(other.last_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(publisher: u32, seq: u64) -> Header {
        Header {
            publisher,
            seq,
            sent_ns: 0,
        }
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_bounded() {
        for v in [
            0,
            1,
            127,
            128,
            129,
            255,
            256,
            1000,
            123_456,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(lower_bound(i) <= v, "{v}");
            if i + 1 < BUCKETS {
                assert!(lower_bound(i + 1) > v, "{v}");
            }
        }
        for i in 1..BUCKETS {
            assert!(lower_bound(i) > lower_bound(i - 1), "{i}");
        }
    }

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut hist = Histogram::default();
        for v in 1..=10_000 {
            hist.record(v);
        }
        let p50 = hist.quantile(0.5).unwrap() as f64;
        let p99 = hist.quantile(0.99).unwrap() as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.02, "{p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.02, "{p99}");
        assert_eq!(hist.quantile(1.0), Some(10_000));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn counts_duplicates_and_reordering_per_publisher() {
        let mut r = Received::default();
        for (p, s) in [(0, 0), (0, 2), (0, 1), (0, 2), (1, 0), (1, 1)] {
            r.record(h(p, s), 1_000);
        }
        assert_eq!(r.total, 6);
        assert_eq!(r.unique, 5);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.out_of_order, 1);
        assert_eq!(r.unique_from(0), 3);
        assert_eq!(r.unique_from(1), 2);
        assert_eq!(r.unique_from(2), 0);
    }
}
