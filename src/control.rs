//! What the running server answers over the control socket beyond the store's own operations: the operations
//! that need its live state (routing snapshot, health), and applying store changes to the live catalogue.
//!
//! Owns [`Live`] (filled once the server is up) and [`rebuild`]: every change that affects routing (a config
//! reload, an import, a channel change, new discovery results) goes through it, so the server always routes
//! on YAML + store channels + discovered models. Must not run on the request path.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::catalog::{self, Snapshot};
use crate::config::Config;
use crate::proxy::AppState;
use crate::store::{Access, Registry, Store};

/// The server's live state, as control operations see it.
pub struct Live {
    pub state: Arc<AppState>,
    pub store: Store,
    pub store_path: PathBuf,
    /// Zero-config (channels detected from the environment).
    pub auto: bool,
}

/// Filled by `serve` once the proxy state exists; operations arriving before that answer "starting".
pub type LiveCell = Arc<OnceLock<Live>>;

impl Live {
    pub fn access(&self) -> Access {
        Access::Direct(self.store.clone())
    }

    /// A snapshot for `config` from the store as it is now.
    pub fn snapshot(&self, config: Arc<Config>) -> anyhow::Result<Snapshot> {
        catalog::load::snapshot(config, &self.access(), &self.store_path, self.auto)
    }
}

/// Rebuilds the routing snapshot with the current config and store, and swaps it in. On error the old one stays.
pub fn rebuild(live: &Live) -> anyhow::Result<()> {
    let config = live.state.snapshot.load().config.clone();
    let snap = live.snapshot(config)?;
    tracing::info!("catalogue rebuilt: {} channels", snap.channels.len());
    live.state.snapshot.store(Arc::new(snap));
    Ok(())
}

/// The registry `serve` answers: the store's operations, plus live ones, plus a catalogue rebuild after any write.
pub fn registry(cell: LiveCell) -> Registry {
    let mut r = Registry::builtin();
    let c = cell.clone();
    r.on_change(Arc::new(move |op: &str| {
        let c = c.clone();
        let op = op.to_string();
        tokio::task::spawn_blocking(move || {
            if let Some(live) = c.get()
                && let Err(e) = rebuild(live)
            {
                tracing::warn!("after `{op}`: the catalogue could not be rebuilt, keeping the previous one: {e:#}");
            }
        });
    }));
    r
}
