//! Usage extraction from upstream responses, streamed or not, for all three OpenAI-style APIs, Anthropic and
//! Gemini.
//!
//! Owns reading `usage` / `usageMetadata` without parsing whole bodies: stream events are looked at only when
//! their text mentions usage (or ends the stream), and only the usage fields are deserialised. Anthropic and
//! Gemini counts are cumulative: the latest value of each field wins, never a sum. A Gemini stream without
//! `alt=sse` is one JSON array, read whole like a non-stream body.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::Protocol;
use super::sse::SseEvent;

/// Token counts, normalised across protocols: `input` excludes cached tokens, which are counted in
/// `cache_read` / `cache_write`; `output` includes `reasoning`; `cache_write_1h` is the part of `cache_write`
/// written with a 1-hour TTL (billed at its own price).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub input: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
    /// Records written before this field existed read as 0.
    #[serde(default)]
    pub cache_write_1h: u64,
}

impl Tokens {
    pub fn is_zero(&self) -> bool {
        *self == Tokens::default()
    }

    /// Every input token, cached or not.
    pub fn total_input(&self) -> u64 {
        self.input + self.cache_read + self.cache_write
    }

    pub fn add(&mut self, o: &Tokens) {
        self.input += o.input;
        self.cache_read += o.cache_read;
        self.cache_write += o.cache_write;
        self.output += o.output;
        self.reasoning += o.reasoning;
        self.cache_write_1h += o.cache_write_1h;
    }
}

/// Anthropic's split of `cache_creation_input_tokens` by TTL.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
struct CacheCreation {
    ephemeral_5m_input_tokens: Option<u64>,
    ephemeral_1h_input_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
struct Details {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

/// Every usage field any of the protocols uses.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
struct UsageWire {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation: Option<CacheCreation>,
    prompt_cache_hit_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    completion_tokens_details: Option<Details>,
    input_tokens_details: Option<Details>,
    output_tokens_details: Option<Details>,
}

/// Gemini `usageMetadata`. `promptTokenCount` includes the cached tokens; `candidatesTokenCount` excludes the
/// thoughts, which are billed as output.
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    tool_use_prompt_token_count: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct GeminiCandidate {
    #[serde(rename = "finishReason")]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Inner {
    usage: Option<UsageWire>,
}

/// The outer shape of a response body or stream event, as far as usage is concerned.
#[derive(Debug, Default, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<String>,
    usage: Option<UsageWire>,
    message: Option<Inner>,
    response: Option<Inner>,
    choices: Option<Vec<IgnoredAny>>,
    error: Option<serde_json::Value>,
    #[serde(rename = "usageMetadata")]
    usage_metadata: Option<GeminiUsage>,
    candidates: Option<Vec<GeminiCandidate>>,
}

impl Envelope {
    /// A Gemini chunk whose candidate carries a finish reason (the last chunk of a stream).
    fn gemini_finished(&self) -> bool {
        self.candidates.iter().flatten().any(|c| c.finish_reason.as_deref().is_some_and(|r| !r.is_empty()))
    }
}

/// Keeps the latest reported value: `v` replaces `slot` when present.
fn set(slot: &mut Option<u64>, v: Option<u64>) {
    if v.is_some() {
        *slot = v;
    }
}

/// Accumulated usage: each field keeps its latest reported value.
#[derive(Debug, Default, Clone, Copy)]
struct Acc {
    prompt: Option<u64>,
    completion: Option<u64>,
    input: Option<u64>,
    output: Option<u64>,
    cache_write: Option<u64>,
    cache_write_5m: Option<u64>,
    cache_write_1h: Option<u64>,
    cache_read: Option<u64>,
    cached: Option<u64>,
    reasoning: Option<u64>,
    /// Gemini `toolUsePromptTokenCount` (input, beside `promptTokenCount`).
    tool_prompt: Option<u64>,
}

impl Acc {
    fn merge(&mut self, u: &UsageWire) {
        set(&mut self.prompt, u.prompt_tokens);
        set(&mut self.completion, u.completion_tokens);
        set(&mut self.input, u.input_tokens);
        set(&mut self.output, u.output_tokens);
        set(&mut self.cache_write, u.cache_creation_input_tokens);
        set(&mut self.cache_read, u.cache_read_input_tokens);
        set(&mut self.cache_write_5m, u.cache_creation.and_then(|c| c.ephemeral_5m_input_tokens));
        set(&mut self.cache_write_1h, u.cache_creation.and_then(|c| c.ephemeral_1h_input_tokens));
        set(&mut self.cached, u.prompt_tokens_details.and_then(|d| d.cached_tokens));
        set(&mut self.cached, u.input_tokens_details.and_then(|d| d.cached_tokens));
        set(&mut self.cached, u.prompt_cache_hit_tokens);
        set(&mut self.reasoning, u.completion_tokens_details.and_then(|d| d.reasoning_tokens));
        set(&mut self.reasoning, u.output_tokens_details.and_then(|d| d.reasoning_tokens));
    }

    /// Gemini `usageMetadata`, stored in the OpenAI-shaped slots (prompt includes cached; completion excludes
    /// thoughts, which `tokens` adds back).
    fn merge_gemini(&mut self, u: &GeminiUsage) {
        set(&mut self.prompt, u.prompt_token_count);
        set(&mut self.completion, u.candidates_token_count);
        set(&mut self.cached, u.cached_content_token_count);
        set(&mut self.reasoning, u.thoughts_token_count);
        set(&mut self.tool_prompt, u.tool_use_prompt_token_count);
    }

    fn seen(&self) -> bool {
        self.prompt.is_some() || self.completion.is_some() || self.input.is_some() || self.output.is_some()
    }

    fn tokens(&self, protocol: Protocol) -> Tokens {
        let reasoning = self.reasoning.unwrap_or(0);
        match protocol {
            // Anthropic: input excludes cache reads and writes, which are separate counters. Writes are split by
            // TTL in `cache_creation`; the total is `cache_creation_input_tokens` (or the split's sum without it).
            Protocol::Anthropic => {
                let split = self.cache_write_5m.unwrap_or(0) + self.cache_write_1h.unwrap_or(0);
                let cache_write = self.cache_write.unwrap_or(split);
                Tokens {
                    input: self.input.unwrap_or(0),
                    cache_read: self.cache_read.unwrap_or(0),
                    cache_write,
                    output: self.output.unwrap_or(0),
                    reasoning,
                    cache_write_1h: self.cache_write_1h.unwrap_or(0).min(cache_write),
                }
            }
            // OpenAI: prompt/input tokens include the cached ones.
            Protocol::Openai => {
                let total_in = self.prompt.or(self.input).unwrap_or(0);
                let cached = self.cached.unwrap_or(0).min(total_in);
                Tokens {
                    input: total_in - cached,
                    cache_read: cached,
                    cache_write: 0,
                    output: self.completion.or(self.output).unwrap_or(0),
                    reasoning,
                    cache_write_1h: 0,
                }
            }
            // Gemini: the prompt includes cached tokens; thoughts are output beside the candidates.
            Protocol::Gemini => {
                let total_in = self.prompt.unwrap_or(0) + self.tool_prompt.unwrap_or(0);
                let cached = self.cached.unwrap_or(0).min(total_in);
                Tokens {
                    input: total_in - cached,
                    cache_read: cached,
                    cache_write: 0,
                    output: self.completion.unwrap_or(0) + reasoning,
                    reasoning,
                    cache_write_1h: 0,
                }
            }
        }
    }
}

/// What a finished (or cut) response told us.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Metered {
    /// `None` when the upstream reported no usage at all.
    pub tokens: Option<Tokens>,
    /// The stream reached its protocol's normal end (`[DONE]`, `message_stop`, `response.completed`, ...).
    pub completed: bool,
    /// An error event inside a 200 stream.
    pub stream_error: Option<String>,
}

/// Reads usage from a response as it passes. One per upstream response.
#[derive(Debug)]
pub struct UsageMeter {
    protocol: Protocol,
    acc: Acc,
    completed: bool,
    /// An OpenAI chunk with a non-null `finish_reason` was seen (some upstreams omit `[DONE]`).
    finish_seen: bool,
    stream_error: Option<String>,
    /// Non-stream bodies are collected (up to a cap) and parsed at the end.
    body: Vec<u8>,
}

/// Non-stream bodies larger than this are not inspected for usage.
const BODY_CAP: usize = 16 * 1024 * 1024;

impl UsageMeter {
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            acc: Acc::default(),
            completed: false,
            finish_seen: false,
            stream_error: None,
            body: Vec::new(),
        }
    }

    /// Looks at one stream event. Returns true when it is an OpenAI usage-only chunk (`choices: []` with usage),
    /// which the proxy hides from clients that did not ask for it.
    pub fn event(&mut self, ev: &SseEvent) -> bool {
        let data = ev.data.as_str();
        if data == "[DONE]" {
            self.completed = true;
            return false;
        }
        if !self.finish_seen && data.contains("\"finish_reason\":\"") {
            self.finish_seen = true;
        }
        let name = ev.event.as_deref().unwrap_or("");
        let terminal =
            matches!(name, "message_stop" | "response.completed" | "response.incomplete" | "response.failed");
        let is_error = name == "error" || name == "response.failed";
        let interesting = terminal
            || is_error
            || data.contains("\"usage\"")
            || data.contains("\"usageMetadata\"")
            || data.contains("\"finishReason\"")
            || data.contains("\"error\"")
            || data.contains("response.completed")
            || data.contains("response.incomplete")
            || data.contains("message_stop");
        if !interesting {
            return false;
        }
        let Ok(env) = serde_json::from_str::<Envelope>(data) else { return false };
        let message = env.message.as_ref().and_then(|m| m.usage.as_ref());
        let response = env.response.as_ref().and_then(|m| m.usage.as_ref());
        self.merge(&[env.usage.as_ref(), message, response], env.usage_metadata.as_ref());
        if env.gemini_finished() {
            self.completed = true;
        }
        let kind = env.kind.as_deref().unwrap_or(name);
        if matches!(kind, "message_stop" | "response.completed" | "response.incomplete") {
            self.completed = true;
        }
        if is_error || kind == "error" || kind == "response.failed" || env.error.is_some() {
            let msg = env
                .error
                .as_ref()
                .and_then(|e| e.get("message").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_else(|| kind.to_string());
            self.stream_error = Some(truncate(&msg, 300));
        }
        env.usage.is_some() && env.choices.as_ref().is_some_and(|c| c.is_empty())
    }

    /// Usage has been reported so far (for streams: e.g. Anthropic's `message_start`).
    pub fn has_usage(&self) -> bool {
        self.acc.seen()
    }

    /// The stream reached its normal end so far.
    pub fn completed(&self) -> bool {
        self.completed || self.finish_seen
    }

    /// Collects a piece of a non-stream body.
    pub fn body_chunk(&mut self, chunk: &[u8]) {
        if self.body.len() + chunk.len() <= BODY_CAP {
            self.body.extend_from_slice(chunk);
        }
    }

    /// Parses a complete non-stream body (for Gemini also a stream without `alt=sse`: a JSON array of chunks).
    pub fn body(&mut self, body: &[u8]) {
        if self.protocol == Protocol::Gemini && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            if let Ok(chunks) = serde_json::from_slice::<Vec<Envelope>>(body) {
                for env in &chunks {
                    self.envelope(env);
                }
                self.completed = true;
            }
            return;
        }
        // Most bodies are one object whose usage members can be found without parsing the rest (the answer's
        // text is skipped, not decoded); anything unusual takes the full parse, which decides.
        // The members are merged where they were read: an `Envelope` built around them would be moved (copied,
        // several hundred bytes) on every answer.
        let fast = usage_members(body).and_then(|[usage, response, usage_metadata]| {
            let usage = match usage {
                Some(span) => usage_fast(span).map(Some).or_else(|| member(Some(span)))?,
                None => None,
            };
            let response: Option<Inner> = member(response)?;
            let gemini: Option<GeminiUsage> = member(usage_metadata)?;
            self.merge(&[usage.as_ref(), response.as_ref().and_then(|r| r.usage.as_ref())], gemini.as_ref());
            Some(())
        });
        if fast.is_some() {
            self.completed = true;
        } else if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
            self.envelope(&env);
            self.completed = true;
        }
    }

    fn envelope(&mut self, env: &Envelope) {
        let response = env.response.as_ref().and_then(|m| m.usage.as_ref());
        self.merge(&[env.usage.as_ref(), response], env.usage_metadata.as_ref());
    }

    /// Merges the usage objects found, in the order given (a later count replaces an earlier one), then Gemini's.
    fn merge(&mut self, usages: &[Option<&UsageWire>], gemini: Option<&GeminiUsage>) {
        for u in usages.iter().flatten() {
            self.acc.merge(u);
        }
        if let Some(u) = gemini {
            self.acc.merge_gemini(u);
        }
    }

    /// The result so far; call at the end of the response (or when it was cut).
    pub fn finish(&mut self) -> Metered {
        if !self.body.is_empty() {
            let body = std::mem::take(&mut self.body);
            self.body(&body);
        }
        Metered {
            tokens: self.acc.seen().then(|| self.acc.tokens(self.protocol)),
            completed: self.completed || self.finish_seen,
            stream_error: self.stream_error.clone(),
        }
    }
}

/// A member found by [`usage_members`], parsed: `Some(None)` when absent or `null`, `None` when it does not parse.
fn member<'de, T: Deserialize<'de>>(span: Option<&'de [u8]>) -> Option<Option<T>> {
    span.map_or(Some(None), |s| serde_json::from_slice::<Option<T>>(s).ok())
}

/// The values of the top-level members `usage`, `response` and `usageMetadata` of a body that is one JSON
/// object, found by walking its structure without decoding anything else. `None` when the text is not one whole
/// object, a key has escapes, or a member of interest appears twice: the caller then parses the body whole.
fn usage_members(body: &[u8]) -> Option<[Option<&[u8]>; 3]> {
    let mut found = [None; 3];
    members(body, |key, value| {
        let slot = match key {
            b"usage" => 0,
            b"response" => 1,
            b"usageMetadata" => 2,
            _ => return Some(()),
        };
        found[slot].is_none().then(|| found[slot] = Some(value))
    })?;
    Some(found)
}

/// Visits the members of `b`, which must be one whole JSON object (whitespace around it allowed), as (key, value
/// text); `None` when it is not, when a key has escapes, or when `f` says `None`.
fn members<'a>(b: &'a [u8], mut f: impl FnMut(&'a [u8], &'a [u8]) -> Option<()>) -> Option<()> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(());
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let key = &b[i + 1..key_end - 1];
        if key.contains(&b'\\') {
            return None;
        }
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let end = value_end(b, i)?;
        f(key, &b[i..end])?;
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return (skip_ws(b, i + 1) == b.len()).then_some(()),
            _ => return None,
        }
    }
}

/// An OpenAI / Anthropic `usage` object read in one pass, without serde: the counts it has, as the serde parse
/// would read them. `None` when anything is less plain than whole non-negative integers, `null` and nested
/// objects of them (a float, a sign, an escaped or repeated key, another shape): serde then decides, as before.
/// A usage object is read on every non-stream answer; serde's field matching cost ~2,500 instructions for one.
fn usage_fast(b: &[u8]) -> Option<UsageWire> {
    let mut u = UsageWire::default();
    let mut seen = 0u32;
    members(b, |key, v| {
        let bit = match key {
            b"prompt_tokens" => 0,
            b"completion_tokens" => 1,
            b"input_tokens" => 2,
            b"output_tokens" => 3,
            b"cache_creation_input_tokens" => 4,
            b"cache_read_input_tokens" => 5,
            b"cache_creation" => 6,
            b"prompt_cache_hit_tokens" => 7,
            b"prompt_tokens_details" => 8,
            b"completion_tokens_details" => 9,
            b"input_tokens_details" => 10,
            b"output_tokens_details" => 11,
            _ => return Some(()),
        };
        if seen & (1 << bit) != 0 {
            return None;
        }
        seen |= 1 << bit;
        match bit {
            0 => u.prompt_tokens = count(v)?,
            1 => u.completion_tokens = count(v)?,
            2 => u.input_tokens = count(v)?,
            3 => u.output_tokens = count(v)?,
            4 => u.cache_creation_input_tokens = count(v)?,
            5 => u.cache_read_input_tokens = count(v)?,
            6 => {
                u.cache_creation = nested(v, ["ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"])?
                    .map(|[a, b]| CacheCreation { ephemeral_5m_input_tokens: a, ephemeral_1h_input_tokens: b })
            }
            7 => u.prompt_cache_hit_tokens = count(v)?,
            _ => {
                let d = nested(v, ["cached_tokens", "reasoning_tokens"])?
                    .map(|[a, b]| Details { cached_tokens: a, reasoning_tokens: b });
                match bit {
                    8 => u.prompt_tokens_details = d,
                    9 => u.completion_tokens_details = d,
                    10 => u.input_tokens_details = d,
                    _ => u.output_tokens_details = d,
                }
            }
        }
        Some(())
    })?;
    Some(u)
}

/// A nested object of counts named `keys` (`null`: `Some(None)`); `None` as in [`usage_fast`].
fn nested(v: &[u8], keys: [&str; 2]) -> Option<Option<[Option<u64>; 2]>> {
    if v == b"null" {
        return Some(None);
    }
    let mut out = [None; 2];
    let mut seen = [false; 2];
    members(v, |key, v| {
        let Some(k) = keys.iter().position(|k| k.as_bytes() == key) else { return Some(()) };
        if std::mem::replace(&mut seen[k], true) {
            return None;
        }
        out[k] = count(v)?;
        Some(())
    })?;
    Some(Some(out))
}

/// A count: `null` is `Some(None)`; a plain non-negative integer that fits `u64` is `Some(Some(n))`; else `None`.
fn count(v: &[u8]) -> Option<Option<u64>> {
    if v == b"null" {
        return Some(None);
    }
    let plain = !v.is_empty() && v.len() <= 20 && v.iter().all(u8::is_ascii_digit) && (v[0] != b'0' || v.len() == 1);
    if !plain {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok().map(Some)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Just past the closing quote of the string opening at `i`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j += memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        if b[j] == b'"' {
            return Some(j + 1);
        }
        j += 2;
    }
}

/// Just past the value starting at `i` (its nesting balanced, its strings closed; scalars are not checked).
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            // A byte loop: the spans between brackets are short, where a vectorised search costs more.
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let len = b[i..].iter().position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'));
            let end = i + len.unwrap_or(b.len() - i);
            (end > i).then_some(end)
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sse::SseParser;

    /// The one-pass read of a `usage` object gives what serde gives, or declines (and serde decides).
    #[test]
    fn the_fast_usage_read_agrees_with_serde_or_declines() {
        let serde = |t: &str| serde_json::from_str::<UsageWire>(t).ok();
        let read = [
            r#"{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}"#,
            r#" { "input_tokens" : 3 , "output_tokens" : 0 , "cache_read_input_tokens" : 18446744073709551615 } "#,
            r#"{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":2,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":4,"x":[1,{"y":2}]}}"#,
            r#"{"input_tokens":1,"cache_creation_input_tokens":9,"cache_creation":{"ephemeral_5m_input_tokens":4,"ephemeral_1h_input_tokens":5},"service_tier":"standard","server_tool_use":{"web_search_requests":0}}"#,
            r#"{"input_tokens":1,"output_tokens":2,"input_tokens_details":null,"output_tokens_details":{"reasoning_tokens":null}}"#,
            r#"{"prompt_cache_hit_tokens":6,"prompt_cache_miss_tokens":1,"prompt_tokens":7}"#,
            r#"{"prompt_tokens":null,"cache_creation":null}"#,
            r#"{}"#,
        ];
        for t in read {
            assert!(usage_fast(t.as_bytes()).is_some(), "declined {t}");
            assert_eq!(usage_fast(t.as_bytes()), serde(t), "{t}");
        }
        let declined = [
            r#"{"prompt_tokens":1.0}"#,
            r#"{"prompt_tokens":-1}"#,
            r#"{"prompt_tokens":012}"#,
            r#"{"prompt_tokens":18446744073709551616}"#,
            r#"{"prompt_tokens":"12"}"#,
            r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":1}}"#,
            r#"{"prompt_tokens_details":[1]}"#,
            r#"{"prompt_tok\u0065ns":1}"#,
            r#"{"prompt_tokens":1"#,
            r#"[1]"#,
            r#"null"#,
        ];
        for t in declined {
            assert_eq!(usage_fast(t.as_bytes()), None, "{t}");
        }
    }

    /// The usage members found by walking a body's structure are those the full parse finds; bodies the walk
    /// refuses fall back to the full parse.
    #[test]
    fn the_member_walk_agrees_with_the_full_parse() {
        let whole = |body: &str| {
            let env = serde_json::from_slice::<Envelope>(body.as_bytes()).ok();
            env.map(|e| {
                (
                    format!("{:?}", e.usage),
                    format!("{:?}", e.response.map(|r| r.usage)),
                    format!("{:?}", e.usage_metadata),
                )
            })
        };
        let walked = |body: &str| {
            let [u, r, m] = usage_members(body.as_bytes())?;
            Some((
                format!("{:?}", member::<UsageWire>(u)?),
                format!("{:?}", member::<Inner>(r)?.map(|r| r.usage)),
                format!("{:?}", member::<GeminiUsage>(m)?),
            ))
        };
        let agree = [
            r#"{"id":"x","choices":[{"message":{"content":"a \"usage\": {} [ ] { \\"}}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            r#" { "usage" : { "input_tokens" : 1 , "output_tokens" : 2 } , "type" : "message" } "#,
            r#"{"choices":[{"message":{"tool_calls":[{"usage":{"prompt_tokens":99}}]}}],"usage":null}"#,
            r#"{"response":{"id":"r","usage":{"input_tokens":5,"output_tokens":6},"output":[{"usage":1}]}}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"hi}"}]}}],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":8}}"#,
            r#"{}"#,
            r#"{"n":-1.5e3,"t":true,"f":false,"z":null,"a":[],"o":{},"s":"\u00e9"}"#,
        ];
        for body in agree {
            assert!(walked(body).is_some(), "the walk refused {body}");
            assert_eq!(walked(body), whole(body), "{body}");
        }
        // Refused by the walk (the full parse decides): not whole, escaped keys, repeated members, not an object.
        let refused = [
            r#"{"usage":{"prompt_tokens":3}"#,
            r#"{"usage":{"prompt_tokens":3}} trailing"#,
            r#"{"usa\u0067e":{"prompt_tokens":3}}"#,
            r#"{"usage":{"prompt_tokens":3},"usage":{"prompt_tokens":4}}"#,
            r#"{"usage":{"prompt_tokens":3},}"#,
            r#"[{"usage":{"prompt_tokens":3}}]"#,
            r#"{"choices":[{"message":"unterminated}]}"#,
            "",
        ];
        for body in refused {
            assert!(usage_members(body.as_bytes()).is_none(), "the walk accepted {body}");
        }
        // Through the meter: a body whose walk is refused still reads as the full parse does.
        let mut m = UsageMeter::new(Protocol::Openai);
        m.body(br#"{"usa\u0067e":{"prompt_tokens":3,"completion_tokens":1}}"#);
        let got = m.finish();
        assert!(got.completed);
        assert_eq!(got.tokens.map(|t| (t.input, t.output)), Some((3, 1)));
    }

    fn meter_stream(protocol: Protocol, wire: &str) -> (Metered, usize) {
        let mut m = UsageMeter::new(protocol);
        let mut hidden = 0;
        for ev in SseParser::new().feed(wire.as_bytes()) {
            if m.event(&ev) {
                hidden += 1;
            }
        }
        (m.finish(), hidden)
    }

    #[test]
    fn openai_chat_non_stream_with_cache_and_reasoning() {
        let mut m = UsageMeter::new(Protocol::Openai);
        m.body(br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920},"completion_tokens_details":{"reasoning_tokens":100}}}"#);
        let t = m.finish().tokens.unwrap();
        assert_eq!(t, Tokens { input: 86, cache_read: 1920, output: 300, reasoning: 100, ..Default::default() });
    }

    #[test]
    fn deepseek_cache_hit_field() {
        let mut m = UsageMeter::new(Protocol::Openai);
        m.body(br#"{"usage":{"prompt_tokens":100,"completion_tokens":5,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36}}"#);
        let t = m.finish().tokens.unwrap();
        assert_eq!((t.input, t.cache_read), (36, 64));
    }

    #[test]
    fn openai_chat_stream_usage_chunk_is_recognised() {
        let wire = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
                    data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
                    data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}\n\n\
                    data: [DONE]\n\n";
        let (m, hidden) = meter_stream(Protocol::Openai, wire);
        assert_eq!(hidden, 1);
        assert!(m.completed);
        assert_eq!(m.tokens.unwrap(), Tokens { input: 9, output: 12, ..Default::default() });
    }

    #[test]
    fn anthropic_stream_takes_latest_cumulative_values_never_sums() {
        let wire = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n\
                    event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"usage\"}}\n\n\
                    event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":7}}\n\n\
                    event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n\
                    event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let (m, _) = meter_stream(Protocol::Anthropic, wire);
        assert!(m.completed);
        assert_eq!(
            m.tokens.unwrap(),
            Tokens { input: 12, cache_read: 100, cache_write: 5, output: 15, ..Default::default() }
        );
    }

    #[test]
    fn anthropic_cache_writes_split_by_ttl_stream_and_not() {
        let body = br#"{"type":"message","usage":{"input_tokens":4,"cache_creation_input_tokens":300,"cache_read_input_tokens":9000,"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200},"output_tokens":50}}"#;
        let mut m = UsageMeter::new(Protocol::Anthropic);
        m.body(body);
        let want =
            Tokens { input: 4, cache_read: 9000, cache_write: 300, output: 50, reasoning: 0, cache_write_1h: 200 };
        assert_eq!(m.finish().tokens.unwrap(), want);
        let wire = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":4,\"cache_creation_input_tokens\":300,\"cache_read_input_tokens\":9000,\"cache_creation\":{\"ephemeral_5m_input_tokens\":100,\"ephemeral_1h_input_tokens\":200},\"output_tokens\":1}}}\n\n\
                    event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":50}}\n\n\
                    event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert_eq!(meter_stream(Protocol::Anthropic, wire).0.tokens.unwrap(), want);
        // Only the split, no total: the total is its sum.
        let mut m = UsageMeter::new(Protocol::Anthropic);
        m.body(br#"{"usage":{"input_tokens":1,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":70},"output_tokens":2}}"#);
        let t = m.finish().tokens.unwrap();
        assert_eq!((t.cache_write, t.cache_write_1h), (70, 70));
    }

    #[test]
    fn openai_cached_tokens_with_null_details() {
        let mut m = UsageMeter::new(Protocol::Openai);
        m.body(br#"{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":null}}"#);
        assert_eq!(m.finish().tokens.unwrap(), Tokens { input: 10, output: 2, ..Default::default() });
        let mut m = UsageMeter::new(Protocol::Openai);
        m.body(br#"{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":null,"audio_tokens":0}}}"#);
        assert_eq!(m.finish().tokens.unwrap(), Tokens { input: 10, output: 2, ..Default::default() });
    }

    #[test]
    fn responses_stream_usage_from_completed_event() {
        let wire = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n\
                    event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"usage\":{\"input_tokens\":50,\"input_tokens_details\":{\"cached_tokens\":10},\"output_tokens\":20,\"output_tokens_details\":{\"reasoning_tokens\":4},\"total_tokens\":70}}}\n\n";
        let (m, hidden) = meter_stream(Protocol::Openai, wire);
        assert_eq!(hidden, 0);
        assert!(m.completed);
        assert_eq!(
            m.tokens.unwrap(),
            Tokens { input: 40, cache_read: 10, output: 20, reasoning: 4, ..Default::default() }
        );
    }

    #[test]
    fn cut_stream_keeps_what_was_reported_and_is_not_completed() {
        let wire = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":30,\"output_tokens\":1}}}\n\n";
        let (m, _) = meter_stream(Protocol::Anthropic, wire);
        assert!(!m.completed);
        assert_eq!(m.tokens.unwrap().input, 30);
    }

    #[test]
    fn error_event_inside_stream_is_reported() {
        let wire = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let (m, _) = meter_stream(Protocol::Anthropic, wire);
        assert_eq!(m.stream_error.as_deref(), Some("Overloaded"));
    }

    #[test]
    fn gemini_non_stream_counts_thoughts_as_output_and_cached_as_read() {
        let mut m = UsageMeter::new(Protocol::Gemini);
        m.body(
            br#"{"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"},"finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":1200,"candidatesTokenCount":40,"totalTokenCount":1290,
            "cachedContentTokenCount":1000,"thoughtsTokenCount":50}}"#,
        );
        let t = m.finish().tokens.unwrap();
        assert_eq!(t, Tokens { input: 200, cache_read: 1000, output: 90, reasoning: 50, ..Default::default() });
    }

    #[test]
    fn gemini_sse_usage_in_last_chunk_and_finish_reason_completes() {
        // Google's own SSE output has spaces after colons.
        let wire = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"totalTokenCount\": 8}}\r\n\r\n\
                    data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"lo\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"candidatesTokenCount\": 2,\"totalTokenCount\": 10,\"toolUsePromptTokenCount\": 3}}\r\n\r\n";
        let (m, hidden) = meter_stream(Protocol::Gemini, wire);
        assert_eq!(hidden, 0);
        assert!(m.completed);
        assert_eq!(m.tokens.unwrap(), Tokens { input: 11, output: 2, ..Default::default() });
        // Cut before the finish reason: not completed, counts so far kept.
        let (m, _) = meter_stream(Protocol::Gemini, wire.split("\r\n\r\n").next().unwrap());
        assert!(!m.completed);
    }

    #[test]
    fn gemini_json_array_stream_and_error_chunk() {
        let mut m = UsageMeter::new(Protocol::Gemini);
        m.body_chunk(b"[{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}}],\"usageMetadata\": {\"promptTokenCount\": 5}}\n,\r\n");
        m.body_chunk(b"{\"candidates\": [{\"finishReason\": \"STOP\"}],\"usageMetadata\": {\"promptTokenCount\": 5,\"candidatesTokenCount\": 4}}\n]");
        let got = m.finish();
        assert!(got.completed);
        assert_eq!(got.tokens.unwrap(), Tokens { input: 5, output: 4, ..Default::default() });
        let wire = "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded.\", \"status\": \"UNAVAILABLE\"}}\n\n";
        let (m, _) = meter_stream(Protocol::Gemini, wire);
        assert_eq!(m.stream_error.as_deref(), Some("The model is overloaded."));
    }

    #[test]
    fn embeddings_usage() {
        let mut m = UsageMeter::new(Protocol::Openai);
        m.body_chunk(br#"{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":8,"#);
        m.body_chunk(br#""total_tokens":8}}"#);
        assert_eq!(m.finish().tokens.unwrap(), Tokens { input: 8, ..Default::default() });
    }
}
