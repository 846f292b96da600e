//! Report queries over the store: usage totals grouped by day / channel / endpoint / token / model / gateway
//! key, recent request records, one record by id prefix, and the time expressions the CLI accepts.
//!
//! Owns what a report contains and its JSON views (`usage_json`, `record_json`: what `--json`, the admin API and
//! the event stream give), not how it is printed for people (`cli::usage`, `cli::requests`). Each query is a store
//! [`Op`], so it runs identically in this process or in the server that holds the store (`control` registers
//! them). A usage range is answered exactly from the daily rollups for its whole UTC days, the hourly rollups
//! for its other whole hours and the request records only for the partial hours at its edges (sessions only
//! from records); when part of it can be answered neither way (records pruned, no hourly rollups yet) the whole
//! range falls back to the daily rollups (whole UTC days). Must not write the store.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Local, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{UserError, user};
use crate::store::tables::{self, Counters, DailyKey};
use crate::store::{Op, Store};
use crate::usage::RequestRecord;

/// What a usage report can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Day,
    /// The hour (`YYYY-MM-DD HH:00`); when a range falls back to the daily rollups, the day's first hour.
    Hour,
    Channel,
    Endpoint,
    /// The upstream key, by fingerprint (renaming its endpoint or channel keeps its history together).
    Token,
    Model,
    /// The gateway key clients used.
    Key,
    /// The conversation (session hash); needs request records, not daily rollups.
    Session,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Day => "day",
            GroupBy::Hour => "hour",
            GroupBy::Channel => "channel",
            GroupBy::Endpoint => "endpoint",
            GroupBy::Token => "token",
            GroupBy::Model => "model",
            GroupBy::Key => "key",
            GroupBy::Session => "session",
        }
    }
}

/// How `--top` / `--sort` order report rows (largest first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    /// All input (uncached, read, written) plus output.
    #[default]
    Tokens,
    /// Cache reads.
    CacheRead,
    Cost,
    Requests,
}

impl SortBy {
    fn key(self, c: &Counters) -> f64 {
        match self {
            SortBy::Tokens => (c.input + c.cache_read + c.cache_write + c.output) as f64,
            SortBy::CacheRead => c.cache_read as f64,
            SortBy::Cost => c.cost_usd,
            SortBy::Requests => c.requests as f64,
        }
    }
}

/// Which records a report looks at. Every filter is an exact match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    pub channel: Option<String>,
    /// A token_key name or a fingerprint (`fp:...`).
    pub token: Option<String>,
    /// Upstream model when one was picked, else the requested model (also matches the requested model for
    /// request records).
    pub model: Option<String>,
    /// Gateway key name.
    pub key: Option<String>,
    /// Session hash (16 hex digits); request records only.
    #[serde(default)]
    pub session: Option<String>,
}

fn eq(want: &Option<String>, have: &str) -> bool {
    want.as_deref().is_none_or(|w| w == have)
}

impl Filters {
    pub fn matches_record(&self, r: &RequestRecord) -> bool {
        eq(&self.channel, r.channel.as_deref().unwrap_or(""))
            && self
                .token
                .as_deref()
                .is_none_or(|t| r.token_key.as_deref() == Some(t) || r.token_fp.as_deref() == Some(t))
            && eq(&self.model, tables::record_model(r))
            && eq(&self.key, r.gateway_key.as_deref().unwrap_or(""))
            && eq(&self.session, r.session.as_deref().unwrap_or(""))
    }

    pub fn matches_daily(&self, k: &DailyKey) -> bool {
        self.matches_daily_parts(&k.channel, &k.token_fp, &k.token_key, &k.model, &k.gateway_key)
    }

    /// A rollup row (daily or hourly) by its parts.
    pub fn matches_daily_parts(&self, channel: &str, token_fp: &str, token_key: &str, model: &str, key: &str) -> bool {
        eq(&self.channel, channel)
            && self.token.as_deref().is_none_or(|t| token_key == t || token_fp == t)
            && eq(&self.model, model)
            && eq(&self.key, key)
            && self.session.is_none()
    }
}

/// `router usage`: totals per group over a time range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageQuery {
    /// Unix ms, inclusive.
    pub since_ms: Option<i64>,
    /// Unix ms, exclusive.
    pub until_ms: Option<i64>,
    pub group_by: Vec<GroupBy>,
    pub filters: Filters,
    /// Days are UTC days (else local days, when exact records are read).
    pub utc: bool,
    /// Only the first N rows in `sort` order.
    #[serde(default)]
    pub top: Option<usize>,
    /// Rows largest first by this (with `top` and no `sort`: by tokens); none: in group order.
    #[serde(default)]
    pub sort: Option<SortBy>,
}

/// Where a report's numbers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Exact request records.
    Requests,
    /// Daily rollups (the range reaches back past retention): whole UTC days.
    Daily,
    /// Exact: daily rollups for whole UTC days, hourly rollups for whole hours, request records for the rest.
    Rollups,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// One value per `group_by` entry, in order (`-` when absent).
    pub group: Vec<String>,
    /// With `group_by token`: every token_key name seen for this fingerprint.
    pub token_keys: Vec<String>,
    pub counters: Counters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub source: Source,
    pub group_by: Vec<GroupBy>,
    pub rows: Vec<UsageRow>,
    pub totals: Counters,
}

/// The time zone day and hour labels are in.
#[derive(Debug, Clone, Copy)]
enum Zone {
    Utc,
    Local,
    /// A fixed offset (tests: zones whose hours are not UTC hours).
    #[cfg_attr(not(test), allow(dead_code))]
    Fixed(chrono::FixedOffset),
}

impl Zone {
    fn of(utc: bool) -> Zone {
        if utc { Zone::Utc } else { Zone::Local }
    }

    fn label(self, ms: i64, fmt: &str) -> String {
        let f = |t: Option<String>| t.unwrap_or_default();
        match self {
            Zone::Utc => f(DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.format(fmt).to_string())),
            Zone::Local => f(Local.timestamp_millis_opt(ms).single().map(|t| t.format(fmt).to_string())),
            Zone::Fixed(z) => f(z.timestamp_millis_opt(ms).single().map(|t| t.format(fmt).to_string())),
        }
    }

    fn day(self, ms: i64) -> String {
        self.label(ms, "%Y-%m-%d")
    }

    fn hour(self, ms: i64) -> String {
        self.label(ms, "%Y-%m-%d %H:00")
    }
}

fn utc_day_label(day: u32) -> String {
    Zone::Utc.day(day as i64 * DAY_MS)
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.to_string() }
}

#[derive(Default)]
struct Acc {
    groups: BTreeMap<Vec<String>, (Counters, BTreeSet<String>)>,
    totals: Counters,
}

impl Acc {
    fn add(&mut self, group: Vec<String>, token_key: &str, c: &Counters) {
        let e = self.groups.entry(group).or_default();
        e.0.add(c);
        if !token_key.is_empty() {
            e.1.insert(token_key.to_string());
        }
        self.totals.add(c);
    }

    fn finish(self, source: Source, q: &UsageQuery) -> UsageReport {
        let group_by = q.group_by.clone();
        let with_names = group_by.contains(&GroupBy::Token);
        let mut rows: Vec<UsageRow> = self
            .groups
            .into_iter()
            .map(|(group, (counters, names))| UsageRow {
                group,
                token_keys: if with_names { names.into_iter().collect() } else { Vec::new() },
                counters,
            })
            .collect();
        if let Some(by) = q.sort.or(q.top.map(|_| SortBy::Tokens)) {
            rows.sort_by(|a, b| {
                by.key(&b.counters).total_cmp(&by.key(&a.counters)).then_with(|| a.group.cmp(&b.group))
            });
        }
        if let Some(n) = q.top {
            rows.truncate(n);
        }
        UsageReport { source, group_by, rows, totals: self.totals }
    }
}

const DAY_MS: i64 = 86_400_000;

/// Request-id bounds of a time range.
fn id_range(since_ms: Option<i64>, until_ms: Option<i64>) -> std::ops::Range<u128> {
    let lo = since_ms.map(|s| (s.max(0) as u128) << 64).unwrap_or(0);
    let hi = until_ms.map(|u| (u.max(0) as u128) << 64).unwrap_or(u128::MAX);
    lo..hi.max(lo)
}

const HOUR_MS: i64 = 3_600_000;

pub fn usage(store: &Store, q: &UsageQuery) -> anyhow::Result<UsageReport> {
    usage_in(store, q, Zone::of(q.utc))
}

/// Which stretches of a usage range come from where (see the module doc).
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Request records of these unix-ms ranges (`[lo, hi)`).
    records: Vec<(i64, i64)>,
    /// Hourly rollups of these hour ranges (inclusive).
    hours: Vec<(u32, u32)>,
    /// Daily rollups of these day ranges (inclusive).
    days: Vec<(u32, u32)>,
}

/// Splits `[since, until)` into partial hours at the edges (records), whole UTC days (when `days_ok`) and the
/// whole hours between (hourly rollups, those from `hourly_from` on; earlier ones from records).
fn plan(since: Option<i64>, until: Option<i64>, days_ok: bool, hourly_from: i64) -> Plan {
    let mut p = Plan::default();
    let lo = since.unwrap_or(0).max(0);
    let hi = until.map(|u| u.max(lo));
    // Whole hours [h_lo, h_hi); an open range runs to the last hour there is.
    let h_lo = (lo + HOUR_MS - 1).div_euclid(HOUR_MS);
    let h_hi = hi.map(|h| h.div_euclid(HOUR_MS)).unwrap_or(u32::MAX as i64 + 1);
    if h_lo >= h_hi {
        if hi != Some(lo) {
            p.records.push((lo, hi.unwrap_or(i64::MAX)));
        }
        return p;
    }
    if lo < h_lo * HOUR_MS {
        p.records.push((lo, h_lo * HOUR_MS));
    }
    if let Some(hi) = hi.filter(|&hi| hi > h_hi * HOUR_MS) {
        p.records.push((h_hi * HOUR_MS, hi));
    }
    let hours = |a: i64, b: i64, p: &mut Plan| {
        // Hours before the hourly rollups begin (a store migrated after pruning) come from records.
        let first_hourly = hourly_from.div_euclid(HOUR_MS).clamp(a, b);
        if a < first_hourly {
            p.records.push((a * HOUR_MS, first_hourly * HOUR_MS));
        }
        if first_hourly < b {
            p.hours.push((first_hourly as u32, (b - 1) as u32));
        }
    };
    let (d_lo, d_hi) = ((h_lo + 23).div_euclid(24), h_hi.div_euclid(24));
    if days_ok && d_lo < d_hi {
        hours(h_lo, d_lo * 24, &mut p);
        p.days.push((d_lo as u32, (d_hi - 1) as u32));
        hours(d_hi * 24, h_hi, &mut p);
    } else {
        hours(h_lo, h_hi, &mut p);
    }
    p.records.retain(|(a, b)| a < b);
    p.hours.retain(|(a, b)| a <= b);
    p.records.sort();
    p
}

fn usage_in(store: &Store, q: &UsageQuery, zone: Zone) -> anyhow::Result<UsageReport> {
    let pruned = store.pruned_before()?;
    let retained = |since: Option<i64>| pruned == 0 || since.is_some_and(|s| s >= pruned);
    let sessions = q.group_by.contains(&GroupBy::Session) || q.filters.session.is_some();
    if sessions {
        // Sessions are only in the records.
        if !retained(q.since_ms) {
            return Err(user("sessions are kept in request records only, and this range reaches past their retention")
                .with_hint("give a --since within store.retention_days")
                .into());
        }
        let mut acc = Acc::default();
        scan_records(store, q, zone, &mut acc, id_range(q.since_ms, q.until_ms))?;
        return Ok(acc.finish(Source::Requests, q));
    }
    // Daily rollups group by UTC day only; hourly ones by hours, whose labels must be those of every instant
    // in the hour (a zone offset of whole hours).
    let timed = q.group_by.contains(&GroupBy::Day) || q.group_by.contains(&GroupBy::Hour);
    let days_ok = !q.group_by.contains(&GroupBy::Hour) && (!timed || matches!(zone, Zone::Utc));
    let p = plan(q.since_ms, q.until_ms, days_ok, store.hourly_from()?);
    let exact = p.records.iter().all(|&(lo, _)| retained(Some(lo)));
    if exact {
        let mut acc = Acc::default();
        for &(first, last) in &p.days {
            scan_days(store, q, &mut acc, first, last)?;
        }
        // Hours whose labels differ inside the hour (a zone with a half-hour offset) are read from records.
        let mut split = Vec::new();
        for &(first, last) in &p.hours {
            store.scan_hourly(first, last, |k, c| {
                let start = k.hour as i64 * HOUR_MS;
                let whole = q.group_by.iter().all(|g| match g {
                    GroupBy::Day => zone.day(start) == zone.day(start + HOUR_MS - 1),
                    GroupBy::Hour => zone.hour(start) == zone.hour(start + HOUR_MS - 1),
                    _ => true,
                });
                if !whole {
                    if split.last() != Some(&k.hour) {
                        split.push(k.hour);
                    }
                    return;
                }
                if q.filters.matches_daily_parts(&k.channel, &k.token_fp, &k.token_key, &k.model, &k.gateway_key) {
                    let group = q
                        .group_by
                        .iter()
                        .map(|g| match g {
                            GroupBy::Day => zone.day(start),
                            GroupBy::Hour => zone.hour(start),
                            g => rollup_label(*g, &k.channel, &k.endpoint, &k.token_fp, &k.model, &k.gateway_key),
                        })
                        .collect();
                    acc.add(group, &k.token_key, &c);
                }
            })?;
        }
        let mut records = p.records.clone();
        records.extend(split.iter().map(|&h| (h as i64 * HOUR_MS, (h as i64 + 1) * HOUR_MS)));
        if records.iter().all(|&(lo, _)| retained(Some(lo))) {
            for (lo, hi) in records {
                scan_records(store, q, zone, &mut acc, id_range(Some(lo), Some(hi)))?;
            }
            let source = if p.days.is_empty() && p.hours.is_empty() { Source::Requests } else { Source::Rollups };
            return Ok(acc.finish(source, q));
        }
    }
    // Part of the range is in neither the records nor an exact rollup: whole UTC days from the daily rollups.
    let first = q.since_ms.map(tables::day_of_ms).unwrap_or(0);
    let last = q.until_ms.map(|u| tables::day_of_ms(u - 1)).unwrap_or(u32::MAX);
    let mut acc = Acc::default();
    scan_days(store, q, &mut acc, first, last)?;
    Ok(acc.finish(Source::Daily, q))
}

/// A rollup row's label for the parts that are not time.
fn rollup_label(g: GroupBy, channel: &str, endpoint: &str, token_fp: &str, model: &str, key: &str) -> String {
    match g {
        GroupBy::Channel => or_dash(channel),
        GroupBy::Endpoint if channel.is_empty() || endpoint.is_empty() => "-".into(),
        GroupBy::Endpoint => format!("{channel}/{endpoint}"),
        GroupBy::Token => or_dash(token_fp),
        GroupBy::Model => or_dash(model),
        GroupBy::Key => or_dash(key),
        GroupBy::Day | GroupBy::Hour | GroupBy::Session => unreachable!("time and sessions are labelled by callers"),
    }
}

fn scan_days(store: &Store, q: &UsageQuery, acc: &mut Acc, first: u32, last: u32) -> anyhow::Result<()> {
    store.scan_daily(first, last, |k, c| {
        if q.filters.matches_daily(&k) {
            let group = q
                .group_by
                .iter()
                .map(|g| match g {
                    GroupBy::Day => utc_day_label(k.day),
                    GroupBy::Hour => Zone::Utc.hour(k.day as i64 * DAY_MS),
                    g => rollup_label(*g, &k.channel, &k.endpoint, &k.token_fp, &k.model, &k.gateway_key),
                })
                .collect();
            acc.add(group, &k.token_key, &c);
        }
    })?;
    Ok(())
}

fn scan_records(
    store: &Store,
    q: &UsageQuery,
    zone: Zone,
    acc: &mut Acc,
    range: std::ops::Range<u128>,
) -> anyhow::Result<()> {
    store.scan_requests(range, false, |r| {
        if q.filters.matches_record(&r) {
            let group = q
                .group_by
                .iter()
                .map(|g| match g {
                    GroupBy::Day => zone.day(r.time_ms),
                    GroupBy::Hour => zone.hour(r.time_ms),
                    GroupBy::Channel => or_dash(r.channel.as_deref().unwrap_or("")),
                    GroupBy::Endpoint => match (r.channel.as_deref(), r.endpoint.as_deref()) {
                        (Some(c), Some(e)) if !c.is_empty() && !e.is_empty() => format!("{c}/{e}"),
                        _ => "-".into(),
                    },
                    GroupBy::Token => or_dash(r.token_fp.as_deref().unwrap_or("")),
                    GroupBy::Model => or_dash(tables::record_model(&r)),
                    GroupBy::Key => or_dash(r.gateway_key.as_deref().unwrap_or("")),
                    GroupBy::Session => or_dash(r.session.as_deref().unwrap_or("")),
                })
                .collect();
            acc.add(group, r.token_key.as_deref().unwrap_or(""), &Counters::of(&r));
        }
        true
    })?;
    Ok(())
}

impl Op for UsageQuery {
    const NAME: &'static str = "usage_report";
    const READS_RECORDS: bool = true;
    type Reply = UsageReport;
    fn run(self, store: &Store) -> anyhow::Result<UsageReport> {
        usage(store, &self)
    }
}

/// `router requests`: the most recent records, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestsQuery {
    pub limit: usize,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub filters: Filters,
    /// Paging cursor: only records older than this request id (32 hex digits, the last one of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

/// Records on the wire: each as its JSON text (ids are u128, which JSON numbers in `serde_json::Value` cannot
/// hold).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordList {
    #[serde(with = "crate::usage::records_as_text")]
    pub records: Vec<RequestRecord>,
}

impl Op for RequestsQuery {
    const NAME: &'static str = "requests_list";
    const READS_RECORDS: bool = true;
    type Reply = RecordList;
    fn run(self, store: &Store) -> anyhow::Result<RecordList> {
        let mut records = Vec::new();
        if self.limit == 0 {
            return Ok(RecordList { records });
        }
        let rest = Filters { model: None, ..self.filters.clone() };
        let mut range = id_range(self.since_ms, self.until_ms);
        if let Some(c) = &self.before {
            let id = parse_cursor(c)?;
            range.end = range.end.min(id);
            range.start = range.start.min(range.end);
        }
        store.scan_requests(range, true, |r| {
            let m = &self.filters.model;
            let model_ok = m.as_deref().is_none_or(|m| m == tables::record_model(&r) || m == r.requested_model);
            if model_ok && rest.matches_record(&r) {
                records.push(r);
            }
            records.len() < self.limit
        })?;
        Ok(RecordList { records })
    }
}

/// A paging cursor: a whole request id.
fn parse_cursor(c: &str) -> anyhow::Result<u128> {
    let c = c.trim();
    match u128::from_str_radix(c, 16) {
        Ok(id) if c.len() == 32 => Ok(id),
        _ => Err(user(format!("`{c}` is not a cursor"))
            .with_hint("pass the `next_cursor` of the previous page (a request id, 32 hex digits)")
            .into()),
    }
}

/// `router requests show ID`: one record by a unique prefix of its 32-hex id, or a unique suffix (the random
/// end `router requests` shows; the start of an id is its time, shared by requests of the same millisecond).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShowRequest {
    pub id: String,
}

impl Op for ShowRequest {
    const NAME: &'static str = "request_show";
    const READS_RECORDS: bool = true;
    type Reply = RecordList;
    fn run(self, store: &Store) -> anyhow::Result<RecordList> {
        let p = self.id.trim().to_ascii_lowercase();
        if p.is_empty() || p.len() > 32 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(user(format!("`{}` is not a request id", self.id))
                .with_hint("give the 32 hex digits `router requests` shows, or a unique prefix of them")
                .into());
        }
        let lo = u128::from_str_radix(&format!("{p:0<32}"), 16)?;
        let hi = u128::from_str_radix(&format!("{p:f<32}"), 16)?;
        let mut found = Vec::new();
        store.scan_requests(lo..hi.saturating_add(1).max(hi), false, |r| {
            found.push(r);
            found.len() < 2
        })?;
        if found.len() != 1 && p.len() >= 6 {
            let mut by_suffix = Vec::new();
            store.scan_requests(0..u128::MAX, true, |r| {
                if crate::usage::format_id(r.id).ends_with(&p) {
                    by_suffix.push(r);
                }
                by_suffix.len() < 2
            })?;
            if by_suffix.len() == 1 || found.is_empty() {
                found = by_suffix;
            }
        }
        match found.len() {
            0 => Err(user(format!("no request with id {p}"))
                .with_hint("`router requests` lists recent ids; records older than store.retention_days are pruned")
                .into()),
            1 => Ok(RecordList { records: found }),
            _ => Err(user(format!("`{p}` matches more than one request")).with_hint("give more digits").into()),
        }
    }
}

/// Parses a `--since` / `--until` value into unix ms (the one time grammar of the CLI): `YYYY-MM-DD`, `today`,
/// `yesterday`, `now`, a span back from now (`7d`, `24h`, `30m`, any [`Dur`](crate::config::Dur) with a unit),
/// or an RFC 3339 time. Dates are local midnight (UTC with `utc`); as an `end` (for `--until`) a date means the
/// end of that day.
pub fn parse_when(s: &str, utc: bool, end: bool, now_ms: i64) -> Result<i64, UserError> {
    let s = s.trim();
    let bad = || {
        user(format!("`{s}` is not a time"))
            .with_hint("use YYYY-MM-DD, today, yesterday, a span back from now like 7d / 24h / 30m, or RFC 3339")
    };
    let today = if utc {
        DateTime::<Utc>::from_timestamp_millis(now_ms).map(|t| t.date_naive())
    } else {
        Local.timestamp_millis_opt(now_ms).single().map(|t| t.date_naive())
    }
    .ok_or_else(bad)?;
    let day = |d: NaiveDate| -> Result<i64, UserError> {
        let d = if end { d.succ_opt().ok_or_else(bad)? } else { d };
        let midnight = d.and_hms_opt(0, 0, 0).ok_or_else(bad)?;
        let ms = if utc {
            Utc.from_utc_datetime(&midnight).timestamp_millis()
        } else {
            Local.from_local_datetime(&midnight).earliest().ok_or_else(bad)?.timestamp_millis()
        };
        Ok(ms)
    };
    match s {
        "today" => return day(today),
        "yesterday" => return day(today.pred_opt().ok_or_else(bad)?),
        "now" => return Ok(now_ms),
        _ => {}
    }
    // A span back from now, in the duration grammar of the whole CLI (`7d`, `24h`, `30m`, `90s`); a bare
    // number is not a time.
    if s.ends_with(|c: char| c.is_ascii_alphabetic())
        && let Some(span) = crate::config::Dur::parse(s)
    {
        return Ok(now_ms - span.0.as_millis() as i64);
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let _ = d.year();
        return day(d);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    Err(bad())
}

/// A cost for people: `-` when unknown (never 0), `1.23+?` when some requests had unknown prices.
pub fn format_cost(c: &Counters) -> String {
    if c.unknown_cost > 0 && c.cost_usd == 0.0 {
        return "-".into();
    }
    let v = format_usd(c.cost_usd);
    if c.unknown_cost > 0 { format!("{v}+?") } else { v }
}

pub fn format_usd(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else if v.abs() >= 0.01 {
        format!("{v:.4}")
    } else {
        format!("{v:.6}")
    }
}

/// The cost as JSON: `null` when unknown.
pub fn cost_json(c: &Counters) -> Option<f64> {
    (c.unknown_cost == 0 || c.cost_usd != 0.0).then_some(c.cost_usd)
}

/// Cache reads over all input tokens (uncached, read, written); `None` without input.
pub fn hit_rate(c: &Counters) -> Option<f64> {
    let all = c.input + c.cache_read + c.cache_write;
    (all > 0).then(|| c.cache_read as f64 / all as f64)
}

fn counters_json(c: &Counters, m: &mut Map<String, Value>) {
    m.insert("requests".into(), json!(c.requests));
    m.insert("errors".into(), json!(c.errors));
    m.insert("input".into(), json!(c.input));
    m.insert("cache_read".into(), json!(c.cache_read));
    m.insert("cache_write".into(), json!(c.cache_write));
    m.insert("output".into(), json!(c.output));
    m.insert("reasoning".into(), json!(c.reasoning));
    m.insert("cache_hit_rate".into(), json!(hit_rate(c)));
    m.insert("cost_usd".into(), json!(cost_json(c)));
    m.insert("unknown_cost_requests".into(), json!(c.unknown_cost));
    m.insert("estimated_requests".into(), json!(c.estimated));
}

/// The usage report as `router usage --json` and `/admin/v1/usage` give it:
/// `{source, group_by, rows: [{<dimension>: value, ..., token_keys?, counters...}], totals: {...}}`.
pub fn usage_json(r: &UsageReport) -> Value {
    let rows: Vec<Value> = r
        .rows
        .iter()
        .map(|row| {
            let mut m = Map::new();
            for (g, v) in r.group_by.iter().zip(&row.group) {
                m.insert(g.as_str().into(), json!(v));
            }
            if r.group_by.contains(&GroupBy::Token) {
                m.insert("token_keys".into(), json!(row.token_keys));
            }
            counters_json(&row.counters, &mut m);
            Value::Object(m)
        })
        .collect();
    let mut totals = Map::new();
    counters_json(&r.totals, &mut totals);
    json!({
        "source": r.source,
        "group_by": r.group_by,
        "rows": rows,
        "totals": totals,
    })
}

/// A record for scripts, as `router requests --json`, `/admin/v1/requests` and the event stream give it: the id
/// as 32 hex digits (JSON numbers cannot hold it) and the time as RFC 3339 (UTC, or the local time zone).
pub fn record_json(r: &RequestRecord, utc: bool) -> Value {
    let mut v = serde_json::to_value(RequestRecord { id: 0, ..r.clone() }).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("id".into(), json!(crate::usage::format_id(r.id)));
        m.insert("time".into(), json!(rfc3339(r.time_ms, utc)));
    }
    v
}

/// A time as RFC 3339, in UTC or in the local time zone.
fn rfc3339(ms: i64, utc: bool) -> String {
    if utc {
        DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_default()
    } else {
        Local.timestamp_millis_opt(ms).single().map(|t| t.to_rfc3339()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{Outcome, Tokens};

    fn rec(time_ms: i64, fp: &str, name: &str, ch: &str, input: u64, cost: Option<f64>) -> RequestRecord {
        RequestRecord {
            id: crate::usage::new_id(time_ms),
            time_ms,
            channel: Some(ch.into()),
            endpoint: Some("default".into()),
            token_key: Some(name.into()),
            token_fp: Some(fp.into()),
            requested_model: "m".into(),
            upstream_model: Some("up/m".into()),
            gateway_key: Some("team".into()),
            tokens: Tokens { input, cache_read: 2, output: 3, ..Default::default() },
            cost_usd: cost,
            ..Default::default()
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        (dir, s)
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn groups_by_fingerprint_and_keeps_renamed_history_together() {
        let (_d, s) = store();
        let t0 = 20_000 * DAY;
        let mut failed = rec(t0 + 3, "fp:a", "a-new", "renamed", 0, None);
        failed.tokens = Tokens::default();
        failed.outcome = Outcome::UpstreamError;
        s.write_records(&[
            rec(t0 + 1, "fp:a", "a-old", "one", 10, Some(0.5)),
            rec(t0 + 2, "fp:a", "a-new", "renamed", 20, None),
            failed,
            rec(t0 + 4, "fp:b", "b", "one", 5, Some(0.25)),
        ])
        .unwrap();
        let q = UsageQuery { group_by: vec![GroupBy::Token], utc: true, ..Default::default() };
        let r = usage(&s, &q).unwrap();
        assert_eq!(r.source, Source::Rollups);
        assert_eq!(r.rows.len(), 2);
        let a = &r.rows[0];
        assert_eq!(a.group, vec!["fp:a".to_string()]);
        assert_eq!(a.token_keys, vec!["a-new".to_string(), "a-old".to_string()]);
        assert_eq!((a.counters.requests, a.counters.errors, a.counters.input), (3, 1, 30));
        assert_eq!(format_cost(&a.counters), "0.5000+?");
        assert_eq!(format_cost(&r.rows[1].counters), "0.2500");
        assert_eq!(r.totals.input, 35);
        assert_eq!(r.totals.cache_read, 6);

        // The records give the same sums.
        let q1 = UsageQuery { since_ms: Some(t0), until_ms: Some(t0 + 60_000), ..q.clone() };
        let records = usage(&s, &q1).unwrap();
        assert_eq!(records.source, Source::Requests);
        assert_eq!((&records.rows, records.totals), (&r.rows, r.totals));
        // And so do the daily rollups alone, for a range that cuts an hour retention pruned.
        s.prune_requests(t0 - DAY).unwrap();
        let q2 = UsageQuery { since_ms: Some(1), ..q.clone() };
        let daily = usage(&s, &q2).unwrap();
        assert_eq!(daily.source, Source::Daily);
        assert_eq!(daily.rows, r.rows);
        assert_eq!(daily.totals, r.totals);
    }

    #[test]
    fn whole_utc_days_read_the_rollups_with_the_same_sums() {
        let (_d, s) = store();
        let t0 = 20_000 * DAY;
        s.write_records(&[
            rec(t0 + 5, "fp:a", "a", "one", 1, Some(0.5)),
            rec(t0 + DAY + 7, "fp:b", "b", "two", 2, None),
            rec(t0 + 2 * DAY + 9, "fp:a", "a", "one", 4, Some(0.25)),
        ])
        .unwrap();
        let by = vec![GroupBy::Day, GroupBy::Channel, GroupBy::Token, GroupBy::Model, GroupBy::Key];
        let days = UsageQuery { since_ms: Some(t0), group_by: by.clone(), utc: true, ..Default::default() };
        let daily = usage(&s, &days).unwrap();
        assert_eq!(daily.source, Source::Rollups);
        let exact = usage(&s, &UsageQuery { since_ms: Some(t0 - 1), ..days.clone() }).unwrap();
        assert_eq!(exact.source, Source::Rollups);
        assert_eq!((daily.rows.clone(), daily.totals), (exact.rows, exact.totals));
        // Hours come from the hourly rollups, labelled like records.
        let hours = UsageQuery { group_by: vec![GroupBy::Hour], ..days.clone() };
        let r = usage(&s, &hours).unwrap();
        assert_eq!(r.source, Source::Rollups);
        assert_eq!(r.rows[0].group, vec!["2024-10-04 00:00".to_string()]);
        assert_eq!(r.rows.len(), 3);
        let cut = UsageQuery { until_ms: Some(t0 + DAY + 8), ..days };
        let r = usage(&s, &cut).unwrap();
        assert_eq!((r.source, r.totals.input), (Source::Rollups, 3));
    }

    #[test]
    fn plans_edges_from_records_whole_days_and_hours_from_rollups() {
        const H: i64 = HOUR_MS;
        let t0 = 20_000 * DAY;
        // 22:30 the day before to 01:15 two days later: two partial hours, 1.5 hours, a day, an hour.
        let p = plan(Some(t0 - 90 * 60_000), Some(t0 + DAY + H + 15 * 60_000), true, 0);
        let h0 = (t0 / H) as u32;
        assert_eq!(p.records, vec![(t0 - 90 * 60_000, t0 - H), (t0 + DAY + H, t0 + DAY + H + 15 * 60_000)]);
        assert_eq!(p.days, vec![(20_000, 20_000)]);
        assert_eq!(p.hours, vec![(h0 - 1, h0 - 1), (h0 + 24, h0 + 24)]);
        // Without days (grouping by hour), the whole hours are hours.
        let p = plan(Some(t0 - 90 * 60_000), Some(t0 + DAY + H + 15 * 60_000), false, 0);
        assert_eq!(p.hours, vec![(h0 - 1, h0 + 24)]);
        assert!(p.days.is_empty());
        // Inside one hour: records only.
        let p = plan(Some(t0 + 5), Some(t0 + 50), true, 0);
        assert_eq!(p, Plan { records: vec![(t0 + 5, t0 + 50)], ..Default::default() });
        // Open range: rollups to the end.
        let p = plan(None, None, true, 0);
        assert!(p.records.is_empty());
        assert_eq!(p.days[0].0, 0);
        // Hours before the hourly rollups begin come from records.
        let p = plan(Some(t0), Some(t0 + 5 * H), false, t0 + 2 * H);
        assert_eq!((p.records, p.hours), (vec![(t0, t0 + 2 * H)], vec![(h0 + 2, h0 + 4)]));
    }

    /// A tiny deterministic generator (the test must not depend on the seed of the day).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
            xs[self.below(xs.len() as u64) as usize]
        }
    }

    /// The answer the records alone give: the reference every plan must reproduce.
    fn by_records(s: &Store, q: &UsageQuery, zone: Zone) -> UsageReport {
        let mut acc = Acc::default();
        scan_records(s, q, zone, &mut acc, id_range(q.since_ms, q.until_ms)).unwrap();
        acc.finish(Source::Requests, q)
    }

    #[test]
    fn rollup_answers_equal_the_record_scan_for_random_ranges_groups_and_zones() {
        let (_d, s) = store();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let t0 = 20_000 * DAY + 7 * HOUR_MS;
        let span = 5 * DAY;
        let some = |x: &str| if x.is_empty() { None } else { Some(x.to_string()) };
        let mut recs = Vec::new();
        for _ in 0..4_000 {
            let time_ms = t0 + rng.below(span as u64) as i64;
            let channel = rng.pick(&["", "one", "two"]);
            let fp = rng.pick(&["fp:a", "fp:b", "fp:c"]);
            let mut r = RequestRecord {
                id: crate::usage::new_id(time_ms),
                time_ms,
                channel: some(channel).map(Into::into),
                endpoint: some(if channel.is_empty() { "" } else { rng.pick(&["default", "eu"]) }).map(Into::into),
                token_key: some(if channel.is_empty() { "" } else { rng.pick(&["a", "b", "renamed"]) }).map(Into::into),
                token_fp: some(if channel.is_empty() { "" } else { fp }).map(Into::into),
                requested_model: rng.pick(&["m", "n"]).to_string(),
                upstream_model: some(rng.pick(&["", "up/m", "up/n"])).map(Into::into),
                gateway_key: some(rng.pick(&["", "team", "ci"])).map(Into::into),
                tokens: Tokens {
                    input: rng.below(1000),
                    cache_read: rng.below(500),
                    cache_write: rng.below(50),
                    output: rng.below(300),
                    reasoning: rng.below(20),
                    cache_write_1h: 0,
                },
                // Binary fractions: sums are exact in any order, so the answers compare with ==.
                cost_usd: (rng.below(5) > 0).then(|| rng.below(4096) as f64 / 1024.0),
                outcome: rng.pick(&[Outcome::Ok, Outcome::Ok, Outcome::UpstreamError, Outcome::ClientClosed]),
                ..Default::default()
            };
            if rng.below(10) == 0 {
                r.usage_source = crate::usage::UsageSource::Estimated;
            }
            recs.push(r);
        }
        for chunk in recs.chunks(500) {
            s.write_records(chunk).unwrap();
        }
        let zones = [
            Zone::Utc,
            Zone::Local,
            Zone::Fixed(chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap()),
            Zone::Fixed(chrono::FixedOffset::west_opt(3 * 3600).unwrap()),
        ];
        let groups = [
            GroupBy::Day,
            GroupBy::Hour,
            GroupBy::Channel,
            GroupBy::Endpoint,
            GroupBy::Token,
            GroupBy::Model,
            GroupBy::Key,
        ];
        let when = |rng: &mut Rng| -> Option<i64> {
            let t = t0 - DAY + rng.below((span + 2 * DAY) as u64) as i64;
            match rng.below(5) {
                0 => None,
                1 => Some(t.div_euclid(HOUR_MS) * HOUR_MS),
                2 => Some(t.div_euclid(DAY) * DAY),
                _ => Some(t),
            }
        };
        let mut sources = BTreeMap::new();
        for i in 0..400 {
            let (a, b) = (when(&mut rng), when(&mut rng));
            let (since_ms, until_ms) = match (a, b) {
                (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
                x => x,
            };
            let group_by: Vec<GroupBy> =
                (0..rng.below(4)).map(|_| rng.pick(&groups)).collect::<BTreeSet<_>>().into_iter().collect();
            let mut filters = Filters::default();
            match rng.below(6) {
                0 => filters.channel = Some(rng.pick(&["one", "two", "nope"]).to_string()),
                1 => filters.token = Some(rng.pick(&["fp:a", "renamed", "b"]).to_string()),
                2 => filters.model = Some(rng.pick(&["up/m", "n"]).to_string()),
                3 => filters.key = Some(rng.pick(&["team", "ci"]).to_string()),
                _ => {}
            }
            let zone = rng.pick(&zones);
            let q = UsageQuery {
                since_ms,
                until_ms,
                group_by,
                filters,
                utc: matches!(zone, Zone::Utc),
                top: None,
                sort: None,
            };
            let got = usage_in(&s, &q, zone).unwrap();
            let want = by_records(&s, &q, zone);
            assert_eq!(
                (&got.rows, &got.totals),
                (&want.rows, &want.totals),
                "case {i}: {q:?} in {zone:?} from {:?}",
                got.source
            );
            *sources.entry(format!("{:?}", got.source)).or_insert(0) += 1;
        }
        // Most ranges are answered from the rollups, some (inside one hour) from the records alone.
        assert!(sources["Rollups"] > 300, "{sources:?}");
        assert!(!sources.contains_key("Daily"), "{sources:?}");

        // After retention pruned the first day, ranges inside retention are still exact, and those reaching
        // past it fall back to whole UTC days.
        let pruned = t0 + DAY + 5 * 60_000;
        s.prune_requests(pruned).unwrap();
        let mut left = Vec::new();
        s.scan_requests(0..u128::MAX, false, |r| {
            left.push(r);
            true
        })
        .unwrap();
        let q = UsageQuery {
            since_ms: Some(pruned),
            group_by: vec![GroupBy::Hour, GroupBy::Token],
            utc: true,
            ..Default::default()
        };
        let got = usage(&s, &q).unwrap();
        assert_eq!(got.source, Source::Rollups);
        assert_eq!((got.rows, got.totals), {
            let w = by_records(&s, &q, Zone::Utc);
            (w.rows, w.totals)
        });
        let q = UsageQuery { since_ms: Some(pruned - 1), ..q };
        assert_eq!(usage(&s, &q).unwrap().source, Source::Daily);
        // Whole hours before retention are still exact: they are in the hourly rollups.
        let h = (t0 + HOUR_MS).div_euclid(HOUR_MS) * HOUR_MS;
        let q = UsageQuery { since_ms: Some(h), until_ms: Some(h + 3 * HOUR_MS), ..q };
        let got = usage(&s, &q).unwrap();
        assert_eq!(got.source, Source::Rollups);
        let want: u64 =
            recs.iter().filter(|r| r.time_ms >= h && r.time_ms < h + 3 * HOUR_MS).map(|r| r.tokens.input).sum();
        assert_eq!(got.totals.input, want);
    }

    #[test]
    fn groups_by_session_top_first_and_filters_by_session() {
        let (_d, s) = store();
        let t0 = 20_000 * DAY;
        let with = |t: i64, session: Option<&str>, input: u64| RequestRecord {
            session: session.map(Into::into),
            affinity: Some(crate::live::affinity::Outcome::Hit),
            ..rec(t, "fp:a", "a", "one", input, Some(0.0))
        };
        s.write_records(&[
            with(t0, Some("00000000000000aa"), 10),
            with(t0 + 1, Some("00000000000000bb"), 500),
            with(t0 + 2, Some("00000000000000aa"), 20),
            with(t0 + 3, None, 1000),
        ])
        .unwrap();
        let q = UsageQuery { group_by: vec![GroupBy::Session], top: Some(2), ..Default::default() };
        let r = usage(&s, &q).unwrap();
        let groups: Vec<_> = r.rows.iter().map(|r| r.group[0].as_str()).collect();
        assert_eq!(groups, vec!["-", "00000000000000bb"]);
        // By requests: session aa has two.
        let q = UsageQuery { sort: Some(SortBy::Requests), ..q };
        let r = usage(&s, &q).unwrap();
        assert_eq!(r.rows[0].group[0], "00000000000000aa");
        assert_eq!(r.totals.requests, 4);
        let q = UsageQuery {
            filters: Filters { session: Some("00000000000000aa".into()), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(usage(&s, &q).unwrap().totals.input, 30);
        // Rollups know no sessions: a range past retention is refused, not silently wrong.
        s.prune_requests(t0 + DAY).unwrap();
        let q = UsageQuery { since_ms: Some(0), group_by: vec![GroupBy::Session], ..Default::default() };
        assert!(usage(&s, &q).unwrap_err().to_string().contains("request records only"));
    }

    #[test]
    fn filters_and_time_range() {
        let (_d, s) = store();
        let t0 = 20_000 * DAY;
        s.write_records(&[
            rec(t0, "fp:a", "a", "one", 1, Some(0.0)),
            rec(t0 + DAY, "fp:a", "a", "two", 2, Some(0.0)),
            rec(t0 + 2 * DAY, "fp:b", "b", "two", 4, Some(0.0)),
        ])
        .unwrap();
        let sum = |q: UsageQuery| usage(&s, &q).unwrap().totals.input;
        assert_eq!(sum(UsageQuery::default()), 7);
        let f = |channel: Option<&str>, token: Option<&str>| Filters {
            channel: channel.map(Into::into),
            token: token.map(Into::into),
            ..Default::default()
        };
        assert_eq!(sum(UsageQuery { filters: f(Some("two"), None), ..Default::default() }), 6);
        assert_eq!(sum(UsageQuery { filters: f(None, Some("a")), ..Default::default() }), 3);
        assert_eq!(sum(UsageQuery { filters: f(None, Some("fp:b")), ..Default::default() }), 4);
        assert_eq!(sum(UsageQuery { since_ms: Some(t0 + DAY), until_ms: Some(t0 + 2 * DAY), ..Default::default() }), 2);
        let by_day =
            usage(&s, &UsageQuery { group_by: vec![GroupBy::Day, GroupBy::Channel], utc: true, ..Default::default() })
                .unwrap();
        let groups: Vec<_> = by_day.rows.iter().map(|r| r.group.join(" ")).collect();
        assert_eq!(groups, vec!["2024-10-04 one", "2024-10-05 two", "2024-10-06 two"]);
    }

    #[test]
    fn requests_newest_first_with_limit_and_show_by_prefix() {
        let (_d, s) = store();
        let recs: Vec<_> = (0..5).map(|i| rec(1_000 + i, "fp:a", "a", "one", i as u64, None)).collect();
        s.write_records(&recs).unwrap();
        let list = RequestsQuery { limit: 3, ..Default::default() }.run(&s).unwrap().records;
        assert_eq!(list.iter().map(|r| r.time_ms).collect::<Vec<_>>(), vec![1004, 1003, 1002]);
        // The next page starts below the last id of this one; the last page is short.
        let before = Some(crate::usage::format_id(list[2].id));
        let page = RequestsQuery { limit: 3, before, ..Default::default() }.run(&s).unwrap().records;
        assert_eq!(page.iter().map(|r| r.time_ms).collect::<Vec<_>>(), vec![1001, 1000]);
        let bad = RequestsQuery { limit: 3, before: Some("zz".into()), ..Default::default() }.run(&s).unwrap_err();
        assert!(bad.downcast_ref::<crate::error::UserError>().is_some(), "{bad:#}");
        let id = crate::usage::format_id(recs[2].id);
        let one = ShowRequest { id: id[..24].to_string() }.run(&s).unwrap().records;
        assert_eq!(one[0].id, recs[2].id);
        // All five share the time prefix: ambiguous.
        let e = ShowRequest { id: id[..4].to_string() }.run(&s).unwrap_err();
        assert!(e.to_string().contains("more than one"));
        // The random end identifies it too.
        let one = ShowRequest { id: id[20..].to_string() }.run(&s).unwrap().records;
        assert_eq!(one[0].id, recs[2].id);
        assert!(ShowRequest { id: "xyz".into() }.run(&s).is_err());
        assert!(ShowRequest { id: "f".repeat(32) }.run(&s).is_err());
    }

    #[test]
    fn record_lists_cross_json_with_u128_ids() {
        let r = rec(1_700_000_000_000, "fp:a", "a", "one", 1, None);
        let list = RecordList { records: vec![r.clone()] };
        let v = serde_json::to_value(&list).unwrap();
        let back: RecordList = serde_json::from_value(v).unwrap();
        assert_eq!(back.records[0], r);
    }

    #[test]
    fn time_expressions() {
        let now = 20_000 * DAY + 5 * 3_600_000;
        assert_eq!(parse_when("24h", true, false, now).unwrap(), now - DAY);
        assert_eq!(parse_when("7d", true, false, now).unwrap(), now - 7 * DAY);
        assert_eq!(parse_when("today", true, false, now).unwrap(), 20_000 * DAY);
        assert_eq!(parse_when("today", true, true, now).unwrap(), 20_001 * DAY);
        assert_eq!(parse_when("yesterday", true, false, now).unwrap(), 19_999 * DAY);
        assert_eq!(parse_when("2024-10-04", true, false, now).unwrap(), 20_000 * DAY);
        assert_eq!(parse_when("2024-10-04", true, true, now).unwrap(), 20_001 * DAY);
        assert!(parse_when("last tuesday", true, false, now).is_err());
        assert!(parse_when("5x", true, false, now).is_err());
        // The forms `balance history --since` read before it shared this grammar.
        assert_eq!(parse_when("1d", false, false, 10 * DAY).unwrap(), 9 * DAY);
        assert_eq!(parse_when("2025-01-01T00:00:00Z", false, false, now).unwrap(), 1_735_689_600_000);
        assert!(parse_when("2025-01-01", false, false, now).is_ok());
        assert_eq!(parse_when("90s", true, false, now).unwrap(), now - 90_000);
        assert!(parse_when("2024", true, false, now).is_err());
    }

    #[test]
    fn costs_are_never_a_fake_zero() {
        let unknown = Counters { requests: 1, input: 5, unknown_cost: 1, ..Default::default() };
        assert_eq!(format_cost(&unknown), "-");
        assert_eq!(cost_json(&unknown), None);
        let partial = Counters { cost_usd: 1.234, unknown_cost: 1, ..Default::default() };
        assert_eq!(format_cost(&partial), "1.23+?");
        let known = Counters { cost_usd: 0.0, ..Default::default() };
        assert_eq!(format_cost(&known), "0");
        assert_eq!(cost_json(&known), Some(0.0));
    }

    #[test]
    fn json_rows_name_their_dimensions_and_unknown_cost_is_null() {
        let r = UsageReport {
            source: Source::Requests,
            group_by: vec![GroupBy::Token],
            rows: vec![UsageRow {
                group: vec!["fp:1".into()],
                token_keys: vec!["a".into()],
                counters: Counters { requests: 1, input: 3, unknown_cost: 1, ..Default::default() },
            }],
            totals: Counters { requests: 1, input: 3, unknown_cost: 1, ..Default::default() },
        };
        let v = usage_json(&r);
        assert_eq!(v["rows"][0]["token"], "fp:1");
        assert_eq!(v["rows"][0]["token_keys"][0], "a");
        assert_eq!(v["rows"][0]["cost_usd"], Value::Null);
        assert_eq!(v["totals"]["input"], 3);
    }
}
