//! OpenTelemetry traces: real `tern` processes export their spans over OTLP
//! gRPC to a TraceService receiver served by the test (tonic, with the
//! `opentelemetry-proto` types); the tests assert on what it received.
//!
//! The exporter's batch delay is shortened with `OTEL_BSP_SCHEDULE_DELAY`
//! and the tests poll the receiver, except the shutdown test, where the
//! delay is long so only the flush at SIGTERM can deliver the spans.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::codec::Packet;
use common::build::{self, prop};
use common::process::{free_port, TernProcess};
use common::{check_for, wait_until, Raw};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use parking_lot::Mutex;
use prost::Message as _;

/// Each test runs `tern` processes; one test at a time keeps a two-core
/// machine responsive.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a test waits for spans (a guard against hanging, not a bound).
const PATIENCE: Duration = Duration::from_secs(30);

/// The payload every test publishes: it must never appear in an export.
const PAYLOAD: &[u8] = b"payload-that-must-not-be-exported";

/// One exported span, with its resource's attributes.
#[derive(Debug, Clone)]
struct Got {
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    /// (trace id, span id) of each link.
    links: Vec<(Vec<u8>, Vec<u8>)>,
    attributes: HashMap<String, String>,
    resource: HashMap<String, String>,
}

impl Got {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

fn to_map(attributes: Vec<KeyValue>) -> HashMap<String, String> {
    attributes
        .into_iter()
        .map(|kv| {
            let value = match kv.value.and_then(|v| v.value) {
                Some(Value::StringValue(s)) => s,
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key, value)
        })
        .collect()
}

/// The OTLP TraceService: keeps every span, and every request's bytes.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        self.requests.lock().push(request.encode_to_vec());
        let mut spans = self.spans.lock();
        for resource_spans in request.resource_spans {
            let resource = to_map(
                resource_spans
                    .resource
                    .map(|r| r.attributes)
                    .unwrap_or_default(),
            );
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Got {
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    links: span
                        .links
                        .into_iter()
                        .map(|l| (l.trace_id, l.span_id))
                        .collect(),
                    attributes: to_map(span.attributes),
                    resource: resource.clone(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The receiver on a loopback port.
struct Receiver {
    collector: Collector,
    endpoint: String,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Receiver {
            collector,
            endpoint,
            server,
        }
    }

    fn spans(&self) -> Vec<Got> {
        self.collector.spans.lock().clone()
    }

    /// Polls until `done` holds for the spans received; returns them.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let ok = check_for(PATIENCE, Duration::from_millis(50), || {
            done(&self.collector.spans.lock())
        })
        .await;
        let spans = self.spans();
        assert!(ok, "no {what} after {PATIENCE:?}; received: {spans:#?}");
        spans
    }

    /// True if some request contains `bytes` anywhere.
    fn exported(&self, bytes: &[u8]) -> bool {
        self.collector
            .requests
            .lock()
            .iter()
            .any(|r| r.windows(bytes.len()).any(|w| w == bytes))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The one span named `name` matching `filter`.
fn one<'a>(spans: &'a [Got], name: &str, filter: impl Fn(&Got) -> bool) -> &'a Got {
    let found: Vec<&Got> = spans
        .iter()
        .filter(|s| s.name == name && filter(s))
        .collect();
    assert_eq!(found.len(), 1, "one {name} expected: {spans:#?}");
    found[0]
}

fn has(spans: &[Got], name: &str, filter: impl Fn(&Got) -> bool) -> bool {
    spans.iter().any(|s| s.name == name && filter(s))
}

/// Starts `tern` exporting to `receiver` with `config` (TOML), more
/// `[telemetry]` keys, and a batch delay of `batch_delay_ms`.
fn start_tern(
    dir: &Path,
    config: &str,
    telemetry: &str,
    receiver: &Receiver,
    batch_delay_ms: &str,
) -> TernProcess {
    let file = dir.join("tern.toml");
    let text = format!(
        "{config}\n[telemetry]\notlp_endpoint = \"{}\"\n{telemetry}\n",
        receiver.endpoint
    );
    std::fs::write(&file, text).unwrap();
    TernProcess::start_env(
        &dir.join("data"),
        free_port(),
        &["--config", file.to_str().unwrap()],
        &[("OTEL_BSP_SCHEDULE_DELAY", batch_delay_ms)],
    )
}

/// Receives one PUBLISH and acknowledges it.
async fn receive_publish(c: &mut Raw) -> broker::codec::Publish {
    match c.recv().await {
        Some(Packet::Publish(p)) => {
            if let Some(id) = p.packet_id {
                c.send(&build::puback(id)).await;
            }
            p
        }
        other => panic!("PUBLISH expected, got {other:?}"),
    }
}

async fn subscribe(c: &mut Raw, filter: &str) {
    c.send(&build::subscribe(1, &[(filter, 1)])).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::suback(1, &[1]));
}

async fn publish_qos1(c: &mut Raw, topic: &str) {
    c.send(&build::publish(topic, 1, false, false, 7, PAYLOAD))
        .await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::puback(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_message_yields_linked_connection_publish_route_and_deliver_spans() {
    let _one = ONE_AT_A_TIME.lock().await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tern = start_tern(dir.path(), "", "", &receiver, "50");
    let mut sub = Raw::mqtt(tern.addr, "sub", true).await;
    subscribe(&mut sub, "t/a").await;
    let mut publisher = Raw::mqtt(tern.addr, "pub", true).await;
    publish_qos1(&mut publisher, "t/a").await;
    assert_eq!(receive_publish(&mut sub).await.payload, PAYLOAD);
    // the connection span ends with the connection
    publisher.send(&build::disconnect()).await;
    publisher.expect_closed().await;

    let spans = receiver
        .wait_for("publish, route, deliver and connection spans", |s| {
            has(s, "mqtt.publish", |_| true)
                && has(s, "mqtt.route", |_| true)
                && has(s, "mqtt.deliver", |_| true)
                && has(s, "mqtt.connection", |c| c.attr("mqtt.client_id") == "pub")
        })
        .await;
    let connection = one(&spans, "mqtt.connection", |c| {
        c.attr("mqtt.client_id") == "pub"
    });
    let publish = one(&spans, "mqtt.publish", |_| true);
    let route = one(&spans, "mqtt.route", |_| true);
    let deliver = one(&spans, "mqtt.deliver", |_| true);
    assert_eq!(connection.attr("mqtt.protocol_version"), "3.1.1");
    assert!(
        connection
            .attr("network.peer.address")
            .starts_with("127.0.0.1:"),
        "{connection:?}"
    );
    // a trace per message: the publish is a root, linked to its connection
    assert!(publish.parent_span_id.is_empty(), "{publish:?}");
    assert_eq!(
        publish.links,
        [(connection.trace_id.clone(), connection.span_id.clone())]
    );
    assert_eq!(publish.attr("mqtt.client_id"), "pub");
    assert_eq!(publish.attr("messaging.destination.name"), "t/a");
    assert_eq!(publish.attr("mqtt.qos"), "1");
    assert_eq!(
        publish.attr("messaging.message.body.size"),
        PAYLOAD.len().to_string()
    );
    assert_eq!(publish.resource["service.name"], "tern");
    assert_eq!(route.trace_id, publish.trace_id);
    assert_eq!(route.parent_span_id, publish.span_id);
    assert_eq!(route.attr("mqtt.matches"), "1");
    assert_eq!(deliver.trace_id, publish.trace_id);
    assert_eq!(deliver.parent_span_id, route.span_id);
    assert_eq!(deliver.attr("mqtt.client_id"), "sub");
    assert_eq!(deliver.attr("mqtt.qos"), "1");
    assert!(!receiver.exported(PAYLOAD), "the payload was exported");
    let status = tern.terminate();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_buffered_are_exported_on_sigterm() {
    let _one = ONE_AT_A_TIME.lock().await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // a batch delay far longer than the test: only the flush at exit sends
    let tern = start_tern(dir.path(), "", "", &receiver, "600000");
    let mut sub = Raw::mqtt(tern.addr, "sub", true).await;
    subscribe(&mut sub, "t/b").await;
    let mut publisher = Raw::mqtt(tern.addr, "pub", true).await;
    publish_qos1(&mut publisher, "t/b").await;
    receive_publish(&mut sub).await;
    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());
    let status = tern.terminate();
    assert!(status.success(), "{status}");
    // both clients were still connected: their spans end at shutdown too
    receiver
        .wait_for("spans flushed at SIGTERM", |s| {
            has(s, "mqtt.publish", |_| true)
                && has(s, "mqtt.deliver", |_| true)
                && has(s, "mqtt.connection", |c| c.attr("mqtt.client_id") == "sub")
                && has(s, "mqtt.connection", |c| c.attr("mqtt.client_id") == "pub")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_user_property_is_the_parent_and_goes_on_to_subscribers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tern = start_tern(
        dir.path(),
        "",
        "propagate_user_property = true",
        &receiver,
        "50",
    );
    let mut sub = Raw::mqtt5(tern.addr, "sub5", true, &[]).await;
    sub.send(&build::subscribe5(1, &[], &[("t/c", 1)])).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let mut publisher = Raw::mqtt5(tern.addr, "pub5", true, &[]).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let props = prop::pair(0x26, "traceparent", &traceparent);
    publisher
        .send(&build::publish5("t/c", 1, false, 9, &props, PAYLOAD))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    let delivered = receive_publish(&mut sub).await;

    let spans = receiver
        .wait_for("publish, route and deliver spans", |s| {
            has(s, "mqtt.publish", |_| true)
                && has(s, "mqtt.route", |_| true)
                && has(s, "mqtt.deliver", |_| true)
        })
        .await;
    let publish = one(&spans, "mqtt.publish", |_| true);
    assert_eq!(hex(&publish.trace_id), trace_id);
    assert_eq!(hex(&publish.parent_span_id), client_span);
    for name in ["mqtt.route", "mqtt.deliver"] {
        assert_eq!(hex(&one(&spans, name, |_| true).trace_id), trace_id);
    }
    // the subscriber gets the trace, continued from the broker's span
    let sent: Vec<_> = delivered
        .properties
        .user_properties
        .iter()
        .filter(|(k, _)| &**k == "traceparent")
        .map(|(_, v)| v.to_string())
        .collect();
    assert_eq!(
        sent,
        [format!("00-{trace_id}-{}-01", hex(&publish.span_id))]
    );
    let status = tern.terminate();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sample_ratio_0_only_a_message_with_a_sampled_traceparent_is_traced() {
    let _one = ONE_AT_A_TIME.lock().await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tern = start_tern(
        dir.path(),
        "",
        "sample_ratio = 0.0\npropagate_user_property = true",
        &receiver,
        "50",
    );
    let mut sub = Raw::mqtt5(tern.addr, "sub0", true, &[]).await;
    sub.send(&build::subscribe5(1, &[], &[("t/d", 1)])).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let mut publisher = Raw::mqtt5(tern.addr, "pub0", true, &[]).await;
    publisher
        .send(&build::publish5("t/d", 1, false, 1, &[], PAYLOAD))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    let untraced = receive_publish(&mut sub).await;
    assert!(untraced.properties.user_properties.is_empty());
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let props = prop::pair(
        0x26,
        "traceparent",
        &format!("00-{trace_id}-b7ad6b7169203331-01"),
    );
    publisher
        .send(&build::publish5("t/d", 1, false, 2, &props, PAYLOAD))
        .await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    let traced = receive_publish(&mut sub).await;
    assert_eq!(traced.properties.user_properties.len(), 1);
    // the flush at exit sends whatever the first message might have made
    assert!(tern.terminate().success());
    let spans = receiver
        .wait_for("the traced message's deliver span", |s| {
            has(s, "mqtt.deliver", |_| true)
        })
        .await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{spans:#?}");
    for name in ["mqtt.publish", "mqtt.route", "mqtt.deliver"] {
        assert_eq!(hex(&one(&spans, name, |_| true).trace_id), trace_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_forwarded_between_nodes_is_one_trace_across_both() {
    let _one = ONE_AT_A_TIME.lock().await;
    let receiver = Receiver::start().await;
    let root = tempfile::tempdir().unwrap();
    let cluster_addrs = [free_port(), free_port()].map(|p| format!("127.0.0.1:{p}"));
    let seeds = format!("\"1={}\", \"2={}\"", cluster_addrs[0], cluster_addrs[1]);
    let nodes: Vec<TernProcess> = (1..=2)
        .map(|id| {
            let dir = root.path().join(format!("node{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            let config = format!(
                "[cluster]\nnode_id = {id}\nlisten = \"{}\"\nseeds = [{seeds}]\n\
                 tick_ms = 20\nelection_ticks = 10\nforward_timeout_secs = 5",
                cluster_addrs[id - 1]
            );
            start_tern(&dir, &config, "", &receiver, "50")
        })
        .collect();
    wait_converged(&cluster_addrs);
    let mut sub = Raw::mqtt(nodes[1].addr, "sub", true).await;
    subscribe(&mut sub, "c/x").await;
    settle(&cluster_addrs);
    let mut publisher = Raw::mqtt(nodes[0].addr, "pub", true).await;
    publish_qos1(&mut publisher, "c/x").await;
    receive_publish(&mut sub).await;

    let on = |node: &'static str| move |s: &Got| s.resource["service.instance.id"] == node;
    let spans = receiver
        .wait_for("the forwarded message's spans on both nodes", |s| {
            has(s, "cluster.forward", on("1"))
                && has(s, "cluster.apply", on("2"))
                && has(s, "mqtt.deliver", on("2"))
        })
        .await;
    let publish = one(&spans, "mqtt.publish", on("1"));
    let forward = one(&spans, "cluster.forward", on("1"));
    let apply = one(&spans, "cluster.apply", on("2"));
    let route2 = one(&spans, "mqtt.route", on("2"));
    let deliver = one(&spans, "mqtt.deliver", on("2"));
    for span in [forward, apply, route2, deliver] {
        assert_eq!(span.trace_id, publish.trace_id, "{span:?}");
    }
    assert_eq!(forward.attr("tern.peer_node"), "2");
    assert_eq!(apply.parent_span_id, forward.span_id);
    assert_eq!(apply.attr("tern.origin_node"), "1");
    assert_eq!(route2.parent_span_id, apply.span_id);
    assert_eq!(deliver.parent_span_id, route2.span_id);
    assert_eq!(deliver.attr("mqtt.client_id"), "sub");
    assert!(!receiver.exported(PAYLOAD), "the payload was exported");
    for node in nodes {
        assert!(node.terminate().success());
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `tern cluster status --json` of the node at `address`.
fn status(address: &str) -> Option<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["cluster", "status", "--json", "--address", address])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Waits until every node is ready and they agree on a leader.
fn wait_converged(addresses: &[String]) {
    let end = Instant::now() + PATIENCE;
    loop {
        let leaders: Vec<u64> = addresses
            .iter()
            .filter_map(|a| status(a))
            .filter(|s| s["ready"] == true)
            .map(|s| s["leader"].as_u64().unwrap_or(0))
            .collect();
        if leaders.len() == addresses.len()
            && leaders[0] != 0
            && leaders.iter().all(|l| *l == leaders[0])
        {
            return;
        }
        assert!(Instant::now() < end, "the cluster did not converge");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every node applied what any had: a route added on one node
/// is then known on the others.
fn settle(addresses: &[String]) {
    let applied = |a: &String| {
        status(a)
            .and_then(|s| s["applied_index"].as_u64())
            .unwrap_or(0)
    };
    let target = addresses.iter().map(applied).max().unwrap();
    let settled = wait_until(PATIENCE, Duration::from_millis(20), || {
        addresses.iter().all(|a| applied(a) >= target)
    });
    assert!(settled, "nodes did not apply index {target}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_written_in_a_traced_connection_carry_its_trace_id() {
    let _one = ONE_AT_A_TIME.lock().await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tern.toml");
    std::fs::write(
        &file,
        format!(
            "log_format = \"json\"\n[telemetry]\notlp_endpoint = \"{}\"\n",
            receiver.endpoint
        ),
    )
    .unwrap();
    let tern = TernProcess::start_env(
        &dir.path().join("data"),
        free_port(),
        &["--config", file.to_str().unwrap()],
        &[("OTEL_BSP_SCHEDULE_DELAY", "50")],
    );
    // closed without DISCONNECT: "connection closed" is logged at info
    // while the connection's packets are handled, inside its span
    let client = Raw::mqtt(tern.addr, "json-logger", true).await;
    drop(client);
    let spans = receiver
        .wait_for("the connection span", |s| {
            has(s, "mqtt.connection", |c| {
                c.attr("mqtt.client_id") == "json-logger"
            })
        })
        .await;
    let connection = one(&spans, "mqtt.connection", |c| {
        c.attr("mqtt.client_id") == "json-logger"
    });
    let trace_id = hex(&connection.trace_id);
    let log = tern.log_text();
    // every line is one JSON object, the format's promise
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let closed = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "connection closed"
                && l["fields"]["client_id"] == "json-logger"
        })
        .unwrap_or_else(|| panic!("no `connection closed` line: {log}"));
    assert_eq!(closed["span"]["name"], "mqtt.connection", "{closed}");
    assert_eq!(closed["span"]["trace_id"], trace_id.as_str(), "{closed}");
    assert_eq!(
        closed["spans"][0]["trace_id"],
        trace_id.as_str(),
        "{closed}"
    );
    // lines outside any span have none
    let started = lines
        .iter()
        .find(|l| l["fields"]["message"] == "listening for MQTT")
        .unwrap_or_else(|| panic!("no `listening for MQTT` line: {log}"));
    assert!(started.get("span").is_none(), "{started}");
    assert!(tern.terminate().success());
}
