//! Talking to upstreams: the one HTTP client, URL and auth per provider kind, and failure classification.
//!
//! Owns how a request for (channel, endpoint, token, model, operation) becomes an HTTP request, and what an
//! upstream failure means for failover (`UpstreamError`). Health, latency and cooldowns are in [`health`].
//! The plaintext key is put on the wire here and nowhere else.

pub mod fasttest;
pub mod health;

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::catalog::{Channel, Endpoint, Token};
use crate::config::{ChannelProtocol, UpstreamConfig};

/// What the client asked for, as far as the upstream URL is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ChatCompletions,
    /// Legacy text completions (`prompt`, `suffix` for fill-in-the-middle): OpenAI-protocol channels only.
    Completions,
    Responses,
    Embeddings,
    Messages,
    CountTokens,
    Models,
    /// Gemini `models/{model}:generateContent`.
    GenerateContent,
    /// Gemini `models/{model}:streamGenerateContent` (the client's `alt=sse` is forwarded with its query).
    StreamGenerateContent,
    /// Gemini `models/{model}:countTokens`.
    GeminiCountTokens,
}

impl Operation {
    /// A Gemini-API operation (the model is in the URL path, not the body).
    pub fn is_gemini(self) -> bool {
        matches!(self, Operation::GenerateContent | Operation::StreamGenerateContent | Operation::GeminiCountTokens)
    }

    /// `:streamGenerateContent`: the stream is asked for by the path, not the body.
    pub fn is_gemini_stream(self) -> bool {
        self == Operation::StreamGenerateContent
    }
}

/// The shared client for proxied traffic: no overall timeout (streams may run long), connect timeout set,
/// no automatic decompression (bodies are metered and forwarded as they are), pooled connections.
#[expect(clippy::disallowed_methods, reason = "this is the one place clients are built")]
pub fn client(cfg: &UpstreamConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(cfg.connect_timeout.0)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("router/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("TLS backend initialises")
}

/// A client for short one-off checks (local probes, discovery, balance): every request bounded by `timeout`.
#[expect(clippy::disallowed_methods, reason = "this is the one place clients are built")]
pub fn probe_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("router/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("TLS backend initialises")
}

/// The URL for `op` on an endpoint; `model` is the upstream model (Azure and Gemini put it in the path).
///
/// A `gemini` channel speaks two wires under one API root (`https://generativelanguage.googleapis.com/v1beta`):
/// Gemini operations go to the native `{root}/models/{model}:...`, everything else to the OpenAI-compatible
/// `{root}/openai/...`. A base URL ending in `/openai` (the form earlier versions used) names the same root.
pub fn url(channel: &Channel, endpoint: &Endpoint, op: Operation, model: &str) -> String {
    let base = endpoint.base_url.as_str();
    match channel.protocol {
        ChannelProtocol::Gemini => {
            let root = gemini_root(base);
            let model = model.strip_prefix("models/").unwrap_or(model);
            match op {
                Operation::GenerateContent => format!("{root}/models/{model}:generateContent"),
                Operation::StreamGenerateContent => format!("{root}/models/{model}:streamGenerateContent"),
                Operation::GeminiCountTokens => format!("{root}/models/{model}:countTokens"),
                _ => format!("{root}/openai{}", openai_path(op)),
            }
        }
        ChannelProtocol::Anthropic => {
            let path = match op {
                Operation::CountTokens => "/v1/messages/count_tokens",
                Operation::Models => "/v1/models",
                _ => "/v1/messages",
            };
            format!("{base}{path}")
        }
        ChannelProtocol::Azure => {
            let version = channel.api_version.as_deref().unwrap_or("2024-10-21");
            match op {
                Operation::Models => format!("{base}/openai/models?api-version={version}"),
                Operation::Responses => format!("{base}/openai/responses?api-version={version}"),
                _ => {
                    let path = match op {
                        Operation::Embeddings => "embeddings",
                        Operation::Completions => "completions",
                        _ => "chat/completions",
                    };
                    format!("{base}/openai/deployments/{model}/{path}?api-version={version}")
                }
            }
        }
        ChannelProtocol::Openai => format!("{base}{}", openai_path(op)),
    }
}

/// The path of `op` under an OpenAI-compatible base URL (operations of other protocols reach it translated to
/// chat completions).
fn openai_path(op: Operation) -> &'static str {
    match op {
        Operation::Completions => "/completions",
        Operation::Responses => "/responses",
        Operation::Embeddings => "/embeddings",
        Operation::Models => "/models",
        _ => "/chat/completions",
    }
}

/// The API root of a `gemini` channel: its base URL without a trailing `/` or `/openai`.
pub fn gemini_root(base: &str) -> &str {
    let base = base.trim_end_matches('/');
    base.strip_suffix("/openai").unwrap_or(base)
}

/// Auth and fixed headers for a token sent for `op`: Bearer (openai; gemini's OpenAI-compatible side),
/// `x-goog-api-key` (gemini's native operations), `x-api-key` + `anthropic-version` (anthropic), `api-key`
/// (azure). Channel and endpoint extra headers are added after.
pub fn auth_headers(channel: &Channel, endpoint: &Endpoint, token: &Token, op: Operation, headers: &mut HeaderMap) {
    let key = token.secret.expose();
    if !key.is_empty() {
        let (name, value) = match channel.protocol {
            ChannelProtocol::Anthropic => (HeaderName::from_static("x-api-key"), HeaderValue::from_str(key)),
            ChannelProtocol::Azure => (HeaderName::from_static("api-key"), HeaderValue::from_str(key)),
            ChannelProtocol::Gemini if op.is_gemini() => {
                (HeaderName::from_static("x-goog-api-key"), HeaderValue::from_str(key))
            }
            _ => (reqwest::header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {key}"))),
        };
        if let Ok(mut v) = value {
            v.set_sensitive(true);
            headers.insert(name, v);
        }
    }
    if channel.protocol == ChannelProtocol::Anthropic && !headers.contains_key("anthropic-version") {
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }
    for (k, v) in channel.headers.iter().chain(endpoint.headers.iter()) {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            headers.insert(k, v);
        }
    }
}

/// Why an attempt failed, and what that means for failover.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect error: {0}")]
    Connect(String),
    #[error("no response within {0:?}")]
    FirstByteTimeout(Duration),
    #[error("HTTP {status}")]
    Status { status: u16, retry_after: Option<Duration>, quota: bool },
    #[error("stream interrupted: {0}")]
    Interrupted(String),
}

/// What cools down after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoolTarget {
    Endpoint,
    TokenAuth,
    TokenQuota,
    /// 408 / 409 / 429: the token (and honour Retry-After).
    TokenRateLimit,
    ChannelModel,
    Nothing,
}

impl UpstreamError {
    /// Short class name for records and error summaries.
    pub fn class(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::FirstByteTimeout(_) => "timeout",
            UpstreamError::Interrupted(_) => "interrupted",
            UpstreamError::Status { status, quota, .. } => match status {
                401 | 403 => "auth",
                402 => "quota",
                429 if *quota => "quota",
                408 | 409 | 429 => "rate_limited",
                404 => "not_found",
                400 | 413 | 422 => "bad_request",
                504 => "timeout",
                _ if *status >= 500 => "server_error",
                _ => "client_error",
            },
        }
    }

    /// May the next candidate be tried? (The failover table of the design, §5.)
    pub fn retryable(&self, retry_on_timeout: bool) -> bool {
        match self {
            UpstreamError::Connect(_) => true,
            UpstreamError::FirstByteTimeout(_) => retry_on_timeout,
            UpstreamError::Interrupted(_) => false,
            UpstreamError::Status { status, .. } => match status {
                400 | 413 | 422 => false,
                504 => retry_on_timeout,
                401 | 402 | 403 | 404 | 408 | 409 | 429 => true,
                s if *s >= 500 => true,
                _ => false,
            },
        }
    }

    pub fn cool_target(&self) -> CoolTarget {
        match self {
            UpstreamError::Connect(_) | UpstreamError::FirstByteTimeout(_) | UpstreamError::Interrupted(_) => {
                CoolTarget::Endpoint
            }
            UpstreamError::Status { status, quota, .. } => match status {
                401 | 403 => CoolTarget::TokenAuth,
                402 => CoolTarget::TokenQuota,
                429 if *quota => CoolTarget::TokenQuota,
                408 | 409 | 429 => CoolTarget::TokenRateLimit,
                404 => CoolTarget::ChannelModel,
                400 | 413 | 422 => CoolTarget::Nothing,
                s if *s >= 500 => CoolTarget::Endpoint,
                _ => CoolTarget::Nothing,
            },
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Classifies a reqwest send error without exposing URLs with secrets (none are in URLs, but be strict).
pub fn send_error(e: &reqwest::Error) -> UpstreamError {
    let kind = if e.is_connect() {
        "connection refused or unreachable"
    } else if e.is_timeout() {
        "connect timeout"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    let detail = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default();
    UpstreamError::Connect(if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {}", first_line(&detail))
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// `Retry-After` as seconds or an HTTP date; also OpenAI-style `retry-after-ms`.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) =
        headers.get("retry-after-ms").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64((ms / 1000.0).max(0.0)));
    }
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return Some(Duration::from_secs_f64(secs.max(0.0)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(delta.max(0) as u64))
}

/// Replaces any occurrence of the token's key in an upstream error body (some resellers echo the key back)
/// by `[redacted]`, so it never reaches a client, a log or a record.
pub fn scrub(body: bytes::Bytes, secret: &crate::config::Secret) -> bytes::Bytes {
    let key = secret.expose().as_bytes();
    if key.len() < 8 || !body.windows(key.len()).any(|w| w == key) {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(key) {
            out.extend_from_slice(b"[redacted]");
            i += key.len();
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    bytes::Bytes::from(out)
}

/// Does an error body say the account is out of credit? (429 with `insufficient_quota` is not a rate limit.)
pub fn body_says_quota(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_ascii_lowercase();
    [
        "insufficient_quota",
        "insufficient balance",
        "insufficient_balance",
        "quota exceeded",
        "credit balance is too low",
        "billing",
    ]
    .iter()
    .any(|n| text.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_table() {
        let s = |status| UpstreamError::Status { status, retry_after: None, quota: false };
        for st in [401, 402, 403, 404, 408, 409, 429, 500, 502, 503, 529] {
            assert!(s(st).retryable(false), "{st}");
        }
        for st in [400, 413, 422] {
            assert!(!s(st).retryable(true), "{st}");
            assert_eq!(s(st).cool_target(), CoolTarget::Nothing);
        }
        assert!(!s(504).retryable(false));
        assert!(s(504).retryable(true));
        assert_eq!(s(401).cool_target(), CoolTarget::TokenAuth);
        assert_eq!(s(404).cool_target(), CoolTarget::ChannelModel);
        assert_eq!(s(529).cool_target(), CoolTarget::Endpoint);
        assert!(UpstreamError::Connect("x".into()).retryable(false));
        assert!(!UpstreamError::FirstByteTimeout(Duration::from_secs(1)).retryable(false));
        let q = UpstreamError::Status { status: 429, retry_after: None, quota: true };
        assert_eq!(q.cool_target(), CoolTarget::TokenQuota);
    }

    #[test]
    fn gemini_channels_go_native_for_gemini_operations_only() {
        use std::sync::Arc;
        let yaml = "channels:\n  - name: old\n    protocol: gemini\n    keys: [AIza-secret-key-123]\n    models: [g]\n  \
                    - name: root\n    protocol: gemini\n    base_url: https://proxy.example/v1beta/\n    keys: [k2-secret-key-456]\n    models: [g]\n";
        let cfg = crate::config::parse(std::path::Path::new("t.yaml"), yaml, &|_| None).unwrap();
        let snap = crate::catalog::Snapshot::build(Arc::new(cfg), &[], &Default::default(), false);
        let (old, root) = (&snap.channels[0], &snap.channels[1]);
        let google = "https://generativelanguage.googleapis.com/v1beta";
        let url = |ch: &Channel, op| super::url(ch, &ch.endpoints[0], op, "models/g");
        assert_eq!(url(old, Operation::StreamGenerateContent), format!("{google}/models/g:streamGenerateContent"));
        assert_eq!(url(old, Operation::GeminiCountTokens), format!("{google}/models/g:countTokens"));
        assert_eq!(url(old, Operation::ChatCompletions), format!("{google}/openai/chat/completions"));
        assert_eq!(url(old, Operation::Models), format!("{google}/openai/models"), "discovery as before");
        assert_eq!(url(root, Operation::GenerateContent), "https://proxy.example/v1beta/models/g:generateContent");
        assert_eq!(url(root, Operation::ChatCompletions), "https://proxy.example/v1beta/openai/chat/completions");
        let (ep, tok) = (&old.endpoints[0], &old.endpoints[0].tokens[0]);
        let mut h = HeaderMap::new();
        auth_headers(old, ep, tok, Operation::GenerateContent, &mut h);
        assert_eq!(h["x-goog-api-key"], "AIza-secret-key-123");
        assert!(h.get("authorization").is_none());
        let mut h = HeaderMap::new();
        auth_headers(old, ep, tok, Operation::ChatCompletions, &mut h);
        assert_eq!(h["authorization"], "Bearer AIza-secret-key-123");
        assert!(h.get("x-goog-api-key").is_none());
    }

    #[test]
    fn scrub_removes_echoed_keys() {
        let secret = crate::config::Secret::new("sk-live-0123456789");
        let body = bytes::Bytes::from_static(b"{\"error\":\"Incorrect key sk-live-0123456789 provided\"}");
        assert_eq!(&scrub(body, &secret)[..], b"{\"error\":\"Incorrect key [redacted] provided\"}");
        let clean = bytes::Bytes::from_static(b"no key here");
        assert_eq!(scrub(clean.clone(), &secret), clean);
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(250)));
    }
}
