//! The proxy server: accept, authenticate, route, forward, stream back, record.
//!
//! Owns the server (bound listener + shutdown future in, so tests bind port 0; one runtime per core accepting,
//! each connection spoken by `h1`) and the phases of one request: route and authenticate (`handler`), read, peek
//! and plan over one `Exchange` and reject in the client's shape (`exchange`), attempt with failover
//! (`failover`), respond (`respond`), the streaming pump that tees bytes through the usage meter and records
//! (`body`), local answers (`local`) and the headers that cross (`headers`). Must not touch the store: records
//! leave through the `RecordSink`.

mod affinity;
pub mod body;
mod catalogue;
mod exchange;
mod failover;
pub mod h1;
pub mod handler;
pub mod headers;
mod local;
mod respond;
pub mod scrape;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;

use crate::catalog::Snapshot;
use crate::events::Events;
use crate::keys::KeyTable;
use crate::live::affinity::Affinity;
use crate::live::health::Health;
use crate::live::limits::Limiter;
use crate::live::shared::Shared;
use crate::upstream::fasttest::FastTest;
use crate::usage::sink::RecordSink;

pub use h1::RequestBody;

/// The body of every response the proxy gives.
pub type ProxyBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// A whole body.
pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

/// Everything a request needs, shared by all connections.
pub struct AppState {
    /// The routing snapshot; swapped whole on reload, import, discovery.
    pub snapshot: ArcSwap<Snapshot>,
    pub health: Arc<Health>,
    /// The upstream client of proxied requests.
    pub wire: crate::upstream::wire::Wire,
    /// A reqwest client for the server's own calls (trace export).
    pub client: reqwest::Client,
    pub sink: RecordSink,
    /// Measures endpoints without observed latency before a `fastest` plan (cached; other strategies never use it).
    pub fasttest: FastTest,
    /// The gateway keys clients may present (YAML + store); swapped whole when either changes.
    pub keys: ArcSwap<KeyTable>,
    /// Admission state of keys with limits (rate windows, parallel slots, budget spend).
    pub limiter: Limiter,
    /// What answers the paths on this listener the proxy does not own (`/admin/`, `/ui/`), set by `serve`.
    pub door: std::sync::OnceLock<Arc<dyn Door>>,
    /// The server's event stream (finished requests, cooldowns, balances, reloads); the health's and the sink's.
    pub events: Events,
    /// Prometheus metrics (counted from `events` by `metrics::spawn`; in-flight gauges moved here).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Prompt-cache affinity bindings (session -> candidate); live state, in memory.
    pub affinity: Arc<Affinity>,
    /// The Redis several instances share (`shared_state.redis`); `None`: live state is this process's alone.
    pub shared: Option<Arc<Shared>>,
    /// Becomes `true` when the server stops accepting: endless responses (the admin event stream) end then,
    /// so they do not hold the shutdown for its whole grace period.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

/// A door on the proxy's listener that the proxy does not own (the admin API and the dashboard, `admin::Door`).
/// The proxy hands it every request whose path it claims, before authentication, so `proxy` need not know
/// those modules (they build on it).
pub trait Door: Send + Sync {
    /// Whether a request for `path` is this door's.
    fn claims(&self, path: &str) -> bool;
    /// The largest request body any of its paths reads (bytes).
    fn max_body(&self) -> usize;
    /// The answer to a request the door claimed, from the client at `peer`.
    fn answer(
        self: Arc<Self>,
        state: Arc<AppState>,
        req: http::Request<RequestBody>,
        peer: std::net::IpAddr,
    ) -> std::pin::Pin<Box<dyn Future<Output = http::Response<ProxyBody>> + Send>>;
}

impl AppState {
    /// The state of a server; `health`'s event stream becomes the server's, and the sink publishes on it.
    pub fn new(snapshot: Snapshot, health: Arc<Health>, sink: RecordSink) -> Arc<AppState> {
        AppState::with_metrics(snapshot, health, sink, Arc::default())
    }

    /// [`AppState::new`] with metrics made earlier (the store writer observes into them before the state exists).
    pub fn with_metrics(
        snapshot: Snapshot,
        health: Arc<Health>,
        sink: RecordSink,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<AppState> {
        let events = health.events().clone();
        let sink = sink.with_events(events.clone());
        let client = crate::upstream::client(&snapshot.config.raw.upstream);
        let wire = crate::upstream::wire::Wire::with_cores(&snapshot.config.raw.upstream, serving_threads());
        let fast_test_timeout = snapshot.config.raw.routing.fast_test_timeout.0;
        // The configuration's keys; `serve` adds the store's (`control::reload_keys`).
        let keys = KeyTable::build(&snapshot.config.gateway_keys, &[]).unwrap_or_default();
        let tz =
            crate::keys::timezone(snapshot.config.raw.server.timezone.as_deref()).unwrap_or(jiff::tz::TimeZone::UTC);
        let aff = &snapshot.config.raw.routing.affinity;
        let affinity = Arc::new(Affinity::new(aff.max_sessions));
        let policy = crate::live::affinity::Policy { ttl: aff.ttl.0, max: aff.max_sessions };
        // The URL was checked when the configuration loaded.
        let shared = snapshot.config.raw.shared_state.redis.as_deref().and_then(|url| Shared::open(url).ok());
        if let Some(sh) = &shared {
            sh.start(health.clone(), affinity.clone(), policy);
        }
        Arc::new(AppState {
            shared,
            keys: ArcSwap::from_pointee(keys),
            limiter: Limiter::new(tz),
            snapshot: ArcSwap::from_pointee(snapshot),
            health,
            wire,
            client,
            sink,
            fasttest: FastTest::with_timeout(fast_test_timeout),
            door: std::sync::OnceLock::new(),
            events,
            metrics,
            affinity,
            stopping: tokio::sync::watch::Sender::new(false),
        })
    }
}

/// Charges a finished request to its key's limits: tokens (input + output, cached included) to the tokens
/// window, the recorded cost to the budget. Frees its parallel slot.
pub(crate) fn settle(state: &AppState, ticket: crate::live::limits::Ticket, record: &crate::usage::RequestRecord) {
    let tokens = record.tokens.total_input() + record.tokens.output;
    state.limiter.settle(ticket, tokens, record.cost_usd, crate::usage::now_ms());
}

/// How many threads serve connections: `TOKIO_WORKER_THREADS` when set (tokio's own variable, which also sizes
/// the runtime of everything else), else the CPUs this process may use.
pub fn serving_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish within `grace`.
///
/// Connections are served by [`serving_threads`] threads, each with its own single-threaded runtime accepting
/// on the same listening socket and its own upstream pool (`Wire`'s per-thread client): a request, its upstream
/// connection and the tasks between them stay on one thread, so a request costs no cross-thread wake-ups (one
/// event loop per core, as nginx's workers). With one thread, connections are served on the calling runtime.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    serve_on(listener, state, shutdown, grace, serving_threads()).await
}

/// [`serve`] on `threads` threads.
pub async fn serve_on(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    threads: usize,
) -> std::io::Result<()> {
    crate::background::init(tokio::runtime::Handle::current());
    if threads <= 1 {
        accept(listener, state, shutdown, grace, Share::alone()).await?;
        tracing::info!("all connections finished");
        return Ok(());
    }
    let listening = listener.into_std()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut cores = Vec::with_capacity(threads);
    let balance = Arc::new(Balance::new(threads));
    for core in 1..=threads {
        let (listening, state, mut stopped) = (listening.try_clone()?, state.clone(), stopped.clone());
        let share = Share { balance: balance.clone(), me: core - 1 };
        let (done, finished) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        std::thread::Builder::new().name(format!("router-serve-{core}")).spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|rt| {
                crate::upstream::wire::serve_from_core(core);
                rt.block_on(async {
                    tokio::spawn(keep_timer_wheel_near());
                    let listener = TcpListener::from_std(listening)?;
                    let stopping = async move { drop(stopped.wait_for(|s| *s).await) };
                    accept(listener, state, stopping, grace, share).await
                })
            });
            let _ = done.send(served);
        })?;
        cores.push(finished);
    }
    drop(listening);
    shutdown.await;
    stop.send_replace(true);
    state.stopping.send_replace(true);
    let mut result = Ok(());
    for (i, finished) in cores.into_iter().enumerate() {
        match finished.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!("serving thread {} failed: {e}", i + 1);
                result = Err(e);
            }
            Err(_) => tracing::error!("serving thread {} panicked", i + 1),
        }
    }
    tracing::info!("all connections finished");
    result
}

/// Keeps a serving runtime's timer wheel never empty and its next wake-up at most a second away. tokio wakes its
/// driver (a write to its eventfd: one system call) whenever a timer is registered earlier than the next wake-up
/// it planned, which with no timer pending is every timer: each request's first-byte timeout. With this tick
/// pending, a request's timeouts (seconds to minutes) fall after it. The tick itself wakes the thread once a second.
async fn keep_timer_wheel_near() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// The proxy as its HTTP/1.1 server's service (`h1`): the handler, and the largest body it or a door reads.
struct Proxy(Arc<AppState>);

impl h1::Service for Proxy {
    fn call(&self, req: http::Request<RequestBody>, peer: std::net::SocketAddr) -> h1::Handling {
        Box::pin(handler::handle(self.0.clone(), req, peer))
    }

    fn max_body(&self) -> usize {
        let doors = self.0.door.get().map_or(0, |d| d.max_body());
        self.0.snapshot.load().config.raw.server.max_body_bytes.max(doors)
    }
}

/// How many connections each serving thread holds. The threads accept from one listening socket, and whichever is
/// awake when connections arrive would take them all (measured: 58% / 33% of the work at saturation with 64
/// connections); a thread more than [`Balance::SLACK`] connections ahead of the least loaded one leaves new ones
/// to the others, and looks again when a count changes.
struct Balance {
    open: Vec<std::sync::atomic::AtomicUsize>,
    changed: tokio::sync::Notify,
}

impl Balance {
    const SLACK: usize = 2;

    fn new(threads: usize) -> Balance {
        Balance { open: (0..threads).map(|_| Default::default()).collect(), changed: Default::default() }
    }

    /// Whether thread `me` holds more than `SLACK` connections above the least loaded thread.
    fn ahead(&self, me: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let least = self.open.iter().map(|n| n.load(Relaxed)).min().unwrap_or(0);
        self.open[me].load(Relaxed) > least + Self::SLACK
    }

    fn opened(&self, me: usize) {
        self.open[me].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    fn closed(&self, me: usize) {
        self.open[me].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_waiters();
    }
}

/// A serving thread's place in the [`Balance`].
#[derive(Clone)]
struct Share {
    balance: Arc<Balance>,
    me: usize,
}

impl Share {
    /// The only serving thread.
    fn alone() -> Share {
        Share { balance: Arc::new(Balance::new(1)), me: 0 }
    }

    /// Counts one more connection of this thread, until the guard is dropped.
    fn hold(&self) -> Held {
        self.balance.opened(self.me);
        Held(self.clone())
    }
}

/// One connection of its thread, counted while it lives.
struct Held(Share);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.balance.closed(self.0.me);
    }
}

/// One runtime's accept loop: serves the connections it accepts until `shutdown`, then drains them within `grace`.
async fn accept(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    share: Share,
) -> std::io::Result<()> {
    // Every connection holds a receiver: idle ones close when it says `true`, busy ones after their answer, and
    // the drain is over when none is left.
    let (drain, draining) = tokio::sync::watch::channel(false);
    let proxy = Arc::new(Proxy(state.clone()));
    tokio::pin!(shutdown);
    loop {
        let balance = &share.balance;
        // Registered before the check, so a change between the two still wakes this loop.
        let changed = balance.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let ahead = balance.ahead(share.me);
        tokio::select! {
            accepted = listener.accept(), if !ahead => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let held = share.hold();
                let serving = h1::serve(stream, peer, proxy.clone(), draining.clone());
                tokio::spawn(async move {
                    serving.await;
                    drop(held);
                });
            }
            _ = changed, if ahead => {}
            _ = &mut shutdown => break,
        }
    }
    drop((listener, draining));
    state.stopping.send_replace(true);
    drain.send_replace(true);
    tokio::select! {
        // Logged once per server: a serving thread's own drain is a debug detail.
        _ = drain.closed() => tracing::debug!("this thread's connections finished"),
        _ = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_ahead_of_the_least_loaded_leaves_new_connections_to_it() {
        let b = Arc::new(Balance::new(2));
        let (first, second) = (Share { balance: b.clone(), me: 0 }, Share { balance: b.clone(), me: 1 });
        assert!(!b.ahead(0) && !b.ahead(1));
        let mut held: Vec<Held> = (0..=Balance::SLACK).map(|_| first.hold()).collect();
        assert!(b.ahead(0), "3 against 0");
        assert!(!b.ahead(1), "the least loaded thread always accepts");
        let other = second.hold();
        assert!(!b.ahead(0), "3 against 1 is within the slack");
        drop(other);
        held.pop();
        assert!(!b.ahead(0), "a dropped connection is no longer counted");
        let alone = Share::alone();
        let all: Vec<Held> = (0..100).map(|_| alone.hold()).collect();
        assert!(!alone.balance.ahead(0), "a lone thread is never ahead");
        drop(all);
    }
}
