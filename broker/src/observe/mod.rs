//! What a node reports about itself: a [`Snapshot`] of its counters and
//! gauges, rendered as Prometheus families ([`metrics`]) for `GET /metrics`,
//! exported over OTLP ([`otlp`]) and published as `$SYS` topics ([`sys`]).
//!
//! It owns reading: the hot path only bumps the atomics of
//! [`crate::state::Metrics`] (and the limits' held counters, the store's
//! writer stats); everything else (sessions online, subscriptions, retained
//! messages, raft state) is computed here when a scrape or a `$SYS` tick
//! asks for it. It never changes broker state, except that `sys` publishes
//! messages through the normal routing path.
//!
//! Known issue: counting sessions walks the registry under its lock; a
//! scrape of a node with a million sessions holds it for some milliseconds.

mod cluster_metrics;
pub mod metrics;
pub mod otlp;
pub mod sys;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::config::ListenerProtocol;
use crate::counters::Metrics;
use crate::state::BrokerState;

/// A bound MQTT listener and its count of open connections.
#[derive(Debug, Clone)]
pub struct ListenerGauge {
    pub protocol: ListenerProtocol,
    pub addr: SocketAddr,
    /// Sockets accepted and not closed yet (CONNECT read or not).
    pub open: Arc<AtomicUsize>,
    /// True while its accept loop runs (`/readyz`).
    pub accepting: Arc<AtomicBool>,
}

/// What the node knows of itself besides [`BrokerState`]: fixed once its
/// listeners are bound.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub started: Instant,
    pub listeners: Vec<ListenerGauge>,
}

/// Values read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub uptime_secs: u64,
    /// Sessions with a connected client.
    pub sessions_online: u64,
    /// Persistent sessions without a client.
    pub sessions_offline: u64,
    /// Subscriptions of this node's sessions.
    pub subscriptions: u64,
    pub retained: u64,
    pub connections: u64,
    pub connections_total: u64,
    pub messages_received: [u64; 3],
    pub messages_sent: [u64; 3],
    pub messages_dropped: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// QoS 1/2 copies held for clients (queued or in flight).
    pub held_messages: u64,
    /// Of these, sent and not yet acknowledged.
    pub in_flight_messages: u64,
    /// Bytes held for clients (queued copies and write buffers).
    pub queued_bytes: u64,
}

impl Snapshot {
    pub fn take(state: &BrokerState, info: &NodeInfo) -> Snapshot {
        let (mut online, mut offline) = (0, 0);
        state.registry().for_each(|session| {
            if session.is_online() {
                online += 1;
            } else if session.is_persistent() {
                offline += 1;
            }
        });
        let entries = state.router().read().len() as u64;
        // The router also holds one entry per (filter, other node) route.
        let me = state.cluster().node_id();
        let remote = state.cluster().raft().map_or(0, |raft| {
            raft.with_state(|s| {
                s.routes()
                    .values()
                    .map(|nodes| nodes.iter().filter(|n| **n != me).count() as u64)
                    .sum::<u64>()
            })
        });
        let m = &state.metrics();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            uptime_secs: info.started.elapsed().as_secs(),
            sessions_online: online,
            sessions_offline: offline,
            subscriptions: entries.saturating_sub(remote),
            retained: state.retained().read().len() as u64,
            connections: load(&m.connections_current),
            connections_total: load(&m.connections_total),
            messages_received: std::array::from_fn(|i| load(&m.messages_received[i])),
            messages_sent: std::array::from_fn(|i| load(&m.messages_sent[i])),
            messages_dropped: Metrics::total(&m.messages_dropped),
            bytes_received: load(&m.bytes_received),
            bytes_sent: load(&m.bytes_sent),
            held_messages: state.limits().held_messages(),
            in_flight_messages: state.limits().in_flight_messages(),
            queued_bytes: state.limits().held_bytes(),
        }
    }
}
