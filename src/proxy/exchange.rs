//! One authenticated request as a value: the [`Exchange`] the phases work on, and the one way a request that
//! does not succeed ends ([`Rejection`], rendered once in the client's shape and recorded once).
//!
//! Owns the phases between authentication and the first upstream attempt: read the body (size cap), peek
//! (model, stream flags), plan. Must not talk to upstreams (that is [`super::failover`]) or build success
//! responses (that is [`super::respond`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::affinity::{self, Affine};
use super::failover::Failure;
use super::h1::Answer;
use super::{AppState, ProxyBody, full, headers, respond};
use crate::catalog::{ModelKind, Snapshot};
use crate::config::Strategy;
use crate::keys::Entry;
use crate::live::limits::{Period, Refusal, Ticket};
use crate::protocol::request::{Peek, PeekError};
use crate::protocol::{Protocol, errors};
use crate::routing::{self, Allow, PlanError, RouteRequest};
use crate::upstream::Operation;
use crate::usage::{self, Outcome, RequestRecord};

/// Output tokens assumed for cost estimates when the request sets no `max_tokens` / `max_output_tokens`.
const DEFAULT_EST_OUTPUT: u64 = 1024;

/// Longest error message kept in a record.
const RECORD_ERROR_CHARS: usize = 300;

/// One request past authentication: who asked, what for, and the record it will leave.
pub(super) struct Exchange {
    pub state: Arc<AppState>,
    /// The snapshot this request routes on, loaded once when it arrived.
    pub snap: Arc<Snapshot>,
    pub id: u128,
    pub started: Instant,
    /// The client's protocol: errors and translated answers take its shape.
    pub protocol: Protocol,
    pub op: Operation,
    pub allow: Option<Allow>,
    /// Filled as the phases learn things; handed to the sink exactly once.
    pub record: RequestRecord,
    /// The key's admission; settled (tokens, cost) with the record, wherever the record is finished.
    pub ticket: Ticket,
    /// Counts the request in flight (metrics) until it ends: moved into the body of a streamed answer.
    pub in_flight: crate::metrics::InFlight,
    /// Prompt-cache affinity, between its lookup (after the peek) and the success that settles it.
    pub affinity: Option<Affine>,
    /// The router's own header lines for the answer (debug headers), handed out with it.
    pub lines: headers::Lines,
}

/// What the client sent, once read: the parts the attempts need.
pub(super) struct Input {
    pub headers: HeaderMap,
    /// The client's query string, forwarded only to channels of its own protocol.
    pub query: Option<String>,
    pub body: Bytes,
    pub peek: Peek,
}

/// Why a request ends without an upstream success. Each is rendered once, in the client's shape.
pub(super) enum Rejection {
    /// The request itself is wrong (bad JSON, too large, unknown strategy, untranslatable): 4xx, `bad_request`.
    BadRequest { status: StatusCode, message: String },
    /// No candidate could be planned.
    NoRoute(PlanError),
    /// Every attempt failed (or none could be made before the deadline).
    AllFailed(Option<Box<Failure>>),
    /// The upstream succeeded but its answer could not be translated for the client.
    Untranslatable(String),
    /// The key's limits refuse it (429); it never reaches an upstream.
    Refused(Refusal),
}

impl Rejection {
    pub fn bad_request(message: impl Into<String>) -> Rejection {
        Rejection::BadRequest { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

/// An error response in `protocol`'s shape, carrying the request id.
pub(super) fn error_response(
    protocol: Protocol,
    id: u128,
    status: StatusCode,
    message: &str,
    code: Option<&str>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(full(errors::body(protocol, status.as_u16(), message, code)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    headers::set_request_id(resp.headers_mut(), id);
    resp
}

impl Exchange {
    /// `time_ms`: when the request arrived (unix ms, read once by the handler for authentication too).
    pub fn new(
        state: Arc<AppState>,
        snap: Arc<Snapshot>,
        protocol: Protocol,
        op: Operation,
        key: Option<&Entry>,
        path: String,
        time_ms: i64,
    ) -> Exchange {
        let id = usage::new_id(time_ms);
        let record = RequestRecord {
            id,
            time_ms,
            gateway_key: key.map(|k| k.name.clone()),
            client_protocol: protocol,
            path,
            ..Default::default()
        };
        let allow = key.and_then(|k| k.allow.as_deref()).map(Allow::parse);
        Exchange {
            state,
            snap,
            id,
            started: Instant::now(),
            protocol,
            op,
            allow,
            record,
            ticket: Ticket::default(),
            in_flight: Default::default(),
            affinity: None,
            lines: headers::Lines::default(),
        }
    }

    pub fn debug_headers(&self) -> bool {
        self.snap.config.raw.server.debug_headers
    }

    /// The request deadline (`routing.total_timeout` from arrival).
    pub fn deadline(&self) -> Instant {
        self.started + self.snap.config.raw.routing.total_timeout.0
    }

    pub fn error(&self, status: StatusCode, message: &str, code: Option<&str>) -> Response<ProxyBody> {
        error_response(self.protocol, self.id, status, message, code)
    }

    /// Runs the phases after authentication; whatever does not succeed ends in [`Exchange::reject`]. `query` is
    /// the client's query as it may be forwarded (for Gemini, without `key`).
    pub async fn run(mut self: Box<Self>, req: http::Request<super::RequestBody>, query: Option<String>) -> Answer {
        let (parts, body) = req.into_parts();
        let body = match self.read_body(&parts.headers, body).await {
            Ok(b) => b,
            Err(r) => return self.reject(r).await,
        };
        let peek = match self.peek(&body) {
            Ok(p) => p,
            Err(r) => return self.reject(r).await,
        };
        let input = Input { headers: parts.headers, query, body, peek };
        self.affinity = affinity::lookup(&mut self, &input).await;
        let mut plan = match self.plan(&input).await {
            Ok(p) => p,
            Err(Rejection::NoRoute(_)) if matches!(self.op, Operation::CountTokens | Operation::GeminiCountTokens) => {
                return super::local::count_tokens(self.protocol, self.id, &input.body).into();
            }
            Err(r) => return self.reject(r).await,
        };
        if let Some(a) = &self.affinity {
            affinity::prefer(&self, a, &mut plan);
        }
        match super::failover::attempt_all(&mut self, &input, &plan).await {
            Ok(resp) => Answer { resp, lines: std::mem::take(&mut self.lines) },
            Err(r) => self.reject(r).await,
        }
    }

    /// Reads the body up to `server.max_body_bytes` (checked against Content-Length first).
    async fn read_body(&self, headers: &HeaderMap, body: super::RequestBody) -> Result<Bytes, Rejection> {
        let max = self.snap.config.raw.server.max_body_bytes;
        let too_large = || Rejection::BadRequest {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body is larger than the limit of {max} bytes (server.max_body_bytes)"),
        };
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(too_large());
        }
        match Limited::new(body, max).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some()
                    || e.downcast_ref::<super::h1::TooLarge>().is_some() =>
            {
                Err(too_large())
            }
            Err(e) => Err(Rejection::bad_request(format!("could not read the request body: {e}"))),
        }
    }

    /// Parses only what routing needs; records the model and stream flag. A Gemini request names its model in
    /// the path (already recorded) and streams by path (`:streamGenerateContent`).
    fn peek(&mut self, body: &Bytes) -> Result<Peek, Rejection> {
        let peek = Peek::parse(body)
            .map_err(|e @ (PeekError::Json(_) | PeekError::ModelNotString)| Rejection::bad_request(e.to_string()))?;
        if self.op.is_gemini() {
            self.record.stream = self.op == Operation::StreamGenerateContent;
            return Ok(peek);
        }
        let Some(model) = &peek.model else {
            return Err(Rejection::bad_request("`model` is required"));
        };
        self.record.requested_model = model.clone();
        self.record.stream = peek.stream;
        if let Some(field) = missing_field(self.op, &peek.present) {
            return Err(Rejection::bad_request(format!("`{field}` is required for {}", self.record.path)));
        }
        Ok(peek)
    }

    /// The ordered candidates for this request (strategy from `X-Router-Strategy` or config).
    async fn plan(&mut self, input: &Input) -> Result<routing::Plan, Rejection> {
        let strategy = match input.headers.get(&headers::STRATEGY).and_then(|v| v.to_str().ok()) {
            Some(s) => Strategy::parse(s).ok_or_else(|| {
                let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.as_str()).collect();
                Rejection::bad_request(format!("unknown X-Router-Strategy `{s}`; use one of {}", names.join(", ")))
            })?,
            None => self.snap.config.raw.routing.strategy,
        };
        self.record.strategy = Some(strategy);
        let pin = input.headers.get(&headers::CHANNEL).and_then(|v| v.to_str().ok());
        let op = self.op;
        let route_req = RouteRequest {
            model: &self.record.requested_model,
            kind: if op.is_embedding() { ModelKind::Embedding } else { ModelKind::Chat },
            client: self.protocol,
            strategy,
            pin,
            allow: self.allow.as_ref(),
            translate: matches!(
                op,
                Operation::ChatCompletions
                    | Operation::Messages
                    | Operation::GenerateContent
                    | Operation::StreamGenerateContent
                    | Operation::EmbedContent
                    | Operation::BatchEmbedContents
            ),
            est_input: input.body.len() as u64 / 4,
            est_output: input.peek.max_output.unwrap_or(DEFAULT_EST_OUTPUT),
        };
        let (snap, state) = (&self.snap, &self.state);
        let mut planned = routing::plan(snap, &state.health, &route_req, Instant::now());
        // `fastest` ranks on observed latency: endpoints nobody has measured yet get a cached fast test first.
        if strategy == Strategy::Fastest
            && let Ok(p) = &planned
            && state.fasttest.measure_unknown(snap, &state.health, &p.endpoints()).await > 0
        {
            planned = routing::plan(snap, &state.health, &route_req, Instant::now());
        }
        let plan = planned.map_err(Rejection::NoRoute)?;
        // A Responses request without `input` passes through to a native Responses API (which may accept it), but
        // cannot be translated to chat completions.
        if op == Operation::Responses
            && !input.peek.present.input
            && plan.candidates.iter().any(|c| snap.channels[c.channel].responses_via_chat())
        {
            return Err(Rejection::bad_request(format!(
                "`input` is required for {} (the channels serving `{}` take it as chat completions)",
                self.record.path, self.record.requested_model
            )));
        }
        Ok(plan)
    }

    /// Ends a request that did not succeed: fills the record, sends it, answers in the client's shape.
    ///
    /// Boxed: its state (~3 KB) would otherwise be part of every request's future, which is moved into its
    /// box and touched whole on every request; only a failed request pays for it here.
    pub fn reject(self: Box<Self>, rejection: Rejection) -> std::pin::Pin<Box<dyn Future<Output = Answer> + Send>> {
        Box::pin(self.reject_now(rejection))
    }

    async fn reject_now(mut self: Box<Self>, rejection: Rejection) -> Answer {
        let (outcome, status, message, mut resp) = match rejection {
            Rejection::BadRequest { status, message } => {
                let code = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => Some("request_too_large"),
                    StatusCode::BAD_REQUEST => Some("invalid_request"),
                    _ => None,
                };
                let resp = self.error(status, &message, code);
                (Outcome::BadRequest, status, message, resp)
            }
            Rejection::NoRoute(e) => {
                let (status, code, mut message) = no_route(&e);
                if let (Operation::Completions, PlanError::WrongProtocol { model, protocol, .. }) = (self.op, &e) {
                    message = format!(
                        "`{model}` is served only by {protocol} channels; legacy completions (/v1/completions) go \
                         only to OpenAI-protocol channels: use /v1/chat/completions or /v1/messages for it"
                    );
                }
                let mut resp = self.error(status, &message, Some(code));
                if let PlanError::AllCooling { retry_in, .. } = e {
                    resp.headers_mut().insert(http::header::RETRY_AFTER, retry_in.as_secs().max(1).into());
                }
                (Outcome::NoRoute, status, message, resp)
            }
            Rejection::Refused(why) => {
                let (outcome, code, message) = refusal(&why, &self.state.limiter.timezone());
                let mut resp = self.error(StatusCode::TOO_MANY_REQUESTS, &message, Some(code));
                match why.retry_after_secs() {
                    Some(s) => _ = resp.headers_mut().insert(http::header::RETRY_AFTER, s.into()),
                    // OpenAI SDKs retry a 429 unless told not to; a spent budget does not come back by retrying.
                    None => {
                        _ = resp.headers_mut().insert(headers::SHOULD_RETRY, http::HeaderValue::from_static("false"))
                    }
                }
                (outcome, StatusCode::TOO_MANY_REQUESTS, message, resp)
            }
            Rejection::Untranslatable(message) => {
                let status = StatusCode::BAD_GATEWAY;
                let resp = self.error(status, &message, Some("translation_failed"));
                (Outcome::UpstreamError, status, message, resp)
            }
            Rejection::AllFailed(last) => {
                self.record.locate_last_attempt();
                let (status, message, resp) = self.all_failed(last);
                if self.debug_headers() {
                    // The request id goes into the map below, as for every rejection.
                    respond::debug_headers(&mut self.lines, None, &self.record, None);
                }
                (Outcome::UpstreamError, status, message, resp)
            }
        };
        let record = &mut self.record;
        record.status = status.as_u16();
        record.outcome = outcome;
        record.error = Some(message.chars().take(RECORD_ERROR_CHARS).collect());
        record.total_ms = self.started.elapsed().as_millis() as u32;
        if !resp.headers().contains_key(headers::REQUEST_ID) {
            headers::set_request_id(resp.headers_mut(), self.id);
        }
        super::settle(&self.state, std::mem::take(&mut self.ticket), &self.record);
        self.state.sink.send(self.record).await;
        Answer { resp, lines: self.lines }
    }

    /// The answer when no attempt succeeded: the upstream's own when the client's request was wrong,
    /// else 502 / 504 with the per-attempt summary. Returns (status, message for the record, response).
    fn all_failed(&self, last: Option<Box<Failure>>) -> (StatusCode, String, Response<ProxyBody>) {
        let attempts = &self.record.attempts;
        match last.map(|f| *f) {
            // The client's own request was wrong (or the error is final): pass the upstream's answer through.
            Some(Failure { err, response: Some((status, hdrs, body)) })
                if !err.retryable(true) || matches!(status.as_u16(), 400 | 413 | 422) =>
            {
                let mut resp = Response::new(full(body));
                *resp.status_mut() = status;
                headers::downstream_headers(&hdrs, resp.headers_mut());
                (status, format!("upstream answered {status}"), resp)
            }
            Some(Failure { err: crate::upstream::UpstreamError::FirstByteTimeout(d), .. }) if attempts.len() == 1 => {
                let msg = format!("upstream did not answer within {d:?} ({})", summary(attempts));
                let resp = self.error(StatusCode::GATEWAY_TIMEOUT, &msg, Some("upstream_timeout"));
                (StatusCode::GATEWAY_TIMEOUT, msg, resp)
            }
            Some(_) => {
                let msg = format!("all {} upstream attempts failed: {}", attempts.len(), summary(attempts));
                let resp = self.error(StatusCode::BAD_GATEWAY, &msg, Some("upstream_failed"));
                (StatusCode::BAD_GATEWAY, msg, resp)
            }
            None => {
                let msg = "the request deadline passed before any upstream could be tried (routing.total_timeout)";
                let resp = self.error(StatusCode::GATEWAY_TIMEOUT, msg, Some("deadline"));
                (StatusCode::GATEWAY_TIMEOUT, msg.to_string(), resp)
            }
        }
    }
}

/// The field an operation cannot do without, when the body lacks it (checked before routing, so such a request
/// costs no upstream attempt).
fn missing_field(op: Operation, has: &crate::protocol::request::Present) -> Option<&'static str> {
    match op {
        Operation::ChatCompletions | Operation::CountTokens if !has.messages => Some("messages"),
        Operation::Messages if !has.messages => Some("messages"),
        Operation::Messages if !has.max_tokens => Some("max_tokens"),
        Operation::Embeddings if !has.input => Some("input"),
        Operation::Completions if !has.prompt => Some("prompt"),
        _ => None,
    }
}

/// Outcome, error code and message of a refusal: which limit, and when it frees; nothing about other keys.
fn refusal(why: &Refusal, tz: &jiff::tz::TimeZone) -> (Outcome, &'static str, String) {
    let retry = |d: &Duration| format!("retry in {}", super::headers::duration_text(*d));
    match why {
        Refusal::Requests { limit, retry_after } => (
            Outcome::Limited,
            "rate_limit_exceeded",
            format!("this key's limit of {limit} requests per minute is reached; {}", retry(retry_after)),
        ),
        Refusal::Tokens { limit, retry_after } => (
            Outcome::Limited,
            "rate_limit_exceeded",
            format!("this key's limit of {limit} tokens per minute is reached; {}", retry(retry_after)),
        ),
        Refusal::Parallel { limit, .. } => (
            Outcome::Limited,
            "rate_limit_exceeded",
            format!("this key's limit of {limit} requests at the same time is reached; retry when one finishes"),
        ),
        Refusal::Budget { budget, spent, per, resets_at_ms } => {
            let period = match per {
                Period::Total => "in total".to_string(),
                p => format!("per {}", p.as_str()),
            };
            let when = match resets_at_ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()) {
                Some(t) => format!("it resets at {}", t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M %Z")),
                None => "it does not reset; ask for a larger budget".to_string(),
            };
            (
                Outcome::Budget,
                "budget_exceeded",
                format!("this key's budget of ${budget:.2} {period} is spent (${spent:.4}); {when}"),
            )
        }
    }
}

/// Status, error code and message for a request no candidate could take.
fn no_route(e: &PlanError) -> (StatusCode, &'static str, String) {
    let excluded_summary = |excluded: &[routing::Excluded], with_endpoint: bool| {
        excluded
            .iter()
            .take(6)
            .map(|x| match (&x.endpoint, with_endpoint) {
                (Some(ep), true) => format!("{}/{ep}: {}", x.channel, x.reason),
                _ => format!("{}: {}", x.channel, x.reason),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match e {
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
        PlanError::AllCooling { retry_in, excluded, .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "all_cooling_down",
            format!("{e} (retry in {}s): {}", retry_in.as_secs().max(1), excluded_summary(excluded, true)),
        ),
        // Too long for every model that could take it: the client's request, not a passing condition.
        PlanError::NoneUsable { excluded, model }
            if !excluded.is_empty()
                && excluded.iter().all(|x| matches!(x.reason, routing::Exclusion::ContextTooLong { .. })) =>
        {
            let msg = format!(
                "the request is too long for every model `{model}` routes to: {}",
                excluded_summary(excluded, false)
            );
            (StatusCode::BAD_REQUEST, "context_length_exceeded", msg)
        }
        PlanError::NoneUsable { excluded, .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "no_candidate", format!("{e}: {}", excluded_summary(excluded, false)))
        }
    }
}

/// `main/default [fp:1234…] gpt-4o: HTTP 500; backup/eu [key2] gpt-4o: connect` — names and fingerprints only.
fn summary(attempts: &[usage::Attempt]) -> String {
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

/// How long an error-body read may take: what is left of the deadline, at most 30 s.
pub(super) fn error_read_budget(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(30))
}
