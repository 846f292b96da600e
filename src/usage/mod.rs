//! Request records and what they are made of: token fingerprints, token counts, cost.
//!
//! Owns the [`RequestRecord`] every request produces (success, error, client gone, cut stream), the
//! fingerprint of upstream keys (the only form in which a key is ever recorded) and cost arithmetic.
//! Persisting records and reporting on them are `store`'s and `cli`'s business.

pub mod estimate;
pub mod report;
pub mod sink;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Price;
use crate::upstream::FailureClass;

/// `fp:` + the first 16 hex digits of SHA-256(key). Safe to log, store and show.
pub fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("fp:{}", &hex::encode(digest)[..16])
}

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

    /// USD for these tokens at `price` (USD per 1M). Cache prices default to the input price (Anthropic channels
    /// fill in their multipliers first: `Price::with_anthropic_cache_defaults`).
    pub fn cost(&self, price: &Price) -> f64 {
        let read = price.cache_read.unwrap_or(price.input);
        let write = price.cache_write.unwrap_or(price.input);
        let write_1h = price.cache_write_1h.unwrap_or(write);
        let hour = self.cache_write_1h.min(self.cache_write);
        (self.input as f64 * price.input
            + self.cache_read as f64 * read
            + (self.cache_write - hour) as f64 * write
            + hour as f64 * write_1h
            + self.output as f64 * price.output)
            / 1_000_000.0
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

/// Where token counts came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The upstream's own `usage`.
    Upstream,
    /// Estimated locally because the upstream gave none.
    Estimated,
    /// Nothing was billed (no attempt got a response body).
    #[default]
    None,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Ok,
    /// The upstream answered with an error that reached the client (or every candidate failed).
    UpstreamError,
    /// No candidate matched the model, or the key may not use it.
    NoRoute,
    /// The client went away before the response finished.
    ClientClosed,
    /// The upstream stream was cut after the first byte reached the client.
    Interrupted,
    /// The client's request was rejected before routing (bad JSON, auth, size).
    BadRequest,
    /// Refused by its gateway key's rate limits (requests or tokens per minute, parallel requests).
    Limited,
    /// Refused because its gateway key's budget for the period is spent.
    Budget,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UpstreamError => "upstream_error",
            Outcome::NoRoute => "no_route",
            Outcome::ClientClosed => "client_closed",
            Outcome::Interrupted => "interrupted",
            Outcome::BadRequest => "bad_request",
            Outcome::Limited => "limited",
            Outcome::Budget => "budget",
        }
    }
}

/// One upstream attempt inside a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub channel: String,
    pub endpoint: String,
    pub token_key: String,
    pub token_fp: String,
    pub model: String,
    /// HTTP status, when the upstream answered.
    pub status: Option<u16>,
    /// `ok`, or the failure class (`connect`, `timeout`, `rate_limited`, `auth`, `server_error`, ...).
    pub outcome: FailureClass,
    pub ms: u32,
}

/// One client request, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Time-ordered: milliseconds since the epoch in the high 64 bits.
    pub id: u128,
    /// Unix milliseconds.
    pub time_ms: i64,
    pub gateway_key: Option<String>,
    /// `openai` or `anthropic`.
    pub client_protocol: String,
    pub path: String,
    pub requested_model: String,
    pub upstream_model: Option<String>,
    pub channel: Option<String>,
    pub endpoint: Option<String>,
    pub token_key: Option<String>,
    pub token_fp: Option<String>,
    pub strategy: String,
    pub attempts: Vec<Attempt>,
    pub status: u16,
    pub outcome: Outcome,
    pub stream: bool,
    pub ttfb_ms: Option<u32>,
    pub total_ms: u32,
    pub tokens: Tokens,
    pub usage_source: UsageSource,
    /// `None`: the price is unknown (shown as `-`, never as 0).
    pub cost_usd: Option<f64>,
    /// e.g. `anthropic->openai` when the request was translated.
    pub translated: Option<String>,
    /// Short error text (never a key).
    pub error: Option<String>,
    /// The conversation this request belongs to: 16 hex digits of a one-way hash (never the raw id).
    #[serde(default)]
    pub session: Option<String>,
    /// Prompt-cache affinity: `new`, `hit`, `moved` or `off` (absent in records older than affinity).
    #[serde(default)]
    pub affinity: Option<String>,
}

impl RequestRecord {
    /// Attributes a request that failed to where its last attempt went.
    pub fn locate_last_attempt(&mut self) {
        if let Some(a) = self.attempts.last() {
            self.channel = Some(a.channel.clone());
            self.endpoint = Some(a.endpoint.clone());
            self.token_key = Some(a.token_key.clone());
            self.token_fp = Some(a.token_fp.clone());
            self.upstream_model = Some(a.model.clone());
        }
    }
}

/// A new time-ordered record id: unix ms in the high 64 bits, random in the low.
pub fn new_id(time_ms: i64) -> u128 {
    ((time_ms as u128) << 64) | rand::random::<u64>() as u128
}

/// The id as users see it: 32 hex digits.
pub fn format_id(id: u128) -> String {
    format!("{id:032x}")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_short() {
        let fp = fingerprint("sk-test");
        assert_eq!(fp, fingerprint("sk-test"));
        assert_eq!(fp.len(), 19);
        assert!(!fp.contains("sk-test"));
    }

    #[test]
    fn cost_uses_cache_prices_or_input_price() {
        let t = Tokens { input: 1_000_000, cache_read: 1_000_000, output: 500_000, ..Default::default() };
        let p = Price { input: 2.0, output: 8.0, cache_read: Some(0.5), ..Default::default() };
        assert!((t.cost(&p) - (2.0 + 0.5 + 4.0)).abs() < 1e-9);
        let p = Price { input: 2.0, output: 8.0, ..Default::default() };
        assert!((t.cost(&p) - (2.0 + 2.0 + 4.0)).abs() < 1e-9);
    }

    #[test]
    fn attempt_outcomes_keep_their_stored_form() {
        // Records written when `outcome` was a string decode, and encode to the same bytes.
        for code in ["ok", "auth", "quota", "not_found", "rate_limited", "timeout", "connect", "server_error"]
            .into_iter()
            .chain(["bad_request", "client_error"])
        {
            let stored = format!(
                r#"{{"channel":"a","endpoint":"default","token_key":"k","token_fp":"fp:00","model":"m","status":null,"outcome":"{code}","ms":7}}"#
            );
            let a: Attempt = serde_json::from_str(&stored).unwrap();
            assert_eq!(a.outcome.code(), code);
            assert_eq!(serde_json::to_string(&a).unwrap(), stored);
        }
    }

    #[test]
    fn one_hour_cache_writes_are_billed_at_their_own_price() {
        // 1M written: 400k with the 5-minute TTL, 600k with the 1-hour TTL.
        let t = Tokens { cache_write: 1_000_000, cache_write_1h: 600_000, ..Default::default() };
        let p = Price { input: 3.0, output: 15.0, ..Default::default() }.with_anthropic_cache_defaults();
        assert_eq!((p.cache_write, p.cache_write_1h), (Some(3.75), Some(6.0)));
        assert!((t.cost(&p) - (0.4 * 3.75 + 0.6 * 6.0)).abs() < 1e-9);
        // Configured prices are kept.
        let p = Price { input: 3.0, cache_write: Some(4.0), cache_write_1h: Some(5.0), ..Default::default() }
            .with_anthropic_cache_defaults();
        assert!((t.cost(&p) - (0.4 * 4.0 + 0.6 * 5.0)).abs() < 1e-9);
        // Without a 1-hour price, a 1-hour write costs what a write costs (never plain input when one is set).
        let p = Price { input: 3.0, cache_write: Some(4.0), ..Default::default() };
        assert!((t.cost(&p) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn ids_sort_by_time() {
        assert!(new_id(1000) < new_id(1001));
        assert_eq!(format_id(new_id(5)).len(), 32);
    }
}
