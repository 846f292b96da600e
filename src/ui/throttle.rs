//! Slows down guessing admin keys: wrong keys from one client address, on the dashboard's login form and on the
//! admin API alike, are refused for a while after the first few.
//!
//! Owns the per-address strike table (in memory, bounded, forgotten after a quiet spell) and the policy: the
//! first [`FREE`] wrong keys cost nothing; each one after that closes the door to that address for a doubling
//! wait (2 s, 4 s, 8 s, ... up to [`MAX_WAIT`]), during which every attempt — right key or not — is refused
//! (429 with `Retry-After`) without being checked. A right key clears the address. Must not hold its lock
//! across an await or keep anything but addresses and counts (never a key).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong keys an address may send before it has to wait.
pub const FREE: u32 = 5;
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// An address with no wrong key for this long starts over.
const FORGET_AFTER: Duration = Duration::from_secs(900);
/// Most addresses remembered; past it the longest quiet one goes first.
const MAX_ADDRESSES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Strikes {
    wrong: u32,
    last: Instant,
    until: Option<Instant>,
}

/// The strike table.
#[derive(Debug, Default)]
pub struct Throttle {
    inner: Mutex<HashMap<IpAddr, Strikes>>,
}

impl Throttle {
    /// `Err(wait)` while `ip` must wait before its next attempt.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip).and_then(|s| s.until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a wrong key from `ip`; answers the wait it now has, if any.
    pub fn wrong(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, s| now.saturating_duration_since(s.last) < FORGET_AFTER);
            if map.len() >= MAX_ADDRESSES
                && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let s = map.entry(ip).or_insert(Strikes { wrong: 0, last: now, until: None });
        if now.saturating_duration_since(s.last) >= FORGET_AFTER && s.until.is_none_or(|u| u <= now) {
            *s = Strikes { wrong: 0, last: now, until: None };
        }
        s.wrong += 1;
        s.last = now;
        let over = s.wrong.checked_sub(FREE + 1)?;
        let wait = Duration::from_secs(2u64 << over.min(20)).min(MAX_WAIT);
        s.until = Some(now + wait);
        Some(wait)
    }

    /// A right key from `ip`: it starts over.
    pub fn right(&self, ip: IpAddr) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).remove(&ip);
    }
}

/// Whole seconds for `Retry-After`, rounded up (never 0).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_millis().div_ceil(1000) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_wrong_keys_are_free_then_the_wait_doubles_up_to_the_cap() {
        let t = Throttle::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "::1".parse().unwrap();
        let mut now = Instant::now();
        for _ in 0..FREE {
            assert_eq!(t.check(ip, now), Ok(()));
            assert_eq!(t.wrong(ip, now), None);
        }
        assert_eq!(t.wrong(ip, now), Some(Duration::from_secs(2)));
        assert_eq!(t.check(ip, now), Err(Duration::from_secs(2)));
        assert_eq!(t.check(other, now), Ok(()), "another address is not slowed down");
        now += Duration::from_secs(2);
        assert_eq!(t.check(ip, now), Ok(()));
        assert_eq!(t.wrong(ip, now), Some(Duration::from_secs(4)));
        now += Duration::from_millis(2500);
        assert_eq!(t.check(ip, now), Err(Duration::from_millis(1500)));
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        let mut wait = Duration::ZERO;
        for _ in 0..20 {
            now += Duration::from_secs(301);
            wait = t.wrong(ip, now).unwrap();
        }
        assert_eq!(wait, MAX_WAIT);
        // A right key clears the address.
        t.right(ip);
        assert_eq!(t.check(ip, now), Ok(()));
        assert_eq!(t.wrong(ip, now), None);
    }

    #[test]
    fn a_quiet_address_starts_over_and_the_table_is_bounded() {
        let t = Throttle::default();
        let ip: IpAddr = "192.0.2.8".parse().unwrap();
        let now = Instant::now();
        for _ in 0..=FREE {
            t.wrong(ip, now);
        }
        let later = now + FORGET_AFTER + Duration::from_secs(1);
        assert_eq!(t.check(ip, later), Ok(()));
        assert_eq!(t.wrong(ip, later), None, "counted from one again");
        for i in 0..MAX_ADDRESSES as u32 + 10 {
            t.wrong(IpAddr::from(i.to_be_bytes()), later + Duration::from_millis(i as u64));
        }
        assert!(t.inner.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}
