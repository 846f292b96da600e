//! Channels as people manage them: every channel with its origin (YAML file or store) and key-free report, and
//! enabling or disabling a store channel. Shared by `router channels` and the admin API.
//!
//! Must not print, or read keys anywhere but through [`crate::settings`] (sealed at rest).

use std::path::Path;

use crate::config::ChannelConfig;
use crate::crypto;
use crate::settings::{sealing_key, store_channels};
use crate::store::{Access, KvTable};

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
