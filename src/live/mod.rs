//! Live state: the small, hot, per-request state that expires by time and is read on every request.
//!
//! Owns what a request needs from state that is not the immutable catalogue: affinity bindings (session ->
//! candidate) and gateway-key admission (rate windows, parallel counters, budget spend). Cooldowns and observed
//! latency are in [`health`]. The shared (Redis) backend,
//! [`shared`], puts cooldowns and the rpm / parallel windows of several instances in one place behind the same
//! operations. The operations are shaped like what a request does (`binding`, `bind`,
//! `admit`, `settle`), not a generic key-value API.
//!
//! Must not: do I/O on the request path (the one exception: [`shared::admit`], one Redis round trip for keys
//! with `rpm` or `max_parallel` when `shared_state.redis` is set), hold a lock across an await, or know about
//! HTTP or protocols.

pub mod affinity;
pub mod health;
pub mod limits;
pub mod shared;
