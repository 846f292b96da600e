//! `router discover`: ask every channel's keys which models they reach (and their prices), report per token.
//!
//! Owns the command line and the report table only; the requests and parsing are `crate::discover`. Results are
//! saved in the store (creating it when needed), through the running server when one holds it, which then routes
//! on them at once. Also owns [`load`]: the snapshot every subcommand that routes builds, the same as `serve`'s.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::{Global, output};
use crate::catalog::{self, ModelKind, Snapshot};
use crate::config::{Config, Dur, Price};
use crate::discover::{self, ChannelReport, DiscoveryStore, MemoryStore, Options, StoreDiscovery};
use crate::error::user;
use crate::store::{self, Access};
use crate::tags;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this channel (repeatable).
    #[arg(long = "channel", value_name = "NAME")]
    pub channels: Vec<String>,

    /// Print the report and the models found as JSON.
    #[arg(long)]
    pub json: bool,

    /// Model lists fetched at the same time.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub concurrency: usize,

    /// Bound on each model-list request, e.g. 20s (default: discovery.timeout of the config, else 20s).
    #[arg(long, value_name = "DURATION", value_parser = super::args::duration)]
    pub timeout: Option<Dur>,
}

/// What a subcommand routes on: the configuration in force (a file, or zero-config), the store when there is one
/// (directly, or through the running server that holds it), and the snapshot built from both, the same one
/// `serve` builds.
pub struct Loaded {
    pub snapshot: Snapshot,
    /// `None` when no store file exists yet (and the command did not ask to create one).
    pub access: Option<Access>,
    pub store_path: PathBuf,
    pub auto: bool,
}

impl Loaded {
    /// A snapshot of another configuration over the same store channels and discovered models.
    pub fn snapshot_for(&self, config: Config) -> anyhow::Result<Snapshot> {
        match &self.access {
            Some(a) => catalog::load::snapshot(Arc::new(config), a, &self.store_path, self.auto),
            None => Ok(Snapshot::build(Arc::new(config), &[], &Default::default(), self.auto)),
        }
    }

    /// Whether a running server answered for the store.
    pub fn remote(&self) -> Option<&Access> {
        self.access.as_ref().filter(|a| a.is_remote())
    }
}

/// Loads the configuration the way `serve` does and builds its snapshot: YAML + store channels + discovered
/// models. Without a store file the snapshot is YAML-only and no file is created, unless `create_store`.
pub async fn load(global: &Global, create_store: bool) -> anyhow::Result<Loaded> {
    let probe_local = std::env::var_os("ROUTER_NO_LOCAL_PROBE").is_none();
    let loaded = super::serve::load_or_detect(global, probe_local).await?;
    let store_path = store::resolve_path(global.store.as_deref(), loaded.config.raw.store.path.as_deref());
    let access = if create_store || store_path.exists() { Some(Access::open(&store_path)?) } else { None };
    let snapshot = match &access {
        Some(a) => catalog::load::snapshot(Arc::new(loaded.config), a, &store_path, loaded.auto)?,
        None => Snapshot::build(Arc::new(loaded.config), &[], &Default::default(), loaded.auto),
    };
    Ok(Loaded { snapshot, access, store_path, auto: loaded.auto })
}

/// Where discovery results are kept: the store when there is one, else this process's memory.
pub fn store(access: Option<&Access>) -> Box<dyn DiscoveryStore + '_> {
    match access {
        Some(a) => Box::new(StoreDiscovery(a)),
        None => Box::new(MemoryStore::default()),
    }
}

#[derive(Serialize)]
struct JsonModel<'a> {
    id: &'a str,
    kind: ModelKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<Price>,
    free: bool,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    channels: &'a [ChannelReport],
    /// channel -> token_key -> models found.
    models: BTreeMap<&'a str, BTreeMap<&'a str, Vec<JsonModel<'a>>>>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    super::runtime()?.block_on(discover_cmd(global, args))
}

/// Checks `--channel` names against the snapshot.
pub fn check_channels(snap: &Snapshot, names: &[String]) -> anyhow::Result<()> {
    for n in names {
        if snap.channel(n).is_none() {
            let known: Vec<&str> = snap.channels.iter().map(|c| &*c.name).collect();
            let close = tags::closest(n, known.iter().copied(), 3);
            let hint = if close.is_empty() {
                format!("channels: {}", known.join(", "))
            } else {
                format!("did you mean {}?", close.join(", "))
            };
            return Err(user(format!("no channel named `{n}`")).with_hint(hint).into());
        }
    }
    Ok(())
}

async fn discover_cmd(global: &Global, args: Args) -> anyhow::Result<()> {
    let loaded = load(global, true).await?;
    let snap = &loaded.snapshot;
    check_channels(snap, &args.channels)?;
    let opts = Options {
        channels: args.channels.clone(),
        concurrency: args.concurrency,
        timeout: args.timeout.map_or(loaded.snapshot.config.raw.discovery.timeout(), |d| d.0),
    };
    let total = discover::planned(snap, &opts.channels);
    if total == 0 {
        return Err(user("no enabled channel with a key to discover").with_hint("see `router config check`").into());
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} discovering models {pos}/{len} {wide_msg}")
                .expect("valid template"),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    let on_done = |r: &discover::TokenReport| {
        if let Some(b) = &bar {
            b.set_message(format!("{} ({})", r.channel, r.token));
            b.inc(1);
        }
    };
    let outcome = discover::discover(snap, &opts, &on_done).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    store(loaded.access.as_ref()).save(&outcome).context("saving the discovered models")?;

    if args.json {
        let mut models: BTreeMap<&str, BTreeMap<&str, Vec<JsonModel<'_>>>> = BTreeMap::new();
        for r in &outcome.reports {
            let free_channel = snap.channel(&r.channel).is_some_and(|c| c.tags.iter().any(|t| t == "free"));
            for t in &r.tokens {
                let Some(list) = outcome.discovered.get(&r.channel).and_then(|d| d.get(&t.fingerprint)) else {
                    continue;
                };
                let entry = models.entry(r.channel.as_str()).or_default().entry(t.token.as_str()).or_default();
                entry.extend(list.iter().map(|m| JsonModel {
                    id: &m.id,
                    kind: m.kind.unwrap_or_else(|| ModelKind::guess(&m.id)),
                    price: m.price,
                    free: free_channel || discover::is_free(m),
                }));
            }
        }
        return output::json(&JsonOut { channels: &outcome.reports, models }).context("writing JSON");
    }
    let mut t = output::table(&["channel", "token", "endpoint", "models", "priced", "free", "status"]);
    for r in &outcome.reports {
        for tok in &r.tokens {
            let status = match &tok.reason {
                None => "ok".to_string(),
                Some(reason) => format!("failed: {reason} -> {} configured models", r.configured_models),
            };
            t.add_row(vec![
                r.channel.clone(),
                tok.token.clone(),
                tok.endpoint.clone(),
                tok.models.to_string(),
                tok.priced.to_string(),
                tok.free.to_string(),
                status,
            ]);
        }
    }
    output::print_table(&t);
    let failed: usize = outcome.reports.iter().flat_map(|r| &r.tokens).filter(|t| t.status != "ok").count();
    let tokens: usize = outcome.reports.iter().map(|r| r.tokens.len()).sum();
    let found: usize = outcome.reports.iter().flat_map(|r| &r.tokens).map(|t| t.models).sum();
    output::note(&format!("{tokens} token(s) asked, {} ok, {failed} failed; {found} models found", tokens - failed));
    Ok(())
}
