//! The one stream of things that happened in the running server: finished requests, health changes, balance
//! checks and reloads.
//!
//! Owns [`Events`], a bounded broadcast channel. Each event is published once, from where it happens (the record
//! sink, which announces records through `usage::sink::Announce`, implemented here; `live::health`; where
//! balance results are applied; where the catalogue or config is reloaded).
//! Consumers (metrics, alerts, the admin API's live stream) subscribe and run off the request path.
//! Publishing never waits: with no subscriber it costs one atomic load, and a subscriber that falls more than
//! the channel's capacity behind loses the oldest events (its `recv` says how many) rather than slowing anyone.
//! Must not carry secrets: records and health keys name tokens by name and fingerprint only.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::usage::RequestRecord;

/// Events kept for a subscriber that has not read them yet.
pub const CAPACITY: usize = 8192;

/// What a cooldown applies to (the failover table's targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoolLevel {
    /// An endpoint (`channel/endpoint`).
    Endpoint,
    /// One upstream key of an endpoint (`channel/endpoint/token`).
    Token,
    /// A (channel, model) pair (`channel#model`).
    Model,
}

impl CoolLevel {
    pub const ALL: [CoolLevel; 3] = [CoolLevel::Endpoint, CoolLevel::Token, CoolLevel::Model];

    pub fn as_str(self) -> &'static str {
        match self {
            CoolLevel::Endpoint => "endpoint",
            CoolLevel::Token => "token",
            CoolLevel::Model => "model",
        }
    }

    /// The level of a health key, from its shape (see `catalog`: `channel/endpoint[/token]`, `channel#model`).
    pub fn of_key(key: &str) -> CoolLevel {
        if key.contains('#') {
            CoolLevel::Model
        } else if key.matches('/').count() >= 2 {
            CoolLevel::Token
        } else {
            CoolLevel::Endpoint
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// A request's record entered the record sink (exactly once per recorded request).
    RequestFinished(Arc<RequestRecord>),
    /// A health key started (or extended) a cooldown.
    Cooled {
        /// The health key: `channel/endpoint`, `channel/endpoint/token` or `channel#model`.
        key: Arc<str>,
        level: CoolLevel,
        /// Why (an upstream failure class or status, "stream interrupted", "balance at or below zero").
        reason: Arc<str>,
        /// How long it cools, ms.
        for_ms: u64,
        /// Consecutive failures so far.
        failures: u32,
    },
    /// A cooling health key is usable again (a success, or a balance check that shows credit).
    Recovered { key: Arc<str>, level: CoolLevel },
    /// A balance check of one key in one currency.
    Balance { channel: Arc<str>, endpoint: Arc<str>, token_key: Arc<str>, currency: Arc<str>, amount: f64 },
    /// The routing snapshot was rebuilt (config reload, import, channel change, discovery).
    Reloaded,
}

/// The sending side, cloned wherever events happen.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new(CAPACITY)
    }
}

impl Events {
    pub fn new(capacity: usize) -> Events {
        Events { tx: broadcast::channel(capacity.max(1)).0 }
    }

    /// Publishes an event; never waits. Without subscribers the event is dropped.
    pub fn publish(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    /// Publishes the event `make` builds, building it only when someone listens.
    pub fn publish_with(&self, make: impl FnOnce() -> Event) {
        if self.has_subscribers() {
            self.publish(make());
        }
    }

    /// A new subscriber: sees every event published from now on (unless it falls `CAPACITY` behind).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }
}

/// The record sink announces each finished request here, as [`Event::RequestFinished`] (the record the store
/// writer gets too, shared: a reference more, only when someone subscribes).
impl crate::usage::sink::Announce for Events {
    fn finished(&self, rec: &Arc<RequestRecord>) {
        self.publish_with(|| Event::RequestFinished(rec.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};

    #[test]
    fn levels_follow_the_key_shape() {
        assert_eq!(CoolLevel::of_key("main/default"), CoolLevel::Endpoint);
        assert_eq!(CoolLevel::of_key("main/default/fp:1234"), CoolLevel::Token);
        assert_eq!(CoolLevel::of_key("main#gpt-4o"), CoolLevel::Model);
        assert_eq!(CoolLevel::of_key("main#openai/gpt-4o"), CoolLevel::Model);
    }

    #[test]
    fn publish_without_subscribers_builds_nothing() {
        let ev = Events::new(4);
        ev.publish_with(|| panic!("built with nobody listening"));
        ev.publish(Event::Reloaded);
    }

    #[test]
    fn slow_subscribers_lose_the_oldest_and_publish_never_waits() {
        let ev = Events::new(2);
        let mut rx = ev.subscribe();
        for _ in 0..5 {
            ev.publish(Event::Reloaded);
        }
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Lagged(3))));
        assert!(matches!(rx.try_recv(), Ok(Event::Reloaded)));
        assert!(matches!(rx.try_recv(), Ok(Event::Reloaded)));
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        drop(ev);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(matches!(rt.block_on(rx.recv()), Err(RecvError::Closed)));
    }
}
