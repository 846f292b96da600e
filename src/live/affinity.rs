//! Affinity bindings: which upstream candidate a conversation last used, so its provider-side prompt cache hits.
//!
//! Owns the in-memory binding table: session key -> [`Target`] (a stable hash of channel, endpoint, token and
//! upstream model names), with a time to live refreshed on every use and a bounded size (least recently used
//! bindings go first). Each shard is behind a `std` mutex held for one hash lookup and a few index writes; nothing
//! here awaits, allocates per lookup, or knows about requests, HTTP or the catalogue. Tables sized for fewer than
//! [`SHARDED_FROM`] bindings are one shard, an exact LRU; larger ones are 16 shards, each an LRU of a sixteenth
//! of the maximum (the table then fills to within a few percent of the maximum before the coldest go).
//! Deciding whether a bound target may still be used (cooling, disabled, removed, not allowed) is the plan's job:
//! a binding only says which candidate to try first.
//!
//! Because every binding lives for the same TTL and each use refreshes it, the least recently used binding is
//! also the one that expires first: expired bindings are dropped from the cold end of each shard's list as new
//! ones arrive, with no sweeper task.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a session is bound: a stable 64-bit hash of (channel, endpoint, token_key, upstream model). Names, not
/// catalogue indexes, so a binding survives snapshot swaps and means the same on every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target(pub u64);

impl Target {
    pub fn of(channel: &str, endpoint: &str, token_key: &str, model: &str) -> Target {
        Prefix::of(channel, endpoint, token_key).target(model)
    }
}

/// A [`Target`] short of its model: the hash over channel, endpoint and upstream key, made once per key by the
/// catalogue, so that a request hashes only its model.
#[derive(Debug, Clone, Copy)]
pub struct Prefix(Fnv);

impl Prefix {
    pub fn of(channel: &str, endpoint: &str, token_key: &str) -> Prefix {
        let mut h = Fnv::default();
        for part in [channel, endpoint, token_key] {
            h.write(part.as_bytes());
            h.write_u8(0xff);
        }
        Prefix(h)
    }

    /// The target of this key serving `model`: the same as [`Target::of`] with all four.
    pub fn target(self, model: &str) -> Target {
        let mut h = self.0;
        h.write(model.as_bytes());
        h.write_u8(0xff);
        Target(h.finish())
    }
}

/// FNV-1a, 64 bit: stable across processes and versions (unlike `DefaultHasher`), fast on short names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The key of one binding: a session and the model it asked for (Claude Code interleaves a small model with
/// its main one in one session; each keeps its own binding).
pub fn session_key(session: u64, requested_model: &str) -> u64 {
    let mut h = Fnv::default();
    h.write_u64(session);
    h.write(requested_model.as_bytes());
    h.finish()
}

/// Session keys are already hashes: the map uses them as they are.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

const NIL: u32 = u32::MAX;
/// Shards of a large table.
const SHARDS: usize = 16;
/// From this maximum on, the table is sharded.
pub const SHARDED_FROM: usize = 65_536;

/// One binding, in a shard's slab, linked into its recency list. 32 bytes.
#[derive(Debug, Clone, Copy)]
struct Node {
    session: u64,
    target: u64,
    /// Milliseconds since [`Affinity::base`].
    expires_ms: u64,
    prev: u32,
    next: u32,
}

#[derive(Default)]
struct Shard {
    index: HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
    nodes: Vec<Node>,
    /// Most recently used.
    head: u32,
    /// Least recently used (and first to expire).
    tail: u32,
    /// Free slots in `nodes`, linked through `next`.
    free: u32,
}

impl Shard {
    fn new() -> Shard {
        Shard { head: NIL, tail: NIL, free: NIL, ..Default::default() }
    }

    fn unlink(&mut self, i: u32) {
        let Node { prev, next, .. } = self.nodes[i as usize];
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        self.nodes[i as usize].prev = NIL;
        self.nodes[i as usize].next = old;
        match old {
            NIL => self.tail = i,
            h => self.nodes[h as usize].prev = i,
        }
        self.head = i;
    }

    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let session = self.nodes[i as usize].session;
        self.index.remove(&session);
        self.nodes[i as usize].next = self.free;
        self.free = i;
    }

    /// Drops expired bindings from the cold end, and the coldest ones beyond `cap`.
    fn trim(&mut self, now_ms: u64, cap: usize) {
        while self.tail != NIL {
            let t = self.tail;
            if self.nodes[t as usize].expires_ms > now_ms && self.index.len() <= cap {
                break;
            }
            self.remove(t);
        }
    }
}

/// The binding table. One per server; shared by every request.
pub struct Affinity {
    shards: Box<[Mutex<Shard>]>,
    base: Instant,
}

impl Default for Affinity {
    /// Sized for the default maximum (`routing.affinity.max_sessions`: 100,000).
    fn default() -> Self {
        Affinity::new(100_000)
    }
}

/// How long bindings live and how many are kept: from the configuration of the request at hand, so a reload
/// takes effect with the next request (existing bindings keep their expiry; a smaller maximum applies as new
/// bindings arrive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub ttl: Duration,
    /// Bindings at most, over all shards.
    pub max: usize,
}

/// What happened to a binding on one request: a value of the request record, so it is defined there.
pub use crate::usage::AffinityOutcome as Outcome;

impl Affinity {
    /// An empty table for about `max_sessions` bindings (which decides whether it is sharded; the maximum itself
    /// comes with each call, so a reload applies). It grows as sessions arrive: nothing is allocated up front.
    pub fn new(max_sessions: usize) -> Affinity {
        let n = if max_sessions >= SHARDED_FROM { SHARDS } else { 1 };
        Affinity { shards: (0..n).map(|_| Mutex::new(Shard::new())).collect(), base: Instant::now() }
    }

    fn shard(&self, session: u64) -> &Mutex<Shard> {
        // The high bits: the map inside the shard hashes by the low ones.
        &self.shards[(session >> 60) as usize % self.shards.len()]
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_millis() as u64
    }

    /// The target `session` is bound to, if the binding has not expired; using it refreshes its TTL.
    pub fn binding(&self, session: u64, policy: &Policy, now: Instant) -> Option<Target> {
        let now_ms = self.ms(now);
        let ttl = policy.ttl.as_millis() as u64;
        let mut s = self.shard(session).lock().expect("affinity lock");
        let i = *s.index.get(&session)?;
        if s.nodes[i as usize].expires_ms <= now_ms {
            s.remove(i);
            return None;
        }
        s.nodes[i as usize].expires_ms = now_ms + ttl;
        s.unlink(i);
        s.push_front(i);
        Some(Target(s.nodes[i as usize].target))
    }

    /// Binds `session` to `target` for the TTL (a new binding, or a move).
    pub fn bind(&self, session: u64, target: Target, policy: &Policy, now: Instant) {
        let now_ms = self.ms(now);
        let expires_ms = now_ms + policy.ttl.as_millis() as u64;
        let cap = policy.max.div_ceil(self.shards.len());
        if cap == 0 {
            return;
        }
        let mut s = self.shard(session).lock().expect("affinity lock");
        if let Some(&i) = s.index.get(&session) {
            let n = &mut s.nodes[i as usize];
            n.target = target.0;
            n.expires_ms = expires_ms;
            s.unlink(i);
            s.push_front(i);
            return;
        }
        s.trim(now_ms, cap - 1);
        let node = Node { session, target: target.0, expires_ms, prev: NIL, next: NIL };
        let i = match s.free {
            NIL => {
                s.nodes.push(node);
                (s.nodes.len() - 1) as u32
            }
            f => {
                s.free = s.nodes[f as usize].next;
                s.nodes[f as usize] = node;
                f
            }
        };
        s.index.insert(session, i);
        s.push_front(i);
    }

    /// Live bindings (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().expect("affinity lock").index.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the table (slabs and maps at their current capacity), for measurements.
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().expect("affinity lock");
                // hashbrown: one (key, value) slot and one control byte per bucket.
                s.nodes.capacity() * std::mem::size_of::<Node>()
                    + s.index.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_makes_the_same_target_as_the_four_names() {
        // FNV-1a over each name and a 0xff after it: the value instances share through Redis must not change.
        let whole = |parts: [&str; 4]| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for p in parts {
                for &b in p.as_bytes().iter().chain([0xff].iter()) {
                    h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
                }
            }
            Target(h)
        };
        let p = Prefix::of("main", "default", "fp:0123456789abcdef");
        for model in ["gpt-4o", "", "qwen/qwen3-235b:free"] {
            assert_eq!(p.target(model), whole(["main", "default", "fp:0123456789abcdef", model]));
            assert_eq!(Target::of("main", "default", "fp:0123456789abcdef", model), p.target(model));
        }
        assert_ne!(p.target("a"), Prefix::of("main", "default", "other").target("a"));
    }

    fn key(n: u64) -> u64 {
        // Spread over shards like real hashes do.
        session_key(n, "m")
    }

    #[test]
    fn binds_and_refreshes_the_ttl_on_use() {
        let (a, p) = (Affinity::new(100), Policy { ttl: Duration::from_secs(10), max: 100 });
        let t0 = Instant::now();
        let target = Target::of("c", "e", "k", "m");
        assert_eq!(a.binding(key(1), &p, t0), None);
        a.bind(key(1), target, &p, t0);
        assert_eq!(a.binding(key(1), &p, t0 + Duration::from_secs(9)), Some(target));
        // Used at 9 s: now lives until 19 s.
        assert_eq!(a.binding(key(1), &p, t0 + Duration::from_secs(18)), Some(target));
        assert_eq!(a.binding(key(1), &p, t0 + Duration::from_secs(29)), None);
        assert!(a.is_empty());
    }

    #[test]
    fn rebinding_moves_the_session() {
        let (a, p) = (Affinity::new(100), Policy { ttl: Duration::from_secs(10), max: 100 });
        let t0 = Instant::now();
        a.bind(key(1), Target::of("a", "e", "k", "m"), &p, t0);
        a.bind(key(1), Target::of("b", "e", "k", "m"), &p, t0);
        assert_eq!(a.binding(key(1), &p, t0), Some(Target::of("b", "e", "k", "m")));
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn targets_and_keys_are_stable_and_distinct() {
        assert_eq!(Target::of("a", "b", "c", "d"), Target::of("a", "b", "c", "d"));
        assert_ne!(Target::of("ab", "", "c", "d"), Target::of("a", "b", "c", "d"));
        assert_ne!(session_key(1, "haiku"), session_key(1, "sonnet"));
        // Fixed value: the hash must not change between versions or instances.
        assert_eq!(Target::of("", "", "", "").0, {
            let mut h = Fnv::default();
            h.write(&[0xff; 4]);
            h.finish()
        });
    }

    #[test]
    fn size_is_bounded_and_the_least_recently_used_go_first() {
        let (a, p) = (Affinity::new(3), Policy { ttl: Duration::from_secs(3600), max: 3 });
        let t0 = Instant::now();
        for n in 1..=3 {
            a.bind(key(n), Target(n), &p, t0);
        }
        // 1 is used again, so 2 is now the least recently used, and goes when 4 arrives.
        assert_eq!(a.binding(key(1), &p, t0), Some(Target(1)));
        a.bind(key(4), Target(4), &p, t0);
        assert_eq!(a.len(), 3);
        assert_eq!(a.binding(key(2), &p, t0), None);
        for n in [1, 3, 4] {
            assert_eq!(a.binding(key(n), &p, t0), Some(Target(n)), "{n}");
        }
        // A smaller maximum after a reload applies as new bindings arrive.
        let p2 = Policy { max: 2, ..p };
        a.bind(key(5), Target(5), &p2, t0);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn sharded_table_stays_within_its_maximum() {
        let max = SHARDED_FROM;
        let (a, p) = (Affinity::new(max), Policy { ttl: Duration::from_secs(3600), max });
        let t0 = Instant::now();
        for n in 0..(max as u64 * 2) {
            a.bind(key(n), Target(n), &p, t0);
        }
        let len = a.len();
        assert!(len <= max && len >= max * 97 / 100, "{len}");
        // The most recent ones are all there.
        assert!((max as u64 * 2 - 100..max as u64 * 2).all(|n| a.binding(key(n), &p, t0).is_some()));
    }

    #[test]
    fn expired_bindings_are_dropped_as_new_ones_arrive() {
        let (a, p) = (Affinity::new(1000), Policy { ttl: Duration::from_secs(1), max: 1000 });
        let t0 = Instant::now();
        for n in 0..200 {
            a.bind(key(n), Target(1), &p, t0);
        }
        let later = t0 + Duration::from_secs(2);
        for n in 200..232 {
            a.bind(key(n), Target(1), &p, later);
        }
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn zero_maximum_binds_nothing() {
        let (a, p) = (Affinity::new(0), Policy { ttl: Duration::from_secs(1), max: 0 });
        a.bind(key(1), Target(1), &p, Instant::now());
        assert!(a.is_empty());
    }

    /// State size per binding, measured: slab node + map slot at the table's real capacity.
    #[test]
    fn state_per_binding_is_small() {
        assert_eq!(std::mem::size_of::<Node>(), 32);
        let n = 100_000u64;
        let (a, p) = (Affinity::new(n as usize), Policy { ttl: Duration::from_secs(3600), max: n as usize });
        let t0 = Instant::now();
        for i in 0..n {
            a.bind(key(i), Target(i), &p, t0);
        }
        // The bound is per shard (max / 16 each), so an uneven spread keeps slightly fewer than `max`.
        let len = a.len();
        assert!(len <= n as usize && len >= n as usize * 97 / 100, "{len}");
        let per = a.heap_bytes() as f64 / len as f64;
        eprintln!("affinity: {per:.1} bytes per binding at {n} bindings");
        assert!(per < 96.0, "{per} bytes per binding");
    }

    #[test]
    fn lookups_are_fast() {
        let (a, p) = (Affinity::new(100_000), Policy { ttl: Duration::from_secs(3600), max: 100_000 });
        let t0 = Instant::now();
        for i in 0..10_000 {
            a.bind(key(i), Target(i), &p, t0);
        }
        let start = Instant::now();
        let mut hits = 0;
        for i in 0..100_000u64 {
            hits += a.binding(key(i % 10_000), &p, t0).is_some() as u32;
        }
        let per = start.elapsed() / 100_000;
        eprintln!("affinity: {per:?} per lookup");
        assert_eq!(hits, 100_000);
    }
}
