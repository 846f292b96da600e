//! `router test`: end-to-end checks of endpoints, keys, models and routes.
//!
//! Owns what one check is and how its outcome is classified in words a user understands ([`Class`]): the
//! reachability check of an (endpoint, key) (the model list or the endpoint's `fast_test_path`), the minimal chat
//! request per model (`--chat`), the routing decision for a model or tag target and the one real request sent
//! through an in-process copy of the proxy (the same code `serve` runs), and the [`ProbeReport`] that lets a
//! running server learn latency and cooldowns from a test ([`apply`]).
//!
//! Must not print (the CLI does), must not open the store, and never puts a key in a result: keys are named by
//! `token_key`, and text quoted from an upstream is redacted against the key that was sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::catalog::{Channel, Endpoint, ModelKind, Snapshot, Token};
use crate::config::{ChannelProtocol, Config, CooldownConfig, Dur, Strategy};
use crate::error::{UserError, user};
use crate::protocol::Protocol;
use crate::protocol::sse::SseParser;
use crate::protocol::usage::UsageMeter;
use crate::routing::{self, PlanError, RouteRequest};
use crate::tags::{self, TagExpr};
use crate::upstream::failure::{self, FailureClass, describe, error_message, redact};
use crate::upstream::health::{CoolKeys, Health};
use crate::upstream::{self, Operation};
use crate::usage::sink::RecordSink;
use crate::usage::{Attempt, Outcome, RequestRecord, Tokens};

/// The prompt of every real request a test sends.
pub const PROMPT: &str = "Reply with OK";
/// Output tokens a test request may use.
pub const MAX_TOKENS: u32 = 8;

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
    health: (String, String),
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

/// What to test and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Checks in flight at once.
    pub concurrency: usize,
    /// Bound on each request (and on each attempt of a routed request).
    pub timeout: Duration,
    /// Also send a minimal chat request per model.
    pub chat: bool,
    /// Only this model for chat checks (a channel alias is resolved per channel).
    pub model: Option<String>,
    /// Strategy for routed requests; `None`: the config's.
    pub strategy: Option<Strategy>,
}

impl Default for Options {
    fn default() -> Self {
        Self { concurrency: 8, timeout: Duration::from_secs(20), chat: false, model: None, strategy: None }
    }
}

/// What the user's targets select.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// (channel, endpoint) indices to check, in configuration order, each once.
    pub endpoints: Vec<(usize, usize)>,
    /// Model names and tag expressions to route, as given.
    pub routes: Vec<String>,
}

/// Resolves targets: a channel, `channel/endpoint`, a model name (alias, id, `vendor/model`) or a tag expression.
/// No target: every endpoint of every enabled channel. An unknown name is a [`UserError`] with close names.
pub fn select(snap: &Snapshot, targets: &[String]) -> Result<Selection, UserError> {
    let mut sel = Selection::default();
    let push = |sel: &mut Selection, ci: usize, ei: usize| {
        if !sel.endpoints.contains(&(ci, ei)) {
            sel.endpoints.push((ci, ei));
        }
    };
    if targets.is_empty() {
        for (ci, ch) in snap.channels.iter().enumerate().filter(|(_, c)| c.enabled) {
            for ei in 0..ch.endpoints.len() {
                push(&mut sel, ci, ei);
            }
        }
        return Ok(sel);
    }
    for t in targets {
        let t = t.trim();
        if t.is_empty() {
            return Err(user("an empty target").with_hint("name a channel, channel/endpoint, model or tag:expr"));
        }
        if TagExpr::parse(t).is_some() {
            if TagExpr::parse(t).is_some_and(|e| e.is_empty()) {
                return Err(user(format!("`{t}` names no tag")).with_hint("write e.g. tag:qwen,!free"));
            }
            check_routable(snap, t)?;
            sel.routes.push(t.to_string());
            continue;
        }
        if let Some(ci) = snap.channels.iter().position(|c| &*c.name == t) {
            for ei in 0..snap.channels[ci].endpoints.len() {
                push(&mut sel, ci, ei);
            }
            continue;
        }
        if let Some((c, e)) = t.split_once('/')
            && let Some(ci) = snap.channels.iter().position(|ch| &*ch.name == c)
        {
            if let Some(ei) = snap.channels[ci].endpoints.iter().position(|ep| &*ep.name == e) {
                push(&mut sel, ci, ei);
                continue;
            }
            // `vendor/model` on a channel named like the vendor: a model after all?
            if check_routable(snap, t).is_ok() {
                sel.routes.push(t.to_string());
                continue;
            }
            let names: Vec<&str> = snap.channels[ci].endpoints.iter().map(|ep| &*ep.name).collect();
            return Err(user(format!("channel `{c}` has no endpoint `{e}`"))
                .with_hint(format!("endpoints of {c}: {}", names.join(", "))));
        }
        check_routable(snap, t)?;
        sel.routes.push(t.to_string());
    }
    Ok(sel)
}

/// Is `target` a model or tag expression routing knows? Else a user error listing close names.
fn check_routable(snap: &Snapshot, target: &str) -> Result<(), UserError> {
    let health = Health::new();
    let req = route_request(snap, target, Protocol::Openai, None);
    match routing::plan(snap, &health, &req, Instant::now()) {
        Err(PlanError::UnknownModel { closest, .. }) => {
            let mut close: Vec<String> = Vec::new();
            if TagExpr::parse(target).is_none() {
                let mut names: Vec<String> = Vec::new();
                for ch in &snap.channels {
                    names.push(ch.name.to_string());
                    if ch.endpoints.len() > 1 {
                        names.extend(ch.endpoints.iter().map(|e| format!("{}/{}", ch.name, e.name)));
                    }
                }
                close.extend(tags::closest(target, names.iter().map(String::as_str), 3));
            }
            for c in closest {
                if !close.contains(&c) {
                    close.push(c);
                }
            }
            let what = if TagExpr::parse(target).is_some() { "no model matches" } else { "no channel, model or tag" };
            let e = user(format!("{what} `{target}`"));
            Err(if close.is_empty() {
                let channels: Vec<&str> = snap.channels.iter().map(|c| &*c.name).take(8).collect();
                if channels.is_empty() {
                    e.with_hint("no channels are configured")
                } else {
                    e.with_hint(format!("channels: {}", channels.join(", ")))
                }
            } else {
                e.with_hint(format!("did you mean: {}", close.join(", ")))
            })
        }
        _ => Ok(()),
    }
}

fn route_request<'a>(
    snap: &Snapshot,
    model: &'a str,
    client: Protocol,
    strategy: Option<Strategy>,
) -> RouteRequest<'a> {
    RouteRequest {
        model,
        kind: ModelKind::Chat,
        client,
        strategy: strategy.unwrap_or(snap.config.raw.routing.strategy),
        pin: None,
        allow: None,
        translate: true,
        est_input: PROMPT.len() as u64 / 4 + 8,
        est_output: u64::from(MAX_TOKENS),
    }
}

/// One unit of work: a check of a key, or a chat request of a key to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub channel: usize,
    pub endpoint: usize,
    pub token: usize,
    /// `Some`: a chat check of this upstream model.
    pub model: Option<String>,
}

/// The checks the selection asks for: a reachability check per enabled key, and with `chat` a chat check per
/// (key, chat model the key can see). Returns the jobs and notes about what could not be tested.
pub fn jobs(snap: &Snapshot, sel: &Selection, opts: &Options) -> (Vec<Job>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for &(ci, ei) in &sel.endpoints {
        let ch = &snap.channels[ci];
        let ep = &ch.endpoints[ei];
        for (ti, tok) in ep.tokens.iter().enumerate().filter(|(_, t)| t.enabled) {
            out.push(Job { channel: ci, endpoint: ei, token: ti, model: None });
            if !opts.chat {
                continue;
            }
            let models = chat_models(ch, tok, opts.model.as_deref());
            let note = match &opts.model {
                Some(m) => format!("{}: no model `{m}` here; no chat check", ch.name),
                None => format!("{}: no models listed; pass --model to send a chat request", ch.name),
            };
            if models.is_empty() && !notes.contains(&note) {
                notes.push(note);
            }
            for m in models {
                out.push(Job { channel: ci, endpoint: ei, token: ti, model: Some(m) });
            }
        }
    }
    (out, notes)
}

/// Chat models of a channel that `tok` can see; with `wanted`, only that one (an alias resolves to its target; a
/// name matching the channel's patterns is taken as is).
fn chat_models(ch: &Channel, tok: &Token, wanted: Option<&str>) -> Vec<String> {
    let visible =
        |id: &str| ch.model(id).is_none_or(|m| m.tokens.is_empty() || m.tokens.iter().any(|t| **t == *tok.fingerprint));
    match wanted {
        Some(w) => {
            let id = ch.aliases.get(w).cloned().unwrap_or_else(|| w.to_string());
            let known = ch.model(&id).is_some() || ch.matches_pattern(&id);
            if known && visible(&id) { vec![id] } else { Vec::new() }
        }
        None => ch
            .models
            .iter()
            .filter(|m| !matches!(m.kind, ModelKind::Embedding | ModelKind::Rerank | ModelKind::Other))
            .filter(|m| visible(&m.id))
            .map(|m| m.id.to_string())
            .collect(),
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
    let mut headers = reqwest::header::HeaderMap::new();
    upstream::auth_headers(ch, ep, tok, &mut headers);
    let t0 = Instant::now();
    let resp = match client.get(&url).headers(headers).send().await {
        Ok(resp) => resp,
        Err(e) => {
            let (class, detail) = failure::transport(&e, Some(timeout));
            r.set(class, Some(detail));
            return r;
        }
    };
    r.latency_ms = Some(ms(t0.elapsed()));
    let status = resp.status().as_u16();
    r.status = Some(status);
    r.retry_after_ms = upstream::parse_retry_after(resp.headers()).map(ms);
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
    };
    let url = upstream::url(ch, ep, op, model);
    let mut r = CheckResult::new(ch, ep, tok, CheckKind::Chat, Some(model), format!("POST {}", shown(&url)));
    let mut headers = reqwest::header::HeaderMap::new();
    upstream::auth_headers(ch, ep, tok, &mut headers);
    let t0 = Instant::now();
    let sent = client.post(&url).headers(headers).json(&chat_body(wire, model)).send().await;
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            let (class, detail) = failure::transport(&e, Some(timeout));
            r.set(class, Some(detail));
            return r;
        }
    };
    r.latency_ms = Some(ms(t0.elapsed()));
    let status = resp.status().as_u16();
    r.status = Some(status);
    r.retry_after_ms = upstream::parse_retry_after(resp.headers()).map(ms);
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

/// A candidate of a routing decision, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateView {
    pub channel: String,
    pub endpoint: String,
    pub token_key: String,
    pub model: String,
    /// The channel speaks the client's protocol (else the request is translated).
    pub native: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// Something routing matched but left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExcludedView {
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_key: Option<String>,
    pub model: String,
    pub reason: String,
}

/// The one real request of a routed target, as the proxy recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutedRequest {
    /// `POST /v1/chat/completions` or `POST /v1/messages`.
    pub path: String,
    pub status: u16,
    pub outcome: Outcome,
    pub attempts: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u32>,
    pub total_ms: u32,
    pub tokens: Tokens,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated: Option<String>,
    /// What went wrong (the proxy's summary, or the upstream's message), never a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The routing decision for a model or tag target and what the real request did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteResult {
    pub target: String,
    pub strategy: Strategy,
    /// How the name was resolved: `tag`, `alias`, `exact`, `pattern`, `suffix`, `tags`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// The client protocol the request was sent in.
    pub client: Protocol,
    /// In the order routing gave (inside a priority tier the order is weighted random, so the real request may
    /// try them in another order: the attempts say what happened).
    pub candidates: Vec<CandidateView>,
    pub excluded: Vec<ExcludedView>,
    /// Routing refused the request (e.g. every candidate is excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RoutedRequest>,
}

impl RouteResult {
    pub fn ok(&self) -> bool {
        self.request.as_ref().is_some_and(|r| r.outcome == Outcome::Ok && (200..300).contains(&r.status))
    }
}

/// The configuration the in-process proxy of routed tests runs with: open (gateway keys are checked by the real
/// server, and their plaintext is not known here), debug headers on, and every attempt bounded by `timeout`.
pub fn in_process_config(config: &Config, timeout: Duration) -> Config {
    let mut c = config.clone();
    c.gateway_keys.clear();
    c.raw.server.keys.clear();
    c.raw.server.debug_headers = true;
    let up = &mut c.raw.upstream;
    up.first_byte_timeout = Dur(up.first_byte_timeout.0.min(timeout));
    up.idle_timeout = Dur(up.idle_timeout.0.min(timeout));
    let attempts = c.raw.routing.max_attempts.max(1);
    let total = timeout.saturating_mul(attempts).saturating_add(Duration::from_secs(1));
    c.raw.routing.total_timeout = Dur(c.raw.routing.total_timeout.0.min(total));
    c
}

/// Routes each target and sends one real request for it through an in-process proxy (`proxy::serve` on
/// 127.0.0.1:0 with its own health, seeded from `seed`, and a record sink read here). `snap` should be built from
/// [`in_process_config`].
pub async fn route_all(
    snap: Arc<Snapshot>,
    targets: &[String],
    opts: &Options,
    seed: &ProbeReport,
) -> Vec<RouteResult> {
    let mut out = Vec::new();
    for t in targets {
        out.push(route_one(snap.clone(), t, opts, seed).await);
    }
    out
}

async fn route_one(snap: Arc<Snapshot>, target: &str, opts: &Options, seed: &ProbeReport) -> RouteResult {
    let health = Arc::new(Health::new());
    apply(seed, &health, &snap.config.raw.routing.cooldown);
    // The client protocol: OpenAI, unless the best candidate speaks Anthropic (then no translation is needed).
    let mut client = Protocol::Openai;
    let mut plan = routing::plan(&snap, &health, &route_request(&snap, target, client, opts.strategy), Instant::now());
    if let Ok(p) = &plan
        && p.candidates.first().is_some_and(|c| !c.native)
    {
        client = Protocol::Anthropic;
        plan = routing::plan(&snap, &health, &route_request(&snap, target, client, opts.strategy), Instant::now());
    }
    let strategy = opts.strategy.unwrap_or(snap.config.raw.routing.strategy);
    let mut result = RouteResult {
        target: target.to_string(),
        strategy,
        resolved_by: None,
        client,
        candidates: Vec::new(),
        excluded: Vec::new(),
        plan_error: None,
        request: None,
    };
    let excluded_view = |e: &routing::Excluded| ExcludedView {
        channel: e.channel.clone(),
        endpoint: e.endpoint.clone(),
        token_key: e.token.clone(),
        model: e.model.clone(),
        reason: e.reason.clone(),
    };
    match &plan {
        Ok(p) => {
            result.resolved_by = Some(p.resolved_by.to_string());
            result.excluded = p.excluded.iter().map(excluded_view).collect();
            result.candidates = p
                .candidates
                .iter()
                .map(|c| {
                    let ch = &snap.channels[c.channel];
                    let ep = &ch.endpoints[c.endpoint];
                    CandidateView {
                        channel: ch.name.to_string(),
                        endpoint: ep.name.to_string(),
                        token_key: ep.tokens[c.token].token_key.to_string(),
                        model: c.model.clone(),
                        native: c.native,
                        score: c.score.map(|s| s.total),
                    }
                })
                .collect();
        }
        Err(e) => {
            result.plan_error = Some(e.to_string());
            if let PlanError::AllCooling { excluded, .. } | PlanError::NoneUsable { excluded, .. } = e {
                result.excluded = excluded.iter().map(excluded_view).collect();
            }
        }
    }
    // The request goes through the proxy even when planning failed here: its answer is what a client would see.
    result.request = Some(match send_through_proxy(snap.clone(), health, target, client, strategy, opts).await {
        Ok(r) => r,
        Err(e) => RoutedRequest {
            path: path_of(client).to_string(),
            status: 0,
            outcome: Outcome::UpstreamError,
            attempts: Vec::new(),
            channel: None,
            endpoint: None,
            token_key: None,
            model: None,
            ttfb_ms: None,
            total_ms: 0,
            tokens: Tokens::default(),
            translated: None,
            error: Some(redact_all(&snap, &format!("{e:#}"))),
        },
    });
    result
}

fn path_of(client: Protocol) -> &'static str {
    match client {
        Protocol::Openai => "/v1/chat/completions",
        Protocol::Anthropic => "/v1/messages",
    }
}

/// Removes every key of the snapshot (and anything that looks like a key) from `text`.
fn redact_all(snap: &Snapshot, text: &str) -> String {
    let mut s = text.to_string();
    for ch in &snap.channels {
        for ep in &ch.endpoints {
            for t in &ep.tokens {
                s = redact(&s, &t.secret);
            }
        }
    }
    s
}

async fn send_through_proxy(
    snap: Arc<Snapshot>,
    health: Arc<Health>,
    target: &str,
    client: Protocol,
    strategy: Strategy,
    opts: &Options,
) -> anyhow::Result<RoutedRequest> {
    use anyhow::Context;
    let (sink, mut records) = RecordSink::new(16);
    let state = Arc::new(crate::proxy::AppState {
        client: upstream::client(&snap.config.raw.upstream),
        snapshot: ArcSwap::new(snap.clone()),
        health,
        sink,
        fasttest: crate::upstream::fasttest::FastTest::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the test proxy")?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::proxy::serve(
        listener,
        state,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    let path = path_of(client);
    let body = serde_json::json!({
        "model": target,
        "messages": [{ "role": "user", "content": PROMPT }],
        "max_tokens": MAX_TOKENS,
    });
    let total = snap.config.raw.routing.total_timeout.0 + Duration::from_secs(5);
    let http = upstream::probe_client(total.max(opts.timeout));
    let mut req = http.post(format!("http://{addr}{path}")).header("x-router-strategy", strategy.as_str()).json(&body);
    if client == Protocol::Anthropic {
        req = req.header("anthropic-version", "2023-06-01");
    }
    let answer = async {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, bytes))
    }
    .await;
    let record = tokio::time::timeout(Duration::from_secs(10), records.recv()).await.ok().flatten();
    let _ = stop.send(());
    let _ = server.await;
    let (status, bytes) = answer.context("the test proxy did not answer")?;
    let record: RequestRecord = record.context("the test proxy recorded nothing")?;
    let mut error = record.error.clone();
    if !(200..300).contains(&status)
        && let Some(m) = error_message(&bytes)
    {
        // The proxy's own summary names attempts; the upstream's message says why (redacted).
        let m = redact_all(&snap, &m);
        error = Some(match error {
            Some(e) if !e.contains(&m) && !m.contains(&e) => format!("{e}: {m}"),
            Some(e) if e.len() >= m.len() => e,
            _ => m,
        });
    }
    Ok(RoutedRequest {
        path: format!("POST {path}"),
        status: record.status,
        outcome: record.outcome,
        attempts: record.attempts,
        channel: record.channel,
        endpoint: record.endpoint,
        token_key: record.token_key,
        model: record.upstream_model,
        ttfb_ms: record.ttfb_ms,
        total_ms: record.total_ms,
        tokens: record.tokens,
        translated: record.translated,
        error,
    })
}

/// What a test learnt, for a running server: per (endpoint, key[, model]) the latency seen and the failure met.
/// Serialisable so it can cross the control socket; holds names and health keys, never a key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Unix milliseconds.
    pub time_ms: i64,
    pub entries: Vec<ProbeEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeEntry {
    pub channel: String,
    pub endpoint: String,
    pub token_key: String,
    /// Health-table key of the endpoint (`channel/endpoint`, as the catalogue makes it).
    pub endpoint_health_key: String,
    /// Health-table key of the token (`channel/endpoint/token_key`).
    pub token_health_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub check: CheckKind,
    /// Time to the response headers of a successful answer, ms: what `fastest` ranks on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ProbeFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeFailure {
    pub class: FailureClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Builds the report of checks and of the attempts of routed requests.
pub fn report(snap: &Snapshot, checks: &[CheckResult], routes: &[RouteResult]) -> ProbeReport {
    let mut entries: Vec<ProbeEntry> = checks
        .iter()
        .map(|c| ProbeEntry {
            channel: c.channel.clone(),
            endpoint: c.endpoint.clone(),
            token_key: c.token_key.clone(),
            endpoint_health_key: c.health.0.clone(),
            token_health_key: c.health.1.clone(),
            model: c.model.clone(),
            check: c.check,
            latency_ms: c.latency_ms.filter(|_| c.ok()).map(|m| m as f64),
            failure: (!c.ok()).then_some(ProbeFailure {
                class: c.result,
                status: c.status,
                retry_after_ms: c.retry_after_ms,
            }),
        })
        .collect();
    for a in routes.iter().filter_map(|r| r.request.as_ref()).flat_map(|r| &r.attempts) {
        let Some(ch) = snap.channel(&a.channel) else { continue };
        let Some(ep) = ch.endpoints.iter().find(|e| *e.name == *a.endpoint) else { continue };
        let Some(tok) = ep.tokens.iter().find(|t| *t.token_key == *a.token_key) else { continue };
        let class = a.outcome;
        entries.push(ProbeEntry {
            channel: a.channel.clone(),
            endpoint: a.endpoint.clone(),
            token_key: a.token_key.clone(),
            endpoint_health_key: ep.health_key.to_string(),
            token_health_key: tok.health_key.to_string(),
            model: Some(a.model.clone()),
            check: CheckKind::Request,
            latency_ms: (class == FailureClass::Ok).then_some(f64::from(a.ms)),
            failure: (class != FailureClass::Ok).then_some(ProbeFailure {
                class,
                status: a.status,
                retry_after_ms: None,
            }),
        });
    }
    ProbeReport { time_ms: crate::usage::now_ms(), entries }
}

/// Applies a report to a server's health: latencies feed the EWMA `fastest` ranks on; failures cool down what
/// the proxy's failover table says (token for auth / quota / rate limits, endpoint for connect / timeout / 5xx,
/// (channel, model) for a missing model). A successful chat check or request also clears cooldowns of its
/// endpoint and token; a successful model-list check does not (the list answering says little about chat).
pub fn apply(report: &ProbeReport, health: &Health, cooldown: &CooldownConfig) {
    for e in &report.entries {
        if let Some(ms) = e.latency_ms
            && ms.is_finite()
            && ms >= 0.0
        {
            health.observe_ttfb(&e.endpoint_health_key, ms);
        }
        match &e.failure {
            None if e.check != CheckKind::Reachability => {
                health.succeed(&e.endpoint_health_key);
                health.succeed(&e.token_health_key);
            }
            None => {}
            Some(f) => {
                // A model list missing at its path says nothing about the upstream's health.
                if f.class == FailureClass::NotFound && e.check == CheckKind::Reachability {
                    continue;
                }
                let Some(cool) = f.class.cooldown(cooldown) else { continue };
                let model = e.model.as_deref().unwrap_or("");
                if model.is_empty() && cool.target == failure::CoolTarget::ChannelModel {
                    continue;
                }
                let keys = CoolKeys {
                    channel: &e.channel,
                    endpoint: &e.endpoint_health_key,
                    token: &e.token_health_key,
                    model,
                };
                let reason = format!("router test: {}", f.class.words());
                health.cool(f.class, cooldown, &keys, f.retry_after_ms.map(Duration::from_millis), &reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChannelConfig, KeyConfig, RawConfig, Secret};

    fn snapshot(yaml: &str) -> Snapshot {
        let cfg = crate::config::parse(std::path::Path::new("t.yaml"), yaml, &|_| None).unwrap();
        Snapshot::build(Arc::new(cfg), &[], &Default::default(), false)
    }

    const TWO: &str = "channels:\n  - name: alpha\n    base_url: http://127.0.0.1:9/v1\n    keys: [k1]\n    models: [qwen3-8b, text-embedding-3-small]\n    aliases: {fast: qwen3-8b}\n  - name: beta\n    protocol: anthropic\n    endpoints:\n      - {name: eu, base_url: 'http://127.0.0.1:9', keys: [k2, k3]}\n      - {name: us, base_url: 'http://127.0.0.1:9', keys: [k4]}\n    models: [claude-sonnet-4-5]\n  - name: off\n    enabled: false\n    base_url: http://127.0.0.1:9/v1\n    keys: [k5]\n    models: [m]\n";

    #[test]
    fn targets_select_endpoints_and_routes() {
        let s = snapshot(TWO);
        let all = select(&s, &[]).unwrap();
        assert_eq!(all.endpoints, [(0, 0), (1, 0), (1, 1)]);
        assert!(all.routes.is_empty());
        let sel = select(&s, &["beta/us".into(), "off".into(), "fast".into(), "tag:qwen3".into()]).unwrap();
        assert_eq!(sel.endpoints, [(1, 1), (2, 0)]);
        assert_eq!(sel.routes, ["fast", "tag:qwen3"]);
        let e = select(&s, &["alpah".into()]).unwrap_err();
        assert!(e.hint.as_deref().unwrap().contains("alpha"), "{e:?}");
        let e = select(&s, &["beta/asia".into()]).unwrap_err();
        assert!(e.hint.as_deref().unwrap().contains("eu, us"));
        let e = select(&s, &["tag:qwne".into()]).unwrap_err();
        assert!(e.hint.as_deref().unwrap().contains("qwen"), "{e:?}");
    }

    #[test]
    fn jobs_cover_keys_and_chat_models() {
        let s = snapshot(TWO);
        let sel = select(&s, &[]).unwrap();
        let (jobs_plain, _) = jobs(&s, &sel, &Options::default());
        assert_eq!(jobs_plain.len(), 4);
        let opts = Options { chat: true, ..Options::default() };
        let (j, notes) = jobs(&s, &sel, &opts);
        // alpha: check + qwen3-8b (the embedding model is skipped); beta/eu: 2 keys x 2; beta/us: 2.
        assert_eq!(j.len(), 2 + 4 + 2);
        assert!(notes.is_empty());
        let opts = Options { chat: true, model: Some("fast".into()), ..Options::default() };
        let (j, notes) = jobs(&s, &sel, &opts);
        assert_eq!(j.iter().filter_map(|j| j.model.as_deref()).collect::<Vec<_>>(), ["qwen3-8b"]);
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn reachability_url_uses_the_model_list_or_fast_test_path() {
        let s = snapshot(
            "channels:\n  - name: a\n    base_url: http://h/v1\n    keys: [k]\n  - name: b\n    endpoints:\n      - {name: x, base_url: 'http://h/v1', keys: [k], fast_test_path: /health}\n",
        );
        assert_eq!(reachability_url(&s.channels[0], &s.channels[0].endpoints[0]), "http://h/v1/models");
        assert_eq!(reachability_url(&s.channels[1], &s.channels[1].endpoints[0]), "http://h/v1/health");
    }

    fn entry(check: CheckKind, model: Option<&str>, latency: Option<f64>, failure: Option<FailureClass>) -> ProbeEntry {
        ProbeEntry {
            channel: "a".into(),
            endpoint: "default".into(),
            token_key: "k".into(),
            endpoint_health_key: "a/default".into(),
            token_health_key: "a/default/k".into(),
            model: model.map(str::to_string),
            check,
            latency_ms: latency,
            failure: failure.map(|class| ProbeFailure { class, status: None, retry_after_ms: None }),
        }
    }

    #[test]
    fn reports_feed_latency_and_cooldowns() {
        let cfg = CooldownConfig::default();
        let h = Health::new();
        let r = ProbeReport { time_ms: 0, entries: vec![entry(CheckKind::Reachability, None, Some(120.0), None)] };
        apply(&r, &h, &cfg);
        assert_eq!(h.view("a/default").ttfb_ms, Some(120.0));
        assert!(h.cooling("a/default", Instant::now()).is_none());

        let r = ProbeReport {
            time_ms: 0,
            entries: vec![
                entry(CheckKind::Reachability, None, None, Some(FailureClass::Auth)),
                entry(CheckKind::Reachability, None, None, Some(FailureClass::NotFound)),
            ],
        };
        apply(&r, &h, &cfg);
        assert!(h.cooling("a/default/k", Instant::now()).unwrap() > Duration::from_secs(600));
        assert!(h.cooling("a/default", Instant::now()).is_none());

        apply(
            &ProbeReport {
                time_ms: 0,
                entries: vec![entry(CheckKind::Chat, Some("m"), None, Some(FailureClass::NotFound))],
            },
            &h,
            &cfg,
        );
        assert!(h.cooling("a#m", Instant::now()).is_some());
        apply(
            &ProbeReport {
                time_ms: 0,
                entries: vec![entry(CheckKind::Request, None, None, Some(FailureClass::Connect))],
            },
            &h,
            &cfg,
        );
        assert!(h.cooling("a/default", Instant::now()).is_some());
        // A working chat clears what failed.
        apply(
            &ProbeReport { time_ms: 0, entries: vec![entry(CheckKind::Chat, Some("m"), Some(80.0), None)] },
            &h,
            &cfg,
        );
        assert!(h.cooling("a/default", Instant::now()).is_none());
        assert!(h.cooling("a/default/k", Instant::now()).is_none());

        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ProbeReport>(&text).unwrap(), r);
        assert!(text.contains("\"class\":\"auth\""));
    }

    #[test]
    fn in_process_config_is_open_and_bounded() {
        let mut cfg = Config { raw: RawConfig::default(), ..Default::default() };
        cfg.gateway_keys.push(crate::config::GatewayKey { name: "g".into(), hash: [0; 32], allow: None });
        let mut ch = ChannelConfig::new("a", ChannelProtocol::Openai);
        ch.keys = vec![KeyConfig::Bare(Secret::new("k"))];
        cfg.raw.channels.push(ch);
        let c = in_process_config(&cfg, Duration::from_secs(2));
        assert!(c.gateway_keys.is_empty());
        assert!(c.raw.upstream.first_byte_timeout.0 <= Duration::from_secs(2));
        assert!(c.raw.routing.total_timeout.0 <= Duration::from_secs(2 * 6 + 1));
        assert_eq!(c.raw.channels.len(), 1);
    }
}
