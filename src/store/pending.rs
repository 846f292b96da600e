//! The pending file: request records the store could not take yet, one JSON line each, in a directory of its own
//! (`store.pending_dir`, by default the system temp directory, so a full store disk does not stop it).
//!
//! Owns the file's format, appending to it and reading it back in order (the writer spills records there past
//! `store.max_pending_records` and on a shutdown with the store still failing), and importing one into a store
//! (`router store import-pending`, also through the control socket). Must not decide when to spill: that is
//! the writer's business.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Op, Store};
use crate::usage::RequestRecord;

/// A pending file being written, and read back once the store takes records again. Each record is one write of
/// one whole line (no user-space buffer that could fail later); a write that fails is cut off again, so the file
/// only ever holds whole records.
pub struct PendingFile {
    path: PathBuf,
    out: File,
    /// Bytes of whole records in the file.
    len: u64,
    line: Vec<u8>,
    input: Option<BufReader<File>>,
    written: u64,
    read: u64,
}

/// The name prefix of the pending files of the store at `store`: `router-pending-<store file stem>-`.
pub fn prefix(store: &Path) -> String {
    let stem = store.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let stem: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    format!("router-pending-{stem}-")
}

/// Pending files for the store at `store` left in `dir` (by a server that stopped with records unsaved, or was
/// killed while its store failed), oldest first.
pub fn leftovers(dir: &Path, store: &Path) -> Vec<PathBuf> {
    let prefix = prefix(store);
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".jsonl")))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

impl PendingFile {
    /// Creates a new pending file for the store at `store` in `dir` (created when missing), named after the
    /// store, the time and this process.
    pub fn create(dir: &Path, store: &Path) -> std::io::Result<PendingFile> {
        std::fs::create_dir_all(dir)?;
        let name = format!("{}{}-{}.jsonl", prefix(store), crate::usage::now_ms(), std::process::id());
        let path = dir.join(name);
        // Private (usage records are the owner's business, and the default directory is shared) and never an
        // existing file or link.
        let file = std::fs::OpenOptions::new().create_new(true).append(true).mode(0o600).open(&path)?;
        Ok(PendingFile { path, out: file, len: 0, line: Vec::with_capacity(2048), input: None, written: 0, read: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records appended and not yet read back.
    pub fn unread(&self) -> u64 {
        self.written - self.read
    }

    /// Appends one record as one line. On failure (the directory's disk is full too) the file is cut back to
    /// its last whole record and the record is not in it.
    pub fn append(&mut self, rec: &RequestRecord) -> std::io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, rec)?;
        self.line.push(b'\n');
        if let Err(e) = self.out.write_all(&self.line) {
            let _ = self.out.set_len(self.len);
            return Err(e);
        }
        self.len += self.line.len() as u64;
        self.written += 1;
        Ok(())
    }

    /// Makes the file durable.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.out.sync_all()
    }

    /// Reads back up to `max` of the oldest unread records, in the order they were appended.
    pub fn read_next<R: From<RequestRecord>>(
        &mut self,
        max: usize,
        into: &mut impl Extend<R>,
    ) -> std::io::Result<usize> {
        if self.input.is_none() {
            self.input = Some(BufReader::new(File::open(&self.path)?));
        }
        let input = self.input.as_mut().expect("just opened");
        let mut n = 0;
        let mut line = String::new();
        while n < max && self.read < self.written {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                break;
            }
            let rec: RequestRecord = serde_json::from_str(&line).map_err(std::io::Error::other)?;
            into.extend(std::iter::once(R::from(rec)));
            self.read += 1;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes the file (everything in it is saved).
    pub fn remove(self) -> std::io::Result<()> {
        let path = self.path.clone();
        drop(self);
        std::fs::remove_file(path)
    }
}

/// Reads a pending file: every complete record, in order. A last line cut short (the process died while
/// writing it) is skipped and counted; any other unreadable line is an error naming the file and line.
pub fn read_file(path: &Path) -> anyhow::Result<(Vec<RequestRecord>, usize)> {
    let file = File::open(path).map_err(|e| {
        crate::error::user(format!("cannot read the pending file {}: {e}", path.display()))
            .with_hint("give the path `router serve` printed when it stopped")
    })?;
    let mut recs = Vec::new();
    let mut cut = 0;
    let mut lines = BufReader::new(file).split(b'\n').enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<RequestRecord>(&line) {
            Ok(r) => recs.push(r),
            Err(e) if e.is_eof() && lines.peek().is_none() => cut += 1,
            Err(e) => {
                return Err(crate::error::user(format!("{}:{}: not a request record: {e}", path.display(), i + 1))
                    .with_hint("a pending file holds one JSON request record per line, as `router serve` wrote it")
                    .into());
            }
        }
    }
    Ok((recs, cut))
}

/// Saves request records into the store: the records of a pending file, sent by `router store import-pending`.
/// Records already in the store are skipped, so importing a file twice counts it once.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordsImport {
    #[serde(with = "crate::usage::records_as_text")]
    pub records: Vec<RequestRecord>,
}

/// How many of the records were new to the store.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ImportedRecords {
    pub new: u64,
    pub already: u64,
}

impl Op for RecordsImport {
    const NAME: &'static str = "records_import";
    type Reply = ImportedRecords;

    fn run(self, store: &Store) -> anyhow::Result<ImportedRecords> {
        let mut out = ImportedRecords::default();
        for chunk in self.records.chunks(1024) {
            let new = store.write_records(chunk)?;
            out.new += new;
            out.already += chunk.len() as u64 - new;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: i64) -> RequestRecord {
        RequestRecord {
            id: crate::usage::new_id(1_700_000_000_000 + i),
            time_ms: 1_700_000_000_000 + i,
            ..Default::default()
        }
    }

    #[test]
    fn appends_reads_back_in_order_and_imports_once() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("pending");
        let mut f = PendingFile::create(&pdir, Path::new("/data/my store.redb")).unwrap();
        assert!(f.path().file_name().unwrap().to_str().unwrap().starts_with("router-pending-my_store-"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(f.path()).unwrap().permissions().mode() & 0o777, 0o600);
        for i in 0..10 {
            f.append(&rec(i)).unwrap();
        }
        let mut got: Vec<RequestRecord> = Vec::new();
        assert_eq!(f.read_next(4, &mut got).unwrap(), 4);
        f.append(&rec(10)).unwrap();
        assert_eq!(f.read_next(100, &mut got).unwrap(), 7);
        assert_eq!(f.unread(), 0);
        assert_eq!(got.iter().map(|r| r.time_ms - 1_700_000_000_000).collect::<Vec<_>>(), (0..11).collect::<Vec<_>>());
        f.sync().unwrap();
        let path = f.path().to_path_buf();
        assert_eq!(leftovers(&pdir, Path::new("/elsewhere/my store.redb")), vec![path.clone()]);
        assert!(leftovers(&pdir, Path::new("/data/other.redb")).is_empty());
        // A line cut short at the end (a crash while writing) is skipped, not an error.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"id\":1");
        std::fs::write(&path, text).unwrap();
        let (recs, cut) = read_file(&path).unwrap();
        assert_eq!((recs.len(), cut), (11, 1));
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let first = RecordsImport { records: recs.clone() }.run(&store).unwrap();
        assert_eq!((first.new, first.already), (11, 0));
        let again = RecordsImport { records: recs }.run(&store).unwrap();
        assert_eq!((again.new, again.already), (0, 11));
        let mut daily = 0;
        store.scan_daily(0, u32::MAX, |_, c| daily += c.requests).unwrap();
        assert_eq!(daily, 11, "a second import does not count twice");
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.jsonl");
        std::fs::write(
            &p,
            format!(
                "{}\nnot json\n{}\n",
                serde_json::to_string(&rec(1)).unwrap(),
                serde_json::to_string(&rec(2)).unwrap()
            ),
        )
        .unwrap();
        let e = read_file(&p).unwrap_err().to_string();
        assert!(e.contains("p.jsonl:2"), "{e}");
    }
}
