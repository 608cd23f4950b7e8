//! `GET /metrics`: every family of the node in the Prometheus text format
//! (version 0.0.4), encoded by the `prometheus` crate. Families are built at
//! scrape time from a [`Snapshot`], the counters of
//! [`crate::state::Metrics`], the store's writer stats and the cluster
//! status; nothing is registered ahead and nothing is counted twice. The
//! same [`families`] are what [`super::otlp`] exports over OTLP.
//!
//! Names follow Prometheus conventions: `tern_` prefix, `_total` for
//! counters, base units (seconds, bytes). README.md lists every family.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::TextEncoder;

use super::{NodeInfo, Snapshot};
use crate::counters::DropReason;
use crate::state::BrokerState;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// How long without contact makes a peer count as down (as the cluster
/// bridge counts it).
pub(super) const PEER_DOWN_AFTER: Duration = Duration::from_secs(3);

/// Families under construction.
#[derive(Default)]
pub(super) struct Families(pub(super) Vec<MetricFamily>);

fn label_pairs(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut l = LabelPair::default();
            l.set_name((*name).to_owned());
            l.set_value((*value).to_owned());
            l
        })
        .collect()
}

/// One sample of a counter or gauge with its labels.
fn sample(kind: MetricType, pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(label_pairs(pairs));
    match kind {
        MetricType::COUNTER => {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        }
        _ => {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
    }
    m
}

impl Families {
    /// Adds a family; one without samples (no peers yet) is left out, as
    /// the text format has no way to show it.
    pub(super) fn family(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        metrics: Vec<Metric>,
    ) {
        if metrics.is_empty() {
            return;
        }
        let mut f = MetricFamily::default();
        f.set_name(name.to_owned());
        f.set_help(help.to_owned());
        f.set_field_type(kind);
        f.set_metric(metrics);
        self.0.push(f);
    }

    /// A counter family with one label.
    pub(super) fn counters<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        let metrics = values
            .into_iter()
            .map(|(l, v)| sample(MetricType::COUNTER, &[(label, l)], v as f64))
            .collect();
        self.family(name, help, MetricType::COUNTER, metrics);
    }

    pub(super) fn counter(&mut self, name: &str, help: &str, value: u64) {
        let metrics = vec![sample(MetricType::COUNTER, &[], value as f64)];
        self.family(name, help, MetricType::COUNTER, metrics);
    }

    /// A gauge family with one label.
    pub(super) fn gauges<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) {
        let metrics = values
            .into_iter()
            .map(|(l, v)| sample(MetricType::GAUGE, &[(label, l)], v))
            .collect();
        self.family(name, help, MetricType::GAUGE, metrics);
    }

    pub(super) fn gauge(&mut self, name: &str, help: &str, value: f64) {
        let metrics = vec![sample(MetricType::GAUGE, &[], value)];
        self.family(name, help, MetricType::GAUGE, metrics);
    }

    /// A histogram from per-bucket (not cumulative) counts; the last count
    /// is the `+Inf` bucket's.
    pub(super) fn histogram(
        &mut self,
        name: &str,
        help: &str,
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        let metrics = vec![histogram_sample(&[], bounds, counts, sum)];
        self.family(name, help, MetricType::HISTOGRAM, metrics);
    }
}

/// One sample of a histogram with its labels, from per-bucket (not
/// cumulative) counts; the last count is the `+Inf` bucket's.
pub(super) fn histogram_sample(
    pairs: &[(&str, &str)],
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
) -> Metric {
    let mut cumulative = 0;
    let buckets = bounds
        .iter()
        .zip(counts)
        .map(|(bound, count)| {
            cumulative += count;
            let mut b = Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(counts.iter().sum());
    h.set_sample_sum(sum);
    let mut m = Metric::default();
    m.set_label(label_pairs(pairs));
    m.set_histogram(h);
    m
}

const QOS: [&str; 3] = ["0", "1", "2"];

/// The exposition of every family of the node.
pub fn render(state: &BrokerState, info: &NodeInfo) -> prometheus::Result<String> {
    TextEncoder::new().encode_to_string(&families(state, info))
}

/// Every family of the node, read now: what `GET /metrics` encodes and what
/// [`super::otlp`] exports.
pub fn families(state: &BrokerState, info: &NodeInfo) -> Vec<MetricFamily> {
    let s = Snapshot::take(state, info);
    let m = &state.metrics();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut f = Families::default();

    f.gauges(
        "tern_build_info",
        "Version of the running tern (always 1).",
        "version",
        [(env!("CARGO_PKG_VERSION"), 1.0)],
    );
    f.gauge(
        "tern_uptime_seconds",
        "Seconds since the node started.",
        info.started.elapsed().as_secs_f64(),
    );

    // connections and sessions
    f.gauge(
        "tern_connections",
        "Clients connected now (CONNECT accepted).",
        s.connections as f64,
    );
    let listeners: Vec<Metric> = info
        .listeners
        .iter()
        .map(|l| {
            let protocol = l.protocol.to_string();
            let addr = l.addr.to_string();
            let open = l.open.load(Ordering::Relaxed) as f64;
            let pairs = [("protocol", protocol.as_str()), ("listener", addr.as_str())];
            sample(MetricType::GAUGE, &pairs, open)
        })
        .collect();
    f.family(
        "tern_listener_connections",
        "Open sockets per MQTT listener, CONNECT read or not.",
        MetricType::GAUGE,
        listeners,
    );
    f.counter(
        "tern_connections_total",
        "Connections accepted (CONNACK success) since start.",
        s.connections_total,
    );
    f.counter(
        "tern_connections_refused_total",
        "Connections refused: listener full, handshake failed, CONNECT refused.",
        load(&m.connections_refused),
    );
    f.gauges(
        "tern_sessions",
        "Sessions by state: online (a client is connected), offline (persistent, no client).",
        "state",
        [
            ("online", s.sessions_online as f64),
            ("offline", s.sessions_offline as f64),
        ],
    );
    f.gauge(
        "tern_subscriptions",
        "Subscriptions of this node's sessions (shared ones included).",
        s.subscriptions as f64,
    );
    f.gauge(
        "tern_retained_messages",
        "Retained messages known to this node.",
        s.retained as f64,
    );

    // messages
    f.counters(
        "tern_messages_received_total",
        "PUBLISH packets received from clients, by QoS.",
        "qos",
        QOS.into_iter().zip(s.messages_received),
    );
    f.counters(
        "tern_messages_sent_total",
        "PUBLISH packets written to clients, by delivered QoS.",
        "qos",
        QOS.into_iter().zip(s.messages_sent),
    );
    f.counters(
        "tern_messages_dropped_total",
        "Copies of messages not delivered, by reason.",
        "reason",
        DropReason::ALL
            .iter()
            .map(|r| (r.label(), load(&m.messages_dropped[*r as usize]))),
    );
    f.counter(
        "tern_bytes_received_total",
        "Bytes read from client sockets.",
        s.bytes_received,
    );
    f.counter(
        "tern_bytes_sent_total",
        "Bytes written to client sockets.",
        s.bytes_sent,
    );
    f.gauge(
        "tern_queued_messages",
        "QoS 1/2 copies waiting to be sent to clients (offline, or beyond the in-flight window).",
        s.held_messages.saturating_sub(s.in_flight_messages) as f64,
    );
    f.gauge(
        "tern_inflight_messages",
        "QoS 1/2 copies sent to clients and not yet acknowledged.",
        s.in_flight_messages as f64,
    );
    f.gauge(
        "tern_queued_bytes",
        "Bytes held for clients: queued QoS 1/2 copies and write buffers (limits.max_queued_bytes).",
        s.queued_bytes as f64,
    );

    // refusals
    f.counter(
        "tern_auth_failures_total",
        "CONNECTs refused by authentication.",
        load(&m.auth_failures),
    );
    f.counter(
        "tern_connect_rate_refused_total",
        "Connections closed because their address exceeded limits.max_connect_rate.",
        load(&m.connect_rate_refused),
    );
    f.counters(
        "tern_acl_denied_total",
        "Operations the ACL refused: publish (PUBLISH and wills), subscribe (filters), delivery (copies).",
        "action",
        [
            ("publish", load(&m.acl_denied_publish)),
            ("subscribe", load(&m.acl_denied_subscribe)),
            ("delivery", load(&m.acl_denied_delivery)),
        ],
    );
    f.counter(
        "tern_topic_limit_refused_total",
        "Topics and filters refused for limits.max_topic_levels / max_topic_length.",
        load(&m.topic_limit_refused),
    );
    f.counter(
        "tern_publish_throttled_total",
        "PUBLISH packets whose reading was delayed by limits.max_publish_rate.",
        load(&m.publish_throttled),
    );
    f.counter(
        "tern_overload_dropped_total",
        "Copies dropped and 5.0 publishes refused because the held bytes reached limits.max_queued_bytes.",
        load(&m.overload_dropped),
    );
    f.counter(
        "tern_slow_consumers_disconnected_total",
        "Clients disconnected by limits.slow_consumer_timeout_secs.",
        load(&m.slow_consumers_disconnected),
    );
    f.gauge(
        "tern_sessions_hibernating",
        "Sessions hibernating (mqtt.hibernate_after_secs): no actor, socket on the worker's poller.",
        load(&m.sessions_hibernating) as f64,
    );
    f.counter(
        "tern_session_hibernations_total",
        "Times an idle session released its actor to hibernate.",
        load(&m.session_hibernations),
    );
    f.counter(
        "tern_session_wakes_total",
        "Times a hibernating session was woken (a packet other than PINGREQ, or an input for it).",
        load(&m.session_wakes),
    );
    let (wakes, wake_seconds) = m.wake_latency.snapshot();
    f.histogram(
        "tern_session_wake_seconds",
        "Time a wake of a hibernating session took on its worker: state restored, socket back \
         in tokio, actor running again (the hop to the worker, which an input for an awake \
         session makes too, not counted).",
        &crate::counters::WAKE_SECONDS_BUCKETS,
        &wakes,
        wake_seconds,
    );
    f.counter(
        "tern_hibernating_pings_total",
        "PINGREQs answered by a worker's poller for a hibernating session.",
        load(&m.hibernating_pings),
    );
    f.counter(
        "tern_backpressure_stalls_total",
        "Congested subscribers that took nothing for limits.backpressure_wait_secs.",
        load(&m.backpressure_stalls),
    );
    f.counter(
        "tern_protocol_errors_total",
        "Clients disconnected for a protocol violation.",
        load(&m.protocol_errors),
    );
    f.counter(
        "tern_duplicates_dropped_total",
        "Copies of a message a session got already (it moved between nodes), not delivered again.",
        load(&m.duplicates_dropped),
    );
    let latency = m.deliver_latency.snapshot();
    f.histogram(
        "tern_publish_to_deliver_seconds",
        "From a message's arrival on this node (its PUBLISH, or its forward from another node) \
         to each copy's PUBLISH written for a client, queueing included.",
        &storage::LATENCY_SECONDS_BUCKETS,
        &latency.buckets,
        latency.nanos as f64 / 1e9,
    );

    hub_families(&mut f, state.hub());
    store_families(&mut f, &state.store().writer_stats());
    if let Some(raft) = state.cluster().raft() {
        super::cluster_metrics::cluster_families(&mut f, &raft.status());
        super::cluster_metrics::forward_families(&mut f, &raft.forward_stats());
    }
    if let Some(stats) = state.cluster().replica_stats() {
        super::cluster_metrics::replica_families(&mut f, stats);
    }
    f.0
}

/// How a route family reads its value from a route.
type RouteValue = dyn Fn(&crate::hub::Route) -> f64;

/// Hub events and, per route (label `route`), its queue and outcomes.
fn hub_families(f: &mut Families, hub: &crate::hub::Hub) {
    let events = hub.events();
    let published = events
        .published()
        .into_iter()
        .map(|(severity, object_type, n)| {
            let pairs = [
                ("severity", severity.as_str()),
                ("object_type", object_type),
            ];
            sample(MetricType::COUNTER, &pairs, n as f64)
        })
        .collect();
    f.family(
        "tern_hub_events_total",
        "Hub events published on $SYS/events/..., by severity and object type.",
        MetricType::COUNTER,
        published,
    );
    f.counter(
        "tern_hub_events_suppressed_total",
        "Hub events not published because their object was over its rate limit.",
        events.suppressed(),
    );
    let routes = hub.routes();
    if routes.is_empty() {
        return;
    }
    let names: Vec<String> = routes.iter().map(|r| r.config().name.clone()).collect();
    let per_route = |kind: MetricType, value: &RouteValue| -> Vec<Metric> {
        routes
            .iter()
            .zip(&names)
            .map(|(r, name)| sample(kind, &[("route", name)], value(r)))
            .collect()
    };
    fn load(c: &std::sync::atomic::AtomicU64) -> f64 {
        c.load(Ordering::Relaxed) as f64
    }
    f.family(
        "tern_route_queued",
        "Messages in a route's durable queue now.",
        MetricType::GAUGE,
        per_route(MetricType::GAUGE, &|r| r.queued() as f64),
    );
    let counters: [(&str, &str, &RouteValue); 4] = [
        (
            "tern_route_delivered_total",
            "Messages a route's target accepted.",
            &|r| load(&r.stats.delivered),
        ),
        (
            "tern_route_retried_total",
            "Deliveries that failed and will be tried again.",
            &|r| load(&r.stats.retried),
        ),
        (
            "tern_route_dead_lettered_total",
            "Messages sent to $SYS/routes/<name>/dead (rejected, or out of attempts).",
            &|r| load(&r.stats.dead_lettered),
        ),
        (
            "tern_route_dropped_total",
            "Messages a full route (overflow = \"drop\", or QoS 0) did not queue.",
            &|r| load(&r.stats.dropped),
        ),
    ];
    for (name, help, value) in counters {
        f.family(
            name,
            help,
            MetricType::COUNTER,
            per_route(MetricType::COUNTER, value),
        );
    }
    let latency = routes
        .iter()
        .zip(&names)
        .map(|(r, name)| {
            let l = r.stats.latency.snapshot();
            histogram_sample(
                &[("route", name)],
                &storage::LATENCY_SECONDS_BUCKETS,
                &l.buckets,
                l.nanos as f64 / 1e9,
            )
        })
        .collect();
    f.family(
        "tern_route_delivery_seconds",
        "From a message's arrival in a route's queue (or its load after a restart) to its \
         delivery, retries included.",
        MetricType::HISTOGRAM,
        latency,
    );
}

fn store_families(f: &mut Families, w: &storage::WriterStats) {
    f.counter(
        "tern_store_writes_total",
        "Write operations (puts and deletes) committed by the group-commit writer.",
        w.ops,
    );
    f.counter(
        "tern_store_requests_total",
        "Write requests (one per submit, holding one or more operations).",
        w.requests,
    );
    f.counter(
        "tern_store_groups_total",
        "Groups committed: each is one transaction, and at most one fsync.",
        w.groups,
    );
    f.counter(
        "tern_store_fsyncs_total",
        "Flushes of the store (sled flush plus fdatasync) for durable writes.",
        w.flushes,
    );
    f.counter(
        "tern_store_failed_groups_total",
        "Groups whose commit failed (disk full, I/O error).",
        w.failed_groups,
    );
    f.counter(
        "tern_store_failed_writes_total",
        "Write requests that failed: those of failed groups, and records the store refused.",
        w.failed_requests,
    );
    f.histogram(
        "tern_store_fsync_duration_seconds",
        "Time of each flush of the store.",
        &storage::FLUSH_SECONDS_BUCKETS,
        &w.flush_buckets,
        w.flush_nanos as f64 / 1e9,
    );
    f.histogram(
        "tern_store_group_size",
        "Requests per committed group (group-commit batch size).",
        &storage::GROUP_SIZE_BUCKETS,
        &w.group_size_buckets,
        w.requests as f64,
    );
}
