//! Direct checks of `router test`: the reachability check of an (endpoint, key) (the model list or the
//! endpoint's `fast_test_path`) and the minimal chat request per model (`--chat`), each sent straight to the
//! upstream with the key, timed and classified.
//!
//! Must not route (that is [`super::routed`]) or touch health state (that is [`super::report`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Job, MAX_TOKENS, Options, PROMPT};
use crate::catalog::{Channel, Endpoint, Snapshot, Token};
use crate::config::ChannelProtocol;
use crate::failure::{self, FailureClass, describe, redact};
use crate::protocol::Protocol;
use crate::protocol::sse::SseParser;
use crate::protocol::usage::UsageMeter;
use crate::upstream::{self, Operation};
use crate::usage::Tokens;

/// Which check a result is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A cheap GET: the model list or `fast_test_path`.
    Reachability,
    /// A minimal real request to one model.
    Chat,
    /// An attempt of a real request through the in-process proxy.
    Request,
}

/// One check of one key of one endpoint. Holds no secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub channel: String,
    pub endpoint: String,
    pub token_key: String,
    pub check: CheckKind,
    /// The model of a chat check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What was asked, e.g. `GET http://host/v1/models` (query left off).
    pub request: String,
    /// HTTP status, when the upstream answered.
    pub status: Option<u16>,
    /// Time until the response headers, ms.
    pub latency_ms: Option<u64>,
    /// Chat: time until the first body byte, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u64>,
    /// Time until the whole answer was read, ms.
    pub total_ms: Option<u64>,
    /// Chat: what the upstream reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    pub result: FailureClass,
    /// The class in words.
    pub message: String,
    /// What was seen (`HTTP 401: invalid api key`), never the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `Retry-After` of a refusal, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Health-table keys of the endpoint and the token (for [`report`]).
    #[serde(skip)]
    pub(super) health: (String, String),
}

impl CheckResult {
    pub fn ok(&self) -> bool {
        self.result == FailureClass::Ok
    }

    fn new(ch: &Channel, ep: &Endpoint, tok: &Token, check: CheckKind, model: Option<&str>, request: String) -> Self {
        CheckResult {
            channel: ch.name.to_string(),
            endpoint: ep.name.to_string(),
            token_key: tok.token_key.to_string(),
            check,
            model: model.map(str::to_string),
            request,
            status: None,
            latency_ms: None,
            ttfb_ms: None,
            total_ms: None,
            tokens: None,
            result: FailureClass::Ok,
            message: String::new(),
            detail: None,
            retry_after_ms: None,
            health: (ep.health_key.to_string(), tok.health_key.to_string()),
        }
    }

    fn set(&mut self, class: FailureClass, detail: Option<String>) {
        self.result = class;
        self.message = class.words().to_string();
        self.detail = detail;
    }
}

/// Runs every job, at most `opts.concurrency` at once; results in job order. `on_done` is called once per
/// finished job (progress bars).
pub async fn check_all(
    snap: Arc<Snapshot>,
    jobs: &[Job],
    opts: &Options,
    on_done: &(dyn Fn() + Send + Sync),
) -> Vec<CheckResult> {
    let client = upstream::probe_client(opts.timeout);
    let limit = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let mut slots: Vec<Option<CheckResult>> = vec![None; jobs.len()];
    let mut tasks = tokio::task::JoinSet::new();
    for (i, job) in jobs.iter().cloned().enumerate() {
        let (snap, client, limit, timeout) = (snap.clone(), client.clone(), limit.clone(), opts.timeout);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let ch = &snap.channels[job.channel];
            let ep = &ch.endpoints[job.endpoint];
            let tok = &ep.tokens[job.token];
            let r = match &job.model {
                None => reachability(&client, ch, ep, tok, timeout).await,
                Some(m) => chat(&client, ch, ep, tok, m, timeout).await,
            };
            (i, r)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, r)) => slots[i] = Some(r),
            Err(e) => tracing::error!("a test task failed: {e}"),
        }
        on_done();
    }
    slots
        .into_iter()
        .zip(jobs)
        .map(|(r, job)| {
            r.unwrap_or_else(|| {
                let ch = &snap.channels[job.channel];
                let ep = &ch.endpoints[job.endpoint];
                let kind = if job.model.is_some() { CheckKind::Chat } else { CheckKind::Reachability };
                let mut r = CheckResult::new(ch, ep, &ep.tokens[job.token], kind, job.model.as_deref(), String::new());
                r.set(FailureClass::BadResponse, Some("the check did not finish".into()));
                r
            })
        })
        .collect()
}

/// `url` without its query (which some providers use for versions, never shown in full).
fn shown(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The key's auth headers for a check sent for `op`.
fn auth(ch: &Channel, ep: &Endpoint, tok: &Token, op: Operation) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    upstream::auth_headers(ch, ep, tok, op, &mut headers);
    headers
}

/// Sends a check's request. On an answer, its status, time to headers and `Retry-After` go into `r` and the
/// response comes back with the time it was sent; on a transport error `r` says why and there is nothing.
async fn send(
    r: &mut CheckResult,
    req: reqwest::RequestBuilder,
    timeout: Duration,
) -> Option<(reqwest::Response, Instant)> {
    let t0 = Instant::now();
    match req.send().await {
        Ok(resp) => {
            r.latency_ms = Some(ms(t0.elapsed()));
            r.status = Some(resp.status().as_u16());
            r.retry_after_ms = upstream::parse_retry_after(resp.headers()).map(ms);
            Some((resp, t0))
        }
        Err(e) => {
            let (class, detail) = failure::transport(&e, Some(timeout));
            r.set(class, Some(detail));
            None
        }
    }
}

/// The URL of the reachability check: the model list, or the endpoint's own `fast_test_path`.
pub fn reachability_url(ch: &Channel, ep: &Endpoint) -> String {
    let default_path = match ch.protocol {
        ChannelProtocol::Anthropic => "/v1/models",
        _ => "/models",
    };
    if ep.fast_test_path == default_path || ep.fast_test_path.is_empty() {
        upstream::url(ch, ep, Operation::Models, "")
    } else if ep.fast_test_path.starts_with('/') {
        format!("{}{}", ep.base_url, ep.fast_test_path)
    } else {
        format!("{}/{}", ep.base_url, ep.fast_test_path)
    }
}

/// GETs the model list (or `fast_test_path`) with the key: status and latency.
pub async fn reachability(
    client: &reqwest::Client,
    ch: &Channel,
    ep: &Endpoint,
    tok: &Token,
    timeout: Duration,
) -> CheckResult {
    let url = reachability_url(ch, ep);
    let is_model_list = url == upstream::url(ch, ep, Operation::Models, "");
    let mut r = CheckResult::new(ch, ep, tok, CheckKind::Reachability, None, format!("GET {}", shown(&url)));
    let Some((resp, t0)) = send(&mut r, client.get(&url).headers(auth(ch, ep, tok, Operation::Models)), timeout).await
    else {
        return r;
    };
    let status = resp.status().as_u16();
    let body = resp.bytes().await;
    r.total_ms = Some(ms(t0.elapsed()));
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let (class, detail) = failure::transport(&e, Some(timeout));
            let class = if class == FailureClass::Connect { FailureClass::BadResponse } else { class };
            r.set(class, Some(format!("HTTP {status}, then {detail}")));
            return r;
        }
    };
    let class = FailureClass::of_answer(status, &body);
    if class != FailureClass::Ok {
        r.set(class, Some(describe(status, &body, &tok.secret)));
    } else if is_model_list && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        r.set(FailureClass::BadResponse, Some(format!("HTTP {status}, but not a model list (is base_url right?)")));
    } else {
        r.set(FailureClass::Ok, None);
    }
    r
}

/// The body of a minimal chat request in the channel's own protocol (streamed, so the first byte can be timed).
pub fn chat_body(protocol: Protocol, model: &str) -> serde_json::Value {
    let messages = serde_json::json!([{ "role": "user", "content": PROMPT }]);
    match protocol {
        Protocol::Openai => serde_json::json!({
            "model": model, "messages": messages, "max_tokens": MAX_TOKENS, "stream": true,
            "stream_options": { "include_usage": true },
        }),
        Protocol::Anthropic => serde_json::json!({
            "model": model, "messages": messages, "max_tokens": MAX_TOKENS, "stream": true,
        }),
        Protocol::Gemini => serde_json::json!({
            "contents": [{ "role": "user", "parts": [{ "text": PROMPT }] }],
            "generationConfig": { "maxOutputTokens": MAX_TOKENS },
        }),
    }
}

/// Sends a minimal chat request to `model` with the key: status, time to first byte, total time, tokens.
pub async fn chat(
    client: &reqwest::Client,
    ch: &Channel,
    ep: &Endpoint,
    tok: &Token,
    model: &str,
    timeout: Duration,
) -> CheckResult {
    let wire = ch.protocol.wire();
    let op = match wire {
        Protocol::Openai => Operation::ChatCompletions,
        Protocol::Anthropic => Operation::Messages,
        Protocol::Gemini => Operation::StreamGenerateContent,
    };
    let url = upstream::url(ch, ep, op, model);
    let mut r = CheckResult::new(ch, ep, tok, CheckKind::Chat, Some(model), format!("POST {}", shown(&url)));
    let req = client.post(&url).headers(auth(ch, ep, tok, op)).json(&chat_body(wire, model));
    let Some((resp, t0)) = send(&mut r, req, timeout).await else { return r };
    let status = resp.status().as_u16();
    let sse = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let ok_status = resp.status().is_success();
    let mut meter = UsageMeter::new(wire);
    let mut parser = SseParser::new();
    let mut error_body = Vec::new();
    let mut stream = resp.bytes_stream();
    let mut broke: Option<reqwest::Error> = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                if r.ttfb_ms.is_none() && !c.is_empty() {
                    r.ttfb_ms = Some(ms(t0.elapsed()));
                }
                if !ok_status {
                    if error_body.len() < 64 * 1024 {
                        error_body.extend_from_slice(&c);
                    }
                } else if sse {
                    parser.feed_with(&c, |ev| {
                        meter.event(&ev);
                    });
                } else {
                    meter.body_chunk(&c);
                }
            }
            Err(e) => {
                broke = Some(e);
                break;
            }
        }
    }
    r.total_ms = Some(ms(t0.elapsed()));
    if !ok_status {
        r.set(FailureClass::of_answer(status, &error_body), Some(describe(status, &error_body, &tok.secret)));
        return r;
    }
    if sse && let Some(ev) = parser.finish() {
        meter.event(&ev);
    }
    let metered = meter.finish();
    r.tokens = metered.tokens;
    if let Some(e) = broke {
        let (class, detail) = failure::transport(&e, Some(timeout));
        let class = if class == FailureClass::Timeout { FailureClass::Timeout } else { FailureClass::BadResponse };
        r.set(class, Some(format!("HTTP {status}, then {detail}")));
    } else if let Some(err) = metered.stream_error {
        r.set(FailureClass::BadResponse, Some(redact(&format!("error inside the answer: {err}"), &tok.secret)));
    } else if !metered.completed && metered.tokens.is_none() {
        r.set(FailureClass::BadResponse, Some(format!("HTTP {status}, but no complete answer")));
    } else {
        r.set(FailureClass::Ok, None);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tests::snapshot;

    #[test]
    fn reachability_url_uses_the_model_list_or_fast_test_path() {
        let s = snapshot(
            "channels:\n  - name: a\n    base_url: http://h/v1\n    keys: [k]\n  - name: b\n    endpoints:\n      - {name: x, base_url: 'http://h/v1', keys: [k], fast_test_path: /health}\n",
        );
        assert_eq!(reachability_url(&s.channels[0], &s.channels[0].endpoints[0]), "http://h/v1/models");
        assert_eq!(reachability_url(&s.channels[1], &s.channels[1].endpoints[0]), "http://h/v1/health");
    }
}
