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
}

impl Recorder {
    /// Opens the store at `path` (it must not be held by another process), starts the writer on `records`
    /// (reporting in `health`) and the control socket answering `registry` (its replies say when records are
    /// pending).
    pub async fn start(
        path: &Path,
        opts: WriterOptions,
        records: mpsc::Receiver<RequestRecord>,
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
        let socket = socket::serve(store.clone(), registry).await?;
        let writer = writer::spawn(store.clone(), records, opts, health);
        Ok(Recorder { store, writer, socket })
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
