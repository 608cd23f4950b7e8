//! The counters of one node: what `/metrics`, `$SYS` and the admin API
//! read (`crate::observe` takes a snapshot of them). Every part of the broker
//! counts into the one [`Metrics`] of its node, with relaxed atomics: the
//! figures are statistics, not synchronisation.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one node, read by `$SYS` topics and metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_current: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    /// PUBLISH packets received from clients, by QoS (`Metrics::received`).
    pub messages_received: [AtomicU64; 3],
    /// PUBLISH packets written to clients, by delivered QoS (`Metrics::sent`).
    pub messages_sent: [AtomicU64; 3],
    /// Copies not delivered, by [`DropReason`] (`Metrics::dropped`).
    pub messages_dropped: [AtomicU64; DropReason::ALL.len()],
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Clients disconnected for a protocol violation.
    pub protocol_errors: AtomicU64,
    /// Copies a session got already, dropped (a session that moved between
    /// nodes gets some messages twice; `session/recent.rs`).
    pub duplicates_dropped: AtomicU64,
    /// CONNECTs refused by authentication (any reason).
    pub auth_failures: AtomicU64,
    /// Connections closed because their address exceeded the connect rate.
    pub connect_rate_refused: AtomicU64,
    /// PUBLISH packets (and wills) the ACL refused.
    pub acl_denied_publish: AtomicU64,
    /// SUBSCRIBE filters the ACL refused.
    pub acl_denied_subscribe: AtomicU64,
    /// Messages not delivered to a subscriber the ACL does not let read them.
    pub acl_denied_delivery: AtomicU64,
    /// Topics and filters refused for `limits.max_topic_levels` / `_length`.
    pub topic_limit_refused: AtomicU64,
    /// PUBLISH packets whose reading was delayed by `limits.max_publish_rate`.
    pub publish_throttled: AtomicU64,
    /// Copies dropped because the held bytes reached `limits.max_queued_bytes`
    /// (QoS 0 above 7/8 of it, QoS 1/2 at it), and 5.0 publishes refused 0x97.
    pub overload_dropped: AtomicU64,
    /// Clients disconnected by `limits.slow_consumer_timeout_secs`.
    pub slow_consumers_disconnected: AtomicU64,
    /// Congested subscribers that took nothing for
    /// `limits.backpressure_wait_secs` while publishers were held back for them.
    pub backpressure_stalls: AtomicU64,
    /// Sessions hibernating now (`session/hibernate.rs`).
    pub sessions_hibernating: AtomicU64,
    /// Times a session went to sleep, and woke.
    pub session_hibernations: AtomicU64,
    pub session_wakes: AtomicU64,
    /// PINGREQs answered by a worker's poller for a hibernating session.
    pub hibernating_pings: AtomicU64,
    /// How long wakes of hibernating sessions took on their worker, up to
    /// the actor running again (`session/hibernate.rs`, `woken`).
    pub wake_latency: WakeHistogram,
    /// From a message's arrival on this node (`Message::received_at`) to
    /// each copy's PUBLISH written for a client.
    pub deliver_latency: storage::LatencyHistogram,
}

/// Upper bounds of [`WakeHistogram`]'s buckets, in seconds: finer than
/// the delivery latency's, a wake's cost being tens of microseconds.
pub const WAKE_SECONDS_BUCKETS: [f64; 12] = [
    0.000_005, 0.000_01, 0.000_02, 0.000_03, 0.000_04, 0.000_05, 0.000_075, 0.000_1, 0.000_25,
    0.000_5, 0.001, 0.01,
];

/// How long wakes of hibernating sessions took. Wakes are rare next to
/// messages: one set of counters, no sharding.
#[derive(Debug, Default)]
pub struct WakeHistogram {
    /// Per [`WAKE_SECONDS_BUCKETS`] plus `+Inf`; not cumulative.
    buckets: [AtomicU64; WAKE_SECONDS_BUCKETS.len() + 1],
    nanos: AtomicU64,
}

impl WakeHistogram {
    /// Counts one wake that took `took`.
    pub fn observe(&self, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        let i = WAKE_SECONDS_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(WAKE_SECONDS_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Per-bucket counts (the last is `+Inf`) and the sum in seconds.
    pub fn snapshot(&self) -> ([u64; WAKE_SECONDS_BUCKETS.len() + 1], f64) {
        let counts = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        (counts, self.nanos.load(Ordering::Relaxed) as f64 / 1e9)
    }
}

/// Why a copy of a message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its Message Expiry Interval passed before it could be sent.
    Expired,
    /// The session's queue held `mqtt.max_queued_messages` already.
    QueueFull,
    /// A QoS 0 copy for a client that is offline or whose write buffer is
    /// full.
    ClientUnavailable,
    /// Larger than the client's Maximum Packet Size (5.0).
    TooLarge,
    /// The held bytes reached `limits.max_queued_bytes` (see `crate::limits`).
    Overload,
    /// A shared group had no member to take it.
    NoSubscriber,
    /// Handed over for a session this node does not have (cluster).
    SessionGone,
    /// A QoS 2 copy for a persistent session whose store failed: its
    /// publisher is told the message failed and sends it again.
    StoreFailed,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::Expired,
        DropReason::QueueFull,
        DropReason::ClientUnavailable,
        DropReason::TooLarge,
        DropReason::Overload,
        DropReason::NoSubscriber,
        DropReason::SessionGone,
        DropReason::StoreFailed,
    ];

    /// The `reason` label of `tern_messages_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Expired => "expired",
            DropReason::QueueFull => "queue_full",
            DropReason::ClientUnavailable => "client_unavailable",
            DropReason::TooLarge => "too_large",
            DropReason::Overload => "overload",
            DropReason::NoSubscriber => "no_subscriber",
            DropReason::SessionGone => "session_gone",
            DropReason::StoreFailed => "store_failed",
        }
    }
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes `n` from a gauge.
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    /// A PUBLISH of `qos` arrived from a client.
    pub fn received(&self, qos: crate::codec::QoS) {
        Metrics::add(&self.messages_received[qos as usize], 1);
    }

    /// A PUBLISH of `qos` was written for a client, for a message that
    /// arrived at `received_at`.
    pub fn sent(&self, qos: crate::codec::QoS, received_at: Option<std::time::Instant>) {
        Metrics::add(&self.messages_sent[qos as usize], 1);
        if let Some(at) = received_at {
            self.deliver_latency.observe(at.elapsed());
        }
    }

    /// `n` copies were not delivered for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        Metrics::add(&self.messages_dropped[reason as usize], n);
    }

    /// Sum of a by-QoS or by-reason family.
    pub fn total(counters: &[AtomicU64]) -> u64 {
        counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}
