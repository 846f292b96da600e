//! The respond phase: an upstream success becomes the client's response.
//!
//! Owns choosing how upstream bytes reach the client (raw, SSE as is, SSE without the injected usage chunk,
//! SSE translated event by event, or a whole body translated), the debug headers, and accounting of a whole
//! translated body. Streams are metered and recorded by [`super::body::MeteredBody`]; this module builds it.
//! Must not retry or classify failures (that is [`super::failover`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;

use super::body::{self, Finisher, MeteredBody, Mode};
use super::exchange::{Exchange, Input, Rejection};
use super::{ProxyBody, full, headers};
use crate::protocol::Protocol;
use crate::protocol::convert::{self, Conversion, StreamConverter};
use crate::protocol::usage::UsageMeter;
use crate::routing::Candidate;
use crate::upstream::Operation;
use crate::upstream::wire::read_capped;
use crate::usage::RequestRecord;

/// A successful attempt, as the attempt phase hands it over.
pub(super) struct Success<'a> {
    pub cand: &'a Candidate,
    pub resp: Response<crate::upstream::wire::Body>,
    pub ttfb: Duration,
    pub conv: Option<Conversion>,
    /// `stream_options.include_usage` was added for metering: hide the usage chunk unless the client asked.
    pub injected: bool,
}

/// Builds the client's response; the record leaves with the body (streams) or here (whole translated bodies).
pub(super) async fn respond(
    ex: &mut Exchange,
    input: &Input,
    ok: Success<'_>,
) -> Result<Response<ProxyBody>, Rejection> {
    let is_sse = record_success(ex, &ok);
    super::affinity::settle(ex, ok.cand).await;
    let mut out = Response::new(full(Bytes::new()));
    *out.status_mut() = ok.resp.status();
    // Room for what is passed on at once (growing rehashes the map each time): at most the upstream answer's
    // fields (a plain-HTTP upstream's map holds only those passed back or read; 16 covers a TLS upstream's
    // request ids and rate-limit fields), or the two a translated answer sets. The router's own headers are
    // lines beside the map (`headers::Lines`), not in it.
    out.headers_mut().reserve(ok.resp.headers().len().clamp(2, 16));
    let mode = match ok.conv {
        None => {
            headers::downstream_headers(ok.resp.headers(), out.headers_mut());
            let hide_usage = ok.injected
                && !input.peek.include_usage
                && matches!(ex.op, Operation::ChatCompletions | Operation::Completions);
            match (is_sse, hide_usage) {
                (false, _) => Mode::Raw,
                (true, true) => Mode::SseFiltered { parser: Default::default() },
                (true, false) => Mode::Sse { parser: Default::default() },
            }
        }
        Some(conv) if is_sse && !conv.is_embedding() => {
            let wants_usage = conv == Conversion::ChatToAnthropic && convert::chat_request_wants_usage(&input.body);
            let conv = StreamConverter::new(conv, &ex.record.requested_model)
                .with_include_usage(wants_usage)
                // Custom / local shell tools of a Responses request, which the Chat upstream only knows as functions.
                .with_tool_kinds(convert::tool_kinds(conv, &input.body))
                // A Gemini stream without `alt=sse` is one JSON array.
                .with_json_array(ex.op.is_gemini_stream() && !wants_sse(input.query.as_deref()));
            let h = out.headers_mut();
            let content_type = if conv.is_sse() { "text/event-stream" } else { "application/json" };
            h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
            h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
            Mode::Convert { parser: Default::default(), conv: Box::new(conv) }
        }
        Some(conv) => {
            let body = translate_whole(ex, input, ok.cand, ok.resp, conv).await?;
            if ex.debug_headers() {
                debug_headers(&mut ex.lines, Some(ex.id), &ex.record, Some(ex.snap.candidate(ok.cand)));
            }
            // A Gemini stream the upstream answered whole: one chunk, framed as the client asked.
            let (body, content_type) = match ex.op.is_gemini_stream() {
                true if wants_sse(input.query.as_deref()) => (
                    crate::protocol::sse::SseEvent::data(String::from_utf8_lossy(&body)).to_bytes(),
                    "text/event-stream",
                ),
                true => ([&b"["[..], &body, b"]"].concat().into(), "application/json"),
                false => (body, "application/json"),
            };
            out.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
            *out.body_mut() = full(body);
            super::settle(&ex.state, std::mem::take(&mut ex.ticket), &ex.record);
            ex.state.sink.send(std::mem::take(&mut ex.record)).await;
            return Ok(out);
        }
    };
    if ex.debug_headers() {
        let lines = &mut ex.lines;
        debug_headers(lines, Some(ex.id), &ex.record, Some(ex.snap.candidate(ok.cand)));
        if let Some(s) = ok.cand.score.filter(|_| ok.conv.is_none()) {
            let score = format!(
                "{:.3} (cost {:.2} speed {:.2} quality {:.2} reliability {:.2})",
                s.total, s.cost, s.speed, s.quality, s.reliability
            );
            lines.push(&headers::SCORE, score.as_bytes());
        }
    }
    *out.body_mut() = metered(ex, input, ok, mode);
    Ok(out)
}

/// Whether a Gemini client asked for SSE (`alt=sse`) rather than one JSON array.
fn wants_sse(query: Option<&str>) -> bool {
    query.is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "alt" && v == "sse"))
}

/// The protocol of the upstream's answer: the channel's wire, or Gemini's native API for an untranslated Gemini
/// request.
fn upstream_protocol(ex: &Exchange, ch: &crate::catalog::Channel, conv: Option<Conversion>) -> Protocol {
    if conv.is_none() && ex.op.is_gemini() { Protocol::Gemini } else { ch.protocol.wire() }
}

/// Fills the record with where a successful attempt went; returns whether the response is an SSE stream.
fn record_success(ex: &mut Exchange, ok: &Success<'_>) -> bool {
    let record = &mut ex.record;
    record.status = ok.resp.status().as_u16();
    // The successful attempt was the last one recorded (`failover::send`): it names the same candidate.
    record.locate_last_attempt();
    record.ttfb_ms = Some(ok.ttfb.as_millis() as u32);
    ok.resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// The streamed response body: upstream bytes through the meter, the record emitted when it ends.
fn metered(ex: &mut Exchange, input: &Input, ok: Success<'_>, mode: Mode) -> ProxyBody {
    let cand = ok.cand;
    let (ch, ep, tok) = ex.snap.candidate(cand);
    let meter = UsageMeter::new(upstream_protocol(ex, ch, ok.conv));
    let finisher = Finisher {
        state: ex.state.clone(),
        price: ch.price(&cand.model),
        channel: ch.name.clone(),
        endpoint_key: ep.health_key.clone(),
        token_key: tok.health_key.clone(),
        client: ex.protocol,
        request: input.body.clone(),
        record: std::mem::take(&mut ex.record),
        started: ex.started,
        ticket: std::mem::take(&mut ex.ticket),
        in_flight: std::mem::take(&mut ex.in_flight),
    };
    let idle = ep.idle_timeout.unwrap_or(ex.snap.config.raw.upstream.idle_timeout.0);
    MeteredBody::new(ok.resp.into_body(), mode, meter, idle, finisher).boxed_unsync()
}

/// A whole (non-stream) answer from a channel of the other protocol: read, metered, translated.
async fn translate_whole(
    ex: &mut Exchange,
    input: &Input,
    cand: &Candidate,
    resp: Response<crate::upstream::wire::Body>,
    conv: Conversion,
) -> Result<Bytes, Rejection> {
    let (ch, _, _) = ex.snap.candidate(cand);
    let within = ex.deadline().saturating_duration_since(Instant::now());
    let upstream_body = read_capped(resp.into_body(), 64 * 1024 * 1024, within).await;
    let mut meter = UsageMeter::new(ch.protocol.wire());
    meter.body(&upstream_body);
    let reported = meter.finish().tokens;
    let exchanged = (!upstream_body.is_empty()).then(|| body::Exchanged {
        request: &input.body,
        received: std::slice::from_ref(&upstream_body),
        sse: false,
        total_bytes: upstream_body.len() as u64,
    });
    let record = &mut ex.record;
    body::account(record, reported, exchanged, ch.price(&cand.model));
    record.total_ms = ex.started.elapsed().as_millis() as u32;
    let kinds = convert::tool_kinds(conv, &input.body);
    convert::convert_response_with(conv, &upstream_body, &record.requested_model, &kinds).map(Bytes::from).map_err(
        |e| Rejection::Untranslatable(format!("the response of channel `{}` could not be translated: {e}", ch.name)),
    )
}

/// The channel, endpoint and token that answered a request.
pub(super) type Served<'s> = (&'s crate::catalog::Channel, &'s crate::catalog::Endpoint, &'s crate::catalog::Token);

/// The `X-Router-*` headers that say where a request went (with the request id, unless `id` is `None`: the answer
/// has one already); `served`: the candidate that answered, whose names' header values the snapshot made once
/// (else they are made from the record's text).
pub(super) fn debug_headers(
    h: &mut headers::Lines,
    id: Option<u128>,
    record: &RequestRecord,
    served: Option<Served<'_>>,
) {
    let put = |h: &mut headers::Lines,
               name: &http::HeaderName,
               made: Option<&http::HeaderValue>,
               text: &Option<std::sync::Arc<str>>| {
        if let Some(v) = made {
            h.push_value(name, v);
        } else if let Some(t) = text {
            h.push(name, t.as_bytes());
        }
    };
    if let Some(id) = id {
        h.push(&headers::REQUEST_ID, &crate::usage::hex_id(id));
    }
    let (ch, ep, tok) =
        served.map(|(ch, ep, tok)| (ch.header.as_ref(), ep.header.as_ref(), tok.header.as_ref())).unwrap_or_default();
    put(h, &headers::CHANNEL, ch, &record.channel);
    put(h, &headers::ENDPOINT, ep, &record.endpoint);
    put(h, &headers::MODEL, None, &record.upstream_model);
    put(h, &headers::TOKEN, tok, &record.token_key);
    h.push(&headers::ATTEMPTS, itoa::Buffer::new().format(record.attempts.len()).as_bytes());
    h.push(&headers::STRATEGY, record.strategy.map(|s| s.as_str()).unwrap_or_default().as_bytes());
    if let Some(a) = record.affinity {
        h.push(&headers::AFFINITY, a.as_str().as_bytes());
    }
}
