//! What `router serve` runs of the store: the open file, the record writer and the control socket, started and
//! stopped together.
//!
//! Owns the order of start-up (the file must be ours and free, else a clear error before the proxy listens), the
//! wiring of the writer's flush barrier into the socket (reports wait for queued records), and the order of
//! shutdown (drain the writer, then close the socket and remove its file). Nothing else.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::socket::{self, Registry, SocketServer};
use super::writer::{self, WriterHandle, WriterOptions, WriterStats};
use super::{Store, StoreError};
use crate::usage::RequestRecord;

pub struct Recorder {
    pub store: Store,
    writer: WriterHandle,
    socket: SocketServer,
}

impl Recorder {
    /// Opens the store at `path` (it must not be held by another process), starts the writer on `records` and
    /// the control socket answering `registry`.
    pub async fn start(
        path: &Path,
        retention_days: u32,
        records: mpsc::Receiver<RequestRecord>,
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
        let writer = writer::spawn(store.clone(), records, WriterOptions { retention_days, ..Default::default() });
        // Reports through the socket first see every record already queued (read-your-writes for scripts).
        let flusher = writer.flusher();
        registry.barrier(Arc::new(move || {
            let f = flusher.clone();
            Box::pin(async move { f.flush().await })
        }));
        let socket = match socket::serve(store.clone(), registry).await {
            Ok(s) => s,
            Err(e) => {
                writer.shutdown().await;
                return Err(e);
            }
        };
        Ok(Recorder { store, writer, socket })
    }

    pub fn socket_path(&self) -> &Path {
        self.socket.path()
    }

    /// Commits every queued record, then stops the socket (removing its file).
    pub async fn shutdown(self) -> WriterStats {
        let stats = self.writer.shutdown().await;
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
        let rec = Recorder::start(&path, 0, records, Registry::builtin()).await.unwrap();
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
            let q = crate::usage::report::RequestsQuery { limit: 100, ..Default::default() };
            access.run(q).unwrap().records.len()
        })
        .await
        .unwrap();
        assert_eq!(n, 5);
        rec.shutdown().await;
    }
}
