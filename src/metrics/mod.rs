//! Prometheus metrics: what the server counts, and the `/metrics` exposition (served by `proxy::scrape`).
//!
//! Owns the metric families (names, labels, help), the [`Counting`] consumer that turns events into counts off
//! the request path, the in-flight gauges the request path moves with a guard ([`InFlight`]), the values read
//! at scrape time (cooldowns, writer backlog) and the bounded label sets: model and gateway-key label values
//! are capped ([`MAX_MODELS`], [`MAX_KEYS`]); later ones are counted under `other`. Must not read the store, hold
//! a lock across an await, or see a secret (records name tokens by name only; key labels are key names).
//!
//! Built on `prometheus-client` (the Prometheus project's own Rust client): typed label sets, no global recorder,
//! and the OpenMetrics text encoder.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rustc_hash::FxBuildHasher;
use tokio::sync::broadcast;

use crate::events::Event;
use crate::upstream::FailureClass;
use crate::usage::RequestRecord;

/// Distinct model label values; the rest are counted as `other`.
pub const MAX_MODELS: usize = 100;
/// Distinct gateway-key label values; the rest are counted as `other`.
pub const MAX_KEYS: usize = 100;
/// The label value for requests without one (no key, not routed).
const NONE: &str = "none";
/// Where label values past a cap are counted.
pub const OTHER: &str = "other";

/// The exposition's content type (OpenMetrics text, which Prometheus negotiates).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets, seconds: from a fast local model to a long agent turn.
const SECONDS: [f64; 14] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    channel: String,
    endpoint: String,
    model: String,
    key: String,
    status_class: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    channel: String,
    endpoint: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    channel: String,
    model: String,
    key: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    channel: String,
    model: String,
    key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    channel: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    key: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AffinityLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabels {
    level: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BalanceLabels {
    channel: String,
    endpoint: String,
    token: String,
    currency: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the server exposes, registered once.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    failovers: Family<ClassLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<CostLabels, Counter<f64, AtomicU64>>,
    duration: HistogramFamily<ChannelLabels>,
    ttfb: HistogramFamily<ChannelLabels>,
    upstream_ttfb: HistogramFamily<EndpointLabels>,
    refusals: Family<RefusalLabels, Counter>,
    affinity: Family<AffinityLabels, Counter>,
    cooldowns_started: Family<LevelLabels, Counter>,
    balance: Family<BalanceLabels, Gauge<f64, AtomicU64>>,
    rebuilds: Counter,
    events_lost: Counter,
    /// Moved by the request path ([`InFlight`]).
    in_flight: Gauge,
    streams: Gauge,
    /// Read at scrape time.
    cooling: Family<LevelLabels, Gauge>,
    backlog: Gauge,
    /// Observed by the store writer.
    store_batch: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            attempts: Family::default(),
            failovers: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            duration: Family::new_with_constructor(seconds_histogram),
            ttfb: Family::new_with_constructor(seconds_histogram),
            upstream_ttfb: Family::new_with_constructor(seconds_histogram),
            refusals: Family::default(),
            affinity: Family::default(),
            cooldowns_started: Family::default(),
            balance: Family::default(),
            rebuilds: Counter::default(),
            events_lost: Counter::default(),
            in_flight: Gauge::default(),
            streams: Gauge::default(),
            cooling: Family::default(),
            backlog: Gauge::default(),
            store_batch: Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        };
        let r = &mut m.registry;
        // Counters get `_total` from the encoder.
        r.register(
            "router_requests",
            "Requests past authentication, by channel, endpoint, model, gateway key, status class and outcome",
            m.requests.clone(),
        );
        r.register(
            "router_upstream_attempts",
            "Upstream attempts by channel, endpoint and result class (ok, or the failure class)",
            m.attempts.clone(),
        );
        r.register(
            "router_failovers",
            "Failed attempts after which the request moved on to another candidate, by failure class",
            m.failovers.clone(),
        );
        r.register(
            "router_tokens",
            "Tokens billed, by kind: input (uncached), cache_read, cache_write, output; reasoning (part of output) and cache_write_1h (part of cache_write)",
            m.tokens.clone(),
        );
        r.register("router_cost_usd", "Cost in USD of requests with a known price", m.cost.clone());
        r.register(
            "router_request_duration_seconds",
            "Client-side request duration, arrival to the last byte",
            m.duration.clone(),
        );
        r.register(
            "router_time_to_first_byte_seconds",
            "Client-side time from arrival to the upstream's first byte (successful requests)",
            m.ttfb.clone(),
        );
        r.register(
            "router_upstream_time_to_first_byte_seconds",
            "Upstream-side time from sending an attempt to its response headers, every attempt",
            m.upstream_ttfb.clone(),
        );
        r.register(
            "router_refusals",
            "Requests refused by their gateway key's limits (reason: limited, budget)",
            m.refusals.clone(),
        );
        r.register(
            "router_affinity",
            "Prompt-cache affinity outcomes of chat requests: new, hit, moved, off",
            m.affinity.clone(),
        );
        r.register("router_cooldowns_started", "Cooldowns started, by level", m.cooldowns_started.clone());
        r.register("router_cooldowns_active", "Cooldowns in force now, by level", m.cooling.clone());
        r.register("router_balance", "Latest checked upstream balance, in its own currency", m.balance.clone());
        r.register(
            "router_snapshot_rebuilds",
            "Routing snapshot rebuilds (config reloads, imports, channel changes, discovery)",
            m.rebuilds.clone(),
        );
        r.register("router_requests_in_flight", "Requests being handled now", m.in_flight.clone());
        r.register("router_streams_in_flight", "Streaming (SSE) responses being sent now", m.streams.clone());
        r.register(
            "router_store_queue_depth",
            "Request records not yet saved in the store (queued, held while it fails, in the pending file)",
            m.backlog.clone(),
        );
        r.register(
            "router_store_batch_seconds",
            "Time the store writer took to commit one batch of records",
            m.store_batch.clone(),
        );
        r.register(
            "router_metrics_events_lost",
            "Events the metrics consumer missed because it fell behind (counts are low by this much)",
            m.events_lost.clone(),
        );
        m
    }

    /// The histogram the store writer observes each batch's commit time in.
    pub fn store_batch_seconds(&self) -> Histogram {
        self.store_batch.clone()
    }

    /// A request starts: counted in flight until the guard drops.
    pub fn request_started(&self) -> InFlight {
        InFlight::new(&self.in_flight)
    }

    /// A stream starts: counted until the guard drops.
    pub fn stream_started(&self) -> InFlight {
        InFlight::new(&self.streams)
    }

    /// The exposition, with the values read at scrape time filled in.
    pub fn render(&self, health: &crate::live::health::Health, backlog: usize) -> String {
        for (level, n) in health.cooling_by_level(Instant::now()) {
            self.cooling.get_or_create(&LevelLabels { level: level.as_str() }).set(n as i64);
        }
        self.backlog.set(backlog as i64);
        let mut out = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// The shared-state families (`shared_state.redis` only; a single instance shows none), put before the
/// exposition's `# EOF`: operations that fell back to the instance's own state, and whether Redis answers.
pub fn with_shared_state(mut text: String, fallbacks: u64, connected: bool) -> String {
    let families = format!(
        "# HELP router_shared_state_fallbacks Operations (admissions, bindings, cooldown and change messages) that \
         used this instance's own state because Redis failed or was unreachable.\n\
         # TYPE router_shared_state_fallbacks counter\n\
         router_shared_state_fallbacks_total {fallbacks}\n\
         # HELP router_shared_state_connected Whether Redis (shared_state.redis) answered last time it was asked.\n\
         # TYPE router_shared_state_connected gauge\n\
         router_shared_state_connected {}\n",
        u8::from(connected)
    );
    let at = text.rfind("# EOF").unwrap_or(text.len());
    text.insert_str(at, &families);
    text
}

/// Counts a gauge up while it lives.
#[derive(Debug, Default)]
pub struct InFlight(Option<Gauge>);

impl InFlight {
    fn new(g: &Gauge) -> InFlight {
        g.inc();
        InFlight(Some(g.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.dec();
        }
    }
}

/// Label values seen so far, up to a cap.
#[derive(Debug)]
struct Capped {
    seen: HashSet<String, FxBuildHasher>,
    cap: usize,
}

impl Capped {
    fn new(cap: usize) -> Capped {
        Capped { seen: HashSet::default(), cap }
    }

    /// `v` itself while it is among the first `cap` distinct values, else `other`.
    fn label<'a>(&mut self, v: &'a str) -> &'a str {
        if self.seen.contains(v) {
            return v;
        }
        if self.seen.len() < self.cap {
            self.seen.insert(v.to_string());
            return v;
        }
        OTHER
    }
}

/// The handles of one request series, looked up once per record without allocating.
struct Series {
    requests: Counter,
    /// input, cache_read, cache_write, output, reasoning, cache_write_1h: created at the first token of each kind.
    tokens: [Option<Counter>; 6],
    cost: Option<Counter<f64, AtomicU64>>,
    duration: Histogram,
    ttfb: Option<Histogram>,
}

/// The handles of one attempt series.
struct AttemptSeries {
    attempts: Counter,
    ttfb: Histogram,
    /// Created at the first failover of this class.
    failovers: Option<Counter>,
}

const TOKEN_KINDS: [&str; 6] = ["input", "cache_read", "cache_write", "output", "reasoning", "cache_write_1h"];

/// Fills `buf` with `parts` joined by a separator no label value contains: a map key built without allocating.
fn key_of<'a>(buf: &'a mut String, parts: &[&str]) -> &'a str {
    buf.clear();
    for p in parts {
        buf.push_str(p);
        buf.push('\u{1f}');
    }
    buf
}

/// The consumer: turns events into counts. Runs in one task off the request path.
pub struct Counting {
    metrics: Arc<Metrics>,
    models: Capped,
    keys: Capped,
    /// Handles by label values, so a record costs lookups rather than label sets and family locks.
    series: Indexed<Series>,
    attempts: Indexed<AttemptSeries>,
    /// By `AffinityOutcome` (new, hit, moved, off).
    affinity: [Option<Counter>; 4],
    buf: String,
    /// The previous record's label values and series: consecutive records nearly always share them (one
    /// channel, endpoint, model and key), and then the series is found without building its key.
    last: Option<Last>,
    /// The same for the previous record's last attempt: its channel, endpoint, class and series.
    last_attempt: Option<(Arc<str>, Arc<str>, FailureClass, usize)>,
}

/// What a record's request series is found by, and its labels.
struct Last {
    channel: Box<str>,
    endpoint: Box<str>,
    /// The model and key as the record has them; `model` and `key` are their labels (capped).
    model_in: Box<str>,
    key_in: Box<str>,
    status_class: &'static str,
    outcome: &'static str,
    model: Box<str>,
    key: Box<str>,
    /// Index into `Counting::series`.
    series: usize,
}

/// Series kept in the order they were first seen, found by their label key or by the index that gave back.
struct Indexed<T> {
    // A fast hash: the label values are capped (`Capped`), so a client cannot grow this into a slow table.
    index: HashMap<Box<str>, usize, FxBuildHasher>,
    list: Vec<T>,
}

impl<T> Default for Indexed<T> {
    fn default() -> Self {
        Indexed { index: HashMap::default(), list: Vec::new() }
    }
}

impl<T> Indexed<T> {
    /// The index of the series keyed `id`, made by `make` when it is new.
    fn index_of(&mut self, id: &str, make: impl FnOnce() -> T) -> usize {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        self.list.push(make());
        self.index.insert(id.into(), self.list.len() - 1);
        self.list.len() - 1
    }
}

impl<T> std::ops::IndexMut<usize> for Indexed<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.list[i]
    }
}

impl<T> std::ops::Index<usize> for Indexed<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.list[i]
    }
}

impl Counting {
    pub fn new(metrics: Arc<Metrics>) -> Counting {
        Counting {
            metrics,
            models: Capped::new(MAX_MODELS),
            keys: Capped::new(MAX_KEYS),
            series: Indexed::default(),
            attempts: Indexed::default(),
            affinity: Default::default(),
            buf: String::new(),
            last: None,
            last_attempt: None,
        }
    }

    /// Counts events until the stream closes: whatever is queued at each wake, then it sleeps [`COUNT_WINDOW`]
    /// before waiting again, so a busy server wakes this task ~100 times a second rather than once per request
    /// (each wake is a task switch, often to the other core, on the proxy's own threads). Counters trail the
    /// requests by at most the window; the event stream's `events::CAPACITY` (8,192) holds a window's events
    /// up to 800,000 requests a second.
    pub async fn run(mut self, mut rx: broadcast::Receiver<Event>) {
        use broadcast::error::TryRecvError;
        loop {
            // The first event is waited for; the rest of what is queued is taken without waiting.
            let mut next = rx.recv().await.map_err(|e| match e {
                broadcast::error::RecvError::Lagged(n) => TryRecvError::Lagged(n),
                broadcast::error::RecvError::Closed => TryRecvError::Closed,
            });
            loop {
                match next {
                    Ok(ev) => self.count(&ev),
                    Err(TryRecvError::Lagged(n)) => {
                        tracing::warn!("metrics fell {n} events behind; counters are low by that much");
                        self.metrics.events_lost.inc_by(n);
                    }
                    Err(TryRecvError::Closed) => return,
                    Err(TryRecvError::Empty) => break,
                }
                next = rx.try_recv();
            }
            tokio::time::sleep(COUNT_WINDOW).await;
        }
    }

    pub fn count(&mut self, ev: &Event) {
        let m = &self.metrics;
        match ev {
            Event::RequestFinished(rec) => self.request(rec),
            Event::Cooled { level, .. } => {
                m.cooldowns_started.get_or_create(&LevelLabels { level: level.as_str() }).inc();
            }
            Event::Recovered { .. } => {}
            Event::Balance { channel, endpoint, token_key, currency, amount } => {
                let l = BalanceLabels {
                    channel: channel.to_string(),
                    endpoint: endpoint.to_string(),
                    token: token_key.to_string(),
                    currency: currency.to_string(),
                };
                m.balance.get_or_create(&l).set(*amount);
            }
            Event::Reloaded => {
                m.rebuilds.inc();
            }
        }
    }

    fn request(&mut self, rec: &RequestRecord) {
        let m = &self.metrics;
        let channel = rec.channel.as_deref().unwrap_or(NONE);
        let endpoint = rec.endpoint.as_deref().unwrap_or(NONE);
        let model_in = rec.upstream_model.as_deref().unwrap_or(&rec.requested_model);
        let key_in = rec.gateway_key.as_deref().unwrap_or(NONE);
        let (status_class, outcome) = (status_class(rec.status), rec.outcome.as_str());
        let same = self.last.as_ref().is_some_and(|l| {
            l.status_class == status_class
                && l.outcome == outcome
                && *l.channel == *channel
                && *l.endpoint == *endpoint
                && *l.model_in == *model_in
                && *l.key_in == *key_in
        });
        if !same {
            let model = self.models.label(model_in);
            let key = self.keys.label(key_in);
            let id = key_of(&mut self.buf, &[channel, endpoint, model, key, status_class, outcome]);
            let series = self.series.index_of(id, || {
                let labels = RequestLabels {
                    channel: channel.into(),
                    endpoint: endpoint.into(),
                    model: model.into(),
                    key: key.into(),
                    status_class,
                    outcome,
                };
                Series {
                    requests: m.requests.get_or_create_owned(&labels),
                    tokens: Default::default(),
                    cost: None,
                    duration: m.duration.get_or_create_owned(&ChannelLabels { channel: channel.into() }),
                    ttfb: None,
                }
            });
            self.last = Some(Last {
                channel: channel.into(),
                endpoint: endpoint.into(),
                model_in: model_in.into(),
                key_in: key_in.into(),
                status_class,
                outcome,
                model: model.into(),
                key: key.into(),
                series,
            });
        }
        let last = self.last.as_ref().expect("set above");
        let (model, key) = (&*last.model, &*last.key);
        let s = &mut self.series[last.series];
        s.requests.inc();
        s.duration.observe(rec.total_ms as f64 / 1000.0);
        if let Some(ms) = rec.ttfb_ms {
            let ch = || ChannelLabels { channel: channel.into() };
            s.ttfb.get_or_insert_with(|| m.ttfb.get_or_create_owned(&ch())).observe(ms as f64 / 1000.0);
        }
        let t = &rec.tokens;
        let kinds = [t.input, t.cache_read, t.cache_write, t.output, t.reasoning, t.cache_write_1h];
        for (i, n) in kinds.into_iter().enumerate() {
            if n > 0 {
                let labels = || TokenLabels {
                    channel: channel.into(),
                    model: model.into(),
                    key: key.into(),
                    kind: TOKEN_KINDS[i],
                };
                s.tokens[i].get_or_insert_with(|| m.tokens.get_or_create_owned(&labels())).inc_by(n);
            }
        }
        if let Some(c) = rec.cost_usd.filter(|c| *c > 0.0) {
            let labels = || CostLabels { channel: channel.into(), model: model.into(), key: key.into() };
            s.cost.get_or_insert_with(|| m.cost.get_or_create_owned(&labels())).inc_by(c);
        }
        if let Some(a) = rec.affinity {
            let labels = || AffinityLabels { outcome: a.as_str().into() };
            self.affinity[a as usize].get_or_insert_with(|| m.affinity.get_or_create_owned(&labels())).inc();
        }
        if matches!(rec.outcome, crate::usage::Outcome::Limited | crate::usage::Outcome::Budget) {
            m.refusals.get_or_create(&RefusalLabels { key: key.into(), reason: outcome }).inc();
        }
        let last = rec.attempts.len().saturating_sub(1);
        for (i, a) in rec.attempts.iter().enumerate() {
            let same = self.last_attempt.as_ref().is_some_and(|(c, e, class, _)| {
                // `Arc<str>` equality compares the pointers first: the snapshot's shared names nearly always match.
                *class == a.outcome && *c == a.channel && *e == a.endpoint
            });
            let idx = match &self.last_attempt {
                Some((.., idx)) if same => *idx,
                _ => {
                    let id = key_of(&mut self.buf, &[&a.channel, &a.endpoint, a.outcome.code()]);
                    let idx = self.attempts.index_of(id, || attempt_series(m, a));
                    self.last_attempt = Some((a.channel.clone(), a.endpoint.clone(), a.outcome, idx));
                    idx
                }
            };
            let s = &mut self.attempts[idx];
            s.attempts.inc();
            s.ttfb.observe(a.ms as f64 / 1000.0);
            if i < last && a.outcome != FailureClass::Ok {
                let class = || ClassLabels { class: a.outcome.code().into() };
                s.failovers.get_or_insert_with(|| m.failovers.get_or_create_owned(&class())).inc();
            }
        }
    }
}

/// The series of `a`'s channel, endpoint and class, made at its first attempt.
fn attempt_series(m: &Metrics, a: &crate::usage::Attempt) -> AttemptSeries {
    let ep = EndpointLabels { channel: String::from(&*a.channel), endpoint: String::from(&*a.endpoint) };
    let class = AttemptLabels {
        channel: String::from(&*a.channel),
        endpoint: String::from(&*a.endpoint),
        class: a.outcome.code().into(),
    };
    AttemptSeries {
        attempts: m.attempts.get_or_create_owned(&class),
        ttfb: m.upstream_ttfb.get_or_create_owned(&ep),
        failovers: None,
    }
}

/// `2xx`, `4xx`, `5xx`, ...; `none` when no status was given.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => NONE,
    }
}

/// How long the counting task lets events gather between wakes (see `Counting::run`).
const COUNT_WINDOW: Duration = Duration::from_millis(10);

/// Subscribes now (so nothing published after this call is missed) and counts in a task.
pub fn spawn(metrics: Arc<Metrics>, events: &crate::events::Events) -> tokio::task::JoinHandle<()> {
    let rx = events.subscribe();
    tokio::spawn(Counting::new(metrics).run(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::CoolLevel;
    use crate::usage::{Attempt, Outcome, Tokens};

    #[test]
    fn shared_state_families_come_before_the_end_marker() {
        let text = Metrics::new().render(&crate::live::health::Health::new(), 0);
        assert!(!text.contains("router_shared_state"), "a single instance shows none");
        let text = with_shared_state(text, 7, false);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(line(&text, "router_shared_state_fallbacks_total "), Some("router_shared_state_fallbacks_total 7"));
        assert_eq!(line(&text, "router_shared_state_connected "), Some("router_shared_state_connected 0"));
        assert!(text.contains("# TYPE router_shared_state_fallbacks counter\n"));
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    fn rec(model: &str, key: Option<&str>) -> RequestRecord {
        RequestRecord {
            requested_model: model.into(),
            upstream_model: Some(model.into()),
            channel: Some("main".into()),
            endpoint: Some("default".into()),
            gateway_key: key.map(Into::into),
            status: 200,
            total_ms: 1500,
            ttfb_ms: Some(300),
            tokens: Tokens { input: 10, cache_read: 5, output: 7, reasoning: 2, ..Default::default() },
            cost_usd: Some(0.25),
            attempts: vec![
                Attempt {
                    channel: "bad".into(),
                    endpoint: "default".into(),
                    outcome: FailureClass::ServerError,
                    ms: 20,
                    ..Default::default()
                },
                Attempt {
                    channel: "main".into(),
                    endpoint: "default".into(),
                    outcome: FailureClass::Ok,
                    ms: 300,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn records_become_counters_with_prometheus_names() {
        let m = Arc::new(Metrics::new());
        let mut c = Counting::new(m.clone());
        c.count(&Event::RequestFinished(Arc::new(rec("gpt-4o", Some("team")))));
        let hit = RequestRecord { affinity: Some(crate::live::affinity::Outcome::Hit), ..rec("gpt-4o", Some("team")) };
        c.count(&Event::RequestFinished(Arc::new(hit)));
        let refused = RequestRecord {
            status: 429,
            outcome: Outcome::Budget,
            gateway_key: Some("team".into()),
            ..Default::default()
        };
        c.count(&Event::RequestFinished(Arc::new(refused)));
        c.count(&Event::Reloaded);
        let text = m.render(&crate::live::health::Health::new(), 3);
        let want = r#"router_requests_total{channel="main",endpoint="default",model="gpt-4o",key="team",status_class="2xx",outcome="ok"} 2"#;
        assert!(text.contains(want), "{text}");
        assert!(text.contains(r#"router_tokens_total{channel="main",model="gpt-4o",key="team",kind="input"} 20"#));
        assert!(text.contains(r#"router_tokens_total{channel="main",model="gpt-4o",key="team",kind="cache_read"} 10"#));
        assert!(text.contains(r#"router_tokens_total{channel="main",model="gpt-4o",key="team",kind="reasoning"} 4"#));
        assert!(text.contains(r#"router_cost_usd_total{channel="main",model="gpt-4o",key="team"} 0.5"#));
        assert!(text.contains(r#"router_failovers_total{class="server_error"} 2"#));
        assert!(!text.contains(r#"router_failovers_total{class="ok"}"#), "no failover series for successes");
        assert!(!text.contains(r#"kind="cache_write""#), "no token series before a token of that kind");
        assert!(text.contains(r#"router_refusals_total{key="team",reason="budget"} 1"#));
        assert!(
            text.contains(r#"router_upstream_attempts_total{channel="bad",endpoint="default",class="server_error"} 2"#)
        );
        assert!(line(&text, r#"router_request_duration_seconds_count{channel="main"}"#).unwrap().ends_with(" 2"));
        assert!(text.contains("router_snapshot_rebuilds_total 1"));
        assert!(text.contains(r#"router_affinity_total{outcome="hit"} 1"#));
        assert!(text.contains("router_store_queue_depth 3"));
        assert!(text.contains(r#"router_cooldowns_active{level="endpoint"} 0"#));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn runs_and_alternations_of_series_count_where_they_belong() {
        let m = Arc::new(Metrics::new());
        let mut c = Counting::new(m.clone());
        // Runs of the same labels (the previous series is reused), then every label changing in turn.
        let failed = RequestRecord { status: 502, outcome: Outcome::UpstreamError, ..rec("a", Some("k1")) };
        let other_channel = RequestRecord { channel: Some("side".into()), ..rec("a", Some("k1")) };
        let other_endpoint = RequestRecord { endpoint: Some("eu".into()), ..rec("a", Some("k1")) };
        let keyless = rec("a", None);
        for r in [rec("a", Some("k1")), rec("a", Some("k1")), rec("b", Some("k1")), rec("a", Some("k2"))] {
            c.count(&Event::RequestFinished(Arc::new(r)));
        }
        for r in [failed, other_channel, other_endpoint, keyless, rec("a", Some("k1"))] {
            c.count(&Event::RequestFinished(Arc::new(r)));
        }
        let text = m.render(&crate::live::health::Health::new(), 0);
        let series = |ch: &str, ep: &str, model: &str, key: &str, class: &str, outcome: &str| {
            format!(
                r#"router_requests_total{{channel="{ch}",endpoint="{ep}",model="{model}",key="{key}",status_class="{class}",outcome="{outcome}"}}"#
            )
        };
        // The value of the exposition line that starts with `s`.
        let value = |text: &str, s: &str| {
            line(text, s).unwrap_or_else(|| panic!("{s} missing:\n{text}")).rsplit(' ').next().unwrap().to_string()
        };
        let count = |s: String| value(&text, &s);
        assert_eq!(count(series("main", "default", "a", "k1", "2xx", "ok")), "3");
        assert_eq!(count(series("main", "default", "b", "k1", "2xx", "ok")), "1");
        assert_eq!(count(series("main", "default", "a", "k2", "2xx", "ok")), "1");
        assert_eq!(count(series("main", "default", "a", "k1", "5xx", "upstream_error")), "1");
        assert_eq!(count(series("side", "default", "a", "k1", "2xx", "ok")), "1");
        assert_eq!(count(series("main", "eu", "a", "k1", "2xx", "ok")), "1");
        assert_eq!(count(series("main", "default", "a", "none", "2xx", "ok")), "1");
        assert!(text.contains(r#"router_tokens_total{channel="main",model="b",key="k1",kind="input"} 10"#), "{text}");
        assert!(text.contains(r#"router_tokens_total{channel="main",model="a",key="k1",kind="input"} 50"#), "{text}");
        // Each record's two attempts alternate between series (the previous attempt's series is reused only
        // while channel, endpoint and class stay the same); an attempt of a new class makes its own.
        let attempts = |ch: &str, class: &str| {
            count(format!(r#"router_upstream_attempts_total{{channel="{ch}",endpoint="default",class="{class}"}}"#))
        };
        assert_eq!(attempts("bad", "server_error"), "9");
        assert_eq!(attempts("main", "ok"), "9");
        let mut timeout = rec("a", Some("k1"));
        timeout.attempts[0].outcome = FailureClass::Timeout;
        let shared: Arc<str> = "bad".into();
        timeout.attempts[0].channel = shared.clone();
        let mut again = rec("a", Some("k1"));
        again.attempts[0].outcome = FailureClass::Timeout;
        again.attempts[0].channel = shared;
        again.attempts.truncate(1);
        c.count(&Event::RequestFinished(Arc::new(timeout)));
        c.count(&Event::RequestFinished(Arc::new(again)));
        let text = m.render(&crate::live::health::Health::new(), 0);
        let get = |s: &str| value(&text, s);
        assert_eq!(get(r#"router_upstream_attempts_total{channel="bad",endpoint="default",class="timeout"}"#), "2");
        assert_eq!(
            get(r#"router_upstream_attempts_total{channel="bad",endpoint="default",class="server_error"}"#),
            "9"
        );
        assert_eq!(get(r#"router_upstream_attempts_total{channel="main",endpoint="default",class="ok"}"#), "10");
    }

    #[test]
    fn model_and_key_labels_are_capped() {
        let m = Arc::new(Metrics::new());
        let mut c = Counting::new(m.clone());
        for i in 0..MAX_MODELS + 5 {
            c.count(&Event::RequestFinished(Arc::new(rec(&format!("m{i}"), Some(&format!("k{i}"))))));
        }
        let text = m.render(&crate::live::health::Health::new(), 0);
        let other = r#"router_requests_total{channel="main",endpoint="default",model="other",key="other",status_class="2xx",outcome="ok"} 5"#;
        assert!(text.contains(other), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("router_requests_total")).count(), MAX_MODELS + 1);
    }

    #[test]
    fn in_flight_guards_count_up_and_down() {
        let m = Metrics::new();
        let a = m.request_started();
        let b = m.stream_started();
        let text = m.render(&crate::live::health::Health::new(), 0);
        assert!(text.contains("router_requests_in_flight 1") && text.contains("router_streams_in_flight 1"));
        drop((a, b));
        let text = m.render(&crate::live::health::Health::new(), 0);
        assert!(text.contains("router_requests_in_flight 0") && text.contains("router_streams_in_flight 0"));
    }

    #[test]
    fn cooldowns_and_balances() {
        let m = Arc::new(Metrics::new());
        let mut c = Counting::new(m.clone());
        c.count(&Event::Cooled {
            key: "main/default".into(),
            level: CoolLevel::Endpoint,
            reason: "HTTP 500".into(),
            for_ms: 1000,
            failures: 1,
        });
        c.count(&Event::Balance {
            channel: "main".into(),
            endpoint: "default".into(),
            token_key: "k1".into(),
            currency: "CNY".into(),
            amount: 12.5,
        });
        let text = m.render(&crate::live::health::Health::new(), 0);
        assert!(text.contains(r#"router_cooldowns_started_total{level="endpoint"} 1"#));
        assert!(text.contains(r#"router_balance{channel="main",endpoint="default",token="k1",currency="CNY"} 12.5"#));
    }
}
