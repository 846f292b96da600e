//! What `router serve` runs of the store: the open file, the record writer and the control socket, started and
//! stopped together.
//!
//! Owns the order of start-up (the file must be ours and free, else a clear error before the proxy listens) and
//! of shutdown (drain the writer, then close the socket and remove its file). Nothing else.

use std::path::Path;

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
        registry: Registry,
        batch_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
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
        let socket = socket::serve(store.clone(), registry).await?;
        let writer = writer::spawn(
            store.clone(),
            records,
            WriterOptions { retention_days, batch_seconds, ..Default::default() },
        );
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
