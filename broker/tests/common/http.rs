//! HTTP requests to a node's endpoint and Prometheus scrapes, parsed with
//! the `prometheus-parse` crate (an exposition parser independent of the
//! encoder the broker uses).

use std::net::SocketAddr;

use broker::http::client::{request, Answer};
use hyper::Method;

/// GET `path` without a token.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    call(addr, Method::GET, path, None).await
}

/// Any request; panics if no answer comes.
pub async fn call(addr: SocketAddr, method: Method, path: &str, token: Option<&str>) -> Answer {
    request(&addr.to_string(), method, path, token)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Polls `check` every 20 ms until it is true; panics after `PATIENCE`.
pub async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let ok = super::poll_until(
        super::PATIENCE,
        std::time::Duration::from_millis(20),
        async || check().await,
    )
    .await;
    assert!(ok, "not true within {:?}", super::PATIENCE);
}

/// The answer's body as JSON.
pub fn json(answer: &Answer) -> serde_json::Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", answer.body))
}

/// A parsed `GET /metrics`.
pub struct Scrape(pub prometheus_parse::Scrape);

pub async fn scrape(addr: SocketAddr) -> Scrape {
    let answer = get(addr, "/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.content_type.as_deref(),
        Some("text/plain; version=0.0.4")
    );
    let lines = answer.body.lines().map(|l| Ok(l.to_owned()));
    Scrape(prometheus_parse::Scrape::parse(lines).expect("valid exposition"))
}

impl Scrape {
    /// The value of the sample `name` with exactly these `labels`; panics if
    /// there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        use prometheus_parse::Value;
        self.0
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
                Value::Summary(_) => panic!("{name} is a summary"),
            })
    }

    /// The `(upper bound, cumulative count)` buckets of histogram `name`.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let sample = self
            .0
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("no histogram {name}"));
        match &sample.value {
            prometheus_parse::Value::Histogram(b) => {
                b.iter().map(|b| (b.less_than, b.count)).collect()
            }
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    /// True if the exposition documents family `name` (`# HELP`).
    pub fn has_family(&self, name: &str) -> bool {
        self.0.docs.contains_key(name)
    }
}
