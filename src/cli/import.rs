//! `router import oneapi SOURCE`: preview, confirm and import the channels of a One-API / New-API database.
//!
//! Owns the flags, the preview (what will be imported, what will not and why) and the confirmation. Reading and
//! mapping live in `crate::import`; this file prints keys only as token names / fingerprints.

use std::io::IsTerminal;

use anyhow::Context;

use super::{Global, output};
use crate::error::user;
use crate::import::{self, Flavour, ImportPlan, OneApiOptions, PlanReport};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import channels from a One-API or New-API database (SQLite file, mysql:// or postgres:// URL).
    Oneapi(OneapiArgs),
}

#[derive(Debug, clap::Args)]
pub struct OneapiArgs {
    /// The database: a SQLite file (one-api.db), mysql://user:pass@host[:port]/db or postgres://user:pass@host/db.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Which project wrote the database (default: detected from its columns).
    #[arg(long, value_name = "FLAVOR", value_parser = ["one-api", "new-api"])]
    pub flavor: Option<String>,
    /// Prepended to every imported channel name.
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Show what would be imported, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Import without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// On re-import, take each channel's enabled / disabled state from the database again, dropping what was
    /// set locally with `router channels enable|disable` (kept by default).
    #[arg(long)]
    pub reset_state: bool,
}

pub fn run(global: &Global, cmd: Command) -> anyhow::Result<()> {
    let Command::Oneapi(args) = cmd;
    if let Some(p) = &args.prefix
        && p.contains('/')
    {
        return Err(user(format!("--prefix `{p}` contains `/`")).with_hint("channel names cannot contain `/`").into());
    }
    let opts = OneApiOptions { flavour: args.flavor.as_deref().and_then(Flavour::parse), prefix: args.prefix.clone() };
    let plan = import::plan_oneapi(&args.source, &opts).map_err(|e| {
        let hint = e.hint();
        let err = user(e.to_string());
        match hint {
            Some(h) => err.with_hint(h),
            None => err,
        }
    })?;
    let report = plan.report();
    if !args.json {
        preview(&report);
    }
    if args.dry_run {
        if args.json {
            output::json(&serde_json::json!({ "dry_run": true, "plan": report }))?;
        } else {
            output::note("dry run: nothing was imported");
        }
        return Ok(());
    }
    if plan.channels.is_empty() {
        if args.json {
            output::json(&serde_json::json!({ "dry_run": false, "plan": report, "commit": null }))?;
        } else {
            output::note("nothing to import");
        }
        return Ok(());
    }
    if !args.yes && !confirm(&plan)? {
        output::note("import cancelled: nothing was changed");
        return Ok(());
    }
    let done = import::commit(global, &plan, args.reset_state).context("importing the channels")?;
    if args.json {
        return output::json(&serde_json::json!({ "dry_run": false, "plan": report, "commit": done }));
    }
    let mut t = output::table(&["Channel", "Result"]);
    for (names, what) in [(&done.created, "created"), (&done.updated, "updated"), (&done.unchanged, "unchanged")] {
        for n in names {
            t.add_row(vec![n.clone(), what.to_string()]);
        }
    }
    output::print_table(&t);
    output::note(&format!(
        "imported: {} created, {} updated, {} unchanged",
        done.created.len(),
        done.updated.len(),
        done.unchanged.len()
    ));
    Ok(())
}

fn confirm(plan: &ImportPlan) -> anyhow::Result<bool> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(user("not a terminal: cannot ask for confirmation")
            .with_hint("pass --yes to import without asking, or --dry-run to only preview")
            .into());
    }
    let n = plan.channels.len();
    Ok(dialoguer::Confirm::new()
        .with_prompt(format!("Import {n} channel{} into the store?", if n == 1 { "" } else { "s" }))
        .default(false)
        .interact()?)
}

fn preview(r: &PlanReport) {
    output::note(&format!("{} database: {}", r.flavour, r.source));
    if !r.channels.is_empty() {
        let mut t = output::table(&[
            "Name", "Protocol", "Base URL", "Tokens", "Models", "Aliases", "Tags", "Priority", "Status",
        ]);
        for c in &r.channels {
            let tokens: Vec<String> = c
                .tokens()
                .map(|k| if k.enabled { k.token_key.clone() } else { format!("{} (off)", k.token_key) })
                .collect();
            let urls: Vec<&str> = {
                let mut u: Vec<&str> = c.endpoints.iter().map(|e| e.base_url.as_str()).collect();
                u.dedup();
                u
            };
            let aliases: Vec<String> = c.aliases.iter().map(|(k, v)| format!("{k} -> {v}")).collect();
            let status = if c.enabled {
                "enabled".to_string()
            } else {
                format!("disabled: {}", c.disabled_reason.as_deref().unwrap_or("-"))
            };
            t.add_row(vec![
                c.name.clone(),
                c.protocol.clone(),
                urls.join("\n"),
                format!("{}: {}", tokens.len(), tokens.join(", ")),
                c.models.len().to_string(),
                aliases.join("\n"),
                c.tags.join(", "),
                c.priority.to_string(),
                status,
            ]);
        }
        output::line(&format!("Will import {} channel(s):", r.channels.len()));
        output::print_table(&t);
    }
    if !r.skipped.is_empty() {
        let mut t = output::table(&["ID", "Name", "Type", "Reason"]);
        for s in &r.skipped {
            t.add_row(vec![
                s.id.to_string(),
                s.name.clone(),
                format!("{} ({})", s.type_name, s.kind),
                s.reason.clone(),
            ]);
        }
        output::line(&format!("Will not import {} row(s):", r.skipped.len()));
        output::print_table(&t);
    }
    for c in &r.channels {
        for n in &c.notes {
            output::note(&format!("note: {}: {n}", c.name));
        }
    }
    for w in &r.warnings {
        output::note(&format!("warning: {w}"));
    }
}
