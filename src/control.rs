//! What the running server answers over the control socket beyond the store's own operations: the operations
//! that need its live state (routing snapshot, health), and applying store changes to the live catalogue.
//!
//! Owns the control socket's registry (the composition root: store operations of every module, and what the
//! server does for each `store::LiveOp`: `plan`, `probe_report`, `balance_report`), [`Live`] (filled once the
//! server is up) and [`rebuild`]: every change that affects routing (a config reload, an import, a channel change,
//! new discovery results) goes through it, so the server always routes on YAML + store channels + discovered
//! models. With several instances (`shared_state.redis`), a change made here ([`rebuild`], [`reload_keys`]) is
//! announced to the others and theirs are applied here ([`follow_changes`]); the `_here` variants change this
//! instance only (start-up, config-file reloads every instance sees itself, discovery). Must not run on the
//! request path.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;

use crate::balance;
use crate::balance::BalanceResult;
use crate::balance::store::{BalanceHistory, BalanceReport, SaveBalances};
use crate::catalog::Snapshot;
use crate::config::{Config, Strategy};
use crate::discover::{self, SaveDiscovered};
use crate::events::{Event, Events};
use crate::keys::ops::{KeysCreate, KeysReport, KeysRotate, KeysSetState, KeysUpdate};
use crate::keys::{KeyTable, StoredKey};
use crate::live::health::Health;
use crate::live::limits::Period;
use crate::live::shared::Change;
use crate::probe::{self, ProbeReport};
use crate::proxy::AppState;
use crate::report::{RequestsQuery, ShowRequest, UsageQuery};
use crate::routing::view::{self, PlanFailure, PlanQuery, PlanView};
use crate::store::{Access, KvTable, LiveOp, Op, Registry, Store};
use crate::upstream::fasttest::FastTest;

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
        crate::settings::snapshot(config, &self.access(), &self.store_path, self.auto)
    }
}

/// Rebuilds the routing snapshot with the current config and store, and swaps it in; with several instances
/// (`shared_state.redis`), tells the others to rebuild theirs. On error the old one stays.
pub fn rebuild(live: &Live) -> anyhow::Result<()> {
    rebuild_here(live)?;
    if let Some(sh) = &live.state.shared {
        sh.changed(Change::Channels);
    }
    Ok(())
}

/// [`rebuild`] on this instance only (discovery results, a change another instance announced).
pub fn rebuild_here(live: &Live) -> anyhow::Result<()> {
    let config = live.state.snapshot.load().config.clone();
    let snap = live.snapshot(config)?;
    tracing::info!("catalogue rebuilt: {} channels", snap.channels.len());
    live.state.snapshot.store(Arc::new(snap));
    live.state.events.publish(Event::Reloaded);
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

/// `mi_option_purge_delay` in mimalloc 3's option enum (`mimalloc.h`; pinned by a test), and its default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Until the server has started, has mimalloc (the binary's allocator) give pages back to the OS as soon as they
/// are empty: the configuration parse and the first snapshot build free ~20 MB (1,000 channels / 50,000 models)
/// on threads that then idle, and mimalloc otherwise purges a page only when the thread that freed it allocates
/// again. [`release_freed_memory`] restores the default delay once that memory is back: purging at once while
/// serving would decommit pages between requests at low rates and fault them back in on the next one.
pub fn tune_allocator() {
    // SAFETY: sets a process-wide allocator option; no preconditions.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

/// Hands memory freed while building a snapshot back to the OS. Allocators keep freed memory for reuse; after
/// a rebuild of a large catalogue that is megabytes the process no longer needs (1,000 channels / 50,000
/// models: ~20 MB). mimalloc is the binary's allocator (`mi_collect`); tests and examples use the system's.
pub fn release_freed_memory() {
    // SAFETY: mi_collect only frees and purges pages mimalloc holds unused; mi_option_set sets an option.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, MI_DEFAULT_PURGE_DELAY_MS);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The registry `serve` answers (the composition root of the control socket): the store's own operations, the
/// other modules' store operations (reports, discovery, balances), the live ones, and a catalogue rebuild after
/// any write.
pub fn registry(cell: LiveCell) -> Registry {
    let mut r = Registry::builtin();
    let c = cell.clone();
    r.on_change(Arc::new(move |op: &str| {
        if let Some(live) = c.get()
            && let Err(e) = rebuild(live)
        {
            tracing::warn!("after `{op}`: the catalogue could not be rebuilt, keeping the previous one: {e:#}");
        }
    }));
    add_wired_ops(&mut r, &cell);
    r
}

// ---- Discovery, balances, probe reports and plans against the live server ----

/// The live state, or "starting" while `serve` has not filled it yet.
fn started(cell: &LiveCell) -> anyhow::Result<&Live> {
    cell.get().ok_or_else(|| anyhow::anyhow!("the server is starting; try again in a moment"))
}

/// `router tags query` while serving: the plan on the server's own snapshot and health.
impl LiveOp for PlanQuery {
    const NAME: &'static str = "plan";
    type Reply = Result<PlanView, PlanFailure>;
}

/// `router test` while serving: latency and failures feed the health `fastest` and cooldowns use. Replies with
/// how many entries were applied.
impl LiveOp for ProbeReport {
    const NAME: &'static str = "probe_report";
    type Reply = usize;
}

/// Plans `q` as `serve` would on `snap` and `health`, measuring unknown endpoints first for `fastest` (which
/// then plans again on what it learnt). The CLI calls it with a fresh health when no server runs.
pub async fn plan(
    snap: &Snapshot,
    health: &Health,
    fasttest: &FastTest,
    q: &PlanQuery,
) -> Result<PlanView, PlanFailure> {
    let mut plan = view::plan_query(snap, health, q);
    if q.strategy_on(snap) == Strategy::Fastest
        && let Ok(p) = &plan
        && fasttest.measure_unknown(snap, health, &p.endpoints()).await > 0
    {
        plan = view::plan_query(snap, health, q);
    }
    plan.map(|p| PlanView::new(snap, health, &q.expr, &p))
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
    r.add::<UsageQuery>().add::<RequestsQuery>().add::<ShowRequest>();
    r.add::<SaveDiscovered>().add::<SaveBalances>().add::<BalanceHistory>();
    add_keys_op::<KeysCreate>(r, cell);
    add_keys_op::<KeysUpdate>(r, cell);
    add_keys_op::<KeysSetState>(r, cell);
    add_keys_op::<KeysRotate>(r, cell);
    add_keys_op::<KeysReport>(r, cell);
    let c = cell.clone();
    r.add_live(move |report: ProbeReport| {
        let c = c.clone();
        async move {
            let live = started(&c)?;
            let snap = live.state.snapshot.load();
            probe::apply(&report, &live.state.health, &snap.config.raw.routing.cooldown);
            Ok(report.entries.len())
        }
    });
    // Keep the results and cool down keys that ran dry.
    let c = cell.clone();
    r.add_live(move |BalanceReport(results): BalanceReport| {
        let c = c.clone();
        async move {
            started(&c)?;
            let saved = results.clone();
            let c2 = c.clone();
            tokio::task::spawn_blocking(move || {
                let live = c2.get().expect("checked");
                let history_days = Some(live.state.snapshot.load().config.raw.balance.history_days());
                SaveBalances { results: saved, history_days }.run(&live.store).map(|_| ())
            })
            .await??;
            let live = started(&c)?;
            let snap = live.state.snapshot.load();
            let applied =
                balance::store::apply_cooldowns(&snap, &results, &live.state.health, balance_hold(&snap.config));
            log_balance(&applied);
            publish_balances(&live.state.events, &results);
            Ok(())
        }
    });
    let c = cell.clone();
    r.add_live(move |q: PlanQuery| {
        let c = c.clone();
        async move {
            let live = started(&c)?;
            let snap = live.state.snapshot.load_full();
            Ok(plan(&snap, &live.state.health, &live.state.fasttest, &q).await)
        }
    });
}

/// A `router keys` operation answered by the server: run on its store, then (for writes) the key table and the
/// limiter reloaded before the answer, so the change holds from the next request on.
fn add_keys_op<O: Op>(r: &mut Registry, cell: &LiveCell) {
    let c = cell.clone();
    r.add_in_server(move |op: O| {
        let c = c.clone();
        async move {
            started(&c)?;
            tokio::task::spawn_blocking(move || {
                let live = c.get().expect("checked");
                let reply = op.run(&live.store)?;
                if O::WRITES {
                    reload_keys(live).context("saved, but the running server could not load the keys")?;
                }
                Ok::<_, anyhow::Error>(reply)
            })
            .await?
        }
    });
}

/// [`reload_keys_here`] after a change of the store's keys made on this instance; with several instances
/// (`shared_state.redis`), the others are told and load the key rows too.
pub fn reload_keys(live: &Live) -> anyhow::Result<()> {
    let rows = reload_keys_here(live)?;
    if let Some(sh) = &live.state.shared {
        let rows = rows.iter().filter_map(|k| serde_json::to_value(k).ok()).collect();
        sh.changed(Change::Keys { rows });
    }
    Ok(())
}

/// Rebuilds the key table from the configuration's keys and the store's rows and swaps it in; sets the
/// limiter's time zone, seeds the spend of keys whose budget period is new to it from the records, and forgets
/// removed keys. On error (a name in both places) the old table stays. Returns the store's rows.
pub fn reload_keys_here(live: &Live) -> anyhow::Result<Vec<StoredKey>> {
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
    Ok(rows)
}

/// Applies the changes other instances announce (`shared_state.redis`) until the process ends: key rows newer
/// than this store's are saved (a store per instance; with one shared store they are already there), then the
/// key table is reloaded; a channel change rebuilds the catalogue from the store.
pub async fn follow_changes(cell: LiveCell) {
    let Some(mut changes) = cell.get().and_then(|l| l.state.shared.as_ref()?.changes()) else { return };
    while let Some(change) = changes.recv().await {
        let c = cell.clone();
        let done = tokio::task::spawn_blocking(move || {
            let live = c.get().expect("followed once live");
            match change {
                Change::Keys { rows } => {
                    let mut saved = 0;
                    for row in rows.into_iter().filter_map(|r| serde_json::from_value::<StoredKey>(r).ok()) {
                        let mine = live.store.get_json::<StoredKey>(KvTable::GatewayKeys, &row.name)?;
                        if mine.is_none_or(|m| m.updated_ms < row.updated_ms) {
                            live.store.put_json(KvTable::GatewayKeys, &row.name, &row)?;
                            saved += 1;
                        }
                    }
                    reload_keys_here(live)?;
                    tracing::info!("gateway keys changed on another instance: {saved} rows saved, keys reloaded");
                }
                Change::Channels => rebuild_here(live)?,
            }
            Ok::<_, anyhow::Error>(())
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("a change announced by another instance could not be applied: {e:#}"),
            Err(e) => tracing::warn!("a change announced by another instance could not be applied: {e}"),
        }
    }
}

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
        // Every instance discovers for itself.
        rebuild_here(live)
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
    publish_balances(&live.state.events, &results);
    Ok(())
}

/// One [`Event::Balance`] per key and currency a check answered (failed and n/a checks say nothing).
pub fn publish_balances(events: &Events, results: &[BalanceResult]) {
    for r in results.iter().filter(|r| r.status == balance::Status::Ok && !r.cached) {
        for b in &r.balances {
            events.publish(Event::Balance {
                channel: r.channel.as_str().into(),
                endpoint: r.endpoint.as_str().into(),
                token_key: r.token_key.as_str().into(),
                currency: b.currency.as_str().into(),
                amount: b.amount,
            });
        }
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_mimallocs() {
        // 1,000 ms is the purge delay's default and no other option's.
        // SAFETY: reads an allocator option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
        assert_eq!(delay, super::MI_DEFAULT_PURGE_DELAY_MS, "the default restored after start-up is mimalloc's");
    }
}
