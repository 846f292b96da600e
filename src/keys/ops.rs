//! The operations behind `router keys`: each a store [`Op`] with typed input and output, so the CLI (directly or
//! through a running server's control socket) and a later admin API run the same code and answer alike.
//!
//! Owns writing `gateway_keys` rows (one write transaction each; the server reloads its key table after every
//! one, before answering) and the spend report: spend per key in its current budget period, requests today and
//! last use, read from the daily rollups for whole UTC days and from request records for the part of a day a
//! period starts in (so reports equal the sum of the records without scanning a month of them). Must not
//! receive, keep or return a secret: creation and rotation send only the hash and prefix.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use super::{State, StoredKey, check_limits, check_name, timezone};
use crate::error::user;
use crate::live::limits::{Budget, Limits, Period, period_bounds};
use crate::store::tables::{Counters, day_of_ms};
use crate::store::{KvTable, Op, Store, StoreError};

const DAY_MS: i64 = 86_400_000;

fn not_found(name: &str) -> anyhow::Error {
    user(format!("no store key named `{name}`"))
        .with_hint("`router keys list` shows the keys; keys under server.keys in the config are changed there")
        .into()
}

fn load(store: &Store, name: &str) -> anyhow::Result<StoredKey> {
    store.get_json::<StoredKey>(KvTable::GatewayKeys, name)?.ok_or_else(|| not_found(name))
}

/// A key that may still change (not revoked).
fn load_unrevoked(store: &Store, name: &str) -> anyhow::Result<StoredKey> {
    let k = load(store, name)?;
    if k.state == State::Revoked {
        return Err(revoked(name));
    }
    Ok(k)
}

fn save(store: &Store, k: &StoredKey) -> anyhow::Result<()> {
    Ok(store.put_json(KvTable::GatewayKeys, &k.name, k)?)
}

fn validate(k: &StoredKey) -> anyhow::Result<()> {
    check_name(&k.name).map_err(|m| user(m).with_hint("use letters, digits, `-`, `_`, `.` or `@` (at most 64)"))?;
    check_limits(&k.limits).map_err(|(f, m)| user(format!("--{}: {m}", f.replace('_', "-"))))?;
    if super::parse_hash(&k.hash).is_none() {
        anyhow::bail!("key `{}`: the hash is not `sha256:<64 hex digits>`", k.name);
    }
    Ok(())
}

/// A new store key. The name must be free in the store (the CLI also checks the configuration's keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysCreate {
    pub key: StoredKey,
}

impl Op for KeysCreate {
    const NAME: &'static str = "keys_create";
    const WRITES: bool = true;
    type Reply = StoredKey;
    fn run(self, store: &Store) -> anyhow::Result<StoredKey> {
        validate(&self.key)?;
        let bytes = serde_json::to_vec(&self.key)?;
        match store.apply_kv(
            KvTable::GatewayKeys,
            std::slice::from_ref(&self.key.name),
            &[],
            &[(self.key.name.clone(), bytes)],
        ) {
            Ok(()) => Ok(self.key),
            Err(StoreError::Exists { key, .. }) => Err(user(format!("a key named `{key}` already exists"))
                .with_hint(format!("pick another name, or `router keys rotate {key}` for a new secret"))
                .into()),
            Err(e) => Err(e.into()),
        }
    }
}

/// One setting changed: set to a value, or removed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change<T> {
    Set(T),
    Clear,
}

impl<T> Change<T> {
    fn apply(self, to: &mut Option<T>) {
        *to = match self {
            Change::Set(v) => Some(v),
            Change::Clear => None,
        };
    }
}

/// What `router keys update` changes; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Change<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<Change<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Change<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<Change<u32>>,
    /// USD; a new budget needs `per` unless the key has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Change<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<Period>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<Change<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<Change<String>>,
}

impl KeyPatch {
    pub fn is_empty(&self) -> bool {
        *self == KeyPatch::default()
    }

    /// The limits after this patch (checked).
    pub fn limits(&self, old: &Limits) -> anyhow::Result<Limits> {
        let mut l = *old;
        if let Some(c) = self.rpm {
            c.apply(&mut l.rpm);
        }
        if let Some(c) = self.tpm {
            c.apply(&mut l.tpm);
        }
        if let Some(c) = self.max_parallel {
            c.apply(&mut l.max_parallel);
        }
        l.budget = match (self.budget, self.per, old.budget) {
            (Some(Change::Clear), Some(_), _) => {
                return Err(user("--per with `--budget none`")
                    .with_hint("leave out --per when removing a budget")
                    .into());
            }
            (Some(Change::Clear), None, _) => None,
            (Some(Change::Set(usd)), Some(per), _) => Some(Budget { usd, per }),
            (Some(Change::Set(usd)), None, Some(b)) => Some(Budget { usd, per: b.per }),
            (Some(Change::Set(_)), None, None) => {
                return Err(user("a budget needs its period").with_hint("add --per day|week|month|total").into());
            }
            (None, Some(per), Some(b)) => Some(Budget { per, ..b }),
            (None, Some(_), None) => {
                return Err(user("--per without a budget").with_hint("add --budget USD").into());
            }
            (None, None, b) => b,
        };
        check_limits(&l).map_err(|(f, m)| user(format!("--{}: {m}", f.replace('_', "-"))))?;
        Ok(l)
    }
}

/// Changes the settings of a store key (not its secret, state or history).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysUpdate {
    pub name: String,
    pub patch: KeyPatch,
    pub now_ms: i64,
}

impl Op for KeysUpdate {
    const NAME: &'static str = "keys_update";
    const WRITES: bool = true;
    type Reply = StoredKey;
    fn run(self, store: &Store) -> anyhow::Result<StoredKey> {
        let mut k = load_unrevoked(store, &self.name)?;
        let p = self.patch;
        k.limits = p.limits(&k.limits)?;
        if let Some(c) = p.allow {
            c.apply(&mut k.allow);
        }
        if let Some(c) = p.expires_ms {
            c.apply(&mut k.expires_ms);
        }
        if let Some(c) = p.note {
            c.apply(&mut k.note);
        }
        k.updated_ms = self.now_ms;
        validate(&k)?;
        save(store, &k)?;
        Ok(k)
    }
}

fn revoked(name: &str) -> anyhow::Error {
    user(format!("key `{name}` is revoked"))
        .with_hint(format!("a revoked key stays revoked; create a new one (`router keys create {name}-2`)"))
        .into()
}

/// Disables, enables or revokes a store key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysSetState {
    pub name: String,
    pub state: State,
    pub now_ms: i64,
}

impl Op for KeysSetState {
    const NAME: &'static str = "keys_set_state";
    const WRITES: bool = true;
    type Reply = StoredKey;
    fn run(self, store: &Store) -> anyhow::Result<StoredKey> {
        let mut k = load(store, &self.name)?;
        if k.state == State::Revoked && self.state != State::Revoked {
            return Err(revoked(&k.name));
        }
        k.state = self.state;
        k.updated_ms = self.now_ms;
        save(store, &k)?;
        Ok(k)
    }
}

/// A new secret for a store key: same name, settings and history; the old secret stops working.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysRotate {
    pub name: String,
    pub hash: String,
    pub prefix: String,
    pub now_ms: i64,
}

impl Op for KeysRotate {
    const NAME: &'static str = "keys_rotate";
    const WRITES: bool = true;
    type Reply = StoredKey;
    fn run(self, store: &Store) -> anyhow::Result<StoredKey> {
        let mut k = load_unrevoked(store, &self.name)?;
        k.hash = self.hash;
        k.prefix = self.prefix;
        k.updated_ms = self.now_ms;
        validate(&k)?;
        save(store, &k)?;
        Ok(k)
    }
}

/// A configuration-file key, as the report needs it (the store does not know them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct YamlKey {
    pub name: String,
    #[serde(default)]
    pub allow: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub expires_ms: Option<i64>,
}

/// `router keys list` / `show`: every key (store and configuration) with its spend and use.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeysReport {
    /// Only this key.
    #[serde(default)]
    pub name: Option<String>,
    /// The configuration's keys.
    #[serde(default)]
    pub yaml: Vec<YamlKey>,
    /// `server.timezone`.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// One key in `router keys list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyReport {
    pub name: String,
    pub origin: super::Origin,
    /// Start of the secret (store keys).
    pub prefix: Option<String>,
    pub allow: Option<String>,
    pub limits: Limits,
    pub expires_ms: Option<i64>,
    /// `active`, `disabled`, `revoked` or `expired`.
    pub state: String,
    pub note: Option<String>,
    pub created_ms: Option<i64>,
    /// The period spend is shown for: the budget's, else the current month.
    pub period: Period,
    pub period_start_ms: i64,
    /// Known costs of the key's requests in the period, USD.
    pub spent_usd: f64,
    /// Requests in the period whose price is unknown (counted as 0).
    pub unknown_cost_requests: u64,
    pub requests_today: u64,
    /// Latest request: exact when within the last two days, else the start of its UTC day.
    pub last_used_ms: Option<i64>,
}

impl Op for KeysReport {
    const NAME: &'static str = "keys_report";
    type Reply = Vec<KeyReport>;
    fn run(self, store: &Store) -> anyhow::Result<Vec<KeyReport>> {
        let tz = timezone(self.timezone.as_deref()).map_err(|m| user(m).with_hint("fix server.timezone"))?;
        report(store, &self, &tz, crate::usage::now_ms())
    }
}

fn report(store: &Store, q: &KeysReport, tz: &TimeZone, now_ms: i64) -> anyhow::Result<Vec<KeyReport>> {
    let rows: Vec<StoredKey> =
        store.list_json::<StoredKey>(KvTable::GatewayKeys)?.into_iter().map(|(_, k)| k).collect();
    let wanted = |n: &str| q.name.as_deref().is_none_or(|w| w == n);
    let mut out = Vec::new();
    for y in q.yaml.iter().filter(|y| wanted(&y.name)) {
        out.push(KeyReport {
            name: y.name.clone(),
            origin: super::Origin::Yaml,
            prefix: None,
            allow: y.allow.clone(),
            limits: y.limits,
            expires_ms: y.expires_ms,
            state: State::Active.as_str().into(),
            note: None,
            created_ms: None,
            period: Period::Month,
            period_start_ms: 0,
            spent_usd: 0.0,
            unknown_cost_requests: 0,
            requests_today: 0,
            last_used_ms: None,
        });
    }
    for k in rows.iter().filter(|k| wanted(&k.name)) {
        out.push(KeyReport {
            name: k.name.clone(),
            origin: super::Origin::Store,
            prefix: Some(k.prefix.clone()),
            allow: k.allow.clone(),
            limits: k.limits,
            expires_ms: k.expires_ms,
            state: k.state.as_str().into(),
            note: k.note.clone(),
            created_ms: Some(k.created_ms),
            period: Period::Month,
            period_start_ms: 0,
            spent_usd: 0.0,
            unknown_cost_requests: 0,
            requests_today: 0,
            last_used_ms: None,
        });
    }
    if let Some(n) = &q.name
        && out.is_empty()
    {
        return Err(user(format!("no key named `{n}`")).with_hint("`router keys list` shows every key").into());
    }
    let names: HashSet<String> = out.iter().map(|r| r.name.clone()).collect();
    let mut spend = Spend::load(store, names)?;
    let today = period_bounds(Period::Day, now_ms, tz).0;
    for r in &mut out {
        if r.state == "active" && r.expires_ms.is_some_and(|x| now_ms >= x) {
            r.state = "expired".into();
        }
        r.period = r.limits.budget.map_or(Period::Month, |b| b.per);
        r.period_start_ms = period_bounds(r.period, now_ms, tz).0;
        let c = spend.since(store, &r.name, r.period_start_ms)?;
        r.spent_usd = c.cost_usd;
        r.unknown_cost_requests = c.unknown_cost;
        r.requests_today = spend.since(store, &r.name, today)?.requests;
        r.last_used_ms = spend.last_used(store, &r.name, now_ms)?;
    }
    Ok(out)
}

/// Usage of some gateway keys since a point in time, from the daily rollups (whole UTC days) and the request
/// records of the day the point falls in. Equal to the sum of the records (the rollups are written in the
/// same transaction), unless retention pruned the records of that first day: then that whole day counts.
pub struct Spend {
    keys: HashSet<String>,
    /// key -> UTC day -> counters.
    daily: HashMap<String, BTreeMap<u32, Counters>>,
    /// since_ms -> key -> counters of the records from since_ms to the next UTC midnight.
    partial: HashMap<i64, HashMap<String, Counters>>,
    last: Option<HashMap<String, i64>>,
    pruned_before: i64,
}

impl Spend {
    pub fn load(store: &Store, keys: HashSet<String>) -> anyhow::Result<Spend> {
        let mut daily: HashMap<String, BTreeMap<u32, Counters>> = HashMap::new();
        store.scan_daily(0, u32::MAX, |k, c| {
            if keys.contains(&k.gateway_key) {
                daily.entry(k.gateway_key).or_default().entry(k.day).or_default().add(&c);
            }
        })?;
        Ok(Spend { keys, daily, partial: HashMap::new(), last: None, pruned_before: store.pruned_before()? })
    }

    /// Counters of `key`'s requests that started at or after `since_ms`.
    pub fn since(&mut self, store: &Store, key: &str, since_ms: i64) -> anyhow::Result<Counters> {
        let since_ms = since_ms.max(0);
        let first = day_of_ms(since_ms);
        let aligned = since_ms % DAY_MS == 0;
        let exact_partial = !aligned && since_ms >= self.pruned_before;
        let full_from = if aligned || !exact_partial { first } else { first + 1 };
        let mut total = Counters::default();
        if let Some(days) = self.daily.get(key) {
            for c in days.range(full_from..).map(|(_, c)| c) {
                total.add(c);
            }
        }
        if exact_partial {
            if !self.partial.contains_key(&since_ms) {
                let end = (i64::from(first) + 1) * DAY_MS;
                let mut by_key: HashMap<String, Counters> = HashMap::new();
                let keys = &self.keys;
                store.scan_requests(ms_range(since_ms, end), false, |r| {
                    if let Some(k) = r.gateway_key.as_deref().filter(|k| keys.contains(*k)) {
                        by_key.entry(k.to_string()).or_default().add(&Counters::of(&r));
                    }
                    true
                })?;
                self.partial.insert(since_ms, by_key);
            }
            if let Some(c) = self.partial[&since_ms].get(key) {
                total.add(c);
            }
        }
        Ok(total)
    }

    /// The latest request of `key`: exact from the records of the last two days, else its latest rollup day.
    pub fn last_used(&mut self, store: &Store, key: &str, now_ms: i64) -> anyhow::Result<Option<i64>> {
        if self.last.is_none() {
            let mut last = HashMap::new();
            let keys = &self.keys;
            store.scan_requests(ms_range(now_ms - 2 * DAY_MS, i64::MAX), true, |r| {
                if let Some(k) = r.gateway_key.as_deref().filter(|k| keys.contains(*k)) {
                    last.entry(k.to_string()).or_insert(r.time_ms);
                }
                last.len() < keys.len()
            })?;
            self.last = Some(last);
        }
        if let Some(t) = self.last.as_ref().and_then(|l| l.get(key)) {
            return Ok(Some(*t));
        }
        Ok(self.daily.get(key).and_then(|d| d.keys().next_back()).map(|d| i64::from(*d) * DAY_MS))
    }
}

fn ms_range(from_ms: i64, to_ms: i64) -> std::ops::Range<u128> {
    let lo = (from_ms.max(0) as u128) << 64;
    let hi = if to_ms == i64::MAX { u128::MAX } else { (to_ms.max(0) as u128) << 64 };
    lo..hi.max(lo)
}

/// Spend of each key with a budget in its current period, for seeding the live limiter at start and after a
/// key's budget period changes: `(name, period, spent)`.
pub fn budget_spend(
    store: &Store,
    keys: &[(String, Period)],
    tz: &TimeZone,
    now_ms: i64,
) -> anyhow::Result<Vec<(String, Period, f64)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut spend = Spend::load(store, keys.iter().map(|(n, _)| n.clone()).collect())?;
    keys.iter()
        .map(|(n, per)| {
            let start = period_bounds(*per, now_ms, tz).0;
            Ok((n.clone(), *per, spend.since(store, n, start)?.cost_usd))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{RequestRecord, Tokens};

    fn rec(key: &str, time_ms: i64, cost: Option<f64>) -> RequestRecord {
        RequestRecord {
            id: crate::usage::new_id(time_ms),
            time_ms,
            gateway_key: Some(key.into()),
            requested_model: "m".into(),
            tokens: Tokens { input: 10, output: 5, ..Default::default() },
            cost_usd: cost,
            ..Default::default()
        }
    }

    fn key(name: &str) -> StoredKey {
        let (_, hash, prefix) = super::super::generate();
        StoredKey {
            name: name.into(),
            hash,
            prefix,
            allow: None,
            limits: Limits::default(),
            expires_ms: None,
            note: None,
            state: State::Active,
            created_ms: 1,
            updated_ms: 1,
        }
    }

    #[test]
    fn create_update_state_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        KeysCreate { key: key("team") }.run(&s).unwrap();
        let e = KeysCreate { key: key("team") }.run(&s).unwrap_err();
        assert!(e.downcast_ref::<crate::error::UserError>().is_some(), "{e:#}");
        let mut bad = key("bad name");
        assert!(KeysCreate { key: bad.clone() }.run(&s).is_err());
        bad.name = "ok".into();
        bad.limits.rpm = Some(0);
        assert!(KeysCreate { key: bad }.run(&s).is_err());
        assert_eq!(s.list_raw(KvTable::GatewayKeys).unwrap().len(), 1, "nothing written on bad input");

        let patch = KeyPatch { rpm: Some(Change::Set(5)), budget: Some(Change::Set(2.0)), ..Default::default() };
        let e = KeysUpdate { name: "team".into(), patch, now_ms: 2 }.run(&s).unwrap_err();
        assert!(format!("{e:#}").contains("period"), "{e:#}");
        let patch = KeyPatch {
            rpm: Some(Change::Set(5)),
            budget: Some(Change::Set(2.0)),
            per: Some(Period::Week),
            note: Some(Change::Set("ci".into())),
            ..Default::default()
        };
        let k = KeysUpdate { name: "team".into(), patch, now_ms: 2 }.run(&s).unwrap();
        assert_eq!(k.limits.budget, Some(Budget { usd: 2.0, per: Period::Week }));
        let patch = KeyPatch { rpm: Some(Change::Clear), budget: Some(Change::Set(3.0)), ..Default::default() };
        let k = KeysUpdate { name: "team".into(), patch, now_ms: 3 }.run(&s).unwrap();
        assert_eq!(
            (k.limits.rpm, k.limits.budget.unwrap().usd, k.limits.budget.unwrap().per),
            (None, 3.0, Period::Week)
        );
        assert!(KeysUpdate { name: "nope".into(), patch: KeyPatch::default(), now_ms: 3 }.run(&s).is_err());

        let old_hash = k.hash.clone();
        let (_, hash, prefix) = super::super::generate();
        let k = KeysRotate { name: "team".into(), hash: hash.clone(), prefix, now_ms: 4 }.run(&s).unwrap();
        assert_ne!(k.hash, old_hash);
        assert_eq!((k.hash, k.note.as_deref(), k.created_ms), (hash, Some("ci"), 1));

        KeysSetState { name: "team".into(), state: State::Disabled, now_ms: 5 }.run(&s).unwrap();
        KeysSetState { name: "team".into(), state: State::Active, now_ms: 5 }.run(&s).unwrap();
        KeysSetState { name: "team".into(), state: State::Revoked, now_ms: 5 }.run(&s).unwrap();
        assert!(KeysSetState { name: "team".into(), state: State::Active, now_ms: 6 }.run(&s).is_err());
        let (_, hash, prefix) = super::super::generate();
        assert!(KeysRotate { name: "team".into(), hash, prefix, now_ms: 6 }.run(&s).is_err());
    }

    #[test]
    fn spend_per_period_equals_the_sum_of_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let ms = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let now = ms("2026-03-18T12:00:00Z");
        s.write_records(&[
            rec("a", ms("2026-02-28T23:00:00Z"), Some(1.0)),  // last month
            rec("a", ms("2026-03-01T00:30:00Z"), Some(0.25)), // this month in UTC; last month in New York
            rec("a", ms("2026-03-10T10:00:00Z"), Some(0.5)),
            rec("a", ms("2026-03-18T06:00:00Z"), None), // today, unknown price
            rec("a", ms("2026-03-18T07:00:00Z"), Some(0.125)),
            rec("b", ms("2026-03-18T08:00:00Z"), Some(9.0)),
        ])
        .unwrap();
        let mut a = key("a");
        a.limits.budget = Some(Budget { usd: 5.0, per: Period::Month });
        KeysCreate { key: a }.run(&s).unwrap();
        let q = KeysReport { yaml: vec![YamlKey { name: "b".into(), ..Default::default() }], ..Default::default() };
        let r = report(&s, &q, &TimeZone::UTC, now).unwrap();
        let a = r.iter().find(|r| r.name == "a").unwrap();
        assert!((a.spent_usd - 0.875).abs() < 1e-9, "{}", a.spent_usd);
        assert_eq!((a.unknown_cost_requests, a.requests_today), (1, 2));
        assert_eq!(a.last_used_ms, Some(ms("2026-03-18T07:00:00Z")));
        let b = r.iter().find(|r| r.name == "b").unwrap();
        assert_eq!((b.origin, b.spent_usd, b.requests_today), (super::super::Origin::Yaml, 9.0, 1));
        // In New York the month began at 05:00 UTC on 1 March: the 00:30 request belongs to February.
        let ny = TimeZone::get("America/New_York").unwrap();
        let r = report(&s, &q, &ny, now).unwrap();
        let a = r.iter().find(|r| r.name == "a").unwrap();
        assert!((a.spent_usd - 0.625).abs() < 1e-9, "{}", a.spent_usd);
        assert_eq!(a.period_start_ms, ms("2026-03-01T05:00:00Z"));
        let seeded = budget_spend(&s, &[("a".into(), Period::Total)], &ny, now).unwrap();
        assert!((seeded[0].2 - 1.875).abs() < 1e-9);
        // Unknown names are the user's mistake.
        let e = report(&s, &KeysReport { name: Some("zz".into()), ..Default::default() }, &TimeZone::UTC, now);
        assert!(e.unwrap_err().downcast_ref::<crate::error::UserError>().is_some());
    }
}
