//! One request, in named phases: route the path, authenticate, read the body, peek, plan, attempt (with
//! failover), respond, record.
//!
//! Every error reaches the client in its own protocol's shape, with `X-Router-Request-Id`. Every request that
//! got past authentication produces exactly one record (here for errors, in `body` for responses).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use super::AppState;
use super::body::{Finisher, MeteredBody, Mode};
use super::headers;
use crate::catalog::{Channel, ModelKind, Snapshot};
use crate::config::{GatewayKey, Strategy, hash_key};
use crate::protocol::convert::{self, Conversion, StreamConverter};
use crate::protocol::request::{Peek, PeekError};
use crate::protocol::usage::UsageMeter;
use crate::protocol::{Protocol, errors};
use crate::routing::{self, Allow, PlanError, RouteRequest};
use crate::upstream::health::{CoolKeys, model_key};
use crate::upstream::{self, Operation, UpstreamError};
use crate::usage::{self, Attempt, Outcome, RequestRecord};

/// Output tokens assumed for cost estimates when the request sets no `max_tokens` / `max_output_tokens`.
const DEFAULT_EST_OUTPUT: u64 = 1024;

pub type ProxyBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// What a path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Api(Operation),
    Models,
    Health,
    NotFound,
}

fn route(method: &Method, path: &str) -> (Route, Protocol) {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    let p = p.trim_end_matches('/');
    match (method, p) {
        (&Method::POST, "/chat/completions") => (Route::Api(Operation::ChatCompletions), Protocol::Openai),
        (&Method::POST, "/responses") => (Route::Api(Operation::Responses), Protocol::Openai),
        (&Method::POST, "/embeddings") => (Route::Api(Operation::Embeddings), Protocol::Openai),
        (&Method::POST, "/messages") => (Route::Api(Operation::Messages), Protocol::Anthropic),
        (&Method::POST, "/messages/count_tokens") => (Route::Api(Operation::CountTokens), Protocol::Anthropic),
        (&Method::GET, "/models") => (Route::Models, Protocol::Openai),
        (&Method::GET, "" | "/health" | "/healthz") if path != "/v1" => (Route::Health, Protocol::Openai),
        (_, p) if p.starts_with("/messages") => (Route::NotFound, Protocol::Anthropic),
        _ => (Route::NotFound, Protocol::Openai),
    }
}

fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

/// Per-request context shared by the phases.
struct Ctx {
    id: u128,
    started: Instant,
    protocol: Protocol,
    debug_headers: bool,
}

impl Ctx {
    fn error(&self, status: StatusCode, message: &str, code: Option<&str>) -> Response<ProxyBody> {
        let mut resp = Response::new(full(errors::body(self.protocol, status.as_u16(), message, code)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        headers::set(resp.headers_mut(), "x-router-request-id", &usage::format_id(self.id));
        resp
    }
}

pub async fn handle(state: Arc<AppState>, req: Request<Incoming>, _peer: SocketAddr) -> Response<ProxyBody> {
    let snap = state.snapshot.load_full();
    let started = Instant::now();
    let now_ms = usage::now_ms();
    let (route, protocol) = route(req.method(), req.uri().path());
    let ctx = Ctx { id: usage::new_id(now_ms), started, protocol, debug_headers: snap.config.raw.server.debug_headers };
    // Anthropic clients announce themselves; answer them in their shape on shared paths.
    let ctx = if route == Route::Models && req.headers().contains_key("anthropic-version") {
        Ctx { protocol: Protocol::Anthropic, ..ctx }
    } else {
        ctx
    };
    match route {
        Route::Health => return health(&snap),
        Route::NotFound => {
            let msg = format!("no route for {} {}", req.method(), req.uri().path());
            return ctx.error(StatusCode::NOT_FOUND, &msg, Some("unknown_route"));
        }
        _ => {}
    }
    let key = match authenticate(&snap.config.gateway_keys, req.headers()) {
        Ok(k) => k,
        Err(msg) => return ctx.error(StatusCode::UNAUTHORIZED, msg, Some("invalid_api_key")),
    };
    let op = match route {
        Route::Models => return models(&snap, &ctx, key),
        Route::Api(op) => op,
        _ => unreachable!("handled above"),
    };
    let mut record = RequestRecord {
        id: ctx.id,
        time_ms: now_ms,
        gateway_key: key.map(|k| k.name.clone()),
        client_protocol: match protocol {
            Protocol::Openai => "openai".into(),
            Protocol::Anthropic => "anthropic".into(),
        },
        path: req.uri().path().to_string(),
        ..Default::default()
    };
    let (parts, body) = req.into_parts();
    let max = snap.config.raw.server.max_body_bytes;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body = match declared {
        Some(n) if n > max => Err(()),
        _ => match Limited::new(body, max).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(()),
            Err(e) => {
                let msg = format!("could not read the request body: {e}");
                return finish_error(&state, &ctx, record, StatusCode::BAD_REQUEST, &msg, Outcome::BadRequest).await;
            }
        },
    };
    let Ok(body) = body else {
        let msg = format!("request body is larger than the limit of {max} bytes (server.max_body_bytes)");
        return finish_error(&state, &ctx, record, StatusCode::PAYLOAD_TOO_LARGE, &msg, Outcome::BadRequest).await;
    };
    let peek = match Peek::parse(&body) {
        Ok(p) => p,
        Err(e @ (PeekError::Json(_) | PeekError::ModelNotString)) => {
            return finish_error(&state, &ctx, record, StatusCode::BAD_REQUEST, &e.to_string(), Outcome::BadRequest)
                .await;
        }
    };
    let Some(model) = peek.model.clone() else {
        let msg = "`model` is required";
        return finish_error(&state, &ctx, record, StatusCode::BAD_REQUEST, msg, Outcome::BadRequest).await;
    };
    record.requested_model = model.clone();
    record.stream = peek.stream;
    let strategy = match parts.headers.get("x-router-strategy").and_then(|v| v.to_str().ok()) {
        Some(s) => match Strategy::parse(s) {
            Some(st) => st,
            None => {
                let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.as_str()).collect();
                let msg = format!("unknown X-Router-Strategy `{s}`; use one of {}", names.join(", "));
                return finish_error(&state, &ctx, record, StatusCode::BAD_REQUEST, &msg, Outcome::BadRequest).await;
            }
        },
        None => snap.config.raw.routing.strategy,
    };
    record.strategy = strategy.as_str().into();
    let allow = key.and_then(|k| k.allow.as_deref()).map(Allow::parse);
    let pin = parts.headers.get("x-router-channel").and_then(|v| v.to_str().ok()).map(str::to_string);
    let route_req = RouteRequest {
        model: &model,
        kind: if op == Operation::Embeddings { ModelKind::Embedding } else { ModelKind::Chat },
        client: protocol,
        strategy,
        pin: pin.as_deref(),
        allow: allow.as_ref(),
        translate: matches!(op, Operation::ChatCompletions | Operation::Messages),
        est_input: body.len() as u64 / 4,
        est_output: peek.max_output.unwrap_or(DEFAULT_EST_OUTPUT),
    };
    let mut planned = routing::plan(&snap, &state.health, &route_req, Instant::now());
    // `fastest` ranks on observed latency: endpoints nobody has measured yet get a cached fast test first.
    if strategy == Strategy::Fastest
        && let Ok(p) = &planned
        && state.fasttest.measure_unknown(&snap, &state.health, &p.endpoints()).await > 0
    {
        planned = routing::plan(&snap, &state.health, &route_req, Instant::now());
    }
    let plan = match planned {
        Ok(p) => p,
        Err(e) => {
            if op == Operation::CountTokens {
                return count_tokens_locally(&ctx, &body);
            }
            return plan_error(&state, &ctx, record, e).await;
        }
    };
    attempt_all(
        state.clone(),
        snap,
        ctx,
        record,
        parts.headers,
        parts.uri.query().map(str::to_string),
        body,
        peek,
        op,
        plan,
    )
    .await
}

/// Checks the gateway key. `Ok(None)` when no keys are configured (open mode).
fn authenticate<'a>(keys: &'a [GatewayKey], headers: &HeaderMap) -> Result<Option<&'a GatewayKey>, &'static str> {
    if keys.is_empty() {
        return Ok(None);
    }
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err("missing API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`");
    };
    let hash = hash_key(presented);
    // Compare against every key so the time taken does not depend on which one matched.
    let mut found = None;
    for k in keys {
        if bool::from(k.hash.ct_eq(&hash)) && found.is_none() {
            found = Some(k);
        }
    }
    found.map(Some).ok_or("invalid API key")
}

fn health(snap: &Snapshot) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "status": "ok",
        "channels": snap.channels.iter().filter(|c| c.enabled).count(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let mut resp = Response::new(full(body.to_string()));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

fn models(snap: &Snapshot, ctx: &Ctx, key: Option<&GatewayKey>) -> Response<ProxyBody> {
    let allow = key.and_then(|k| k.allow.as_deref()).map(Allow::parse);
    let ids: Vec<(&str, &str)> = snap
        .model_ids()
        .into_iter()
        .filter(|(id, ch)| {
            let kind_ok = true;
            kind_ok
                && allow.as_ref().is_none_or(|a| match a {
                    Allow::Tags(e) => e.matches(routing::model_tags(ch, id).into_iter()),
                    Allow::Models(list) => list.iter().any(|m| m == id),
                })
        })
        .map(|(id, ch)| (id, &*ch.name))
        .collect();
    let body = match ctx.protocol {
        Protocol::Openai => serde_json::json!({
            "object": "list",
            "data": ids.iter().map(|(id, owner)| serde_json::json!({
                "id": id, "object": "model", "created": 0, "owned_by": owner
            })).collect::<Vec<_>>(),
        }),
        Protocol::Anthropic => serde_json::json!({
            "data": ids.iter().map(|(id, _)| serde_json::json!({
                "type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"
            })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": ids.first().map(|(id, _)| *id),
            "last_id": ids.last().map(|(id, _)| *id),
        }),
    };
    let mut resp = Response::new(full(body.to_string()));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

/// `count_tokens` with no Anthropic channel for the model: a local estimate (~4 bytes a token).
fn count_tokens_locally(ctx: &Ctx, body: &Bytes) -> Response<ProxyBody> {
    let n = (body.len() as u64).div_ceil(4);
    let mut resp = Response::new(full(serde_json::json!({ "input_tokens": n }).to_string()));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    headers::set(resp.headers_mut(), "x-router-request-id", &usage::format_id(ctx.id));
    resp
}

async fn finish_error(
    state: &AppState,
    ctx: &Ctx,
    mut record: RequestRecord,
    status: StatusCode,
    message: &str,
    outcome: Outcome,
) -> Response<ProxyBody> {
    record.status = status.as_u16();
    record.outcome = outcome;
    record.error = Some(message.chars().take(300).collect());
    record.total_ms = ctx.started.elapsed().as_millis() as u32;
    state.sink.send(record).await;
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => Some("request_too_large"),
        StatusCode::BAD_REQUEST => Some("invalid_request"),
        _ => None,
    };
    ctx.error(status, message, code)
}

async fn plan_error(state: &AppState, ctx: &Ctx, mut record: RequestRecord, e: PlanError) -> Response<ProxyBody> {
    let (status, code, message) = match &e {
        PlanError::UnknownModel { model, closest } => {
            let msg = if closest.is_empty() {
                format!("model `{model}` is not served by any enabled channel; GET /v1/models lists what is")
            } else {
                format!("model `{model}` is not served by any enabled channel; closest: {}", closest.join(", "))
            };
            (StatusCode::NOT_FOUND, "model_not_found", msg)
        }
        PlanError::WrongProtocol { .. } => (
            StatusCode::BAD_REQUEST,
            "protocol_mismatch",
            format!("{e}; cross-protocol translation is not enabled for it"),
        ),
        PlanError::Forbidden { .. } => (StatusCode::FORBIDDEN, "model_not_allowed", e.to_string()),
        PlanError::PinNotFound { .. } => (StatusCode::NOT_FOUND, "channel_not_found", e.to_string()),
        PlanError::AllCooling { retry_in, excluded, .. } => {
            let why: Vec<String> = excluded
                .iter()
                .take(6)
                .map(|x| {
                    format!(
                        "{}{}: {}",
                        x.channel,
                        x.endpoint.as_ref().map(|e| format!("/{e}")).unwrap_or_default(),
                        x.reason
                    )
                })
                .collect();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "all_cooling_down",
                format!("{e} (retry in {}s): {}", retry_in.as_secs().max(1), why.join("; ")),
            )
        }
        PlanError::NoneUsable { excluded, .. } => {
            let why: Vec<String> = excluded.iter().take(6).map(|x| format!("{}: {}", x.channel, x.reason)).collect();
            (StatusCode::SERVICE_UNAVAILABLE, "no_candidate", format!("{e}: {}", why.join("; ")))
        }
    };
    record.status = status.as_u16();
    record.outcome = Outcome::NoRoute;
    record.error = Some(message.chars().take(300).collect());
    record.total_ms = ctx.started.elapsed().as_millis() as u32;
    state.sink.send(record).await;
    let mut resp = ctx.error(status, &message, Some(code));
    if let PlanError::AllCooling { retry_in, .. } = e {
        headers::set(resp.headers_mut(), "retry-after", &retry_in.as_secs().max(1).to_string());
    }
    resp
}

/// What the last failed attempt left, for the response when no candidate succeeds.
struct Failure {
    err: UpstreamError,
    /// An upstream error response that may be passed through (non-retryable 4xx).
    response: Option<(StatusCode, reqwest::header::HeaderMap, Bytes)>,
}

#[allow(clippy::too_many_arguments)]
async fn attempt_all(
    state: Arc<AppState>,
    snap: Arc<Snapshot>,
    ctx: Ctx,
    mut record: RequestRecord,
    client_headers: HeaderMap,
    query: Option<String>,
    body: Bytes,
    peek: Peek,
    op: Operation,
    plan: routing::Plan,
) -> Response<ProxyBody> {
    let cfg = &snap.config.raw;
    let deadline = ctx.started + cfg.routing.total_timeout.0;
    let max_attempts = cfg.routing.max_attempts.max(1) as usize;
    let mut last: Option<Failure> = None;
    for cand in &plan.candidates {
        if record.attempts.len() >= max_attempts {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let ch = &snap.channels[cand.channel];
        let ep = &ch.endpoints[cand.endpoint];
        let tok = &ep.tokens[cand.token];
        // Something earlier in this request may have cooled this endpoint, token or model down.
        let h = &state.health;
        if h.cooling(&ep.health_key, now).is_some()
            || h.cooling(&tok.health_key, now).is_some()
            || h.cooling(&model_key(&ch.name, &cand.model), now).is_some()
        {
            continue;
        }
        let conv = conversion(op, ch);
        let upstream_op = match conv {
            Some(Conversion::AnthropicToChat | Conversion::ResponsesToChat) => Operation::ChatCompletions,
            Some(Conversion::ChatToAnthropic) => Operation::Messages,
            None => op,
        };
        let mut url = upstream::url(ch, ep, upstream_op, &cand.model);
        // The client's query (Claude Code sends `?beta=true`) belongs to its protocol: forward it only natively.
        if let Some(q) = query.as_ref().filter(|_| conv.is_none()) {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(q);
        }
        let inject =
            conv.is_none() && op == Operation::ChatCompletions && peek.stream && ch.protocol.wire() == Protocol::Openai;
        let upstream_body = match conv {
            None => peek.rewrite(&body, Some(&cand.model), inject),
            Some(c) => match convert::convert_request(c, &body, &cand.model) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    let msg = format!("the request cannot be translated for channel `{}`: {e}", ch.name);
                    return finish_error(&state, &ctx, record, StatusCode::BAD_REQUEST, &msg, Outcome::BadRequest)
                        .await;
                }
            },
        };
        record.translated = conv.map(|c| translation_name(c).to_string());
        let mut hdrs = headers::upstream_headers(&client_headers);
        upstream::auth_headers(ch, ep, tok, &mut hdrs);
        hdrs.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        let first_byte = ep.first_byte_timeout.unwrap_or(cfg.upstream.first_byte_timeout.0).min(deadline - now);
        let t0 = Instant::now();
        let sent =
            tokio::time::timeout(first_byte, state.client.post(&url).headers(hdrs).body(upstream_body).send()).await;
        let ms = t0.elapsed();
        let mut attempt = Attempt {
            channel: ch.name.to_string(),
            endpoint: ep.name.to_string(),
            token_key: tok.token_key.to_string(),
            token_fp: tok.fingerprint.to_string(),
            model: cand.model.clone(),
            status: None,
            outcome: upstream::FailureClass::Ok,
            ms: ms.as_millis() as u32,
        };
        let failure = match sent {
            Err(_) => Failure { err: UpstreamError::FirstByteTimeout(first_byte), response: None },
            Ok(Err(e)) => Failure { err: upstream::send_error(&e), response: None },
            Ok(Ok(resp)) if resp.status().is_success() => {
                attempt.status = Some(resp.status().as_u16());
                attempt.outcome = upstream::FailureClass::Ok;
                record.attempts.push(attempt);
                h.succeed(&ep.health_key);
                h.succeed(&tok.health_key);
                h.observe_ttfb(&ep.health_key, ms.as_secs_f64() * 1000.0);
                if let Some(c) = conv {
                    let wants_usage = c == Conversion::ChatToAnthropic && convert::chat_request_wants_usage(&body);
                    return respond_translated(
                        &state,
                        &snap,
                        &ctx,
                        record,
                        cand,
                        resp,
                        c,
                        wants_usage,
                        body.clone(),
                        ms,
                    )
                    .await;
                }
                return respond(&state, &snap, &ctx, record, cand, resp, &peek, op, inject, body.clone(), ms);
            }
            Ok(Ok(resp)) => {
                let status = resp.status();
                let retry_after = upstream::parse_retry_after(resp.headers());
                let resp_headers = resp.headers().clone();
                let remaining = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(30));
                let err_body = upstream::scrub(read_capped(resp, 256 * 1024, remaining).await, &tok.secret);
                let err = UpstreamError::status(status.as_u16(), retry_after, &err_body);
                attempt.status = Some(status.as_u16());
                // Errors reach the client in its own shape.
                let err_body = match conv {
                    Some(c) => Bytes::from(convert::convert_error(c, status.as_u16(), &err_body)),
                    None => err_body,
                };
                Failure { err, response: Some((status, resp_headers, err_body)) }
            }
        };
        attempt.outcome = failure.err.class();
        let keys = CoolKeys { channel: &ch.name, endpoint: &ep.health_key, token: &tok.health_key, model: &cand.model };
        h.cool(failure.err.class(), &cfg.routing.cooldown, &keys, failure.err.retry_after(), &failure.err.to_string());
        tracing::info!(
            request = %usage::format_id(ctx.id), channel = %ch.name, endpoint = %ep.name, token = %tok.token_key,
            model = %cand.model, "attempt failed: {}", failure.err
        );
        record.attempts.push(attempt);
        let retryable = failure.err.retryable(cfg.routing.retry_on_timeout);
        last = Some(failure);
        if !retryable {
            break;
        }
    }
    all_failed(&state, &ctx, record, last).await
}

/// Which translation a request needs on a channel, if any.
fn conversion(op: Operation, ch: &Channel) -> Option<Conversion> {
    match (op, ch.protocol.wire()) {
        (Operation::Messages, Protocol::Openai) => Some(Conversion::AnthropicToChat),
        (Operation::ChatCompletions, Protocol::Anthropic) => Some(Conversion::ChatToAnthropic),
        (Operation::Responses, Protocol::Openai) if ch.responses_via_chat() => Some(Conversion::ResponsesToChat),
        _ => None,
    }
}

fn translation_name(c: Conversion) -> &'static str {
    match c {
        Conversion::AnthropicToChat => "anthropic->openai",
        Conversion::ChatToAnthropic => "openai->anthropic",
        Conversion::ResponsesToChat => "responses->chat",
    }
}

/// Reads an error body, bounded in size and time.
async fn read_capped(resp: reqwest::Response, cap: usize, within: Duration) -> Bytes {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    let read = async {
        use futures_util::StreamExt;
        while let Some(Ok(chunk)) = stream.next().await {
            out.extend_from_slice(&chunk[..chunk.len().min(cap - out.len())]);
            if out.len() >= cap {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
    Bytes::from(out)
}

async fn all_failed(
    state: &AppState,
    ctx: &Ctx,
    mut record: RequestRecord,
    last: Option<Failure>,
) -> Response<ProxyBody> {
    record.outcome = Outcome::UpstreamError;
    record.total_ms = ctx.started.elapsed().as_millis() as u32;
    if let Some(a) = record.attempts.last() {
        record.channel = Some(a.channel.clone());
        record.endpoint = Some(a.endpoint.clone());
        record.token_key = Some(a.token_key.clone());
        record.token_fp = Some(a.token_fp.clone());
        record.upstream_model = Some(a.model.clone());
    }
    let attempts = record.attempts.len();
    let mut resp = match last {
        // The client's own request was wrong (or the error is final): pass the upstream's answer through.
        Some(Failure { err, response: Some((status, hdrs, body)) })
            if !err.retryable(true) || matches!(status.as_u16(), 400 | 413 | 422) =>
        {
            record.status = status.as_u16();
            record.error = Some(format!("upstream answered {status}"));
            let mut resp = Response::new(full(body));
            *resp.status_mut() = status;
            headers::downstream_headers(&hdrs, resp.headers_mut());
            resp
        }
        Some(Failure { err: UpstreamError::FirstByteTimeout(d), .. }) if attempts == 1 => {
            record.status = 504;
            let msg = format!("upstream did not answer within {d:?} ({})", summary(&record.attempts));
            record.error = Some(msg.chars().take(300).collect());
            ctx.error(StatusCode::GATEWAY_TIMEOUT, &msg, Some("upstream_timeout"))
        }
        Some(_) => {
            record.status = 502;
            let msg = format!("all {attempts} upstream attempts failed: {}", summary(&record.attempts));
            record.error = Some(msg.chars().take(300).collect());
            ctx.error(StatusCode::BAD_GATEWAY, &msg, Some("upstream_failed"))
        }
        None => {
            record.status = 504;
            let msg = "the request deadline passed before any upstream could be tried (routing.total_timeout)";
            record.error = Some(msg.into());
            ctx.error(StatusCode::GATEWAY_TIMEOUT, msg, Some("deadline"))
        }
    };
    if ctx.debug_headers {
        debug_headers(resp.headers_mut(), ctx, &record);
    }
    state.sink.send(record).await;
    resp
}

/// `main/default (fp:1234…): HTTP 500; backup/eu (key2): connect error` — names and fingerprints only.
fn summary(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| {
            let what = match a.status {
                Some(s) => format!("HTTP {s}"),
                None => a.outcome.to_string(),
            };
            format!("{}/{} [{}] {}: {}", a.channel, a.endpoint, a.token_key, a.model, what)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn debug_headers(h: &mut HeaderMap, ctx: &Ctx, record: &RequestRecord) {
    headers::set(h, "x-router-request-id", &usage::format_id(ctx.id));
    if let Some(c) = &record.channel {
        headers::set(h, "x-router-channel", c);
    }
    if let Some(e) = &record.endpoint {
        headers::set(h, "x-router-endpoint", e);
    }
    if let Some(m) = &record.upstream_model {
        headers::set(h, "x-router-model", m);
    }
    if let Some(t) = &record.token_key {
        headers::set(h, "x-router-token", t);
    }
    headers::set(h, "x-router-attempts", &record.attempts.len().to_string());
    headers::set(h, "x-router-strategy", &record.strategy);
}

/// Fills the record with where a successful attempt went; returns whether the response is an SSE stream.
fn record_success(
    record: &mut RequestRecord,
    snap: &Snapshot,
    cand: &routing::Candidate,
    resp: &reqwest::Response,
    ttfb: Duration,
) -> bool {
    let ch = &snap.channels[cand.channel];
    let ep = &ch.endpoints[cand.endpoint];
    let tok = &ep.tokens[cand.token];
    record.status = resp.status().as_u16();
    record.channel = Some(ch.name.to_string());
    record.endpoint = Some(ep.name.to_string());
    record.token_key = Some(tok.token_key.to_string());
    record.token_fp = Some(tok.fingerprint.to_string());
    record.upstream_model = Some(cand.model.clone());
    record.ttfb_ms = Some(ttfb.as_millis() as u32);
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

#[allow(clippy::too_many_arguments)]
fn respond(
    state: &Arc<AppState>,
    snap: &Snapshot,
    ctx: &Ctx,
    mut record: RequestRecord,
    cand: &routing::Candidate,
    resp: reqwest::Response,
    peek: &Peek,
    op: Operation,
    injected: bool,
    request: Bytes,
    ttfb: Duration,
) -> Response<ProxyBody> {
    let status = resp.status();
    let is_sse = record_success(&mut record, snap, cand, &resp, ttfb);
    let mode = match (is_sse, injected && !peek.include_usage && op == Operation::ChatCompletions) {
        (false, _) => Mode::Raw,
        (true, true) => Mode::SseFiltered { parser: Default::default() },
        (true, false) => Mode::Sse { parser: Default::default() },
    };
    let mut out = Response::builder().status(status).body(full(Bytes::new())).expect("valid response");
    headers::downstream_headers(resp.headers(), out.headers_mut());
    if ctx.debug_headers {
        debug_headers(out.headers_mut(), ctx, &record);
        if let Some(s) = cand.score {
            headers::set(
                out.headers_mut(),
                "x-router-score",
                &format!(
                    "{:.3} (cost {:.2} speed {:.2} quality {:.2} reliability {:.2})",
                    s.total, s.cost, s.speed, s.quality, s.reliability
                ),
            );
        }
    }
    *out.body_mut() = metered(state, snap, ctx, cand, record, request, resp, mode);
    out
}

/// The streamed response body: upstream bytes through the meter, the record emitted when it ends.
#[allow(clippy::too_many_arguments)]
fn metered(
    state: &Arc<AppState>,
    snap: &Snapshot,
    ctx: &Ctx,
    cand: &routing::Candidate,
    record: RequestRecord,
    request: Bytes,
    resp: reqwest::Response,
    mode: Mode,
) -> ProxyBody {
    let ch = &snap.channels[cand.channel];
    let ep = &ch.endpoints[cand.endpoint];
    let tok = &ep.tokens[cand.token];
    let finisher = Finisher {
        state: state.clone(),
        price: ch.price(&cand.model),
        channel: ch.name.clone(),
        endpoint_key: ep.health_key.clone(),
        token_key: tok.health_key.clone(),
        client: ctx.protocol,
        request,
        record,
        started: ctx.started,
    };
    let idle = ep.idle_timeout.unwrap_or(snap.config.raw.upstream.idle_timeout.0);
    MeteredBody::new(Box::pin(resp.bytes_stream()), mode, UsageMeter::new(ch.protocol.wire()), idle, finisher)
        .boxed_unsync()
}

/// A success from a channel of the other protocol: streams are translated event by event; whole bodies are
/// read, metered and translated.
#[allow(clippy::too_many_arguments)]
async fn respond_translated(
    state: &Arc<AppState>,
    snap: &Snapshot,
    ctx: &Ctx,
    mut record: RequestRecord,
    cand: &routing::Candidate,
    resp: reqwest::Response,
    conv: Conversion,
    wants_usage: bool,
    request: Bytes,
    ttfb: Duration,
) -> Response<ProxyBody> {
    let ch = &snap.channels[cand.channel];
    let status = resp.status();
    let is_sse = record_success(&mut record, snap, cand, &resp, ttfb);
    let client_model = record.requested_model.clone();
    // Custom / local shell tools of a Responses request, which the Chat upstream only knows as functions.
    let kinds = convert::tool_kinds(conv, &request);
    let mut out = Response::builder().status(status).body(full(Bytes::new())).expect("valid response");
    if ctx.debug_headers {
        debug_headers(out.headers_mut(), ctx, &record);
    }
    if is_sse {
        out.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
        out.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
        let conv = StreamConverter::new(conv, &client_model).with_include_usage(wants_usage).with_tool_kinds(kinds);
        let mode = Mode::Convert { parser: Default::default(), conv: Box::new(conv) };
        *out.body_mut() = metered(state, snap, ctx, cand, record, request, resp, mode);
        return out;
    }
    let within = ctx.started + snap.config.raw.routing.total_timeout.0;
    let upstream_body = read_capped(resp, 64 * 1024 * 1024, within.saturating_duration_since(Instant::now())).await;
    let mut meter = UsageMeter::new(ch.protocol.wire());
    meter.body(&upstream_body);
    match meter.finish().tokens {
        Some(t) => {
            record.tokens = t;
            record.usage_source = usage::UsageSource::Upstream;
        }
        None if !upstream_body.is_empty() => {
            let est = usage::estimate::estimate(&request, std::slice::from_ref(&upstream_body), false);
            record.tokens.input = est.input;
            record.tokens.output = est.output;
            record.usage_source = usage::UsageSource::Estimated;
        }
        None => {}
    }
    record.cost_usd = ch.price(&cand.model).map(|p| record.tokens.cost(&p));
    record.total_ms = ctx.started.elapsed().as_millis() as u32;
    match convert::convert_response_with(conv, &upstream_body, &client_model, &kinds) {
        Ok(b) => {
            out.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            *out.body_mut() = full(b);
            state.sink.send(record).await;
            out
        }
        Err(e) => {
            let msg = format!("the response of channel `{}` could not be translated: {e}", ch.name);
            record.status = 502;
            record.outcome = Outcome::UpstreamError;
            record.error = Some(msg.chars().take(300).collect());
            state.sink.send(record).await;
            ctx.error(StatusCode::BAD_GATEWAY, &msg, Some("translation_failed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(&Method::POST, "/v1/chat/completions"),
            (Route::Api(Operation::ChatCompletions), Protocol::Openai)
        );
        assert_eq!(
            route(&Method::POST, "/chat/completions"),
            (Route::Api(Operation::ChatCompletions), Protocol::Openai)
        );
        assert_eq!(route(&Method::POST, "/v1/messages"), (Route::Api(Operation::Messages), Protocol::Anthropic));
        assert_eq!(
            route(&Method::POST, "/v1/messages/count_tokens"),
            (Route::Api(Operation::CountTokens), Protocol::Anthropic)
        );
        assert_eq!(route(&Method::GET, "/v1/models").0, Route::Models);
        assert_eq!(route(&Method::GET, "/health").0, Route::Health);
        assert_eq!(route(&Method::GET, "/v1/messages/x"), (Route::NotFound, Protocol::Anthropic));
    }

    #[test]
    fn auth_accepts_bearer_and_x_api_key_only_for_known_keys() {
        let keys = vec![GatewayKey { name: "me".into(), hash: hash_key("sk-gw"), allow: None }];
        let mut h = HeaderMap::new();
        assert!(authenticate(&keys, &h).is_err());
        h.insert("authorization", "Bearer sk-gw".parse().unwrap());
        assert_eq!(authenticate(&keys, &h).unwrap().unwrap().name, "me");
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "sk-gw".parse().unwrap());
        assert!(authenticate(&keys, &h).unwrap().is_some());
        h.insert("x-api-key", "wrong".parse().unwrap());
        assert!(authenticate(&keys, &h).is_err());
        assert!(authenticate(&[], &HeaderMap::new()).unwrap().is_none());
    }
}
