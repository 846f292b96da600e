//! What `router serve` runs of the store: the open file, the record writer and the control socket, started and
//! stopped together.
//!
//! Owns the order of start-up (the file must be ours and free, else a clear error before the proxy listens) and
//! of shutdown (drain the writer, then close the socket and remove its file). Nothing else.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::socket::{self, Registry, SocketServer};
use super::writer::{self, WriterHandle, WriterOptions, WriterStats};
use super::{Store, StoreError};
use crate::usage::RequestRecord;
use crate::usage::sink::SinkHealth;

pub struct Recorder {
    pub store: Store,
    writer: WriterHandle,
    socket: SocketServer,
    registry: Registry,
}

impl Recorder {
    /// Opens the store at `path` (it must not be held by another process), starts the writer on `records`
    /// (reporting in `health`) and the control socket answering `registry` (its replies say when records are
    /// pending).
    pub async fn start(
        path: &Path,
        opts: WriterOptions,
        records: mpsc::Receiver<std::sync::Arc<RequestRecord>>,
        health: Arc<SinkHealth>,
        mut registry: Registry,
    ) -> anyhow::Result<Recorder> {
        let p = path.to_path_buf();
        let store = match tokio::task::spawn_blocking(move || Store::open(&p)).await? {
            Ok(s) => s,
            Err(StoreError::Locked { path }) => {
                return Err(crate::error::user(format!(
                    "the store {} is held by another process (another `router serve`?)",
                    path.display()
                ))
                .with_hint("stop the other server, or give this one its own file with --store / ROUTER_STORE")
                .into());
            }
            Err(e) => return Err(e.into_cli()),
        };
        let h = health.clone();
        registry.notice(Arc::new(move || h.notice()));
        let writer = writer::spawn(store.clone(), records, opts, health);
        // Reports through the socket first see every record already queued (read-your-writes for scripts).
        let flusher = writer.flusher();
        registry.barrier(Arc::new(move || {
            let f = flusher.clone();
            Box::pin(async move { f.flush().await })
        }));
        let socket = match socket::serve(store.clone(), registry.clone()).await {
            Ok(s) => s,
            Err(e) => {
                writer.shutdown(Duration::ZERO).await;
                return Err(e);
            }
        };
        Ok(Recorder { store, writer, socket, registry })
    }

    /// The operations the socket answers (with the flush barrier), for other doors onto them (the admin API).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }

    /// Commits every queued record (trying a failing store for up to `grace`, then writing what is left to a
    /// pending file), then stops the socket (removing its file).
    pub async fn shutdown(self, grace: Duration) -> WriterStats {
        let stats = self.writer.shutdown(grace).await;
        self.socket.shutdown().await;
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::sink::RecordSink;

    /// A report through the socket right after a request finished sees that request, though the writer's batch
    /// window (50 ms) has not passed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn socket_reports_wait_for_queued_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (sink, records) = RecordSink::new(64);
        let mut registry = Registry::builtin();
        registry.add::<crate::report::RequestsQuery>();
        let health = sink.health().clone();
        let rec = Recorder::start(&path, WriterOptions::default(), records, health, registry).await.unwrap();
        for i in 0..5 {
            let t = crate::usage::now_ms();
            sink.send(crate::usage::RequestRecord {
                id: crate::usage::new_id(t + i),
                time_ms: t,
                ..Default::default()
            })
            .await;
        }
        let p = path.clone();
        let n = tokio::task::spawn_blocking(move || {
            let access = super::super::Access::open(&p).unwrap();
            assert!(access.is_remote());
            let q = crate::report::RequestsQuery { limit: 100, ..Default::default() };
            access.run(q).unwrap().records.len()
        })
        .await
        .unwrap();
        assert_eq!(n, 5);
        rec.shutdown(Duration::from_secs(5)).await;
    }
}
