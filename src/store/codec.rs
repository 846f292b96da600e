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

use serde::{Deserialize, Serialize};

use crate::config::Strategy;
use crate::failure::FailureClass;
use crate::protocol::Protocol;
use crate::protocol::convert::Conversion;
use crate::usage::{AffinityOutcome, Attempt, Outcome, RequestRecord, Tokens, UsageSource};

/// The version byte that starts a record in this form.
pub const VERSION: u8 = 2;

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
    gateway_key: Option<String>,
    client_protocol: Protocol,
    path: String,
    requested_model: String,
    upstream_model: Option<String>,
    channel: Option<String>,
    endpoint: Option<String>,
    token_key: Option<String>,
    token_fp: Option<String>,
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

/// Appends the version byte and `rec` in this form to `out`.
pub fn encode_into(rec: &RequestRecord, out: &mut Vec<u8>) {
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
    out.push(VERSION);
    let taken = std::mem::take(out);
    *out = postcard::to_extend(&stored, taken).expect("a record always encodes into memory");
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

    /// Stored records name these enums by variant index: a variant moved or inserted before others would make
    /// every stored record read back wrong. New variants go at the end (and may be added to these lists).
    #[test]
    fn enum_indices_are_pinned() {
        fn pinned<T: Serialize>(order: &[(T, &str)]) {
            for (i, (v, name)) in order.iter().enumerate() {
                assert_eq!(postcard::to_allocvec(v).unwrap(), [i as u8], "{name} is no longer variant {i}");
                assert_eq!(serde_json::to_value(v).unwrap(), *name, "variant {i} is no longer {name}");
            }
        }
        use Outcome as O;
        pinned(&[
            (O::Ok, "ok"),
            (O::UpstreamError, "upstream_error"),
            (O::NoRoute, "no_route"),
            (O::ClientClosed, "client_closed"),
            (O::Interrupted, "interrupted"),
            (O::BadRequest, "bad_request"),
            (O::Limited, "limited"),
            (O::Budget, "budget"),
        ]);
        use Protocol as P;
        pinned(&[(P::Openai, "openai"), (P::Anthropic, "anthropic"), (P::Gemini, "gemini")]);
        use AffinityOutcome as A;
        pinned(&[(A::New, "new"), (A::Hit, "hit"), (A::Moved, "moved"), (A::Off, "off")]);
        use UsageSource as U;
        pinned(&[(U::Upstream, "upstream"), (U::Estimated, "estimated"), (U::None, "none")]);
        use Conversion as C;
        pinned(&[
            (C::AnthropicToChat, "anthropic->openai"),
            (C::ChatToAnthropic, "openai->anthropic"),
            (C::ResponsesToChat, "responses->chat"),
            (C::GeminiToChat, "gemini->openai"),
            (C::GeminiToAnthropic, "gemini->anthropic"),
            (C::GeminiEmbedToOpenai, "gemini-embed->openai"),
            (C::GeminiBatchEmbedToOpenai, "gemini-batch-embed->openai"),
        ]);
        use Strategy as S;
        pinned(&[
            (S::Priority, "priority"),
            (S::Weighted, "weighted"),
            (S::Fastest, "fastest"),
            (S::CostFirst, "cost_first"),
            (S::FreeFirst, "free_first"),
            (S::LocalFirst, "local_first"),
            (S::Balanced, "balanced"),
        ]);
        use FailureClass as F;
        pinned(&[
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
        ]);
    }
}
