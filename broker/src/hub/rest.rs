//! REST routes: one HTTP request per message (reqwest), the payload as the
//! body, the message's attributes in headers.
//!
//! Outcome of a request: 2xx is delivered; a connection error, a timeout,
//! 408, 429 and 5xx are retried; any other status (4xx, or a 3xx the client
//! did not follow) is a rejection, and the message goes to the dead letter
//! topic with the status and the start of the response body.
//!
//! Headers sent: `X-MQTT-Topic`, `X-MQTT-QoS`, `X-MQTT-Retain` (`0`/`1`),
//! `X-MQTT-Client-Id`, and `Idempotency-Key: <node>-<route>-<seq>`, the same
//! for every try of one message, so a target can drop the duplicates that
//! at-least-once delivery produces; then the route's own `headers`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::sink::{DeliveryError, Outcome, RoutedMessage, Secret, Sink};

/// `type = "rest"` keys of a `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestRoute {
    /// `http://` or `https://` URL the messages go to.
    pub url: String,
    /// HTTP method: `POST` (default), `PUT` or `PATCH`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra headers (`Authorization` ...); values may be secrets
    /// (`{ file = ".." }`, `{ env = ".." }`).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Time allowed for one request, connection included, in ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_method() -> String {
    "POST".into()
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl RestRoute {
    /// Checks the URL, method and timeout; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme `{}` is not http or https", url.scheme()));
        }
        if !matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            return Err(format!(
                "method `{}` is not POST, PUT or PATCH",
                self.method
            ));
        }
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be at least 1".into());
        }
        Ok(())
    }

    /// The keys as the admin API shows them, secrets hidden.
    pub fn to_public_json(&self) -> serde_json::Value {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), super::config::public_secret(v)))
            .collect();
        serde_json::json!({
            "url": super::config::redact_url(&self.url),
            "method": self.method,
            "headers": headers,
            "timeout_ms": self.timeout_ms,
        })
    }
}

/// The REST target of a route.
pub struct RestSink {
    client: reqwest::Client,
    url: reqwest::Url,
    method: reqwest::Method,
    headers: HeaderMap,
    /// `<node>-<route>-`: the idempotency key without the seq.
    key_prefix: String,
}

impl RestSink {
    /// Checks the configuration, reads the secrets of `headers` and builds
    /// the client. Nothing is sent until the first message.
    pub fn new(config: &RestRoute, node_id: u64, route: &str) -> Result<RestSink, String> {
        config.validate()?;
        let url = reqwest::Url::parse(&config.url).map_err(|e| e.to_string())?;
        let method = reqwest::Method::from_bytes(config.method.as_bytes())
            .map_err(|e| format!("method `{}`: {e}", config.method))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("header name `{name}`: {e}"))?;
            let value = HeaderValue::from_str(&value.resolve()?)
                .map_err(|e| format!("header `{name}`: value is not a valid header value: {e}"))?;
            headers.insert(header, value);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(RestSink {
            client,
            url,
            method,
            headers,
            key_prefix: format!("{node_id}-{route}-"),
        })
    }

    async fn deliver_one(&self, m: &RoutedMessage) -> Outcome {
        let topic = HeaderValue::from_bytes(m.topic.as_bytes()).map_err(|_| {
            DeliveryError::Reject(format!(
                "topic {:?} cannot be sent in the X-MQTT-Topic header",
                m.topic
            ))
        })?;
        let client_id = HeaderValue::from_bytes(m.client_id.as_bytes()).map_err(|_| {
            DeliveryError::Reject(format!(
                "client id {:?} cannot be sent in the X-MQTT-Client-Id header",
                m.client_id
            ))
        })?;
        let mut headers = self.headers.clone();
        headers.insert("x-mqtt-topic", topic);
        headers.insert("x-mqtt-qos", HeaderValue::from(u16::from(m.qos)));
        headers.insert("x-mqtt-retain", HeaderValue::from(u16::from(m.retain)));
        headers.insert("x-mqtt-client-id", client_id);
        let key = format!("{}{}", self.key_prefix, m.seq);
        // the prefix is a number and a route name, `[A-Za-z0-9_-]`
        if let Ok(key) = HeaderValue::from_str(&key) {
            headers.insert("idempotency-key", key);
        }
        let response = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(headers)
            .body(m.payload.clone())
            .send()
            .await
            .map_err(|e| DeliveryError::Retry(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(200).collect();
        let error = format!("HTTP {status}: {body}");
        let retry = status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        Err(if retry {
            DeliveryError::Retry(error)
        } else {
            DeliveryError::Reject(error)
        })
    }
}

/// A request error with its cause ("connection refused"), which reqwest's
/// own message leaves out.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Sink for RestSink {
    fn deliver<'a>(&'a self, batch: &'a [RoutedMessage]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(batch.len());
            for m in batch {
                outcomes.push(self.deliver_one(m).await);
            }
            outcomes
        })
    }

    fn target(&self) -> String {
        let mut url = self.url.clone();
        let _ = url.set_password(None);
        let _ = url.set_username("");
        format!("{} {}", self.method, url)
    }
}
