//! OpenTelemetry traces: the `tracing` subscriber of the `tern` binary (log
//! lines, text or JSON, plus an OTLP span exporter when `[telemetry]` names
//! an endpoint), and the spans of one message's way through the broker.
//!
//! It owns the exporter and the span constructors; it never decides where
//! a message goes. Spans are `tracing` spans with target [`TARGET`], turned
//! into OpenTelemetry spans by `tracing-opentelemetry` and exported over OTLP
//! gRPC (tonic) in batches. The span tree of one message:
//!
//! ```text
//! mqtt.publish            (root, or child of the PUBLISH's `traceparent`
//! ├── mqtt.store           user property; linked to mqtt.connection)
//! └── mqtt.route          (mqtt.matches)
//!     ├── mqtt.deliver    (one per local subscriber)
//!     │   └── mqtt.store  (a persistent subscriber's copy, until durable)
//!     └── cluster.forward (one per other node, until it answers)
//!         └── cluster.apply          (on the other node)
//!             └── mqtt.route
//!                 └── mqtt.deliver
//! ```
//!
//! A connection is a span of its own (`mqtt.connection`, CONNECT to close):
//! a trace per message rather than per connection keeps traces short and
//! lets `sample_ratio` pick messages, not connections.
//!
//! Cost: with telemetry off, [`enabled`] is false, every constructor returns
//! `Span::none()` after one relaxed load, and child spans are made only under
//! a parent that exists: nothing is allocated per message. The subscriber
//! then is the plain log formatter, as before. With it on, whether a new
//! trace is recorded is drawn before its first span is made
//! (`sample_ratio`): a message left out costs a random number, makes no span
//! and sends no `traceparent` to other nodes, which start no trace for a
//! message without one.
//!
//! Between nodes the context travels as a W3C `traceparent` string in the
//! forwarded message (`ForwardedPublish::traceparent`).
//!
//! # Lifecycle
//! 1. [`init`] (the binary, once): installs the global subscriber and, with
//!    an endpoint, the exporter on a runtime of its own.
//! 2. Spans are exported in batches (`OTEL_BSP_SCHEDULE_DELAY`, 5 s by
//!    default).
//! 3. [`Telemetry::shutdown`] after the broker stopped: exports what is left.

mod spans;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

use crate::config::{Config, LogFormat};

pub use spans::{
    apply_span, connection_span, deliver_span, forward_span, publish_span, route_span, store_span,
    with_traceparent, ConnectionTrace,
};

/// Target of every span meant for export: the exporter's filter passes
/// these and nothing else.
pub const TARGET: &str = "tern::otel";

/// Set once an exporter is installed; read before making any span.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// `telemetry.sample_ratio`, as `f64` bits.
static SAMPLE_RATIO: AtomicU64 = AtomicU64::new(0);

/// True when spans are exported: the only case where per-message spans
/// are made.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether a new trace (a message or connection with no parent context)
/// is recorded: drawn here, before any span is made, so a message left out
/// costs one random number. The SDK's sampler then records every root
/// (`ParentBased(AlwaysOn)`): `sample_ratio` is applied once.
fn sample_root() -> bool {
    let ratio = f64::from_bits(SAMPLE_RATIO.load(Ordering::Relaxed));
    ratio >= 1.0 || rand::random::<f64>() < ratio
}

/// The installed exporter; [`shutdown`](Self::shutdown) flushes it.
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// Runs the exporter's gRPC channel (tonic needs a tokio runtime; the
    /// broker's own are actix's and the cluster's, which stop earlier).
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. Call from
    /// outside any async runtime, after the broker stopped.
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            eprintln!("tern: exporting the last spans failed: {e}");
        }
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Installs the global `tracing` subscriber: log lines on stderr in
/// `log_format`, filtered by `log_level`, and, if `telemetry.otlp_endpoint`
/// is set, the OTLP exporter of [`TARGET`] spans. Returns the exporter to
/// shut down at exit.
pub fn init(config: &Config) -> Result<Option<Telemetry>, String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .map_err(|e| format!("log level `{}`: {e}", config.log_level))?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    };
    if !config.telemetry.enabled() {
        tracing_subscriber::registry().with(fmt).init();
        return Ok(None);
    }
    let (telemetry, tracer) = exporter(config)?;
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_location(false)
        .with_tracked_inactivity(false)
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO),
        );
    tracing_subscriber::registry().with(fmt).with(otel).init();
    SAMPLE_RATIO.store(config.telemetry.sample_ratio.to_bits(), Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(telemetry))
}

/// The resource attributes of what the node exports, spans and metrics
/// alike: `service.name`, `service.version`, `tern.node_id` and, in a
/// cluster, `service.instance.id` (the node id).
pub fn resource_attributes(config: &Config) -> Vec<KeyValue> {
    let node_id = config.cluster.node_id;
    let mut attributes = vec![
        KeyValue::new("service.name", config.telemetry.service_name.clone()),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("tern.node_id", node_id as i64),
    ];
    if node_id != 0 {
        attributes.push(KeyValue::new("service.instance.id", node_id.to_string()));
    }
    attributes
}

/// The tracer provider: batch OTLP gRPC exporter, parent-based sampler
/// (roots are drawn by [`sample_root`] before they are made), resource
/// naming the service and the node.
fn exporter(config: &Config) -> Result<(Telemetry, opentelemetry_sdk::trace::SdkTracer), String> {
    let t = &config.telemetry;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tern-otel")
        .enable_all()
        .build()
        .map_err(|e| format!("telemetry runtime: {e}"))?;
    let exporter = {
        let _inside = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(t.otlp_endpoint.clone())
            .build()
            .map_err(|e| format!("telemetry.otlp_endpoint `{}`: {e}", t.otlp_endpoint))?
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_attributes(resource_attributes(config))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("tern");
    Ok((Telemetry { provider, runtime }, tracer))
}
