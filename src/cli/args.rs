//! Flags several commands share, so they read the same everywhere: the duration parser of every `--timeout`,
//! the strategy parser of every `--strategy`, the `--since` / `--until` / `--utc` time range and the
//! `--channel` / `--token` / `--model` / `--key` / `--session` record filter (flattened into each command's
//! `Args`).
//!
//! Owns only parsing; the grammar of a time is [`report::parse_when`], of a duration [`Dur::parse`]. Must not
//! open the store or print.

use crate::config::{Dur, Strategy};
use crate::error::UserError;
use crate::report::{self, Filters};

/// The value parser of every duration flag (`--timeout 500ms`, `15s`, `1m`): a [`Dur`] above zero.
pub fn duration(s: &str) -> Result<Dur, String> {
    Dur::parse(s).filter(|d| !d.0.is_zero()).ok_or_else(|| format!("`{s}` is not a duration (use e.g. 500ms, 15s, 1m)"))
}

/// The value parser of every `--strategy`.
pub fn strategy(s: &str) -> Result<Strategy, String> {
    Strategy::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown strategy `{s}`; use one of {}", names.join(", "))
    })
}

/// `--since` / `--until` / `--utc`: one grammar for every command that reads a time range.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TimeRange {
    /// From this time on: YYYY-MM-DD, today, yesterday, a span back from now (7d, 24h, 30m) or RFC 3339.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Before this time, in the same forms (a date includes that whole day).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Dates, days and times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
}

impl TimeRange {
    /// `(since, until)` as unix ms; `None` where the flag is not given.
    pub fn resolve(&self, now_ms: i64) -> Result<(Option<i64>, Option<i64>), UserError> {
        let at = |s: &Option<String>, end: bool| s.as_deref().map(|s| report::parse_when(s, self.utc, end, now_ms));
        Ok((at(&self.since, false).transpose()?, at(&self.until, true).transpose()?))
    }
}

/// A time for a table: `2025-06-01 14:03:59`, local or (with `--utc`) UTC.
pub fn time(ms: i64, utc: bool) -> String {
    use chrono::{DateTime, Local, TimeZone, Utc};
    let shown = if utc {
        DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
    } else {
        Local.timestamp_millis_opt(ms).single().map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
    };
    shown.unwrap_or_else(|| "-".into())
}

/// `--channel` / `--token` / `--model` / `--key` / `--session`: which request records a report looks at.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RecordFilter {
    /// Only this channel.
    #[arg(long, value_name = "NAME")]
    pub channel: Option<String>,
    /// Only this upstream token (its name or fp:...).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Only this model (requested or upstream).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Only this gateway key.
    #[arg(long, value_name = "NAME")]
    pub key: Option<String>,
    /// Only this conversation: its session hash (16 hex digits, as listed) or its raw id (an X-Router-Session
    /// value, a Claude Code session id, a prompt_cache_key), which is hashed the same way.
    #[arg(long, value_name = "SESSION")]
    pub session: Option<String>,
}

impl From<RecordFilter> for Filters {
    fn from(f: RecordFilter) -> Filters {
        let session = f.session.as_deref().map(crate::protocol::session::filter_value);
        Filters { channel: f.channel, token: f.token, model: f.model, key: f.key, session }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_positive() {
        assert_eq!(duration("250ms"), Ok(Dur(std::time::Duration::from_millis(250))));
        assert_eq!(duration("1m"), Ok(Dur::secs(60)));
        assert!(duration("0s").unwrap_err().contains("not a duration"));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn ranges_resolve_both_ends() {
        const DAY: i64 = 86_400_000;
        let now = 20_000 * DAY + 3_600_000;
        let r = TimeRange { since: Some("today".into()), until: Some("today".into()), utc: true };
        assert_eq!(r.resolve(now).unwrap(), (Some(20_000 * DAY), Some(20_001 * DAY)));
        assert_eq!(TimeRange { utc: true, ..Default::default() }.resolve(now).unwrap(), (None, None));
        let bad = TimeRange { until: Some("last tuesday".into()), ..Default::default() };
        assert!(bad.resolve(now).unwrap_err().to_string().contains("not a time"));
    }
}
