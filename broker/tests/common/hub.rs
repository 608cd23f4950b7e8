//! IoT hub test helpers: a real HTTP server on 127.0.0.1 that records what
//! a REST route sends (and can answer a chosen status, stop and come back
//! on the same port), route definitions, and an MQTT subscriber that
//! collects `$SYS/events/...` and dead letters as JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use broker::codec::Packet;
use broker::hub::config::RouteConfig;

use super::{build, Raw, PATIENCE};

/// One request the target got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lower-case.
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map_or("", String::as_str)
    }
}

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

/// An HTTP server recording requests; answers `status` (200 at first).
pub struct HttpTarget {
    pub addr: SocketAddr,
    shared: Shared,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

async fn record(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let status = StatusCode::from_u16(shared.status.load(Ordering::Relaxed))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_success() {
        shared.received.lock().unwrap().push(Received {
            method: method.to_string(),
            path: uri.path().to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
        });
    }
    status
}

impl HttpTarget {
    /// Starts on a free port.
    pub async fn start() -> HttpTarget {
        HttpTarget::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on `addr` (a port it had before, to come back).
    pub async fn start_on(addr: SocketAddr) -> HttpTarget {
        let shared = Shared {
            received: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
        };
        let mut t = HttpTarget {
            addr,
            shared,
            running: None,
        };
        t.resume().await;
        t
    }

    /// Listens again (same port, same record) after [`HttpTarget::stop`].
    pub async fn resume(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind the HTTP target");
        self.addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(self.shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        self.running = Some((tx, task));
    }

    /// Stops listening and closes its connections: the target is down
    /// (connection refused) until [`HttpTarget::resume`].
    pub async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            let _ = task.await;
        }
    }

    /// The status answered from now on (a non-2xx one is not recorded).
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::Relaxed);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// How many requests were recorded (without copying them).
    pub fn received_count(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    /// The bodies received, as UTF-8.
    pub fn bodies(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A REST route named `name` for `topic` to `url`, with quick retries
/// (`backoff_initial_ms` 20, `backoff_max_ms` 200, `max_attempts` 1000)
/// so that tests of a target that is down wait seconds, not minutes; then
/// `extra` keys (JSON) on top.
pub fn rest_route(name: &str, topic: &str, url: &str, extra: serde_json::Value) -> RouteConfig {
    let mut value = serde_json::json!({
        "name": name,
        "topic": topic,
        "type": "rest",
        "url": url,
        "backoff_initial_ms": 20,
        "backoff_max_ms": 200,
        "max_attempts": 1000,
    });
    if let (Some(v), serde_json::Value::Object(extra)) = (value.as_object_mut(), extra) {
        v.extend(extra);
    }
    RouteConfig::from_json(&value).unwrap_or_else(|e| panic!("route definition: {e}"))
}

/// An MQTT 3.1.1 client subscribed to `filters` at QoS 1 (acks what it gets).
pub async fn sys_subscriber(addr: SocketAddr, id: &str, filters: &[&str]) -> Raw {
    let mut s = Raw::mqtt(addr, id, true).await;
    let with_qos: Vec<(&str, u8)> = filters.iter().map(|f| (*f, 1)).collect();
    s.send(&build::subscribe(1, &with_qos)).await;
    let granted = vec![1; filters.len()];
    // in a cluster the subscription may deliver before SUBACK (which waits
    // for the route to be replicated): skip those
    loop {
        let packet = s.recv_bytes().await.expect("SUBACK");
        if packet[0] >> 4 != 3 {
            assert_eq!(packet, build::suback(1, &granted));
            return s;
        }
    }
}

/// The next PUBLISH on `s` within `PATIENCE` whose topic starts with
/// `prefix`: (topic, JSON payload). Other packets are skipped (QoS 1 ones
/// acknowledged).
pub async fn next_json(s: &mut Raw, prefix: &str) -> (String, serde_json::Value) {
    let end = tokio::time::Instant::now() + PATIENCE;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let packet = tokio::time::timeout(left, s.recv())
            .await
            .unwrap_or_else(|_| panic!("no message on {prefix}* within {PATIENCE:?}"))
            .expect("connection open");
        if let Packet::Publish(p) = packet {
            if let Some(id) = p.packet_id {
                s.send(&build::puback(id)).await;
            }
            if p.topic.starts_with(prefix) {
                let json = serde_json::from_slice(&p.payload)
                    .unwrap_or_else(|e| panic!("{}: not JSON ({e})", p.topic));
                return (p.topic.to_string(), json);
            }
        }
    }
}

/// Publishes at QoS 1 and waits for the PUBACK (3.1.1, so any failure
/// would close the connection instead).
pub async fn publish_acked(p: &mut Raw, topic: &str, packet_id: u16, payload: &[u8]) {
    p.send(&build::publish(topic, 1, false, false, packet_id, payload))
        .await;
    let ack = tokio::time::timeout(PATIENCE, p.recv_bytes())
        .await
        .expect("PUBACK in time");
    assert_eq!(ack.expect("connection open"), build::puback(packet_id));
}

/// How often the polling helpers look.
pub const POLL: Duration = Duration::from_millis(20);

/// One admin API request to a node's HTTP endpoint (no token: loopback):
/// the status and the JSON answer (`null` if it is not JSON).
pub async fn api(
    http: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, format!("http://{http}/api/v1{path}"));
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request
        .timeout(PATIENCE)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// A REST route definition as the admin API takes it (quick retries as in
/// [`rest_route`]).
pub fn rest_route_json(name: &str, topic: &str, url: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "topic": topic,
        "type": "rest",
        "url": url,
        "backoff_initial_ms": 20,
        "backoff_max_ms": 200,
        "max_attempts": 1000,
    })
}

/// A cluster of real `tern` processes for hub tests: each node with its own
/// data directory, MQTT, cluster and HTTP ports (raft ticks of 20 ms, as in
/// `cluster.rs`) and `extra` TOML appended to its configuration.
pub struct HubCluster {
    pub root: tempfile::TempDir,
    /// (MQTT address, HTTP address, process), node `i + 1` at `i`.
    pub nodes: Vec<(SocketAddr, SocketAddr, super::process::TernProcess)>,
}

impl HubCluster {
    /// Starts `n` nodes and waits until every one is ready with the same
    /// leader and `n` members.
    pub async fn start(n: u64, extra: &str) -> HubCluster {
        use super::process::{free_port, TernProcess};
        let root = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let seeds: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, cluster, _))| format!("\"{}=127.0.0.1:{cluster}\"", i + 1))
            .collect();
        let mut nodes = Vec::new();
        for (i, (mqtt, cluster, http)) in ports.iter().enumerate() {
            let config = root.path().join(format!("node{}.toml", i + 1));
            std::fs::write(
                &config,
                format!(
                    "[cluster]\nnode_id = {}\nlisten = \"127.0.0.1:{cluster}\"\nseeds = [{}]\n\
                     tick_ms = 20\nelection_ticks = 10\nforward_timeout_secs = 5\n{extra}\n",
                    i + 1,
                    seeds.join(", ")
                ),
            )
            .unwrap();
            let dir = root.path().join(format!("node{}", i + 1));
            let http_bind = format!("127.0.0.1:{http}");
            let process = TernProcess::start(
                &dir,
                *mqtt,
                &[
                    "--config",
                    config.to_str().unwrap(),
                    "--http-bind",
                    &http_bind,
                ],
            );
            nodes.push((process.addr, http_bind.parse().unwrap(), process));
        }
        let c = HubCluster { root, nodes };
        let converged = super::poll_until(Duration::from_secs(30), POLL, async || {
            let mut leaders = Vec::new();
            for (_, http, _) in &c.nodes {
                let (status, s) = api(*http, "GET", "/cluster/status", None).await;
                let members = s["members"].as_array().map_or(0, Vec::len);
                if status != 200 || s["ready"] != true || members != c.nodes.len() {
                    return false;
                }
                leaders.push(s["leader"].as_u64().unwrap_or(0));
            }
            leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0])
        })
        .await;
        assert!(converged, "cluster did not converge:\n{}", c.logs());
        c
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, (_, _, p))| format!("--- node {}\n{}", i + 1, p.log_text()))
            .collect()
    }
}
