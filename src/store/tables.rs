//! Every redb table of the store, the schema version, and the versioned encodings of what the tables hold.
//!
//! Owns table names and key / value types (changing one is a schema change: bump [`SCHEMA_VERSION`] and teach
//! `Store::open` to migrate), and the byte encodings of request records and daily counters. Old encodings stay
//! decodable forever; a newer one than this binary knows is an error, never a guess. No I/O here.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::usage::{Outcome, RequestRecord};

/// The schema this binary writes. Stores with a lower version are migrated on open; a higher one is refused.
/// History: 1 — the first schema; 2 — adds `usage_hourly`, backfilled from the retained request records on open;
/// 3 — new request records are written in the binary form (`store::codec`, encoding 2), so a router older than
/// this one refuses the file at open instead of failing on its first new record (records already stored stay
/// as they are: both encodings read).
pub const SCHEMA_VERSION: u64 = 3;

/// `schema_version` -> u64, and other small facts about the store (`requests_pruned_before` -> unix ms).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const META_SCHEMA_VERSION: &str = "schema_version";
/// Records older than this (unix ms) may have been pruned by retention; reports before it use the rollups.
pub const META_PRUNED_BEFORE: &str = "requests_pruned_before";
/// `usage_hourly` holds every request from this unix ms on (an hour start; 0 for a store created with the
/// table). A store migrated from schema 1 had pruned the records before it, so its older hours are missing.
pub const META_HOURLY_FROM: &str = "usage_hourly_from";

/// Store-held channels (imported or added): channel name -> JSON `ChannelConfig`.
pub const CHANNELS: TableDefinition<&str, &[u8]> = TableDefinition::new("channels");
/// Discovered models: key chosen by discovery -> JSON.
pub const MODELS: TableDefinition<&str, &[u8]> = TableDefinition::new("models");
/// Discovered prices: key chosen by discovery -> JSON.
pub const PRICES: TableDefinition<&str, &[u8]> = TableDefinition::new("prices");
/// Persisted health / latency observations -> JSON.
pub const HEALTH: TableDefinition<&str, &[u8]> = TableDefinition::new("health");
/// Balance history -> JSON.
pub const BALANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("balances");
/// Gateway keys (hashes only, never plaintext) -> JSON.
pub const GATEWAY_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("gateway_keys");

/// Request records: time-ordered id (unix ms in the high 64 bits) -> [`encode_record`].
pub const REQUESTS: TableDefinition<u128, &[u8]> = TableDefinition::new("requests");

/// Records waiting for PostgreSQL (`store.postgres`) while it cannot be written: arrival sequence ->
/// [`encode_record`]. Empty without PostgreSQL.
pub const PG_SPOOL: TableDefinition<u64, &[u8]> = TableDefinition::new("pg_spool");

/// Daily rollups: [`DailyKey`] -> [`Counters::encode`]. Never pruned.
/// Key: (UTC day number since 1970-01-01, channel, endpoint, token fingerprint, token_key, model, gateway key).
/// Absent parts are empty strings.
pub const USAGE_DAILY: TableDefinition<DailyTuple, &[u8]> = TableDefinition::new("usage_daily");

/// Hourly rollups: [`HourlyKey`] -> [`Counters::encode`], written with the daily rollups in the same
/// transaction. Never pruned (an hour of a busy gateway is a few hundred rows; records are pruned, these stay).
/// Key: (UTC hour number since 1970-01-01T00:00Z, then the same parts as `usage_daily`).
pub const USAGE_HOURLY: TableDefinition<DailyTuple, &[u8]> = TableDefinition::new("usage_hourly");

/// The `usage_daily` key as redb stores it (`usage_hourly` too, with the hour in place of the day).
pub type DailyTuple<'a> = (u32, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

/// The owned form of a `usage_daily` key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct DailyKey {
    pub day: u32,
    pub channel: String,
    pub endpoint: String,
    pub token_fp: String,
    pub token_key: String,
    /// The upstream model when one was picked, else the requested model.
    pub model: String,
    pub gateway_key: String,
}

impl DailyKey {
    pub fn of(rec: &RequestRecord) -> DailyKey {
        DailyKey::from_tuple(rollup_tuple(day_of_ms(rec.time_ms), rec))
    }

    pub fn as_tuple(&self) -> DailyTuple<'_> {
        (self.day, &self.channel, &self.endpoint, &self.token_fp, &self.token_key, &self.model, &self.gateway_key)
    }

    pub fn from_tuple(t: DailyTuple<'_>) -> DailyKey {
        DailyKey {
            day: t.0,
            channel: t.1.into(),
            endpoint: t.2.into(),
            token_fp: t.3.into(),
            token_key: t.4.into(),
            model: t.5.into(),
            gateway_key: t.6.into(),
        }
    }
}

/// The owned form of a `usage_hourly` key: the parts of a [`DailyKey`] under an hour instead of a day.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct HourlyKey {
    /// Hours since 1970-01-01T00:00Z.
    pub hour: u32,
    pub channel: String,
    pub endpoint: String,
    pub token_fp: String,
    pub token_key: String,
    pub model: String,
    pub gateway_key: String,
}

impl HourlyKey {
    pub fn of(rec: &RequestRecord) -> HourlyKey {
        HourlyKey::from_tuple(rollup_tuple(hour_of_ms(rec.time_ms), rec))
    }

    pub fn as_tuple(&self) -> DailyTuple<'_> {
        (self.hour, &self.channel, &self.endpoint, &self.token_fp, &self.token_key, &self.model, &self.gateway_key)
    }

    pub fn from_tuple(t: DailyTuple<'_>) -> HourlyKey {
        let d = DailyKey::from_tuple(t);
        HourlyKey {
            hour: d.day,
            channel: d.channel,
            endpoint: d.endpoint,
            token_fp: d.token_fp,
            token_key: d.token_key,
            model: d.model,
            gateway_key: d.gateway_key,
        }
    }

    /// The same parts under the UTC day that holds the hour.
    pub fn into_daily(self) -> DailyKey {
        DailyKey {
            day: self.hour / 24,
            channel: self.channel,
            endpoint: self.endpoint,
            token_fp: self.token_fp,
            token_key: self.token_key,
            model: self.model,
            gateway_key: self.gateway_key,
        }
    }
}

/// A record's rollup key, borrowed from it: `unit` is its day (`usage_daily`) or hour (`usage_hourly`).
pub fn rollup_tuple(unit: u32, rec: &RequestRecord) -> DailyTuple<'_> {
    fn s<T: std::ops::Deref<Target = str>>(v: &Option<T>) -> &str {
        v.as_deref().unwrap_or_default()
    }
    (
        unit,
        s(&rec.channel),
        s(&rec.endpoint),
        s(&rec.token_fp),
        s(&rec.token_key),
        record_model(rec),
        s(&rec.gateway_key),
    )
}

/// Whether two records roll up into the same rows (the same hour, hence day, and the same parts). The parts are
/// mostly strings shared with the routing snapshot: the same pointer answers without comparing bytes.
pub fn same_rollup(a: &RequestRecord, b: &RequestRecord) -> bool {
    fn same(x: &str, y: &str) -> bool {
        (std::ptr::eq(x.as_ptr(), y.as_ptr()) && x.len() == y.len()) || x == y
    }
    let (x, y) = (rollup_tuple(0, a), rollup_tuple(0, b));
    hour_of_ms(a.time_ms) == hour_of_ms(b.time_ms)
        && same(x.1, y.1)
        && same(x.2, y.2)
        && same(x.3, y.3)
        && same(x.4, y.4)
        && same(x.5, y.5)
        && same(x.6, y.6)
}

/// The model a record is accounted under: the upstream model when one was picked, else the requested one.
pub fn record_model(rec: &RequestRecord) -> &str {
    rec.upstream_model.as_deref().unwrap_or(&rec.requested_model)
}

/// UTC day number (days since 1970-01-01) of a unix-ms time.
pub fn day_of_ms(ms: i64) -> u32 {
    ms.div_euclid(86_400_000).max(0) as u32
}

/// UTC hour number (hours since 1970-01-01T00:00Z) of a unix-ms time.
pub fn hour_of_ms(ms: i64) -> u32 {
    ms.div_euclid(3_600_000).max(0) as u32
}

/// Whether a record counts as an error in reports: the request did not end well for a reason other than the
/// client leaving.
pub fn is_error(rec: &RequestRecord) -> bool {
    !matches!(rec.outcome, Outcome::Ok | Outcome::ClientClosed)
}

/// Summable counters: one `usage_daily` value, and one row of a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    pub errors: u64,
    pub input: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
    /// Sum of the known costs, USD.
    pub cost_usd: f64,
    /// Requests that used tokens at an unknown price: their cost is not in `cost_usd`.
    pub unknown_cost: u64,
    /// Requests whose tokens were estimated locally.
    pub estimated: u64,
}

const COUNTERS_V1: u8 = 1;
const COUNTERS_V1_LEN: usize = 1 + 10 * 8;

impl Counters {
    /// The counters one record contributes.
    pub fn of(rec: &RequestRecord) -> Counters {
        let t = &rec.tokens;
        Counters {
            requests: 1,
            errors: is_error(rec) as u64,
            input: t.input,
            cache_read: t.cache_read,
            cache_write: t.cache_write,
            output: t.output,
            reasoning: t.reasoning,
            cost_usd: rec.cost_usd.unwrap_or(0.0),
            unknown_cost: (rec.cost_usd.is_none() && !t.is_zero()) as u64,
            estimated: (rec.usage_source == crate::usage::UsageSource::Estimated) as u64,
        }
    }

    pub fn add(&mut self, o: &Counters) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.input += o.input;
        self.cache_read += o.cache_read;
        self.cache_write += o.cache_write;
        self.output += o.output;
        self.reasoning += o.reasoning;
        self.cost_usd += o.cost_usd;
        self.unknown_cost += o.unknown_cost;
        self.estimated += o.estimated;
    }

    /// Version byte, then ten little-endian 8-byte fields in declaration order.
    pub fn encode(&self) -> [u8; COUNTERS_V1_LEN] {
        let mut b = [0u8; COUNTERS_V1_LEN];
        b[0] = COUNTERS_V1;
        let fields = [
            self.requests,
            self.errors,
            self.input,
            self.cache_read,
            self.cache_write,
            self.output,
            self.reasoning,
            self.cost_usd.to_bits(),
            self.unknown_cost,
            self.estimated,
        ];
        for (i, f) in fields.iter().enumerate() {
            b[1 + i * 8..9 + i * 8].copy_from_slice(&f.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Counters, DecodeError> {
        match b.first() {
            Some(&COUNTERS_V1) if b.len() == COUNTERS_V1_LEN => {
                let f = |i: usize| u64::from_le_bytes(b[1 + i * 8..9 + i * 8].try_into().expect("8 bytes"));
                Ok(Counters {
                    requests: f(0),
                    errors: f(1),
                    input: f(2),
                    cache_read: f(3),
                    cache_write: f(4),
                    output: f(5),
                    reasoning: f(6),
                    cost_usd: f64::from_bits(f(7)),
                    unknown_cost: f(8),
                    estimated: f(9),
                })
            }
            Some(&COUNTERS_V1) => Err(DecodeError::Malformed(format!("counters of {} bytes", b.len()))),
            Some(&v) => Err(DecodeError::NewerVersion(v)),
            None => Err(DecodeError::Malformed("empty counters".into())),
        }
    }
}

/// A stored value this binary cannot read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("written by a newer router (encoding version {0}); upgrade router to read it")]
    NewerVersion(u8),
    #[error("malformed stored value: {0}")]
    Malformed(String),
}

/// Request record encoding version 1 (written until the binary form, still read): the byte 1, then the record
/// as JSON. Fields missing from an old record take their default, unknown fields are ignored.
const RECORD_V1: u8 = 1;

/// A request record as stored: version 2, the binary form of [`super::codec`].
pub fn encode_record(rec: &RequestRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    super::codec::encode_into(rec, &mut out);
    out
}

/// A stored request record, in any version this router writes or wrote.
pub fn decode_record(b: &[u8]) -> Result<RequestRecord, DecodeError> {
    match b.first() {
        Some(&super::codec::VERSION) => {
            super::codec::decode(&b[1..]).map_err(|e| DecodeError::Malformed(format!("request record: {e}")))
        }
        Some(&RECORD_V1) => {
            let body = &b[1..];
            match serde_json::from_slice::<RequestRecord>(body) {
                Ok(r) => Ok(r),
                // An older record lacks fields added since: fill them from the defaults.
                Err(_) => {
                    let mut v: serde_json::Value =
                        serde_json::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
                    let defaults = serde_json::to_value(RequestRecord::default()).expect("default serialises");
                    fill_defaults(&mut v, &defaults);
                    serde_json::from_value(v).map_err(|e| DecodeError::Malformed(e.to_string()))
                }
            }
        }
        Some(&v) => Err(DecodeError::NewerVersion(v)),
        None => Err(DecodeError::Malformed("empty record".into())),
    }
}

/// Adds every key of `defaults` missing from `v`, recursively, including inside `attempts`.
fn fill_defaults(v: &mut serde_json::Value, defaults: &serde_json::Value) {
    use serde_json::Value;
    if let (Value::Object(m), Value::Object(d)) = (&mut *v, defaults) {
        for (k, dv) in d {
            match m.get_mut(k) {
                None => {
                    m.insert(k.clone(), dv.clone());
                }
                Some(inner) => fill_defaults(inner, dv),
            }
        }
        if let Some(Value::Array(attempts)) = m.get_mut("attempts") {
            let d = serde_json::to_value(crate::usage::Attempt::default()).expect("default serialises");
            for a in attempts {
                fill_defaults(a, &d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{Attempt, Tokens, UsageSource};

    pub(crate) fn sample(time_ms: i64, fp: &str, input: u64, cost: Option<f64>) -> RequestRecord {
        RequestRecord {
            id: crate::usage::new_id(time_ms),
            time_ms,
            gateway_key: Some("team".into()),
            client_protocol: Default::default(),
            path: "/v1/chat/completions".into(),
            requested_model: "gpt-4o".into(),
            upstream_model: Some("openai/gpt-4o".into()),
            channel: Some("main".into()),
            endpoint: Some("default".into()),
            token_key: Some(format!("name-{fp}").into()),
            token_fp: Some(fp.into()),
            strategy: Some(Default::default()),
            attempts: vec![Attempt {
                channel: "main".into(),
                endpoint: "default".into(),
                token_key: format!("name-{fp}").into(),
                token_fp: fp.into(),
                model: "openai/gpt-4o".into(),
                status: Some(200),
                outcome: crate::upstream::FailureClass::Ok,
                ms: 12,
            }],
            status: 200,
            outcome: Outcome::Ok,
            stream: false,
            ttfb_ms: Some(5),
            total_ms: 12,
            tokens: Tokens { input, cache_read: 3, cache_write: 1, output: 7, reasoning: 2, cache_write_1h: 0 },
            usage_source: UsageSource::Upstream,
            cost_usd: cost,
            translated: None,
            error: None,
            session: Some("0123456789abcdef".into()),
            affinity: Some(crate::live::affinity::Outcome::Hit),
        }
    }

    #[test]
    fn record_round_trips() {
        let r = sample(1_700_000_000_000, "fp:0011223344556677", 10, Some(0.25));
        let b = encode_record(&r);
        assert_eq!(b[0], 2);
        assert_eq!(decode_record(&b).unwrap(), r);
        // Version 1 (JSON), as earlier releases wrote it, still reads.
        let mut v1 = vec![1u8];
        serde_json::to_writer(&mut v1, &r).unwrap();
        assert_eq!(decode_record(&v1).unwrap(), r);
        assert!(b.len() * 2 < v1.len(), "binary {} bytes, JSON {}", b.len(), v1.len());
        // A cut record is an error, never a wrong record.
        for cut in 1..b.len() {
            assert!(decode_record(&b[..cut]).is_err(), "cut at {cut} decoded");
        }
    }

    /// A v1 record as written by the first release (before `translated` and `error` existed) must stay readable.
    #[test]
    fn old_v1_record_without_newer_fields_decodes() {
        let json = r#"{"id":1,"time_ms":86400000,"gateway_key":null,"client_protocol":"anthropic","path":"/v1/messages","requested_model":"claude","upstream_model":"claude-x","channel":"a","endpoint":"default","token_key":"k1","token_fp":"fp:00","strategy":"priority","attempts":[{"channel":"a","endpoint":"default","token_key":"k1","token_fp":"fp:00","model":"claude-x","status":200,"outcome":"ok"}],"status":200,"outcome":"ok","stream":true,"ttfb_ms":3,"total_ms":9,"tokens":{"input":5,"cache_read":0,"cache_write":0,"output":6,"reasoning":0},"usage_source":"upstream","cost_usd":null}"#;
        let mut b = vec![1u8];
        b.extend_from_slice(json.as_bytes());
        let r = decode_record(&b).unwrap();
        assert_eq!(r.token_key.as_deref(), Some("k1"));
        assert_eq!(r.tokens.output, 6);
        assert_eq!(r.translated, None);
        assert_eq!(r.error, None);
        // Affinity's fields, added later, read as absent.
        assert_eq!((r.session, r.affinity, r.tokens.cache_write_1h), (None, None, 0));
        assert_eq!(r.attempts[0].ms, 0);
    }

    #[test]
    fn newer_or_broken_encodings_are_errors_not_guesses() {
        assert_eq!(decode_record(&[9, b'{', b'}']), Err(DecodeError::NewerVersion(9)));
        assert!(matches!(decode_record(&[1, b'x']), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode_record(&[]), Err(DecodeError::Malformed(_))));
        assert_eq!(Counters::decode(&[2; 81]), Err(DecodeError::NewerVersion(2)));
        assert!(matches!(Counters::decode(&[1; 5]), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn counters_round_trip_and_sum() {
        let a = Counters::of(&sample(0, "fp:a", 10, Some(0.5)));
        let b = Counters::of(&sample(0, "fp:a", 20, None));
        let mut sum = a;
        sum.add(&b);
        assert_eq!(sum.requests, 2);
        assert_eq!(sum.input, 30);
        assert_eq!(sum.cache_read, 6);
        assert_eq!(sum.output, 14);
        assert_eq!(sum.reasoning, 4);
        assert_eq!(sum.unknown_cost, 1);
        assert!((sum.cost_usd - 0.5).abs() < 1e-12);
        assert_eq!(Counters::decode(&sum.encode()).unwrap(), sum);
    }

    #[test]
    fn zero_token_unknown_price_is_not_unknown_cost_and_errors_count() {
        let mut r = sample(0, "fp:a", 0, None);
        r.tokens = Tokens::default();
        r.outcome = Outcome::UpstreamError;
        let c = Counters::of(&r);
        assert_eq!((c.unknown_cost, c.errors), (0, 1));
        r.outcome = Outcome::ClientClosed;
        assert_eq!(Counters::of(&r).errors, 0);
    }

    #[test]
    fn day_numbers_are_utc() {
        assert_eq!(day_of_ms(0), 0);
        assert_eq!(day_of_ms(86_399_999), 0);
        assert_eq!(day_of_ms(86_400_000), 1);
    }
}
