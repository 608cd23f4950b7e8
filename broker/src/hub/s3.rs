//! S3 routes: messages written as objects to any S3-compatible store, one
//! object per topic (the latest payload) or one per message.

use serde::Deserialize;

use super::sink::Secret;

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
}

fn default_region() -> String {
    "us-east-1".into()
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

/// The S3 target of a route.
pub struct S3Sink {}

impl S3Sink {
    /// Checks the configuration and builds the client; nothing is sent
    /// until the first message.
    pub fn new(_config: &S3Route) -> Result<S3Sink, String> {
        Err("S3 routes are not built yet".into())
    }
}
