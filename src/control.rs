//! What the running server answers over the control socket beyond the store's own operations: the operations
//! that need its live state (routing snapshot, health), and applying store changes to the live catalogue.
//!
//! Owns [`Live`] (filled once the server is up) and [`rebuild`]: every change that affects routing (a config
//! reload, an import, a channel change, new discovery results) goes through it, so the server always routes
//! on YAML + store channels + discovered models. Must not run on the request path.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;

use crate::balance::store::{BalanceHistory, SaveBalances};
use crate::balance::{self, BalanceResult};
use crate::catalog::{self, Snapshot};
use crate::config::Config;
use crate::discover::{self, SaveDiscovered};
use crate::keys::ops::{KeysCreate, KeysReport, KeysRotate, KeysSetState, KeysUpdate};
use crate::keys::{KeyTable, StoredKey};
use crate::live::limits::Period;
use crate::probe::{self, ProbeReport};
use crate::proxy::AppState;
use crate::store::{Access, KvTable, Op, Registry, Store};

/// The server's live state, as control operations see it.
pub struct Live {
    pub state: Arc<AppState>,
    pub store: Store,
    pub store_path: PathBuf,
    /// Zero-config (channels detected from the environment).
    pub auto: bool,
}

/// Filled by `serve` once the proxy state exists; operations arriving before that answer "starting".
pub type LiveCell = Arc<OnceLock<Live>>;

impl Live {
    pub fn access(&self) -> Access {
        Access::Direct(self.store.clone())
    }

    /// A snapshot for `config` from the store as it is now.
    pub fn snapshot(&self, config: Arc<Config>) -> anyhow::Result<Snapshot> {
        catalog::load::snapshot(config, &self.access(), &self.store_path, self.auto)
    }
}

/// Rebuilds the routing snapshot with the current config and store, and swaps it in. On error the old one stays.
pub fn rebuild(live: &Live) -> anyhow::Result<()> {
    let config = live.state.snapshot.load().config.clone();
    let snap = live.snapshot(config)?;
    tracing::info!("catalogue rebuilt: {} channels", snap.channels.len());
    live.state.snapshot.store(Arc::new(snap));
    release_freed_memory();
    Ok(())
}

/// Limits glibc to two malloc arenas: with one per thread (tokio workers plus blocking threads), each arena keeps
/// its own freed memory after a burst of load, and a long-running server's RSS only grows.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tuning parameter; called at start-up.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands memory freed while building a snapshot back to the OS. glibc keeps freed heap for reuse; after a
/// rebuild of a large catalogue that is megabytes the process no longer needs.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The registry `serve` answers: the store's operations, plus live ones, plus a catalogue rebuild after any write.
pub fn registry(cell: LiveCell) -> Registry {
    let mut r = Registry::builtin();
    let c = cell.clone();
    r.on_change(Arc::new(move |op: &str| {
        let c = c.clone();
        let op = op.to_string();
        tokio::task::spawn_blocking(move || {
            if let Some(live) = c.get()
                && let Err(e) = rebuild(live)
            {
                tracing::warn!("after `{op}`: the catalogue could not be rebuilt, keeping the previous one: {e:#}");
            }
        });
    }));
    add_wired_ops(&mut r, &cell);
    r
}

// ---- Discovery, balances, probe reports and plans against the live server ----

/// A live handler: parses the arguments, waits for nothing (answers "starting" until the server is up), runs `f`.
fn live_op<A, R, F, Fut>(cell: &LiveCell, f: F) -> crate::store::socket::LiveHandler
where
    A: serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize,
    F: Fn(LiveCell, A) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = anyhow::Result<R>> + Send + 'static,
{
    let cell = cell.clone();
    Arc::new(move |v| {
        let cell = cell.clone();
        Box::pin(async move {
            if cell.get().is_none() {
                anyhow::bail!("the server is starting; try again in a moment");
            }
            let args: A = serde_json::from_value(v)?;
            Ok(serde_json::to_value(f(cell, args).await?)?)
        })
    })
}

/// How long a key whose balance ran dry stays cooled: until the next periodic check (its interval plus the time a
/// check may take), else the configured quota cooldown.
pub fn balance_hold(config: &Config) -> Duration {
    match config.raw.balance.interval {
        Some(iv) => iv.0 + BALANCE_TIMEOUT,
        None => config.raw.routing.cooldown.quota.0,
    }
}

/// Bound on each provider request of a periodic balance check.
const BALANCE_TIMEOUT: Duration = Duration::from_secs(15);

fn add_wired_ops(r: &mut Registry, cell: &LiveCell) {
    r.add::<SaveDiscovered>().add::<SaveBalances>().add::<BalanceHistory>();
    add_keys_op::<KeysCreate>(r, cell);
    add_keys_op::<KeysUpdate>(r, cell);
    add_keys_op::<KeysSetState>(r, cell);
    add_keys_op::<KeysRotate>(r, cell);
    add_keys_op::<KeysReport>(r, cell);
    // `router test`: latency and failures feed the health `fastest` and cooldowns use.
    r.add_live(
        PROBE_REPORT_OP,
        live_op(cell, |cell, report: ProbeReport| async move {
            let live = cell.get().expect("checked");
            let snap = live.state.snapshot.load();
            probe::apply(&report, &live.state.health, &snap.config.raw.routing.cooldown);
            Ok(report.entries.len())
        }),
    );
    // `router balance check` while serving: keep the results and cool down keys that ran dry.
    r.add_live(
        balance::store::REPORT_OP,
        live_op(cell, |cell, results: Vec<BalanceResult>| async move {
            let c = cell.clone();
            let saved = results.clone();
            tokio::task::spawn_blocking(move || {
                let live = c.get().expect("checked");
                let history_days = Some(live.state.snapshot.load().config.raw.balance.history_days());
                SaveBalances { results: saved, history_days }.run(&live.store).map(|_| ())
            })
            .await??;
            let live = cell.get().expect("checked");
            let snap = live.state.snapshot.load();
            let applied =
                balance::store::apply_cooldowns(&snap, &results, &live.state.health, balance_hold(&snap.config));
            log_balance(&applied);
            Ok(())
        }),
    );
    // `router tags query` while serving: the plan on the server's own snapshot and health.
    r.add_live(
        crate::cli::tags::PLAN_OP,
        live_op(cell, |cell, args: crate::cli::tags::PlanArgs| async move {
            let live = cell.get().expect("checked");
            let snap = live.state.snapshot.load_full();
            Ok(crate::cli::tags::answer(&snap, &live.state.health, &live.state.fasttest, &args).await)
        }),
    );
}

/// A `router keys` operation answered by the server: run on its store, then (for writes) the key table and the
/// limiter reloaded before the answer, so the change holds from the next request on.
fn add_keys_op<O: Op>(r: &mut Registry, cell: &LiveCell) {
    r.add_live(
        O::NAME,
        live_op(cell, |cell, op: O| async move {
            tokio::task::spawn_blocking(move || {
                let live = cell.get().expect("checked");
                let reply = op.run(&live.store)?;
                if O::WRITES {
                    reload_keys(live).context("saved, but the running server could not load the keys")?;
                }
                Ok::<_, anyhow::Error>(reply)
            })
            .await?
        }),
    );
}

/// Rebuilds the key table from the configuration's keys and the store's rows and swaps it in; sets the
/// limiter's time zone, seeds the spend of keys whose budget period is new to it from the records, and forgets
/// removed keys. On error (a name in both places) the old table stays.
pub fn reload_keys(live: &Live) -> anyhow::Result<()> {
    let state = &live.state;
    let config = state.snapshot.load().config.clone();
    let rows: Vec<StoredKey> =
        live.store.list_json::<StoredKey>(KvTable::GatewayKeys)?.into_iter().map(|(_, k)| k).collect();
    let table = KeyTable::build(&config.gateway_keys, &rows).map_err(|m| {
        crate::error::user(m)
            .with_hint("rename one of them, or `router keys revoke` the store one and remove it from the file")
    })?;
    let tz = crate::keys::timezone(config.raw.server.timezone.as_deref()).map_err(anyhow::Error::msg)?;
    state.limiter.set_timezone(tz.clone());
    let unseeded: Vec<(String, Period)> = table
        .entries()
        .filter_map(|e| e.limits.budget.map(|b| (e.name.to_string(), b.per)))
        .filter(|(n, per)| state.limiter.budget_period(n) != Some(*per))
        .collect();
    let now = crate::usage::now_ms();
    for (name, per, spent) in crate::keys::ops::budget_spend(&live.store, &unseeded, &tz, now)? {
        state.limiter.seed(&name, per, now, spent);
    }
    let names: std::collections::HashSet<String> = table.entries().map(|e| e.name.to_string()).collect();
    state.limiter.retain(|n| names.contains(n));
    tracing::info!("gateway keys loaded: {}", table.len());
    state.keys.store(Arc::new(table));
    Ok(())
}

/// The live operation `router test` sends its [`ProbeReport`] to.
pub const PROBE_REPORT_OP: &str = "probe_report";

fn log_balance(applied: &balance::store::Applied) {
    for k in &applied.cooled {
        tracing::warn!("{k}: balance at or below zero; not used until a check shows credit");
    }
    for k in &applied.recovered {
        tracing::info!("{k}: credit again; back in rotation");
    }
}

/// One discovery run over the live snapshot: results saved, catalogue rebuilt. Returns the models found.
pub async fn discover_now(cell: LiveCell) -> anyhow::Result<usize> {
    let Some(live) = cell.get() else { return Ok(0) };
    let snap = live.state.snapshot.load_full();
    if discover::planned(&snap, &[]) == 0 {
        return Ok(0);
    }
    let opts = discover::Options { timeout: snap.config.raw.discovery.timeout(), ..Default::default() };
    let outcome = discover::discover(&snap, &opts, &|_| {}).await;
    for r in outcome.reports.iter().flat_map(|r| &r.tokens).filter(|t| t.status != "ok") {
        tracing::warn!(
            "discovery: {} ({}) failed: {}; using configured models",
            r.channel,
            r.token,
            r.reason.as_deref().unwrap_or("")
        );
    }
    let found: usize = outcome.reports.iter().flat_map(|r| &r.tokens).map(|t| t.models).sum();
    tokio::task::spawn_blocking(move || {
        let live = cell.get().expect("set above");
        SaveDiscovered::of(&outcome).run(&live.store)?;
        rebuild(live)
    })
    .await??;
    tracing::info!("discovery: {found} models found");
    Ok(found)
}

/// One balance check of every key of the live snapshot: results saved, dry keys cooled, recovered keys freed.
pub async fn refresh_balances(cell: LiveCell) -> anyhow::Result<()> {
    let Some(live) = cell.get() else { return Ok(()) };
    let snap = live.state.snapshot.load_full();
    let opts = balance::CheckOptions { timeout: BALANCE_TIMEOUT, refresh: true, ..Default::default() };
    let results = balance::check_all(snap.clone(), &opts, None, &|| {}).await;
    let saved = results.clone();
    let c = cell.clone();
    let history_days = Some(snap.config.raw.balance.history_days());
    tokio::task::spawn_blocking(move || {
        SaveBalances { results: saved, history_days }.run(&c.get().expect("set above").store)
    })
    .await??;
    let applied = balance::store::apply_cooldowns(&snap, &results, &live.state.health, balance_hold(&snap.config));
    log_balance(&applied);
    Ok(())
}

/// Runs `task` every `interval` of the current configuration (re-read each round, so a reload applies), and once
/// at start when `now`. An absent interval pauses the loop until a reload sets one.
pub async fn every(
    cell: LiveCell,
    name: &'static str,
    now: bool,
    interval: fn(&Config) -> Option<Duration>,
    task: fn(LiveCell) -> futures_util::future::BoxFuture<'static, anyhow::Result<()>>,
) {
    let mut first = now;
    loop {
        if !first {
            let wait = cell.get().and_then(|l| interval(&l.state.snapshot.load().config));
            match wait {
                Some(d) => tokio::time::sleep(d.max(Duration::from_millis(100))).await,
                None => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    continue;
                }
            }
        }
        first = false;
        if let Err(e) = task(cell.clone()).await {
            tracing::warn!("{name} failed: {e:#}");
        }
    }
}
