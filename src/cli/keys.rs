//! `router keys`: gateway keys for a team — create (the secret printed once), list with spend, show, update,
//! disable / enable, revoke, rotate; and `hash` / `generate` for keys kept in the configuration file.
//!
//! Owns the flags, their checks (exit 1 with a hint, nothing written) and the tables. Every change is one
//! `keys::ops` operation sent through `store::Access`, so it works on the store file or through a running server,
//! which applies it before answering. Keys under `server.keys` in the configuration are listed read-only.
//! A secret exists only here: the store and the server get its hash and prefix.

use std::io::{IsTerminal, Read};

use jiff::tz::TimeZone;
use serde_json::json;

use super::{Global, output};
use crate::catalog::load::yaml_config;
use crate::config::Config;
use crate::error::user;
use crate::keys::ops::{
    Change, KeyPatch, KeyReport, KeysCreate, KeysReport, KeysRotate, KeysSetState, KeysUpdate, YamlKey,
};
use crate::keys::{self, State, StoredKey};
use crate::live::limits::{Budget, Limits, Period};
use crate::store::{self, Access};

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

/// Settings shared by `create` and `update`. Numbers are read here (not by clap) so that a bad one is exit 1.
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

/// What every command needs: the store, the configuration's keys and the time zone.
struct Ctx {
    config: Option<Config>,
    tz: TimeZone,
    now_ms: i64,
    global: Global,
}

impl Ctx {
    fn new(global: &Global) -> anyhow::Result<Ctx> {
        let config = yaml_config(global.config.as_deref())?;
        let tz_name = config.as_ref().and_then(|c| c.raw.server.timezone.clone());
        let tz = keys::timezone(tz_name.as_deref()).map_err(|m| user(m).with_hint("fix server.timezone"))?;
        Ok(Ctx { config, tz, now_ms: crate::usage::now_ms(), global: global.clone() })
    }

    fn access(&self) -> anyhow::Result<Access> {
        Access::open(&store::path_for_cli(&self.global)?)
    }

    fn yaml_keys(&self) -> Vec<YamlKey> {
        let Some(c) = &self.config else { return Vec::new() };
        c.gateway_keys
            .iter()
            .map(|k| YamlKey {
                name: k.name.clone(),
                allow: k.allow.clone(),
                limits: k.limits,
                expires_ms: k.expires_ms,
            })
            .collect()
    }

    /// A key of the configuration file cannot be changed here.
    fn check_not_yaml(&self, name: &str) -> anyhow::Result<()> {
        let Some(c) = &self.config else { return Ok(()) };
        if c.gateway_keys.iter().any(|k| k.name == name) {
            let file = c.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the configuration".into());
            return Err(user(format!("key `{name}` is defined in {file} (server.keys)"))
                .with_hint("change it in that file, or pick another name for a store key")
                .into());
        }
        Ok(())
    }

    fn timezone_name(&self) -> Option<String> {
        self.config.as_ref().and_then(|c| c.raw.server.timezone.clone())
    }
}

pub fn run(global: &Global, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Hash { key } => hash(key),
        Command::Generate(a) => generate(a.json),
        Command::Create(a) => create(&Ctx::new(global)?, a),
        Command::List(a) => list(&Ctx::new(global)?, a.json),
        Command::Show(a) => show(&Ctx::new(global)?, a),
        Command::Update(a) => update(&Ctx::new(global)?, a),
        Command::Disable(a) => set_state(&Ctx::new(global)?, &a.name, State::Disabled, a.json),
        Command::Enable(a) => set_state(&Ctx::new(global)?, &a.name, State::Active, a.json),
        Command::Revoke(a) => revoke(&Ctx::new(global)?, a),
        Command::Rotate(a) => rotate(&Ctx::new(global)?, a),
    }
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

fn bad(flag: &str, value: &str, hint: &str) -> anyhow::Error {
    user(format!("--{flag} `{value}` is not valid")).with_hint(hint.to_string()).into()
}

fn is_none_word(s: &str) -> bool {
    matches!(s.trim().to_ascii_lowercase().as_str(), "none" | "off" | "unlimited")
}

/// A positive whole number, or (for update) `none`.
fn count<T: std::str::FromStr + PartialEq + From<u8>>(
    flag: &str,
    v: &Option<String>,
    clearable: bool,
) -> anyhow::Result<Option<Change<T>>> {
    let Some(s) = v else { return Ok(None) };
    if clearable && is_none_word(s) {
        return Ok(Some(Change::Clear));
    }
    match s.trim().replace('_', "").parse::<T>() {
        Ok(n) if n != T::from(0) => Ok(Some(Change::Set(n))),
        _ => Err(bad(
            flag,
            s,
            if clearable {
                "give a whole number of at least 1, or `none` to remove the limit"
            } else {
                "give a whole number of at least 1"
            },
        )),
    }
}

fn period(v: &Option<String>) -> anyhow::Result<Option<Period>> {
    let Some(s) = v else { return Ok(None) };
    match s.trim().to_ascii_lowercase().as_str() {
        "day" | "daily" => Ok(Some(Period::Day)),
        "week" | "weekly" => Ok(Some(Period::Week)),
        "month" | "monthly" => Ok(Some(Period::Month)),
        "total" => Ok(Some(Period::Total)),
        _ => Err(bad("per", s, "use day, week, month or total")),
    }
}

/// The settings as a patch of the key's current ones (for `create`, of none).
fn patch(ctx: &Ctx, s: &Settings, clearable: bool) -> anyhow::Result<KeyPatch> {
    let budget = match &s.budget {
        None => None,
        Some(b) if clearable && is_none_word(b) => Some(Change::Clear),
        Some(b) => match b.trim().trim_start_matches('$').parse::<f64>() {
            Ok(usd) if usd.is_finite() && usd > 0.0 => Some(Change::Set(usd)),
            _ => return Err(bad("budget", b, "give a positive amount of USD, e.g. 5 or 0.50")),
        },
    };
    let text = |v: &Option<String>| {
        v.as_ref().map(|t| if t.trim().is_empty() { Change::Clear } else { Change::Set(t.trim().to_string()) })
    };
    let expires_ms = match &s.expires {
        None => None,
        Some(e) => match keys::parse_expiry(e, ctx.now_ms, &ctx.tz, true) {
            Ok(Some(ms)) => Some(Change::Set(ms)),
            Ok(None) => Some(Change::Clear),
            Err(m) => return Err(user(format!("--expires: {m}")).with_hint("e.g. --expires 2026-12-31 or 30d").into()),
        },
    };
    if let Some(Change::Set(ms)) = expires_ms
        && ms <= ctx.now_ms
    {
        return Err(user(format!("--expires `{}` is in the past", s.expires.as_deref().unwrap_or("")))
            .with_hint("give a later date, or a duration such as 30d")
            .into());
    }
    if let Some(Change::Set(a)) = text(&s.allow)
        && crate::tags::TagExpr::parse(&a).is_none()
        && a.starts_with("tag:")
    {
        return Err(bad("allow", &a, "write tag:a,b,!c or a comma-separated list of models"));
    }
    Ok(KeyPatch {
        allow: text(&s.allow),
        rpm: count("rpm", &s.rpm, clearable)?,
        tpm: count("tpm", &s.tpm, clearable)?,
        max_parallel: count("max-parallel", &s.max_parallel, clearable)?,
        budget,
        per: period(&s.per)?,
        expires_ms,
        note: text(&s.note),
    })
}

fn applied_note(access: &Access) -> &'static str {
    if access.is_remote() { "the running server applied it" } else { "takes effect when `router serve` starts" }
}

fn create(ctx: &Ctx, a: CreateArgs) -> anyhow::Result<()> {
    keys::check_name(&a.name)
        .map_err(|m| user(m).with_hint("use letters, digits, `-`, `_`, `.` or `@` (at most 64)"))?;
    ctx.check_not_yaml(&a.name)?;
    let p = patch(ctx, &a.settings, false)?;
    let limits = p.limits(&Limits::default())?;
    let (secret, hash, prefix) = keys::generate();
    let row = StoredKey {
        name: a.name.clone(),
        hash,
        prefix,
        allow: a.settings.allow.clone().filter(|s| !s.trim().is_empty()),
        limits,
        expires_ms: match p.expires_ms {
            Some(Change::Set(ms)) => Some(ms),
            _ => None,
        },
        note: a.settings.note.clone().filter(|s| !s.trim().is_empty()),
        state: State::Active,
        created_ms: ctx.now_ms,
        updated_ms: ctx.now_ms,
    };
    let access = ctx.access()?;
    let row = access.run(KeysCreate { key: row })?;
    print_secret(&access, &row, &secret, "created", a.json)
}

/// A new secret, shown this once (JSON: the row plus `key`).
fn print_secret(access: &Access, row: &StoredKey, secret: &str, what: &str, json: bool) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(row)?;
        v["key"] = json!(secret);
        return output::json(&v);
    }
    output::line(&format!("key `{}` {what} ({})", row.name, applied_note(access)));
    output::line(&format!("secret: {secret}"));
    output::note("hand the secret to its user now: it is not stored and cannot be shown again");
    Ok(())
}

fn reports(ctx: &Ctx, name: Option<&str>) -> anyhow::Result<Vec<KeyReport>> {
    let q = KeysReport { name: name.map(str::to_string), yaml: ctx.yaml_keys(), timezone: ctx.timezone_name() };
    ctx.access()?.run(q)
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
        Ok(t) => t.to_zoned(ctx.tz.clone()).strftime("%Y-%m-%d %H:%M").to_string(),
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
    ctx.check_not_yaml(&a.name)?;
    let p = patch(ctx, &a.settings, true)?;
    if p.is_empty() {
        return Err(user("nothing to change")
            .with_hint("give at least one of --allow, --rpm, --tpm, --max-parallel, --budget, --per, --expires, --note")
            .into());
    }
    let access = ctx.access()?;
    let row = access.run(KeysUpdate { name: a.name, patch: p, now_ms: ctx.now_ms })?;
    print_row(&access, &row, "updated", a.json)
}

fn set_state(ctx: &Ctx, name: &str, state: State, json: bool) -> anyhow::Result<()> {
    ctx.check_not_yaml(name)?;
    let access = ctx.access()?;
    let row = access.run(KeysSetState { name: name.to_string(), state, now_ms: ctx.now_ms })?;
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
    ctx.check_not_yaml(&a.name)?;
    let (secret, hash, prefix) = keys::generate();
    let access = ctx.access()?;
    let row = access.run(KeysRotate { name: a.name, hash, prefix, now_ms: ctx.now_ms })?;
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

    #[test]
    fn bad_numbers_are_user_errors() {
        let ctx = Ctx { config: None, tz: TimeZone::UTC, now_ms: crate::usage::now_ms(), global: Global::default() };
        for s in [
            Settings { rpm: Some("0".into()), ..Default::default() },
            Settings { rpm: Some("-5".into()), ..Default::default() },
            Settings { tpm: Some("lots".into()), ..Default::default() },
            Settings { budget: Some("-1".into()), ..Default::default() },
            Settings { per: Some("fortnight".into()), ..Default::default() },
            Settings { expires: Some("soon".into()), ..Default::default() },
            Settings { expires: Some("2020-01-01".into()), ..Default::default() },
            Settings { rpm: Some("none".into()), ..Default::default() },
        ] {
            let e = patch(&ctx, &s, false).unwrap_err();
            assert!(e.downcast_ref::<crate::error::UserError>().is_some(), "{s:?}: {e:#}");
        }
        let p = patch(&ctx, &Settings { rpm: Some("none".into()), ..Default::default() }, true).unwrap();
        assert_eq!(p.rpm, Some(Change::Clear));
        let p =
            patch(&ctx, &Settings { budget: Some("$5".into()), per: Some("week".into()), ..Default::default() }, false)
                .unwrap();
        assert_eq!(p.limits(&Limits::default()).unwrap().budget, Some(Budget { usd: 5.0, per: Period::Week }));
    }
}
