//! Gateway-key values and rules that the configuration's keys (`server.keys`) and the store's keys (`keys`)
//! share: the limits a key carries ([`Limits`], [`Budget`], [`Period`]), its hash, the time zone of budgets and
//! expiry dates, and the checks of each. Here because `config` validates YAML keys with them; `keys` and
//! `live::limits` re-export them.
//!
//! Must not: know about the store, admission state or secrets beyond their hash.

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use super::GatewayKeyConfig;

/// What a key may do. `None` everywhere: no limits, and admission costs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens (input + output, as recorded) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests at the same time (a stream counts until it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.max_parallel.is_none() && self.budget.is_none()
    }
}

/// Spend allowed per period, USD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub usd: f64,
    pub per: Period,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    /// Monday to Sunday.
    Week,
    Month,
    /// Never resets.
    #[default]
    Total,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Total => "total",
        }
    }
}

/// A `sha256:<64 hex digits>` hash line as its 32 bytes.
pub fn parse_hash(h: &str) -> Option<[u8; 32]> {
    hex::decode(h.strip_prefix("sha256:")?).ok()?.try_into().ok()
}

/// The time zone of `server.timezone` (UTC when absent).
pub fn timezone(name: Option<&str>) -> Result<TimeZone, String> {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => Ok(TimeZone::UTC),
        Some(n) if n.eq_ignore_ascii_case("utc") => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|_| format!("`{n}` is not a time zone this system knows")),
    }
}

/// Limits a key may carry: every number positive, a budget finite.
pub fn check_limits(l: &Limits) -> Result<(), (&'static str, String)> {
    if l.rpm == Some(0) {
        return Err(("rpm", "must be at least 1 (leave it out for no limit)".into()));
    }
    if l.tpm == Some(0) {
        return Err(("tpm", "must be at least 1 (leave it out for no limit)".into()));
    }
    if l.max_parallel == Some(0) {
        return Err(("max_parallel", "must be at least 1 (leave it out for no limit)".into()));
    }
    if let Some(b) = l.budget
        && !(b.usd.is_finite() && b.usd > 0.0)
    {
        return Err(("budget", format!("`{}` is not a positive amount of USD", b.usd)));
    }
    Ok(())
}

/// When a key stops working, from `never`, a date (valid through that day in `tz`), an RFC 3339 time, or —
/// when `durations` — a duration from now (`30d`, `12h`, `90m`, `2w`). `Ok(None)`: never.
pub fn parse_expiry(s: &str, now_ms: i64, tz: &TimeZone, durations: bool) -> Result<Option<i64>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("never") || s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(Some(t.as_millisecond()));
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        let end = d.tomorrow().and_then(|t| t.to_zoned(tz.clone())).map_err(|e| format!("`{s}`: {e}"))?;
        return Ok(Some(end.timestamp().as_millisecond()));
    }
    if durations && let Some(ms) = parse_duration_ms(s) {
        return Ok(Some(now_ms.saturating_add(ms)));
    }
    let what = if durations { "a date (2026-12-31), an RFC 3339 time or a duration (30d, 12h)" } else { "a date" };
    Err(format!("`{s}` is not {what}"))
}

fn parse_duration_ms(s: &str) -> Option<i64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok().filter(|n| *n > 0)?;
    let unit_ms = match unit {
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// The limits and expiry of a YAML key; on error `(field, message, hint)`.
pub fn yaml_limits(k: &GatewayKeyConfig, tz: &TimeZone) -> Result<(Limits, Option<i64>), (String, String, String)> {
    let budget = match (k.budget, k.per) {
        (Some(usd), Some(per)) => Some(Budget { usd, per }),
        (Some(_), None) => {
            return Err(("budget".into(), "a budget needs its period".into(), "add per: day|week|month|total".into()));
        }
        (None, Some(_)) => return Err(("per".into(), "`per` without a budget".into(), "add budget: <USD>".into())),
        (None, None) => None,
    };
    let limits = Limits { rpm: k.rpm, tpm: k.tpm, max_parallel: k.max_parallel, budget };
    check_limits(&limits).map_err(|(f, m)| (f.to_string(), m, "a positive number".to_string()))?;
    let expires = match &k.expires {
        None => None,
        Some(e) => parse_expiry(e, 0, tz, false)
            .map_err(|m| ("expires".to_string(), m, "write a date (2026-12-31) or an RFC 3339 time".to_string()))?,
    };
    Ok((limits, expires))
}
