//! `router balance check | history`: upstream credit per channel and key, for people and for cron.
//!
//! Owns the flags, the table and the exit codes (0 fine, 3 some balance below `--below`, 1 usage errors). The
//! checks themselves are `crate::balance`; results are kept in the store (`balance::store`), or sent to the
//! running server that holds it, which also cools down keys that ran dry. Prints only via `output`.

use std::io::IsTerminal;
use std::sync::Arc;

use serde::Serialize;

use super::args::{self, TimeRange};
use super::output;
use crate::balance::store::StoreBalances;
use crate::balance::{self, BalanceResult, BalanceStore, CheckOptions, Status};
use crate::config::Dur;
use crate::error::{Exit, user};
use crate::settings::Settings;
use crate::store::Access;

/// How long a stored result counts as fresh when the config sets no `balance.ttl`.
const DEFAULT_TTL: Dur = Dur::secs(600);

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Ask each upstream key's provider for the credit left (exit 3 when any is below --below).
    Check(CheckArgs),
    /// Show past balance checks.
    History(HistoryArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Only this channel (repeat for several). Default: every enabled channel.
    #[arg(long = "channel", value_name = "NAME")]
    pub channels: Vec<String>,
    /// Exit with code 3 when any balance is below AMOUNT (compared in that balance's own currency).
    #[arg(long, value_name = "AMOUNT", allow_negative_numbers = true)]
    pub below: Option<f64>,
    /// Ask the providers even when a recent result is stored.
    #[arg(long)]
    pub refresh: bool,
    /// Also check each key with a cheap request: ok, invalid, no quota, rate limited, unreachable.
    #[arg(long)]
    pub validate: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Bound on each request to a provider.
    #[arg(long, value_name = "DURATION", default_value = "15s", env = "ROUTER_BALANCE_TIMEOUT", value_parser = args::duration)]
    pub timeout: Dur,
    /// Checks in flight at once.
    #[arg(long, value_name = "N", default_value_t = 8, hide = true)]
    pub concurrency: usize,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only this channel.
    #[arg(long, value_name = "NAME")]
    pub channel: Option<String>,
    #[command(flatten)]
    pub range: TimeRange,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(settings: &Settings, cmd: Command) -> anyhow::Result<()> {
    run_with(settings, cmd, None)
}

/// Runs a `balance` command against an optional store (the TTL cache and history).
pub fn run_with(settings: &Settings, cmd: Command, store: Option<&dyn BalanceStore>) -> anyhow::Result<()> {
    match cmd {
        Command::Check(args) => check(settings, args, store),
        Command::History(args) => match store {
            Some(s) => history(args, Some(s)),
            None => {
                let path = settings.store_path()?;
                if !path.exists() {
                    return history(args, None);
                }
                let access = Access::open(&path)?;
                history(args, Some(&StoreBalances::new(&access)))
            }
        },
    }
}

fn check(settings: &Settings, args: CheckArgs, store: Option<&dyn BalanceStore>) -> anyhow::Result<()> {
    if let Some(b) = args.below
        && !b.is_finite()
    {
        return Err(user(format!("--below {b} is not an amount")).with_hint("write a number, e.g. --below 5").into());
    }
    if args.concurrency == 0 {
        return Err(user("--concurrency must be at least 1").into());
    }
    let rt = super::runtime()?;
    // Results are kept in the store (created when missing, as `serve` creates it, so `check` then `history` works
    // from cron), or sent to the server holding it.
    let loaded = rt.block_on(settings.routing(true))?;
    let keep = loaded.snapshot.config.raw.balance.history_days();
    let own = loaded.access.as_ref().map(|a| StoreBalances::new(a).keep_days(keep));
    let store: Option<&dyn BalanceStore> = store.or(own.as_ref().map(|s| s as &dyn BalanceStore));
    let ttl = loaded.snapshot.config.raw.balance.ttl.unwrap_or(DEFAULT_TTL);
    let snapshot = Arc::new(loaded.snapshot);
    super::check_channels(&snapshot, &args.channels)?;
    let opts = CheckOptions {
        channels: args.channels.clone(),
        concurrency: args.concurrency,
        timeout: args.timeout.0,
        validate: args.validate,
        ttl: Some(ttl.0),
        refresh: args.refresh,
    };
    let total = balance::targets(&snapshot, &opts.channels).len();
    if total == 0 && !args.json {
        output::note("no upstream keys to check");
    }
    let bar = (std::io::stderr().is_terminal() && total > 0).then(|| {
        let bar = indicatif::ProgressBar::new(total as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} checking balances {pos}/{len} {wide_bar}")
        {
            bar.set_style(style);
        }
        bar
    });
    let tick = {
        let bar = bar.clone();
        move || {
            if let Some(b) = &bar {
                b.inc(1);
            }
        }
    };
    let results = rt.block_on(balance::check_all(snapshot, &opts, store, &tick));
    if let Some(b) = bar {
        b.finish_and_clear();
    }

    let below: Vec<&BalanceResult> = match args.below {
        Some(t) => results.iter().filter(|r| r.below(t)).collect(),
        None => Vec::new(),
    };
    if args.json {
        let rows: Vec<JsonRow> =
            results.iter().map(|r| JsonRow { result: r, below: args.below.map(|t| r.below(t)) }).collect();
        output::json(&rows)?;
    } else if !results.is_empty() {
        print_check_table(&results, args.below, args.validate);
        let failed = results.iter().filter(|r| matches!(r.status, Status::Error(_))).count();
        if failed > 0 {
            output::note(&format!("{failed} of {} checks failed (see the status column)", results.len()));
        }
    }
    if let Some(t) = args.below
        && !below.is_empty()
    {
        output::note(&format!("{} key(s) below {t}", below.len()));
        return Err(Exit(3).into());
    }
    Ok(())
}

#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(flatten)]
    result: &'a BalanceResult,
    /// Present with `--below`: is some balance of this key under the threshold?
    #[serde(skip_serializing_if = "Option::is_none")]
    below: Option<bool>,
}

fn print_check_table(results: &[BalanceResult], below: Option<f64>, validate: bool) {
    let mut header = vec!["channel", "token", "balance", "currency", "used", "checked at", "status"];
    if validate {
        header.push("key");
    }
    let mut t = output::table(&header);
    for r in results {
        let status = match &r.status {
            Status::Ok if below.is_some_and(|b| r.below(b)) => format!("below {}", below.unwrap_or_default()),
            Status::Ok => "ok".to_string(),
            s => format!("{}: {}", s.label(), s.reason().unwrap_or_default()),
        };
        let status = if r.cached { format!("{status} (stored)") } else { status };
        let key = r.key.as_ref().map(|v| match v.state {
            balance::KeyState::Ok => "ok".to_string(),
            s => format!("{}: {}", s.as_str(), v.detail),
        });
        for row in cells(r) {
            let mut cells =
                vec![row.0, r.token_key.clone(), row.1, row.2, row.3, args::time(r.checked_at, false), status.clone()];
            if validate {
                cells.push(key.clone().unwrap_or_else(|| "-".into()));
            }
            t.add_row(cells);
        }
    }
    output::print_table(&t);
}

/// (channel label, balance, currency, used) per balance; one row with dashes when there is none.
fn cells(r: &BalanceResult) -> Vec<(String, String, String, String)> {
    let channel = if r.endpoint == "default" { r.channel.clone() } else { format!("{}/{}", r.channel, r.endpoint) };
    if r.balances.is_empty() {
        return vec![(channel, "-".into(), "-".into(), "-".into())];
    }
    r.balances
        .iter()
        .map(|b| (channel.clone(), amount(b.amount), b.currency.clone(), b.used.map(amount).unwrap_or("-".into())))
        .collect()
}

fn amount(x: f64) -> String {
    if x == 0.0 || x.abs() >= 1.0 { format!("{x:.2}") } else { format!("{x:.4}") }
}

fn history(args: HistoryArgs, store: Option<&dyn BalanceStore>) -> anyhow::Result<()> {
    let (since, until) = args.range.resolve(balance::now_ms())?;
    let Some(store) = store else {
        return Err(user("`router balance history` needs the store, and there is none yet")
            .with_hint(
                "`router balance check` (or `serve`, `discover`) creates it (see store.path, --store, ROUTER_STORE)",
            )
            .into());
    };
    let mut rows = store.history(args.channel.as_deref(), since.unwrap_or(0))?;
    rows.retain(|r| until.is_none_or(|u| r.checked_at < u));
    if args.json {
        return output::json(&rows);
    }
    if rows.is_empty() {
        output::note("no balance checks recorded in that range");
        return Ok(());
    }
    let mut t = output::table(&["checked at", "channel", "token", "balance", "currency", "used", "status"]);
    for r in &rows {
        let status = match &r.status {
            Status::Ok => "ok".to_string(),
            s => format!("{}: {}", s.label(), s.reason().unwrap_or_default()),
        };
        for (channel, bal, cur, used) in cells(r) {
            t.add_row(vec![
                args::time(r.checked_at, args.range.utc),
                channel,
                r.token_key.clone(),
                bal,
                cur,
                used,
                status.clone(),
            ]);
        }
    }
    output::print_table(&t);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{Balance, MemoryStore};
    use crate::cli::Cli;
    use clap::Parser;

    fn parse(args: &[&str]) -> Command {
        match Cli::try_parse_from(args).unwrap().command {
            crate::cli::Command::Balance(c) => c,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn parses_check_flags() {
        let cmd = parse(&[
            "router",
            "balance",
            "check",
            "--channel",
            "a",
            "--channel",
            "b",
            "--below",
            "5",
            "--refresh",
            "--validate",
            "--json",
            "--timeout",
            "250ms",
        ]);
        let Command::Check(a) = cmd else { panic!() };
        assert_eq!(a.channels, ["a", "b"]);
        assert_eq!(a.below, Some(5.0));
        assert!(a.refresh && a.validate && a.json);
        assert_eq!(a.timeout, Dur(std::time::Duration::from_millis(250)));
        assert!(Cli::try_parse_from(["router", "balance", "check", "--below", "lots"]).is_err());
    }

    #[test]
    fn history_without_store_is_a_user_error() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::new(None, Some(dir.path().join("none.redb")));
        let cmd = parse(&["router", "balance", "history"]);
        let e = run_with(&settings, cmd, None).unwrap_err();
        assert_eq!(crate::error::classify(&e).code, 1);
        assert!(e.to_string().contains("needs the store"), "{e}");
    }

    #[test]
    fn history_reads_the_store() {
        let store = MemoryStore::default();
        store
            .save(&[BalanceResult {
                channel: "ds".into(),
                endpoint: "default".into(),
                token_key: "main".into(),
                fingerprint: "fp:0123456789abcdef".into(),
                kind: Some(balance::Kind::Deepseek),
                status: Status::Ok,
                balances: vec![Balance { amount: 3.0, currency: "CNY".into(), used: None, limit: None }],
                checked_at: balance::now_ms(),
                key: None,
                cached: false,
            }])
            .unwrap();
        let cmd = parse(&["router", "balance", "history", "--channel", "ds", "--since", "1h", "--json"]);
        run_with(&Settings::new(None, None), cmd, Some(&store)).unwrap();
    }

    #[test]
    fn amounts_format() {
        assert_eq!(amount(74.75), "74.75");
        assert_eq!(amount(0.0049), "0.0049");
        assert_eq!(amount(0.0), "0.00");
    }
}
