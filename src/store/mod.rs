//! The store: one redb file holding request records, daily and hourly usage rollups and the small tables other
//! modules keep (channels, models, prices, health, balances, gateway keys) — or, with `store.postgres`, the same
//! primitives answered from PostgreSQL (`pg`), the redb file then only spooling the records PostgreSQL cannot
//! take yet (replayed in order, each once, when it answers again).
//!
//! Owns opening the file (schema version check, clear errors for foreign, damaged, newer or locked files — never
//! a panic or a silent reset) and reopening it after an I/O error, the batched record writer (`writer`) and its
//! pending file for records the store cannot take yet (`pending`), the control socket that lets other processes
//! reach a store a running server holds (`socket`), and [`Access`], which picks the direct or the socket path.
//! Must not decide where the file is (`settings` does), know which operations exist beyond its own (the
//! composition root registers them) or be touched from the request hot path: records reach it only through the
//! `usage::sink` channel.

pub mod channels;
mod codec;
#[cfg(test)]
pub(crate) mod fault;
pub mod migrate;
pub mod pending;
pub mod pg;
pub mod recorder;
pub mod socket;
pub mod tables;
pub mod writer;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use socket::{Access, LiveOp, Op, Registry, SocketClient};
use tables::{Counters, DailyKey, DecodeError, HourlyKey};

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
    #[error("the store cannot be used until it is opened again: a write failed (disk full or read-only?)")]
    AfterIoError,
    #[error("the store {} cannot be read now: a write failed (disk full or read-only?) and it cannot be opened again yet", path.display())]
    Closed { path: PathBuf },
    #[error("PostgreSQL {db}: {message}")]
    Postgres { db: String, message: String },
    #[error("PostgreSQL {db} was migrated by a newer router (schema {found}; this router knows up to {supported})")]
    PostgresNewer { db: String, found: i32, supported: i32 },
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
            StoreError::Postgres { .. } => {
                Some("check that PostgreSQL runs and store.postgres (user, password, database) is right")
            }
            StoreError::Newer { .. }
            | StoreError::PostgresNewer { .. }
            | StoreError::Decode(DecodeError::NewerVersion(_)) => {
                Some("run the newer router that wrote this store, or point --store at another file")
            }
            StoreError::Locked { .. } => Some("stop the other process, or use another store with --store"),
            StoreError::Closed { .. } | StoreError::AfterIoError => {
                Some("the server keeps request records until the store can be written again; see /health and its log")
            }
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
    match e.into() {
        redb::Error::PreviousIo => StoreError::AfterIoError,
        e => StoreError::Db(e.to_string()),
    }
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

/// An open store. Cheap to clone; every clone shares the one database handle, which [`Store::reopen`] replaces
/// (redb refuses every write after an I/O error until the file is closed and opened again).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` after a reopen failed (the file could not be opened again yet): operations answer
    /// [`StoreError::Closed`] until a later reopen succeeds. Each operation holds the read lock for its whole
    /// transaction, so a reopen waits for them and never closes the file under a reader.
    db: RwLock<Option<Database>>,
    /// Test seam: a backend that fails writes on demand (see `fault`).
    #[cfg(test)]
    fault: Option<Arc<fault::Fault>>,
    /// `store.postgres`: records, rollups and KV tables live there; this file keeps only the spool.
    pg: Option<Arc<pg::Pg>>,
    spool: Mutex<Spool>,
    /// What [`Inner::spool`] says, for readers that must not wait for a replay: (records, why PostgreSQL fails).
    spool_view: Mutex<(u64, Option<String>)>,
}

/// The records spooled in the local file while PostgreSQL cannot be written.
#[derive(Default)]
struct Spool {
    /// Records in the `pg_spool` table.
    records: u64,
    down: Option<Down>,
}

struct Down {
    since: Instant,
    reason: String,
    next_try: Instant,
    delay: Duration,
}

/// First wait before PostgreSQL is tried again after a failure; doubles up to [`SPOOL_RETRY_MAX`].
const SPOOL_RETRY_MIN: Duration = Duration::from_millis(200);
const SPOOL_RETRY_MAX: Duration = Duration::from_secs(2);
/// Spooled records replayed per PostgreSQL transaction.
const SPOOL_REPLAY_BATCH: usize = 512;

/// The PostgreSQL URL stores opened by this process use (`store.postgres`, set by `settings`).
static POSTGRES_URL: RwLock<Option<String>> = RwLock::new(None);

/// Makes every store this process opens from now on keep its records, rollups and KV tables in PostgreSQL at
/// `url` (the redb file then only spools records PostgreSQL cannot take yet). `settings` calls it once the
/// configuration is read, so every command and `serve` use the same backend.
pub fn use_postgres(url: Option<String>) {
    *POSTGRES_URL.write().unwrap_or_else(|e| e.into_inner()) = url;
}

/// The URL set by [`use_postgres`].
pub fn postgres_url() -> Option<String> {
    POSTGRES_URL.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The database of an open store, borrowed for one operation.
struct DbRef<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for DbRef<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        self.0.as_ref().expect("checked when borrowed")
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.inner.path).finish()
    }
}

impl Store {
    /// Opens (creating it and its directory when missing) the store at `path`, checks it is ours and not from a
    /// newer router, and creates missing tables.
    /// A new file is created readable by its owner only (0600), its new directories 0700, whoever creates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, postgres_url().as_deref())
    }

    /// Opens the store at `path` with its records, rollups and KV tables in PostgreSQL at `postgres` when
    /// given (the file then spools records PostgreSQL cannot take yet). An unreachable PostgreSQL is not an
    /// error here (records spool until it answers; reads fail with its error); a database migrated by a newer
    /// router is.
    pub fn open_with(path: &Path, postgres: Option<&str>) -> Result<Store, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let pg = match postgres {
            Some(url) => {
                let pg = pg::Pg::open(url)?;
                match pg.check() {
                    Ok(()) => {}
                    Err(e @ StoreError::PostgresNewer { .. }) => return Err(e),
                    // `serve` spools records meanwhile (and logs it once); a report fails with the error.
                    Err(e) => tracing::debug!("{e}"),
                }
                Some(Arc::new(pg))
            }
            None => None,
        };
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
        let store = Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db: RwLock::new(None),
                #[cfg(test)]
                fault: None,
                pg,
                spool: Mutex::new(Spool::default()),
                spool_view: Mutex::new((0, None)),
            }),
        };
        store.reopen()?;
        if store.inner.pg.is_some() {
            let n = store.spool_len()?;
            let mut st = store.inner.spool.lock().unwrap_or_else(|e| e.into_inner());
            st.records = n;
            store.show(&st);
        }
        Ok(store)
    }

    /// Opens a store whose file writes fail while `fault` says so (tests of the writer's recovery).
    #[cfg(test)]
    pub(crate) fn open_with_fault(path: &Path, fault: Arc<fault::Fault>) -> Result<Store, StoreError> {
        let store = Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db: RwLock::new(None),
                fault: Some(fault),
                pg: None,
                spool: Mutex::new(Spool::default()),
                spool_view: Mutex::new((0, None)),
            }),
        };
        store.reopen()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Closes the database file and opens it again (redb's way out of an earlier I/O error; it recovers from
    /// the last durable commit). Waits for running operations; while the file cannot be opened, operations
    /// fail with [`StoreError::Closed`] and a later call may succeed.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.inner.db.write().unwrap_or_else(|e| e.into_inner());
        // Drop the old handle first: it holds the file lock the new one takes.
        drop(slot.take());
        let path = &self.inner.path;
        #[cfg(test)]
        let opened = match &self.inner.fault {
            Some(f) => std::panic::catch_unwind(|| f.open(path)),
            None => std::panic::catch_unwind(|| open_database(path)),
        };
        #[cfg(not(test))]
        let opened = std::panic::catch_unwind(|| open_database(path));
        let database = match opened {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(open_error(path, e)),
            Err(_) => {
                return Err(StoreError::Damaged { path: path.into(), message: "redb could not read the file".into() });
            }
        };
        init_schema(&database, path)?;
        *slot = Some(database);
        Ok(())
    }

    /// Bytes an unprivileged writer may still use on the store's filesystem (None when unknown). The writer
    /// looks before reopening a store that failed, since a reopen after an I/O error repairs the file (reads
    /// all of it): pointless work while the disk is still full.
    pub fn free_bytes(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let dir = self.inner.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }

    /// Whether the database is open (false after a failed [`Store::reopen`]).
    pub fn is_open(&self) -> bool {
        self.inner.db.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn db(&self) -> Result<DbRef<'_>, StoreError> {
        let g = self.inner.db.read().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            return Err(StoreError::Closed { path: self.inner.path.clone() });
        }
        Ok(DbRef(g))
    }
}

/// redb's page cache (read cache and write buffer together). It fills up as records are written and stays full,
/// so it is part of a busy server's resident memory: 1 MiB holds the tables' upper levels and a batch's pages
/// (the writer commits as fast with it as with 4 or 16 MiB, `examples/bench_writer.rs`); reports read the rest
/// through the OS page cache.
const CACHE_BYTES: usize = 1 << 20;

fn open_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new().set_cache_size(CACHE_BYTES).create(path)
}

/// Checks the schema version of a freshly opened file and creates missing tables.
fn init_schema(database: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = database.begin_write().map_err(db)?;
    {
        let known: Vec<String> = txn.list_tables().map_err(db)?.map(|t| t.name().to_string()).collect();
        let mut meta = txn.open_table(tables::META).map_err(db)?;
        let version = meta.get(tables::META_SCHEMA_VERSION).map_err(db)?.map(|v| v.value());
        match version {
            Some(v) if v > tables::SCHEMA_VERSION => {
                return Err(StoreError::Newer {
                    path: path.to_path_buf(),
                    found: v,
                    supported: tables::SCHEMA_VERSION,
                });
            }
            Some(_) => {}
            None if !known.is_empty() => {
                return Err(StoreError::Foreign { path: path.to_path_buf(), tables: known.join(", ") });
            }
            None => {}
        }
        // Migrations run here, in this transaction, from `version` up to SCHEMA_VERSION: a failure leaves the
        // file as it was.
        if version == Some(1) {
            // 1 -> 2: `usage_hourly` from the records retention kept; hours before them stay unknown.
            let pruned = meta.get(tables::META_PRUNED_BEFORE).map_err(db)?.map(|v| v.value()).unwrap_or(0);
            let from = (pruned as i64).div_euclid(HOUR_MS).max(0) as u64 * HOUR_MS as u64;
            let from = if from < pruned { from + HOUR_MS as u64 } else { from };
            meta.insert(tables::META_HOURLY_FROM, from).map_err(db)?;
            backfill_hourly(&txn)?;
        }
        if version.is_none() {
            meta.insert(tables::META_HOURLY_FROM, 0).map_err(db)?;
        }
        if version != Some(tables::SCHEMA_VERSION) {
            meta.insert(tables::META_SCHEMA_VERSION, tables::SCHEMA_VERSION).map_err(db)?;
        }
    }
    for t in
        [KvTable::Channels, KvTable::Models, KvTable::Prices, KvTable::Health, KvTable::Balances, KvTable::GatewayKeys]
    {
        txn.open_table(t.def()).map_err(db)?;
    }
    txn.open_table(tables::REQUESTS).map_err(db)?;
    txn.open_table(tables::USAGE_DAILY).map_err(db)?;
    txn.open_table(tables::USAGE_HOURLY).map_err(db)?;
    txn.open_table(tables::PG_SPOOL).map_err(db)?;
    txn.commit().map_err(db)?;
    Ok(())
}

const HOUR_MS: i64 = 3_600_000;

/// Schema 1 -> 2: rolls every stored request record up into `usage_hourly` (in the open transaction).
fn backfill_hourly(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    tracing::info!("store: upgrading to schema 2, building hourly usage totals from the stored records");
    let mut hourly: HashMap<HourlyKey, Counters> = HashMap::new();
    let mut n = 0u64;
    {
        let requests = txn.open_table(tables::REQUESTS).map_err(db)?;
        for item in requests.iter().map_err(db)? {
            let (_, v) = item.map_err(db)?;
            let r = tables::decode_record(v.value())?;
            hourly.entry(HourlyKey::of(&r)).or_default().add(&Counters::of(&r));
            n += 1;
        }
    }
    let mut t = txn.open_table(tables::USAGE_HOURLY).map_err(db)?;
    add_rollups(&mut t, hourly.iter().map(|(k, c)| (k.as_tuple(), c)))?;
    tracing::info!(
        "store: hourly usage totals built from {n} records ({} rows) in {:.1} s",
        hourly.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Adds counters to rollup rows (daily or hourly), creating missing rows.
fn add_rollups<'k>(
    t: &mut redb::Table<tables::DailyTuple<'static>, &'static [u8]>,
    adds: impl Iterator<Item = (tables::DailyTuple<'k>, &'k Counters)>,
) -> Result<(), StoreError> {
    for (k, add) in adds {
        let mut c = match t.get(k).map_err(db)? {
            Some(v) => Counters::decode(v.value())?,
            None => Counters::default(),
        };
        c.add(add);
        t.insert(k, c.encode().as_slice()).map_err(db)?;
    }
    Ok(())
}

impl Store {
    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let d = self.db()?;
        let txn = d.begin_read().map_err(db)?;
        let meta = txn.open_table(tables::META).map_err(db)?;
        Ok(meta.get(tables::META_SCHEMA_VERSION).map_err(db)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Unix ms before which request records may have been pruned (0: never pruned).
    pub fn pruned_before(&self) -> Result<i64, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.pruned_before();
        }
        let d = self.db()?;
        let txn = d.begin_read().map_err(db)?;
        let meta = txn.open_table(tables::META).map_err(db)?;
        Ok(meta.get(tables::META_PRUNED_BEFORE).map_err(db)?.map(|v| v.value() as i64).unwrap_or(0))
    }

    /// Unix ms (an hour start) from which `usage_hourly` holds every request: 0, unless the store was migrated
    /// from schema 1 after retention had pruned records.
    pub fn hourly_from(&self) -> Result<i64, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.meta(tables::META_HOURLY_FROM);
        }
        let d = self.db()?;
        let txn = d.begin_read().map_err(db)?;
        let meta = txn.open_table(tables::META).map_err(db)?;
        Ok(meta.get(tables::META_HOURLY_FROM).map_err(db)?.map(|v| v.value() as i64).unwrap_or(0))
    }

    /// Writes a batch of records and their rollups in one durable transaction. A record whose id is already
    /// stored is skipped (rollups untouched), so writing the same records twice — a retried batch, a pending
    /// file imported again — counts them once. Returns how many were new.
    ///
    /// With PostgreSQL, a batch it cannot take is spooled in this file (and `Ok(0)` returned): spooled records
    /// are replayed, oldest first, before any later batch, when PostgreSQL answers again.
    /// Takes records as they are held: owned, or shared with the event stream (`Arc`).
    pub fn write_records<'r, R>(&self, recs: &'r [R]) -> Result<u64, StoreError>
    where
        R: Borrow<RequestRecord> + Clone + Send + 'static,
    {
        if recs.is_empty() {
            return Ok(0);
        }
        if let Some(pg) = &self.inner.pg {
            return self.write_shared(pg, recs);
        }
        // Keyed by strings borrowed from the records, with a fast hash (the keys are our own, not an attacker's).
        let mut daily: HashMap<tables::DailyTuple<'_>, Counters, rustc_hash::FxBuildHasher> = HashMap::default();
        let mut hourly: HashMap<tables::DailyTuple<'_>, Counters, rustc_hash::FxBuildHasher> = HashMap::default();
        // Consecutive records nearly always share their rollup parts (one channel, endpoint, token and model: the
        // snapshot's shared strings): they are summed as a run, and the maps touched once a run rather than twice
        // a record (hashing and comparing seven parts cost ~1% of a busy router's CPU, in `memcmp`).
        let mut add = |r: &'r RequestRecord, c: &Counters| {
            daily.entry(tables::rollup_tuple(tables::day_of_ms(r.time_ms), r)).or_default().add(c);
            hourly.entry(tables::rollup_tuple(tables::hour_of_ms(r.time_ms), r)).or_default().add(c);
        };
        let mut run: Option<(&'r RequestRecord, Counters)> = None;
        let mut new = 0;
        let d = self.db()?;
        let txn = d.begin_write().map_err(db)?;
        {
            let mut requests = txn.open_table(tables::REQUESTS).map_err(db)?;
            let mut buf = Vec::with_capacity(1024);
            for r in recs {
                let r: &'r RequestRecord = r.borrow();
                buf.clear();
                codec::encode_into(r, &mut buf);
                if requests.insert(r.id, buf.as_slice()).map_err(db)?.is_none() {
                    let c = Counters::of(r);
                    match &mut run {
                        Some((first, sum)) if tables::same_rollup(first, r) => sum.add(&c),
                        _ => {
                            if let Some((first, sum)) = run.replace((r, c)) {
                                add(first, &sum);
                            }
                        }
                    }
                    new += 1;
                }
            }
            if let Some((first, sum)) = run.take() {
                add(first, &sum);
            }
            let mut rollup = txn.open_table(tables::USAGE_DAILY).map_err(db)?;
            add_rollups(&mut rollup, daily.iter().map(|(k, c)| (*k, c)))?;
            let mut rollup = txn.open_table(tables::USAGE_HOURLY).map_err(db)?;
            add_rollups(&mut rollup, hourly.iter().map(|(k, c)| (*k, c)))?;
        }
        txn.commit().map_err(db)?;
        Ok(new)
    }

    /// Deletes request records older than `before_ms` (daily and hourly rollups stay). Returns how many were removed.
    pub fn prune_requests(&self, before_ms: i64) -> Result<u64, StoreError> {
        if let Some(pg) = &self.inner.pg {
            return pg.prune_requests(before_ms);
        }
        let bound = (before_ms.max(0) as u128) << 64;
        let d = self.db()?;
        let txn = d.begin_write().map_err(db)?;
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
        if let Some(pg) = &self.inner.pg {
            return pg.scan_requests(range, rev, f);
        }
        let d = self.db()?;
        let txn = d.begin_read().map_err(db)?;
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
        if let Some(pg) = &self.inner.pg {
            return pg.scan_daily(first, last, f);
        }
        let d = self.db()?;
        let txn = d.begin_read().map_err(db)?;
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

    /// Visits the hourly rollups of UTC hours `first..=last` (hours since 1970-01-01T00:00Z).
    pub fn scan_hourly(&self, first: u32, last: u32, mut f: impl FnMut(HourlyKey, Counters)) -> Result<(), StoreError> {
        if first > last {
            return Ok(());
        }
        if let Some(pg) = &self.inner.pg {
            return pg.scan_hourly(first, last, f);
        }
        let d = self.db()?;
        let txn = d.begin_read().map_err(db)?;
        let t = txn.open_table(tables::USAGE_HOURLY).map_err(db)?;
        let lo = (first, "", "", "", "", "", "");
        for item in t.range(lo..).map_err(db)? {
            let (k, v) = item.map_err(db)?;
            let key = k.value();
            if key.0 > last {
                break;
            }
            f(HourlyKey::from_tuple(key), Counters::decode(v.value())?);
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
        if self.inner.pg.is_some() {
            return self.apply_kv(table, &[], &[], &[(key.to_string(), json.to_vec())]);
        }
        let d = self.db()?;
        let txn = d.begin_write().map_err(db)?;
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
        if let Some(pg) = &self.inner.pg {
            return pg.get_raw(table.name(), key);
        }
        let d = self.db()?;
        let txn = d.begin_read().map_err(db)?;
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
        if let Some(pg) = &self.inner.pg {
            return pg.list_raw(table.name());
        }
        let d = self.db()?;
        let txn = d.begin_read().map_err(db)?;
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
        if let Some(pg) = &self.inner.pg {
            return pg
                .apply_kv(table.name(), absent, removes, puts)?
                .map_err(|key| StoreError::Exists { table: table.name(), key });
        }
        let d = self.db()?;
        let txn = d.begin_write().map_err(db)?;
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
        if let Some(pg) = &self.inner.pg {
            return pg.delete(table.name(), key);
        }
        let d = self.db()?;
        let txn = d.begin_write().map_err(db)?;
        let existed = txn.open_table(table.def()).map_err(db)?.remove(key).map_err(db)?.is_some();
        txn.commit().map_err(db)?;
        Ok(existed)
    }
}

/// PostgreSQL (`store.postgres`) and the spool that keeps its records through an outage.
impl Store {
    /// The PostgreSQL store, when records live there.
    pub fn postgres(&self) -> Option<&pg::Pg> {
        self.inner.pg.as_deref()
    }

    /// Records spooled in this file and not yet in PostgreSQL.
    pub fn spooled(&self) -> u64 {
        self.inner.spool_view.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Why PostgreSQL cannot be written now (None while it can, and without PostgreSQL).
    pub fn shared_problem(&self) -> Option<String> {
        self.inner.spool_view.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    fn show(&self, st: &Spool) {
        *self.inner.spool_view.lock().unwrap_or_else(|e| e.into_inner()) =
            (st.records, st.down.as_ref().map(|d| d.reason.clone()));
    }

    /// Tries to replay the spool into PostgreSQL when it is due (the writer calls this while it is idle).
    pub fn retry_spool(&self) {
        let Some(pg) = &self.inner.pg else { return };
        let mut st = self.inner.spool.lock().unwrap_or_else(|e| e.into_inner());
        if st.records > 0 || st.down.is_some() {
            self.replay(pg, &mut st);
            self.show(&st);
        }
    }

    fn write_shared<R>(&self, pg: &pg::Pg, recs: &[R]) -> Result<u64, StoreError>
    where
        R: Borrow<RequestRecord> + Clone + Send + 'static,
    {
        let mut st = self.inner.spool.lock().unwrap_or_else(|e| e.into_inner());
        if st.records > 0 || st.down.is_some() {
            self.replay(pg, &mut st);
        }
        if st.records == 0 && st.down.is_none() {
            match pg.write_records(recs) {
                Ok(n) => {
                    self.show(&st);
                    return Ok(n);
                }
                Err(e) => self.went_down(&mut st, e),
            }
        }
        // Behind the spooled ones, in order.
        let put = self.spool_put(recs);
        if put.is_ok() {
            st.records += recs.len() as u64;
        }
        self.show(&st);
        put.map(|()| 0)
    }

    /// Replays spooled records (oldest first) when a try is due; stops at the first failure.
    fn replay(&self, pg: &pg::Pg, st: &mut Spool) {
        if st.down.as_ref().is_some_and(|d| Instant::now() < d.next_try) {
            return;
        }
        let mut replayed = 0u64;
        loop {
            let batch = match self.spool_take(SPOOL_REPLAY_BATCH) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("cannot read the PostgreSQL spool in {}: {e}", self.path().display());
                    return;
                }
            };
            if batch.is_empty() {
                st.records = 0;
                if st.down.is_some()
                    && let Err(e) = pg.check()
                {
                    self.went_down(st, e);
                    return;
                }
                if let Some(d) = st.down.take() {
                    tracing::warn!(
                        "PostgreSQL {} takes records again after {:.1?}; {replayed} spooled request records replayed",
                        pg.shown(),
                        d.since.elapsed()
                    );
                }
                return;
            }
            // A batch PostgreSQL committed but whose answer was lost is replayed again: ids already stored
            // are skipped, so it counts once.
            if let Err(e) = pg.write_records(&batch) {
                self.went_down(st, e);
                return;
            }
            let ids: Vec<u128> = batch.iter().map(|r| r.id).collect();
            if let Err(e) = self.spool_remove(&ids) {
                tracing::error!("cannot remove replayed records from the spool in {}: {e}", self.path().display());
                return;
            }
            replayed += ids.len() as u64;
            st.records = st.records.saturating_sub(ids.len() as u64);
        }
    }

    fn went_down(&self, st: &mut Spool, e: StoreError) {
        let now = Instant::now();
        let reason = e.to_string();
        match &mut st.down {
            None => {
                tracing::error!(
                    "{reason}. Request records are spooled in {} and replayed in order when PostgreSQL answers",
                    self.path().display()
                );
                st.down = Some(Down { since: now, reason, next_try: now + SPOOL_RETRY_MIN, delay: SPOOL_RETRY_MIN });
            }
            Some(d) => {
                if d.reason != reason {
                    tracing::debug!("PostgreSQL still cannot be written: {reason}");
                    d.reason = reason;
                }
                d.delay = (d.delay * 2).min(SPOOL_RETRY_MAX);
                d.next_try = now + d.delay;
            }
        }
    }

    fn spool_len(&self) -> Result<u64, StoreError> {
        let d = self.db()?;
        let txn = d.begin_read().map_err(db)?;
        let t = txn.open_table(tables::PG_SPOOL).map_err(db)?;
        t.len().map_err(db)
    }

    fn spool_put<R: Borrow<RequestRecord>>(&self, recs: &[R]) -> Result<(), StoreError> {
        let d = self.db()?;
        let txn = d.begin_write().map_err(db)?;
        {
            let mut t = txn.open_table(tables::PG_SPOOL).map_err(db)?;
            // Keyed by arrival, not by id: replay keeps the order records were committed in.
            let first = t.last().map_err(db)?.map(|(k, _)| k.value() + 1).unwrap_or(0);
            for (seq, r) in (first..).zip(recs) {
                t.insert(seq, tables::encode_record(r.borrow()).as_slice()).map_err(db)?;
            }
        }
        txn.commit().map_err(db)
    }

    /// The oldest `n` spooled records (left in place until [`Store::spool_remove`]).
    fn spool_take(&self, n: usize) -> Result<Vec<RequestRecord>, StoreError> {
        let d = self.db()?;
        let txn = d.begin_read().map_err(db)?;
        let t = txn.open_table(tables::PG_SPOOL).map_err(db)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db)?.take(n) {
            let (_, v) = item.map_err(db)?;
            out.push(tables::decode_record(v.value())?);
        }
        Ok(out)
    }

    /// Removes the oldest `ids.len()` spooled records (the ones [`Store::spool_take`] returned).
    fn spool_remove(&self, ids: &[u128]) -> Result<(), StoreError> {
        let d = self.db()?;
        let txn = d.begin_write().map_err(db)?;
        {
            let mut t = txn.open_table(tables::PG_SPOOL).map_err(db)?;
            for _ in ids {
                if t.pop_first().map_err(db)?.is_none() {
                    break;
                }
            }
        }
        txn.commit().map_err(db)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Tokens;

    /// A record of channel `c`, endpoint `e`, token `k` (fingerprint `fp`), model `m`; also the PostgreSQL tests'.
    pub(super) fn rec(time_ms: i64, fp: &str, input: u64) -> RequestRecord {
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
        // Runs of records with the same parts, broken by another key and by a new day, within one batch.
        let next = day + 2 * 86_400_000;
        let mixed =
            [rec(next, "fp:a", 1), rec(next + 1, "fp:b", 2), rec(next + 2, "fp:a", 4), rec(next + 3, "fp:a", 8)];
        store
            .write_records(
                &[&mixed[..], &[rec(next + 86_400_000, "fp:a", 16), rec(next + 86_400_001, "fp:a", 32)]].concat(),
            )
            .unwrap();
        let mut n = 0;
        store
            .scan_requests(0..u128::MAX, false, |_| {
                n += 1;
                true
            })
            .unwrap();
        assert_eq!(n, 10);
        let mut rows = Vec::new();
        store.scan_daily(0, u32::MAX, |k, c| rows.push((k.day, k.token_fp, c.requests, c.input))).unwrap();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                (20_000, "fp:a".into(), 2, 15),
                (20_000, "fp:b".into(), 1, 1),
                (20_001, "fp:a".into(), 1, 100),
                (20_002, "fp:a".into(), 3, 13),
                (20_002, "fp:b".into(), 1, 2),
                (20_003, "fp:a".into(), 2, 48)
            ]
        );
        // Only the day asked for.
        let mut only = 0;
        store.scan_daily(20_001, 20_001, |_, c| only += c.input).unwrap();
        assert_eq!(only, 100);
    }

    #[test]
    fn hourly_rollups_are_written_with_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(store.hourly_from().unwrap(), 0);
        let h = 480_000 * HOUR_MS;
        store.write_records(&[rec(h + 1, "fp:a", 10), rec(h + HOUR_MS - 1, "fp:a", 5), rec(h + 3, "fp:b", 1)]).unwrap();
        store.write_records(&[rec(h + HOUR_MS, "fp:a", 100), rec(h + 2 * HOUR_MS, "fp:a", 7)]).unwrap();
        let mut rows = Vec::new();
        store.scan_hourly(0, u32::MAX, |k, c| rows.push((k.hour, k.token_fp, c.requests, c.input))).unwrap();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                (480_000, "fp:a".into(), 2, 15),
                (480_000, "fp:b".into(), 1, 1),
                (480_001, "fp:a".into(), 1, 100),
                (480_002, "fp:a".into(), 1, 7)
            ]
        );
        let mut only = Vec::new();
        store.scan_hourly(480_001, 480_001, |k, c| only.push((k.hour, c.input))).unwrap();
        assert_eq!(only, vec![(480_001, 100)]);
        // A record written twice counts once in the hourly rollup too.
        let again = rec(h + 5 * HOUR_MS, "fp:c", 3);
        store.write_records(std::slice::from_ref(&again)).unwrap();
        store.write_records(&[again]).unwrap();
        let mut n = 0;
        store.scan_hourly(480_005, 480_005, |_, c| n += c.requests).unwrap();
        assert_eq!(n, 1);
        // Pruning records keeps the hourly rollups.
        store.prune_requests(h + 10 * HOUR_MS).unwrap();
        let mut input = 0;
        store.scan_hourly(0, u32::MAX, |_, c| input += c.input).unwrap();
        assert_eq!(input, 15 + 1 + 100 + 7 + 3);
    }

    /// A store written by a router of schema 1 (no `usage_hourly`) is migrated on open: the hourly rollups are
    /// built from the records retention kept, and reports know from when they are complete.
    #[test]
    fn a_schema_1_store_gets_hourly_rollups_from_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        let h = 480_000 * HOUR_MS;
        {
            let s = Store::open(&p).unwrap();
            s.write_records(&[
                rec(h + 5, "fp:a", 1),
                rec(h + HOUR_MS + 5, "fp:a", 2),
                rec(h + 2 * HOUR_MS + 5, "fp:a", 4),
                rec(h + 2 * HOUR_MS + 6, "fp:b", 8),
                rec(h + 30 * HOUR_MS, "fp:a", 16),
            ])
            .unwrap();
            // Retention pruned the first record, part way into the first hour.
            s.prune_requests(h + 60_000).unwrap();
            // Make it what schema 1 wrote: no hourly table, no hourly_from, version 1.
            let d = s.db().unwrap();
            let t = d.begin_write().unwrap();
            assert!(t.delete_table(tables::USAGE_HOURLY).unwrap());
            {
                let mut meta = t.open_table(tables::META).unwrap();
                meta.remove(tables::META_HOURLY_FROM).unwrap();
                meta.insert(tables::META_SCHEMA_VERSION, 1).unwrap();
            }
            t.commit().unwrap();
        }
        let s = Store::open(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), tables::SCHEMA_VERSION);
        // The first whole hour after the pruned records.
        assert_eq!(s.hourly_from().unwrap(), h + HOUR_MS);
        let mut rows = Vec::new();
        s.scan_hourly(0, u32::MAX, |k, c| rows.push((k.hour, k.token_fp, c.requests, c.input))).unwrap();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                (480_001, "fp:a".into(), 1, 2),
                (480_002, "fp:a".into(), 1, 4),
                (480_002, "fp:b".into(), 1, 8),
                (480_030, "fp:a".into(), 1, 16)
            ]
        );
        // The daily rollups were not touched, and new records roll up into both.
        let mut daily = 0;
        s.scan_daily(0, u32::MAX, |_, c| daily += c.input).unwrap();
        assert_eq!(daily, 31);
        s.write_records(&[rec(h + 30 * HOUR_MS + 1, "fp:a", 32)]).unwrap();
        let mut hour30 = 0;
        s.scan_hourly(480_030, 480_030, |_, c| hour30 += c.input).unwrap();
        assert_eq!(hour30, 48);
        // Opening again does not roll the records up twice.
        drop(s);
        let s = Store::open(&p).unwrap();
        let mut all = 0;
        s.scan_hourly(0, u32::MAX, |_, c| all += c.input).unwrap();
        assert_eq!(all, 2 + 4 + 8 + 16 + 32);
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
            let d = s.db().unwrap();
            let t = d.begin_write().unwrap();
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
}
