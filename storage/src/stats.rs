//! Counters of the group-commit writer, read by the broker's metrics, and
//! the [`LatencyHistogram`] the cluster and the broker count latencies with.
//! Owns the counting only: plain atomics and fixed histogram buckets, no
//! metrics library and no exposition format (the broker renders them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the flush latency histogram's buckets (an
/// implicit `+Inf` bucket follows).
pub const FLUSH_SECONDS_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Upper bounds of the group size histogram's buckets (requests per group;
/// an implicit `+Inf` bucket follows).
pub const GROUP_SIZE_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0, 4096.0];

/// Upper bounds, in seconds, of a [`LatencyHistogram`]'s buckets (an
/// implicit `+Inf` bucket follows): 50 µs to 10 s.
pub const LATENCY_SECONDS_BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// [`LATENCY_SECONDS_BUCKETS`] in nanoseconds, compared without floats.
const LATENCY_NANOS_BUCKETS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A latency histogram of plain atomics: an observation costs a bucket
/// search over 17 integers and two relaxed `fetch_add`s on the shard of
/// the calling thread. Shards sit on cache lines of their own, so threads
/// that observe at once (every worker delivering copies) do not bounce one
/// line between cores; a snapshot sums them.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    shards: [Shard; SHARDS],
}

/// Shards of a [`LatencyHistogram`]: threads take them round-robin.
const SHARDS: usize = 8;

/// One thread group's counts, alone on its cache lines (128 bytes: two
/// lines, as adjacent-line prefetchers pair them).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// Per [`LATENCY_SECONDS_BUCKETS`] plus `+Inf`; not cumulative.
    buckets: [AtomicU64; LATENCY_SECONDS_BUCKETS.len() + 1],
    nanos: AtomicU64,
}

/// The shard of the calling thread.
fn shard_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// What a [`LatencyHistogram`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Observations by latency, per [`LATENCY_SECONDS_BUCKETS`] plus `+Inf`;
    /// not cumulative.
    pub buckets: [u64; LATENCY_SECONDS_BUCKETS.len() + 1],
    /// Sum of the observations, in nanoseconds.
    pub nanos: u64,
}

impl LatencyHistogram {
    /// Counts one latency.
    pub fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_NANOS_BUCKETS
            .iter()
            .position(|b| nanos <= *b)
            .unwrap_or(LATENCY_NANOS_BUCKETS.len());
        let shard = &self.shards[shard_index()];
        shard.buckets[i].fetch_add(1, Ordering::Relaxed);
        shard.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let mut snapshot = LatencySnapshot::default();
        for shard in &self.shards {
            for (sum, bucket) in snapshot.buckets.iter_mut().zip(&shard.buckets) {
                *sum += bucket.load(Ordering::Relaxed);
            }
            snapshot.nanos = snapshot
                .nanos
                .saturating_add(shard.nanos.load(Ordering::Relaxed));
        }
        snapshot
    }
}

/// Counters of the writer since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Groups committed.
    pub groups: u64,
    /// Requests (submit calls) processed.
    pub requests: u64,
    /// Write ops (puts and deletes as submitted) processed.
    pub ops: u64,
    /// Flushes (sled flush plus fdatasync) done for durable requests.
    pub flushes: u64,
    /// Groups that failed with a write error.
    pub failed_groups: u64,
    /// Requests that failed: those of failed groups, and requests refused
    /// as invalid (`Error::InvalidWrite`). Not those completed with
    /// `Error::Closed` because the store closed first.
    pub failed_requests: u64,
    /// Flushes by latency, per [`FLUSH_SECONDS_BUCKETS`] plus `+Inf`; not
    /// cumulative.
    pub flush_buckets: [u64; FLUSH_SECONDS_BUCKETS.len() + 1],
    /// Total time spent flushing, in nanoseconds.
    pub flush_nanos: u64,
    /// Groups by requests, per [`GROUP_SIZE_BUCKETS`] plus `+Inf`; not
    /// cumulative.
    pub group_size_buckets: [u64; GROUP_SIZE_BUCKETS.len() + 1],
}

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) groups: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) ops: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) failed_groups: AtomicU64,
    pub(crate) failed_requests: AtomicU64,
    flush_buckets: [AtomicU64; FLUSH_SECONDS_BUCKETS.len() + 1],
    flush_nanos: AtomicU64,
    group_size_buckets: [AtomicU64; GROUP_SIZE_BUCKETS.len() + 1],
}

/// The index of the first bucket whose bound is at least `value`.
fn bucket(bounds: &[f64], value: f64) -> usize {
    bounds
        .iter()
        .position(|b| value <= *b)
        .unwrap_or(bounds.len())
}

fn load<const N: usize>(counters: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| counters[i].load(Ordering::Relaxed))
}

impl Stats {
    /// One flush took `took`.
    pub(crate) fn flushed(&self, took: Duration) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let i = bucket(&FLUSH_SECONDS_BUCKETS, took.as_secs_f64());
        self.flush_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.flush_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// A group of `requests` requests holding `ops` ops is being committed.
    pub(crate) fn group(&self, requests: usize, ops: usize) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
        self.ops.fetch_add(ops as u64, Ordering::Relaxed);
        let i = bucket(&GROUP_SIZE_BUCKETS, requests as f64);
        self.group_size_buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            groups: self.groups.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            failed_groups: self.failed_groups.load(Ordering::Relaxed),
            failed_requests: self.failed_requests.load(Ordering::Relaxed),
            flush_buckets: load(&self.flush_buckets),
            flush_nanos: self.flush_nanos.load(Ordering::Relaxed),
            group_size_buckets: load(&self.group_size_buckets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_the_first_bucket_that_holds_them() {
        assert_eq!(
            LATENCY_NANOS_BUCKETS.map(|n| n as f64 / 1e9),
            LATENCY_SECONDS_BUCKETS
        );
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[6], 1);
        assert_eq!(s.buckets[LATENCY_SECONDS_BUCKETS.len()], 1);
        assert_eq!(s.buckets.iter().sum::<u64>(), 4);
        assert_eq!(s.nanos, 60_003_101_000);
    }

    #[test]
    fn a_snapshot_sums_the_shards_of_every_thread() {
        let h = std::sync::Arc::new(LatencyHistogram::default());
        let threads: Vec<_> = (0..2 * SHARDS as u64)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        h.observe(Duration::from_micros(1 + t));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = h.snapshot();
        let n = 2 * SHARDS as u64;
        assert_eq!(s.buckets[0], n * 1000);
        assert_eq!(s.nanos, (1..=n).sum::<u64>() * 1000 * 1000);
        assert!(
            h.shards
                .iter()
                .filter(|s| s.nanos.load(Ordering::Relaxed) > 0)
                .count()
                > 1
        );
        assert_eq!(std::mem::align_of::<Shard>(), 128);
    }

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let stats = Stats::default();
        stats.flushed(Duration::from_micros(100));
        stats.flushed(Duration::from_millis(3));
        stats.flushed(Duration::from_secs(2));
        stats.group(1, 3);
        stats.group(5, 5);
        stats.group(10_000, 10_000);
        let s = stats.snapshot();
        assert_eq!(s.flushes, 3);
        assert_eq!(s.flush_buckets[0], 1);
        assert_eq!(s.flush_buckets[5], 1);
        assert_eq!(s.flush_buckets[FLUSH_SECONDS_BUCKETS.len()], 1);
        assert_eq!(s.flush_buckets.iter().sum::<u64>(), 3);
        assert_eq!(s.flush_nanos, 2_003_100_000);
        assert_eq!(s.group_size_buckets[0], 1);
        assert_eq!(s.group_size_buckets[3], 1);
        assert_eq!(s.group_size_buckets[GROUP_SIZE_BUCKETS.len()], 1);
        assert_eq!((s.groups, s.requests, s.ops), (3, 10_006, 10_008));
    }
}
