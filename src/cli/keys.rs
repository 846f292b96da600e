//! `router keys`: gateway keys for a team — create (the secret printed once), list with spend, show, update,
//! disable / enable, revoke, rotate; and `hash` / `generate` for keys kept in the configuration file.
//!
//! Owns the flags and the tables. Their checks (exit 1 with a hint, nothing written) and the changes are
//! `keys::manage`'s, shared with the admin API: each change is one `keys::ops` operation sent through
//! `store::Access`, so it works on the store file or through a running server, which applies it before answering.
//! Keys under `server.keys` in the configuration are listed read-only. A secret exists only here (and in the
//! admin API's answer): the store and the server get its hash and prefix.

use std::io::{IsTerminal, Read};

use serde_json::json;

use super::output;
use crate::error::user;
use crate::keys::manage::{Ctx, KeySettings, create_key, reports, rotate_key, set_key_state, update_key, with_secret};
use crate::keys::ops::KeyReport;
use crate::keys::{self, State, StoredKey};
use crate::live::limits::{Budget, Limits};
use crate::settings;
use crate::store::Access;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a store key; prints its secret once (only its hash is stored).
    Create(CreateArgs),
    /// Every key (configuration and store) with its limits, spend in the budget period, requests today, last use.
    List(JsonArgs),
    /// One key in detail.
    Show(NameArgs),
    /// Change a store key's settings (`none` removes a limit; `--allow ''` removes the allow expression).
    Update(UpdateArgs),
    /// Stop accepting a store key until `enable`.
    Disable(NameArgs),
    /// Accept a disabled store key again.
    Enable(NameArgs),
    /// Refuse a store key for good (its history stays); asks first unless --yes.
    Revoke(RevokeArgs),
    /// A new secret for a store key: same name, settings and history; the old secret stops working.
    Rotate(NameArgs),
    /// Print `sha256:<hex>` of a gateway key (read from standard input when not given).
    Hash {
        /// The key; prefer standard input so it stays out of shell history.
        key: Option<String>,
    },
    /// Make a new random gateway key and print it with its hash (for `server.keys` in the configuration).
    Generate(JsonArgs),
}

#[derive(Debug, clap::Args)]
pub struct JsonArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// The key's name.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The key's name.
    pub name: String,
    /// Do not ask.
    #[arg(long)]
    pub yes: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Settings shared by `create` and `update`, as text: `keys::manage` reads the numbers, so a bad one is exit 1
/// (and the admin API, which takes the same fields as JSON, answers alike).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Settings {
    /// Tag expression or comma-separated model list the key may reach (e.g. `tag:free`).
    #[arg(long, value_name = "EXPR")]
    pub allow: Option<String>,
    /// Requests per minute.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub rpm: Option<String>,
    /// Tokens (input + output, as recorded) per minute.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub tpm: Option<String>,
    /// Requests at the same time (streams count until they end).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_parallel: Option<String>,
    /// Spend allowed per period, USD (needs --per).
    #[arg(long, value_name = "USD", allow_hyphen_values = true)]
    pub budget: Option<String>,
    /// The budget's period, in server.timezone: day, week (from Monday), month or total.
    #[arg(long, value_name = "PERIOD")]
    pub per: Option<String>,
    /// When the key stops working: a date (valid through that day), an RFC 3339 time, or a duration (30d, 12h).
    #[arg(long, value_name = "WHEN", allow_hyphen_values = true)]
    pub expires: Option<String>,
    /// A note for people (who has it, what for).
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
}

impl From<&Settings> for KeySettings {
    fn from(s: &Settings) -> KeySettings {
        let Settings { allow, rpm, tpm, max_parallel, budget, per, expires, note } = s.clone();
        KeySettings { allow, rpm, tpm, max_parallel, budget, per, expires, note }
    }
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The key's name (letters, digits, `-`, `_`, `.`, `@`); records and reports use it.
    pub name: String,
    #[command(flatten)]
    pub settings: Settings,
    /// Print JSON (with the secret).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// The key's name.
    pub name: String,
    #[command(flatten)]
    pub settings: Settings,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(settings: &settings::Settings, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Hash { key } => hash(key),
        Command::Generate(a) => generate(a.json),
        Command::Create(a) => create(&ctx(settings)?, a),
        Command::List(a) => list(&ctx(settings)?, a.json),
        Command::Show(a) => show(&ctx(settings)?, a),
        Command::Update(a) => update(&ctx(settings)?, a),
        Command::Disable(a) => set_state(&ctx(settings)?, &a.name, State::Disabled, a.json),
        Command::Enable(a) => set_state(&ctx(settings)?, &a.name, State::Active, a.json),
        Command::Revoke(a) => revoke(&ctx(settings)?, a),
        Command::Rotate(a) => rotate(&ctx(settings)?, a),
    }
}

/// The configuration and the store `settings` name.
fn ctx(settings: &settings::Settings) -> anyhow::Result<Ctx> {
    let config = settings.yaml()?;
    let store_path = settings.store_path_for(config.as_ref());
    Ctx::new(config, store_path)
}

pub fn hash_line(key: &str) -> String {
    keys::hash_line(key)
}

fn hash(key: Option<String>) -> anyhow::Result<()> {
    let key = match key {
        Some(k) => k,
        None => {
            if std::io::stdin().is_terminal() {
                output::note("paste the key, then press Enter and Ctrl-D:");
            }
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(user("no key given").with_hint("echo -n \"$ROUTER_KEY\" | router keys hash").into());
    }
    output::line(&hash_line(key));
    Ok(())
}

fn generate(json: bool) -> anyhow::Result<()> {
    let (key, hash, _) = keys::generate();
    if json {
        output::json(&json!({"key": key, "hash": hash}))?;
    } else {
        output::line(&format!("key:  {key}"));
        output::line(&format!("hash: {hash}"));
        output::note("give the key to the client; put `hash:` (not the key) under server.keys in the config");
    }
    Ok(())
}

fn applied_note(access: &Access) -> &'static str {
    if access.is_remote() { "the running server applied it" } else { "takes effect when `router serve` starts" }
}

fn create(ctx: &Ctx, a: CreateArgs) -> anyhow::Result<()> {
    let (access, row, secret) = create_key(ctx, &a.name, &KeySettings::from(&a.settings))?;
    print_secret(&access, &row, &secret, "created", a.json)
}

/// A new secret, shown this once (JSON: the row plus `key`).
fn print_secret(access: &Access, row: &StoredKey, secret: &str, what: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(&with_secret(row, secret)?);
    }
    output::line(&format!("key `{}` {what} ({})", row.name, applied_note(access)));
    output::line(&format!("secret: {secret}"));
    output::note("hand the secret to its user now: it is not stored and cannot be shown again");
    Ok(())
}

fn list(ctx: &Ctx, json: bool) -> anyhow::Result<()> {
    let rows = reports(ctx, None)?;
    if json {
        return output::json(&rows);
    }
    if rows.is_empty() {
        output::note("no gateway keys: the server is open (loopback only); `router keys create NAME` makes one");
        return Ok(());
    }
    let mut t =
        output::table(&["name", "key", "allow", "limits", "spent / budget", "today", "last used", "expires", "state"]);
    for r in &rows {
        t.add_row(vec![
            r.name.clone(),
            r.prefix.as_ref().map(|p| format!("{p}…")).unwrap_or_else(|| "(config)".into()),
            r.allow.clone().unwrap_or_else(|| "-".into()),
            limits_text(&r.limits),
            spend_text(r),
            r.requests_today.to_string(),
            r.last_used_ms.map(|ms| when(ctx, ms)).unwrap_or_else(|| "never".into()),
            r.expires_ms.map(|ms| when(ctx, ms)).unwrap_or_else(|| "-".into()),
            r.state.clone(),
        ]);
    }
    output::print_table(&t);
    if rows.iter().any(|r| r.unknown_cost_requests > 0) {
        output::note("* requests at an unknown price count as $0 towards spend and budgets");
    }
    Ok(())
}

fn limits_text(l: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(n) = l.rpm {
        parts.push(format!("{n} rpm"));
    }
    if let Some(n) = l.tpm {
        parts.push(format!("{n} tpm"));
    }
    if let Some(n) = l.max_parallel {
        parts.push(format!("{n} parallel"));
    }
    if parts.is_empty() { "-".into() } else { parts.join(", ") }
}

fn spend_text(r: &KeyReport) -> String {
    let spent = match r.limits.budget {
        Some(Budget { usd, per }) => format!("${:.4} / ${usd:.2} per {}", r.spent_usd, per.as_str()),
        None => format!("${:.4} this month", r.spent_usd),
    };
    if r.unknown_cost_requests > 0 { format!("{spent} (+{} unpriced*)", r.unknown_cost_requests) } else { spent }
}

fn when(ctx: &Ctx, ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_zoned(ctx.tz().clone()).strftime("%Y-%m-%d %H:%M").to_string(),
        Err(_) => ms.to_string(),
    }
}

fn show(ctx: &Ctx, a: NameArgs) -> anyhow::Result<()> {
    let r = reports(ctx, Some(&a.name))?.into_iter().next().expect("the report names the key or fails");
    if a.json {
        return output::json(&r);
    }
    let line = |k: &str, v: String| output::line(&format!("{k:<16}{v}"));
    line("name", r.name.clone());
    line(
        "defined in",
        match r.origin {
            keys::Origin::Yaml => "configuration file (server.keys)".into(),
            keys::Origin::Store => "store".into(),
        },
    );
    if let Some(p) = &r.prefix {
        line("key", format!("{p}…"));
    }
    line("state", r.state.clone());
    line("allow", r.allow.clone().unwrap_or_else(|| "every model".into()));
    line("limits", limits_text(&r.limits));
    line("spent", spend_text(&r));
    line("period from", when(ctx, r.period_start_ms));
    line("requests today", r.requests_today.to_string());
    line("last used", r.last_used_ms.map(|ms| when(ctx, ms)).unwrap_or_else(|| "never".into()));
    line("expires", r.expires_ms.map(|ms| when(ctx, ms)).unwrap_or_else(|| "never".into()));
    if let Some(ms) = r.created_ms {
        line("created", when(ctx, ms));
    }
    if let Some(n) = &r.note {
        line("note", n.clone());
    }
    Ok(())
}

fn print_row(access: &Access, row: &StoredKey, what: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(row);
    }
    output::line(&format!("key `{}` {what} ({})", row.name, applied_note(access)));
    Ok(())
}

fn update(ctx: &Ctx, a: UpdateArgs) -> anyhow::Result<()> {
    let (access, row) = update_key(ctx, &a.name, &KeySettings::from(&a.settings))?;
    print_row(&access, &row, "updated", a.json)
}

fn set_state(ctx: &Ctx, name: &str, state: State, json: bool) -> anyhow::Result<()> {
    let (access, row) = set_key_state(ctx, name, state)?;
    let what = match state {
        State::Active => "enabled",
        State::Disabled => "disabled",
        State::Revoked => "revoked",
    };
    print_row(&access, &row, what, json)
}

fn revoke(ctx: &Ctx, a: RevokeArgs) -> anyhow::Result<()> {
    ctx.check_not_yaml(&a.name)?;
    if !a.yes {
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return Err(user(format!("not a terminal: cannot ask before revoking key `{}`", a.name))
                .with_hint("pass --yes to revoke it without asking")
                .into());
        }
        let ok = dialoguer::Confirm::new()
            .with_prompt(format!("Revoke key `{}` for good? Clients using it get 401 from now on", a.name))
            .default(false)
            .interact()?;
        if !ok {
            output::note("cancelled: nothing was changed");
            return Ok(());
        }
    }
    set_state(ctx, &a.name, State::Revoked, a.json)
}

fn rotate(ctx: &Ctx, a: NameArgs) -> anyhow::Result<()> {
    let (access, row, secret) = rotate_key(ctx, &a.name)?;
    print_secret(&access, &row, &secret, "rotated: the old secret no longer works", a.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_what_the_config_accepts() {
        let line = hash_line("sk-gw");
        let cfg = format!("server:\n  keys:\n    - name: a\n      hash: {line}\n");
        let c = crate::config::parse(std::path::Path::new("t.yaml"), &cfg, &|_| None).unwrap();
        assert_eq!(c.gateway_keys[0].hash, crate::config::hash_key("sk-gw"));
    }
}
