//! Metrics over OTLP: with `telemetry.otlp_endpoint` set, every
//! `telemetry.metrics_interval_ms` the node sends the families of
//! `GET /metrics` ([`super::metrics::families`]) to that collector, as one
//! OTLP `ExportMetricsServiceRequest` over gRPC (the `opentelemetry-proto`
//! types and tonic client).
//!
//! One source of truth: the request is converted from the very families a
//! scrape encodes, read from the same atomics at export time. A counter
//! becomes a monotonic cumulative Sum, a gauge a Gauge, a histogram a
//! cumulative explicit-bucket Histogram; names, help texts and labels (as
//! attributes) are kept, so an OpenTelemetry Collector's Prometheus exporter
//! shows the series a scrape of `/metrics` shows. Cumulative sums start at
//! the node's start time. The resource is the one of the node's spans
//! (`crate::telemetry::resource_attributes`).
//!
//! Why not the SDK's `SdkMeterProvider`: opentelemetry_sdk 0.30 takes values
//! only from its own instruments. It has observable (callback) counters and
//! gauges, but no observable histogram, and its data types cannot be built
//! outside the SDK: the histograms (fsync time, group size, latencies) could
//! only be exported by recording every observation a second time, in a
//! second set of counters on the hot path.
//!
//! It never changes broker state, and never blocks the node on the
//! collector: a failed export is logged (once per run of failures) and the
//! next interval sends the current values, which, being cumulative, lose
//! nothing but resolution.
//!
//! Lifecycle: [`run`] (started by `server::run`) exports every interval
//! until `stop` turns true, then once more, within
//! [`FINAL_EXPORT_TIMEOUT`], so the collector gets the last values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus::proto::{MetricFamily, MetricType};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use super::NodeInfo;
use crate::state::State;

/// How long one export may take (connecting included).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the export at shutdown may delay the node's exit.
pub const FINAL_EXPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Exports the node's metrics every `interval` until `stop` turns true,
/// then once more.
pub async fn run(
    state: State,
    info: NodeInfo,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let endpoint = state.config().telemetry.otlp_endpoint.clone();
    let channel = match Endpoint::from_shared(endpoint.clone()) {
        Ok(e) => e
            .connect_timeout(EXPORT_TIMEOUT)
            .timeout(EXPORT_TIMEOUT)
            .connect_lazy(),
        Err(e) => {
            tracing::error!(%endpoint, error = %e, "telemetry.otlp_endpoint: no metrics over OTLP");
            return;
        }
    };
    let mut exporter = Exporter {
        client: MetricsServiceClient::new(channel),
        resource: resource(&state),
        started_ns: unix_nanos(
            SystemTime::now()
                .checked_sub(info.started.elapsed())
                .unwrap_or(UNIX_EPOCH),
        ),
        failing: false,
        endpoint,
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        exporter.export(&state, &info, EXPORT_TIMEOUT).await;
    }
    exporter.export(&state, &info, FINAL_EXPORT_TIMEOUT).await;
}

struct Exporter {
    client: MetricsServiceClient<Channel>,
    resource: Resource,
    /// Start of the cumulative sums: when the node started.
    started_ns: u64,
    /// The last export failed (the next failure is not logged again).
    failing: bool,
    endpoint: String,
}

impl Exporter {
    async fn export(&mut self, state: &State, info: &NodeInfo, timeout: Duration) {
        let families = super::metrics::families(state, info);
        let request = request(
            &families,
            self.resource.clone(),
            self.started_ns,
            unix_nanos(SystemTime::now()),
        );
        let result = tokio::time::timeout(timeout, self.client.export(request)).await;
        let error = match result {
            Ok(Ok(_)) => None,
            Ok(Err(status)) => Some(status.to_string()),
            Err(_) => Some(format!("no answer within {timeout:?}")),
        };
        match error {
            None if self.failing => {
                self.failing = false;
                tracing::info!(endpoint = %self.endpoint, "exporting metrics over OTLP works again");
            }
            None => {}
            Some(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(endpoint = %self.endpoint, error = %e,
                    "exporting metrics over OTLP failed; retrying every interval");
            }
            Some(_) => {}
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The node's resource, as its spans have it.
fn resource(state: &State) -> Resource {
    let attributes = crate::telemetry::resource_attributes(state.config())
        .into_iter()
        .filter_map(|kv| {
            let value = match kv.value {
                opentelemetry::Value::String(s) => any_value::Value::StringValue(s.to_string()),
                opentelemetry::Value::I64(i) => any_value::Value::IntValue(i),
                opentelemetry::Value::Bool(b) => any_value::Value::BoolValue(b),
                opentelemetry::Value::F64(f) => any_value::Value::DoubleValue(f),
                _ => return None,
            };
            Some(attribute(kv.key.as_str(), value))
        })
        .collect();
    Resource {
        attributes,
        ..Default::default()
    }
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// The unit of a family, from the base unit its name carries (Prometheus
/// conventions): seconds `s`, bytes `By`, none otherwise.
fn unit(name: &str) -> &'static str {
    let base = name.strip_suffix("_total").unwrap_or(name);
    if base.ends_with("_seconds") {
        "s"
    } else if base.split('_').any(|word| word == "bytes") {
        "By"
    } else {
        ""
    }
}

/// The OTLP request holding `families`: cumulative sums from `start_ns`,
/// every point taken at `now_ns`.
pub fn request(
    families: &[MetricFamily],
    resource: Resource,
    start_ns: u64,
    now_ns: u64,
) -> ExportMetricsServiceRequest {
    let metrics = families
        .iter()
        .filter_map(|f| {
            let data = data(f, start_ns, now_ns)?;
            Some(Metric {
                name: f.get_name().to_owned(),
                description: f.get_help().to_owned(),
                unit: unit(f.get_name()).to_owned(),
                data: Some(data),
                ..Default::default()
            })
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "tern".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn labels(m: &prometheus::proto::Metric) -> Vec<KeyValue> {
    m.get_label()
        .iter()
        .map(|l| {
            attribute(
                l.get_name(),
                any_value::Value::StringValue(l.get_value().to_owned()),
            )
        })
        .collect()
}

/// One family's points; `None` for a kind the node does not make.
fn data(f: &MetricFamily, start_ns: u64, now_ns: u64) -> Option<metric::Data> {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let point = |m: &prometheus::proto::Metric, start, value| NumberDataPoint {
        attributes: labels(m),
        start_time_unix_nano: start,
        time_unix_nano: now_ns,
        value: Some(value),
        ..Default::default()
    };
    Some(match f.get_field_type() {
        MetricType::COUNTER => metric::Data::Sum(Sum {
            data_points: f
                .get_metric()
                .iter()
                .map(|m| {
                    // every counter of the node is a whole number (a u64)
                    let v = m.get_counter().get_value() as i64;
                    point(m, start_ns, number_data_point::Value::AsInt(v))
                })
                .collect(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        MetricType::GAUGE => metric::Data::Gauge(Gauge {
            data_points: f
                .get_metric()
                .iter()
                .map(|m| {
                    let v = m.get_gauge().get_value();
                    point(m, 0, number_data_point::Value::AsDouble(v))
                })
                .collect(),
        }),
        MetricType::HISTOGRAM => metric::Data::Histogram(Histogram {
            data_points: f
                .get_metric()
                .iter()
                .map(|m| histogram_point(m, start_ns, now_ns))
                .collect(),
            aggregation_temporality: cumulative,
        }),
        MetricType::SUMMARY | MetricType::UNTYPED => return None,
    })
}

/// A Prometheus histogram (cumulative buckets, `+Inf` implied by the
/// count) as an OTLP point (one count per bucket, `+Inf` last).
fn histogram_point(
    m: &prometheus::proto::Metric,
    start_ns: u64,
    now_ns: u64,
) -> HistogramDataPoint {
    let h = m.get_histogram();
    let finite = h
        .get_bucket()
        .iter()
        .filter(|b| b.get_upper_bound().is_finite());
    let mut explicit_bounds = Vec::new();
    let mut bucket_counts = Vec::new();
    let mut below = 0;
    for b in finite {
        explicit_bounds.push(b.get_upper_bound());
        bucket_counts.push(b.get_cumulative_count().saturating_sub(below));
        below = b.get_cumulative_count();
    }
    bucket_counts.push(h.get_sample_count().saturating_sub(below));
    HistogramDataPoint {
        attributes: labels(m),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        count: h.get_sample_count(),
        sum: Some(h.get_sample_sum()),
        bucket_counts,
        explicit_bounds,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::proto::{Bucket, Counter, Gauge as PGauge, Histogram as PHistogram, LabelPair};

    fn family(
        name: &str,
        kind: MetricType,
        metrics: Vec<prometheus::proto::Metric>,
    ) -> MetricFamily {
        let mut f = MetricFamily::default();
        f.set_name(name.into());
        f.set_help(format!("help of {name}"));
        f.set_field_type(kind);
        f.set_metric(metrics);
        f
    }

    fn labelled(label: Option<(&str, &str)>) -> prometheus::proto::Metric {
        let mut m = prometheus::proto::Metric::default();
        if let Some((k, v)) = label {
            let mut l = LabelPair::default();
            l.set_name(k.into());
            l.set_value(v.into());
            m.set_label(vec![l]);
        }
        m
    }

    #[test]
    fn counters_gauges_and_histograms_keep_their_names_labels_and_values() {
        let mut c = labelled(Some(("qos", "1")));
        let mut counter = Counter::default();
        counter.set_value(100.0);
        c.set_counter(counter);
        let mut g = labelled(None);
        let mut gauge = PGauge::default();
        gauge.set_value(2.5);
        g.set_gauge(gauge);
        let mut h = labelled(None);
        let mut histogram = PHistogram::default();
        let buckets = [(0.001, 3), (0.01, 5)].map(|(bound, count)| {
            let mut b = Bucket::default();
            b.set_upper_bound(bound);
            b.set_cumulative_count(count);
            b
        });
        histogram.set_bucket(buckets.to_vec());
        histogram.set_sample_count(6);
        histogram.set_sample_sum(1.25);
        h.set_histogram(histogram);
        let families = [
            family("tern_messages_received_total", MetricType::COUNTER, vec![c]),
            family("tern_uptime_seconds", MetricType::GAUGE, vec![g]),
            family(
                "tern_store_fsync_duration_seconds",
                MetricType::HISTOGRAM,
                vec![h],
            ),
        ];
        let request = request(&families, Resource::default(), 10, 20);
        let scope = &request.resource_metrics[0].scope_metrics[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "tern");
        let [sum, gauge, histogram] = &scope.metrics[..] else {
            panic!("three metrics: {:?}", scope.metrics)
        };

        assert_eq!(sum.name, "tern_messages_received_total");
        assert_eq!(sum.description, "help of tern_messages_received_total");
        assert_eq!(sum.unit, "");
        let Some(metric::Data::Sum(sum)) = &sum.data else {
            panic!("{sum:?}")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let p = &sum.data_points[0];
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (10, 20));
        assert_eq!(p.value, Some(number_data_point::Value::AsInt(100)));
        assert_eq!(p.attributes[0].key, "qos");
        assert_eq!(
            p.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("1".into()))
        );

        assert_eq!(gauge.unit, "s");
        let Some(metric::Data::Gauge(gauge)) = &gauge.data else {
            panic!("{gauge:?}")
        };
        assert_eq!(
            gauge.data_points[0].value,
            Some(number_data_point::Value::AsDouble(2.5))
        );

        let Some(metric::Data::Histogram(histogram)) = &histogram.data else {
            panic!("{histogram:?}")
        };
        let p = &histogram.data_points[0];
        assert_eq!(p.explicit_bounds, [0.001, 0.01]);
        // 3 at most 1 ms, 2 more at most 10 ms, 1 above
        assert_eq!(p.bucket_counts, [3, 2, 1]);
        assert_eq!((p.count, p.sum), (6, Some(1.25)));
    }

    #[test]
    fn units_come_from_the_name_suffix() {
        assert_eq!(unit("tern_bytes_sent_total"), "By");
        assert_eq!(unit("tern_queued_bytes"), "By");
        assert_eq!(unit("tern_cluster_peer_last_contact_seconds"), "s");
        assert_eq!(unit("tern_connections"), "");
    }
}
