//! Where finished request records go: a bounded channel drained by one consumer.
//!
//! Owns the hand-off from the hot path. Sending waits when the channel is full (back-pressure, never loss).
//! The consumer is the store writer while serving with a store, or the log. Every record that enters is also
//! published once as [`Event::RequestFinished`] (cloned into an `Arc` only when someone subscribes).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::RequestRecord;
use crate::events::{Event, Events};

/// The sending side, cloned into every request.
#[derive(Clone, Debug)]
pub struct RecordSink {
    tx: mpsc::Sender<RequestRecord>,
    events: Events,
}

/// Room for one record, reserved ahead of sending it.
pub struct Permit {
    permit: mpsc::OwnedPermit<RequestRecord>,
    events: Events,
}

impl Permit {
    pub fn send(self, rec: RequestRecord) {
        publish(&self.events, &rec);
        self.permit.send(rec);
    }
}

fn publish(events: &Events, rec: &RequestRecord) {
    events.publish_with(|| Event::RequestFinished(Arc::new(rec.clone())));
}

impl RecordSink {
    /// A sink with room for `capacity` records and its receiving end.
    pub fn new(capacity: usize) -> (RecordSink, mpsc::Receiver<RequestRecord>) {
        let (tx, rx) = mpsc::channel(capacity);
        (RecordSink { tx, events: Events::new(1) }, rx)
    }

    /// The same sink, publishing finished requests on `events`.
    pub fn with_events(mut self, events: Events) -> RecordSink {
        self.events = events;
        self
    }

    /// Records waiting for the consumer (the store writer's backlog).
    pub fn backlog(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Sends a record, waiting for room when the channel is full.
    pub async fn send(&self, rec: RequestRecord) {
        publish(&self.events, &rec);
        if self.tx.send(rec).await.is_err() {
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
        publish(&self.events, &rec);
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

#[cfg(test)]
mod tests {
    use super::*;

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
