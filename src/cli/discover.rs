//! `router discover`: ask every channel's keys which models they reach (and their prices), report per token.
//!
//! Owns the command line and the report table only; the requests and parsing are `crate::discover`. Results are
//! saved in the store (creating it when needed), through the running server when one holds it, which then routes
//! on them at once.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::output;
use crate::catalog::ModelKind;
use crate::config::{Dur, Price};
use crate::discover::{self, ChannelReport, Options};
use crate::error::user;
use crate::settings::Settings;

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

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<()> {
    super::runtime()?.block_on(discover_cmd(settings, args))
}

async fn discover_cmd(settings: &Settings, args: Args) -> anyhow::Result<()> {
    let routing = settings.routing(true).await?;
    let snap = &routing.snapshot;
    super::check_channels(snap, &args.channels)?;
    let opts = Options {
        channels: args.channels.clone(),
        concurrency: args.concurrency,
        timeout: args.timeout.map_or(snap.config.raw.discovery.timeout(), |d| d.0),
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
    routing.discovery().save(&outcome).context("saving the discovered models")?;

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
