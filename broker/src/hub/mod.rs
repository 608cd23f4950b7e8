//! The IoT hub: routes that copy the messages matching a topic filter to a
//! REST endpoint, a PostgreSQL database or an S3 bucket, with a durable
//! queue per route; and hub events published on `$SYS/events/...`.
//!
//! - [`config`]: `[[routes]]` keys; [`sink`]: what a route delivers to (the
//!   [`sink::Sink`] trait, the message it is given, secrets);
//! - [`rest`], [`postgres`], [`s3`]: the targets;
//! - [`queue`]: a route's queue in memory, sans-IO (what to send next, what
//!   an outcome does); [`worker`]: the task that delivers it;
//! - [`events`]: hub events and their rate limit.
//!
//! What it never does: route a message itself. Dead letters and events go
//! to the outbox ([`Hub::take_outbox`]); the server routes them like any
//! broker message, so this module sits below `state` and `fanout`.
//!
//! Where routing happens: `Session::publish_message` calls [`Hub::admit`]
//! for each PUBLISH received from a client of this node, after `route()`.
//! Forwarded copies, `$SYS` messages, wills and dead letters never pass
//! there, so each message is routed once, by the node that received it.
//!
//! Lifecycle:
//! 1. `BrokerState::new` makes an empty [`Hub`];
//! 2. `server::run` calls [`Hub::start_routes`] with the configured routes:
//!    each sink is built (an error stops the start-up), the route's backlog
//!    is read from the store, its worker spawned;
//! 3. [`Hub::admit`] queues matching messages (store write first for QoS
//!    1/2: the publisher's guard waits for it);
//! 4. [`Hub::stop`] at shutdown stops the workers; what is left in the
//!    queues is on disk and delivered after the restart.

pub mod config;
pub mod events;
pub mod postgres;
pub mod queue;
pub mod rest;
pub mod s3;
pub mod sink;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::config::{Overflow, RouteConfig, RouteTarget};
use self::events::{Events, Severity};
use self::queue::{Policy, RouteQueue};
use self::sink::{RoutedMessage, Sink};
use crate::codec::{topic, QoS};
use crate::handle::{hold_until_durable, LazyGuard};
use crate::message::{unix_ms, Message};

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

/// One running route.
pub struct Route {
    config: RouteConfig,
    sink: Arc<dyn Sink>,
    queue: Mutex<RouteQueue>,
    /// Wakes the worker: a message was queued, the route resumed.
    wake: Notify,
    stop: CancellationToken,
    paused: AtomicBool,
    /// Number of entries, readable without the lock.
    queued: AtomicU64,
    /// The last delivery failed (a route error event was published); the
    /// next success publishes the recovery.
    failing: AtomicBool,
    pub stats: RouteStats,
}

impl Route {
    pub fn config(&self) -> &RouteConfig {
        &self.config
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

    fn policy(&self) -> Policy {
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

/// The node's routes and event publisher.
pub struct Hub {
    node_id: u64,
    writer: storage::Writer,
    routes: RwLock<BTreeMap<String, Arc<Route>>>,
    outbox: UnboundedSender<Arc<Message>>,
    outbox_rx: Mutex<Option<UnboundedReceiver<Arc<Message>>>>,
    events: Arc<Events>,
    /// Longest hold of a publisher's acknowledgement by a full route.
    backpressure_wait: Duration,
}

/// Builds the sink of a route; the error says why it cannot run.
pub fn build_sink(config: &RouteConfig, node_id: u64) -> Result<Arc<dyn Sink>, String> {
    let sink: Arc<dyn Sink> = match &config.target {
        RouteTarget::Rest(rest) => Arc::new(rest::RestSink::new(rest, node_id, &config.name)?),
        RouteTarget::Postgres(pg) => Arc::new(postgres::PostgresSink::new(pg)?),
        RouteTarget::S3(s3) => Arc::new(s3::S3Sink::new(s3)?),
    };
    Ok(sink)
}

impl Hub {
    /// A hub without routes; `writer` takes the queue writes.
    pub fn new(node_id: u64, writer: storage::Writer, backpressure_wait: Duration) -> Hub {
        let (outbox, rx) = tokio::sync::mpsc::unbounded_channel();
        Hub {
            node_id,
            writer,
            routes: RwLock::new(BTreeMap::new()),
            events: Arc::new(Events::new(outbox.clone())),
            outbox,
            outbox_rx: Mutex::new(Some(rx)),
            backpressure_wait,
        }
    }

    /// The event publisher.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Dead letters and events to route, once: the server's outbox task
    /// takes it at start-up.
    pub fn take_outbox(&self) -> Option<UnboundedReceiver<Arc<Message>>> {
        self.outbox_rx.lock().take()
    }

    /// Every route, by name.
    pub fn routes(&self) -> Vec<Arc<Route>> {
        self.routes.read().values().cloned().collect()
    }

    pub fn route(&self, name: &str) -> Option<Arc<Route>> {
        self.routes.read().get(name).cloned()
    }

    /// Starts each route of `configs` (building its sink, loading its
    /// backlog from `store`, spawning its worker). Must run inside a tokio
    /// runtime. An error names the route.
    pub fn start_routes(
        &self,
        configs: &[RouteConfig],
        store: &storage::Store,
    ) -> Result<(), String> {
        for config in configs {
            self.start_route(config.clone(), store)?;
        }
        Ok(())
    }

    /// Starts one route; refused if the name is taken.
    pub fn start_route(&self, config: RouteConfig, store: &storage::Store) -> Result<(), String> {
        let name = config.name.clone();
        if self.routes.read().contains_key(&name) {
            return Err(format!("route `{name}` exists"));
        }
        let sink = build_sink(&config, self.node_id).map_err(|e| format!("route `{name}`: {e}"))?;
        let loaded = store
            .load_route_queue(&name)
            .map_err(|e| format!("route `{name}`: cannot read its queue: {e}"))?;
        let backlog: Vec<RoutedMessage> = loaded
            .into_iter()
            .map(|(seq, r)| RoutedMessage {
                seq,
                uid: r.uid,
                topic: r.message.topic,
                payload: r.message.payload,
                qos: r.message.qos,
                retain: r.message.retain,
                client_id: r.client_id,
                timestamp_ms: r.received_at_ms,
            })
            .collect();
        // Seqs must not repeat across restarts (they make the idempotency
        // key): start above the backlog and above the clock, in units of
        // 2^-20 ms, which no route outpaces.
        let first_seq = unix_ms() << 20;
        if !backlog.is_empty() {
            tracing::info!(route = %name, messages = backlog.len(), "route backlog loaded");
        }
        let queued = backlog.len() as u64;
        let route = Arc::new(Route {
            paused: AtomicBool::new(config.paused),
            config,
            sink,
            queue: Mutex::new(RouteQueue::new(first_seq, backlog, Instant::now())),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            queued: AtomicU64::new(queued),
            failing: AtomicBool::new(false),
            stats: RouteStats::default(),
        });
        tracing::info!(route = %name, target = %route.target(), topic = %route.config.topic, "route started");
        self.routes.write().insert(name, route.clone());
        tokio::spawn(worker::run(
            route,
            self.writer.clone(),
            self.outbox.clone(),
            self.events.clone(),
        ));
        Ok(())
    }

    /// Stops a route and drops its queue (memory and store). False if there
    /// is no such route.
    pub fn delete_route(&self, name: &str) -> bool {
        let Some(route) = self.routes.write().remove(name) else {
            return false;
        };
        route.stop.cancel();
        let mut queue = route.queue.lock();
        *queue = RouteQueue::default();
        self.writer.submit(
            vec![storage::WriteOp::DeleteRouteQueue {
                route: name.to_owned(),
            }],
            None,
        );
        route.queued.store(0, Ordering::Relaxed);
        true
    }

    /// Pauses or resumes a route; false if there is no such route.
    pub fn set_paused(&self, name: &str, paused: bool) -> bool {
        let Some(route) = self.route(name) else {
            return false;
        };
        route.paused.store(paused, Ordering::Relaxed);
        route.wake.notify_one();
        true
    }

    /// Stops every worker (shutdown): queued messages stay in the store.
    pub fn stop(&self) {
        for route in self.routes.read().values() {
            route.stop.cancel();
        }
    }

    /// Queues `message`, received from client `client_id` on this node, on
    /// every route whose filter matches it. For QoS 1/2 the store write
    /// holds a clone of the publisher's guard (PUBACK / PUBREC wait for it
    /// to be durable), and a route over `max_queued` with
    /// `overflow = "backpressure"` keeps one until it drains. Returns how
    /// many routes took it.
    pub fn admit(&self, message: &Arc<Message>, client_id: &str, guard: &mut LazyGuard) -> usize {
        let routes = self.routes.read();
        if routes.is_empty() {
            return 0;
        }
        let mut taken = 0;
        for route in routes.values() {
            // [MQTT-4.7.2-1] a `$` topic matches only a filter starting with `$`
            if topic::matches(&route.config.topic, &message.topic)
                && self.admit_one(route, message, client_id, guard)
            {
                taken += 1;
            }
        }
        taken
    }

    fn admit_one(
        &self,
        route: &Arc<Route>,
        message: &Arc<Message>,
        client_id: &str,
        guard: &mut LazyGuard,
    ) -> bool {
        let config = &route.config;
        let now_ms = unix_ms();
        let mut queue = route.queue.lock();
        let full = queue.len() >= config.max_queued;
        if full && (config.overflow == Overflow::Drop || message.qos == QoS::AtMostOnce) {
            drop(queue);
            route.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.events.emit(
                Severity::Warning,
                "route",
                &config.name,
                "route queue full; message dropped",
                serde_json::json!({
                    "topic": &*message.topic,
                    "client_id": client_id,
                    "max_queued": config.max_queued,
                }),
            );
            return false;
        }
        let seq = queue.take_seq();
        let qos = message.qos as u8;
        let record = storage::RouteRecord {
            uid: message.uid,
            client_id: client_id.to_owned(),
            received_at_ms: now_ms,
            message: storage::StoredMessage {
                topic: message.topic.to_string(),
                payload: message.payload.clone(),
                qos,
                retain: message.retain,
                properties: Bytes::new(),
                expires_at_ms: None,
            },
        };
        let durable = if message.qos > QoS::AtMostOnce {
            hold_until_durable(guard.get())
        } else {
            None
        };
        // Submitted under the queue's lock: the worker's delete of this seq
        // is submitted after it, so the writer applies them in that order.
        self.writer.submit(
            vec![storage::WriteOp::PutRouteMessage {
                route: config.name.clone(),
                seq,
                record,
            }],
            durable,
        );
        queue.push(
            RoutedMessage {
                seq,
                uid: message.uid,
                topic: message.topic.to_string(),
                payload: message.payload.clone(),
                qos,
                retain: message.retain,
                client_id: client_id.to_owned(),
                timestamp_ms: now_ms,
            },
            Instant::now(),
        );
        if full && message.qos > QoS::AtMostOnce {
            if let Some(g) = guard.get().filter(|g| g.answers_publisher()) {
                queue.hold(g, Instant::now() + self.backpressure_wait);
            }
        }
        route.queued.store(queue.len() as u64, Ordering::Relaxed);
        drop(queue);
        route.wake.notify_one();
        true
    }
}
