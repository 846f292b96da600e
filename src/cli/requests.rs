//! `router requests`: recent request records, newest first; `router requests show ID`: one record with every
//! attempt.
//!
//! Reaches the store directly or through a running server's control socket (same query, same output). Prints
//! token names and fingerprints only, never a key.

use super::args::{RecordFilter, TimeRange, time};
use super::output;
use crate::report::{self, RequestsQuery, ShowRequest};
use crate::settings::Settings;
use crate::store::Access;
use crate::usage::{RequestRecord, UsageSource, format_id};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// One request with every upstream attempt.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The request id (32 hex digits, as listed), or a unique prefix of it.
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// How many records to show.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    #[command(flatten)]
    pub range: TimeRange,
    #[command(flatten)]
    pub filter: RecordFilter,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<()> {
    let access = Access::open_existing(&settings.store_path()?)?;
    match args.command {
        Some(Sub::Show(a)) => show(&access, a),
        None => list(&access, args.list),
    }
}

fn list(access: &Access, a: ListArgs) -> anyhow::Result<()> {
    let (since_ms, until_ms) = a.range.resolve(crate::usage::now_ms())?;
    let utc = a.range.utc;
    let query = RequestsQuery { limit: a.limit, since_ms, until_ms, filters: a.filter.into(), before: None };
    let records = access.run(query)?.records;
    if a.json {
        return output::json(&records.iter().map(|r| report::record_json(r, utc)).collect::<Vec<_>>());
    }
    let mut t = output::table(&[
        "time",
        "id (end)",
        "key",
        "model",
        "channel/endpoint",
        "token",
        "status",
        "outcome",
        "tokens",
        "cost $",
        "ms",
    ]);
    for r in &records {
        t.add_row(vec![
            time(r.time_ms, utc),
            // The random end of the id: unique, and what `requests show` takes (the start is the time).
            format_id(r.id)[20..].to_string(),
            r.gateway_key.as_deref().unwrap_or("-").to_string(),
            model(r),
            where_(r),
            r.token_key.as_deref().unwrap_or("-").to_string(),
            status(r),
            r.outcome.as_str().into(),
            tokens(r),
            cost(r),
            r.total_ms.to_string(),
        ]);
    }
    output::print_table(&t);
    Ok(())
}

fn show(access: &Access, a: ShowArgs) -> anyhow::Result<()> {
    let r = access.run(ShowRequest { id: a.id })?.records.into_iter().next().expect("show returns one record");
    if a.json {
        return output::json(&report::record_json(&r, a.utc));
    }
    let line = |k: &str, v: String| output::line(&format!("{k:<16}{v}"));
    line("id", format_id(r.id));
    line("time", time(r.time_ms, a.utc));
    line("gateway key", r.gateway_key.as_deref().unwrap_or("-").to_string());
    line("client", format!("{} {}", r.client_protocol, r.path));
    line("model", model(&r));
    line("channel", where_(&r));
    line(
        "token",
        match (&r.token_key, &r.token_fp) {
            (Some(k), Some(fp)) if k != fp => format!("{k} ({fp})"),
            (Some(k), _) => k.to_string(),
            _ => "-".into(),
        },
    );
    line("strategy", r.strategy.map(|s| s.to_string()).unwrap_or_default());
    if r.session.is_some() || r.affinity.is_some() {
        let s = r.session.as_deref().unwrap_or("-");
        line("session", format!("{s} (affinity {})", r.affinity.map(|a| a.as_str()).unwrap_or("-")));
    }
    line("status", format!("{} {}", status(&r), r.outcome.as_str()));
    line("stream", r.stream.to_string());
    if let Some(t) = &r.translated {
        line("translated", t.to_string());
    }
    line(
        "time to first",
        r.ttfb_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "-".into()) + &format!(", total {} ms", r.total_ms),
    );
    let tk = &r.tokens;
    line(
        "tokens",
        format!(
            "input {}  cache read {}  cache write {}{}  output {} (reasoning {})  [{}]",
            tk.input,
            tk.cache_read,
            tk.cache_write,
            if tk.cache_write_1h > 0 { format!(" (1h {})", tk.cache_write_1h) } else { String::new() },
            tk.output,
            tk.reasoning,
            source(r.usage_source)
        ),
    );
    line("cost $", cost(&r));
    if let Some(e) = &r.error {
        line("error", e.clone());
    }
    let mut t = output::table(&["#", "channel/endpoint", "token", "model", "status", "outcome", "ms"]);
    for (i, at) in r.attempts.iter().enumerate() {
        t.add_row(vec![
            (i + 1).to_string(),
            format!("{}/{}", at.channel, at.endpoint),
            String::from(&*at.token_key),
            String::from(&*at.model),
            at.status.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            at.outcome.to_string(),
            at.ms.to_string(),
        ]);
    }
    if r.attempts.is_empty() {
        output::line("attempts        none");
    } else {
        output::line("attempts");
        output::print_table(&t);
    }
    Ok(())
}

fn model(r: &RequestRecord) -> String {
    match &r.upstream_model {
        Some(u) if **u != *r.requested_model => format!("{} -> {u}", r.requested_model),
        _ => r.requested_model.clone(),
    }
}

fn where_(r: &RequestRecord) -> String {
    match (&r.channel, &r.endpoint) {
        (Some(c), Some(e)) => format!("{c}/{e}"),
        (Some(c), None) => c.to_string(),
        _ => "-".into(),
    }
}

fn status(r: &RequestRecord) -> String {
    if r.status == 0 { "-".into() } else { r.status.to_string() }
}

/// `input[+cached]/output`, `~` in front when estimated.
fn tokens(r: &RequestRecord) -> String {
    let t = &r.tokens;
    if t.is_zero() {
        return "-".into();
    }
    let cached = t.cache_read + t.cache_write;
    let est = if r.usage_source == UsageSource::Estimated { "~" } else { "" };
    if cached > 0 {
        format!("{est}{}+{cached}/{}", t.input, t.output)
    } else {
        format!("{est}{}/{}", t.input, t.output)
    }
}

fn cost(r: &RequestRecord) -> String {
    match r.cost_usd {
        Some(c) => report::format_usd(c),
        None if r.tokens.is_zero() => "0".into(),
        None => "-".into(),
    }
}

fn source(s: UsageSource) -> &'static str {
    match s {
        UsageSource::Upstream => "from upstream",
        UsageSource::Estimated => "estimated",
        UsageSource::None => "none billed",
    }
}
