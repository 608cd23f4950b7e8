//! Hub events: what went wrong (or right again) with a route, a client, the
//! store or the cluster, published by the broker as JSON on
//! `$SYS/events/<severity>/<object_type>/<object_id>`:
//!
//! ```json
//! {"time": "2026-12-05T07:30:00.123Z", "severity": "error",
//!  "object_type": "route", "object_id": "to-api",
//!  "msg": "delivery failed; retrying", "details": {"error": "HTTP 503"}}
//! ```
//!
//! Rate limit: a token bucket per object (`object_type`, `object_id`) of
//! [`BURST`] events refilled at [`PER_SECOND`]; an event that finds the
//! bucket empty is counted, not published, and the next one published for
//! that object says how many were suppressed (`details.suppressed`). So a
//! client that fails to log in in a loop costs a few events a second.
//!
//! Events are queued to the hub's outbox (`Hub::take_outbox`) and routed by
//! the server like any broker message: normal `$SYS` ACL rules apply to
//! subscribers. This module never blocks and never fails its caller.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc::UnboundedSender;

use crate::codec::QoS;
use crate::message::{unix_ms, Message, BROKER_ORIGIN};

/// Events an object may publish at once.
pub const BURST: f64 = 5.0;
/// Events an object may publish per second, on average.
pub const PER_SECOND: f64 = 1.0;
/// Buckets kept before idle ones are forgotten.
const MAX_BUCKETS: usize = 10_000;

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// What an event is about: `route`, `client`, `store`, `cluster`, `node`.
pub type ObjectType = &'static str;

struct Bucket {
    tokens: f64,
    at: Instant,
    suppressed: u64,
}

/// The node's event publisher.
pub struct Events {
    outbox: UnboundedSender<Arc<Message>>,
    buckets: Mutex<HashMap<(ObjectType, String), Bucket>>,
    /// Published events by (severity, object type).
    published: Mutex<HashMap<(Severity, ObjectType), u64>>,
    suppressed: AtomicU64,
}

impl Events {
    pub(crate) fn new(outbox: UnboundedSender<Arc<Message>>) -> Events {
        Events {
            outbox,
            buckets: Mutex::new(HashMap::new()),
            published: Mutex::new(HashMap::new()),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Publishes an event unless its object is over its rate.
    pub fn emit(
        &self,
        severity: Severity,
        object_type: ObjectType,
        object_id: &str,
        msg: &str,
        details: serde_json::Value,
    ) {
        let now = Instant::now();
        let suppressed = {
            let mut buckets = self.buckets.lock();
            if buckets.len() >= MAX_BUCKETS {
                // full buckets carry no state worth keeping
                buckets.retain(|_, b| b.suppressed > 0 || b.tokens + refill(b.at, now) < BURST);
            }
            let bucket = buckets
                .entry((object_type, object_id.to_owned()))
                .or_insert(Bucket {
                    tokens: BURST,
                    at: now,
                    suppressed: 0,
                });
            bucket.tokens = (bucket.tokens + refill(bucket.at, now)).min(BURST);
            bucket.at = now;
            if bucket.tokens < 1.0 {
                bucket.suppressed += 1;
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            bucket.tokens -= 1.0;
            std::mem::take(&mut bucket.suppressed)
        };
        let mut details = match details {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                let mut map = serde_json::Map::new();
                map.insert("value".into(), other);
                map
            }
        };
        if suppressed > 0 {
            details.insert("suppressed".into(), suppressed.into());
        }
        let body = serde_json::json!({
            "time": rfc3339(unix_ms()),
            "severity": severity.as_str(),
            "object_type": object_type,
            "object_id": object_id,
            "msg": msg,
            "details": details,
        });
        *self
            .published
            .lock()
            .entry((severity, object_type))
            .or_default() += 1;
        let topic = format!(
            "$SYS/events/{}/{}/{}",
            severity.as_str(),
            object_type,
            topic_level(object_id)
        );
        let _ = self.outbox.send(Arc::new(Message {
            topic: topic.into(),
            payload: Bytes::from(body.to_string()),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
            expires_at_ms: None,
            origin: BROKER_ORIGIN,
            received_at: None,
            uid: 0,
        }));
    }

    /// Published events by (severity, object type), for `/metrics`.
    pub fn published(&self) -> Vec<(Severity, ObjectType, u64)> {
        let mut out: Vec<_> = self
            .published
            .lock()
            .iter()
            .map(|((s, t), n)| (*s, *t, *n))
            .collect();
        out.sort();
        out
    }

    /// Events not published because of the rate limit.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

fn refill(at: Instant, now: Instant) -> f64 {
    now.saturating_duration_since(at).as_secs_f64() * PER_SECOND
}

/// An object id as one topic level: `/`, `+`, `#` and U+0000 become `_`
/// (client ids may hold them; the id itself is in the JSON).
pub fn topic_level(id: &str) -> String {
    if id.is_empty() {
        return "_".into();
    }
    id.chars()
        .map(|c| match c {
            '/' | '+' | '#' | '\0' => '_',
            c => c,
        })
        .collect()
}

/// Unix ms as RFC 3339 UTC with milliseconds: `2026-12-05T07:30:00.123Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil_from_days (Howard Hinnant's algorithm), days since 1970-01-01
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_920_400_123), "2025-12-05T07:40:00.123Z");
    }

    #[test]
    fn object_ids_become_one_topic_level() {
        assert_eq!(topic_level("a/b+#"), "a_b__");
        assert_eq!(topic_level(""), "_");
    }

    #[test]
    fn events_past_the_burst_are_suppressed_and_reported_in_the_next() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let events = Events::new(tx);
        for _ in 0..(BURST as usize + 3) {
            events.emit(
                Severity::Warning,
                "client",
                "c/1",
                "refused",
                serde_json::json!({}),
            );
        }
        assert_eq!(events.suppressed(), 3);
        let mut got = Vec::new();
        while let Ok(m) = rx.try_recv() {
            got.push(m);
        }
        assert_eq!(got.len(), BURST as usize);
        assert_eq!(got[0].topic, "$SYS/events/warning/client/c_1");
        let body: serde_json::Value = serde_json::from_slice(&got[0].payload).unwrap();
        assert_eq!(body["object_id"], "c/1");
        assert_eq!(body["severity"], "warning");
        // another object has its own bucket
        events.emit(
            Severity::Error,
            "route",
            "r",
            "down",
            serde_json::json!({"e": 1}),
        );
        assert!(rx.try_recv().is_ok());
        assert_eq!(
            events.published(),
            [
                (Severity::Warning, "client", 5),
                (Severity::Error, "route", 1)
            ]
        );
        // once refilled, the next event carries the count
        {
            let mut buckets = events.buckets.lock();
            let b = buckets.get_mut(&("client", "c/1".to_owned())).unwrap();
            b.at -= std::time::Duration::from_secs(2);
        }
        events.emit(
            Severity::Warning,
            "client",
            "c/1",
            "refused",
            serde_json::Value::Null,
        );
        let body: serde_json::Value =
            serde_json::from_slice(&rx.try_recv().unwrap().payload).unwrap();
        assert_eq!(body["details"]["suppressed"], 3);
    }
}
