//! `[telemetry]`: OpenTelemetry traces (see `crate::telemetry`) and metrics
//! (see `crate::observe::otlp`) exported over OTLP gRPC. Off unless an
//! endpoint is given.

use serde::Deserialize;

use super::ConfigError;

/// Where and how spans are exported.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP gRPC endpoint of a collector (`http://host:4317`); empty (the
    /// default) turns tracing off: no exporter, no per-message span. The
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` variable overrides it.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans. `OTEL_SERVICE_NAME` overrides it.
    pub service_name: String,
    /// Share of new traces recorded, 0.0 to 1.0. A message that arrives with
    /// a trace context (another node's, or a `traceparent` user property)
    /// follows that context's decision instead.
    pub sample_ratio: f64,
    /// MQTT 5: a PUBLISH's `traceparent` user property is the parent of its
    /// span, and messages are delivered with a `traceparent` user property
    /// naming the broker's span (added if the publisher sent none).
    pub propagate_user_property: bool,
    /// Milliseconds between two exports of the node's metrics over OTLP
    /// (the families of `GET /metrics`); 0: no metrics over OTLP. The
    /// `OTEL_METRIC_EXPORT_INTERVAL` variable overrides it.
    pub metrics_interval_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: String::new(),
            service_name: "tern".into(),
            sample_ratio: 1.0,
            propagate_user_property: false,
            // the OpenTelemetry specification's default export interval
            metrics_interval_ms: 60_000,
        }
    }
}

impl TelemetryConfig {
    /// True when spans are exported.
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.is_empty()
    }

    /// How often metrics go out over OTLP; `None` when they do not.
    pub fn metrics_interval(&self) -> Option<std::time::Duration> {
        (self.enabled() && self.metrics_interval_ms > 0)
            .then(|| std::time::Duration::from_millis(self.metrics_interval_ms))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.metrics_interval_ms > 0 && self.metrics_interval_ms < 100 {
            return Err(ConfigError::Invalid {
                key: "telemetry.metrics_interval_ms",
                value: self.metrics_interval_ms.to_string(),
                reason: "must be 0 (off) or at least 100",
            });
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(ConfigError::Invalid {
                key: "telemetry.sample_ratio",
                value: self.sample_ratio.to_string(),
                reason: "must be between 0.0 and 1.0",
            });
        }
        if self.enabled()
            && !(self.otlp_endpoint.starts_with("http://")
                || self.otlp_endpoint.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                key: "telemetry.otlp_endpoint",
                value: self.otlp_endpoint.clone(),
                reason: "must be an http:// or https:// URL (OTLP gRPC, usually port 4317)",
            });
        }
        if self.service_name.is_empty() {
            return Err(ConfigError::Invalid {
                key: "telemetry.service_name",
                value: "\"\"".into(),
                reason: "must not be empty",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn telemetry_is_off_by_default_and_read_from_its_section() {
        let d = Config::default().telemetry;
        assert!(!d.enabled());
        assert_eq!(d.service_name, "tern");
        assert_eq!(d.sample_ratio, 1.0);
        assert!(!d.propagate_user_property);
        assert_eq!(d.metrics_interval_ms, 60_000);
        assert_eq!(d.metrics_interval(), None);
        let c = Config::from_toml(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\nservice_name = \"mqtt\"\n\
             sample_ratio = 0.01\npropagate_user_property = true\nmetrics_interval_ms = 500\n",
        )
        .unwrap()
        .telemetry;
        assert!(c.enabled());
        assert_eq!(c.service_name, "mqtt");
        assert_eq!(c.sample_ratio, 0.01);
        assert!(c.propagate_user_property);
        assert_eq!(
            c.metrics_interval(),
            Some(std::time::Duration::from_millis(500))
        );
    }

    #[test]
    fn bad_telemetry_values_name_their_key() {
        for (text, key) in [
            ("sample_ratio = 1.5", "telemetry.sample_ratio"),
            ("sample_ratio = -0.1", "telemetry.sample_ratio"),
            ("sample_ratio = nan", "telemetry.sample_ratio"),
            (
                "otlp_endpoint = \"127.0.0.1:4317\"",
                "telemetry.otlp_endpoint",
            ),
            ("service_name = \"\"", "telemetry.service_name"),
            ("metrics_interval_ms = 10", "telemetry.metrics_interval_ms"),
            ("endpoint = \"http://x:4317\"", "endpoint"),
        ] {
            let e = Config::from_toml(&format!("[telemetry]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
