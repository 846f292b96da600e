//! `router channels list|show|enable|disable|remove|add`: manage the channels kept in the store.
//!
//! Owns the flags, the interactive prompts and the tables. Every change is one `store::channels::ChannelsApply`
//! sent through `store::Access`, so it works on the store file or through a running server (which applies it at
//! once). YAML channels are listed and shown read-only with their file; changing one is refused. Keys are shown
//! only as token names and fingerprints, and are sealed (`crypto`) before they leave this process.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;

use super::output;
use crate::channels::{ChannelEntry, Toggled, channel_entries, set_channel_enabled};
use crate::config::{self, ChannelConfig, ChannelProtocol, Config, KeyConfig, Secret};
use crate::error::user;
use crate::import::ChannelReport;
use crate::settings::{Settings, sealing_key};
use crate::store::channels::ChannelsApply;
use crate::store::{Access, KvTable};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List every channel: from the configuration file (read-only) and from the store.
    List(ListArgs),
    /// One channel in detail (keys as token names and fingerprints only).
    Show(ShowArgs),
    /// Enable a store channel.
    Enable(NameArgs),
    /// Disable a store channel (requests no longer go to it).
    Disable(DisableArgs),
    /// Remove a store channel.
    Remove(RemoveArgs),
    /// Add a store channel (asks for each field when run on a terminal without flags).
    Add(AddArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print the channels as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The channel's name.
    pub name: String,
    /// Print the channel as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// The channel's name.
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct DisableArgs {
    /// The channel's name.
    pub name: String,
    /// Why (shown by `list` and `show`).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// The channel's name.
    pub name: String,
    /// Remove without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Default, clap::Args)]
pub struct AddArgs {
    /// Name (unique across the configuration file and the store; no `/`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Wire protocol of the upstream.
    #[arg(long, value_name = "PROTOCOL", value_parser = ["openai", "anthropic", "azure", "gemini"])]
    pub protocol: Option<String>,
    /// Base URL (default: the protocol's official API; required for azure).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// An upstream key (repeatable). Prefer --key-env: command lines are visible to other local users.
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    /// Read an upstream key from this environment variable (repeatable).
    #[arg(long = "key-env", value_name = "VAR")]
    pub key_env: Vec<String>,
    /// A model id the channel serves (repeatable; a trailing `*` matches a prefix).
    #[arg(long = "model", value_name = "MODEL")]
    pub models: Vec<String>,
    /// Lower is tried first.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub priority: Option<i64>,
    /// Share of traffic inside a priority tier.
    #[arg(long, value_name = "N")]
    pub weight: Option<u32>,
    /// A tag for routing by tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Azure `api-version`.
    #[arg(long, value_name = "VERSION")]
    pub api_version: Option<String>,
}

impl AddArgs {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.protocol.is_none()
            && self.base_url.is_none()
            && self.keys.is_empty()
            && self.key_env.is_empty()
            && self.models.is_empty()
            && self.priority.is_none()
            && self.weight.is_none()
            && self.tags.is_empty()
            && self.api_version.is_none()
    }
}

pub fn run(settings: &Settings, cmd: Command) -> anyhow::Result<()> {
    let ctx = Ctx::load(settings)?;
    match cmd {
        Command::List(a) => list(&ctx, a),
        Command::Show(a) => show(&ctx, a),
        Command::Enable(a) => set_enabled(&ctx, &a.name, true, None),
        Command::Disable(a) => set_enabled(&ctx, &a.name, false, a.reason),
        Command::Remove(a) => remove(&ctx, a),
        Command::Add(a) => add(&ctx, a),
    }
}

/// The configuration file (for its channels) and the store path.
struct Ctx {
    yaml: Option<Config>,
    store_path: PathBuf,
}

impl Ctx {
    fn load(settings: &Settings) -> anyhow::Result<Ctx> {
        let yaml = settings.yaml()?;
        let store_path = settings.store_path_for(yaml.as_ref());
        Ok(Ctx { yaml, store_path })
    }

    fn yaml_file(&self) -> String {
        self.yaml
            .as_ref()
            .and_then(|c| c.path.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the configuration file".into())
    }

    fn yaml_channel(&self, name: &str) -> Option<&ChannelConfig> {
        self.yaml.as_ref()?.raw.channels.iter().find(|c| c.name == name)
    }

    /// Refuses to change a YAML channel.
    fn check_not_yaml(&self, name: &str) -> anyhow::Result<()> {
        if self.yaml_channel(name).is_some() {
            let file = self.yaml_file();
            return Err(user(format!("channel `{name}` is defined in {file}, edit it there"))
                .with_hint(format!("change or remove it in {file}; a running server reloads the file by itself"))
                .into());
        }
        Ok(())
    }

    /// The store for reading: `None` when there is no store file yet (nothing to read).
    fn read_access(&self) -> anyhow::Result<Option<Access>> {
        if !self.store_path.exists() {
            return Ok(None);
        }
        Access::open(&self.store_path).map(Some)
    }

    /// Every channel, YAML first, store channels with their keys opened (a missing master key is an error).
    fn entries(&self) -> anyhow::Result<Vec<ChannelEntry>> {
        let yaml = self.yaml.as_ref().map(|c| c.raw.channels.as_slice()).unwrap_or_default();
        channel_entries(yaml, &self.yaml_file(), self.read_access()?.as_ref(), &self.store_path)
    }

    fn unknown(&self, name: &str, known: impl Iterator<Item = String>) -> anyhow::Error {
        let known: BTreeSet<String> =
            known.chain(self.yaml.iter().flat_map(|c| c.raw.channels.iter().map(|c| c.name.clone()))).collect();
        let close = crate::tags::closest(name, known.iter().map(String::as_str), 3);
        let hint = if close.is_empty() {
            "`router channels list` shows every channel".to_string()
        } else {
            format!("did you mean {}? `router channels list` shows every channel", quoted(&close))
        };
        user(format!("no channel named `{name}`")).with_hint(hint).into()
    }
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

fn status(c: &ChannelReport) -> String {
    match (&c.enabled, &c.disabled_reason) {
        (true, _) => "enabled".into(),
        (false, Some(r)) => format!("disabled: {r}"),
        (false, None) => "disabled".into(),
    }
}

fn list(ctx: &Ctx, args: ListArgs) -> anyhow::Result<()> {
    let entries = ctx.entries()?;
    if args.json {
        return output::json(&entries);
    }
    if entries.is_empty() {
        output::note(
            "no channels: add one with `router channels add`, import with `router import oneapi`, or write router.yaml",
        );
        return Ok(());
    }
    let mut t = output::table(&["Name", "Origin", "Protocol", "Base URL", "Tokens", "Models", "Prio", "Status"]);
    for e in &entries {
        let c = &e.channel;
        let origin = match (&c.source, e.read_only) {
            (_, true) => format!("{} (read-only)", e.origin),
            (Some(s), false) => s.clone(),
            (None, false) => "store".into(),
        };
        t.add_row(vec![
            c.name.clone(),
            origin,
            c.protocol.clone(),
            c.base_url.clone().unwrap_or_default(),
            c.tokens().count().to_string(),
            c.models.len().to_string(),
            c.priority.to_string(),
            status(c),
        ]);
    }
    output::print_table(&t);
    Ok(())
}

fn show(ctx: &Ctx, args: ShowArgs) -> anyhow::Result<()> {
    let entries = ctx.entries()?;
    let Some(e) = entries.iter().find(|e| e.channel.name == args.name) else {
        return Err(ctx.unknown(&args.name, entries.iter().filter(|e| !e.read_only).map(|e| e.channel.name.clone())));
    };
    if args.json {
        return output::json(e);
    }
    let c = &e.channel;
    let origin = if e.read_only {
        format!("{} (read-only: edit it there)", e.origin)
    } else {
        match &c.source {
            Some(s) => format!("store (imported from {s})"),
            None => "store".into(),
        }
    };
    let mut lines = vec![
        format!("name:      {}", c.name),
        format!("origin:    {origin}"),
        format!("protocol:  {}", c.protocol),
        format!("status:    {}", status(c)),
        format!("priority:  {}  weight: {}", c.priority, c.weight),
    ];
    if !c.tags.is_empty() {
        lines.push(format!("tags:      {}", c.tags.join(", ")));
    }
    if let Some(v) = &c.api_version {
        lines.push(format!("api-version: {v}"));
    }
    if !c.models.is_empty() {
        lines.push(format!("models:    {}", c.models.join(", ")));
    }
    for (from, to) in &c.aliases {
        lines.push(format!("alias:     {from} -> {to}"));
    }
    if !c.headers.is_empty() {
        lines.push(format!("headers:   {}", c.headers.join(", ")));
    }
    lines.push("endpoints:".into());
    for ep in &c.endpoints {
        lines.push(format!("  {}  {}  (priority {})", ep.name, ep.base_url, ep.priority));
        for t in &ep.tokens {
            let name = if t.token_key == t.fingerprint { String::new() } else { format!("{}  ", t.token_key) };
            lines.push(format!("    {name}{}{}", t.fingerprint, if t.enabled { "" } else { "  (disabled)" }));
        }
    }
    for l in lines {
        output::line(&l);
    }
    Ok(())
}

/// The stored rows as they are (keys sealed).
fn rows(access: &Access) -> anyhow::Result<Vec<ChannelConfig>> {
    Ok(access.list_json(KvTable::Channels)?.into_iter().map(|(_, c)| c).collect())
}

fn applied_note(access: &Access) -> &'static str {
    if access.is_remote() { "the running server applied it" } else { "takes effect when `router serve` starts" }
}

/// The stored row named `name` (keys sealed), or an error naming close matches.
fn find_row(ctx: &Ctx, access: &Access, name: &str) -> anyhow::Result<(ChannelConfig, Vec<ChannelConfig>)> {
    let all = rows(access)?;
    match all.iter().find(|c| c.name == name) {
        Some(c) => Ok((c.clone(), all)),
        None => Err(ctx.unknown(name, all.iter().map(|c| c.name.clone()))),
    }
}

fn set_enabled(ctx: &Ctx, name: &str, enabled: bool, reason: Option<String>) -> anyhow::Result<()> {
    ctx.check_not_yaml(name)?;
    let Some(access) = ctx.read_access()? else { return Err(ctx.unknown(name, std::iter::empty())) };
    let state = if enabled { "enabled" } else { "disabled" };
    match set_channel_enabled(&access, &ctx.store_path, name, enabled, reason)? {
        Toggled::Unknown(known) => Err(ctx.unknown(name, known.into_iter())),
        Toggled::Already => {
            output::note(&format!("channel `{name}` is already {state}"));
            Ok(())
        }
        Toggled::Changed => {
            output::note(&format!("channel `{name}` {state}; {}", applied_note(&access)));
            Ok(())
        }
    }
}

fn remove(ctx: &Ctx, args: RemoveArgs) -> anyhow::Result<()> {
    let name = &args.name;
    ctx.check_not_yaml(name)?;
    let Some(access) = ctx.read_access()? else { return Err(ctx.unknown(name, std::iter::empty())) };
    find_row(ctx, &access, name)?;
    if !args.yes {
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return Err(user(format!("not a terminal: cannot ask before removing channel `{name}`"))
                .with_hint("pass --yes to remove it without asking")
                .into());
        }
        let ok = dialoguer::Confirm::new()
            .with_prompt(format!("Remove channel `{name}` and its keys from the store?"))
            .default(false)
            .interact()?;
        if !ok {
            output::note("cancelled: nothing was changed");
            return Ok(());
        }
    }
    access.run(ChannelsApply { removes: vec![name.clone()], ..Default::default() })?;
    // Its discovered models go too, so a later channel of the same name starts clean.
    if let Err(e) = access.delete(KvTable::Models, name) {
        output::note(&format!("warning: the discovered models of `{name}` were not removed: {e:#}"));
    }
    output::note(&format!("channel `{name}` removed; {}", applied_note(&access)));
    Ok(())
}

fn parse_protocol(s: &str) -> anyhow::Result<ChannelProtocol> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase())).map_err(|_| {
        user(format!("unknown protocol `{s}`")).with_hint("use one of: openai, anthropic, azure, gemini").into()
    })
}

fn add(ctx: &Ctx, mut args: AddArgs) -> anyhow::Result<()> {
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if args.is_empty() && interactive {
        args = ask()?;
    }
    let Some(name) = args.name.clone() else {
        return Err(user("--name is required")
            .with_hint("pass --name, --protocol, --base-url and --key-env (or --key); on a terminal, run `router channels add` without flags to be asked")
            .into());
    };
    let mut c = ChannelConfig::new(name.clone(), parse_protocol(args.protocol.as_deref().unwrap_or("openai"))?);
    c.base_url = args.base_url.clone().filter(|u| !u.trim().is_empty());
    for k in &args.keys {
        c.keys.push(KeyConfig::Bare(Secret::new(k.trim())));
    }
    for var in &args.key_env {
        let v = std::env::var(var).ok().filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            user(format!("--key-env {var}: the environment variable is not set or empty"))
                .with_hint(format!("export {var}=... first"))
        })?;
        c.keys.push(KeyConfig::Bare(Secret::new(v.trim())));
    }
    c.models = args.models.clone();
    c.priority = args.priority.unwrap_or(0);
    c.weight = args.weight.unwrap_or(1);
    c.tags = args.tags.clone();
    c.api_version = args.api_version.clone();

    ctx.check_not_yaml(&name).map_err(|_| {
        user(format!("channel `{name}` is already defined in {}", ctx.yaml_file())).with_hint("pick another --name")
    })?;
    config::validate_channel(&c, &mut Default::default()).map_err(|(field, msg, hint)| {
        let at = if field.is_empty() { String::new() } else { format!("{field}: ") };
        user(format!("channel `{name}`: {at}{msg}")).with_hint(hint)
    })?;
    let access = Access::open(&ctx.store_path)?;
    let all = rows(&access)?;
    if all.iter().any(|r| r.name == name) {
        return Err(user(format!("a store channel named `{name}` already exists"))
            .with_hint(format!("pick another --name, or `router channels remove {name}` first"))
            .into());
    }
    let key = sealing_key(&ctx.store_path, &all)?;
    let report = ChannelReport::of(&c);
    access
        .run(ChannelsApply { upserts: vec![key.seal_channel(&c)], create: vec![name.clone()], ..Default::default() })
        .context("adding the channel")?;
    let tokens: Vec<String> = report.tokens().map(|t| t.token_key.clone()).collect();
    output::note(&format!(
        "channel `{name}` added ({}, {}, tokens: {}); {}",
        report.protocol,
        report.base_url.as_deref().unwrap_or("-"),
        if tokens.is_empty() { "none".to_string() } else { tokens.join(", ") },
        applied_note(&access)
    ));
    Ok(())
}

/// The interactive form of `add`.
fn ask() -> anyhow::Result<AddArgs> {
    use dialoguer::{Input, Select};
    let name: String = Input::new()
        .with_prompt("Name")
        .validate_with(|s: &String| {
            if s.trim().is_empty() || s.contains('/') { Err("a non-empty name without `/`") } else { Ok(()) }
        })
        .interact_text()?;
    let protocols = ["openai", "anthropic", "azure", "gemini"];
    let p = Select::new().with_prompt("Protocol").items(&protocols).default(0).interact()?;
    let protocol = parse_protocol(protocols[p])?;
    let default_url = protocol.default_base_url().unwrap_or("").to_string();
    let base_url: String = Input::new()
        .with_prompt("Base URL")
        .with_initial_text(default_url)
        .allow_empty(protocol != ChannelProtocol::Azure)
        .interact_text()?;
    let term = dialoguer::console::Term::stderr();
    term.write_str("Upstream key (not shown; empty for none): ")?;
    let key = term.read_secure_line()?;
    let models: String =
        Input::new().with_prompt("Models (comma-separated, empty: discover them)").allow_empty(true).interact_text()?;
    let priority: i64 = Input::new().with_prompt("Priority (lower is tried first)").default(0).interact_text()?;
    let api_version = if protocol == ChannelProtocol::Azure {
        Some(Input::<String>::new().with_prompt("api-version").default("2024-06-01".into()).interact_text()?)
    } else {
        None
    };
    Ok(AddArgs {
        name: Some(name.trim().to_string()),
        protocol: Some(protocol.as_str().into()),
        base_url: Some(base_url.trim().to_string()).filter(|u| !u.is_empty()),
        keys: Some(key.trim().to_string()).filter(|k| !k.is_empty()).into_iter().collect(),
        models: models.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect(),
        priority: Some(priority),
        api_version,
        ..Default::default()
    })
}
