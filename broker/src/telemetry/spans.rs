//! The span constructors, and W3C `traceparent` in and out.
//!
//! Each constructor returns `Span::none()` when telemetry is off
//! ([`enabled`](super::enabled) false) or, for a child span, when its parent
//! is none: callers need no check of their own. Attributes never include a
//! payload: only its size.

use std::net::SocketAddr;

use bytestring::ByteString;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{enabled, sample_root, TARGET};
use crate::codec::{ProtocolVersion, Publish, PublishProperties, QoS};

/// The W3C Trace Context header, as MQTT user property and in forwarded
/// messages.
const TRACEPARENT: &str = "traceparent";

/// A connection's span, and its context for the link each of its
/// publishes carries.
#[derive(Debug)]
pub struct ConnectionTrace {
    pub span: Span,
    context: SpanContext,
}

/// `mqtt.connection`: CONNECT accepted to connection closed (the span ends
/// when the returned value is dropped with the connection).
pub fn connection_span(
    client_id: &str,
    protocol: ProtocolVersion,
    peer: SocketAddr,
) -> Option<Box<ConnectionTrace>> {
    if !enabled() || !sample_root() {
        return None;
    }
    let span = tracing::info_span!(target: TARGET, parent: None, "mqtt.connection",
        otel.kind = "server",
        mqtt.client_id = client_id,
        mqtt.protocol_version = %protocol,
        network.peer.address = %peer,
        trace_id = Empty,
    );
    let context = span.context().span().span_context().clone();
    record_trace_id(&span, &context);
    Some(Box::new(ConnectionTrace { span, context }))
}

/// `mqtt.publish`: one PUBLISH received, from its arrival until its
/// acknowledgement (the span's clones travel with the message's
/// `AckGuard`). A root span linked to the connection's, or, with
/// `telemetry.propagate_user_property`, the child of the context in its
/// `traceparent` user property. `Span::none()` for a message not sampled
/// (drawn before the span is made, or its parent's decision).
pub fn publish_span(
    publish: &Publish,
    client_id: &str,
    connection: Option<&ConnectionTrace>,
    user_property_parent: bool,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let parent = if user_property_parent {
        publish
            .properties
            .user_properties
            .iter()
            .find(|(k, _)| &**k == TRACEPARENT)
            .and_then(|(_, v)| extract(v))
    } else {
        None
    };
    if parent.is_none() && !sample_root() {
        return Span::none();
    }
    let span = tracing::info_span!(target: TARGET, parent: None, "mqtt.publish",
        otel.kind = "server",
        mqtt.client_id = client_id,
        messaging.destination.name = %publish.topic,
        mqtt.qos = publish.qos as u8,
        mqtt.retain = publish.retain,
        messaging.message.body.size = publish.payload.len(),
        trace_id = Empty,
    );
    if let Some(parent) = parent {
        span.set_parent(parent);
    }
    if let Some(connection) = connection {
        span.add_link(connection.context.clone());
    }
    let context = span.context().span().span_context().clone();
    if !context.is_sampled() {
        // its parent was not sampled: no child spans, nothing forwarded
        // (the other node starts no trace of its own for it)
        return Span::none();
    }
    record_trace_id(&span, &context);
    span
}

/// Sets (or adds) the `traceparent` user property to `span`'s context, so
/// receivers of the message can continue its trace.
pub fn with_traceparent(span: &Span, properties: &mut PublishProperties) {
    if span.is_disabled() {
        return;
    }
    let value = inject(&span.context());
    if value.is_empty() {
        return;
    }
    let value = ByteString::from(value);
    match properties
        .user_properties
        .iter_mut()
        .find(|(k, _)| &**k == TRACEPARENT)
    {
        Some((_, v)) => *v = value,
        None => properties
            .user_properties
            .push((ByteString::from_static(TRACEPARENT), value)),
    }
}

/// `mqtt.route`: matching a message against the subscriptions, under the
/// current span (a publish, or a forwarded message's apply); none outside
/// of one. `mqtt.matches` is recorded when known.
pub fn route_span() -> Span {
    if !enabled() {
        return Span::none();
    }
    let parent = Span::current();
    if parent.is_disabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, parent: &parent, "mqtt.route", mqtt.matches = Empty)
}

/// `mqtt.deliver`: a subscriber's session takes a copy (written, or queued
/// and stored).
pub fn deliver_span(parent: &Span, client_id: &str, qos: QoS) -> Span {
    if parent.is_disabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, parent: parent, "mqtt.deliver",
        otel.kind = "producer",
        mqtt.client_id = client_id,
        mqtt.qos = qos as u8,
    )
}

/// `mqtt.store`: a write submitted to the store until it is durable (the
/// group-commit wait). Drop it in the write's callback.
pub fn store_span(parent: &Span) -> Span {
    if parent.is_disabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, parent: parent, "mqtt.store")
}

/// `cluster.forward`: a message sent to another node, until that node
/// answers; with the `traceparent` that goes along (empty when none).
pub fn forward_span(node: u64) -> (Span, String) {
    if !enabled() {
        return (Span::none(), String::new());
    }
    let parent = Span::current();
    if parent.is_disabled() {
        return (Span::none(), String::new());
    }
    let span = tracing::info_span!(target: TARGET, parent: &parent, "cluster.forward",
        otel.kind = "producer",
        tern.peer_node = node,
    );
    let traceparent = inject(&span.context());
    (span, traceparent)
}

/// `cluster.apply`: a message another node forwarded here, handled until
/// it is answered; the child of the sender's `cluster.forward`. None when
/// the message carries no `traceparent` (the sender did not sample it, or
/// traces nothing) or an unsampled one.
pub fn apply_span(traceparent: &str, origin_node: u64, topic: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let Some(parent) = extract(traceparent) else {
        return Span::none();
    };
    if !parent.span().span_context().is_sampled() {
        return Span::none();
    }
    let span = tracing::info_span!(target: TARGET, parent: None, "cluster.apply",
        otel.kind = "consumer",
        tern.origin_node = origin_node,
        messaging.destination.name = topic,
    );
    span.set_parent(parent);
    span
}

/// Adds the trace id to the span's fields, so log lines inside it carry it.
fn record_trace_id(span: &Span, context: &SpanContext) {
    if context.is_sampled() {
        span.record("trace_id", tracing::field::display(context.trace_id()));
    }
}

/// The `traceparent` of `cx`'s span; empty if it has none.
fn inject(cx: &opentelemetry::Context) -> String {
    let mut carrier = Carrier(String::new());
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.0
}

/// The remote context in a `traceparent` value; `None` if it does not parse.
fn extract(traceparent: &str) -> Option<opentelemetry::Context> {
    if traceparent.is_empty() {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&Carrier(traceparent));
    cx.span().span_context().is_valid().then_some(cx)
}

/// A carrier of the one header this crate propagates.
struct Carrier<T>(T);

impl Injector for Carrier<String> {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = value;
        }
    }
}

impl Extractor for Carrier<&str> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_garbage_is_ignored() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = extract(value).expect("a valid traceparent");
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(inject(&cx), value);
        for bad in [
            "",
            "00-xyz",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert!(extract(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn spans_are_none_when_telemetry_is_off() {
        assert!(route_span().is_none());
        assert!(forward_span(2).0.is_none());
        assert!(apply_span("", 1, "t").is_none());
        assert!(deliver_span(&Span::none(), "c", QoS::AtLeastOnce).is_none());
        assert!(store_span(&Span::none()).is_none());
    }
}
