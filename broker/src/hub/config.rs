//! `[[routes]]`: what a route copies (a topic filter), where to (its
//! `type` and that type's keys) and how its queue behaves.
//!
//! ```toml
//! [[routes]]
//! name = "to-api"
//! topic = "plant/+/temp"
//! type = "rest"
//! url = "http://127.0.0.1:8080/ingest"
//! max_queued = 100000
//! overflow = "backpressure"   # or "drop"
//! ```
//!
//! The same keys, as JSON, create a route through the admin API
//! (`RouteConfig::from_json`). Errors name the route and the key.

use serde::{Deserialize, Serialize};

use super::postgres::PostgresRoute;
use super::rest::RestRoute;
use super::s3::S3Route;
use super::sink::Secret;
use crate::codec::topic::validate_topic_filter;

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RouteConfig {
    /// Unique on the node (and in the cluster for routes made through the
    /// admin API): `[A-Za-z0-9_-]+`. Names the queue, the metrics, the
    /// events and the dead letter topic.
    pub name: String,
    /// Topic filter; `+` and `#` allowed, shared subscriptions not. A
    /// `$` topic matches only a filter starting with `$` [MQTT-4.7.2-1].
    pub topic: String,
    /// The target and its keys (`type = "rest" | "postgres" | "s3"`).
    #[serde(flatten)]
    pub target: RouteTarget,
    /// Most messages in the queue before `overflow` applies.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// What happens to a message past `max_queued`.
    #[serde(default)]
    pub overflow: Overflow,
    /// Deliveries tried (the first included) before a message goes to the
    /// dead letter topic.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Most calls to the target in flight at once.
    #[serde(default = "default_inflight")]
    pub inflight: usize,
    /// First wait after a failed delivery, in ms; doubled per failure.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest wait between two tries, in ms.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Messages are queued but not delivered until the route is resumed.
    #[serde(default)]
    pub paused: bool,
}

/// The target of a route, chosen by the `type` key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RouteTarget {
    Rest(RestRoute),
    Postgres(PostgresRoute),
    S3(S3Route),
}

impl RouteTarget {
    /// The `type` key's value.
    pub fn kind(&self) -> &'static str {
        match self {
            RouteTarget::Rest(_) => "rest",
            RouteTarget::Postgres(_) => "postgres",
            RouteTarget::S3(_) => "s3",
        }
    }
}

/// What a route does with a message that finds its queue full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// The message is queued, and the publisher's PUBACK / PUBREC waits
    /// until the queue is below `max_queued` again (at most
    /// `limits.backpressure_wait_secs`), as for a congested subscriber.
    #[default]
    Backpressure,
    /// The message is dropped, with a hub event and a metric.
    Drop,
}

fn default_max_queued() -> usize {
    100_000
}
fn default_max_attempts() -> u32 {
    10
}
fn default_inflight() -> usize {
    8
}
fn default_backoff_initial_ms() -> u64 {
    100
}
fn default_backoff_max_ms() -> u64 {
    30_000
}

/// A route definition that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteConfigError {
    /// The definition does not parse: unknown key, missing key, wrong type.
    #[error("route {route}: {message}")]
    Parse { route: String, message: String },
    /// A key's value is out of its range.
    #[error("route `{route}`: key `{key}` = {value}: {reason}")]
    Invalid {
        route: String,
        key: &'static str,
        value: String,
        reason: String,
    },
    /// Two routes have the same name.
    #[error("route `{0}` is defined twice")]
    Duplicate(String),
}

impl RouteConfig {
    /// Parses a route from the admin API's JSON (the TOML keys) and checks it.
    pub fn from_json(value: &serde_json::Value) -> Result<RouteConfig, RouteConfigError> {
        let route = value
            .get("name")
            .and_then(|n| n.as_str())
            .map_or_else(|| "(no name)".to_owned(), |n| format!("`{n}`"));
        let config: RouteConfig =
            serde_json::from_value(value.clone()).map_err(|e| RouteConfigError::Parse {
                route,
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone do not.
    pub fn validate(&self) -> Result<(), RouteConfigError> {
        let invalid = |key: &'static str, value: String, reason: String| {
            Err(RouteConfigError::Invalid {
                route: self.name.clone(),
                key,
                value,
                reason,
            })
        };
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return invalid(
                "name",
                format!("{:?}", self.name),
                "must be one or more of A-Z a-z 0-9 _ -".into(),
            );
        }
        if let Err(e) = validate_topic_filter(&self.topic) {
            return invalid("topic", format!("{:?}", self.topic), e.to_string());
        }
        if self.topic.starts_with("$share/") {
            return invalid(
                "topic",
                format!("{:?}", self.topic),
                "a shared subscription is not a route filter".into(),
            );
        }
        let at_least_one = [
            ("max_queued", self.max_queued as u64),
            ("max_attempts", u64::from(self.max_attempts)),
            ("inflight", self.inflight as u64),
            ("backoff_initial_ms", self.backoff_initial_ms),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return invalid(key, "0".into(), "must be at least 1".into());
            }
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            return invalid(
                "backoff_max_ms",
                self.backoff_max_ms.to_string(),
                format!(
                    "must be at least backoff_initial_ms ({})",
                    self.backoff_initial_ms
                ),
            );
        }
        if let RouteTarget::Rest(rest) = &self.target {
            if let Err(reason) = rest.validate() {
                return invalid("url", format!("{:?}", rest.url), reason);
            }
        }
        Ok(())
    }

    /// The definition as the admin API shows it: every key, secrets as
    /// where they come from (`{"file": ..}`, `{"env": ..}`) or `"<secret>"`.
    pub fn to_public_json(&self) -> serde_json::Value {
        let target = match &self.target {
            RouteTarget::Rest(rest) => rest.to_public_json(),
            RouteTarget::Postgres(pg) => serde_json::json!({
                "url": redact_url(&pg.url),
                "query": pg.query,
                "pool_size": pg.pool_size,
                "max_batch": pg.max_batch,
                "timeout_ms": pg.timeout_ms,
                "password": pg.password.as_ref().map(public_secret),
            }),
            RouteTarget::S3(s3) => serde_json::json!({
                "bucket": s3.bucket,
                "region": s3.region,
                "endpoint": s3.endpoint,
                "prefix": s3.prefix,
                "strategy": match s3.strategy {
                    super::s3::S3Strategy::PerTopic => "per_topic",
                    super::s3::S3Strategy::PerMessage => "per_message",
                },
                "max_batch": s3.max_batch,
                "concurrency": s3.concurrency,
                "timeout_ms": s3.timeout_ms,
                "access_key_id": s3.access_key_id.as_ref().map(public_secret),
                "secret_access_key": s3.secret_access_key.as_ref().map(public_secret),
            }),
        };
        let mut out = serde_json::json!({
            "name": self.name,
            "topic": self.topic,
            "type": self.target.kind(),
            "max_queued": self.max_queued,
            "overflow": self.overflow,
            "max_attempts": self.max_attempts,
            "inflight": self.inflight,
            "backoff_initial_ms": self.backoff_initial_ms,
            "backoff_max_ms": self.backoff_max_ms,
            "paused": self.paused,
        });
        if let (Some(out), serde_json::Value::Object(target)) = (out.as_object_mut(), target) {
            out.extend(target);
        }
        out
    }
}

/// A secret as the admin API shows it: where it is read from, never the
/// value.
pub(crate) fn public_secret(secret: &Secret) -> serde_json::Value {
    match secret {
        Secret::Plain(_) => serde_json::json!("<secret>"),
        Secret::File { file } => serde_json::json!({ "file": file }),
        Secret::Env { env } => serde_json::json!({ "env": env }),
    }
}

/// A URL with any password replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<unparsable url>".into(),
    }
}

/// Checks a list of routes (from the file): each one, and unique names.
pub fn validate_routes(routes: &[RouteConfig]) -> Result<(), RouteConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    for route in routes {
        route.validate()?;
        if !seen.insert(route.name.as_str()) {
            return Err(RouteConfigError::Duplicate(route.name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<RouteConfig>, String> {
        #[derive(Deserialize)]
        struct File {
            routes: Vec<RouteConfig>,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        validate_routes(&file.routes).map_err(|e| e.to_string())?;
        Ok(file.routes)
    }

    const REST: &str = "[[routes]]\nname = \"r1\"\ntopic = \"a/+/#\"\ntype = \"rest\"\nurl = \"http://127.0.0.1:9/x\"\n";

    #[test]
    fn a_rest_route_parses_with_defaults() {
        let routes = parse(REST).unwrap();
        let r = &routes[0];
        assert_eq!((r.max_queued, r.max_attempts, r.inflight), (100_000, 10, 8));
        assert_eq!((r.backoff_initial_ms, r.backoff_max_ms), (100, 30_000));
        assert_eq!(r.overflow, Overflow::Backpressure);
        assert!(!r.paused);
        let RouteTarget::Rest(rest) = &r.target else {
            panic!("rest")
        };
        assert_eq!(rest.method, "POST");
        assert_eq!(rest.timeout_ms, 10_000);
    }

    #[test]
    fn bad_routes_are_refused_naming_route_and_key() {
        let cases = [
            (REST.replace("r1", "r 1"), "key `name`"),
            (REST.replace("a/+/#", "a/#/b"), "key `topic`"),
            (REST.replace("a/+/#", "$share/g/a"), "key `topic`"),
            (format!("{REST}max_queued = 0\n"), "key `max_queued`"),
            (format!("{REST}inflight = 0\n"), "key `inflight`"),
            (
                format!("{REST}backoff_max_ms = 10\n"),
                "key `backoff_max_ms`",
            ),
            (
                format!("{REST}overflow = \"spill\"\n"),
                "unknown variant `spill`",
            ),
            (format!("{REST}urll = \"x\"\n"), "unknown field `urll`"),
            (REST.replace("\"rest\"", "\"ftp\""), "unknown variant `ftp`"),
            (
                REST.replace("http://127.0.0.1:9/x", "ftp://h/x"),
                "key `url`",
            ),
            (format!("{REST}{REST}"), "route `r1` is defined twice"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(expected), "{text}\n=> {err}");
        }
    }

    #[test]
    fn json_definitions_parse_and_secrets_stay_hidden() {
        let value = serde_json::json!({
            "name": "j", "topic": "t", "type": "rest", "url": "http://h:1/p",
            "headers": {"Authorization": "Bearer hunter2", "X-Env": {"env": "TOKEN"}},
        });
        let route = RouteConfig::from_json(&value).unwrap();
        let shown = route.to_public_json().to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("TOKEN"), "{shown}");
        let err = RouteConfig::from_json(&serde_json::json!({"name": "k", "type": "rest"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("route `k`") && err.contains("topic"), "{err}");
    }
}
