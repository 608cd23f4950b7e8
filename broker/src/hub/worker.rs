//! The task that delivers one route's queue: it asks the queue (sans-IO,
//! `queue.rs`) for batches, calls the sink with at most `inflight` batches
//! in flight, applies the outcomes, deletes what is done from the store and
//! hands dead letters and events to the outbox.
//!
//! Lifecycle: spawned by `Hub::start_route`; runs until the route's `stop`
//! token is cancelled (delete, shutdown). Calls in flight then are dropped:
//! their messages are still in the store, and are delivered again after a
//! restart (at least once).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc::UnboundedSender;

use super::events::{rfc3339, Events, Severity};
use super::queue::{Completed, Entry};
use super::sink::{Outcome, RoutedMessage};
use super::Route;
use crate::codec::QoS;
use crate::message::{Message, BROKER_ORIGIN};

/// Runs the route until stopped.
pub(super) async fn run(
    route: Arc<Route>,
    writer: storage::Writer,
    outbox: UnboundedSender<Arc<Message>>,
    events: Arc<Events>,
) {
    let policy = route.policy();
    let max_batch = route.sink.max_batch();
    let mut running = FuturesUnordered::new();
    loop {
        let now = Instant::now();
        let (batches, wake_at, released) = {
            let mut queue = route.queue.lock();
            let released = queue.release_holds(now, route.config.max_queued);
            let batches = if route.is_paused() {
                Vec::new()
            } else {
                let slots = route.config.inflight.saturating_sub(running.len());
                queue.take_batches(max_batch, slots, now)
            };
            (batches, queue.next_wakeup(), released)
        };
        // dropping a hold sends the publisher's acknowledgement
        drop(released);
        for batch in batches {
            let sink = route.sink.clone();
            running.push(async move {
                let outcomes = sink.deliver(&batch).await;
                (batch, outcomes)
            });
        }
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = route.stop.cancelled() => break,
            Some((batch, outcomes)) = running.next(), if !running.is_empty() => {
                finish(&route, &writer, &outbox, &events, &batch, outcomes, &policy);
            }
            _ = route.wake.notified() => {}
            _ = sleep => {}
        }
    }
}

/// Applies a batch's outcomes: store deletes, metrics, dead letters, route
/// error and recovery events.
fn finish(
    route: &Route,
    writer: &storage::Writer,
    outbox: &UnboundedSender<Arc<Message>>,
    events: &Events,
    batch: &[RoutedMessage],
    outcomes: Vec<Outcome>,
    policy: &super::queue::Policy,
) {
    let seqs: Vec<u64> = batch.iter().map(|m| m.seq).collect();
    let now = Instant::now();
    let (done, queued): (Completed, usize) = {
        let mut queue = route.queue.lock();
        let done = queue.complete(&seqs, outcomes, policy, now);
        (done, queue.len())
    };
    route.queued.store(queued as u64, Ordering::Relaxed);
    let name = &route.config.name;
    let stats = &route.stats;
    let mut deletes = Vec::with_capacity(done.delivered.len() + done.dead.len());
    for e in &done.delivered {
        stats
            .latency
            .observe(now.saturating_duration_since(e.queued_at));
        deletes.push(storage::WriteOp::DeleteRouteMessage {
            route: name.clone(),
            seq: e.msg.seq,
        });
    }
    stats
        .delivered
        .fetch_add(done.delivered.len() as u64, Ordering::Relaxed);
    stats.retried.fetch_add(done.retried, Ordering::Relaxed);
    for (entry, error) in &done.dead {
        stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(route = %name, topic = %entry.msg.topic, attempts = entry.attempts,
            %error, "message dead-lettered");
        let _ = outbox.send(dead_letter(name, entry, error));
        deletes.push(storage::WriteOp::DeleteRouteMessage {
            route: name.clone(),
            seq: entry.msg.seq,
        });
    }
    if !deletes.is_empty() {
        writer.submit(deletes, None);
    }
    if let Some(error) = &done.retry_error {
        if !route.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(route = %name, %error, "route delivery failing; retrying");
            events.emit(
                Severity::Error,
                "route",
                name,
                "route delivery failed; messages wait and are retried",
                serde_json::json!({
                    "target": route.target(),
                    "error": error,
                    "queued": queued,
                }),
            );
        }
    } else if !done.delivered.is_empty() && route.failing.swap(false, Ordering::Relaxed) {
        tracing::info!(route = %name, "route delivers again");
        events.emit(
            Severity::Info,
            "route",
            name,
            "route recovered; delivering again",
            serde_json::json!({ "target": route.target(), "queued": queued }),
        );
    }
}

/// The dead letter of `entry`, on `$SYS/routes/<name>/dead` at QoS 1.
fn dead_letter(route: &str, entry: &Entry, error: &str) -> Arc<Message> {
    let m = &entry.msg;
    let body = serde_json::json!({
        "route": route,
        "topic": m.topic,
        "payload": base64::engine::general_purpose::STANDARD.encode(&m.payload),
        "qos": m.qos,
        "client_id": m.client_id,
        "timestamp": rfc3339(m.timestamp_ms),
        "attempts": entry.attempts,
        "error": error,
    });
    Arc::new(Message {
        topic: format!("$SYS/routes/{route}/dead").into(),
        payload: Bytes::from(body.to_string()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
        expires_at_ms: None,
        origin: BROKER_ORIGIN,
        received_at: None,
        uid: crate::message::next_uid(),
    })
}
