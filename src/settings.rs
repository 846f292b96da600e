//! Settings: where the configuration, the store and its master key are, and the routing snapshot built from them.
//! `serve` and every command resolve them here, one way.
//!
//! Owns the lookup orders (configuration: `--config`, `ROUTER_CONFIG`, `./router.yaml`,
//! `~/.config/router/config.yaml`, else zero-config; store: `--store`, `ROUTER_STORE`, `store.path`, the data
//! directory; master key: `ROUTER_MASTER_KEY`, else `<store>.key`), zero-config (the environment through
//! `config::autodetect`, local servers through `discover::local_servers`), and the snapshot every routing command
//! builds: YAML + store channels (keys opened) + discovered models, the same one `serve` routes on. Must not
//! print, know the command line (`cli` turns its flags into a [`Settings`]) or run on the request path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{Discovered, Snapshot};
use crate::config::{self, ChannelConfig, Config, autodetect};
use crate::crypto::{self, MasterKey};
use crate::discover::{self, DiscoveryStore, MemoryStore, StoreDiscovery};
use crate::error::user;
use crate::store::{Access, KvTable};

/// How long zero-config waits for a local server to list its models.
const LOCAL_PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// What the command line and the environment say about where things are. Nothing is read until asked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--config`.
    config: Option<PathBuf>,
    /// `--store`.
    store: Option<PathBuf>,
    /// Zero-config asks local Ollama / LM Studio (off with `ROUTER_NO_LOCAL_PROBE` or [`Settings::no_local`]).
    probe_local: bool,
}

/// The configuration in force: a file, or what zero-config found.
#[derive(Debug, Clone)]
pub struct Configured {
    pub config: Config,
    /// Zero-config: channels detected from the environment and local servers.
    pub auto: bool,
    /// What zero-config found, one line each (no keys).
    pub found: Vec<String>,
}

impl Settings {
    /// Settings from the `--config` and `--store` flags (either may be absent).
    pub fn new(config: Option<PathBuf>, store: Option<PathBuf>) -> Settings {
        let probe_local = std::env::var_os("ROUTER_NO_LOCAL_PROBE").is_none();
        Settings { config, store, probe_local }
    }

    /// Zero-config does not ask local servers for their models.
    pub fn no_local(mut self) -> Settings {
        self.probe_local = false;
        self
    }

    /// The configuration file, when there is one. A file named by `--config` or `ROUTER_CONFIG` is returned even
    /// when missing (loading it is then an error naming it).
    pub fn config_file(&self) -> Option<PathBuf> {
        config::find(self.config.as_deref())
    }

    /// The configuration file, loaded; `None` when there is none (zero-config channels are not included).
    pub fn yaml(&self) -> anyhow::Result<Option<Config>> {
        let loaded = self.config_file().map(|p| config::load(&p)).transpose();
        let loaded = loaded.map_err(|e| crate::error::from_hinted(&e))?;
        // `store.postgres`: every store this process opens keeps its records there.
        if let Some(c) = &loaded {
            crate::store::use_postgres(c.raw.store.postgres.clone());
        }
        Ok(loaded)
    }

    /// The configuration in force: the file, or zero-config's channels from the environment and local servers.
    pub async fn config(&self) -> anyhow::Result<Configured> {
        if let Some(config) = self.yaml()? {
            return Ok(Configured { config, auto: false, found: Vec::new() });
        }
        let env = |k: &str| std::env::var(k).ok();
        let locals = if self.probe_local {
            discover::local_servers(&autodetect::local_candidates(&env), LOCAL_PROBE_TIMEOUT).await
        } else {
            Vec::new()
        };
        let d = autodetect::detect(&env, &locals);
        Ok(Configured { config: d.config, auto: true, found: d.found })
    }

    /// The store file for `config` (the configuration in force, or `None` when there is no file).
    pub fn store_path_for(&self, config: Option<&Config>) -> PathBuf {
        resolve_store_path(self.store.as_deref(), config.and_then(|c| c.raw.store.path.as_deref()))
    }

    /// The store file for a command that needs nothing else: the configuration file is read only when neither
    /// `--store` nor `ROUTER_STORE` says where the store is (a broken configuration is then an error).
    pub fn store_path(&self) -> anyhow::Result<PathBuf> {
        if self.store.is_some() || env_path("ROUTER_STORE").is_some() {
            // The file is named, but records may live in PostgreSQL (`store.postgres`): a readable
            // configuration still says so.
            let _ = self.yaml();
            return Ok(self.store_path_for(None));
        }
        Ok(self.store_path_for(self.yaml()?.as_ref()))
    }

    /// What a command routes on, the way `serve` does: the configuration in force, the store (directly, or
    /// through the running server that holds it) and the snapshot of both. Without a store file the snapshot is
    /// the configuration's alone and no file is created, unless `create_store`.
    pub async fn routing(&self, create_store: bool) -> anyhow::Result<Routing> {
        let configured = self.config().await?;
        let store_path = self.store_path_for(Some(&configured.config));
        let access = if create_store || store_path.exists() { Some(Access::open(&store_path)?) } else { None };
        let auto = configured.auto;
        let snapshot = snapshot_over(configured.config, access.as_ref(), &store_path, auto)?;
        Ok(Routing { snapshot, access, store_path, auto })
    }
}

/// What a command routes on: the snapshot `serve` would build, and the store it came from.
#[derive(Debug)]
pub struct Routing {
    pub snapshot: Snapshot,
    /// `None` when no store file exists yet (and the command did not ask to create one).
    pub access: Option<Access>,
    pub store_path: PathBuf,
    /// Zero-config.
    pub auto: bool,
}

impl Routing {
    /// A snapshot of `config` over the same store channels and discovered models.
    pub fn snapshot_for(&self, config: Config) -> anyhow::Result<Snapshot> {
        snapshot_over(config, self.access.as_ref(), &self.store_path, self.auto)
    }

    /// The snapshot again, with `discovered` in place of the stored discovery results.
    pub fn with_discovered(&self, discovered: &Discovered) -> anyhow::Result<Snapshot> {
        let stored = match &self.access {
            Some(a) => store_channels(a, &self.store_path)?,
            None => Vec::new(),
        };
        Ok(Snapshot::build(self.snapshot.config.clone(), &stored, discovered, self.auto))
    }

    /// The running server that answered for the store, if one did.
    pub fn remote(&self) -> Option<&Access> {
        self.access.as_ref().filter(|a| a.is_remote())
    }

    /// Where discovery results are kept: the store when there is one, else this process's memory.
    pub fn discovery(&self) -> Box<dyn DiscoveryStore + '_> {
        match &self.access {
            Some(a) => Box::new(StoreDiscovery(a)),
            None => Box::new(MemoryStore::default()),
        }
    }
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|p| !p.is_empty()).map(PathBuf::from)
}

/// Where the store lives when nothing says otherwise: `$XDG_DATA_HOME/router/router.redb`, else
/// `~/.local/share/router/router.redb`.
pub fn default_store_path() -> PathBuf {
    let base = env_path("XDG_DATA_HOME")
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("router").join("router.redb")
}

/// Resolution order: `--store`, `ROUTER_STORE`, `store.path` of the configuration, the default.
pub fn resolve_store_path(flag: Option<&Path>, config_path: Option<&str>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = env_path("ROUTER_STORE") {
        return p;
    }
    if let Some(p) = config_path.filter(|p| !p.is_empty()) {
        return expand_home(p);
    }
    default_store_path()
}

pub fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

// ---- The master key and the snapshot's inputs from the store ----

/// The master key that opens the store's sealed upstream keys (`ROUTER_MASTER_KEY`, else `<store>.key`). Missing
/// or unreadable: a user error whose hint names the key file.
pub fn master_key(store_path: &Path) -> anyhow::Result<MasterKey> {
    MasterKey::load(store_path).map_err(|e| key_error(e, store_path).into())
}

/// The master key to seal new keys with. When the store already holds sealed keys (`rows` as stored), the key
/// must exist: creating a fresh one would make those rows unreadable. Otherwise it is created on first use.
pub fn sealing_key(store_path: &Path, rows: &[ChannelConfig]) -> anyhow::Result<MasterKey> {
    if rows.iter().any(crypto::channel_is_sealed) {
        return master_key(store_path);
    }
    MasterKey::load_or_create(store_path).map_err(|e| key_error(e, store_path).into())
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

/// Store channels with their keys opened. A sealed key without the master key is an error, never a silent loss.
pub fn store_channels(access: &Access, store_path: &Path) -> anyhow::Result<Vec<ChannelConfig>> {
    let mut channels: Vec<ChannelConfig> = access.list_json(KvTable::Channels)?.into_iter().map(|(_, c)| c).collect();
    if channels.iter().any(crypto::channel_is_sealed) {
        let key = master_key(store_path)?;
        for c in &mut channels {
            *c = key.open_channel(c).map_err(|e| user(format!("channel `{}`: {e}", c.name)))?;
        }
    }
    channels.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(channels)
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

/// [`snapshot`] when there is a store, else the configuration's channels alone.
fn snapshot_over(config: Config, access: Option<&Access>, store_path: &Path, auto: bool) -> anyhow::Result<Snapshot> {
    match access {
        Some(a) => snapshot(Arc::new(config), a, store_path, auto),
        None => Ok(Snapshot::build(Arc::new(config), &[], &Default::default(), auto)),
    }
}

/// The snapshot `serve` routes on: YAML channels + store channels + discovered models. In zero-config a store
/// channel takes the place of a detected channel of the same name (the user added it on purpose, e.g. `openai`
/// with another base URL); a YAML channel of the same name is an error.
pub fn snapshot(config: Arc<Config>, access: &Access, store_path: &Path, auto: bool) -> anyhow::Result<Snapshot> {
    let store = store_channels(access, store_path)?;
    let config = if auto { without_shadowed(config, &store) } else { config };
    check_collisions(&config, &store)?;
    let discovered = StoreDiscovery(access).load()?;
    Ok(Snapshot::build(config, &store, &discovered, auto))
}

/// `config` without the detected channels whose names store channels use.
fn without_shadowed(config: Arc<Config>, store: &[ChannelConfig]) -> Arc<Config> {
    let taken: HashSet<&str> = store.iter().map(|c| c.name.as_str()).collect();
    if !config.raw.channels.iter().any(|c| taken.contains(c.name.as_str())) {
        return config;
    }
    let mut c = (*config).clone();
    c.raw.channels.retain(|ch| !taken.contains(ch.name.as_str()));
    Arc::new(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_path_resolution_order() {
        let cfg = |p: &str| {
            let mut c = Config::default();
            c.raw.store.path = Some(p.into());
            c
        };
        let flagged = Settings::new(None, Some("/x/flag.redb".into()));
        assert_eq!(flagged.store_path_for(Some(&cfg("/cfg.redb"))), PathBuf::from("/x/flag.redb"));
        assert_eq!(flagged.store_path().unwrap(), PathBuf::from("/x/flag.redb"));
        if std::env::var_os("ROUTER_STORE").is_none() {
            let plain = Settings::new(None, None);
            assert_eq!(plain.store_path_for(Some(&cfg("/cfg.redb"))), PathBuf::from("/cfg.redb"));
            assert!(plain.store_path_for(None).ends_with("router/router.redb"));
        }
    }

    #[test]
    fn a_named_config_file_that_is_missing_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let s = Settings::new(Some(missing.clone()), Some(dir.path().join("s.redb")));
        let e = s.yaml().unwrap_err();
        assert!(format!("{e:#}").contains("nope.yaml"), "{e:#}");
        // The store path alone does not need the file when --store says where the store is.
        assert_eq!(s.store_path().unwrap(), dir.path().join("s.redb"));
    }

    #[test]
    fn a_store_channel_takes_the_place_of_a_detected_one_but_not_of_a_yaml_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let access = Access::Direct(crate::store::Store::open(&path).unwrap());
        let mut mine = ChannelConfig::new("openai", crate::config::ChannelProtocol::Openai);
        mine.base_url = Some("http://127.0.0.1:9/v1".into());
        access.put_json(KvTable::Channels, "openai", &mine).unwrap();
        let env = |k: &str| (k == "OPENAI_API_KEY").then(|| "sk-env".to_string());
        let detected = Arc::new(autodetect::detect(&env, &[]).config);
        let snap = snapshot(detected.clone(), &access, &path, true).unwrap();
        assert_eq!(snap.channels.len(), 1);
        assert_eq!(snap.channels[0].endpoints[0].base_url, "http://127.0.0.1:9/v1");
        // The same channels as a YAML file: a collision, named.
        let mut yaml = (*detected).clone();
        yaml.path = Some("router.yaml".into());
        let e = snapshot(Arc::new(yaml), &access, &path, false).unwrap_err();
        assert!(e.to_string().contains("defined both in router.yaml and in the store"), "{e}");
    }

    #[tokio::test]
    async fn without_a_store_file_routing_is_the_configuration_alone_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("router.yaml");
        std::fs::write(&file, "channels:\n  - name: local\n    base_url: http://127.0.0.1:9/v1\n    models: [m]\n")
            .unwrap();
        let store = dir.path().join("s.redb");
        let s = Settings::new(Some(file), Some(store.clone()));
        let r = s.routing(false).await.unwrap();
        assert!(r.access.is_none() && !r.auto);
        assert_eq!(r.snapshot.channels.len(), 1);
        assert!(!store.exists());
        let r = s.routing(true).await.unwrap();
        assert!(r.access.is_some() && store.exists());
    }
}
