//! The response body the client reads: upstream bytes forwarded as they arrive, teed through the usage meter.
//!
//! Owns streaming (one frame per upstream chunk, never the whole body buffered), hiding the usage-only chunk the
//! router asked for, the idle timeout, ending a cut stream with an error event, keeping the start of the body
//! (compactly) for a token estimate until usage is reported, and emitting the request record exactly once: at
//! the end (waiting for room in the sink: back-pressure), or on drop when the client left.
//! Dropping this body drops the upstream response, which cancels the upstream request.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::AppState;
use crate::config::Price;
use crate::live::health::CoolKeys;
use crate::protocol::Protocol;
use crate::protocol::convert::StreamConverter;
use crate::protocol::sse::{SseEvent, SseParser};
use crate::protocol::usage::UsageMeter;
use crate::upstream::FailureClass;
use crate::usage::sink::RecordSink;
use crate::usage::{Outcome, RequestRecord, Tokens, UsageSource};

type Reserve = Pin<Box<dyn Future<Output = Option<crate::usage::sink::Permit>> + Send>>;

/// How upstream bytes become client bytes.
pub enum Mode {
    /// Forward bytes unchanged; collect them for the meter (non-stream JSON).
    Raw,
    /// SSE forwarded unchanged; events parsed on the side for the meter.
    Sse { parser: SseParser },
    /// SSE re-emitted event by event, hiding the usage-only chunk the client did not ask for.
    SseFiltered { parser: SseParser },
    /// SSE translated event by event into the client's protocol.
    Convert { parser: SseParser, conv: Box<StreamConverter> },
}

/// What is needed to finish the record.
pub struct Finisher {
    pub state: Arc<AppState>,
    pub record: RequestRecord,
    pub started: Instant,
    pub price: Option<Price>,
    pub channel: Arc<str>,
    pub endpoint_key: Arc<str>,
    pub token_key: Arc<str>,
    pub client: Protocol,
    /// The client's request body, tokenised only when the upstream reports no usage.
    pub request: Bytes,
    /// The key's admission, settled with the finished record.
    pub ticket: crate::live::limits::Ticket,
    /// Counts the request in flight until its record is complete.
    pub in_flight: crate::metrics::InFlight,
}

pub struct MeteredBody {
    upstream: Option<crate::upstream::wire::Body>,
    mode: Mode,
    meter: UsageMeter,
    /// The idle timeout's timer: made the first time the upstream makes the body wait, so a body that arrived
    /// whole (most non-stream answers) never registers one (an allocation and two timer-wheel updates under the
    /// driver's lock).
    idle: Option<Pin<Box<Sleep>>>,
    idle_timeout: Duration,
    /// When the upstream last sent data (or the body began).
    last_data: tokio::time::Instant,
    pending: VecDeque<Bytes>,
    finisher: Option<Finisher>,
    reserve: Option<(Reserve, RequestRecord)>,
    sink: RecordSink,
    done: bool,
    out_bytes: u64,
    /// A copy (not the network buffers themselves, which a `Bytes` handle would keep alive whole) of the start
    /// of the upstream body, kept only until the upstream reports usage, for a possible token estimate (capped:
    /// [`capture_cap`]; past it the estimate is scaled by the bytes seen).
    captured: Capture,
    /// Capturing stopped: usage was reported, or the cap was reached.
    capture_done: bool,
    /// Counts an SSE body as a stream in flight while it lives.
    _stream: crate::metrics::InFlight,
}

/// Upstream bytes kept for a possible token estimate (only until the upstream reports usage). A stream keeps
/// 16 KiB at most: it may stay open for minutes before its usage arrives, and a thousand open streams must not
/// hold their whole text (an OpenAI stream reports usage only in its last chunk); its estimate is extrapolated
/// from that start by the bytes received. A whole body is kept up to 512 KiB (it is read at once).
fn capture_cap(sse: bool) -> usize {
    if sse { 16 << 10 } else { 512 << 10 }
}

impl MeteredBody {
    pub fn new(
        upstream: crate::upstream::wire::Body,
        mode: Mode,
        meter: UsageMeter,
        idle_timeout: Duration,
        finisher: Finisher,
    ) -> Self {
        let sink = finisher.state.sink.clone();
        let stream =
            if matches!(mode, Mode::Raw) { Default::default() } else { finisher.state.metrics.stream_started() };
        Self {
            _stream: stream,
            sink,
            upstream: Some(upstream),
            mode,
            meter,
            idle: None,
            idle_timeout,
            last_data: tokio::time::Instant::now(),
            pending: VecDeque::new(),
            finisher: Some(finisher),
            reserve: None,
            done: false,
            out_bytes: 0,
            captured: Capture::default(),
            capture_done: false,
        }
    }

    /// Turns a chunk into the bytes to forward (possibly none).
    fn process(&mut self, chunk: Bytes) -> Option<Bytes> {
        self.out_bytes += chunk.len() as u64;
        if !self.capture_done {
            if self.meter.has_usage() {
                // The upstream reports usage: nothing to estimate, free what was kept.
                self.capture_done = true;
                self.captured = Capture::default();
            } else {
                // Past the cap the estimate is made from the start, scaled (a cut event is left out of it).
                let room = capture_cap(self.is_sse()) - self.captured.len();
                let sse = self.is_sse();
                self.captured.push(&chunk[..chunk.len().min(room)], sse);
                self.capture_done = chunk.len() >= room;
            }
        }
        match &mut self.mode {
            Mode::Raw => {
                self.meter.body_chunk(&chunk);
                Some(chunk)
            }
            Mode::Sse { parser } => {
                let meter = &mut self.meter;
                parser.feed_with(&chunk, |ev| {
                    meter.event(&ev);
                });
                Some(chunk)
            }
            Mode::SseFiltered { parser } => {
                let mut out = BytesMut::new();
                let meter = &mut self.meter;
                parser.feed_with(&chunk, |ev| {
                    if !meter.event(&ev) {
                        ev.write_to(&mut out);
                    }
                });
                (!out.is_empty()).then(|| out.freeze())
            }
            Mode::Convert { parser, conv } => {
                let mut events = Vec::new();
                let meter = &mut self.meter;
                parser.feed_with(&chunk, |ev| {
                    meter.event(&ev);
                    conv.push(&ev, &mut events);
                });
                conv.encode(&events, false)
            }
        }
    }

    /// Closing events of a translated stream (a clean end, or an error event when `interrupted`).
    fn finish_conversion(&mut self, interrupted: bool) -> Option<Bytes> {
        let Mode::Convert { conv, .. } = &mut self.mode else { return None };
        let mut events = Vec::new();
        conv.finish(interrupted, &mut events);
        conv.encode(&events, true)
    }

    /// Flushes an event left without its blank line at EOF.
    fn flush_tail(&mut self) -> Option<Bytes> {
        let parser = match &mut self.mode {
            Mode::Raw => return None,
            Mode::Sse { parser } | Mode::SseFiltered { parser } | Mode::Convert { parser, .. } => parser,
        };
        let ev = parser.finish()?;
        let hidden = self.meter.event(&ev);
        match &mut self.mode {
            Mode::SseFiltered { .. } if !hidden => Some(ev.to_bytes()),
            Mode::Convert { conv, .. } => {
                let mut events = Vec::new();
                conv.push(&ev, &mut events);
                conv.encode(&events, false)
            }
            _ => None,
        }
    }

    fn is_sse(&self) -> bool {
        !matches!(self.mode, Mode::Raw)
    }

    /// Completes the record with what the meter saw.
    fn complete(&mut self, outcome: Outcome, error: Option<String>) -> Option<RequestRecord> {
        let f = self.finisher.take()?;
        let metered = self.meter.finish();
        let captured = [std::mem::take(&mut self.captured).into_bytes()];
        let mut rec = f.record;
        rec.total_ms = f.started.elapsed().as_millis() as u32;
        rec.outcome = outcome;
        if rec.error.is_none() {
            rec.error = error.or(metered.stream_error);
        }
        let produced = self.out_bytes > 0 && outcome != Outcome::UpstreamError;
        let exchanged = produced.then(|| Exchanged {
            request: &f.request,
            received: &captured[..],
            sse: self.is_sse(),
            total_bytes: self.out_bytes,
        });
        account(&mut rec, metered.tokens, exchanged, f.price);
        super::settle(&f.state, f.ticket, &rec);
        if matches!(outcome, Outcome::Interrupted) {
            let cfg = &f.state.snapshot.load().config.raw.routing.cooldown;
            let keys = CoolKeys { channel: &f.channel, endpoint: &f.endpoint_key, token: &f.token_key, model: "" };
            f.state.health.cool(FailureClass::Interrupted, cfg, &keys, None, "stream interrupted");
        }
        Some(rec)
    }

    /// Waits for room in the sink before the client sees the end of the body.
    fn start_finish(&mut self, rec: RequestRecord) {
        let sink = self.sink.clone();
        self.reserve = Some((Box::pin(async move { sink.reserve().await }), rec));
    }

    fn interrupt(&mut self, why: String) {
        self.upstream = None;
        if let Some(tail) = self.finish_conversion(true) {
            self.pending.push_back(tail);
        } else if self.is_sse() && !matches!(self.mode, Mode::Convert { .. }) {
            let client = self.finisher.as_ref().map(|f| f.client).unwrap_or(Protocol::Openai);
            let ev: SseEvent =
                crate::protocol::errors::stream_event(client, &format!("upstream stream interrupted: {why}"));
            self.pending.push_back(ev.to_bytes());
        }
        if let Some(rec) = self.complete(Outcome::Interrupted, Some(why)) {
            self.start_finish(rec);
        }
    }

    fn end(&mut self) {
        self.upstream = None;
        if let Some(tail) = self.flush_tail() {
            self.pending.push_back(tail);
        }
        let completed = self.meter.completed();
        if let Some(tail) = self.finish_conversion(!completed) {
            self.pending.push_back(tail);
        }
        let outcome = if self.is_sse() && !completed { Outcome::Interrupted } else { Outcome::Ok };
        let why = (outcome == Outcome::Interrupted).then(|| "stream ended before its final event".to_string());
        if let Some(rec) = self.complete(outcome, why) {
            self.start_finish(rec);
        }
    }
}

/// The captured start of an upstream body, held compactly while the stream runs. A stream's events repeat the
/// same id, model and framing around a few words of text, and an upstream that reports no usage keeps its capture
/// for the whole stream, so each chunk is kept as what differs from the chunk before it (the lengths of the
/// prefix and suffix it shares with that chunk, and the bytes between): ~20 bytes per event instead of ~200, which
/// at a thousand open streams is most of the capture's 16 MB. [`Capture::into_bytes`] gives back the exact bytes.
/// A whole (non-stream) body is kept as it is: it is read at once and its chunks do not repeat.
#[derive(Default)]
struct Capture {
    /// Plain bytes (a whole body), or per chunk of a stream: prefix length, suffix length and middle length
    /// (LEB128), then the middle bytes.
    data: Vec<u8>,
    /// The previous chunk of a stream, whole (the base of the next one's delta); empty after a long chunk,
    /// which is kept whole instead.
    last: Vec<u8>,
    /// Bytes captured, as received.
    len: usize,
    /// `data` holds deltas.
    delta: bool,
}

/// A stream chunk longer than this is kept whole, not as the base of the next chunk's delta (so the base never
/// doubles what is kept; events are a few hundred bytes).
const DELTA_BASE_MAX: usize = 2048;

impl Capture {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, chunk: &[u8], sse: bool) {
        if chunk.is_empty() {
            return;
        }
        if self.len == 0 {
            self.delta = sse;
        }
        self.len += chunk.len();
        if !self.delta {
            self.data.extend_from_slice(chunk);
            return;
        }
        let prefix = common_prefix(&self.last, chunk);
        let suffix = common_suffix(&self.last[prefix..], &chunk[prefix..]);
        let middle = &chunk[prefix..chunk.len() - suffix];
        for n in [prefix, suffix, middle.len()] {
            put_varint(&mut self.data, n);
        }
        self.data.extend_from_slice(middle);
        self.last.clear();
        if chunk.len() <= DELTA_BASE_MAX {
            self.last.extend_from_slice(chunk);
        } else {
            self.last = Vec::new();
        }
    }

    /// The bytes captured, as received.
    fn into_bytes(self) -> Bytes {
        if !self.delta {
            return Bytes::from(self.data);
        }
        let mut out = Vec::with_capacity(self.len);
        let (mut at, mut last) = (0, 0..0);
        while at < self.data.len() {
            let prefix = get_varint(&self.data, &mut at);
            let suffix = get_varint(&self.data, &mut at);
            let middle = get_varint(&self.data, &mut at);
            let start = out.len();
            out.extend_from_within(last.start..last.start + prefix);
            out.extend_from_slice(&self.data[at..at + middle]);
            out.extend_from_within(last.end - suffix..last.end);
            at += middle;
            last = start..out.len();
            if last.len() > DELTA_BASE_MAX {
                last = out.len()..out.len();
            }
        }
        Bytes::from(out)
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n && a[i..i + 8] == b[i..i + 8] {
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut i = 0;
    while i + 8 <= n && a[n - i - 8..n - i] == b[n - i - 8..n - i] {
        i += 8;
    }
    while i < n && a[n - i - 1] == b[n - i - 1] {
        i += 1;
    }
    i
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(data: &[u8], at: &mut usize) -> usize {
    let (mut n, mut shift) = (0, 0);
    loop {
        let b = data[*at];
        *at += 1;
        n |= ((b & 0x7f) as usize) << shift;
        if b < 0x80 {
            return n;
        }
        shift += 7;
    }
}

/// What went both ways, for a token estimate.
pub(super) struct Exchanged<'a> {
    /// The client's request body.
    pub request: &'a Bytes,
    /// The upstream's bytes as kept (the start of the body when it was longer than the capture).
    pub received: &'a [Bytes],
    pub sse: bool,
    /// Upstream bytes in all; more than `received` holds when the capture was cut.
    pub total_bytes: u64,
}

/// Tokens and cost of a finished request: the upstream's own usage; else, when a body came back, a tiktoken
/// (o200k_base) estimate marked as such (output scaled by the bytes received when only the start was kept).
pub(super) fn account(
    rec: &mut RequestRecord,
    reported: Option<Tokens>,
    exchanged: Option<Exchanged<'_>>,
    price: Option<Price>,
) {
    match (reported, exchanged) {
        (Some(t), _) => {
            rec.tokens = t;
            rec.usage_source = UsageSource::Upstream;
        }
        (None, Some(x)) => {
            let est = crate::usage::estimate::estimate(x.request, x.received, x.sse);
            let kept: u64 = x.received.iter().map(|b| b.len() as u64).sum();
            rec.tokens.input = est.input;
            rec.tokens.output = match kept {
                k if k > 0 && x.total_bytes > k => (est.output as f64 * x.total_bytes as f64 / k as f64).round() as u64,
                _ => est.output,
            };
            rec.usage_source = UsageSource::Estimated;
        }
        (None, None) => {}
    }
    rec.cost_usd = price.map(|p| rec.tokens.cost(&p));
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if let Some((fut, _)) = &mut this.reserve {
                // The stream is over; wait for room in the sink before telling the client (back-pressure).
                let permit = std::task::ready!(fut.as_mut().poll(cx));
                let (_, rec) = this.reserve.take().expect("reserve present");
                if let Some(permit) = permit {
                    permit.send(rec);
                }
                this.done = true;
                return Poll::Ready(None);
            }
            let Some(upstream) = this.upstream.as_mut() else {
                this.done = true;
                continue;
            };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.last_data = tokio::time::Instant::now();
                    // Trailers (HTTP/2) carry nothing the client's protocol knows: only data is forwarded.
                    if let Ok(chunk) = frame.into_data()
                        && let Some(out) = this.process(chunk)
                    {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.interrupt(crate::failure::body_broke(&*e));
                }
                Poll::Ready(None) => this.end(),
                Poll::Pending => {
                    let deadline = this.last_data + this.idle_timeout;
                    let idle = this.idle.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if idle.deadline() != deadline {
                        idle.as_mut().reset(deadline);
                    }
                    if idle.as_mut().poll(cx).is_ready() {
                        this.interrupt(format!("no data for {:?}", this.idle_timeout));
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }

    /// A raw body passes unchanged: before any of it is forwarded, the upstream's length is the client's (the
    /// answer then carries `Content-Length`, as the upstream's did, instead of being re-framed as chunked).
    fn size_hint(&self) -> SizeHint {
        match &self.upstream {
            Some(up) if matches!(self.mode, Mode::Raw) && self.out_bytes == 0 && self.pending.is_empty() => {
                up.size_hint()
            }
            _ => SizeHint::default(),
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if let Some((_, rec)) = self.reserve.take() {
            // Finished, but the body was dropped before the sink had room: hand the record over anyway.
            self.sink.send_detached(rec);
        } else if let Some(rec) = self.complete(Outcome::ClientClosed, Some("client closed the connection".into())) {
            self.sink.send_detached(rec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(chunks: &[&[u8]], sse: bool) -> (Bytes, usize) {
        let mut c = Capture::default();
        for ch in chunks {
            c.push(ch, sse);
        }
        let kept = c.data.len();
        assert_eq!(c.len(), chunks.iter().map(|c| c.len()).sum::<usize>());
        (c.into_bytes(), kept)
    }

    #[test]
    fn a_capture_gives_back_exactly_the_bytes_it_was_given() {
        let event = |w: &str| {
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}},\"finish_reason\":null}}]}}\n\n"
            )
        };
        let words = ["Hel", "lo", " there", "", "lo", "x", "Hello Hello", "\u{e9}"];
        let events: Vec<String> = words.iter().map(|w| event(w)).collect();
        let long = "y".repeat(DELTA_BASE_MAX + 10);
        let mut chunks: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
        // Chunks cut mid-event, repeated, empty, shorter than the one before, and longer than a delta base.
        chunks.extend([
            &b"data: {\"id\""[..],
            b"data: {\"id\"",
            b"",
            b"d",
            b"ata",
            long.as_bytes(),
            b"ata",
            b"[DONE]\n\n",
        ]);
        let want: Vec<u8> = chunks.concat();
        let (got, kept) = roundtrip(&chunks, true);
        assert_eq!(got, want);
        // The long chunk is kept whole; the events before it as their differences.
        assert!(kept < long.len() + want.len().saturating_sub(long.len()) / 2, "{kept} of {}", want.len());
        // A whole body is kept as it is.
        let (got, kept) = roundtrip(&chunks, false);
        assert_eq!((got.len(), kept), (want.len(), want.len()));
        assert_eq!(got, want);
        assert_eq!(roundtrip(&[], true).0, Bytes::new());
    }

    #[test]
    fn stream_events_are_kept_as_their_differences() {
        let events: Vec<String> = (0..100)
            .map(|i| {
                format!("data: {{\"id\":\"chatcmpl-abc\",\"choices\":[{{\"delta\":{{\"content\":\"word{i}\"}}}}]}}\n\n")
            })
            .collect();
        let chunks: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
        let (got, kept) = roundtrip(&chunks, true);
        assert_eq!(got, chunks.concat());
        assert!(kept < 100 * 12, "{kept}");
    }
}
