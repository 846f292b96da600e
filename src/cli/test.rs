//! `router test [TARGET]...`: does each endpoint and key answer, how fast, which models work, and where would a
//! real request for a model or tag land.
//!
//! Owns the flags, the tables, the progress bar (only on a terminal) and the exit code (0 all ok, 1 anything
//! failed or a target is unknown). The checks are `crate::probe`; what they learnt goes to a running `serve`
//! (live operation `probe_report` on the control socket) or to the `feed` given to [`run_with`]. Prints only via
//! `output`.

use std::io::IsTerminal;
use std::sync::Arc;

use serde::Serialize;

use super::output;
use crate::config::{Dur, Strategy};
use crate::error::{Exit, user};
use crate::probe::{self, CheckKind, CheckResult, Options, ProbeReport, RouteResult};
use crate::settings::Settings;
use crate::upstream::FailureClass;
use crate::usage::Tokens;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to test: a channel, channel/endpoint, a model name (alias, id, vendor/model) or a tag expression
    /// (tag:qwen,!free). Default: every endpoint of every enabled channel.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Also send a minimal real request (8 output tokens) to each model of the tested endpoints.
    #[arg(long)]
    pub chat: bool,
    /// Only this model for the chat requests (implies --chat).
    #[arg(long, value_name = "M")]
    pub model: Option<String>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Checks in flight at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub concurrency: usize,
    /// Bound on each request (and on each attempt of a routed request).
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = super::args::duration)]
    pub timeout: Dur,
    /// Strategy for model and tag targets (default: routing.strategy of the config).
    #[arg(long, value_name = "NAME", value_parser = super::args::strategy)]
    pub strategy: Option<Strategy>,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<()> {
    run_with(settings, args, None)
}

/// Keeps the records of routed test requests (they spend tokens) in the store, or in the server holding it.
fn keep_records(access: Option<&crate::store::Access>, store_path: &std::path::Path, routes: &[RouteResult]) {
    let records: Vec<_> = routes.iter().filter_map(|r| r.request.as_ref()?.record.as_deref().cloned()).collect();
    if records.is_empty() {
        return;
    }
    let kept = match access {
        Some(a) => a.run(crate::store::socket::RecordsPut { records }),
        None => {
            crate::store::Access::open(store_path).and_then(|a| a.run(crate::store::socket::RecordsPut { records }))
        }
    };
    if let Err(e) = kept {
        output::note(&format!("note: the test requests were not recorded: {e:#}"));
    }
}

/// Sends a report to the server over the control socket; a server that cannot take it is a note, not a failure.
fn send_report(server: &crate::store::Access, report: &ProbeReport) {
    if let Err(e) = server.run_live(report.clone()) {
        output::note(&format!("note: the running server did not take the results: {e:#}"));
    }
}

/// Runs `router test`; `feed` receives what the test learnt (latency, failures) for a running server's health.
pub fn run_with(settings: &Settings, args: Args, feed: Option<&dyn Fn(&ProbeReport)>) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        return Err(user("--concurrency must be at least 1").into());
    }
    let rt = super::runtime()?;
    // The snapshot `serve` routes on (store channels and discovered models included). The store is created when
    // missing, as `serve` creates it: the records of routed test requests are kept there.
    let mut loaded = rt.block_on(settings.routing(true))?;
    let in_process = loaded.snapshot_for(probe::in_process_config(&loaded.snapshot.config, args.timeout.0))?;
    if loaded.remote().is_none() {
        // Do not hold the store file while testing: a server may start meanwhile.
        loaded.access = None;
    }
    let snapshot = Arc::new(loaded.snapshot);
    if snapshot.channels.is_empty() {
        return Err(user("no channels to test")
            .with_hint("add channels to the config, or export OPENAI_API_KEY / ANTHROPIC_API_KEY / ... for zero-config")
            .into());
    }
    let selection = probe::select(&snapshot, &args.targets)?;
    let opts = Options {
        concurrency: args.concurrency,
        timeout: args.timeout.0,
        chat: args.chat || args.model.is_some(),
        model: args.model.clone(),
        strategy: args.strategy,
    };
    let (jobs, notes) = probe::jobs(&snapshot, &selection, &opts);
    if jobs.is_empty() && selection.routes.is_empty() {
        return Err(user("nothing to test: the selected channels have no enabled keys or endpoints")
            .with_hint("name an enabled channel, a model or a tag:expression")
            .into());
    }
    let total = jobs.len() + selection.routes.len();
    let bar = (std::io::stderr().is_terminal() && !args.json).then(|| {
        let bar = indicatif::ProgressBar::new(total as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} testing {pos}/{len} {wide_bar}") {
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
    let checks = rt.block_on(probe::check_all(snapshot.clone(), &jobs, &opts, &tick));
    let routes = if selection.routes.is_empty() {
        Vec::new()
    } else {
        let proxy_snapshot = Arc::new(in_process);
        // Routing sees what the checks just learnt, as a server fed with this report would.
        let seed = probe::report(&snapshot, &checks, &[]);
        let routes = rt.block_on(probe::route_all(proxy_snapshot, &selection.routes, &opts, &seed));
        for _ in &routes {
            tick();
        }
        routes
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    keep_records(loaded.access.as_ref(), &loaded.store_path, &routes);
    let report = probe::report(&snapshot, &checks, &routes);
    match (feed, &loaded.access) {
        (Some(feed), _) => feed(&report),
        // A running server learns latency and cooldowns from the test, as from real traffic.
        (None, Some(server)) => send_report(server, &report),
        (None, None) => {}
    }

    let failed_checks = checks.iter().filter(|c| !c.ok()).count();
    let failed_routes = routes.iter().filter(|r| !r.ok()).count();
    let all_ok = failed_checks == 0 && failed_routes == 0;
    if args.json {
        output::json(&JsonOut { ok: all_ok, checks: &checks, routes: &routes, notes: &notes })?;
    } else {
        if !checks.is_empty() {
            print_checks(&checks);
        }
        for r in &routes {
            print_route(r);
        }
        for n in &notes {
            output::note(&format!("note: {n}"));
        }
        output::note(&summary(checks.len(), failed_checks, routes.len(), failed_routes));
    }
    if all_ok { Ok(()) } else { Err(Exit(1).into()) }
}

#[derive(Serialize)]
struct JsonOut<'a> {
    /// Every check and routed request succeeded.
    ok: bool,
    checks: &'a [CheckResult],
    routes: &'a [RouteResult],
    notes: &'a [String],
}

fn summary(checks: usize, failed: usize, routes: usize, failed_routes: usize) -> String {
    let mut parts = Vec::new();
    if checks > 0 {
        parts.push(if failed == 0 {
            format!("all {checks} check(s) ok")
        } else {
            format!("{failed} of {checks} check(s) failed")
        });
    }
    if routes > 0 {
        parts.push(if failed_routes == 0 {
            format!("{routes} routed request(s) ok")
        } else {
            format!("{failed_routes} of {routes} routed request(s) failed")
        });
    }
    parts.join("; ")
}

fn millis(ms: Option<u64>) -> String {
    ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "-".into())
}

fn tokens(t: Option<&Tokens>) -> String {
    match t {
        Some(t) => format!("{} in / {} out", t.total_input(), t.output),
        None => "-".into(),
    }
}

/// `ok`, or the class in words with what was seen: `auth: invalid key (HTTP 401: Incorrect API key)`.
fn result_words(class: FailureClass, message: &str, detail: Option<&str>) -> String {
    match (class, detail) {
        (FailureClass::Ok, _) => "ok".into(),
        (_, Some(d)) if !d.is_empty() => format!("{message} ({d})"),
        _ => message.to_string(),
    }
}

fn print_checks(checks: &[CheckResult]) {
    let mut t =
        output::table(&["channel", "endpoint", "token", "check", "status", "latency / ttfb", "tokens", "result"]);
    for c in checks {
        let check = match (c.check, &c.model) {
            (CheckKind::Chat, Some(m)) => format!("chat {m}"),
            _ if c.request.ends_with("/models") => "models".to_string(),
            _ => c.request.rsplit('/').next().map(|p| format!("GET /{p}")).unwrap_or_else(|| c.request.clone()),
        };
        let latency = match c.check {
            CheckKind::Chat if c.ttfb_ms.is_some() => {
                format!("ttfb {}, total {}", millis(c.ttfb_ms), millis(c.total_ms))
            }
            _ => millis(c.latency_ms),
        };
        t.add_row(vec![
            c.channel.clone(),
            c.endpoint.clone(),
            c.token_key.clone(),
            check,
            c.status.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            latency,
            tokens(c.tokens.as_ref()),
            result_words(c.result, &c.message, c.detail.as_deref()),
        ]);
    }
    output::print_table(&t);
}

fn print_route(r: &RouteResult) {
    let client = r.client.as_str();
    let resolved = r.resolved_by.as_deref().map(|b| format!(", resolved by {b}")).unwrap_or_default();
    output::line("");
    output::line(&format!("route {}: strategy {}{resolved}, client protocol {client}", r.target, r.strategy));
    if !r.candidates.is_empty() {
        let mut t = output::table(&["#", "channel", "endpoint", "token", "model", "note"]);
        for (i, c) in r.candidates.iter().enumerate() {
            let mut note = Vec::new();
            if c.translated {
                note.push("translated".to_string());
            }
            if let Some(s) = c.score {
                note.push(format!("score {:.3}", s.total));
            }
            t.add_row(vec![
                (i + 1).to_string(),
                c.channel.clone(),
                c.endpoint.clone(),
                c.token.clone(),
                c.model.clone(),
                note.join(", "),
            ]);
        }
        output::print_table(&t);
    }
    for x in &r.excluded {
        let place = match (&x.endpoint, &x.token) {
            (Some(e), Some(t)) => format!("{}/{e} [{t}]", x.channel),
            (Some(e), None) => format!("{}/{e}", x.channel),
            _ => x.channel.clone(),
        };
        output::line(&format!("  excluded: {place} {}: {}", x.model, x.reason));
    }
    if let Some(e) = &r.plan_error {
        output::line(&format!("  routing: {e}"));
    }
    let Some(req) = &r.request else { return };
    output::line(&format!("request {}: {} attempt(s)", req.path, req.attempts.len()));
    if !req.attempts.is_empty() {
        let mut t = output::table(&["attempt", "channel", "endpoint", "token", "model", "status", "result", "time"]);
        for (i, a) in req.attempts.iter().enumerate() {
            t.add_row(vec![
                (i + 1).to_string(),
                String::from(&*a.channel),
                String::from(&*a.endpoint),
                String::from(&*a.token_key),
                String::from(&*a.model),
                a.status.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                a.outcome.words().to_string(),
                format!("{} ms", a.ms),
            ]);
        }
        output::print_table(&t);
    }
    if r.ok() {
        let via = format!(
            "{}/{} [{}] {}",
            req.channel.as_deref().unwrap_or("?"),
            req.endpoint.as_deref().unwrap_or("?"),
            req.token_key.as_deref().unwrap_or("?"),
            req.model.as_deref().unwrap_or("?")
        );
        let translated = req.translated.map(|t| format!(", translated {t}")).unwrap_or_default();
        output::line(&format!(
            "result: ok via {via}{translated}; ttfb {}, total {} ms, tokens {}",
            millis(req.ttfb_ms.map(u64::from)),
            req.total_ms,
            tokens(Some(&req.tokens))
        ));
    } else {
        let status = if req.status == 0 { "no answer".to_string() } else { format!("HTTP {}", req.status) };
        let why = req.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        output::line(&format!("result: failed ({status}, {}){why}", req.outcome.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn parse(args: &[&str]) -> Args {
        match Cli::try_parse_from(args).unwrap().command {
            crate::cli::Command::Test(a) => a,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn parses_flags() {
        let a = parse(&[
            "router",
            "test",
            "main",
            "tag:qwen,!free",
            "--chat",
            "--model",
            "gpt-4o",
            "--json",
            "--concurrency",
            "3",
            "--timeout",
            "500ms",
            "--strategy",
            "cost-first",
        ]);
        assert_eq!(a.targets, ["main", "tag:qwen,!free"]);
        assert!(a.chat && a.json);
        assert_eq!(a.model.as_deref(), Some("gpt-4o"));
        assert_eq!(a.concurrency, 3);
        assert_eq!(a.timeout, Dur(std::time::Duration::from_millis(500)));
        assert_eq!(a.strategy, Some(Strategy::CostFirst));
        assert!(Cli::try_parse_from(["router", "test", "--strategy", "cheapest"]).is_err());
        assert!(Cli::try_parse_from(["router", "test", "--timeout", "0s"]).is_err());
        let a = parse(&["router", "test"]);
        assert!(a.targets.is_empty() && !a.chat);
    }

    #[test]
    fn words_and_summary() {
        assert_eq!(result_words(FailureClass::Ok, "ok", Some("x")), "ok");
        assert_eq!(
            result_words(FailureClass::Auth, FailureClass::Auth.words(), Some("HTTP 401: bad key")),
            "auth: invalid key (HTTP 401: bad key)"
        );
        assert_eq!(summary(4, 1, 0, 0), "1 of 4 check(s) failed");
        assert_eq!(summary(2, 0, 1, 0), "all 2 check(s) ok; 1 routed request(s) ok");
    }
}
