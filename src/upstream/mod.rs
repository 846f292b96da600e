//! Talking to upstreams: the one HTTP client, URL and auth per provider kind.
//!
//! Owns how a request for (channel, endpoint, token, model, operation) becomes an HTTP request. What an upstream
//! failure means (its class, failover, cooldown, redaction) is [`failure`]; health, latency and cooldowns are in
//! [`health`]. The plaintext key is put on the wire here and nowhere else.

pub mod failure;
pub mod fasttest;
pub mod health;

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

/// The URL for `op` on an endpoint; `model` is the upstream model (Azure puts it in the path).
pub fn url(channel: &Channel, endpoint: &Endpoint, op: Operation, model: &str) -> String {
    let base = endpoint.base_url.as_str();
    match channel.protocol {
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
        ChannelProtocol::Openai | ChannelProtocol::Gemini => {
            let path = match op {
                Operation::ChatCompletions | Operation::Messages | Operation::CountTokens => "/chat/completions",
                Operation::Completions => "/completions",
                Operation::Responses => "/responses",
                Operation::Embeddings => "/embeddings",
                Operation::Models => "/models",
            };
            format!("{base}{path}")
        }
    }
}

/// Auth and fixed headers for a token: Bearer (openai, gemini), `x-api-key` + `anthropic-version`
/// (anthropic), `api-key` (azure). Channel and endpoint extra headers are added after.
pub fn auth_headers(channel: &Channel, endpoint: &Endpoint, token: &Token, headers: &mut HeaderMap) {
    let key = token.secret.expose();
    if !key.is_empty() {
        let (name, value) = match channel.protocol {
            ChannelProtocol::Anthropic => (HeaderName::from_static("x-api-key"), HeaderValue::from_str(key)),
            ChannelProtocol::Azure => (HeaderName::from_static("api-key"), HeaderValue::from_str(key)),
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
