//! PostgreSQL as the store several `router serve` instances share (`store.postgres`): request records, daily
//! and hourly rollups, the small JSON tables (channels, gateway keys, balances, discovery) and store facts.
//!
//! Owns the PostgreSQL side of the store's primitives — batch commit of records with their rollups, scans of
//! records by id range and of rollups by day / hour range, the KV tables, retention — and the schema: numbered
//! SQL migrations compiled into the binary (`migrations/`), applied in one transaction under an advisory lock
//! (instances starting together apply each once), recorded in `schema_migrations`; a database migrated by a
//! newer router is refused. Record writes are idempotent on the request id (`ON CONFLICT (id) DO NOTHING ...
//! RETURNING id`) and only the records actually inserted are rolled up, in the same transaction, so a replayed
//! batch counts once. Rollup upserts go in key order, so concurrent instances lock rows in the same order and
//! never deadlock. The spool that keeps records while PostgreSQL is unreachable is `Store`'s (the local redb
//! file), not this module's. Must not log or return the URL's password (errors name the redacted URL).
//!
//! The synchronous `postgres` client runs its own runtime, which must not be entered from an async thread:
//! every query runs on one of this module's own threads, each holding one connection (made lazily, made again
//! after it broke), so callers may be anywhere.

use crate::failure::redact_url as redact;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use postgres::{Client, NoTls};

use super::StoreError;
use super::tables::{self, Counters, DailyKey, HourlyKey};
use crate::usage::RequestRecord;

/// The schema migrations, in order: (version, SQL). Append only; never edit a released one.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("migrations/0001_init.sql"))];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Key of the advisory lock migrations run under ("router" in ASCII).
const MIGRATION_LOCK: i64 = 0x726f_7574_6572;

/// Connections (and threads) per open store: one for the record writer, one for reports and KV.
const CONNECTIONS: usize = 2;

/// Records read per query when scanning (a report that stops early reads little more than it shows).
const PAGE: i64 = 1000;

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// A PostgreSQL store. Cheap to share (`Arc`); dropping the last handle ends its threads.
pub struct Pg {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// The URL with its password hidden, for messages.
    shown: String,
}

struct Conn {
    config: postgres::Config,
    client: Option<Client>,
    migrated: Arc<AtomicBool>,
}

/// What a query can fail with.
#[derive(Debug)]
enum PgError {
    Pg(postgres::Error),
    /// A newer router migrated the database to this schema version.
    Newer(i32),
    Decode(tables::DecodeError),
}

impl From<postgres::Error> for PgError {
    fn from(e: postgres::Error) -> Self {
        PgError::Pg(e)
    }
}

impl From<tables::DecodeError> for PgError {
    fn from(e: tables::DecodeError) -> Self {
        PgError::Decode(e)
    }
}

impl Conn {
    fn client(&mut self) -> Result<&mut Client, PgError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            let mut c = self.config.connect(NoTls)?;
            if !self.migrated.load(Ordering::Acquire) {
                migrate(&mut c)?;
                self.migrated.store(true, Ordering::Release);
            }
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }
}

/// Applies the migrations this database lacks, in one transaction under an advisory lock.
fn migrate(c: &mut Client) -> Result<(), PgError> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, \
         applied_at timestamptz NOT NULL DEFAULT now())",
    )?;
    let have: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])?.get(0);
    if have > SCHEMA_VERSION {
        return Err(PgError::Newer(have));
    }
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > have) {
        tx.batch_execute(sql)?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[v])?;
    }
    tx.commit()?;
    Ok(())
}

/// Whether `s` is a PostgreSQL URL this module can use (`postgres://` or `postgresql://`); the error says why
/// not, without the password.
pub fn check_url(s: &str) -> Result<postgres::Config, String> {
    let lower = s.trim().to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        return Err("not a PostgreSQL URL (it must start with postgres:// or postgresql://)".into());
    }
    s.trim().parse::<postgres::Config>().map_err(|e| format!("not a PostgreSQL URL: {e}"))
}

impl Pg {
    /// A store on the database at `url`. Connects lazily: an unreachable server is not an error here (the
    /// record writer spools until it answers); use [`Pg::check`] to see whether it answers now.
    pub fn open(url: &str) -> Result<Pg, StoreError> {
        let shown = redact(url);
        let mut config = check_url(url).map_err(|message| StoreError::Postgres { db: shown.clone(), message })?;
        // A server that stops answering (network cut, host gone) must fail the batch in seconds, not after
        // TCP's retransmission minutes: the writer then spools and carries on.
        config.connect_timeout(Duration::from_secs(3));
        config.tcp_user_timeout(Duration::from_secs(10));
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        if config.get_application_name().is_none() {
            config.application_name("router");
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let migrated = Arc::new(AtomicBool::new(false));
        for i in 0..CONNECTIONS {
            let rx = rx.clone();
            let mut conn = Conn { config: config.clone(), client: None, migrated: migrated.clone() };
            std::thread::Builder::new()
                .name(format!("router-pg-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        job(&mut conn);
                    }
                })
                .map_err(|e| StoreError::Postgres {
                    db: shown.clone(),
                    message: format!("cannot start a thread: {e}"),
                })?;
        }
        Ok(Pg { jobs: Mutex::new(tx), shown })
    }

    /// The redacted URL.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs `f` with a connection on one of the store's threads and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, PgError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn: &mut Conn| {
            let r = conn.client().and_then(f);
            if r.is_err() && conn.client.as_ref().is_some_and(|c| c.is_closed()) {
                conn.client = None;
            }
            let _ = tx.send(r);
        });
        let sent = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).send(job);
        let answer = match sent {
            Ok(()) => rx.recv().ok(),
            Err(_) => None,
        };
        match answer {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(self.error(e)),
            None => {
                Err(StoreError::Postgres { db: self.shown.clone(), message: "its connection thread stopped".into() })
            }
        }
    }

    fn error(&self, e: PgError) -> StoreError {
        match e {
            PgError::Newer(found) => {
                StoreError::PostgresNewer { db: self.shown.clone(), found, supported: SCHEMA_VERSION }
            }
            PgError::Decode(d) => StoreError::Decode(d),
            PgError::Pg(e) => {
                // `db error: ERROR: ...` carries the server's message in its source; connection errors their cause.
                let mut message = e.to_string();
                if let Some(db) = e.as_db_error() {
                    message = format!("{}: {}", db.code().code(), db.message());
                } else if let Some(src) = std::error::Error::source(&e) {
                    message = format!("{message}: {src}");
                }
                StoreError::Postgres { db: self.shown.clone(), message }
            }
        }
    }

    /// Connects (and migrates) now; an error says why the database cannot be used.
    pub fn check(&self) -> Result<(), StoreError> {
        self.call(|c| Ok(c.simple_query("SELECT 1").map(|_| ())?))
    }

    /// The schema version of the database (applied migrations).
    pub fn schema_version(&self) -> Result<i32, StoreError> {
        self.call(|c| Ok(c.query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])?.get(0)))
    }

    /// Writes a batch of records and their daily and hourly rollups in one transaction. A record whose id is
    /// stored already is skipped (rollups untouched). Returns how many were new.
    pub fn write_records<R>(&self, recs: &[R]) -> Result<u64, StoreError>
    where
        R: std::borrow::Borrow<RequestRecord> + Clone + Send + 'static,
    {
        if recs.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(recs.len());
        let mut times = Vec::with_capacity(recs.len());
        let mut bodies = Vec::with_capacity(recs.len());
        for r in recs {
            let r = r.borrow();
            ids.push(r.id.to_be_bytes().to_vec());
            times.push(r.time_ms);
            bodies.push(tables::encode_record(r));
        }
        // For the connection's thread: shared records (the writer's) are not copied.
        let recs = recs.to_vec();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let rows = tx.query(
                "INSERT INTO requests (id, time_ms, rec) \
                 SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[]) \
                 ON CONFLICT (id) DO NOTHING RETURNING id",
                &[&ids, &times, &bodies],
            )?;
            let mut inserted: HashSet<u128> = rows.iter().map(|r| id_of(r.get::<_, &[u8]>(0))).collect();
            let new = inserted.len() as u64;
            // Only what was inserted now is rolled up: a replayed batch counts once.
            let mut daily: BTreeMap<DailyKey, Counters> = BTreeMap::new();
            let mut hourly: BTreeMap<DailyKey, Counters> = BTreeMap::new();
            for r in recs.iter().map(R::borrow) {
                if inserted.remove(&r.id) {
                    let k = DailyKey::of(r);
                    let c = Counters::of(r);
                    let h = DailyKey { day: tables::hour_of_ms(r.time_ms), ..k.clone() };
                    daily.entry(k).or_default().add(&c);
                    hourly.entry(h).or_default().add(&c);
                }
            }
            upsert(&mut tx, "usage_daily", "day", &daily, false)?;
            upsert(&mut tx, "usage_hourly", "hour", &hourly, false)?;
            tx.commit()?;
            Ok(new)
        })
    }

    /// Deletes request records older than `before_ms` (rollups stay) and records the bound.
    pub fn prune_requests(&self, before_ms: i64) -> Result<u64, StoreError> {
        let bound = (((before_ms.max(0)) as u128) << 64).to_be_bytes().to_vec();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let n = tx.execute("DELETE FROM requests WHERE id < $1", &[&bound])?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = greatest(meta.value, excluded.value)",
                &[&tables::META_PRUNED_BEFORE, &before_ms.max(0)],
            )?;
            tx.commit()?;
            Ok(n)
        })
    }

    /// Unix ms before which request records may have been pruned (0: never).
    pub fn pruned_before(&self) -> Result<i64, StoreError> {
        self.meta(tables::META_PRUNED_BEFORE)
    }

    /// `meta[key]`, 0 when unset.
    pub fn meta(&self, key: &'static str) -> Result<i64, StoreError> {
        self.call(move |c| {
            let row = c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?;
            Ok(row.map(|r| r.get::<_, i64>(0)).unwrap_or(0))
        })
    }

    /// Sets `meta[key]` to `value`.
    pub fn set_meta(&self, key: &'static str, value: i64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )?;
            Ok(())
        })
    }

    /// Visits request records with ids in `range`, newest first when `rev`; stops when `f` returns false. Reads
    /// a page at a time.
    pub fn scan_requests(
        &self,
        range: std::ops::Range<u128>,
        rev: bool,
        mut f: impl FnMut(RequestRecord) -> bool,
    ) -> Result<(), StoreError> {
        let (mut lo, mut hi) = (range.start, range.end);
        while lo < hi {
            let (l, h) = (lo.to_be_bytes().to_vec(), hi.to_be_bytes().to_vec());
            let page: Vec<(u128, RequestRecord)> = self.call(move |c| {
                let sql = if rev {
                    "SELECT id, rec FROM requests WHERE id >= $1 AND id < $2 ORDER BY id DESC LIMIT $3"
                } else {
                    "SELECT id, rec FROM requests WHERE id >= $1 AND id < $2 ORDER BY id LIMIT $3"
                };
                let mut out = Vec::new();
                for row in c.query(sql, &[&l, &h, &PAGE])? {
                    out.push((id_of(row.get::<_, &[u8]>(0)), tables::decode_record(row.get::<_, &[u8]>(1))?));
                }
                Ok(out)
            })?;
            let full = page.len() as i64 == PAGE;
            let Some(&(last, _)) = page.last() else { break };
            for (_, r) in page {
                if !f(r) {
                    return Ok(());
                }
            }
            if !full {
                break;
            }
            if rev {
                hi = last;
            } else {
                lo = last + 1;
            }
        }
        Ok(())
    }

    /// Visits the daily rollups of UTC days `first..=last`, in key order.
    pub fn scan_daily(&self, first: u32, last: u32, f: impl FnMut(DailyKey, Counters)) -> Result<(), StoreError> {
        self.scan_rollup("usage_daily", "day", first, last, f)
    }

    /// Visits the hourly rollups of hours `first..=last` (hours since the Unix epoch, UTC), in key order.
    pub fn scan_hourly(&self, first: u32, last: u32, mut f: impl FnMut(HourlyKey, Counters)) -> Result<(), StoreError> {
        self.scan_rollup("usage_hourly", "hour", first, last, |k, c| {
            let DailyKey { day, channel, endpoint, token_fp, token_key, model, gateway_key } = k;
            f(HourlyKey { hour: day, channel, endpoint, token_fp, token_key, model, gateway_key }, c)
        })
    }

    fn scan_rollup(
        &self,
        table: &'static str,
        unit: &'static str,
        first: u32,
        last: u32,
        mut f: impl FnMut(DailyKey, Counters),
    ) -> Result<(), StoreError> {
        if first > last {
            return Ok(());
        }
        let (first, last) = (first.min(i32::MAX as u32) as i32, last.min(i32::MAX as u32) as i32);
        let rows = self.call(move |c| {
            let sql = format!(
                "SELECT {unit}, channel, endpoint, token_fp, token_key, model, gateway_key, requests, errors, input, \
                 cache_read, cache_write, output, reasoning, cost_usd, unknown_cost, estimated FROM {table} \
                 WHERE {unit} BETWEEN $1 AND $2 \
                 ORDER BY {unit}, channel, endpoint, token_fp, token_key, model, gateway_key"
            );
            let mut out = Vec::new();
            for r in c.query(&sql, &[&first, &last])? {
                let k = DailyKey {
                    day: r.get::<_, i32>(0) as u32,
                    channel: r.get(1),
                    endpoint: r.get(2),
                    token_fp: r.get(3),
                    token_key: r.get(4),
                    model: r.get(5),
                    gateway_key: r.get(6),
                };
                let n = |i: usize| r.get::<_, i64>(i) as u64;
                let c = Counters {
                    requests: n(7),
                    errors: n(8),
                    input: n(9),
                    cache_read: n(10),
                    cache_write: n(11),
                    output: n(12),
                    reasoning: n(13),
                    cost_usd: r.get(14),
                    unknown_cost: n(15),
                    estimated: n(16),
                };
                out.push((k, c));
            }
            Ok(out)
        })?;
        for (k, c) in rows {
            f(k, c);
        }
        Ok(())
    }

    /// Sets rollup rows to the given counters (for `store migrate`: the source's rollups, not recomputed; a
    /// second run sets the same values), in one transaction. `hourly` picks the table.
    pub fn set_rollups(&self, hourly: bool, rows: BTreeMap<DailyKey, Counters>) -> Result<(), StoreError> {
        self.call(move |c| {
            let mut tx = c.transaction()?;
            if hourly {
                upsert(&mut tx, "usage_hourly", "hour", &rows, true)?;
            } else {
                upsert(&mut tx, "usage_daily", "day", &rows, true)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Copies records without touching the rollups (for `store migrate`, which copies the rollups as they
    /// are). Returns how many were new.
    pub fn insert_records_only(&self, recs: &[RequestRecord]) -> Result<u64, StoreError> {
        let ids: Vec<Vec<u8>> = recs.iter().map(|r| r.id.to_be_bytes().to_vec()).collect();
        let times: Vec<i64> = recs.iter().map(|r| r.time_ms).collect();
        let bodies: Vec<Vec<u8>> = recs.iter().map(tables::encode_record).collect();
        self.call(move |c| {
            Ok(c.execute(
                "INSERT INTO requests (id, time_ms, rec) SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[]) \
                 ON CONFLICT (id) DO NOTHING",
                &[&ids, &times, &bodies],
            )?)
        })
    }

    /// Whether any request record, rollup or KV row exists (`store migrate` refuses to merge into a used
    /// database unless asked).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        self.call(|c| {
            let r = c.query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM requests) AND NOT EXISTS (SELECT 1 FROM usage_daily) \
                 AND NOT EXISTS (SELECT 1 FROM kv)",
                &[],
            )?;
            Ok(r.get(0))
        })
    }

    /// Sets `meta[key]` to at least `value`.
    pub fn raise_meta(&self, key: &'static str, value: i64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = greatest(meta.value, excluded.value)",
                &[&key, &value],
            )?;
            Ok(())
        })
    }

    pub fn get_raw(&self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.call(move |c| {
            let row = c.query_opt("SELECT value FROM kv WHERE tbl = $1 AND key = $2", &[&table, &key])?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    pub fn list_raw(&self, table: &'static str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.call(move |c| {
            let rows = c.query("SELECT key, value FROM kv WHERE tbl = $1 ORDER BY key", &[&table])?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Changes one KV table in one transaction (see `Store::apply_kv`). Changes of one table are serialised
    /// across instances by an advisory lock, so "must be absent" holds against a concurrent insert too.
    pub fn apply_kv(
        &self,
        table: &'static str,
        absent: &[String],
        removes: &[String],
        puts: &[(String, Vec<u8>)],
    ) -> Result<Result<(), String>, StoreError> {
        let (absent, removes, puts) = (absent.to_vec(), removes.to_vec(), puts.to_vec());
        self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&(MIGRATION_LOCK as i32), &table])?;
            for k in &absent {
                if tx.query_opt("SELECT 1 FROM kv WHERE tbl = $1 AND key = $2", &[&table, k])?.is_some() {
                    return Ok(Err(k.clone()));
                }
            }
            for k in &removes {
                tx.execute("DELETE FROM kv WHERE tbl = $1 AND key = $2", &[&table, k])?;
            }
            for (k, v) in &puts {
                tx.execute(
                    "INSERT INTO kv (tbl, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value",
                    &[&table, k, v],
                )?;
            }
            tx.commit()?;
            Ok(Ok(()))
        })
    }

    /// Removes `key`; returns whether it was there.
    pub fn delete(&self, table: &'static str, key: &str) -> Result<bool, StoreError> {
        let key = key.to_string();
        self.call(move |c| Ok(c.execute("DELETE FROM kv WHERE tbl = $1 AND key = $2", &[&table, &key])? > 0))
    }
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg").field("db", &self.shown).finish()
    }
}

fn id_of(b: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    let n = b.len().min(16);
    a[16 - n..].copy_from_slice(&b[b.len() - n..]);
    u128::from_be_bytes(a)
}

/// Adds `rows` (unique keys, in key order: every instance locks rows in the same order) to a rollup table, or
/// sets them to these values when `replace`.
fn upsert(
    tx: &mut postgres::Transaction<'_>,
    table: &str,
    unit: &str,
    rows: &BTreeMap<DailyKey, Counters>,
    replace: bool,
) -> Result<(), postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    /// Column arrays: the unit, the six key strings, nine integer counters, the cost.
    type Columns<'a> = (Vec<i32>, [Vec<&'a str>; 6], [Vec<i64>; 9], Vec<f64>);
    let mut cols: Columns<'_> = Default::default();
    for (k, c) in rows {
        cols.0.push(k.day as i32);
        for (v, s) in
            cols.1.iter_mut().zip([&k.channel, &k.endpoint, &k.token_fp, &k.token_key, &k.model, &k.gateway_key])
        {
            v.push(s.as_str());
        }
        let n = [
            c.requests,
            c.errors,
            c.input,
            c.cache_read,
            c.cache_write,
            c.output,
            c.reasoning,
            c.unknown_cost,
            c.estimated,
        ];
        for (v, x) in cols.2.iter_mut().zip(n) {
            v.push(x as i64);
        }
        cols.3.push(c.cost_usd);
    }
    let set = |col: &str| {
        if replace { format!("{col} = excluded.{col}") } else { format!("{col} = u.{col} + excluded.{col}") }
    };
    let sets = [
        "requests",
        "errors",
        "input",
        "cache_read",
        "cache_write",
        "output",
        "reasoning",
        "unknown_cost",
        "estimated",
        "cost_usd",
    ]
    .map(set)
    .join(", ");
    let sql = format!(
        "INSERT INTO {table} AS u ({unit}, channel, endpoint, token_fp, token_key, model, gateway_key, requests, \
         errors, input, cache_read, cache_write, output, reasoning, unknown_cost, estimated, cost_usd) \
         SELECT c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17 \
         FROM unnest($1::int4[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::int8[], \
         $16::int8[], $17::float8[]) WITH ORDINALITY \
         AS t(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, o) ORDER BY o \
         ON CONFLICT ({unit}, channel, endpoint, token_fp, token_key, model, gateway_key) DO UPDATE SET {sets}"
    );
    let [a, b, c, d, e, f] = &cols.1;
    let [n0, n1, n2, n3, n4, n5, n6, n7, n8] = &cols.2;
    tx.execute(&sql, &[&cols.0, a, b, c, d, e, f, n0, n1, n2, n3, n4, n5, n6, n7, n8, &cols.3])?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::tests::rec;
    use crate::store::{KvTable, Store};

    /// A fresh database on the local PostgreSQL (dropped on drop), or None (test skipped, reason printed) when
    /// none answers and `ROUTER_REQUIRE_POSTGRES` is unset.
    pub(crate) struct TempDb {
        pub url: String,
        name: String,
    }

    const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    impl TempDb {
        pub(crate) fn new() -> Option<TempDb> {
            let mut admin = match postgres::Client::connect(ADMIN, NoTls) {
                Ok(c) => c,
                Err(e) if std::env::var_os("ROUTER_REQUIRE_POSTGRES").is_none() => {
                    eprintln!("skipped: no PostgreSQL on 127.0.0.1:5432 ({e})");
                    return None;
                }
                Err(e) => panic!("ROUTER_REQUIRE_POSTGRES is set but PostgreSQL does not answer: {e}"),
            };
            let name = format!("router_u_{:016x}", rand::random::<u64>());
            admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
            Some(TempDb { url: format!("postgres://postgres@127.0.0.1:5432/{name}"), name })
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            if let Ok(mut admin) = postgres::Client::connect(ADMIN, NoTls) {
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
            }
        }
    }

    #[test]
    fn records_and_rollups_are_written_once_and_read_back_in_order() {
        let Some(db) = TempDb::new() else { return };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(&dir.path().join("s.redb"), Some(&db.url)).unwrap();
        let day = 20_000 * 86_400_000i64;
        let batch = [rec(day + 1, "fp:a", 10), rec(day + 2, "fp:a", 5), rec(day + 3_600_000, "fp:b", 1)];
        assert_eq!(store.write_records(&batch).unwrap(), 3);
        // The same batch again (a replay): nothing new, rollups unchanged.
        assert_eq!(store.write_records(&batch).unwrap(), 0);
        store.write_records(&[rec(day + 86_400_000, "fp:a", 100)]).unwrap();
        let mut times = Vec::new();
        store
            .scan_requests(0..u128::MAX, true, |r| {
                times.push(r.time_ms - day);
                true
            })
            .unwrap();
        assert_eq!(times, vec![86_400_000, 3_600_000, 2, 1]);
        let mut rows = Vec::new();
        store.scan_daily(0, u32::MAX, |k, c| rows.push((k.day, k.token_fp, c.requests, c.input))).unwrap();
        assert_eq!(
            rows,
            vec![(20_000, "fp:a".into(), 2, 15), (20_000, "fp:b".into(), 1, 1), (20_001, "fp:a".into(), 1, 100)]
        );
        let mut hours = Vec::new();
        store.scan_hourly(0, u32::MAX, |k, c| hours.push((k.hour - 20_000 * 24, c.requests))).unwrap();
        assert_eq!(hours, vec![(0, 2), (1, 1), (24, 1)]);
        // Paging: more records than a page, visited in order and stoppable.
        let many: Vec<_> = (0..2500).map(|i| rec(day + 10_000 + i, "fp:c", 1)).collect();
        for chunk in many.chunks(700) {
            store.write_records(chunk).unwrap();
        }
        let (mut n, mut last) = (0, 0u128);
        store
            .scan_requests(0..u128::MAX, false, |r| {
                assert!(r.id > last);
                last = r.id;
                n += 1;
                true
            })
            .unwrap();
        assert_eq!(n, 2504);
        assert_eq!(store.prune_requests(day + 5).unwrap(), 2);
        assert_eq!(store.pruned_before().unwrap(), day + 5);
    }

    #[test]
    fn kv_tables_and_migrations() {
        let Some(db) = TempDb::new() else { return };
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_with(&dir.path().join("s.redb"), Some(&db.url)).unwrap();
        s.put_json(KvTable::Balances, "b", &2u32).unwrap();
        s.put_json(KvTable::Balances, "a", &1u32).unwrap();
        s.put_json(KvTable::Channels, "a", &9u32).unwrap();
        assert_eq!(s.list_json::<u32>(KvTable::Balances).unwrap(), vec![("a".into(), 1), ("b".into(), 2)]);
        let e = s.apply_kv(KvTable::Balances, &["a".into()], &[], &[]).unwrap_err();
        assert!(matches!(e, StoreError::Exists { .. }), "{e}");
        assert!(s.delete(KvTable::Balances, "a").unwrap());
        assert!(!s.delete(KvTable::Balances, "a").unwrap());
        assert_eq!(s.get_json::<u32>(KvTable::Channels, "a").unwrap(), Some(9));
        // A second open applies nothing again; a newer schema is refused.
        let dir2 = tempfile::tempdir().unwrap();
        let s2 = Store::open_with(&dir2.path().join("s.redb"), Some(&db.url)).unwrap();
        assert_eq!(s2.postgres().unwrap().schema_version().unwrap(), SCHEMA_VERSION);
        let mut c = postgres::Client::connect(&db.url, NoTls).unwrap();
        c.execute("INSERT INTO schema_migrations (version) VALUES (999)", &[]).unwrap();
        let dir3 = tempfile::tempdir().unwrap();
        let e = Store::open_with(&dir3.path().join("s.redb"), Some(&db.url)).unwrap_err();
        assert!(matches!(e, StoreError::PostgresNewer { found: 999, .. }), "{e}");
    }

    #[test]
    fn an_unreachable_database_spools_records_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        // Nothing listens on port 1.
        let store = Store::open_with(&path, Some("postgres://u:secret@127.0.0.1:1/x")).unwrap();
        assert_eq!(store.write_records(&[rec(1, "fp:a", 1), rec(2, "fp:a", 2)]).unwrap(), 0);
        assert_eq!(store.spooled(), 2);
        let why = store.shared_problem().unwrap();
        assert!(why.contains("127.0.0.1:1") && !why.contains("secret"), "{why}");
        drop(store);
        // Spooled records survive a restart, in arrival order.
        let again = Store::open_with(&path, Some("postgres://u:secret@127.0.0.1:1/x")).unwrap();
        assert_eq!(again.spooled(), 2);
        assert_eq!(again.spool_take(10).unwrap().iter().map(|r| r.time_ms).collect::<Vec<_>>(), vec![1, 2]);
    }
}
