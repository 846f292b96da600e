//! The store: one redb file holding request records, daily usage rollups and the small tables other modules
//! keep (channels, models, prices, health, balances, gateway keys).
//!
//! Owns opening the file (schema version check, clear errors for foreign, damaged, newer or locked files — never
//! a panic or a silent reset), path resolution, the batched record writer (`writer`), the control socket that
//! lets other processes reach a store a running server holds (`socket`), and [`Access`], which picks the direct
//! or the socket path. Must not be touched from the request hot path: records reach it only through the
//! `usage::sink` channel.

pub mod channels;
pub mod recorder;
pub mod socket;
pub mod tables;
pub mod writer;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use socket::{Access, Op, Registry, SocketClient};
use tables::{Counters, DailyKey, DecodeError};

use crate::usage::RequestRecord;

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store directory {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: std::io::Error },
    #[error("{} is not a router store (it is not a redb database file)", path.display())]
    NotAStore { path: PathBuf },
    #[error("{} is a redb database but not a router store (it holds tables: {tables})", path.display())]
    Foreign { path: PathBuf, tables: String },
    #[error("{} was written by a newer router (store schema {found}; this router knows up to {supported})", path.display())]
    Newer { path: PathBuf, found: u64, supported: u64 },
    #[error("{} is in use by another process", path.display())]
    Locked { path: PathBuf },
    #[error("the store {} is damaged: {message}", path.display())]
    Damaged { path: PathBuf, message: String },
    #[error("cannot open the store {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("store error: {0}")]
    Db(String),
    #[error("`{key}` already exists in table {table}")]
    Exists { table: &'static str, key: String },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("cannot encode a value for table {table}: {message}")]
    Encode { table: &'static str, message: String },
}

impl crate::error::Hinted for StoreError {
    fn hint(&self) -> Option<&str> {
        match self {
            StoreError::NotAStore { .. } | StoreError::Foreign { .. } => {
                Some("pass another file with --store (or ROUTER_STORE / store.path); this one is left untouched")
            }
            StoreError::Newer { .. } | StoreError::Decode(DecodeError::NewerVersion(_)) => {
                Some("run the newer router that wrote this store, or point --store at another file")
            }
            StoreError::Locked { .. } => Some("stop the other process, or use another store with --store"),
            StoreError::Damaged { .. } => Some("restore the file from a backup, or move it away to start a new store"),
            _ => None,
        }
    }
}

impl StoreError {
    /// For the CLI: store problems the user can act on become `UserError` (exit 1 with a hint).
    pub fn into_cli(self) -> anyhow::Error {
        use crate::error::Hinted;
        match self.hint() {
            Some(h) => {
                let h = h.to_string();
                crate::error::user(self.to_string()).with_hint(h).into()
            }
            None => self.into(),
        }
    }
}

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into().to_string())
}

/// The small JSON tables other modules keep (key: a string they choose, value: JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvTable {
    Channels,
    Models,
    Prices,
    Health,
    Balances,
    GatewayKeys,
}

impl KvTable {
    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            KvTable::Channels => tables::CHANNELS,
            KvTable::Models => tables::MODELS,
            KvTable::Prices => tables::PRICES,
            KvTable::Health => tables::HEALTH,
            KvTable::Balances => tables::BALANCES,
            KvTable::GatewayKeys => tables::GATEWAY_KEYS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvTable::Channels => "channels",
            KvTable::Models => "models",
            KvTable::Prices => "prices",
            KvTable::Health => "health",
            KvTable::Balances => "balances",
            KvTable::GatewayKeys => "gateway_keys",
        }
    }
}

const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// An open store. Cheap to clone; every clone shares the one database handle.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating it and its directory when missing) the store at `path`, checks it is ours and not from a
    /// newer router, and creates missing tables.
    /// A new file is created readable by its owner only (0600), its new directories 0700, whoever creates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::CreateDir { dir: dir.to_path_buf(), source })?;
        }
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StoreError::Io { path: path.into(), source }),
        }
        check_magic(path)?;
        let opened = std::panic::catch_unwind(|| redb::Builder::new().set_cache_size(16 * 1024 * 1024).create(path));
        let database = match opened {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(open_error(path, e)),
            Err(_) => {
                return Err(StoreError::Damaged { path: path.into(), message: "redb could not read the file".into() });
            }
        };
        let store = Store { db: Arc::new(database), path: path.to_path_buf() };
        store.init_schema()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let known: Vec<String> = txn.list_tables().map_err(db)?.map(|t| t.name().to_string()).collect();
            let mut meta = txn.open_table(tables::META).map_err(db)?;
            let version = meta.get(tables::META_SCHEMA_VERSION).map_err(db)?.map(|v| v.value());
            match version {
                Some(v) if v > tables::SCHEMA_VERSION => {
                    return Err(StoreError::Newer {
                        path: self.path.clone(),
                        found: v,
                        supported: tables::SCHEMA_VERSION,
                    });
                }
                Some(_) => {}
                None if !known.is_empty() => {
                    return Err(StoreError::Foreign { path: self.path.clone(), tables: known.join(", ") });
                }
                None => {}
            }
            // Version 1 is the first schema: nothing to migrate yet. Later versions migrate here, in this
            // transaction, from `version` up to SCHEMA_VERSION.
            if version != Some(tables::SCHEMA_VERSION) {
                meta.insert(tables::META_SCHEMA_VERSION, tables::SCHEMA_VERSION).map_err(db)?;
            }
        }
        for t in [
            KvTable::Channels,
            KvTable::Models,
            KvTable::Prices,
            KvTable::Health,
            KvTable::Balances,
            KvTable::GatewayKeys,
        ] {
            txn.open_table(t.def()).map_err(db)?;
        }
        txn.open_table(tables::REQUESTS).map_err(db)?;
        txn.open_table(tables::USAGE_DAILY).map_err(db)?;
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let meta = txn.open_table(tables::META).map_err(db)?;
        Ok(meta.get(tables::META_SCHEMA_VERSION).map_err(db)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Unix ms before which request records may have been pruned (0: never pruned).
    pub fn pruned_before(&self) -> Result<i64, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let meta = txn.open_table(tables::META).map_err(db)?;
        Ok(meta.get(tables::META_PRUNED_BEFORE).map_err(db)?.map(|v| v.value() as i64).unwrap_or(0))
    }

    /// Writes a batch of records and their rollups in one durable transaction.
    pub fn write_records(&self, recs: &[RequestRecord]) -> Result<(), StoreError> {
        if recs.is_empty() {
            return Ok(());
        }
        let mut daily: HashMap<DailyKey, Counters> = HashMap::new();
        for r in recs {
            daily.entry(DailyKey::of(r)).or_default().add(&Counters::of(r));
        }
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut requests = txn.open_table(tables::REQUESTS).map_err(db)?;
            let mut buf = Vec::with_capacity(1024);
            for r in recs {
                buf.clear();
                buf.push(1);
                serde_json::to_writer(&mut buf, r).expect("a record always serialises");
                requests.insert(r.id, buf.as_slice()).map_err(db)?;
            }
            let mut rollup = txn.open_table(tables::USAGE_DAILY).map_err(db)?;
            for (k, add) in daily {
                let mut c = match rollup.get(k.as_tuple()).map_err(db)? {
                    Some(v) => Counters::decode(v.value())?,
                    None => Counters::default(),
                };
                c.add(&add);
                rollup.insert(k.as_tuple(), c.encode().as_slice()).map_err(db)?;
            }
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// Deletes request records older than `before_ms` (daily rollups stay). Returns how many were removed.
    pub fn prune_requests(&self, before_ms: i64) -> Result<u64, StoreError> {
        let bound = (before_ms.max(0) as u128) << 64;
        let txn = self.db.begin_write().map_err(db)?;
        let removed;
        {
            let mut requests = txn.open_table(tables::REQUESTS).map_err(db)?;
            removed = requests.range(..bound).map_err(db)?.count() as u64;
            if removed > 0 {
                requests.retain_in(..bound, |_, _| false).map_err(db)?;
            }
            let mut meta = txn.open_table(tables::META).map_err(db)?;
            let old = meta.get(tables::META_PRUNED_BEFORE).map_err(db)?.map(|v| v.value()).unwrap_or(0);
            meta.insert(tables::META_PRUNED_BEFORE, old.max(before_ms.max(0) as u64)).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(removed)
    }

    /// Visits request records with ids in `range`, newest first when `rev`; stops when `f` returns false.
    pub fn scan_requests(
        &self,
        range: std::ops::Range<u128>,
        rev: bool,
        mut f: impl FnMut(RequestRecord) -> bool,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(tables::REQUESTS).map_err(db)?;
        let iter = t.range(range).map_err(db)?;
        let mut visit = |item: Result<(redb::AccessGuard<u128>, redb::AccessGuard<&[u8]>), redb::StorageError>| {
            let (_, v) = item.map_err(db)?;
            Ok::<bool, StoreError>(f(tables::decode_record(v.value())?))
        };
        if rev {
            for item in iter.rev() {
                if !visit(item)? {
                    break;
                }
            }
        } else {
            for item in iter {
                if !visit(item)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Visits the daily rollups of UTC days `first..=last`.
    pub fn scan_daily(&self, first: u32, last: u32, mut f: impl FnMut(DailyKey, Counters)) -> Result<(), StoreError> {
        if first > last {
            return Ok(());
        }
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(tables::USAGE_DAILY).map_err(db)?;
        let lo = (first, "", "", "", "", "", "");
        let iter = t.range(lo..).map_err(db)?;
        for item in iter {
            let (k, v) = item.map_err(db)?;
            let key = k.value();
            if key.0 > last {
                break;
            }
            f(DailyKey::from_tuple(key), Counters::decode(v.value())?);
        }
        Ok(())
    }

    /// Stores `value` as JSON under `key` in one of the small tables.
    pub fn put_json<T: Serialize + ?Sized>(&self, table: KvTable, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| StoreError::Encode { table: table.name(), message: e.to_string() })?;
        self.put_raw(table, key, &bytes)
    }

    /// Stores already-encoded JSON under `key`.
    pub fn put_raw(&self, table: KvTable, key: &str, json: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        txn.open_table(table.def()).map_err(db)?.insert(key, json).map_err(db)?;
        txn.commit().map_err(db)
    }

    pub fn get_json<T: DeserializeOwned>(&self, table: KvTable, key: &str) -> Result<Option<T>, StoreError> {
        match self.get_raw(table, key)? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| DecodeError::Malformed(format!("{}[{key}]: {e}", table.name())).into()),
        }
    }

    pub fn get_raw(&self, table: KvTable, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(table.def()).map_err(db)?;
        Ok(t.get(key).map_err(db)?.map(|v| v.value().to_vec()))
    }

    /// Every (key, value) of a small table, in key order.
    pub fn list_json<T: DeserializeOwned>(&self, table: KvTable) -> Result<Vec<(String, T)>, StoreError> {
        self.list_raw(table)?
            .into_iter()
            .map(|(k, b)| {
                let v = serde_json::from_slice(&b)
                    .map_err(|e| DecodeError::Malformed(format!("{}[{k}]: {e}", table.name())))?;
                Ok((k, v))
            })
            .collect()
    }

    pub fn list_raw(&self, table: KvTable) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(table.def()).map_err(db)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Changes one small table in one write transaction: first `absent` must name no existing key (else
    /// [`StoreError::Exists`]), then `removes` are deleted and `puts` written. On any error nothing changes.
    pub fn apply_kv(
        &self,
        table: KvTable,
        absent: &[String],
        removes: &[String],
        puts: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut t = txn.open_table(table.def()).map_err(db)?;
            for k in absent {
                if t.get(k.as_str()).map_err(db)?.is_some() {
                    return Err(StoreError::Exists { table: table.name(), key: k.clone() });
                }
            }
            for k in removes {
                t.remove(k.as_str()).map_err(db)?;
            }
            for (k, v) in puts {
                t.insert(k.as_str(), v.as_slice()).map_err(db)?;
            }
        }
        txn.commit().map_err(db)
    }

    /// Removes `key`; returns whether it was there.
    pub fn delete(&self, table: KvTable, key: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        let existed = txn.open_table(table.def()).map_err(db)?.remove(key).map_err(db)?.is_some();
        txn.commit().map_err(db)?;
        Ok(existed)
    }
}

/// A non-empty file that does not start with redb's magic bytes is someone else's: refuse it untouched.
fn check_magic(path: &Path) -> Result<(), StoreError> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(StoreError::Io { path: path.into(), source }),
    };
    let mut head = [0u8; REDB_MAGIC.len()];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(source) => return Err(StoreError::Io { path: path.into(), source }),
        }
    }
    if n == 0 || head == REDB_MAGIC { Ok(()) } else { Err(StoreError::NotAStore { path: path.into() }) }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    use redb::{DatabaseError, StorageError};
    let path = path.to_path_buf();
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => StoreError::Locked { path },
        DatabaseError::UpgradeRequired(v) => StoreError::NotAStore { path: path.join(format!("(redb format {v})")) },
        DatabaseError::Storage(StorageError::Io(source)) => StoreError::Io { path, source },
        DatabaseError::Storage(StorageError::Corrupted(message)) => StoreError::Damaged { path, message },
        other => StoreError::Damaged { path, message: other.to_string() },
    }
}

/// Where the store lives when nothing says otherwise: `$XDG_DATA_HOME/router/router.redb`, else
/// `~/.local/share/router/router.redb`.
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("router").join("router.redb")
}

/// Resolution order: `--store`, `ROUTER_STORE`, `store.path` of the configuration, the default.
pub fn resolve_path(flag: Option<&Path>, config_path: Option<&str>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("ROUTER_STORE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = config_path.filter(|p| !p.is_empty()) {
        return expand_home(p);
    }
    default_path()
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The store path for a subcommand: reads the configuration only when neither `--store` nor `ROUTER_STORE` is
/// given (a broken config file is then an error, as for any command that needs it).
pub fn path_for_cli(global: &crate::cli::Global) -> anyhow::Result<PathBuf> {
    let env_set = std::env::var_os("ROUTER_STORE").is_some_and(|p| !p.is_empty());
    if global.store.is_some() || env_set {
        return Ok(resolve_path(global.store.as_deref(), None));
    }
    let from_config = match crate::config::find(global.config.as_deref()) {
        Some(file) => crate::config::load(&file)?.raw.store.path,
        None => None,
    };
    Ok(resolve_path(None, from_config.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Tokens;

    fn rec(time_ms: i64, fp: &str, input: u64) -> RequestRecord {
        RequestRecord {
            id: crate::usage::new_id(time_ms),
            time_ms,
            channel: Some("c".into()),
            endpoint: Some("e".into()),
            token_key: Some("k".into()),
            token_fp: Some(fp.into()),
            requested_model: "m".into(),
            tokens: Tokens { input, output: 1, ..Default::default() },
            cost_usd: Some(0.001),
            ..Default::default()
        }
    }

    #[test]
    fn writes_records_and_rolls_them_up_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sub/dir/s.redb")).unwrap();
        let day = 20_000 * 86_400_000i64;
        store.write_records(&[rec(day + 1, "fp:a", 10), rec(day + 2, "fp:a", 5), rec(day + 3, "fp:b", 1)]).unwrap();
        store.write_records(&[rec(day + 86_400_000, "fp:a", 100)]).unwrap();
        let mut n = 0;
        store
            .scan_requests(0..u128::MAX, false, |_| {
                n += 1;
                true
            })
            .unwrap();
        assert_eq!(n, 4);
        let mut rows = Vec::new();
        store.scan_daily(0, u32::MAX, |k, c| rows.push((k.day, k.token_fp, c.requests, c.input))).unwrap();
        rows.sort();
        assert_eq!(
            rows,
            vec![(20_000, "fp:a".into(), 2, 15), (20_000, "fp:b".into(), 1, 1), (20_001, "fp:a".into(), 1, 100)]
        );
        // Only the day asked for.
        let mut only = 0;
        store.scan_daily(20_001, 20_001, |_, c| only += c.input).unwrap();
        assert_eq!(only, 100);
    }

    #[test]
    fn prune_removes_old_records_and_keeps_rollups() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.write_records(&[rec(1_000, "fp:a", 1), rec(2_000, "fp:a", 2), rec(3_000, "fp:a", 3)]).unwrap();
        assert_eq!(store.prune_requests(2_500).unwrap(), 2);
        assert_eq!(store.pruned_before().unwrap(), 2_500);
        let mut left = Vec::new();
        store
            .scan_requests(0..u128::MAX, false, |r| {
                left.push(r.time_ms);
                true
            })
            .unwrap();
        assert_eq!(left, vec![3_000]);
        let mut input = 0;
        store.scan_daily(0, 10, |_, c| input += c.input).unwrap();
        assert_eq!(input, 6);
    }

    #[test]
    fn a_new_store_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new/dir/s.redb");
        let _s = Store::open(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(p.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn reopens_with_data_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        {
            let s = Store::open(&p).unwrap();
            s.write_records(&[rec(5, "fp:a", 1)]).unwrap();
            s.put_json(KvTable::Channels, "x", &serde_json::json!({"a": 1})).unwrap();
        }
        let s = Store::open(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), tables::SCHEMA_VERSION);
        let v: Option<serde_json::Value> = s.get_json(KvTable::Channels, "x").unwrap();
        assert_eq!(v.unwrap()["a"], 1);
    }

    #[test]
    fn kv_helpers_put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        s.put_json(KvTable::Balances, "b", &2u32).unwrap();
        s.put_json(KvTable::Balances, "a", &1u32).unwrap();
        assert_eq!(s.list_json::<u32>(KvTable::Balances).unwrap(), vec![("a".into(), 1), ("b".into(), 2)]);
        assert!(s.delete(KvTable::Balances, "a").unwrap());
        assert!(!s.delete(KvTable::Balances, "a").unwrap());
        assert_eq!(s.get_json::<u32>(KvTable::Balances, "a").unwrap(), None);
        assert!(s.list_json::<u32>(KvTable::Models).unwrap().is_empty());
    }

    #[test]
    fn a_foreign_file_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.txt");
        std::fs::write(&p, b"hello, this is not a database\n").unwrap();
        let e = Store::open(&p).unwrap_err();
        assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"hello, this is not a database\n");
        assert!(e.into_cli().downcast_ref::<crate::error::UserError>().is_some());
    }

    #[test]
    fn a_redb_file_of_another_program_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("other.redb");
        {
            let d = Database::create(&p).unwrap();
            let t = d.begin_write().unwrap();
            t.open_table(TableDefinition::<&str, u64>::new("their_table")).unwrap().insert("x", 1).unwrap();
            t.commit().unwrap();
        }
        let e = Store::open(&p).unwrap_err();
        assert!(matches!(e, StoreError::Foreign { ref tables, .. } if tables.contains("their_table")), "{e}");
    }

    #[test]
    fn a_store_from_a_newer_router_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        {
            let s = Store::open(&p).unwrap();
            let t = s.db.begin_write().unwrap();
            t.open_table(tables::META).unwrap().insert(tables::META_SCHEMA_VERSION, 99).unwrap();
            t.commit().unwrap();
        }
        let e = Store::open(&p).unwrap_err();
        assert!(matches!(e, StoreError::Newer { found: 99, .. }), "{e}");
    }

    #[test]
    fn a_truncated_store_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        {
            let s = Store::open(&p).unwrap();
            s.write_records(&[rec(5, "fp:a", 1)]).unwrap();
        }
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len().min(700)]).unwrap();
        assert!(Store::open(&p).is_err());
    }

    #[test]
    fn a_second_open_in_the_same_process_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        let _s = Store::open(&p).unwrap();
        assert!(matches!(Store::open(&p).unwrap_err(), StoreError::Locked { .. }));
    }

    #[test]
    fn path_resolution_order() {
        assert_eq!(resolve_path(Some(Path::new("/x/flag.redb")), Some("/cfg.redb")), PathBuf::from("/x/flag.redb"));
        if std::env::var_os("ROUTER_STORE").is_none() {
            assert_eq!(resolve_path(None, Some("/cfg.redb")), PathBuf::from("/cfg.redb"));
            assert!(resolve_path(None, None).ends_with("router/router.redb"));
        }
    }
}
