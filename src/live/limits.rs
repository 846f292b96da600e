//! Gateway-key admission: requests and tokens per minute, concurrent requests and budget spend, per key name,
//! in this process's memory.
//!
//! Owns the two operations a request makes — [`Limiter::admit`] before anything is routed (refuse, or hand out a
//! [`Ticket`]) and [`Limiter::settle`] when its record is finished (charge real tokens and cost) — plus seeding
//! spend from the records at start ([`Limiter::seed`]) and the period arithmetic of budgets ([`period_bounds`],
//! in the configured time zone). The limit values themselves ([`Limits`], [`Budget`], [`Period`]) are
//! configuration (`config::key_rules`), re-exported here. Windows are token buckets kept as one "theoretical
//! arrival time" per key in an atomic (GCRA): admission is a compare-and-swap, no lock; the parallel counter is
//! an atomic; only the budget (spend and its period) sits behind a mutex held for a few instructions. The key
//! map is read-locked for one lookup. A shared (Redis) backend implements the same two operations.
//!
//! Budgets: a request is admitted while the period's spend is below the budget and charged its recorded cost
//! when it ends. Requests already admitted when the spend crosses the budget still finish and are charged, so
//! the spend can end above the budget by at most the cost of the requests that were in flight at that moment
//! (`max_parallel` bounds how many); no request is admitted after it.
//!
//! Must not: do I/O, hold a lock across an await, or know about HTTP, protocols or the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jiff::ToSpan;
use jiff::tz::TimeZone;

const MINUTE_NS: i64 = 60_000_000_000;

/// The values of a key's limits are configuration (YAML keys carry them); admission is this module's.
pub use crate::config::{Budget, Limits, Period};

/// The budget period containing `now_ms`, as unix ms `[start, end)` in time zone `tz`. `Total`: `[0, i64::MAX)`.
pub fn period_bounds(per: Period, now_ms: i64, tz: &TimeZone) -> (i64, i64) {
    if per == Period::Total {
        return (0, i64::MAX);
    }
    let bounds = || -> Result<(i64, i64), jiff::Error> {
        let now = jiff::Timestamp::from_millisecond(now_ms)?.to_zoned(tz.clone());
        let day = now.start_of_day()?;
        let (start, end) = match per {
            Period::Day => {
                let end = day.checked_add(1.day())?.start_of_day()?;
                (day, end)
            }
            Period::Week => {
                let back = i64::from(now.weekday().to_monday_zero_offset());
                let start = day.checked_sub(back.days())?.start_of_day()?;
                let end = start.checked_add(7.days())?.start_of_day()?;
                (start, end)
            }
            Period::Month | Period::Total => {
                let start = day.first_of_month()?.start_of_day()?;
                let end = start.checked_add(1.month())?.start_of_day()?;
                (start, end)
            }
        };
        Ok((start.timestamp().as_millisecond(), end.timestamp().as_millisecond()))
    };
    // Only out-of-range times fail; treat them as one period without end rather than refusing everything.
    bounds().unwrap_or((0, i64::MAX))
}

/// A refused request: which limit, and what the rate headers say.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub why: Refusal,
    pub rate: Rate,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Requests {
        limit: u32,
        retry_after: Duration,
    },
    Tokens {
        limit: u64,
        retry_after: Duration,
    },
    Parallel {
        limit: u32,
        retry_after: Duration,
    },
    /// The period's spend reached the budget. `resets_at_ms`: when the period ends (`None` for `total`).
    Budget {
        budget: f64,
        spent: f64,
        per: Period,
        resets_at_ms: Option<i64>,
    },
}

impl Refusal {
    /// Seconds to wait before trying again (rate windows and parallel; none for budgets), at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::Requests { retry_after, .. }
            | Refusal::Tokens { retry_after, .. }
            | Refusal::Parallel { retry_after, .. } => Some(ceil_secs(*retry_after).max(1)),
            Refusal::Budget { .. } => None,
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// One window's state as the `X-RateLimit-*` headers show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    /// Until the window is full again.
    pub reset: Duration,
}

/// The windows of a key that has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

/// An admitted request. Hand it to [`Limiter::settle`] when the request ends; dropping it unsettled (a task
/// cancelled) frees its parallel slot and charges nothing.
#[derive(Debug, Default)]
pub struct Ticket {
    state: Option<Arc<KeyState>>,
    /// Frees what a shared backend holds for this request (its parallel slot there).
    release: Option<Release>,
    /// Charges the request's tokens and cost to a shared backend's windows and budget.
    charge: Option<Charge>,
    parallel: bool,
    /// Nanoseconds one token takes in the tokens window (0: no tokens window).
    tok_interval: i64,
    budget: bool,
    started_ms: i64,
}

/// Runs once when a [`Ticket`] ends, settled or dropped.
pub struct Release(Box<dyn FnOnce() + Send + Sync>);

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Release")
    }
}

/// Runs once when a [`Ticket`] is settled, with the request's tokens and cost.
pub struct Charge(Box<dyn FnOnce(u64, Option<f64>) + Send + Sync>);

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Charge")
    }
}

impl Ticket {
    /// Runs `f` when this ticket ends (settled or dropped), e.g. to free a parallel slot held elsewhere.
    pub fn on_release(&mut self, f: impl FnOnce() + Send + Sync + 'static) {
        self.release = Some(Release(Box::new(f)));
    }

    /// Runs `f(tokens, cost)` when this ticket is settled (not when dropped unsettled), e.g. to charge a
    /// shared budget.
    pub fn on_settle(&mut self, f: impl FnOnce(u64, Option<f64>) + Send + Sync + 'static) {
        self.charge = Some(Charge(Box::new(f)));
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(r) = self.release.take() {
            (r.0)();
        }
        if self.parallel
            && let Some(s) = &self.state
        {
            s.parallel.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What `admit` gives an admitted request.
#[derive(Debug, Default)]
pub struct Admit {
    pub ticket: Ticket,
    pub rate: Rate,
}

#[derive(Debug, Default)]
struct KeyState {
    /// GCRA theoretical arrival time of the requests window, unix ns.
    req_tat: AtomicI64,
    /// Same for the tokens window; charged when a request settles.
    tok_tat: AtomicI64,
    parallel: AtomicU32,
    /// The limits the windows were last used with: a changed limit starts its window afresh.
    rpm_seen: AtomicU32,
    tpm_seen: AtomicI64,
    spend: Mutex<Spend>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Spend {
    /// The period this spend belongs to (`None`: not seeded yet), and its bounds in unix ms.
    per: Option<Period>,
    start: i64,
    end: i64,
    usd: f64,
}

/// In-memory admission state of every key with limits.
#[derive(Debug)]
pub struct Limiter {
    /// By key name (our own configuration's names: a fast hash, not SipHash).
    keys: RwLock<HashMap<Arc<str>, Arc<KeyState>, rustc_hash::FxBuildHasher>>,
    tz: RwLock<TimeZone>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(TimeZone::UTC)
    }
}

/// Window arithmetic: `tat` (ns) of a bucket refilled at one unit per `interval` ns, `MINUTE_NS` deep.
fn window(limit: u64, interval: i64, tat: i64, now: i64) -> Window {
    let used = (tat - now).max(0);
    let room = (MINUTE_NS - used).max(0);
    Window { limit, remaining: (room / interval.max(1)) as u64, reset: Duration::from_nanos(used as u64) }
}

impl Limiter {
    pub fn new(tz: TimeZone) -> Limiter {
        Limiter { keys: RwLock::default(), tz: RwLock::new(tz) }
    }

    /// The time zone budget periods follow.
    pub fn set_timezone(&self, tz: TimeZone) {
        *self.tz.write().expect("tz lock") = tz;
    }

    pub fn timezone(&self) -> TimeZone {
        self.tz.read().expect("tz lock").clone()
    }

    fn state(&self, key: &str) -> Arc<KeyState> {
        if let Some(s) = self.keys.read().expect("limiter lock").get(key) {
            return s.clone();
        }
        self.keys.write().expect("limiter lock").entry(Arc::from(key)).or_default().clone()
    }

    /// Admits a request of `key` under `limits` at `now_ms`, or says which limit refuses it. Checks the budget,
    /// then takes a parallel slot, then checks the tokens window, then takes a requests slot; a refusal gives
    /// back what it took.
    pub fn admit(&self, key: &str, limits: &Limits, now_ms: i64) -> Result<Admit, Refused> {
        if limits.is_empty() {
            return Ok(Admit::default());
        }
        let s = self.state(key);
        let now = now_ms.saturating_mul(1_000_000);
        // A plain load first: the limits nearly never change, and a swap is a locked instruction every request.
        if let Some(rpm) = limits.rpm
            && s.rpm_seen.load(Ordering::Acquire) != rpm
            && s.rpm_seen.swap(rpm, Ordering::AcqRel) != rpm
        {
            s.req_tat.store(0, Ordering::Release);
        }
        if let Some(tpm) = limits.tpm
            && s.tpm_seen.load(Ordering::Acquire) != tpm as i64
            && s.tpm_seen.swap(tpm as i64, Ordering::AcqRel) != tpm as i64
        {
            s.tok_tat.store(0, Ordering::Release);
        }
        let rate = self.rate_of(&s, limits, now);
        let refused = |why| Err(Refused { why, rate });
        if let Some(b) = limits.budget {
            let mut sp = s.spend.lock().expect("spend lock");
            self.roll(&mut sp, b.per, now_ms);
            if sp.usd >= b.usd {
                let resets_at_ms = (sp.end != i64::MAX).then_some(sp.end);
                return refused(Refusal::Budget { budget: b.usd, spent: sp.usd, per: b.per, resets_at_ms });
            }
        }
        let mut ticket = Ticket {
            state: Some(s.clone()),
            tok_interval: limits.tpm.map_or(0, |tpm| MINUTE_NS / tpm.max(1) as i64),
            budget: limits.budget.is_some(),
            started_ms: now_ms,
            parallel: false,
            release: None,
            charge: None,
        };
        if let Some(max) = limits.max_parallel {
            if s.parallel.fetch_add(1, Ordering::AcqRel) >= max {
                s.parallel.fetch_sub(1, Ordering::AcqRel);
                return refused(Refusal::Parallel { limit: max, retry_after: Duration::from_secs(1) });
            }
            ticket.parallel = true;
        }
        if let Some(tpm) = limits.tpm {
            let interval = MINUTE_NS / tpm.max(1) as i64;
            let used = s.tok_tat.load(Ordering::Acquire) - now;
            if used >= MINUTE_NS {
                // Wait until there is room for at least one token.
                let wait = used - MINUTE_NS + interval;
                return refused(Refusal::Tokens { limit: tpm, retry_after: Duration::from_nanos(wait as u64) });
            }
        }
        let mut rate = rate;
        if let Some(rpm) = limits.rpm {
            let interval = MINUTE_NS / i64::from(rpm.max(1));
            let mut tat = s.req_tat.load(Ordering::Acquire);
            loop {
                let next = tat.max(now) + interval;
                if next - now > MINUTE_NS {
                    let wait = next - now - MINUTE_NS;
                    return refused(Refusal::Requests { limit: rpm, retry_after: Duration::from_nanos(wait as u64) });
                }
                match s.req_tat.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        rate.requests = Some(window(u64::from(rpm), interval, next, now));
                        break;
                    }
                    Err(t) => tat = t,
                }
            }
        }
        Ok(Admit { ticket, rate })
    }

    fn rate_of(&self, s: &KeyState, limits: &Limits, now: i64) -> Rate {
        Rate {
            requests: limits.rpm.map(|rpm| {
                let interval = MINUTE_NS / i64::from(rpm.max(1));
                window(u64::from(rpm), interval, s.req_tat.load(Ordering::Acquire), now)
            }),
            tokens: limits.tpm.map(|tpm| {
                let interval = MINUTE_NS / tpm.max(1) as i64;
                window(tpm, interval, s.tok_tat.load(Ordering::Acquire), now)
            }),
        }
    }

    /// Moves `sp` to the period containing `now_ms` (spend 0) when it is past its own or was never seeded.
    fn roll(&self, sp: &mut Spend, per: Period, now_ms: i64) {
        if sp.per != Some(per) || now_ms >= sp.end || now_ms < sp.start {
            let (start, end) = period_bounds(per, now_ms, &self.tz.read().expect("tz lock"));
            *sp = Spend { per: Some(per), start, end, usd: 0.0 };
        }
    }

    /// Charges a finished request: its tokens to the tokens window, its cost (unknown: 0) to the budget of the
    /// period it started in, at `now_ms`. Frees its parallel slot.
    pub fn settle(&self, mut ticket: Ticket, tokens: u64, cost: Option<f64>, now_ms: i64) {
        if let Some(c) = ticket.charge.take() {
            (c.0)(tokens, cost);
        }
        let Some(s) = &ticket.state else { return };
        if ticket.tok_interval > 0 && tokens > 0 {
            let now = now_ms.saturating_mul(1_000_000);
            let add = (tokens.min(i64::MAX as u64) as i64).saturating_mul(ticket.tok_interval);
            let _ =
                s.tok_tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| Some(t.max(now).saturating_add(add)));
        }
        if ticket.budget
            && let Some(c) = cost.filter(|c| c.is_finite() && *c > 0.0)
        {
            let mut sp = s.spend.lock().expect("spend lock");
            if sp.per.is_some() && ticket.started_ms >= sp.start && ticket.started_ms < sp.end {
                sp.usd += c;
            }
        }
    }

    /// Sets the spend of `key`'s current `per` period (from the request records), replacing what was counted.
    pub fn seed(&self, key: &str, per: Period, now_ms: i64, spent_usd: f64) {
        let s = self.state(key);
        let (start, end) = period_bounds(per, now_ms, &self.timezone());
        *s.spend.lock().expect("spend lock") = Spend { per: Some(per), start, end, usd: spent_usd };
    }

    /// The budget period `key`'s spend is counted for, if it was seeded or admitted under one.
    pub fn budget_period(&self, key: &str) -> Option<Period> {
        let s = self.keys.read().expect("limiter lock").get(key).cloned()?;
        s.spend.lock().expect("spend lock").per
    }

    /// Spend of `key` in its current period (0 when none is counted).
    pub fn spent(&self, key: &str) -> f64 {
        let s = self.keys.read().expect("limiter lock").get(key).cloned();
        s.map(|s| s.spend.lock().expect("spend lock").usd).unwrap_or(0.0)
    }

    /// Requests of `key` in flight under a parallel limit.
    pub fn in_flight(&self, key: &str) -> u32 {
        let s = self.keys.read().expect("limiter lock").get(key).cloned();
        s.map(|s| s.parallel.load(Ordering::Acquire)).unwrap_or(0)
    }

    /// Forgets keys for which `keep` is false (removed keys); their tickets in flight stay valid.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.keys.write().expect("limiter lock").retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_780_000_000_000;

    fn lim(f: impl FnOnce(&mut Limits)) -> Limits {
        let mut l = Limits::default();
        f(&mut l);
        l
    }

    #[test]
    fn no_limits_costs_nothing_and_keeps_no_state() {
        let l = Limiter::default();
        let a = l.admit("k", &Limits::default(), T0).unwrap();
        assert_eq!(a.rate, Rate::default());
        l.settle(a.ticket, 100, Some(1.0), T0);
        assert!(l.keys.read().unwrap().is_empty());
    }

    #[test]
    fn rpm_admits_a_burst_then_refuses_until_a_slot_frees() {
        let l = Limiter::default();
        let rpm5 = lim(|l| l.rpm = Some(5));
        for i in 0..5 {
            let a = l.admit("k", &rpm5, T0).unwrap();
            let w = a.rate.requests.unwrap();
            assert_eq!((w.limit, w.remaining), (5, 4 - i));
        }
        let r = l.admit("k", &rpm5, T0 + 1_000).unwrap_err();
        assert_eq!(r.why, Refusal::Requests { limit: 5, retry_after: Duration::from_secs(11) });
        assert_eq!(r.why.retry_after_secs(), Some(11));
        assert_eq!(r.rate.requests.unwrap().remaining, 0);
        // Another key is not affected.
        assert!(l.admit("other", &rpm5, T0 + 1_000).is_ok());
        assert!(l.admit("k", &rpm5, T0 + 11_999).is_err());
        assert!(l.admit("k", &rpm5, T0 + 12_000).is_ok());
        assert!(l.admit("k", &rpm5, T0 + 12_001).is_err());
        // A quiet minute refills the whole burst.
        for _ in 0..5 {
            l.admit("k", &rpm5, T0 + 90_000).unwrap();
        }
        // A changed limit starts its window afresh.
        let rpm1 = lim(|l| l.rpm = Some(1));
        assert!(l.admit("k", &rpm1, T0 + 90_000).is_ok());
        assert!(l.admit("k", &rpm1, T0 + 90_000).is_err());
    }

    #[test]
    fn tpm_admits_while_there_is_room_and_charges_real_tokens() {
        let l = Limiter::default();
        let tpm = lim(|l| l.tpm = Some(1_000));
        let a = l.admit("k", &tpm, T0).unwrap();
        assert_eq!(a.rate.tokens.unwrap().remaining, 1_000);
        let b = l.admit("k", &tpm, T0).unwrap();
        l.settle(a.ticket, 700, None, T0);
        let c = l.admit("k", &tpm, T0).unwrap();
        assert_eq!(c.rate.tokens.unwrap().remaining, 300);
        l.settle(b.ticket, 800, None, T0);
        // 1,500 charged: the window is 500 tokens (30 s) over, plus one token to have room.
        let r = l.admit("k", &tpm, T0).unwrap_err();
        assert_eq!(r.why, Refusal::Tokens { limit: 1_000, retry_after: Duration::from_millis(30_060) });
        assert_eq!(r.why.retry_after_secs(), Some(31));
        assert!(l.admit("k", &tpm, T0 + 31_000).is_ok());
        drop(c);
    }

    #[test]
    fn max_parallel_counts_until_the_ticket_is_settled_or_dropped() {
        let l = Limiter::default();
        let two = lim(|l| l.max_parallel = Some(2));
        let a = l.admit("k", &two, T0).unwrap();
        let b = l.admit("k", &two, T0).unwrap();
        let r = l.admit("k", &two, T0).unwrap_err();
        assert!(matches!(r.why, Refusal::Parallel { limit: 2, .. }));
        assert_eq!(l.in_flight("k"), 2);
        l.settle(a.ticket, 1, None, T0);
        let c = l.admit("k", &two, T0).unwrap();
        drop(b);
        drop(c);
        assert_eq!(l.in_flight("k"), 0);
        // A refusal by a later check gives the slot back.
        let both = lim(|l| {
            l.max_parallel = Some(1);
            l.rpm = Some(1)
        });
        let a = l.admit("j", &both, T0).unwrap();
        drop(a);
        assert!(matches!(l.admit("j", &both, T0).unwrap_err().why, Refusal::Requests { .. }));
        assert_eq!(l.in_flight("j"), 0);
    }

    #[test]
    fn budget_refuses_once_spent_and_resets_with_the_period() {
        let l = Limiter::default();
        let b = lim(|l| l.budget = Some(Budget { usd: 0.05, per: Period::Day }));
        let (_, day_end) = period_bounds(Period::Day, T0, &TimeZone::UTC);
        l.seed("k", Period::Day, T0, 0.03);
        let a = l.admit("k", &b, T0).unwrap();
        l.settle(a.ticket, 10, Some(0.02), T0);
        let r = l.admit("k", &b, T0).unwrap_err();
        match r.why {
            Refusal::Budget { budget, spent, per: Period::Day, resets_at_ms } => {
                assert_eq!(budget, 0.05);
                assert!((spent - 0.05).abs() < 1e-12);
                assert_eq!(resets_at_ms, Some(day_end));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.why.retry_after_secs(), None);
        // Unknown prices count as zero.
        let l2 = Limiter::default();
        let a = l2.admit("k", &b, T0).unwrap();
        l2.settle(a.ticket, 10, None, T0);
        assert_eq!(l2.spent("k"), 0.0);
        // The next day starts at zero; a request started yesterday and settled today is not charged to today.
        let late = l.admit("late", &b, day_end - 1).unwrap();
        let a = l.admit("k", &b, day_end).unwrap();
        l.settle(late.ticket, 1, Some(1.0), day_end + 5);
        assert_eq!(l.spent("k"), 0.0);
        l.settle(a.ticket, 1, Some(0.01), day_end + 5);
        assert!((l.spent("k") - 0.01).abs() < 1e-12);
    }

    #[test]
    fn budget_overshoot_is_bounded_by_the_requests_in_flight() {
        // 20 concurrent requests of 0.01 each against a budget of 0.035: every request admitted before the
        // spend reached the budget is charged; none is admitted after. The overshoot is below the cost of the
        // requests that were in flight when the budget was crossed.
        let l = Arc::new(Limiter::default());
        let b = lim(|l| l.budget = Some(Budget { usd: 0.035, per: Period::Total }));
        let admitted = Arc::new(AtomicU32::new(0));
        let in_flight = Arc::new(AtomicU32::new(0));
        let max_in_flight = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let (l, admitted, in_flight, max_in_flight) =
                    (l.clone(), admitted.clone(), in_flight.clone(), max_in_flight.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        // Counted as in flight from before admission until after settling, so no admitted
                        // request is ever missing from the count.
                        let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        max_in_flight.fetch_max(n, Ordering::SeqCst);
                        if let Ok(a) = l.admit("k", &b, T0) {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            std::thread::yield_now();
                            l.settle(a.ticket, 1, Some(0.01), T0);
                        }
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let spent = l.spent("k");
        let n = admitted.load(Ordering::SeqCst);
        assert!((spent - f64::from(n) * 0.01).abs() < 1e-9, "every admitted request is charged");
        assert!(spent >= 0.035, "admitted until the budget was reached: {spent}");
        assert!(spent < 0.035 + f64::from(max_in_flight.load(Ordering::SeqCst)) * 0.01 + 1e-9, "{spent}");
        assert!(l.admit("k", &b, T0).is_err());
    }

    #[test]
    fn periods_follow_the_time_zone() {
        let utc = TimeZone::UTC;
        let ms = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let now = ms("2026-03-29T10:30:00Z"); // a Sunday; Berlin switches to summer time at 01:00 UTC
        assert_eq!(period_bounds(Period::Day, now, &utc), (ms("2026-03-29T00:00:00Z"), ms("2026-03-30T00:00:00Z")));
        assert_eq!(period_bounds(Period::Week, now, &utc), (ms("2026-03-23T00:00:00Z"), ms("2026-03-30T00:00:00Z")));
        assert_eq!(period_bounds(Period::Month, now, &utc), (ms("2026-03-01T00:00:00Z"), ms("2026-04-01T00:00:00Z")));
        assert_eq!(period_bounds(Period::Total, now, &utc), (0, i64::MAX));
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // A 23-hour day: from 00:00 CET (23:00 UTC the day before) to 00:00 CEST (22:00 UTC).
        assert_eq!(period_bounds(Period::Day, now, &berlin), (ms("2026-03-28T23:00:00Z"), ms("2026-03-29T22:00:00Z")));
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        assert_eq!(
            period_bounds(Period::Month, ms("2026-01-31T20:00:00Z"), &tokyo),
            (ms("2026-01-31T15:00:00Z"), ms("2026-02-28T15:00:00Z"))
        );
    }
}
