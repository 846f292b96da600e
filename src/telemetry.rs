//! OpenTelemetry traces (`telemetry.otlp_endpoint`; off by default): one span per finished request with a child
//! per upstream attempt, GenAI semantic-convention attributes, exported over OTLP/HTTP (protobuf) with the
//! official `opentelemetry` / `opentelemetry_sdk` / `opentelemetry-otlp` crates.
//!
//! Owns turning a finished [`RequestRecord`] into spans, after the fact: a task subscribed to the event stream
//! builds them with the record's own times (the request from its start for `total_ms`; attempts one after another
//! from the same start, each for its `ms`) and hands them to the SDK's batch processor, which exports from its
//! own thread with a timeout. So the request path does nothing for tracing, and a slow or dead collector costs
//! only dropped spans (the processor's queue is bounded), never a slower request. Must not put prompt or
//! response content, or any key, into a span: names of gateway keys and upstream tokens only.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::catalog::Snapshot;
use crate::config::{ChannelProtocol, TelemetryConfig};
use crate::events::Event;
use crate::proxy::AppState;
use crate::upstream::FailureClass;
use crate::usage::{Outcome, RequestRecord};

/// Bound on one export request to the collector.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The running exporter; [`Traces::shutdown`] flushes what is queued.
pub struct Traces {
    provider: SdkTracerProvider,
    task: tokio::task::JoinHandle<()>,
}

pub use crate::config::otlp_traces_url as traces_url;

/// Starts exporting spans of the requests the server finishes, when `cfg` names a collector. The server's
/// snapshot tells each channel's provider (`gen_ai.system`) at the time a request finishes.
pub fn start(cfg: &TelemetryConfig, state: &Arc<AppState>) -> anyhow::Result<Option<Traces>> {
    let Some(endpoint) = &cfg.otlp_endpoint else { return Ok(None) };
    let url = traces_url(endpoint).map_err(anyhow::Error::msg)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Export { client: state.client.clone(), runtime: tokio::runtime::Handle::current() })
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(cfg.service_name.clone().unwrap_or_else(|| "router".into()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let tracer = provider.tracer("router");
    let mut rx = state.events.subscribe();
    let state = state.clone();
    let task = tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match rx.recv().await {
                Ok(Event::RequestFinished(r)) => emit(&tracer, &state.snapshot.load(), &r),
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => tracing::warn!("traces: {n} requests were not traced (too many at once)"),
                Err(RecvError::Closed) => break,
            }
        }
    });
    tracing::info!("traces: exporting to {url}");
    Ok(Some(Traces { provider, task }))
}

impl Traces {
    /// Stops following requests and exports what is queued (bounded by the export timeout).
    pub async fn shutdown(self) {
        self.task.abort();
        let provider = self.provider;
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
                tracing::warn!("traces: final export failed: {e}");
            }
        })
        .await;
    }
}

/// The exporter's HTTP client: the router's own `reqwest` client, driven on the server's runtime (the SDK's batch
/// processor calls it from its own thread).
#[derive(Debug)]
struct Export {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Export {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let resp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .timeout(EXPORT_TIMEOUT)
                .send()
                .await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = sent.await??;
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        Ok(out)
    }
}

/// `gen_ai.system` of a channel's provider (GenAI semantic conventions).
fn system(snap: &Snapshot, channel: &str) -> &'static str {
    match snap.channel(channel).map(|c| c.protocol) {
        Some(ChannelProtocol::Openai) => "openai",
        Some(ChannelProtocol::Anthropic) => "anthropic",
        Some(ChannelProtocol::Azure) => "az.ai.openai",
        Some(ChannelProtocol::Gemini) => "gcp.gemini",
        None => "_OTHER",
    }
}

/// `gen_ai.operation.name` of a client path.
fn operation(path: &str) -> &'static str {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    match p {
        "/embeddings" => "embeddings",
        "/messages/count_tokens" => "count_tokens",
        _ => "chat",
    }
}

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// The spans of one finished request: the request (kind server) and one child per attempt (kind client).
pub fn emit(tracer: &impl Tracer<Span: Send + Sync + 'static>, snap: &Snapshot, r: &RequestRecord) {
    let op = operation(&r.path);
    let start = at(r.time_ms);
    let mut attrs = vec![
        KeyValue::new("gen_ai.operation.name", op),
        KeyValue::new("gen_ai.request.model", r.requested_model.clone()),
        KeyValue::new("router.request_id", crate::usage::format_id(r.id)),
        KeyValue::new("router.outcome", r.outcome.as_str()),
        KeyValue::new("router.attempts", r.attempts.len() as i64),
        KeyValue::new("router.stream", r.stream),
        KeyValue::new("url.path", r.path.clone()),
        KeyValue::new("http.response.status_code", i64::from(r.status)),
    ];
    if let Some(c) = &r.channel {
        attrs.push(KeyValue::new("gen_ai.system", system(snap, c)));
        attrs.push(KeyValue::new("router.channel", c.clone()));
    }
    let opt = |k: &'static str, v: Option<&str>| v.map(|v| KeyValue::new(k, v.to_string()));
    attrs.extend(opt("gen_ai.response.model", r.upstream_model.as_deref()));
    attrs.extend(opt("router.endpoint", r.endpoint.as_deref()));
    attrs.extend(opt("router.token", r.token_key.as_deref()));
    attrs.extend(opt("router.gateway_key", r.gateway_key.as_deref()));
    if !r.tokens.is_zero() {
        let t = &r.tokens;
        attrs.push(KeyValue::new("gen_ai.usage.input_tokens", t.total_input() as i64));
        attrs.push(KeyValue::new("gen_ai.usage.output_tokens", t.output as i64));
        attrs.push(KeyValue::new("gen_ai.usage.cache_read.input_tokens", t.cache_read as i64));
        attrs.push(KeyValue::new("gen_ai.usage.cache_creation.input_tokens", t.cache_write as i64));
        attrs.push(KeyValue::new("router.usage.reasoning_tokens", t.reasoning as i64));
    }
    if let Some(c) = r.cost_usd {
        attrs.push(KeyValue::new("router.cost_usd", c));
    }
    if let Some(ms) = r.ttfb_ms {
        attrs.push(KeyValue::new("router.ttfb_ms", i64::from(ms)));
    }
    let failed = !matches!(r.outcome, Outcome::Ok);
    if failed {
        attrs.push(KeyValue::new("error.type", r.outcome.as_str()));
    }
    let mut span = tracer
        .span_builder(format!("{op} {}", r.requested_model))
        .with_kind(SpanKind::Server)
        .with_start_time(start)
        .with_attributes(attrs)
        .start(tracer);
    if failed {
        span.set_status(Status::error(r.error.clone().unwrap_or_else(|| r.outcome.as_str().to_string())));
    }
    let parent = Context::new().with_span(span);
    let mut cursor = r.time_ms;
    for a in &r.attempts {
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", op),
            KeyValue::new("gen_ai.system", system(snap, &a.channel)),
            KeyValue::new("gen_ai.request.model", a.model.clone()),
            KeyValue::new("router.channel", a.channel.clone()),
            KeyValue::new("router.endpoint", a.endpoint.clone()),
            KeyValue::new("router.token", a.token_key.clone()),
            KeyValue::new("router.outcome", a.outcome.code()),
        ];
        if let Some(s) = a.status {
            attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        if a.outcome != FailureClass::Ok {
            attrs.push(KeyValue::new("error.type", a.outcome.code()));
        }
        let mut child = tracer
            .span_builder(format!("{op} {}", a.model))
            .with_kind(SpanKind::Client)
            .with_start_time(at(cursor))
            .with_attributes(attrs)
            .start_with_context(tracer, &parent);
        if a.outcome != FailureClass::Ok {
            child.set_status(Status::error(a.outcome.code()));
        }
        cursor += i64::from(a.ms);
        child.end_with_timestamp(at(cursor));
    }
    parent.span().end_with_timestamp(at(r.time_ms + i64::from(r.total_ms)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_urls() {
        assert_eq!(traces_url("http://127.0.0.1:4318").unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(traces_url("https://c/otlp/v1/traces").unwrap(), "https://c/otlp/v1/traces");
        assert!(traces_url("c:4318").is_err());
        assert!(traces_url("not a url").is_err());
    }

    #[test]
    fn operations_follow_the_path() {
        assert_eq!(operation("/v1/chat/completions"), "chat");
        assert_eq!(operation("/v1/messages"), "chat");
        assert_eq!(operation("/v1/embeddings"), "embeddings");
    }
}
