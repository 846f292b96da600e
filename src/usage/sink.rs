//! Where finished request records go: a bounded channel drained by one consumer, and that consumer's health.
//!
//! Owns the hand-off from the hot path. Sending waits when the channel is full (back-pressure, never loss).
//! The consumer is the store writer while serving with a store, or the log. [`SinkHealth`] is what the consumer
//! reports about itself (degraded, why, how many records wait) for `/health`, the control socket and metrics;
//! reading it takes a short lock and never touches the store. Every record that enters is also announced once to
//! an [`Announce`] (the server's event stream, `crate::events`): the record goes into one `Arc` that the consumer
//! and the stream share, never copied. Must not import `events`: events carry records, so the stream builds on
//! this module.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;

use super::RequestRecord;

/// Where every record that enters the sink is announced, once, before it is sent (the server's event stream).
pub trait Announce: Send + Sync + std::fmt::Debug {
    /// A finished request; must not wait. Keeping the record is a reference count, not a copy.
    fn finished(&self, rec: &Arc<RequestRecord>);
}

/// The sending side, cloned into every request.
#[derive(Clone, Debug)]
pub struct RecordSink {
    tx: mpsc::Sender<Arc<RequestRecord>>,
    health: Arc<SinkHealth>,
    events: Option<Arc<dyn Announce>>,
}

/// Room for one record, reserved ahead of sending it.
pub struct Permit {
    permit: mpsc::OwnedPermit<Arc<RequestRecord>>,
    events: Option<Arc<dyn Announce>>,
}

impl Permit {
    pub fn send(self, rec: RequestRecord) {
        self.permit.send(publish(&self.events, rec));
    }
}

/// The record as the consumer and the event stream share it, announced.
fn publish(events: &Option<Arc<dyn Announce>>, rec: RequestRecord) -> Arc<RequestRecord> {
    let rec = Arc::new(rec);
    if let Some(to) = events {
        to.finished(&rec);
    }
    rec
}

/// What the record consumer says about itself. Written by the consumer on each change of state, read by
/// `/health`, the control socket and metrics.
#[derive(Debug, Default)]
pub struct SinkHealth {
    /// Records accepted but not yet durable in the store (memory backlog plus pending file).
    pending: AtomicU64,
    /// Records written to the pending file and not yet saved in the store.
    pending_in_file: AtomicU64,
    /// Of the pending records, those spooled in the local store file for PostgreSQL (durable there).
    spooled: AtomicU64,
    state: Mutex<Degraded>,
}

#[derive(Debug, Default, Clone)]
struct Degraded {
    reason: Option<String>,
    since_ms: i64,
    pending_file: Option<PathBuf>,
    holding: bool,
}

/// A snapshot of [`SinkHealth`], as `/health` and metrics show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkStatus {
    /// `ok`, or `degraded` while records cannot be written.
    pub state: &'static str,
    /// Why records cannot be written (the store's error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix ms when the store stopped taking records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    /// Records served but not yet saved in the store.
    pub pending: u64,
    /// Of those, how many wait in the pending file (beyond `store.max_pending_records`).
    pub pending_in_file: u64,
    /// Of those, how many are spooled in the local store file for PostgreSQL (`store.postgres`): durable there,
    /// replayed when PostgreSQL answers. Not shown without PostgreSQL.
    #[serde(skip_serializing_if = "is_zero")]
    pub spooled: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_file: Option<PathBuf>,
    /// True while new requests wait for room (the memory bound is reached and the pending file cannot be
    /// written either).
    pub holding_requests: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SinkHealth {
    pub fn status(&self) -> SinkStatus {
        let d = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        SinkStatus {
            state: if d.reason.is_some() { "degraded" } else { "ok" },
            since_ms: d.reason.as_ref().map(|_| d.since_ms),
            reason: d.reason,
            pending: self.pending.load(Ordering::Relaxed),
            pending_in_file: self.pending_in_file.load(Ordering::Relaxed),
            spooled: self.spooled.load(Ordering::Relaxed),
            pending_file: d.pending_file,
            holding_requests: d.holding,
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).reason.is_some()
    }

    /// Sets how many of the pending records wait in the local spool for PostgreSQL.
    pub fn set_spooled(&self, n: u64) {
        self.spooled.store(n, Ordering::Relaxed);
    }

    /// Sets the counts of records not yet saved.
    pub fn set_pending(&self, total: u64, in_file: u64) {
        self.pending.store(total, Ordering::Relaxed);
        self.pending_in_file.store(in_file, Ordering::Relaxed);
    }

    /// Marks the consumer degraded with `reason` (keeps the first `since`), or healthy with `None`.
    pub fn set_degraded(&self, reason: Option<String>) {
        let mut d = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if d.reason.is_none() && reason.is_some() {
            d.since_ms = super::now_ms();
        }
        d.reason = reason;
    }

    pub fn set_pending_file(&self, file: Option<PathBuf>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).pending_file = file;
    }

    pub fn set_holding(&self, holding: bool) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).holding = holding;
    }

    /// One sentence for replies of the control socket while records wait, e.g. for `router usage`.
    pub fn notice(&self) -> Option<String> {
        let s = self.status();
        if s.state == "ok" || s.pending == 0 {
            return None;
        }
        Some(format!(
            "note: {} request record(s) are pending and not in this answer yet: the server cannot write the store ({})",
            s.pending,
            s.reason.as_deref().unwrap_or("unknown error")
        ))
    }
}

impl RecordSink {
    /// A sink with room for `capacity` records and its receiving end.
    pub fn new(capacity: usize) -> (RecordSink, mpsc::Receiver<Arc<RequestRecord>>) {
        let (tx, rx) = mpsc::channel(capacity);
        (RecordSink { tx, health: Arc::default(), events: None }, rx)
    }

    /// The same sink, announcing finished requests to `events` (the server's `events::Events`).
    pub fn with_events(mut self, events: impl Announce + 'static) -> RecordSink {
        self.events = Some(Arc::new(events));
        self
    }

    /// Records waiting for the consumer (the store writer's backlog).
    pub fn backlog(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The consumer's health, shared with it.
    pub fn health(&self) -> &Arc<SinkHealth> {
        &self.health
    }

    /// Sends a record, waiting for room when the channel is full.
    pub async fn send(&self, rec: RequestRecord) {
        if self.tx.send(publish(&self.events, rec)).await.is_err() {
            tracing::error!("usage writer is gone; a request record was not saved");
        }
    }

    /// Waits for room for one record.
    pub async fn reserve(&self) -> Option<Permit> {
        let permit = self.tx.clone().reserve_owned().await.ok()?;
        Some(Permit { permit, events: self.events.clone() })
    }

    /// Sends from a context that cannot wait (a dropped response body): tries at once, else hands the record
    /// to a task that waits for room.
    pub fn send_detached(&self, rec: RequestRecord) {
        match self.tx.try_send(publish(&self.events, rec)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(rec)) => {
                let tx = self.tx.clone();
                crate::background::spawn(async move {
                    let _ = tx.send(rec).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("usage writer is gone; a request record was not saved");
            }
        }
    }
}

/// A consumer that writes each record to the log as one JSON line (used when no store is open).
pub async fn log_records(mut rx: mpsc::Receiver<Arc<RequestRecord>>) {
    while let Some(rec) = rx.recv().await {
        match serde_json::to_string(&*rec) {
            Ok(line) => tracing::info!(target: "router::usage", "{line}"),
            Err(e) => tracing::error!("cannot encode a request record: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Events};

    #[tokio::test]
    async fn every_record_that_enters_is_published_once() {
        let events = Events::new(16);
        let (sink, mut rx) = RecordSink::new(1);
        let sink = sink.with_events(events.clone());
        let mut sub = events.subscribe();
        sink.send(RequestRecord { time_ms: 1, ..Default::default() }).await;
        assert_eq!(sink.backlog(), 1);
        rx.recv().await.unwrap();
        sink.reserve().await.unwrap().send(RequestRecord { time_ms: 2, ..Default::default() });
        rx.recv().await.unwrap();
        sink.send_detached(RequestRecord { time_ms: 3, ..Default::default() });
        for want in 1..=3 {
            match sub.try_recv().unwrap() {
                Event::RequestFinished(r) => assert_eq!(r.time_ms, want),
                e => panic!("{e:?}"),
            }
        }
        assert!(sub.try_recv().is_err());
    }
}
