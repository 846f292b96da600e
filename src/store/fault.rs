//! Test seam: a redb backend over the real file whose writes fail on demand, so the writer's recovery from a
//! full disk or a read-only file is tested without root, a small filesystem or a remount.
//!
//! Owns only the failing; everything else goes to redb's own `FileBackend` (locks included). Compiled in tests
//! only.

use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, Database, DatabaseError, StorageBackend};

/// What the "disk" does now: 0 works; an errno (ENOSPC, EROFS, EACCES) makes every write, resize and sync
/// fail with that error, and makes opening the file fail with it too (as a read-only or full filesystem does).
#[derive(Debug, Default)]
pub struct Fault {
    errno: AtomicI32,
}

impl Fault {
    pub fn set(&self, errno: i32) {
        self.errno.store(errno, Ordering::SeqCst);
    }

    fn check(&self) -> io::Result<()> {
        match self.errno.load(Ordering::SeqCst) {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Opens (or creates) the database at `path` behind this fault.
    pub fn open(self: &Arc<Self>, path: &Path) -> Result<Database, DatabaseError> {
        self.check()?;
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let backend = Faulty { inner: FileBackend::new(file)?, fault: self.clone() };
        redb::Builder::new().create_with_backend(backend)
    }
}

#[derive(Debug)]
struct Faulty {
    inner: FileBackend,
    fault: Arc<Fault>,
}

impl StorageBackend for Faulty {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fault.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.fault.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.fault.check()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
