//! The one task that writes request records: drains the `usage::sink` channel in batches.
//!
//! Owns batching (one durable write transaction per batch, committed when `batch_max` records are waiting or
//! `window` after the first one arrived, whichever comes first), draining everything on shutdown, and the hourly
//! retention prune. Must not drop records when busy: a full channel makes senders wait (see `usage::sink`).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::Store;
use crate::usage::RequestRecord;

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
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            batch_max: 512,
            window: Duration::from_millis(50),
            retention_days: 0,
            prune_every: Duration::from_secs(3600),
        }
    }
}

/// What the writer did, reported when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub records: u64,
    pub batches: u64,
    /// Records that could not be committed after retries (logged as errors).
    pub lost: u64,
    pub pruned: u64,
}

/// The running writer. Call [`WriterHandle::shutdown`] to drain and stop it.
pub struct WriterHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<WriterStats>,
    flush: Flusher,
}

/// Asks the writer to commit what is queued now (read-your-writes for reports). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Flusher(mpsc::UnboundedSender<oneshot::Sender<()>>);

impl Flusher {
    /// Returns once every record queued before the call is committed (or the writer is gone).
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

    /// Stops accepting new records, commits everything queued (and anything sent with a permit already
    /// reserved), and returns once the last batch is durable.
    pub async fn shutdown(self) -> WriterStats {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// Starts the writer on the current tokio runtime.
pub fn spawn(store: Store, rx: mpsc::Receiver<RequestRecord>, opts: WriterOptions) -> WriterHandle {
    let (stop, stop_rx) = watch::channel(false);
    let (flush, flush_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(store, rx, opts, stop_rx, flush_rx));
    WriterHandle { stop, task, flush: Flusher(flush) }
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<RequestRecord>,
    opts: WriterOptions,
    mut stop: watch::Receiver<bool>,
    mut flush: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) -> WriterStats {
    // Flush barriers waiting for the queue to be committed; answered once a commit leaves it empty.
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut stats = WriterStats::default();
    let mut batch: Vec<RequestRecord> = Vec::with_capacity(opts.batch_max);
    let mut prune_tick = tokio::time::interval(opts.prune_every);
    prune_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        let first = tokio::select! {
            biased;
            r = rx.recv() => r,
            _ = stop.changed(), if !stopping => {
                // Refuse new records; what is queued (and reserved permits) still arrives, then `recv` ends.
                stopping = true;
                rx.close();
                continue;
            }
            _ = prune_tick.tick(), if opts.retention_days > 0 && !stopping => {
                stats.pruned += prune(&store, opts.retention_days).await;
                continue;
            }
            Some(w) = flush.recv() => {
                // Records sent before the barrier are in the queue now: answer when they are committed.
                if rx.is_empty() { let _ = w.send(()); } else { waiting.push(w); }
                continue;
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        // Let the window pass without waking for every record (each wake-up costs the proxy a cross-thread
        // notification), then take what queued up. A full channel holds senders back: back-pressure, not loss.
        let deadline = tokio::time::Instant::now() + opts.window;
        if !stopping && waiting.is_empty() && rx.len() + 1 < opts.batch_max {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                Some(w) = flush.recv() => waiting.push(w),
                _ = stop.changed() => {
                    stopping = true;
                    rx.close();
                }
            }
        }
        while batch.len() < opts.batch_max {
            let room = opts.batch_max - batch.len();
            if rx.is_empty() || rx.recv_many(&mut batch, room).await == 0 {
                break;
            }
        }
        let n = batch.len() as u64;
        let (back, ok) = commit(&store, std::mem::take(&mut batch)).await;
        batch = back;
        batch.clear();
        if ok {
            stats.records += n;
            stats.batches += 1;
        } else {
            stats.lost += n;
        }
        if rx.is_empty() {
            for w in waiting.drain(..) {
                let _ = w.send(());
            }
        }
    }
    stats
}

/// Commits one batch off the runtime threads, retrying a failed commit a few times. Returns the emptied vector
/// for reuse and whether the batch is durable.
async fn commit(store: &Store, batch: Vec<RequestRecord>) -> (Vec<RequestRecord>, bool) {
    let mut batch = batch;
    for attempt in 0..4u32 {
        let s = store.clone();
        let (b, res) = tokio::task::spawn_blocking(move || {
            let r = s.write_records(&batch);
            (batch, r)
        })
        .await
        .expect("store writer thread panicked");
        batch = b;
        match res {
            Ok(()) => return (batch, true),
            Err(e) if attempt < 3 => {
                tracing::warn!("usage store commit failed (will retry): {e}");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(e) => {
                tracing::error!("usage store commit failed; {} request records were not saved: {e}", batch.len());
            }
        }
    }
    (batch, false)
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
        let w = spawn(store.clone(), rx, WriterOptions { batch_max: 16, ..Default::default() });
        for i in 0..1000 {
            sink.send(rec(i)).await;
        }
        let stats = w.shutdown().await;
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
        let w = spawn(store.clone(), rx, WriterOptions::default());
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
        w.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_returns_once_queued_records_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (sink, rx) = RecordSink::new(64);
        // A window far longer than the test: only the barrier can make the records visible.
        let w = spawn(store.clone(), rx, WriterOptions { window: Duration::from_secs(3600), ..Default::default() });
        w.flusher().flush().await; // nothing queued: answers at once
        for i in 0..3 {
            sink.send(rec(i)).await;
        }
        w.flusher().flush().await;
        assert_eq!(count(&store).0, 3);
        w.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_prunes_old_records_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let old = RequestRecord { time_ms: 1_000, id: crate::usage::new_id(1_000), ..Default::default() };
        let new_ms = crate::usage::now_ms();
        let new = RequestRecord { time_ms: new_ms, id: crate::usage::new_id(new_ms), ..Default::default() };
        store.write_records(&[old, new]).unwrap();
        let (_sink, rx) = RecordSink::new(8);
        let w = spawn(store.clone(), rx, WriterOptions { retention_days: 1, ..Default::default() });
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
        assert_eq!(w.shutdown().await.pruned, 1);
    }
}
