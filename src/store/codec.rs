//! The stored form of a request record, version 2: postcard (a compact binary serde format) of a private mirror
//! of [`RequestRecord`], written by every store (redb and PostgreSQL) and read back by `tables::decode_record`,
//! which still reads version 1 (JSON) records.
//!
//! Why not JSON: the usage writer encodes every proxied request, and JSON text cost ~9% of the router's CPU
//! instructions under load, its ~600-byte values another ~9% in B-tree inserts (bench/analysis.md); this form is
//! about a third the size and encodes in a fraction of the time.
//!
//! Must not change shape: postcard writes fields in order with no names, and enums as variant indices. The
//! mirror below is the format; a field added to `RequestRecord` is stored only by a new version (v3 beside this
//! one, which stays readable), and the enums' variant order is pinned by `tests::enum_indices_are_pinned`.

use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;

use crate::config::Strategy;
use crate::failure::FailureClass;
use crate::protocol::Protocol;
use crate::protocol::convert::Conversion;
use crate::usage::{AffinityOutcome, Attempt, Outcome, RequestRecord, Tokens, UsageSource};

/// The version byte that starts a record in this form.
pub const VERSION: u8 = 2;

#[cfg(test)]
#[derive(Serialize)]
struct AttemptRef<'a> {
    channel: &'a str,
    endpoint: &'a str,
    token_key: &'a str,
    token_fp: &'a str,
    model: &'a str,
    status: Option<u16>,
    outcome: FailureClass,
    ms: u32,
}

#[derive(Deserialize)]
struct AttemptOwned {
    channel: String,
    endpoint: String,
    token_key: String,
    token_fp: String,
    model: String,
    status: Option<u16>,
    outcome: FailureClass,
    ms: u32,
}

/// [`Tokens`], field by field in stored order.
type TokensTuple = (u64, u64, u64, u64, u64, u64);

/// The format's definition: what [`encode_into`] writes is postcard's encoding of this.
#[cfg(test)]
#[derive(Serialize)]
struct RecordRef<'a> {
    id: u128,
    time_ms: i64,
    gateway_key: Option<&'a str>,
    client_protocol: Protocol,
    path: &'a str,
    requested_model: &'a str,
    upstream_model: Option<&'a str>,
    channel: Option<&'a str>,
    endpoint: Option<&'a str>,
    token_key: Option<&'a str>,
    token_fp: Option<&'a str>,
    strategy: Option<Strategy>,
    attempts: Vec<AttemptRef<'a>>,
    status: u16,
    outcome: Outcome,
    stream: bool,
    ttfb_ms: Option<u32>,
    total_ms: u32,
    tokens: TokensTuple,
    usage_source: UsageSource,
    cost_usd: Option<f64>,
    translated: Option<Conversion>,
    error: Option<&'a str>,
    session: Option<&'a str>,
    affinity: Option<AffinityOutcome>,
}

#[derive(Deserialize)]
struct RecordOwned {
    id: u128,
    time_ms: i64,
    gateway_key: Option<std::sync::Arc<str>>,
    client_protocol: Protocol,
    path: String,
    requested_model: String,
    upstream_model: Option<std::sync::Arc<str>>,
    channel: Option<std::sync::Arc<str>>,
    endpoint: Option<std::sync::Arc<str>>,
    token_key: Option<std::sync::Arc<str>>,
    token_fp: Option<std::sync::Arc<str>>,
    strategy: Option<Strategy>,
    attempts: Vec<AttemptOwned>,
    status: u16,
    outcome: Outcome,
    stream: bool,
    ttfb_ms: Option<u32>,
    total_ms: u32,
    tokens: TokensTuple,
    usage_source: UsageSource,
    cost_usd: Option<f64>,
    translated: Option<Conversion>,
    error: Option<String>,
    session: Option<String>,
    affinity: Option<AffinityOutcome>,
}

/// Appends the version byte and `rec` in this form to `out`: postcard's encoding of [`RecordRef`], written field
/// by field (the usage writer encodes every proxied request; through serde this cost ~2,200 instructions a
/// record, a fifth of them in building the mirror). `tests::writes_what_postcard_writes` holds it to the mirror.
pub fn encode_into(rec: &RequestRecord, out: &mut Vec<u8>) {
    out.push(VERSION);
    let w = &mut Postcard(out);
    w.varint(rec.id);
    w.varint(zigzag(rec.time_ms));
    w.opt(rec.gateway_key.as_deref(), Postcard::str);
    w.variant(rec.client_protocol as u8);
    w.str(&rec.path);
    w.str(&rec.requested_model);
    w.opt(rec.upstream_model.as_deref(), Postcard::str);
    w.opt(rec.channel.as_deref(), Postcard::str);
    w.opt(rec.endpoint.as_deref(), Postcard::str);
    w.opt(rec.token_key.as_deref(), Postcard::str);
    w.opt(rec.token_fp.as_deref(), Postcard::str);
    w.opt(rec.strategy, |w, s| w.variant(s as u8));
    w.varint(rec.attempts.len() as u128);
    for a in &rec.attempts {
        w.str(&a.channel);
        w.str(&a.endpoint);
        w.str(&a.token_key);
        w.str(&a.token_fp);
        w.str(&a.model);
        w.opt(a.status, |w, s| w.varint(s.into()));
        w.variant(a.outcome as u8);
        w.varint(u128::from(a.ms));
    }
    w.varint(u128::from(rec.status));
    w.variant(rec.outcome as u8);
    w.0.push(u8::from(rec.stream));
    w.opt(rec.ttfb_ms, |w, ms| w.varint(ms.into()));
    w.varint(u128::from(rec.total_ms));
    let t = &rec.tokens;
    for n in [t.input, t.cache_read, t.cache_write, t.output, t.reasoning, t.cache_write_1h] {
        w.varint(u128::from(n));
    }
    w.variant(rec.usage_source as u8);
    w.opt(rec.cost_usd, |w, c| w.0.extend_from_slice(&c.to_le_bytes()));
    w.opt(rec.translated, |w, c| w.variant(c as u8));
    w.opt(rec.error.as_deref(), Postcard::str);
    w.opt(rec.session.as_deref(), Postcard::str);
    w.opt(rec.affinity, |w, a| w.variant(a as u8));
}

/// postcard's wire rules, for [`encode_into`]: integers as LEB128 varints (signed ones zigzagged first), an
/// `Option` as a 0 / 1 byte before its value, a string as its length and bytes, a unit variant as its index.
struct Postcard<'a>(&'a mut Vec<u8>);

impl Postcard<'_> {
    fn varint(&mut self, mut n: u128) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    /// An `Option`: 0, or 1 and the value as `write` writes it.
    fn opt<T>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                write(self, v);
            }
        }
    }

    fn str(&mut self, s: &str) {
        self.varint(s.len() as u128);
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A unit variant's index (every stored enum has fewer than 128 variants: one byte).
    fn variant(&mut self, index: u8) {
        self.varint(u128::from(index));
    }
}

fn zigzag(n: i64) -> u128 {
    u128::from(((n << 1) ^ (n >> 63)) as u64)
}

/// A record in this form (after its version byte).
pub fn decode(body: &[u8]) -> Result<RequestRecord, postcard::Error> {
    let (r, rest): (RecordOwned, &[u8]) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(postcard::Error::DeserializeBadEncoding);
    }
    let (input, cache_read, cache_write, output, reasoning, cache_write_1h) = r.tokens;
    Ok(RequestRecord {
        id: r.id,
        time_ms: r.time_ms,
        gateway_key: r.gateway_key,
        client_protocol: r.client_protocol,
        path: r.path,
        requested_model: r.requested_model,
        upstream_model: r.upstream_model,
        channel: r.channel,
        endpoint: r.endpoint,
        token_key: r.token_key,
        token_fp: r.token_fp,
        strategy: r.strategy,
        attempts: r
            .attempts
            .into_iter()
            .map(|a| Attempt {
                channel: a.channel.into(),
                endpoint: a.endpoint.into(),
                token_key: a.token_key.into(),
                token_fp: a.token_fp.into(),
                model: a.model.into(),
                status: a.status,
                outcome: a.outcome,
                ms: a.ms,
            })
            .collect(),
        status: r.status,
        outcome: r.outcome,
        stream: r.stream,
        ttfb_ms: r.ttfb_ms,
        total_ms: r.total_ms,
        tokens: Tokens { input, cache_read, cache_write, output, reasoning, cache_write_1h },
        usage_source: r.usage_source,
        cost_usd: r.cost_usd,
        translated: r.translated,
        error: r.error,
        session: r.session,
        affinity: r.affinity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format as serde and postcard write it (what `encode_into` wrote before it was written by hand).
    fn reference(rec: &RequestRecord) -> Vec<u8> {
        let t = &rec.tokens;
        let stored = RecordRef {
            id: rec.id,
            time_ms: rec.time_ms,
            gateway_key: rec.gateway_key.as_deref(),
            client_protocol: rec.client_protocol,
            path: &rec.path,
            requested_model: &rec.requested_model,
            upstream_model: rec.upstream_model.as_deref(),
            channel: rec.channel.as_deref(),
            endpoint: rec.endpoint.as_deref(),
            token_key: rec.token_key.as_deref(),
            token_fp: rec.token_fp.as_deref(),
            strategy: rec.strategy,
            attempts: rec
                .attempts
                .iter()
                .map(|a| AttemptRef {
                    channel: &a.channel,
                    endpoint: &a.endpoint,
                    token_key: &a.token_key,
                    token_fp: &a.token_fp,
                    model: &a.model,
                    status: a.status,
                    outcome: a.outcome,
                    ms: a.ms,
                })
                .collect(),
            status: rec.status,
            outcome: rec.outcome,
            stream: rec.stream,
            ttfb_ms: rec.ttfb_ms,
            total_ms: rec.total_ms,
            tokens: (t.input, t.cache_read, t.cache_write, t.output, t.reasoning, t.cache_write_1h),
            usage_source: rec.usage_source,
            cost_usd: rec.cost_usd,
            translated: rec.translated,
            error: rec.error.as_deref(),
            session: rec.session.as_deref(),
            affinity: rec.affinity,
        };
        let mut out = vec![VERSION];
        out.extend(postcard::to_allocvec(&stored).unwrap());
        out
    }

    #[test]
    fn writes_what_postcard_writes() {
        let empty = RequestRecord::default();
        let attempt = |i: u32, outcome| Attempt {
            channel: format!("ch{i}").into(),
            endpoint: "ep".into(),
            token_key: "k\u{e9}y".into(),
            token_fp: "fp".into(),
            model: "m".repeat(200).into(),
            status: i.is_multiple_of(2).then_some(429 + i as u16),
            outcome,
            ms: i * 70_000,
        };
        let full = RequestRecord {
            id: u128::MAX - 5,
            time_ms: -1_700_000_000_123,
            gateway_key: Some("team".into()),
            client_protocol: Protocol::Gemini,
            path: "/v1beta/models/x:generateContent".into(),
            requested_model: "tag:fast,!local".into(),
            upstream_model: Some("gpt-4o".into()),
            channel: Some("c".repeat(130).into()),
            endpoint: Some("".into()),
            token_key: Some("key".into()),
            token_fp: Some("fp".into()),
            strategy: Some(Strategy::Balanced),
            attempts: vec![attempt(0, FailureClass::BadResponse), attempt(1, FailureClass::Ok)],
            status: 65_535,
            outcome: Outcome::Budget,
            stream: true,
            ttfb_ms: Some(u32::MAX),
            total_ms: 127,
            tokens: Tokens {
                input: u64::MAX,
                cache_read: 128,
                cache_write: 16_384,
                output: 1,
                reasoning: 0,
                cache_write_1h: 300,
            },
            usage_source: UsageSource::None,
            cost_usd: Some(0.000_123),
            translated: Some(Conversion::GeminiBatchEmbedToOpenai),
            error: Some("x".repeat(300)),
            session: Some("0123456789abcdef".into()),
            affinity: Some(AffinityOutcome::Off),
        };
        for (i, rec) in [empty, full].iter().enumerate() {
            let mut mine = Vec::new();
            encode_into(rec, &mut mine);
            assert_eq!(mine, reference(rec), "record {i}");
            let back = decode(&mine[1..]).unwrap();
            assert_eq!(format!("{back:?}"), format!("{rec:?}"), "record {i}");
        }
        // Each enum's every variant, and the smallest and largest times (zigzag's edges).
        for (k, time_ms) in [0, -1, 1, i64::MIN, i64::MAX].into_iter().enumerate() {
            let rec = RequestRecord {
                time_ms,
                client_protocol: [Protocol::Openai, Protocol::Anthropic, Protocol::Gemini][k % 3],
                strategy: Some(Strategy::ALL[k % Strategy::ALL.len()]),
                ..Default::default()
            };
            let mut mine = Vec::new();
            encode_into(&rec, &mut mine);
            assert_eq!(mine, reference(&rec), "time {time_ms}");
        }
    }

    /// Stored records name these enums by variant index: a variant moved or inserted before others would make
    /// every stored record read back wrong. New variants go at the end (and may be added to these lists).
    #[test]
    fn enum_indices_are_pinned() {
        // `encode_into` writes a variant's index as `variant as u8`: the discriminant must be the index too.
        fn pinned<T: Serialize + Copy>(order: &[(T, &str)], index: impl Fn(T) -> u8) {
            for (i, (v, name)) in order.iter().enumerate() {
                assert_eq!(postcard::to_allocvec(v).unwrap(), [i as u8], "{name} is no longer variant {i}");
                assert_eq!(index(*v), i as u8, "{name} is no longer discriminant {i}");
                assert_eq!(serde_json::to_value(v).unwrap(), *name, "variant {i} is no longer {name}");
            }
        }
        use Outcome as O;
        pinned(
            &[
                (O::Ok, "ok"),
                (O::UpstreamError, "upstream_error"),
                (O::NoRoute, "no_route"),
                (O::ClientClosed, "client_closed"),
                (O::Interrupted, "interrupted"),
                (O::BadRequest, "bad_request"),
                (O::Limited, "limited"),
                (O::Budget, "budget"),
            ],
            |v| v as u8,
        );
        use Protocol as P;
        pinned(&[(P::Openai, "openai"), (P::Anthropic, "anthropic"), (P::Gemini, "gemini")], |v| v as u8);
        use AffinityOutcome as A;
        pinned(&[(A::New, "new"), (A::Hit, "hit"), (A::Moved, "moved"), (A::Off, "off")], |v| v as u8);
        use UsageSource as U;
        pinned(&[(U::Upstream, "upstream"), (U::Estimated, "estimated"), (U::None, "none")], |v| v as u8);
        use Conversion as C;
        pinned(
            &[
                (C::AnthropicToChat, "anthropic->openai"),
                (C::ChatToAnthropic, "openai->anthropic"),
                (C::ResponsesToChat, "responses->chat"),
                (C::GeminiToChat, "gemini->openai"),
                (C::GeminiToAnthropic, "gemini->anthropic"),
                (C::GeminiEmbedToOpenai, "gemini-embed->openai"),
                (C::GeminiBatchEmbedToOpenai, "gemini-batch-embed->openai"),
            ],
            |v| v as u8,
        );
        use Strategy as S;
        pinned(
            &[
                (S::Priority, "priority"),
                (S::Weighted, "weighted"),
                (S::Fastest, "fastest"),
                (S::CostFirst, "cost_first"),
                (S::FreeFirst, "free_first"),
                (S::LocalFirst, "local_first"),
                (S::Balanced, "balanced"),
            ],
            |v| v as u8,
        );
        use FailureClass as F;
        pinned(
            &[
                (F::Ok, "ok"),
                (F::Auth, "auth"),
                (F::Quota, "quota"),
                (F::NotFound, "not_found"),
                (F::RateLimited, "rate_limited"),
                (F::Timeout, "timeout"),
                (F::Connect, "connect"),
                (F::ServerError, "server_error"),
                (F::BadRequest, "bad_request"),
                (F::ClientError, "client_error"),
                (F::Interrupted, "interrupted"),
                (F::BadResponse, "bad_response"),
            ],
            |v| v as u8,
        );
    }
}
