//! One running route: its definition and origin, its sink, its queue in
//! memory (the store holds the durable copy), the handles its worker is
//! woken and stopped with, and its counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::config::RouteConfig;
use super::queue::{Policy, RouteQueue};
use super::sink::Sink;

/// Counters of one route since start-up.
#[derive(Debug, Default)]
pub struct RouteStats {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub dropped: AtomicU64,
    /// Received (queued) to delivered.
    pub latency: storage::LatencyHistogram,
}

/// Where a route's definition comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOrigin {
    /// `[[routes]]` of this node's file: node-local.
    Config,
    /// The admin API: replicated to every node of a cluster (stored, on a
    /// node alone); the definition as given (JSON), to change `paused`.
    Api(serde_json::Value),
}

/// One running route.
pub struct Route {
    pub(super) config: RouteConfig,
    pub(super) origin: RouteOrigin,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) queue: Mutex<RouteQueue>,
    /// Wakes the worker: a message was queued, the route resumed.
    pub(super) wake: Notify,
    pub(super) stop: CancellationToken,
    pub(super) paused: AtomicBool,
    /// Number of entries, readable without the lock.
    pub(super) queued: AtomicU64,
    /// The last delivery failed (a route error event was published); the
    /// next success publishes the recovery.
    pub(super) failing: AtomicBool,
    pub stats: RouteStats,
}

impl Route {
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    pub fn origin(&self) -> &RouteOrigin {
        &self.origin
    }

    /// The route as the admin API shows it: definition without secret
    /// values, origin, target, live stats.
    pub fn to_json(&self) -> serde_json::Value {
        let mut definition = self.config.to_public_json();
        if let Some(d) = definition.as_object_mut() {
            d.insert("paused".into(), self.is_paused().into());
        }
        serde_json::json!({
            "definition": definition,
            "origin": match self.origin { RouteOrigin::Config => "config", RouteOrigin::Api(_) => "api" },
            "target": self.target(),
            "stats": self.stats_json(),
        })
    }

    /// Where it delivers (never a secret).
    pub fn target(&self) -> String {
        self.sink.target()
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Messages in its queue.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    pub(super) fn policy(&self) -> Policy {
        Policy {
            max_attempts: self.config.max_attempts,
            backoff_initial: Duration::from_millis(self.config.backoff_initial_ms),
            backoff_max: Duration::from_millis(self.config.backoff_max_ms),
        }
    }

    /// Live figures for the admin API.
    pub fn stats_json(&self) -> serde_json::Value {
        let s = &self.stats;
        serde_json::json!({
            "queued": self.queued(),
            "delivered": s.delivered.load(Ordering::Relaxed),
            "retried": s.retried.load(Ordering::Relaxed),
            "dead_lettered": s.dead_lettered.load(Ordering::Relaxed),
            "dropped": s.dropped.load(Ordering::Relaxed),
            "failing": self.failing.load(Ordering::Relaxed),
            "paused": self.is_paused(),
        })
    }
}
