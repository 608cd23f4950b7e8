//! The IoT hub: routes that copy the messages matching a topic filter to a
//! REST endpoint, a PostgreSQL database or an S3 bucket, with a durable
//! queue per route; and hub events published on `$SYS/events/...`.
//!
//! - [`config`]: `[[routes]]` keys; [`sink`]: what a route delivers to (the
//!   [`sink::Sink`] trait, the message it is given, secrets);
//! - [`rest`], [`postgres`], [`s3`]: the targets;
//! - `route.rs`: one running route ([`Route`]); [`queue`]: its queue in
//!   memory, sans-IO (what to send next, what an outcome does); `worker.rs`:
//!   the task that delivers it;
//! - [`events`]: hub events and their rate limit.
//!
//! What it never does: route a message itself. Dead letters and events go
//! to the outbox ([`Hub::take_outbox`]); the server routes them like any
//! broker message, so this module sits below `state` and `fanout`.
//!
//! Where routing happens: `Session::publish_message` calls [`Hub::admit`]
//! for each PUBLISH received from a client of this node (and each will its
//! sessions publish), after `route()`. Forwarded copies, `$SYS` messages
//! and dead letters never pass there, so each message is routed once, by
//! the node that received it.
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
//!
//! Lock order: `lifecycle` (start, change, stop of a route) -> `routes` ->
//! a route's `queue` -> the events' buckets. Admission takes `routes`
//! (read) and the queues, never `lifecycle`.

pub mod config;
pub mod events;
pub mod postgres;
pub mod queue;
pub mod rest;
mod route;
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
use self::queue::RouteQueue;
pub use self::route::{Route, RouteOrigin, RouteStats};
use self::sink::{RoutedMessage, Sink};
use crate::codec::QoS;
use crate::handle::{hold_until_durable, LazyGuard};
use crate::message::{unix_ms, Message};
use crate::router::SubscriptionTable;

/// The running routes: by name, and by filter for matching.
#[derive(Default)]
struct Routes {
    by_name: BTreeMap<String, Arc<Route>>,
    /// Route name -> route, under its topic filter.
    filters: SubscriptionTable<String, Arc<Route>>,
}

/// The node's routes and event publisher.
pub struct Hub {
    node_id: u64,
    writer: storage::Writer,
    routes: RwLock<Routes>,
    /// Held while a route starts, changes or stops (never while a message
    /// is admitted): two starts of one name (the admin API's call and the
    /// cluster's event) cannot both run it.
    lifecycle: Mutex<()>,
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
            routes: RwLock::new(Routes::default()),
            lifecycle: Mutex::new(()),
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
        self.routes.read().by_name.values().cloned().collect()
    }

    pub fn route(&self, name: &str) -> Option<Arc<Route>> {
        self.routes.read().by_name.get(name).cloned()
    }

    /// Starts each route of `configs` (building its sink, loading its
    /// backlog from `store`, spawning its worker). Must run inside a tokio
    /// runtime. An error names the route.
    pub fn start_routes(
        &self,
        configs: &[RouteConfig],
        store: &storage::Store,
    ) -> Result<(), String> {
        let _lifecycle = self.lifecycle.lock();
        for config in configs {
            self.start_route_locked(config.clone(), RouteOrigin::Config, store)?;
        }
        Ok(())
    }

    /// Applies a route made through the admin API (`Some` definition) or
    /// its deletion (`None`), as the store or the replicated state says:
    /// starts it, changes its `paused`, or stops it and drops its queue.
    /// Idempotent. A definition this node cannot run (bad JSON, a secret it
    /// cannot read, a name its file uses) is an error event, not a panic.
    pub fn apply_api_route(
        &self,
        name: &str,
        definition: Option<&str>,
        store: &storage::Store,
    ) -> Result<(), String> {
        let _lifecycle = self.lifecycle.lock();
        let existing = self.route(name);
        let Some(definition) = definition else {
            if existing.is_some_and(|r| matches!(r.origin, RouteOrigin::Api(_))) {
                self.delete_route_locked(name);
            }
            return Ok(());
        };
        let result = serde_json::from_str::<serde_json::Value>(definition)
            .map_err(|e| format!("route `{name}`: definition is not JSON: {e}"))
            .and_then(|json| {
                let config = RouteConfig::from_json(&json).map_err(|e| e.to_string())?;
                match existing {
                    Some(route) if matches!(route.origin, RouteOrigin::Config) => Err(format!(
                        "route `{name}`: this node's configuration file defines a route of that name"
                    )),
                    Some(route) => {
                        route.paused.store(config.paused, Ordering::Relaxed);
                        route.wake.notify_one();
                        Ok(())
                    }
                    None => self.start_route_locked(config, RouteOrigin::Api(json), store),
                }
            });
        if let Err(e) = &result {
            tracing::error!(route = %name, error = %e, "route from the admin API not started");
            self.events.emit(
                Severity::Error,
                "route",
                name,
                "route from the admin API cannot run on this node",
                serde_json::json!({ "error": e }),
            );
        }
        result
    }

    /// Starts one route; refused if the name is taken.
    pub fn start_route(
        &self,
        config: RouteConfig,
        origin: RouteOrigin,
        store: &storage::Store,
    ) -> Result<(), String> {
        let _lifecycle = self.lifecycle.lock();
        self.start_route_locked(config, origin, store)
    }

    fn start_route_locked(
        &self,
        config: RouteConfig,
        origin: RouteOrigin,
        store: &storage::Store,
    ) -> Result<(), String> {
        let name = config.name.clone();
        if self.routes.read().by_name.contains_key(&name) {
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
            origin,
            sink,
            queue: Mutex::new(RouteQueue::new(first_seq, backlog, Instant::now())),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            queued: AtomicU64::new(queued),
            failing: AtomicBool::new(false),
            stats: RouteStats::default(),
        });
        tracing::info!(route = %name, target = %route.target(), topic = %route.config.topic, "route started");
        {
            let mut routes = self.routes.write();
            let filter = route.config.topic.clone();
            routes
                .filters
                .subscribe(&filter, name.clone(), route.clone());
            routes.by_name.insert(name, route.clone());
        }
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
        let _lifecycle = self.lifecycle.lock();
        self.delete_route_locked(name)
    }

    fn delete_route_locked(&self, name: &str) -> bool {
        let route = {
            let mut routes = self.routes.write();
            let Some(route) = routes.by_name.remove(name) else {
                return false;
            };
            routes
                .filters
                .unsubscribe(&route.config.topic, &route.config.name);
            route
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
        for route in self.routes.read().by_name.values() {
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
        if routes.by_name.is_empty() {
            return 0;
        }
        let mut taken = 0;
        // the router's trie: [MQTT-4.7.2-1] a `$` topic matches only a
        // filter starting with `$`
        routes.filters.matches(&message.topic, |_, route| {
            if self.admit_one(route, message, client_id, guard) {
                taken += 1;
            }
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(topic: &str, qos: QoS) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"p"),
            qos,
            retain: false,
            properties: Default::default(),
            expires_at_ms: None,
            origin: 7,
            received_at: None,
            uid: 42,
        })
    }

    fn route(name: &str, topic: &str, extra: serde_json::Value) -> RouteConfig {
        let mut json = serde_json::json!({
            "name": name, "topic": topic, "type": "rest",
            "url": "http://127.0.0.1:9/", "paused": true,
        });
        if let (Some(j), serde_json::Value::Object(extra)) = (json.as_object_mut(), extra) {
            j.extend(extra);
        }
        RouteConfig::from_json(&json).unwrap()
    }

    #[tokio::test]
    async fn admission_matches_filters_with_the_dollar_rule_and_writes_each_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = storage::Store::open(&storage::StoreConfig::new(dir.path())).unwrap();
        let hub = Hub::new(3, store.writer(), Duration::from_secs(5));
        let routes = [
            route("all", "#", serde_json::json!({})),
            route("sys", "$SYS/#", serde_json::json!({})),
            route(
                "one",
                "a/+",
                serde_json::json!({ "max_queued": 1, "overflow": "drop" }),
            ),
        ];
        hub.start_routes(&routes, &store).unwrap();
        let mut none = LazyGuard::none();
        assert_eq!(
            hub.admit(&message("a/b", QoS::AtLeastOnce), "c", &mut none),
            2
        );
        assert_eq!(
            hub.admit(&message("$SYS/x", QoS::AtMostOnce), "c", &mut none),
            1
        );
        // `one` is full and drops
        assert_eq!(
            hub.admit(&message("a/c", QoS::AtLeastOnce), "c", &mut none),
            1
        );
        let queued: Vec<(String, u64)> = hub
            .routes()
            .iter()
            .map(|r| (r.config().name.clone(), r.queued()))
            .collect();
        assert_eq!(
            queued,
            [("all".into(), 2), ("one".into(), 1), ("sys".into(), 1)]
        );
        assert_eq!(
            hub.route("one")
                .unwrap()
                .stats
                .dropped
                .load(Ordering::Relaxed),
            1
        );
        // the writer applies in order: once a durable write after them is
        // done, they are on disk
        let (tx, rx) = tokio::sync::oneshot::channel();
        store.writer().submit(
            Vec::new(),
            Some(Box::new(move |r: storage::Result<()>| {
                let _ = tx.send(r);
            })),
        );
        rx.await.unwrap().unwrap();
        let stored = store.load_route_queue("all").unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].1.message.topic, "a/b");
        assert_eq!((stored[0].1.uid, stored[0].1.client_id.as_str()), (42, "c"));
        assert!(stored[0].0 < stored[1].0, "seqs increase");
        // deleting a route drops its queue
        assert!(hub.delete_route("all"));
        assert!(!hub.delete_route("all"));
        hub.stop();
    }
}
