//! Reading the `channels` table of a foreign database: a SQLite file, MySQL/MariaDB or PostgreSQL.
//!
//! Owns connecting (read-only: SQLite opened with `SQLITE_OPEN_READ_ONLY`, MySQL and PostgreSQL inside a
//! read-only transaction) and turning rows into column-name -> [`Value`] maps, so the mapping reads columns by
//! name and never depends on a dialect. It must not interpret the rows, and its errors never quote a row value.

use crate::failure::redact_url as redact;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the channels could not be read. Every variant is something the user can act on.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("`{0}` does not exist")]
    Missing(PathBuf),
    #[error("cannot open `{path}`: {message}")]
    Open { path: String, message: String },
    #[error("`{0}` is locked by another process")]
    Locked(String),
    #[error("`{0}` is not a SQLite database, or it is corrupt")]
    Corrupt(String),
    #[error("`{0}` has no `channels` table: not a One-API / New-API database")]
    NoChannels(String),
    #[error("the `channels` table of `{db}` lacks the column `{column}`: not a One-API / New-API database")]
    MissingColumn { db: String, column: String },
    #[error("cannot connect to {server} at `{db}`: {message}")]
    Connect { server: &'static str, db: String, message: String },
    #[error("reading `channels` from `{db}` failed: {message}")]
    Query { db: String, message: String },
    #[error("invalid database URL `{0}`: {1}")]
    BadUrl(String, String),
}

impl SourceError {
    /// A next step for the user.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            SourceError::Missing(_) => {
                "give the path of one-api.db (SQLITE_PATH of the One-API server), or a mysql:// / postgres:// URL"
            }
            SourceError::Open { .. } => "check the path and that you may read it",
            SourceError::Locked(_) => "stop One-API / New-API or retry when it is idle; the import only reads",
            SourceError::Corrupt(_) => "check the file with `sqlite3 FILE 'PRAGMA integrity_check'`",
            SourceError::NoChannels(_) | SourceError::MissingColumn { .. } => {
                "point at the database One-API / New-API itself uses (SQLITE_PATH or SQL_DSN)"
            }
            SourceError::Connect { .. } => "check the URL, the credentials and that the server is running",
            SourceError::Query { .. } => return None,
            SourceError::BadUrl(..) => "write mysql://user:pass@host[:port]/db or postgres://user:pass@host[:port]/db",
        })
    }
}

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// One row, by lower-case column name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(pub BTreeMap<String, Value>);

impl Row {
    pub fn get(&self, col: &str) -> Option<&Value> {
        self.0.get(col)
    }

    /// The cell as text; NULL and missing columns are `None`, blobs are decoded as UTF-8.
    pub fn text(&self, col: &str) -> Option<String> {
        match self.0.get(col)? {
            Value::Null => None,
            Value::Int(i) => Some(i.to_string()),
            Value::Real(f) => Some(f.to_string()),
            Value::Text(s) => Some(s.clone()),
            Value::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
        }
    }

    /// The cell as text, trimmed, `None` when empty.
    pub fn nonempty(&self, col: &str) -> Option<String> {
        self.text(col).map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// The cell as an integer (text is parsed; MySQL's text protocol sends numbers as text).
    pub fn int(&self, col: &str) -> Option<i64> {
        match self.0.get(col)? {
            Value::Int(i) => Some(*i),
            Value::Real(f) => Some(*f as i64),
            Value::Text(s) => s.trim().parse().ok().or_else(|| s.trim().parse::<f64>().ok().map(|f| f as i64)),
            Value::Blob(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            Value::Null => None,
        }
    }
}

/// The `channels` table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Lower-case column names in table order.
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

/// Columns every One-API lineage has; without them the table is someone else's.
const REQUIRED: [&str; 5] = ["id", "type", "key", "status", "name"];

/// Where to read from.
#[derive(Debug, Clone)]
pub enum Source {
    Sqlite(PathBuf),
    Mysql(String),
    Postgres(String),
}

impl Source {
    /// `mysql://...`, `postgres://...` / `postgresql://...`, `sqlite://PATH`, or a file path.
    pub fn parse(s: &str) -> Result<Source, SourceError> {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("mysql://") || lower.starts_with("mariadb://") {
            let url = if lower.starts_with("mariadb://") {
                format!("mysql://{}", &s["mariadb://".len()..])
            } else {
                s.into()
            };
            return Ok(Source::Mysql(url));
        }
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(Source::Postgres(s.into()));
        }
        if s.contains("@tcp(") {
            return Err(SourceError::BadUrl(
                redact(s),
                "this is a Go MySQL DSN (One-API's SQL_DSN); write it as mysql://user:pass@host:port/db".into(),
            ));
        }
        let path = s.strip_prefix("sqlite://").or_else(|| s.strip_prefix("sqlite:")).unwrap_or(s);
        let mut path = PathBuf::from(path);
        // One-API's SQLITE_PATH may carry `?_busy_timeout=3000`.
        if !path.exists()
            && let Some((file, _)) = s.split_once('?')
            && Path::new(file).exists()
        {
            path = PathBuf::from(file);
        }
        Ok(Source::Sqlite(path))
    }

    /// Which database this is, stably and without credentials: `sqlite:<absolute path>`, or
    /// `mysql://host:port/db` / `postgres://host:port/db`. Part of every imported channel's `source`, so two
    /// instances imported into one store never update each other's channels.
    pub fn identity(&self) -> String {
        match self {
            Source::Sqlite(p) => {
                let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
                format!("sqlite:{}", abs.display())
            }
            Source::Mysql(u) => server_identity("mysql", u, 3306),
            Source::Postgres(u) => server_identity("postgres", u, 5432),
        }
    }

    /// For display: passwords replaced by `***`.
    pub fn display(&self) -> String {
        match self {
            Source::Sqlite(p) => p.display().to_string(),
            Source::Mysql(u) | Source::Postgres(u) => redact(u),
        }
    }

    pub fn read_channels(&self) -> Result<Table, SourceError> {
        let table = match self {
            Source::Sqlite(p) => read_sqlite(p)?,
            Source::Mysql(u) => read_mysql(u)?,
            Source::Postgres(u) => read_postgres(u)?,
        };
        for col in REQUIRED {
            if !table.columns.iter().any(|c| c == col) {
                return Err(SourceError::MissingColumn { db: self.display(), column: col.into() });
            }
        }
        Ok(table)
    }
}

/// `scheme://host:port/db` of a database URL: no user, no password, no options.
fn server_identity(scheme: &str, u: &str, default_port: u16) -> String {
    match url::Url::parse(u) {
        Ok(url) => format!(
            "{scheme}://{}:{}{}",
            url.host_str().unwrap_or("localhost").to_ascii_lowercase(),
            url.port().unwrap_or(default_port),
            url.path()
        ),
        Err(_) => format!("{scheme}://{}", u.rsplit_once('@').map_or(u, |(_, h)| h)),
    }
}

fn read_sqlite(path: &Path) -> Result<Table, SourceError> {
    use rusqlite::{ErrorCode, OpenFlags, types::ValueRef};
    let shown = path.display().to_string();
    if !path.exists() {
        return Err(SourceError::Missing(path.to_path_buf()));
    }
    let classify = |e: rusqlite::Error| -> SourceError {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => SourceError::Locked(shown.clone()),
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => SourceError::Corrupt(shown.clone()),
            Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
                SourceError::Open { path: shown.clone(), message: e.to_string() }
            }
            _ => SourceError::Query { db: shown.clone(), message: e.to_string() },
        }
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(classify)?;
    conn.busy_timeout(Duration::from_secs(3)).map_err(classify)?;
    let exists: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'channels'", [], |r| r.get(0))
        .map_err(classify)?;
    if exists == 0 {
        return Err(SourceError::NoChannels(shown));
    }
    let mut stmt = conn.prepare("SELECT * FROM channels").map_err(classify)?;
    let columns: Vec<String> = stmt.column_names().map(|c| c.to_ascii_lowercase()).collect();
    let mut rows = Vec::new();
    let mut q = stmt.query([]).map_err(classify)?;
    while let Some(r) = q.next().map_err(classify)? {
        let mut row = Row::default();
        for (i, col) in columns.iter().enumerate() {
            let v = match r.get_ref(i).map_err(classify)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::Int(i),
                ValueRef::Real(f) => Value::Real(f),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            };
            row.0.insert(col.clone(), v);
        }
        rows.push(row);
    }
    Ok(sort(Table { columns, rows }))
}

fn sort(mut t: Table) -> Table {
    t.rows.sort_by_key(|r| r.int("id").unwrap_or(i64::MAX));
    t
}

fn read_mysql(dsn: &str) -> Result<Table, SourceError> {
    use mysql::prelude::Queryable;
    let shown = redact(dsn);
    let opts = mysql::Opts::from_url(dsn).map_err(|e| SourceError::BadUrl(shown.clone(), e.to_string()))?;
    if opts.get_db_name().is_none_or(str::is_empty) {
        return Err(SourceError::BadUrl(shown, "no database name".into()));
    }
    let opts = mysql::OptsBuilder::from_opts(opts).tcp_connect_timeout(Some(Duration::from_secs(5)));
    let connect = |e: mysql::Error| SourceError::Connect { server: "MySQL", db: shown.clone(), message: e.to_string() };
    let query = |e: mysql::Error| SourceError::Query { db: shown.clone(), message: e.to_string() };
    let mut conn = mysql::Conn::new(opts).map_err(connect)?;
    conn.query_drop("SET SESSION TRANSACTION READ ONLY").map_err(query)?;
    let n: Option<i64> = conn
        .query_first(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'channels'",
        )
        .map_err(query)?;
    if n.unwrap_or(0) == 0 {
        return Err(SourceError::NoChannels(shown));
    }
    let mut result = conn.query_iter("SELECT * FROM channels").map_err(query)?;
    let columns: Vec<String> = result.columns().as_ref().iter().map(|c| c.name_str().to_ascii_lowercase()).collect();
    let mut rows = Vec::new();
    for r in result.by_ref() {
        let r = r.map_err(query)?;
        let mut row = Row::default();
        for (i, col) in columns.iter().enumerate() {
            let v = match r.as_ref(i) {
                None | Some(mysql::Value::NULL) => Value::Null,
                Some(mysql::Value::Bytes(b)) => match String::from_utf8(b.clone()) {
                    Ok(s) => Value::Text(s),
                    Err(e) => Value::Blob(e.into_bytes()),
                },
                Some(mysql::Value::Int(i)) => Value::Int(*i),
                Some(mysql::Value::UInt(u)) => Value::Int(i64::try_from(*u).unwrap_or(i64::MAX)),
                Some(mysql::Value::Float(f)) => Value::Real(f64::from(*f)),
                Some(mysql::Value::Double(f)) => Value::Real(*f),
                Some(other) => Value::Text(other.as_sql(true)),
            };
            row.0.insert(col.clone(), v);
        }
        rows.push(row);
    }
    Ok(sort(Table { columns, rows }))
}

fn read_postgres(dsn: &str) -> Result<Table, SourceError> {
    let shown = redact(dsn);
    let mut config: postgres::Config =
        dsn.parse().map_err(|e: postgres::Error| SourceError::BadUrl(shown.clone(), e.to_string()))?;
    config.connect_timeout(Duration::from_secs(5));
    let mut client = config.connect(postgres::NoTls).map_err(|e| SourceError::Connect {
        server: "PostgreSQL",
        db: shown.clone(),
        message: e.to_string(),
    })?;
    let query = |e: postgres::Error| SourceError::Query { db: shown.clone(), message: e.to_string() };
    let mut tx = client.build_transaction().read_only(true).start().map_err(query)?;
    let columns: Vec<String> = tx
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'channels' ORDER BY ordinal_position",
            &[],
        )
        .map_err(query)?
        .iter()
        .map(|r| r.get::<_, String>(0).to_ascii_lowercase())
        .collect();
    if columns.is_empty() {
        return Err(SourceError::NoChannels(shown));
    }
    // row_to_json gives every dialect type (json, numeric, bytea, ...) one shape.
    let mut rows = Vec::new();
    for r in tx.query("SELECT row_to_json(c)::text FROM channels c", &[]).map_err(query)? {
        let text: String = r.get(0);
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| SourceError::Query { db: shown.clone(), message: e.to_string() })?;
        let mut row = Row::default();
        for (k, v) in obj {
            let v = match v {
                serde_json::Value::Null => Value::Null,
                serde_json::Value::Bool(b) => Value::Int(i64::from(b)),
                serde_json::Value::Number(n) => {
                    n.as_i64().map(Value::Int).unwrap_or(Value::Real(n.as_f64().unwrap_or(0.0)))
                }
                serde_json::Value::String(s) => Value::Text(s),
                other => Value::Text(other.to_string()),
            };
            row.0.insert(k.to_ascii_lowercase(), v);
        }
        rows.push(row);
    }
    tx.commit().map_err(query)?;
    Ok(sort(Table { columns, rows }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("mysql://root:hunter2@db:3306/oneapi"), "mysql://root:***@db:3306/oneapi");
        assert_eq!(redact("postgres://postgres@localhost/x"), "postgres://postgres@localhost/x");
    }

    #[test]
    fn sources_are_recognised() {
        assert!(matches!(Source::parse("mysql://a@b/c").unwrap(), Source::Mysql(_)));
        assert!(matches!(Source::parse("postgresql://a@b/c").unwrap(), Source::Postgres(_)));
        assert!(matches!(Source::parse("/tmp/one-api.db").unwrap(), Source::Sqlite(_)));
        let id = |s: &str| Source::parse(s).unwrap().identity();
        assert_eq!(id("mysql://root:pw@DB.example/oneapi?tls=true"), "mysql://db.example:3306/oneapi");
        assert_eq!(id("postgres://u:secret@10.0.0.2:6543/newapi"), "postgres://10.0.0.2:6543/newapi");
        assert_ne!(id("mysql://u@a/oneapi"), id("mysql://u@b/oneapi"));
        assert_eq!(id("sqlite:///nowhere/one-api.db"), "sqlite:/nowhere/one-api.db");
        assert!(matches!(Source::parse("root:pw@tcp(localhost:3306)/oneapi"), Err(SourceError::BadUrl(..))));
    }

    #[test]
    fn foreign_and_corrupt_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("foreign.db");
        rusqlite::Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE users (id integer);").unwrap();
        assert!(matches!(Source::Sqlite(foreign).read_channels(), Err(SourceError::NoChannels(_))));
        let corrupt = dir.path().join("corrupt.db");
        std::fs::write(&corrupt, vec![0x42u8; 8192]).unwrap();
        assert!(matches!(Source::Sqlite(corrupt).read_channels(), Err(SourceError::Corrupt(_))));
        let missing = dir.path().join("nope.db");
        assert!(matches!(Source::Sqlite(missing).read_channels(), Err(SourceError::Missing(_))));
        let other = dir.path().join("other.db");
        rusqlite::Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE channels (id integer, x text);")
            .unwrap();
        assert!(matches!(Source::Sqlite(other).read_channels(), Err(SourceError::MissingColumn { .. })));
    }

    #[test]
    fn locked_database_is_reported_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("locked.db");
        let w = rusqlite::Connection::open(&p).unwrap();
        w.execute_batch("CREATE TABLE channels (id integer, type integer, key text, status integer, name text);")
            .unwrap();
        // An exclusive transaction keeps even readers out (rollback journal mode).
        w.execute_batch("BEGIN EXCLUSIVE; INSERT INTO channels VALUES (1, 1, 'k', 1, 'n');").unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(Source::Sqlite(p).read_channels(), Err(SourceError::Locked(_))));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
