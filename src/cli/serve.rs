//! `router serve`: load the configuration (or detect one), bind, serve, reload, shut down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::net::TcpListener;

use super::output;
use crate::catalog::Snapshot;
use crate::config::{self, autodetect};
use crate::control::{self, Live, LiveCell};
use crate::error::user;
use crate::live::health::Health;
use crate::proxy::{self, AppState};
use crate::settings::{self, Settings};
use crate::store::writer::WriterOptions;
use crate::store::{self, recorder::Recorder};
use crate::usage::sink::RecordSink;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (overrides server.listen), e.g. 127.0.0.1:4000 or 127.0.0.1:0 for any free port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Listen on a non-loopback address even though no gateway keys are configured.
    #[arg(long)]
    pub allow_open: bool,

    /// In zero-config mode, do not probe local Ollama / LM Studio.
    #[arg(long)]
    pub no_local: bool,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<()> {
    super::runtime()?.block_on(serve(settings, args))
}

async fn serve(settings: &Settings, args: Args) -> anyhow::Result<()> {
    control::limit_malloc_arenas();
    let settings = if args.no_local { settings.clone().no_local() } else { settings.clone() };
    let loaded = settings.config().await?;
    let mut config = loaded.config;
    let listen: SocketAddr = match &args.listen {
        Some(l) => l.parse().map_err(|_| {
            user(format!("--listen `{l}` is not an address")).with_hint("write host:port, e.g. 127.0.0.1:4000")
        })?,
        None => config.listen(),
    };
    config.listen = Some(listen);
    let self_loops = if loaded.auto { autodetect::undo_self_loops(&mut config, listen) } else { Vec::new() };
    // Store: request records, rollups and the control socket (see store::recorder).
    let store_path = settings.store_path_for(Some(&config));
    let (record_sink, records) = RecordSink::new(4096);
    let live: LiveCell = Arc::default();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let store_cfg = &config.raw.store;
    let writer_opts = WriterOptions {
        retention_days: store_cfg.retention_days,
        max_pending: store_cfg.max_pending_records,
        pending_dir: store_cfg.pending_dir.as_deref().map(settings::expand_home).unwrap_or_else(std::env::temp_dir),
        batch_seconds: config.raw.server.metrics.then(|| metrics.store_batch_seconds()),
        ..Default::default()
    };
    for file in store::pending::leftovers(&writer_opts.pending_dir, &store_path) {
        output::note(&format!(
            "note: {} holds request records an earlier run could not save; `router store import-pending {}` saves them",
            file.display(),
            file.display()
        ));
    }
    let recorder = Recorder::start(
        &store_path,
        writer_opts,
        records,
        record_sink.health().clone(),
        control::registry(live.clone()),
    )
    .await?;
    let store_keys = recorder.store.list_raw(store::KvTable::GatewayKeys).map(|r| r.len()).unwrap_or(0);
    if config.gateway_keys.is_empty() && store_keys == 0 && !listen.ip().is_loopback() && !args.allow_open {
        recorder.shutdown(Duration::ZERO).await;
        return Err(user(format!("refusing to listen on {listen} with no gateway keys: anyone who can reach it could spend your upstream credit"))
            .with_hint("add server.keys to the config or `router keys create NAME`, listen on 127.0.0.1, or pass --allow-open")
            .into());
    }

    let grace = config.raw.server.grace_period.0;
    let config_path = config.path.clone();
    let access = store::Access::Direct(recorder.store.clone());
    let snapshot = settings::snapshot(Arc::new(config), &access, &store_path, loaded.auto)?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    print_summary(&snapshot, bound, &loaded.found, loaded.auto);
    for n in &self_loops {
        output::line(&format!("note: {n}"));
    }
    output::line(&format!("store: {} (control socket {})", store_path.display(), recorder.socket_path().display()));

    let health = Arc::new(Health::new());
    let state = AppState::with_metrics(snapshot, health, record_sink, metrics);
    // The admin API and the dashboard share the listener; their door opens now and answers 503 until ready.
    let door = Arc::new(crate::admin::Door::default());
    let _ = state.door.set(door.clone());
    // Metrics and alerts subscribe before the first request can finish; each only when configured.
    let server_cfg = state.snapshot.load().config.raw.server.clone();
    let counting = server_cfg.metrics.then(|| crate::metrics::spawn(state.metrics.clone(), &state.events));
    let alerting =
        (!state.snapshot.load().config.raw.alerts.webhooks.is_empty()).then(|| crate::alerts::spawn(state.clone()));
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    match server_cfg.metrics_listen.filter(|_| server_cfg.metrics) {
        Some(addr) => {
            let l = TcpListener::bind(&addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (server.metrics_listen)"))?;
            output::line(&format!("metrics: http://{}/metrics", l.local_addr()?));
            tokio::spawn(crate::proxy::scrape::listen(l, state.clone(), async {
                let _ = metrics_stopped.await;
            }));
        }
        None if server_cfg.metrics => {
            output::line(&format!("metrics: http://{bound}/metrics"));
        }
        None => {
            output::line("metrics: off");
        }
    }
    control::release_freed_memory();
    let _ = live.set(Live { state: state.clone(), store: recorder.store.clone(), store_path, auto: loaded.auto });
    // The admin API runs the socket's operations (one registry, two doors).
    door.ready(crate::admin::Admin::new(recorder.registry().clone(), live.clone()));
    // Store keys join the configuration's; budgets start from the spend the records show for this period.
    if let Some(l) = live.get() {
        control::reload_keys_here(l)?;
    }
    // Several instances: what the others change (keys, channels) is loaded here too.
    tokio::spawn(control::follow_changes(live.clone()));
    print_auth(&state);
    if let Some(path) = config_path {
        tokio::spawn(watch_config(live.clone(), path));
    }
    // Zero-config knows channels but not their models: discover once now, so /v1/models lists real ids.
    let discovery = tokio::spawn(control::every(
        live.clone(),
        "discovery",
        loaded.auto,
        |c| c.raw.discovery.interval.map(|d| d.0),
        |cell| Box::pin(async move { control::discover_now(cell).await.map(|_| ()) }),
    ));
    let balances = tokio::spawn(control::every(
        live.clone(),
        "balance check",
        state.snapshot.load().config.raw.balance.interval.is_some(),
        |c| c.raw.balance.interval.map(|d| d.0),
        |cell| Box::pin(control::refresh_balances(cell)),
    ));
    let traces = crate::telemetry::start(&state.snapshot.load().config.raw.telemetry, &state)?;
    proxy::serve(listener, state.clone(), shutdown_signal(), grace).await?;
    if let Some(t) = traces {
        t.shutdown().await;
    }
    discovery.abort();
    balances.abort();
    for task in [counting, alerting].into_iter().flatten() {
        task.abort();
    }
    let _ = metrics_stop.send(());
    drop(state);
    // In-flight requests are done: commit every queued record, then close the control socket.
    let stats = recorder.shutdown(grace).await;
    output::note(&format!("store: {} request records saved", stats.records));
    if let Some(file) = &stats.pending_file {
        output::note(&format!(
            "store: {} request records could not be saved (the store cannot be written); they are in {}",
            stats.unsaved,
            file.display()
        ));
        output::note(&format!("hint: once the store has room, run `router store import-pending {}`", file.display()));
    }
    if stats.lost > 0 {
        output::note(&format!("error: {} request records were lost (see the log for why)", stats.lost));
    }
    output::note("router stopped");
    Ok(())
}

fn print_summary(snap: &Snapshot, bound: SocketAddr, found: &[String], auto: bool) {
    let cfg = &snap.config;
    output::line(&format!("router {} listening on http://{bound}", env!("CARGO_PKG_VERSION")));
    match (&cfg.path, auto) {
        (Some(p), _) => {
            output::line(&format!("config: {}", p.display()));
        }
        (None, _) if found.is_empty() => {
            output::line("config: none (zero-config); no channels found");
            output::line(
                "hint: export OPENAI_API_KEY / ANTHROPIC_API_KEY / OPENROUTER_API_KEY / DEEPSEEK_API_KEY ..., start Ollama, or write router.yaml (see config.example.yaml)",
            );
        }
        (None, _) => {
            output::line(&format!("config: none (zero-config); found {}", found.join(", ")));
        }
    }
    let endpoints: usize = snap.channels.iter().map(|c| c.endpoints.len()).sum();
    let tokens: usize = snap.channels.iter().flat_map(|c| c.endpoints.iter()).map(|e| e.tokens.len()).sum();
    let models: usize = snap.channels.iter().map(|c| c.models.len()).sum();
    output::line(&format!(
        "channels: {} ({endpoints} endpoints, {tokens} tokens, {models} models known)",
        snap.channels.len()
    ));
    for ch in &snap.channels {
        let toks: Vec<String> =
            ch.endpoints.iter().flat_map(|e| e.tokens.iter().map(|t| t.token_key.to_string())).collect();
        let models = if ch.models.is_empty() { ch.patterns.join(" ") } else { format!("{} models", ch.models.len()) };
        output::line(&format!(
            "  {:<16} {:<9} {} endpoint(s)  tokens: {}  models: {}{}",
            ch.name,
            ch.protocol.as_str(),
            ch.endpoints.len(),
            toks.join(", "),
            models,
            if ch.enabled { "" } else { "  (disabled)" }
        ));
    }
    output::line(&format!("strategy: {}", cfg.raw.routing.strategy));
}

fn print_auth(state: &AppState) {
    let keys = state.keys.load();
    let auth = if keys.is_empty() {
        "open (no gateway keys; loopback only unless --allow-open)".to_string()
    } else {
        let limited = keys.entries().filter(|k| !k.limits.is_empty()).count();
        format!("{} gateway key(s), {limited} with limits", keys.len())
    };
    output::line(&format!("auth: {auth}"));
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    output::note("shutting down: no new connections; waiting for in-flight requests");
}

fn mtime(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads on SIGHUP and when the file changes. A broken file is reported; the old config stays in force.
async fn watch_config(live: LiveCell, path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    let mut last = mtime(&path);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let forced = tokio::select! {
            _ = hup.recv() => true,
            _ = tick.tick() => false,
        };
        let now = mtime(&path);
        if !forced && now == last {
            continue;
        }
        last = now;
        let Some(live) = live.get() else { continue };
        let reloaded = config::load(&path).map_err(|e| {
            let hint = e.hint.clone();
            (anyhow::Error::new(e), hint)
        });
        let result = reloaded.and_then(|mut cfg| {
            cfg.listen = live.state.snapshot.load().config.listen;
            live.snapshot(Arc::new(cfg)).map_err(|e| {
                let hint = crate::error::classify(&e).hint.map(str::to_string);
                (e, hint)
            })
        });
        match result {
            Ok(snap) => {
                output::note(&format!("config reloaded from {}: {} channels", path.display(), snap.channels.len()));
                live.state.snapshot.store(Arc::new(snap));
                live.state.events.publish(crate::events::Event::Reloaded);
                control::release_freed_memory();
                if let Err(e) = tokio::task::block_in_place(|| control::reload_keys_here(live)) {
                    output::note(&format!("error: gateway keys not reloaded, keeping the previous ones: {e:#}"));
                }
            }
            Err((e, hint)) => {
                output::note(&format!("error: config reload failed, keeping the previous config: {e:#}"));
                if let Some(h) = hint {
                    output::note(&format!("hint: {h}"));
                }
            }
        }
    }
}
