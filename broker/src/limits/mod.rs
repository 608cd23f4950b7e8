//! Limits that protect the broker from clients, and the accounting they need.
//! The configuration is `[limits]` (see `LimitsConfig`); the limits that
//! existed before it stay where they were (`listeners.max_connections`,
//! `mqtt.max_packet_size`, `mqtt.max_inflight`, `mqtt.max_queued_messages`,
//! `mqtt.max_write_buffer`, `mqtt.connect_timeout_secs`).
//!
//! Policies:
//! - Connect rate: a token bucket per source IP address (`max_connect_rate`
//!   per second, `connect_burst` at once). A connection over the rate is
//!   closed at once, before its CONNECT is read: refusing costs no parsing.
//!   Buckets of idle addresses are forgotten after a minute.
//! - Topic levels and length: a PUBLISH (or Will) topic, or a SUBSCRIBE
//!   filter, over `max_topic_levels` / `max_topic_length` is refused like an
//!   invalid one: 5.0 PUBACK/PUBREC 0x90, SUBACK 0x8F, CONNACK 0x90 (will);
//!   3.1.1 the PUBLISH is acknowledged and dropped, SUBACK 0x80, CONNACK 3.
//! - Publish rate: a token bucket per connection (`max_publish_rate` per
//!   second, `publish_burst` at once). Over the rate the broker reads that
//!   client more slowly (TCP pushes back on it); nothing is dropped or
//!   disconnected.
//! - Memory held for clients: queued QoS 1/2 copies (topic and payload bytes
//!   per copy) plus write buffers, counted in [`Limits::held_bytes`]. Above
//!   7/8 of `max_queued_bytes` new QoS 0 copies are dropped; at
//!   `max_queued_bytes` a QoS 1/2 copy that would have to wait (its session
//!   offline or behind) is dropped too, and 5.0 publishers of QoS 1/2 get
//!   PUBACK/PUBREC 0x97 (Quota exceeded) without their message being routed.
//!   3.1.1 publishers are acknowledged, as with a full session queue.
//!   Copies a session can send at once still go. Every drop is counted.
//! - Slow consumers: a client whose socket takes no byte for
//!   `slow_consumer_timeout_secs` while its write buffer is full is
//!   disconnected; until then QoS 0 to it is dropped and QoS 1/2 queue.
//! - Backpressure: an online session with `backpressure_queued` QoS 1/2
//!   messages waiting, counting the copies still in its mailbox, is
//!   congested (`SessionRef::is_congested`: the session publishes its queue
//!   length, routers count the copies they send it, so a publisher that runs
//!   ahead of the subscriber's actor is held back all the same); a router
//!   hands it the publisher's acknowledgement guard with each QoS 1/2 copy,
//!   and the session holds it until the copy is sent, for at most
//!   `backpressure_wait_secs` (session/deliver.rs); a session whose held
//!   acknowledgement reaches that deadline is stalled, and is not congested
//!   again until its queue drops below the threshold. Publishers keeping to
//!   their in-flight window slow down to the subscriber's pace. Only
//!   publishers on the subscriber's node are held back: the answer to a
//!   forwarded message is never held, since every message between two
//!   nodes shares one window and one congested subscriber would stall it.
//! - Slowloris: `mqtt.connect_timeout_secs` bounds the time to a whole
//!   CONNECT, however slowly its bytes trickle in.
//!
//! Known issues:
//! - Read buffers are not counted: a connected client may hold up to
//!   `mqtt.max_packet_size` in a half-sent packet (until its keep alive
//!   expires; forever with keep alive 0). `listeners.max_connections` bounds
//!   the total.
//! - Actor mailboxes are not counted: a `Deliver` waits there until its
//!   session handles it. Sessions handle them quickly (a full buffer drops
//!   QoS 0 at once), so they stay short unless a worker thread is starved.
//! - A copy counts its topic and payload even when the payload is shared
//!   with other copies: the held bytes overestimate memory, never under.
//! - Connect-rate buckets are per address: an IPv6 client with a whole
//!   prefix has many buckets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::LimitsConfig;

/// A token bucket: `rate` tokens per second, at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `burst` 0 means `rate`.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(if burst == 0 { rate } else { burst }.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        // `now` may be older than `last` when callers read the clock before
        // taking the bucket's lock: never move `last` back, or the same
        // interval would be refilled twice.
        if now > self.last {
            let elapsed = (now - self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
            self.last = now;
        }
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes a token, going into debt if needed; returns how long until the
    /// bucket is out of debt (zero if a token was there).
    pub fn take(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 || self.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Connect rate per source address.
#[derive(Debug)]
struct ConnectRate {
    rate: u32,
    burst: u32,
    buckets: Mutex<(HashMap<IpAddr, TokenBucket>, Instant)>,
}

/// How often idle buckets are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl ConnectRate {
    fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let mut guard = self.buckets.lock();
        let (buckets, last_sweep) = &mut *guard;
        if now.saturating_duration_since(*last_sweep) >= SWEEP_EVERY {
            // A full bucket is the same as no bucket.
            buckets.retain(|_, b| !b.is_full(now));
            *last_sweep = now;
        }
        buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .try_take(now)
    }
}

/// The limits of one node and their shared accounting.
#[derive(Debug)]
pub struct Limits {
    pub config: LimitsConfig,
    connect_rate: Option<ConnectRate>,
    /// Bytes held for clients: queued QoS 1/2 copies and write buffers.
    held: Arc<AtomicU64>,
    /// QoS 1/2 copies held for clients, and how many of them are in flight.
    counts: Arc<HeldCounts>,
}

/// Copies counted by their [`QueueCharge`]s.
#[derive(Debug, Default)]
struct HeldCounts {
    /// One per live charge: queued or in flight.
    messages: AtomicU64,
    /// Charges marked in flight (sent, not yet acknowledged).
    in_flight: AtomicU64,
}

/// What the memory cap allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// Under 7/8 of the cap.
    Normal,
    /// New QoS 0 copies are dropped.
    DropQos0,
    /// New QoS 0 copies, and QoS 1/2 copies that would wait, are dropped.
    Full,
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Limits {
        let connect_rate = (config.max_connect_rate > 0).then(|| ConnectRate {
            rate: config.max_connect_rate,
            burst: config.connect_burst,
            buckets: Mutex::new((HashMap::new(), Instant::now())),
        });
        Limits {
            config: config.clone(),
            connect_rate,
            held: Arc::new(AtomicU64::new(0)),
            counts: Arc::default(),
        }
    }

    /// True if a new connection from `ip` is within the connect rate.
    pub fn admit_connection(&self, ip: IpAddr) -> bool {
        self.connect_rate
            .as_ref()
            .is_none_or(|r| r.admit(ip, Instant::now()))
    }

    /// Why `topic` (a name or a filter) is over the topic limits, if it is.
    pub fn topic_violation(&self, topic: &str) -> Option<String> {
        if topic.len() > self.config.max_topic_length {
            return Some(format!(
                "topic of {} bytes exceeds limits.max_topic_length {}",
                topic.len(),
                self.config.max_topic_length
            ));
        }
        let levels = topic.bytes().filter(|&b| b == b'/').count() + 1;
        if levels > self.config.max_topic_levels {
            return Some(format!(
                "topic of {levels} levels exceeds limits.max_topic_levels {}",
                self.config.max_topic_levels
            ));
        }
        None
    }

    /// Bytes held for clients now.
    pub fn held_bytes(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// QoS 1/2 copies held for clients now, queued or in flight.
    pub fn held_messages(&self) -> u64 {
        self.counts.messages.load(Ordering::Relaxed)
    }

    /// QoS 1/2 copies sent to clients and not yet acknowledged.
    pub fn in_flight_messages(&self) -> u64 {
        self.counts.in_flight.load(Ordering::Relaxed)
    }

    /// The shared counter, for write buffers to add to and take from.
    pub fn held_counter(&self) -> Arc<AtomicU64> {
        self.held.clone()
    }

    /// Where the held bytes are against `max_queued_bytes`.
    pub fn pressure(&self) -> Pressure {
        let max = self.config.max_queued_bytes;
        if max == 0 {
            return Pressure::Normal;
        }
        let held = self.held_bytes();
        if held >= max {
            Pressure::Full
        } else if held >= max - max / 8 {
            Pressure::DropQos0
        } else {
            Pressure::Normal
        }
    }

    /// Counts `bytes` as held until the returned charge is dropped.
    pub fn charge(&self, bytes: u64) -> QueueCharge {
        QueueCharge::new(Some((self.held.clone(), self.counts.clone())), bytes)
    }
}

/// Bytes and one message counted as held while this value lives (one
/// queued copy), and as in flight while marked so.
#[derive(Debug)]
pub struct QueueCharge {
    /// Held bytes, held messages.
    counters: Option<(Arc<AtomicU64>, Arc<HeldCounts>)>,
    bytes: u64,
    in_flight: bool,
}

impl QueueCharge {
    fn new(counters: Option<(Arc<AtomicU64>, Arc<HeldCounts>)>, bytes: u64) -> QueueCharge {
        if let Some((held, counts)) = &counters {
            held.fetch_add(bytes, Ordering::Relaxed);
            counts.messages.fetch_add(1, Ordering::Relaxed);
        }
        QueueCharge {
            counters,
            bytes,
            in_flight: false,
        }
    }

    /// A charge that counts nothing (tests).
    pub fn none() -> QueueCharge {
        QueueCharge {
            counters: None,
            bytes: 0,
            in_flight: false,
        }
    }

    /// Counts the copy as in flight (sent, not yet acknowledged) or not.
    pub fn set_in_flight(&mut self, in_flight: bool) {
        if self.in_flight == in_flight {
            return;
        }
        self.in_flight = in_flight;
        if let Some((_, counts)) = &self.counters {
            if in_flight {
                counts.in_flight.fetch_add(1, Ordering::Relaxed);
            } else {
                counts.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// A clone is a new copy: queued, not in flight.
impl Clone for QueueCharge {
    fn clone(&self) -> QueueCharge {
        QueueCharge::new(self.counters.clone(), self.bytes)
    }
}

impl Drop for QueueCharge {
    fn drop(&mut self) {
        self.set_in_flight(false);
        if let Some((held, counts)) = &self.counters {
            held.fetch_sub(self.bytes, Ordering::Relaxed);
            counts.messages.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 3, t0);
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_millis(400)));
        assert!(b.try_take(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn token_bucket_does_not_refill_twice_when_time_arrives_out_of_order() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut b = TokenBucket::new(1, 1, t0);
        assert!(b.try_take(t0));
        assert!(b.try_take(t1));
        // a caller that read the clock before t1 and got the lock after
        assert!(!b.try_take(t0 + Duration::from_millis(500)));
        assert!(!b.try_take(t1));
    }

    #[test]
    fn token_bucket_take_reports_the_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 1, t0);
        assert_eq!(b.take(t0), Duration::ZERO);
        let wait = b.take(t0);
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
    }

    #[test]
    fn connect_rate_is_per_address() {
        let limits = Limits::new(&LimitsConfig {
            max_connect_rate: 1,
            connect_burst: 2,
            ..Default::default()
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(limits.admit_connection(a));
        assert!(limits.admit_connection(a));
        assert!(!limits.admit_connection(a));
        assert!(limits.admit_connection(b));
    }

    #[test]
    fn topic_limits_count_levels_and_bytes() {
        let limits = Limits::new(&LimitsConfig {
            max_topic_levels: 3,
            max_topic_length: 10,
            ..Default::default()
        });
        assert!(limits.topic_violation("a/b/c").is_none());
        assert!(limits
            .topic_violation("a/b/c/d")
            .unwrap()
            .contains("levels"));
        assert!(limits
            .topic_violation("abcdefghijk")
            .unwrap()
            .contains("bytes"));
    }

    #[test]
    fn charges_are_released_on_drop_and_pressure_follows() {
        let limits = Limits::new(&LimitsConfig {
            max_queued_bytes: 800,
            ..Default::default()
        });
        let a = limits.charge(600);
        assert_eq!(limits.pressure(), Pressure::Normal);
        let b = limits.charge(100);
        assert_eq!(limits.pressure(), Pressure::DropQos0);
        let mut c = b.clone();
        assert_eq!(limits.held_bytes(), 800);
        assert_eq!(limits.held_messages(), 3);
        c.set_in_flight(true);
        c.set_in_flight(true);
        assert_eq!(limits.in_flight_messages(), 1);
        assert!(!c.clone().in_flight);
        assert_eq!(limits.in_flight_messages(), 1);
        assert_eq!(limits.pressure(), Pressure::Full);
        drop((a, b, c));
        assert_eq!(limits.held_bytes(), 0);
        assert_eq!(limits.held_messages(), 0);
        assert_eq!(limits.in_flight_messages(), 0);
    }
}
