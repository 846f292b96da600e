//! The shared (Redis) backend of live state: several `router serve` instances behind one load balancer act as
//! one gateway (`shared_state.redis`).
//!
//! Owns, over one Redis: cooldowns (every instance's [`CoolChange`]s are written as `router:cool:<key>` with
//! their expiry and published on `router:events`; every instance applies the others' to its own
//! [`Health`], and reads the live ones when it (re)connects), affinity bindings (a new or moved binding is
//! published and bound on every instance, so a session's turns keep their upstream whichever instance serves
//! them; an instance that was disconnected does not learn the bindings made meanwhile), and the requests-per-minute window and parallel
//! counter of gateway keys ([`admit`]: one Lua script, atomic across instances, one round trip per request of
//! a key with `rpm` or `max_parallel`; keys without them never touch Redis). Tokens per minute and budgets stay
//! in each instance's [`Limiter`].
//!
//! Failure: Redis unreachable (or slower than [`TIMEOUT`]) -> this instance admits with its own windows and
//! keeps its own cooldowns, logs it once, `/health` reports `degraded`, and tries Redis again after
//! [`RETRY`]; no request fails because of Redis. Parallel slots of an instance killed mid-request expire with
//! their counter ([`SLOT_TTL_S`] after the key's last admission).
//!
//! Must not: hold a lock across an await, wait for Redis on the request path except in [`admit`], or know about
//! HTTP or protocols.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::affinity::{Affinity, Policy, Target};
use super::health::{CoolChange, Health};
use super::limits::{Admit, Limiter, Limits, Rate, Refusal, Refused, Window};

/// Longest a request waits for Redis before it is admitted on this instance's own state.
pub const TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, how long requests skip Redis before one tries again.
pub const RETRY: Duration = Duration::from_secs(1);
/// A parallel counter expires this long after its key's last admission (slots of killed instances).
pub const SLOT_TTL_S: i64 = 600;
const EVENTS: &str = "router:events";
const MINUTE_US: i64 = 60_000_000;

/// Admission of one request: rpm window (GCRA, theoretical arrival time in µs of Redis' clock) and parallel
/// counter. Returns {0 admitted | 1 rpm refused | 2 parallel refused, retry-after µs, window used µs}.
const ADMIT_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rpm = tonumber(ARGV[1])
local maxp = tonumber(ARGV[2])
local minute = tonumber(ARGV[3])
if maxp > 0 then
  local p = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
  if p > maxp then
    redis.call('DECR', KEYS[2])
    return {2, 1000000, 0}
  end
end
if rpm > 0 then
  local interval = math.floor(minute / rpm)
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  local nxt = math.max(tat, now) + interval
  if nxt - now > minute then
    if maxp > 0 then redis.call('DECR', KEYS[2]) end
    return {1, nxt - now - minute, math.max(tat - now, 0)}
  end
  redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.floor(minute / 1000) + 1000)
  return {0, 0, nxt - now}
end
return {0, 0, 0}
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
}

/// A connection to the shared Redis, and whether it answers.
pub struct Shared {
    client: redis::Client,
    conn: ConnectionManager,
    instance: u64,
    script: redis::Script,
    down: AtomicBool,
    /// While down: unix ms before which requests do not try Redis.
    retry_at_ms: AtomicI64,
    /// Affinity bindings made here, to publish (sender, and the receiver until [`Shared::start`] takes it).
    binds: UnboundedSender<(u64, Target)>,
    binds_rx: Mutex<Option<UnboundedReceiver<(u64, Target)>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("instance", &self.instance).field("down", &self.degraded()).finish()
    }
}

fn cool_key(key: &str) -> String {
    format!("router:cool:{key}")
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
        let (binds, binds_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Arc::new(Shared {
            binds,
            binds_rx: Mutex::new(Some(binds_rx)),
            client,
            conn,
            instance: rand::random(),
            script: redis::Script::new(ADMIT_LUA),
            down: AtomicBool::new(false),
            retry_at_ms: AtomicI64::new(0),
        }))
    }

    /// Whether Redis failed last time it was asked (this instance runs on its own state meanwhile).
    pub fn degraded(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Whether a request should ask Redis now (not down, or down long enough to try again).
    fn available(&self) -> bool {
        !self.degraded() || crate::usage::now_ms() >= self.retry_at_ms.load(Ordering::Acquire)
    }

    fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        self.retry_at_ms.store(crate::usage::now_ms() + RETRY.as_millis() as i64, Ordering::Release);
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "shared state: Redis unreachable ({what}: {e}); this instance uses its own cooldowns and limits \
                 until it answers again"
            );
        }
    }

    fn answered(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("shared state: Redis answers again; cooldowns and limits are shared again");
        }
    }

    /// Runs `f` on a connection within [`TIMEOUT`], noting failures; `None` when Redis did not answer.
    async fn call<T, F>(&self, what: &str, f: impl FnOnce(ConnectionManager) -> F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(TIMEOUT, f(self.conn.clone())).await {
            Ok(Ok(v)) => {
                self.answered();
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(what, &e);
                None
            }
            Err(_) => {
                self.failed(what, &format!("no answer within {} ms", TIMEOUT.as_millis()));
                None
            }
        }
    }

    /// Starts sharing `health`'s cooldowns and `affinity`'s bindings: this instance's changes go to Redis, the
    /// other instances' come back (bindings under `policy`). Runs until the process ends.
    pub fn start(self: &Arc<Self>, health: Arc<Health>, affinity: Arc<Affinity>, policy: Policy) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        health.publish_to(tx);
        let binds = self.binds_rx.lock().expect("binds lock").take();
        tokio::spawn(self.clone().publish(rx, binds));
        tokio::spawn(self.clone().subscribe(health, affinity, policy));
    }

    /// Tells the other instances that affinity session `session` is now bound to `target` (no waiting).
    pub fn bound(&self, session: u64, target: Target) {
        let _ = self.binds.send((session, target));
    }

    async fn publish(
        self: Arc<Self>,
        mut cools: UnboundedReceiver<CoolChange>,
        mut binds: Option<UnboundedReceiver<(u64, Target)>>,
    ) {
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
                Some((session, target)) = async { match binds.as_mut() { Some(b) => b.recv().await, None => None } } => {
                    (Event::Bind { from: self.instance, session, target: target.0 }, 0)
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
                Event::Bind { .. } => None,
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
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut ps) => {
                    if let Err(e) = ps.subscribe(EVENTS).await {
                        self.failed("subscribe", &e);
                    } else {
                        self.catch_up(&health).await;
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
            Event::Cool { from, .. } | Event::Bind { from, .. } if from == self.instance => {}
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

    /// Takes an rpm slot and a parallel slot of `key` in Redis. `None`: Redis did not answer.
    async fn take(&self, key: &str, limits: &Limits) -> Option<Result<(Option<Window>, bool), Refused>> {
        if !self.available() {
            return None;
        }
        let rpm = limits.rpm.unwrap_or(0);
        let maxp = limits.max_parallel.unwrap_or(0);
        // A changed limit starts its window afresh, as on one instance.
        let rpm_key = format!("router:rpm:{key}:{rpm}");
        let par_key = format!("router:par:{key}");
        let (code, retry_us, used_us): (i64, i64, i64) = self
            .call("admit", |mut c| {
                let mut inv = self.script.prepare_invoke();
                inv.key(rpm_key).key(par_key).arg(rpm).arg(maxp).arg(MINUTE_US).arg(SLOT_TTL_S);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        let window = limits.rpm.map(|rpm| {
            let interval = MINUTE_US / i64::from(rpm.max(1));
            let used = used_us.max(0);
            Window {
                limit: u64::from(rpm),
                remaining: ((MINUTE_US - used).max(0) / interval) as u64,
                reset: Duration::from_micros(used as u64),
            }
        });
        let rate = Rate { requests: window, tokens: None };
        let retry_after = Duration::from_micros(retry_us.max(0) as u64);
        Some(match code {
            0 => Ok((window, maxp > 0)),
            1 => Err(Refused { why: Refusal::Requests { limit: rpm, retry_after }, rate }),
            _ => Err(Refused { why: Refusal::Parallel { limit: maxp, retry_after }, rate }),
        })
    }

    async fn release(&self, key: &str) {
        let k = format!("router:par:{key}");
        self.call("release slot", |mut c| async move { c.decr::<_, _, i64>(k, 1).await }).await;
    }
}

/// Admits a request of `key` under `limits`: `rpm` and `max_parallel` across all instances through `shared`
/// when it answers, on this instance otherwise; `tpm` and budgets on this instance's `limiter`.
pub async fn admit(
    limiter: &Limiter,
    shared: Option<&Arc<Shared>>,
    key: &str,
    limits: &Limits,
    now_ms: i64,
) -> Result<Admit, Refused> {
    let Some(sh) = shared.filter(|_| limits.rpm.is_some() || limits.max_parallel.is_some()) else {
        return limiter.admit(key, limits, now_ms);
    };
    let own = Limits { rpm: None, max_parallel: None, ..*limits };
    // Budget and tokens first: a refusal there costs no round trip.
    let mut admitted = limiter.admit(key, &own, now_ms)?;
    match sh.take(key, limits).await {
        None => limiter.admit(key, limits, now_ms),
        Some(Err(mut refused)) => {
            refused.rate.tokens = admitted.rate.tokens;
            Err(refused)
        }
        Some(Ok((window, parallel))) => {
            admitted.rate.requests = window;
            if parallel {
                let (sh, key) = (sh.clone(), key.to_string());
                admitted.ticket.on_release(move || {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn(async move { sh.release(&key).await });
                    }
                });
            }
            Ok(admitted)
        }
    }
}
