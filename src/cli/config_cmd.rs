//! `router config check`: validate the configuration and summarise it (keys by name or fingerprint only),
//! together with the store's channels (imported or added) when a store exists, each marked by origin, and
//! warnings about channels no request can ever reach.

use serde::Serialize;

use super::{Global, output};
use crate::catalog::{self, Channel, Origin, Snapshot};
use crate::store::{self, Access};
use std::sync::Arc;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate the configuration and print what it defines.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct ChannelSummary {
    name: String,
    /// `config` (the YAML file), `env` (zero-config), `imported` or `added` (store channels).
    origin: &'static str,
    /// Where an imported channel came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    protocol: String,
    enabled: bool,
    priority: i64,
    weight: u32,
    endpoints: Vec<EndpointSummary>,
    models: Vec<String>,
    aliases: Vec<String>,
    tags: Vec<String>,
}

#[derive(Serialize)]
struct EndpointSummary {
    name: String,
    base_url: String,
    failover_enabled: bool,
    tokens: Vec<String>,
}

pub fn run(global: &Global, cmd: Command) -> anyhow::Result<()> {
    let Command::Check(args) = cmd;
    let loaded = super::runtime()?.block_on(super::serve::load_or_detect(global, false))?;
    let source = match &loaded.config.path {
        Some(p) => p.display().to_string(),
        None => "zero-config (environment)".into(),
    };
    // The store's channels too (directly, or through the server holding it), as `serve` would route on them.
    let store_path = store::resolve_path(global.store.as_deref(), loaded.config.raw.store.path.as_deref());
    let access = if store_path.exists() { Some(Access::open(&store_path)?) } else { None };
    let config = Arc::new(loaded.config);
    let snap = match &access {
        Some(a) => catalog::load::snapshot(config, a, &store_path, loaded.auto)?,
        None => Snapshot::build(config, &[], &Default::default(), loaded.auto),
    };
    let warnings: Vec<String> = snap.channels.iter().filter_map(never_chosen).collect();
    let channels: Vec<ChannelSummary> = snap
        .channels
        .iter()
        .map(|c| ChannelSummary {
            name: c.name.to_string(),
            origin: origin(c),
            source: c.config().source.clone(),
            protocol: c.protocol.as_str().into(),
            enabled: c.enabled,
            priority: c.priority,
            weight: c.weight,
            endpoints: c
                .endpoints
                .iter()
                .map(|e| EndpointSummary {
                    name: e.name.to_string(),
                    base_url: e.base_url.clone(),
                    failover_enabled: e.failover_enabled,
                    tokens: e.tokens.iter().map(|t| t.token_key.to_string()).collect(),
                })
                .collect(),
            models: c.models.iter().map(|m| m.id.to_string()).chain(c.patterns.iter().cloned()).collect(),
            aliases: c.aliases.iter().map(|(k, v)| format!("{k} -> {v}")).collect(),
            tags: c.tags.clone(),
        })
        .collect();
    if args.json {
        return output::json(&serde_json::json!({
            "source": source,
            "listen": snap.config.listen().to_string(),
            "strategy": snap.config.raw.routing.strategy.as_str(),
            "gateway_keys": snap.config.gateway_keys.iter().map(|k| &k.name).collect::<Vec<_>>(),
            "channels": channels,
            "warnings": warnings,
        }));
    }
    output::line(&format!("config OK: {source}"));
    let mut t = output::table(&["channel", "origin", "protocol", "prio", "endpoint", "base url", "tokens", "models"]);
    for c in &channels {
        for (i, e) in c.endpoints.iter().enumerate() {
            let first = i == 0;
            t.add_row(vec![
                if first { format!("{}{}", c.name, if c.enabled { "" } else { " (disabled)" }) } else { String::new() },
                if first { c.origin.to_string() } else { String::new() },
                if first { c.protocol.clone() } else { String::new() },
                if first { c.priority.to_string() } else { String::new() },
                format!("{}{}", e.name, if e.failover_enabled { "" } else { " (pinned only)" }),
                e.base_url.clone(),
                e.tokens.join(", "),
                if first { summarise(&c.models) } else { String::new() },
            ]);
        }
    }
    output::print_table(&t);
    output::line(&format!(
        "listen: {}  strategy: {}  gateway keys: {}",
        snap.config.listen(),
        snap.config.raw.routing.strategy,
        if snap.config.gateway_keys.is_empty() {
            "none (open, loopback only)".to_string()
        } else {
            snap.config.gateway_keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ")
        }
    ));
    for w in &warnings {
        output::note(&format!("warning: {w}"));
    }
    Ok(())
}

fn origin(c: &Channel) -> &'static str {
    match c.origin {
        Origin::Yaml => "config",
        Origin::Auto => "env",
        Origin::Store if c.config().source.is_some() => "imported",
        Origin::Store => "added",
    }
}

/// Why an enabled channel can never be chosen, if it cannot: no models (none configured or discovered), every
/// key disabled, or every endpoint `failover_enabled: false` (reachable only when pinned).
fn never_chosen(c: &Channel) -> Option<String> {
    if !c.enabled {
        return None;
    }
    let why = if c.models.is_empty() && c.patterns.is_empty() && c.aliases.is_empty() {
        "it has no models (list `models:`, or run `router discover`)"
    } else if c.endpoints.iter().all(|e| e.tokens.iter().all(|t| !t.enabled)) {
        "every key is disabled"
    } else if c.endpoints.iter().all(|e| !e.failover_enabled) {
        "every endpoint has `failover_enabled: false` (used only when pinned with X-Router-Channel)"
    } else {
        return None;
    };
    Some(format!("channel `{}` can never be chosen: {why}", c.name))
}

fn summarise(models: &[String]) -> String {
    match models.len() {
        0 => "-".into(),
        1..=4 => models.join(", "),
        n => format!("{}, ... ({n})", models[..3].join(", ")),
    }
}
