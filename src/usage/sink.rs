//! Where finished request records go: a bounded channel drained by one consumer.
//!
//! Owns the hand-off from the hot path. Sending waits when the channel is full (back-pressure, never loss).
//! The consumer is the store writer while serving with a store, or the log.

use tokio::sync::mpsc;

use super::RequestRecord;

/// The sending side, cloned into every request.
#[derive(Clone, Debug)]
pub struct RecordSink {
    tx: mpsc::Sender<RequestRecord>,
}

impl RecordSink {
    /// A sink with room for `capacity` records and its receiving end.
    pub fn new(capacity: usize) -> (RecordSink, mpsc::Receiver<RequestRecord>) {
        let (tx, rx) = mpsc::channel(capacity);
        (RecordSink { tx }, rx)
    }

    /// Sends a record, waiting for room when the channel is full.
    pub async fn send(&self, rec: RequestRecord) {
        if self.tx.send(rec).await.is_err() {
            tracing::error!("usage writer is gone; a request record was not saved");
        }
    }

    /// Waits for room for one record.
    pub async fn reserve(&self) -> Option<mpsc::OwnedPermit<RequestRecord>> {
        self.tx.clone().reserve_owned().await.ok()
    }

    /// Sends from a context that cannot wait (a dropped response body): tries at once, else hands the record
    /// to a task that waits for room.
    pub fn send_detached(&self, rec: RequestRecord) {
        match self.tx.try_send(rec) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(rec)) => {
                let tx = self.tx.clone();
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        let _ = tx.send(rec).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("usage writer is gone; a request record was not saved");
            }
        }
    }
}

/// A consumer that writes each record to the log as one JSON line (used when no store is open).
pub async fn log_records(mut rx: mpsc::Receiver<RequestRecord>) {
    while let Some(rec) = rx.recv().await {
        match serde_json::to_string(&rec) {
            Ok(line) => tracing::info!(target: "router::usage", "{line}"),
            Err(e) => tracing::error!("cannot encode a request record: {e}"),
        }
    }
}
