//! Metrics over OTLP: real `tern` processes export their metrics over OTLP
//! gRPC to a MetricsService receiver served by the test (tonic, with the
//! `opentelemetry-proto` types); the tests check the exported values
//! against the traffic they generated and against a scrape of `/metrics`
//! (parsed by `prometheus-parse`).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use broker::codec::Packet;
use common::http::scrape;
use common::process::{free_port, TernProcess};
use common::{build, check_for, Raw};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, HistogramDataPoint, Metric,
    NumberDataPoint,
};
use parking_lot::Mutex;

/// Each test runs a `tern` process; one at a time keeps a two-core machine
/// responsive.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a test waits for an export (a guard against hanging, not a
/// bound).
const PATIENCE: Duration = Duration::from_secs(30);

/// The collector: keeps every metrics request; accepts (and drops) the
/// spans the same endpoint gets.
#[derive(Clone, Default)]
struct Collector {
    requests: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.requests.lock().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        _: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
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
        let metrics = MetricsServiceServer::new(collector.clone());
        let traces = TraceServiceServer::new(collector.clone());
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(metrics)
                .add_service(traces)
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

    fn requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.collector.requests.lock().clone()
    }

    /// Polls until some request satisfies `done`; returns the first that
    /// does.
    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&ExportMetricsServiceRequest) -> bool,
    ) -> ExportMetricsServiceRequest {
        let found = || self.requests().into_iter().find(|r| done(r));
        let ok = check_for(PATIENCE, Duration::from_millis(50), || found().is_some()).await;
        assert!(ok, "no export with {what} after {PATIENCE:?}");
        found().unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Every metric of a request.
fn metrics(request: &ExportMetricsServiceRequest) -> Vec<&Metric> {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .collect()
}

fn metric<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
    metrics(request).into_iter().find(|m| m.name == name)
}

fn has_attributes(attributes: &[KeyValue], want: &[(&str, &str)]) -> bool {
    attributes.len() == want.len()
        && want.iter().all(|(k, v)| {
            attributes.iter().any(|a| {
                a.key == *k
                    && a.value.as_ref().and_then(|v| v.value.as_ref())
                        == Some(&Value::StringValue((*v).to_owned()))
            })
        })
}

fn point<'a>(points: &'a [NumberDataPoint], want: &[(&str, &str)]) -> Option<&'a NumberDataPoint> {
    points.iter().find(|p| has_attributes(&p.attributes, want))
}

/// The value of a counter's point with exactly `labels`.
fn counter(
    request: &ExportMetricsServiceRequest,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<i64> {
    let Some(Data::Sum(sum)) = &metric(request, name)?.data else {
        panic!("{name} is not a sum")
    };
    assert!(sum.is_monotonic, "{name}");
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Cumulative as i32,
        "{name}"
    );
    match point(&sum.data_points, labels)?.value {
        Some(number_data_point::Value::AsInt(v)) => Some(v),
        ref other => panic!("{name}: {other:?}"),
    }
}

fn gauge(
    request: &ExportMetricsServiceRequest,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let Some(Data::Gauge(gauge)) = &metric(request, name)?.data else {
        panic!("{name} is not a gauge")
    };
    match point(&gauge.data_points, labels)?.value {
        Some(number_data_point::Value::AsDouble(v)) => Some(v),
        ref other => panic!("{name}: {other:?}"),
    }
}

fn histogram<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> &'a HistogramDataPoint {
    match metric(request, name).and_then(|m| m.data.as_ref()) {
        Some(Data::Histogram(h)) => &h.data_points[0],
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

/// Starts `tern` exporting to `receiver` every `interval_ms`, with its HTTP
/// endpoint on a free port.
fn start_tern(
    dir: &Path,
    receiver: &Receiver,
    interval_ms: u64,
) -> (TernProcess, std::net::SocketAddr) {
    let file = dir.join("tern.toml");
    std::fs::write(
        &file,
        format!(
            "[telemetry]\notlp_endpoint = \"{}\"\nmetrics_interval_ms = {interval_ms}\n",
            receiver.endpoint
        ),
    )
    .unwrap();
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tern = TernProcess::start(
        &dir.join("data"),
        free_port(),
        &[
            "--config",
            file.to_str().unwrap(),
            "--http-bind",
            &http.to_string(),
        ],
    );
    (tern, http)
}

/// Reads `n` PUBLISHes, acknowledging the QoS 1 ones.
async fn receive(c: &mut Raw, n: usize) {
    for i in 0..n {
        match c.recv().await {
            Some(Packet::Publish(p)) => {
                if let Some(id) = p.packet_id {
                    c.send(&build::puback(id)).await;
                }
            }
            other => panic!("PUBLISH {i} of {n} expected, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exported_over_otlp_match_the_traffic_and_the_scrape() {
    let _one = ONE_AT_A_TIME.lock().await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (tern, http) = start_tern(dir.path(), &receiver, 200);
    // a persistent subscriber: its copies are stored and fsynced
    let mut sub = Raw::mqtt(tern.addr, "otlp-sub", false).await;
    sub.send(&build::subscribe(1, &[("m/#", 1)])).await;
    assert_eq!(sub.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    let mut publisher = Raw::mqtt(tern.addr, "otlp-pub", true).await;
    for i in 1..=100u16 {
        publisher
            .send(&build::publish("m/x", 1, false, false, i, b"x"))
            .await;
    }
    for i in 1..=100u16 {
        assert_eq!(publisher.recv_bytes().await.unwrap(), build::puback(i));
    }
    receive(&mut sub, 100).await;

    let qos1 = [("qos", "1")];
    let request = receiver
        .wait_for("100 QoS 1 messages received and sent", |r| {
            counter(r, "tern_messages_received_total", &qos1) == Some(100)
                && counter(r, "tern_messages_sent_total", &qos1) == Some(100)
        })
        .await;
    assert_eq!(
        counter(&request, "tern_messages_received_total", &[("qos", "0")]),
        Some(0)
    );
    assert_eq!(counter(&request, "tern_connections_total", &[]), Some(2));
    assert_eq!(gauge(&request, "tern_connections", &[]), Some(2.0));
    assert_eq!(
        gauge(&request, "tern_sessions", &[("state", "online")]),
        Some(2.0)
    );
    assert_eq!(gauge(&request, "tern_subscriptions", &[]), Some(1.0));
    let listener = tern.addr.to_string();
    assert_eq!(
        gauge(
            &request,
            "tern_listener_connections",
            &[("protocol", "tcp"), ("listener", listener.as_str())]
        ),
        Some(2.0)
    );
    // the histograms: one point, a count per bucket plus +Inf
    let fsyncs = counter(&request, "tern_store_fsyncs_total", &[]).unwrap();
    assert!(fsyncs >= 1, "the subscriber's copies were fsynced");
    let flushes = histogram(&request, "tern_store_fsync_duration_seconds");
    assert_eq!(flushes.count, fsyncs as u64);
    assert_eq!(flushes.bucket_counts.iter().sum::<u64>(), flushes.count);
    assert_eq!(
        flushes.bucket_counts.len(),
        flushes.explicit_bounds.len() + 1
    );
    assert!(flushes.sum.unwrap() > 0.0);
    assert!(flushes.start_time_unix_nano < flushes.time_unix_nano);
    let groups = counter(&request, "tern_store_groups_total", &[]).unwrap();
    assert_eq!(
        histogram(&request, "tern_store_group_size").count,
        groups as u64
    );
    let received = metric(&request, "tern_bytes_received_total").unwrap();
    assert_eq!(received.unit, "By");
    assert_eq!(received.description, "Bytes read from client sockets.");

    // the node's resource, as its spans have it
    let resource = request.resource_metrics[0].resource.as_ref().unwrap();
    let service = resource
        .attributes
        .iter()
        .find(|a| a.key == "service.name")
        .and_then(|a| a.value.as_ref()?.value.clone());
    assert_eq!(service, Some(Value::StringValue("tern".into())));
    let scope = request.resource_metrics[0].scope_metrics[0].scope.as_ref();
    assert_eq!(scope.unwrap().name, "tern");

    // one source of truth: the same families as a scrape, the same values
    // for counters nothing changes any more
    let scraped = scrape(http).await;
    let exported: BTreeSet<&str> = metrics(&request).iter().map(|m| m.name.as_str()).collect();
    let families: BTreeSet<&str> = scraped.0.docs.keys().map(String::as_str).collect();
    assert_eq!(exported, families);
    assert_eq!(scraped.value("tern_messages_received_total", &qos1), 100.0);
    let latest = receiver.requests().pop().unwrap();
    for name in ["tern_messages_received_total", "tern_messages_sent_total"] {
        assert_eq!(
            counter(&latest, name, &qos1).map(|v| v as f64),
            Some(scraped.value(name, &qos1))
        );
    }
    let status = tern.terminate();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_values_are_exported_at_sigterm() {
    let _one = ONE_AT_A_TIME.lock().await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // an interval far longer than the test: only the export at exit sends
    let (tern, _http) = start_tern(dir.path(), &receiver, 600_000);
    let mut publisher = Raw::mqtt(tern.addr, "otlp-last", true).await;
    for _ in 0..3 {
        publisher
            .send(&build::publish("nobody/listens", 0, false, false, 0, b"z"))
            .await;
    }
    // a PINGRESP after the three PUBLISHes: they were read
    publisher.send(&build::pingreq()).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PingResp)));
    assert!(receiver.requests().is_empty());
    let status = tern.terminate();
    assert!(status.success(), "{status}");
    let request = receiver
        .wait_for("the export at exit", |r| {
            counter(r, "tern_messages_received_total", &[("qos", "0")]).is_some()
        })
        .await;
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(
        counter(&request, "tern_messages_received_total", &[("qos", "0")]),
        Some(3)
    );
}
