//! Talking to upstreams: the one HTTP client, URL and auth per provider kind.
//!
//! Owns how a request for (channel, endpoint, token, model, operation) becomes an HTTP request, and the clients
//! that send it (`wire`: the proxy's; [`client`] and [`probe_client`]: reqwest, for everything else). What an upstream
//! failure means (its class, failover, cooldown, redaction) is `crate::failure`; health, latency and cooldowns
//! are live state (`crate::live::health`). The plaintext key is put on the wire here and nowhere else.

pub mod fasttest;
pub mod h1;
pub mod wire;

/// Moved: failure classification is `crate::failure` (a value the records carry), health is live state
/// (`crate::live::health`); both stay reachable here for callers written against the old paths.
pub use crate::failure;
pub use crate::live::health;

pub use failure::{FailureClass, UpstreamError, parse_retry_after, scrub, send_error};

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
    /// Gemini `models/{model}:embedContent` (one embedding).
    EmbedContent,
    /// Gemini `models/{model}:batchEmbedContents` (what the GenAI SDKs' `embed_content` sends).
    BatchEmbedContents,
}

impl Operation {
    /// A Gemini-API operation (the model is in the URL path, not the body).
    pub fn is_gemini(self) -> bool {
        matches!(
            self,
            Operation::GenerateContent
                | Operation::StreamGenerateContent
                | Operation::GeminiCountTokens
                | Operation::EmbedContent
                | Operation::BatchEmbedContents
        )
    }

    /// An operation that asks for embeddings (routed to embedding models).
    pub fn is_embedding(self) -> bool {
        matches!(self, Operation::Embeddings | Operation::EmbedContent | Operation::BatchEmbedContents)
    }

    /// `:streamGenerateContent`: the stream is asked for by the path, not the body.
    pub fn is_gemini_stream(self) -> bool {
        self == Operation::StreamGenerateContent
    }
}

/// Upstream response headers the proxy reads or passes back to the client (`name` in lower case): the body's
/// type, retry hints, request ids, rate-limit information. The plain-HTTP client keeps only these when it reads
/// an answer's head ([`h1`]); the client's response gets them through `proxy::headers::downstream_headers`.
pub fn passed_back(name: &[u8]) -> bool {
    matches!(
        name,
        b"content-type"
            | b"retry-after"
            | b"retry-after-ms"
            | b"x-request-id"
            | b"request-id"
            | b"openai-processing-ms"
            | b"openai-version"
            | b"cache-control"
    ) || name.starts_with(b"x-ratelimit-")
        || name.starts_with(b"anthropic-ratelimit-")
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
                Operation::EmbedContent => format!("{root}/models/{model}:embedContent"),
                Operation::BatchEmbedContents => format!("{root}/models/{model}:batchEmbedContents"),
                _ => format!("{root}/openai{}", openai_path(op)),
            }
        }
        ChannelProtocol::Anthropic => {
            let path = match op {
                Operation::CountTokens => "/v1/messages/count_tokens",
                Operation::Models => "/v1/models",
                _ => "/v1/messages",
            };
            [base, path].concat()
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
        ChannelProtocol::Openai => [base, openai_path(op)].concat(),
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
    let has_version = headers.contains_key("anthropic-version");
    own_headers(channel, endpoint, token, op, has_version, |name, value| {
        headers.insert(name, value);
    });
}

/// The headers [`auth_headers`] sets, each handed to `put` (which replaces a header of the same name);
/// `has_version`: the request already carries `anthropic-version`.
fn own_headers(
    channel: &Channel,
    endpoint: &Endpoint,
    token: &Token,
    op: Operation,
    has_version: bool,
    mut put: impl FnMut(HeaderName, HeaderValue),
) {
    let key = token.secret.expose();
    if !key.is_empty() {
        let (name, value) = match channel.protocol {
            ChannelProtocol::Anthropic => (HeaderName::from_static("x-api-key"), HeaderValue::from_str(key)),
            ChannelProtocol::Azure => (HeaderName::from_static("api-key"), HeaderValue::from_str(key)),
            ChannelProtocol::Gemini if op.is_gemini() => {
                (HeaderName::from_static("x-goog-api-key"), HeaderValue::from_str(key))
            }
            _ => (
                reqwest::header::AUTHORIZATION,
                HeaderValue::from_maybe_shared(bytes::Bytes::from(["Bearer ", key].concat())),
            ),
        };
        if let Ok(mut v) = value {
            v.set_sensitive(true);
            put(name, v);
        }
    }
    if channel.protocol == ChannelProtocol::Anthropic && !has_version {
        put(HeaderName::from_static("anthropic-version"), HeaderValue::from_static("2023-06-01"));
    }
    for (k, v) in channel.headers.iter().chain(endpoint.headers.iter()) {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            put(k, v);
        }
    }
}

/// The headers of a proxied request: the client's that may go upstream (`forwarded`, the proxy's rule), then the
/// router's own (auth, fixed and configured headers, the body's type), which replace client headers of the same
/// name. The plain-HTTP client writes them straight into the request head ([`h1`]); the others get a
/// [`HeaderMap`] ([`Outbound::into_map`]). No map is built for a plain-HTTP request: building one costs two
/// allocations and a hash of every name, per request.
pub struct Outbound<'a> {
    client: Option<&'a HeaderMap>,
    forwarded: fn(&str) -> bool,
    own: Vec<(HeaderName, HeaderValue)>,
}

impl<'a> Outbound<'a> {
    /// The client's `headers` that `forwarded` lets through, and nothing of the router's yet.
    pub fn new(client: &'a HeaderMap, forwarded: fn(&str) -> bool) -> Outbound<'a> {
        Outbound { client: Some(client), forwarded, own: Vec::with_capacity(4) }
    }

    /// No client headers (tests, and requests the router makes itself).
    pub fn none() -> Outbound<'static> {
        Outbound { client: None, forwarded: |_| false, own: Vec::new() }
    }

    /// Adds the router's own auth and fixed headers for a token sent for `op` (see [`auth_headers`]).
    pub fn auth(&mut self, channel: &Channel, endpoint: &Endpoint, token: &Token, op: Operation) {
        let has_version = self.contains(&HeaderName::from_static("anthropic-version"));
        own_headers(channel, endpoint, token, op, has_version, |name, value| self.set(name, value));
    }

    /// Sets one of the router's own headers, replacing any of the same name.
    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        match self.own.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.own.push((name, value)),
        }
    }

    /// Whether the request will carry a header `name`.
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.own.iter().any(|(n, _)| n == name)
            || ((self.forwarded)(name.as_str()) && self.client.is_some_and(|c| c.contains_key(name)))
    }

    /// Hands every header the request carries to `f`, the client's first.
    pub fn for_each(&self, mut f: impl FnMut(&HeaderName, &HeaderValue)) {
        if let Some(client) = self.client {
            for (name, value) in client {
                if (self.forwarded)(name.as_str()) && !self.own.iter().any(|(n, _)| n == name) {
                    f(name, value);
                }
            }
        }
        for (name, value) in &self.own {
            f(name, value);
        }
    }

    /// The same headers as a map, for the clients that take one.
    pub fn into_map(self) -> HeaderMap {
        let mut out = HeaderMap::with_capacity(self.client.map_or(0, HeaderMap::len) + self.own.len());
        self.for_each(|name, value| {
            out.append(name.clone(), value.clone());
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_routers_own_headers_replace_the_clients_and_the_filter_holds() {
        let mut client = HeaderMap::new();
        client.insert("content-type", HeaderValue::from_static("text/plain"));
        client.insert("authorization", HeaderValue::from_static("Bearer gateway-key"));
        client.append("x-custom", HeaderValue::from_static("a"));
        client.append("x-custom", HeaderValue::from_static("b"));
        let mut out = Outbound::new(&client, |n| n != "authorization");
        let has = |out: &Outbound, name: &'static str| out.contains(&HeaderName::from_static(name));
        assert!(has(&out, "content-type") && has(&out, "x-custom"));
        assert!(!has(&out, "authorization"), "filtered out");
        out.set(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        out.set(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer upstream"));
        out.set(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer upstream-2"));
        let mut listed = Vec::new();
        out.for_each(|n, v| listed.push((n.to_string(), v.to_str().unwrap().to_string())));
        let want = [
            ("x-custom", "a"),
            ("x-custom", "b"),
            ("content-type", "application/json"),
            ("authorization", "Bearer upstream-2"),
        ];
        assert_eq!(listed, want.map(|(n, v)| (n.to_string(), v.to_string())));
        let map = out.into_map();
        assert_eq!(map.get_all("x-custom").iter().count(), 2);
        assert_eq!(map["content-type"], "application/json");
        assert_eq!(map.get_all("authorization").iter().collect::<Vec<_>>(), ["Bearer upstream-2"]);
    }
}
