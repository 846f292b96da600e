//! Live state: the small, hot, per-request state that expires by time and is read on every request.
//!
//! Owns what a request needs from state that is not the immutable catalogue: affinity bindings (session ->
//! candidate) and gateway-key admission (rate windows, parallel counters, budget spend). Cooldowns and observed
//! latency are the same kind of state and still live in [`crate::upstream::health`]; a shared (Redis) backend
//! goes behind the same operations. The operations are shaped like what a request does (`binding`, `bind`,
//! `admit`, `settle`), not a generic key-value API.
//!
//! Must not: do I/O on the request path, hold a lock across an await, or know about HTTP or protocols.

pub mod affinity;
pub mod limits;
