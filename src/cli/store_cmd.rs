//! `router store import-pending FILE...`: saves the request records a `router serve` could not write to its
//! store (it names the pending file when it stops, and `/health` names it while running).
//!
//! Reaches the store directly or through a running server's control socket. Importing is idempotent: records
//! already in the store are skipped, so a file imported twice is counted once.

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
    }
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
