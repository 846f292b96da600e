//! Upstream credit per channel and key: checking it, classifying key validity, and the seam to persistence.
//!
//! Owns [`BalanceResult`] (what one check found; serialisable, holds no secret), the concurrent check over a
//! routing [`Snapshot`] ([`check_all`]), the key-validity probe ([`validate`]), the [`BalanceStore`] trait that
//! the store implements (with [`MemoryStore`] for tests), and [`exhausted`] for `serve`'s cooldowns. Provider
//! endpoints and body parsers are in [`providers`]. Must not print (the CLI does) and must not open the store
//! itself: callers pass one in.

pub mod providers;
pub mod store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::{Channel, Endpoint, Snapshot, Token};
use crate::upstream::{FailureClass, failure};
pub use providers::Kind;
use providers::Plan;

/// An amount of credit in the provider's own currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    /// What is left (may be negative: Moonshot lets accounts run into debt).
    pub amount: f64,
    /// ISO code as the provider gives it (`USD`, `CNY`).
    pub currency: String,
    /// Spent so far, when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<f64>,
    /// The credit limit or total granted, when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
}

impl Balance {
    pub fn usd(amount: f64) -> Balance {
        Balance { amount, currency: "USD".into(), used: None, limit: None }
    }
    pub fn used(mut self, used: f64) -> Balance {
        self.used = Some(used);
        self
    }
    pub fn limit(mut self, limit: f64) -> Balance {
        self.limit = Some(limit);
        self
    }
}

/// How a check ended. Serialised flat: `"status": "ok" | "n/a" | "error"` with `"reason"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason")]
pub enum Status {
    #[serde(rename = "ok")]
    Ok,
    /// The provider has no balance API (or it is turned off); not a failure.
    #[serde(rename = "n/a")]
    NotAvailable(String),
    /// The check failed; the reason names the URL and status, never the key.
    #[serde(rename = "error")]
    Error(String),
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotAvailable(_) => "n/a",
            Status::Error(_) => "error",
        }
    }
    pub fn reason(&self) -> Option<&str> {
        match self {
            Status::Ok => None,
            Status::NotAvailable(r) | Status::Error(r) => Some(r),
        }
    }
}

/// What a cheap request with the key says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Ok,
    /// 401, 403, banned or terminated accounts ([`FailureClass::Auth`]).
    Invalid,
    /// 402, or an error that speaks of quota, balance, billing or credit ([`FailureClass::Quota`]).
    NoQuota,
    /// 408 / 409 / 429 without quota words.
    RateLimited,
    /// Connect error, timeout, 5xx.
    Unreachable,
    /// Any other answer (e.g. 404: the host has no model list); the key may be fine.
    Unknown,
}

impl From<FailureClass> for KeyState {
    /// Auth: invalid; quota: no quota; rate limited; connect, timeout, 5xx: unreachable; the rest says nothing
    /// about the key (e.g. 404: the host has no model list).
    fn from(class: FailureClass) -> KeyState {
        match class {
            FailureClass::Ok => KeyState::Ok,
            FailureClass::Auth => KeyState::Invalid,
            FailureClass::Quota => KeyState::NoQuota,
            FailureClass::RateLimited => KeyState::RateLimited,
            FailureClass::Connect | FailureClass::Timeout | FailureClass::ServerError => KeyState::Unreachable,
            FailureClass::NotFound
            | FailureClass::BadRequest
            | FailureClass::ClientError
            | FailureClass::Interrupted
            | FailureClass::BadResponse => KeyState::Unknown,
        }
    }
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Ok => "ok",
            KeyState::Invalid => "invalid",
            KeyState::NoQuota => "no quota",
            KeyState::RateLimited => "rate limited",
            KeyState::Unreachable => "unreachable",
            KeyState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validity {
    pub state: KeyState,
    /// What was seen (`HTTP 401: invalid api key`), without the key.
    pub detail: String,
}

/// One balance check of one key of one endpoint. Holds no secret: the key is named by `token_key` and
/// `fingerprint` only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalanceResult {
    pub channel: String,
    pub endpoint: String,
    pub token_key: String,
    /// `fp:<16 hex>` of SHA-256(key): stable across renames, the store's key.
    pub fingerprint: String,
    /// The balance API asked (absent when there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(flatten)]
    pub status: Status,
    /// Several for providers that keep one per currency (DeepSeek).
    #[serde(default)]
    pub balances: Vec<Balance>,
    /// Unix milliseconds.
    pub checked_at: i64,
    /// Key validity, when asked for (`--validate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Validity>,
    /// Served from the store (younger than the TTL) rather than asked now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

impl BalanceResult {
    /// True when the check succeeded and some balance is under `threshold` (in that balance's own currency).
    pub fn below(&self, threshold: f64) -> bool {
        self.status == Status::Ok && self.balances.iter().any(|b| b.amount < threshold)
    }

    /// True when the check succeeded and no balance is above zero: the key cannot pay for requests.
    pub fn is_exhausted(&self) -> bool {
        self.status == Status::Ok && !self.balances.is_empty() && self.balances.iter().all(|b| b.amount <= 0.0)
    }
}

/// Tokens that ran dry, as (channel, token fingerprint): what `serve` cools down. A key with credit left in any
/// currency is not exhausted; failed and n/a checks say nothing.
pub fn exhausted(results: &[BalanceResult]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in results.iter().filter(|r| r.is_exhausted()) {
        let pair = (r.channel.clone(), r.fingerprint.clone());
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    out
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Failure of the store behind [`BalanceStore`].
#[derive(Debug, thiserror::Error)]
#[error("balance store: {0}")]
pub struct StoreError(pub String);

/// Where results are kept: a TTL cache for `balance check` and the history for `balance history`.
/// The redb store implements it; [`MemoryStore`] is for tests.
pub trait BalanceStore: Send + Sync {
    /// The newest result for (channel, endpoint, token fingerprint) checked at or after `now_ms - ttl`.
    fn recent(
        &self,
        channel: &str,
        endpoint: &str,
        fingerprint: &str,
        ttl: Duration,
        now_ms: i64,
    ) -> Option<BalanceResult>;
    /// Appends results to the history (they also become the newest for their key).
    fn save(&self, results: &[BalanceResult]) -> Result<(), StoreError>;
    /// Results checked at or after `since_ms`, of one channel or all, oldest first.
    fn history(&self, channel: Option<&str>, since_ms: i64) -> Result<Vec<BalanceResult>, StoreError>;
}

/// An in-memory [`BalanceStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    rows: Mutex<Vec<BalanceResult>>,
}

impl BalanceStore for MemoryStore {
    fn recent(
        &self,
        channel: &str,
        endpoint: &str,
        fingerprint: &str,
        ttl: Duration,
        now_ms: i64,
    ) -> Option<BalanceResult> {
        let oldest = now_ms.saturating_sub(ttl.as_millis() as i64);
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.iter()
            .filter(|r| r.channel == channel && r.endpoint == endpoint && r.fingerprint == fingerprint)
            .filter(|r| r.checked_at >= oldest)
            .max_by_key(|r| r.checked_at)
            .cloned()
    }

    fn save(&self, results: &[BalanceResult]) -> Result<(), StoreError> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.extend(results.iter().cloned().map(|mut r| {
            r.cached = false;
            r
        }));
        Ok(())
    }

    fn history(&self, channel: Option<&str>, since_ms: i64) -> Result<Vec<BalanceResult>, StoreError> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<BalanceResult> = rows
            .iter()
            .filter(|r| channel.is_none_or(|c| r.channel == c) && r.checked_at >= since_ms)
            .cloned()
            .collect();
        out.sort_by_key(|r| r.checked_at);
        Ok(out)
    }
}

/// One key to check, named without its secret.
#[derive(Debug, Clone)]
pub struct CheckInput<'a> {
    pub channel: &'a Channel,
    pub endpoint: &'a Endpoint,
    pub token: &'a Token,
}

/// Checks the balance of one key. Never fails: problems become [`Status::Error`] with a reason.
pub async fn check(client: &reqwest::Client, input: CheckInput<'_>, timeout: Duration) -> BalanceResult {
    let CheckInput { channel, endpoint, token } = input;
    let plan = providers::plan(channel.config().balance.as_ref(), channel.protocol, &endpoint.base_url);
    let mut result = BalanceResult {
        channel: channel.name.to_string(),
        endpoint: endpoint.name.to_string(),
        token_key: token.token_key.to_string(),
        fingerprint: token.fingerprint.to_string(),
        kind: None,
        status: Status::Ok,
        balances: Vec::new(),
        checked_at: 0,
        key: None,
        cached: false,
    };
    match plan {
        Plan::NotAvailable(reason) => result.status = Status::NotAvailable(reason),
        Plan::Invalid(reason) => result.status = Status::Error(reason),
        Plan::Query(target) => {
            result.kind = Some(target.kind);
            let (status, balances) = providers::query(client, &target, &token.secret, timeout).await;
            result.status = status;
            result.balances = balances;
        }
    }
    result.checked_at = now_ms();
    result
}

/// A cheap request with the key (the model list) and what its answer says about the key.
pub async fn validate(client: &reqwest::Client, input: CheckInput<'_>, timeout: Duration) -> Validity {
    let CheckInput { channel, endpoint, token } = input;
    let url = crate::upstream::url(channel, endpoint, crate::upstream::Operation::Models, "");
    let mut headers = reqwest::header::HeaderMap::new();
    crate::upstream::auth_headers(channel, endpoint, token, crate::upstream::Operation::Models, &mut headers);
    let shown = url.split('?').next().unwrap_or(&url).to_string();
    let resp = match client.get(&url).headers(headers).send().await {
        Ok(r) => r,
        Err(e) => {
            let (_, words) = failure::transport(&e, Some(timeout));
            return Validity { state: KeyState::Unreachable, detail: format!("GET {shown}: {words}") };
        }
    };
    let status = resp.status().as_u16();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(_) if (200..300).contains(&status) => {
            return Validity { state: KeyState::Unreachable, detail: format!("GET {shown}: the body broke off") };
        }
        Err(_) => Default::default(),
    };
    classify_key(status, &body, &token.secret)
}

/// Classifies a model-list answer: the one failure classification ([`FailureClass::of_answer`]) seen as key
/// validity, with what was seen (`HTTP 401: ...`, redacted against `secret`).
pub fn classify_key(status: u16, body: &[u8], secret: &crate::config::Secret) -> Validity {
    Validity { state: FailureClass::of_answer(status, body).into(), detail: failure::describe(status, body, secret) }
}

/// What to check and how.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Channel names to check; empty: every enabled channel.
    pub channels: Vec<String>,
    /// Checks in flight at once.
    pub concurrency: usize,
    /// Bound on each HTTP request.
    pub timeout: Duration,
    /// Also probe each key's validity.
    pub validate: bool,
    /// Results younger than this come from the store (ignored without a store or with `refresh`).
    pub ttl: Option<Duration>,
    pub refresh: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            concurrency: 8,
            timeout: Duration::from_secs(15),
            validate: false,
            ttl: None,
            refresh: false,
        }
    }
}

/// (channel, endpoint, token) indices of the keys to check: enabled tokens of the named channels, or of every
/// enabled channel when none are named.
pub fn targets(snapshot: &Snapshot, channels: &[String]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for (ci, ch) in snapshot.channels.iter().enumerate() {
        let wanted = if channels.is_empty() { ch.enabled } else { channels.iter().any(|n| **n == *ch.name) };
        if !wanted {
            continue;
        }
        for (ei, ep) in ch.endpoints.iter().enumerate() {
            for (ti, t) in ep.tokens.iter().enumerate() {
                if t.enabled {
                    out.push((ci, ei, ti));
                }
            }
        }
    }
    out
}

/// Checks every target key, at most `opts.concurrency` at once; results in configuration order. Fresh results
/// are saved to `store`. `on_done` is called once per finished key (progress bars).
pub async fn check_all(
    snapshot: Arc<Snapshot>,
    opts: &CheckOptions,
    store: Option<&dyn BalanceStore>,
    on_done: &(dyn Fn() + Send + Sync),
) -> Vec<BalanceResult> {
    let targets = targets(&snapshot, &opts.channels);
    let now = now_ms();
    let client = crate::upstream::probe_client(opts.timeout);
    let limit = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let mut slots: Vec<Option<BalanceResult>> = vec![None; targets.len()];
    let mut tasks = tokio::task::JoinSet::new();
    for (i, &(ci, ei, ti)) in targets.iter().enumerate() {
        let (ch, ep, tok) = (
            &snapshot.channels[ci],
            &snapshot.channels[ci].endpoints[ei],
            &snapshot.channels[ci].endpoints[ei].tokens[ti],
        );
        let cached = match (store, opts.ttl) {
            (Some(s), Some(ttl)) if !opts.refresh => s.recent(&ch.name, &ep.name, &tok.fingerprint, ttl, now),
            _ => None,
        };
        if let Some(mut c) = cached
            && !opts.validate
        {
            c.cached = true;
            slots[i] = Some(c);
            on_done();
            continue;
        }
        let (snapshot, client, limit) = (snapshot.clone(), client.clone(), limit.clone());
        let (timeout, validate_key) = (opts.timeout, opts.validate);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let ch = &snapshot.channels[ci];
            let input = CheckInput { channel: ch, endpoint: &ch.endpoints[ei], token: &ch.endpoints[ei].tokens[ti] };
            let mut r = check(&client, input.clone(), timeout).await;
            if validate_key {
                r.key = Some(validate(&client, input, timeout).await);
            }
            (i, r)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, r)) => slots[i] = Some(r),
            Err(e) => tracing::error!("a balance check task failed: {e}"),
        }
        on_done();
    }
    let results: Vec<BalanceResult> = slots
        .into_iter()
        .zip(&targets)
        .map(|(r, &(ci, ei, ti))| {
            r.unwrap_or_else(|| {
                let ch = &snapshot.channels[ci];
                let tok = &ch.endpoints[ei].tokens[ti];
                BalanceResult {
                    channel: ch.name.to_string(),
                    endpoint: ch.endpoints[ei].name.to_string(),
                    token_key: tok.token_key.to_string(),
                    fingerprint: tok.fingerprint.to_string(),
                    kind: None,
                    status: Status::Error("the check did not finish".into()),
                    balances: Vec::new(),
                    checked_at: now_ms(),
                    key: None,
                    cached: false,
                }
            })
        })
        .collect();
    if let Some(s) = store {
        let fresh: Vec<BalanceResult> = results.iter().filter(|r| !r.cached).cloned().collect();
        if !fresh.is_empty()
            && let Err(e) = s.save(&fresh)
        {
            tracing::warn!("{e}");
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(channel: &str, fp: &str, status: Status, amounts: &[(f64, &str)], at: i64) -> BalanceResult {
        BalanceResult {
            channel: channel.into(),
            endpoint: "default".into(),
            token_key: fp.into(),
            fingerprint: fp.into(),
            kind: Some(Kind::Deepseek),
            status,
            balances: amounts
                .iter()
                .map(|(a, c)| Balance { amount: *a, currency: c.to_string(), used: None, limit: None })
                .collect(),
            checked_at: at,
            key: None,
            cached: false,
        }
    }

    #[test]
    fn status_serialises_flat_and_round_trips() {
        let r = result("ds", "fp:1", Status::Error("GET /x: HTTP 500".into()), &[], 5);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["reason"], "GET /x: HTTP 500");
        assert_eq!(serde_json::from_value::<BalanceResult>(v).unwrap(), r);
        let ok = result("ds", "fp:1", Status::Ok, &[(1.0, "CNY")], 5);
        let v = serde_json::to_value(&ok).unwrap();
        assert_eq!(v["status"], "ok");
        assert!(v.get("reason").is_none());
        assert_eq!(serde_json::from_value::<BalanceResult>(v).unwrap(), ok);
        let na = result("ds", "fp:1", Status::NotAvailable("none".into()), &[], 5);
        assert_eq!(serde_json::to_value(&na).unwrap()["status"], "n/a");
    }

    #[test]
    fn exhausted_needs_every_currency_dry() {
        let rs = vec![
            result("a", "fp:1", Status::Ok, &[(0.0, "USD")], 1),
            result("b", "fp:2", Status::Ok, &[(0.0, "USD"), (3.0, "CNY")], 1),
            result("c", "fp:3", Status::Ok, &[(-1.5, "CNY")], 1),
            result("d", "fp:4", Status::Error("x".into()), &[], 1),
            result("e", "fp:5", Status::Ok, &[(0.01, "USD")], 1),
        ];
        assert_eq!(exhausted(&rs), vec![("a".into(), "fp:1".into()), ("c".into(), "fp:3".into())]);
        assert!(rs[1].below(1.0));
        assert!(!rs[4].below(0.01));
        assert!(!rs[3].below(100.0));
    }

    #[test]
    fn memory_store_ttl_and_history() {
        let s = MemoryStore::default();
        s.save(&[result("a", "fp:1", Status::Ok, &[(5.0, "USD")], 1_000)]).unwrap();
        s.save(&[result("a", "fp:1", Status::Ok, &[(4.0, "USD")], 2_000)]).unwrap();
        s.save(&[result("b", "fp:2", Status::Ok, &[(9.0, "USD")], 3_000)]).unwrap();
        let r = s.recent("a", "default", "fp:1", Duration::from_secs(5), 6_000).unwrap();
        assert_eq!(r.balances[0].amount, 4.0);
        assert!(s.recent("a", "default", "fp:1", Duration::from_millis(500), 6_000).is_none());
        assert_eq!(s.history(Some("a"), 0).unwrap().len(), 2);
        assert_eq!(s.history(None, 1_500).unwrap().len(), 2);
    }
}
