//! `router tags list` and `router tags query`: the tag vocabulary, and the candidates `serve` would try.
//!
//! Owns the command line and tables only. `tags query` asks `control::plan` with the inputs `serve` uses (the
//! same snapshot, a `Health`, the strategy), so its table is the attempt order of a real request. While a server
//! runs, the server itself plans (the live operation `routing::view::PlanQuery`) on its own snapshot and health,
//! so cooling endpoints and observed latency show. It decides nothing itself.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use serde::Serialize;

use super::{check_channels, output};
use crate::catalog::TagIndex;
use crate::config::Strategy;
use crate::control;
use crate::discover::{self, Options};
use crate::error::user;
use crate::live::health::Health;
use crate::protocol::Protocol;
use crate::routing::Score;
use crate::routing::view::{CandidateView, ExcludedView, PlanFailure, PlanQuery, PlanView, PriceView};
use crate::settings::{Routing, Settings};
use crate::upstream::fasttest::FastTest;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Every tag, with how many models carry it and on which channels.
    List(ListArgs),
    /// The ordered candidates for a model name or tag expression, exactly as `serve` would try them.
    Query(QueryArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this channel (repeatable).
    #[arg(long = "channel", value_name = "NAME")]
    pub channels: Vec<String>,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,

    /// Discover models first (live, for this run only) instead of using stored results.
    #[arg(long)]
    pub discover: bool,
}

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// `tag:a,b,!c`, an alias, a model id or a bare name (`kimi-free` reads as `tag:kimi,free`).
    pub expr: String,

    /// Strategy (default: routing.strategy): priority, weighted, fastest, cost_first, free_first, local_first,
    /// balanced.
    #[arg(long, value_parser = super::args::strategy)]
    pub strategy: Option<Strategy>,

    /// The client's protocol: channels of the other protocol are excluded, as in `serve`.
    #[arg(long, default_value = "openai", value_parser = parse_protocol)]
    pub protocol: Protocol,

    /// Plan an embeddings request instead of a chat request.
    #[arg(long)]
    pub embedding: bool,

    /// Apply this gateway key's `allow` expression.
    #[arg(long, value_name = "NAME")]
    pub key: Option<String>,

    /// Pin a channel or channel/endpoint, like the `X-Router-Channel` header.
    #[arg(long, value_name = "CHANNEL[/ENDPOINT]")]
    pub pin: Option<String>,

    /// Prompt size used to estimate cost (cost_first, balanced).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub input_tokens: u64,

    /// Output size used to estimate cost (serve uses 1024 when the request gives none).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_tokens: u64,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,

    /// Discover models first (live, for this run only) instead of using stored results.
    #[arg(long)]
    pub discover: bool,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "openai" => Ok(Protocol::Openai),
        "anthropic" => Ok(Protocol::Anthropic),
        _ => Err(format!("unknown protocol `{s}`; use openai or anthropic")),
    }
}

pub fn run(settings: &Settings, cmd: Command) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        match cmd {
            Command::List(args) => list(settings, args).await,
            Command::Query(args) => query(settings, args).await,
        }
    })
}

/// The snapshot `serve` would route on (with the store, or the server holding it, when there is one), optionally
/// with a fresh discovery run.
async fn snapshot(settings: &Settings, live: bool) -> anyhow::Result<Routing> {
    let mut loaded = settings.routing(false).await?;
    if !live {
        return Ok(loaded);
    }
    let snap = &loaded.snapshot;
    let opts = Options { timeout: snap.config.raw.discovery.timeout(), ..Options::default() };
    let outcome = discover::discover(snap, &opts, &|_| {}).await;
    for r in outcome.reports.iter().filter(|r| r.status != "ok") {
        for t in r.tokens.iter().filter_map(|t| t.reason.as_ref().map(|reason| (t, reason))) {
            output::note(&format!(
                "discovery failed for {} ({}): {}; using configured models",
                r.channel, t.0.token, t.1
            ));
        }
    }
    let mut discovered = loaded.discovery().load()?;
    outcome.merge_into(&mut discovered);
    loaded.snapshot = loaded.with_discovered(&discovered)?;
    Ok(loaded)
}

#[derive(Serialize)]
struct TagRow {
    tag: String,
    models: usize,
    channels: Vec<String>,
}

async fn list(settings: &Settings, args: ListArgs) -> anyhow::Result<()> {
    let loaded = snapshot(settings, args.discover).await?;
    let snap = loaded.snapshot;
    check_channels(&snap, &args.channels)?;
    let wanted =
        |ci: u32| args.channels.is_empty() || args.channels.iter().any(|n| n == &*snap.channels[ci as usize].name);
    let mut rows: Vec<TagRow> = Vec::new();
    let sorted: BTreeMap<&str, &TagIndex> = snap.by_tag.iter().map(|(k, v)| (&**k, v)).collect();
    for (tag, index) in sorted {
        let mut ids: BTreeSet<&str> = BTreeSet::new();
        let mut channels: Vec<String> = Vec::new();
        for r in index.iter(&snap).filter(|r| wanted(r.0)) {
            let (ch, m) = snap.model_ref(r);
            ids.insert(&m.id);
            if channels.last().map(String::as_str) != Some(&*ch.name) {
                channels.push(ch.name.to_string());
            }
        }
        if !ids.is_empty() {
            rows.push(TagRow { tag: tag.to_string(), models: ids.len(), channels });
        }
    }
    if args.json {
        return output::json(&rows).context("writing JSON");
    }
    if rows.is_empty() {
        return Err(user("no tags: no enabled channel lists any model")
            .with_hint("add `models` to a channel or run `router discover`")
            .into());
    }
    let mut t = output::table(&["tag", "models", "channels"]);
    for r in &rows {
        t.add_row(vec![r.tag.clone(), r.models.to_string(), r.channels.join(", ")]);
    }
    output::print_table(&t);
    Ok(())
}

impl From<&QueryArgs> for PlanQuery {
    fn from(a: &QueryArgs) -> Self {
        PlanQuery {
            expr: a.expr.clone(),
            strategy: a.strategy,
            protocol: a.protocol,
            embedding: a.embedding,
            key: a.key.clone(),
            pin: a.pin.clone(),
            input_tokens: a.input_tokens,
            max_tokens: a.max_tokens,
        }
    }
}

async fn query(settings: &Settings, args: QueryArgs) -> anyhow::Result<()> {
    let loaded = snapshot(settings, args.discover).await?;
    let q = PlanQuery::from(&args);
    let answer: Result<PlanView, PlanFailure> = match loaded.remote() {
        // A running server knows what is cooling and how fast each endpoint answered: ask it.
        Some(server) if !args.discover => server.run_live(q)?,
        // Without one, a fresh health: nothing is cooling and latency is only what fast tests measure.
        _ => {
            let fasttest = FastTest::with_timeout(loaded.snapshot.config.raw.routing.fast_test_timeout.0);
            control::plan(&loaded.snapshot, &Health::new(), &fasttest, &q).await
        }
    };
    let out = match answer {
        Ok(out) => out,
        Err(f) => {
            if !args.json && !f.excluded.is_empty() {
                print_excluded(&f.excluded);
            }
            let e = user(f.message);
            return Err(match f.hint {
                Some(h) => e.with_hint(h),
                None => e,
            }
            .into());
        }
    };
    if args.json {
        return output::json(&out).context("writing JSON");
    }
    output::line(&format!(
        "{}: {} candidate(s), strategy {}, resolved by {}",
        out.query,
        out.candidates.len(),
        out.strategy,
        out.resolved_by
    ));
    // The endpoint's priority / weight inside its channel, only when some candidate's differ from the defaults.
    let tiers = out.candidates.iter().any(|c| c.endpoint_priority != 0 || c.endpoint_weight != 1);
    let mut header = vec!["#", "channel", "endpoint"];
    if tiers {
        header.push("prio/weight");
    }
    header.extend(["token", "model", "in $/M", "out $/M", "free", "local", "latency", "score"]);
    let mut t = output::table(&header);
    for c in &out.candidates {
        let mut row = vec![c.rank.to_string(), c.channel.clone(), c.endpoint.clone()];
        if tiers {
            row.push(format!("{}/{}", c.endpoint_priority, c.endpoint_weight));
        }
        row.extend([
            c.token.clone(),
            c.model.clone(),
            price_text(c, |p| p.input),
            price_text(c, |p| p.output),
            yes_no(c.free),
            yes_no(c.local),
            c.latency_ms.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "-".into()),
            c.score.map(score_text).unwrap_or_else(|| "-".into()),
        ]);
        t.add_row(row);
    }
    output::print_table(&t);
    if out.candidates.iter().any(|c| c.score.is_some()) {
        output::line("score: weighted total, then its parts: c cost, s speed, q quality, r reliability");
    }
    if !out.excluded.is_empty() {
        print_excluded(&out.excluded);
    }
    Ok(())
}

fn print_excluded(rows: &[ExcludedView]) {
    output::line("excluded:");
    let mut t = output::table(&["channel", "endpoint", "token", "model", "why"]);
    for e in rows {
        let why = match e.cooling_for_ms {
            Some(ms) => format!("{} for {}s", e.reason, ms.div_ceil(1000)),
            None => e.reason.clone(),
        };
        t.add_row(vec![
            e.channel.clone(),
            e.endpoint.clone().unwrap_or_else(|| "*".into()),
            e.token.clone().unwrap_or_else(|| "*".into()),
            e.model.clone(),
            why,
        ]);
    }
    output::print_table(&t);
}

/// A price column: `?` when unknown, `0` for a free model without a listed price.
fn price_text(c: &CandidateView, part: impl Fn(&PriceView) -> f64) -> String {
    match &c.price {
        Some(p) => money(part(p)),
        None if c.free => "0".into(),
        None => "?".into(),
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

/// USD per 1M tokens, without trailing zeros: `2.5`, `0`, `0.075`.
fn money(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() { "0".into() } else { s.to_string() }
}

fn score_text(s: Score) -> String {
    // Two decimals without the leading zero keep the column narrow: `0.697 c.92 s.50 q.85 r.50`.
    let p = |v: f64| format!("{v:.2}").trim_start_matches('0').to_string();
    format!("{:.3} c{} s{} q{} r{}", s.total, p(s.cost), p(s.speed), p(s.quality), p(s.reliability))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_trims_zeros() {
        assert_eq!(money(2.5), "2.5");
        assert_eq!(money(0.0), "0");
        assert_eq!(money(10.0), "10");
        assert_eq!(money(0.075), "0.075");
    }
}
