//! `router tags list` and `router tags query`: the tag vocabulary, and the candidates `serve` would try.
//!
//! Owns the command line and tables only. `tags query` calls `routing::plan` with the inputs `serve` uses (the
//! same snapshot, a `Health`, the strategy), so its table is the attempt order of a real request. While a server
//! runs, the server itself plans (live operation [`PLAN_OP`], answered by [`answer`]) on its own snapshot and
//! health, so cooling endpoints and observed latency show. It decides nothing itself.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::discover::{Loaded, check_channels, load, store};
use super::{Global, output};
use crate::catalog::{ModelKind, Snapshot, TagIndex};
use crate::config::Strategy;
use crate::discover::{self, Options};
use crate::error::user;
use crate::protocol::Protocol;
use crate::routing::{self, Allow, Plan, PlanError, RouteRequest, Score};
use crate::upstream::fasttest::FastTest;
use crate::upstream::health::Health;

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

pub fn run(global: &Global, cmd: Command) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        match cmd {
            Command::List(args) => list(global, args).await,
            Command::Query(args) => query(global, args).await,
        }
    })
}

/// The snapshot `serve` would route on (with the store, or the server holding it, when there is one), optionally
/// with a fresh discovery run.
async fn snapshot(global: &Global, live: bool) -> anyhow::Result<Loaded> {
    let mut loaded = load(global, false).await?;
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
    let mut discovered = store(loaded.access.as_ref()).load()?;
    outcome.merge_into(&mut discovered);
    let stored = match &loaded.access {
        Some(a) => crate::catalog::load::store_channels(a, &loaded.store_path)?,
        None => Vec::new(),
    };
    loaded.snapshot = Snapshot::build(snap.config.clone(), &stored, &discovered, loaded.auto);
    Ok(loaded)
}

#[derive(Serialize)]
struct TagRow {
    tag: String,
    models: usize,
    channels: Vec<String>,
}

async fn list(global: &Global, args: ListArgs) -> anyhow::Result<()> {
    let loaded = snapshot(global, args.discover).await?;
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

#[derive(Debug, Serialize, Deserialize)]
pub struct JsonPrice {
    input: f64,
    output: f64,
}

/// One candidate of `tags query`, in attempt order.
#[derive(Debug, Serialize, Deserialize)]
pub struct CandidateRow {
    pub rank: usize,
    pub channel: String,
    pub endpoint: String,
    pub token: String,
    pub model: String,
    /// The endpoint's priority inside its channel and its weight among endpoints of that priority (left out
    /// when 0 and 1, the defaults).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub endpoint_priority: i64,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub endpoint_weight: u32,
    pub price: Option<JsonPrice>,
    pub free: bool,
    pub local: bool,
    pub latency_ms: Option<f64>,
    pub score: Option<ScoreRow>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// The `balanced` score and its parts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ScoreRow {
    pub total: f64,
    pub cost: f64,
    pub speed: f64,
    pub quality: f64,
    pub reliability: f64,
}

impl From<Score> for ScoreRow {
    fn from(s: Score) -> Self {
        ScoreRow { total: s.total, cost: s.cost, speed: s.speed, quality: s.quality, reliability: s.reliability }
    }
}

/// A match that will not be tried, and why.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExcludedRow {
    pub channel: String,
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub model: String,
    pub reason: String,
    pub cooling_for_ms: Option<u64>,
}

/// What `tags query` prints (and `--json` emits).
#[derive(Debug, Serialize, Deserialize)]
pub struct QueryOut {
    pub query: String,
    pub strategy: Strategy,
    pub resolved_by: String,
    pub candidates: Vec<CandidateRow>,
    pub excluded: Vec<ExcludedRow>,
}

/// A query, as the live operation `plan` receives it from `tags query` when a server runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanArgs {
    pub expr: String,
    pub strategy: Option<Strategy>,
    pub protocol: Protocol,
    pub embedding: bool,
    pub key: Option<String>,
    pub pin: Option<String>,
    pub input_tokens: u64,
    pub max_tokens: u64,
}

impl From<&QueryArgs> for PlanArgs {
    fn from(a: &QueryArgs) -> Self {
        PlanArgs {
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

/// Why a query has no candidates: the user error to show, and the exclusions that explain it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlanFailure {
    pub message: String,
    pub hint: Option<String>,
    pub excluded: Vec<ExcludedRow>,
}

/// The live operation `tags query` asks a running server: the plan on the server's own snapshot and health.
pub const PLAN_OP: &str = "plan";

async fn query(global: &Global, args: QueryArgs) -> anyhow::Result<()> {
    let loaded = snapshot(global, args.discover).await?;
    let plan_args = PlanArgs::from(&args);
    let answer: Result<QueryOut, PlanFailure> = match loaded.remote() {
        // A running server knows what is cooling and how fast each endpoint answered: ask it.
        Some(server) if !args.discover => {
            let v = server.call_live(PLAN_OP, serde_json::to_value(&plan_args)?)?;
            serde_json::from_value(v).context("unexpected reply from the server to `plan`")?
        }
        // Without one, a fresh health: nothing is cooling and latency is only what fast tests measure.
        _ => {
            let fasttest = FastTest::with_timeout(loaded.snapshot.config.raw.routing.fast_test_timeout.0);
            answer(&loaded.snapshot, &Health::new(), &fasttest, &plan_args).await
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

/// Plans `args` on `snap` and `health` exactly as `serve` would (measuring unknown endpoints first for
/// `fastest`), as the rows `tags query` prints. Runs in the CLI, or in the server for the live operation `plan`.
pub async fn answer(
    snap: &Snapshot,
    health: &Health,
    fasttest: &FastTest,
    args: &PlanArgs,
) -> Result<QueryOut, PlanFailure> {
    let allow = match &args.key {
        None => None,
        Some(name) => match snap.config.gateway_keys.iter().find(|k| &k.name == name) {
            Some(k) => k.allow.as_deref().map(Allow::parse),
            None => {
                let names: Vec<&str> = snap.config.gateway_keys.iter().map(|k| k.name.as_str()).collect();
                return Err(PlanFailure {
                    message: format!("no gateway key named `{name}`"),
                    hint: Some(format!("keys: {}", if names.is_empty() { "none".into() } else { names.join(", ") })),
                    excluded: Vec::new(),
                });
            }
        },
    };
    let req = RouteRequest {
        model: &args.expr,
        kind: if args.embedding { ModelKind::Embedding } else { ModelKind::Chat },
        client: args.protocol,
        strategy: args.strategy.unwrap_or(snap.config.raw.routing.strategy),
        pin: args.pin.as_deref(),
        allow: allow.as_ref(),
        translate: false,
        est_input: args.input_tokens,
        est_output: args.max_tokens,
    };
    let mut plan = routing::plan(snap, health, &req, Instant::now());
    if req.strategy == Strategy::Fastest
        && let Ok(p) = &plan
        && fasttest.measure_unknown(snap, health, &p.endpoints()).await > 0
    {
        plan = routing::plan(snap, health, &req, Instant::now());
    }
    match plan {
        Ok(p) => Ok(rows(snap, health, &args.expr, &p, &req)),
        Err(e) => Err(plan_failure(snap, args, e)),
    }
}

fn rows(snap: &Snapshot, health: &Health, query: &str, plan: &Plan, req: &RouteRequest<'_>) -> QueryOut {
    let candidates = plan
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ch = &snap.channels[c.channel];
            let ep = &ch.endpoints[c.endpoint];
            let model = ch.model(&c.model);
            let free = model.map(|m| m.free).unwrap_or_else(|| crate::catalog::is_free_id(&c.model))
                || ch.tags.iter().any(|t| t == "free");
            CandidateRow {
                rank: i + 1,
                channel: ch.name.to_string(),
                endpoint: ep.name.to_string(),
                token: ep.tokens[c.token].token_key.to_string(),
                model: c.model.clone(),
                endpoint_priority: ep.priority,
                endpoint_weight: ep.weight,
                price: ch.price(&c.model).map(|p| JsonPrice { input: p.input, output: p.output }),
                free,
                local: ep.local,
                latency_ms: routing::endpoint_latency(snap, health, c.channel, c.endpoint).map(|ms| ms.round()),
                score: c.score.map(ScoreRow::from),
            }
        })
        .collect();
    QueryOut {
        query: query.to_string(),
        strategy: req.strategy,
        resolved_by: plan.resolved_by.to_string(),
        candidates,
        excluded: excluded_rows(&plan.excluded),
    }
}

fn excluded_rows(excluded: &[routing::Excluded]) -> Vec<ExcludedRow> {
    excluded
        .iter()
        .map(|e| ExcludedRow {
            channel: e.channel.clone(),
            endpoint: e.endpoint.clone(),
            token: e.token.clone(),
            model: e.model.clone(),
            reason: e.reason.clone(),
            cooling_for_ms: e.cooling_for.map(|d| d.as_millis() as u64),
        })
        .collect()
}

fn print_excluded(rows: &[ExcludedRow]) {
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

/// A plan error as the user sees it: exit 1 with a hint (and the exclusions, when every match was excluded).
fn plan_failure(snap: &Snapshot, args: &PlanArgs, e: PlanError) -> PlanFailure {
    let msg = e.to_string();
    let fail = |message: String, hint: String| PlanFailure { message, hint: Some(hint), excluded: Vec::new() };
    match e {
        PlanError::UnknownModel { model, closest } => {
            let what = if model.starts_with("tag:") { "tags" } else { "names" };
            let hint = if closest.is_empty() {
                "see `router tags list` for the tags and ids known".to_string()
            } else {
                format!("close {what}: {}", closest.join(", "))
            };
            fail(format!("nothing matches `{model}`"), hint)
        }
        PlanError::WrongProtocol { protocol, .. } => {
            fail(msg, format!("to plan for a client of that protocol: --protocol {protocol}"))
        }
        PlanError::Forbidden { .. } => fail(
            msg,
            format!(
                "the key's allow expression is `{}`",
                args.key
                    .as_deref()
                    .and_then(|k| snap.config.gateway_keys.iter().find(|g| g.name == k))
                    .and_then(|g| g.allow.clone())
                    .unwrap_or_default()
            ),
        ),
        PlanError::PinNotFound { .. } => {
            fail(msg, "check the channel and endpoint names: `router config check`".into())
        }
        PlanError::AllCooling { excluded, .. } | PlanError::NoneUsable { excluded, .. } => PlanFailure {
            message: msg,
            hint: Some("every match was excluded; see the reasons above".into()),
            excluded: excluded_rows(&excluded),
        },
    }
}

/// A price column: `?` when unknown, `0` for a free model without a listed price.
fn price_text(c: &CandidateRow, part: impl Fn(&JsonPrice) -> f64) -> String {
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

fn score_text(s: ScoreRow) -> String {
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
