//! Health of endpoints, tokens and (channel, model) pairs: cooldowns and observed latency.
//!
//! Owns the mutable state beside the immutable catalogue. Critical sections are short (a hash map lookup under
//! a `std` mutex) and never span an await. Cooldowns double on repeated failures up to a cap and clear on
//! success. Keys are the catalogue's `health_key`s, so state survives snapshot swaps. Each cooldown and each
//! recovery is published once on the event stream (`events`), after the lock is released.
//!
//! Several instances: every change of a cooldown (cooled, cleared) is also sent, without waiting, to the
//! subscriber set with [`Health::publish_to`] (the shared backend, `live::shared`), and cooldowns learned by other
//! instances come back through [`Health::apply`]; observed latency is read ([`Health::latencies`]) and others'
//! merged in ([`Health::merge_ttfb`]) periodically. This module itself does no I/O.
//!
//! Nearly always nothing cools: [`Health::nothing_cools`] answers that from two atomics, without the lock or a
//! key, so routing and the attempt loop skip their per-candidate lookups (and the `model_key` they would format).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::CooldownConfig;
use crate::events::{CoolLevel, Event, Events};
use crate::failure::{CoolTarget, FailureClass};

#[derive(Debug, Clone, Default)]
struct Entry {
    failures: u32,
    until: Option<Instant>,
    reason: Option<String>,
    /// EWMA of time to first byte, ms.
    ttfb_ms: Option<f64>,
    ok: u64,
    errors: u64,
}

/// A snapshot of one key's state, for reports and `tags query`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthView {
    pub cooling_for: Option<Duration>,
    pub reason: Option<String>,
    pub ttfb_ms: Option<f64>,
    pub ok: u64,
    pub errors: u64,
}

/// One cooling key, for the admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct Cooling {
    pub key: String,
    pub remaining: Duration,
    pub reason: String,
    pub failures: u32,
}

#[derive(Debug)]
pub struct Health {
    /// Keyed by health keys the catalogue makes (a fast hash: no client chooses them).
    map: Mutex<HashMap<String, Entry, rustc_hash::FxBuildHasher>>,
    events: Events,
    /// Where cooldown changes go for other instances (none: a single instance).
    changes: OnceLock<tokio::sync::mpsc::UnboundedSender<CoolChange>>,
    /// Entries whose `until` is set (cooling, or expired but not yet cleared by a success). Changed under the lock.
    cooled: AtomicUsize,
    /// The latest `until` ever set, in ns after `epoch` (0: never). Only grows: when it has passed, nothing cools.
    latest_until: AtomicU64,
    epoch: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            map: Mutex::default(),
            events: Events::default(),
            changes: OnceLock::new(),
            cooled: AtomicUsize::new(0),
            latest_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

/// A cooldown that started or ended on this instance (or, through [`Health::apply`], on another one).
#[derive(Debug, Clone, PartialEq)]
pub enum CoolChange {
    /// `key` cools until `until_ms` (unix ms) for `reason`.
    Cool { key: String, until_ms: i64, reason: String },
    /// `key` is usable again.
    Clear { key: String },
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The key of a (channel, model) pair.
pub fn model_key(channel: &str, model: &str) -> String {
    format!("{channel}#{model}")
}

const EWMA_ALPHA: f64 = 0.3;

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends every later cooldown change of this instance to `tx` (once; later calls are ignored).
    pub fn publish_to(&self, tx: tokio::sync::mpsc::UnboundedSender<CoolChange>) {
        let _ = self.changes.set(tx);
    }

    fn emit(&self, change: CoolChange) {
        if let Some(tx) = self.changes.get() {
            let _ = tx.send(change);
        }
    }

    /// Applies a cooldown change learned from another instance, without sending it on. A cooldown ending
    /// before one this instance already has does not shorten it.
    pub fn apply(&self, change: CoolChange) {
        let mut map = self.map.lock().expect("health lock");
        match change {
            CoolChange::Cool { key, until_ms, reason } => {
                let left = until_ms - unix_ms();
                if left <= 0 {
                    return;
                }
                let until = Instant::now() + Duration::from_millis(left as u64);
                let e = map.entry(key).or_default();
                if e.until.is_none_or(|u| u < until) {
                    if e.until.is_none() {
                        self.cooled.fetch_add(1, Ordering::AcqRel);
                    }
                    self.latest_until.fetch_max(self.ns(until).saturating_add(1), Ordering::AcqRel);
                    e.until = Some(until);
                    e.reason = Some(reason);
                }
            }
            CoolChange::Clear { key } => {
                if let Some(e) = map.get_mut(&key) {
                    if e.until.take().is_some() {
                        self.cooled.fetch_sub(1, Ordering::AcqRel);
                    }
                    e.failures = 0;
                    e.reason = None;
                }
            }
        }
    }

    /// The stream cooldowns and recoveries are published on (the server's one event stream).
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Cooldowns active now, by level (endpoint, token, model), for the metrics scrape.
    pub fn cooling_by_level(&self, now: Instant) -> [(CoolLevel, u64); 3] {
        let mut counts = CoolLevel::ALL.map(|l| (l, 0u64));
        let map = self.map.lock().expect("health lock");
        for key in map.iter().filter(|(_, e)| e.until.is_some_and(|u| u > now)).map(|(k, _)| k) {
            let level = CoolLevel::of_key(key);
            if let Some(c) = counts.iter_mut().find(|(l, _)| *l == level) {
                c.1 += 1;
            }
        }
        counts
    }

    /// No key is cooling at `now`: true when no cooldown was ever set, every one was cleared, or the latest one
    /// has ended. Two atomic loads, no lock; when false, ask [`Health::cooling`] per key.
    pub fn nothing_cools(&self, now: Instant) -> bool {
        self.cooled.load(Ordering::Acquire) == 0 || self.ns(now) >= self.latest_until.load(Ordering::Acquire)
    }

    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Remaining cooldown of `key`, if it is cooling.
    pub fn cooling(&self, key: &str, now: Instant) -> Option<Duration> {
        if self.nothing_cools(now) {
            return None;
        }
        let map = self.map.lock().expect("health lock");
        let until = map.get(key)?.until?;
        (until > now).then(|| until - now)
    }

    /// Cools `key` down after a failure: `fixed` (e.g. Retry-After) when given, else `base` doubled per
    /// consecutive failure, capped at `cap`.
    pub fn fail(&self, key: &str, base: Duration, cap: Duration, fixed: Option<Duration>, reason: &str) {
        let (d, failures) = {
            let mut map = self.map.lock().expect("health lock");
            let e = entry(&mut map, key);
            e.failures = e.failures.saturating_add(1);
            e.errors += 1;
            let d = fixed.unwrap_or_else(|| {
                let factor = 1u32.checked_shl(e.failures.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
                base.saturating_mul(factor).min(cap.max(base))
            });
            let until = Instant::now() + d;
            if e.until.is_none() {
                self.cooled.fetch_add(1, Ordering::AcqRel);
            }
            // Rounded up, so `nothing_cools` is never true while `until` has not passed.
            self.latest_until.fetch_max(self.ns(until).saturating_add(1), Ordering::AcqRel);
            e.until = Some(until);
            e.reason = Some(reason.to_string());
            (d, e.failures)
        };
        let until_ms = unix_ms().saturating_add(d.as_millis().min(i64::MAX as u128) as i64);
        self.emit(CoolChange::Cool { key: key.to_string(), until_ms, reason: reason.to_string() });
        self.events.publish_with(|| Event::Cooled {
            key: key.into(),
            level: CoolLevel::of_key(key),
            reason: reason.into(),
            for_ms: d.as_millis() as u64,
            failures,
        });
    }

    fn recovered(&self, key: &str) {
        self.emit(CoolChange::Clear { key: key.to_string() });
        self.events.publish_with(|| Event::Recovered { key: key.into(), level: CoolLevel::of_key(key) });
    }

    /// Clears failures of `key` after a success.
    pub fn succeed(&self, key: &str) {
        let was_cooling = {
            let mut map = self.map.lock().expect("health lock");
            if let Some(e) = map.get_mut(key) {
                let was = e.until.take().is_some();
                if was {
                    self.cooled.fetch_sub(1, Ordering::AcqRel);
                }
                e.failures = 0;
                e.reason = None;
                e.ok += 1;
                was
            } else {
                map.insert(key.to_string(), Entry { ok: 1, ..Default::default() });
                false
            }
        };
        if was_cooling {
            self.recovered(key);
        }
    }

    /// Ends the cooldown of `key` if it is cooling for `reason` (and only then); returns whether it did.
    pub fn recover(&self, key: &str, reason: &str) -> bool {
        self.end_cooldown(key, |e| e.until.is_some() && e.reason.as_deref() == Some(reason))
    }

    /// Ends the cooldown of `key` when `cooling` says so of its entry; publishes the recovery.
    fn end_cooldown(&self, key: &str, cooling: impl Fn(&Entry) -> bool) -> bool {
        let done = {
            let mut map = self.map.lock().expect("health lock");
            match map.get_mut(key) {
                Some(e) if cooling(e) => {
                    if e.until.take().is_some() {
                        self.cooled.fetch_sub(1, Ordering::AcqRel);
                    }
                    e.failures = 0;
                    e.reason = None;
                    true
                }
                _ => false,
            }
        };
        if done {
            self.recovered(key);
        }
        done
    }

    /// Every key cooling at `now`: (key, remaining, reason, consecutive failures), by key.
    pub fn cooling_all(&self, now: Instant) -> Vec<Cooling> {
        let map = self.map.lock().expect("health lock");
        let mut out: Vec<Cooling> = map
            .iter()
            .filter_map(|(k, e)| {
                let until = e.until.filter(|u| *u > now)?;
                Some(Cooling {
                    key: k.clone(),
                    remaining: until - now,
                    reason: e.reason.clone().unwrap_or_default(),
                    failures: e.failures,
                })
            })
            .collect();
        drop(map);
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Ends the cooldown of `key` whatever its reason (an operator's decision); returns whether it was cooling.
    pub fn clear(&self, key: &str) -> bool {
        let now = Instant::now();
        self.end_cooldown(key, |e| e.until.is_some_and(|u| u > now))
    }

    /// Records a time to first byte for an endpoint.
    pub fn observe_ttfb(&self, key: &str, ms: f64) {
        let mut map = self.map.lock().expect("health lock");
        let e = entry(&mut map, key);
        e.ttfb_ms = Some(match e.ttfb_ms {
            Some(prev) => prev * (1.0 - EWMA_ALPHA) + ms * EWMA_ALPHA,
            None => ms,
        });
    }

    /// Every observed time to first byte (EWMA, ms), for other instances (`live::shared`).
    pub fn latencies(&self) -> Vec<(String, f64)> {
        let map = self.map.lock().expect("health lock");
        map.iter().filter_map(|(k, e)| Some((k.clone(), e.ttfb_ms?))).collect()
    }

    /// Merges a time to first byte other instances observed: taken as it is when this one has none, else
    /// counted as one more observation.
    pub fn merge_ttfb(&self, key: &str, ms: f64) {
        self.observe_ttfb(key, ms);
    }

    pub fn view(&self, key: &str) -> HealthView {
        let now = Instant::now();
        let map = self.map.lock().expect("health lock");
        match map.get(key) {
            None => HealthView::default(),
            Some(e) => HealthView {
                cooling_for: e.until.filter(|u| *u > now).map(|u| u - now),
                reason: e.reason.clone().filter(|_| e.until.is_some_and(|u| u > now)),
                ttfb_ms: e.ttfb_ms,
                ok: e.ok,
                errors: e.errors,
            },
        }
    }

    /// Cools down what a failure of `class` cools (the failure table, [`FailureClass::cooldown`]);
    /// `retry_after` replaces the backoff where the class honours it.
    pub fn cool(
        &self,
        class: FailureClass,
        cfg: &CooldownConfig,
        keys: &CoolKeys<'_>,
        retry_after: Option<Duration>,
        reason: &str,
    ) {
        let Some(c) = class.cooldown(cfg) else { return };
        let fixed = retry_after.filter(|_| c.honours_retry_after);
        match c.target {
            CoolTarget::Endpoint => self.fail(keys.endpoint, c.base, c.cap, fixed, reason),
            CoolTarget::Token => self.fail(keys.token, c.base, c.cap, fixed, reason),
            CoolTarget::ChannelModel => self.fail(&model_key(keys.channel, keys.model), c.base, c.cap, fixed, reason),
        }
    }
}

/// The health keys one attempt touches.
pub struct CoolKeys<'a> {
    pub channel: &'a str,
    pub endpoint: &'a str,
    pub token: &'a str,
    pub model: &'a str,
}

/// `key`'s entry, made when missing (the key is copied only then: this runs for every proxied request).
fn entry<'m>(map: &'m mut HashMap<String, Entry, rustc_hash::FxBuildHasher>, key: &str) -> &'m mut Entry {
    if !map.contains_key(key) {
        map.insert(key.to_string(), Entry::default());
    }
    map.get_mut(key).expect("present or just inserted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldown_doubles_caps_and_clears_on_success() {
        let h = Health::new();
        let base = Duration::from_secs(10);
        let cap = Duration::from_secs(30);
        h.fail("e", base, cap, None, "500");
        let first = h.cooling("e", Instant::now()).unwrap();
        assert!(first <= base && first > base / 2);
        h.fail("e", base, cap, None, "500");
        assert!(h.cooling("e", Instant::now()).unwrap() > base);
        h.fail("e", base, cap, None, "500");
        h.fail("e", base, cap, None, "500");
        assert!(h.cooling("e", Instant::now()).unwrap() <= cap);
        h.succeed("e");
        assert_eq!(h.cooling("e", Instant::now()), None);
    }

    #[test]
    fn retry_after_overrides_backoff_and_expiry_ends_cooling() {
        let h = Health::new();
        h.fail("t", Duration::from_secs(60), Duration::from_secs(60), Some(Duration::ZERO), "429");
        assert_eq!(h.cooling("t", Instant::now() + Duration::from_millis(1)), None);
    }

    #[test]
    fn cooldowns_and_recoveries_are_published_once() {
        let h = Health::new();
        let mut rx = h.events().subscribe();
        h.succeed("main/default");
        h.fail("main/default", Duration::from_secs(10), Duration::from_secs(30), None, "HTTP 500");
        h.succeed("main/default");
        h.succeed("main/default");
        match rx.try_recv().unwrap() {
            Event::Cooled { key, level, for_ms, failures, .. } => {
                assert_eq!((&*key, level, for_ms, failures), ("main/default", CoolLevel::Endpoint, 10_000, 1));
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(rx.try_recv().unwrap(), Event::Recovered { level: CoolLevel::Endpoint, .. }));
        assert!(rx.try_recv().is_err());
        h.fail("main#m", Duration::from_secs(10), Duration::from_secs(30), None, "404");
        let counts = h.cooling_by_level(Instant::now());
        assert_eq!(counts, [(CoolLevel::Endpoint, 0), (CoolLevel::Token, 0), (CoolLevel::Model, 1)]);
    }

    #[test]
    fn changes_are_sent_and_applied_without_echo() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let a = Health::new();
        a.publish_to(tx);
        a.fail("e", Duration::from_secs(30), Duration::from_secs(30), None, "HTTP 500");
        a.succeed("e");
        a.succeed("e"); // not cooling: nothing to tell
        let cool = rx.try_recv().unwrap();
        assert!(matches!(&cool, CoolChange::Cool { key, reason, .. } if key == "e" && reason == "HTTP 500"));
        assert_eq!(rx.try_recv().unwrap(), CoolChange::Clear { key: "e".into() });
        assert!(rx.try_recv().is_err());

        let b = Health::new();
        let (tx_b, mut rx_b) = tokio::sync::mpsc::unbounded_channel();
        b.publish_to(tx_b);
        b.apply(cool);
        assert!(!b.nothing_cools(Instant::now()), "an applied cooldown counts");
        let left = b.cooling("e", Instant::now()).unwrap();
        assert!(left > Duration::from_secs(28) && left <= Duration::from_secs(30));
        assert_eq!(b.view("e").reason.as_deref(), Some("HTTP 500"));
        b.apply(CoolChange::Clear { key: "e".into() });
        assert_eq!(b.cooling("e", Instant::now()), None);
        assert!(b.nothing_cools(Instant::now()), "an applied clear counts");
        assert!(rx_b.try_recv().is_err(), "applied changes are not sent on");
        b.apply(CoolChange::Cool { key: "x".into(), until_ms: unix_ms() - 1, reason: "old".into() });
        assert_eq!(b.cooling("x", Instant::now()), None);
    }

    #[test]
    fn nothing_cools_until_a_failure_and_again_after_success_or_expiry() {
        let h = Health::new();
        let now = Instant::now();
        assert!(h.nothing_cools(now));
        h.observe_ttfb("e", 10.0);
        h.succeed("e");
        assert!(h.nothing_cools(Instant::now()));
        h.fail("e", Duration::from_secs(60), Duration::from_secs(60), None, "500");
        h.fail("e", Duration::from_secs(60), Duration::from_secs(60), None, "500");
        h.fail("t", Duration::from_secs(60), Duration::from_secs(60), None, "429");
        assert!(!h.nothing_cools(Instant::now()));
        assert!(h.nothing_cools(Instant::now() + Duration::from_secs(600)), "every cooldown has ended");
        h.succeed("e");
        assert!(!h.nothing_cools(Instant::now()), "`t` still cools");
        assert!(h.cooling("t", Instant::now()).is_some());
        assert!(h.recover("t", "429"));
        assert!(h.nothing_cools(Instant::now()));
        assert_eq!(h.cooling("t", Instant::now()), None);
    }

    #[test]
    fn ttfb_is_smoothed() {
        let h = Health::new();
        h.observe_ttfb("e", 100.0);
        h.observe_ttfb("e", 200.0);
        let v = h.view("e").ttfb_ms.unwrap();
        assert!((v - 130.0).abs() < 1e-9);
    }
}
