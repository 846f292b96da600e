//! The catalogue's inputs besides the YAML: channels kept in the store (keys sealed at rest) and discovered
//! models, read through `store::Access` so the server and the CLI (directly or over the control socket) build
//! the same snapshot.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use super::{Discovered, DiscoveredModel, Snapshot};
use crate::config::{ChannelConfig, Config};
use crate::crypto::{self, MasterKey};
use crate::error::user;
use crate::store::{Access, KvTable};

/// Store channels with their keys opened. A sealed key without the master key is an error, never a silent loss.
pub fn store_channels(access: &Access, store_path: &Path) -> anyhow::Result<Vec<ChannelConfig>> {
    let mut channels: Vec<ChannelConfig> = access.list_json(KvTable::Channels)?.into_iter().map(|(_, c)| c).collect();
    if channels.iter().any(crypto::channel_is_sealed) {
        let key = MasterKey::load(store_path).map_err(|e| key_error(e, store_path))?;
        for c in &mut channels {
            *c = key.open_channel(c).map_err(|e| user(format!("channel `{}`: {e}", c.name)))?;
        }
    }
    channels.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(channels)
}

/// The master key to seal new keys with. When the store already holds sealed keys (`rows` as stored), the key
/// must exist: creating a fresh one would make those rows unreadable. Otherwise it is created on first use.
pub fn sealing_key(store_path: &Path, rows: &[ChannelConfig]) -> anyhow::Result<MasterKey> {
    let key = if rows.iter().any(crypto::channel_is_sealed) {
        MasterKey::load(store_path)
    } else {
        MasterKey::load_or_create(store_path)
    };
    key.map_err(|e| key_error(e, store_path).into())
}

/// A master-key problem as a user error whose hint names the key file.
fn key_error(e: crypto::CryptoError, store_path: &Path) -> crate::error::UserError {
    let file = crypto::key_path(store_path);
    let hint = match &e {
        crypto::CryptoError::MissingKey(_) => format!(
            "restore {} from a backup (or set {} to its content); without it the stored upstream keys cannot be used",
            file.display(),
            crypto::ENV
        ),
        other => other.hint().unwrap_or("restore the key file or set ROUTER_MASTER_KEY").to_string(),
    };
    user(e.to_string()).with_hint(hint)
}

/// A channel as `router channels list` and `GET /admin/v1/channels` show it: where it is defined, and its
/// key-free report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelEntry {
    /// The configuration file, or `store`.
    pub origin: String,
    /// YAML channels are changed by editing their file.
    pub read_only: bool,
    #[serde(flatten)]
    pub channel: crate::import::ChannelReport,
}

/// Every channel, YAML first (`yaml` with the file's name), then store channels with their keys opened (a
/// missing master key is an error). `access` is `None` when there is no store file yet.
pub fn channel_entries(
    yaml: &[ChannelConfig],
    yaml_file: &str,
    access: Option<&Access>,
    store_path: &Path,
) -> anyhow::Result<Vec<ChannelEntry>> {
    let report = crate::import::ChannelReport::of;
    let mut out: Vec<ChannelEntry> = yaml
        .iter()
        .map(|c| ChannelEntry { origin: yaml_file.to_string(), read_only: true, channel: report(c) })
        .collect();
    if let Some(access) = access {
        for c in store_channels(access, store_path)? {
            out.push(ChannelEntry { origin: "store".into(), read_only: false, channel: report(&c) });
        }
    }
    Ok(out)
}

/// What [`set_channel_enabled`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toggled {
    Changed,
    /// It already was in that state (with that reason).
    Already,
    /// No store channel of that name; the names there are.
    Unknown(Vec<String>),
}

/// Enables or disables the store channel `name` (a reason only when disabling; an earlier reason is kept when
/// none is given), through one `ChannelsApply`. Keys an older store kept in plaintext are sealed on the way.
pub fn set_channel_enabled(
    access: &Access,
    store_path: &Path,
    name: &str,
    enabled: bool,
    reason: Option<String>,
) -> anyhow::Result<Toggled> {
    let all: Vec<ChannelConfig> = access.list_json(KvTable::Channels)?.into_iter().map(|(_, c)| c).collect();
    let Some(mut row) = all.iter().find(|c| c.name == name).cloned() else {
        return Ok(Toggled::Unknown(all.into_iter().map(|c| c.name).collect()));
    };
    let reason = if enabled { None } else { reason.or_else(|| row.disabled_reason.clone()) };
    if row.enabled == enabled && row.disabled_reason == reason {
        return Ok(Toggled::Already);
    }
    row.enabled = enabled;
    row.disabled_reason = reason;
    let row = if crypto::channel_fully_sealed(&row) { row } else { sealing_key(store_path, &all)?.seal_channel(&row) };
    access.run(crate::store::channels::ChannelsApply { upserts: vec![row], ..Default::default() })?;
    Ok(Toggled::Changed)
}

/// Discovery results: `models` table, key = channel name, value = token fingerprint -> models.
pub fn discovered(access: &Access) -> anyhow::Result<Discovered> {
    Ok(access
        .list_json::<std::collections::HashMap<String, Vec<DiscoveredModel>>>(KvTable::Models)?
        .into_iter()
        .collect())
}

/// The configuration file a subcommand sees (`--config`, `ROUTER_CONFIG`, ./router.yaml, ~/.config/...), for
/// knowing the YAML channels; `None` when there is none. A file named by `--config` must load.
pub fn yaml_config(explicit: Option<&Path>) -> anyhow::Result<Option<Config>> {
    match crate::config::find(explicit) {
        Some(p) if explicit.is_some() || p.is_file() => Ok(Some(crate::config::load(&p)?)),
        _ => Ok(None),
    }
}

/// A store channel whose name is also a YAML channel: an error naming both, never a silent override.
pub fn check_collisions(config: &Config, store: &[ChannelConfig]) -> anyhow::Result<()> {
    let yaml: HashSet<&str> = config.raw.channels.iter().map(|c| c.name.as_str()).collect();
    if let Some(c) = store.iter().find(|c| yaml.contains(c.name.as_str())) {
        let file = config.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the configuration".into());
        return Err(user(format!("channel `{}` is defined both in {file} and in the store", c.name))
            .with_hint(format!("rename or remove one of them (`router channels remove {}` for the store one)", c.name))
            .into());
    }
    Ok(())
}

/// The snapshot `serve` routes on: YAML channels + store channels + discovered models.
pub fn snapshot(config: Arc<Config>, access: &Access, store_path: &Path, auto: bool) -> anyhow::Result<Snapshot> {
    let store = store_channels(access, store_path)?;
    check_collisions(&config, &store)?;
    let discovered = discovered(access)?;
    Ok(Snapshot::build(config, &store, &discovered, auto))
}
