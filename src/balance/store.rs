//! Balance results in the redb store, and what `serve` does with them.
//!
//! Owns the `balances` table layout (key `<channel>/<endpoint>/<fingerprint>/<checked_at ms, 16 digits>`, value
//! the JSON [`BalanceResult`], so history is kept and sorts by key then time), the store operations behind
//! `balance check` / `balance history` ([`SaveBalances`], [`BalanceHistory`]), [`StoreBalances`] (the
//! [`BalanceStore`] over `store::Access`, direct or through a running server), and [`apply_cooldowns`]: a key
//! whose balance is at or below zero is cooled down until the next check, and recovers when a check shows credit.
//! Must not run on the request path.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BalanceResult, BalanceStore, StoreError, exhausted};
use crate::catalog::Snapshot;
use crate::live::health::Health;
use crate::store::{Access, KvTable, LiveOp, Op, Store};

/// The cooldown reason of a key that ran dry (shown in `tags query` exclusions).
pub const EXHAUSTED_REASON: &str = "balance at or below zero";

/// The live operation a `balance check` sends its fresh results to while a server runs: the server saves them and
/// applies [`apply_cooldowns`] to its health (`control` registers what it does).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BalanceReport(pub Vec<BalanceResult>);

impl LiveOp for BalanceReport {
    const NAME: &'static str = "balance_report";
    type Reply = ();
}

/// The store key of one result.
pub fn key(r: &BalanceResult) -> String {
    format!("{}/{}/{}/{:016}", r.channel, r.endpoint, r.fingerprint, r.checked_at.max(0))
}

/// Appends results to the history, and deletes history older than `history_days` (`balance.history_days`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SaveBalances {
    pub results: Vec<BalanceResult>,
    /// Days of history to keep; `None` or 0: keep everything.
    #[serde(default)]
    pub history_days: Option<u32>,
}

impl Op for SaveBalances {
    const NAME: &'static str = "balance_save";
    type Reply = ();
    fn run(self, store: &Store) -> anyhow::Result<()> {
        let mut puts = Vec::with_capacity(self.results.len());
        for mut r in self.results {
            r.cached = false;
            puts.push((key(&r), serde_json::to_vec(&r)?));
        }
        let removes = match self.history_days.filter(|d| *d > 0) {
            Some(days) => expired(store, super::now_ms() - i64::from(days) * 86_400_000)?,
            None => Vec::new(),
        };
        store.apply_kv(KvTable::Balances, &[], &removes, &puts)?;
        Ok(())
    }
}

/// Keys of results checked before `cutoff_ms` (the time is the key's last 16 digits).
fn expired(store: &Store, cutoff_ms: i64) -> Result<Vec<String>, crate::store::StoreError> {
    Ok(store
        .list_raw(KvTable::Balances)?
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.rsplit('/').next().and_then(|t| t.parse::<i64>().ok()).is_some_and(|t| t < cutoff_ms))
        .collect())
}

/// Results checked at or after `since_ms`, of one channel or all, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BalanceHistory {
    pub channel: Option<String>,
    pub since_ms: i64,
}

impl Op for BalanceHistory {
    const NAME: &'static str = "balance_history";
    type Reply = Vec<BalanceResult>;
    fn run(self, store: &Store) -> anyhow::Result<Vec<BalanceResult>> {
        let prefix = self.channel.as_ref().map(|c| format!("{c}/"));
        let mut out: Vec<BalanceResult> = Vec::new();
        for (k, bytes) in store.list_raw(KvTable::Balances)? {
            if prefix.as_ref().is_some_and(|p| !k.starts_with(p.as_str())) {
                continue;
            }
            // A row this binary cannot read (a newer router wrote it) is skipped, not fatal for the report.
            let Ok(r) = serde_json::from_slice::<BalanceResult>(&bytes) else { continue };
            if r.checked_at >= self.since_ms && self.channel.as_deref().is_none_or(|c| r.channel == c) {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.checked_at);
        Ok(out)
    }
}

/// A [`BalanceStore`] over the store. Through a running server, saving goes to [`BalanceReport`] so the server also
/// cools down keys that ran dry.
pub struct StoreBalances<'a> {
    access: &'a Access,
    /// `balance.history_days` (applied when saving directly; a running server applies its own).
    history_days: Option<u32>,
    /// Rows read once for `recent` (the TTL window at the first call).
    window: Mutex<Option<Vec<BalanceResult>>>,
}

impl<'a> StoreBalances<'a> {
    pub fn new(access: &'a Access) -> Self {
        StoreBalances { access, history_days: None, window: Mutex::new(None) }
    }

    /// Deletes history older than `days` when saving (0: keep everything).
    pub fn keep_days(mut self, days: u32) -> Self {
        self.history_days = Some(days);
        self
    }
}

impl BalanceStore for StoreBalances<'_> {
    fn recent(
        &self,
        channel: &str,
        endpoint: &str,
        fingerprint: &str,
        ttl: Duration,
        now_ms: i64,
    ) -> Option<BalanceResult> {
        let oldest = now_ms.saturating_sub(ttl.as_millis() as i64);
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.is_none() {
            match self.access.run(BalanceHistory { channel: None, since_ms: oldest }) {
                Ok(rows) => *window = Some(rows),
                Err(e) => {
                    tracing::warn!("stored balances could not be read, asking the providers: {e:#}");
                    *window = Some(Vec::new());
                }
            }
        }
        window
            .as_ref()?
            .iter()
            .filter(|r| r.channel == channel && r.endpoint == endpoint && r.fingerprint == fingerprint)
            .filter(|r| r.checked_at >= oldest)
            .max_by_key(|r| r.checked_at)
            .cloned()
    }

    fn save(&self, results: &[BalanceResult]) -> Result<(), StoreError> {
        let err = |e: anyhow::Error| StoreError(format!("{e:#}"));
        if self.access.is_remote() {
            self.access.run_live(BalanceReport(results.to_vec())).map_err(err)?;
        } else {
            let op = SaveBalances { results: results.to_vec(), history_days: self.history_days };
            self.access.run(op).map_err(err)?;
        }
        Ok(())
    }

    fn history(&self, channel: Option<&str>, since_ms: i64) -> Result<Vec<BalanceResult>, StoreError> {
        self.access
            .run(BalanceHistory { channel: channel.map(str::to_string), since_ms })
            .map_err(|e| StoreError(format!("{e:#}")))
    }
}

/// What [`apply_cooldowns`] did.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Token health keys cooled down.
    pub cooled: Vec<String>,
    /// Token health keys whose balance cooldown ended.
    pub recovered: Vec<String>,
}

/// Cools down every token of a (channel, fingerprint) whose balance is at or below zero for `hold` (until the
/// next check), and lifts that cooldown from tokens a check shows with credit. Other cooldowns are untouched;
/// failed and n/a checks change nothing.
pub fn apply_cooldowns(snap: &Snapshot, results: &[BalanceResult], health: &Health, hold: Duration) -> Applied {
    let dry = exhausted(results);
    let mut applied = Applied::default();
    let with_credit: Vec<(&str, &str)> = results
        .iter()
        .filter(|r| r.status == super::Status::Ok && !r.balances.is_empty() && !r.is_exhausted())
        .map(|r| (r.channel.as_str(), r.fingerprint.as_str()))
        .filter(|(c, f)| !dry.iter().any(|(dc, df)| dc == c && df == f))
        .collect();
    for ch in &snap.channels {
        for ep in &ch.endpoints {
            for tok in &ep.tokens {
                let is = |c: &str, f: &str| c == &*ch.name && f == &*tok.fingerprint;
                if dry.iter().any(|(c, f)| is(c, f)) {
                    health.fail(&tok.health_key, hold, hold, Some(hold), EXHAUSTED_REASON);
                    applied.cooled.push(tok.health_key.to_string());
                } else if with_credit.iter().any(|(c, f)| is(c, f)) && health.recover(&tok.health_key, EXHAUSTED_REASON)
                {
                    applied.recovered.push(tok.health_key.to_string());
                }
            }
        }
    }
    applied
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::balance::{Balance, Status};

    fn result(channel: &str, fp: &str, amount: f64, at: i64) -> BalanceResult {
        BalanceResult {
            channel: channel.into(),
            endpoint: "default".into(),
            token_key: "k".into(),
            fingerprint: fp.into(),
            kind: None,
            status: Status::Ok,
            balances: vec![Balance::usd(amount)],
            checked_at: at,
            key: None,
            cached: false,
        }
    }

    #[test]
    fn history_and_recent_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let access = Access::Direct(Store::open(&dir.path().join("s.redb")).unwrap());
        let s = StoreBalances::new(&access);
        s.save(&[result("a", "fp:1", 5.0, 1_000), result("b", "fp:2", 1.0, 2_000)]).unwrap();
        s.save(&[result("a", "fp:1", 4.0, 3_000)]).unwrap();
        let a = s.history(Some("a"), 0).unwrap();
        assert_eq!(a.iter().map(|r| r.balances[0].amount).collect::<Vec<_>>(), [5.0, 4.0]);
        assert_eq!(s.history(None, 1_500).unwrap().len(), 2);
        // A channel whose name starts like another is not mixed in.
        s.save(&[result("ab", "fp:3", 9.0, 4_000)]).unwrap();
        assert_eq!(s.history(Some("a"), 0).unwrap().len(), 2);
        let fresh = StoreBalances::new(&access);
        assert_eq!(
            fresh.recent("a", "default", "fp:1", Duration::from_secs(5), 6_000).unwrap().balances[0].amount,
            4.0
        );
        let stale = StoreBalances::new(&access);
        assert!(stale.recent("a", "default", "fp:1", Duration::from_millis(500), 6_000).is_none());
    }

    #[test]
    fn saving_prunes_history_older_than_history_days() {
        let dir = tempfile::tempdir().unwrap();
        let access = Access::Direct(Store::open(&dir.path().join("s.redb")).unwrap());
        let now = crate::balance::now_ms();
        let day = 86_400_000;
        StoreBalances::new(&access)
            .save(&[result("a", "fp:1", 5.0, now - 200 * day), result("a", "fp:1", 4.0, now - 10 * day)])
            .unwrap();
        assert_eq!(StoreBalances::new(&access).history(None, 0).unwrap().len(), 2, "no pruning without a limit");
        let s = StoreBalances::new(&access).keep_days(180);
        s.save(&[result("a", "fp:1", 3.0, now)]).unwrap();
        let left: Vec<f64> = s.history(None, 0).unwrap().iter().map(|r| r.balances[0].amount).collect();
        assert_eq!(left, [4.0, 3.0]);
        StoreBalances::new(&access).keep_days(0).save(&[result("a", "fp:1", 2.0, now - 999 * day)]).unwrap();
        assert_eq!(s.history(None, 0).unwrap().len(), 3, "0 keeps everything");
    }

    #[test]
    fn dry_keys_cool_and_recover_without_touching_other_cooldowns() {
        let yaml = "channels:\n  - name: c\n    base_url: http://127.0.0.1:9/v1\n    keys: [{name: one, key: sk-one}, {name: two, key: sk-two}]\n    models: [m]\n";
        let cfg = crate::config::parse(std::path::Path::new("t.yaml"), yaml, &|_| None).unwrap();
        let snap = Snapshot::build(Arc::new(cfg), &[], &Default::default(), false);
        let toks = &snap.channels[0].endpoints[0].tokens;
        let (one, two) = (&toks[0], &toks[1]);
        let health = Health::new();
        health.fail(&two.health_key, Duration::from_secs(60), Duration::from_secs(60), None, "HTTP 401");
        let hold = Duration::from_secs(60);
        let a = apply_cooldowns(&snap, &[result("c", &one.fingerprint, 0.0, 1)], &health, hold);
        assert_eq!(a.cooled, [one.health_key.to_string()]);
        assert_eq!(health.view(&one.health_key).reason.as_deref(), Some(EXHAUSTED_REASON));
        // Credit again: the balance cooldown ends; the auth cooldown of the other key stays.
        let b = apply_cooldowns(
            &snap,
            &[result("c", &one.fingerprint, 3.0, 2), result("c", &two.fingerprint, 3.0, 2)],
            &health,
            hold,
        );
        assert_eq!(b.recovered, [one.health_key.to_string()]);
        assert_eq!(health.cooling(&one.health_key, Instant::now()), None);
        assert!(health.cooling(&two.health_key, Instant::now()).is_some());
    }
}
