//! Importing channels from other gateways (today: One-API and New-API databases).
//!
//! Owns the import plan: what will be imported ([`ImportedChannel`], as store-ready `ChannelConfig`s), what will
//! not and why ([`Skipped`]), warnings, and the key-free report view of all that ([`PlanReport`]). Reading the
//! foreign database lives in `source`, the One-API mapping in `oneapi`. This module never prints and never writes
//! anywhere: committing a plan to the store is [`commit`]'s job, and the plan never serialises a plaintext key.

pub mod oneapi;
pub mod source;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::cli::Global;
use crate::config::{ChannelConfig, KeyConfig};

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
/// created; upstream keys are sealed with `crypto::seal_channel` first.
pub fn commit(global: &Global, plan: &ImportPlan) -> anyhow::Result<CommitReport> {
    // wired to the store by the integrator
    let _ = (global, plan);
    Err(crate::error::user("importing into the store is not yet available in this build")
        .with_hint("run with --dry-run to preview the import")
        .into())
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
        let c = &self.config;
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
            source_ids: self.source_ids.clone(),
            notes: self.notes.clone(),
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
    Ok(oneapi::plan(&table, opts, &src.display()))
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
