//! `router store import-pending FILE...`: saves the request records a `router serve` could not write to its
//! store (it names the pending file when it stops, and `/health` names it while running).
//!
//! Reaches the store directly or through a running server's control socket. Importing is idempotent: records
//! already in the store are skipped, so a file imported twice is counted once.
//!
//! `router store migrate --from FILE --to postgres://...`: copies a redb store into PostgreSQL
//! (`store::migrate`); repeatable, it never writes the source.

use std::path::PathBuf;

use super::output;
use crate::settings::Settings;
use crate::store::Access;
use crate::store::pending::{self, RecordsImport};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Save the request records of pending files into the store (the files `serve` wrote when the store could
    /// not take them), then remove each file.
    ImportPending(ImportPendingArgs),
    /// Copy a redb store (records, rollups, channels, keys, balances, discovery) into PostgreSQL, for
    /// `store.postgres`. Safe to run again: what is there already is not counted twice. Stop the `router serve`
    /// that holds the file first.
    Migrate(MigrateArgs),
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The redb store to copy (default: the store `--store` / ROUTER_STORE / store.path names).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// The PostgreSQL database (default: store.postgres of the configuration).
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// Print what was copied as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImportPendingArgs {
    /// Pending files, as `router serve` named them (router-pending-*.jsonl).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Keep each file after its records are saved.
    #[arg(long)]
    pub keep: bool,
}

/// Records sent to the store per operation (one write transaction each).
const CHUNK: usize = 2000;

pub fn run(settings: &Settings, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::ImportPending(args) => import_pending(settings, args),
        Command::Migrate(args) => migrate(settings, args),
    }
}

fn migrate(settings: &Settings, args: MigrateArgs) -> anyhow::Result<()> {
    use crate::error::user;
    use crate::store::{Store, StoreError, pg};
    let from = match args.from {
        Some(f) => f,
        None => settings.store_path()?,
    };
    let url = match args.to.or_else(crate::store::postgres_url) {
        Some(u) => u,
        None => {
            return Err(user("no PostgreSQL database to migrate to")
                .with_hint("pass --to postgres://user:password@host:5432/database, or set store.postgres")
                .into());
        }
    };
    if !from.exists() {
        return Err(user(format!("{} does not exist", from.display()))
            .with_hint("pass the redb store to copy with --from")
            .into());
    }
    let source = match Store::open_with(&from, None) {
        Ok(s) => s,
        Err(StoreError::Locked { path }) => {
            return Err(user(format!("{} is held by a running `router serve`", path.display()))
                .with_hint("stop it first: the copy must see every record it has")
                .into());
        }
        Err(e) => return Err(e.into_cli()),
    };
    let target = pg::Pg::open(&url).map_err(StoreError::into_cli)?;
    target.check().map_err(StoreError::into_cli)?;
    let done = crate::store::migrate::to_postgres(&source, &target, |n| {
        if n % 100_000 == 0 {
            output::note(&format!("{n} request records copied"));
        }
    })
    .map_err(StoreError::into_cli)?;
    if args.json {
        return output::json(&done);
    }
    output::line(&format!(
        "{} -> {}: {} request records ({} new), {} daily and {} hourly rollup rows, {} rows of channels, keys, \
         balances and discovery",
        from.display(),
        target.shown(),
        done.records,
        done.new_records,
        done.daily_rows,
        done.hourly_rows,
        done.kv_rows
    ));
    if !done.target_was_empty {
        output::note(
            "note: the database was not empty: records already there were skipped and the copied rollup rows were \
             set to this store's values",
        );
    }
    Ok(())
}

fn import_pending(settings: &Settings, args: ImportPendingArgs) -> anyhow::Result<()> {
    // Read every file first: a bad file is reported before anything is written.
    let mut files = Vec::new();
    for f in &args.files {
        let (records, cut) = pending::read_file(f)?;
        files.push((f, records, cut));
    }
    let access = Access::open(&settings.store_path()?)?;
    for (file, records, cut) in files {
        let (mut new, mut already) = (0, 0);
        for chunk in records.chunks(CHUNK) {
            let r = access.run(RecordsImport { records: chunk.to_vec() })?;
            new += r.new;
            already += r.already;
        }
        let mut line = format!("{}: {new} request records saved", file.display());
        if already > 0 {
            line.push_str(&format!(", {already} were already in the store"));
        }
        output::line(&line);
        if cut > 0 {
            output::note(&format!(
                "note: {}: the last line was cut short (the server stopped while writing it) and was skipped",
                file.display()
            ));
        }
        if !args.keep
            && let Err(e) = std::fs::remove_file(file)
        {
            output::note(&format!("note: the records are saved, but {} cannot be removed: {e}", file.display()));
        }
    }
    Ok(())
}
