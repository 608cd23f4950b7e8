//! What a route hands its messages to: a [`Sink`] (REST endpoint, PostgreSQL
//! database, S3 bucket). The route's worker (`hub::worker`) reads the route's
//! durable queue, calls [`Sink::deliver`] with a batch, and acts on the
//! outcome of each message: done (removed from the queue), retry later
//! (backoff with jitter, up to `max_attempts`), or rejected (dead letter at
//! once: retrying a message the target refuses would block its topic).

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;

/// One message taken from a route's durable queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedMessage {
    /// Its position in the route's queue: increasing, never reused on one
    /// node. With the route name and node id it is the message's
    /// idempotency key (see README, "Routes and events").
    pub seq: u64,
    /// The message's id in the cluster (`Message::uid`), 0 when unknown.
    pub uid: u64,
    pub topic: String,
    pub payload: Bytes,
    /// QoS it was published with (0, 1, 2).
    pub qos: u8,
    /// RETAIN flag it was published with.
    pub retain: bool,
    /// Client id of the publisher; empty for the broker's own messages.
    pub client_id: String,
    /// When the broker received it, Unix milliseconds.
    pub timestamp_ms: u64,
}

/// Why a message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The target could not take it now (unreachable, timeout, HTTP 5xx,
    /// 408 or 429, a lost database connection, S3 throttling): try again
    /// later.
    #[error("{0}")]
    Retry(String),
    /// The target refuses this message and would refuse it again (HTTP 4xx,
    /// an SQL error raised by this message's data): it goes to the dead
    /// letter topic with this error.
    #[error("{0}")]
    Reject(String),
}

/// Outcome of one message of a batch.
pub type Outcome = Result<(), DeliveryError>;

/// A route's target.
pub trait Sink: Send + Sync + 'static {
    /// Delivers `batch` (1 to [`Sink::max_batch`] messages, in queue order;
    /// messages of one topic are never in flight in two calls at once, and
    /// a batch may hold several consecutive messages of one topic) and
    /// returns one outcome per message, in the same order. A target that
    /// keeps order per topic stops at the first failure (PostgreSQL stops
    /// the batch at its first `Retry`).
    fn deliver<'a>(&'a self, batch: &'a [RoutedMessage]) -> BoxFuture<'a, Vec<Outcome>>;

    /// Largest batch [`Sink::deliver`] takes; 1 for targets that take one
    /// message per request.
    fn max_batch(&self) -> usize {
        1
    }

    /// Where it delivers, for logs, events and the admin API: never a
    /// secret (`http://host:port/path`, `postgres://user@host/db`,
    /// `s3://bucket/prefix`).
    fn target(&self) -> String;
}

/// A secret in the configuration: the value itself, or where to read it.
///
/// ```toml
/// password = "inline"                # discouraged outside tests
/// password = { file = "/run/secrets/pg" }
/// password = { env = "PG_PASSWORD" }
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    Plain(String),
    File { file: std::path::PathBuf },
    Env { env: String },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret(<inline>)"),
            Secret::File { file } => write!(f, "Secret(file {})", file.display()),
            Secret::Env { env } => write!(f, "Secret(env {env})"),
        }
    }
}

impl Secret {
    /// The secret's value; a file's trailing newline is removed. The error
    /// names the file or variable, never the value.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::Plain(value) => Ok(value.clone()),
            Secret::File { file } => std::fs::read_to_string(file)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| format!("cannot read secret file {}: {e}", file.display())),
            Secret::Env { env } => std::env::var(env)
                .map_err(|_| format!("environment variable {env} (a secret) is not set")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_resolve_from_value_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(Secret::Plain("a".into()).resolve().unwrap(), "a");
        assert_eq!(Secret::File { file: path }.resolve().unwrap(), "s3cret");
        let missing = Secret::File {
            file: dir.path().join("nope"),
        };
        assert!(missing.resolve().unwrap_err().contains("nope"));
        let unset = Secret::Env {
            env: "TERN_TEST_SECRET_UNSET_VAR".into(),
        };
        assert!(unset
            .resolve()
            .unwrap_err()
            .contains("TERN_TEST_SECRET_UNSET_VAR"));
        let parsed: std::collections::BTreeMap<String, Secret> =
            toml::from_str("a = \"x\"\nb = { file = \"/f\" }\nc = { env = \"E\" }").unwrap();
        assert_eq!(parsed["b"], Secret::File { file: "/f".into() });
        assert_eq!(parsed["c"], Secret::Env { env: "E".into() });
        assert!(!format!("{:?}", parsed["a"]).contains('x'));
    }
}
