//! S3 routes: messages written as objects to any S3-compatible store, one
//! object per topic (the latest payload) or one per message.
//!
//! Owns the `object_store` client. Never reads or lists the bucket and
//! never deletes: it only puts objects, whose keys depend only on the
//! message, so a retried put rewrites the same key with the same bytes.
//!
//! Keys (README, "S3 routes"):
//! - `per_topic`: `prefix + topic`. Within a batch only the last message of
//!   each topic is written; the earlier ones are superseded and share its
//!   outcome (when the last is rejected they are retried instead, so the
//!   latest deliverable payload ends up in the object).
//! - `per_message`: `prefix + topic + "/" + UTC time + "-" + suffix`, the
//!   time as `20261205T071500.123Z` (sorts as it reads) and the suffix 32
//!   hex digits: the message's queue position (`seq`) then its cluster id
//!   (`uid`).
//!
//! Both go through `object_store`'s `Path`: empty topic levels are dropped
//! (`a//b` and `a/b` share a key) and the characters AWS advises against
//! in keys (`\`, `{`, `^`, `}`, `%`, `` ` ``, `]`, `"`, `>`, `[`, `~`, `<`,
//! `#`, `|`, `*`, `?`, control characters) are percent-encoded.
//!
//! Errors: no answer, a 5xx, throttling (429, 503 SlowDown) and 408 are
//! `Retry`. So are the 4xx that concern the route rather than the message
//! (NoSuchBucket, AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch,
//! a wrong region): every message would meet them, and rejecting would
//! dead-letter the whole stream while someone creates the bucket or fixes
//! a policy; the messages wait in the route's queue (bounded by
//! `max_queued`, and `max_attempts` dead-letters them in the end) and the
//! route's error events say why. The 4xx that concern one message are
//! `Reject`: a key over S3's 1024 bytes (checked before sending),
//! KeyTooLongError, EntityTooLarge, InvalidObjectName.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};
use serde::Deserialize;

use super::sink::{DeliveryError, Outcome, RoutedMessage, Secret, Sink};

/// `type = "s3"` keys of a `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Route {
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// The store's URL (`http://127.0.0.1:9000`); AWS's when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Prepended to every key (`devices/`).
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub strategy: S3Strategy,
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Most messages handed to the sink at once.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Most puts in flight at once for one batch.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Longest a put may take (each of its attempts).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_max_batch() -> usize {
    32
}

fn default_concurrency() -> usize {
    8
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// How messages become objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum S3Strategy {
    /// One object per topic, key = prefix + topic, holding the latest payload.
    #[default]
    PerTopic,
    /// One object per message, key = prefix + topic + `/` + timestamp +
    /// unique suffix.
    PerMessage,
}

/// S3's longest key, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// The S3 target of a route.
pub struct S3Sink {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    strategy: S3Strategy,
    max_batch: usize,
    concurrency: usize,
    /// `s3://bucket/prefix`
    target: String,
}

impl S3Sink {
    /// Checks the configuration and builds the client; nothing is sent
    /// until the first message.
    pub fn new(config: &S3Route) -> Result<S3Sink, String> {
        if config.bucket.is_empty() {
            return Err("bucket: must not be empty".into());
        }
        if config.max_batch == 0 || config.concurrency == 0 || config.timeout_ms == 0 {
            return Err("max_batch, concurrency and timeout_ms must be at least 1".into());
        }
        // The usual AWS_* variables (credentials, session token, ...) apply
        // unless the route sets the value.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(Duration::from_millis(config.timeout_ms))
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(
                        config
                            .endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    ),
            )
            // A few quick attempts for a connection reset or a 503 in
            // passing; the route's worker does the long backoff.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_millis(config.timeout_ms),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &config.endpoint {
            // Path-style (`endpoint/bucket/key`): what S3-compatible stores
            // answer without DNS set up per bucket.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id.resolve().map_err(|e| format!("access_key_id: {e}"))?)
                    .with_secret_access_key(
                        secret
                            .resolve()
                            .map_err(|e| format!("secret_access_key: {e}"))?,
                    );
            }
            (None, None) => {}
            _ => return Err("access_key_id and secret_access_key go together".into()),
        }
        let store = builder.build().map_err(|e| format!("S3 client: {e}"))?;
        Ok(S3Sink {
            store: Arc::new(store),
            prefix: config.prefix.clone(),
            strategy: config.strategy,
            max_batch: config.max_batch,
            concurrency: config.concurrency,
            target: format!("s3://{}/{}", config.bucket, config.prefix),
        })
    }

    /// The object key of `message`.
    pub fn key(&self, message: &RoutedMessage) -> String {
        let key = match self.strategy {
            S3Strategy::PerTopic => format!("{}{}", self.prefix, message.topic),
            S3Strategy::PerMessage => format!(
                "{}{}/{}-{:016x}{:016x}",
                self.prefix,
                message.topic,
                utc_timestamp(message.timestamp_ms),
                message.seq,
                message.uid
            ),
        };
        Path::from(key).to_string()
    }

    async fn deliver_batch(&self, batch: &[RoutedMessage]) -> Vec<Outcome> {
        // (key, index of the message written there): for per_topic the
        // last of each topic.
        let mut writes: Vec<(String, usize)> = Vec::with_capacity(batch.len());
        // For each message, the index in `writes` of the put deciding its
        // outcome.
        let mut write_of: Vec<usize> = Vec::with_capacity(batch.len());
        for (i, message) in batch.iter().enumerate() {
            let key = self.key(message);
            let existing = match self.strategy {
                S3Strategy::PerTopic => writes.iter().position(|(k, _)| *k == key),
                S3Strategy::PerMessage => None,
            };
            match existing {
                Some(w) => {
                    writes[w].1 = i;
                    write_of.push(w);
                }
                None => {
                    writes.push((key, i));
                    write_of.push(writes.len() - 1);
                }
            }
        }

        let puts: Vec<_> = writes
            .iter()
            .map(|(key, i)| self.put(key, &batch[*i]))
            .collect();
        let results: Vec<Outcome> = futures::stream::iter(puts)
            .buffered(self.concurrency)
            .collect()
            .await;

        write_of
            .iter()
            .enumerate()
            .map(|(i, w)| match &results[*w] {
                Err(DeliveryError::Reject(e)) if writes[*w].1 != i => Err(DeliveryError::Retry(
                    format!("superseded by a later message of its topic, which was rejected: {e}"),
                )),
                result => result.clone(),
            })
            .collect()
    }

    async fn put(&self, key: &str, message: &RoutedMessage) -> Outcome {
        if key.len() > MAX_KEY_BYTES {
            return Err(DeliveryError::Reject(format!(
                "object key of {} bytes (topic `{}`): S3 keys are at most {MAX_KEY_BYTES} bytes",
                key.len(),
                message.topic
            )));
        }
        let payload = PutPayload::from_bytes(message.payload.clone());
        match self.store.put(&Path::from(key), payload).await {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(&e, &self.target, key)),
        }
    }
}

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Sink")
            .field("target", &self.target)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl Sink for S3Sink {
    fn deliver<'a>(&'a self, batch: &'a [RoutedMessage]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.deliver_batch(batch))
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn target(&self) -> String {
        self.target.clone()
    }
}

/// S3 error codes a store answers for one object's key or body.
const MESSAGE_ERRORS: [&str; 4] = [
    "KeyTooLongError",
    "EntityTooLarge",
    "InvalidObjectName",
    "InvalidURI",
];

/// `Reject` for the errors one message causes, `Retry` for the rest (see
/// the module's doc).
fn classify(e: &object_store::Error, target: &str, key: &str) -> DeliveryError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    let message = format!("put {key} in {target}: {text}");
    let status = text
        .split("status code: ")
        .nth(1)
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(400 | 413) if MESSAGE_ERRORS.iter().any(|code| text.contains(code)) => {
            DeliveryError::Reject(message)
        }
        Some(413) => DeliveryError::Reject(message),
        _ => DeliveryError::Retry(message),
    }
}

/// `20261205T071500.123Z` for Unix milliseconds: UTC, fixed width, so keys
/// sort by time.
pub fn utc_timestamp(unix_ms: u64) -> String {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let (hour, minute, second) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    // Days to civil date: Howard Hinnant's `civil_from_days`, for days
    // since 1970-01-01 (non-negative here).
    let z = secs / 86_400 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn sink(strategy: &str, prefix: &str) -> S3Sink {
        let config: S3Route = toml::from_str(&format!(
            "bucket = \"b\"\nendpoint = \"http://127.0.0.1:1\"\nprefix = {prefix:?}\nstrategy = {strategy:?}\naccess_key_id = \"k\"\nsecret_access_key = \"s\""
        ))
        .unwrap();
        S3Sink::new(&config).unwrap()
    }

    fn message(topic: &str) -> RoutedMessage {
        RoutedMessage {
            seq: 0x2a,
            uid: 0xdead_beef,
            topic: topic.into(),
            payload: Bytes::from_static(b"x"),
            qos: 1,
            retain: false,
            client_id: "c".into(),
            timestamp_ms: 1_796_454_900_123,
        }
    }

    #[test]
    fn timestamps_are_utc_and_fixed_width() {
        assert_eq!(utc_timestamp(0), "19700101T000000.000Z");
        assert_eq!(utc_timestamp(1_796_454_900_123), "20261205T071500.123Z");
        // 2024-02-29, a leap day, and the last millisecond of 2099.
        assert_eq!(utc_timestamp(1_709_210_096_007), "20240229T123456.007Z");
        assert_eq!(utc_timestamp(4_102_444_799_999), "20991231T235959.999Z");
    }

    #[test]
    fn keys_follow_the_strategy() {
        let m = message("site/a/temp");
        assert_eq!(sink("per_topic", "dev/").key(&m), "dev/site/a/temp");
        assert_eq!(
            sink("per_message", "dev/").key(&m),
            "dev/site/a/temp/20261205T071500.123Z-000000000000002a00000000deadbeef"
        );
        assert_eq!(sink("per_topic", "").key(&message("a//b/")), "a/b");
        assert_eq!(sink("per_topic", "").key(&message("a/{x}")), "a/%7Bx%7D");
        assert_eq!(sink("per_topic", "p/").target(), "s3://b/p/");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let parse = |extra: &str| -> Result<S3Sink, String> {
            S3Sink::new(&toml::from_str(&format!("bucket = \"b\"\n{extra}")).unwrap())
        };
        assert!(parse("access_key_id = \"k\"")
            .unwrap_err()
            .contains("go together"));
        assert!(parse("max_batch = 0").is_err());
        assert!(parse(
            "secret_access_key = { env = \"TERN_TEST_S3_UNSET\" }\naccess_key_id = \"k\""
        )
        .unwrap_err()
        .contains("TERN_TEST_S3_UNSET"));
        assert!(toml::from_str::<S3Route>("bucket = \"b\"\nstrategy = \"per_day\"").is_err());
    }
}
