//! Request records and what they are made of: token fingerprints, token counts, cost.
//!
//! Owns the [`RequestRecord`] every request produces (success, error, client gone, cut stream), the
//! fingerprint of upstream keys (the only form in which a key is ever recorded) and cost arithmetic.
//! Must not depend on `store`: persisting records is `store`'s business, reporting on them `report`'s.

pub mod estimate;
pub mod sink;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{Price, Strategy};
use crate::failure::FailureClass;
use crate::protocol::Protocol;
use crate::protocol::convert::Conversion;

/// The form in which a key is recorded (defined beside the other things done to upstream keys).
pub use crate::crypto::fingerprint;

pub use crate::protocol::usage::Tokens;

impl Tokens {
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
    // Shared with the routing snapshot the attempt was made from (a reference count, not a copy per request).
    pub channel: Arc<str>,
    pub endpoint: Arc<str>,
    pub token_key: Arc<str>,
    pub token_fp: Arc<str>,
    pub model: Arc<str>,
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
    pub gateway_key: Option<Arc<str>>,
    /// `openai` or `anthropic`.
    pub client_protocol: Protocol,
    pub path: String,
    pub requested_model: String,
    pub upstream_model: Option<Arc<str>>,
    pub channel: Option<Arc<str>>,
    pub endpoint: Option<Arc<str>>,
    pub token_key: Option<Arc<str>>,
    pub token_fp: Option<Arc<str>>,
    /// The strategy that ordered the candidates; `None` (stored as `""`) when the request was rejected first.
    #[serde(with = "blank_is_none")]
    pub strategy: Option<Strategy>,
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
    pub translated: Option<Conversion>,
    /// Short error text (never a key).
    pub error: Option<String>,
    /// The conversation this request belongs to: 16 hex digits of a one-way hash (never the raw id).
    #[serde(default)]
    pub session: Option<String>,
    /// Prompt-cache affinity: `new`, `hit`, `moved` or `off` (absent in records older than affinity).
    #[serde(default)]
    pub affinity: Option<AffinityOutcome>,
}

/// What happened to a prompt-cache affinity binding on one request (`live::affinity`; the `X-Router-Affinity` header and the record, where it is stored
/// as `new`, `hit`, `moved` or `off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AffinityOutcome {
    /// No binding yet: the plan chose, and the session is now bound to what served it.
    New,
    /// The bound candidate served the request.
    Hit,
    /// The bound candidate could not be used or failed: another one served, and the session moved to it.
    Moved,
    /// Affinity was off for this request (config, `X-Router-Affinity: off`, or no session).
    Off,
}

impl AffinityOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityOutcome::New => "new",
            AffinityOutcome::Hit => "hit",
            AffinityOutcome::Moved => "moved",
            AffinityOutcome::Off => "off",
        }
    }
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

/// An optional enum stored as its name, or as `""` when absent (the record format before it was typed).
mod blank_is_none {
    use serde::de::IntoDeserializer;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => v.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        T::deserialize(s.into_deserializer()).map(Some)
    }
}

/// A new time-ordered record id: unix ms in the high 64 bits, random in the low.
pub fn new_id(time_ms: i64) -> u128 {
    ((time_ms as u128) << 64) | rand::random::<u64>() as u128
}

/// The id as users see it: 32 hex digits.
pub fn format_id(id: u128) -> String {
    hex::encode(id.to_be_bytes())
}

/// [`format_id`]'s digits, without a `String` (the response header writes them per request).
pub fn hex_id(id: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::encode_to_slice(id.to_be_bytes(), &mut out).expect("16 bytes are 32 hex digits");
    out
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub(crate) mod records_as_text {
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    use crate::usage::RequestRecord;

    pub fn serialize<S: Serializer>(v: &[RequestRecord], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for r in v {
            seq.serialize_element(&serde_json::to_string(r).map_err(serde::ser::Error::custom)?)?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RequestRecord>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| serde_json::from_str(t).map_err(serde::de::Error::custom))
            .collect()
    }
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
    fn typed_fields_keep_the_stored_format() {
        let r = RequestRecord {
            client_protocol: Protocol::Anthropic,
            strategy: Some(Strategy::CostFirst),
            translated: Some(Conversion::AnthropicToChat),
            ..Default::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["client_protocol"], "anthropic");
        assert_eq!(v["strategy"], "cost_first");
        assert_eq!(v["translated"], "anthropic->openai");
        assert_eq!(serde_json::from_value::<RequestRecord>(v).unwrap(), r);
        let moved = RequestRecord { affinity: Some(AffinityOutcome::Moved), ..Default::default() };
        assert_eq!(serde_json::to_value(moved).unwrap()["affinity"], "moved");
        // A request rejected before routing has no strategy: stored as "", as before.
        let v = serde_json::to_value(RequestRecord::default()).unwrap();
        assert_eq!(v["strategy"], "");
        assert_eq!(v["translated"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<RequestRecord>(v).unwrap().strategy, None);
        for (c, s) in
            [(Conversion::ChatToAnthropic, "openai->anthropic"), (Conversion::ResponsesToChat, "responses->chat")]
        {
            assert_eq!(serde_json::to_value(c).unwrap(), s);
        }
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
        for id in [0, 1, 0xabc, u128::MAX, new_id(1_764_000_000_000)] {
            assert_eq!(format_id(id), format!("{id:032x}"));
        }
    }
}
