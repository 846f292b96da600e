//! The attempt phase: try the planned candidates in order until one answers, cooling down what fails.
//!
//! Owns building one upstream request (URL, auth, model rewrite or translation, the client's query for native
//! requests only), the first-byte timeout, reading an error body (bounded, scrubbed of the key) and the
//! failover decision. Must not render client errors (it returns a [`Rejection`]) or meter bodies (that is
//! [`super::respond`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};

use super::exchange::{Exchange, Input, Rejection, error_read_budget};
use super::{ProxyBody, headers, respond};
use crate::catalog::Channel;
use crate::live::health::{CoolKeys, model_key};
use crate::protocol::Protocol;
use crate::protocol::convert::{self, Conversion};
use crate::routing::{Candidate, Plan};
use crate::upstream::wire::read_capped;
use crate::upstream::{self, FailureClass, Operation, UpstreamError};
use crate::usage::Attempt;

/// What the last failed attempt left, for the response when no candidate succeeds.
pub(super) struct Failure {
    pub err: UpstreamError,
    /// An upstream error response that may be passed through (non-retryable 4xx).
    pub response: Option<(StatusCode, http::HeaderMap, Bytes)>,
}

/// One upstream request, ready to send.
struct Outgoing {
    url: String,
    body: Bytes,
    conv: Option<Conversion>,
    /// `stream_options.include_usage` was added for metering.
    injected: bool,
    /// What the upstream is asked (the client's operation, or the one it is translated to).
    upstream_op: Operation,
}

/// Tries each candidate until one succeeds, a failure is final, `max_attempts` or the deadline is reached.
pub(super) async fn attempt_all(
    ex: &mut Exchange,
    input: &Input,
    plan: &Plan,
) -> Result<Response<ProxyBody>, Rejection> {
    let max_attempts = ex.snap.config.raw.routing.max_attempts.max(1) as usize;
    let deadline = ex.deadline();
    let mut last: Option<Box<Failure>> = None;
    for cand in &plan.candidates {
        let now = Instant::now();
        if ex.record.attempts.len() >= max_attempts || now >= deadline {
            break;
        }
        if cooling_now(ex, cand, now) {
            // Something earlier in this request cooled this endpoint, token or model down.
            continue;
        }
        let out = prepare(ex, input, cand)?;
        let failure = match send(ex, input, cand, out, now).await {
            Tried::Answered(answer) => return answer,
            Tried::Failed(f) => f,
        };
        let retryable = failure.err.retryable(ex.snap.config.raw.routing.retry_on_timeout);
        last = Some(Box::new(failure));
        if !retryable {
            break;
        }
    }
    Err(Rejection::AllFailed(last))
}

fn cooling_now(ex: &Exchange, cand: &Candidate, now: Instant) -> bool {
    let (ch, ep, tok) = ex.snap.candidate(cand);
    let h = &ex.state.health;
    if h.nothing_cools(now) {
        return false;
    }
    h.cooling(&ep.health_key, now).is_some()
        || h.cooling(&tok.health_key, now).is_some()
        || h.cooling(&model_key(&ch.name, &cand.model), now).is_some()
}

/// The URL and body for a candidate: the model rewritten in place, or the request translated.
fn prepare(ex: &mut Exchange, input: &Input, cand: &Candidate) -> Result<Outgoing, Rejection> {
    let (ch, ep, _) = ex.snap.candidate(cand);
    let conv = conversion(ex.op, ch);
    let upstream_op = match conv {
        Some(Conversion::AnthropicToChat | Conversion::ResponsesToChat | Conversion::GeminiToChat) => {
            Operation::ChatCompletions
        }
        Some(Conversion::ChatToAnthropic | Conversion::GeminiToAnthropic) => Operation::Messages,
        Some(Conversion::GeminiEmbedToOpenai | Conversion::GeminiBatchEmbedToOpenai) => Operation::Embeddings,
        None => ex.op,
    };
    let mut url = upstream::url(ch, ep, upstream_op, &cand.model);
    // The client's query (Claude Code sends `?beta=true`) belongs to its protocol: forward it only natively.
    if let Some(q) = input.query.as_ref().filter(|_| conv.is_none()) {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(q);
    }
    let injected = conv.is_none()
        && matches!(ex.op, Operation::ChatCompletions | Operation::Completions)
        && input.peek.stream
        && ch.protocol.wire() == Protocol::Openai;
    let body = match conv {
        None if matches!(ex.op, Operation::EmbedContent | Operation::BatchEmbedContents) => {
            match convert::gemini_embed::with_upstream_model(&input.body, &cand.model) {
                Some(b) => Bytes::from(b),
                None => input.body.clone(),
            }
        }
        None => input.peek.rewrite(&input.body, Some(&cand.model), injected),
        Some(c) => match convert::convert_gemini_request(c, &input.body, &cand.model, ex.op.is_gemini_stream()) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                let msg = format!("the request cannot be translated for channel `{}`: {e}", ch.name);
                return Err(Rejection::bad_request(msg));
            }
        },
    };
    ex.record.translated = conv;
    Ok(Outgoing { url, body, conv, injected, upstream_op })
}

/// How one attempt ended.
enum Tried {
    /// The upstream succeeded: the client's answer (or why it could not be given). Failover ends here.
    Answered(Result<Response<ProxyBody>, Rejection>),
    /// Classified and cooled down; the next candidate may be tried.
    Failed(Failure),
}

/// Sends one attempt and records it. A success becomes the client's response; a failure is classified and
/// cooled.
/// `t0`: when the attempt began (read by `attempt_all` for its deadline check; the attempt's time and first-byte
/// timeout count from it).
async fn send(ex: &mut Exchange, input: &Input, cand: &Candidate, out: Outgoing, t0: Instant) -> Tried {
    let snap = ex.snap.clone();
    let cfg = &snap.config.raw;
    let (ch, ep, tok) = snap.candidate(cand);
    let mut hdrs = upstream::Outbound::new(&input.headers, headers::forwarded_upstream);
    hdrs.auth(ch, ep, tok, out.upstream_op);
    hdrs.set(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    let deadline = ex.deadline();
    let first_byte = ep.first_byte_timeout.unwrap_or(cfg.upstream.first_byte_timeout.0).min(deadline - t0);
    let stream = input.peek.stream || ex.op.is_gemini_stream();
    // The timer's deadline from `t0` rather than from a fresh clock read.
    let until = tokio::time::Instant::from_std(t0 + first_byte);
    let sent = tokio::time::timeout_at(until, ex.state.wire.post(&out.url, hdrs, out.body, stream)).await;
    let ttfb = t0.elapsed();
    let mut attempt = Attempt {
        channel: ch.name.clone(),
        endpoint: ep.name.clone(),
        token_key: tok.token_key.clone(),
        token_fp: tok.fingerprint.clone(),
        model: cand.model.clone(),
        status: None,
        outcome: FailureClass::Ok,
        ms: ttfb.as_millis() as u32,
    };
    let failure = match sent {
        Err(_) => Failure { err: UpstreamError::FirstByteTimeout(first_byte), response: None },
        Ok(Err(err)) => Failure { err, response: None },
        Ok(Ok(resp)) if resp.status().is_success() => {
            attempt.status = Some(resp.status().as_u16());
            attempt.outcome = FailureClass::Ok;
            let h = &ex.state.health;
            h.succeed(&ep.health_key);
            h.succeed(&tok.health_key);
            h.observe_ttfb(&ep.health_key, ttfb.as_secs_f64() * 1000.0);
            ex.record.attempts.push(attempt);
            let success = respond::Success { cand, resp, ttfb, conv: out.conv, injected: out.injected };
            return Tried::Answered(respond::respond(ex, input, success).await);
        }
        Ok(Ok(resp)) => {
            let status = resp.status();
            attempt.status = Some(status.as_u16());
            error_failure(resp, out.conv, &tok.secret, error_read_budget(deadline)).await
        }
    };
    attempt.outcome = failure.err.class();
    let keys = CoolKeys { channel: &ch.name, endpoint: &ep.health_key, token: &tok.health_key, model: &cand.model };
    let err = &failure.err;
    ex.state.health.cool(err.class(), &cfg.routing.cooldown, &keys, err.retry_after(), &err.to_string());
    tracing::info!(
        request = %crate::usage::format_id(ex.id), channel = %ch.name, endpoint = %ep.name, token = %tok.token_key,
        model = %cand.model, "attempt failed: {err}"
    );
    ex.record.attempts.push(attempt);
    Tried::Failed(failure)
}

/// An upstream error answer: classified, its body read (bounded), scrubbed and put in the client's shape.
async fn error_failure(
    resp: Response<upstream::wire::Body>,
    conv: Option<Conversion>,
    secret: &crate::config::Secret,
    within: Duration,
) -> Failure {
    let status = resp.status();
    let retry_after = upstream::parse_retry_after(resp.headers());
    let (parts, body) = resp.into_parts();
    let err_body = upstream::scrub(read_capped(body, 256 * 1024, within).await, secret);
    let err = UpstreamError::status(status.as_u16(), retry_after, &err_body);
    // Errors reach the client in its own shape.
    let err_body = match conv {
        Some(c) => Bytes::from(convert::convert_error(c, status.as_u16(), &err_body)),
        None => err_body,
    };
    Failure { err, response: Some((status, parts.headers, err_body)) }
}

/// Which translation a request needs on a channel, if any. A `gemini` channel takes Gemini requests natively.
fn conversion(op: Operation, ch: &Channel) -> Option<Conversion> {
    if op.is_gemini() && ch.protocol.speaks(Protocol::Gemini) {
        return None;
    }
    match (op, ch.protocol.wire()) {
        (Operation::GenerateContent | Operation::StreamGenerateContent, Protocol::Openai) => {
            Some(Conversion::GeminiToChat)
        }
        (Operation::GenerateContent | Operation::StreamGenerateContent, Protocol::Anthropic) => {
            Some(Conversion::GeminiToAnthropic)
        }
        (Operation::EmbedContent, Protocol::Openai) => Some(Conversion::GeminiEmbedToOpenai),
        (Operation::BatchEmbedContents, Protocol::Openai) => Some(Conversion::GeminiBatchEmbedToOpenai),
        (Operation::Messages, Protocol::Openai) => Some(Conversion::AnthropicToChat),
        (Operation::ChatCompletions, Protocol::Anthropic) => Some(Conversion::ChatToAnthropic),
        (Operation::Responses, Protocol::Openai) if ch.responses_via_chat() => Some(Conversion::ResponsesToChat),
        _ => None,
    }
}
