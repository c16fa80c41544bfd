//! OTLP export of the turn spans (cargo feature `otlp`, off by default): when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, every `tracing` span is also sent to that collector
//! over OTLP/HTTP (protobuf, `<endpoint>/v1/traces`), batched off the request path.
//!
//! A turn's `turn` span is attached to the turn's W3C trace ([`link`]): the gateway's and
//! the worker's spans share the trace id the `traceparent` header carries, with the span the
//! header names as their parent, so a collector shows one trace per turn across processes.

use std::sync::OnceLock;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::trace::TraceContext;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The standard variable naming the collector (`http://collector:4318`).
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// A tracer provider exporting to `endpoint` (the collector's base URL), for `service`.
pub fn provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, String> {
    let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    // The blocking HTTP client must not be built on a runtime thread: build it aside.
    let exporter = std::thread::spawn(move || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces)
            .build()
    })
    .join()
    .map_err(|_| "building the OTLP exporter panicked".to_string())?
    .map_err(|e| format!("OTLP exporter: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build())
}

/// The `tracing` layer exporting spans, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn layer<S>()
-> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let endpoint = std::env::var(ENDPOINT_VAR).ok().filter(|e| !e.is_empty())?;
    let service = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "whisperfleet".into());
    match provider(&endpoint, &service) {
        Ok(p) => {
            let tracer = p.tracer("whisperfleet");
            let _ = PROVIDER.set(p);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        Err(e) => {
            eprintln!("OTLP export off: {e}");
            None
        }
    }
}

/// Makes `span` a child of the span `parent` names, in `parent`'s trace.
pub fn link(span: &tracing::Span, parent: &TraceContext) {
    let flags = if parent.sampled() {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id_bytes()),
        SpanId::from_bytes(parent.span_id_bytes()),
        flags,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// Sends what is still batched (call before exit).
pub fn flush() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::mpsc;
    use tracing_subscriber::layer::SubscriberExt;

    /// A collector stand-in: answers every request 200 and hands over (path, body).
    fn collector() -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                let _ = tx.send((path, body));
            }
        });
        (url, rx)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// A turn's span reaches the collector in the turn's trace, as a child of the span
    /// its `traceparent` named.
    #[test]
    fn a_linked_span_is_exported_in_the_turns_trace() {
        let (url, rx) = collector();
        let provider = provider(&url, "otlp-test").unwrap();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        let parent = TraceContext::new_root();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("turn", turn_id = "t-1");
            link(&span, &parent);
            span.in_scope(|| tracing::info!("inside the turn"));
        });
        provider.force_flush().unwrap();
        let (path, body) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("an export request");
        assert_eq!(path, "/v1/traces");
        assert!(
            contains(&body, &parent.trace_id_bytes()),
            "the turn's trace id"
        );
        assert!(contains(&body, &parent.span_id_bytes()), "its parent span");
        assert!(contains(&body, b"turn"), "the span's name");
        let _ = provider.shutdown();
    }
}
