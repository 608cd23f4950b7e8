//! Benchmarks of the subscription trie and the retained index: subscribe,
//! unsubscribe, match by topic depth, match with 10k/100k/1M
//! subscriptions, two threads matching under a read lock, and a retained
//! `#` walk over 100k topics (STYLE.md section 8).
//!
//! The tables model a fleet: mostly exact device filters
//! `site/{s}/device/{d}/telemetry`, with some `+` and `#` filters per site.
//! Each table is built once per group; `--test` runs every bench once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use broker::retain::RetainedIndex;
use broker::router::SubscriptionTable;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use parking_lot::RwLock;

type Table = SubscriptionTable<u64, u8>;

/// Devices per site.
const DEVICES: u64 = 100;

/// The `n`th filter of the fleet mix: per 100 subscriptions, 95 exact
/// device filters, 3 `site/{s}/device/+/telemetry`, 1 `site/{s}/#` and 1
/// `site/+/device/{d}/alarm`.
fn fleet_filter(n: u64) -> String {
    let (site, device) = (n / DEVICES, n % DEVICES);
    match n % 100 {
        0..=94 => format!("site/{site}/device/{device}/telemetry"),
        95..=97 => format!("site/{site}/device/+/telemetry"),
        98 => format!("site/{site}/#"),
        _ => format!("site/+/device/{device}/alarm"),
    }
}

fn fleet(subscriptions: u64) -> Table {
    let mut table = Table::new();
    for n in 0..subscriptions {
        table.subscribe(&fleet_filter(n), n, 1);
    }
    table
}

/// 1,024 telemetry topics of random devices of a fleet of `subscriptions`.
fn fleet_topics(subscriptions: u64) -> Vec<String> {
    let sites = subscriptions.div_ceil(DEVICES);
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..1024)
        .map(|_| {
            // xorshift: reproducible and independent of `rand`'s versions.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!(
                "site/{}/device/{}/telemetry",
                x % sites,
                (x >> 32) % DEVICES
            )
        })
        .collect()
}

/// Matches every topic in turn and counts the visits.
fn match_all(table: &Table, topics: &[String], i: &mut usize) -> usize {
    *i = (*i + 1) % topics.len();
    let mut visits = 0;
    table.matches(&topics[*i], |key, qos| {
        black_box((key, qos));
        visits += 1;
    });
    visits
}

/// Resident memory of this process in bytes, where /proc tells.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn subscribe_and_unsubscribe(c: &mut Criterion) {
    let mut group = c.benchmark_group("router");
    let n = 10_000;
    let filters: Vec<String> = (0..n).map(fleet_filter).collect();
    group.throughput(Throughput::Elements(n));
    group.bench_function("subscribe/10k", |b| {
        b.iter_batched(
            Table::new,
            |mut table| {
                for (key, filter) in filters.iter().enumerate() {
                    table.subscribe(filter, key as u64, 1);
                }
                table
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("unsubscribe/10k", |b| {
        b.iter_batched(
            || fleet(n),
            |mut table| {
                for (key, filter) in filters.iter().enumerate() {
                    black_box(table.unsubscribe(filter, &(key as u64)));
                }
                table
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn match_by_depth(c: &mut Criterion) {
    // For each depth 1..=8: 1,000 exact filters `t{i}/x/x/...`, one
    // `+/x/x/...`, and `#` for all: a match visits three subscriptions.
    let topic = |depth: usize, i: u64| {
        let mut levels = vec![format!("t{i}")];
        levels.resize(depth, "x".to_owned());
        levels.join("/")
    };
    let mut table = Table::new();
    let mut key = 0;
    for depth in 1..=8 {
        for i in 0..1000 {
            table.subscribe(&topic(depth, i), key, 0);
            key += 1;
        }
        let mut plus = vec!["+"];
        plus.resize(depth, "x");
        table.subscribe(&plus.join("/"), key, 0);
        key += 1;
    }
    table.subscribe("#", key, 0);
    let mut group = c.benchmark_group("router/match_by_depth");
    for depth in 1..=8 {
        let topics: Vec<String> = (0..1000).map(|i| topic(depth, i)).collect();
        group.bench_with_input(BenchmarkId::from_parameter(depth), &topics, |b, topics| {
            let mut i = 0;
            b.iter(|| match_all(&table, topics, &mut i))
        });
    }
    group.finish();
}

fn match_by_subscriptions(c: &mut Criterion) {
    let mut group = c.benchmark_group("router/match");
    for (name, n) in [("10k", 10_000), ("100k", 100_000), ("1M", 1_000_000)] {
        let before = resident_bytes();
        let start = Instant::now();
        let table = fleet(n);
        let built = start.elapsed();
        // Earlier benches leave freed memory to reuse: only large tables
        // give a meaningful delta.
        if let (true, Some(before), Some(after)) = (n >= 100_000, before, resident_bytes()) {
            eprintln!(
                "router/match/{name}: built in {built:.2?}, {} bytes resident per subscription",
                after.saturating_sub(before) / n
            );
        }
        let topics = fleet_topics(n);
        group.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| match_all(&table, &topics, &mut i))
        });
    }
    group.finish();
}

/// Runs `work(iters)` on `threads` threads at once; reports wall time, so
/// with no contention the time per iteration does not change with threads.
fn on_threads(threads: usize, iters: u64, work: impl Fn(u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| work(iters));
        }
    });
    start.elapsed()
}

fn contention(c: &mut Criterion) {
    let mut table = fleet(100_000);
    for key in 0..8 {
        table.subscribe("$share/workers/site/+/device/+/telemetry", key, 1);
    }
    let table = RwLock::new(table);
    let topics = fleet_topics(100_000);
    let mut group = c.benchmark_group("router/read_lock");
    for threads in [1, 2] {
        group.bench_function(BenchmarkId::new("match", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |iters| {
                    let mut i = 0;
                    for _ in 0..iters {
                        black_box(match_all(&table.read(), &topics, &mut i));
                    }
                })
            })
        });
        // Every publish also moves the shared group's atomic cursor.
        group.bench_function(BenchmarkId::new("match_shared", threads), |b| {
            b.iter_custom(|iters| {
                on_threads(threads, iters, |iters| {
                    for n in 0..iters {
                        let topic = &topics[n as usize % topics.len()];
                        let mut picked = 0;
                        table
                            .read()
                            .match_shared(topic, |_, _| true, |_, k, _| picked += *k);
                        black_box(picked);
                    }
                })
            })
        });
    }
    group.finish();
}

fn retained(c: &mut Criterion) {
    let mut index = RetainedIndex::new();
    let n = 100_000;
    for m in 0..n {
        index.insert(
            &format!("site/{}/device/{}/telemetry", m / DEVICES, m % DEVICES),
            m,
        );
    }
    let mut group = c.benchmark_group("retain");
    group.throughput(Throughput::Elements(n));
    group.bench_function("match_hash/100k", |b| {
        b.iter(|| {
            let mut sum = 0;
            index.matches("#", |topic, v| sum += topic.len() as u64 + v);
            sum
        })
    });
    group.throughput(Throughput::Elements(DEVICES));
    group.bench_function("match_site/100k", |b| {
        b.iter(|| {
            let mut sum = 0;
            index.matches("site/500/device/+/telemetry", |topic, v| {
                sum += topic.len() as u64 + v
            });
            sum
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    subscribe_and_unsubscribe,
    match_by_depth,
    match_by_subscriptions,
    contention,
    retained
);
criterion_main!(benches);
