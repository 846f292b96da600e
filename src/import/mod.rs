//! Importing channels from other gateways (today: One-API and New-API databases).
//!
//! Owns the import plan: what will be imported ([`ImportedChannel`], as store-ready `ChannelConfig`s), what will
//! not and why ([`Skipped`]), warnings, and the key-free report view of all that ([`PlanReport`]). Reading the
//! foreign database lives in `source`, the One-API mapping in `oneapi`. This module never prints and never writes
//! anywhere: committing a plan to the store is [`commit`]'s job, and the plan never serialises a plaintext key.

pub mod oneapi;
pub mod source;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::{Serialize, Serializer};

use crate::cli::Global;
use crate::config::{ChannelConfig, Config, KeyConfig};
use crate::store::channels::ChannelsApply;
use crate::store::{Access, KvTable};

/// Which One-API lineage a database comes from. Their channel `type` numbers collide, so this decides the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Flavour {
    #[serde(rename = "one-api")]
    OneApi,
    #[serde(rename = "new-api")]
    NewApi,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::OneApi => "one-api",
            Flavour::NewApi => "new-api",
        }
    }

    pub fn parse(s: &str) -> Option<Flavour> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "one-api" | "oneapi" => Some(Flavour::OneApi),
            "new-api" | "newapi" => Some(Flavour::NewApi),
            _ => None,
        }
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything an import would do. Serialises as its [`PlanReport`] (no plaintext keys).
#[derive(Debug, Clone)]
pub struct ImportPlan {
    pub flavour: Flavour,
    /// Where the rows came from, password removed (for display only).
    pub source: String,
    pub channels: Vec<ImportedChannel>,
    pub skipped: Vec<Skipped>,
    pub warnings: Vec<String>,
}

/// One channel to create or update; `config.source` is the stable id re-imports match on.
#[derive(Debug, Clone)]
pub struct ImportedChannel {
    pub config: ChannelConfig,
    /// The foreign row ids merged into this channel (one-api stores one row per key).
    pub source_ids: Vec<i64>,
    /// What was adapted or left out for this channel.
    pub notes: Vec<String>,
}

/// A foreign row that will not be imported.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: i64,
    /// The type's name in the detected flavour.
    pub type_name: String,
    pub reason: String,
}

/// What [`commit`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CommitReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

/// Writes `plan` to the store in one transaction: channels whose `source` already exists are updated, the others
/// created; upstream keys are sealed with `crypto::seal_channel` first. An updated channel keeps the
/// enabled / disabled state set locally (`router channels enable|disable`) unless `reset_state`. Works with the
/// store file directly or through a running server's control socket (which then routes on the new channels at
/// once).
pub fn commit(global: &Global, plan: &ImportPlan, reset_state: bool) -> anyhow::Result<CommitReport> {
    let store_path = crate::store::path_for_cli(global)?;
    let yaml = crate::catalog::load::yaml_config(global.config.as_deref())?;
    let access = Access::open(&store_path)?;
    commit_to(&access, &store_path, yaml.as_ref(), plan, reset_state)
}

/// The `source` an import before database identities wrote for `source`: `oneapi:FLAVOUR:ID` for
/// `oneapi:FLAVOUR:DATABASE#ID`. Stored rows with it are matched (and upgraded) by the next import.
fn legacy_source(source: &str) -> Option<String> {
    let rest = source.strip_prefix("oneapi:")?;
    let (flavour, tail) = rest.split_once(':')?;
    let (_, id) = tail.rsplit_once('#')?;
    Some(format!("oneapi:{flavour}:{id}"))
}

/// [`commit`] on an open store; `yaml` is the configuration whose channel names must not be taken.
pub fn commit_to(
    access: &Access,
    store_path: &Path,
    yaml: Option<&Config>,
    plan: &ImportPlan,
    reset_state: bool,
) -> anyhow::Result<CommitReport> {
    let rows: Vec<ChannelConfig> = access.list_json(KvTable::Channels)?.into_iter().map(|(_, c)| c).collect();
    let key = crate::catalog::load::sealing_key(store_path, &rows)?;
    let by_name: HashMap<&str, &ChannelConfig> = rows.iter().map(|c| (c.name.as_str(), c)).collect();
    let by_source: HashMap<&str, &ChannelConfig> =
        rows.iter().filter_map(|c| Some((c.source.as_deref()?, c))).collect();
    // The stored channel an imported source updates: the same source, else the same row id written before
    // sources named their database.
    let stored = |source: Option<&str>| -> Option<&ChannelConfig> {
        let s = source?;
        by_source.get(s).or_else(|| legacy_source(s).and_then(|l| by_source.get(l.as_str()))).copied()
    };
    // Where each imported source goes: a stored row of that source under another name is renamed away.
    let new_name: HashMap<&str, &str> =
        plan.channels.iter().filter_map(|ic| Some((ic.config.source.as_deref()?, ic.config.name.as_str()))).collect();
    let yaml_names: HashSet<&str> =
        yaml.map(|y| y.raw.channels.iter().map(|c| c.name.as_str()).collect()).unwrap_or_default();
    let yaml_file = yaml
        .and_then(|y| y.path.as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the configuration".into());

    let mut clashes = Vec::new();
    for ic in &plan.channels {
        let c = &ic.config;
        if yaml_names.contains(c.name.as_str()) {
            clashes.push(format!("`{}` (defined in {yaml_file})", c.name));
            continue;
        }
        if let Some(occupant) = by_name.get(c.name.as_str()) {
            let same_source = stored(c.source.as_deref()).is_some_and(|s| s.name == occupant.name);
            let moving_away =
                occupant.source.as_deref().and_then(|s| new_name.get(s)).is_some_and(|n| *n != occupant.name.as_str());
            if !same_source && !moving_away {
                let from = occupant.source.as_deref().map(|s| format!("imported from {s}")).unwrap_or("added".into());
                clashes.push(format!("`{}` (a store channel {from})", c.name));
            }
        }
    }
    if !clashes.is_empty() {
        let n = clashes.len();
        let shown: Vec<String> = clashes.into_iter().take(5).collect();
        let more = if n > shown.len() { format!(" and {} more", n - shown.len()) } else { String::new() };
        return Err(crate::error::user(format!(
            "cannot import: {n} channel name{} already taken: {}{more}",
            if n == 1 { " is" } else { "s are" },
            shown.join(", ")
        ))
        .with_hint(
            "import under other names with --prefix (e.g. --prefix oneapi-), or rename or remove the existing channels",
        )
        .into());
    }

    let mut op = ChannelsApply::default();
    let mut report = CommitReport::default();
    for ic in &plan.channels {
        let c = &ic.config;
        match stored(c.source.as_deref()) {
            Some(old) => {
                let mut c = c.clone();
                if !reset_state {
                    c.enabled = old.enabled;
                    c.disabled_reason = old.disabled_reason.clone();
                }
                let c = &c;
                let opened = key.open_channel(old).map_err(|e| {
                    let u = crate::error::user(format!("store channel `{}`: {e}", old.name));
                    match e.hint() {
                        Some(h) => u.with_hint(h),
                        None => u,
                    }
                })?;
                if &opened == c {
                    report.unchanged.push(c.name.clone());
                    continue;
                }
                if old.name != c.name {
                    op.removes.push(old.name.clone());
                }
                op.upserts.push(key.seal_channel(c));
                report.updated.push(c.name.clone());
            }
            None => {
                op.upserts.push(key.seal_channel(c));
                op.create.push(c.name.clone());
                report.created.push(c.name.clone());
            }
        }
    }
    if !op.is_empty() {
        access.run(op)?;
    }
    Ok(report)
}

/// The report view of a plan: keys appear only as their token_key and fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub flavour: Flavour,
    pub source: String,
    pub channels: Vec<ChannelReport>,
    pub skipped: Vec<Skipped>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChannelReport {
    pub name: String,
    pub protocol: String,
    /// The first endpoint's base URL (channels from one row have exactly one endpoint).
    pub base_url: Option<String>,
    pub endpoints: Vec<EndpointReport>,
    pub priority: i64,
    pub weight: u32,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub api_version: Option<String>,
    pub models: Vec<String>,
    pub aliases: BTreeMap<String, String>,
    pub tags: Vec<String>,
    /// Header names only: values may be credentials.
    pub headers: Vec<String>,
    pub source: Option<String>,
    pub source_ids: Vec<i64>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    pub name: String,
    pub base_url: String,
    pub priority: i64,
    pub tokens: Vec<TokenReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenReport {
    /// The configured name, else the fingerprint.
    pub token_key: String,
    pub fingerprint: String,
    pub enabled: bool,
}

impl ChannelReport {
    /// All tokens of all endpoints.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenReport> {
        self.endpoints.iter().flat_map(|e| e.tokens.iter())
    }
}

fn token_report(k: &KeyConfig) -> TokenReport {
    let fingerprint = crate::usage::fingerprint(k.secret().expose());
    TokenReport {
        token_key: k.name().map(str::to_string).unwrap_or_else(|| fingerprint.clone()),
        fingerprint,
        enabled: k.enabled(),
    }
}

impl ImportedChannel {
    pub fn report(&self) -> ChannelReport {
        let mut r = ChannelReport::of(&self.config);
        r.source_ids = self.source_ids.clone();
        r.notes = self.notes.clone();
        r
    }
}

impl ChannelReport {
    /// The key-free view of any channel (keys appear as token_key and fingerprint only).
    pub fn of(c: &ChannelConfig) -> ChannelReport {
        let mut endpoints: Vec<EndpointReport> = c
            .endpoints
            .iter()
            .map(|e| EndpointReport {
                name: e.name.clone(),
                base_url: e.base_url.clone(),
                priority: e.priority,
                tokens: e.keys.iter().map(token_report).collect(),
            })
            .collect();
        if c.endpoints.is_empty() {
            let url = c.base_url.as_deref().or(c.protocol.default_base_url()).unwrap_or_default();
            endpoints.push(EndpointReport {
                name: "default".into(),
                base_url: url.to_string(),
                priority: 0,
                tokens: c.keys.iter().map(token_report).collect(),
            });
        }
        ChannelReport {
            name: c.name.clone(),
            protocol: c.protocol.as_str().into(),
            base_url: endpoints.first().map(|e| e.base_url.clone()),
            endpoints,
            priority: c.priority,
            weight: c.weight,
            enabled: c.enabled,
            disabled_reason: c.disabled_reason.clone(),
            api_version: c.api_version.clone(),
            models: c.models.clone(),
            aliases: c.aliases.clone(),
            tags: c.tags.clone(),
            headers: c.headers.keys().cloned().collect(),
            source: c.source.clone(),
            source_ids: Vec::new(),
            notes: Vec::new(),
        }
    }
}

impl ImportPlan {
    pub fn report(&self) -> PlanReport {
        PlanReport {
            flavour: self.flavour,
            source: self.source.clone(),
            channels: self.channels.iter().map(ImportedChannel::report).collect(),
            skipped: self.skipped.clone(),
            warnings: self.warnings.clone(),
        }
    }
}

impl Serialize for ImportPlan {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.report().serialize(s)
    }
}

/// Options of `router import oneapi`.
#[derive(Debug, Clone, Default)]
pub struct OneApiOptions {
    /// Overrides flavour detection.
    pub flavour: Option<Flavour>,
    /// Prepended to every channel name.
    pub prefix: Option<String>,
}

/// Reads a One-API / New-API database (SQLite path, `mysql://`, `postgres://`) and maps it to a plan.
pub fn plan_oneapi(source: &str, opts: &OneApiOptions) -> Result<ImportPlan, source::SourceError> {
    let src = source::Source::parse(source)?;
    let table = src.read_channels()?;
    Ok(oneapi::plan(&table, opts, &src.display(), &src.identity()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChannelProtocol, Secret};

    #[test]
    fn plan_json_never_contains_a_plaintext_key() {
        let mut c = ChannelConfig::new("a", ChannelProtocol::Openai);
        c.keys = vec![
            KeyConfig::Named { name: Some("row1".into()), key: Secret::new("sk-plaintext-one"), enabled: true },
            KeyConfig::Bare(Secret::new("sk-plaintext-two")),
        ];
        c.headers.insert("X-Secret".into(), "hdr-plaintext".into());
        let plan = ImportPlan {
            flavour: Flavour::OneApi,
            source: "x.db".into(),
            channels: vec![ImportedChannel { config: c, source_ids: vec![1], notes: vec![] }],
            skipped: vec![],
            warnings: vec![],
        };
        let json = serde_json::to_string(&plan).unwrap();
        assert!(!json.contains("plaintext"), "{json}");
        assert!(json.contains("row1"));
        assert!(json.contains(&crate::usage::fingerprint("sk-plaintext-two")));
    }
}
