//! The shared (Redis) backend of live state: several `router serve` instances behind one load balancer act as
//! one gateway (`shared_state.redis`, `redis://` or `rediss://` for TLS).
//!
//! Owns, over one Redis:
//! - cooldowns: every instance's [`CoolChange`]s are written as `router:cool:<key>` with their expiry and
//!   published on `router:events`; every instance applies the others' to its own [`Health`] (planning never
//!   waits for Redis) and reads the live ones when it (re)connects;
//! - affinity bindings: a new or moved binding is written as `router:aff:<session key>` with the affinity TTL
//!   before the answer leaves ([`Shared::bind`]) and published (the others bind it in memory); an instance
//!   without a binding for a session reads it through ([`Shared::binding`]); a hit refreshes the Redis TTL
//!   without waiting ([`Shared::touch`]);
//! - admission of gateway keys with limits ([`admit`]): one Lua script per request checks the period's budget
//!   spend (`router:spend:<key>:<period>:<start ms>`, seeded from this instance's records the first time Redis
//!   sees the period, kept a day past it), the tokens window, takes a parallel slot and a requests slot (GCRA
//!   on Redis' clock); settling charges tokens and cost with a second script off the response (INCRBYFLOAT).
//!   Keys without limits never touch Redis. Budgets overshoot as on one instance: by the cost of requests in
//!   flight (a charge on its way to Redis counts as in flight);
//! - change notifications ([`Change`]): a key or channel change made on one instance is published; the others
//!   load it ([`Shared::changes`], applied by `control::follow_changes`);
//! - observed latency (`router:latency`, one field per instance and endpoint): shared and merged every
//!   [`LATENCY_EVERY`] off the request path, so `fastest` on one instance knows what another measured.
//!
//! Failure: Redis unreachable (or slower than [`TIMEOUT`]) -> this instance admits with its own windows and
//! keeps its own cooldowns and bindings, logs it once, `/health` reports `degraded`, every operation that fell
//! back is counted ([`Shared::fallbacks`], `router_shared_state_fallbacks_total`), and Redis is tried again after
//! [`RETRY`]; no request fails because of Redis. Redis counts as back only when a call sent after the latest
//! failure is answered (one in flight as Redis went away may still be). Messages published meanwhile are lost; on reconnecting an
//! instance reloads keys and channels from its store and reads the live cooldowns. Parallel slots of an
//! instance killed mid-request expire with their counter ([`SLOT_TTL_S`] after the key's last admission).
//!
//! Must not: hold a lock across an await, wait for Redis on the request path except in [`admit`] (keys with
//! limits), [`Shared::binding`] (a session this instance has no binding for) and [`Shared::bind`] (a new or
//! moved binding), each bounded by [`TIMEOUT`]; know about HTTP, protocols or the store; send a secret to Redis
//! (key rows carry hashes; channels, which hold upstream keys, are only announced).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::affinity::{Affinity, Policy, Target};
use super::health::{CoolChange, Health};
use super::limits::{Admit, Limiter, Limits, Rate, Refusal, Refused, Window, period_bounds};

/// Longest a request waits for Redis before it is admitted on this instance's own state.
pub const TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, how long requests skip Redis before one tries again.
pub const RETRY: Duration = Duration::from_secs(1);
/// A parallel counter expires this long after its key's last admission (slots of killed instances).
pub const SLOT_TTL_S: i64 = 600;
const EVENTS: &str = "router:events";
/// Observed latency of every instance: field `<instance>:<health key>`, value `<ms> <unix ms>`.
const LATENCY: &str = "router:latency";
/// How often an instance shares its observed latency and merges the others'.
pub const LATENCY_EVERY: Duration = Duration::from_secs(2);
/// Others' latency older than this is ignored (and removed): its instance is gone.
const LATENCY_STALE_MS: i64 = 30_000;
const MINUTE_US: i64 = 60_000_000;

/// Admission of one request, all of a key's limits in one round trip, on Redis' clock (µs). KEYS: requests
/// window, parallel counter, tokens window, budget spend of the period. ARGV: rpm, max_parallel, minute, slot
/// ttl s, tpm, budget USD ('' none), spend to seed a period Redis has not seen, spend expiry ms (0: never).
/// Budget and tokens are checked first (a refusal there takes nothing), then a parallel slot and a requests
/// slot are taken (GCRA: the window's theoretical arrival time). Returns {0 admitted | 1 rpm | 2 parallel |
/// 3 tpm | 4 budget, retry-after µs, requests window used µs, tokens window used µs, spend}.
const ADMIT_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rpm = tonumber(ARGV[1])
local maxp = tonumber(ARGV[2])
local minute = tonumber(ARGV[3])
local tpm = tonumber(ARGV[5])
local spent = ''
if ARGV[6] ~= '' then
  spent = redis.call('GET', KEYS[4])
  if not spent then
    spent = ARGV[7]
    redis.call('SET', KEYS[4], spent)
    if tonumber(ARGV[8]) > 0 then redis.call('PEXPIRE', KEYS[4], ARGV[8]) end
  end
  if tonumber(spent) >= tonumber(ARGV[6]) then return {4, 0, 0, 0, spent} end
end
local tok_used = 0
if tpm > 0 then
  local interval = math.max(math.floor(minute / tpm), 1)
  tok_used = math.max(tonumber(redis.call('GET', KEYS[3]) or '0') - now, 0)
  if tok_used >= minute then return {3, tok_used - minute + interval, 0, tok_used, spent} end
end
if maxp > 0 then
  local p = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
  if p > maxp then
    redis.call('DECR', KEYS[2])
    return {2, 1000000, 0, tok_used, spent}
  end
end
if rpm > 0 then
  local interval = math.floor(minute / rpm)
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  local nxt = math.max(tat, now) + interval
  if nxt - now > minute then
    if maxp > 0 then redis.call('DECR', KEYS[2]) end
    return {1, nxt - now - minute, math.max(tat - now, 0), tok_used, spent}
  end
  redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.floor(minute / 1000) + 1000)
  return {0, 0, nxt - now, tok_used, spent}
end
return {0, 0, 0, tok_used, spent}
";

/// Charges a finished request and frees its parallel slot. KEYS: tokens window, budget spend, parallel counter.
/// ARGV: µs its tokens take in the window (0: none), cost USD ('' none), '1' to free a slot. A spend key that is
/// gone (its period over) is not brought back; a counter is never taken below 0.
const CHARGE_LUA: &str = r"
local add = tonumber(ARGV[1])
if add > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local nxt = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + add
  redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.floor((nxt - now) / 1000) + 1000)
end
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[2])
end
if ARGV[3] == '1' and tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then
  redis.call('DECR', KEYS[3])
end
return 0
";

/// One message on `router:events`; `from` is the sending instance (its own messages are skipped).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Event {
    /// A cooldown of health key `key` until unix ms `until_ms`; `None`: cleared.
    Cool {
        from: u64,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An affinity session (its key) bound to a target, new or moved.
    Bind { from: u64, session: u64, target: u64 },
    /// What every instance loads from its store changed on the sending instance: reload it.
    Changed {
        from: u64,
        #[serde(flatten)]
        change: Change,
    },
}

/// A change made on one instance (CLI through its socket, admin API) that every instance must load. With one
/// store all instances read (PostgreSQL), the message means "reload from the store now"; with a store per
/// instance, gateway key rows travel with it (they hold hashes only), channels do not (they hold upstream
/// keys, which never go to Redis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Change {
    /// Gateway keys: the sender's store rows (`keys::StoredKey` as JSON), newest version of each wins.
    Keys {
        #[serde(default)]
        rows: Vec<serde_json::Value>,
    },
    /// Channels (enabled, added, removed, imported): rebuild the catalogue.
    Channels,
}

/// A connection to the shared Redis, and whether it answers.
pub struct Shared {
    client: redis::Client,
    conn: ConnectionManager,
    instance: u64,
    admit_script: redis::Script,
    charge_script: redis::Script,
    /// Counts the failures noted: an answer to a call sent before the latest failure says nothing about now.
    failures: AtomicU64,
    down: AtomicBool,
    /// While down: unix ms before which requests do not try Redis.
    retry_at_ms: AtomicI64,
    /// Operations that fell back to this instance's own state (Redis failed, or was skipped while down).
    fallbacks: AtomicU64,
    /// The URL is `rediss://` (TLS), for the message when the server does not answer.
    tls: bool,
    /// Affinity bindings used here (session, ttl ms), whose Redis copy lives on (sender, and the receiver until
    /// [`Shared::start`] takes it).
    touches: UnboundedSender<(u64, u64)>,
    touches_rx: Mutex<Option<UnboundedReceiver<(u64, u64)>>>,
    /// Changes made here, to publish.
    changes: UnboundedSender<Change>,
    changes_rx: Mutex<Option<UnboundedReceiver<Change>>>,
    /// Changes the other instances made, for [`Shared::changes`] (sender, and the receiver until taken).
    heard: UnboundedSender<Change>,
    heard_rx: Mutex<Option<UnboundedReceiver<Change>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("instance", &self.instance).field("down", &self.degraded()).finish()
    }
}

fn cool_key(key: &str) -> String {
    format!("router:cool:{key}")
}

/// Where the binding of affinity session key `session` lives (value: the target, decimal).
fn affinity_key(session: u64) -> String {
    format!("router:aff:{session:016x}")
}

impl Shared {
    /// Opens (lazily: connecting happens on first use) the Redis at `url`. Errors only on a malformed URL.
    pub fn open(url: &str) -> redis::RedisResult<Arc<Shared>> {
        let client = redis::Client::open(url)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(RETRY);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), cfg)?;
        let (touches, touches_rx) = tokio::sync::mpsc::unbounded_channel();
        let (changes, changes_rx) = tokio::sync::mpsc::unbounded_channel();
        let (heard, heard_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Arc::new(Shared {
            changes,
            changes_rx: Mutex::new(Some(changes_rx)),
            heard,
            heard_rx: Mutex::new(Some(heard_rx)),
            touches,
            touches_rx: Mutex::new(Some(touches_rx)),
            client,
            conn,
            instance: rand::random(),
            admit_script: redis::Script::new(ADMIT_LUA),
            charge_script: redis::Script::new(CHARGE_LUA),
            down: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            retry_at_ms: AtomicI64::new(0),
            fallbacks: AtomicU64::new(0),
            tls: url.starts_with("rediss:"),
        }))
    }

    /// Whether Redis failed last time it was asked (this instance runs on its own state meanwhile).
    pub fn degraded(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Operations that used this instance's own state because Redis failed or was down (a counter).
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Whether a request should ask Redis now (not down, or down long enough to try again).
    fn available(&self) -> bool {
        !self.degraded() || crate::usage::now_ms() >= self.retry_at_ms.load(Ordering::Acquire)
    }

    /// [`Shared::available`] for an operation of a request: one that skips Redis counts as a fallback.
    fn ask(&self) -> bool {
        let yes = self.available();
        if !yes {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        yes
    }

    fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::AcqRel);
        self.retry_at_ms.store(crate::usage::now_ms() + RETRY.as_millis() as i64, Ordering::Release);
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "shared state: Redis unreachable ({what}: {e}); this instance uses its own cooldowns and limits \
                 until it answers again"
            );
        }
    }

    /// A call sent when `failures` read `sent_after` was answered: Redis is back, unless a failure was noted since
    /// it was sent (a call in flight as Redis went away may still be answered; that must not flap the state).
    fn answered(&self, sent_after: u64) {
        if self.failures.load(Ordering::Acquire) != sent_after {
            return;
        }
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("shared state: Redis answers again; cooldowns and limits are shared again");
        }
    }

    /// Runs `f` on a connection within [`TIMEOUT`], noting failures; `None` when Redis did not answer.
    async fn call<T, F>(&self, what: &str, f: impl FnOnce(ConnectionManager) -> F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let sent_after = self.failures.load(Ordering::Acquire);
        match tokio::time::timeout(TIMEOUT, f(self.conn.clone())).await {
            Ok(Ok(v)) => {
                self.answered(sent_after);
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(what, &e);
                None
            }
            Err(_) => {
                let tls = if self.tls {
                    "; the URL is rediss:// (TLS): check that the server speaks TLS on that port"
                } else {
                    ""
                };
                self.failed(what, &format!("no answer within {} ms{tls}", TIMEOUT.as_millis()));
                None
            }
        }
    }

    /// Starts sharing `health`'s cooldowns and `affinity`'s bindings: this instance's changes go to Redis, the
    /// other instances' come back (bindings under `policy`). Runs until the process ends.
    pub fn start(self: &Arc<Self>, health: Arc<Health>, affinity: Arc<Affinity>, policy: Policy) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        health.publish_to(tx);
        let touches = self.touches_rx.lock().expect("touches lock").take();
        let changes = self.changes_rx.lock().expect("changes lock").take();
        tokio::spawn(self.clone().publish(rx, touches, changes));
        tokio::spawn(self.clone().share_latency(health.clone()));
        tokio::spawn(self.clone().subscribe(health, affinity, policy));
    }

    /// Every [`LATENCY_EVERY`]: writes this instance's observed latency (time to first byte per endpoint, the
    /// `fastest` strategy's input) and merges what the others observed, so an instance that has not sent to an
    /// endpoint yet knows how fast it is. Off the request path.
    async fn share_latency(self: Arc<Self>, health: Arc<Health>) {
        let me = format!("{:016x}:", self.instance);
        loop {
            tokio::time::sleep(LATENCY_EVERY).await;
            if !self.available() {
                continue;
            }
            let now = crate::usage::now_ms();
            let mine: Vec<(String, String)> =
                health.latencies().into_iter().map(|(k, ms)| (format!("{me}{k}"), format!("{ms} {now}"))).collect();
            let Some(all) = self
                .call("share latency", |mut c| async move {
                    let mut pipe = redis::pipe();
                    if !mine.is_empty() {
                        pipe.hset_multiple(LATENCY, &mine).ignore();
                    }
                    pipe.hgetall(LATENCY);
                    pipe.query_async::<(std::collections::HashMap<String, String>,)>(&mut c).await
                })
                .await
            else {
                continue;
            };
            let mut theirs: std::collections::HashMap<&str, (f64, u32)> = Default::default();
            let mut stale = Vec::new();
            for (field, value) in &all.0 {
                let Some((ms, at)) = value.split_once(' ') else { continue };
                let (Ok(ms), Ok(at)) = (ms.parse::<f64>(), at.parse::<i64>()) else { continue };
                if now - at > LATENCY_STALE_MS {
                    stale.push(field.clone());
                    continue;
                }
                if field.starts_with(&me) || !ms.is_finite() {
                    continue;
                }
                if let Some((_, key)) = field.split_once(':') {
                    let e = theirs.entry(key).or_default();
                    e.0 += ms;
                    e.1 += 1;
                }
            }
            for (key, (sum, n)) in theirs {
                health.merge_ttfb(key, sum / f64::from(n));
            }
            if !stale.is_empty() {
                self.call("drop stale latency", |mut c| async move { c.hdel::<_, _, i64>(LATENCY, stale).await }).await;
            }
        }
    }

    /// Binds affinity session key `session` to `target` for `ttl` in Redis and tells the other instances (they
    /// bind it in memory). Awaited (within [`TIMEOUT`]) before the response goes out, so the session's next turn
    /// finds the binding whichever instance it reaches; one round trip per new or moved binding, none per hit.
    pub async fn bind(&self, session: u64, target: Target, ttl: Duration) {
        if ttl.is_zero() || !self.ask() {
            return;
        }
        let msg = serde_json::to_string(&Event::Bind { from: self.instance, session, target: target.0 })
            .expect("event serialises");
        self.call("bind", |mut c| async move {
            let mut pipe = redis::pipe();
            pipe.set_options(
                affinity_key(session),
                target.0,
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl.as_millis() as u64)),
            )
            .ignore();
            pipe.publish(EVENTS, msg).ignore();
            pipe.query_async::<()>(&mut c).await
        })
        .await;
    }

    /// The binding of affinity session key `session` in Redis, read when this instance has none (a turn of a
    /// session another instance served). `None`: none, or Redis did not answer within [`TIMEOUT`].
    pub async fn binding(&self, session: u64) -> Option<Target> {
        if !self.ask() {
            return None;
        }
        let found: Option<u64> =
            self.call("read binding", |mut c| async move { c.get(affinity_key(session)).await }).await?;
        found.map(Target)
    }

    /// Tells the other instances to load `change` (published at once; no waiting).
    pub fn changed(&self, change: Change) {
        let _ = self.changes.send(change);
    }

    /// The changes other instances make, as they arrive (once: the first caller gets the receiver).
    pub fn changes(&self) -> Option<UnboundedReceiver<Change>> {
        self.heard_rx.lock().expect("heard lock").take()
    }

    /// A binding of `session` served a request here: its Redis copy lives `ttl` from now (no waiting).
    pub fn touch(&self, session: u64, ttl: Duration) {
        let _ = self.touches.send((session, ttl.as_millis() as u64));
    }

    async fn publish(
        self: Arc<Self>,
        mut cools: UnboundedReceiver<CoolChange>,
        mut touches: Option<UnboundedReceiver<(u64, u64)>>,
        mut changes: Option<UnboundedReceiver<Change>>,
    ) {
        let mut batch = Vec::new();
        // When each binding's Redis TTL was last refreshed: a binding used again within a tenth of its TTL is
        // not refreshed again (Redis sees one PEXPIRE per binding per tenth of the TTL, not one per request).
        let mut refreshed: std::collections::HashMap<u64, Instant> = Default::default();
        loop {
            let (event, ttl_ms) = tokio::select! {
                change = cools.recv() => match change {
                    None => return,
                    Some(CoolChange::Cool { key, until_ms, reason }) => {
                        let ttl = until_ms - crate::usage::now_ms();
                        (Event::Cool { from: self.instance, key, until_ms: Some(until_ms), reason: Some(reason) }, ttl)
                    }
                    Some(CoolChange::Clear { key }) => {
                        (Event::Cool { from: self.instance, key, until_ms: None, reason: None }, 0)
                    }
                },
                Some(change) = async { match changes.as_mut() { Some(c) => c.recv().await, None => None } } => {
                    (Event::Changed { from: self.instance, change }, 0)
                }
                Some(first) = async { match touches.as_mut() { Some(t) => t.recv().await, None => None } } => {
                    // Every touch waiting, in one round trip.
                    batch.clear();
                    let now = Instant::now();
                    if refreshed.len() > 100_000 {
                        refreshed.clear();
                    }
                    let mut due = |(session, ttl_ms): (u64, u64)| {
                        let fresh = refreshed
                            .get(&session)
                            .is_some_and(|t| now.duration_since(*t) < Duration::from_millis(ttl_ms / 10));
                        if !fresh {
                            refreshed.insert(session, now);
                        }
                        !fresh
                    };
                    if due(first) {
                        batch.push(first);
                    }
                    while let Some(Ok(t)) = touches.as_mut().map(|t| t.try_recv()) {
                        if due(t) {
                            batch.push(t);
                        }
                        if batch.len() >= 512 {
                            break;
                        }
                    }
                    if !batch.is_empty() && self.available() {
                        let b = std::mem::take(&mut batch);
                        self.call("refresh bindings", |mut c| async move {
                            let mut pipe = redis::pipe();
                            for (session, ttl_ms) in &b {
                                pipe.pexpire(affinity_key(*session), *ttl_ms as i64).ignore();
                            }
                            pipe.query_async::<()>(&mut c).await
                        })
                        .await;
                    }
                    continue;
                }
            };
            if !self.available() {
                continue;
            }
            let msg = serde_json::to_string(&event).expect("event serialises");
            let cool = match &event {
                Event::Cool { key, until_ms, .. } => {
                    if until_ms.is_some() && ttl_ms <= 0 {
                        continue;
                    }
                    Some(cool_key(key))
                }
                Event::Bind { .. } | Event::Changed { .. } => None,
            };
            self.call("publish", |mut c| async move {
                let mut pipe = redis::pipe();
                if let Some(k) = &cool
                    && ttl_ms > 0
                {
                    pipe.set_options(
                        k,
                        &msg,
                        redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl_ms as u64)),
                    );
                } else if let Some(k) = &cool {
                    pipe.del(k);
                }
                pipe.publish(EVENTS, &msg);
                pipe.query_async::<()>(&mut c).await
            })
            .await;
        }
    }

    /// Listens on `router:events`; on every (re)connection first applies the cooldowns Redis holds.
    async fn subscribe(self: Arc<Self>, health: Arc<Health>, affinity: Arc<Affinity>, policy: Policy) {
        let mut first = true;
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut ps) => {
                    if let Err(e) = ps.subscribe(EVENTS).await {
                        self.failed("subscribe", &e);
                    } else {
                        self.catch_up(&health).await;
                        if !std::mem::take(&mut first) {
                            // Changes published while this instance was away were not heard: load everything.
                            let _ = self.heard.send(Change::Keys { rows: Vec::new() });
                            let _ = self.heard.send(Change::Channels);
                        }
                        let mut stream = ps.on_message();
                        while let Some(msg) = stream.next().await {
                            if let Ok(ev) = serde_json::from_slice::<Event>(msg.get_payload_bytes()) {
                                self.apply(&health, &affinity, &policy, ev);
                            }
                        }
                        self.failed("subscription", &"connection closed");
                    }
                }
                Err(e) => self.failed("subscribe", &e),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    fn apply(&self, health: &Health, affinity: &Affinity, policy: &Policy, ev: Event) {
        match ev {
            Event::Cool { from, .. } | Event::Bind { from, .. } | Event::Changed { from, .. }
                if from == self.instance => {}
            Event::Changed { change, .. } => {
                let _ = self.heard.send(change);
            }
            Event::Cool { key, until_ms: Some(until_ms), reason, .. } => {
                health.apply(CoolChange::Cool { key, until_ms, reason: reason.unwrap_or_default() })
            }
            Event::Cool { key, until_ms: None, .. } => health.apply(CoolChange::Clear { key }),
            Event::Bind { session, target, .. } => affinity.bind(session, Target(target), policy, Instant::now()),
        }
    }

    /// Applies every cooldown still live in Redis (an instance that starts or reconnects learns them).
    async fn catch_up(&self, health: &Health) {
        let found = self
            .call("read cooldowns", |mut c| async move {
                let keys: Vec<String> = {
                    let mut it = c.scan_match::<_, String>("router:cool:*").await?;
                    let mut keys = Vec::new();
                    while let Some(k) = it.next().await {
                        keys.push(k?);
                    }
                    keys
                };
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                c.mget::<_, Vec<Option<String>>>(keys).await
            })
            .await
            .unwrap_or_default();
        for m in found.into_iter().flatten() {
            if let Ok(Event::Cool { key, until_ms: Some(until_ms), reason, .. }) = serde_json::from_str(&m) {
                health.apply(CoolChange::Cool { key, until_ms, reason: reason.unwrap_or_default() });
            }
        }
    }

    /// Admits a request of `key` under `limits` in Redis: budget, tokens window, parallel slot, requests window.
    /// `seed`: this instance's spend of the budget period, for a period Redis has not counted yet. `None`: Redis
    /// did not answer.
    async fn take(&self, key: &str, limits: &Limits, seed: f64, tz: &jiff::tz::TimeZone) -> Option<Taken> {
        if !self.ask() {
            return None;
        }
        let rpm = limits.rpm.unwrap_or(0);
        let maxp = limits.max_parallel.unwrap_or(0);
        let tpm = limits.tpm.unwrap_or(0);
        // A changed limit starts its window afresh, as on one instance.
        let rpm_key = format!("router:rpm:{key}:{rpm}");
        let par_key = format!("router:par:{key}");
        let tpm_key = format!("router:tpm:{key}:{tpm}");
        let now_ms = crate::usage::now_ms();
        let (spend_key, budget, expire_ms, resets_at_ms) = match limits.budget {
            Some(b) => {
                let (start, end) = period_bounds(b.per, now_ms, tz);
                // Kept a day past its period, then gone (a total budget never ends).
                let expire = if end == i64::MAX { 0 } else { end - now_ms + 86_400_000 };
                (format!("router:spend:{key}:{}:{start}", b.per.as_str()), b.usd.to_string(), expire, end)
            }
            None => (format!("router:spend:{key}"), String::new(), 0, i64::MAX),
        };
        let (code, retry_us, used_us, tok_used_us, spent): (i64, i64, i64, i64, String) = self
            .call("admit", |mut c| {
                let mut inv = self.admit_script.prepare_invoke();
                inv.key(rpm_key).key(par_key).key(&tpm_key).key(&spend_key);
                inv.arg(rpm).arg(maxp).arg(MINUTE_US).arg(SLOT_TTL_S).arg(tpm).arg(budget).arg(seed.to_string());
                inv.arg(expire_ms);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        let window = |limit: u64, used_us: i64| {
            let interval = (MINUTE_US / limit.max(1) as i64).max(1);
            let used = used_us.max(0);
            Window {
                limit,
                remaining: ((MINUTE_US - used).max(0) / interval) as u64,
                reset: Duration::from_micros(used as u64),
            }
        };
        let rate = Rate {
            requests: limits.rpm.map(|rpm| window(u64::from(rpm), used_us)),
            tokens: limits.tpm.map(|tpm| window(tpm, tok_used_us)),
        };
        let retry_after = Duration::from_micros(retry_us.max(0) as u64);
        let refused = |why| Some(Err(Refused { why, rate }));
        match code {
            0 => Some(Ok(TakenSlot { rate, parallel: maxp > 0, tpm_key, spend_key })),
            1 => refused(Refusal::Requests { limit: rpm, retry_after }),
            2 => refused(Refusal::Parallel { limit: maxp, retry_after }),
            3 => refused(Refusal::Tokens { limit: tpm, retry_after }),
            _ => {
                let b = limits.budget?;
                let resets_at_ms = (resets_at_ms != i64::MAX).then_some(resets_at_ms);
                let spent = spent.parse().unwrap_or(b.usd);
                refused(Refusal::Budget { budget: b.usd, spent, per: b.per, resets_at_ms })
            }
        }
    }

    async fn release(&self, key: &str) {
        let k = format!("router:par:{key}");
        self.call("release slot", |mut c| async move { c.decr::<_, _, i64>(k, 1).await }).await;
    }

    /// Charges a finished request's tokens (as µs of its tokens window) and cost to Redis.
    /// `par_key`: the parallel counter whose slot the request frees (settled requests free it here).
    async fn charge(
        &self,
        tpm_key: String,
        spend_key: String,
        par_key: Option<String>,
        window_us: i64,
        cost: Option<f64>,
    ) {
        // A slot is freed even while Redis is thought down: a counter left high would refuse requests later.
        if !self.available() && par_key.is_none() {
            return;
        }
        let cost = cost.map(|c| c.to_string()).unwrap_or_default();
        let free = if par_key.is_some() { "1" } else { "0" };
        let par_key = par_key.unwrap_or_else(|| "router:par:-".to_string());
        self.call("charge", |mut c| {
            let mut inv = self.charge_script.prepare_invoke();
            inv.key(tpm_key).key(spend_key).key(par_key).arg(window_us).arg(cost).arg(free);
            async move { inv.invoke_async::<i64>(&mut c).await }
        })
        .await;
    }
}

/// What Redis admitted: the windows as the headers show them, whether a parallel slot was taken, and where the
/// request's tokens and cost go when it ends.
type Taken = Result<TakenSlot, Refused>;

struct TakenSlot {
    rate: Rate,
    parallel: bool,
    tpm_key: String,
    spend_key: String,
}

/// Admits a request of `key` under `limits`: across all instances through `shared` when it answers (one round
/// trip: budget, tokens window, parallel slot, requests window), on this instance otherwise. This instance's
/// `limiter` counts too (its windows and spend are what it falls back to): a key it refuses is refused without
/// asking Redis.
pub async fn admit(
    limiter: &Limiter,
    shared: Option<&Arc<Shared>>,
    key: &str,
    limits: &Limits,
    now_ms: i64,
) -> Result<Admit, Refused> {
    let Some(sh) = shared.filter(|_| !limits.is_empty()) else {
        return limiter.admit(key, limits, now_ms);
    };
    let own = Limits { rpm: None, max_parallel: None, ..*limits };
    // What this instance alone has seen refuses without a round trip (its spend and tokens are part of all).
    let mut admitted = limiter.admit(key, &own, now_ms)?;
    let seed = match limits.budget {
        Some(b) if limiter.budget_period(key) == Some(b.per) => limiter.spent(key),
        _ => 0.0,
    };
    match sh.take(key, limits, seed, &limiter.timezone()).await {
        None => limiter.admit(key, limits, now_ms),
        Some(Err(refused)) => Err(refused),
        Some(Ok(taken)) => {
            admitted.rate = taken.rate;
            // A settled request frees its parallel slot with its charge (one round trip); one dropped unsettled
            // (the client went away) frees it on its own.
            let settled = Arc::new(AtomicBool::new(false));
            if taken.parallel {
                let (sh, key, settled) = (sh.clone(), key.to_string(), settled.clone());
                admitted.ticket.on_release(move || {
                    if settled.load(Ordering::Acquire) {
                        return;
                    }
                    crate::background::spawn(async move { sh.release(&key).await });
                });
            }
            if taken.parallel || limits.tpm.is_some() || limits.budget.is_some() {
                let sh = sh.clone();
                let us_per_token = limits.tpm.map_or(0, |tpm| (MINUTE_US / tpm.max(1) as i64).max(1));
                let (tpm_key, spend_key, par_key) = (taken.tpm_key, taken.spend_key, format!("router:par:{key}"));
                let (budget, parallel) = (limits.budget.is_some(), taken.parallel);
                admitted.ticket.on_settle(move |tokens, cost| {
                    let window_us = (tokens.min(i64::MAX as u64) as i64).saturating_mul(us_per_token);
                    let cost = cost.filter(|c| budget && c.is_finite() && *c > 0.0);
                    if window_us == 0 && cost.is_none() && !parallel {
                        return;
                    }
                    settled.store(true, Ordering::Release);
                    let par_key = parallel.then_some(par_key);
                    crate::background::spawn(
                        async move { sh.charge(tpm_key, spend_key, par_key, window_us, cost).await },
                    );
                });
            }
            Ok(admitted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_to_a_call_sent_before_a_failure_does_not_bring_redis_back() {
        // Lazy: nothing connects until a call.
        let s = Shared::open("redis://127.0.0.1:1").unwrap();
        let in_flight = s.failures.load(Ordering::Acquire);
        s.failed("subscription", &"connection closed");
        assert!(s.degraded());
        s.answered(in_flight);
        assert!(s.degraded(), "a call sent before the failure was answered: not evidence that Redis is back");
        s.answered(s.failures.load(Ordering::Acquire));
        assert!(!s.degraded(), "a call sent after the failure was answered: Redis is back");
    }

    /// The messages on `router:events` are what other versions of the router read: their shape is fixed.
    #[test]
    fn change_messages_have_a_stable_shape() {
        let keys = Event::Changed { from: 7, change: Change::Keys { rows: vec![serde_json::json!({"name": "bot"})] } };
        let text = serde_json::to_string(&keys).unwrap();
        assert_eq!(text, r#"{"kind":"changed","from":7,"what":"keys","rows":[{"name":"bot"}]}"#);
        let back: Event = serde_json::from_str(&text).unwrap();
        assert!(matches!(back, Event::Changed { from: 7, change: Change::Keys { rows } } if rows.len() == 1));
        let channels = serde_json::to_string(&Event::Changed { from: 1, change: Change::Channels }).unwrap();
        assert_eq!(channels, r#"{"kind":"changed","from":1,"what":"channels"}"#);
        let bind: Event = serde_json::from_str(r#"{"kind":"bind","from":2,"session":3,"target":4}"#).unwrap();
        assert!(matches!(bind, Event::Bind { from: 2, session: 3, target: 4 }));
    }

    #[test]
    fn binding_keys_are_fixed_width_hex() {
        assert_eq!(affinity_key(0xab), "router:aff:00000000000000ab");
        assert_eq!(cool_key("ep:main/default"), "router:cool:ep:main/default");
    }

    #[test]
    fn a_malformed_url_is_refused_and_rediss_is_accepted() {
        assert!(Shared::open("http://cache:6379").is_err());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // Opening is lazy: no server needed; a TLS URL opens with the rustls feature built in.
        rt.block_on(async {
            assert!(Shared::open("redis://127.0.0.1:1/0").is_ok());
            let tls = Shared::open("rediss://127.0.0.1:1/0").unwrap();
            assert!(tls.tls && !tls.degraded());
        });
    }
}
