//! The one task that writes request records: drains the `usage::sink` channel in batches, and keeps every
//! record through a store that cannot be written (full disk, read-only or unwritable file).
//!
//! Owns batching (one durable write transaction per batch, committed when `batch_max` records are waiting or
//! `window` after the first one arrived, whichever comes first), the recovery state machine below, draining on
//! shutdown, and the hourly retention prune. Reports its state through the sink's [`SinkHealth`]. Must not drop
//! a record: when it cannot keep one anywhere, it stops taking records, so requests wait at their end.
//!
//! Recovery: a failed commit puts its batch back at the front of the backlog; the writer marks the sink
//! degraded (logged once), and retries with backoff (`retry_min` doubling up to `retry_max`), closing and
//! reopening the store before each attempt (redb refuses every write after an I/O error until then). Records
//! that arrive meanwhile queue behind it, in memory up to `max_pending`, then in a pending file in `pending_dir`
//! (see `store::pending`); if that file cannot be written either, the writer stops taking records
//! (back-pressure). After the first commit that works, the backlog and then the pending file are committed in
//! order and the sink is healthy again (each change of state logged once). On shutdown the writer keeps trying
//! until the grace deadline, then appends what is left to the pending file for `router store import-pending`.
//!
//! With PostgreSQL (`store.postgres`) a batch it cannot take is spooled by the store in its redb file (that is
//! the store's business: the commit succeeds); the writer publishes the spool's size and PostgreSQL's error in
//! [`SinkHealth`] and, while idle, asks the store to replay the spool every 250 ms.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::pending::PendingFile;
use super::{Store, StoreError};
use crate::usage::RequestRecord;
use crate::usage::sink::SinkHealth;

/// Records kept in memory while the store cannot be written, by default: about 130 MB at ~1.3 KB a record,
/// some 3 minutes of 500 requests a second.
pub use crate::config::DEFAULT_MAX_PENDING_RECORDS as DEFAULT_MAX_PENDING;

/// How often an idle writer tries to replay records spooled for PostgreSQL.
const SPOOL_POLL: Duration = Duration::from_millis(250);

/// A failing store is not reopened while its filesystem has less room than this.
const MIN_FREE_TO_RETRY: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Commit once this many records are waiting.
    pub batch_max: usize,
    /// Commit at the latest this long after the first record of a batch arrived.
    pub window: Duration,
    /// Prune request records older than this many days (0: keep everything).
    pub retention_days: u32,
    /// How often the retention prune runs.
    pub prune_every: Duration,
    /// Records kept in memory while the store cannot be written; later ones go to the pending file.
    pub max_pending: usize,
    /// Where the pending file goes (best on another filesystem than the store).
    pub pending_dir: PathBuf,
    /// First wait before retrying a failed commit; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Observes how long each batch took to commit, in seconds (the metrics' store histogram).
    pub batch_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            batch_max: 512,
            window: Duration::from_millis(50),
            retention_days: 0,
            prune_every: Duration::from_secs(3600),
            max_pending: DEFAULT_MAX_PENDING,
            pending_dir: std::env::temp_dir(),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            batch_seconds: None,
        }
    }
}

/// What the writer did, reported when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records committed to the store.
    pub records: u64,
    pub batches: u64,
    /// Records that could be kept nowhere, not even in a pending file (each logged as an error).
    pub lost: u64,
    pub pruned: u64,
    /// Records the store did not take before shutdown, left in `pending_file`.
    pub unsaved: u64,
    pub pending_file: Option<PathBuf>,
}

/// The running writer. Call [`WriterHandle::shutdown`] to drain and stop it.
pub struct WriterHandle {
    stop: watch::Sender<Option<Instant>>,
    task: JoinHandle<WriterStats>,
    flush: Flusher,
}

/// Asks the writer to commit what is queued now (read-your-writes for reports). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Flusher(mpsc::UnboundedSender<oneshot::Sender<()>>);

impl Flusher {
    /// Returns once every record queued before the call is committed, at once while the store cannot be
    /// written (the records are pending; the socket's notice says so), or when the writer is gone.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.0.send(tx).is_ok() {
            let _ = rx.await;
        }
    }
}

impl WriterHandle {
    pub fn flusher(&self) -> Flusher {
        self.flush.clone()
    }

    /// Stops accepting new records and commits everything queued (and anything sent with a permit already
    /// reserved). While the store cannot be written it keeps trying for `grace`, then writes what is left to
    /// the pending file (see [`WriterStats::pending_file`]).
    pub async fn shutdown(self, grace: Duration) -> WriterStats {
        let _ = self.stop.send(Some(Instant::now() + grace));
        self.task.await.unwrap_or_default()
    }
}

/// Starts the writer on the current tokio runtime; it reports its state in `health`.
pub fn spawn(
    store: Store,
    rx: mpsc::Receiver<Arc<RequestRecord>>,
    opts: WriterOptions,
    health: Arc<SinkHealth>,
) -> WriterHandle {
    let (stop, stop_rx) = watch::channel(None);
    let (flush, flush_rx) = mpsc::unbounded_channel();
    let w = Writer {
        flush_rx,
        waiting: Vec::new(),
        store,
        backlog: VecDeque::with_capacity(opts.batch_max),
        opts,
        health,
        rx,
        file: None,
        file_failed: false,
        holding: false,
        failing: None,
        catching_up: None,
        stats: WriterStats::default(),
        in_flight: 0,
        deadline: None,
        closed: false,
    };
    let task = tokio::spawn(w.run(stop_rx));
    WriterHandle { stop, task, flush: Flusher(flush) }
}

struct Writer {
    /// Flush barriers: answered once a commit leaves the queue empty, or at once while the store fails.
    flush_rx: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    waiting: Vec<oneshot::Sender<()>>,
    store: Store,
    opts: WriterOptions,
    health: Arc<SinkHealth>,
    rx: mpsc::Receiver<Arc<RequestRecord>>,
    /// Records received and not yet committed, oldest first; all older than those in `file`. Shared with the
    /// event stream (`usage::sink`).
    backlog: VecDeque<Arc<RequestRecord>>,
    /// Records beyond `max_pending`, on disk; once it exists, new records go there until it is drained.
    file: Option<PendingFile>,
    /// The pending file could not be written: no records are taken while the backlog is full.
    file_failed: bool,
    /// Records are not taken (back-pressure); mirrored in the sink's health.
    holding: bool,
    failing: Option<Failing>,
    /// Since the store took records again: when, and how many were pending then.
    catching_up: Option<(Instant, u64)>,
    stats: WriterStats,
    /// Records of the batch being committed.
    in_flight: u64,
    /// Set when shutdown began: give up on a failing store at this time.
    deadline: Option<Instant>,
    /// The channel is closed and empty.
    closed: bool,
}

/// The store cannot be written.
struct Failing {
    since: Instant,
    next_try: Instant,
    delay: Duration,
    reason: String,
}

impl Writer {
    async fn run(mut self, mut stop: watch::Receiver<Option<Instant>>) -> WriterStats {
        let mut prune_tick = tokio::time::interval(self.opts.prune_every);
        prune_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let idle = self.failing.is_none() && self.backlog.is_empty() && self.file.is_none();
            if idle {
                let first = tokio::select! {
                    biased;
                    r = self.rx.recv() => r,
                    _ = stop.changed(), if self.deadline.is_none() => {
                        self.begin_stop(&stop);
                        continue;
                    }
                    _ = prune_tick.tick(), if self.opts.retention_days > 0 && self.deadline.is_none() => {
                        self.stats.pruned += prune(&self.store, self.opts.retention_days).await;
                        continue;
                    }
                    Some(w) = self.flush_rx.recv() => {
                        // Records sent before the barrier are in the queue now: answer when they are committed.
                        if self.rx.is_empty() { let _ = w.send(()); } else { self.waiting.push(w); }
                        continue;
                    }
                    // Records spooled for PostgreSQL: replay them when it answers, even with no new records.
                    _ = tokio::time::sleep(SPOOL_POLL), if self.store.spooled() > 0 || self.store.shared_problem().is_some() => {
                        let s = self.store.clone();
                        let _ = tokio::task::spawn_blocking(move || s.retry_spool()).await;
                        self.publish();
                        continue;
                    }
                };
                let Some(first) = first else { break };
                self.backlog.push_back(first);
                // Let the window pass without waking for every record (each wake-up costs the proxy a
                // cross-thread notification), then take what queued up. A full channel holds senders back.
                let deadline = Instant::now() + self.opts.window;
                if self.deadline.is_none() && self.waiting.is_empty() && self.rx.len() + 1 < self.opts.batch_max {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        Some(w) = self.flush_rx.recv() => self.waiting.push(w),
                        _ = stop.changed() => self.begin_stop(&stop),
                    }
                }
                let room = self.opts.batch_max - self.backlog.len();
                self.take_queued(room);
            } else if let Some(next_try) = self.failing.as_ref().map(|f| f.next_try) {
                // The store fails: take records as they come until the next attempt (or the shutdown deadline).
                let give_up = self.deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
                tokio::select! {
                    r = self.rx.recv(), if self.taking() => {
                        match r {
                            Some(rec) => self.accept(rec),
                            None => self.closed = true,
                        }
                        self.publish();
                        continue;
                    }
                    _ = stop.changed(), if self.deadline.is_none() => {
                        self.begin_stop(&stop);
                        continue;
                    }
                    _ = tokio::time::sleep_until(give_up), if self.deadline.is_some() => break,
                    Some(w) = self.flush_rx.recv() => {
                        let _ = w.send(());
                        continue;
                    }
                    _ = tokio::time::sleep_until(next_try) => {}
                }
                self.file_failed = false;
                // Still (nearly) full: a reopen would repair the whole file only to fail again.
                if self.store.free_bytes().is_some_and(|b| b < MIN_FREE_TO_RETRY) {
                    self.back_off();
                    continue;
                }
                let s = self.store.clone();
                match tokio::task::spawn_blocking(move || s.reopen()).await.expect("store reopen panicked") {
                    Ok(()) => {}
                    Err(e) => {
                        self.fail(e);
                        continue;
                    }
                }
            } else if self.catching_up.is_some() {
                // Catching up after the store came back: take what is queued, so requests do not wait meanwhile.
                self.take_queued(usize::MAX);
            } else {
                // More than a batch was waiting: fill the next one; the rest stays in the channel (back-pressure).
                let room = self.opts.batch_max.saturating_sub(self.backlog.len());
                self.take_queued(room);
            }
            self.commit_next().await;
            self.publish();
            if self.failing.is_some() || (self.rx.is_empty() && self.backlog.is_empty() && self.file.is_none()) {
                for w in self.waiting.drain(..) {
                    let _ = w.send(());
                }
            }
        }
        self.finish()
    }

    fn begin_stop(&mut self, stop: &watch::Receiver<Option<Instant>>) {
        // Refuse new records; what is queued (and reserved permits) still arrives, then `recv` ends.
        self.deadline = Some(stop.borrow().unwrap_or_else(Instant::now));
        self.rx.close();
    }

    /// Whether to take records from the channel: not while the backlog is full and the pending file cannot be
    /// written (senders then wait: back-pressure).
    fn taking(&self) -> bool {
        let held = self.failing.is_some() && self.file_failed && self.backlog.len() >= self.opts.max_pending;
        !self.closed && !held
    }

    /// Takes up to `max` records already in the channel, without waiting.
    fn take_queued(&mut self, max: usize) {
        let mut n = 0;
        while n < max && self.taking() {
            match self.rx.try_recv() {
                Ok(rec) => self.accept(rec),
                Err(_) => break,
            }
            n += 1;
        }
    }

    /// Queues one record: in memory, or in the pending file once memory is full (or the file is in use).
    fn accept(&mut self, rec: Arc<RequestRecord>) {
        let to_file = self.file.is_some() || self.backlog.len() >= self.opts.max_pending;
        if to_file && !self.file_failed {
            match self.append_to_file(&rec) {
                Ok(()) => {
                    if self.holding {
                        tracing::warn!("request records go to the pending file again; requests no longer wait");
                        self.set_holding(false);
                    }
                    return;
                }
                Err(e) if self.failing.is_none() => {
                    // The store takes records again (it is catching up): memory holds them meanwhile.
                    tracing::debug!("cannot append to the pending file ({e}); keeping records in memory");
                    self.file_failed = true;
                }
                Err(e) => {
                    self.file_failed = true;
                    if !self.holding {
                        tracing::error!(
                            "cannot write request records to a pending file in {}: {e}; {} records are held in \
                             memory and new requests now wait for the store (back-pressure)",
                            self.opts.pending_dir.display(),
                            self.backlog.len() + 1
                        );
                        self.set_holding(true);
                    }
                }
            }
        }
        self.backlog.push_back(rec);
    }

    fn append_to_file(&mut self, rec: &RequestRecord) -> std::io::Result<()> {
        if self.file.is_none() {
            let f = PendingFile::create(&self.opts.pending_dir, self.store.path())?;
            tracing::warn!(
                "{} request records are waiting in memory (store.max_pending_records); further ones go to {} \
                 until the store takes them",
                self.backlog.len(),
                f.path().display()
            );
            self.health.set_pending_file(Some(f.path().to_path_buf()));
            self.file = Some(f);
        }
        self.file.as_mut().expect("just created").append(rec)
    }

    /// Commits the oldest batch (from the backlog, else from the pending file).
    async fn commit_next(&mut self) {
        if self.backlog.is_empty() {
            self.refill_from_file();
        }
        if self.backlog.is_empty() {
            return;
        }
        let n = self.backlog.len().min(self.opts.batch_max);
        let batch: Vec<Arc<RequestRecord>> = self.backlog.drain(..n).collect();
        self.in_flight = n as u64;
        self.publish();
        let s = self.store.clone();
        let t0 = Instant::now();
        let (batch, res) = tokio::task::spawn_blocking(move || {
            let r = s.write_records(&batch);
            (batch, r)
        })
        .await
        .expect("store writer thread panicked");
        self.in_flight = 0;
        if let Some(h) = &self.opts.batch_seconds {
            h.observe(t0.elapsed().as_secs_f64());
        }
        match res {
            Ok(_) => {
                self.stats.records += n as u64;
                self.stats.batches += 1;
                if let Some(f) = self.failing.take() {
                    let pending = self.pending() + n as u64;
                    tracing::warn!(
                        "usage store writable again after {:.0?}; saving {pending} pending request records",
                        f.since.elapsed()
                    );
                    self.health.set_degraded(None);
                    self.set_holding(false);
                    self.file_failed = false;
                    self.catching_up = Some((Instant::now(), pending));
                }
                if self.backlog.is_empty()
                    && self.file.is_none()
                    && let Some((since, n)) = self.catching_up.take()
                {
                    tracing::info!("all {n} pending request records saved in {:.1?}", since.elapsed());
                }
            }
            Err(e) => {
                for rec in batch.into_iter().rev() {
                    self.backlog.push_front(rec);
                }
                self.fail(e);
            }
        }
    }

    /// Moves the oldest records of the pending file into the (empty) backlog; removes the file once drained.
    fn refill_from_file(&mut self) {
        let Some(f) = &mut self.file else { return };
        if f.unread() == 0 {
            let f = self.file.take().expect("checked");
            let path = f.path().display().to_string();
            if let Err(e) = f.remove() {
                tracing::warn!("cannot remove the drained pending file {path}: {e}");
            }
            self.health.set_pending_file(None);
            self.file_failed = false;
            return;
        }
        if let Err(e) = f.read_next(self.opts.batch_max, &mut self.backlog) {
            let lost = f.unread();
            tracing::error!(
                "cannot read back the pending file {}: {e}; {lost} request records in it were not saved",
                f.path().display()
            );
            self.stats.lost += lost;
            self.file = None;
            self.health.set_pending_file(None);
        }
    }

    fn fail(&mut self, e: StoreError) {
        let now = Instant::now();
        let reason = e.to_string();
        match &mut self.failing {
            None => {
                tracing::error!(
                    "usage store cannot be written: {reason}. Request records are kept (up to {} in memory, then \
                     in a pending file in {}) and the store is retried until it takes them",
                    self.opts.max_pending,
                    self.opts.pending_dir.display()
                );
                self.health.set_degraded(Some(reason.clone()));
                let delay = self.opts.retry_min;
                self.failing = Some(Failing { since: now, next_try: now + delay, delay, reason });
                self.catching_up = None;
            }
            Some(f) => {
                // "after an earlier I/O error" says nothing new: keep the cause.
                if f.reason != reason && !matches!(e, StoreError::AfterIoError) {
                    tracing::debug!("usage store still cannot be written: {reason}");
                    self.health.set_degraded(Some(reason.clone()));
                    f.reason = reason;
                }
                self.back_off();
            }
        }
    }

    /// Schedules the next attempt later, keeping the reason.
    fn back_off(&mut self) {
        if let Some(f) = &mut self.failing {
            f.delay = (f.delay * 2).min(self.opts.retry_max);
            f.next_try = Instant::now() + f.delay;
        }
    }

    fn set_holding(&mut self, holding: bool) {
        self.holding = holding;
        self.health.set_holding(holding);
    }

    fn pending(&self) -> u64 {
        self.in_flight + self.backlog.len() as u64 + self.file.as_ref().map_or(0, |f| f.unread())
    }

    fn publish(&self) {
        let in_file = self.file.as_ref().map_or(0, |f| f.unread());
        // The channel's used slots: records queued, and those whose request reserved room and is sending it.
        let queued = self.rx.max_capacity() - self.rx.capacity();
        // Records spooled for PostgreSQL are durable here but not yet where reports read them.
        let spooled = self.store.spooled();
        self.health.set_pending(self.pending() + queued as u64 + spooled, in_file);
        self.health.set_spooled(spooled);
        if self.failing.is_none() {
            self.health.set_degraded(self.store.shared_problem());
        }
    }

    /// After the loop: what the store did not take goes to the pending file.
    fn finish(mut self) -> WriterStats {
        while let Ok(rec) = self.rx.try_recv() {
            self.backlog.push_back(rec);
        }
        if self.backlog.is_empty() && self.file.is_none() {
            self.publish();
            return self.stats;
        }
        let reason = self.failing.as_ref().map_or_else(|| "shutting down".to_string(), |f| f.reason.clone());
        let left = self.pending();
        let mut file = self.file.take();
        let mut written = Ok(());
        for dir in [self.opts.pending_dir.clone(), std::env::temp_dir()] {
            if file.is_none() {
                match PendingFile::create(&dir, self.store.path()) {
                    Ok(f) => file = Some(f),
                    Err(e) => {
                        written = Err(format!("cannot create a pending file in {}: {e}", dir.display()));
                        continue;
                    }
                }
            }
            let f = file.as_mut().expect("set above");
            written = self
                .backlog
                .iter()
                .try_for_each(|r| f.append(r))
                .and_then(|()| f.sync())
                .map_err(|e| format!("cannot write the pending file {}: {e}", f.path().display()));
            if written.is_ok() {
                break;
            }
            file = None;
        }
        match (written, file) {
            (Ok(()), Some(f)) => {
                tracing::error!(
                    "usage store still cannot be written ({reason}); {left} request records were written to {} \
                     instead: `router store import-pending {}` saves them once the store has room",
                    f.path().display(),
                    f.path().display()
                );
                self.stats.unsaved = left;
                self.stats.pending_file = Some(f.path().to_path_buf());
            }
            (res, _) => {
                let e = res.err().unwrap_or_else(|| "no pending file could be created".into());
                tracing::error!("{left} request records could not be saved: the store fails ({reason}) and {e}");
                self.stats.lost += left;
            }
        }
        self.health.set_pending(0, 0);
        self.stats
    }
}

async fn prune(store: &Store, days: u32) -> u64 {
    let cutoff = crate::usage::now_ms() - days as i64 * 86_400_000;
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.prune_requests(cutoff)).await {
        Ok(Ok(n)) => {
            if n > 0 {
                tracing::info!("retention: pruned {n} request records older than {days} days");
            }
            n
        }
        Ok(Err(e)) => {
            tracing::warn!("retention prune failed: {e}");
            0
        }
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::sink::RecordSink;

    fn rec(i: u64) -> RequestRecord {
        RequestRecord {
            id: crate::usage::new_id(1_700_000_000_000 + i as i64),
            time_ms: 1_700_000_000_000 + i as i64,
            token_fp: Some("fp:x".into()),
            tokens: crate::usage::Tokens { input: i, ..Default::default() },
            ..Default::default()
        }
    }

    fn count(store: &Store) -> (u64, u64) {
        let (mut n, mut input) = (0, 0);
        store
            .scan_requests(0..u128::MAX, false, |r| {
                n += 1;
                input += r.tokens.input;
                true
            })
            .unwrap();
        (n, input)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_drains_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (sink, rx) = RecordSink::new(64);
        let w = spawn(store.clone(), rx, WriterOptions { batch_max: 16, ..Default::default() }, sink.health().clone());
        for i in 0..1000 {
            sink.send(rec(i)).await;
        }
        let stats = w.shutdown(Duration::from_secs(5)).await;
        assert_eq!(stats.records, 1000);
        assert!(stats.batches >= 1000 / 16);
        assert_eq!(count(&store), (1000, (0..1000).sum()));
        let mut daily = 0;
        store.scan_daily(0, u32::MAX, |_, c| daily += c.requests).unwrap();
        assert_eq!(daily, 1000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_within_the_window_without_more_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (sink, rx) = RecordSink::new(64);
        let w = spawn(store.clone(), rx, WriterOptions::default(), sink.health().clone());
        sink.send(rec(7)).await;
        let mut seen = false;
        for _ in 0..200 {
            if count(&store).0 == 1 {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen, "a lone record was not committed within 2 s");
        w.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_returns_once_queued_records_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (sink, rx) = RecordSink::new(64);
        // A window far longer than the test: only the barrier can make the records visible.
        let opts = WriterOptions { window: Duration::from_secs(3600), ..Default::default() };
        let w = spawn(store.clone(), rx, opts, sink.health().clone());
        w.flusher().flush().await; // nothing queued: answers at once
        for i in 0..3 {
            sink.send(rec(i)).await;
        }
        w.flusher().flush().await;
        assert_eq!(count(&store).0, 3);
        w.shutdown(Duration::from_secs(5)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_prunes_old_records_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let old = RequestRecord { time_ms: 1_000, id: crate::usage::new_id(1_000), ..Default::default() };
        let new_ms = crate::usage::now_ms();
        let new = RequestRecord { time_ms: new_ms, id: crate::usage::new_id(new_ms), ..Default::default() };
        store.write_records(&[old, new]).unwrap();
        let (sink, rx) = RecordSink::new(8);
        let w =
            spawn(store.clone(), rx, WriterOptions { retention_days: 1, ..Default::default() }, sink.health().clone());
        let mut pruned = false;
        for _ in 0..200 {
            if count(&store).0 == 1 {
                pruned = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(pruned);
        let mut daily = 0;
        store.scan_daily(0, u32::MAX, |_, c| daily += c.requests).unwrap();
        assert_eq!(daily, 2, "rollups stay");
        assert_eq!(w.shutdown(Duration::from_secs(5)).await.pruned, 1);
    }

    // The recovery state machine, driven by a backend whose writes fail on demand (no root, no small disk).

    use crate::store::Op;
    use crate::store::fault::Fault;
    use crate::usage::sink::SinkStatus;

    fn fast(dir: &std::path::Path) -> WriterOptions {
        WriterOptions {
            batch_max: 16,
            window: Duration::from_millis(2),
            retry_min: Duration::from_millis(2),
            retry_max: Duration::from_millis(20),
            pending_dir: dir.join("pending"),
            ..Default::default()
        }
    }

    /// Waits (up to 10 s) until `f` holds for the sink's status.
    async fn until(sink: &RecordSink, what: &str, f: impl Fn(&SinkStatus) -> bool) -> SinkStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = sink.health().status();
            if f(&s) {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}; status {s:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A writer over a store whose writes fail on demand.
    struct Rig {
        dir: tempfile::TempDir,
        fault: Arc<Fault>,
        store: Store,
        sink: RecordSink,
        writer: WriterHandle,
    }

    fn rig(capacity: usize, opts: impl FnOnce(&std::path::Path) -> WriterOptions) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let fault = Arc::new(Fault::default());
        let store = Store::open_with_fault(&dir.path().join("s.redb"), fault.clone()).unwrap();
        let (sink, rx) = RecordSink::new(capacity);
        let writer = spawn(store.clone(), rx, opts(dir.path()), sink.health().clone());
        Rig { dir, fault, store, sink, writer }
    }

    async fn send_all(sink: &RecordSink, ids: std::ops::Range<u64>) {
        for i in ids {
            sink.send(rec(i)).await;
        }
    }

    fn daily(store: &Store) -> u64 {
        let mut n = 0;
        store.scan_daily(0, u32::MAX, |_, c| n += c.requests).unwrap();
        n
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_store_keeps_every_record_and_recovers_without_restart() {
        for errno in [libc::ENOSPC, libc::EROFS, libc::EACCES] {
            let Rig { dir: _dir, fault, store, sink, writer: w } = rig(64, fast);
            send_all(&sink, 0..100).await;
            until(&sink, "the first records", |s| s.pending == 0).await;
            fault.set(errno);
            send_all(&sink, 100..400).await;
            let s = until(&sink, "degraded with 300 pending", |s| s.state == "degraded" && s.pending == 300).await;
            // A report's flush barrier does not wait for a store that fails.
            tokio::time::timeout(Duration::from_secs(5), w.flusher().flush()).await.expect("flush answers");
            let reason = s.reason.unwrap();
            let os = std::io::Error::from_raw_os_error(errno).to_string();
            assert!(reason.contains(&os), "the cause, not its consequences: {reason}");
            assert_eq!((s.pending_in_file, s.holding_requests), (0, false));
            fault.set(0);
            until(&sink, "recovered", |s| s.state == "ok" && s.pending == 0).await;
            // Records sent after the recovery are saved too.
            send_all(&sink, 400..450).await;
            let stats = w.shutdown(Duration::from_secs(5)).await;
            assert_eq!((stats.records, stats.lost, stats.unsaved), (450, 0, 0), "errno {errno}");
            assert_eq!(count(&store), (450, (0..450).sum()), "errno {errno}");
            assert_eq!(daily(&store), 450, "errno {errno}: each record rolled up once");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_memory_bound_records_wait_in_the_pending_file_then_reach_the_store() {
        let Rig { dir, fault, store, sink, writer: w } = rig(64, |d| WriterOptions { max_pending: 50, ..fast(d) });
        fault.set(libc::ENOSPC);
        send_all(&sink, 0..500).await;
        // (`pending` counts records still in the channel too, so wait for the writer to have taken them all.)
        let s = until(&sink, "450 of 500 pending in the file", |s| s.pending == 500 && s.pending_in_file == 450).await;
        assert_eq!(s.state, "degraded");
        let file = s.pending_file.expect("a pending file");
        assert!(file.starts_with(dir.path().join("pending")), "{}", file.display());
        fault.set(0);
        until(&sink, "all saved", |s| s.state == "ok" && s.pending == 0 && s.pending_file.is_none()).await;
        assert!(!file.exists(), "the drained pending file is removed");
        let stats = w.shutdown(Duration::from_secs(5)).await;
        assert_eq!((stats.records, stats.lost), (500, 0));
        assert_eq!(count(&store), (500, (0..500).sum()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_while_the_store_fails_writes_the_backlog_to_a_pending_file() {
        let Rig { dir: _dir, fault, store, sink, writer: w } =
            rig(64, |d| WriterOptions { max_pending: 30, ..fast(d) });
        fault.set(libc::ENOSPC);
        send_all(&sink, 0..100).await;
        until(&sink, "100 pending", |s| s.pending == 100).await;
        let stats = w.shutdown(Duration::from_millis(50)).await;
        assert_eq!((stats.records, stats.unsaved, stats.lost), (0, 100, 0));
        let file = stats.pending_file.expect("a pending file");
        let (recs, cut) = crate::store::pending::read_file(&file).unwrap();
        assert_eq!((recs.len(), cut), (100, 0));
        // Space returns: the file is imported into the store, every record once.
        fault.set(0);
        store.reopen().unwrap();
        let r = crate::store::pending::RecordsImport { records: recs }.run(&store).unwrap();
        assert_eq!(r.new, 100);
        assert_eq!(count(&store), (100, (0..100).sum()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn when_no_pending_file_can_be_written_requests_wait_instead_of_losing_records() {
        // A pending directory that cannot be created (a file is in the way), even as root.
        let Rig { dir: _dir, fault, store, sink, writer: w } = rig(4, |d| {
            std::fs::write(d.join("blocker"), b"").unwrap();
            WriterOptions { max_pending: 20, pending_dir: d.join("blocker/pending"), ..fast(d) }
        });
        fault.set(libc::ENOSPC);
        send_all(&sink, 0..25).await;
        let s = until(&sink, "holding", |s| s.holding_requests).await;
        assert_eq!(s.state, "degraded");
        // The writer takes no more; the channel fills and the next sender waits.
        let more = {
            let sink = sink.clone();
            tokio::spawn(async move { send_all(&sink, 25..40).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!more.is_finished(), "senders wait while no record can be kept");
        fault.set(0);
        more.await.unwrap();
        until(&sink, "all saved", |s| s.state == "ok" && s.pending == 0 && !s.holding_requests).await;
        let stats = w.shutdown(Duration::from_secs(5)).await;
        assert_eq!((stats.records, stats.lost), (40, 0));
        assert_eq!(count(&store), (40, (0..40).sum()));
    }
}
